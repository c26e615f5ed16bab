//! Enrollment through the compiled component: the full precedence matrix with opt-in and its
//! explanations in two languages, confirming the address by code, the organization's grace period,
//! moving MFA to a new address only after a fresh code at the current one (ASVS 7.5.1), admin
//! resets that forget the address, platform roles, and the same flow over REST.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use crate::common;

use common::*;
use host_harness::wit::{self, ChallengePurpose, Decision, ErrorKind, Mandate, OrgPolicy};
use serde_json::{Value, json};

const ORG: &str = "acme-health";
const HOUR: i64 = 3_600;
const DAY: i64 = 86_400;

const MANDATE: &str = "org:acme-health:mandate";
const ORG_ROLE: &str = "org:acme-health:role:scheduler";
const PLATFORM_ROLE: &str = "role:provider";
const OPTED_IN: &str = "user:opted-in";
const NOT_REQUIRED: &str = "policy:not-required";

/// What an unenrolled user is told after the deciding rule's sentence.
const ENROLL_FIRST: &str = "First, confirm your email address with a code.";

/// The English sentence for each rule (`core/i18n/en.json`, `explain`).
fn english(rule: &str) -> &'static str {
    match rule {
        MANDATE => "Your organization requires a code from your email for every member.",
        ORG_ROLE => "Your organization requires a code from your email for the scheduler role.",
        PLATFORM_ROLE => "The provider role requires a code from your email.",
        OPTED_IN => "You turned on codes from your email for your account.",
        NOT_REQUIRED => "No rule requires a second factor for your account.",
        other => panic!("no sentence for {other}"),
    }
}

fn org_admin() -> wit::Actor {
    actor("it-admin", ORG, &["org-admin"])
}

