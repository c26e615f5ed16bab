//! Administration: organization policies, branding, the platform's roles, user resets and status,
//! authorized from the IdP's word about the actor. An `org-admin` acts on its own organization only;
//! a `platform-admin` on any ([`may_administer`]). Everyone else is refused. Every change and every refusal leaves an audit record (refusals in the
//! actor's own organization's stream, so that no one writes into a stream that is not theirs);
//! allowed reads (a policy, branding, a user's status) leave none, except a read that meets a
//! stored value that does not parse: that is `unavailable` (never the default an admin could then
//! save back) and recorded as `access_denied` / `store:unreadable:<kind>` in the target's stream.

use rand_core::CryptoRng;

use crate::audit::{Action, Event, Outcome};
use crate::email::{self, branding::Branding, i18n};
use crate::engine::record::{Undo, Who};
use crate::engine::{Engine, throttle};
use crate::kernel::authority::may_administer;
use crate::kernel::error::{Error, Result};
use crate::kernel::model::{Actor, DeviceInfo, UserStatus};
use crate::kernel::ports::OutgoingMail;
use crate::kernel::time::Timestamp;
use crate::kernel::{input, keys};
use crate::policy::OrgPolicy;
use crate::policy::enrollment::FRESH_VERIFICATION_SECONDS;

fn actor_event(
    actor: &Actor,
    org: &str,
    subject: &str,
    action: Action,
    outcome: Outcome,
    reason: String,
) -> Event {
    Event {
        org: org.to_owned(),
        actor: actor.user_id.clone(),
        subject: subject.to_owned(),
        action,
        outcome,
        reason: Some(reason),
        ip: (!actor.ip.is_empty()).then(|| actor.ip.clone()),
        user_agent: (!actor.user_agent.is_empty()).then(|| actor.user_agent.clone()),
        device_id: None,
        challenge_id: None,
    }
}

