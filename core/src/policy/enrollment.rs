//! Enrollment: a user's MFA address counts only once a code sent to it was entered.
//!
//! - **At login.** When a rule requires MFA and the user has no confirmed address, `begin` opens a
//!   challenge of purpose `enrollment` to the address the IdP names; verifying it confirms the address
//!   (`enrolled`). An organization may grant a grace period first (`enrollment_grace_days`, counted
//!   from the user's first such login, and/or `enrollment_grace_logins`): while it lasts, `begin`
//!   allows the login (`enrollment:grace`) and says until when; afterwards the login cannot complete
//!   without enrolling.
//! - **Of one's own accord.** `enroll` opens the same challenge for a user no rule requires; once
//!   confirmed, the user is *opted in* and MFA applies to them (`user:opted-in`).
//! - **Changing the address** (ASVS 7.5.1). Codes always go to the confirmed address, even when the
//!   IdP later names another: a hijacked IdP profile cannot redirect them. `change-email` moves MFA
//!   to the IdP's current address only within 5 minutes of a verified code to the *current* one, and
//!   only once a code sent to the new one is entered (`email_changed`).
//! - **Reset.** An admin's `reset-user` forgets the address too: the user enrolls again, at the
//!   IdP's current address, at the next login. That is the way back for someone who lost the mailbox.
//!   The grace period is not given again: once a user enrolled, or used up the grace, a reset
//!   leads straight to enrollment, never to a password-only login.
//! - **Unreadable state.** A stored confirmed address, grace start or last verification that does
//!   not parse is `unavailable` (recorded), never "none": no address would send codes to whatever
//!   the IdP names and forget an opt-in, and no grace start would start the grace again. The grace's
//!   "spent" mark counts by its presence alone, so no content can unspend it.
//! - **Bound to this sign-in.** A successful `verify` returns a step-up token to its caller (the
//!   IdP keeps it in that sign-in's session); `change-email` needs that token, within 5 minutes,
//!   once. Only the MAC of the latest token is stored, so a code a colleague entered on an
//!   identical workstation behind the same NAT gives nobody else's session the right to move the
//!   address: they never saw the token.

use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};

use crate::audit::{Action, Outcome};
use crate::email::i18n::Explain;
use crate::engine::Engine;
use crate::engine::record::{EventExt, Who};
use crate::engine::state::StoredChallenge;
use crate::engine::stats::Stat;
use crate::kernel::error::{Error, Result};
use crate::kernel::model::{ChallengeView, Explanation, LoginContext, Purpose};
use crate::kernel::time::Timestamp;
use crate::kernel::{input, keys, random, secret};
use crate::policy::OrgPolicy;
use subtle::ConstantTimeEq;

/// How recent a verified code must be for `change-email`.
pub const FRESH_VERIFICATION_SECONDS: i64 = 300;

/// The step-up grant of the user's last verified code: the MAC of the token returned to that
/// sign-in (never the token), and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StepUp {
    mac: String,
    at: Timestamp,
}

/// A confirmed MFA address, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Enrollment {
    pub(crate) v: u8,
    /// The confirmed address: where codes go.
    pub(crate) email: String,
    pub(crate) enrolled_at: Timestamp,
    /// Enrolled while no rule required MFA: MFA now applies to this user.
    pub(crate) opted_in: bool,
}

