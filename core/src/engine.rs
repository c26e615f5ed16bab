//! The engine: the email one-time-code step, built from the rules in [`crate::throttle`] and
//! [`crate::otp`] over the ports in [`crate::ports`].
//!
//! ## A challenge's life
//! ```text
//!  begin ─▶ [pending] ─send-code─▶ [code live] ─verify ok (first, ≤ 5th guess)─▶ [done, deleted]
//!               │                    │    ▲ send-code while live: same code again
//!               │                    │    └──────────────┘
//!               │                    ├─ 10 min pass, or 5 guesses ─▶ [code dead] ─send-code─▶ [code live] (new code)
//!               └─ challenge TTL passes ─▶ [gone]: begin again
//! ```
//!
//! ## Failing closed
//! Each operation makes its change, then appends its record to the audit sink (which touches only
//! the sink: see [`crate::chain`] for how records find their place), then reports success. So a store
//! that fails part-way fails inside the change, never between the change and its record; and if the
//! sink refuses the record, the change is undone (a consumed code is given back, an opened
//! challenge is withdrawn) and the caller gets [`Error::Audit`]. Only a sink failure followed by a
//! store failure during the undo can leave a change behind, and then the change is one that grants
//! nothing by itself (an open challenge, a spent code: the user asks for a new email). A code is
//! mailed only after it is stored and its `code_sent` record is written; a mail failure is recorded as
//! `code_delivery_failed`. A store failure part-way may cost the user budget (an email counted, a
//! guess counted) but never grants anything: counters only ever err towards refusing.
//!
//! ## No enumeration
//! A wrong code, an expired code, a used code, an unknown challenge and a user the component has never
//! seen all give [`Error::Rejected`], and all walk the same steps: the failure counters are keyed by the
//! IdP's user id whether or not anything else is stored for it, and a code is derived and compared
//! even when there is nothing to compare it with.

use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};

use crate::audit::{Action, Event, Outcome};
use crate::chain::{Head, SealKey};
use crate::error::{Error, Result};
use crate::model::{
    Allowed, ChallengeView, CodeSent, Decision, Denied, Explanation, LoginContext, Purpose,
    UserStatus, Verified,
};
use crate::ports::{AppendError, AuditEntry, AuditSink, Mailer, Store};
use crate::secret::{HmacKey, OtpCode};
use crate::settings::Settings;
use crate::throttle::{self, GuessState, SendLog};
use crate::time::Timestamp;
use crate::trust::DeviceCheck;
use crate::{email, input, keys, otp};

/// A code that was sent: its seed, never the code.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StoredCode {
    generation: u32,
    seed: String,
    issued_at: Timestamp,
    expires_at: Timestamp,
}

impl std::fmt::Debug for StoredCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCode")
            .field("generation", &self.generation)
            .field("seed", &"<redacted>")
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The user's current challenge, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredChallenge {
    v: u8,
    pub(crate) id: String,
    pub(crate) purpose: Purpose,
    /// Where the code goes.
    pub(crate) email: String,
    created_at: Timestamp,
    expires_at: Timestamp,
    code: Option<StoredCode>,
    /// For an address being confirmed: whether the user enrols of their own accord.
    #[serde(default)]
    pub(crate) opt_in: bool,
}

/// Who a login-step call is about, for records and keys.
pub(crate) struct Who<'c> {
    pub(crate) org: &'c str,
    pub(crate) user: &'c str,
    pub(crate) ip: String,
    pub(crate) user_agent: &'c str,
}

impl<'c> Who<'c> {
    pub(crate) fn of(ctx: &'c LoginContext, ip: std::net::IpAddr) -> Self {
        Self {
            org: &ctx.org_id,
            user: &ctx.user_id,
            ip: ip.to_string(),
            user_agent: &ctx.device.traits.user_agent,
        }
    }

