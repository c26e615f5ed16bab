//! What the page and a host that serves the trail share: the filter (checked the same way on both
//! sides), the canonical query the page hands over in [`super::QUERY_HEADER`], which records it
//! keeps, and the fragment of rows and chain status that takes the fallback's place.

use askama::Template;

use super::super::super::hosted::field;
use super::export::{csv, jsonl};
use super::{ACTIONS, AuditWords, OUTCOMES, PAGE_LIMIT, fill, render_or_empty, words};
use crate::audit::chain::Record;
use crate::email::i18n;

/// Which records to show: each set field must hold. Dates are UTC days, `YYYY-MM-DD`, inclusive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// The user who acted or whom the record is about.
    pub user: Option<String>,
    /// One action (`crate::audit::Action`'s name).
    pub action: Option<String>,
    /// One outcome.
    pub outcome: Option<String>,
    /// The first day.
    pub from: Option<String>,
    /// The last day.
    pub to: Option<String>,
}

/// A filter field that does not hold, and its words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadField {
    /// Not an id.
    User,
    /// Not an action.
    Action,
    /// Not an outcome.
    Outcome,
    /// Not a date.
    From,
    /// Not a date.
    To,
    /// `from` is after `to`.
    Range,
}

impl BadField {
    /// The form field it is about.
    #[must_use]
    pub fn field(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Action => "action",
            Self::Outcome => "outcome",
            Self::From => "from",
            Self::To | Self::Range => "to",
        }
    }

    pub(super) fn message(self, t: &AuditWords) -> &str {
        match self {
            Self::User => &t.bad_user,
            Self::Action => &t.bad_action,
            Self::Outcome => &t.bad_outcome,
            Self::From | Self::To => &t.bad_date,
            Self::Range => &t.bad_range,
        }
    }
}

/// Whether `text` is a real calendar date written `YYYY-MM-DD`.
fn is_date(text: &str) -> bool {
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())
            .flatten()
    };
    let (Some(year), Some(month), Some(day)) = (digits(0..4), digits(5..7), digits(8..10)) else {
        return false;
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&day)
}

/// The first second (Unix) of a valid `YYYY-MM-DD` (Howard Hinnant's `days_from_civil`).
fn day_start(date: &str) -> Option<i64> {
    if !is_date(date) {
        return None;
    }
    let year: i64 = date.get(..4)?.parse().ok()?;
    let month: i64 = date.get(5..7)?.parse().ok()?;
    let day: i64 = date.get(8..10)?.parse().ok()?;
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some((era * 146_097 + doe - 719_468) * 86_400)
}

impl Filter {
    /// Reads the filter from a query string; an empty field is no filter.
    ///
    /// # Errors
    /// The first field that does not hold (the form shows its words).
    pub fn parse(query: &str) -> std::result::Result<Self, BadField> {
        let get = |name| field(query.as_bytes(), name).filter(|v| !v.is_empty());
        let filter = Self {
            user: get("user"),
            action: get("action"),
            outcome: get("outcome"),
            from: get("from"),
            to: get("to"),
        };
        filter.check()?;
        Ok(filter)
    }

    /// The filter's form values as typed (for a form shown again with its error).
    pub(super) fn as_typed(query: &str) -> Self {
        let get = |name| field(query.as_bytes(), name).filter(|v| !v.is_empty());
        Self {
            user: get("user"),
            action: get("action"),
            outcome: get("outcome"),
            from: get("from"),
            to: get("to"),
        }
    }

    fn check(&self) -> std::result::Result<(), BadField> {
        if let Some(user) = &self.user
            && crate::kernel::input::id("user", user).is_err()
        {
            return Err(BadField::User);
        }
        if let Some(action) = &self.action
            && !ACTIONS.iter().any(|a| a.as_str() == action)
        {
            return Err(BadField::Action);
        }
        if let Some(outcome) = &self.outcome
            && !OUTCOMES.contains(&outcome.as_str())
        {
            return Err(BadField::Outcome);
        }
        if self.from.as_deref().is_some_and(|d| !is_date(d)) {
            return Err(BadField::From);
        }
        if self.to.as_deref().is_some_and(|d| !is_date(d)) {
            return Err(BadField::To);
        }
        // Dates of one form compare as text.
        if let (Some(from), Some(to)) = (&self.from, &self.to)
            && from > to
        {
            return Err(BadField::Range);
        }
        Ok(())
    }

