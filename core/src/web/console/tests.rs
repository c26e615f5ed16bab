//! The console over in-memory ports, stepped with an explicit clock: the link (signed, short-lived,
//! single-use), the session (cookie attributes, expiry, CSRF), the organization scope, the record of
//! every view, and the health page's charts and tables against the counts that were made.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use rand_core::{OsRng, TryRngCore, UnwrapErr};

use super::health::{date_of, percent};
use super::*;
use crate::engine::stats::Stat;
use crate::kernel::ports::Store;
use crate::kernel::settings::Settings;
use crate::testing::{MemAudit, MemMailer, MemStore};

/// 2026-11-18T11:06:40Z.
pub(super) const T0: Timestamp = Timestamp(1_795_000_000);

pub(super) struct World {
    pub(super) store: MemStore,
    pub(super) mailer: MemMailer,
    pub(super) audit: MemAudit,
    pub(super) key: HmacKey,
    pub(super) rng: UnwrapErr<OsRng>,
}

pub(super) fn actor(org: &str, roles: &[&str]) -> Actor {
    Actor {
        user_id: "admin-1".into(),
        org_id: org.into(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        ip: "198.51.100.4".into(),
        user_agent: "Mozilla/5.0 Test".into(),
    }
}

pub(super) fn request<'a>(
    method: WebMethod,
    path: &'a str,
    query: &'a str,
    cookies: &'a str,
) -> WebRequest<'a> {
    WebRequest {
        method,
        path,
        query,
        form: b"",
        cookies,
        user_agent: "Mozilla/5.0 Test",
        client_ip: "198.51.100.4",
        accept_language: "",
    }
}

impl World {
    pub(super) fn new() -> Self {
        Self {
            store: MemStore::default(),
            mailer: MemMailer::default(),
            audit: MemAudit::default(),
            key: HmacKey::from_bytes(&[9; 32]).unwrap(),
            rng: OsRng.unwrap_err(),
        }
    }

    pub(super) fn engine(&self) -> Engine<'_> {
        Engine {
            store: &self.store,
            mailer: &self.mailer,
            audit: &self.audit,
            settings: Settings::default(),
            key: &self.key,
        }
    }

    pub(super) fn link(&mut self, actor: &Actor, org: &str, now: Timestamp) -> Result<ConsoleLink> {
        let e = Engine {
            store: &self.store,
            mailer: &self.mailer,
            audit: &self.audit,
            settings: Settings::default(),
            key: &self.key,
        };
        e.console_link(actor, org, now, &mut self.rng)
    }

    pub(super) fn page(&mut self, req: &WebRequest<'_>, now: Timestamp) -> WebResponse {
        let e = Engine {
            store: &self.store,
            mailer: &self.mailer,
            audit: &self.audit,
            settings: Settings::default(),
            key: &self.key,
        };
        e.console_page(req, now, &mut self.rng)
    }

    /// Opens `link`; the session cookie's `name=value`.
    pub(super) fn open(&mut self, link: &ConsoleLink, now: Timestamp) -> String {
        let query = link.url.split_once('?').unwrap().1.to_owned();
        let page = self.page(&request(WebMethod::Get, "/admin/console", &query, ""), now);
        assert_eq!(page.status, 200, "{:?}", page.html);
        let cookie = header(&page, "set-cookie").expect("a session cookie");
        cookie.split(';').next().unwrap().to_owned()
    }

    fn health(&mut self, query: &str, cookie: &str, now: Timestamp) -> WebResponse {
        self.page(&request(WebMethod::Get, HEALTH, query, cookie), now)
    }

    fn count(&mut self, org: &str, stat: Stat, n: usize, at: Timestamp) {
        let e = Engine {
            store: &self.store,
            mailer: &self.mailer,
            audit: &self.audit,
            settings: Settings::default(),
            key: &self.key,
        };
        for _ in 0..n {
            e.count(org, stat, at, &mut self.rng);
        }
    }

    pub(super) fn records(&self) -> Vec<(String, String, String, Option<String>)> {
        self.audit
            .entries
            .borrow()
            .iter()
            .map(|e| {
                let v: serde_json::Value = serde_json::from_str(&e.line).unwrap();
                (
                    e.org_id.clone(),
                    e.action.clone(),
                    v["actor"].as_str().unwrap().to_owned(),
                    v["reason"].as_str().map(str::to_owned),
                )
            })
            .collect()
    }
}

