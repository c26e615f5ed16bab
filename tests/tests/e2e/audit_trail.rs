//! The audit trail through the compiled component (`core/src/audit/`: events, chain, verify;
//! `wit/audit.wit`): every action leaves exactly one record of the documented form, the whole trail
//! is one sealed hash chain per organization, no code, token, key or address ever reaches it, a sink
//! that refuses a record blocks the operation it would have recorded, and concurrent calls for one
//! organization never fork its chain.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use host_harness::backends::{FaultyAuditSink, MemoryAuditSink};
use host_harness::wit::{self, Decision, ErrorKind, Mandate, MfaError};
use mfa_step_core::audit::chain::SealKey;
use mfa_step_core::audit::verify::Verifier;
use mfa_step_core::audit::{Action, Event, Outcome};
use mfa_step_core::kernel::keys;
use mfa_step_core::kernel::ports::{
    AppendError, AuditEntry, AuditSink, GENESIS, Head, PortResult, Store,
};
use mfa_step_core::{HmacKey, Timestamp};
use serde_json::{Value, json};

const ORG: &str = "acme-health";
const OTHER: &str = "harbor-health";
const DAY: i64 = 86_400;

/// The record's keys, in the order `core/src/audit/mod.rs` documents.
const KEYS: [&str; 17] = [
    "v",
    "id",
    "seq",
    "at",
    "org",
    "actor",
    "subject",
    "action",
    "outcome",
    "reason",
    "ip",
    "user_agent",
    "device_id",
    "challenge_id",
    "prev",
    "hash",
    "seal",
];

/// Every action's name, as the trail spells it. The match is exhaustive on purpose: a new
/// `Action` does not compile here until this table (and so the coverage check) knows it.
fn documented_name(action: Action) -> &'static str {
    match action {
        Action::ChallengeStarted => "challenge_started",
        Action::AccessAllowed => "access_allowed",
        Action::AccessDenied => "access_denied",
        Action::CodeSent => "code_sent",
        Action::CodeResent => "code_resent",
        Action::CodeDeliveryFailed => "code_delivery_failed",
        Action::CodeVerified => "code_verified",
        Action::CodeRejected => "code_rejected",
        Action::CodeExpired => "code_expired",
        Action::SendThrottled => "send_throttled",
        Action::VerifyThrottled => "verify_throttled",
        Action::UserLocked => "user_locked",
        Action::DeviceTrusted => "device_trusted",
        Action::DeviceChallenged => "device_challenged",
        Action::DeviceRevoked => "device_revoked",
        Action::DeviceTokenReuse => "device_token_reuse",
        Action::PolicyChanged => "policy_changed",
        Action::MfaReset => "mfa_reset",
        Action::BrandingChanged => "branding_changed",
        Action::Enrolled => "enrolled",
        Action::EmailChanged => "email_changed",
        Action::AdminConsoleViewed => "admin_console_viewed",
        Action::RosterSynced => "roster_synced",
    }
}

/// Every action (keep in step with [`documented_name`]).
const ALL_ACTIONS: [Action; 23] = [
    Action::ChallengeStarted,
    Action::AccessAllowed,
    Action::AccessDenied,
    Action::CodeSent,
    Action::CodeResent,
    Action::CodeDeliveryFailed,
    Action::CodeVerified,
    Action::CodeRejected,
    Action::CodeExpired,
    Action::SendThrottled,
    Action::VerifyThrottled,
    Action::UserLocked,
    Action::DeviceTrusted,
    Action::DeviceChallenged,
    Action::DeviceRevoked,
    Action::DeviceTokenReuse,
    Action::PolicyChanged,
    Action::MfaReset,
    Action::BrandingChanged,
    Action::Enrolled,
    Action::EmailChanged,
    Action::AdminConsoleViewed,
    Action::RosterSynced,
];

/// Whether a field must be set, must be `null`, or depends on the case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Set,
    Null,
    Either,
}

/// What every record of one action looks like, whatever the scenario.
#[derive(Debug)]
struct Shape {
    outcome: &'static str,
    /// Set when a rule or a failure decided it.
    reason: Field,
    device_id: Field,
    challenge_id: Field,
}

fn shape(action: &str) -> Shape {
    use Field::{Either as E, Null as N, Set as S};
    let (outcome, reason, device_id, challenge_id) = match action {
        "challenge_started" => ("success", S, N, S),
        // A trusted device names itself; a policy that asks for nothing has no device.
        "access_allowed" => ("success", S, E, N),
        // At `send-code` a refusal names the challenge; at `begin` and in admin calls there is none.
        "access_denied" => ("denied", S, N, E),
        "code_sent" | "code_resent" | "code_verified" => ("success", N, N, S),
        "enrolled" | "email_changed" => ("success", S, N, S),
        "code_delivery_failed" | "code_rejected" | "code_expired" => ("failure", S, N, S),
        "send_throttled" | "verify_throttled" => ("denied", S, N, S),
        "user_locked" => ("denied", S, N, N),
        "device_trusted" | "device_revoked" => ("success", S, S, N),
        "device_challenged" | "device_token_reuse" => ("denied", S, S, N),
        "policy_changed"
        | "mfa_reset"
        | "branding_changed"
        | "admin_console_viewed"
        | "roster_synced" => ("success", S, N, N),
        other => panic!("an action the schema does not document: {other}"),
    };
    Shape {
        outcome,
        reason,
        device_id,
        challenge_id,
    }
}

/// Who a step's records must name, and where from.
#[derive(Debug, Clone)]
struct Who {
    org: String,
    actor: String,
    subject: String,
    ip: String,
    user_agent: String,
}

/// A login step: the user acts on their own MFA, from the context's network and browser.
fn user_who(c: &wit::LoginContext) -> Who {
    Who {
        org: c.org_id.clone(),
        actor: c.user_id.clone(),
        subject: c.user_id.clone(),
        ip: c.device.ip.clone(),
        user_agent: c.device.traits.user_agent.clone(),
    }
}

/// A management call: `a` acts on `subject` in `org`.
fn actor_who(a: &wit::Actor, org: &str, subject: &str) -> Who {
    Who {
        org: org.to_owned(),
        actor: a.user_id.clone(),
        subject: subject.to_owned(),
        ip: a.ip.clone(),
        user_agent: a.user_agent.clone(),
    }
}

/// An org-admin of `ORG`, on another network and browser than the users, so that a record showing
/// the user's address for an admin call (or the other way round) is caught.
fn it_admin() -> wit::Actor {
    wit::Actor {
        user_id: "it-admin".to_owned(),
        org_id: ORG.to_owned(),
        roles: vec!["org-admin".to_owned()],
        ip: "198.51.100.4".to_owned(),
        user_agent: "AdminConsole/2.1 (ops)".to_owned(),
    }
}

fn admin_of(org: &str) -> wit::Actor {
    wit::Actor {
        user_id: format!("{org}-admin"),
        org_id: org.to_owned(),
        ..it_admin()
    }
}

fn in_org(user: &str, org: &str) -> wit::LoginContext {
    let mut c = ctx(user);
    c.org_id = org.to_owned();
    c
}

fn with_cookie(c: &wit::LoginContext, cookie: &str) -> wit::LoginContext {
    let mut c = c.clone();
    c.device.cookie = Some(cookie.to_owned());
    c
}

fn policy(mandate: Mandate) -> wit::OrgPolicy {
    wit::OrgPolicy {
        mandate,
        required_roles: Vec::new(),
        trust_days: 30,
        allow_remember_device: true,
        ipv4_change_prefix: 16,
        ipv6_change_prefix: 48,
        enrollment_grace_days: 0,
        enrollment_grace_logins: 0,
    }
}

fn branding(name: &str) -> wit::Branding {
    wit::Branding {
        display_name: name.to_owned(),
        logo_url: None,
        primary_color: "#0b4f6c".to_owned(),
        accent_color: "#e6f2f7".to_owned(),
        sender_name: format!("{name} Security"),
        support_contact: "+1 555 0100".to_owned(),
        footer_text: String::new(),
        default_language: "en".to_owned(),
    }
}

