//! The org admin's console through the compiled component's HTTP export, with a test clock: a
//! scripted day of logins over the REST API (enrollments, codes, a mail refusal, a lock, a trusted
//! browser), then the console link the IdP asks for, opened as a browser would, and the health
//! page's tables and SVG marks checked against the counts this script kept itself. Across days
//! (the test clock steps over midnight), across organizations (an admin of one never sees
//! another's), and in the trail (every view recorded, the admin as actor).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::collections::BTreeMap;

use crate::common;
use common::*;
use serde_json::{Value, json};

const ORG: &str = "acme-health";
const OTHER: &str = "harbor-clinic";

fn context(user: &str, org: &str, cookie: Option<&str>) -> Value {
    json!({
        "user_id": user,
        "org_id": org,
        "email": format!("{user}@clinic.example"),
        "roles": ["provider"],
        "device": {
            "ip": "203.0.113.7",
            "cookie": cookie,
            "traits": { "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0" }
        }
    })
}

fn admin(org: &str, roles: &[&str]) -> Value {
    json!({
        "user_id": format!("admin-of-{org}"), "org_id": org, "roles": roles,
        "ip": "198.51.100.4", "user_agent": "Mozilla/5.0 Admin"
    })
}

async fn post(h: &Harness, path: &str, body: &Value) -> HttpReply {
    h.http_full("POST", path, Some(API_KEY), body.to_string().into_bytes())
        .await
}

/// What the script did, per UTC day, as the page must show it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Day {
    reached: i64,
    required: i64,
    sent: i64,
    refused: i64,
    verified: i64,
    enrolled: i64,
    trusted: i64,
    throttled: i64,
    locked: i64,
}

struct Script<'h> {
    h: &'h Harness,
    days: BTreeMap<String, Day>,
}

impl Script<'_> {
    fn today(&mut self) -> &mut Day {
        let date = utc_date(self.h.clock.now());
        self.days.entry(date).or_default()
    }

    async fn begin(&mut self, user: &str, org: &str, cookie: Option<&str>) -> Value {
        let r = post(
            self.h,
            "/v1/login/begin",
            &json!({ "context": context(user, org, cookie) }),
        )
        .await;
        assert_eq!(r.status, 200, "{:?}", r.json);
        if org == ORG {
            let day = self.today();
            day.reached += 1;
            if r.json["outcome"] == "challenge" {
                day.required += 1;
            }
        }
        r.json
    }

    async fn send(&mut self, user: &str, challenge: &str) -> HttpReply {
        let body = json!({ "context": context(user, ORG, None), "challenge_id": challenge });
        let r = post(self.h, "/v1/login/send-code", &body).await;
        match r.status {
            200 => self.today().sent += 1,
            503 => self.today().refused += 1,
            429 => self.today().throttled += 1,
            other => panic!("send-code answered {other}: {:?}", r.json),
        }
        r
    }

    async fn verify(
        &mut self,
        user: &str,
        challenge: &str,
        code: &str,
        remember: bool,
    ) -> HttpReply {
        let body = json!({
            "context": context(user, ORG, None), "challenge_id": challenge, "code": code,
            "remember_device": remember
        });
        post(self.h, "/v1/login/verify", &body).await
    }
}

/// `YYYY-MM-DD` of a Unix time (UTC), computed here independently of the core's formatter.
fn utc_date(t: i64) -> String {
    let days = t.div_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn challenge_id(decision: &Value) -> String {
    decision["challenge_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no challenge in {decision}"))
        .to_owned()
}

/// The rows of `<table id="…">`: each row's cells, its header cell first.
fn table(html: &str, id: &str) -> Vec<Vec<String>> {
    let start = html
        .find(&format!("<table id=\"{id}\">"))
        .unwrap_or_else(|| panic!("no table {id}"));
    let body = &html[start..];
    let body = &body[body.find("<tbody>").unwrap()..body.find("</tbody>").unwrap()];
    body.split("<tr>")
        .skip(1)
        .map(|row| {
            row.split(['<', '>'])
                .collect::<Vec<_>>()
                .windows(2)
                .filter(|w| w[0].starts_with("th scope=\"row\"") || w[0] == "td")
                .map(|w| w[1].to_owned())
                .collect()
        })
        .collect()
}

