//! The demo identity provider that `serve --demo` runs at `/demo/`, as a browser meets it over real
//! TCP: the form, the signed request it sends to the hosted prompt, and the checks it makes on the
//! result that comes back (signature, issuer, audience, expiry, nonce, single use).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};

mod support;

use support::{Raw, raw_request, start};

const SECURITY_HEADERS: [(&str, &str); 4] = [
    ("content-type", "text/html; charset=utf-8"),
    ("cache-control", "no-store"),
    (
        "content-security-policy",
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
    ),
    ("x-content-type-options", "nosniff"),
];

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap()
}

/// The shared key `serve --demo` created, as the bytes both sides sign with.
fn prompt_key(data: &Path) -> Vec<u8> {
    hex::decode(
        std::fs::read_to_string(data.join("prompt.key"))
            .unwrap()
            .trim(),
    )
    .unwrap()
}

fn assert_page(resp: &Raw) {
    for (name, value) in SECURITY_HEADERS {
        assert_eq!(resp.header(name), Some(value), "{name}");
    }
    let body = &resp.body;
    assert!(body.contains("<html lang=\"en\">"), "{body}");
    assert_eq!(body.matches("<h1").count(), 1, "{body}");
    assert!(body.contains("<main>"), "{body}");
}

fn start_form(addr: &str, host: &str, form: &str) -> Raw {
    raw_request(
        addr,
        "POST",
        "/demo/start",
        &[
            ("Host", host),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        form,
    )
}

#[test]
fn the_demo_page_offers_the_users_languages_and_both_purposes() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("data"));
    let resp = raw_request(&server.addr, "GET", "/demo/", &[], "");
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_page(&resp);
    let body = &resp.body;
    for needle in [
        r#"<form method="post" action="/demo/start">"#,
        r#"<label for="user">"#,
        r#"<select id="user" name="user">"#,
        r#"<option value="dr-demo">dr-demo (provider)</option>"#,
        r#"<option value="coach-demo">coach-demo (coach)</option>"#,
        r#"<option value="admin-demo">admin-demo (org-admin)</option>"#,
        r#"<label for="locale">"#,
        r#"<select id="locale" name="locale">"#,
        r#"<option value="en">"#,
        r#"<option value="es""#,
        r#"id="sign-in" name="purpose" value="login">Sign in</button>"#,
        r#"id="manage-devices" name="purpose" value="devices">Manage trusted browsers</button>"#,
    ] {
        assert!(body.contains(needle), "missing {needle} in {body}");
    }
    // `/demo` leads to the page; other /demo paths are the IdP's 404, not the component's.
    let bare = raw_request(&server.addr, "GET", "/demo", &[], "");
    assert_eq!(
        (bare.status, bare.header("location")),
        (303, Some("/demo/"))
    );
    let missing = raw_request(&server.addr, "GET", "/demo/nothing", &[], "");
    assert_eq!(missing.status, 404);
    assert_page(&missing);
}