/// UTC RFC 3339 with `Z`, computed here independently of the core (days-to-civil, H. Hinnant).
fn utc(t: i64) -> String {
    let (days, secs) = (t.div_euclid(DAY), t.rem_euclid(DAY));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// The keys of the line's top-level object in the order they are written (a parsed `Value` has
/// lost that order).
fn keys_in_order(line: &str) -> Vec<String> {
    let (mut keys, mut depth, mut in_string, mut escaped) = (Vec::new(), 0, false, false);
    let (mut current, mut last_string) = (String::new(), None);
    for ch in line.chars() {
        if in_string {
            match ch {
                _ if escaped => {
                    escaped = false;
                    current.push(ch);
                }
                '\\' => {
                    escaped = true;
                    current.push(ch);
                }
                '"' => {
                    in_string = false;
                    last_string = Some(std::mem::take(&mut current));
                }
                _ => current.push(ch),
            }
            continue;
        }
        match ch {
            '"' => {
                in_string = true;
                continue;
            }
            '{' | '[' => depth += 1,
            '}' | ']' => depth -= 1,
            ':' if depth == 1 => keys.extend(last_string.take()),
            c if c.is_whitespace() => continue,
            _ => {}
        }
        // Only a string followed directly by `:` is a key.
        last_string = None;
    }
    keys
}

fn is_hex(value: &Value, len: usize) -> bool {
    value.as_str().is_some_and(|s| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn check_field(r: &Value, key: &str, want: Field, what: &str) {
    match want {
        Field::Set => assert!(
            r[key].as_str().is_some_and(|s| !s.is_empty()),
            "{what}: {key} must be set: {r}"
        ),
        Field::Null => assert!(r[key].is_null(), "{what}: {key} must be null: {r}"),
        Field::Either => assert!(
            r[key].is_null() || r[key].as_str().is_some_and(|s| !s.is_empty()),
            "{what}: {key}: {r}"
        ),
    }
}

/// Checks one record against the schema and against who acted, when (`now`) and how.
fn check_record(e: &AuditEntry, now: i64, who: &Who, what: &str) -> Value {
    let what = format!("{what} ({})", e.action);
    assert_eq!(
        keys_in_order(&e.line),
        KEYS,
        "{what}: key order of {}",
        e.line
    );
    let r: Value = serde_json::from_str(&e.line).expect("one JSON object per line");
    assert_eq!(r["v"], 2, "{what}");
    assert!(is_hex(&r["id"], 32), "{what}: id {}", r["id"]);
    // The entry the sink was handed and the line it stores say the same.
    assert_eq!(
        (
            r["seq"].as_u64(),
            r["action"].as_str(),
            r["org"].as_str(),
            r["prev"].as_str(),
            r["hash"].as_str()
        ),
        (
            Some(e.seq),
            Some(e.action.as_str()),
            Some(e.org_id.as_str()),
            Some(e.prev.as_str()),
            Some(e.hash.as_str())
        ),
        "{what}: entry and line disagree"
    );
    assert!(is_hex(&r["prev"], 64) && is_hex(&r["hash"], 64), "{what}");
    assert!(
        is_hex(&r["seal"], 64),
        "{what}: every record is sealed: {r}"
    );
    assert_eq!(e.at, now, "{what}: the entry's time is the test clock");
    assert_eq!(
        r["at"],
        utc(now),
        "{what}: the record's time is the test clock, in UTC"
    );
    assert_eq!(
        (
            r["org"].as_str(),
            r["actor"].as_str(),
            r["subject"].as_str()
        ),
        (
            Some(who.org.as_str()),
            Some(who.actor.as_str()),
            Some(who.subject.as_str())
        ),
        "{what}: org, actor, subject"
    );
    let ua: String = who.user_agent.chars().take(200).collect();
    assert_eq!(
        (r["ip"].as_str(), r["user_agent"].as_str()),
        (Some(who.ip.as_str()), Some(ua.as_str())),
        "{what}: where from"
    );
    let s = shape(&e.action);
    assert!(
        ["success", "failure", "denied"].contains(&r["outcome"].as_str().unwrap_or_default()),
        "{what}: {r}"
    );
    assert_eq!(r["outcome"], s.outcome, "{what}");
    check_field(&r, "reason", s.reason, &what);
    check_field(&r, "device_id", s.device_id, &what);
    check_field(&r, "challenge_id", s.challenge_id, &what);
    for id in ["device_id", "challenge_id"] {
        assert!(
            r[id].is_null() || is_hex(&r[id], 32),
            "{what}: {id} {}",
            r[id]
        );
    }
    r
}

/// Reads the trail step by step: each step must append exactly the records it names.
struct Trail {
    seen: usize,
    covered: BTreeSet<String>,
}

impl Trail {
    fn new() -> Self {
        Self {
            seen: 0,
            covered: BTreeSet::new(),
        }
    }

    /// The records appended since the previous step, which must be exactly `want`, each checked
    /// against the schema and `who`.
    fn step(&mut self, h: &Harness, what: &str, who: &Who, want: &[&str]) -> Vec<Value> {
        let entries = h.audit.inner().entries();
        let new = &entries[self.seen..];
        let actions: Vec<&str> = new.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, want, "{what}: the records it appended");
        self.seen = entries.len();
        let now = h.clock.now();
        new.iter()
            .map(|e| {
                self.covered.insert(e.action.clone());
                check_record(e, now, who, what)
            })
            .collect()
    }
}

/// Every line of the trail, in stored order.
fn lines(h: &Harness) -> Vec<String> {
    h.audit
        .inner()
        .entries()
        .into_iter()
        .map(|e| e.line)
        .collect()
}

fn seal_key() -> SealKey {
    SealKey::derive(&HmacKey::from_hex(HMAC_KEY).unwrap())
}

/// Verifies the whole trail as `audit verify` would, with the seal key; returns the verifier.
fn verify_trail(lines: &[String], key: SealKey) -> Result<Verifier, (usize, String)> {
    let mut v = Verifier::new(Some(key));
    for (i, line) in lines.iter().enumerate() {
        v.check(line)
            .map_err(|b| (i, format!("{b} ({:?})", b.problem)))?;
    }
    Ok(v)
}

fn expect_err<T: std::fmt::Debug>(r: Result<T, MfaError>, want: ErrorKind, what: &str) -> MfaError {
    match r {
        Err(e) if e.kind == want => e,
        other => panic!("{what}: expected {want:?}, got {other:?}"),
    }
}

async fn post(h: &Harness, path: &str, body: &Value) -> HttpReply {
    h.http_full("POST", path, Some(API_KEY), body.to_string().into_bytes())
        .await
}

/// What the scenario handed out that must never reach the trail.
#[derive(Default)]
struct Handed {
    codes: Vec<String>,
    /// Whole cookie values (`<device id>.<token>`).
    cookies: Vec<String>,
}

impl Handed {
    fn code(&mut self, h: &Harness) -> String {
        let code = h.last_code();
        self.codes.push(code.clone());
        code
    }

    fn cookie(&mut self, set_cookie: &str) -> String {
        let value = cookie_value(set_cookie);
        self.cookies.push(value.clone());
        value
    }
}

/// Drives every action once or more (function exports and REST), checking each step's records.
async fn every_action(h: &Harness, t: &mut Trail) -> Handed {
    let mut handed = Handed::default();
    let admin = it_admin();
    let u = ctx("dr-audit");
    let me = actor("dr-audit", ORG, &["provider"]);
    let who = user_who(&u);

    // A role no rule covers: let through without a code, and no device to name.
    let desk = {
        let mut c = ctx("front-desk");
        c.roles = vec!["receptionist".to_owned()];
        c
    };
    assert!(matches!(h.begin(&desk).await, Ok(Decision::Allow(_))));
    let r = t.step(h, "begin, no rule", &user_who(&desk), &["access_allowed"]);
    assert_eq!(
        (r[0]["reason"].as_str(), &r[0]["device_id"]),
        (Some("policy:not-required"), &Value::Null)
    );
    // Unless the user opts in: enrolled of their own accord, MFA then applies to them.
    let desk_who = user_who(&desk);
    let ce = h.enroll(&desk).await.unwrap().challenge_id;
    let r = t.step(h, "enroll, opting in", &desk_who, &["challenge_started"]);
    assert_eq!(
        (r[0]["reason"].as_str(), r[0]["challenge_id"].as_str()),
        (Some("user:opted-in"), Some(ce.as_str()))
    );
    h.send_code(&desk, &ce).await.unwrap();
    t.step(h, "send", &desk_who, &["code_sent"]);
    let code = handed.code(h);
    h.verify(&desk, &ce, &code).await.unwrap();
    // One record per verified code: a code that confirms an address is recorded as that.
    let r = t.step(h, "verify", &desk_who, &["enrolled"]);
    assert_eq!(
        (r[0]["reason"].as_str(), r[0]["challenge_id"].as_str()),
        (Some("email-confirmed:opted-in"), Some(ce.as_str()))
    );
    h.challenge(&desk).await;
    let r = t.step(h, "begin, opted in", &desk_who, &["challenge_started"]);
    assert_eq!(r[0]["reason"], "user:opted-in");

    // A first login under a rule enrolls the address the IdP names.
    let c1 = h.challenge(&u).await;
    let r = t.step(h, "begin", &who, &["challenge_started"]);
    assert_eq!(r[0]["reason"], "role:provider");
    assert_eq!(r[0]["challenge_id"], c1.as_str());

    assert!(!h.send_code(&u, &c1).await.unwrap().resent);
    let r = t.step(h, "first send", &who, &["code_sent"]);
    assert_eq!(r[0]["challenge_id"], c1.as_str());
    let code = handed.code(h);
    for n in 2..=3 {
        assert!(h.send_code(&u, &c1).await.unwrap().resent);
        assert_eq!(h.last_code(), code);
        let r = t.step(h, &format!("send {n}"), &who, &["code_resent"]);
        assert_eq!(r[0]["challenge_id"], c1.as_str());
    }
    expect_err(h.send_code(&u, &c1).await, ErrorKind::Throttled, "send 4");
    let r = t.step(h, "send 4", &who, &["send_throttled"]);
    assert_eq!(
        (r[0]["reason"].as_str(), r[0]["challenge_id"].as_str()),
        (Some("send-window"), Some(c1.as_str()))
    );

    expect_err(
        h.verify(&u, &c1, &wrong(&code)).await,
        ErrorKind::Rejected,
        "wrong code",
    );
    let r = t.step(h, "wrong code", &who, &["code_rejected"]);
    assert_eq!(
        (r[0]["reason"].as_str(), r[0]["challenge_id"].as_str()),
        (Some("wrong-code"), Some(c1.as_str()))
    );

    let v = h.verify_remember(&u, &c1, &code).await.unwrap();
    let d1 = v.device_id.unwrap();
    let k1 = handed.cookie(&v.set_cookie.unwrap());
    let r = t.step(
        h,
        "verify, enrolling, remember",
        &who,
        &["enrolled", "device_trusted"],
    );
    assert_eq!(
        (r[0]["reason"].as_str(), r[0]["challenge_id"].as_str()),
        (Some("email-confirmed"), Some(c1.as_str()))
    );
    assert_eq!(r[1]["device_id"], d1.as_str());
    assert_eq!(
        r[1]["reason"],
        format!("trusted-until:{}", utc(T0 + 30 * DAY))
    );

    h.clock.advance(10);
    let Ok(Decision::Allow(a)) = h.begin(&with_cookie(&u, &k1)).await else {
        panic!("the trusted browser is let through")
    };
    let _k2 = handed.cookie(&a.set_cookie.unwrap());
    let r = t.step(h, "begin, trusted", &who, &["access_allowed"]);
    assert_eq!(
        (r[0]["reason"].as_str(), r[0]["device_id"].as_str()),
        (Some("device:trusted"), Some(d1.as_str()))
    );

    // The rotated-away token, past the parallel-tab grace: a replay.
    h.clock.advance(61);
    let c2 = h.challenge(&with_cookie(&u, &k1)).await;
    let r = t.step(
        h,
        "begin, replayed token",
        &who,
        &["device_token_reuse", "challenge_started"],
    );
    assert_eq!(
        (r[0]["reason"].as_str(), r[0]["device_id"].as_str()),
        (Some("rotated-token-presented"), Some(d1.as_str()))
    );
    assert_eq!(r[1]["challenge_id"], c2.as_str());

    h.clock.advance(300);
    h.send_code(&u, &c2).await.unwrap();
    t.step(h, "send", &who, &["code_sent"]);
    let code = handed.code(h);
    let v = h.verify_remember(&u, &c2, &code).await.unwrap();
    let (d2, k3) = (v.device_id.unwrap(), handed.cookie(&v.set_cookie.unwrap()));
    let r = t.step(
        h,
        "verify, remember",
        &who,
        &["code_verified", "device_trusted"],
    );
    assert_eq!(r[0]["challenge_id"], c2.as_str());
    assert_eq!(r[1]["device_id"], d2.as_str());

    // Moving MFA to a new address, right after a verified code.
    let mut u_new = u.clone();
    u_new.email = "dr-audit@new-clinic.example".to_owned();
    let cm = h.change_email(&u_new).await.unwrap().challenge_id;
    let r = t.step(h, "change email", &who, &["challenge_started"]);
    assert_eq!(
        (r[0]["reason"].as_str(), r[0]["challenge_id"].as_str()),
        (Some("email-change"), Some(cm.as_str()))
    );
    h.send_code(&u_new, &cm).await.unwrap();
    t.step(h, "send to the new address", &who, &["code_sent"]);
    assert_eq!(h.mailer.inner().last().unwrap().to, u_new.email);
    let code = handed.code(h);
    h.verify(&u_new, &cm, &code).await.unwrap();
    let r = t.step(h, "verify the new address", &who, &["email_changed"]);
    assert_eq!(
        (r[0]["reason"].as_str(), r[0]["challenge_id"].as_str()),
        (Some("email-confirmed"), Some(cm.as_str()))
    );

    // The trusted browser on another network: asked again. The record has the new address.
    let mut moved = with_cookie(&u, &k3);
    moved.device.ip = "192.0.2.55".to_owned();
    let c3 = h.challenge(&moved).await;
    let r = t.step(
        h,
        "begin, new network",
        &user_who(&moved),
        &["device_challenged", "challenge_started"],
    );
    assert_eq!(
        (r[0]["reason"].as_str(), r[0]["device_id"].as_str()),
        (Some("device:new-network"), Some(d2.as_str()))
    );
    assert_eq!(r[1]["reason"], "device:new-network");
    assert_eq!(r[1]["challenge_id"], c3.as_str());

    h.revoke(&me, &d2).await.unwrap();
    let r = t.step(
        h,
        "owner revokes",
        &actor_who(&me, ORG, "dr-audit"),
        &["device_revoked"],
    );
    assert_eq!(
        (r[0]["reason"].as_str(), r[0]["device_id"].as_str()),
        (Some("revoked-by-owner"), Some(d2.as_str()))
    );

    h.send_code(&u, &c3).await.unwrap();
    t.step(h, "send", &who, &["code_sent"]);
    let code = handed.code(h);
    let v = h.verify_remember(&u, &c3, &code).await.unwrap();
    let d3 = v.device_id.unwrap();
    handed.cookie(&v.set_cookie.unwrap());
    t.step(
        h,
        "verify, remember",
        &who,
        &["code_verified", "device_trusted"],
    );

    h.clock.advance(300);
    let c4 = h.challenge(&u).await;
    t.step(h, "begin", &who, &["challenge_started"]);
    h.send_code(&u, &c4).await.unwrap();
    t.step(h, "send", &who, &["code_sent"]);
    let code = handed.code(h);
    h.clock.advance(601);
    expect_err(
        h.verify(&u, &c4, &code).await,
        ErrorKind::Rejected,
        "verify after 601 s",
    );
    let r = t.step(h, "verify after 601 s", &who, &["code_expired"]);
    assert_eq!(
        (r[0]["reason"].as_str(), r[0]["challenge_id"].as_str()),
        (Some("expired"), Some(c4.as_str()))
    );
    let mut u_other = u.clone();
    u_other.email = "dr-audit@elsewhere.example".to_owned();
    expect_err(
        h.change_email(&u_other).await,
        ErrorKind::Forbidden,
        "stale change",
    );
    let r = t.step(h, "change email, no fresh code", &who, &["access_denied"]);
    assert_eq!(r[0]["reason"], "email-change:step-up-expired");

    assert!(
        !h.send_code(&u, &c4).await.unwrap().resent,
        "the dead code is replaced"
    );
    t.step(h, "send, new code", &who, &["code_sent"]);
    let code = handed.code(h);
    for n in 2..=5 {
        expect_err(
            h.verify(&u, &c4, &wrong(&code)).await,
            ErrorKind::Rejected,
            "wrong",
        );
        t.step(
            h,
            &format!("wrong code, failure {n}"),
            &who,
            &["code_rejected"],
        );
    }
    expect_err(
        h.verify(&u, &c4, &code).await,
        ErrorKind::Throttled,
        "too soon",
    );
    let r = t.step(h, "verify within the delay", &who, &["verify_throttled"]);
    assert_eq!(
        (r[0]["reason"].as_str(), r[0]["challenge_id"].as_str()),
        (Some("guess-delay"), Some(c4.as_str()))
    );

    // Failures 6 to 20, each on a fresh challenge and code after the delay; the 20th locks.
    let mut last = c4;
    for n in 6..=20 {
        if let Some(until) = h.status(&u).await.unwrap().verify_blocked_until {
            h.clock.set(until);
        }
        // Past the send window, and past the last moment the running challenge could be resumed
        // (a code's whole life before its end), so that `begin` opens a fresh one.
        h.clock.advance(1201);
        last = h.challenge(&u).await;
        t.step(h, "begin", &who, &["challenge_started"]);
        h.send_code(&u, &last).await.unwrap();
        t.step(h, "send", &who, &["code_sent"]);
        let code = handed.code(h);
        expect_err(
            h.verify(&u, &last, &wrong(&code)).await,
            ErrorKind::Rejected,
            "wrong",
        );
        if n < 20 {
            t.step(h, &format!("failure {n}"), &who, &["code_rejected"]);
        } else {
            let r = t.step(h, "failure 20", &who, &["code_rejected", "user_locked"]);
            assert_eq!(r[1]["reason"], "consecutive-failures");
        }
    }

    let Ok(Decision::Deny(_)) = h.begin(&u).await else {
        panic!("a locked user is denied")
    };
    let r = t.step(h, "begin, locked", &who, &["access_denied"]);
    assert_eq!(
        (r[0]["reason"].as_str(), &r[0]["challenge_id"]),
        (Some("user:locked"), &Value::Null)
    );
    expect_err(
        h.send_code(&u, &last).await,
        ErrorKind::Locked,
        "send, locked",
    );
    let r = t.step(h, "send, locked", &who, &["access_denied"]);
    assert_eq!(
        (r[0]["reason"].as_str(), r[0]["challenge_id"].as_str()),
        (Some("user:locked"), Some(last.as_str()))
    );
    expect_err(
        h.verify(&u, &last, "123456").await,
        ErrorKind::Locked,
        "verify, locked",
    );
    let r = t.step(h, "verify, locked", &who, &["code_rejected"]);
    assert_eq!(r[0]["reason"], "user:locked");

    // Admin calls: the admin acts (from the admin's network), the user is the subject.
    h.reset_user(&admin, ORG, "dr-audit").await.unwrap();
    let r = t.step(
        h,
        "admin reset",
        &actor_who(&admin, ORG, "dr-audit"),
        &["device_revoked", "mfa_reset"],
    );
    assert_eq!(
        (r[0]["reason"].as_str(), r[0]["device_id"].as_str()),
        (Some("mfa-reset"), Some(d3.as_str()))
    );
    assert_eq!(r[1]["reason"], "admin-reset");
    assert!(!h.status(&u).await.unwrap().locked);
    t.step(h, "status", &who, &[]);

    // Allowed reads change nothing and have no action: no record.
    h.get_policy(&admin, ORG).await.unwrap();
    h.get_branding(&admin, ORG).await.unwrap();
    t.step(h, "admin reads", &actor_who(&admin, ORG, ORG), &[]);

    // Organization-wide changes are about the organization.
    h.set_policy(&admin, ORG, &policy(Mandate::Everyone))
        .await
        .unwrap();
    let r = t.step(
        h,
        "set policy",
        &actor_who(&admin, ORG, ORG),
        &["policy_changed"],
    );
    let reason = r[0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("policy:{") && reason.contains("everyone"),
        "{reason}"
    );
    let root = wit::Actor {
        user_id: "root".to_owned(),
        org_id: "platform".to_owned(),
        roles: vec!["platform-admin".to_owned()],
        ..it_admin()
    };
    let roles: Vec<String> = [
        "platform-admin",
        "org-admin",
        "admin",
        "provider",
        "clinician",
        "coach-with-patients",
    ]
    .map(str::to_owned)
    .to_vec();
    h.set_platform_roles(&root, &roles).await.unwrap();
    let r = t.step(
        h,
        "set platform roles",
        &actor_who(&root, "platform", "root"),
        &["policy_changed"],
    );
    assert_eq!(
        r[0]["reason"],
        format!("platform:required-roles:{}", roles.join(","))
    );
    h.set_branding(&admin, ORG, &branding("Acme Health"))
        .await
        .unwrap();
    let r = t.step(
        h,
        "set branding",
        &actor_who(&admin, ORG, ORG),
        &["branding_changed"],
    );
    assert_eq!(r[0]["reason"], "branding");

    // The admin console: asking for a link and opening it record nothing; a view is recorded, from
    // the admin's browser (its address and user agent, as the pages see them).
    let body = serde_json::json!({
        "actor": {
            "user_id": admin.user_id, "org_id": admin.org_id, "roles": admin.roles,
            "ip": admin.ip, "user_agent": admin.user_agent
        },
        "org_id": ORG,
    });
    let (status, link) = h
        .http(
            "POST",
            "/v1/admin/console-link",
            Some(API_KEY),
            &body.to_string(),
        )
        .await;
    assert_eq!(status, 200, "{link}");
    let browser = |cookie: String| {
        vec![
            ("x-mfa-client-ip", admin.ip.clone()),
            ("user-agent", admin.user_agent.clone()),
            ("cookie", cookie),
        ]
    };
    let opened = h
        .http_with(
            "GET",
            link["url"].as_str().unwrap(),
            &browser(String::new()),
            Vec::new(),
        )
        .await;
    assert_eq!(opened.status, 200);
    let cookie = opened.header("set-cookie")[0]
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    t.step(h, "open the console", &actor_who(&admin, ORG, ORG), &[]);
    let page = h
        .http_with("GET", "/admin/console/health", &browser(cookie), Vec::new())
        .await;
    assert_eq!(page.status, 200);
    let r = t.step(
        h,
        "view the console",
        &actor_who(&admin, ORG, ORG),
        &["admin_console_viewed"],
    );
    assert_eq!(r[0]["reason"], "console:health:days=14");

    // The identity provider tells mfa-step its roster: one record per call, with the counts.
    let roster = serde_json::json!({
        "actor": {
            "user_id": admin.user_id, "org_id": admin.org_id, "roles": admin.roles,
            "ip": admin.ip, "user_agent": admin.user_agent
        },
        "org_id": ORG,
        "add": [{"user_id": "dr-roster", "roles": ["clinician"]}, {"user_id": "dr-new"}],
        "remove": ["dr-gone"],
    });
    let (status, synced) = h
        .http(
            "POST",
            "/v1/admin/sync-roster",
            Some(API_KEY),
            &roster.to_string(),
        )
        .await;
    assert_eq!(status, 200, "{synced}");
    assert_eq!(synced, serde_json::json!({"added": 2, "removed": 0}));
    let r = t.step(
        h,
        "sync the roster",
        &actor_who(&admin, ORG, ORG),
        &["roster_synced"],
    );
    assert_eq!(r[0]["reason"], "roster:added=2:removed=0");

    expect_err(
        h.set_policy(&me, ORG, &policy(Mandate::Inherit)).await,
        ErrorKind::Forbidden,
        "non-admin",
    );
    let r = t.step(
        h,
        "non-admin sets policy",
        &actor_who(&me, ORG, ORG),
        &["access_denied"],
    );
    assert_eq!(
        r[0]["reason"],
        "set-policy:not-authorized:target-org:acme-health"
    );

    // Over REST: an IPv6 client with a long, non-ASCII user agent (cut to 200 characters) that
    // tries to look like the chain's own fields.
    let ua = format!(
        r#"Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0 "q" ,"hash":"0","seal":null}} \ é{}"#,
        "ü".repeat(170)
    );
    let rest = {
        let mut c = ctx("dr-rest");
        c.device.ip = "2001:db8:0:1::7".to_owned();
        c.device.traits.user_agent = ua.clone();
        c.device.traits.browser_family = Some("Firefox".to_owned());
        c.device.traits.platform = Some("Linux".to_owned());
        c
    };
    let rest_who = user_who(&rest);
    let context = json!({
        "user_id": "dr-rest", "org_id": ORG, "email": "dr-rest@clinic.example", "roles": ["provider"],
        "device": { "ip": rest.device.ip, "traits": {
            "user_agent": ua, "browser_family": "Firefox", "platform": "Linux" } }
    });
    let begun = post(h, "/v1/login/begin", &json!({ "context": context })).await;
    assert_eq!(begun.status, 200, "{:?}", begun.json);
    let c5 = begun.json["challenge_id"].as_str().unwrap().to_owned();
    let r = t.step(h, "REST begin", &rest_who, &["challenge_started"]);
    assert_eq!(r[0]["reason"], "org:acme-health:mandate");
    assert_eq!(r[0]["user_agent"].as_str().unwrap().chars().count(), 200);

    h.faults.fail_mail(true);
    let send = json!({ "context": context, "challenge_id": c5 });
    let reply = post(h, "/v1/login/send-code", &send).await;
    h.faults.clear();
    assert_eq!((reply.status, reply.kind()), (503, Some("unavailable")));
    // Documented order: the code's record is written before the mailer is asked, and the refusal
    // is recorded on top of it.
    let r = t.step(
        h,
        "REST send, mailer down",
        &rest_who,
        &["code_sent", "code_delivery_failed"],
    );
    assert_eq!(
        (r[1]["reason"].as_str(), r[1]["challenge_id"].as_str()),
        (Some("mailer-refused"), Some(c5.as_str()))
    );

    let reply = post(h, "/v1/login/send-code", &send).await;
    assert_eq!((reply.status, &reply.json["resent"]), (200, &json!(true)));
    t.step(h, "REST send again", &rest_who, &["code_resent"]);
    let code = handed.code(h);
    let body =
        json!({ "context": context, "challenge_id": c5, "code": code, "remember_device": true });
    let reply = post(h, "/v1/login/verify", &body).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    let d5 = reply.json["device_id"].as_str().unwrap().to_owned();
    handed.cookie(reply.json["set_cookie"].as_str().unwrap());
    t.step(h, "REST verify", &rest_who, &["enrolled", "device_trusted"]);

    let owner = json!({ "actor": { "user_id": "dr-rest", "org_id": ORG, "roles": ["provider"],
                                    "ip": "2001:db8:0:1::7", "user_agent": "curl/8.5" } });
    let reply = post(h, "/v1/devices/revoke-all", &owner).await;
    assert_eq!((reply.status, &reply.json["revoked"]), (200, &json!(1)));
    let owner_who = Who {
        ip: "2001:db8:0:1::7".to_owned(),
        user_agent: "curl/8.5".to_owned(),
        ..rest_who
    };
    let r = t.step(h, "REST revoke-all", &owner_who, &["device_revoked"]);
    assert_eq!(
        (r[0]["reason"].as_str(), r[0]["device_id"].as_str()),
        (Some("revoked-all-by-owner"), Some(d5.as_str()))
    );

    handed
}

#[tokio::test]
async fn every_action_leaves_exactly_one_record_of_the_documented_form() {
    assert_eq!(utc(T0), "2026-11-18T11:06:40Z", "the independent formatter");
    assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
    for action in ALL_ACTIONS {
        assert_eq!(action.as_str(), documented_name(action));
    }

    let h = Harness::new();
    let mut t = Trail::new();
    every_action(&h, &mut t).await;

    let all: BTreeSet<String> = ALL_ACTIONS.iter().map(|a| a.as_str().to_owned()).collect();
    let missing: Vec<_> = all.difference(&t.covered).collect();
    assert!(
        missing.is_empty(),
        "actions the scenario never produced: {missing:?}"
    );

    let entries = h.audit.inner().entries();
    assert_eq!(t.seen, entries.len(), "every record belongs to a step");
    let ids: BTreeSet<String> = h
        .audit_records()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), entries.len(), "every event has its own id");
    verify_trail(&lines(&h), seal_key()).expect("the trail is one sealed chain");
}

