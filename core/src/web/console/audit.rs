//! The console's audit-trail viewer and its exports. The WIT contract (`@0.2.0`) gives the
//! component no way to read the trail back, so the page is drawn in two halves:
//!
//! ```text
//! browser ─GET /admin/console/audit?user=&action=&outcome=&from=&to=─▶ component (this file)
//!            session, org scope, filter checked (400 + the field's error), view recorded
//!            ◀─ 200 page: filter form, and between ROWS_START / ROWS_END a fallback that says
//!               how to export the trail with `mfa-step audit export`; header QUERY_HEADER =
//!               the canonical query (org from the session, filter, lang, limit, view)
//! host (serve) ─ strips QUERY_HEADER, AuditQuery::from_header, reads the org's stream,
//!               AuditQuery::matches, verifies the chain from its checkpoint, then splices
//!               AuditQuery::fragment (chain status + rows) over the fallback (splice); an
//!               export's body is replaced by AuditQuery::export (csv / jsonl)
//! ```
//!
//! A host that ignores the header (Spin, Node, Django) sends a correct page: the fallback, which
//! tells the admin where the trail is. Everything the admin sees is decided here; the host only
//! queries and splices, calling pure functions natively: [`query`] (the filter, the canonical
//! query, matching, the rows and chain-status fragment) and [`export`] (CSV, JSONL, the splice).
//! This file holds the screen itself: its words, the filter form and the two handlers.
//!
//! Defends against: another organization's records (the org comes from the session, and
//! `matches` keeps only that org's); a filter that is not one (each field is checked, the
//! header is checked again on the host's side); spreadsheet formula injection in the CSV (a cell
//! starting with `=`, `+`, `-`, `@`, tab or CR gets a leading `'`, OWASP's advice); a JSONL export
//! that no longer verifies (its lines are the stored bytes, unchanged).

pub mod export;
pub mod query;

use askama::Template;
use rand_core::CryptoRng;
use serde::Deserialize;

pub use self::export::{csv, csv_cell, jsonl, splice};
pub use self::query::{AuditQuery, BadField, BadQuery, ChainStatus, Filter, View};
use super::super::hosted::{WebRequest, WebResponse, field};
use super::Screen;
use super::words::fill;
use crate::audit::Action;
use crate::engine::Engine;
use crate::kernel::error::Result;
use crate::kernel::time::Timestamp;

/// The response header that carries the canonical query from the component to a host that
/// serves the trail. The host removes it before the answer leaves.
pub const QUERY_HEADER: &str = "x-mfa-step-audit-query";
/// Where the host's fragment begins on the page (the fallback follows it).
pub const ROWS_START: &str = "<!-- mfa-step:audit-rows -->";
/// Where the host's fragment ends.
pub const ROWS_END: &str = "<!-- /mfa-step:audit-rows -->";
/// The most rows a page shows.
pub const PAGE_LIMIT: usize = 200;

pub(super) const LANGUAGES: &[(&str, &str)] = &[
    ("en", include_str!("../../../i18n/console/audit/en.json")),
    ("es", include_str!("../../../i18n/console/audit/es.json")),
];

/// Every action, in the order the filter lists them.
const ACTIONS: [Action; Action::ALL.len()] = Action::ALL;

/// Every outcome, as records write it.
const OUTCOMES: [&str; 3] = ["success", "failure", "denied"];

/// The audit screen's words. Placeholders: `{command}`, `{shown}`, `{total}`, `{seq}`,
/// `{checked}`, `{since}`, `{remaining}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(
    missing_docs,
    reason = "each field is the text of the page element it is named after"
)]
pub struct AuditWords {
    pub heading: String,
    pub intro: String,
    pub filter_legend: String,
    pub user_label: String,
    pub user_hint: String,
    pub action_label: String,
    pub action_any: String,
    pub outcome_label: String,
    pub outcome_any: String,
    pub outcome_success: String,
    pub outcome_failure: String,
    pub outcome_denied: String,
    pub from_label: String,
    pub to_label: String,
    pub date_hint: String,
    pub apply: String,
    pub error_heading: String,
    pub bad_user: String,
    pub bad_action: String,
    pub bad_outcome: String,
    pub bad_date: String,
    pub bad_range: String,
    pub bad_format: String,
    pub export_heading: String,
    pub export_csv: String,
    pub export_jsonl: String,
    pub export_note: String,
    pub records_heading: String,
    pub fallback: String,
    pub export_fallback: String,
    pub caption: String,
    pub col_seq: String,
    pub col_at: String,
    pub col_action: String,
    pub col_outcome: String,
    pub col_actor: String,
    pub col_subject: String,
    pub col_reason: String,
    pub col_ip: String,
    pub showing: String,
    pub no_records: String,
    pub chain_heading: String,
    pub chain_verified: String,
    pub chain_verified_first: String,
    pub chain_verified_partial: String,
    pub chain_broken_at: String,
    pub chain_broken: String,
    pub chain_not_verified: String,
    pub unavailable: String,
    pub export_unavailable: String,
    pub scan_limited: String,
    pub export_too_large: String,
}

