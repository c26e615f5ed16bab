//! The branding screen from the admin's browser: the view recorded, the email beside the form
//! (its frame loads the draft's email with the sample code and its own policy), a preview that
//! never saves, a save that is `set_branding`'s, bad fields refused by name with nothing saved,
//! CSRF, another organization refused, the frame's route behind the session and org scope.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use super::branding::{BrandingWords, EMAIL_CSP, languages};
use super::policy_tests::unescape;
use super::tests::{T0, World, actor, header, html, request};
use super::*;
use crate::kernel::ports::Store;

/// A session for an org-admin of `org`: its cookie and CSRF token.
fn signed_in(w: &mut World, org: &str) -> (String, String) {
    let link = w.link(&actor(org, &["org-admin"]), org, T0).unwrap();
    let cookie = w.open(&link, T0);
    let page = w.page(&request(WebMethod::Get, BRANDING, "", &cookie), T0.plus(1));
    let csrf = html(&page)
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    (cookie, csrf)
}

fn get(w: &mut World, path: &str, query: &str, cookie: &str) -> WebResponse {
    w.page(&request(WebMethod::Get, path, query, cookie), T0.plus(2))
}

fn post(w: &mut World, query: &str, cookie: &str, form: &str) -> WebResponse {
    let mut req = request(WebMethod::Post, BRANDING, query, cookie);
    req.form = form.as_bytes();
    w.page(&req, T0.plus(3))
}

/// A draft as a browser sends it, `changes` (name, value) over Globex's look.
fn form(csrf: &str, step: &str, changes: &[(&str, &str)]) -> String {
    let mut fields = vec![
        ("csrf", csrf),
        ("step", step),
        ("display_name", "Globex Clinic <North>"),
        ("logo_url", "https://cdn.globex.example/logo.png"),
        ("primary_color", "#aa0000"),
        ("accent_color", "#00ff66"),
        ("sender_name", "Globex Security"),
        ("support_contact", "help@globex.example"),
        ("footer_text", "Globex Clinic, 1 Main St"),
        ("default_language", "en"),
    ];
    for (name, value) in changes {
        match fields.iter_mut().find(|(n, _)| n == name) {
            Some(f) => f.1 = value,
            None => fields.push((name, value)),
        }
    }
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (n, v) in fields {
        s.append_pair(n, v);
    }
    s.finish()
}

fn stored(w: &World, org: &str) -> Option<Vec<u8>> {
    w.store.get(&crate::kernel::keys::branding(org)).unwrap()
}

