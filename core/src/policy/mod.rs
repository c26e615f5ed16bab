//! Who must use MFA, and why. Decided in one place, with every answer carrying its reason.
//!
//! Precedence (first match explains the decision):
//!
//! | # | rule | when | `why.rule` |
//! |---|---|---|---|
//! | 1 | organization mandate | the org's policy says `everyone` | `org:<org>:mandate` |
//! | 2 | organization role | the user holds a role the org's policy lists (`by-role`) | `org:<org>:role:<role>` |
//! | 3 | platform role | the user holds a role the platform lists (`required_roles`, default: platform-admin, org-admin, admin, provider, clinician, coach-with-patients) | `role:<role>` |
//! | 4 | user opt-in | the user enrolled of their own accord (`enroll`) | `user:opted-in` |
//! | 5 | none | none of the above | `policy:not-required` → the login is allowed |
//!
//! So MFA is required = org mandate OR org role OR platform role OR user opt-in. The platform's roles
//! come from the `required_roles` setting until a platform admin sets them (`set-platform-roles`). An organization can only add to
//! the platform's roles, never remove one (`inherit` and `by-role` both keep rule 3). Its trust limits
//! can only tighten the platform's: fewer trust days, remembering switched off, a longer (stricter)
//! IP prefix. A policy that would loosen anything is refused, naming the field.
//!
//! The rules here are pure (a policy, the user's roles and opt-in in; a requirement with its reason
//! out). Applying them through the engine (an organization's stored policy, the platform's roles,
//! the user's language) is `org.rs`; [`enrollment`] is how a user's MFA address comes to count, and
//! the grace an organization may give before it must.

pub mod enrollment;
mod org;

use serde::{Deserialize, Serialize};

use crate::email::i18n::Explain;
use crate::kernel::error::{Error, Result};
use crate::kernel::input;
use crate::kernel::model::Explanation;
use crate::kernel::settings::Settings;

/// Who must use MFA in an organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mandate {
    /// The platform's roles only.
    Inherit,
    /// Every member.
    Everyone,
    /// The platform's roles plus `required_roles`.
    ByRole,
}

/// An organization's policy. See `org-policy` in the WIT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgPolicy {
    /// Who must use MFA.
    pub mandate: Mandate,
    /// Extra roles that require MFA under `by-role`.
    #[serde(default)]
    pub required_roles: Vec<String>,
    /// Days a remembered browser stays trusted (0 to the platform's).
    pub trust_days: u8,
    /// Whether users may ask to be remembered.
    pub allow_remember_device: bool,
    /// IPv4 prefix whose change asks again (the platform's or longer, at most 32).
    pub ipv4_change_prefix: u8,
    /// IPv6 prefix whose change asks again (the platform's or longer, at most 128).
    pub ipv6_change_prefix: u8,
    /// Days an unenrolled user who must use MFA may still sign in without it (0: none), counted
    /// from the first such login.
    #[serde(default)]
    pub enrollment_grace_days: u32,
    /// Sign-ins an unenrolled user who must use MFA may still make without it (0: none). With both
    /// set, the grace lasts while either allows it.
    #[serde(default)]
    pub enrollment_grace_logins: u32,
}

/// Longest enrollment grace an organization may give, in days.
pub const MAX_GRACE_DAYS: u32 = 90;
/// Longest enrollment grace an organization may give, in sign-ins.
pub const MAX_GRACE_LOGINS: u32 = 20;
/// Longest IPv4 change prefix (every bit: any change of address asks again).
pub const MAX_IPV4_PREFIX: u8 = 32;
/// Longest IPv6 change prefix (every bit).
pub const MAX_IPV6_PREFIX: u8 = 128;

impl OrgPolicy {
    /// The policy of an organization that set none: the platform's, unchanged.
    #[must_use]
    pub fn inherit(platform: &Settings) -> Self {
        Self {
            mandate: Mandate::Inherit,
            required_roles: Vec::new(),
            trust_days: platform.trust_days,
            allow_remember_device: platform.allow_remember_device,
            ipv4_change_prefix: platform.ipv4_change_prefix,
            ipv6_change_prefix: platform.ipv6_change_prefix,
            enrollment_grace_days: 0,
            enrollment_grace_logins: 0,
        }
    }

