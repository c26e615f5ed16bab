//! Branded verification emails through the compiled component: each organization's look, hostile
//! values escaped, header injection refused, English and Spanish wording, and a real SMTP delivery
//! (to an in-process SMTP server on loopback) that a MIME parser reads as a mail client would and
//! whose HTML an HTML5 parser accepts without a parse error. The email rendered by a browser is the
//! browser suite's (`tests/browser/run.mjs`, through the preview page of `serve --demo`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use host_harness::backends::{MemoryAuditSink, MemoryStore, SmtpConfig, SmtpMailer, SmtpTls};
use host_harness::wit::{self, Branding, ErrorKind, MfaError};
use host_harness::{Backends, Clock, TestClock};
use mail_parser::{MessageParser, MimeHeaders, PartType};
use mfa_step_test_support::SmtpSink;

const SUNRISE: &str = "sunrise-clinic";
const HARBOR: &str = "harbor-health";

fn admin(org: &str) -> wit::Actor {
    wit::Actor {
        user_id: format!("{org}-admin"),
        org_id: org.to_owned(),
        roles: vec!["org-admin".to_owned()],
        ip: "198.51.100.4".to_owned(),
        user_agent: "admin console".to_owned(),
    }
}

fn sunrise() -> Branding {
    Branding {
        display_name: "Sunrise Family Clinic".to_owned(),
        logo_url: Some("https://cdn.sunrise-clinic.example/logo.png".to_owned()),
        primary_color: "#b3461d".to_owned(),
        accent_color: "#fdf1e7".to_owned(),
        sender_name: "Sunrise Family Clinic".to_owned(),
        support_contact: "+1 555 0100".to_owned(),
        footer_text: "Sunrise Family Clinic, 12 Dawn Road".to_owned(),
        default_language: "es".to_owned(),
    }
}

fn harbor() -> Branding {
    Branding {
        display_name: "Harbor Health".to_owned(),
        logo_url: None,
        primary_color: "#0b4f6c".to_owned(),
        accent_color: "#e6f2f7".to_owned(),
        sender_name: "Harbor Health Security".to_owned(),
        support_contact: "help@harbor.example".to_owned(),
        footer_text: String::new(),
        default_language: "en".to_owned(),
    }
}

async fn set_branding(backends: &Backends, org: &str, b: &Branding) -> Result<(), MfaError> {
    let (mut store, plugin) = http_app().instantiate(backends).await.unwrap();
    plugin
        .mfa_step_plugin_admin()
        .call_set_branding(&mut store, &admin(org), org, b)
        .await
        .expect("no trap")
}

async fn preview(
    backends: &Backends,
    org: &str,
    lang: Option<&str>,
    tz: Option<&str>,
) -> wit::EmailPreview {
    let (mut store, plugin) = http_app().instantiate(backends).await.unwrap();
    plugin
        .mfa_step_plugin_admin()
        .call_preview_email(&mut store, &admin(org), org, lang, tz)
        .await
        .expect("no trap")
        .unwrap()
}