    pub(crate) fn event(&self, action: Action, outcome: Outcome) -> Event {
        Event {
            org: self.org.to_owned(),
            actor: self.user.to_owned(),
            subject: self.user.to_owned(),
            action,
            outcome,
            reason: None,
            ip: Some(self.ip.clone()),
            user_agent: (!self.user_agent.is_empty()).then(|| self.user_agent.to_owned()),
            device_id: None,
            challenge_id: None,
        }
    }
}

pub(crate) trait EventExt {
    fn reason(self, reason: &str) -> Self;
    fn challenge(self, id: &str) -> Self;
    fn device(self, id: &str) -> Self;
}

impl EventExt for Event {
    fn reason(mut self, reason: &str) -> Self {
        self.reason = Some(reason.to_owned());
        self
    }
    fn challenge(mut self, id: &str) -> Self {
        self.challenge_id = Some(id.to_owned());
        self
    }
    fn device(mut self, id: &str) -> Self {
        self.device_id = Some(id.to_owned());
        self
    }
}

/// What a change overwrote, to put back if its record cannot be written.
#[derive(Debug, Default)]
pub(crate) struct Undo {
    values: Vec<(String, Option<Vec<u8>>)>,
    counters: Vec<(String, i64)>,
}

/// How often an append relinks after losing a race for its stream's next position before giving up.
const MAX_APPEND_ATTEMPTS: usize = 32;

/// The MFA engine over one set of ports. Cheap to build: build one per request.
pub struct Engine<'a> {
    /// Storage.
    pub store: &'a dyn Store,
    /// Mail.
    pub mailer: &'a dyn Mailer,
    /// Audit trail.
    pub audit: &'a dyn AuditSink,
    /// Limits.
    pub settings: Settings,
    /// The host's key.
    pub key: &'a HmacKey,
}

