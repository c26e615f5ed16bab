//! The REST API (the component's `wasi:http` export) as a client meets it: the API key guards every
//! `/v1/` route before anything is read, statuses and error kinds follow the table in
//! `guest/src/http.rs`, errors never echo what was sent, and no response may be cached.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use crate::common;
use common::*;
use serde_json::{Value, json};

fn context(user: &str) -> Value {
    json!({
        "user_id": user,
        "org_id": "acme-health",
        "email": format!("{user}@clinic.example"),
        "roles": ["provider"],
        "device": { "ip": "203.0.113.7", "traits": { "user_agent": "Mozilla/5.0" } }
    })
}

async fn post(h: &Harness, path: &str, body: &Value) -> HttpReply {
    h.http_full("POST", path, Some(API_KEY), body.to_string().into_bytes())
        .await
}

fn assert_problem(reply: &HttpReply, status: u16, kind: &str) {
    assert_eq!(
        (reply.status, reply.kind()),
        (status, Some(kind)),
        "{:?}",
        reply.json
    );
}

const V1_ROUTES: [&str; 13] = [
    "/v1/login/begin",
    "/v1/login/send-code",
    "/v1/login/verify",
    "/v1/login/status",
    "/v1/devices/list",
    "/v1/devices/revoke",
    "/v1/devices/revoke-all",
    "/v1/admin/credential-changed",
    "/v1/admin/policy/get",
    "/v1/admin/policy/set",
    "/v1/admin/reset-user",
    "/v1/admin/user-status",
    "/v1/no-such-route",
];

#[tokio::test]
async fn every_v1_route_refuses_a_missing_or_wrong_key_and_touches_nothing() {
    let h = Harness::new();
    // A body that would open a challenge, were it ever read.
    let body = json!({ "context": context("dr-intruder") }).to_string();
    let wrong_key = "guessed-key-4242";
    let authorizations = [
        None,
        Some(format!("Bearer {wrong_key}")),
        Some("Bearer ".to_owned()),
        Some(format!("Bearer {API_KEY}x")),
        Some(format!("Basic {API_KEY}")),
        Some(API_KEY.to_owned()),
    ];
    for route in V1_ROUTES {
        for method in ["POST", "GET"] {
            for auth in &authorizations {
                let reply = h
                    .http_raw(method, route, auth.as_deref(), body.clone().into_bytes())
                    .await;
                let case = format!("{method} {route} with {auth:?}");
                assert_eq!(reply.status, 401, "{case}");
                assert_eq!(reply.kind(), Some("unauthorized"), "{case}");
                assert_eq!(reply.header("www-authenticate"), ["Bearer"], "{case}");
                let text = String::from_utf8_lossy(&reply.body);
                assert!(
                    !text.contains(wrong_key) && !text.contains(API_KEY),
                    "{case}: echoes a key"
                );
            }
        }
    }
    assert!(h.actions().is_empty(), "no audit record");
    assert_eq!(h.emails_sent(), 0, "no mail");
    assert!(
        h.tracked.keys_with_prefix("").is_empty(),
        "the store was not even read"
    );

    // The same request with the right key does take effect (so the refusals above were the key's).
    let ok = h
        .http_full("POST", "/v1/login/begin", Some(API_KEY), body.into_bytes())
        .await;
    assert_eq!(ok.status, 200);
    assert_eq!(h.actions(), ["challenge_started"]);
}

#[tokio::test]
async fn healthz_answers_without_a_key() {
    let h = Harness::new();
    let reply = h.http_raw("GET", "/healthz", None, Vec::new()).await;
    assert_eq!(
        (reply.status, &reply.json),
        (200, &json!({ "status": "ok" }))
    );
    let reply = h.http_raw("POST", "/healthz", None, Vec::new()).await;
    assert_eq!(reply.status, 405);
    assert!(h.actions().is_empty());
}

#[tokio::test]
async fn the_rest_walk_through_signs_in_once() {
    let h = Harness::new();
    let ctx = context("dr-rest");

    let begun = post(&h, "/v1/login/begin", &json!({ "context": ctx })).await;
    assert_eq!(begun.status, 200, "{:?}", begun.json);
    assert_eq!(begun.json["outcome"], "challenge");
    assert_eq!(begun.json["masked_email"], "d***@clinic.example");
    let id = begun.json["challenge_id"].as_str().unwrap().to_owned();

    let sent = post(
        &h,
        "/v1/login/send-code",
        &json!({ "context": ctx, "challenge_id": id }),
    )
    .await;
    assert_eq!(sent.status, 200, "{:?}", sent.json);
    assert_eq!(
        sent.json,
        json!({ "resent": false, "code_expires_at": T0 + 600, "sends_left": 2 })
    );
    let code = h.last_code();
    assert!(
        !String::from_utf8_lossy(&sent.body).contains(&code),
        "the API never returns the code"
    );

    let status = post(&h, "/v1/login/status", &json!({ "context": ctx })).await;
    assert_eq!(status.status, 200);
    assert_eq!(status.json["active_challenge"], id.as_str());
    assert_eq!(status.json["code_expires_at"], T0 + 600);
    assert!(!String::from_utf8_lossy(&status.body).contains(&code));

    let body = json!({ "context": ctx, "challenge_id": id, "code": code });
    let verified = post(&h, "/v1/login/verify", &body).await;
    assert_eq!(verified.status, 200, "{:?}", verified.json);
    assert_eq!(verified.json["amr"], json!(["otp", "mfa"]));

    let again = post(&h, "/v1/login/verify", &body).await;
    assert_problem(&again, 403, "rejected");
    assert_eq!(again.json["error"]["field"], Value::Null);
}