/// Every mark of a chart: `(series, day, value)`.
fn marks(html: &str, chart: &str) -> Vec<(String, String, String)> {
    let start = html
        .find(&format!("<figure id=\"{chart}-chart\">"))
        .unwrap();
    let figure = &html[start..start + html[start..].find("</figure>").unwrap()];
    let attr = |tag: &str, name: &str| {
        tag.split(&format!(" {name}=\""))
            .nth(1)
            .map(|v| v.split('"').next().unwrap().to_owned())
            .unwrap_or_default()
    };
    figure
        .split('<')
        .filter(|t| t.contains("class=\"mark\""))
        .map(|t| {
            (
                attr(t, "data-series"),
                attr(t, "data-day"),
                attr(t, "data-value"),
            )
        })
        .collect()
}

/// Asks for a console link for `who` and opens it as a browser: the session cookie (`name=value`).
async fn open_console(h: &Harness, who: &Value, org: &str) -> String {
    let link = post(
        h,
        "/v1/admin/console-link",
        &json!({ "actor": who, "org_id": org }),
    )
    .await;
    assert_eq!(link.status, 200, "{:?}", link.json);
    let url = link.json["url"].as_str().unwrap();
    assert!(url.starts_with("/admin/console?token="), "{url}");
    assert_eq!(link.json["expires_at"], h.clock.now() + 300);
    let page = h.http_full("GET", url, None, Vec::new()).await;
    assert_eq!(page.status, 200);
    let cookie = page.header("set-cookie").join("");
    assert!(cookie.starts_with("__Host-mfa-console="), "{cookie}");
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    // Used once: the same link again opens nothing.
    let again = h.http_full("GET", url, None, Vec::new()).await;
    assert_eq!(again.status, 403);
    assert!(again.header("set-cookie").is_empty());
    cookie.split(';').next().unwrap().to_owned()
}

async fn page(h: &Harness, path: &str, cookie: &str) -> (u16, String, HttpReply) {
    let reply = h
        .http_with("GET", path, &[("cookie", cookie.to_owned())], Vec::new())
        .await;
    let html = String::from_utf8(reply.body.clone()).unwrap();
    (reply.status, html, reply)
}

