//! The exports an auditor takes away, and the splice of the host's fragment into the page: pure
//! text functions, so every host produces the same bytes.

use super::{ROWS_END, ROWS_START};
use crate::audit::chain::Record;

/// Records as stored, one per line: the bytes are the trail's, so every hash still verifies.
#[must_use]
pub fn jsonl(lines: &[String]) -> String {
    let mut out = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for line in lines {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The CSV columns: every field of a record, named as in the trail.
const CSV_HEAD: [&str; 17] = [
    "v",
    "id",
    "seq",
    "at",
    "org",
    "actor",
    "subject",
    "action",
    "outcome",
    "reason",
    "ip",
    "user_agent",
    "device_id",
    "challenge_id",
    "prev",
    "hash",
    "seal",
];

/// Records as CSV (RFC 4180: CRLF line ends, a header row, every record's cell quoted). A line that is
/// not a record is left out. Every cell a spreadsheet would run as a formula is neutralized.
#[must_use]
pub fn csv(lines: &[String]) -> String {
    let mut out = String::new();
    // The header's names are fixed and plain: written bare, for tools that match on them.
    out.push_str(&CSV_HEAD.join(","));
    out.push_str("\r\n");
    for record in lines.iter().filter_map(|l| Record::parse(l).ok()) {
        let opt = |v: Option<String>| v.unwrap_or_default();
        push_row(
            &mut out,
            [
                record.v.to_string(),
                record.id,
                record.seq.to_string(),
                record.at,
                record.org,
                record.actor,
                record.subject,
                record.action,
                record.outcome,
                opt(record.reason),
                opt(record.ip),
                opt(record.user_agent),
                opt(record.device_id),
                opt(record.challenge_id),
                record.prev,
                record.hash,
                opt(record.seal),
            ],
        );
    }
    out
}

fn push_row(out: &mut String, cells: impl IntoIterator<Item = String>) {
    for (i, cell) in cells.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&csv_cell(&cell));
    }
    out.push_str("\r\n");
}

/// One CSV cell, quoted always (RFC 4180, quotes doubled): a cell quoted whatever it holds stays
/// one cell in every spreadsheet, including those that split on `;` or a tab (a `x;=1+1` left
/// bare is two cells there, the second a formula). A cell that a spreadsheet would run as a
/// formula gets a `'` first: one that starts with `=`, `+`, `-`, `@`, a tab or CR, also after
/// leading spaces, or with the full-width `＝`, `＋`, `－`, `＠` some spreadsheets read as those.
#[must_use]
pub fn csv_cell(value: &str) -> String {
    let risky = |c: char| {
        matches!(
            c,
            '=' | '+' | '-' | '@' | '\t' | '\r' | '＝' | '＋' | '－' | '＠'
        )
    };
    let first = value.trim_start_matches(' ').chars().next();
    let neutral = if value.starts_with(['\t', '\r']) || first.is_some_and(risky) {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    format!("\"{}\"", neutral.replace('"', "\"\""))
}

/// `page` with what lies between [`ROWS_START`] and [`ROWS_END`] replaced by `fragment`; `None`
/// when the page has not exactly one such pair.
#[must_use]
pub fn splice(page: &str, fragment: &str) -> Option<String> {
    let start = page.find(ROWS_START)?;
    let end = page.find(ROWS_END)?;
    if end < start || page.matches(ROWS_START).count() != 1 || page.matches(ROWS_END).count() != 1 {
        return None;
    }
    let inner = start + ROWS_START.len();
    Some(format!("{}{fragment}{}", &page[..inner], &page[end..]))
}
