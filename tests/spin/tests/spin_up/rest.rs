//! The REST API on Spin, as an IdP drives it.

use serde_json::{Value, json};

use crate::support::{App, FakeClock, MailSink, Options, admin, ctx, email};

/// `begin`, expecting a challenge: its id.
pub fn challenge(app: &App, c: &Value) -> String {
    let r = app.post("/v1/login/begin", &json!({ "context": c }));
    assert_eq!(
        (r.status, r.json["outcome"].as_str()),
        (200, Some("challenge")),
        "begin: {}",
        r.text
    );
    r.json["challenge_id"].as_str().unwrap().to_owned()
}

pub fn send(app: &App, c: &Value, id: &str) -> crate::support::Reply {
    app.post(
        "/v1/login/send-code",
        &json!({ "context": c, "challenge_id": id }),
    )
}

pub fn verify(app: &App, c: &Value, id: &str, code: &str, remember: bool) -> crate::support::Reply {
    app.post(
        "/v1/login/verify",
        &json!({ "context": c, "challenge_id": id, "code": code, "remember_device": remember }),
    )
}

/// A code that is certainly not `code`.
pub fn wrong(code: &str) -> String {
    let n: u64 = code.parse().unwrap();
    format!("{:0width$}", (n + 1) % 10u64.pow(6), width = code.len())
}

/// The `id.token` a browser sends back for a `Set-Cookie` of the trusted-browser cookie.
pub fn cookie_value(set_cookie: &str) -> String {
    let pair = set_cookie.split(';').next().unwrap_or_default().trim();
    let (name, value) = pair.split_once('=').unwrap();
    assert_eq!(name, "__Host-mfa-device", "{set_cookie}");
    value.to_owned()
}

/// Enrollment, the code from the captured email, a remembered browser, a trusted begin with a
/// rotated cookie, a replayed code, then what the audit stream recorded.
pub fn flow(app: &App, mail: &MailSink, org: &str) {
    let c = ctx(org, "dr-rest");
    let begin = app.post("/v1/login/begin", &json!({ "context": c }));
    assert_eq!(begin.status, 200, "{}", begin.text);
    assert_eq!(begin.json["outcome"], "challenge", "{}", begin.text);
    assert_eq!(begin.json["purpose"], "enrollment", "{}", begin.text);
    let id = begin.json["challenge_id"].as_str().unwrap().to_owned();

    let sent = send(app, &c, &id);
    assert_eq!(sent.status, 200, "send-code: {}", sent.text);
    assert_eq!(sent.json["sends_left"], 2, "{}", sent.text);
    let messages = mail.to(&email("dr-rest"));
    assert_eq!(messages.len(), 1, "one email reached the mail API");
    let code = mail.code(&email("dr-rest"));
    // The message is what the component rendered, whole: both parts, a subject.
    assert!(messages[0]["html"].as_str().unwrap().contains(&code));
    assert!(!messages[0]["subject"].as_str().unwrap().is_empty());

    let wrong_first = verify(app, &c, &id, &wrong(&code), false);
    assert_eq!(
        (wrong_first.status, wrong_first.kind()),
        (403, Some("rejected")),
        "{}",
        wrong_first.text
    );
    let ok = verify(app, &c, &id, &code, true);
    assert_eq!(ok.status, 200, "verify: {}", ok.text);
    assert_eq!(ok.json["amr"], json!(["otp", "mfa"]), "{}", ok.text);
    let set_cookie = ok.json["set_cookie"].as_str().unwrap();
    for attribute in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    let cookie = cookie_value(set_cookie);

    let replay = verify(app, &c, &id, &code, false);
    assert_eq!(
        (replay.status, replay.kind()),
        (403, Some("rejected")),
        "a replayed code: {}",
        replay.text
    );

    let mut trusted = c.clone();
    trusted["device"]["cookie"] = json!(cookie);
    let allow = app.post("/v1/login/begin", &json!({ "context": trusted }));
    assert_eq!(allow.status, 200, "{}", allow.text);
    assert_eq!(allow.json["outcome"], "allow", "{}", allow.text);
    assert_eq!(
        allow.json["why"]["rule"], "device:trusted",
        "{}",
        allow.text
    );
    assert_eq!(allow.json["amr"], json!(["mfa"]), "{}", allow.text);
    let rotated = cookie_value(allow.json["set_cookie"].as_str().unwrap());
    assert_ne!(rotated, cookie, "the token rotates");
    assert_eq!(
        rotated.split('.').next(),
        cookie.split('.').next(),
        "same device"
    );
    assert_eq!(
        mail.to(&email("dr-rest")).len(),
        1,
        "no email for a trusted login"
    );

    // The user's devices, listed and revoked through the adapter's per-user index (no store scan).
    let me = json!({
        "user_id": "dr-rest",
        "org_id": org,
        "roles": ["provider"],
        "ip": "203.0.113.7",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0"
    });
    let listed = app.post("/v1/devices/list", &json!({ "actor": me }));
    assert_eq!(
        listed.status,
        200,
        "{}\n{}\n{}",
        listed.text,
        app.spin_log(),
        app.component_stderr()
    );
    assert_eq!(
        listed.json["devices"].as_array().map(Vec::len),
        Some(1),
        "{}",
        listed.text
    );
    let revoked = app.post("/v1/devices/revoke-all", &json!({ "actor": me }));
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    assert_eq!(revoked.json["revoked"], 1, "{}", revoked.text);
    trusted["device"]["cookie"] = json!(rotated);
    let after = app.post("/v1/login/begin", &json!({ "context": trusted }));
    assert_eq!(after.status, 200, "{}", after.text);
    assert_eq!(
        after.json["outcome"], "challenge",
        "a revoked browser is asked again: {}",
        after.text
    );

    // What the store recorded, in order, as `mfa-step audit export --spin-kv` reads it.
    let actions: Vec<String> = app
        .audit_records(org)
        .iter()
        .filter(|r| r["subject"] == "dr-rest")
        .map(|r| r["action"].as_str().unwrap_or_default().to_owned())
        .collect();
    for expected in [
        "challenge_started",
        "code_sent",
        "code_rejected",
        "enrolled",
        "device_trusted",
        "device_revoked",
    ] {
        assert!(
            actions.iter().any(|a| a == expected),
            "no {expected} in {actions:?}"
        );
    }
}