impl Engine<'_> {
    /// Refuses (and records) an actor who may not administer `org`: the check every admin call
    /// and the admin console make.
    ///
    /// # Errors
    /// [`Error::Forbidden`] (recorded in the actor's own stream); [`Error::InvalidInput`];
    /// [`Error::Store`] or [`Error::Audit`] when the refusal cannot be recorded.
    pub(crate) fn authorize<R: CryptoRng + ?Sized>(
        &self,
        actor: &Actor,
        org: &str,
        subject: &str,
        what: &str,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<()> {
        input::actor(actor)?;
        input::id("org_id", org)?;
        if may_administer(actor, org) {
            return Ok(());
        }
        self.refuse(
            actor,
            subject,
            format!("{what}:not-authorized:target-org:{org}"),
            "only an org-admin of this organization or a platform-admin",
            now,
            rng,
        )
    }

    /// Hands `result` on, recording first when it failed on an unreadable stored value of `org`.
    fn noting<T, R: CryptoRng + ?Sized>(
        &self,
        actor: &Actor,
        org: &str,
        subject: &str,
        result: Result<T>,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<T> {
        let event = || {
            actor_event(
                actor,
                org,
                subject,
                Action::AccessDenied,
                Outcome::Denied,
                String::new(),
            )
        };
        self.noting_unreadable(result, event, now, rng)
    }

    /// Records a refused admin call in the actor's own stream, then refuses it.
    fn refuse<R: CryptoRng + ?Sized>(
        &self,
        actor: &Actor,
        subject: &str,
        reason: String,
        message: &'static str,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<()> {
        let event = actor_event(
            actor,
            &actor.org_id,
            subject,
            Action::AccessDenied,
            Outcome::Denied,
            reason,
        );
        self.record(event, now, rng)?;
        Err(Error::Forbidden(message))
    }

    /// An organization's policy, for its admins.
    ///
    /// # Errors
    /// [`Error::Forbidden`]; [`Error::InvalidInput`]; [`Error::Store`].
    pub fn get_policy<R: CryptoRng + ?Sized>(
        &self,
        actor: &Actor,
        org: &str,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<OrgPolicy> {
        let actor = self.canonical_actor(actor);
        let actor = actor.as_ref();
        let org = self.canonical_id(org);
        let org = org.as_ref();
        self.authorize(actor, org, org, "get-policy", now, rng)?;
        let policy = self.org_policy(org);
        self.noting(actor, org, org, policy, now, rng)
    }

    /// Replaces an organization's policy after checking it only tightens the platform's limits.
    ///
    /// # Errors
    /// [`Error::Forbidden`]; [`Error::InvalidInput`] naming the field; [`Error::Store`]; [`Error::Audit`].
    pub fn set_policy<R: CryptoRng + ?Sized>(
        &self,
        actor: &Actor,
        org: &str,
        policy: &OrgPolicy,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<()> {
        let actor = self.canonical_actor(actor);
        let actor = actor.as_ref();
        let org = self.canonical_id(org);
        let org = org.as_ref();
        self.authorize(actor, org, org, "set-policy", now, rng)?;
        policy.validate(&self.settings)?;
        let summary = serde_json::to_string(policy).unwrap_or_default();
        let event = actor_event(
            actor,
            org,
            org,
            Action::PolicyChanged,
            Outcome::Success,
            format!("policy:{summary}"),
        );
        self.put_recorded(&keys::policy(org), (policy, None), event, now, rng)
            .map(drop)
    }

    /// Resets a user's MFA: clears the lock and every failure counter, withdraws the open challenge
    /// and revokes every trusted device.
    ///
    /// # Errors
    /// [`Error::Forbidden`]; [`Error::InvalidInput`]; [`Error::Store`]; [`Error::Audit`].
    pub fn reset_user<R: CryptoRng + ?Sized>(
        &self,
        actor: &Actor,
        org: &str,
        user: &str,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<()> {
        let actor = self.canonical_actor(actor);
        let actor = actor.as_ref();
        let org = self.canonical_id(org);
        let org = org.as_ref();
        let user = self.canonical_id(user);
        let user = user.as_ref();
        input::id("user_id", user)?;
        self.authorize(actor, org, user, "reset-user", now, rng)?;
        let who = Who {
            org,
            user,
            ip: actor.ip.clone(),
            user_agent: &actor.user_agent,
        };
        // Each device goes with its own record; the rest is undone if the reset's record fails.
        self.revoke_all_of(&who, &actor.user_id, "mfa-reset", now, rng)?;
        // The streak is ended by moving to a new one (never by a delete, which would let its slots
        // be taken again), the 30-day count by deleting the current window's.
        let streak = keys::streak(org, user);
        let window = throttle::failure_window(now);
        let window_end = Timestamp((window + 1).saturating_mul(throttle::WINDOW_SECONDS));
        // With the expiry each would be put back with (the streak is kept for good).
        let counters = [
            (streak.clone(), None),
            (
                keys::failures_window(org, user, window),
                keys::guard_until(window_end),
            ),
        ];
        // The confirmed address too: the user enrolls again at the next login. The grace period's
        // keys stay: a reset never reopens a password-only way in.
        // Put back by an undo, a challenge is kept as long as a challenge opened now would be.
        let challenge_life =
            (self.settings.challenge_ttl_seconds).max(self.settings.code_ttl_seconds);
        let values = [
            (
                keys::challenge(org, user),
                keys::keep_until(now.plus(challenge_life)),
            ),
            (keys::enrollment(org, user), None),
            (
                keys::step_up(org, user),
                keys::keep_until(now.plus(FRESH_VERIFICATION_SECONDS)),
            ),
        ];
        let mut undo = Undo::default();
        for (key, kept) in &counters {
            self.remember_counter(&mut undo, key, *kept)?;
        }
        for (key, kept) in &values {
            self.remember_value(&mut undo, key, *kept)?;
        }
        if let Err(e) = self.store.increment(&streak, 1, None) {
            self.undo(undo);
            return Err(Error::store(e));
        }
        for key in counters[1..].iter().chain(values.iter()).map(|(k, _)| k) {
            if let Err(e) = self.store.delete(key) {
                self.undo(undo);
                return Err(Error::store(e));
            }
        }
        let event = actor_event(
            actor,
            org,
            user,
            Action::MfaReset,
            Outcome::Success,
            "admin-reset".to_owned(),
        );
        self.append(event, now, rng)
            .inspect_err(|_| self.undo(undo))?;
        // The ended streak's count (kept for good while it lasted) can go. Best effort.
        if let Ok(current) = self.store.increment(&streak, 0, None) {
            let _ = self.store.delete(&keys::failures(org, user, current - 1));
        }
        Ok(())
    }

    /// The roles the platform requires MFA for, for platform admins.
    ///
    /// # Errors
    /// [`Error::Forbidden`] for anyone but a platform admin (recorded); [`Error::Store`].
    pub fn get_platform_roles<R: CryptoRng + ?Sized>(
        &self,
        actor: &Actor,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<Vec<String>> {
        let actor = self.canonical_actor(actor);
        let actor = actor.as_ref();
        self.authorize_platform(actor, "get-platform-roles", now, rng)?;
        let roles = self.platform_roles();
        self.noting(actor, &actor.org_id, &actor.user_id, roles, now, rng)
    }

    /// Replaces the roles the platform requires MFA for (platform admins only). Organizations'
    /// own rules stay on top of these; recorded as `policy_changed` in the admin's stream.
    ///
    /// # Errors
    /// [`Error::Forbidden`] (recorded); [`Error::InvalidInput`] for a malformed role;
    /// [`Error::Store`]; [`Error::Audit`].
    pub fn set_platform_roles<R: CryptoRng + ?Sized>(
        &self,
        actor: &Actor,
        roles: &[String],
        now: Timestamp,
        rng: &mut R,
    ) -> Result<()> {
        let actor = self.canonical_actor(actor);
        let actor = actor.as_ref();
        let roles: Vec<String> = roles
            .iter()
            .map(|r| self.canonical_id(r).into_owned())
            .collect();
        let roles = roles.as_slice();
        self.authorize_platform(actor, "set-platform-roles", now, rng)?;
        input::roles(roles).map_err(|_| {
            Error::invalid(
                "roles",
                "each role must be 1 to 64 of letters, digits and . _ : -",
            )
        })?;
        if !roles.iter().any(|r| r == "platform-admin") {
            return Err(Error::invalid(
                "roles",
                "must include platform-admin: the role that can change everything always needs a second factor",
            ));
        }
        let event = actor_event(
            actor,
            &actor.org_id,
            &actor.user_id,
            Action::PolicyChanged,
            Outcome::Success,
            format!("platform:required-roles:{}", roles.join(",")),
        );
        self.put_recorded(&keys::platform_roles(), (&roles, None), event, now, rng)?;
        Ok(())
    }

    /// Refuses (and records) an actor who is not a platform admin.
    fn authorize_platform<R: CryptoRng + ?Sized>(
        &self,
        actor: &Actor,
        what: &str,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<()> {
        input::actor(actor)?;
        if actor.roles.iter().any(|r| r == "platform-admin") {
            return Ok(());
        }
        self.refuse(
            actor,
            &actor.user_id,
            format!("{what}:not-authorized:platform"),
            "only a platform-admin",
            now,
            rng,
        )
    }

    /// An organization's email branding (the neutral default when it set none).
    ///
    /// # Errors
    /// [`Error::Forbidden`]; [`Error::InvalidInput`]; [`Error::Store`].
    pub fn get_branding<R: CryptoRng + ?Sized>(
        &self,
        actor: &Actor,
        org: &str,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<Branding> {
        let actor = self.canonical_actor(actor);
        let actor = actor.as_ref();
        let org = self.canonical_id(org);
        let org = org.as_ref();
        self.authorize(actor, org, org, "get-branding", now, rng)?;
        let branding = self.branding_of(org);
        self.noting(actor, org, org, branding, now, rng)
    }

    /// Replaces an organization's email branding after checking every field.
    ///
    /// # Errors
    /// [`Error::Forbidden`]; [`Error::InvalidInput`] naming the field; [`Error::Store`]; [`Error::Audit`].
    pub fn set_branding<R: CryptoRng + ?Sized>(
        &self,
        actor: &Actor,
        org: &str,
        branding: &Branding,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<()> {
        let actor = self.canonical_actor(actor);
        let actor = actor.as_ref();
        let org = self.canonical_id(org);
        let org = org.as_ref();
        self.authorize(actor, org, org, "set-branding", now, rng)?;
        branding.validate()?;
        let event = actor_event(
            actor,
            org,
            org,
            Action::BrandingChanged,
            Outcome::Success,
            "branding".to_owned(),
        );
        self.put_recorded(&keys::branding(org), (branding, None), event, now, rng)
            .map(drop)
    }

    /// The code email as the organization's users would get it, with a sample code.
    ///
    /// # Errors
    /// [`Error::Forbidden`]; [`Error::InvalidInput`]; [`Error::Store`].
    pub fn preview_email<R: CryptoRng + ?Sized>(
        &self,
        actor: &Actor,
        org: &str,
        language: Option<&str>,
        time_zone: Option<&str>,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<OutgoingMail> {
        let actor = self.canonical_actor(actor);
        let actor = actor.as_ref();
        let org = self.canonical_id(org);
        let org = org.as_ref();
        self.authorize(actor, org, org, "preview-email", now, rng)?;
        if let Some(tz) = time_zone {
            input::text("time_zone", tz)?;
        }
        let branding = self.branding_of(org);
        let branding = self.noting(actor, org, org, branding, now, rng)?;
        let language = i18n::choose(language, &branding.default_language);
        Ok(email::preview(&branding, language, time_zone, now))
    }

    /// A user's MFA state, for an admin.
    ///
    /// # Errors
    /// [`Error::Forbidden`]; [`Error::InvalidInput`]; [`Error::Store`].
    pub fn user_status_for<R: CryptoRng + ?Sized>(
        &self,
        actor: &Actor,
        org: &str,
        user: &str,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<UserStatus> {
        let actor = self.canonical_actor(actor);
        let actor = actor.as_ref();
        let org = self.canonical_id(org);
        let org = org.as_ref();
        let user = self.canonical_id(user);
        let user = user.as_ref();
        input::id("user_id", user)?;
        self.authorize(actor, org, user, "user-status", now, rng)?;
        let status = self.status_of(org, user, now);
        self.noting(actor, org, user, status, now, rng)
    }

    /// A user's trusted browsers that count under their organization's policy today, newest
    /// first, for an admin of the organization.
    ///
    /// # Errors
    /// [`Error::Forbidden`] (recorded); [`Error::InvalidInput`]; [`Error::Store`].
    pub fn user_devices_for<R: CryptoRng + ?Sized>(
        &self,
        actor: &Actor,
        org: &str,
        user: &str,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<Vec<DeviceInfo>> {
        let (actor, org, user) = (
            self.canonical_actor(actor),
            self.canonical_id(org),
            self.canonical_id(user),
        );
        let (actor, org, user) = (actor.as_ref(), org.as_ref(), user.as_ref());
        input::id("user_id", user)?;
        self.authorize(actor, org, user, "user-devices", now, rng)?;
        let owner = Actor {
            user_id: user.to_owned(),
            org_id: org.to_owned(),
            roles: Vec::new(),
            ip: String::new(),
            user_agent: String::new(),
        };
        let listed = self
            .org_policy(org)
            .and_then(|policy| self.scoped(&policy).devices_trusted(&owner, now));
        self.noting(actor, org, user, listed, now, rng)
    }

    /// Revokes one of a user's trusted browsers (`device` = its id) or all of them (`None`), for
    /// an admin of the organization: each with its own `device_revoked` record, the admin as
    /// actor. Returns how many went. An id that is not one of the user's is refused like an
    /// unknown one.
    ///
    /// # Errors
    /// [`Error::Forbidden`] (recorded, or an unknown device); [`Error::InvalidInput`];
    /// [`Error::Store`]; [`Error::Audit`] (browsers revoked before the failure stay revoked).
    pub fn revoke_user_devices<R: CryptoRng + ?Sized>(
        &self,
        actor: &Actor,
        org: &str,
        user: &str,
        device: Option<&str>,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<u32> {
        let (actor, org, user) = (
            self.canonical_actor(actor),
            self.canonical_id(org),
            self.canonical_id(user),
        );
        let (actor, org, user) = (actor.as_ref(), org.as_ref(), user.as_ref());
        input::id("user_id", user)?;
        if let Some(device) = device {
            input::id("device_id", device)?;
        }
        self.authorize(actor, org, user, "revoke-devices", now, rng)?;
        let who = Who {
            org,
            user,
            ip: actor.ip.clone(),
            user_agent: &actor.user_agent,
        };
        let Some(device) = device else {
            return self.revoke_all_of(&who, &actor.user_id, "revoked-all-by-admin", now, rng);
        };
        if self
            .store
            .get(&keys::device(org, user, device))
            .map_err(Error::store)?
            .is_none()
        {
            return Err(Error::Forbidden("no such device of this user"));
        }
        self.revoke_stored(&who, &actor.user_id, device, "revoked-by-admin", now, rng)
            .map(|()| 1)
    }
}
