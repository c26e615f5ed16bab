//! The audit screen over in-memory ports: the filter (checked, kept on error), the view and the
//! export recorded, the organization scope, the fallback a host that does nothing sends, and the
//! pure functions a host that serves the trail calls (header, matching, rows, chain status, CSV
//! neutralization, JSONL byte for byte, splicing).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use super::audit::{
    AuditQuery, AuditWords, BadField, ChainStatus, Filter, QUERY_HEADER, ROWS_END, ROWS_START,
    View, csv, csv_cell, jsonl, splice,
};
use super::tests::{T0, World, actor, header, html, request};
use super::*;
use crate::audit::{Action, Event, Outcome};
use crate::kernel::ports::GENESIS;

/// A stream of `acme` records: (actor, subject, action, outcome, at, reason), linked in order.
/// One record to write: (actor, subject, action, outcome, at, reason).
type Spec<'a> = (&'a str, &'a str, Action, Outcome, i64, Option<&'a str>);

fn stream(org: &str, rows: &[Spec<'_>]) -> Vec<String> {
    let mut prev = GENESIS.to_owned();
    rows.iter()
        .enumerate()
        .map(|(i, (actor, subject, action, outcome, at, reason))| {
            let event = Event {
                org: org.to_owned(),
                actor: (*actor).to_owned(),
                subject: (*subject).to_owned(),
                action: *action,
                outcome: *outcome,
                reason: reason.map(str::to_owned),
                ip: Some("203.0.113.9".to_owned()),
                user_agent: None,
                device_id: None,
                challenge_id: None,
            };
            let (line, hash) =
                event.seal(&format!("e{i}"), i as u64 + 1, Timestamp(*at), &prev, None);
            prev = hash;
            line
        })
        .collect()
}

/// 2026-11-18 (T0's day), 2026-11-19, 2026-11-20 at noon.
const D18: i64 = 1_795_000_000;
const D19: i64 = D18 + 86_400;
const D20: i64 = D19 + 86_400;

fn sample() -> Vec<String> {
    stream(
        "acme",
        &[
            ("u1", "u1", Action::CodeSent, Outcome::Success, D18, None),
            (
                "u1",
                "u1",
                Action::CodeRejected,
                Outcome::Failure,
                D19,
                Some("wrong-code"),
            ),
            (
                "admin-1",
                "u2",
                Action::MfaReset,
                Outcome::Success,
                D19,
                None,
            ),
            (
                "u2",
                "u2",
                Action::AccessDenied,
                Outcome::Denied,
                D20,
                Some("locked"),
            ),
        ],
    )
}

/// The rows of the records table: each row's cells, its header cell (the seq) first.
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
                .filter(|w| w[0].starts_with("th scope=\"row\"") || w[0].starts_with("td"))
                .map(|w| w[1].to_owned())
                .collect()
        })
        .collect()
}

fn query(filter: Filter) -> AuditQuery {
    AuditQuery {
        org: "acme".to_owned(),
        filter,
        lang: "en",
        limit: 200,
        view: View::Page,
    }
}

fn open(w: &mut World, org: &str) -> String {
    let link = w.link(&actor(org, &["org-admin"]), org, T0).unwrap();
    w.open(&link, T0)
}

fn get(w: &mut World, path: &str, query: &str, cookie: &str) -> WebResponse {
    w.page(&request(WebMethod::Get, path, query, cookie), T0.plus(5))
}

#[test]
fn every_language_has_every_audit_message_and_placeholder() {
    words::check_languages::<AuditWords>(audit::LANGUAGES, |t| {
        vec![
            (t.fallback.clone(), vec!["{command}"]),
            (t.export_fallback.clone(), vec!["{command}"]),
            (t.caption.clone(), vec!["{shown}", "{total}"]),
            (t.showing.clone(), vec!["{shown}", "{total}"]),
            (
                t.chain_verified.clone(),
                vec!["{seq}", "{checked}", "{since}"],
            ),
            (t.chain_verified_first.clone(), vec!["{seq}", "{checked}"]),
            (t.chain_broken_at.clone(), vec!["{seq}"]),
            (t.scan_limited.clone(), vec!["{read}", "{total}"]),
            (t.export_too_large.clone(), vec!["{max}"]),
        ]
    });
}