/// The email frame's address on a page (its path and query).
fn frame_src(html: &str) -> String {
    let src = html
        .split("id=\"email-frame\"")
        .nth(1)
        .unwrap()
        .split(" src=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    unescape(src)
}

/// The frame's document, as the browser would load it for this page.
fn frame(w: &mut World, page: &WebResponse, cookie: &str) -> WebResponse {
    let src = frame_src(html(page));
    let (path, query) = src.split_once('?').unwrap();
    assert_eq!(path, BRANDING_EMAIL);
    let query = query.to_owned();
    get(w, BRANDING_EMAIL, &query, cookie)
}

#[test]
fn the_view_is_recorded_and_shows_the_saved_looks_email_beside_the_form() {
    let mut w = World::new();
    let (cookie, _) = signed_in(&mut w, "acme");
    let page = get(&mut w, BRANDING, "", &cookie);
    assert_eq!(page.status, 200);
    let h = html(&page);
    assert!(h.contains("<h1 id=\"branding\">Branding</h1>"));
    assert!(h.contains("id=\"display_name\" name=\"display_name\" value=\"acme\""));
    assert!(
        h.contains("type=\"color\" id=\"primary_color\" name=\"primary_color\" value=\"#1f3a5f\"")
    );
    assert!(unescape(h).contains("Now #1f3a5f."));
    assert!(h.contains("<option value=\"es\" lang=\"es\">"));
    assert!(h.contains(
        "<iframe class=\"email\" id=\"email-frame\" title=\"The code email as HTML\" sandbox src="
    ));
    assert!(h.contains("<pre class=\"email\" id=\"email-text\""));
    assert!(h.contains("123456"), "the text part, with the sample code");
    assert!(!h.contains("id=\"draft-note\""));
    let views: Vec<_> = w
        .records()
        .into_iter()
        .filter(|r| r.1 == "admin_console_viewed" && r.3.as_deref() == Some("console:branding"))
        .collect();
    assert_eq!(views.len(), 2, "the sign-in's page and this one");
    assert!(views.iter().all(|r| r.0 == "acme" && r.2 == "admin-1"));
    // The saved look's frame.
    let email = frame(&mut w, &page, &cookie);
    assert_eq!(
        email.status,
        200,
        "{} {}",
        frame_src(html(&page)),
        html(&email)
    );
    assert!(html(&email).contains("#1f3a5f"));
}

#[test]
fn a_preview_frames_the_drafts_email_with_the_sample_code_and_saves_nothing() {
    let mut w = World::new();
    let (cookie, csrf) = signed_in(&mut w, "acme");
    let records = w.records().len();
    let page = post(&mut w, "", &cookie, &form(&csrf, "preview", &[]));
    assert_eq!(page.status, 200, "{}", html(&page));
    let h = html(&page);
    assert!(h.contains("id=\"draft-note\""));
    // The form keeps the draft, escaped.
    assert!(h.contains("value=\"Globex Clinic &#60;North&#62;\""), "{h}");
    assert!(!h.contains("<North>"));
    assert!(unescape(h).contains("Now #aa0000."));
    let email = frame(&mut w, &page, &cookie);
    assert_eq!(email.status, 200);
    let mail = html(&email);
    assert!(
        unescape(mail).contains("Globex Clinic <North>"),
        "the draft's name"
    );
    assert!(!mail.contains("<North>"));
    assert!(
        mail.contains("#aa0000") && mail.contains("#00ff66"),
        "the draft's colors"
    );
    assert!(mail.contains("https://cdn.globex.example/logo.png"));
    assert!(mail.contains("123456"), "the sample code");
    // Not a real code: nothing was sent, no challenge opened, nothing stored.
    assert!(w.mailer.sent.borrow().is_empty());
    assert_eq!(stored(&w, "acme"), None);
    assert!(!w.records().iter().any(|r| r.1 == "branding_changed"));
    // The preview's page view is recorded; the frame adds nothing.
    let added: Vec<_> = w.records().into_iter().skip(records).collect();
    assert_eq!(added.len(), 1);
    assert_eq!(added[0].3.as_deref(), Some("console:branding:preview"));
}

#[test]
fn a_save_stores_the_branding_and_records_it_with_the_admin_as_actor() {
    let mut w = World::new();
    let (cookie, csrf) = signed_in(&mut w, "acme");
    let page = post(
        &mut w,
        "",
        &cookie,
        &form(&csrf, "save", &[("logo_url", "")]),
    );
    assert_eq!(page.status, 200, "{}", html(&page));
    let h = html(&page);
    assert!(h.contains("<h1 id=\"branding-saved\">Branding saved</h1>"));
    assert!(!h.contains("id=\"draft-note\""));
    let saved: Branding = serde_json::from_slice(&stored(&w, "acme").unwrap()).unwrap();
    assert_eq!(saved.display_name, "Globex Clinic <North>");
    assert_eq!(saved.logo_url, None, "an empty address is no logo");
    assert_eq!(saved.primary_color, "#aa0000");
    let changed: Vec<_> = w
        .records()
        .into_iter()
        .filter(|r| r.1 == "branding_changed")
        .collect();
    assert_eq!(changed.len(), 1);
    assert_eq!(
        (changed[0].0.as_str(), changed[0].2.as_str()),
        ("acme", "admin-1")
    );
    // The new email beside it, and on the next visit.
    assert!(html(&frame(&mut w, &page, &cookie)).contains("#aa0000"));
    let again = get(&mut w, BRANDING, "", &cookie);
    assert!(html(&again).contains("value=\"Globex Security\""));
}

#[test]
fn a_bad_color_or_logo_address_is_refused_by_name_and_nothing_is_saved_or_rendered() {
    let mut w = World::new();
    let (cookie, csrf) = signed_in(&mut w, "acme");
    // (the fields changed, the fields refused)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: [Case<'_>; 5] = [
        (&[("primary_color", "red")], &["primary_color"]),
        (
            &[("accent_color", "#12345;background:url(x)")],
            &["accent_color"],
        ),
        (
            &[("logo_url", "http://globex.example/l.png")],
            &["logo_url"],
        ),
        (
            &[
                ("logo_url", "https://a.example/\"onerror=x"),
                ("primary_color", "#zzzzzz"),
                ("display_name", ""),
            ],
            &["display_name", "logo_url", "primary_color"],
        ),
        (&[("default_language", "xx")], &["default_language"]),
    ];
    for (changes, fields) in cases {
        for step in ["preview", "save"] {
            let page = post(&mut w, "", &cookie, &form(&csrf, step, changes));
            assert_eq!(page.status, 400, "{changes:?} {step}");
            let h = html(&page);
            assert!(h.contains("id=\"form-errors\""));
            for field in fields {
                assert!(
                    h.contains(&format!(
                        "aria-describedby=\"{field}-hint {field}-error\" aria-invalid=\"true\""
                    )),
                    "{field} {step}"
                );
                assert!(h.contains(&format!("id=\"{field}-error\"")));
            }
            assert_eq!(
                h.matches("aria-invalid").count(),
                fields.len(),
                "{changes:?}"
            );
            // A refused draft is never rendered as an email.
            assert!(!h.contains("email-frame") && !h.contains("123456"));
            assert_eq!(stored(&w, "acme"), None);
        }
    }
    let page = post(
        &mut w,
        "",
        &cookie,
        &form(&csrf, "save", &[("primary_color", "red")]),
    );
    assert!(unescape(html(&page)).contains("Enter a color like #1f3a5f."));
    assert!(!w.records().iter().any(|r| r.1 == "branding_changed"));
    // The frame's route refuses the same drafts with a plain page and no email.
    let src = frame_src(html(&get(&mut w, BRANDING, "", &cookie)));
    let query = src.split_once('?').unwrap().1.replace("%231f3a5f", "red");
    let refused = get(&mut w, BRANDING_EMAIL, &query, &cookie);
    assert_eq!(refused.status, 400);
    assert!(html(&refused).contains("id=\"invalid-draft\""));
    assert!(!html(&refused).contains("123456"));
    let csp = header(&refused, "content-security-policy").unwrap();
    assert!(
        csp.contains("sandbox") && !csp.contains("style-src"),
        "{csp}"
    );
}

