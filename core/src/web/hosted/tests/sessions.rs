//! Sessions and requests: forms need the session's CSRF token, sessions expire, refused requests
//! get a page and a record, and without a prompt configuration the pages are off.

use super::*;

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
    // Every refusal of a signed request is recorded; the tampered one is only noted in the
    // host's log (it is nobody's to record: its sender chose every name in it).
    assert_eq!(
        w.audit
            .notes
            .borrow()
            .iter()
            .map(|n| n.rule.as_str())
            .collect::<Vec<_>>(),
        ["prompt:bad-signature"]
    );
    assert_eq!(
        reasons,
        [
            "prompt:expired",
            "prompt:wrong-audience",
            "prompt:return-url-not-allowed",
            "prompt:replayed"
        ]
    );
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