#[test]
fn a_filter_is_checked_field_by_field_and_empty_fields_are_no_filter() {
    assert_eq!(Filter::parse(""), Ok(Filter::default()));
    assert_eq!(
        Filter::parse("user=&action=&outcome=&from=&to=&lang=es"),
        Ok(Filter::default())
    );
    let full = Filter::parse(
        "user=u-1%40acme&action=code_sent&outcome=denied&from=2026-02-28&to=2026-02-28",
    )
    .unwrap();
    assert_eq!(full.user.as_deref(), Some("u-1@acme"));
    assert_eq!(
        full.canonical(),
        "user=u-1%40acme&action=code_sent&outcome=denied&from=2026-02-28&to=2026-02-28"
    );
    for (query, bad) in [
        ("user=a%20b", BadField::User),
        ("user=%3Cscript%3E", BadField::User),
        (&format!("user={}", "a".repeat(200)), BadField::User),
        ("action=code_stolen", BadField::Action),
        ("action=CODE_SENT", BadField::Action),
        ("outcome=maybe", BadField::Outcome),
        ("from=2026-02-29", BadField::From),
        ("from=2024-13-01", BadField::From),
        ("from=2026-1-01", BadField::From),
        ("from=2026-01-01T00:00:00Z", BadField::From),
        ("to=yesterday", BadField::To),
        ("to=2026-04-31", BadField::To),
        ("from=2026-11-20&to=2026-11-19", BadField::Range),
    ] {
        assert_eq!(Filter::parse(query), Err(bad), "{query}");
    }
    // A leap day is a day.
    assert!(Filter::parse("from=2024-02-29&to=2024-02-29").is_ok());
    assert_eq!(BadField::Range.field(), "to");
}

#[test]
fn the_query_header_round_trips_and_a_malformed_one_is_refused() {
    let q = AuditQuery {
        view: View::Csv,
        lang: "es",
        ..query(Filter::parse("user=u1&from=2026-11-19").unwrap())
    };
    let value = q.header();
    assert_eq!(
        value,
        "org=acme&view=csv&lang=es&limit=200&user=u1&from=2026-11-19"
    );
    assert_eq!(AuditQuery::from_header(&value), Ok(q));
    for bad in [
        "",
        "view=page&lang=en&limit=200",
        "org=acme&view=page&lang=en&limit=200&org=globex",
        "org=acme&view=page&lang=en&limit=200&sql=1",
        "org=ac%20me&view=page&lang=en&limit=200",
        "org=acme&view=pdf&lang=en&limit=200",
        "org=acme&view=page&lang=xx&limit=200",
        "org=acme&view=page&lang=en&limit=0",
        "org=acme&view=page&lang=en&limit=100000",
        "org=acme&view=page&lang=en&limit=200&action=nope",
    ] {
        assert!(AuditQuery::from_header(bad).is_err(), "{bad}");
    }
}

#[test]
fn matching_keeps_the_organization_and_every_field_of_the_filter() {
    let lines = sample();
    let globex = stream(
        "globex",
        &[("u1", "u1", Action::CodeSent, Outcome::Success, D18, None)],
    );
    let kept = |q: &str| -> Vec<u64> {
        let query = query(Filter::parse(q).unwrap());
        lines
            .iter()
            .chain(&globex)
            .filter(|l| query.matches(l))
            .map(|l| crate::audit::chain::Record::parse(l).unwrap().seq)
            .collect()
    };
    assert_eq!(kept(""), [1, 2, 3, 4], "globex's record is never acme's");
    assert_eq!(kept("user=u2"), [3, 4], "as subject and as actor");
    assert_eq!(kept("user=admin-1"), [3]);
    assert_eq!(kept("action=code_rejected"), [2]);
    assert_eq!(kept("outcome=success"), [1, 3]);
    assert_eq!(kept("from=2026-11-19"), [2, 3, 4]);
    assert_eq!(kept("to=2026-11-19"), [1, 2, 3], "the end day is included");
    assert_eq!(kept("from=2026-11-19&to=2026-11-19"), [2, 3]);
    assert_eq!(kept("user=u1&outcome=failure&from=2026-11-19"), [2]);
    assert_eq!(kept("user=nobody"), Vec::<u64>::new());
    assert!(!query(Filter::default()).matches("not a record"));
}