fn user_of(org: &str, user: &str, locale: Option<&str>) -> wit::LoginContext {
    let mut c = ctx(user);
    c.org_id = org.to_owned();
    c.locale = locale.map(str::to_owned);
    c.device.traits.time_zone = None;
    c
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn two_organizations_get_two_different_emails() {
    let h = Harness::new();
    set_branding(&h.backends, SUNRISE, &sunrise())
        .await
        .unwrap();
    set_branding(&h.backends, HARBOR, &harbor()).await.unwrap();
    assert_eq!(
        h.actions()
            .iter()
            .filter(|a| *a == "branding_changed")
            .count(),
        2
    );

    let mut mails = Vec::new();
    for (org, user) in [(SUNRISE, "dr-sol"), (HARBOR, "dr-mar")] {
        let c = user_of(org, user, None);
        let id = h.challenge(&c).await;
        h.send_code(&c, &id).await.unwrap();
        mails.push(h.mailer.inner().last().unwrap());
    }
    let (s, m) = (&mails[0], &mails[1]);
    // Sunrise: its logo, colors, Spanish by default, support line and footer.
    assert!(
        s.html.contains(
            "src=\"https://cdn.sunrise-clinic.example/logo.png\" alt=\"Sunrise Family Clinic\""
        ),
        "{}",
        s.html
    );
    assert!(
        s.html.contains("background-color:#b3461d") && s.html.contains("background-color:#fdf1e7")
    );
    assert!(
        s.html.contains("<html lang=\"es\">")
            && s.subject
                .starts_with("Tu código de verificación de Sunrise Family Clinic")
    );
    assert!(s.text.contains("+1 555 0100") && s.text.contains("12 Dawn Road"));
    assert_eq!(s.sender_name.as_deref(), Some("Sunrise Family Clinic"));
    // Harbor: no logo (its name instead), its colors, English, its sender.
    assert!(
        !m.html.contains("<img") && m.html.contains(">Harbor Health</span>"),
        "{}",
        m.html
    );
    assert!(m.html.contains("background-color:#0b4f6c") && !m.html.contains("#b3461d"));
    assert!(
        m.subject == "Your Harbor Health verification code"
            && m.text.contains("help@harbor.example")
    );
    assert_eq!(m.sender_name.as_deref(), Some("Harbor Health Security"));
    // Both carry their code on its own line, and nowhere in the subject.
    for mail in [s, m] {
        let code = code_in(&mail.text).unwrap();
        assert!(mail.html.contains(&format!(">{code}<")) && !mail.subject.contains(&code));
    }
}

#[tokio::test]
async fn the_rendered_sample_matches_the_fixture() {
    let h = Harness::new();
    set_branding(&h.backends, SUNRISE, &sunrise())
        .await
        .unwrap();
    let p = preview(&h.backends, SUNRISE, Some("es"), Some("America/Chicago")).await;
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let (html_path, text_path) = (
        fixtures.join("email-sunrise-es.html"),
        fixtures.join("email-sunrise-es.txt"),
    );
    if std::env::var_os("UPDATE_FIXTURES").is_some() {
        std::fs::write(&html_path, &p.html).unwrap();
        std::fs::write(&text_path, &p.text).unwrap();
    }
    let html =
        std::fs::read_to_string(&html_path).expect("fixture exists (UPDATE_FIXTURES=1 writes it)");
    let text =
        std::fs::read_to_string(&text_path).expect("fixture exists (UPDATE_FIXTURES=1 writes it)");
    assert_eq!(
        p.html, html,
        "the HTML changed; review it and rerun with UPDATE_FIXTURES=1"
    );
    assert_eq!(
        p.text, text,
        "the text changed; review it and rerun with UPDATE_FIXTURES=1"
    );
    // T0 + 10 minutes is 05:16 in Chicago.
    assert!(
        p.text
            .contains("durante 10 minutos (hasta las 05:16 (America/Chicago))"),
        "{}",
        p.text
    );
    assert!(p.text.contains("\n    123456\n"));
}

#[tokio::test]
async fn hostile_branding_renders_as_text() {
    let h = Harness::new();
    let hostile = Branding {
        display_name: "<script>alert(1)</script>\"><img src=x onerror=alert(2)>".to_owned(),
        support_contact: "<b>help</b>".to_owned(),
        footer_text: "Acme & 'Co'".to_owned(),
        ..harbor()
    };
    set_branding(&h.backends, HARBOR, &hostile).await.unwrap();
    let c = user_of(HARBOR, "dr-x", None);
    let id = h.challenge(&c).await;
    h.send_code(&c, &id).await.unwrap();
    let mail = h.mailer.inner().last().unwrap();
    assert!(
        !mail.html.contains("<script")
            && !mail.html.contains("<img src=x")
            && !mail.html.contains("<b>help"),
        "{}",
        mail.html
    );
    assert!(
        mail.html
            .contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
        "{}",
        mail.html
    );
    assert!(mail.html.contains("Acme &#38; &#39;Co&#39;"));
    // The text part is text: the name as written, which no mail client renders as markup.
    assert!(mail.text.contains("<script>alert(1)</script>"));
}

#[tokio::test]
async fn header_injection_and_bad_values_are_refused_at_input() {
    let h = Harness::new();
    let cases = [
        (
            Branding {
                display_name: "Harbor\r\nBcc: all@evil.example".to_owned(),
                ..harbor()
            },
            "branding.display_name",
        ),
        (
            Branding {
                sender_name: "Harbor\nX-Evil: 1".to_owned(),
                ..harbor()
            },
            "branding.sender_name",
        ),
        (
            Branding {
                logo_url: Some("http://harbor.example/logo.png".to_owned()),
                ..harbor()
            },
            "branding.logo_url",
        ),
        (
            Branding {
                logo_url: Some("https://h.example/a\" onerror=\"x".to_owned()),
                ..harbor()
            },
            "branding.logo_url",
        ),
        (
            Branding {
                primary_color: "red;background:url(https://evil.example)".to_owned(),
                ..harbor()
            },
            "branding.primary_color",
        ),
        (
            Branding {
                default_language: "tlh".to_owned(),
                ..harbor()
            },
            "branding.default_language",
        ),
    ];
    for (b, field) in cases {
        let e = set_branding(&h.backends, HARBOR, &b).await.unwrap_err();
        assert_eq!(
            (e.kind, e.field.as_deref()),
            (ErrorKind::InvalidInput, Some(field))
        );
    }
    assert!(
        !h.actions().contains(&"branding_changed".to_owned()),
        "nothing was stored"
    );
    // Another org's admin cannot change it.
    let (mut store, plugin) = h.runtime.instantiate(&h.backends).await.unwrap();
    let e = plugin
        .mfa_step_plugin_admin()
        .call_set_branding(&mut store, &admin(SUNRISE), HARBOR, &harbor())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Forbidden);
}