/// An audit line with its hex identifier fields blanked: a six-digit code could turn up inside a
/// random hex string by chance, never elsewhere.
fn without_hex_fields(line: &str) -> String {
    let mut r: Value = serde_json::from_str(line).unwrap();
    for (key, len) in [
        ("id", 32),
        ("device_id", 32),
        ("challenge_id", 32),
        ("prev", 64),
        ("hash", 64),
        ("seal", 64),
    ] {
        assert!(
            r[key].is_null() || is_hex(&r[key], len),
            "{key} is plain hex: {line}"
        );
        r[key] = Value::Null;
    }
    r.to_string()
}

#[tokio::test]
async fn no_code_token_key_or_address_reaches_the_trail() {
    let h = Harness::new();
    let mut t = Trail::new();
    let handed = every_action(&h, &mut t).await;

    let mails = h.mailer.inner().messages();
    let mut codes: BTreeSet<String> = handed.codes.into_iter().collect();
    codes.extend(mails.iter().filter_map(|m| code_in(&m.text)));
    assert!(
        codes.len() >= 20,
        "the scenario mailed many codes: {}",
        codes.len()
    );
    let addresses: BTreeSet<String> = mails.iter().map(|m| m.to.clone()).collect();
    assert!(
        addresses.contains("dr-audit@clinic.example"),
        "{addresses:?}"
    );

    let mut long_secrets = vec![HMAC_KEY.to_owned(), API_KEY.to_owned()];
    for cookie in &handed.cookies {
        let (_, token) = cookie.split_once('.').unwrap();
        assert_eq!(token.len(), 64);
        long_secrets.push(token.to_owned());
        long_secrets.push(cookie.clone());
    }
    assert!(handed.cookies.len() >= 5, "{}", handed.cookies.len());

    let lines = lines(&h);
    assert!(lines.len() > 80, "{} lines", lines.len());
    for line in &lines {
        let lower = line.to_lowercase();
        for secret in &long_secrets {
            assert!(
                !lower.contains(&secret.to_lowercase()),
                "a secret in {line}"
            );
        }
        let plain = without_hex_fields(line);
        for code in &codes {
            assert!(!plain.contains(code.as_str()), "code {code} in {line}");
        }
        assert!(!line.contains('@'), "an email address in {line}");
        for address in &addresses {
            assert!(!lower.contains(address.as_str()));
        }
    }
}