/// The words of `tag`, English for anything else.
#[must_use]
pub fn words(tag: &str) -> AuditWords {
    super::words::load(LANGUAGES, tag)
}

fn render_or_empty(template: &impl Template) -> String {
    // Askama renders only what these types hold; a failure is a bug, shown as nothing rather
    // than a partial fragment.
    template.render().unwrap_or_default()
}

/// One field of the filter form.
struct FormField {
    id: &'static str,
    label: String,
    hint: Option<String>,
    value: String,
    /// `(value, label, selected)` for a select; empty for a text or date input.
    options: Vec<(String, String, bool)>,
    date: bool,
    error: Option<String>,
}

/// The screen's body.
#[derive(Template)]
#[template(path = "web/console/audit.html")]
struct AuditBody<'a> {
    t: &'a AuditWords,
    lang: &'static str,
    fields: Vec<FormField>,
    /// The error's words, when the filter did not hold.
    error: Option<String>,
    /// The export links' query (the filter, url-encoded) when the filter held.
    export_query: Option<String>,
    fallback: String,
}

impl AuditBody<'_> {
    fn fields(t: &AuditWords, filter: &Filter, bad: Option<BadField>) -> Vec<FormField> {
        let error = |id: &str| {
            bad.filter(|b| b.field() == id)
                .map(|b| b.message(t).to_owned())
        };
        let value = |v: &Option<String>| v.clone().unwrap_or_default();
        let chosen = |v: &Option<String>, option: &str| v.as_deref() == Some(option);
        let mut actions = vec![(String::new(), t.action_any.clone(), filter.action.is_none())];
        actions.extend(ACTIONS.iter().map(|a| {
            (
                a.as_str().to_owned(),
                a.as_str().to_owned(),
                chosen(&filter.action, a.as_str()),
            )
        }));
        let outcomes = [
            ("", &t.outcome_any),
            ("success", &t.outcome_success),
            ("failure", &t.outcome_failure),
            ("denied", &t.outcome_denied),
        ]
        .into_iter()
        .map(|(v, label)| {
            let selected = if v.is_empty() {
                filter.outcome.is_none()
            } else {
                chosen(&filter.outcome, v)
            };
            (v.to_owned(), label.clone(), selected)
        })
        .collect();
        vec![
            FormField {
                id: "user",
                label: t.user_label.clone(),
                hint: Some(t.user_hint.clone()),
                value: value(&filter.user),
                options: Vec::new(),
                date: false,
                error: error("user"),
            },
            FormField {
                id: "action",
                label: t.action_label.clone(),
                hint: None,
                value: value(&filter.action),
                options: actions,
                date: false,
                error: error("action"),
            },
            FormField {
                id: "outcome",
                label: t.outcome_label.clone(),
                hint: None,
                value: value(&filter.outcome),
                options: outcomes,
                date: false,
                error: error("outcome"),
            },
            FormField {
                id: "from",
                label: t.from_label.clone(),
                hint: Some(t.date_hint.clone()),
                value: value(&filter.from),
                options: Vec::new(),
                date: true,
                error: error("from"),
            },
            FormField {
                id: "to",
                label: t.to_label.clone(),
                hint: Some(t.date_hint.clone()),
                value: value(&filter.to),
                options: Vec::new(),
                date: true,
                error: error("to"),
            },
        ]
    }
}

/// The command that exports what the filter keeps, for the fallback (`--until` is exclusive, so
/// it is the day after `to`).
fn export_command(org: &str, filter: &Filter) -> String {
    // Quoted for a shell: an organization id may hold `|` (`kernel::input::id`), and no quote.
    let mut command = format!("mfa-step audit export --org '{org}'");
    if let Some(from) = &filter.from {
        command.push_str(&format!(" --since {from}"));
    }
    if let Some(to) = &filter.to {
        command.push_str(&format!(" --until {}", day_after(to)));
    }
    command
}

