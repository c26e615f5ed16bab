//! Organization policies through the compiled component: the precedence table with its explanations,
//! org limits tightening device trust, and admin calls authorized (and refusals recorded).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use crate::common;

use common::*;
use host_harness::wit::{self, Decision, ErrorKind, Mandate, MfaError, OrgPolicy};

const ORG: &str = "acme-health";

fn actor(user: &str, org: &str, roles: &[&str]) -> wit::Actor {
    wit::Actor {
        user_id: user.to_owned(),
        org_id: org.to_owned(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        ip: "198.51.100.4".to_owned(),
        user_agent: "admin console".to_owned(),
    }
}

fn policy(mandate: Mandate, roles: &[&str]) -> OrgPolicy {
    OrgPolicy {
        mandate,
        required_roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        trust_days: 30,
        allow_remember_device: true,
        ipv4_change_prefix: 16,
        ipv6_change_prefix: 48,
        enrollment_grace_days: 0,
        enrollment_grace_logins: 0,
    }
}

async fn set_policy(
    h: &Harness,
    who: &wit::Actor,
    org: &str,
    p: &OrgPolicy,
) -> Result<(), MfaError> {
    let (mut store, plugin) = h.runtime.instantiate(&h.backends).await.unwrap();
    plugin
        .mfa_step_plugin_admin()
        .call_set_policy(&mut store, who, org, p)
        .await
        .expect("no trap")
}

async fn get_policy(h: &Harness, who: &wit::Actor, org: &str) -> Result<OrgPolicy, MfaError> {
    let (mut store, plugin) = h.runtime.instantiate(&h.backends).await.unwrap();
    plugin
        .mfa_step_plugin_admin()
        .call_get_policy(&mut store, who, org)
        .await
        .expect("no trap")
}

async fn reset_user(h: &Harness, who: &wit::Actor, org: &str, user: &str) -> Result<(), MfaError> {
    let (mut store, plugin) = h.runtime.instantiate(&h.backends).await.unwrap();
    plugin
        .mfa_step_plugin_admin()
        .call_reset_user(&mut store, who, org, user)
        .await
        .expect("no trap")
}

async fn verify_remember(
    h: &Harness,
    c: &wit::LoginContext,
    id: &str,
    code: &str,
) -> wit::Verified {
    let (mut store, plugin) = h.runtime.instantiate(&h.backends).await.unwrap();
    plugin
        .mfa_step_plugin_login_step()
        .call_verify(&mut store, c, id, code, true)
        .await
        .expect("no trap")
        .unwrap()
}

fn with_roles(user: &str, roles: &[&str]) -> wit::LoginContext {
    let mut c = ctx(user);
    c.roles = roles.iter().map(|r| (*r).to_owned()).collect();
    c
}

/// The rule of `begin`'s answer, and whether it asked for a code.
async fn decide(h: &Harness, c: &wit::LoginContext) -> (bool, String, String) {
    match h.begin(c).await.unwrap() {
        Decision::Challenge(ch) => (true, ch.why.rule, ch.why.message),
        Decision::Allow(a) => (false, a.why.rule, a.why.message),
        Decision::Deny(d) => panic!("unexpected deny: {}", d.why.rule),
    }
}

/// (org mandate, org's extra roles, user's roles, code asked, rule, words in the message).
type PrecedenceCase = (
    Mandate,
    &'static [&'static str],
    &'static [&'static str],
    bool,
    &'static str,
    &'static str,
);