/// One round of a user's life in `org`, varied by `round`: logins with codes over both interfaces,
/// wrong guesses, a trusted device, admin changes, and records the sink refuses.
async fn mixed_round(h: &Harness, org: &str, round: usize, cookies: &mut BTreeMap<String, String>) {
    let user = format!("dr-{}", round % 3);
    let c = in_org(&user, org);
    match round % 4 {
        0 => {
            let id = h.challenge(&c).await;
            h.send_code(&c, &id).await.unwrap();
            let code = h.last_code();
            let _ = h.verify(&c, &id, &wrong(&code)).await;
            let v = h.verify_remember(&c, &id, &code).await.unwrap();
            cookies.insert(
                format!("{org}/{user}"),
                cookie_value(&v.set_cookie.unwrap()),
            );
        }
        1 => {
            // Over REST, with the sink refusing one record on the way.
            let context = json!({ "user_id": user, "org_id": org, "email": format!("{user}@{org}.example"),
                                  "roles": ["provider"], "device": { "ip": "203.0.113.7" } });
            h.faults.fail_audit(true);
            let refused = post(h, "/v1/login/begin", &json!({ "context": context })).await;
            h.faults.clear();
            assert_eq!(refused.kind(), Some("unavailable"));
            let begun = post(h, "/v1/login/begin", &json!({ "context": context })).await;
            let id = begun.json["challenge_id"].as_str().unwrap().to_owned();
            let reply = post(
                h,
                "/v1/login/send-code",
                &json!({ "context": context, "challenge_id": id }),
            )
            .await;
            assert_eq!(reply.status, 200, "{:?}", reply.json);
            let body = json!({ "context": context, "challenge_id": id, "code": h.last_code() });
            assert_eq!(post(h, "/v1/login/verify", &body).await.status, 200);
        }
        2 => {
            let admin = admin_of(org);
            h.set_policy(&admin, org, &policy(Mandate::Everyone))
                .await
                .unwrap();
            h.set_branding(&admin, org, &branding(org)).await.unwrap();
            // Someone else's admin is refused, in their own stream.
            let _ = h
                .set_policy(
                    &admin_of(if org == ORG { OTHER } else { ORG }),
                    org,
                    &policy(Mandate::Inherit),
                )
                .await;
            if let Some(cookie) = cookies.get(&format!("{org}/dr-0")) {
                let _ = h
                    .begin(&with_cookie(&in_org("dr-0", org), cookie))
                    .await
                    .unwrap();
            }
        }
        _ => {
            let id = h.challenge(&c).await;
            h.faults.fail_mail(true);
            let _ = h.send_code(&c, &id).await;
            h.faults.clear();
            h.send_code(&c, &id).await.unwrap();
            h.clock.advance(601);
            let _ = h.verify(&c, &id, &h.last_code()).await;
            h.reset_user(&admin_of(org), org, &user).await.unwrap();
        }
    }
}

