//! The hosted pages, driven like a browser drives them: a cookie jar, forms, redirects followed by
//! hand, a test clock.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly on purpose"
)]

use std::cell::RefCell;
use std::collections::BTreeMap;

use rand_core::{OsRng, TryRngCore};

use super::*;
use crate::secret::HmacKey;
use crate::testing::{MemAudit, MemMailer, MemStore};
use crate::{Settings, Store as _};

const T0: i64 = 1_795_000_000;
const RETURN: &str = "https://idp.example/mfa/return";

fn config() -> PromptConfig {
    PromptConfig::new(HmacKey::from_bytes(&[9u8; 32]).unwrap(), "idp-1", &[RETURN])
}

fn request(user: &str, jti: &str, at: i64, extra: &[(&str, serde_json::Value)]) -> String {
    let mut claims = serde_json::json!({
        "iss": "idp-1", "aud": "mfa-step", "sub": user, "org": "acme",
        "email": format!("{user}@clinic.example"), "roles": ["provider"],
        "return_to": format!("{RETURN}?state=s1"), "nonce": "n-1",
        "jti": jti, "iat": at, "exp": at + 120,
    });
    for (k, v) in extra {
        claims[*k] = v.clone();
    }
    config().sign(&claims).unwrap()
}

/// A browser: cookies, a user agent, an address.
struct Browser {
    jar: RefCell<BTreeMap<String, String>>,
    agent: &'static str,
    ip: &'static str,
}

impl Browser {
    fn new() -> Self {
        Self {
            jar: RefCell::new(BTreeMap::new()),
            agent: "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36",
            ip: "203.0.113.7",
        }
    }

    fn cookies(&self) -> String {
        self.jar
            .borrow()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn take(&self, r: &WebResponse) {
        for (name, value) in &r.headers {
            if *name == "set-cookie" {
                let parsed = cookie::Cookie::parse(value.clone()).unwrap();
                if parsed.max_age() == Some(cookie::time::Duration::ZERO) {
                    self.jar.borrow_mut().remove(parsed.name());
                } else {
                    self.jar
                        .borrow_mut()
                        .insert(parsed.name().to_owned(), parsed.value().to_owned());
                }
            }
        }
    }
}

fn header<'a>(r: &'a WebResponse, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.as_str())
}

fn html(r: &WebResponse) -> &str {
    r.html.as_deref().unwrap_or_default()
}

/// The CSRF token in a page's first form.
fn csrf(page: &WebResponse) -> String {
    let h = html(page);
    let at = h.find("name=\"csrf\" value=\"").expect("a form") + 19;
    h[at..at + 32].to_owned()
}

struct World {
    store: MemStore,
    mailer: MemMailer,
    audit: MemAudit,
    key: HmacKey,
    settings: Settings,
}

impl World {
    fn new() -> Self {
        Self {
            store: MemStore::default(),
            mailer: MemMailer::default(),
            audit: MemAudit::default(),
            key: HmacKey::from_bytes(&[7; 32]).unwrap(),
            settings: Settings::default(),
        }
    }

    fn engine(&self) -> Engine<'_> {
        Engine {
            store: &self.store,
            mailer: &self.mailer,
            audit: &self.audit,
            settings: self.settings.clone(),
            key: &self.key,
        }
    }

    fn call(
        &self,
        b: &Browser,
        method: WebMethod,
        path_and_query: &str,
        form: &str,
        at: i64,
    ) -> WebResponse {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let cookies = b.cookies();
        let req = WebRequest {
            method,
            path,
            query,
            form: form.as_bytes(),
            cookies: &cookies,
            user_agent: b.agent,
            client_ip: b.ip,
            accept_language: "en-US,en;q=0.8",
        };
        let r = self.engine().hosted_page(
            Some(&config()),
            &req,
            Timestamp(at),
            &mut OsRng.unwrap_err(),
        );
        b.take(&r);
        r
    }

    fn get(&self, b: &Browser, path: &str, at: i64) -> WebResponse {
        self.call(b, WebMethod::Get, path, "", at)
    }

    fn post(&self, b: &Browser, path: &str, form: &str, at: i64) -> WebResponse {
        self.call(b, WebMethod::Post, path, form, at)
    }

    /// Opens a request and follows the redirect to the step page.
    fn open(&self, b: &Browser, token: &str, at: i64) -> WebResponse {
        let r = self.get(b, &format!("/prompt?request={token}"), at);
        assert_eq!(r.status, 303, "{}", html(&r));
        assert_eq!(header(&r, "location"), Some("/prompt/step"));
        self.get(b, "/prompt/step", at)
    }

    /// The claims of the result a redirect carries.
    fn result(r: &WebResponse) -> serde_json::Value {
        assert_eq!(r.status, 303, "{}", html(r));
        let location = header(r, "location").unwrap();
        assert!(location.starts_with(&format!("{RETURN}?state=s1&result=")));
        let token = location.rsplit("result=").next().unwrap();
        serde_json::from_slice(&config().open(token).unwrap()).unwrap()
    }
}