fn platform_admin() -> wit::Actor {
    actor("root", "platform", &["platform-admin"])
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

fn with_roles(user: &str, roles: &[&str]) -> wit::LoginContext {
    let mut c = ctx(user);
    c.roles = roles.iter().map(|r| (*r).to_owned()).collect();
    c
}

/// The user `user` (a provider) as the IdP now describes them, with `email`.
fn with_email(user: &str, email: &str) -> wit::LoginContext {
    let mut c = ctx(user);
    c.email = email.to_owned();
    c
}

fn branding(default_language: &str) -> wit::Branding {
    wit::Branding {
        display_name: "Acme Health".to_owned(),
        logo_url: None,
        primary_color: "#0b4f6c".to_owned(),
        accent_color: "#e6f2f7".to_owned(),
        sender_name: "Acme Health Security".to_owned(),
        support_contact: String::new(),
        footer_text: String::new(),
        default_language: default_language.to_owned(),
    }
}

fn challenge_of(d: Result<Decision, wit::MfaError>) -> wit::Challenge {
    match d {
        Ok(Decision::Challenge(c)) => c,
        other => panic!("expected a challenge, got {other:?}"),
    }
}

fn allowed(d: Result<Decision, wit::MfaError>) -> wit::Allowed {
    match d {
        Ok(Decision::Allow(a)) => a,
        other => panic!("expected the login to be let through, got {other:?}"),
    }
}

/// The address the last email went to.
fn last_recipient(h: &Harness) -> String {
    h.mailer.inner().last().expect("an email was sent").to
}

/// Sends the challenge's code and verifies it.
async fn complete(h: &Harness, c: &wit::LoginContext, challenge_id: &str) {
    h.send_code(c, challenge_id).await.unwrap();
    h.verify(c, challenge_id, &h.last_code()).await.unwrap();
}

/// Opts `c` in of their own accord: `enroll`, then the code.
async fn opt_in(h: &Harness, c: &wit::LoginContext) {
    let ch = h.enroll(c).await.unwrap();
    assert_eq!(
        (ch.purpose, ch.why.rule.as_str()),
        (ChallengePurpose::Enrollment, OPTED_IN)
    );
    assert_eq!(
        ch.why.message,
        format!("{} {ENROLL_FIRST}", english(OPTED_IN))
    );
    complete(h, c, &ch.challenge_id).await;
    assert!(h.status(c).await.unwrap().enrolled);
}

/// A full login (begin, send, verify) of an already enrolled user; returns the address it went to.
async fn login(h: &Harness, c: &wit::LoginContext) -> String {
    let ch = challenge_of(h.begin(c).await);
    assert_eq!(ch.purpose, ChallengePurpose::Login);
    complete(h, c, &ch.challenge_id).await;
    assert_eq!(
        h.actions().last().map(String::as_str),
        Some("code_verified")
    );
    last_recipient(h)
}

/// The audit records written since `before` records.
fn records_since(h: &Harness, before: usize) -> Vec<Value> {
    h.audit_records().split_off(before)
}

/// Wrong codes until the user is locked (20 in a row), waiting out the delays between them.
async fn lock(h: &Harness, c: &wit::LoginContext) {
    let mut failures = 0;
    while failures < 20 {
        let id = h.challenge(c).await;
        h.send_code(c, &id).await.unwrap();
        let code = h.last_code();
        for _ in 0..5 {
            match h.verify(c, &id, &wrong(&code)).await {
                Err(e) if e.kind == ErrorKind::Rejected => failures += 1,
                Err(e) if e.kind == ErrorKind::Throttled => {
                    h.clock.advance(i64::from(e.retry_after_seconds.unwrap()))
                }
                other => panic!("{other:?}"),
            }
            if failures == 20 {
                break;
            }
        }
        h.clock.advance(301);
    }
    assert!(h.status(c).await.unwrap().locked);
}

/// (org mandate, the user holds `scheduler` (the role a `by-role` org lists), the user holds
/// `provider` (a platform role), the user opted in) → the deciding rule.
type Case = (Mandate, bool, bool, bool, &'static str);

#[rustfmt::skip]
const MATRIX: [Case; 24] = [
    (Mandate::Everyone, false, false, false, MANDATE),
    (Mandate::Everyone, false, false, true, MANDATE),
    (Mandate::Everyone, false, true, false, MANDATE),
    (Mandate::Everyone, false, true, true, MANDATE),
    (Mandate::Everyone, true, false, false, MANDATE),
    (Mandate::Everyone, true, false, true, MANDATE),
    (Mandate::Everyone, true, true, false, MANDATE),
    (Mandate::Everyone, true, true, true, MANDATE),
    (Mandate::ByRole, false, false, false, NOT_REQUIRED),
    (Mandate::ByRole, false, false, true, OPTED_IN),
    (Mandate::ByRole, false, true, false, PLATFORM_ROLE),
    (Mandate::ByRole, false, true, true, PLATFORM_ROLE),
    (Mandate::ByRole, true, false, false, ORG_ROLE),
    (Mandate::ByRole, true, false, true, ORG_ROLE),
    (Mandate::ByRole, true, true, false, ORG_ROLE),
    (Mandate::ByRole, true, true, true, ORG_ROLE),
    (Mandate::Inherit, false, false, false, NOT_REQUIRED),
    (Mandate::Inherit, false, false, true, OPTED_IN),
    (Mandate::Inherit, false, true, false, PLATFORM_ROLE),
    (Mandate::Inherit, false, true, true, PLATFORM_ROLE),
    // `scheduler` is no platform role, and an `inherit` org lists none.
    (Mandate::Inherit, true, false, false, NOT_REQUIRED),
    (Mandate::Inherit, true, false, true, OPTED_IN),
    (Mandate::Inherit, true, true, false, PLATFORM_ROLE),
    (Mandate::Inherit, true, true, true, PLATFORM_ROLE),
];

/// Every combination of org mandate × org role × platform role × opt-in: whether a code is asked,
/// for what (enrolled users log in, others confirm their address first), the exact rule and English
/// sentence, and the rule in the audit record.
#[tokio::test]
async fn the_precedence_matrix_with_opt_in_decides_and_explains() {
    for (i, &(mandate, org_role, platform_role, opted_in, rule)) in MATRIX.iter().enumerate() {
        let case = format!(
            "case {i}: {mandate:?}, scheduler {org_role}, provider {platform_role}, opted in {opted_in}"
        );
        let h = Harness::new();
        let mut c = with_roles(&format!("user-{i}"), &["receptionist"]);
        // Opting in happens while no rule covers the user; the org's rules and roles come after.
        if opted_in {
            opt_in(&h, &c).await;
        }
        let org_roles: &[&str] = if mandate == Mandate::ByRole {
            &["scheduler"]
        } else {
            &[]
        };
        h.set_policy(&org_admin(), ORG, &policy(mandate, org_roles))
            .await
            .unwrap();
        if org_role {
            c.roles.push("scheduler".to_owned());
        }
        if platform_role {
            c.roles.push("provider".to_owned());
        }
        let emails = h.emails_sent();
        let decision = h.begin(&c).await.unwrap();
        let last = h.audit_records().pop().unwrap();
        assert_eq!(last["reason"], rule, "{case}: the record names the rule");
        match decision {
            Decision::Allow(a) => {
                assert_eq!(rule, NOT_REQUIRED, "{case}: let through");
                assert_eq!(
                    (a.why.rule.as_str(), a.why.message.as_str()),
                    (NOT_REQUIRED, english(NOT_REQUIRED)),
                    "{case}"
                );
                assert_eq!(last["action"], "access_allowed", "{case}");
            }
            Decision::Challenge(ch) => {
                assert_ne!(rule, NOT_REQUIRED, "{case}: asked for a code");
                let (purpose, message) = if opted_in {
                    (ChallengePurpose::Login, english(rule).to_owned())
                } else {
                    (
                        ChallengePurpose::Enrollment,
                        format!("{} {ENROLL_FIRST}", english(rule)),
                    )
                };
                assert_eq!(
                    (ch.purpose, ch.why.rule.as_str(), ch.why.message.as_str()),
                    (purpose, rule, message.as_str()),
                    "{case}"
                );
                assert_eq!(ch.masked_email, "u***@clinic.example", "{case}");
                assert_eq!(last["action"], "challenge_started", "{case}");
            }
            Decision::Deny(d) => panic!("{case}: denied ({})", d.why.rule),
        }
        assert_eq!(h.emails_sent(), emails, "{case}: begin sends no mail");
    }
}

/// `why.message` is in the context's `locale` (a regional tag counts), else the organization's
/// default language, else English; `why.rule` never changes with the language.
#[tokio::test]
async fn explanations_speak_the_users_language_else_the_orgs() {
    let h = Harness::new();
    let mut dr = with_roles("dr-es", &["provider"]);
    dr.locale = Some("es".to_owned());
    let ch = challenge_of(h.begin(&dr).await);
    assert_eq!(ch.why.rule, PLATFORM_ROLE);
    assert_eq!(
        ch.why.message,
        "El rol provider exige un código de tu correo. \
         Primero, confirma tu dirección de correo con un código."
    );

    let mut desk = with_roles("desk-es", &["receptionist"]);
    let spanish_none = "Ninguna regla exige un segundo factor para tu cuenta.";
    let message = |d| {
        let a = allowed(d);
        assert_eq!(a.why.rule, NOT_REQUIRED);
        a.why.message
    };
    desk.locale = Some("es-MX".to_owned());
    assert_eq!(message(h.begin(&desk).await), spanish_none);
    desk.locale = None;
    assert_eq!(message(h.begin(&desk).await), english(NOT_REQUIRED));

    // The organization's default language: Spanish for whoever brings no supported locale.
    h.set_branding(&org_admin(), ORG, &branding("es"))
        .await
        .unwrap();
    assert_eq!(message(h.begin(&desk).await), spanish_none);
    desk.locale = Some("fr-FR".to_owned());
    assert_eq!(message(h.begin(&desk).await), spanish_none);
    // The user's own supported language still comes first.
    desk.locale = Some("en-GB".to_owned());
    assert_eq!(message(h.begin(&desk).await), english(NOT_REQUIRED));
    // Another organization is not affected.
    let mut elsewhere = desk.clone();
    elsewhere.org_id = "globex".to_owned();
    elsewhere.locale = None;
    assert_eq!(message(h.begin(&elsewhere).await), english(NOT_REQUIRED));

    // The org's mandate, in the org's language, for a user without a locale.
    h.set_policy(&org_admin(), ORG, &policy(Mandate::Everyone, &[]))
        .await
        .unwrap();
    desk.locale = None;
    let ch = challenge_of(h.begin(&desk).await);
    assert_eq!(ch.why.rule, MANDATE);
    assert_eq!(
        ch.why.message,
        "Tu organización exige un código de tu correo a todos sus miembros. \
         Primero, confirma tu dirección de correo con un código."
    );
}

/// A required, unenrolled user's first code confirms the address the IdP names (recorded as
/// `enrolled`, never also `code_verified`); a wrong code confirms nothing; afterwards logins ask
/// for a `login` code at the confirmed address.
#[tokio::test]
async fn a_first_code_confirms_the_address_and_only_then_logins_ask_for_codes() {
    let h = Harness::new();
    let c = with_email("dr-new", "nina.new@clinic.example");
    let ch = challenge_of(h.begin(&c).await);
    assert_eq!(
        (
            ch.purpose,
            ch.masked_email.as_str(),
            ch.why.rule.as_str(),
            ch.why.message.as_str()
        ),
        (
            ChallengePurpose::Enrollment,
            "n***@clinic.example",
            PLATFORM_ROLE,
            format!("{} {ENROLL_FIRST}", english(PLATFORM_ROLE)).as_str()
        )
    );
    assert!(!h.status(&c).await.unwrap().enrolled);
    h.send_code(&c, &ch.challenge_id).await.unwrap();
    assert_eq!(last_recipient(&h), "nina.new@clinic.example");
    let code = h.last_code();

    let e = h.verify(&c, &ch.challenge_id, &wrong(&code)).await;
    assert_eq!(kind(&e), Some(ErrorKind::Rejected));
    assert!(
        !h.status(&c).await.unwrap().enrolled,
        "a wrong code enrolls no one"
    );
    assert!(!h.actions().contains(&"enrolled".to_owned()));

    let before = h.audit_records().len();
    let v = h.verify(&c, &ch.challenge_id, &code).await.unwrap();
    assert_eq!(v.amr, ["otp", "mfa"]);
    let r = records_since(&h, before);
    assert_eq!(r.len(), 1, "one record per verified code: {r:?}");
    assert_eq!(
        (&r[0]["action"], &r[0]["reason"], &r[0]["challenge_id"]),
        (
            &json!("enrolled"),
            &json!("email-confirmed"),
            &json!(ch.challenge_id)
        )
    );
    assert!(h.status(&c).await.unwrap().enrolled);
    // The same code again does nothing more.
    let again = h.verify(&c, &ch.challenge_id, &code).await;
    assert_eq!(kind(&again), Some(ErrorKind::Rejected));

    // Enrolled: the next login asks for a login code, explained by the rule alone.
    let next = challenge_of(h.begin(&c).await);
    assert_eq!(
        (
            next.purpose,
            next.masked_email.as_str(),
            next.why.rule.as_str(),
            next.why.message.as_str()
        ),
        (
            ChallengePurpose::Login,
            "n***@clinic.example",
            PLATFORM_ROLE,
            english(PLATFORM_ROLE)
        )
    );
    let before = h.audit_records().len();
    complete(&h, &c, &next.challenge_id).await;
    let actions: Vec<_> = records_since(&h, before)
        .iter()
        .map(|r| r["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(actions, ["code_sent", "code_verified"]);
    assert_eq!(
        h.actions().iter().filter(|a| *a == "enrolled").count(),
        1,
        "enrolled once"
    );
}

/// The confirmed address is the one the code went to, even if the IdP names another by the time
/// the code is entered.
#[tokio::test]
async fn the_address_confirmed_is_the_one_the_code_went_to() {
    let h = Harness::new();
    let a = with_email("dr-swap", "ann@clinic.example");
    let b = with_email("dr-swap", "bea@elsewhere.example");
    let ch = challenge_of(h.begin(&a).await);
    h.send_code(&a, &ch.challenge_id).await.unwrap();
    h.verify(&b, &ch.challenge_id, &h.last_code())
        .await
        .unwrap();
    assert_eq!(h.actions().last().map(String::as_str), Some("enrolled"));
    h.clock.advance(HOUR);
    let next = challenge_of(h.begin(&b).await);
    assert_eq!(next.masked_email, "a***@clinic.example");
    h.send_code(&b, &next.challenge_id).await.unwrap();
    assert_eq!(last_recipient(&h), "ann@clinic.example");
}

/// `enrollment_grace_days = 3`: counted from the user's first login under a rule (not from when
/// the policy was set), each user their own; logins are let through with the end date until just
/// before day 3, and from day 3 the login must enroll. Users no rule covers are not in grace, and
/// an enrolled user gets no grace.
#[tokio::test]
async fn grace_days_let_logins_through_until_the_end_date_then_ask_to_enroll() {
    let h = Harness::new();
    h.set_policy(
        &org_admin(),
        ORG,
        &OrgPolicy {
            enrollment_grace_days: 3,
            ..policy(Mandate::Inherit, &[])
        },
    )
    .await
    .unwrap();
    h.clock.advance(10 * DAY);
    let start = T0 + 10 * DAY;
    let c = ctx("dr-grace");
    // T0 + 13 days.
    let until = "Please set up codes from your email soon: \
                 from 2026-12-01T11:06:40Z you cannot sign in without them.";
    for at in [start, start + DAY, start + 2 * DAY, start + 3 * DAY - 1] {
        h.clock.set(at);
        let a = allowed(h.begin(&c).await);
        assert_eq!(
            (a.why.rule.as_str(), a.why.message.as_str()),
            ("enrollment:grace", until),
            "at start + {} s",
            at - start
        );
        let last = h.audit_records().pop().unwrap();
        assert_eq!(
            (&last["action"], &last["reason"]),
            (&json!("access_allowed"), &json!("enrollment:grace"))
        );
    }
    assert_eq!(h.emails_sent(), 0);
    assert!(!h.status(&c).await.unwrap().enrolled);

    // Another user's grace starts at their own first login (now, start + 3 days - 1 s).
    let late = ctx("dr-late");
    let a = allowed(h.begin(&late).await);
    assert!(
        a.why.message.contains("from 2026-12-04T11:06:39Z"),
        "{}",
        a.why.message
    );
    // Nobody requires MFA of a receptionist: no grace to speak of.
    let desk = with_roles("front-desk", &["receptionist"]);
    assert_eq!(allowed(h.begin(&desk).await).why.rule, NOT_REQUIRED);
    // Enrolling during the grace ends it: from then on logins take a code.
    let early = ctx("dr-early");
    allowed(h.begin(&early).await);
    let ch = h.enroll(&early).await.unwrap();
    assert_eq!(
        (ch.purpose, ch.why.rule.as_str()),
        (ChallengePurpose::Enrollment, PLATFORM_ROLE)
    );
    complete(&h, &early, &ch.challenge_id).await;
    assert_eq!(
        challenge_of(h.begin(&early).await).purpose,
        ChallengePurpose::Login
    );

    // Day 3 exactly, and after: the login can only complete by enrolling.
    for at in [start + 3 * DAY, start + 30 * DAY] {
        h.clock.set(at);
        let ch = challenge_of(h.begin(&c).await);
        assert_eq!(
            (ch.purpose, ch.why.rule.as_str(), ch.masked_email.as_str()),
            (
                ChallengePurpose::Enrollment,
                PLATFORM_ROLE,
                "d***@clinic.example"
            ),
            "at start + {} s",
            at - start
        );
    }
}

/// `enrollment_grace_logins = 2`: two logins let through (each saying how many are left), the third
/// and every later one must enroll.
#[tokio::test]
async fn grace_logins_let_two_through_and_ask_the_third_to_enroll() {
    let h = Harness::new();
    h.set_policy(
        &org_admin(),
        ORG,
        &OrgPolicy {
            enrollment_grace_logins: 2,
            ..policy(Mandate::Everyone, &[])
        },
    )
    .await
    .unwrap();
    let c = with_roles("desk-grace", &["receptionist"]);
    for left in [1, 0] {
        let a = allowed(h.begin(&c).await);
        assert_eq!(a.why.rule, "enrollment:grace");
        assert!(
            a.why
                .message
                .contains(&format!("Sign-ins left without them: {left}.")),
            "{}",
            a.why.message
        );
        h.clock.advance(HOUR);
    }
    for _ in 0..2 {
        let ch = challenge_of(h.begin(&c).await);
        assert_eq!(
            (ch.purpose, ch.why.rule.as_str()),
            (ChallengePurpose::Enrollment, MANDATE)
        );
        h.clock.advance(DAY);
    }
    assert_eq!(
        h.actions(),
        [
            "policy_changed",
            "access_allowed",
            "access_allowed",
            "challenge_started",
            "challenge_started"
        ]
    );
}

/// A grace beyond 90 days or 20 logins is refused, naming the field, through the WIT export and as
/// a REST 400; the limits themselves are accepted; nothing is stored on a refusal.
#[tokio::test]
async fn grace_beyond_the_limits_is_refused_naming_the_field() {
    let h = Harness::new();
    let admin = org_admin();
    let too_long = [
        (
            OrgPolicy {
                enrollment_grace_days: 91,
                ..policy(Mandate::Everyone, &[])
            },
            "policy.enrollment_grace_days",
        ),
        (
            OrgPolicy {
                enrollment_grace_logins: 21,
                ..policy(Mandate::Everyone, &[])
            },
            "policy.enrollment_grace_logins",
        ),
    ];
    for (p, field) in &too_long {
        let e = h.set_policy(&admin, ORG, p).await.unwrap_err();
        assert_eq!(
            (e.kind, e.field.as_deref()),
            (ErrorKind::InvalidInput, Some(*field))
        );
    }
    let stored = h.get_policy(&admin, ORG).await.unwrap();
    assert_eq!(
        (
            stored.mandate,
            stored.enrollment_grace_days,
            stored.enrollment_grace_logins
        ),
        (Mandate::Inherit, 0, 0),
        "nothing was stored"
    );

    let rest_actor = json!({ "user_id": "it-admin", "org_id": ORG, "roles": ["org-admin"], "ip": "198.51.100.4" });
    let rest_policy = |days: u32, logins: u32| {
        json!({
            "actor": rest_actor,
            "org_id": ORG,
            "policy": {
                "mandate": "everyone", "required_roles": [], "trust_days": 30,
                "allow_remember_device": true, "ipv4_change_prefix": 16, "ipv6_change_prefix": 48,
                "enrollment_grace_days": days, "enrollment_grace_logins": logins
            }
        })
        .to_string()
    };
    for (days, logins, field) in [
        (91, 0, "policy.enrollment_grace_days"),
        (0, 21, "policy.enrollment_grace_logins"),
    ] {
        let (status, body) = h
            .http(
                "POST",
                "/v1/admin/policy/set",
                Some(API_KEY),
                &rest_policy(days, logins),
            )
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(
            (&body["error"]["kind"], &body["error"]["field"]),
            (&json!("invalid-input"), &json!(field))
        );
    }
    assert!(!h.actions().contains(&"policy_changed".to_owned()));

    // The limits themselves are fine.
    let (status, body) = h
        .http(
            "POST",
            "/v1/admin/policy/set",
            Some(API_KEY),
            &rest_policy(90, 20),
        )
        .await;
    assert_eq!((status, &body), (200, &json!({ "updated": true })));
    let stored = h.get_policy(&admin, ORG).await.unwrap();
    assert_eq!(
        (stored.enrollment_grace_days, stored.enrollment_grace_logins),
        (90, 20)
    );
}

/// ASVS 7.5.1: once enrolled at a@, codes keep going to a@ whatever the IdP names; moving MFA to b@
/// needs a code verified at a@ in the last 300 s (else `forbidden`, recorded), then a code sent to b@;
/// afterwards codes go to b@. No audit line carries an address.
#[tokio::test]
async fn codes_stay_at_the_confirmed_address_until_a_fresh_verified_change() {
    let h = Harness::new();
    let a = with_email("dr-move", "alice@clinic.example");
    let b = with_email("dr-move", "bob@elsewhere.example");
    let ch = challenge_of(h.begin(&a).await);
    complete(&h, &a, &ch.challenge_id).await;
    assert_eq!(h.actions().last().map(String::as_str), Some("enrolled"));
    // `enroll` is for users without an address, whatever address the IdP names.
    for c in [&a, &b] {
        assert_eq!(kind(&h.enroll(c).await), Some(ErrorKind::Forbidden));
    }
    h.clock.advance(HOUR);

    // The IdP's profile now says b@: the code still goes to a@.
    let ch = challenge_of(h.begin(&b).await);
    assert_eq!(
        (ch.purpose, ch.masked_email.as_str()),
        (ChallengePurpose::Login, "a***@clinic.example")
    );
    h.send_code(&b, &ch.challenge_id).await.unwrap();
    assert_eq!(last_recipient(&h), "alice@clinic.example");
    let login_code = h.last_code();

    // No code verified in the last 300 s (the enrollment's token has lapsed): refused, recorded.
    let before = h.audit_records().len();
    assert_eq!(kind(&h.change_email(&b).await), Some(ErrorKind::Forbidden));
    let r = records_since(&h, before);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(
        (
            &r[0]["action"],
            &r[0]["outcome"],
            &r[0]["reason"],
            &r[0]["org"],
            &r[0]["subject"]
        ),
        (
            &json!("access_denied"),
            &json!("denied"),
            &json!("email-change:step-up-expired"),
            &json!(ORG),
            &json!("dr-move")
        )
    );

    // The login code (sent to a@) verified: for the next 300 s the change may start.
    h.verify(&b, &ch.challenge_id, &login_code).await.unwrap();
    h.clock.advance(300);
    let change = h.change_email(&b).await.unwrap();
    assert_eq!(
        (
            change.purpose,
            change.masked_email.as_str(),
            change.why.rule.as_str(),
            change.why.message.as_str()
        ),
        (
            ChallengePurpose::EmailChange,
            "b***@elsewhere.example",
            "email-change",
            "Confirm your new email address with a code before codes go there."
        )
    );
    let last = h.audit_records().pop().unwrap();
    assert_eq!(
        (&last["action"], &last["reason"]),
        (&json!("challenge_started"), &json!("email-change"))
    );
    h.send_code(&b, &change.challenge_id).await.unwrap();
    assert_eq!(last_recipient(&h), "bob@elsewhere.example");
    let code = h.last_code();
    let e = h.verify(&b, &change.challenge_id, &wrong(&code)).await;
    assert_eq!(kind(&e), Some(ErrorKind::Rejected));
    let before = h.audit_records().len();
    h.verify(&b, &change.challenge_id, &code).await.unwrap();
    let r = records_since(&h, before);
    assert_eq!(r.len(), 1, "one record per verified code: {r:?}");
    assert_eq!(
        (&r[0]["action"], &r[0]["challenge_id"]),
        (&json!("email_changed"), &json!(change.challenge_id))
    );

    // From now on codes go to b@, even when the IdP names a@ again.
    h.clock.advance(HOUR);
    let ch = challenge_of(h.begin(&a).await);
    assert_eq!(
        (ch.purpose, ch.masked_email.as_str(), ch.why.rule.as_str()),
        (
            ChallengePurpose::Login,
            "b***@elsewhere.example",
            PLATFORM_ROLE
        )
    );
    h.send_code(&a, &ch.challenge_id).await.unwrap();
    assert_eq!(last_recipient(&h), "bob@elsewhere.example");
    assert!(h.status(&b).await.unwrap().enrolled);
    // A "change" to the confirmed address itself is refused, naming the field.
    let e = h.change_email(&b).await.unwrap_err();
    assert_eq!(
        (e.kind, e.field.as_deref()),
        (ErrorKind::InvalidInput, Some("email"))
    );

    for e in h.audit.inner().entries() {
        assert!(!e.line.contains('@'), "an address in the trail: {}", e.line);
        assert!(
            !e.line.contains("alice") && !e.line.contains("bob"),
            "{}",
            e.line
        );
    }
}

/// The freshness window is 300 s from the last verified code (the enrollment code counts: it went
/// to the address now confirmed): 300 s later a change may start, 301 s later it is refused.
/// A user with no address cannot change it.
#[tokio::test]
async fn a_change_301_s_after_the_last_verified_code_is_refused() {
    let h = Harness::new();
    let a = with_email("dr-late-move", "alice@clinic.example");
    let b = with_email("dr-late-move", "bob@elsewhere.example");
    assert_eq!(kind(&h.change_email(&b).await), Some(ErrorKind::Forbidden));

    let ch = challenge_of(h.begin(&a).await);
    complete(&h, &a, &ch.challenge_id).await;
    h.clock.advance(300);
    assert_eq!(
        h.change_email(&b).await.unwrap().purpose,
        ChallengePurpose::EmailChange
    );
    h.clock.advance(1);
    assert_eq!(kind(&h.change_email(&b).await), Some(ErrorKind::Forbidden));

    // A login code verified later is just as fresh, for just as long.
    h.clock.advance(HOUR);
    assert_eq!(login(&h, &a).await, "alice@clinic.example");
    h.clock.advance(301);
    assert_eq!(kind(&h.change_email(&b).await), Some(ErrorKind::Forbidden));
    let denied: Vec<_> = h
        .audit_records()
        .into_iter()
        .filter(|r| r["action"] == "access_denied")
        .map(|r| r["reason"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        denied,
        [
            "email-change:step-up-expired",
            "email-change:step-up-expired"
        ]
    );
    // Still at a@.
    h.clock.advance(HOUR);
    assert_eq!(login(&h, &b).await, "alice@clinic.example");
}

/// An org-admin's reset clears the lock, the trusted devices and the confirmed address (`mfa_reset`):
/// the user enrolls again, at the IdP's current address. A cross-org admin's or a plain user's reset
/// is refused, recorded in their own org's stream, and changes nothing.
#[tokio::test]
async fn an_admin_reset_forgets_the_lock_the_devices_and_the_address() {
    let h = Harness::new();
    let c = with_email("dr-reset", "old.box@clinic.example");
    let me = actor("dr-reset", ORG, &["provider"]);
    let id = h.challenge(&c).await;
    h.send_code(&c, &id).await.unwrap();
    let v = h.verify_remember(&c, &id, &h.last_code()).await.unwrap();
    let cookie = cookie_value(&v.set_cookie.expect("remembered"));
    assert_eq!(h.devices(&me).await.unwrap().len(), 1);
    lock(&h, &c).await;
    let mut with_cookie = c.clone();
    with_cookie.device.cookie = Some(cookie);
    match h.begin(&with_cookie).await.unwrap() {
        Decision::Deny(d) => assert_eq!(d.why.rule, "user:locked"),
        other => panic!("a locked user is denied, got {other:?}"),
    }

    for who in [
        actor("other-admin", "globex", &["org-admin"]),
        actor("dr-plain", ORG, &["provider"]),
    ] {
        let before = h.audit_records().len();
        let e = h.reset_user(&who, ORG, "dr-reset").await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Forbidden, "{}", who.user_id);
        let r = records_since(&h, before);
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(
            (
                &r[0]["action"],
                &r[0]["org"],
                &r[0]["actor"],
                &r[0]["reason"]
            ),
            (
                &json!("access_denied"),
                &json!(who.org_id),
                &json!(who.user_id),
                &json!("reset-user:not-authorized:target-org:acme-health")
            )
        );
    }
    let s = h.status(&c).await.unwrap();
    assert!(s.locked && s.enrolled, "the refused resets changed nothing");
    assert_eq!(h.devices(&me).await.unwrap().len(), 1);

    let before = h.audit_records().len();
    h.reset_user(&org_admin(), ORG, "dr-reset").await.unwrap();
    let r = records_since(&h, before);
    let actions: Vec<_> = r.iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["device_revoked", "mfa_reset"]);
    assert_eq!(
        (&r[1]["org"], &r[1]["actor"], &r[1]["subject"]),
        (&json!(ORG), &json!("it-admin"), &json!("dr-reset"))
    );
    let s = h.status(&c).await.unwrap();
    assert_eq!(
        (
            s.locked,
            s.enrolled,
            s.consecutive_failures,
            s.active_challenge
        ),
        (false, false, 0, None)
    );
    assert!(h.devices(&me).await.unwrap().is_empty());

    // The user who lost the old mailbox enrolls again where the IdP now points; the old browser
    // is no longer trusted.
    let mut moved = with_cookie.clone();
    moved.email = "new.box@clinic.example".to_owned();
    let ch = challenge_of(h.begin(&moved).await);
    assert_eq!(
        (ch.purpose, ch.masked_email.as_str(), ch.why.rule.as_str()),
        (
            ChallengePurpose::Enrollment,
            "n***@clinic.example",
            PLATFORM_ROLE
        )
    );
    complete(&h, &moved, &ch.challenge_id).await;
    assert_eq!(last_recipient(&h), "new.box@clinic.example");
    assert_eq!(h.actions().last().map(String::as_str), Some("enrolled"));
}

/// Only a platform admin reads or sets the platform's roles (an org-admin, even of the user's own
/// org, is refused; so are cross-org admins and plain users at set-policy); each refusal lands in
/// the actor's own stream. `set-platform-roles(["scheduler"])` then makes schedulers (in every org)
/// use MFA with `role:scheduler` and lets providers through, unless an org's own rule says otherwise.
#[tokio::test]
async fn platform_roles_belong_to_platform_admins_and_org_rules_stay_on_top() {
    let h = Harness::new();
    let root = platform_admin();
    let scheduler = with_roles("sam-sched", &["scheduler"]);
    let provider = with_roles("dr-prov", &["provider"]);
    assert_eq!(
        h.get_platform_roles(&root).await.unwrap(),
        [
            "platform-admin",
            "org-admin",
            "admin",
            "provider",
            "clinician",
            "coach-with-patients"
        ]
    );
    assert_eq!(allowed(h.begin(&scheduler).await).why.rule, NOT_REQUIRED);
    assert_eq!(
        challenge_of(h.begin(&provider).await).why.rule,
        PLATFORM_ROLE
    );

    let strangers = [
        (org_admin(), false),
        (actor("other-admin", "globex", &["org-admin"]), true),
        (actor("dr-plain", ORG, &["provider"]), true),
    ];
    for (who, not_of_this_org) in &strangers {
        let before = h.audit_records().len();
        let roles = ["scheduler".to_owned()];
        let mut expected = vec![
            "set-platform-roles:not-authorized:platform",
            "get-platform-roles:not-authorized:platform",
        ];
        assert_eq!(
            kind(&h.set_platform_roles(who, &roles).await),
            Some(ErrorKind::Forbidden)
        );
        assert_eq!(
            kind(&h.get_platform_roles(who).await),
            Some(ErrorKind::Forbidden)
        );
        if *not_of_this_org {
            let p = policy(Mandate::Everyone, &[]);
            assert_eq!(
                kind(&h.set_policy(who, ORG, &p).await),
                Some(ErrorKind::Forbidden)
            );
            expected.push("set-policy:not-authorized:target-org:acme-health");
        }
        let r = records_since(&h, before);
        let reasons: Vec<_> = r.iter().map(|r| r["reason"].as_str().unwrap()).collect();
        assert_eq!(reasons, expected, "{}", who.user_id);
        for rec in &r {
            assert_eq!(
                (&rec["action"], &rec["org"], &rec["actor"]),
                (
                    &json!("access_denied"),
                    &json!(who.org_id),
                    &json!(who.user_id)
                )
            );
        }
    }
    assert_eq!(allowed(h.begin(&scheduler).await).why.rule, NOT_REQUIRED);
    let e = h
        .set_platform_roles(&root, &["bad role!".to_owned()])
        .await
        .unwrap_err();
    assert_eq!(
        (e.kind, e.field.as_deref()),
        (ErrorKind::InvalidInput, Some("roles"))
    );

    // The role that can change everything always keeps its second factor.
    let e = h
        .set_platform_roles(&root, &["scheduler".to_owned()])
        .await
        .unwrap_err();
    assert_eq!(
        (e.kind, e.field.as_deref()),
        (ErrorKind::InvalidInput, Some("roles"))
    );
    let e = h.set_platform_roles(&root, &[]).await.unwrap_err();
    assert_eq!(e.field.as_deref(), Some("roles"));

    let before = h.audit_records().len();
    h.set_platform_roles(
        &root,
        &["platform-admin".to_owned(), "scheduler".to_owned()],
    )
    .await
    .unwrap();
    let r = records_since(&h, before);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(
        (&r[0]["action"], &r[0]["org"], &r[0]["actor"]),
        (&json!("policy_changed"), &json!("platform"), &json!("root"))
    );
    assert!(
        r[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("platform:required-roles"),
        "{}",
        r[0]["reason"]
    );
    assert_eq!(
        h.get_platform_roles(&root).await.unwrap(),
        ["platform-admin", "scheduler"]
    );

    let ch = challenge_of(h.begin(&scheduler).await);
    assert_eq!(
        (ch.why.rule.as_str(), ch.why.message.as_str()),
        (
            "role:scheduler",
            "The scheduler role requires a code from your email. \
             First, confirm your email address with a code."
        )
    );
    assert_eq!(allowed(h.begin(&provider).await).why.rule, NOT_REQUIRED);
    let mut other_org = scheduler.clone();
    other_org.org_id = "globex".to_owned();
    assert_eq!(
        challenge_of(h.begin(&other_org).await).why.rule,
        "role:scheduler"
    );

    // An organization's own rule still makes its providers use MFA.
    h.set_policy(&org_admin(), ORG, &policy(Mandate::ByRole, &["provider"]))
        .await
        .unwrap();
    assert_eq!(
        challenge_of(h.begin(&provider).await).why.rule,
        "org:acme-health:role:provider"
    );
    let mut other_provider = provider.clone();
    other_provider.org_id = "globex".to_owned();
    assert_eq!(
        allowed(h.begin(&other_provider).await).why.rule,
        NOT_REQUIRED
    );
}

fn rest_context(user: &str, email: &str, roles: &[&str]) -> Value {
    json!({
        "user_id": user,
        "org_id": ORG,
        "email": email,
        "roles": roles,
        "device": { "ip": "203.0.113.7", "traits": { "user_agent": "Mozilla/5.0" } }
    })
}

async fn post(h: &Harness, path: &str, body: &Value) -> HttpReply {
    h.http_full("POST", path, Some(API_KEY), body.to_string().into_bytes())
        .await
}

/// The whole flow over REST: opt in with `/v1/login/enroll`, confirm, log in, move MFA with
/// `/v1/login/change-email` (refused while stale, 403), confirm the new address; and the
/// platform-roles routes.
#[tokio::test]
async fn the_enrollment_flow_over_rest() {
    let h = Harness::new();
    let desk = rest_context("desk-rest", "rita@clinic.example", &["receptionist"]);
    let ctx_body = json!({ "context": desk });

    let begun = post(&h, "/v1/login/begin", &ctx_body).await;
    assert_eq!(
        (
            begun.status,
            &begun.json["outcome"],
            &begun.json["why"]["rule"]
        ),
        (200, &json!("allow"), &json!(NOT_REQUIRED))
    );

    let enroll = post(&h, "/v1/login/enroll", &ctx_body).await;
    assert_eq!(enroll.status, 200, "{:?}", enroll.json);
    assert_eq!(
        (
            &enroll.json["purpose"],
            &enroll.json["masked_email"],
            &enroll.json["why"]["rule"]
        ),
        (
            &json!("enrollment"),
            &json!("r***@clinic.example"),
            &json!(OPTED_IN)
        )
    );
    let id = enroll.json["challenge_id"].as_str().unwrap().to_owned();
    let sent = post(
        &h,
        "/v1/login/send-code",
        &json!({ "context": desk, "challenge_id": id }),
    )
    .await;
    assert_eq!(sent.status, 200, "{:?}", sent.json);
    assert_eq!(last_recipient(&h), "rita@clinic.example");
    let code = h.last_code();
    let bad = post(
        &h,
        "/v1/login/verify",
        &json!({ "context": desk, "challenge_id": id, "code": wrong(&code) }),
    )
    .await;
    assert_eq!((bad.status, bad.kind()), (403, Some("rejected")));
    let status = post(&h, "/v1/login/status", &ctx_body).await;
    assert_eq!(status.json["enrolled"], false);
    let ok = post(
        &h,
        "/v1/login/verify",
        &json!({ "context": desk, "challenge_id": id, "code": code }),
    )
    .await;
    assert_eq!(ok.status, 200, "{:?}", ok.json);
    assert_eq!(h.actions().last().map(String::as_str), Some("enrolled"));
    let status = post(&h, "/v1/login/status", &ctx_body).await;
    assert_eq!(status.json["enrolled"], true);
    let again = post(&h, "/v1/login/enroll", &ctx_body).await;
    assert_eq!((again.status, again.kind()), (403, Some("forbidden")));

    // Opted in: logins now take a code.
    h.clock.advance(301);
    let begun = post(&h, "/v1/login/begin", &ctx_body).await;
    assert_eq!(
        (
            &begun.json["outcome"],
            &begun.json["purpose"],
            &begun.json["why"]["rule"]
        ),
        (&json!("challenge"), &json!("login"), &json!(OPTED_IN))
    );
    let login_id = begun.json["challenge_id"].as_str().unwrap().to_owned();

    // Moving to a new address: stale (301 s since the enrollment code) is refused.
    let home = rest_context("desk-rest", "rita@home.example", &["receptionist"]);
    // The enrollment's verify handed this session a step-up token; 301 s on, it has lapsed.
    let enrolled_token = ok.json["step_up"]
        .as_str()
        .expect("verify answers a step_up")
        .to_owned();
    let stale_body = json!({ "context": home, "step_up": enrolled_token });
    let stale = post(&h, "/v1/login/change-email", &stale_body).await;
    assert_eq!((stale.status, stale.kind()), (403, Some("forbidden")));
    let last = h.audit_records().pop().unwrap();
    assert_eq!(last["reason"], "email-change:step-up-expired");
    // Without a token the body is incomplete.
    let bare = post(&h, "/v1/login/change-email", &json!({ "context": home })).await;
    assert_eq!((bare.status, bare.kind()), (400, Some("invalid-input")));

    // A login code verified at the current address makes it fresh.
    post(
        &h,
        "/v1/login/send-code",
        &json!({ "context": home, "challenge_id": login_id }),
    )
    .await;
    assert_eq!(last_recipient(&h), "rita@clinic.example");
    let ok = post(
        &h,
        "/v1/login/verify",
        &json!({ "context": home, "challenge_id": login_id, "code": h.last_code() }),
    )
    .await;
    assert_eq!(ok.status, 200, "{:?}", ok.json);
    let home_body = json!({ "context": home, "step_up": ok.json["step_up"] });
    let change = post(&h, "/v1/login/change-email", &home_body).await;
    assert_eq!(change.status, 200, "{:?}", change.json);
    assert_eq!(
        (
            &change.json["purpose"],
            &change.json["masked_email"],
            &change.json["why"]["rule"]
        ),
        (
            &json!("email-change"),
            &json!("r***@home.example"),
            &json!("email-change")
        )
    );
    let change_id = change.json["challenge_id"].as_str().unwrap().to_owned();
    post(
        &h,
        "/v1/login/send-code",
        &json!({ "context": home, "challenge_id": change_id }),
    )
    .await;
    assert_eq!(last_recipient(&h), "rita@home.example");
    let ok = post(
        &h,
        "/v1/login/verify",
        &json!({ "context": home, "challenge_id": change_id, "code": h.last_code() }),
    )
    .await;
    assert_eq!(ok.status, 200, "{:?}", ok.json);
    assert_eq!(
        h.actions().last().map(String::as_str),
        Some("email_changed")
    );
    // Still opted in, now at the new address, whichever address the IdP names.
    let begun = post(&h, "/v1/login/begin", &ctx_body).await;
    assert_eq!(
        (&begun.json["masked_email"], &begun.json["why"]["rule"]),
        (&json!("r***@home.example"), &json!(OPTED_IN))
    );

    // The platform-roles routes.
    let org_admin_json = json!({ "user_id": "it-admin", "org_id": ORG, "roles": ["org-admin"] });
    let root_json = json!({ "user_id": "root", "org_id": "platform", "roles": ["platform-admin"] });
    let refused = post(
        &h,
        "/v1/admin/platform-roles/get",
        &json!({ "actor": org_admin_json }),
    )
    .await;
    assert_eq!((refused.status, refused.kind()), (403, Some("forbidden")));
    let set = post(
        &h,
        "/v1/admin/platform-roles/set",
        &json!({ "actor": root_json, "roles": ["platform-admin", "scheduler"] }),
    )
    .await;
    assert_eq!((set.status, &set.json), (200, &json!({ "updated": true })));
    let got = post(
        &h,
        "/v1/admin/platform-roles/get",
        &json!({ "actor": root_json }),
    )
    .await;
    assert_eq!(
        (got.status, &got.json),
        (200, &json!({ "roles": ["platform-admin", "scheduler"] }))
    );
}

/// What ties a change to its sign-in is the step-up token that sign-in's `verify` returned, not
/// the browser or the network: another session of the same user (a colleague on an identical
/// workstation behind the same NAT, or someone elsewhere holding the password and the IdP profile)
/// never saw the token and cannot move MFA to their own mailbox; the real sign-in can, once, even
/// from a phone whose network changed since.
#[tokio::test]
async fn only_the_sign_in_that_verified_can_change_the_address() {
    let h = Harness::new();
    let a = with_email("dr-elsewhere", "alice@clinic.example");
    let ch = challenge_of(h.begin(&a).await);
    complete(&h, &a, &ch.challenge_id).await;
    let token = h
        .step_up
        .lock()
        .unwrap()
        .clone()
        .expect("verify returned a step-up token");

    // Same browser, same network, seconds later: without the token, refused.
    let mut same_desk = with_email("dr-elsewhere", "mallory@attacker.example");
    same_desk.device = a.device.clone();
    assert_eq!(
        kind(&h.change_email_with(&same_desk, NOBODYS_STEP_UP).await),
        Some(ErrorKind::Forbidden)
    );
    let reasons: Vec<_> = h
        .audit_records()
        .into_iter()
        .filter(|r| r["action"] == "access_denied")
        .map(|r| r["reason"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(reasons, ["email-change:step-up-mismatch"]);
    // A value that is no token at all is invalid input, naming the field, and recorded nowhere.
    let e = h
        .change_email_with(&same_desk, "not-a-token")
        .await
        .unwrap_err();
    assert_eq!(
        (e.kind, e.field.as_deref()),
        (ErrorKind::InvalidInput, Some("step_up"))
    );

    // The sign-in that verified, now on another network: its token opens the change, once.
    let mut moved_on = with_email("dr-elsewhere", "alice.new@clinic.example");
    moved_on.device.ip = "192.0.2.99".to_owned();
    assert_eq!(
        h.change_email_with(&moved_on, &token)
            .await
            .unwrap()
            .purpose,
        ChallengePurpose::EmailChange
    );
    assert_eq!(
        kind(&h.change_email_with(&moved_on, &token).await),
        Some(ErrorKind::Forbidden)
    );
    assert_eq!(
        h.audit_records().last().unwrap()["reason"],
        "email-change:step-up-spent"
    );
}

/// An admin's reset sends the user back to enrollment, never to a second grace period: the grace
/// is given once.
#[tokio::test]
async fn a_reset_does_not_give_the_grace_period_again() {
    let h = Harness::new();
    h.set_policy(
        &org_admin(),
        ORG,
        &OrgPolicy {
            enrollment_grace_days: 3,
            ..policy(Mandate::Everyone, &[])
        },
    )
    .await
    .unwrap();
    let c = with_roles("desk-regrace", &["receptionist"]);
    assert_eq!(allowed(h.begin(&c).await).why.rule, "enrollment:grace");
    // Enrolled within the grace, then reset the next day: straight to enrollment.
    let ch = h.enroll(&c).await.unwrap();
    complete(&h, &c, &ch.challenge_id).await;
    h.clock.advance(24 * HOUR);
    h.reset_user(&org_admin(), ORG, "desk-regrace")
        .await
        .unwrap();
    let ch = challenge_of(h.begin(&c).await);
    assert_eq!(ch.purpose, ChallengePurpose::Enrollment);
}