#[tokio::test]
async fn the_whole_trail_is_one_sealed_chain_per_organization() {
    let h = Harness::new();
    let mut cookies = BTreeMap::new();
    for round in 0..8 {
        for org in [ORG, OTHER] {
            mixed_round(&h, org, round, &mut cookies).await;
        }
        h.clock.advance(700);
    }
    let entries = h.audit.inner().entries();
    let lines = lines(&h);

    let v = verify_trail(&lines, seal_key()).unwrap_or_else(|(i, b)| panic!("line {i}: {b}"));
    assert_eq!(v.records(), lines.len() as u64);

    // The same, spelled out: per organization seq 1..=n, each record linking to the one before.
    let mut heads: BTreeMap<&str, (u64, &str)> = BTreeMap::new();
    for e in &entries {
        let (seq, prev) = heads
            .get(e.org_id.as_str())
            .copied()
            .unwrap_or((0, GENESIS));
        assert_eq!((e.seq, e.prev.as_str()), (seq + 1, prev), "{}", e.line);
        heads.insert(&e.org_id, (e.seq, &e.hash));
    }
    assert_eq!(heads.keys().copied().collect::<Vec<_>>(), [ORG, OTHER]);
    let orgs_in_order: Vec<&str> = entries.iter().map(|e| e.org_id.as_str()).collect();
    assert!(
        orgs_in_order.windows(2).filter(|w| w[0] != w[1]).count() > 10,
        "the two streams are interleaved in the log"
    );
    // The store's count of each stream is the anchor against truncation; it matches the log.
    let mut counted = BTreeMap::new();
    for (org, (last, _)) in &heads {
        assert!(*last >= 30, "{org}: {last} records");
        let count = h.tracked.counter(&keys::audit_count(org));
        assert_eq!(u64::try_from(count).unwrap(), *last, "{org}: stored count");
        counted.insert((*org).to_owned(), *last);
    }
    assert_eq!(v.finish(&counted), Ok(()));

    // The checks bite: another key, a deleted record, an edited one.
    let other_key = SealKey::derive(&HmacKey::from_bytes(&[9u8; 32]).unwrap());
    let (at, b) = verify_trail(&lines, other_key).unwrap_err();
    assert_eq!(at, 0, "{b}");
    assert!(b.contains("SealMismatch"), "{b}");
    let middle = entries
        .iter()
        .position(|e| e.org_id == OTHER && e.seq == 5)
        .unwrap();
    let mut deleted = lines.clone();
    deleted.remove(middle);
    let (at, b) = verify_trail(&deleted, seal_key()).unwrap_err();
    assert!(at >= middle && b.contains("Gap"), "{at} {b}");
    let mut edited = lines.clone();
    edited[middle] = edited[middle].replacen("\"ip\":\"203.0.113.7\"", "\"ip\":\"203.0.113.8\"", 1);
    assert_ne!(edited[middle], lines[middle]);
    let (at, b) = verify_trail(&edited, seal_key()).unwrap_err();
    assert_eq!(at, middle);
    assert!(b.contains("HashMismatch"), "{b}");
}

