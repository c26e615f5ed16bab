//! The code step as a browser walks it: enroll, come back trusted, a wrong code, a resend, a lock,
//! a cancel, a host failure.

use super::*;

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
fn a_locked_user_sees_the_locked_page_and_returns_denied() {
    let w = World::new();
    let b = Browser::new();
    w.store
        .increment(&keys::failures("acme", "dr-a", 0), 20, None)
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