#[tokio::test]
async fn the_users_language_then_the_orgs_then_english() {
    let h = Harness::new();
    set_branding(&h.backends, SUNRISE, &sunrise())
        .await
        .unwrap();
    let cases = [
        (SUNRISE, Some("en-US"), "for 10 minutes (until 11:16 UTC)"),
        (SUNRISE, None, "durante 10 minutos (hasta las 11:16 UTC)"),
        (SUNRISE, Some("fr"), "durante 10 minutos"),
        (HARBOR, Some("es-MX"), "durante 10 minutos"),
        (HARBOR, Some("de"), "for 10 minutes (until 11:16 UTC)"),
    ];
    for (i, (org, locale, wording)) in cases.into_iter().enumerate() {
        let c = user_of(org, &format!("u{i}"), locale);
        let id = h.challenge(&c).await;
        h.send_code(&c, &id).await.unwrap();
        let mail = h.mailer.inner().last().unwrap();
        assert!(mail.text.contains(wording), "case {i}: {}", mail.text);
    }
}

/// What a mail client finds in a received message: the MIME structure as `mail-parser` reads it,
/// and the HTML part's parse errors as an HTML5 parser (html5ever, through `scraper`) reports them.
#[derive(Debug)]
struct ReceivedEmail {
    /// `type/subtype` of the message itself.
    content_type: String,
    /// The decoded `Subject`, `Message-ID`, `Date` (when it parses as a date; RFC 3339 here),
    /// `Auto-Submitted`, and the `From` display name; absent headers are absent.
    subject: Option<String>,
    message_id: Option<String>,
    date: Option<String>,
    auto_submitted: Option<String>,
    from_name: Option<String>,
    /// The decoded text/plain and text/html parts (empty when missing).
    text: String,
    html: String,
    html_errors: Vec<String>,
}

fn read_email(raw: &[u8]) -> ReceivedEmail {
    let message = MessageParser::default()
        .parse(raw)
        .expect("the received message parses as MIME");
    let content_type = message
        .content_type()
        .map(|t| match t.subtype() {
            Some(sub) => format!("{}/{sub}", t.ctype()),
            None => t.ctype().to_owned(),
        })
        .unwrap_or_default()
        .to_ascii_lowercase();
    // The parts by their own Content-Type, not mail-parser's "body" views, which would convert
    // a missing text part from the HTML (or the reverse) and hide its absence.
    let (mut text, mut html) = (String::new(), String::new());
    for part in &message.parts {
        let is = |sub: &str| {
            part.content_type().is_some_and(|t| {
                t.ctype().eq_ignore_ascii_case("text")
                    && t.subtype().is_some_and(|s| s.eq_ignore_ascii_case(sub))
            })
        };
        match &part.body {
            PartType::Text(body) if is("plain") => text = body.to_string(),
            PartType::Html(body) if is("html") => html = body.to_string(),
            _ => {}
        }
    }
    ReceivedEmail {
        content_type,
        subject: message.subject().map(str::to_owned),
        message_id: message.message_id().map(str::to_owned),
        date: message.date().map(|d| d.to_rfc3339()),
        auto_submitted: message
            .header_raw("Auto-Submitted")
            .map(|v| v.trim().to_owned()),
        from_name: message
            .from()
            .and_then(|from| from.first())
            .and_then(|addr| addr.name())
            .map(str::to_owned),
        html_errors: html_parse_errors(&html),
        text,
        html,
    }
}