#[test]
fn start_signs_a_request_for_the_prompt_with_the_prompt_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start(&data);
    let port = server.addr.rsplit_once(':').unwrap().1.to_owned();
    let before = now();
    let resp = start_form(
        &server.addr,
        &server.addr,
        "user=coach-demo&locale=es&purpose=devices",
    );
    assert_eq!(resp.status, 303, "{}", resp.body);
    let location = resp.header("location").unwrap();
    let token = location
        .strip_prefix("/prompt?request=")
        .unwrap_or_else(|| panic!("{location}"));

    // The claims, read as any party can read them: the JWT's middle part.
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(claims["iss"], "demo-idp");
    assert_eq!(claims["aud"], "mfa-step");
    assert_eq!(claims["sub"], "coach-demo");
    assert_eq!(claims["org"], "demo-clinic");
    assert_eq!(claims["email"], "coach-demo@demo-clinic.example");
    assert_eq!(claims["roles"], json!(["coach"]));
    assert_eq!(claims["locale"], "es");
    assert_eq!(claims["purpose"], "devices");
    assert_eq!(
        claims["return_to"],
        format!("http://127.0.0.1:{port}/demo/return")
    );
    let iat = claims["iat"].as_i64().unwrap();
    assert!((before..=now()).contains(&iat), "{claims}");
    assert_eq!(claims["exp"].as_i64().unwrap(), iat + 120);
    let nonce = claims["nonce"].as_str().unwrap();
    assert_eq!(nonce.len(), 32);
    assert!(nonce.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(!claims["jti"].as_str().unwrap().is_empty());

    // Signed under HS256 with <data-dir>/prompt.key, and with nothing else.
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_audience(&["mfa-step"]);
    validation.set_issuer(&["demo-idp"]);
    let key = prompt_key(&data);
    let verified =
        jsonwebtoken::decode::<Value>(token, &DecodingKey::from_secret(&key), &validation).unwrap();
    assert_eq!(verified.claims, claims);
    assert_eq!(verified.header.alg, Algorithm::HS256);
    assert!(
        jsonwebtoken::decode::<Value>(token, &DecodingKey::from_secret(&[7; 32]), &validation)
            .is_err()
    );

    // The nonce waits in a cookie only /demo sees.
    let cookie = resp.header("set-cookie").unwrap();
    assert!(
        cookie.starts_with(&format!("demo-idp-nonce={nonce};")),
        "{cookie}"
    );
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/demo"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    // Each request is new.
    let again = start_form(
        &server.addr,
        &server.addr,
        "user=coach-demo&locale=es&purpose=devices",
    );
    assert_ne!(again.header("location"), Some(location));

    // The key file is private to the user.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(data.join("prompt.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "prompt.key must not be readable by others");
    }
}

#[test]
fn return_to_follows_the_browser_only_to_allowed_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("data"));
    let port = server.addr.rsplit_once(':').unwrap().1.to_owned();
    let return_to = |host: &str| {
        let resp = start_form(&server.addr, host, "user=dr-demo&locale=en&purpose=login");
        assert_eq!(resp.status, 303, "{}", resp.body);
        let token = resp
            .header("location")
            .unwrap()
            .strip_prefix("/prompt?request=")
            .unwrap()
            .to_owned();
        let payload = token.split('.').nth(1).unwrap();
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(claims["purpose"], "login");
        assert_eq!(claims["roles"], json!(["provider"]));
        claims["return_to"].as_str().unwrap().to_owned()
    };
    assert_eq!(
        return_to(&format!("localhost:{port}")),
        format!("http://localhost:{port}/demo/return")
    );
    assert_eq!(
        return_to("evil.example"),
        format!("http://127.0.0.1:{port}/demo/return")
    );
    // A user or a purpose the IdP does not offer is refused, and nothing is signed.
    for form in [
        "user=root&locale=en&purpose=login",
        "user=dr-demo&locale=fr&purpose=login",
        "user=dr-demo&locale=en&purpose=anything",
    ] {
        let resp = start_form(&server.addr, &server.addr, form);
        assert_eq!(resp.status, 400, "{form}");
        assert!(resp.header("location").is_none());
        assert_page(&resp);
    }
}

/// A result as mfa-step signs it.
fn result_claims(nonce: &str, iat: i64) -> Value {
    json!({
        "iss": "mfa-step",
        "aud": "demo-idp",
        "sub": "dr-demo",
        "org": "demo-clinic",
        "outcome": "success",
        "amr": ["otp", "mfa"],
        "auth_time": iat,
        "nonce": nonce,
        "jti": format!("jti-{iat}-{nonce}"),
        "iat": iat,
        "exp": iat + 120,
    })
}

fn sign(claims: &Value, key: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(key),
    )
    .unwrap()
}

fn back(addr: &str, token: &str, nonce: &str) -> Raw {
    let cookie = format!("other=1; demo-idp-nonce={nonce}");
    raw_request(
        addr,
        "GET",
        &format!("/demo/return?result={token}"),
        &[("Cookie", &cookie)],
        "",
    )
}