/// With the mail API down, `send-code` answers 503 (no email, no token or body in the error), the
/// failure is recorded (`code_delivery_failed`, after the `code_sent` written before mailing), and
/// the next send, with the API up, delivers a code that works.
pub fn mail_down_fails_closed(app: &App, mail: &MailSink, org: &str) {
    let c = ctx(org, "dr-mail-down");
    let id = challenge(app, &c);
    mail.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let refused = send(app, &c, &id);
    mail.down.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        (refused.status, refused.kind()),
        (503, Some("unavailable")),
        "{}",
        refused.text
    );
    assert!(
        !refused.text.contains(MAIL_TOKEN_HINT),
        "the error names no token"
    );
    assert!(mail.to(&email("dr-mail-down")).is_empty());
    let failed: Vec<Value> = app
        .audit_records(org)
        .into_iter()
        .filter(|r| r["subject"] == "dr-mail-down" && r["action"] == "code_delivery_failed")
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["reason"], "mailer-refused");
    let sent = send(app, &c, &id);
    assert_eq!(sent.status, 200, "{}", sent.text);
    let code = mail.code(&email("dr-mail-down"));
    let ok = verify(app, &c, &id, &code, false);
    assert_eq!(ok.status, 200, "{}", ok.text);
}

const MAIL_TOKEN_HINT: &str = crate::support::MAIL_TOKEN;

