//! Devices sessions: the trusted-browser list after the second factor, and a rotated device cookie
//! that must reach the browser whatever fails after the rotation.

use super::*;

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

/// A store whose `delete` of one key fails: the session cannot be ended.
struct FailDelete<'a>(&'a MemStore, String);

impl Store for FailDelete<'_> {
    fn get(&self, k: &str) -> PortResult<Option<Vec<u8>>> {
        self.0.get(k)
    }
    fn set(&self, k: &str, v: &[u8], e: Option<i64>) -> PortResult<()> {
        self.0.set(k, v, e)
    }
    fn delete(&self, k: &str) -> PortResult<()> {
        if k == self.1 {
            Err(PortError("injected".into()))
        } else {
            self.0.delete(k)
        }
    }
    fn increment(&self, k: &str, d: i64, e: Option<i64>) -> PortResult<i64> {
        self.0.increment(k, d, e)
    }
    fn list_keys(&self, p: &str) -> PortResult<Vec<String>> {
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