#[tokio::test]
async fn a_scripted_day_of_logins_reads_back_exactly_in_the_console() {
    // 23:00 UTC, so that the script steps over midnight.
    let start = (T0.div_euclid(86_400) + 1) * 86_400 - 3600;
    let h = Harness::new().starting_at(start);
    let mut s = Script {
        h: &h,
        days: BTreeMap::new(),
    };
    // Three users enroll (begin → code → verify); the first also asks to be remembered later.
    for user in ["dr-ana", "dr-ben", "dr-cy"] {
        let d = s.begin(user, ORG, None).await;
        let id = challenge_id(&d);
        s.send(user, &id).await;
        let r = s.verify(user, &id, &h.last_code(), false).await;
        assert_eq!(r.status, 200, "{:?}", r.json);
        s.today().verified += 1;
        s.today().enrolled += 1;
    }
    // dr-ana signs in again with a code and is remembered; then comes back, trusted.
    let d = s.begin("dr-ana", ORG, None).await;
    let id = challenge_id(&d);
    s.send("dr-ana", &id).await;
    let r = s.verify("dr-ana", &id, &h.last_code(), true).await;
    assert_eq!(r.status, 200);
    s.today().verified += 1;
    let cookie = r.json["set_cookie"].as_str().unwrap().to_owned();
    let device = cookie_value(&cookie);
    h.clock.advance(7200); // past midnight: a new UTC day
    let d = s.begin("dr-ana", ORG, Some(&device)).await;
    assert_eq!(d["outcome"], "allow", "{d}");
    s.today().trusted += 1;
    // dr-dee: the mail service refuses the first email; a second goes out, then two more asks
    // within the window, the last throttled.
    let d = s.begin("dr-dee", ORG, None).await;
    let id = challenge_id(&d);
    h.faults.fail_mail(true);
    assert_eq!(s.send("dr-dee", &id).await.status, 503);
    h.faults.fail_mail(false);
    for _ in 0..3 {
        s.send("dr-dee", &id).await;
        h.clock.advance(1);
    }
    assert!(s.today().throttled >= 1, "{:?}", s.days);
    // dr-eve: wrong codes an hour apart until locked.
    let d = s.begin("dr-eve", ORG, None).await;
    let id = challenge_id(&d);
    s.send("dr-eve", &id).await;
    let code = h.last_code();
    loop {
        let r = s.verify("dr-eve", &id, &wrong(&code), false).await;
        match r.status {
            423 => break,
            403 => h.clock.advance(1),
            // Too soon after the last wrong code: slowed down (a throttle), then wait it out.
            429 => {
                s.today().throttled += 1;
                let wait = r.json["error"]["retry_after_seconds"].as_i64().unwrap();
                h.clock.advance(wait);
            }
            other => panic!("verify answered {other}: {:?}", r.json),
        }
    }
    s.today().locked += 1;
    // Another organization's logins: never on acme's page.
    for user in ["dr-zed", "dr-yan"] {
        post(
            &h,
            "/v1/login/begin",
            &json!({ "context": context(user, OTHER, None) }),
        )
        .await;
    }
    // The throttles the trail recorded (a guess slowed down by the delay counts too).
    let throttles = h
        .actions()
        .iter()
        .filter(|a| *a == "send_throttled" || *a == "verify_throttled")
        .count() as i64;
    let counted: i64 = s.days.values().map(|d| d.throttled).sum();
    assert_eq!(
        throttles, counted,
        "the script counted every throttle the trail has"
    );

    // The console, for acme's admin.
    let acme_admin = admin(ORG, &["org-admin"]);
    let cookie = open_console(&h, &acme_admin, ORG).await;
    let (status, html, reply) = page(&h, "/admin/console/health?days=7", &cookie).await;
    assert_eq!(status, 200, "{html}");
    let csp = reply.header("content-security-policy").join(";");
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("script-src"),
        "{csp}"
    );
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("form-action 'self'"),
        "{csp}"
    );
    assert_eq!(reply.header("x-frame-options"), ["DENY"]);
    assert_eq!(reply.header("cache-control"), ["no-store"]);
    assert!(!html.contains("<script"));
    assert!(html.contains("Bounces that the mail provider reports later are not counted"));

    let total = s.days.values().fold(Day::default(), |a, d| Day {
        reached: a.reached + d.reached,
        required: a.required + d.required,
        sent: a.sent + d.sent,
        refused: a.refused + d.refused,
        verified: a.verified + d.verified,
        enrolled: a.enrolled + d.enrolled,
        trusted: a.trusted + d.trusted,
        throttled: a.throttled + d.throttled,
        locked: a.locked + d.locked,
    });
    let funnel = table(&html, "funnel-table");
    let expected = [
        total.reached,
        total.required,
        total.sent,
        total.verified,
        total.enrolled,
    ];
    let shown: Vec<i64> = funnel.iter().map(|r| r[1].parse().unwrap()).collect();
    assert_eq!(shown, expected, "{funnel:?}");
    let drawn: Vec<i64> = marks(&html, "funnel")
        .iter()
        .map(|m| m.2.parse().unwrap())
        .collect();
    assert_eq!(drawn, expected);
    assert_eq!(
        s.days.len(),
        2,
        "the script spanned two UTC days: {:?}",
        s.days.keys()
    );
    let codes = table(&html, "codes-table");
    let security = table(&html, "security-table");
    let trusted = table(&html, "trusted-table");
    let code_marks = marks(&html, "codes");
    let security_marks = marks(&html, "security");
    let share_marks = marks(&html, "trusted");
    assert_eq!(codes.len(), 7);
    for row in &codes {
        let day = s.days.get(&row[0]).copied().unwrap_or_default();
        let want = [day.sent, day.verified, day.refused].map(|n| n.to_string());
        assert_eq!(row[1..], want, "{}", row[0]);
        for (series, value) in ["sent", "verified", "refused"].iter().zip(&want) {
            assert!(
                code_marks.contains(&((*series).into(), row[0].clone(), value.clone())),
                "{series} on {}",
                row[0]
            );
        }
    }
    for row in &security {
        let day = s.days.get(&row[0]).copied().unwrap_or_default();
        let want = [day.locked, day.throttled].map(|n| n.to_string());
        assert_eq!(row[1..], want, "{}", row[0]);
        for (series, value) in ["locked", "throttled"].iter().zip(&want) {
            assert!(security_marks.contains(&((*series).into(), row[0].clone(), value.clone())));
        }
    }
    for row in &trusted {
        let day = s.days.get(&row[0]).copied().unwrap_or_default();
        assert_eq!(
            row[1..3],
            [day.trusted.to_string(), day.reached.to_string()]
        );
        if day.reached > 0 {
            let share = format!("{:.1}", day.trusted as f64 * 100.0 / day.reached as f64);
            assert_eq!(row[3], format!("{share} %"));
            assert!(share_marks.contains(&("trusted-share".into(), row[0].clone(), share)));
        } else {
            assert!(
                !share_marks.iter().any(|m| m.1 == row[0]),
                "no point without logins"
            );
        }
    }
    // Spanish, asked for on the page.
    let (_, es, _) = page(&h, "/admin/console/health?days=7&lang=es", &cookie).await;
    assert!(es.contains("<html lang=\"es\">"));
    assert!(es.contains("Embudo de inscripción"));
    assert_eq!(table(&es, "funnel-table")[0][1], total.reached.to_string());

    // Each view is a record in acme's stream, the admin as actor.
    let views: Vec<Value> = h
        .audit_records()
        .into_iter()
        .filter(|r| r["action"] == "admin_console_viewed")
        .collect();
    assert_eq!(views.len(), 2);
    for v in &views {
        assert_eq!(v["org"], ORG);
        assert_eq!(v["actor"], "admin-of-acme-health");
        assert_eq!(v["outcome"], "success");
        assert_eq!(v["reason"], "console:health:days=7");
    }

    // acme's session asking for harbor's page: refused, recorded in acme's stream, no figure.
    let (status, html, _) = page(&h, "/admin/console/health?org=harbor-clinic", &cookie).await;
    assert_eq!(status, 403);
    assert!(!html.contains("data-value"));
    let last = h.audit_records().pop().unwrap();
    assert_eq!(
        (
            last["org"].as_str(),
            last["action"].as_str(),
            last["reason"].as_str()
        ),
        (
            Some(ORG),
            Some("access_denied"),
            Some("console:not-authorized:target-org:harbor-clinic")
        )
    );
    // …and no link for it either.
    let refused = post(
        &h,
        "/v1/admin/console-link",
        &json!({ "actor": acme_admin, "org_id": OTHER }),
    )
    .await;
    assert_eq!((refused.status, refused.kind()), (403, Some("forbidden")));
    // Harbor's own admin sees harbor's two logins only.
    let harbor = open_console(&h, &admin(OTHER, &["org-admin"]), OTHER).await;
    let (_, html, _) = page(&h, "/admin/console/health", &harbor).await;
    assert_eq!(table(&html, "funnel-table")[0][1], "2");
    assert_eq!(table(&html, "codes-table").len(), 14, "14 days by default");
    // A days value out of range, an unknown console page, no session.
    assert_eq!(
        page(&h, "/admin/console/health?days=91", &harbor).await.0,
        400
    );
    assert_eq!(page(&h, "/admin/console/nowhere", &harbor).await.0, 404);
    assert_eq!(page(&h, "/admin/console/health", "").await.0, 401);
    // The session ends after 15 minutes.
    h.clock.advance(901);
    assert_eq!(page(&h, "/admin/console/health", &harbor).await.0, 401);
}