#[test]
fn a_post_without_the_sessions_csrf_token_is_refused_and_saves_nothing() {
    let mut w = World::new();
    let (cookie, csrf) = signed_in(&mut w, "acme");
    let good = form(&csrf, "save", &[]);
    for bad in [
        good.replace(&format!("csrf={csrf}&"), ""),
        good.replace(&csrf, &"0".repeat(32)),
    ] {
        assert_eq!(post(&mut w, "", &cookie, &bad).status, 403);
        assert_eq!(stored(&w, "acme"), None);
    }
    assert_eq!(post(&mut w, "", "", &good).status, 401);
    assert_eq!(stored(&w, "acme"), None);
    assert_eq!(
        post(&mut w, "", &cookie, &good).status,
        200,
        "the token works"
    );
}

#[test]
fn another_organizations_admin_and_a_browser_without_a_session_are_refused() {
    let mut w = World::new();
    let (acme_cookie, _) = signed_in(&mut w, "acme");
    let acme_page = get(&mut w, BRANDING, "", &acme_cookie);
    let src = frame_src(html(&acme_page));
    let query = src.split_once('?').unwrap().1.to_owned();
    // The frame's route: no session, an expired one, another organization's scope.
    assert_eq!(get(&mut w, BRANDING_EMAIL, &query, "").status, 401);
    let late = w.page(
        &request(WebMethod::Get, BRANDING_EMAIL, &query, &acme_cookie),
        T0.plus(SESSION_TTL_SECONDS + 1),
    );
    assert_eq!(late.status, 401);
    let (cookie, csrf) = signed_in(&mut w, "globex");
    for (path, q) in [
        (BRANDING, "org=acme".to_owned()),
        (BRANDING_EMAIL, format!("{query}&org=acme")),
    ] {
        let page = get(&mut w, path, &q, &cookie);
        assert_eq!(page.status, 403, "{path}");
        assert!(!html(&page).contains("123456"));
    }
    let denied = w
        .records()
        .into_iter()
        .filter(|r| {
            r.0 == "globex"
                && r.1 == "access_denied"
                && r.3.as_deref() == Some("console:not-authorized:target-org:acme")
        })
        .count();
    assert_eq!(denied, 2, "both refusals recorded in globex's stream");
    let page = post(&mut w, "org=acme", &cookie, &form(&csrf, "save", &[]));
    assert_eq!(page.status, 403);
    assert_eq!(stored(&w, "acme"), None);
    // Globex's own save touches globex only.
    assert_eq!(
        post(&mut w, "", &cookie, &form(&csrf, "save", &[])).status,
        200
    );
    assert!(stored(&w, "globex").is_some());
    assert_eq!(stored(&w, "acme"), None);
    assert!(
        !w.records()
            .iter()
            .any(|r| r.0 == "acme" && r.1 == "branding_changed")
    );
}

