//! The hosted prompt pages on Spin, as a browser sent by an IdP meets them. The browser's network
//! is its socket's source address (127.0.0.1, or 127.1.0.1 outside its /16): Spin puts the peer
//! address in `spin-client-addr`, which the adapter names as the client's address.

use std::net::Ipv4Addr;

use serde_json::{Value, json};

use crate::support::idp::{Browser, check_result, signed_request};
use crate::support::{App, MailSink, OTHER_NETWORK, Reply, email};

/// The code page: a form posting to `/prompt/verify`.
fn assert_code_page(app: &App, page: &Reply) {
    assert_eq!(
        page.status,
        200,
        "{}\ncomponent's stderr:\n{}",
        page.text,
        app.component_stderr()
    );
    assert!(
        page.text.contains("action=\"/prompt/verify\""),
        "not the code page: {}",
        page.text
    );
    assert_eq!(page.header("cache-control"), Some("no-store"));
    assert!(
        page.header("content-security-policy")
            .is_some_and(|csp| csp.contains("frame-ancestors 'none'")),
        "{:?}",
        page.headers
    );
}

/// The result a return to the IdP carries, checked as the IdP checks it.
fn returned(app: &App, reply: &Reply, nonce: &str) -> Value {
    assert_eq!(reply.status, 303, "{}", reply.text);
    let claims = check_result(app, reply.header("location").unwrap());
    assert_eq!(claims["nonce"], nonce, "{claims}");
    claims
}

/// Signs `user` in through the prompt with the emailed code, remembering the browser.
fn sign_in_remembering(app: &App, mail: &MailSink, browser: &mut Browser, org: &str, user: &str) {
    let before = mail.to(&email(user)).len();
    let page = browser.open(app, &signed_request(app, org, user, "login", "first"));
    assert_code_page(app, &page);
    assert_eq!(
        mail.to(&email(user)).len(),
        before + 1,
        "the code was emailed"
    );
    let code = mail.code(&email(user));
    let back = browser.submit(
        app,
        &page,
        "/prompt/verify",
        &format!("code={code}&remember=on"),
    );
    let claims = returned(app, &back, "first");
    assert_eq!(claims["outcome"], "success", "{claims}");
    assert_eq!(claims["via"], "code", "{claims}");
    assert_eq!(claims["amr"], json!(["otp", "mfa"]), "{claims}");
    assert_eq!(
        (&claims["sub"], &claims["org"]),
        (&json!(user), &json!(org))
    );
    assert!(
        browser.device_cookie().is_some(),
        "the browser was not remembered"
    );
}

/// The `ip` of each of `user`'s audit records, in order.
fn recorded_ips(app: &App, org: &str, user: &str) -> Vec<(String, String)> {
    app.audit_records(org)
        .iter()
        .filter(|r| r["subject"] == user)
        .map(|r| {
            (
                r["action"].as_str().unwrap_or_default().to_owned(),
                r["ip"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect()
}

/// A remembered browser comes back without a code on its network, and is asked for one from
/// another network (its socket's source address, 127.1.0.1).
pub fn remembered_then_new_network(app: &App, mail: &MailSink, org: &str) {
    let user = "dr-web";
    let mut browser = Browser::new(Ipv4Addr::LOCALHOST);
    sign_in_remembering(app, mail, &mut browser, org, user);
    let cookie = browser.device_cookie();

    // Same browser, same network: straight back, no email, the cookie rotated.
    let emails = mail.to(&email(user)).len();
    let back = browser.open(app, &signed_request(app, org, user, "login", "second"));
    let claims = returned(app, &back, "second");
    assert_eq!(claims["outcome"], "success", "{claims}");
    assert_eq!(claims["via"], "trusted-device", "{claims}");
    assert_eq!(claims["amr"], json!(["mfa"]), "{claims}");
    assert_eq!(mail.to(&email(user)).len(), emails, "no email");
    assert_ne!(browser.device_cookie(), cookie, "the token rotated");

    // Same browser on another network: a code again.
    browser.move_to(OTHER_NETWORK);
    let page = browser.open(app, &signed_request(app, org, user, "login", "third"));
    assert_code_page(app, &page);
    assert_eq!(
        mail.to(&email(user)).len(),
        emails + 1,
        "a code was emailed"
    );
    let code = mail.code(&email(user));
    let back = browser.submit(app, &page, "/prompt/verify", &format!("code={code}"));
    let claims = returned(app, &back, "third");
    assert_eq!(claims["via"], "code", "{claims}");

    let ips = recorded_ips(app, org, user);
    assert!(
        ips.iter()
            .any(|(action, ip)| action == "device_challenged" && ip == "127.1.0.1"),
        "the new network's challenge is recorded with the socket's address: {ips:?}"
    );
    assert!(
        ips.iter()
            .all(|(_, ip)| ip == "127.0.0.1" || ip == "127.1.0.1"),
        "{ips:?}"
    );
}

/// The address the component sees is the socket's, as Spin reports it in `spin-client-addr`:
/// - `x-mfa-client-ip` (the header `serve` overwrites) means nothing on Spin: a browser on another
///   network that sends it is asked for a code;
/// - a browser that sends `spin-client-addr` itself does not get its value believed: Spin passes
///   the client's value beside its own, the component reads the two as no address at all, and the
///   page fails closed (503, nothing changed) instead of trusting either.
pub fn client_address_is_the_sockets(app: &App, mail: &MailSink, org: &str) {
    let user = "dr-addr";
    let mut browser = Browser::new(Ipv4Addr::LOCALHOST);
    sign_in_remembering(app, mail, &mut browser, org, user);

    // From the other network, naming the trusted one in serve's header: a code.
    browser.move_to(OTHER_NETWORK);
    browser.forged_header = Some(("x-mfa-client-ip".to_owned(), "127.0.0.1".to_owned()));
    let emails = mail.to(&email(user)).len();
    let page = browser.open(
        app,
        &signed_request(app, org, user, "login", "forged-serve"),
    );
    assert_code_page(app, &page);
    assert_eq!(
        mail.to(&email(user)).len(),
        emails + 1,
        "a code was emailed"
    );
    let back = browser.submit(app, &page, "/prompt/cancel", "");
    assert_eq!(returned(app, &back, "forged-serve")["outcome"], "cancelled");

    // Naming the trusted network in Spin's own header, from either network: never trusted.
    for from in [OTHER_NETWORK, Ipv4Addr::LOCALHOST] {
        browser.move_to(from);
        browser.forged_header = Some(("spin-client-addr".to_owned(), "127.0.0.1:40000".to_owned()));
        let nonce = format!("forged-spin-{from}");
        let answer = browser.open(app, &signed_request(app, org, user, "login", &nonce));
        assert_eq!(
            answer.status, 503,
            "a client-sent spin-client-addr from {from}: {}",
            answer.text
        );
        assert!(
            answer.text.contains("Nothing was changed"),
            "{}",
            answer.text
        );
    }

    // Back home without it: still trusted (the forgeries changed nothing).
    browser.forged_header = None;
    let back = browser.open(app, &signed_request(app, org, user, "login", "home"));
    let claims = returned(app, &back, "home");
    assert_eq!(claims["via"], "trusted-device", "{claims}");

    let ips = recorded_ips(app, org, user);
    assert!(
        ips.iter().any(|(_, ip)| ip == "127.1.0.1"),
        "the socket's address reached the component: {ips:?}"
    );
    assert!(
        ips.iter()
            .all(|(_, ip)| ip == "127.0.0.1" || ip == "127.1.0.1"),
        "only socket addresses are recorded: {ips:?}"
    );
}
