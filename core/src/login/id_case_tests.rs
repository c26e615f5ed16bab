//! Ids are the IdP's immutable, canonical ids, compared byte for byte: `ACME` is not `acme`. An
//! IdP whose ids are case-insensitive sets `id_case = fold`, and then every id and role is folded
//! to lower case before anything else, in every entry point.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use rand_core::{OsRng, TryRngCore};

use super::tests::{T0, World, ctx};
use crate::engine::Engine;
use crate::kernel::model::{Actor, Decision};
use crate::kernel::ports::Store as _;
use crate::kernel::settings::Settings;
use crate::policy::{Mandate, OrgPolicy};

fn engine(w: &World, fold_ids: bool) -> Engine<'_> {
    Engine {
        store: &w.store,
        mailer: &w.mailer,
        audit: &w.audit,
        settings: Settings {
            fold_ids,
            ..Settings::default()
        },
        key: &w.key,
    }
}

/// `acme` mandates MFA for everyone, set by its admin.
fn acme_mandates_everyone(w: &mut World, fold_ids: bool) {
    let admin = Actor {
        user_id: "it-admin".into(),
        org_id: "acme".into(),
        roles: vec!["org-admin".into()],
        ip: "203.0.113.7".into(),
        user_agent: String::new(),
    };
    let policy = OrgPolicy {
        mandate: Mandate::Everyone,
        ..OrgPolicy::inherit(&Settings::default())
    };
    let e = engine(w, fold_ids);
    let mut rng = OsRng.unwrap_err();
    e.set_policy(&admin, "acme", &policy, T0, &mut rng).unwrap();
}

/// A scheduler (no role that requires MFA) signing in with the org id in another case.
fn scheduler_of(org: &str) -> crate::kernel::model::LoginContext {
    let mut c = ctx("Front-Desk");
    c.org_id = org.into();
    c.roles = vec!["Scheduler".into()];
    c
}

#[test]
fn by_default_another_case_is_another_organization() {
    let mut w = World::new();
    acme_mandates_everyone(&mut w, false);
    let mut rng = OsRng.unwrap_err();
    let d = engine(&w, false)
        .begin(&scheduler_of("ACME"), T0, &mut rng)
        .unwrap();
    // `ACME` set no policy: the platform's default, under which a scheduler needs no code.
    assert!(
        matches!(&d, Decision::Allow(a) if a.why.rule == "policy:not-required"),
        "{d:?}"
    );
}

#[test]
fn with_id_case_fold_every_case_is_one_organization_and_one_user() {
    let mut w = World::new();
    acme_mandates_everyone(&mut w, true);
    let mut rng = OsRng.unwrap_err();
    let e = engine(&w, true);
    let d = e.begin(&scheduler_of("ACME"), T0, &mut rng).unwrap();
    let Decision::Challenge(first) = d else {
        panic!("acme's mandate applies to ACME: {d:?}")
    };
    // The same user in yet another case has the same challenge, under the folded ids.
    let again = e
        .begin(&scheduler_of("Acme"), T0.plus(1), &mut rng)
        .unwrap();
    assert!(matches!(again, Decision::Challenge(_)));
    let entries = w.audit.entries.borrow();
    assert!(entries.iter().all(|e| e.org_id == "acme"), "one stream");
    assert!(
        entries.iter().all(|e| !e.line.contains("Front-Desk")),
        "the user is recorded as front-desk"
    );
    drop(entries);
    assert!(
        w.store
            .get(&crate::kernel::keys::challenge("acme", "front-desk"))
            .unwrap()
            .is_some(),
        "{first:?}"
    );
}

#[test]
fn with_id_case_fold_role_lists_in_any_case_match_folded_roles() {
    let mut w = World::new();
    let admin = Actor {
        user_id: "it-admin".into(),
        org_id: "acme".into(),
        roles: vec!["org-admin".into()],
        ip: "203.0.113.7".into(),
        user_agent: String::new(),
    };
    // The admin names the role in another case than the IdP sends it.
    let policy = OrgPolicy {
        mandate: Mandate::ByRole,
        required_roles: vec!["Scheduler".into()],
        ..OrgPolicy::inherit(&Settings::default())
    };
    let mut rng = OsRng.unwrap_err();
    engine(&w, true)
        .set_policy(&admin, "acme", &policy, T0, &mut rng)
        .unwrap();
    let mut c = ctx("front-desk");
    c.roles = vec!["SCHEDULER".into()];
    let d = engine(&w, true).begin(&c, T0, &mut rng).unwrap();
    assert!(
        matches!(&d, Decision::Challenge(ch) if ch.why.rule == "org:acme:role:scheduler"),
        "{d:?}"
    );
    let _ = &mut w;
}