/// The parse errors an HTML5 parser reports for `html` as a whole document (none for a document
/// a browser and a mail client read the same way).
fn html_parse_errors(html: &str) -> Vec<String> {
    scraper::Html::parse_document(html)
        .errors
        .into_iter()
        .map(|e| e.into_owned())
        .collect()
}

/// The check above must be able to fail: what a careless template could produce is reported.
#[test]
fn the_html_check_reports_parse_errors() {
    let clean = "<!DOCTYPE html><html lang=\"en\"><head><title>t</title></head>\
                 <body><p>fine</p></body></html>";
    assert_eq!(html_parse_errors(clean), Vec::<String>::new());
    for broken in [
        // no doctype: quirks mode
        "<html><head><title>t</title></head><body><p>x</p></body></html>",
        // an end tag that closes nothing
        "<!DOCTYPE html><title>t</title><p>a</b></p>",
        // content where a table allows none (foster-parented)
        "<!DOCTYPE html><title>t</title><table><tr><div>x</div></tr></table>",
        // the same attribute twice (the second one is dropped)
        "<!DOCTYPE html><title>t</title><p id=\"a\" id=\"b\">x</p>",
    ] {
        assert!(!html_parse_errors(broken).is_empty(), "{broken}");
    }
}

#[tokio::test]
async fn a_real_smtp_server_receives_a_multipart_email_whose_html_parses_cleanly() {
    let sink = SmtpSink::start().unwrap();
    let config = SmtpConfig {
        timeout: Duration::from_secs(10),
        ..SmtpConfig::new(
            "127.0.0.1",
            sink.port(),
            "noreply@sunrise-clinic.example",
            SmtpTls::None,
        )
    };
    let backends = Backends {
        store: Arc::new(MemoryStore::new()),
        mailer: Arc::new(SmtpMailer::new(&config).unwrap()),
        audit: Arc::new(MemoryAuditSink::new()),
        config: default_config(),
        clock: Clock::Test(TestClock::at(T0)),
        offload: host_harness::Offload::ALL,
    };
    set_branding(&backends, SUNRISE, &sunrise()).await.unwrap();
    let c = user_of(SUNRISE, "dr-smtp", Some("es"));
    let (mut store, plugin) = http_app().instantiate(&backends).await.unwrap();
    let step = plugin.mfa_step_plugin_login_step();
    let Ok(wit::Decision::Challenge(ch)) = step.call_begin(&mut store, &c).await.unwrap() else {
        panic!("challenge")
    };
    step.call_send_code(&mut store, &c, &ch.challenge_id)
        .await
        .unwrap()
        .unwrap();

    // send-code returned once the server answered 250 to the message, so it is recorded.
    let received = sink.received();
    assert_eq!(received.len(), 1, "one message: {received:?}");
    assert_eq!(received[0].mail_from, "noreply@sunrise-clinic.example");
    assert_eq!(received[0].rcpt_to, std::slice::from_ref(&c.email));
    let email = read_email(&received[0].data);
    assert_eq!(email.content_type, "multipart/alternative", "{email:?}");
    let code = code_in(&email.text).expect("the text part holds the code");
    // The code that arrived is the code that works.
    step.call_verify(&mut store, &c, &ch.challenge_id, &code, false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        email.html_errors,
        Vec::<String>::new(),
        "the HTML must parse without errors:\n{}",
        email.html
    );
    assert!(email.html.contains(&code), "{}", email.html);
    for (header, value) in [
        ("Message-ID", &email.message_id),
        ("Date", &email.date),
        ("Auto-Submitted", &email.auto_submitted),
        ("Subject", &email.subject),
    ] {
        assert!(value.is_some(), "missing {header}: {email:?}");
    }
    assert_eq!(email.auto_submitted.as_deref(), Some("auto-generated"));
    // The Spanish subject, decoded from its RFC 2047 encoding as a mail client shows it.
    assert!(
        email
            .subject
            .as_deref()
            .is_some_and(|s| s.starts_with("Tu código de verificación de Sunrise Family Clinic")),
        "{email:?}"
    );
    assert!(
        email
            .from_name
            .as_deref()
            .is_some_and(|name| name.contains("Sunrise Family Clinic")),
        "{email:?}"
    );
}