    /// Checks that the policy only tightens the platform's limits.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the first field that loosens a limit or is malformed.
    pub fn validate(&self, platform: &Settings) -> Result<()> {
        input::roles(&self.required_roles).map_err(|_| {
            Error::invalid(
                "policy.required_roles",
                "each role must be 1 to 64 of letters, digits and . _ : -",
            )
        })?;
        if self.mandate != Mandate::ByRole && !self.required_roles.is_empty() {
            return Err(Error::invalid(
                "policy.required_roles",
                "only a by-role mandate lists roles",
            ));
        }
        if self.trust_days > platform.trust_days {
            return Err(Error::invalid(
                "policy.trust_days",
                format!(
                    "must be from 0 to {} (the platform's limit)",
                    platform.trust_days
                ),
            ));
        }
        if self.allow_remember_device && !platform.allow_remember_device {
            return Err(Error::invalid(
                "policy.allow_remember_device",
                "the platform does not allow remembering devices",
            ));
        }
        if !(platform.ipv4_change_prefix..=MAX_IPV4_PREFIX).contains(&self.ipv4_change_prefix) {
            return Err(Error::invalid(
                "policy.ipv4_change_prefix",
                format!(
                    "must be from {} (the platform's) to {MAX_IPV4_PREFIX}",
                    platform.ipv4_change_prefix
                ),
            ));
        }
        if !(platform.ipv6_change_prefix..=MAX_IPV6_PREFIX).contains(&self.ipv6_change_prefix) {
            return Err(Error::invalid(
                "policy.ipv6_change_prefix",
                format!(
                    "must be from {} (the platform's) to {MAX_IPV6_PREFIX}",
                    platform.ipv6_change_prefix
                ),
            ));
        }
        if self.enrollment_grace_days > MAX_GRACE_DAYS {
            return Err(Error::invalid(
                "policy.enrollment_grace_days",
                format!("must be from 0 to {MAX_GRACE_DAYS}"),
            ));
        }
        if self.enrollment_grace_logins > MAX_GRACE_LOGINS {
            return Err(Error::invalid(
                "policy.enrollment_grace_logins",
                format!("must be from 0 to {MAX_GRACE_LOGINS}"),
            ));
        }
        Ok(())
    }

    /// The platform's settings as this organization tightens them. A stored policy that the platform
    /// has since tightened past is clamped towards the stricter value, never the looser.
    #[must_use]
    pub fn effective(&self, platform: &Settings) -> Settings {
        Settings {
            trust_days: self.trust_days.min(platform.trust_days),
            allow_remember_device: self.allow_remember_device && platform.allow_remember_device,
            ipv4_change_prefix: self
                .ipv4_change_prefix
                .max(platform.ipv4_change_prefix)
                .min(MAX_IPV4_PREFIX),
            ipv6_change_prefix: self
                .ipv6_change_prefix
                .max(platform.ipv6_change_prefix)
                .min(MAX_IPV6_PREFIX),
            ..platform.clone()
        }
    }
}

/// Whether a user must use MFA, and the rule that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// MFA is required.
    pub required: bool,
    /// The deciding rule.
    pub why: Explanation,
}

/// Applies the precedence table to a user of `org` holding `roles` who has (or has not) opted in,
/// explaining it in the language of `m`.
#[must_use]
pub fn requirement(
    org: &str,
    policy: &OrgPolicy,
    platform_roles: &[String],
    user: &UserSide<'_>,
    m: &Explain,
) -> Requirement {
    let roles = user.roles;
    let required = |rule: String, message: String| Requirement {
        required: true,
        why: Explanation { rule, message },
    };
    if policy.mandate == Mandate::Everyone {
        return required(format!("org:{org}:mandate"), m.mandate.clone());
    }
    if policy.mandate == Mandate::ByRole
        && let Some(role) = roles.iter().find(|r| policy.required_roles.contains(r))
    {
        return required(
            format!("org:{org}:role:{role}"),
            m.org_role.replace("{role}", role),
        );
    }
    if let Some(role) = roles.iter().find(|r| platform_roles.contains(r)) {
        return required(format!("role:{role}"), m.role.replace("{role}", role));
    }
    if user.opted_in {
        return required("user:opted-in".to_owned(), m.opted_in.clone());
    }
    Requirement {
        required: false,
        why: Explanation {
            rule: "policy:not-required".to_owned(),
            message: m.not_required.clone(),
        },
    }
}