/// Enrolls `user` in this browser (remembering it when `remember`), returning the final redirect.
fn enroll(w: &World, b: &Browser, user: &str, remember: bool, at: i64) -> WebResponse {
    let page = w.open(b, &request(user, &format!("{user}-enroll"), at, &[]), at);
    assert_eq!(page.status, 200);
    assert!(html(&page).contains("Confirm your email address"));
    let code = w.mailer.last_code().unwrap();
    let spaced = format!("{} {}", &code[..3], &code[3..]);
    let form = format!(
        "csrf={}&code={}{}",
        csrf(&page),
        spaced.replace(' ', "+"),
        if remember { "&remember=on" } else { "" }
    );
    w.post(b, "/prompt/verify", &form, at + 20)
}

#[test]
fn enroll_then_come_back_without_a_code() {
    let w = World::new();
    let b = Browser::new();
    let done = enroll(&w, &b, "dr-a", true, T0);
    let claims = World::result(&done);
    assert_eq!(claims["outcome"], "success");
    assert_eq!(claims["via"], "code");
    assert_eq!(claims["amr"], serde_json::json!(["otp", "mfa"]));
    assert_eq!(claims["nonce"], "n-1");
    assert!(b.jar.borrow().contains_key(devices::COOKIE_NAME));
    assert!(
        !b.jar.borrow().contains_key(SESSION_COOKIE),
        "the session ends with the return"
    );
    let sent = w.mailer.sent.borrow().len();
    // The next login from the same browser and network: straight back, no email.
    let r = w.get(
        &b,
        &format!(
            "/prompt?request={}",
            request("dr-a", "again", T0 + 3600, &[])
        ),
        T0 + 3600,
    );
    assert_eq!(r.status, 303);
    let back = w.get(&b, "/prompt/step", T0 + 3600);
    let claims = World::result(&back);
    assert_eq!(claims["via"], "trusted-device");
    assert_eq!(claims["amr"], serde_json::json!(["mfa"]));
    assert_eq!(w.mailer.sent.borrow().len(), sent);
}

#[test]
fn the_code_page_has_what_the_issue_asks() {
    let w = World::new();
    let b = Browser::new();
    enroll(&w, &b, "dr-a", false, T0);
    let page = w.open(&b, &request("dr-a", "r2", T0 + 60, &[]), T0 + 60);
    let h = html(&page);
    assert_eq!(page.status, 200);
    for needle in [
        "<html lang=\"en\">",
        "<h1 id=\"code-heading\">Check your email</h1>",
        "autocomplete=\"one-time-code\"",
        "inputmode=\"numeric\"",
        "<label for=\"code\">Code from the email</label>",
        "Remember this browser for 30 days",
        "id=\"resend\"",
        "id=\"cancel\"",
        "<p class=\"why\" id=\"why\"><strong>Why am I asked?</strong> The provider role requires a code from your email.</p>",
        "d***@clinic.example",
    ] {
        assert!(h.contains(needle), "missing {needle}\n{h}");
    }
    assert!(!h.contains("<script"), "no script at all");
    let csp = header(&page, "content-security-policy").unwrap();
    assert!(csp.starts_with("default-src 'none'; style-src 'nonce-"));
    assert!(csp.contains("form-action 'self' https://idp.example;"));
    assert!(csp.contains("frame-ancestors 'none'"));
    assert!(!csp.contains("script-src"));
    let nonce = csp
        .split("'nonce-")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap();
    assert!(h.contains(&format!("<style nonce=\"{nonce}\">")));
}