pub(super) fn header<'a>(page: &'a WebResponse, name: &str) -> Option<&'a str> {
    page.headers
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.as_str())
}

pub(super) fn html(page: &WebResponse) -> &str {
    page.html.as_deref().unwrap()
}

/// The rows of a table (`<table id="…">`): each row's cells, its header cell first.
pub(super) fn table(html: &str, id: &str) -> Vec<Vec<String>> {
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

/// Every mark of a chart's SVG: `(series, day, value)`.
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

#[test]
fn a_link_opens_one_strict_session_and_only_within_five_minutes() {
    let mut w = World::new();
    let admin = actor("acme", &["org-admin"]);
    let link = w.link(&admin, "acme", T0).unwrap();
    assert!(link.url.starts_with("/admin/console?token="));
    assert_eq!(link.expires_at, T0.plus(LINK_TTL_SECONDS));
    assert!(
        !format!("{link:?}").contains("token="),
        "Debug hides the token"
    );
    let query = link.url.split_once('?').unwrap().1.to_owned();
    let page = w.page(
        &request(WebMethod::Get, "/admin/console", &query, ""),
        T0.plus(10),
    );
    assert_eq!(page.status, 200);
    let cookie = header(&page, "set-cookie").unwrap();
    assert!(cookie.starts_with("__Host-mfa-console="), "{cookie}");
    for attr in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/",
        "Max-Age=900",
    ] {
        assert!(cookie.contains(attr), "{cookie} lacks {attr}");
    }
    // The page refreshes to the console on our own site (a Strict cookie is sent then).
    assert!(
        html(&page).contains(
            "<meta http-equiv=\"refresh\" content=\"0;url=/admin/console/health?lang=en\">"
        )
    );
    let csp = header(&page, "content-security-policy").unwrap();
    assert!(
        !csp.contains("script-src") && csp.starts_with("default-src 'none'"),
        "{csp}"
    );
    // Single use: the same link again is refused, even within its five minutes.
    let again = w.page(
        &request(WebMethod::Get, "/admin/console", &query, ""),
        T0.plus(20),
    );
    assert_eq!(again.status, 403);
    assert!(header(&again, "set-cookie").is_none());
    // Expired (a fresh link opened after 5 minutes), tampered, or no token at all: refused.
    let late = w.link(&admin, "acme", T0).unwrap();
    let late_q = late.url.split_once('?').unwrap().1.to_owned();
    let refused = w.page(
        &request(WebMethod::Get, "/admin/console", &late_q, ""),
        T0.plus(301),
    );
    assert_eq!(refused.status, 403);
    let fresh = w.link(&admin, "acme", T0).unwrap();
    let fresh_q = fresh.url.split_once('?').unwrap().1.to_owned();
    let mut tampered = fresh_q.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == '0' { '1' } else { '0' });
    for q in [tampered.as_str(), "token=", "", "token=abc.def"] {
        let page = w.page(
            &request(WebMethod::Get, "/admin/console", q, ""),
            T0.plus(30),
        );
        assert_eq!(page.status, 403, "{q}");
        assert!(html(&page).contains("id=\"link-refused\""));
    }
    assert_eq!(
        w.page(
            &request(WebMethod::Get, "/admin/console", &fresh_q, ""),
            T0.plus(30)
        )
        .status,
        200
    );
    // A link is not a preview link and the other way round (each its own key label).
    let preview = w
        .engine()
        .preview_link(&admin, "acme", T0, &mut OsRng.unwrap_err())
        .unwrap();
    let preview_q = preview.url.split_once('?').unwrap().1.to_owned();
    assert_eq!(
        w.page(
            &request(WebMethod::Get, "/admin/console", &preview_q, ""),
            T0.plus(30)
        )
        .status,
        403
    );
}