#[test]
fn rows_are_newest_first_capped_with_the_count_and_the_chain_status() {
    let lines = sample();
    let mut q = query(Filter::default());
    q.limit = 3;
    let html = q.fragment(
        &lines,
        &ChainStatus::Verified {
            through: 4,
            checked: 2,
            since: 2,
        },
    );
    let rows = table(&html, "audit-table");
    assert_eq!(
        rows.iter().map(|r| r[0].as_str()).collect::<Vec<_>>(),
        ["4", "3", "2"]
    );
    assert_eq!(
        rows[0],
        [
            "4",
            "2026-11-20 11:06:40",
            "access_denied",
            "denied",
            "u2",
            "u2",
            "locked",
            "203.0.113.9"
        ]
    );
    assert!(html.contains("newest first: 3 of 4"), "{html}");
    assert!(html.contains("id=\"audit-showing\""));
    assert!(
        html.contains(
            "verified through seq 4: 2 new records checked after the checkpoint at seq 2"
        )
    );
    assert!(html.contains("<th scope=\"col\""));
    // All shown: no "narrow the filter".
    q.limit = 200;
    let html = q.fragment(
        &lines,
        &ChainStatus::Verified {
            through: 4,
            checked: 4,
            since: 0,
        },
    );
    assert!(html.contains("verified from its first record through seq 4: 4 records checked"));
    let html = q.fragment(&lines, &ChainStatus::NotVerified);
    assert!(!html.contains("audit-showing"));
    assert!(html.contains("The chain was not verified."));
    let html = q.fragment(&lines, &ChainStatus::Broken { seq: Some(3) });
    assert!(html.contains("broken at seq 3"), "{html}");
    assert!(html.contains("role=\"alert\""));
    let html = q.fragment(&[], &ChainStatus::Broken { seq: None });
    assert!(html.contains("id=\"audit-empty\""));
    assert!(html.contains("cannot be read"));
    // A record's text is escaped: nothing in it becomes markup.
    let evil = stream(
        "acme",
        &[(
            "u1",
            "u1",
            Action::CodeSent,
            Outcome::Success,
            D18,
            Some("<b>x</b>"),
        )],
    );
    let html = q.fragment(&evil, &ChainStatus::NotVerified);
    assert!(!html.contains("<b>") && html.contains("b&#62;x"), "{html}");
    // Spanish words when the page is Spanish.
    q.lang = "es";
    assert!(
        q.fragment(&lines, &ChainStatus::NotVerified)
            .contains("La cadena no se verificó.")
    );
    assert!(q.unavailable().contains("id=\"audit-unavailable\""));
    assert!(q.export_unavailable().starts_with("No se pudo leer"));
}

#[test]
fn csv_cells_that_a_spreadsheet_would_run_are_neutralized_and_quoted_per_rfc_4180() {
    // Every cell quoted (a bare `x;=1+1` is two cells, the second a formula, in a spreadsheet
    // that splits on `;`); risky first characters, also after spaces or full-width, neutralized.
    for (cell, out) in [
        ("plain", "\"plain\""),
        ("=1+2", "\"'=1+2\""),
        ("+cmd", "\"'+cmd\""),
        ("-2+3", "\"'-2+3\""),
        ("@SUM(A1)", "\"'@SUM(A1)\""),
        ("\tx", "\"'\tx\""),
        ("\rx", "\"'\rx\""),
        ("  =1+1", "\"'  =1+1\""),
        ("＝1+1", "\"'＝1+1\""),
        ("x;=1+1", "\"x;=1+1\""),
        ("a,b", "\"a,b\""),
        ("say \"hi\"", "\"say \"\"hi\"\"\""),
        ("two\nlines", "\"two\nlines\""),
        (
            "=HYPERLINK(\"http://x\",\"y\")",
            "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\"",
        ),
        ("", "\"\""),
        ("a=b", "\"a=b\""),
    ] {
        assert_eq!(csv_cell(cell), out, "{cell:?}");
    }
    let lines = stream(
        "acme",
        &[
            (
                "=cmd",
                "u1",
                Action::CodeSent,
                Outcome::Success,
                D18,
                Some("a,\"b\"\nc"),
            ),
            (
                "u1",
                "@u1",
                Action::CodeSent,
                Outcome::Success,
                D19,
                Some("-1"),
            ),
        ],
    );
    let text = csv(&lines);
    let rows: Vec<&str> = text.split("\r\n").collect();
    assert_eq!(
        rows[0],
        "v,id,seq,at,org,actor,subject,action,outcome,reason,ip,user_agent,device_id,challenge_id,prev,hash,seal"
    );
    assert!(rows[1].starts_with("\"2\",\"e0\",\"1\",\"2026-11-18T11:06:40Z\",\"acme\",\"'=cmd\",\"u1\",\"code_sent\",\"success\",\"a,\"\"b\"\"\nc\",\"203.0.113.9\",\"\",\"\",\"\","), "{}", rows[1]);
    assert!(
        rows[2].contains(",\"u1\",\"'@u1\",\"code_sent\",\"success\",\"'-1\","),
        "{}",
        rows[2]
    );
    assert!(text.ends_with("\r\n"));
    assert_eq!(rows.len(), 4, "header, two records, and the end");
}

