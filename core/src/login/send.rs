//! `send-code`: emails the challenge's code, the same code while it lives and a fresh one after.
//!
//! It guarantees that no more than `sends_per_window` emails go out per user per send window, even
//! to concurrent requests (the send log decides, an atomic per-window counter backs it up); that a
//! code is mailed only once it is stored and its `code_sent` record is written (unrecorded, not
//! sent); and that a spent or exhausted code is never mailed again. The code is derived from the
//! stored seed ([`super::otp`]) only on its way into the email.

use rand_core::CryptoRng;

use super::otp;
use crate::audit::{Action, Outcome};
use crate::email;
use crate::engine::Engine;
use crate::engine::record::{EventExt, Undo, Who};
use crate::engine::state::StoredCode;
use crate::engine::throttle::{self, SendLog};
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
}