#[test]
fn the_session_ends_after_fifteen_minutes_and_at_sign_out_with_its_csrf_token() {
    let mut w = World::new();
    let admin = actor("acme", &["org-admin"]);
    let link = w.link(&admin, "acme", T0).unwrap();
    let cookie = w.open(&link, T0);
    assert_eq!(w.health("", &cookie, T0.plus(900)).status, 200);
    let expired = w.health("", &cookie, T0.plus(901));
    assert_eq!(expired.status, 401);
    assert!(html(&expired).contains("id=\"expired\""));
    assert_eq!(w.health("", "", T0).status, 401, "no cookie");
    assert_eq!(
        w.health("", "__Host-mfa-console=00", T0).status,
        401,
        "unknown id"
    );

    let link = w.link(&admin, "acme", T0).unwrap();
    let cookie = w.open(&link, T0);
    let page = w.health("", &cookie, T0.plus(1));
    let csrf = html(&page)
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(csrf.len(), 32);
    let post = |w: &mut World, form: &str| {
        let mut req = request(WebMethod::Post, "/admin/console/sign-out", "", &cookie);
        let form = form.to_owned();
        req.form = form.as_bytes();
        w.page(&req, T0.plus(2))
    };
    assert_eq!(post(&mut w, "csrf=").status, 403);
    assert_eq!(
        post(&mut w, &format!("csrf={}", "0".repeat(32))).status,
        403
    );
    assert_eq!(
        w.health("", &cookie, T0.plus(2)).status,
        200,
        "still signed in"
    );
    let out = post(&mut w, &format!("csrf={csrf}"));
    assert_eq!(out.status, 200);
    assert!(header(&out, "set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(w.health("", &cookie, T0.plus(3)).status, 401);
    // Wrong methods and unknown pages.
    assert_eq!(
        w.page(&request(WebMethod::Post, HEALTH, "", &cookie), T0)
            .status,
        405
    );
    assert_eq!(
        w.page(
            &request(WebMethod::Get, "/admin/console/nowhere", "", &cookie),
            T0
        )
        .status,
        404
    );
}

#[test]
fn an_org_admin_never_sees_another_organizations_page() {
    let mut w = World::new();
    w.count("acme", Stat::Allowed, 3, T0);
    w.count("globex", Stat::Allowed, 7, T0);
    let acme_admin = actor("acme", &["org-admin"]);
    // No link for another organization: refused and recorded in the admin's own stream.
    assert!(matches!(
        w.link(&acme_admin, "globex", T0),
        Err(Error::Forbidden(_))
    ));
    assert!(matches!(
        w.link(&actor("acme", &["provider"]), "acme", T0),
        Err(Error::Forbidden(_))
    ));
    let records = w.records();
    assert_eq!(records.len(), 2);
    assert!(
        records
            .iter()
            .all(|r| r.0 == "acme" && r.1 == "access_denied")
    );
    assert_eq!(
        records[0].3.as_deref(),
        Some("console-link:not-authorized:target-org:globex")
    );
    // An acme session asking for globex's page: 403, recorded, no globex figure shown.
    let link = w.link(&acme_admin, "acme", T0).unwrap();
    let cookie = w.open(&link, T0);
    let page = w.health("org=globex", &cookie, T0.plus(1));
    assert_eq!(page.status, 403);
    assert!(html(&page).contains("id=\"wrong-org\""));
    assert!(!html(&page).contains("data-value"));
    let last = w.records().pop().unwrap();
    assert_eq!(
        (last.0.as_str(), last.1.as_str(), last.3.as_deref()),
        (
            "acme",
            "access_denied",
            Some("console:not-authorized:target-org:globex")
        )
    );
    assert!(
        w.records().iter().all(|r| r.0 != "globex"),
        "nothing written in globex's stream"
    );
    let own = w.health("org=acme", &cookie, T0.plus(1));
    assert_eq!(own.status, 200);
    assert_eq!(table(html(&own), "funnel-table")[0], ["Reached MFA", "3"]);
    // A platform admin may open any organization's console, one organization a session.
    let platform = actor("operator", &["platform-admin"]);
    let link = w.link(&platform, "globex", T0).unwrap();
    let cookie = w.open(&link, T0);
    let page = w.health("", &cookie, T0.plus(1));
    assert_eq!(table(html(&page), "funnel-table")[0], ["Reached MFA", "7"]);
    assert_eq!(w.health("org=acme", &cookie, T0.plus(1)).status, 403);
    let last = w.records().pop().unwrap();
    assert_eq!(
        last.0, "operator",
        "the refusal is in the platform admin's own stream"
    );
}

#[test]
fn every_view_is_recorded_and_one_that_cannot_be_is_not_shown() {
    let mut w = World::new();
    let admin = actor("acme", &["org-admin"]);
    let link = w.link(&admin, "acme", T0).unwrap();
    let cookie = w.open(&link, T0);
    assert!(
        w.records().is_empty(),
        "a link and its opening show nothing yet"
    );
    w.health("", &cookie, T0.plus(1));
    w.health("days=30&lang=es", &cookie, T0.plus(2));
    let records = w.records();
    assert_eq!(records.len(), 2);
    for (r, days) in records.iter().zip([14, 30]) {
        assert_eq!(r.0, "acme");
        assert_eq!(r.1, "admin_console_viewed");
        assert_eq!(r.2, "admin-1", "the admin is the actor");
        assert_eq!(
            r.3.as_deref(),
            Some(format!("console:health:days={days}").as_str())
        );
    }
    w.audit.fail.set(true);
    let page = w.health("", &cookie, T0.plus(3));
    assert_eq!(page.status, 503);
    assert!(!html(&page).contains("data-value"));
    w.audit.fail.set(false);
    // The days asked for: 7 to 90.
    for (q, status) in [
        ("days=6", 400),
        ("days=91", 400),
        ("days=x", 400),
        ("days=7", 200),
        ("days=90", 200),
    ] {
        assert_eq!(w.health(q, &cookie, T0.plus(4)).status, status, "{q}");
    }
    let page = w.health("days=90", &cookie, T0.plus(5));
    assert_eq!(table(html(&page), "codes-table").len(), 90);
}

#[test]
fn charts_and_tables_show_exactly_the_counts_in_both_languages() {
    let mut w = World::new();
    let yesterday = T0.plus(-DAY);
    // Reached: today 1 let through + 2 to enroll + 1 trusted; yesterday 1 + 1 at login.
    w.count("acme", Stat::Allowed, 1, T0);
    w.count("acme", Stat::Allowed, 1, yesterday);
    w.count("acme", Stat::ChallengeEnrollment, 2, T0);
    w.count("acme", Stat::ChallengeLogin, 1, yesterday);
    w.count("acme", Stat::CodeSent, 3, T0);
    w.count("acme", Stat::CodeSent, 1, yesterday);
    w.count("acme", Stat::DeliveryFailed, 1, T0);
    // Verified: 1 at login and 1 enrollment.
    w.count("acme", Stat::Verified, 1, T0);
    w.count("acme", Stat::Enrolled, 1, T0);
    w.count("acme", Stat::Trusted, 1, T0);
    w.count("acme", Stat::Throttled, 2, yesterday);
    w.count("acme", Stat::Locked, 1, T0);
    let link = w.link(&actor("acme", &["org-admin"]), "acme", T0).unwrap();
    let cookie = w.open(&link, T0);
    let page = w.health("days=7", &cookie, T0.plus(1));
    assert_eq!(page.status, 200);
    let h = html(&page);
    let (today, before) = (date_of(day_of(T0)), date_of(day_of(yesterday)));
    assert_eq!(today, "2026-11-18");
    assert_eq!(
        table(h, "funnel-table"),
        [
            ["Reached MFA", "6"],
            ["Code required", "3"],
            ["Code sent", "4"],
            ["Code verified", "2"],
            ["Enrolled", "1"]
        ]
    );
    let funnel: Vec<String> = marks(h, "funnel").into_iter().map(|m| m.2).collect();
    assert_eq!(funnel, ["6", "3", "4", "2", "1"]);
    let codes = table(h, "codes-table");
    assert_eq!(codes.len(), 7);
    assert_eq!(codes[6], [today.as_str(), "3", "2", "1"]);
    assert_eq!(codes[5], [before.as_str(), "1", "0", "0"]);
    assert!(codes[..5].iter().all(|r| r[1..] == ["0", "0", "0"]));
    let m = marks(h, "codes");
    assert_eq!(m.len(), 21, "3 series × 7 days");
    for (series, value) in [("sent", "3"), ("verified", "2"), ("refused", "1")] {
        assert!(
            m.contains(&(series.into(), today.clone(), value.into())),
            "{series}"
        );
    }
    let security = table(h, "security-table");
    assert_eq!(security[6], [today.as_str(), "1", "0"]);
    assert_eq!(security[5], [before.as_str(), "0", "2"]);
    let m = marks(h, "security");
    assert!(m.contains(&("locked".into(), today.clone(), "1".into())));
    assert!(m.contains(&("throttled".into(), before.clone(), "2".into())));
    // Trusted share: 1 of 4 today, 0 of 2 yesterday, no point on days without logins.
    let trusted = table(h, "trusted-table");
    assert_eq!(trusted[6], [today.as_str(), "1", "4", "25.0 %"]);
    assert_eq!(trusted[5], [before.as_str(), "0", "2", "0.0 %"]);
    assert_eq!(trusted[0][3], "no logins");
    let m = marks(h, "trusted");
    assert_eq!(
        m,
        [
            ("trusted-share".into(), before.clone(), "0.0".into()),
            ("trusted-share".into(), today.clone(), "25.0".into())
        ]
    );
    // Accessible: each chart an image with its title and description, naming its totals.
    for id in ["funnel", "codes", "security", "trusted"] {
        assert!(
            h.contains(&format!(
                "role=\"img\" aria-labelledby=\"{id}-title {id}-desc\""
            )),
            "{id}"
        );
        assert!(h.contains(&format!("<title id=\"{id}-title\">")), "{id}");
        assert!(h.contains(&format!("<desc id=\"{id}-desc\">")), "{id}");
    }
    assert!(h.contains("6 logins reached MFA, 3 needed a code, 4 code emails went out"));
    assert!(h.contains("id=\"bounces-note\""));
    assert!(h.contains("Bounces that the mail provider reports later are not counted"));
    assert!(!h.contains("<script"));
    assert!(
        !h.contains("style=\""),
        "no inline style attribute (the CSP allows only the nonce)"
    );
    assert!(!h.contains("id=\"lost-note\""));
    // In Spanish: the same numbers, other words.
    let es = w.health("days=7&lang=es", &cookie, T0.plus(2));
    let h = html(&es);
    assert!(
        h.starts_with("<!DOCTYPE html>\n<html lang=\"es\">"),
        "{}",
        &h[..40]
    );
    assert_eq!(table(h, "funnel-table")[0], ["Llegaron a la MFA", "6"]);
    assert_eq!(table(h, "trusted-table")[0][3], "sin inicios de sesión");
    assert!(h.contains("Los rebotes que el proveedor de correo informa más tarde no se cuentan"));
    assert_eq!(marks(h, "codes").len(), 21);
}

#[test]
fn lost_counts_are_said_on_the_page() {
    let mut w = World::new();
    w.store
        .increment(&keys::stat_lost("acme", day_of(T0)), 3, None)
        .unwrap();
    let link = w.link(&actor("acme", &["org-admin"]), "acme", T0).unwrap();
    let cookie = w.open(&link, T0);
    let page = w.health("", &cookie, T0.plus(1));
    assert!(html(&page).contains("id=\"lost-note\">3 events on these days could not be counted"));
}

#[test]
fn shares_round_half_up_in_tenths() {
    assert_eq!(percent(1, 3).as_deref(), Some("33.3"));
    assert_eq!(percent(2, 3).as_deref(), Some("66.7"));
    assert_eq!(percent(1, 8).as_deref(), Some("12.5"));
    assert_eq!(percent(5, 5).as_deref(), Some("100.0"));
    assert_eq!(percent(0, 0), None);
}

const DAY: i64 = 86_400;