#[test]
fn jsonl_is_the_stored_lines_byte_for_byte_and_still_verifies() {
    let lines = sample();
    let text = jsonl(&lines);
    assert_eq!(text, format!("{}\n", lines.join("\n")));
    let mut verifier = crate::audit::verify::Verifier::new(None);
    for line in text.lines() {
        verifier.check(line).unwrap();
    }
    assert_eq!(verifier.records(), 4);
    let q = AuditQuery {
        view: View::Jsonl,
        ..query(Filter::default())
    };
    assert_eq!(q.export(&lines), Some(text));
    assert_eq!(query(Filter::default()).export(&lines), None);
}

#[test]
fn splicing_replaces_exactly_what_lies_between_the_markers() {
    let page = format!("<main>{ROWS_START}<p>fallback</p>{ROWS_END}</main>");
    assert_eq!(
        splice(&page, "<table></table>").unwrap(),
        format!("<main>{ROWS_START}<table></table>{ROWS_END}</main>")
    );
    assert_eq!(splice("<main></main>", "x"), None);
    assert_eq!(splice(&format!("{ROWS_END}{ROWS_START}"), "x"), None);
    assert_eq!(
        splice(&format!("{ROWS_START}{ROWS_START}{ROWS_END}"), "x"),
        None
    );
}

#[test]
fn the_page_is_recorded_carries_the_query_and_shows_the_fallback_when_the_host_does_nothing() {
    let mut w = World::new();
    let cookie = open(&mut w, "acme");
    let page = get(
        &mut w,
        AUDIT,
        "user=u1&action=code_sent&from=2026-11-01&to=2026-11-18&lang=es",
        &cookie,
    );
    assert_eq!(page.status, 200, "{:?}", page.html);
    let last = w.records().pop().unwrap();
    assert_eq!(
        (
            last.0.as_str(),
            last.1.as_str(),
            last.2.as_str(),
            last.3.as_deref()
        ),
        (
            "acme",
            "admin_console_viewed",
            "admin-1",
            Some("console:audit:user=u1&action=code_sent&from=2026-11-01&to=2026-11-18")
        )
    );
    assert_eq!(
        header(&page, QUERY_HEADER),
        Some(
            "org=acme&view=page&lang=es&limit=200&user=u1&action=code_sent&from=2026-11-01&to=2026-11-18"
        )
    );
    let body = html(&page);
    // The fallback, between the markers, says how to export (`--until` is exclusive).
    let inner = &body[body.find(ROWS_START).unwrap()..body.find(ROWS_END).unwrap()];
    assert!(inner.contains("id=\"audit-fallback\""));
    assert!(
        inner.contains(
            "mfa-step audit export --org &#39;acme&#39; --since 2026-11-01 --until 2026-11-19"
        ),
        "{inner}"
    );
    // The form keeps the filter, labelled, in Spanish.
    assert!(body.contains("<label for=\"user\">Usuario</label>"));
    assert!(body.contains("value=\"u1\""));
    assert!(body.contains("<option value=\"code_sent\" selected>"));
    assert!(body.contains("aria-describedby=\"user-hint\""));
    assert!(body.contains("aria-current=\"page\">Audit") || body.contains("aria-current=\"page\""));
    let csv_link = body.split("id=\"export-csv\" ").nth(1).unwrap();
    let csv_link = csv_link.replace("&#38;", "&").replace("&amp;", "&");
    assert!(
        csv_link.starts_with(
            "href=\"/admin/console/audit/export?format=csv&lang=es&user=u1&action=code_sent&from=2026-11-01&to=2026-11-18\""
        ),
        "{csv_link}"
    );
    // No filter at all: `all`.
    get(&mut w, AUDIT, "", &cookie);
    assert_eq!(
        w.records().pop().unwrap().3.as_deref(),
        Some("console:audit:all")
    );
}

