//! `verify`: checks a code against the user's challenge.
//!
//! It guarantees that a code works once (the first verify to take its `used` counter to 1 wins,
//! and the counter outlives a replaced challenge), only while it lives and within its 5 guesses;
//! that every limit is counted *before* the code is looked at, on the value an atomic `increment`
//! returns (a guess slot of the streak, judged against the previous slot's stamp for the delay and
//! capped at the lock; then a ticket of the 30-day window; then the code's own guess counter), so
//! that no number of concurrent guesses can try inside a delay or past a limit (the rules and their
//! proofs: [`crate::engine::throttle`]); and that a wrong, expired or
//! used code, an unknown challenge and an unknown user all answer [`Error::Rejected`] after the same
//! steps (a code is derived and compared even when there is nothing to compare it with). A code
//! that confirms an address is stored with its `enrolled` / `email_changed` record, or not at all.

use rand_core::CryptoRng;

use super::otp;
use crate::audit::{Action, Outcome};
use crate::engine::Engine;
use crate::engine::record::{EventExt, Who};
use crate::engine::state::Taken;
use crate::engine::stats::Stat;
use crate::engine::throttle;
use crate::kernel::error::{Error, Result};
use crate::kernel::model::{LoginContext, Purpose, Verified};
use crate::kernel::secret::OtpCode;
use crate::kernel::time::Timestamp;
use crate::kernel::{input, keys};

