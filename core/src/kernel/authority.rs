//! Who may administer an organization: the one rule that admin calls, credential changes and preview
//! links all apply. An `org-admin` acts on its own organization only, a `platform-admin` on any;
//! everyone else is refused. It lives in the kernel so that every concern applies the same rule
//! without naming the module that manages policies.

use crate::kernel::model::Actor;

/// Whether `actor` may administer `org`.
#[must_use]
pub fn may_administer(actor: &Actor, org: &str) -> bool {
    actor.roles.iter().any(|r| r == "platform-admin")
        || (actor.org_id == org && actor.roles.iter().any(|r| r == "org-admin"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(org: &str, roles: &[&str]) -> Actor {
        Actor {
            user_id: "a".into(),
            org_id: org.into(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn who_may_administer() {
        assert!(may_administer(&actor("acme", &["org-admin"]), "acme"));
        assert!(!may_administer(&actor("acme", &["org-admin"]), "globex"));
        assert!(!may_administer(&actor("acme", &["provider"]), "acme"));
        assert!(may_administer(
            &actor("acme", &["platform-admin"]),
            "globex"
        ));
        assert!(!may_administer(&actor("acme", &[]), "acme"));
    }
}