#[test]
fn a_wrong_code_is_announced_and_the_right_one_still_works() {
    let w = World::new();
    let b = Browser::new();
    enroll(&w, &b, "dr-a", false, T0);
    let page = w.open(&b, &request("dr-a", "r2", T0 + 60, &[]), T0 + 60);
    let code = w.mailer.last_code().unwrap();
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let again = w.post(
        &b,
        "/prompt/verify",
        &format!("csrf={}&code={wrong}", csrf(&page)),
        T0 + 70,
    );
    assert_eq!(again.status, 200);
    let h = html(&again);
    assert!(h.contains("id=\"code-error\" role=\"alert\">That code is not right or has expired."));
    assert!(h.contains("aria-invalid=\"true\" aria-describedby=\"code-hint code-error\""));
    let bad = w.post(
        &b,
        "/prompt/verify",
        &format!("csrf={}&code=12ab", csrf(&page)),
        T0 + 80,
    );
    assert!(html(&bad).contains("Enter the 6-digit code from the email."));
    // The wrong-guess delay may apply; after it, the right code passes.
    let ok = w.post(
        &b,
        "/prompt/verify",
        &format!("csrf={}&code={code}", csrf(&page)),
        T0 + 200,
    );
    assert_eq!(World::result(&ok)["outcome"], "success");
}

#[test]
fn resend_sends_the_same_code_and_shows_when_more_may_follow() {
    let w = World::new();
    let b = Browser::new();
    enroll(&w, &b, "dr-a", false, T0);
    let page = w.open(&b, &request("dr-a", "r2", T0 + 400, &[]), T0 + 400);
    let first = w.mailer.last_code().unwrap();
    let again = w.post(
        &b,
        "/prompt/resend",
        &format!("csrf={}", csrf(&page)),
        T0 + 410,
    );
    assert_eq!(again.status, 200);
    assert!(
        html(&again).contains("role=\"status\">We sent the email again. It has the same code.")
    );
    assert_eq!(w.mailer.last_code().unwrap(), first);
    // Keep asking until the window's sends are spent: the page then says when, and says it politely.
    let mut last = again;
    for i in 0..5 {
        last = w.post(
            &b,
            "/prompt/resend",
            &format!("csrf={}", csrf(&page)),
            T0 + 420 + i,
        );
        if last.status == 429 {
            break;
        }
    }
    assert_eq!(last.status, 429, "{}", html(&last));
    assert!(header(&last, "retry-after").is_some());
    assert!(html(&last).contains("You can ask for another email at"));
}

#[test]
fn forms_need_the_sessions_csrf_token() {
    let w = World::new();
    let b = Browser::new();
    let page = w.open(&b, &request("dr-a", "r1", T0, &[]), T0);
    let code = w.mailer.last_code().unwrap();
    let before = w.store.snapshot();
    for form in [
        format!("code={code}"),
        format!("csrf=0000&code={code}"),
        format!("csrf={}&code={code}", "f".repeat(32)),
    ] {
        let r = w.post(&b, "/prompt/verify", &form, T0 + 5);
        assert_eq!(r.status, 403);
        assert!(html(&r).contains("This form is out of date"));
    }
    assert_eq!(w.store.snapshot(), before, "a refused form changes nothing");
    // Another browser cannot use this one's form at all: it has no session.
    let other = Browser::new();
    let r = w.post(
        &other,
        "/prompt/verify",
        &format!("csrf={}&code={code}", csrf(&page)),
        T0 + 5,
    );
    assert_eq!(r.status, 410);
    assert!(html(&r).contains("id=\"expired\""));
}

#[test]
fn sessions_expire() {
    let w = World::new();
    let b = Browser::new();
    let page = w.open(&b, &request("dr-a", "r1", T0, &[]), T0);
    let code = w.mailer.last_code().unwrap();
    let late = T0 + SESSION_TTL_SECONDS + 1;
    let r = w.post(
        &b,
        "/prompt/verify",
        &format!("csrf={}&code={code}", csrf(&page)),
        late,
    );
    assert_eq!(r.status, 410);
    assert!(html(&r).contains("This sign-in has expired"));
}