#[test]
fn a_bad_filter_is_a_400_with_the_fields_error_its_value_kept_nothing_recorded_or_queried() {
    let mut w = World::new();
    let cookie = open(&mut w, "acme");
    let before = w.records().len();
    let page = get(&mut w, AUDIT, "user=u1&from=2026-02-30&lang=en", &cookie);
    assert_eq!(page.status, 400);
    let body = html(&page);
    assert!(body.contains("id=\"from-error\""));
    assert!(body.contains("aria-describedby=\"from-hint from-error\" aria-invalid=\"true\""));
    assert!(
        body.contains("value=\"2026-02-30\""),
        "the typed value is kept"
    );
    assert!(body.contains("value=\"u1\""));
    assert!(body.contains("role=\"alert\""));
    assert!(!body.contains(ROWS_START));
    assert_eq!(header(&page, QUERY_HEADER), None);
    assert_eq!(w.records().len(), before, "nothing shown, nothing recorded");
    let page = get(&mut w, AUDIT, "from=2026-11-20&to=2026-11-01", &cookie);
    assert_eq!(page.status, 400);
    assert!(html(&page).contains("id=\"to-error\""));
    let page = get(&mut w, AUDIT, "action=%3Cx%3E", &cookie);
    assert_eq!(page.status, 400);
    assert!(html(&page).contains("id=\"action-error\""));
    assert!(!html(&page).contains("<x>"));
}

#[test]
fn the_export_is_recorded_and_a_download_a_host_that_does_nothing_leaves_as_one_line() {
    let mut w = World::new();
    let cookie = open(&mut w, "acme");
    let page = get(&mut w, AUDIT_EXPORT, "format=csv&outcome=denied", &cookie);
    assert_eq!(page.status, 200);
    assert_eq!(
        header(&page, "content-type"),
        Some("text/csv; charset=utf-8")
    );
    assert_eq!(
        header(&page, "content-disposition"),
        Some("attachment; filename=\"audit-acme-2026-11-18.csv\"")
    );
    assert_eq!(
        header(&page, QUERY_HEADER),
        Some("org=acme&view=csv&lang=en&limit=200&outcome=denied")
    );
    let body = html(&page);
    assert_eq!(body.lines().count(), 1);
    assert!(body.contains("mfa-step audit export --org 'acme'"));
    assert_eq!(
        w.records().pop().unwrap().3.as_deref(),
        Some("console:audit-export:csv:outcome=denied")
    );
    let page = get(&mut w, AUDIT_EXPORT, "format=jsonl", &cookie);
    assert_eq!(header(&page, "content-type"), Some("application/x-ndjson"));
    assert!(
        header(&page, "content-disposition")
            .unwrap()
            .ends_with(".jsonl\"")
    );
    assert_eq!(
        w.records().pop().unwrap().3.as_deref(),
        Some("console:audit-export:jsonl:all")
    );
    // No format, or a bad filter: 400, nothing recorded, no query.
    let before = w.records().len();
    for q in ["", "format=xlsx", "format=csv&to=2026-99-01"] {
        let page = get(&mut w, AUDIT_EXPORT, q, &cookie);
        assert_eq!(page.status, 400, "{q}");
        assert_eq!(header(&page, QUERY_HEADER), None);
        assert_eq!(header(&page, "content-disposition"), None);
    }
    assert_eq!(w.records().len(), before);
}