/// The page where an org admin previews the email: opened in a browser through a 5-minute link the
/// IdP's admin console asks for; a page with no script, framed by nobody, cached by nobody.
#[tokio::test]
async fn an_org_admin_previews_the_email_on_a_page_through_a_short_lived_link() {
    let h = Harness::new();
    let hostile = Branding {
        display_name: "<script>alert(1)</script>\"><img src=x onerror=alert(2)>".to_owned(),
        ..sunrise()
    };
    set_branding(&h.backends, SUNRISE, &hostile).await.unwrap();
    let body = |actor: &wit::Actor| {
        serde_json::json!({
            "actor": {
                "user_id": actor.user_id, "org_id": actor.org_id, "roles": actor.roles,
                "ip": actor.ip, "user_agent": actor.user_agent
            },
            "org_id": SUNRISE,
        })
        .to_string()
    };
    let (status, link) = h
        .http(
            "POST",
            "/v1/admin/branding/preview-link",
            Some(API_KEY),
            &body(&admin(SUNRISE)),
        )
        .await;
    assert_eq!(status, 200, "{link}");
    let url = link["url"].as_str().unwrap().to_owned();
    assert!(url.starts_with("/admin/branding/preview?token="), "{url}");
    assert_eq!(link["expires_at"], T0 + 300);

    // No API key: the link is the credential.
    let page = h.http_full("GET", &url, None, Vec::new()).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), ["text/html; charset=utf-8"]);
    assert_eq!(page.header("cache-control"), ["no-store"]);
    assert_eq!(page.header("referrer-policy"), ["no-referrer"]);
    let csp = page.header("content-security-policy").join(";");
    for directive in [
        "default-src 'none'",
        "frame-ancestors 'none'",
        "form-action 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(!csp.contains("script-src"), "no script may run: {csp}");
    let html = String::from_utf8(page.body.clone()).unwrap();
    assert!(
        !html.contains("<script") && !html.contains("<img src=x"),
        "{html}"
    );
    assert!(
        html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
        "{html}"
    );
    // Sunrise writes in Spanish by default: subject, the HTML part (inside a sandboxed frame) and
    // the text part with the sample code; links to the other languages carry the same token.
    assert!(html.contains("Tu código de verificación de"), "{html}");
    assert!(
        html.contains("<iframe title=\"The email as HTML\" sandbox srcdoc=\""),
        "{html}"
    );
    assert!(html.contains("123456"));
    assert!(html.contains("&amp;lang=en"), "{html}");
    let english = h
        .http_full("GET", &format!("{url}&lang=en"), None, Vec::new())
        .await;
    let english = String::from_utf8(english.body).unwrap();
    assert!(english.contains("Your "), "{english}");
    assert!(english.contains("verification code"), "{english}");
    // The time zone arrives percent-encoded, as a browser sends it.
    let zoned = h
        .http_full(
            "GET",
            &format!("{url}&tz=America%2FChicago"),
            None,
            Vec::new(),
        )
        .await;
    let zoned = String::from_utf8(zoned.body).unwrap();
    assert!(zoned.contains("(America/Chicago)"), "{zoned}");
    std::fs::write(artifacts().join("admin-preview-page.html"), &html).unwrap();

    // A tampered token, another org's admin and an expired link all get a page that says so.
    let tampered = url.replacen("token=7b", "token=7c", 1);
    assert_ne!(tampered, url);
    let refused = h.http_full("GET", &tampered, None, Vec::new()).await;
    assert_eq!(refused.status, 403);
    let refused = String::from_utf8(refused.body).unwrap();
    assert!(refused.contains("not valid or has expired"), "{refused}");
    let foreign = admin(HARBOR);
    let (status, answer) = h
        .http(
            "POST",
            "/v1/admin/branding/preview-link",
            Some(API_KEY),
            &body(&foreign),
        )
        .await;
    assert_eq!(
        (status, answer["error"]["kind"].as_str()),
        (403, Some("forbidden"))
    );
    assert_eq!(
        h.actions().last().map(String::as_str),
        Some("access_denied")
    );
    h.clock.advance(301);
    let expired = h.http_full("GET", &url, None, Vec::new()).await;
    assert_eq!(expired.status, 403);
    assert_eq!(expired.header("content-security-policy").len(), 1);
}