#[test]
fn refused_requests_get_a_page_and_a_record() {
    let w = World::new();
    let b = Browser::new();
    let good = request("dr-a", "r1", T0, &[]);
    let (body, sig) = good.rsplit_once('.').unwrap();
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    let tampered = format!("{body}.{flipped}{}", &sig[1..]);
    let cases = [
        (tampered, "This sign-in link is not valid"),
        (request("dr-a", "r2", T0 - 1000, &[]), "has expired"),
        (
            request(
                "dr-a",
                "r3",
                T0,
                &[("aud", serde_json::json!("someone-else"))],
            ),
            "made for another service",
        ),
        (
            request(
                "dr-a",
                "r4",
                T0,
                &[("return_to", serde_json::json!("https://evil.example/"))],
            ),
            "somewhere your organization has not approved",
        ),
    ];
    for (token, says) in &cases {
        let r = w.get(&b, &format!("/prompt?request={token}"), T0);
        assert_eq!(r.status, 403, "{says}");
        assert!(html(&r).contains("<h1 id=\"refused\">"), "{says}");
        assert!(html(&r).contains(says), "{says}: {}", html(&r));
        assert!(header(&r, "set-cookie").is_none());
    }
    // Opened once, then replayed.
    assert_eq!(
        w.get(&b, &format!("/prompt?request={good}"), T0).status,
        303
    );
    let replay = w.get(&Browser::new(), &format!("/prompt?request={good}"), T0 + 1);
    assert_eq!(replay.status, 403);
    assert!(html(&replay).contains("already used"));
    let reasons: Vec<String> = w
        .audit
        .entries
        .borrow()
        .iter()
        .filter_map(|e| {
            let v: serde_json::Value = serde_json::from_str(&e.line).ok()?;
            v["reason"].as_str().map(str::to_owned)
        })
        .collect();
    // Every refusal is recorded; the tampered one under whom it claims, marked unverified.
    assert_eq!(
        reasons,
        [
            "prompt:bad-signature",
            "prompt:expired",
            "prompt:wrong-audience",
            "prompt:return-url-not-allowed",
            "prompt:replayed"
        ]
    );
}

#[test]
fn a_locked_user_sees_the_locked_page_and_returns_denied() {
    let w = World::new();
    let b = Browser::new();
    w.store
        .increment(&keys::failures("acme", "dr-a"), 20)
        .unwrap();
    let page = w.open(&b, &request("dr-a", "r1", T0, &[]), T0);
    assert_eq!(page.status, 423);
    assert!(html(&page).contains("<h1 id=\"locked\">Your account is locked</h1>"));
    assert!(w.mailer.sent.borrow().is_empty());
    let back = w.post(
        &b,
        "/prompt/cancel",
        &format!("csrf={}", csrf(&page)),
        T0 + 5,
    );
    let claims = World::result(&back);
    assert_eq!(claims["outcome"], "denied");
    assert_eq!(claims["via"], "locked");
}

#[test]
fn cancel_returns_cancelled() {
    let w = World::new();
    let b = Browser::new();
    let page = w.open(&b, &request("dr-a", "r1", T0, &[]), T0);
    let back = w.post(
        &b,
        "/prompt/cancel",
        &format!("csrf={}", csrf(&page)),
        T0 + 5,
    );
    assert_eq!(World::result(&back)["outcome"], "cancelled");
    // The session is over: its page is gone.
    assert_eq!(w.get(&b, "/prompt/step", T0 + 6).status, 410);
}

#[test]
fn devices_sessions_list_and_revoke_then_return() {
    let w = World::new();
    let b = Browser::new();
    World::result(&enroll(&w, &b, "dr-a", true, T0));
    let devices = serde_json::json!("devices");
    let r = w.get(
        &b,
        &format!(
            "/prompt?request={}",
            request("dr-a", "d1", T0 + 60, &[("purpose", devices.clone())])
        ),
        T0 + 60,
    );
    assert_eq!(r.status, 303);
    // The trusted browser counts as the second factor; then the list, not the IdP.
    let step = w.get(&b, "/prompt/step", T0 + 60);
    assert_eq!(header(&step, "location"), Some("/prompt/devices"));
    let page = w.get(&b, "/prompt/devices", T0 + 60);
    assert_eq!(page.status, 200);
    let h = html(&page);
    assert!(h.contains("<h1 id=\"devices\">Your trusted browsers</h1>"));
    assert!(h.contains("class=\"device current\""));
    assert!(h.contains("Chrome on Linux"), "{h}");
    let id_at = h.find("data-device-id=\"").unwrap() + 16;
    let device_id = h[id_at..id_at + 32].to_owned();
    let revoked = w.post(
        &b,
        "/prompt/devices/revoke",
        &format!("csrf={}&device_id={device_id}", csrf(&page)),
        T0 + 70,
    );
    assert_eq!(header(&revoked, "location"), Some("/prompt/devices"));
    assert!(
        !b.jar.borrow().contains_key(devices::COOKIE_NAME),
        "this browser's cookie goes too"
    );
    let after = w.get(&b, "/prompt/devices", T0 + 71);
    assert!(html(&after).contains("id=\"no-devices\""));
    assert!(html(&after).contains("role=\"status\">Removed."));
    let done = w.post(
        &b,
        "/prompt/done",
        &format!("csrf={}", csrf(&after)),
        T0 + 80,
    );
    assert_eq!(World::result(&done)["outcome"], "success");
    assert!(w.audit.actions().contains(&"device_revoked".to_owned()));
    // Asked again next time.
    let again = w.open(&b, &request("dr-a", "r9", T0 + 120, &[]), T0 + 120);
    assert_eq!(again.status, 200);
    assert!(html(&again).contains("id=\"code-heading\""));
}