#[tokio::test]
async fn a_body_that_does_not_parse_is_400_and_never_echoed() {
    let h = Harness::new();
    let mistyped = post(&h, "/v1/login/begin", &json!({ "context": 123_456 })).await;
    assert_problem(&mistyped, 400, "invalid-input");
    assert_eq!(mistyped.json["error"]["field"], "body");
    assert!(
        !String::from_utf8_lossy(&mistyped.body).contains("123456"),
        "{:?}",
        mistyped.json
    );

    // A code sitting next to an unknown field is not echoed either.
    let body = json!({ "context": context("dr-json"), "challenge_id": "0123456789abcdef", "code": "987654", "extra": true });
    let unknown = post(&h, "/v1/login/verify", &body).await;
    assert_problem(&unknown, 400, "invalid-input");
    assert!(!String::from_utf8_lossy(&unknown.body).contains("987654"));

    let broken = h
        .http_full(
            "POST",
            "/v1/login/begin",
            Some(API_KEY),
            b"{\"context\": {".to_vec(),
        )
        .await;
    assert_problem(&broken, 400, "invalid-input");

    let mut bad_email = context("dr-json");
    bad_email["email"] = json!("no-at-sign");
    let field = post(&h, "/v1/login/begin", &json!({ "context": bad_email })).await;
    assert_problem(&field, 400, "invalid-input");
    assert_eq!(field.json["error"]["field"], "email");

    assert!(h.snapshot().is_empty(), "nothing stored");
    assert!(h.actions().is_empty());
}

