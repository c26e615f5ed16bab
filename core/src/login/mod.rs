//! The login step: `begin` (here) decides whether a login needs a code, `send_code` emails it
//! (`send.rs`), `verify` checks it (`verify.rs`), `status` reports where the user stands
//! (`status.rs`). Built from the rules in [`crate::engine::throttle`] and [`otp`], the user's state
//! in `engine/state.rs`, and the concerns below it: who must use MFA ([`crate::policy`]) and which
//! browsers are trusted ([`crate::devices`]).
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
//! the sink: see [`crate::audit::chain`] for how records find their place; the ordering is held in
//! [`crate::engine`]'s recording helpers), then reports success. So a store
//! that fails part-way fails inside the change, never between the change and its record; and if the
//! sink refuses the record, the change is undone (a consumed code is given back, an opened
//! challenge is withdrawn) and the caller gets [`Error::Audit`]. Only a sink failure followed by a
//! store failure during the undo can leave a change behind, and then the change is one that grants
//! nothing by itself (an open challenge, a spent code: the user asks for a new email). A code is
//! mailed only after it is stored and its `code_sent` record is written; a mail failure is recorded as
//! `code_delivery_failed`. A store failure part-way may cost the user budget (an email counted, a
//! guess counted) but never grants anything: counters only ever err towards refusing.
//!
//! A stored value that does not parse is a store failure too ([`crate::engine`]): `begin` answers
//! `unavailable` and records `access_denied` with reason `store:unreadable:<kind>` (the policy,
//! the platform's roles, the grace period's start, the confirmed address, the last wrong code, the
//! branding…), never reading it as absent. The one exception is a trusted device's record, whose
//! absence is the restrictive answer: an unreadable one is no device (a code is asked), recorded
//! as `device_challenged` / `store:unreadable:device`.
//!
//! ## Trusted browsers
//! Trust is judged at every `begin` against the organization's policy of *today*, not the one the
//! browser was trusted under (see [`crate::devices`]): remembering switched off or fewer trust days
//! revoke the device (recorded) and ask for a code (`device:not-allowed`, `device:trust-shortened`).
//!
//! ## No enumeration
//! A wrong code, an expired code, a used code, an unknown challenge and a user the component has never
//! seen all give [`Error::Rejected`], and all walk the same steps: the failure counters are keyed by the
//! IdP's user id whether or not anything else is stored for it, and a code is derived and compared
//! even when there is nothing to compare it with.

#[cfg(test)]
mod expiry_tests;
#[cfg(test)]
mod id_case_tests;
pub mod otp;
#[cfg(test)]
mod resume_tests;
mod send;
#[cfg(test)]
mod stats_tests;
mod status;
#[cfg(test)]
mod step_up_tests;
#[cfg(test)]
mod tests;
mod verify;

use rand_core::CryptoRng;

use crate::audit::{Action, Outcome};
use crate::devices::trust::DeviceCheck;
use crate::engine::Engine;
use crate::engine::record::{EventExt, Who};
use crate::engine::stats::Stat;
#[cfg(doc)]
use crate::kernel::error::Error; // named by the `# Errors` docs
use crate::kernel::error::Result;
use crate::kernel::input;
use crate::kernel::model::{Allowed, Decision, Denied, Explanation, LoginContext, Purpose};
use crate::kernel::time::Timestamp;

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
        let ctx = self.canonical_context(ctx);
        let ctx = ctx.as_ref();
        let ip = input::login_context(ctx)?;
        let who = Who::of(ctx, ip);
        // Counted once, as what was decided: not a failed call, and not the same browser back at
        // a challenge it already has (a resume changes nothing).
        let decided = self
            .decide(ctx, &who, ip, now, rng)
            .map(|(decision, counted)| {
                if let Some(stat) = counted {
                    self.count(who.org, stat, now, rng);
                }
                decision
            });
        let decision = self.noting_unreadable(
            decided,
            || who.event(Action::AccessDenied, Outcome::Denied),
            now,
            rng,
        )?;
        // The decision's own writes are made durable first; the user index is written after
        // them on a commit of its own, whose failure changes no answer (`roster`).
        self.commit()?;
        self.note_seen(who.org, who.user, &ctx.roles, now);
        Ok(decision)
    }

    /// `begin` for a validated context: the decision, and what it counts as in the day's counts
    /// (`engine::stats`): nothing when it resumed the user's live challenge.
    fn decide<R: CryptoRng + ?Sized>(
        &self,
        ctx: &LoginContext,
        who: &Who<'_>,
        ip: std::net::IpAddr,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<(Decision, Option<Stat>)> {
        let m = self.explain_in(ctx)?;
        if self.is_locked(who, now)? {
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
            return Ok((Decision::Deny(Denied { why }), Some(Stat::Denied)));
        }
        // Who must use MFA: the organization's mandate, its roles, the platform's roles, opt-in.
        let policy = self.org_policy(who.org)?;
        let enrollment = self.enrollment_of(who.org, who.user)?;
        let requirement = self.requirement_of(ctx, &policy, enrollment.as_ref(), &m)?;
        if !requirement.required {
            return Ok((
                self.allow(who, requirement.why, now, rng)?,
                Some(Stat::Allowed),
            ));
        }
        // No confirmed address yet: enroll (after the organization's grace, if any).
        let Some(enrollment) = enrollment else {
            if let Some(why) = self.grace(who, &policy, &m, now)? {
                return Ok((self.allow(who, why, now, rng)?, Some(Stat::Allowed)));
            }
            let why = Explanation {
                message: m.enroll.replace("{reason}", &requirement.why.message),
                rule: requirement.why.rule,
            };
            return self
                .open_or_resume(who, Purpose::Enrollment, &ctx.email, false, why, now, rng)
                .map(|(view, fresh)| {
                    let counted = fresh.then_some(Stat::ChallengeEnrollment);
                    (Decision::Challenge(view), counted)
                });
        };
        // Trust is judged with the organization's limits of today (a device they end is revoked).
        let scoped = self.scoped(&policy);
        let why = match scoped.check_device(ctx, who, ip, now, rng)? {
            DeviceCheck::Trusted {
                device_id,
                expires_at,
                verified_at,
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
                        scoped.unrotate(who, &device_id);
                    }
                    return Err(e);
                }
                let allowed = Allowed {
                    why,
                    amr: vec!["mfa".to_owned()],
                    second_factor_at: Some(verified_at),
                    device_id: Some(device_id),
                    set_cookie,
                };
                return Ok((Decision::Allow(allowed), Some(Stat::Trusted)));
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
            DeviceCheck::Unreadable { device_id } => {
                let event = who
                    .event(Action::DeviceChallenged, Outcome::Denied)
                    .reason("store:unreadable:device");
                self.record(event.device(&device_id), now, rng)?;
                requirement.why
            }
            DeviceCheck::Reused | DeviceCheck::Absent => requirement.why,
        };
        // Codes go to the confirmed address, whatever the IdP names now (see `crate::policy::enrollment`).
        self.open_or_resume(who, Purpose::Login, &enrollment.email, false, why, now, rng)
            .map(|(view, fresh)| {
                let counted = fresh.then_some(Stat::ChallengeLogin);
                (Decision::Challenge(view), counted)
            })
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
            amr: Vec::new(),
            second_factor_at: None,
            device_id: None,
            set_cookie: None,
        }))
    }
}