#[test]
fn the_devices_page_needs_the_second_factor_first() {
    let w = World::new();
    let b = Browser::new();
    let devices = serde_json::json!("devices");
    let page = w.open(&b, &request("dr-a", "d1", T0, &[("purpose", devices)]), T0);
    assert!(html(&page).contains("Confirm your email address"));
    let r = w.get(&b, "/prompt/devices", T0 + 1);
    assert_eq!(header(&r, "location"), Some("/prompt/step"));
    let r = w.post(
        &b,
        "/prompt/devices/revoke-all",
        &format!("csrf={}", csrf(&page)),
        T0 + 1,
    );
    assert_eq!(header(&r, "location"), Some("/prompt/step"));
}

#[test]
fn pages_speak_spanish_and_wear_the_brand() {
    let w = World::new();
    let b = Browser::new();
    let branding = crate::branding::Branding {
        display_name: "Clínica <Sol>".to_owned(),
        logo_url: Some("https://cdn.example/logo.png".to_owned()),
        primary_color: "#ffd000".to_owned(),
        support_contact: "help@sol.example".to_owned(),
        ..crate::branding::Branding::default_for("acme")
    };
    w.engine().put(&keys::branding("acme"), &branding).unwrap();
    let page = w.open(
        &b,
        &request("dr-a", "r1", T0, &[("locale", serde_json::json!("es-MX"))]),
        T0,
    );
    let h = html(&page);
    assert!(h.contains("<html lang=\"es\">"));
    assert!(h.contains("Confirma tu dirección de correo"));
    assert!(
        h.contains("Clínica &#60;Sol&#62;") || h.contains("Clínica &lt;Sol&gt;"),
        "{h}"
    );
    assert!(!h.contains("<Sol>"));
    assert!(h.contains("<img src=\"https://cdn.example/logo.png\" alt=\"\">"));
    // A light brand color gets dark text.
    assert!(h.contains("background: #ffd000; color: #000000;"));
    assert!(h.contains("¿Necesitas ayuda? Contacta a help@sol.example."));
}

#[test]
fn host_failures_are_a_try_again_page_that_lets_nobody_through() {
    let w = World::new();
    let b = Browser::new();
    let page = w.open(&b, &request("dr-a", "r1", T0, &[]), T0);
    let code = w.mailer.last_code().unwrap();
    w.audit.fail.set(true);
    let r = w.post(
        &b,
        "/prompt/verify",
        &format!("csrf={}&code={code}", csrf(&page)),
        T0 + 5,
    );
    assert_eq!(r.status, 503);
    assert!(html(&r).contains("Nothing was changed and you were not signed in."));
    assert!(header(&r, "location").is_none());
    w.audit.fail.set(false);
    let ok = w.post(
        &b,
        "/prompt/verify",
        &format!("csrf={}&code={code}", csrf(&page)),
        T0 + 6,
    );
    assert_eq!(World::result(&ok)["outcome"], "success");
}

#[test]
fn without_a_prompt_config_the_pages_are_off() {
    let w = World::new();
    let req = WebRequest {
        method: WebMethod::Get,
        path: "/prompt/step",
        query: "",
        form: b"",
        cookies: "",
        user_agent: "",
        client_ip: "",
        accept_language: "",
    };
    let r = w
        .engine()
        .hosted_page(None, &req, Timestamp(T0), &mut OsRng.unwrap_err());
    assert_eq!(r.status, 404);
    assert!(html(&r).contains("id=\"off\""));
}