    /// The set fields, url-encoded in a fixed order: `user=…&action=…&outcome=…&from=…&to=…`.
    #[must_use]
    pub fn canonical(&self) -> String {
        let mut out = form_urlencoded::Serializer::new(String::new());
        for (name, value) in self.pairs() {
            out.append_pair(name, value);
        }
        out.finish()
    }

    fn pairs(&self) -> Vec<(&'static str, &str)> {
        [
            ("user", &self.user),
            ("action", &self.action),
            ("outcome", &self.outcome),
            ("from", &self.from),
            ("to", &self.to),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name, value.as_deref()?)))
        .collect()
    }

    /// The filter as the audit record's reason says it: its canonical form, or `all`.
    pub(super) fn described(&self) -> String {
        let canonical = self.canonical();
        if canonical.is_empty() {
            "all".to_owned()
        } else {
            canonical
        }
    }

    /// The filter's dates as Unix seconds, both bounds included: from the first second of `from`
    /// to the last of `to` (UTC), for a host that narrows its read by a record's time before
    /// [`AuditQuery::matches`] checks every field again.
    #[must_use]
    pub fn seconds(&self) -> (Option<i64>, Option<i64>) {
        (
            self.from.as_deref().and_then(day_start),
            self.to
                .as_deref()
                .and_then(day_start)
                .map(|start| start + 86_399),
        )
    }

    /// Whether `record` passes (the organization is the query's business, not the filter's).
    #[must_use]
    pub fn keeps(&self, record: &Record) -> bool {
        let day = record.at.get(..10).unwrap_or_default();
        self.user
            .as_ref()
            .is_none_or(|u| *u == record.actor || *u == record.subject)
            && self.action.as_ref().is_none_or(|a| *a == record.action)
            && self.outcome.as_ref().is_none_or(|o| *o == record.outcome)
            && self.from.as_deref().is_none_or(|from| day >= from)
            && self.to.as_deref().is_none_or(|to| day <= to)
    }
}

/// What the host is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// The rows and the chain's status, spliced into the page.
    Page,
    /// Every matching record as CSV.
    Csv,
    /// Every matching record as stored (JSON Lines).
    Jsonl,
}

impl View {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Page => "page",
            Self::Csv => "csv",
            Self::Jsonl => "jsonl",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "page" => Some(Self::Page),
            "csv" => Some(Self::Csv),
            "jsonl" => Some(Self::Jsonl),
            _ => None,
        }
    }
}

/// What the chain check found, for the status block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainStatus {
    /// Every record through `through` verified: `checked` of them in this check, after the
    /// checkpoint at `since` (0: from the stream's first record).
    Verified {
        /// The last verified `seq`.
        through: u64,
        /// Records checked now.
        checked: u64,
        /// The checkpoint the check started from.
        since: u64,
    },
    /// Every record through `through` verified, as for `Verified`, but the check stopped there
    /// to keep one view's work bounded: `remaining` newer records wait for the next view.
    Partial {
        /// The last verified `seq` (the new checkpoint).
        through: u64,
        /// Records checked now.
        checked: u64,
        /// The checkpoint the check started from.
        since: u64,
        /// Records after `through`, not yet verified.
        remaining: u64,
    },
    /// The first break, at `seq` when the record was readable enough to tell.
    Broken {
        /// Where.
        seq: Option<u64>,
    },
    /// The host did not check.
    NotVerified,
}

/// The canonical query a page hands to its host: the organization (from the session), the filter,
/// the page's language, the most rows and what is wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    /// Organization whose stream is read.
    pub org: String,
    /// Which of its records.
    pub filter: Filter,
    /// The page's language.
    pub lang: &'static str,
    /// The most rows a page shows.
    pub limit: usize,
    /// The page or an export.
    pub view: View,
}

