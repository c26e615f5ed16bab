//! An organization's policy as the engine applies it: read from the store (the platform's when the
//! organization set none), tightening the platform's settings for everything the organization's
//! logins do, and deciding with [`super::requirement`] whether a user must use MFA, explained in
//! their language. A stored policy is only ever applied through [`OrgPolicy::effective`], so a
//! policy the platform has since tightened past cannot loosen anything.
//!
//! A stored policy or platform roles that do not parse are `unavailable`, never "none set": the
//! platform's defaults are the permissive answer for both (an org's mandate or a platform admin's
//! extra roles would silently stop applying).

use crate::email::i18n::{self, Explain};
use crate::engine::Engine;
use crate::kernel::error::Result;
use crate::kernel::model::{Actor, DeviceInfo, LoginContext};
use crate::kernel::time::Timestamp;
use crate::kernel::{input, keys};
use crate::policy::enrollment::Enrollment;
use crate::policy::{OrgPolicy, Requirement, UserSide};

impl Engine<'_> {
    /// The organization's policy as stored, or the platform's when it set none.
    ///
    /// # Errors
    /// [`crate::kernel::error::Error::Store`], also when the stored policy does not parse.
    pub(crate) fn org_policy(&self, org: &str) -> Result<OrgPolicy> {
        Ok(self
            .load_json::<OrgPolicy>(&keys::policy(org))?
            .unwrap_or_else(|| OrgPolicy::inherit(&self.settings)))
    }

    /// This engine with the platform's settings tightened by an organization's policy.
    pub(crate) fn scoped(&self, policy: &OrgPolicy) -> Engine<'_> {
        Engine {
            store: self.store,
            mailer: self.mailer,
            audit: self.audit,
            settings: policy.effective(&self.settings),
            key: self.key,
        }
    }

    /// The roles the platform requires MFA for: a platform admin's choice, else the setting.
    pub(crate) fn platform_roles(&self) -> Result<Vec<String>> {
        Ok(self
            .load_json::<Vec<String>>(&keys::platform_roles())?
            .unwrap_or_else(|| self.settings.required_roles.clone()))
    }

    /// The sentences to explain decisions with: the user's language, else the organization's.
    pub(crate) fn explain_in(&self, ctx: &LoginContext) -> Result<Explain> {
        let branding = self.branding_of(&ctx.org_id)?;
        let language = i18n::choose(ctx.locale.as_deref(), &branding.default_language);
        Ok(i18n::messages(language).explain)
    }

    /// Whether MFA applies to this user, and why.
    pub(crate) fn requirement_of(
        &self,
        ctx: &LoginContext,
        policy: &OrgPolicy,
        enrollment: Option<&Enrollment>,
        m: &Explain,
    ) -> Result<Requirement> {
        let user = UserSide {
            roles: &ctx.roles,
            opted_in: enrollment.is_some_and(|e| e.opted_in),
        };
        let mut platform_roles = self.platform_roles()?;
        // Under `id_case = fold` the user's roles arrive folded, so the lists they are matched
        // against are folded too: an organization's or the platform's `Clinician` still applies.
        let folded;
        let policy = if self.settings.fold_ids {
            for role in &mut platform_roles {
                role.make_ascii_lowercase();
            }
            let mut p = policy.clone();
            for role in &mut p.required_roles {
                role.make_ascii_lowercase();
            }
            folded = p;
            &folded
        } else {
            policy
        };
        Ok(super::requirement(
            &ctx.org_id,
            policy,
            &platform_roles,
            &user,
            m,
        ))
    }

    /// The actor's own trusted devices that still count under their organization's policy today,
    /// newest first, each with the end of its trust today. (A read with no RNG to record with: an
    /// unreadable policy is `unavailable` here and recorded by the next `begin` that meets it.)
    ///
    /// # Errors
    /// [`crate::kernel::error::Error::InvalidInput`]; [`crate::kernel::error::Error::Store`], also
    /// when the organization's policy does not parse.
    pub fn list_devices(&self, actor: &Actor, now: Timestamp) -> Result<Vec<DeviceInfo>> {
        let actor = self.canonical_actor(actor);
        let actor = actor.as_ref();
        input::actor(actor)?;
        let policy = self.org_policy(&actor.org_id)?;
        self.scoped(&policy).devices_trusted(actor, now)
    }
}
