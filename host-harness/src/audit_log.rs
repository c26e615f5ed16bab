//! Reading an audit log back: `mfa-step audit verify`, `export`, `tail` and `head`.
//!
//! A log is a JSONL file with its rotated segments (`audit.jsonl.000001`, …, then
//! `audit.jsonl`), the `audit_log` table of a SQLite database, or the `mfa_step_audit_log` table of
//! a Postgres database shared by several nodes. Each is read in the order the chain must hold in
//! (stored order; for Postgres, by organization then position); the checks themselves are the core's
//! ([`mfa_step_core::audit::verify::Verifier`]), so the harness and any other verifier agree.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use mfa_step_core::audit::chain::{Record, SealKey};
use mfa_step_core::audit::verify::{Break, Verifier};
use mfa_step_core::kernel::ports::Head;

use crate::backends::audit::{jsonl_rotation_heads, jsonl_segments, sqlite_lines};

/// Where a log is.
#[derive(Debug, Clone)]
pub enum Source {
    /// A JSONL file and its rotated segments.
    Jsonl(PathBuf),
    /// A JSONL file alone, without its rotated segments.
    JsonlNewest(PathBuf),
    /// The `audit_log` table of a SQLite database.
    Sqlite(PathBuf),
    /// The `mfa_step_audit_log` table of a Postgres database.
    Postgres(DatabaseUrl),
}

/// A database URL, which may hold a password: `Debug` never prints it.
#[derive(Clone)]
pub struct DatabaseUrl(pub String);

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatabaseUrl(<redacted>)")
    }
}

/// Where one line sits, for messages: `audit.jsonl.000002:17` or `audit.sqlite rowid 17`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location(pub String);

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Calls `each` with every line of the log in stored order, and how many bytes of how many are
/// read so far (for progress). Stops at the first error `each` returns.
///
/// # Errors
/// The log cannot be read, or `each` failed.
pub fn for_each_line(
    source: &Source,
    mut each: impl FnMut(Location, &str, (u64, u64)) -> Result<()>,
) -> Result<()> {
    match source {
        Source::Jsonl(path) | Source::JsonlNewest(path) => {
            let segments = if matches!(source, Source::Jsonl(_)) {
                jsonl_segments(path)
                    .with_context(|| format!("list the segments of {}", path.display()))?
            } else {
                vec![path.clone()]
                    .into_iter()
                    .filter(|p| p.exists())
                    .collect()
            };
            if segments.is_empty() {
                anyhow::bail!("no audit log at {}", path.display());
            }
            let total: u64 = segments
                .iter()
                .filter_map(|p| std::fs::metadata(p).ok())
                .map(|m| m.len())
                .sum();
            let mut done = 0u64;
            for segment in segments {
                let file =
                    File::open(&segment).with_context(|| format!("open {}", segment.display()))?;
                let name = segment
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                for (index, line) in BufReader::new(file).lines().enumerate() {
                    let line = line.with_context(|| format!("read {}", segment.display()))?;
                    done += line.len() as u64 + 1;
                    each(
                        Location(format!("{name}:{}", index + 1)),
                        &line,
                        (done, total),
                    )?;
                }
            }
        }
        Source::Postgres(url) => {
            let rows = crate::backends::postgres::audit_lines(&url.0)?;
            let total = rows.len() as u64;
            for (i, (org, seq, line)) in rows.iter().enumerate() {
                each(
                    Location(format!("mfa_step_audit_log {org} seq {seq}")),
                    line,
                    (i as u64 + 1, total),
                )?;
            }
        }
        Source::Sqlite(path) => {
            let rows = sqlite_lines(path)?;
            let total = rows.len() as u64;
            for (i, (rowid, line)) in rows.iter().enumerate() {
                each(
                    Location(format!("audit_log rowid {rowid}")),
                    line,
                    (i as u64 + 1, total),
                )?;
            }
        }
    }
    Ok(())
}

/// What `verify` found.
#[derive(Debug)]
pub struct Report {
    /// Records that verified.
    pub records: u64,
    /// Every stream's last verified record.
    pub heads: BTreeMap<String, Head>,
    /// The first problem, and where; `None` when the log is whole.
    pub broken: Option<(Option<Location>, Break)>,
}

/// How to verify.
#[derive(Debug, Default)]
pub struct Checks {
    /// Check seals with this key.
    pub seal: Option<SealKey>,
    /// Compare each stream's end with these counts (from the store).
    pub counted: Option<BTreeMap<String, u64>>,
    /// Start each stream after these heads (for a log whose earlier segments were archived).
    pub resume: BTreeMap<String, Head>,
}