fn assert_rejected(resp: &Raw, why: &str) {
    assert_eq!(resp.status, 400, "{}", resp.body);
    assert_page(resp);
    assert!(
        resp.body
            .contains(r#"<h1 id="result">Result rejected</h1>"#),
        "{}",
        resp.body
    );
    assert!(resp.body.contains(why), "expected `{why}` in {}", resp.body);
    assert!(
        !resp.body.contains("dr-demo"),
        "a rejected result shows no user"
    );
}

#[test]
fn a_signed_result_with_this_browsers_nonce_signs_in_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start(&data);
    let key = prompt_key(&data);
    let nonce = "0123456789abcdef0123456789abcdef";
    let token = sign(&result_claims(nonce, now()), &key);

    let resp = back(&server.addr, &token, nonce);
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_page(&resp);
    let body = &resp.body;
    assert!(body.contains(r#"<h1 id="result">Signed in</h1>"#), "{body}");
    assert!(body.contains(r#"<dd id="outcome">success</dd>"#), "{body}");
    assert!(body.contains(r#"<dd id="amr">otp, mfa</dd>"#), "{body}");
    assert!(body.contains(r#"<dd id="user">dr-demo</dd>"#), "{body}");
    assert!(body.contains(r#"<dd id="org">demo-clinic</dd>"#), "{body}");
    assert!(body.contains(r#"<a href="/demo/">"#), "{body}");
    // The sign-in is over: the nonce cookie is cleared, and the same result is not accepted twice.
    let cleared = resp.header("set-cookie").unwrap();
    assert!(
        cleared.starts_with("demo-idp-nonce=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    assert_rejected(&back(&server.addr, &token, nonce), "used already");

    // The other outcomes are shown as such, with values escaped.
    let mut cancelled = result_claims(nonce, now());
    cancelled["outcome"] = json!("cancelled");
    cancelled["amr"] = json!(["<script>"]);
    cancelled["jti"] = json!("another");
    let resp = back(&server.addr, &sign(&cancelled, &key), nonce);
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert!(
        resp.body
            .contains(r#"<h1 id="result">Sign-in cancelled</h1>"#)
    );
    assert!(resp.body.contains("&lt;script&gt;") && !resp.body.contains("<script>"));
}

#[test]
fn tampered_misdirected_expired_and_foreign_results_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start(&data);
    let key = prompt_key(&data);
    let nonce = "fedcba9876543210fedcba9876543210";
    let addr = &server.addr;

    // Tampered: another user's claims under the original signature.
    let token = sign(&result_claims(nonce, now()), &key);
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut forged = result_claims(nonce, now());
    forged["sub"] = json!("admin-demo");
    parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
    assert_rejected(&back(addr, &parts.join("."), nonce), "signature");

    // Signed with another key.
    assert_rejected(
        &back(addr, &sign(&result_claims(nonce, now()), &[9; 32]), nonce),
        "signature",
    );

    // A result for another browser's sign-in, or for a browser that started none.
    assert_rejected(
        &back(addr, &token, "00000000000000000000000000000000"),
        "nonce",
    );
    let no_cookie = raw_request(
        addr,
        "GET",
        &format!("/demo/return?result={token}"),
        &[],
        "",
    );
    assert_rejected(&no_cookie, "nonce");

    // Expired.
    let old = result_claims(nonce, now() - 1_000);
    assert_rejected(&back(addr, &sign(&old, &key), nonce), "expired");

    // Meant for another client, or not from mfa-step.
    let mut other = result_claims(nonce, now());
    other["aud"] = json!("another-idp");
    assert_rejected(&back(addr, &sign(&other, &key), nonce), "another client");
    let mut issuer = result_claims(nonce, now());
    issuer["iss"] = json!("someone-else");
    assert_rejected(
        &back(addr, &sign(&issuer, &key), nonce),
        "not issued by mfa-step",
    );

    // Unsigned (`alg: none`), or another HMAC than HS256.
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&result_claims(nonce, now())).unwrap())
    );
    assert_rejected(&back(addr, &none, nonce), "Result rejected");
    let hs512 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS512),
        &result_claims(nonce, now()),
        &EncodingKey::from_secret(&key),
    )
    .unwrap();
    assert_rejected(&back(addr, &hs512, nonce), "HS256");

    // No result at all.
    assert_rejected(
        &raw_request(addr, "GET", "/demo/return", &[], ""),
        "no result",
    );

    // None of these used up the genuine result.
    assert_eq!(back(addr, &token, nonce).status, 200);
}