#[test]
fn another_organization_and_no_session_are_refused_and_never_queried() {
    let mut w = World::new();
    let cookie = open(&mut w, "acme");
    for path in [AUDIT, AUDIT_EXPORT] {
        let page = get(&mut w, path, "format=csv&org=globex", &cookie);
        assert_eq!(page.status, 403, "{path}");
        assert!(html(&page).contains("id=\"wrong-org\""));
        assert_eq!(header(&page, QUERY_HEADER), None);
        let last = w.records().pop().unwrap();
        assert_eq!(
            (last.0.as_str(), last.1.as_str()),
            ("acme", "access_denied")
        );
        let page = get(&mut w, path, "format=csv", "");
        assert_eq!(page.status, 401, "{path}");
        assert_eq!(header(&page, QUERY_HEADER), None);
        let page = get(&mut w, path, "format=csv", "__Host-mfa-console=forged");
        assert_eq!(page.status, 401, "{path}");
    }
    assert!(w.records().iter().all(|r| r.0 != "globex"));
}

#[test]
fn a_view_that_cannot_be_recorded_is_not_shown() {
    let mut w = World::new();
    let cookie = open(&mut w, "acme");
    w.audit.fail.set(true);
    for path in [AUDIT, AUDIT_EXPORT] {
        let page = get(&mut w, path, "format=jsonl", &cookie);
        assert_eq!(page.status, 503, "{path}");
        assert_eq!(header(&page, QUERY_HEADER), None);
        assert_eq!(header(&page, "content-disposition"), None);
    }
}

mod parsers {
    use super::*;
    use proptest::prelude::*;

    /// Text that looks like the filter's and the header's fields, with anything after it.
    fn fields() -> impl Strategy<Value = String> {
        let name = prop::sample::select(vec![
            "org", "view", "lang", "limit", "user", "action", "outcome", "from", "to", "format",
        ]);
        let value = prop_oneof![
            "[a-z0-9_@.|+-]{0,12}",
            "[0-9]{4}-[0-9]{2}-[0-9]{2}",
            prop::sample::select(vec![
                "code_sent",
                "denied",
                "page",
                "csv",
                "en",
                "es",
                "200"
            ])
            .prop_map(str::to_owned),
            any::<String>(),
        ];
        (
            prop::collection::vec((name, value), 0..8),
            prop::collection::vec(any::<u8>(), 0..24),
        )
            .prop_map(|(pairs, tail)| {
                let mut text = form_urlencoded::Serializer::new(String::new());
                for (n, v) in &pairs {
                    text.append_pair(n, v);
                }
                let mut text = text.finish();
                text.push('&');
                text.push_str(&String::from_utf8_lossy(&tail));
                text
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        /// Whatever the query or the header holds: no panic; a filter that parses is one the
        /// checks allow and round-trips through its canonical form; a header that parses
        /// round-trips too.
        #[test]
        fn filters_and_headers_never_panic_and_what_parses_round_trips(text in fields()) {
            if let Ok(filter) = Filter::parse(&text) {
                prop_assert_eq!(Filter::parse(&filter.canonical()), Ok(filter.clone()));
            }
            if let Ok(query) = AuditQuery::from_header(&text) {
                prop_assert_eq!(AuditQuery::from_header(&query.header()), Ok(query.clone()));
                prop_assert!(query.limit >= 1 && query.limit <= audit::PAGE_LIMIT);
            }
        }

        /// Whatever the browser asks for: a page (never a panic), and a query header only on an
        /// answer for the session's own organization.
        #[test]
        fn any_audit_request_is_a_page_and_only_the_sessions_org_is_queried(text in fields()) {
            let mut w = World::new();
            let cookie = open(&mut w, "acme");
            for path in [AUDIT, AUDIT_EXPORT] {
                let page = get(&mut w, path, &text, &cookie);
                prop_assert!(matches!(page.status, 200 | 400 | 403), "{}", page.status);
                if let Some(value) = header(&page, QUERY_HEADER) {
                    prop_assert_eq!(page.status, 200);
                    let query = AuditQuery::from_header(value).unwrap();
                    prop_assert_eq!(query.org.as_str(), "acme");
                }
            }
        }
    }
}