/// The day after a valid `YYYY-MM-DD`.
fn day_after(date: &str) -> String {
    let year: i64 = date.get(..4).and_then(|y| y.parse().ok()).unwrap_or(1970);
    let month: i64 = date.get(5..7).and_then(|m| m.parse().ok()).unwrap_or(1);
    let day: i64 = date.get(8..10).and_then(|d| d.parse().ok()).unwrap_or(1);
    // Days since 1970-01-01 (Howard Hinnant's days_from_civil), plus one, back to a date.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Timestamp((days + 1) * 86_400).date()
}

impl Engine<'_> {
    /// The filter of a screen's request, or the page that says which field does not hold.
    fn audit_filter(
        screen: &Screen,
        t: &AuditWords,
        query: &str,
    ) -> std::result::Result<Filter, WebResponse> {
        Filter::parse(query).map_err(|bad| {
            let typed = Filter::as_typed(query);
            let body = AuditBody {
                t,
                lang: screen.look.lang,
                fields: AuditBody::fields(t, &typed, Some(bad)),
                error: Some(bad.message(t).to_owned()),
                export_query: None,
                fallback: String::new(),
            };
            screen.page(400, &t.heading, "audit", render_or_empty(&body))
        })
    }

    /// `GET /admin/console/audit?user=&action=&outcome=&from=&to=&lang=`: the filter form and the
    /// fallback, with the query for a host that serves the rows.
    pub(super) fn audit_page<R: CryptoRng + ?Sized>(
        &self,
        req: &WebRequest<'_>,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<WebResponse> {
        let screen = match self.screen(req, now, rng)? {
            Ok(screen) => screen,
            Err(page) => return Ok(page),
        };
        let t = words(screen.look.lang);
        let filter = match Self::audit_filter(&screen, &t, req.query) {
            Ok(filter) => filter,
            Err(page) => return Ok(page),
        };
        // Every view leaves a record; one that cannot be recorded is not shown.
        self.viewed(&screen, &format!("audit:{}", filter.described()), now, rng)?;
        let query = AuditQuery {
            org: screen.org().to_owned(),
            filter,
            lang: screen.look.lang,
            limit: PAGE_LIMIT,
            view: View::Page,
        };
        let body = AuditBody {
            t: &t,
            lang: screen.look.lang,
            fields: AuditBody::fields(&t, &query.filter, None),
            error: None,
            export_query: Some(query.filter.canonical()),
            fallback: fill(
                &t.fallback,
                &[("command", &export_command(&query.org, &query.filter))],
            ),
        };
        let mut page = screen.page(200, &t.heading, "audit", render_or_empty(&body));
        page.headers.push((QUERY_HEADER, query.header()));
        Ok(page)
    }

    /// `GET /admin/console/audit/export?format=csv|jsonl&…filter…`: a download of what the filter
    /// keeps, which a host that serves the trail fills in.
    pub(super) fn audit_export<R: CryptoRng + ?Sized>(
        &self,
        req: &WebRequest<'_>,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<WebResponse> {
        let screen = match self.screen(req, now, rng)? {
            Ok(screen) => screen,
            Err(page) => return Ok(page),
        };
        let t = words(screen.look.lang);
        let view = match field(req.query.as_bytes(), "format").as_deref() {
            Some("csv") => View::Csv,
            Some("jsonl") => View::Jsonl,
            _ => {
                return Ok(screen.message(400, "bad-format", &t.error_heading, &t.bad_format));
            }
        };
        let filter = match Self::audit_filter(&screen, &t, req.query) {
            Ok(filter) => filter,
            Err(page) => return Ok(page),
        };
        self.viewed(
            &screen,
            &format!("audit-export:{}:{}", view.as_str(), filter.described()),
            now,
            rng,
        )?;
        let query = AuditQuery {
            org: screen.org().to_owned(),
            filter,
            lang: screen.look.lang,
            limit: PAGE_LIMIT,
            view,
        };
        let (content_type, extension) = match view {
            View::Jsonl => ("application/x-ndjson", "jsonl"),
            _ => ("text/csv; charset=utf-8", "csv"),
        };
        let command = export_command(&query.org, &query.filter);
        Ok(WebResponse {
            status: 200,
            html: Some(format!(
                "{}\n",
                fill(&t.export_fallback, &[("command", &command)])
            )),
            headers: vec![
                ("content-type", content_type.to_owned()),
                (
                    "content-disposition",
                    format!(
                        "attachment; filename=\"audit-{}-{}.{extension}\"",
                        query.org,
                        now.date()
                    ),
                ),
                (QUERY_HEADER, query.header()),
            ],
        })
    }
}