#[tokio::test]
async fn every_precedence_case_decides_and_explains() {
    let admin = actor("it-admin", ORG, &["org-admin"]);
    // (org mandate, user's roles) -> (code asked, rule, words in the message)
    let cases: [PrecedenceCase; 8] = [
        (
            Mandate::Everyone,
            &[],
            &["receptionist"],
            true,
            "org:acme-health:mandate",
            "every member",
        ),
        (
            Mandate::Everyone,
            &[],
            &["provider"],
            true,
            "org:acme-health:mandate",
            "every member",
        ),
        (
            Mandate::ByRole,
            &["scheduler"],
            &["scheduler"],
            true,
            "org:acme-health:role:scheduler",
            "scheduler role",
        ),
        (
            Mandate::ByRole,
            &["scheduler"],
            &["provider"],
            true,
            "role:provider",
            "provider role",
        ),
        (
            Mandate::ByRole,
            &["scheduler"],
            &["receptionist"],
            false,
            "policy:not-required",
            "No rule",
        ),
        (
            Mandate::Inherit,
            &[],
            &["coach-with-patients"],
            true,
            "role:coach-with-patients",
            "coach-with-patients role",
        ),
        (
            Mandate::Inherit,
            &[],
            &["receptionist"],
            false,
            "policy:not-required",
            "No rule",
        ),
        (
            Mandate::Inherit,
            &[],
            &[],
            false,
            "policy:not-required",
            "No rule",
        ),
    ];
    for (i, (mandate, org_roles, user_roles, asked, rule, words)) in cases.into_iter().enumerate() {
        let h = Harness::new();
        set_policy(&h, &admin, ORG, &policy(mandate, org_roles))
            .await
            .unwrap();
        let c = with_roles(&format!("user-{i}"), user_roles);
        let (code_asked, got_rule, message) = decide(&h, &c).await;
        assert_eq!(
            (code_asked, got_rule.as_str()),
            (asked, rule),
            "case {i}: {mandate:?} {user_roles:?}"
        );
        assert!(message.contains(words), "case {i}: {message}");
        // The audit record names the same rule.
        let last = h.audit_records().into_iter().last().unwrap();
        assert_eq!(last["reason"], rule, "case {i}");
        assert_eq!(
            last["action"],
            if asked {
                "challenge_started"
            } else {
                "access_allowed"
            }
        );
        if !asked {
            assert_eq!(h.emails_sent(), 0);
        }
    }
}

#[tokio::test]
async fn an_org_policy_only_tightens_and_names_the_bad_field() {
    let h = Harness::new();
    let admin = actor("it-admin", ORG, &["org-admin"]);
    let loose = [
        (
            OrgPolicy {
                trust_days: 31,
                ..policy(Mandate::Inherit, &[])
            },
            "policy.trust_days",
        ),
        (
            OrgPolicy {
                ipv4_change_prefix: 8,
                ..policy(Mandate::Inherit, &[])
            },
            "policy.ipv4_change_prefix",
        ),
        (
            OrgPolicy {
                ipv6_change_prefix: 32,
                ..policy(Mandate::Inherit, &[])
            },
            "policy.ipv6_change_prefix",
        ),
        (
            policy(Mandate::Everyone, &["scheduler"]),
            "policy.required_roles",
        ),
    ];
    for (p, field) in loose {
        let e = set_policy(&h, &admin, ORG, &p).await.unwrap_err();
        assert_eq!(
            (e.kind, e.field.as_deref()),
            (ErrorKind::InvalidInput, Some(field))
        );
    }
    // The generated WIT record has no PartialEq; its Debug form shows every field.
    let stored = format!("{:?}", get_policy(&h, &admin, ORG).await.unwrap());
    assert_eq!(
        stored,
        format!("{:?}", policy(Mandate::Inherit, &[])),
        "nothing was stored"
    );
    assert!(!h.actions().contains(&"policy_changed".to_owned()));
    let tight = OrgPolicy {
        trust_days: 7,
        ipv4_change_prefix: 24,
        ..policy(Mandate::Everyone, &[])
    };
    set_policy(&h, &admin, ORG, &tight).await.unwrap();
    assert_eq!(
        format!("{:?}", get_policy(&h, &admin, ORG).await.unwrap()),
        format!("{tight:?}")
    );
    assert_eq!(
        h.actions().last().map(String::as_str),
        Some("policy_changed")
    );
}

