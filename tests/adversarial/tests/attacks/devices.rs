//! Cases 6 and 7: trusted browsers end when they must.
//!
//! - Policy tightening takes effect at the next `begin`: a trusted browser, then the org admin
//!   switches remembering off (`allow_remember_device: false`, `trust_days: 0`) over the REST API;
//!   the next `begin` with the cookie asks for a code (`device:not-allowed`).
//! - A revoke racing a rotation: the store holds a trusted login's write of its rotated device
//!   record (a paused `set` under the user's device prefix); meanwhile the device is revoked (by its
//!   owner, revoke-all, a credential change, an admin's reset); then the write goes ahead. The
//!   racing login is not let through, and no cookie of that browser is trusted afterwards.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

fn policy(trust_days: u8, remember: bool) -> Value {
    json!({
        "mandate": "inherit",
        "required_roles": [],
        "trust_days": trust_days,
        "allow_remember_device": remember,
        "ipv4_change_prefix": 16,
        "ipv6_change_prefix": 48,
        "enrollment_grace_days": 0,
        "enrollment_grace_logins": 0
    })
}

/// `begin`'s outcome and rule, and the rotated cookie when it allowed.
fn begin(s: &Adversary, c: &Value) -> (String, String, Option<String>) {
    let r = s.post("/v1/login/begin", &json!({ "context": c }));
    let outcome = r.json["outcome"]
        .as_str()
        .map_or_else(|| r.outcome(), str::to_owned);
    let rule = r.json["why"]["rule"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let cookie = r.json["set_cookie"].as_str().map(cookie_value);
    (outcome, rule, cookie)
}

#[test]
fn tightening_the_policy_ends_a_trusted_browser_at_its_next_begin() {
    let _serial = one_at_a_time();
    let s = Adversary::start("policy");
    let org = "tighten-clinic";
    let user = "dr-tight";
    let c = ctx(org, user, &["provider"]);
    let (device, cookie) = s.trust(&c);
    s.advance(60);
    let (outcome, rule, rotated) = begin(&s, &with_cookie(&c, &cookie));
    assert_eq!(
        (outcome.as_str(), rule.as_str()),
        ("allow", "device:trusted")
    );
    let rotated = rotated.unwrap();

    let set = s.post(
        "/v1/admin/policy/set",
        &json!({ "actor": admin(org), "org_id": org, "policy": policy(0, false) }),
    );
    assert_eq!(set.status, 200, "{}", set.text);
    s.advance(60);
    let (outcome, rule, _) = begin(&s, &with_cookie(&c, &rotated));
    let revoked: Vec<Rec> = s
        .audit_of(org, user)
        .into_iter()
        .filter(|r| r.action == "device_revoked")
        .collect();
    eprintln!(
        "[policy] trusted, then allow_remember_device false / trust_days 0: the next begin with \
         the cookie: {outcome} ({rule}); device_revoked records: {:?}",
        revoked.iter().map(|r| &r.reason).collect::<Vec<_>>()
    );
    assert_eq!(
        (outcome.as_str(), rule.as_str()),
        ("challenge", "device:not-allowed")
    );
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].reason, "policy:remember-device-off");
    // The cookie before the rotation is not trusted either, nor is anything stored for the device.
    let (outcome, ..) = begin(&s, &with_cookie(&c, &cookie));
    assert_eq!(outcome, "challenge");
    assert!(
        s.keys()
            .iter()
            .all(|k| !k.starts_with(&format!("v1:device:{org}:{user}:"))),
        "device {device} is still stored"
    );
    s.verify_log();
}

const REVOKES: [&str; 4] = ["revoke", "revoke-all", "credential-changed", "reset-user"];

fn revoke(s: &Adversary, how: &str, org: &str, user: &str, device: &str) -> Reply {
    let me = actor(org, user, &["provider"]);
    match how {
        "revoke" => s.post("/v1/devices/revoke", &json!({ "actor": me, "device_id": device })),
        "revoke-all" => s.post("/v1/devices/revoke-all", &json!({ "actor": me })),
        "credential-changed" => s.post(
            "/v1/admin/credential-changed",
            &json!({ "actor": admin(org), "org_id": org, "user_id": user, "change": "password-changed" }),
        ),
        _ => s.post(
            "/v1/admin/reset-user",
            &json!({ "actor": admin(org), "org_id": org, "user_id": user }),
        ),
    }
}

#[test]
fn a_revoke_landing_in_a_paused_rotation_stays_revoked() {
    let _serial = one_at_a_time();
    let s = Adversary::start("race");
    let org = "race-clinic";
    let mut broken = Vec::new();
    for how in REVOKES {
        let user = format!("dr-{how}");
        let c = ctx(org, &user, &["provider"]);
        let (device, cookie) = s.trust(&c);
        s.advance(60);
        let prefix = format!("v1:device:{org}:{user}:");
        s.pause("set", &prefix);
        let presented = with_cookie(&c, &cookie);
        let (racing, held, revoked) = std::thread::scope(|scope| {
            let login = scope.spawn(|| s.post("/v1/login/begin", &json!({ "context": presented })));
            let held = s.held(Duration::from_secs(20));
            let revoked = revoke(&s, how, org, &user, &device);
            s.release();
            (login.join().unwrap(), held, revoked)
        });
        let racing_outcome = racing.json["outcome"]
            .as_str()
            .map_or_else(|| racing.outcome(), str::to_owned);
        let mut cookies = vec![cookie.clone()];
        cookies.extend(racing.json["set_cookie"].as_str().map(cookie_value));
        s.advance(5);
        let after: Vec<String> = cookies
            .iter()
            .map(|k| begin(&s, &with_cookie(&c, k)).0)
            .collect();
        let stored = s
            .keys()
            .into_iter()
            .filter(|k| k.starts_with(&prefix))
            .count();
        eprintln!(
            "[race] {how}: the rotation's write held at {}; revoke answered {}; the racing begin: \
             {racing_outcome}; afterwards, begin with each of its {} cookies: {after:?}; device \
             records stored: {stored}",
            held.as_deref().unwrap_or("(nothing held)"),
            revoked.outcome(),
            cookies.len()
        );
        if held.is_none() {
            broken.push(format!("{how}: the rotation never reached its write"));
        }
        if revoked.status != 200 {
            broken.push(format!("{how}: the revoke answered {}", revoked.text));
        }
        if racing_outcome == "allow" {
            broken.push(format!("{how}: the racing login was let through"));
        }
        if after.iter().any(|o| o == "allow") {
            broken.push(format!(
                "{how}: a cookie is trusted after the revoke: {after:?}"
            ));
        }
        if stored != 0 {
            broken.push(format!(
                "{how}: {stored} device records stored after the revoke"
            ));
        }
    }
    s.verify_log();
    assert!(broken.is_empty(), "{broken:#?}");
}
