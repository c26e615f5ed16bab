//! `send-code`: emails the challenge's code, the same code while it lives and a fresh one after.
//!
//! It guarantees that no more than `sends_per_window` emails go out per user in any
//! `send_window_seconds` (sliding, at an aligned edge too), however many requests run at once: a
//! send first takes a numbered send slot with an atomic `increment`, and slot `k` is taken only a
//! window after slot `k − cap` was (the rule and its proof: [`crate::engine::throttle`]); that a
//! code is mailed only once it is stored and its `code_sent` record is written (unrecorded, not
//! sent); and that a spent or exhausted code is never mailed again. The code is derived from the
//! stored seed ([`super::otp`]) only on its way into the email.

use rand_core::CryptoRng;

use super::otp;
use crate::audit::{Action, Outcome};
use crate::email;
use crate::engine::Engine;
use crate::engine::record::{EventExt, Undo, Who};
use crate::engine::state::{StoredCode, Taken};
use crate::engine::stats::Stat;
use crate::engine::throttle;
use crate::kernel::error::{Error, Result};
use crate::kernel::model::{CodeSent, LoginContext};
use crate::kernel::time::Timestamp;
use crate::kernel::{input, keys};

impl Engine<'_> {
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
        let ctx = self.canonical_context(ctx);
        let ctx = ctx.as_ref();
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
        if self.is_locked(&who, now)? {
            let event = who
                .event(Action::AccessDenied, Outcome::Denied)
                .reason("user:locked");
            self.record(event.challenge(challenge_id), now, rng)?;
            return Err(Error::Locked);
        }

        // Count first: take this send's slot in the sliding window, or wait (nothing taken).
        let until = match self.take_send_slot(&who, now)? {
            Taken::Slot(k) => Ok(k),
            Taken::Wait(until) => Err(until),
            // Send slots have no limit; if one ever had, a full window waits a whole window.
            Taken::Full => Err(now.plus(self.settings.send_window_seconds)),
        };
        let slot = match until {
            Ok(k) => k,
            Err(until) => {
                let event = who
                    .event(Action::SendThrottled, Outcome::Denied)
                    .reason("send-window");
                self.record(event.challenge(challenge_id), now, rng)?;
                self.count(who.org, Stat::Throttled, now, rng);
                return Err(Error::Throttled {
                    retry_after: now.seconds_until(until).max(1),
                });
            }
        };

        let live = match &challenge.code {
            Some(code) if now <= code.expires_at => {
                let guesses = self
                    .store
                    .increment(&keys::attempts(&challenge.id, code.generation), 0, None)
                    .map_err(Error::store)?;
                // A spent code is dead too. Its challenge normally goes with it, but a store failure
                // during `verify` can leave both behind; re-sending it would mail a code that can
                // only be refused, for the rest of its lifetime.
                let used = self
                    .store
                    .increment(&keys::used(&challenge.id, code.generation), 0, None)
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
                // The challenge's own seed, so that racing first sends mint one code.
                seed: challenge
                    .seed
                    .as_ref()
                    .map_or_else(|| otp::new_seed(rng), |s| s.0.clone()),
                issued_at: now,
                expires_at: now.plus(self.settings.code_ttl_seconds),
            },
        };
        challenge.expires_at = challenge.expires_at.max(code.expires_at);
        challenge.code = Some(code.clone());
        let kept = keys::keep_until(challenge.expires_at);
        let mut undo = Undo::default();
        self.remember_value(&mut undo, &challenge_key, kept)?;
        // From here a store failure leaves the slot spent: it costs the user one email of the
        // window (the safe direction), never an email the window did not count.
        self.put(&challenge_key, &challenge, kept)?;
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
            // Unrecorded, so not sent: the challenge is as it was, and the slot is given back.
            self.undo(undo);
            self.void_send_slot(who.org, who.user, slot, now);
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
            language: email::i18n::choose(ctx.locale.as_deref(), &branding.default_language),
            time_zone: ctx.device.traits.time_zone.as_deref(),
        };
        let mail = email::code_email(
            &audience,
            &otp,
            code.expires_at,
            self.settings.code_ttl_seconds,
        );
        if let Err(e) = self.mailer.send(&mail) {
            self.count(who.org, Stat::DeliveryFailed, now, rng);
            let event = who
                .event(Action::CodeDeliveryFailed, Outcome::Failure)
                .reason("mailer-refused");
            // The mail error is what the caller must see; this record is best effort on top of the
            // `code_sent` record already written.
            let _ = self.record(event.challenge(&challenge.id), now, rng);
            return Err(Error::Mail(e.0));
        }
        self.count(who.org, Stat::CodeSent, now, rng);
        Ok(CodeSent {
            resent,
            code_expires_at: code.expires_at,
            // What the window holds after this send; best effort (the email is on its way).
            sends_left: self
                .send_room(who.org, who.user, slot)
                .map_or(0, |room| room.left(self.settings.send_window_seconds, now)),
        })
    }
}