#[test]
fn the_page_may_frame_its_own_origin_and_the_email_only_that_page() {
    let mut w = World::new();
    let (cookie, csrf) = signed_in(&mut w, "acme");
    for page in [
        get(&mut w, BRANDING, "", &cookie),
        post(&mut w, "", &cookie, &form(&csrf, "preview", &[])),
    ] {
        let csp = header(&page, "content-security-policy").unwrap();
        assert!(
            csp.starts_with("default-src 'none'; style-src 'nonce-"),
            "{csp}"
        );
        assert!(
            csp.contains("frame-src 'self'; frame-ancestors 'none'"),
            "{csp}"
        );
        assert!(!csp.contains("script-src"), "{csp}");
        let email = frame(&mut w, &page, &cookie);
        assert_eq!(
            header(&email, "content-security-policy"),
            Some(EMAIL_CSP),
            "the email's own policy"
        );
    }
    // The email's inline styles may apply (a srcdoc frame would inherit the nonce-only policy
    // and lose them); it runs no script, has an opaque origin, and only the console frames it.
    for part in [
        "style-src 'unsafe-inline'",
        "sandbox",
        "frame-ancestors 'self'",
        "default-src 'none'",
    ] {
        assert!(EMAIL_CSP.contains(part), "{part}");
    }
    assert!(!EMAIL_CSP.contains("script-src"));
    // Other screens still frame nothing.
    let policy = get(&mut w, POLICY, "", &cookie);
    let csp = header(&policy, "content-security-policy").unwrap();
    assert!(!csp.contains("frame-src"), "{csp}");
}

#[test]
fn every_language_has_every_branding_word_and_the_page_speaks_spanish() {
    super::words::check_languages::<BrandingWords>(languages(), |t| {
        vec![
            (t.display_name_hint.clone(), vec!["{min}", "{max}"]),
            (t.sender_name_hint.clone(), vec!["{min}", "{max}"]),
            (t.support_contact_hint.clone(), vec!["{max}"]),
            (t.footer_text_hint.clone(), vec!["{max}"]),
            (t.color_hint.clone(), vec!["{hex}"]),
            (t.sample_note.clone(), vec!["{language}"]),
            (t.err_line.clone(), vec!["{min}", "{max}"]),
            (t.err_logo.clone(), vec!["{max}"]),
        ]
    });
    let mut w = World::new();
    let (cookie, csrf) = signed_in(&mut w, "acme");
    let page = get(&mut w, BRANDING, "lang=es", &cookie);
    assert_eq!(page.status, 200);
    let h = unescape(html(&page));
    assert!(h.contains("<h1 id=\"branding\">Imagen</h1>"));
    assert!(h.contains("action=\"/admin/console/branding?lang=es\""));
    assert!(h.contains("De 1 a 80 caracteres, en una línea."));
    // A Spanish default language: the email beside the form is in Spanish.
    let page = post(
        &mut w,
        "lang=es",
        &cookie,
        &form(&csrf, "preview", &[("default_language", "es")]),
    );
    assert_eq!(page.status, 200);
    assert!(frame_src(html(&page)).ends_with("&lang=es"));
    assert!(unescape(html(&page)).contains("El correo se muestra en Español"));
}