#[tokio::test]
async fn org_limits_shorten_forbid_and_tighten_device_trust() {
    let admin = actor("it-admin", ORG, &["org-admin"]);
    // Shortened: 7 days.
    let h = Harness::new();
    set_policy(
        &h,
        &admin,
        ORG,
        &OrgPolicy {
            trust_days: 7,
            ipv4_change_prefix: 24,
            ..policy(Mandate::Inherit, &[])
        },
    )
    .await
    .unwrap();
    let mut c = ctx("dr-trust");
    let id = h.challenge(&c).await;
    h.send_code(&c, &id).await.unwrap();
    let v = verify_remember(&h, &c, &id, &h.last_code()).await;
    let cookie = v.set_cookie.expect("remembered");
    assert!(cookie.contains("Max-Age=604800"), "{cookie}");
    c.device.cookie = Some(
        cookie
            .split(';')
            .next()
            .unwrap()
            .split_once('=')
            .unwrap()
            .1
            .to_owned(),
    );
    // A /24 move inside the same /16 asks again under this org's stricter prefix.
    c.device.ip = "203.0.114.7".to_owned();
    let (asked, rule, _) = decide(&h, &c).await;
    assert_eq!((asked, rule.as_str()), (true, "device:new-network"));
    // Day 7 + 1 s: expired, even back on the original network.
    c.device.ip = "203.0.113.7".to_owned();
    h.clock.advance(7 * 86_400 + 1);
    let (asked, rule, _) = decide(&h, &c).await;
    assert_eq!((asked, rule.as_str()), (true, "device:expired"));

    // Forbidden: no cookie even when the user asks to be remembered.
    let h = Harness::new();
    set_policy(
        &h,
        &admin,
        ORG,
        &OrgPolicy {
            allow_remember_device: false,
            ..policy(Mandate::Inherit, &[])
        },
    )
    .await
    .unwrap();
    let c = ctx("dr-no-trust");
    let id = h.challenge(&c).await;
    h.send_code(&c, &id).await.unwrap();
    let v = verify_remember(&h, &c, &id, &h.last_code()).await;
    assert_eq!((v.device_id, v.set_cookie), (None, None));
}

#[tokio::test]
async fn only_admins_of_the_org_administer_it_and_refusals_are_recorded() {
    let h = Harness::new();
    let strangers = [
        actor("other-admin", "globex", &["org-admin"]),
        actor("dr-plain", ORG, &["provider"]),
        actor("nobody", ORG, &[]),
    ];
    for who in &strangers {
        let before = h.audit_records().len();
        let e = set_policy(&h, who, ORG, &policy(Mandate::Everyone, &[]))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Forbidden, "{}", who.user_id);
        assert_eq!(
            get_policy(&h, who, ORG).await.unwrap_err().kind,
            ErrorKind::Forbidden
        );
        assert_eq!(
            reset_user(&h, who, ORG, "dr-x").await.unwrap_err().kind,
            ErrorKind::Forbidden
        );
        let records = h.audit_records();
        assert_eq!(records.len(), before + 3, "each refusal is recorded");
        for r in &records[before..] {
            assert_eq!(r["action"], "access_denied");
            assert_eq!(
                r["org"],
                who.org_id.as_str(),
                "recorded in the actor's own stream"
            );
            assert_eq!(r["actor"], who.user_id.as_str());
        }
    }
    // The policy did not change: a receptionist still logs in without a code.
    let (asked, _, _) = decide(&h, &with_roles("front-desk", &["receptionist"])).await;
    assert!(!asked);
    // A platform admin may act on any org.
    set_policy(
        &h,
        &actor("root", "platform", &["platform-admin"]),
        ORG,
        &policy(Mandate::Everyone, &[]),
    )
    .await
    .unwrap();
    let (asked, rule, _) = decide(&h, &with_roles("front-desk", &["receptionist"])).await;
    assert_eq!((asked, rule.as_str()), (true, "org:acme-health:mandate"));
}

#[tokio::test]
async fn an_admin_reset_unlocks_a_locked_user() {
    let h = Harness::new();
    let c = ctx("dr-locked");
    let mut failures = 0;
    while failures < 20 {
        let id = h.challenge(&c).await;
        h.send_code(&c, &id).await.unwrap();
        let code = h.last_code();
        for _ in 0..5 {
            match h.verify(&c, &id, &wrong(&code)).await {
                Err(e) if e.kind == ErrorKind::Rejected => failures += 1,
                Err(e) if e.kind == ErrorKind::Throttled => {
                    h.clock.advance(i64::from(e.retry_after_seconds.unwrap()))
                }
                Err(e) if e.kind == ErrorKind::Locked => break,
                other => panic!("{other:?}"),
            }
            if failures == 20 {
                break;
            }
        }
        h.clock.advance(301);
    }
    assert!(matches!(h.begin(&c).await.unwrap(), Decision::Deny(_)));
    reset_user(
        &h,
        &actor("it-admin", ORG, &["org-admin"]),
        ORG,
        "dr-locked",
    )
    .await
    .unwrap();
    assert_eq!(h.actions().last().map(String::as_str), Some("mfa_reset"));
    let id = h.challenge(&c).await;
    h.send_code(&c, &id).await.unwrap();
    assert!(
        h.verify(&c, &id, &h.last_code()).await.is_ok(),
        "unlocked and signing in again"
    );
}