/// Why a query header was refused: the host answers 500 rather than guess.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the audit query header is malformed: {0}")]
pub struct BadQuery(&'static str);

impl AuditQuery {
    /// The header's value: url-encoded, `org`, `view`, `lang`, `limit`, then the filter.
    #[must_use]
    pub fn header(&self) -> String {
        let mut out = form_urlencoded::Serializer::new(String::new());
        out.append_pair("org", &self.org)
            .append_pair("view", self.view.as_str())
            .append_pair("lang", self.lang)
            .append_pair("limit", &self.limit.to_string());
        for (name, value) in self.filter.pairs() {
            out.append_pair(name, value);
        }
        out.finish()
    }

    /// Parses a header [`AuditQuery::header`] wrote, checking every field again.
    ///
    /// # Errors
    /// A field is missing, repeated, unknown or not valid.
    pub fn from_header(value: &str) -> std::result::Result<Self, BadQuery> {
        let mut seen: Vec<String> = Vec::new();
        for (name, _) in form_urlencoded::parse(value.as_bytes()) {
            if !matches!(
                name.as_ref(),
                "org" | "view" | "lang" | "limit" | "user" | "action" | "outcome" | "from" | "to"
            ) {
                return Err(BadQuery("an unknown field"));
            }
            if seen.iter().any(|s| *s == name) {
                return Err(BadQuery("a repeated field"));
            }
            seen.push(name.into_owned());
        }
        let get = |name| field(value.as_bytes(), name);
        let org = get("org").ok_or(BadQuery("no org"))?;
        crate::kernel::input::id("org", &org).map_err(|_| BadQuery("not an org id"))?;
        let view = get("view")
            .as_deref()
            .and_then(View::parse)
            .ok_or(BadQuery("no view"))?;
        let lang = get("lang")
            .filter(|tag| i18n::is_supported(tag))
            .map(|tag| i18n::choose(Some(&tag), "en"))
            .ok_or(BadQuery("no language"))?;
        let limit = get("limit")
            .and_then(|l| l.parse::<usize>().ok())
            .filter(|l| (1..=PAGE_LIMIT).contains(l))
            .ok_or(BadQuery("no limit"))?;
        let filter = Filter::parse(value).map_err(|_| BadQuery("not a filter"))?;
        Ok(Self {
            org,
            filter,
            lang,
            limit,
            view,
        })
    }

    /// Whether a stored line is a record of this organization that the filter keeps. A line
    /// that is not a record is not shown (the chain check reports it).
    #[must_use]
    pub fn matches(&self, line: &str) -> bool {
        Record::parse(line).is_ok_and(|r| r.org == self.org && self.filter.keeps(&r))
    }

    /// The HTML that replaces the fallback: the chain's status, then the newest `limit` of
    /// `matching` (the lines that [`AuditQuery::matches`], in stream order) as a table.
    #[must_use]
    pub fn fragment(&self, matching: &[String], chain: &ChainStatus) -> String {
        self.fragment_of(matching.iter().rev(), matching.len(), chain)
    }

    /// The same HTML from the newest matching lines only (newest first; any past `limit` are
    /// not shown) and how many match in all: for a host that counts the matches without
    /// reading them.
    #[must_use]
    pub fn fragment_newest(&self, newest: &[String], total: usize, chain: &ChainStatus) -> String {
        self.fragment_of(newest.iter(), total, chain)
    }

    fn fragment_of<'a>(
        &self,
        newest: impl Iterator<Item = &'a String>,
        total: usize,
        chain: &ChainStatus,
    ) -> String {
        let t = words(self.lang);
        let rows: Vec<Row> = newest
            .filter_map(|line| Record::parse(line).ok())
            .take(self.limit)
            .map(|r| Row {
                seq: r.seq.to_string(),
                at: r.at.replace('T', " ").trim_end_matches('Z').to_owned(),
                action: r.action,
                outcome: r.outcome,
                actor: r.actor,
                subject: r.subject,
                reason: r.reason.unwrap_or_default(),
                ip: r.ip.unwrap_or_default(),
            })
            .collect();
        // Never fewer in all than shown, whatever a host counted.
        let total = total.max(rows.len());
        let shown = rows.len().to_string();
        let total_text = total.to_string();
        let counts = [("shown", shown.as_str()), ("total", total_text.as_str())];
        let (chain_text, chain_ok) = match chain {
            ChainStatus::Verified {
                through,
                checked,
                since,
            } => (
                fill(
                    if *since == 0 {
                        &t.chain_verified_first
                    } else {
                        &t.chain_verified
                    },
                    &[
                        ("seq", &through.to_string()),
                        ("checked", &checked.to_string()),
                        ("since", &since.to_string()),
                    ],
                ),
                Some(true),
            ),
            ChainStatus::Partial {
                through,
                checked,
                remaining,
                ..
            } => (
                fill(
                    &t.chain_verified_partial,
                    &[
                        ("seq", &through.to_string()),
                        ("checked", &checked.to_string()),
                        ("remaining", &remaining.to_string()),
                    ],
                ),
                // Not an alert and not yet "verified": a note that more is to come.
                None,
            ),
            ChainStatus::Broken { seq: Some(seq) } => (
                fill(&t.chain_broken_at, &[("seq", &seq.to_string())]),
                Some(false),
            ),
            ChainStatus::Broken { seq: None } => (t.chain_broken.clone(), Some(false)),
            ChainStatus::NotVerified => (t.chain_not_verified.clone(), None),
        };
        let view = Fragment {
            caption: fill(&t.caption, &counts),
            showing: (rows.len() < total).then(|| fill(&t.showing, &counts)),
            t: &t,
            rows,
            chain_text,
            chain_ok,
            unavailable: false,
        };
        render_or_empty(&view)
    }

    /// The HTML that replaces the fallback when the trail could not be read: it says so, and
    /// shows nothing else.
    #[must_use]
    pub fn unavailable(&self) -> String {
        let t = words(self.lang);
        render_or_empty(&Fragment {
            caption: String::new(),
            showing: None,
            t: &t,
            rows: Vec::new(),
            chain_text: String::new(),
            chain_ok: None,
            unavailable: true,
        })
    }

    /// An export's body when the trail could not be read (plain text, one line).
    #[must_use]
    pub fn export_unavailable(&self) -> String {
        format!("{}\n", words(self.lang).export_unavailable)
    }

    /// The note a page shows above its rows when the host applied the filter to only the newest
    /// `read` of the `total` records of its dates and action (HTML, escaped).
    #[must_use]
    pub fn scan_limited(&self, read: usize, total: u64) -> String {
        let t = words(self.lang);
        let text = fill(
            &t.scan_limited,
            &[("read", &read.to_string()), ("total", &total.to_string())],
        );
        let mut html = String::from("<p class=\"note warn\" id=\"audit-scan-limited\">");
        for c in text.chars() {
            match c {
                '&' => html.push_str("&amp;"),
                '<' => html.push_str("&lt;"),
                '>' => html.push_str("&gt;"),
                '"' => html.push_str("&quot;"),
                '\'' => html.push_str("&#39;"),
                c => html.push(c),
            }
        }
        html.push_str("</p>");
        html
    }

    /// What an export says instead of a file when more than `max` records match (text).
    #[must_use]
    pub fn export_too_large(&self, max: usize) -> String {
        let t = words(self.lang);
        format!(
            "{}\n",
            fill(&t.export_too_large, &[("max", &max.to_string())])
        )
    }

    /// The export of `matching` (in stream order) in the query's format; `None` for a page.
    #[must_use]
    pub fn export(&self, matching: &[String]) -> Option<String> {
        match self.view {
            View::Page => None,
            View::Csv => Some(csv(matching)),
            View::Jsonl => Some(jsonl(matching)),
        }
    }
}