#[tokio::test]
async fn the_console_link_call_is_an_admin_call() {
    let h = Harness::new();
    // The API key guards it like every /v1/ route.
    let body = json!({ "actor": admin(ORG, &["org-admin"]), "org_id": ORG }).to_string();
    let r = h
        .http_full(
            "POST",
            "/v1/admin/console-link",
            None,
            body.clone().into_bytes(),
        )
        .await;
    assert_eq!(r.status, 401);
    // A provider is no admin; a platform admin may open any organization's console.
    let r = post(
        &h,
        "/v1/admin/console-link",
        &json!({ "actor": admin(ORG, &["provider"]), "org_id": ORG }),
    )
    .await;
    assert_eq!((r.status, r.kind()), (403, Some("forbidden")));
    let r = post(
        &h,
        "/v1/admin/console-link",
        &json!({ "actor": admin("ops", &["platform-admin"]), "org_id": OTHER }),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = post(
        &h,
        "/v1/admin/console-link",
        &json!({ "actor": admin(ORG, &["org-admin"]), "org_id": "bad org" }),
    )
    .await;
    assert_eq!((r.status, r.kind()), (400, Some("invalid-input")));
    // An expired link.
    let r = post(
        &h,
        "/v1/admin/console-link",
        &json!({ "actor": admin(ORG, &["org-admin"]), "org_id": ORG }),
    )
    .await;
    let url = r.json["url"].as_str().unwrap().to_owned();
    h.clock.advance(301);
    let page = h.http_full("GET", &url, None, Vec::new()).await;
    assert_eq!(page.status, 403);
    assert!(page.header("set-cookie").is_empty());
}