impl Engine<'_> {
    /// The user's confirmed address, if any.
    pub(crate) fn enrollment_of(&self, org: &str, user: &str) -> Result<Option<Enrollment>> {
        self.load_json(&keys::enrollment(org, user))
    }

    /// The MAC a step-up token of `who` is stored under: keyed, and bound to the user.
    fn step_up_mac(&self, who: &Who<'_>, token: &str) -> String {
        hex::encode(secret::hmac_sha256(
            self.key.as_bytes(),
            &[
                b"mfa-step/step-up/v1\0",
                who.org.as_bytes(),
                b"\0",
                who.user.as_bytes(),
                b"\0",
                token.as_bytes(),
            ],
        ))
    }

    /// Grants a step-up to the sign-in that just verified a code: a fresh token for the caller,
    /// its MAC stored (replacing any earlier grant) until it can no longer be used.
    ///
    /// # Errors
    /// [`Error::Store`]: no token is handed out.
    pub(crate) fn grant_step_up<R: CryptoRng + ?Sized>(
        &self,
        who: &Who<'_>,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<String> {
        let token = random::new_id(rng);
        let grant = StepUp {
            mac: self.step_up_mac(who, &token),
            at: now,
        };
        let kept = keys::keep_until(now.plus(FRESH_VERIFICATION_SECONDS));
        self.put(&keys::step_up(who.org, who.user), &grant, kept)?;
        Ok(token)
    }

    /// Spends the step-up `token` of `who`: the reason it is refused, or `None` once spent (the
    /// first call to present it, of any number at once).
    fn spend_step_up(
        &self,
        who: &Who<'_>,
        token: &str,
        now: Timestamp,
    ) -> Result<Option<&'static str>> {
        let Some(grant) = self.load_json::<StepUp>(&keys::step_up(who.org, who.user))? else {
            return Ok(Some("email-change:no-step-up"));
        };
        if grant.at > now || now.0 - grant.at.0 > FRESH_VERIFICATION_SECONDS {
            return Ok(Some("email-change:step-up-expired"));
        }
        let presented = self.step_up_mac(who, token);
        if !bool::from(presented.as_bytes().ct_eq(grant.mac.as_bytes())) {
            return Ok(Some("email-change:step-up-mismatch"));
        }
        let kept = keys::guard_until(grant.at.plus(FRESH_VERIFICATION_SECONDS));
        let uses = self
            .store
            .increment(&keys::step_up_used(&grant.mac), 1, kept)
            .map_err(Error::store)?;
        Ok((uses != 1).then_some("email-change:step-up-spent"))
    }

    /// Counts this login against the organization's enrollment grace; the explanation while the
    /// grace lasts, `None` once it is over (or when there is none).
    pub(crate) fn grace(
        &self,
        who: &Who<'_>,
        policy: &OrgPolicy,
        m: &Explain,
        now: Timestamp,
    ) -> Result<Option<Explanation>> {
        let (days, logins) = (policy.enrollment_grace_days, policy.enrollment_grace_logins);
        if days == 0 && logins == 0 {
            return Ok(None);
        }
        // Once enrolled, never again: a reset must not reopen a password-only way in.
        if self
            .store
            .get(&keys::grace_spent(who.org, who.user))
            .map_err(Error::store)?
            .is_some()
        {
            return Ok(None);
        }
        let start_key = keys::grace_start(who.org, who.user);
        let start = match self.load_json::<Timestamp>(&start_key)? {
            Some(start) => start,
            None => {
                self.put(&start_key, &now, None)?;
                now
            }
        };
        let made = self
            .store
            .increment(&keys::grace_logins(who.org, who.user), 1, None)
            .map_err(Error::store)?;
        let until = start.plus(i64::from(days) * 86_400);
        let message = if days > 0 && now < until {
            m.grace_until.replace("{until}", &until.rfc3339())
        } else if logins > 0 && made <= i64::from(logins) {
            let left = i64::from(logins) - made;
            m.grace_logins.replace("{count}", &left.to_string())
        } else {
            return Ok(None);
        };
        Ok(Some(Explanation {
            rule: "enrollment:grace".to_owned(),
            message,
        }))
    }

    /// Whether `user`'s enrollment grace (see [`Engine::grace`]) has begun and still lets them in:
    /// what the admin console shows as "in grace". Reads only; a login is what starts or spends it.
    ///
    /// # Errors
    /// [`Error::Store`] when the store fails or the grace's start does not parse.
    pub(crate) fn in_grace(
        &self,
        org: &str,
        user: &str,
        policy: &OrgPolicy,
        now: Timestamp,
    ) -> Result<bool> {
        let (days, logins) = (policy.enrollment_grace_days, policy.enrollment_grace_logins);
        if days == 0 && logins == 0 {
            return Ok(false);
        }
        if self
            .store
            .get(&keys::grace_spent(org, user))
            .map_err(Error::store)?
            .is_some()
        {
            return Ok(false);
        }
        let Some(start) = self.load_json::<Timestamp>(&keys::grace_start(org, user))? else {
            return Ok(false);
        };
        let made = self
            .store
            .increment(&keys::grace_logins(org, user), 0, None)
            .map_err(Error::store)?;
        Ok((days > 0 && now < start.plus(i64::from(days) * 86_400))
            || (logins > 0 && made < i64::from(logins)))
    }

    /// Starts enrolling a user who asks to: a challenge to the address the IdP names.
    ///
    /// # Errors
    /// [`Error::Forbidden`] when already enrolled (see `change_email`); [`Error::Locked`];
    /// [`Error::InvalidInput`]; [`Error::Store`]; [`Error::Audit`].
    pub fn enroll<R: CryptoRng + ?Sized>(
        &self,
        ctx: &LoginContext,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<ChallengeView> {
        let ctx = self.canonical_context(ctx);
        let ctx = ctx.as_ref();
        let ip = input::login_context(ctx)?;
        let who = Who::of(ctx, ip);
        let opened = self.enroll_as(ctx, &who, now, rng);
        let denied = || who.event(Action::AccessDenied, Outcome::Denied);
        self.noting_unreadable(opened, denied, now, rng)
    }

    /// `enroll` for a validated context.
    fn enroll_as<R: CryptoRng + ?Sized>(
        &self,
        ctx: &LoginContext,
        who: &Who<'_>,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<ChallengeView> {
        self.refuse_if_locked(who, now, rng)?;
        let enrollment = self.enrollment_of(who.org, who.user)?;
        if enrollment.is_some() {
            return Err(Error::Forbidden(
                "already enrolled: move MFA to another address with change-email",
            ));
        }
        let m = self.explain_in(ctx)?;
        let policy = self.org_policy(who.org)?;
        let requirement = self.requirement_of(ctx, &policy, None, &m)?;
        let (rule, reason) = if requirement.required {
            (requirement.why.rule, requirement.why.message)
        } else {
            ("user:opted-in".to_owned(), m.opted_in.clone())
        };
        let why = Explanation {
            rule,
            message: m.enroll.replace("{reason}", &reason),
        };
        let opt_in = !requirement.required;
        self.open_challenge(who, Purpose::Enrollment, &ctx.email, opt_in, why, now, rng)
    }

    /// Starts moving MFA to the address the IdP now names, for the sign-in that verified a code to
    /// the current address in the last 5 minutes: `step_up` is the token its `verify` returned.
    ///
    /// # Errors
    /// [`Error::Forbidden`] when not enrolled or without this sign-in's fresh, unspent step-up
    /// token (recorded); [`Error::InvalidInput`] for a token that is not one;
    /// [`Error::InvalidInput`] when the address is already the confirmed one; [`Error::Locked`];
    /// [`Error::Store`]; [`Error::Audit`].
    pub fn change_email<R: CryptoRng + ?Sized>(
        &self,
        ctx: &LoginContext,
        step_up: &str,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<ChallengeView> {
        let ctx = self.canonical_context(ctx);
        let ctx = ctx.as_ref();
        let ip = input::login_context(ctx)?;
        input::token("step_up", step_up)?;
        let who = Who::of(ctx, ip);
        let opened = self.change_email_as(ctx, &who, step_up, now, rng);
        let denied = || who.event(Action::AccessDenied, Outcome::Denied);
        self.noting_unreadable(opened, denied, now, rng)
    }

    /// `change_email` for a validated context.
    fn change_email_as<R: CryptoRng + ?Sized>(
        &self,
        ctx: &LoginContext,
        who: &Who<'_>,
        step_up: &str,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<ChallengeView> {
        self.refuse_if_locked(who, now, rng)?;
        let Some(enrollment) = self.enrollment_of(who.org, who.user)? else {
            return Err(Error::Forbidden("not enrolled yet: enroll first"));
        };
        if enrollment.email.eq_ignore_ascii_case(&ctx.email) {
            return Err(Error::invalid(
                "email",
                "is already the confirmed MFA address; send the new address in the context",
            ));
        }
        let refusal = self.spend_step_up(who, step_up, now)?;
        if let Some(reason) = refusal {
            self.record(
                who.event(Action::AccessDenied, Outcome::Denied)
                    .reason(reason),
                now,
                rng,
            )?;
            return Err(Error::Forbidden(
                "verify a code sent to the current address first, and pass the step-up token that verify returned, within 5 minutes",
            ));
        }
        let m = self.explain_in(ctx)?;
        let why = Explanation {
            rule: "email-change".to_owned(),
            message: m.email_change.clone(),
        };
        let opt_in = enrollment.opted_in;
        self.open_challenge(who, Purpose::EmailChange, &ctx.email, opt_in, why, now, rng)
    }

    /// What a verified enrollment or email-change challenge confirms: the address, stored and
    /// recorded (`enrolled` / `email_changed`) as one change, undone if the record cannot be written.
    pub(crate) fn confirm_address<R: CryptoRng + ?Sized>(
        &self,
        who: &Who<'_>,
        challenge: &StoredChallenge,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<()> {
        let key = keys::enrollment(who.org, who.user);
        let (action, enrolled_at) = match challenge.purpose {
            Purpose::Login => return Ok(()),
            Purpose::Enrollment => (Action::Enrolled, now),
            Purpose::EmailChange => {
                let Some(current) = self.enrollment_of(who.org, who.user)? else {
                    // Reset while the change was under way: nothing to change any more.
                    return Err(Error::Rejected);
                };
                (Action::EmailChanged, current.enrolled_at)
            }
        };
        let enrollment = Enrollment {
            v: 1,
            email: challenge.email.clone(),
            enrolled_at,
            opted_in: challenge.opt_in,
        };
        let reason = if challenge.opt_in {
            "email-confirmed:opted-in"
        } else {
            "email-confirmed"
        };
        let event = who
            .event(action, Outcome::Success)
            .reason(reason)
            .challenge(&challenge.id);
        self.put_recorded(&key, (&enrollment, None), event, now, rng)?;
        if action == Action::Enrolled {
            self.count(who.org, Stat::Enrolled, now, rng);
        }
        // The grace is spent for good once enrolled (kept through resets). Best effort: without
        // the mark, a reset user would only get what is left of the grace they started with.
        let _ = self.put(&keys::grace_spent(who.org, who.user), &now, None);
        Ok(())
    }
}
