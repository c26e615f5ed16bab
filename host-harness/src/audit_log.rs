//! Reading an audit log back: `mfa-step audit verify`, `export`, `tail` and `head`.
//!
//! A log is a JSONL file with its rotated segments (`audit.jsonl.000001`, …, then
//! `audit.jsonl`), the `audit_log` table of a SQLite database, or the `mfa_step_audit_log` table of
//! a Postgres database shared by several nodes, or the key-value store of the app on Spin (its
//! SQLite file or its Redis, with the keys of `spin-adapter/src/mapping.rs`). Each is read in the
//! order the chain must hold in (stored order; for Postgres and Spin, by organization then
//! position); the checks themselves are the core's
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
    /// The key-value store of the app on Spin: `audit:<org>:<seq, 20 digits>` keys.
    SpinKv(SpinKv),
}

/// The key-value store Spin keeps the app's state in (`mfa-step audit verify --spin-kv`).
#[derive(Debug, Clone)]
pub enum SpinKv {
    /// Spin's default store: the SQLite file `<state dir>/sqlite_key_value.db` (store `default`).
    Sqlite(PathBuf),
    /// A Redis server (`spin up --runtime-config-file` with `type = "redis"`).
    Redis(DatabaseUrl),
}

impl SpinKv {
    /// `redis://…` or `rediss://…` is a Redis server; anything else is a SQLite file.
    #[must_use]
    pub fn parse(text: &str) -> Self {
        if text.starts_with("redis://") || text.starts_with("rediss://") {
            Self::Redis(DatabaseUrl(text.to_owned()))
        } else {
            Self::Sqlite(PathBuf::from(text))
        }
    }
}

/// The Spin store the app uses (`key_value_stores = ["default"]` in spin.toml).
const SPIN_STORE: &str = "default";
/// Prefix of an audit record's key on Spin (`spin-adapter/src/mapping.rs`, `AUDIT_PREFIX`).
const SPIN_AUDIT_PREFIX: &str = "audit:";
/// Prefix of an organization's record count on Spin (`AUDIT_LEN_PREFIX`), kept by adapters before
/// `audit-newest`: a lower bound of its stream's length (a writer may die between its write and
/// its count).
const SPIN_AUDIT_LEN_PREFIX: &str = "audit-len:";
/// Prefix of an organization's newest record's position on Spin (`AUDIT_NEWEST_PREFIX`), decimal
/// text written in one batch with that record: a lower bound of its stream's length too.
const SPIN_AUDIT_NEWEST_PREFIX: &str = "audit-newest:";

/// `audit:<org>:<seq>` split back into its parts (`<seq>` is the last field, 20 digits).
fn spin_audit_key(key: &str) -> Option<(String, u64)> {
    let (org, seq) = key.strip_prefix(SPIN_AUDIT_PREFIX)?.rsplit_once(':')?;
    (seq.len() == 20 && seq.bytes().all(|b| b.is_ascii_digit()))
        .then(|| Some((org.to_owned(), seq.parse().ok()?)))
        .flatten()
}