// --- A sink that refuses records --------------------------------------------------------------
//
// tests/tests/fail_closed.rs already shows, over the function exports, that under a failing sink
// `begin` opens no challenge (and keeps a running one), `send-code` mails nothing, and a correct
// `verify` is `unavailable`, consumes nothing and then works exactly once. The tests below cover
// what it does not: remembering a browser, a trusted-device login, policy and branding changes,
// the REST answers, and revocations and resets.

/// Refuses (as `unavailable`) the records of the named actions, passing every other call through.
struct RefuseActions {
    inner: Arc<FaultyAuditSink<MemoryAuditSink>>,
    actions: std::sync::Mutex<Vec<&'static str>>,
}

impl RefuseActions {
    /// Installs the sink in `h`, refusing `actions`.
    fn install(h: &mut Harness, actions: &[&'static str]) -> Arc<Self> {
        let sink = Arc::new(Self {
            inner: h.audit.clone(),
            actions: std::sync::Mutex::new(actions.to_vec()),
        });
        h.backends.audit = sink.clone();
        sink
    }

    fn refuse(&self, actions: &[&'static str]) {
        *self.actions.lock().unwrap() = actions.to_vec();
    }
}

impl host_harness::backends::HostAuditSink for RefuseActions {}

impl AuditSink for RefuseActions {
    fn head(&self, org: &str) -> PortResult<Option<Head>> {
        self.inner.head(org)
    }
    fn append(&self, entry: &AuditEntry) -> Result<(), AppendError> {
        if self
            .actions
            .lock()
            .unwrap()
            .contains(&entry.action.as_str())
        {
            return Err(AppendError::Unavailable(format!(
                "refusing {}",
                entry.action
            )));
        }
        self.inner.append(entry)
    }
}

fn count(h: &Harness, action: &str) -> usize {
    h.actions().iter().filter(|a| *a == action).count()
}

/// The user's stored devices, read behind the faults.
fn stored_devices(h: &Harness, org: &str, user: &str) -> Vec<String> {
    h.tracked.list_keys(&keys::devices_of(org, user)).unwrap()
}

#[tokio::test]
async fn remembering_a_browser_under_a_failing_sink_leaves_no_trusted_device() {
    let h = Harness::plugin();
    let c = ctx("dr-remember");
    let me = actor("dr-remember", ORG, &["provider"]);
    let id = h.challenge(&c).await;
    h.send_code(&c, &id).await.unwrap();
    let code = h.last_code();

    h.faults.fail_audit(true);
    expect_err(
        h.verify_remember(&c, &id, &code).await,
        ErrorKind::Unavailable,
        "verify, remember",
    );
    h.faults.clear();
    assert!(h.devices(&me).await.unwrap().is_empty());
    assert!(stored_devices(&h, ORG, "dr-remember").is_empty());
    assert_eq!(h.actions(), ["challenge_started", "code_sent"]);
    // The same code then signs in and remembers the browser, once.
    let v = h.verify_remember(&c, &id, &code).await.unwrap();
    assert_eq!(h.devices(&me).await.unwrap().len(), 1);
    assert_eq!(
        v.device_id.as_deref(),
        Some(h.devices(&me).await.unwrap()[0].device_id.as_str())
    );
    expect_err(
        h.verify_remember(&c, &id, &code).await,
        ErrorKind::Rejected,
        "again",
    );

    // Only the device's record refused: the login stands (documented), the browser is not remembered.
    let mut h = Harness::plugin();
    RefuseActions::install(&mut h, &["device_trusted"]);
    let id = h.challenge(&c).await;
    h.send_code(&c, &id).await.unwrap();
    let v = h.verify_remember(&c, &id, &h.last_code()).await.unwrap();
    assert_eq!(v.amr, ["otp", "mfa"]);
    assert_eq!((v.device_id, v.set_cookie), (None, None));
    assert!(h.devices(&me).await.unwrap().is_empty());
    assert!(
        stored_devices(&h, ORG, "dr-remember").is_empty(),
        "no unrecorded device"
    );
    assert_eq!(h.actions(), ["challenge_started", "code_sent", "enrolled"]);
}

/// `login-step.wit`: if the audit sink fails, `unavailable`, and nothing takes effect. A verify
/// whose `enrolled` record is refused gives the code back (the user enters it again) and leaves
/// no record of its own: one verified code, one record.
#[tokio::test]
async fn a_verify_whose_enrollment_is_refused_leaves_no_record_of_it() {
    let mut h = Harness::plugin();
    let sink = RefuseActions::install(&mut h, &["enrolled"]);
    let c = ctx("dr-enroll");
    let id = h.challenge(&c).await;
    h.send_code(&c, &id).await.unwrap();
    let code = h.last_code();
    expect_err(
        h.verify(&c, &id, &code).await,
        ErrorKind::Unavailable,
        "verify",
    );
    sink.refuse(&[]);
    assert!(!h.status(&c).await.unwrap().enrolled);
    h.verify(&c, &id, &code)
        .await
        .expect("the code was given back");
    assert!(h.status(&c).await.unwrap().enrolled);
    assert_eq!(
        h.actions(),
        ["challenge_started", "code_sent", "enrolled"],
        "one verified code, one record"
    );
}

#[tokio::test]
async fn a_trusted_login_under_a_failing_sink_keeps_the_cookie_working() {
    let h = Harness::plugin();
    let c = ctx("dr-rotate");
    let id = h.challenge(&c).await;
    h.send_code(&c, &id).await.unwrap();
    let v = h.verify_remember(&c, &id, &h.last_code()).await.unwrap();
    let cookie = cookie_value(&v.set_cookie.unwrap());

    h.clock.advance(10);
    h.faults.fail_audit(true);
    expect_err(
        h.begin(&with_cookie(&c, &cookie)).await,
        ErrorKind::Unavailable,
        "trusted begin",
    );
    h.faults.clear();
    // Well past the parallel-tab grace: had the rotation stood, this cookie would now be a replay.
    h.clock.advance(120);
    let Ok(Decision::Allow(a)) = h.begin(&with_cookie(&c, &cookie)).await else {
        panic!("the browser's cookie still works after the refused login")
    };
    assert_eq!(a.device_id, v.device_id);
    assert_eq!(count(&h, "device_token_reuse"), 0);
    assert_eq!(
        count(&h, "access_allowed"),
        1,
        "only the login that succeeded"
    );
    let rotated = cookie_value(&a.set_cookie.unwrap());
    h.clock.advance(120);
    assert!(matches!(
        h.begin(&with_cookie(&c, &rotated)).await,
        Ok(Decision::Allow(_))
    ));
}

#[tokio::test]
async fn policy_and_branding_changes_under_a_failing_sink_do_not_take_effect() {
    let h = Harness::new();
    let admin = it_admin();
    let policy_before = format!("{:?}", h.get_policy(&admin, ORG).await.unwrap());
    let branding_before = format!("{:?}", h.get_branding(&admin, ORG).await.unwrap());

    h.faults.fail_audit(true);
    expect_err(
        h.set_policy(&admin, ORG, &policy(Mandate::Everyone)).await,
        ErrorKind::Unavailable,
        "set policy",
    );
    expect_err(
        h.set_branding(&admin, ORG, &branding("Sunrise Clinic"))
            .await,
        ErrorKind::Unavailable,
        "set branding",
    );
    let admin_json = json!({ "user_id": "it-admin", "org_id": ORG, "roles": ["org-admin"] });
    let reply = post(
        &h,
        "/v1/admin/policy/set",
        &json!({ "actor": admin_json, "org_id": ORG, "policy": {
        "mandate": "everyone", "trust_days": 30, "allow_remember_device": true,
        "ipv4_change_prefix": 16, "ipv6_change_prefix": 48 } }),
    )
    .await;
    assert_eq!(
        (reply.status, reply.kind()),
        (503, Some("unavailable")),
        "{:?}",
        reply.json
    );
    let reply = post(
        &h,
        "/v1/admin/branding/set",
        &json!({ "actor": admin_json, "org_id": ORG, "branding": {
        "display_name": "Sunrise Clinic", "primary_color": "#b3461d", "accent_color": "#fdf1e7",
        "sender_name": "Sunrise Clinic", "support_contact": "+1 555 0100", "footer_text": "",
        "default_language": "en" } }),
    )
    .await;
    assert_eq!(
        (reply.status, reply.kind()),
        (503, Some("unavailable")),
        "{:?}",
        reply.json
    );
    h.faults.clear();

    assert_eq!(
        format!("{:?}", h.get_policy(&admin, ORG).await.unwrap()),
        policy_before
    );
    assert_eq!(
        format!("{:?}", h.get_branding(&admin, ORG).await.unwrap()),
        branding_before
    );
    assert_eq!(h.tracked.get(&keys::policy(ORG)).unwrap(), None);
    assert_eq!(h.tracked.get(&keys::branding(ORG)).unwrap(), None);
    assert_eq!(
        (count(&h, "policy_changed"), count(&h, "branding_changed")),
        (0, 0)
    );
    // And the organization behaves as before: no mandate, the neutral email.
    let mut desk = ctx("front-desk");
    desk.roles = vec!["receptionist".to_owned()];
    assert!(
        matches!(h.begin(&desk).await, Ok(Decision::Allow(_))),
        "no mandate took effect"
    );
    let c = ctx("dr-brand");
    let id = h.challenge(&c).await;
    h.send_code(&c, &id).await.unwrap();
    let mail = h.mailer.inner().last().unwrap();
    assert!(
        !format!("{:?} {}", mail.sender_name, mail.text).contains("Sunrise"),
        "{:?}",
        mail.sender_name
    );
}

#[tokio::test]
async fn over_rest_a_failing_sink_is_unavailable_and_begin_and_verify_take_nothing() {
    let h = Harness::new();
    let context = json!({ "user_id": "dr-rest", "org_id": ORG, "email": "dr-rest@clinic.example",
                          "roles": ["provider"], "device": { "ip": "203.0.113.7" } });
    h.faults.fail_audit(true);
    let reply = post(&h, "/v1/login/begin", &json!({ "context": context })).await;
    h.faults.clear();
    assert_eq!((reply.status, reply.kind()), (503, Some("unavailable")));
    let status = post(&h, "/v1/login/status", &json!({ "context": context })).await;
    assert_eq!(
        status.json["active_challenge"],
        Value::Null,
        "{:?}",
        status.json
    );

    // The enrollment code, then (enrolled) a login code: each refused once, then good once.
    for round in ["enrollment", "login"] {
        let begun = post(&h, "/v1/login/begin", &json!({ "context": context })).await;
        assert_eq!(begun.json["purpose"], round, "{:?}", begun.json);
        let id = begun.json["challenge_id"].as_str().unwrap().to_owned();
        let sent = post(
            &h,
            "/v1/login/send-code",
            &json!({ "context": context, "challenge_id": id }),
        )
        .await;
        assert_eq!(sent.status, 200);
        let body = json!({ "context": context, "challenge_id": id, "code": h.last_code() });
        h.faults.fail_audit(true);
        let reply = post(&h, "/v1/login/verify", &body).await;
        h.faults.clear();
        assert_eq!(
            (reply.status, reply.kind()),
            (503, Some("unavailable")),
            "{round}"
        );
        assert_eq!(
            post(&h, "/v1/login/verify", &body).await.status,
            200,
            "{round}: the same code, once"
        );
        let again = post(&h, "/v1/login/verify", &body).await;
        assert_eq!(
            (again.status, again.kind()),
            (403, Some("rejected")),
            "{round}"
        );
        h.clock.advance(300);
    }
    assert_eq!(
        h.actions(),
        [
            "challenge_started",
            "code_sent",
            "enrolled",
            "code_rejected",
            "challenge_started",
            "code_sent",
            "code_verified",
            "code_rejected"
        ]
    );
    // A refused record leaves no hole in the chain.
    verify_trail(&lines(&h), seal_key()).unwrap();
}

/// `types.wit`: `unavailable` means nothing took effect and the call is safe to retry. A send whose
/// record was refused must not leave a stored code or a used-up send behind.
#[tokio::test]
async fn a_send_refused_by_the_sink_leaves_no_code_and_no_used_send_behind() {
    let h = Harness::plugin();
    let c = ctx("dr-send");
    let id = h.challenge(&c).await;
    let before = h.status(&c).await.unwrap();
    h.faults.fail_audit(true);
    expect_err(h.send_code(&c, &id).await, ErrorKind::Unavailable, "send");
    h.faults.clear();
    let after = h.status(&c).await.unwrap();
    assert_eq!(
        (after.sends_left, after.code_expires_at),
        (before.sends_left, before.code_expires_at),
        "the refused send changed the user's state"
    );
    let sent = h.send_code(&c, &id).await.unwrap();
    assert!(
        !sent.resent,
        "the first code to reach the user is a first send"
    );
    assert_eq!(
        h.actions(),
        ["challenge_started", "code_sent"],
        "no resend of a code never sent"
    );
}

/// Signs `c` in with an emailed code, remembering the browser: its device id and cookie.
async fn trusted_device(h: &Harness, c: &wit::LoginContext) -> (String, String) {
    let id = h.challenge(c).await;
    h.send_code(c, &id).await.unwrap();
    let v = h.verify_remember(c, &id, &h.last_code()).await.unwrap();
    (v.device_id.unwrap(), cookie_value(&v.set_cookie.unwrap()))
}

/// `devices.wit`: every revocation writes its `device_revoked` record before it reports success;
/// with the sink refusing, the revocation must not happen unrecorded, and the owner's retry works.
#[tokio::test]
async fn revocations_refused_by_the_sink_revoke_nothing() {
    let mut broken = Vec::new();
    for how in ["revoke", "revoke-all", "credential-changed", "reset-user"] {
        let h = Harness::plugin();
        let c = ctx("dr-revoke");
        let me = actor("dr-revoke", ORG, &["provider"]);
        let (device, _) = trusted_device(&h, &c).await;

        h.faults.fail_audit(true);
        let r = match how {
            "revoke" => h.revoke(&me, &device).await,
            "revoke-all" => h.revoke_all(&me).await.map(drop),
            "credential-changed" => h
                .credential_changed(
                    &it_admin(),
                    ORG,
                    "dr-revoke",
                    wit::CredentialChange::PasswordChanged,
                )
                .await
                .map(drop),
            _ => h.reset_user(&it_admin(), ORG, "dr-revoke").await,
        };
        h.faults.clear();
        expect_err(r, ErrorKind::Unavailable, how);
        if stored_devices(&h, ORG, "dr-revoke").len() != 1 {
            broken.push(format!("{how}: the device was revoked without its record"));
        }
        if let Err(e) = h.revoke(&me, &device).await {
            broken.push(format!("{how}: the owner's retry is refused: {:?}", e.kind));
        } else if count(&h, "device_revoked") != 1 {
            broken.push(format!("{how}: {:?}", h.actions()));
        }
    }
    assert!(broken.is_empty(), "{broken:#?}");
}

/// A replayed (rotated-away) token revokes its device and is recorded as `device_token_reuse`. With
/// the sink refusing that record, the revocation must not happen silently: once the sink is back,
/// the same replay is caught again and this time recorded (a possible stolen cookie leaves a trace).
#[tokio::test]
async fn a_token_replay_refused_by_the_sink_is_caught_and_recorded_later() {
    let h = Harness::plugin();
    let c = ctx("dr-replay");
    let (_, first) = trusted_device(&h, &c).await;
    h.clock.advance(10);
    let Ok(Decision::Allow(_)) = h.begin(&with_cookie(&c, &first)).await else {
        panic!("the trusted browser is let through, its token rotated")
    };
    h.clock.advance(120);
    h.faults.fail_audit(true);
    expect_err(
        h.begin(&with_cookie(&c, &first)).await,
        ErrorKind::Unavailable,
        "begin with the replayed token",
    );
    h.faults.clear();
    assert_eq!(
        stored_devices(&h, ORG, "dr-replay").len(),
        1,
        "the device was revoked without its record"
    );
    h.begin(&with_cookie(&c, &first)).await.unwrap();
    assert_eq!(count(&h, "device_token_reuse"), 1, "the replay is recorded");
    assert!(stored_devices(&h, ORG, "dr-replay").is_empty());
}

/// `admin.wit` / `types.wit`: a reset whose `mfa_reset` record is refused is `unavailable` and
/// changes nothing: the failures, the open challenge and the confirmed address stay.
#[tokio::test]
async fn a_reset_refused_by_the_sink_leaves_the_user_as_they_were() {
    let h = Harness::plugin();
    let c = ctx("dr-reset");
    let id = h.challenge(&c).await;
    h.send_code(&c, &id).await.unwrap();
    h.verify(&c, &id, &h.last_code()).await.unwrap();
    h.clock.advance(300);
    let id = h.challenge(&c).await;
    h.send_code(&c, &id).await.unwrap();
    let code = h.last_code();
    for _ in 0..3 {
        let _ = h.verify(&c, &id, &wrong(&code)).await;
    }
    let before = h.status(&c).await.unwrap();
    assert_eq!(before.consecutive_failures, 3);
    h.faults.fail_audit(true);
    expect_err(
        h.reset_user(&it_admin(), ORG, "dr-reset").await,
        ErrorKind::Unavailable,
        "reset",
    );
    h.faults.clear();
    let after = h.status(&c).await.unwrap();
    assert_eq!(
        (
            after.consecutive_failures,
            after.active_challenge.as_deref(),
            after.enrolled
        ),
        (3, Some(id.as_str()), true),
        "an unrecorded reset took effect"
    );
    assert_eq!(count(&h, "mfa_reset"), 0);
}

// --- Concurrency -------------------------------------------------------------------------------

/// Counts the appends the sink refused as `conflict` (another writer got there first).
struct CountConflicts {
    inner: Arc<FaultyAuditSink<MemoryAuditSink>>,
    conflicts: AtomicUsize,
}

impl host_harness::backends::HostAuditSink for CountConflicts {}

impl AuditSink for CountConflicts {
    fn head(&self, org: &str) -> PortResult<Option<Head>> {
        self.inner.head(org)
    }
    fn append(&self, entry: &AuditEntry) -> Result<(), AppendError> {
        let r = self.inner.append(entry);
        if r == Err(AppendError::Conflict) {
            self.conflicts.fetch_add(1, Ordering::SeqCst);
        }
        r
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_calls_for_one_organization_keep_one_chain() {
    let mut h = Harness::plugin();
    let counting = Arc::new(CountConflicts {
        inner: h.audit.clone(),
        conflicts: AtomicUsize::new(0),
    });
    h.backends.audit = counting.clone();
    let h = Arc::new(h);
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let h = h.clone();
            tokio::spawn(async move {
                let c = ctx(&format!("dr-par-{i:02}"));
                let id = h.challenge(&c).await;
                h.send_code(&c, &id).await.map(|_| id)
            })
        })
        .collect();
    let mut challenges = Vec::new();
    for task in tasks {
        challenges.push(task.await.unwrap().expect("every call succeeds"));
    }
    let entries = h.audit.inner().entries();
    assert_eq!(entries.len(), 32);
    let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=32).collect::<Vec<_>>(),
        "one stream, no gap, no fork"
    );
    for pair in entries.windows(2) {
        assert_eq!(pair[1].prev, pair[0].hash);
    }
    verify_trail(&lines(&h), seal_key()).unwrap();
    let records = h.audit_records();
    for (i, id) in challenges.iter().enumerate() {
        let mine: Vec<&str> = records
            .iter()
            .filter(|r| r["actor"] == format!("dr-par-{i:02}").as_str())
            .map(|r| r["action"].as_str().unwrap())
            .collect();
        assert_eq!(mine, ["challenge_started", "code_sent"], "{id}");
    }
    assert_eq!(h.tracked.counter(&keys::audit_count(ORG)), 32);
    eprintln!(
        "appends that lost a race and relinked: {}",
        counting.conflicts.load(Ordering::SeqCst)
    );
}