impl Engine<'_> {
    /// Checks a code against the user's challenge.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the input cannot be a code (no guess is counted);
    /// [`Error::Rejected`] for a wrong, expired or used code or an unknown challenge or user;
    /// [`Error::Throttled`] while the wrong-guess delay runs; [`Error::Locked`];
    /// [`Error::Store`] / [`Error::Audit`] with nothing taking effect.
    pub fn verify<R: CryptoRng + ?Sized>(
        &self,
        ctx: &LoginContext,
        challenge_id: &str,
        code: &str,
        remember_device: bool,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<Verified> {
        let ctx = self.canonical_context(ctx);
        let ctx = ctx.as_ref();
        let ip = input::login_context(ctx)?;
        input::id("challenge_id", challenge_id)?;
        let submitted = OtpCode::new(input::code(code, self.settings.code_digits)?);
        let who = Who::of(ctx, ip);
        let rejected = |reason: &str| {
            let action = if reason == "expired" {
                Action::CodeExpired
            } else {
                Action::CodeRejected
            };
            who.event(action, Outcome::Failure)
                .reason(reason)
                .challenge(challenge_id)
        };

        // Everything the guess reads comes first, so that a store that cannot be read changes
        // nothing. Locked users take no slot (read only to spare the slots: the gates below decide).
        let challenge_key = keys::challenge(who.org, who.user);
        let challenge = self.load_challenge(&challenge_key)?;
        let streak = self.streak_of(&who)?;
        let state = self.guess_state_in(&who, streak, now)?;
        if state.locked() {
            self.record(rejected("user:locked"), now, rng)?;
            return Err(Error::Locked);
        }
        // Count first: take this guess's slot in the streak. The delay is judged on the previous
        // slot's stamp before the slot is taken; a refused guess takes nothing.
        let slot = match self.take_guess_slot(&who, streak, state.failures, now)? {
            Taken::Slot(k) => k,
            Taken::Wait(until) => {
                let event = who
                    .event(Action::VerifyThrottled, Outcome::Denied)
                    .reason("guess-delay");
                self.record(event.challenge(challenge_id), now, rng)?;
                self.count(who.org, Stat::Throttled, now, rng);
                return Err(Error::Throttled {
                    retry_after: now.seconds_until(until).max(1),
                });
            }
            Taken::Full => {
                self.record(rejected("user:locked"), now, rng)?;
                return Err(Error::Locked);
            }
        };
        // Then a ticket of the 30-day window: looked at only within the window's cap.
        let window = throttle::failure_window(now);
        let window_key = keys::failures_window(who.org, who.user, window);
        let window_end = Timestamp((window + 1).saturating_mul(throttle::WINDOW_SECONDS));
        let ticket = self
            .store
            .increment(&window_key, 1, keys::guard_until(window_end))
            .map_err(Error::store)?;
        if ticket > throttle::WINDOW_CAP {
            self.record(rejected("user:locked"), now, rng)?;
            return Err(Error::Locked);
        }
        // A matched code is no wrong guess: it starts a new streak and gives its ticket back (see
        // the proof in `throttle`). Best effort: a failure only errs on the refusing side.
        let not_a_failure = || {
            let _ = self
                .store
                .increment(&keys::streak(who.org, who.user), 1, None);
            let _ = self.store.increment(&window_key, -1, None);
            // The ended streak's count is kept for good while the streak lasts; now it can go (a
            // guess still finishing in it counts in it again, bounded by its own rules).
            let _ = self
                .store
                .delete(&keys::failures(who.org, who.user, streak));
        };

        let (live, mut reason) = match &challenge {
            None => (None, "no-challenge"),
            Some(c) if c.id != challenge_id => (None, "no-challenge"),
            Some(c) => match &c.code {
                None => (None, "no-code-sent"),
                Some(code) if now > code.expires_at || now > c.expires_at => (None, "expired"),
                Some(code) => (Some(code), "wrong-code"),
            },
        };
        let generation = live.map_or(0, |c| c.generation);
        // A code's counters outlive its challenge; a guess at no live code counts against a key
        // that matters to no one for long.
        let guarded = keys::guard_until(match (&challenge, live) {
            (Some(c), Some(_)) => c.expires_at,
            _ => now,
        });
        let guesses = self
            .store
            .increment(&keys::attempts(challenge_id, generation), 1, guarded)
            .map_err(Error::store)?;
        let dummy_seed = "00".repeat(32);
        let expected = otp::derive(
            self.key,
            challenge_id,
            generation,
            live.map_or(dummy_seed.as_str(), |c| c.seed.as_str()),
            self.settings.code_digits,
        );
        let matches = expected.ct_eq(&submitted);
        if live.is_some() && guesses > throttle::MAX_GUESSES_PER_CODE {
            reason = "code-guesses-exhausted";
        } else if live.is_some() && matches {
            let used_key = keys::used(challenge_id, generation);
            if self
                .store
                .increment(&used_key, 1, guarded)
                .map_err(Error::store)?
                == 1
            {
                // One record per verified code: `code_verified` for a login, `enrolled` or
                // `email_changed` when the code confirms an address (stored with its record).
                let recorded = match challenge.as_ref().filter(|c| c.purpose != Purpose::Login) {
                    Some(stored) => self.confirm_address(&who, stored, now, rng),
                    None => self.append(
                        who.event(Action::CodeVerified, Outcome::Success)
                            .challenge(challenge_id),
                        now,
                        rng,
                    ),
                };
                if let Err(e) = recorded {
                    // Give the code back: nothing took effect. The guess matched, so it is no
                    // failure either.
                    let _ = self.store.increment(&used_key, -1, None);
                    not_a_failure();
                    return Err(e);
                }
                // An enrollment's code is counted as the enrollment (`confirm_address`).
                if challenge
                    .as_ref()
                    .is_none_or(|c| c.purpose != Purpose::Enrollment)
                {
                    self.count(who.org, Stat::Verified, now, rng);
                }
                // A step-up token for this sign-in (for `change_email`). Best effort: without it
                // the user is only asked for a code again before a change.
                let step_up = self.grant_step_up(&who, now, rng).ok();
                // The code is spent by the `used` counter whatever happens below; clearing the
                // challenge and the failure streak is tidy-up whose failure only errs on the safe side.
                let _ = self.store.delete(&challenge_key);
                not_a_failure();
                // Remembering the browser is a convenience on top of a completed login: if it
                // fails (store or audit), the login stands and the browser is simply asked again.
                let trusted = if remember_device {
                    self.org_policy(who.org)
                        .and_then(|policy| {
                            self.scoped(&policy).trust_device(ctx, &who, ip, now, rng)
                        })
                        .ok()
                        .flatten()
                } else {
                    None
                };
                let (device_id, set_cookie) =
                    trusted.map_or((None, None), |(id, cookie)| (Some(id), Some(cookie)));
                // The tidy-up above is all that can be left uncommitted (the device, if any, was
                // committed with its record): its failure errs on the safe side, so the login
                // stands whatever the commit answers.
                let _ = self.commit();
                return Ok(Verified {
                    amr: vec!["otp".to_owned(), "mfa".to_owned()],
                    second_factor_at: now,
                    device_id,
                    set_cookie,
                    step_up,
                });
            }
            reason = "code-already-used";
        }

        self.append(rejected(reason), now, rng)?;
        if slot == throttle::LOCK_AT || ticket == throttle::WINDOW_CAP {
            let why = if slot == throttle::LOCK_AT {
                "consecutive-failures"
            } else {
                "failures-in-30-days"
            };
            self.record(
                who.event(Action::UserLocked, Outcome::Denied).reason(why),
                now,
                rng,
            )?;
            self.count(who.org, Stat::Locked, now, rng);
        }
        Err(Error::Rejected)
    }
}