/// Every key under `prefix` with its value, from the Spin store.
fn spin_kv_entries(kv: &SpinKv, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
    match kv {
        SpinKv::Sqlite(path) => {
            let conn = rusqlite::Connection::open_with_flags(
                path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .with_context(|| format!("open Spin's key-value file {}", path.display()))?;
            let mut stmt = conn
                .prepare(
                    "SELECT key, value FROM spin_key_value \
                     WHERE store = ?1 AND substr(key, 1, length(?2)) = ?2",
                )
                .with_context(|| format!("read the spin_key_value table of {}", path.display()))?;
            let rows = stmt
                .query_map(rusqlite::params![SPIN_STORE, prefix], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, Vec<u8>>(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        }
        SpinKv::Redis(url) => {
            // The URL is not repeated in errors: it may hold a password.
            let client = redis::Client::open(url.0.as_str())
                .map_err(|e| anyhow::anyhow!("the Redis URL does not parse: {:?}", e.kind()))?;
            let mut conn = client
                .get_connection_with_timeout(std::time::Duration::from_secs(10))
                .map_err(|e| anyhow::anyhow!("cannot reach Spin's Redis: {e}"))?;
            let pattern = format!("{}*", redis_glob_escape(prefix));
            let mut keys = Vec::new();
            let mut cursor = 0u64;
            loop {
                let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query(&mut conn)
                    .map_err(|e| anyhow::anyhow!("scan Spin's Redis: {e}"))?;
                keys.extend(batch);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
            // SCAN may return a key more than once.
            keys.sort();
            keys.dedup();
            let mut entries = Vec::with_capacity(keys.len());
            for chunk in keys.chunks(500) {
                let values: Vec<Option<Vec<u8>>> =
                    redis::cmd("MGET")
                        .arg(chunk)
                        .query(&mut conn)
                        .map_err(|e| anyhow::anyhow!("read Spin's Redis: {e}"))?;
                entries.extend(
                    chunk
                        .iter()
                        .zip(values)
                        .filter_map(|(k, v)| Some((k.clone(), v?))),
                );
            }
            Ok(entries)
        }
    }
}

/// `text` with Redis glob metacharacters escaped.
fn redis_glob_escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escape = matches!(c, '*' | '?' | '[' | ']' | '\\');
            escape.then_some('\\').into_iter().chain(std::iter::once(c))
        })
        .collect()
}

/// The audit records in a Spin store, by organization then position: `(org, seq, line)`.
///
/// # Errors
/// The store cannot be read, or a record is not UTF-8.
pub fn spin_kv_lines(kv: &SpinKv) -> Result<Vec<(String, u64, String)>> {
    let mut rows = Vec::new();
    for (key, value) in spin_kv_entries(kv, SPIN_AUDIT_PREFIX)? {
        let Some((org, seq)) = spin_audit_key(&key) else {
            anyhow::bail!("the key {key:?} is under {SPIN_AUDIT_PREFIX} but is not a record's");
        };
        let line = String::from_utf8(value)
            .map_err(|_| anyhow::anyhow!("the record at {key:?} is not UTF-8"))?;
        rows.push((org, seq, line));
    }
    rows.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    Ok(rows)
}

/// Each organization's record count in a Spin store: the fewest records its stream may hold, so a
/// log that ends short of it was truncated. The larger of the newest record's position
/// (`audit-newest:<org>`, decimal text) and the count older adapters kept (`audit-len:<org>`, a
/// counter: 8 little-endian bytes in Spin's SQLite store, decimal text in Redis).
///
/// # Errors
/// The store cannot be read, or a count is not a number.
pub fn spin_kv_counts(kv: &SpinKv) -> Result<BTreeMap<String, u64>> {
    let mut counts = BTreeMap::new();
    for (key, value) in spin_kv_entries(kv, SPIN_AUDIT_NEWEST_PREFIX)? {
        let org = key
            .strip_prefix(SPIN_AUDIT_NEWEST_PREFIX)
            .unwrap_or_default()
            .to_owned();
        let n: u64 = std::str::from_utf8(&value)
            .ok()
            .and_then(|t| t.parse().ok())
            .with_context(|| format!("the position at {key:?} is not a number"))?;
        counts.insert(org, n);
    }
    for (key, value) in spin_kv_entries(kv, SPIN_AUDIT_LEN_PREFIX)? {
        let org = key
            .strip_prefix(SPIN_AUDIT_LEN_PREFIX)
            .unwrap_or_default()
            .to_owned();
        let n = match <[u8; 8]>::try_from(value.as_slice()) {
            Ok(bytes) if matches!(kv, SpinKv::Sqlite(_)) => i64::from_le_bytes(bytes),
            _ => std::str::from_utf8(&value)
                .ok()
                .and_then(|t| t.parse().ok())
                .with_context(|| format!("the count at {key:?} is not a counter"))?,
        };
        let n = u64::try_from(n).unwrap_or(0);
        let count = counts.entry(org).or_insert(n);
        *count = (*count).max(n);
    }
    Ok(counts)
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
        Source::SpinKv(kv) => {
            let rows = spin_kv_lines(kv)?;
            let total = rows.len() as u64;
            for (i, (org, seq, line)) in rows.iter().enumerate() {
                each(
                    Location(format!("{SPIN_AUDIT_PREFIX}{org}:{seq:020}")),
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

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn spin_audit_keys_split_into_organization_and_position_even_with_colons() {
        assert_eq!(
            spin_audit_key("audit:acme:00000000000000000007"),
            Some(("acme".to_owned(), 7))
        );
        assert_eq!(
            spin_audit_key("audit:a:00000000000000000001:00000000000000000012"),
            Some(("a:00000000000000000001".to_owned(), 12))
        );
        for not_a_record in [
            "audit-len:acme",
            "audit-claim:acme:00000000000000000001:0",
            "audit:acme:7",
            "audit:acme:0000000000000000000x",
            "val:audit:acme:00000000000000000001",
        ] {
            assert_eq!(spin_audit_key(not_a_record), None, "{not_a_record}");
        }
    }

    #[test]
    fn a_spin_store_is_a_redis_url_or_a_file() {
        assert!(matches!(
            SpinKv::parse("redis://127.0.0.1:6379/2"),
            SpinKv::Redis(_)
        ));
        assert!(matches!(SpinKv::parse("rediss://h:6380"), SpinKv::Redis(_)));
        assert!(matches!(
            SpinKv::parse(".spin/sqlite_key_value.db"),
            SpinKv::Sqlite(p) if p == Path::new(".spin/sqlite_key_value.db")
        ));
        // The URL, which may hold a password, never shows in Debug.
        let debug = format!("{:?}", SpinKv::parse("redis://default:secret@h/0"));
        assert!(!debug.contains("secret"), "{debug}");
        assert_eq!(redis_glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[test]
    fn a_spin_stores_counts_are_the_larger_of_the_newest_position_and_the_old_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sqlite_key_value.db");
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute(
            "CREATE TABLE spin_key_value (store TEXT NOT NULL, key TEXT NOT NULL, \
             value BLOB NOT NULL, PRIMARY KEY (store, key))",
            [],
        )
        .unwrap();
        let put = |key: &str, value: &[u8]| {
            conn.execute(
                "INSERT INTO spin_key_value VALUES ('default', ?1, ?2)",
                rusqlite::params![key, value],
            )
            .unwrap();
        };
        // Written by this adapter: the newest position only.
        put("audit-newest:acme", b"12");
        // Written by an older adapter, then by this one: both, the newer larger.
        put("audit-len:both", &7i64.to_le_bytes());
        put("audit-newest:both", b"9");
        // Written by an older adapter only: its count.
        put("audit-len:old", &5i64.to_le_bytes());
        // Written by this adapter, then by an older one beside it (a rolling upgrade): its count
        // is the larger.
        put("audit-newest:later", b"10");
        put("audit-len:later", &15i64.to_le_bytes());
        // Another store's key is not this app's.
        conn.execute(
            "INSERT INTO spin_key_value VALUES ('other', 'audit-newest:acme', '99')",
            [],
        )
        .unwrap();
        let counts = spin_kv_counts(&SpinKv::Sqlite(path.clone())).unwrap();
        let expected: BTreeMap<String, u64> =
            [("acme", 12), ("both", 9), ("later", 15), ("old", 5)]
                .into_iter()
                .map(|(org, n)| (org.to_owned(), n))
                .collect();
        assert_eq!(counts, expected);
        put("audit-newest:bad", b"twelve");
        let err = spin_kv_counts(&SpinKv::Sqlite(path)).unwrap_err();
        assert!(format!("{err:#}").contains("audit-newest:bad"), "{err:#}");
    }
}