/// Another writer (a second host sharing the sink) appends to the stream between the component's
/// read of the head and its append, `times` times.
struct OtherWriter {
    inner: Arc<FaultyAuditSink<MemoryAuditSink>>,
    times: AtomicUsize,
}

impl OtherWriter {
    fn write_one(&self, org: &str) {
        let (seq, prev) = Head::next(self.inner.head(org).unwrap().as_ref());
        let event = Event {
            org: org.to_owned(),
            actor: "other-host".to_owned(),
            subject: "dr-elsewhere".to_owned(),
            action: Action::CodeSent,
            outcome: Outcome::Success,
            reason: None,
            ip: None,
            user_agent: None,
            device_id: None,
            challenge_id: Some("0".repeat(32)),
        };
        let (line, hash) = event.seal(
            &format!("{seq:032x}"),
            seq,
            Timestamp(T0),
            &prev,
            Some(&seal_key()),
        );
        let entry = AuditEntry {
            org_id: org.to_owned(),
            seq,
            at: T0,
            action: "code_sent".to_owned(),
            prev,
            hash,
            line,
        };
        self.inner.append(&entry).unwrap();
    }
}

impl host_harness::backends::HostAuditSink for OtherWriter {}

impl AuditSink for OtherWriter {
    fn head(&self, org: &str) -> PortResult<Option<Head>> {
        self.inner.head(org)
    }
    fn append(&self, entry: &AuditEntry) -> Result<(), AppendError> {
        if self
            .times
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            self.write_one(&entry.org_id);
        }
        self.inner.append(entry)
    }
}