/// One row of the table.
struct Row {
    seq: String,
    at: String,
    action: String,
    outcome: String,
    actor: String,
    subject: String,
    reason: String,
    ip: String,
}

/// The host's fragment: the chain's status and the rows, or that the trail could not be read.
#[derive(Template)]
#[template(path = "web/console/audit_rows.html")]
struct Fragment<'a> {
    t: &'a AuditWords,
    caption: String,
    showing: Option<String>,
    rows: Vec<Row>,
    chain_text: String,
    /// `Some(true)` verified, `Some(false)` broken, `None` not checked.
    chain_ok: Option<bool>,
    unavailable: bool,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn filter_dates_become_inclusive_unix_second_bounds() {
        let filter = Filter {
            from: Some("2026-11-30".to_owned()),
            to: Some("2026-12-01".to_owned()),
            ..Filter::default()
        };
        // 2026-11-30T00:00:00Z and 2026-12-01T23:59:59Z.
        assert_eq!(
            filter.seconds(),
            (Some(1_795_996_800), Some(1_795_996_800 + 2 * 86_400 - 1))
        );
        assert_eq!(
            crate::kernel::time::Timestamp(1_795_996_800).rfc3339(),
            "2026-11-30T00:00:00Z"
        );
        assert_eq!(day_start("1970-01-01"), Some(0));
        assert_eq!(day_start("2024-02-29"), Some(1_709_164_800));
        assert_eq!(day_start("2023-02-29"), None);
        assert_eq!(Filter::default().seconds(), (None, None));
    }

    #[test]
    fn a_partial_check_says_how_far_it_got_and_what_is_left_in_every_language() {
        for lang in ["en", "es"] {
            let query = AuditQuery {
                org: "acme".to_owned(),
                filter: Filter::default(),
                lang,
                limit: 10,
                view: View::Page,
            };
            let html = query.fragment(
                &[],
                &ChainStatus::Partial {
                    through: 50_000,
                    checked: 50_000,
                    since: 0,
                    remaining: 1_234,
                },
            );
            assert!(html.contains("50000") && html.contains("1234"), "{html}");
            assert!(!html.contains('{'), "every placeholder filled: {html}");
            assert!(!html.contains("role=\"alert\""), "{html}");
        }
    }
}