mod any_draft {
    use proptest::prelude::*;

    use super::*;

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "save",
                "preview",
                "",
                "en",
                "es",
                "xx",
                "#aa0000",
                "#AA00zz",
                "red",
                "https://a.example/l.png",
                "http://a.example/l.png",
                "https://a.example/\"x",
                "Acme\r\nBcc: x@evil.example",
                "<script>alert(1)</script>",
            ])
            .prop_map(str::to_owned),
            ".{0,90}",
        ]
    }

    fn fields() -> impl Strategy<Value = Vec<(&'static str, String)>> {
        let name = prop::sample::select(vec![
            "step",
            "display_name",
            "logo_url",
            "primary_color",
            "accent_color",
            "sender_name",
            "support_contact",
            "footer_text",
            "default_language",
            "lang",
            "csrf",
        ]);
        prop::collection::vec((name, value()), 0..14)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Whatever a browser posts or puts in the frame's query is a page (never a panic); the
        /// only branding ever stored, and the only one ever rendered as an email, is one
        /// `set_branding` accepts.
        #[test]
        fn is_a_page_and_only_a_valid_branding_is_stored_or_rendered(
            fields in fields(),
            tail in prop::collection::vec(any::<u8>(), 0..40),
        ) {
            let mut w = World::new();
            let (cookie, csrf) = signed_in(&mut w, "acme");
            let mut body = form_urlencoded::Serializer::new(String::new());
            body.append_pair("csrf", &csrf);
            for (name, value) in &fields {
                body.append_pair(name, value);
            }
            let mut body = body.finish().into_bytes();
            body.push(b'&');
            body.extend_from_slice(&tail);
            let mut req = request(WebMethod::Post, BRANDING, "", &cookie);
            req.form = &body;
            let page = w.page(&req, T0.plus(3));
            prop_assert!(matches!(page.status, 200 | 400 | 403), "{}", page.status);
            if let Some(bytes) = stored(&w, "acme") {
                let branding: Branding = serde_json::from_slice(&bytes).unwrap();
                prop_assert!(branding.validate().is_ok());
            }
            let query = String::from_utf8_lossy(&body).replace(&format!("csrf={csrf}"), "");
            let email = get(&mut w, BRANDING_EMAIL, &query, &cookie);
            prop_assert!(matches!(email.status, 200 | 400 | 403), "{}", email.status);
            if email.status == 200 {
                prop_assert_eq!(header(&email, "content-security-policy"), Some(EMAIL_CSP));
                prop_assert!(super::super::branding::draft_of(query.as_bytes()).validate().is_ok());
            } else {
                prop_assert!(!html(&email).contains("123456"));
            }
        }
    }
}

#[test]
fn an_audit_failure_shows_try_again_and_saves_nothing() {
    let mut w = World::new();
    let (cookie, csrf) = signed_in(&mut w, "acme");
    w.audit.fail.set(true);
    let page = get(&mut w, BRANDING, "", &cookie);
    assert_eq!(page.status, 503);
    assert!(!html(&page).contains("email-frame"));
    for step in ["preview", "save"] {
        let page = post(&mut w, "", &cookie, &form(&csrf, step, &[]));
        assert_eq!(page.status, 503, "{step}");
        assert!(!html(&page).contains("123456"));
    }
    w.audit.fail.set(false);
    assert_eq!(stored(&w, "acme"), None);
    assert!(!w.records().iter().any(|r| r.1 == "branding_changed"));
}