/// Verifies a log: every record's form, hash, seal and link, then the counts.
///
/// # Errors
/// The log cannot be read (a broken chain is not an error: it is in the report).
pub fn verify(
    source: &Source,
    checks: Checks,
    mut progress: impl FnMut(u64, u64),
) -> Result<Report> {
    let mut verifier = Verifier::new(checks.seal);
    for (org, head) in checks.resume {
        verifier.resume(&org, head);
    }
    let mut broken = None;
    let outcome = for_each_line(source, |location, line, (done, total)| {
        if let Err(b) = verifier.check(line) {
            broken = Some((Some(location), b));
            anyhow::bail!("stop");
        }
        progress(done, total);
        Ok(())
    });
    if broken.is_none() {
        outcome?;
        if let Some(counted) = &checks.counted
            && let Err(b) = verifier.finish(counted)
        {
            broken = Some((None, b));
        }
    }
    Ok(Report {
        records: verifier.records(),
        heads: verifier.heads().clone(),
        broken,
    })
}

/// The heads saved at a JSONL log's last rotation: where its newest segment starts.
///
/// # Errors
/// The heads file cannot be read.
pub fn rotation_heads(path: &Path) -> Result<BTreeMap<String, Head>> {
    Ok(jsonl_rotation_heads(path)
        .with_context(|| format!("read the heads file of {}", path.display()))?
        .into_iter()
        .collect())
}

/// The per-organization record counts a SQLite store kept (the truncation anchors).
///
/// # Errors
/// The database cannot be opened or read.
pub fn store_counts(db: &Path) -> Result<BTreeMap<String, u64>> {
    let prefix = mfa_step_core::kernel::keys::audit_count("");
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("open {}", db.display()))?;
    let mut stmt = conn
        .prepare("SELECT key, value FROM counters WHERE substr(key, 1, length(?1)) = ?1")
        .with_context(|| format!("read the counters of {}", db.display()))?;
    let rows = stmt
        .query_map([&prefix], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows
        .into_iter()
        .filter_map(|(key, n)| {
            Some((
                key.strip_prefix(&prefix)?.to_owned(),
                u64::try_from(n).ok()?,
            ))
        })
        .collect())
}

/// Which records `export` and `tail` keep.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    /// Only this organization.
    pub org: Option<String>,
    /// Only records at or after this instant (Unix seconds).
    pub since: Option<i64>,
    /// Only records before this instant (Unix seconds).
    pub until: Option<i64>,
}

impl Filter {
    /// Whether `record` passes.
    #[must_use]
    pub fn keeps(&self, record: &Record) -> bool {
        if self.org.as_ref().is_some_and(|org| *org != record.org) {
            return false;
        }
        if self.since.is_none() && self.until.is_none() {
            return true;
        }
        let Ok(at) = record.at.parse::<jiff::Timestamp>() else {
            return false;
        };
        let at = at.as_second();
        self.since.is_none_or(|s| at >= s) && self.until.is_none_or(|u| at < u)
    }
}

/// Parses an instant given on the command line: RFC 3339 (`2026-11-24T00:00:00Z`) or a date
/// (`2026-11-24`, meaning its start in UTC).
///
/// # Errors
/// Neither form.
pub fn parse_instant(text: &str) -> Result<i64> {
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Ok(t.as_second());
    }
    let _: jiff::civil::Date = text
        .parse()
        .with_context(|| format!("`{text}` is neither an RFC 3339 time nor a YYYY-MM-DD date"))?;
    let start: jiff::Timestamp = format!("{text}T00:00:00Z")
        .parse()
        .with_context(|| format!("`{text}` is out of range"))?;
    Ok(start.as_second())
}

/// Writes the records `filter` keeps, as stored (JSONL, ready for a SIEM). Returns how many.
/// Lines that are not records are skipped here; `verify` is the tool that reports them.
///
/// # Errors
/// The log cannot be read or `out` written.
pub fn export(source: &Source, filter: &Filter, out: &mut dyn Write) -> Result<u64> {
    let mut n = 0;
    for_each_line(source, |_, line, _| {
        if Record::parse(line).is_ok_and(|r| filter.keeps(&r)) {
            out.write_all(line.as_bytes())?;
            out.write_all(b"\n")?;
            n += 1;
        }
        Ok(())
    })?;
    out.flush()?;
    Ok(n)
}

/// The last `n` records `filter` keeps, oldest first.
///
/// # Errors
/// The log cannot be read.
pub fn last(source: &Source, filter: &Filter, n: usize) -> Result<Vec<String>> {
    let mut kept = std::collections::VecDeque::new();
    for_each_line(source, |_, line, _| {
        if Record::parse(line).is_ok_and(|r| filter.keeps(&r)) {
            kept.push_back(line.to_owned());
            if kept.len() > n {
                kept.pop_front();
            }
        }
        Ok(())
    })?;
    Ok(kept.into())
}

/// The highest `seq` of each organization in the log.
///
/// # Errors
/// The log cannot be read.
pub fn last_seqs(source: &Source) -> Result<BTreeMap<String, u64>> {
    let mut seqs = BTreeMap::new();
    for_each_line(source, |_, line, _| {
        if let Ok(r) = Record::parse(line) {
            let seq = seqs.entry(r.org).or_insert(0);
            *seq = r.seq.max(*seq);
        }
        Ok(())
    })?;
    Ok(seqs)
}