#[tokio::test]
async fn a_body_over_64_kib_is_413() {
    let h = Harness::new();
    let json = json!({ "context": context("dr-big") }).to_string();
    let padded = |len: usize| {
        let mut body = json.clone().into_bytes();
        body.resize(len, b' '); // trailing whitespace keeps it valid JSON
        body
    };
    let too_big = h
        .http_full(
            "POST",
            "/v1/login/begin",
            Some(API_KEY),
            padded(64 * 1024 + 1),
        )
        .await;
    assert_eq!(too_big.status, 413);
    assert!(
        h.snapshot().is_empty() && h.actions().is_empty(),
        "nothing was done"
    );

    let at_limit = h
        .http_full("POST", "/v1/login/begin", Some(API_KEY), padded(64 * 1024))
        .await;
    assert_eq!(
        at_limit.status, 200,
        "exactly 64 KiB is accepted: {:?}",
        at_limit.json
    );
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405() {
    let h = Harness::new();
    let body = json!({ "context": context("dr-routes") }).to_string();
    for path in [
        "/v1/login/nope",
        "/v1/login",
        "/v2/login/begin",
        "/",
        "/login/begin",
    ] {
        let reply = h
            .http_full("POST", path, Some(API_KEY), body.clone().into_bytes())
            .await;
        assert_eq!(reply.status, 404, "{path}");
    }
    for method in ["GET", "PUT", "DELETE"] {
        let reply = h
            .http_full(
                method,
                "/v1/login/begin",
                Some(API_KEY),
                body.clone().into_bytes(),
            )
            .await;
        assert_eq!(reply.status, 405, "{method}");
    }
    assert!(h.actions().is_empty());
}

#[tokio::test]
async fn too_many_emails_is_429_with_retry_after() {
    let h = Harness::new();
    let ctx = context("dr-429");
    let begun = post(&h, "/v1/login/begin", &json!({ "context": ctx })).await;
    let body = json!({ "context": ctx, "challenge_id": begun.json["challenge_id"] });
    for _ in 0..3 {
        assert_eq!(post(&h, "/v1/login/send-code", &body).await.status, 200);
    }
    h.clock.advance(120);
    let refused = post(&h, "/v1/login/send-code", &body).await;
    assert_problem(&refused, 429, "throttled");
    assert_eq!(refused.json["error"]["retry_after_seconds"], 180);
    assert_eq!(refused.header("retry-after"), ["180"]);
    assert_eq!(h.emails_sent(), 3);
}

/// An actor as the IdP vouches for it over REST.
fn actor(user: &str) -> Value {
    json!({ "user_id": user, "org_id": "acme-health", "roles": ["provider"], "ip": "203.0.113.7" })
}

#[tokio::test]
async fn device_and_admin_routes_are_served_and_unknown_admin_paths_are_404() {
    let h = Harness::new();
    let me = actor("dr-routes");
    let unknown_device = "0123456789abcdef0123456789abcdef";
    // Each route parses its own body and answers from the engine: nothing is reserved any more.
    // A provider may manage their own devices and report their own credential change, but may not
    // administer the organization.
    let cases = [
        ("/v1/devices/list", json!({ "actor": me }), 200),
        (
            "/v1/devices/revoke",
            json!({ "actor": me, "device_id": unknown_device }),
            403,
        ),
        ("/v1/devices/revoke-all", json!({ "actor": me }), 200),
        (
            "/v1/admin/credential-changed",
            json!({ "actor": me, "org_id": "acme-health", "user_id": "dr-routes", "change": "password-changed" }),
            200,
        ),
        (
            "/v1/admin/policy/get",
            json!({ "actor": me, "org_id": "acme-health" }),
            403,
        ),
        (
            "/v1/admin/reset-user",
            json!({ "actor": me, "org_id": "acme-health", "user_id": "dr-other" }),
            403,
        ),
        (
            "/v1/admin/user-status",
            json!({ "actor": me, "org_id": "acme-health", "user_id": "dr-other" }),
            403,
        ),
    ];
    for (path, body, status) in &cases {
        let reply = post(&h, path, body).await;
        assert_eq!(reply.status, *status, "{path}: {:?}", reply.json);
        if *status == 403 {
            assert_eq!(reply.kind(), Some("forbidden"), "{path}");
        }
        // A login-step body is the wrong shape for these routes: 400 naming the body.
        let wrong = post(&h, path, &json!({ "context": context("dr-routes") })).await;
        assert_problem(&wrong, 400, "invalid-input");
        assert_eq!(wrong.json["error"]["field"], "body", "{path}");
    }
    assert_eq!(
        post(&h, "/v1/devices/list", &json!({ "actor": me }))
            .await
            .json,
        json!({ "devices": [] })
    );
    for path in ["/v1/admin/policy", "/v1/admin/", "/v1/admin/no-such-call"] {
        let reply = post(&h, path, &json!({ "actor": me })).await;
        assert_problem(&reply, 404, "not-found");
    }
}

#[tokio::test]
async fn no_response_may_be_cached() {
    let h = Harness::new();
    let ctx = context("dr-cache");
    let mut replies: Vec<(&str, HttpReply)> = Vec::new();
    replies.push((
        "healthz",
        h.http_raw("GET", "/healthz", None, Vec::new()).await,
    ));
    replies.push((
        "401",
        h.http_raw("POST", "/v1/login/begin", None, Vec::new())
            .await,
    ));
    replies.push(("404", h.http_raw("POST", "/nope", None, Vec::new()).await));
    replies.push((
        "405",
        h.http_full("GET", "/v1/login/begin", Some(API_KEY), Vec::new())
            .await,
    ));
    replies.push((
        "400",
        post(&h, "/v1/login/begin", &json!({ "context": 1 })).await,
    ));
    replies.push((
        "413",
        h.http_full("POST", "/v1/login/begin", Some(API_KEY), vec![b' '; 70_000])
            .await,
    ));
    let begun = post(&h, "/v1/login/begin", &json!({ "context": ctx })).await;
    let id = begun.json["challenge_id"].clone();
    replies.push(("begin", begun));
    let send = json!({ "context": ctx, "challenge_id": id });
    for _ in 0..3 {
        replies.push(("send-code", post(&h, "/v1/login/send-code", &send).await));
    }
    replies.push(("429", post(&h, "/v1/login/send-code", &send).await));
    let verify = json!({ "context": ctx, "challenge_id": id, "code": wrong(&h.last_code()) });
    replies.push(("403", post(&h, "/v1/login/verify", &verify).await));
    replies.push((
        "status",
        post(&h, "/v1/login/status", &json!({ "context": ctx })).await,
    ));
    replies.push((
        "devices",
        post(
            &h,
            "/v1/devices/list",
            &json!({ "actor": actor("dr-cache") }),
        )
        .await,
    ));
    replies.push((
        "forbidden",
        post(
            &h,
            "/v1/devices/revoke",
            &json!({ "actor": actor("dr-cache"), "device_id": "0123456789abcdef0123456789abcdef" }),
        )
        .await,
    ));
    h.faults.fail_store_writes(true);
    replies.push((
        "503",
        post(&h, "/v1/login/begin", &json!({ "context": ctx })).await,
    ));
    h.faults.clear();

    let expected = [
        200, 401, 404, 405, 400, 413, 200, 200, 200, 200, 429, 403, 200, 200, 403, 503,
    ];
    let statuses: Vec<u16> = replies.iter().map(|(_, r)| r.status).collect();
    assert_eq!(statuses, expected, "each case really produced its status");
    for (case, reply) in &replies {
        assert_eq!(reply.header("cache-control"), ["no-store"], "{case}");
        assert_eq!(reply.header("content-type"), ["application/json"], "{case}");
    }
    assert_eq!(replies.last().unwrap().1.kind(), Some("unavailable"));
}