impl Engine<'_> {
    /// Decides whether this login needs a code and opens a challenge if it does.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad context (nothing stored); [`Error::Store`] or
    /// [`Error::Audit`] when a port fails (no challenge is left open).
    pub fn begin<R: CryptoRng + ?Sized>(
        &self,
        ctx: &LoginContext,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<Decision> {
        let ip = input::login_context(ctx)?;
        let who = Who::of(ctx, ip);
        let m = self.explain_in(ctx)?;
        if self.guess_state(&who, now)?.locked() {
            let why = Explanation {
                rule: "user:locked".to_owned(),
                message: m.locked.clone(),
            };
            self.record(
                who.event(Action::AccessDenied, Outcome::Denied)
                    .reason(&why.rule),
                now,
                rng,
            )?;
            return Ok(Decision::Deny(Denied { why }));
        }
        // Who must use MFA: the organization's mandate, its roles, the platform's roles, opt-in.
        let policy = self.org_policy(who.org)?;
        let enrollment = self.enrollment_of(who.org, who.user)?;
        let requirement = self.requirement_of(ctx, &policy, enrollment.as_ref(), &m)?;
        if !requirement.required {
            return self.allow(&who, requirement.why, now, rng);
        }
        // No confirmed address yet: enroll (after the organization's grace, if any).
        let Some(enrollment) = enrollment else {
            if let Some(why) = self.grace(&who, &policy, &m, now)? {
                return self.allow(&who, why, now, rng);
            }
            let why = Explanation {
                message: m.enroll.replace("{reason}", &requirement.why.message),
                rule: requirement.why.rule,
            };
            return self
                .open_challenge(&who, Purpose::Enrollment, &ctx.email, false, why, now, rng)
                .map(Decision::Challenge);
        };
        // Trust is judged with the organization's tightened limits.
        let scoped = self.scoped(&policy);
        let why = match scoped.check_device(ctx, &who, ip, now, rng)? {
            DeviceCheck::Trusted {
                device_id,
                expires_at,
                set_cookie,
            } => {
                let why = Explanation {
                    rule: "device:trusted".to_owned(),
                    message: m.trusted.replace("{until}", &expires_at.rfc3339()),
                };
                let event = who
                    .event(Action::AccessAllowed, Outcome::Success)
                    .reason(&why.rule);
                if let Err(e) = self.append(event.device(&device_id), now, rng) {
                    if set_cookie.is_some() {
                        scoped.unrotate(who.org, who.user, &device_id);
                    }
                    return Err(e);
                }
                return Ok(Decision::Allow(Allowed {
                    why,
                    device_id: Some(device_id),
                    set_cookie,
                }));
            }
            DeviceCheck::Changed { device_id, change } => {
                let event = who
                    .event(Action::DeviceChallenged, Outcome::Denied)
                    .reason(change.rule());
                self.record(event.device(&device_id), now, rng)?;
                Explanation {
                    rule: change.rule().to_owned(),
                    message: change.message(&m),
                }
            }
            DeviceCheck::Reused | DeviceCheck::Absent => requirement.why,
        };
        // Codes go to the confirmed address, whatever the IdP names now (see `crate::enrollment`).
        self.open_challenge(
            &who,
            Purpose::Login,
            &enrollment.email,
            false,
            why,
            now,
            rng,
        )
        .map(Decision::Challenge)
    }

    /// Lets a login through without a code, recorded with the rule that allowed it.
    fn allow<R: CryptoRng + ?Sized>(
        &self,
        who: &Who<'_>,
        why: Explanation,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<Decision> {
        self.record(
            who.event(Action::AccessAllowed, Outcome::Success)
                .reason(&why.rule),
            now,
            rng,
        )?;
        Ok(Decision::Allow(Allowed {
            why,
            device_id: None,
            set_cookie: None,
        }))
    }

    /// Refuses (and records) a locked user.
    pub(crate) fn refuse_if_locked<R: CryptoRng + ?Sized>(
        &self,
        who: &Who<'_>,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<()> {
        if self.guess_state(who, now)?.locked() {
            self.record(
                who.event(Action::AccessDenied, Outcome::Denied)
                    .reason("user:locked"),
                now,
                rng,
            )?;
            return Err(Error::Locked);
        }
        Ok(())
    }

    /// Opens a challenge (replacing the user's earlier one), recorded as `challenge_started`.
    #[allow(
        clippy::too_many_arguments,
        reason = "one call site per purpose, all named"
    )]
    pub(crate) fn open_challenge<R: CryptoRng + ?Sized>(
        &self,
        who: &Who<'_>,
        purpose: Purpose,
        email: &str,
        opt_in: bool,
        why: Explanation,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<ChallengeView> {
        let challenge = StoredChallenge {
            v: 1,
            id: otp::new_id(rng),
            purpose,
            email: email.to_owned(),
            created_at: now,
            expires_at: now.plus(self.settings.challenge_ttl_seconds),
            code: None,
            opt_in,
        };
        let challenge_key = keys::challenge(who.org, who.user);
        let event = who
            .event(Action::ChallengeStarted, Outcome::Success)
            .reason(&why.rule);
        // If the record cannot be written the challenge is withdrawn: no unrecorded login step.
        let previous = self.put_recorded(
            &challenge_key,
            &challenge,
            event.challenge(&challenge.id),
            now,
            rng,
        )?;
        if let Some(old) = previous
            .as_deref()
            .and_then(|b| serde_json::from_slice::<StoredChallenge>(b).ok())
        {
            self.forget_counters(&old);
        }
        Ok(ChallengeView {
            challenge_id: challenge.id,
            purpose: challenge.purpose,
            masked_email: input::mask_email(&challenge.email),
            expires_at: challenge.expires_at,
            why,
        })
    }

    /// Emails the challenge's code: the same code while it is live, a fresh one otherwise.
    ///
    /// # Errors
    /// [`Error::Rejected`] for an unknown or expired challenge; [`Error::Locked`];
    /// [`Error::Throttled`] beyond the send window; [`Error::Store`], [`Error::Audit`] (nothing
    /// mailed) or [`Error::Mail`] (recorded as `code_delivery_failed`).
    pub fn send_code<R: CryptoRng + ?Sized>(
        &self,
        ctx: &LoginContext,
        challenge_id: &str,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<CodeSent> {
        let ip = input::login_context(ctx)?;
        input::id("challenge_id", challenge_id)?;
        let who = Who::of(ctx, ip);
        let challenge_key = keys::challenge(who.org, who.user);
        let Some(mut challenge) = self
            .load_challenge(&challenge_key)?
            .filter(|c| c.id == challenge_id && now <= c.expires_at)
        else {
            return Err(Error::Rejected);
        };
        if self.guess_state(&who, now)?.locked() {
            let event = who
                .event(Action::AccessDenied, Outcome::Denied)
                .reason("user:locked");
            self.record(event.challenge(challenge_id), now, rng)?;
            return Err(Error::Locked);
        }

        let (cap, window) = (
            self.settings.sends_per_window,
            self.settings.send_window_seconds,
        );
        let log_key = keys::send_log(who.org, who.user);
        let mut log = self.load_json::<SendLog>(&log_key)?.unwrap_or_default();
        log.prune(now, window);
        if let Some(until) = log.full_until(cap, window) {
            let event = who
                .event(Action::SendThrottled, Outcome::Denied)
                .reason("send-window");
            self.record(event.challenge(challenge_id), now, rng)?;
            return Err(Error::Throttled {
                retry_after: now.seconds_until(until).max(1),
            });
        }
        // Backstop for concurrent sends that all read the log before any wrote it.
        let bucket = now.0.div_euclid(window);
        let in_bucket = self
            .store
            .increment(&keys::send_bucket(who.org, who.user, bucket), 1)
            .map_err(Error::store)?;
        if in_bucket > i64::from(cap) {
            let event = who
                .event(Action::SendThrottled, Outcome::Denied)
                .reason("send-window");
            self.record(event.challenge(challenge_id), now, rng)?;
            let until = Timestamp((bucket + 1) * window);
            return Err(Error::Throttled {
                retry_after: now.seconds_until(until).max(1),
            });
        }
        // Housekeeping only: a stale window counter is harmless, so its failure is ignored.
        let _ = self
            .store
            .delete(&keys::send_bucket(who.org, who.user, bucket - 1));

        let live = match &challenge.code {
            Some(code) if now <= code.expires_at => {
                let guesses = self
                    .store
                    .increment(&keys::attempts(&challenge.id, code.generation), 0)
                    .map_err(Error::store)?;
                // A spent code is dead too. Its challenge normally goes with it, but a store failure
                // during `verify` can leave both behind; re-sending it would mail a code that can
                // only be refused, for the rest of its lifetime.
                let used = self
                    .store
                    .increment(&keys::used(&challenge.id, code.generation), 0)
                    .map_err(Error::store)?;
                (guesses < throttle::MAX_GUESSES_PER_CODE && used == 0).then(|| code.clone())
            }
            _ => None,
        };
        let resent = live.is_some();
        let code = match live {
            Some(code) => code,
            None => StoredCode {
                generation: challenge.code.as_ref().map_or(1, |c| c.generation + 1),
                seed: otp::new_seed(rng),
                issued_at: now,
                expires_at: now.plus(self.settings.code_ttl_seconds),
            },
        };
        challenge.expires_at = challenge.expires_at.max(code.expires_at);
        challenge.code = Some(code.clone());
        log.0.push(now);
        let mut undo = Undo::default();
        self.remember_value(&mut undo, &log_key)?;
        self.remember_value(&mut undo, &challenge_key)?;
        // The log first: if the store fails between the two writes, the user has one email fewer
        // in the window (the safe direction), never an email that the window did not count.
        self.put(&log_key, &log)?;
        self.put(&challenge_key, &challenge)?;
        let action = if resent {
            Action::CodeResent
        } else {
            Action::CodeSent
        };
        if let Err(e) = self.append(
            who.event(action, Outcome::Success).challenge(&challenge.id),
            now,
            rng,
        ) {
            // Unrecorded, so not sent: the window and the challenge are as they were.
            self.undo(undo);
            let _ = self
                .store
                .increment(&keys::send_bucket(who.org, who.user, bucket), -1);
            return Err(e);
        }

        let otp = otp::derive(
            self.key,
            &challenge.id,
            code.generation,
            &code.seed,
            self.settings.code_digits,
        );
        let branding = self.branding_of(who.org)?;
        let audience = email::Audience {
            to: &challenge.email,
            branding: &branding,
            language: crate::i18n::choose(ctx.locale.as_deref(), &branding.default_language),
            time_zone: ctx.device.traits.time_zone.as_deref(),
        };
        let mail = email::code_email(
            &audience,
            &otp,
            code.expires_at,
            self.settings.code_ttl_seconds,
        );
        if let Err(e) = self.mailer.send(&mail) {
            let event = who
                .event(Action::CodeDeliveryFailed, Outcome::Failure)
                .reason("mailer-refused");
            // The mail error is what the caller must see; this record is best effort on top of the
            // `code_sent` record already written.
            let _ = self.record(event.challenge(&challenge.id), now, rng);
            return Err(Error::Mail(e.0));
        }
        Ok(CodeSent {
            resent,
            code_expires_at: code.expires_at,
            sends_left: log.left(cap),
        })
    }

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

        let state = self.guess_state(&who, now)?;
        if state.locked() {
            self.record(rejected("user:locked"), now, rng)?;
            return Err(Error::Locked);
        }
        if let Some(until) = state.wait_until(now) {
            let event = who
                .event(Action::VerifyThrottled, Outcome::Denied)
                .reason("guess-delay");
            self.record(event.challenge(challenge_id), now, rng)?;
            return Err(Error::Throttled {
                retry_after: now.seconds_until(until).max(1),
            });
        }
        // Count the guess as a failure before looking at it, so that concurrent guesses can never
        // exceed the lock threshold; a success takes it back.
        let failures_key = keys::failures(who.org, who.user);
        let failures = self
            .store
            .increment(&failures_key, 1)
            .map_err(Error::store)?;
        if failures > throttle::LOCK_AT {
            self.record(rejected("user:locked"), now, rng)?;
            return Err(Error::Locked);
        }

        let challenge_key = keys::challenge(who.org, who.user);
        let challenge = self.load_challenge(&challenge_key)?;
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
        let guesses = self
            .store
            .increment(&keys::attempts(challenge_id, generation), 1)
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
            if self.store.increment(&used_key, 1).map_err(Error::store)? == 1 {
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
                    // Give the code and the guess back: nothing took effect.
                    let _ = self.store.increment(&used_key, -1);
                    let _ = self.store.increment(&failures_key, -1);
                    return Err(e);
                }
                // When and where the user last proved the factor (for `change_email`). Best effort:
                // a failure only means the user is asked for a code again before a change.
                let _ = self.put(
                    &keys::last_verified(who.org, who.user),
                    &self.proof_here(ctx, ip, now),
                );
                // The code is spent by the `used` counter whatever happens below; clearing the
                // challenge and the failure streak is tidy-up whose failure only errs on the safe side.
                let _ = self.store.delete(&challenge_key);
                let _ = self.store.delete(&failures_key);
                let _ = self.store.delete(&keys::last_failure(who.org, who.user));
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
                return Ok(Verified {
                    amr: vec!["otp".to_owned(), "mfa".to_owned()],
                    device_id,
                    set_cookie,
                });
            }
            reason = "code-already-used";
        }

        self.put(&keys::last_failure(who.org, who.user), &now)?;
        let window_key = keys::failures_window(who.org, who.user, throttle::failure_window(now));
        let window_failures = self.store.increment(&window_key, 1).map_err(Error::store)?;
        self.append(rejected(reason), now, rng)?;
        if failures == throttle::LOCK_AT || window_failures == throttle::WINDOW_CAP {
            let why = if failures == throttle::LOCK_AT {
                "consecutive-failures"
            } else {
                "failures-in-30-days"
            };
            self.record(
                who.event(Action::UserLocked, Outcome::Denied).reason(why),
                now,
                rng,
            )?;
        }
        Err(Error::Rejected)
    }

    /// The user's MFA state.
    ///
    /// # Errors
    /// [`Error::InvalidInput`]; [`Error::Store`].
    pub fn status(&self, ctx: &LoginContext, now: Timestamp) -> Result<UserStatus> {
        input::login_context(ctx)?;
        self.status_of(&ctx.org_id, &ctx.user_id, now)
    }

    /// The MFA state of `user` in `org` (validated identifiers).
    pub(crate) fn status_of(&self, org: &str, user: &str, now: Timestamp) -> Result<UserStatus> {
        let who = Who {
            org,
            user,
            ip: String::new(),
            user_agent: "",
        };
        let state = self.guess_state(&who, now)?;
        let challenge = self
            .load_challenge(&keys::challenge(who.org, who.user))?
            .filter(|c| now <= c.expires_at);
        let (cap, window) = (
            self.settings.sends_per_window,
            self.settings.send_window_seconds,
        );
        let mut log = self
            .load_json::<SendLog>(&keys::send_log(who.org, who.user))?
            .unwrap_or_default();
        log.prune(now, window);
        Ok(UserStatus {
            enrolled: self.enrollment_of(who.org, who.user)?.is_some(),
            locked: state.locked(),
            consecutive_failures: u32::try_from(state.failures.max(0)).unwrap_or(u32::MAX),
            verify_blocked_until: state.wait_until(now),
            active_challenge: challenge.as_ref().map(|c| c.id.clone()),
            code_expires_at: challenge
                .as_ref()
                .and_then(|c| c.code.as_ref())
                .map(|c| c.expires_at)
                .filter(|t| now <= *t),
            sends_left: log.left(cap),
            next_send_at: log.full_until(cap, window),
        })
    }

    /// The organization's branding as stored, or the neutral default.
    pub(crate) fn branding_of(&self, org: &str) -> Result<crate::branding::Branding> {
        Ok(self
            .load_json(&keys::branding(org))?
            .unwrap_or_else(|| crate::branding::Branding::default_for(org)))
    }

    /// This engine with the platform's settings tightened by an organization's policy.
    pub(crate) fn scoped(&self, policy: &crate::policy::OrgPolicy) -> Engine<'_> {
        Engine {
            store: self.store,
            mailer: self.mailer,
            audit: self.audit,
            settings: policy.effective(&self.settings),
            key: self.key,
        }
    }

    pub(crate) fn guess_state(&self, who: &Who<'_>, now: Timestamp) -> Result<GuessState> {
        let failures = self
            .store
            .increment(&keys::failures(who.org, who.user), 0)
            .map_err(Error::store)?;
        let window_key = keys::failures_window(who.org, who.user, throttle::failure_window(now));
        let window_failures = self.store.increment(&window_key, 0).map_err(Error::store)?;
        let last_failure = self.load_json::<Timestamp>(&keys::last_failure(who.org, who.user))?;
        Ok(GuessState {
            failures,
            window_failures,
            last_failure,
        })
    }

    fn load_challenge(&self, key: &str) -> Result<Option<StoredChallenge>> {
        self.load_json(key)
    }

    /// Reads a JSON value. A value that does not parse (a foreign or corrupt record) reads as absent:
    /// for every key here, absent is the restrictive answer (no challenge, empty log, no last failure
    /// — the counters, which cannot be corrupted this way, carry the limits).
    pub(crate) fn load_json<T: for<'de> Deserialize<'de>>(&self, key: &str) -> Result<Option<T>> {
        let bytes = self.store.get(key).map_err(Error::store)?;
        Ok(bytes.and_then(|b| serde_json::from_slice(&b).ok()))
    }

    pub(crate) fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value).map_err(|e| Error::Store(e.to_string()))?;
        self.store.set(key, &bytes).map_err(Error::store)
    }

    /// Drops a replaced challenge's per-code counters. Best effort: leftovers are unreachable.
    fn forget_counters(&self, old: &StoredChallenge) {
        let last = old.code.as_ref().map_or(0, |c| c.generation);
        for generation in 0..=last {
            let _ = self.store.delete(&keys::attempts(&old.id, generation));
            let _ = self.store.delete(&keys::used(&old.id, generation));
        }
    }

    /// Appends one audit record to the end of its organization's chain: read the head, link, ask
    /// the sink to append if the head has not moved, and relink when another writer got there first.
    /// Then counts the record in the store, the anchor that makes a truncated log detectable (a
    /// failure there loses nothing: the log is simply one ahead of its count).
    pub(crate) fn append<R: CryptoRng + ?Sized>(
        &self,
        event: Event,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<()> {
        let id = otp::new_id(rng);
        let seal = SealKey::derive(self.key);
        for _ in 0..MAX_APPEND_ATTEMPTS {
            let head = self.audit.head(&event.org).map_err(Error::audit)?;
            let (seq, prev) = Head::next(head.as_ref());
            let (line, hash) = event.seal(&id, seq, now, &prev, Some(&seal));
            let entry = AuditEntry {
                org_id: event.org.clone(),
                seq,
                at: now.0,
                action: event.action.as_str().to_owned(),
                prev,
                hash,
                line,
            };
            match self.audit.append(&entry) {
                Ok(()) => {
                    let _ = self.store.increment(&keys::audit_count(&event.org), 1);
                    return Ok(());
                }
                Err(AppendError::Conflict) => {}
                Err(AppendError::Unavailable(why)) => return Err(Error::Audit(why)),
            }
        }
        Err(Error::Audit(
            "the organization's audit stream stayed busy; try again".to_owned(),
        ))
    }

    /// Writes `value` at `key` as one recorded change: write, append the record; if the sink refuses it, put back what was there before and fail with
    /// [`Error::Audit`]. The one place that holds the fail-closed ordering for a single value.
    /// Returns the value it replaced.
    pub(crate) fn put_recorded<T: Serialize, R: CryptoRng + ?Sized>(
        &self,
        key: &str,
        value: &T,
        event: Event,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<Option<Vec<u8>>> {
        let previous = self.store.get(key).map_err(Error::store)?;
        self.put(key, value)?;
        if let Err(e) = self.append(event, now, rng) {
            let _ = match &previous {
                Some(bytes) => self.store.set(key, bytes),
                None => self.store.delete(key),
            };
            return Err(e);
        }
        Ok(previous)
    }

    /// Removes `key` as one recorded change, putting it back if the record cannot be written.
    pub(crate) fn delete_recorded<R: CryptoRng + ?Sized>(
        &self,
        key: &str,
        event: Event,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<()> {
        let mut undo = Undo::default();
        self.remember_value(&mut undo, key)?;
        self.store.delete(key).map_err(Error::store)?;
        self.append(event, now, rng)
            .inspect_err(|_| self.undo(undo))
    }

    /// Notes a value's current content, to put it back with [`Engine::undo`].
    pub(crate) fn remember_value(&self, undo: &mut Undo, key: &str) -> Result<()> {
        let value = self.store.get(key).map_err(Error::store)?;
        undo.values.push((key.to_owned(), value));
        Ok(())
    }

    /// Notes a counter's current value, to put it back with [`Engine::undo`].
    pub(crate) fn remember_counter(&self, undo: &mut Undo, key: &str) -> Result<()> {
        let value = self.store.increment(key, 0).map_err(Error::store)?;
        undo.counters.push((key.to_owned(), value));
        Ok(())
    }

    /// Puts back what `undo` noted, after the record of a change was refused. Best effort: the
    /// store just failed or the sink did, and the caller is answered with that error either way.
    pub(crate) fn undo(&self, undo: Undo) {
        for (key, value) in undo.values {
            let _ = match value {
                Some(bytes) => self.store.set(&key, &bytes),
                None => self.store.delete(&key),
            };
        }
        for (key, value) in undo.counters {
            if let Ok(now) = self.store.increment(&key, 0) {
                let _ = self.store.increment(&key, value - now);
            }
        }
    }

    /// Writes one audit record for an event that changes nothing (a refusal, a throttle).
    pub(crate) fn record<R: CryptoRng + ?Sized>(
        &self,
        event: Event,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<()> {
        self.append(event, now, rng)
    }
}