/// What the requirement needs to know of the user.
#[derive(Debug, Clone, Copy)]
pub struct UserSide<'a> {
    /// The roles the IdP says the user holds.
    pub roles: &'a [String],
    /// Whether the user enrolled of their own accord.
    pub opted_in: bool,
}

#[cfg(test)]
#[allow(clippy::panic, reason = "tests")]
mod tests {
    use super::*;

    fn roles(r: &[&str]) -> Vec<String> {
        r.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn precedence_table() {
        let platform = Settings::default();
        let inherit = OrgPolicy::inherit(&platform);
        let everyone = OrgPolicy {
            mandate: Mandate::Everyone,
            ..inherit.clone()
        };
        let by_role = OrgPolicy {
            mandate: Mandate::ByRole,
            required_roles: roles(&["scheduler"]),
            ..inherit.clone()
        };
        let cases = [
            (&everyone, &["receptionist"][..], true, "org:acme:mandate"),
            (&everyone, &["provider"][..], true, "org:acme:mandate"),
            (
                &by_role,
                &["scheduler"][..],
                true,
                "org:acme:role:scheduler",
            ),
            (&by_role, &["provider"][..], true, "role:provider"),
            (
                &by_role,
                &["receptionist"][..],
                false,
                "policy:not-required",
            ),
            (&inherit, &["provider"][..], true, "role:provider"),
            (&inherit, &["scheduler"][..], false, "policy:not-required"),
            (&inherit, &[][..], false, "policy:not-required"),
        ];
        let en = crate::email::i18n::messages("en").explain;
        for (policy, user_roles, required, rule) in cases {
            for opted_in in [false, true] {
                let user = UserSide {
                    roles: &roles(user_roles),
                    opted_in,
                };
                let r = requirement("acme", policy, &platform.required_roles, &user, &en);
                // Opting in only matters where no rule already requires MFA.
                let (required, rule) = if required || !opted_in {
                    (required, rule)
                } else {
                    (true, "user:opted-in")
                };
                assert_eq!(
                    (r.required, r.why.rule.as_str()),
                    (required, rule),
                    "{policy:?} {user_roles:?} opted in: {opted_in}"
                );
                assert!(!r.why.message.is_empty());
            }
        }
        // The explanation is in the user's language.
        let es = crate::email::i18n::messages("es").explain;
        let user = UserSide {
            roles: &roles(&["provider"]),
            opted_in: false,
        };
        let r = requirement("acme", &inherit, &platform.required_roles, &user, &es);
        assert_eq!(
            r.why.message,
            "El rol provider exige un código de tu correo."
        );
    }

    #[test]
    fn an_org_may_tighten_never_loosen() {
        let platform = Settings::default();
        let base = OrgPolicy::inherit(&platform);
        assert!(base.validate(&platform).is_ok());
        let tighter = OrgPolicy {
            trust_days: 7,
            allow_remember_device: false,
            ipv4_change_prefix: 24,
            ..base.clone()
        };
        assert!(tighter.validate(&platform).is_ok());
        let field = |p: OrgPolicy| match p.validate(&platform) {
            Err(Error::InvalidInput { field, .. }) => field,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert_eq!(
            field(OrgPolicy {
                trust_days: 31,
                ..base.clone()
            }),
            "policy.trust_days"
        );
        assert_eq!(
            field(OrgPolicy {
                ipv4_change_prefix: 8,
                ..base.clone()
            }),
            "policy.ipv4_change_prefix"
        );
        assert_eq!(
            field(OrgPolicy {
                ipv6_change_prefix: 32,
                ..base.clone()
            }),
            "policy.ipv6_change_prefix"
        );
        assert_eq!(
            field(OrgPolicy {
                enrollment_grace_days: 365,
                ..base.clone()
            }),
            "policy.enrollment_grace_days"
        );
        assert_eq!(
            field(OrgPolicy {
                enrollment_grace_logins: 21,
                ..base.clone()
            }),
            "policy.enrollment_grace_logins"
        );
        assert_eq!(
            field(OrgPolicy {
                required_roles: roles(&["x"]),
                ..base.clone()
            }),
            "policy.required_roles"
        );
        let eff = tighter.effective(&platform);
        assert_eq!(
            (
                eff.trust_days,
                eff.allow_remember_device,
                eff.ipv4_change_prefix
            ),
            (7, false, 24)
        );
    }
}