#[test]
fn header_text_contrast_reaches_aa_for_any_brand_color() {
    let ratio = |a: f64, b: f64| (a.max(b) + 0.05) / (a.min(b) + 0.05);
    for bg in [
        "#000000", "#ffffff", "#1f3a5f", "#ffd000", "#777777", "#808080", "#e8eef5", "#0055ff",
    ] {
        let fg = if text_color_on(bg) == "#ffffff" {
            "#ffffff"
        } else {
            "#000000"
        };
        let r = ratio(luminance(bg), luminance(fg));
        assert!(r >= 4.5, "{bg} on {fg}: {r:.2}");
    }
}

/// A store whose `delete` of one key fails: the session cannot be ended.
struct FailDelete<'a>(&'a MemStore, String);

impl crate::Store for FailDelete<'_> {
    fn get(&self, k: &str) -> crate::ports::PortResult<Option<Vec<u8>>> {
        self.0.get(k)
    }
    fn set(&self, k: &str, v: &[u8]) -> crate::ports::PortResult<()> {
        self.0.set(k, v)
    }
    fn delete(&self, k: &str) -> crate::ports::PortResult<()> {
        if k == self.1 {
            Err(crate::PortError("injected".into()))
        } else {
            self.0.delete(k)
        }
    }
    fn increment(&self, k: &str, d: i64) -> crate::ports::PortResult<i64> {
        self.0.increment(k, d)
    }
    fn list_keys(&self, p: &str) -> crate::ports::PortResult<Vec<String>> {
        self.0.list_keys(p)
    }
}

#[test]
fn a_rotated_device_cookie_reaches_the_browser_even_when_the_return_fails() {
    let w = World::new();
    let b = Browser::new();
    World::result(&enroll(&w, &b, "dr-a", true, T0));
    let before = b.jar.borrow()[devices::COOKIE_NAME].clone();
    let later = T0 + 3600;
    let r = w.get(
        &b,
        &format!("/prompt?request={}", request("dr-a", "r2", later, &[])),
        later,
    );
    assert_eq!(r.status, 303);
    // The trusted browser is let through and its token rotated, then the session cannot be
    // ended: nobody is let through, but the browser keeps the token the store now expects.
    let session_key = w
        .store
        .snapshot()
        .0
        .into_iter()
        .map(|(k, _)| k)
        .find(|k| k.starts_with("v1:prompt-session:"))
        .unwrap();
    let failing = FailDelete(&w.store, session_key);
    let engine = Engine {
        store: &failing,
        ..w.engine()
    };
    let cookies = b.cookies();
    let req = WebRequest {
        method: WebMethod::Get,
        path: "/prompt/step",
        query: "",
        form: b"",
        cookies: &cookies,
        user_agent: b.agent,
        client_ip: b.ip,
        accept_language: "",
    };
    let page = engine.hosted_page(
        Some(&config()),
        &req,
        Timestamp(later),
        &mut OsRng.unwrap_err(),
    );
    b.take(&page);
    assert_eq!(page.status, 503);
    assert!(header(&page, "location").is_none());
    let after = b.jar.borrow()[devices::COOKIE_NAME].clone();
    assert_ne!(after, before, "rotated");
    // The next visit, with the new cookie, is still trusted (no reuse alarm, no code).
    let next = later + 100;
    let again = w.get(
        &b,
        &format!("/prompt?request={}", request("dr-a", "r3", next, &[])),
        next,
    );
    assert_eq!(again.status, 303);
    let back = w.get(&b, "/prompt/step", next);
    assert_eq!(World::result(&back)["via"], "trusted-device");
    assert!(!w.audit.actions().contains(&"device_token_reuse".to_owned()));
}

#[test]
fn a_user_agent_with_control_characters_still_gets_a_code_page() {
    let w = World::new();
    let mut b = Browser::new();
    b.agent = "Mozilla/5.0\t(X11)\u{7f} Chrome/156.0";
    let page = w.open(&b, &request("dr-a", "r1", T0, &[]), T0);
    assert_eq!(page.status, 200, "{}", html(&page));
    let code = w.mailer.last_code().unwrap();
    let ok = w.post(
        &b,
        "/prompt/verify",
        &format!("csrf={}&code={code}", csrf(&page)),
        T0 + 5,
    );
    assert_eq!(World::result(&ok)["outcome"], "success");
}