#[tokio::test]
async fn a_record_that_loses_the_race_relinks_after_the_winner() {
    let mut h = Harness::plugin();
    let other = Arc::new(OtherWriter {
        inner: h.audit.clone(),
        times: AtomicUsize::new(3),
    });
    h.backends.audit = other.clone();
    let c = ctx("dr-race");
    let id = h.challenge(&c).await;
    assert_eq!(
        h.actions(),
        ["code_sent", "code_sent", "code_sent", "challenge_started"],
        "three records of the other writer, then the component's, relinked"
    );
    let last = h.audit_records().pop().unwrap();
    assert_eq!(
        (last["seq"].as_u64(), last["challenge_id"].as_str()),
        (Some(4), Some(id.as_str()))
    );
    verify_trail(&lines(&h), seal_key()).unwrap();

    // A stream that never settles: the call gives up, unavailable, and leaves no challenge.
    other.times.store(1000, Ordering::SeqCst);
    let c = ctx("dr-busy");
    expect_err(
        h.begin(&c).await,
        ErrorKind::Unavailable,
        "begin on a busy stream",
    );
    other.times.store(0, Ordering::SeqCst);
    assert_eq!(h.status(&c).await.unwrap().active_challenge, None);
    assert_eq!(count(&h, "challenge_started"), 1, "only dr-race's");
    verify_trail(&lines(&h), seal_key()).unwrap();
}