/// 20 consecutive wrong codes lock the user; an admin's reset lets them in again. The component
/// waits 30 s · 2^(n−6) before the n-th try (n ≥ 6), so 20 tries take about 11 days: Spin runs
/// under libfaketime, and the test moves its wall clock past each delay.
pub fn lock_after_twenty(options: &Options) {
    let clock = FakeClock::new();
    let mail = MailSink::start();
    let mut options = options.clone();
    options.env.extend(clock.env());
    let app = App::start(&mail, &options);
    let org = "lock-org";
    let c = ctx(org, "dr-lock");
    let to = email("dr-lock");
    let mut last = None;
    for n in 1..=20u32 {
        if n >= 6 {
            // Past the delay of the n-th try.
            clock.advance(30 * (1 << (n - 6)) + 1);
        }
        let id = challenge(&app, &c);
        let mut sent = send(&app, &c, &id);
        if sent.status == 429 {
            let wait = sent.json["error"]["retry_after_seconds"].as_u64().unwrap();
            clock.advance(wait + 1);
            sent = send(&app, &c, &id);
        }
        assert_eq!(sent.status, 200, "try {n}: send-code: {}", sent.text);
        let code = mail.code(&to);
        let answer = verify(&app, &c, &id, &wrong(&code), false);
        assert!(
            answer.status == 403 || (n == 20 && answer.status == 423),
            "try {n}: {}",
            answer.text
        );
        last = Some(answer);
    }
    let locked = app.post("/v1/login/begin", &json!({ "context": c }));
    assert_eq!(locked.json["outcome"], "deny", "{}", locked.text);
    assert_eq!(locked.json["why"]["rule"], "user:locked", "{}", locked.text);
    // Days later it is still locked: only an admin ends it.
    clock.advance(7 * 86_400);
    let still = app.post("/v1/login/begin", &json!({ "context": c }));
    assert_eq!(still.json["why"]["rule"], "user:locked", "{}", still.text);
    let actions: Vec<String> = app
        .audit_records(org)
        .iter()
        .map(|r| r["action"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        actions.iter().filter(|a| *a == "code_rejected").count(),
        20,
        "{actions:?} (last answer {:?})",
        last.map(|r| r.text)
    );
    assert!(actions.iter().any(|a| a == "user_locked"), "{actions:?}");

    let reset = app.post(
        "/v1/admin/reset-user",
        &json!({ "actor": admin(org), "org_id": org, "user_id": "dr-lock" }),
    );
    assert_eq!(reset.status, 200, "reset-user: {}", reset.text);
    assert_eq!(reset.json["reset"], true, "{}", reset.text);
    let id = challenge(&app, &c);
    let sent = send(&app, &c, &id);
    assert_eq!(sent.status, 200, "{}", sent.text);
    let ok = verify(&app, &c, &id, &mail.code(&to), false);
    assert_eq!(ok.status, 200, "after the reset: {}", ok.text);
    app.assert_audit_whole();
}

/// The admin console on Spin: the IdP syncs its roster, an admin opens a console link, and the
/// users screen lists the organization's users from the adapter's index of them (users seen at
/// login, and the roster's) without a store scan; the audit screen, which Spin cannot fill in
/// (it does not read its trail back for the console), says how to export the trail instead.
pub fn console(app: &App, org: &str) {
    let synced = app.post(
        "/v1/admin/sync-roster",
        &json!({ "actor": admin(org), "org_id": org,
                 "add": [{ "user_id": "dr-roster", "roles": ["clinician"] }] }),
    );
    assert_eq!(synced.status, 200, "{}", synced.text);
    assert_eq!(synced.json, json!({ "added": 1, "removed": 0 }));
    let link = app.post(
        "/v1/admin/console-link",
        &json!({ "actor": admin(org), "org_id": org }),
    );
    assert_eq!(link.status, 200, "{}", link.text);
    let mut browser = crate::support::idp::Browser::new(std::net::Ipv4Addr::LOCALHOST);
    let opened = browser.go(app, "GET", link.json["url"].as_str().unwrap(), "");
    assert_eq!(opened.status, 200, "{}", opened.text);
    let users = browser.go(app, "GET", "/admin/console/users", "");
    assert_eq!(users.status, 200, "{}", users.text);
    assert!(
        users
            .text
            .contains("data-user=\"dr-rest\" data-state=\"enrolled\""),
        "{}",
        users.text
    );
    assert!(
        users
            .text
            .contains("data-user=\"dr-roster\" data-state=\"not-enrolled\""),
        "{}",
        users.text
    );
    let audit = browser.go(app, "GET", "/admin/console/audit", "");
    assert_eq!(audit.status, 200, "{}", audit.text);
    assert!(
        audit.text.contains("id=\"audit-fallback\""),
        "{}",
        audit.text
    );
    assert!(
        audit.text.contains("mfa-step audit export"),
        "{}",
        audit.text
    );
}
