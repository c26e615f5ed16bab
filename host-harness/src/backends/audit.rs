//! Audit sinks: [`MemoryAuditSink`] for tests, [`JsonlAuditSink`] (JSON Lines files, rotated) and
//! [`SqliteAuditSink`] (a table). Each keeps every organization's stream as the component links it
//! (see `mfa_step_core::audit::chain`): `head` answers the stream's newest record, and `append` stores a
//! record only if it links to that head, checking and writing under one lock, so that writers in
//! several threads or processes never fork a chain.
//!
//! [`JsonlAuditSink`] guarantees:
//! - The line is stored byte for byte, followed by `\n`, so a verifier recomputes the same hashes.
//! - `Ok` only after `sync_data`: an acknowledged record survives a crash or `SIGKILL` of the host.
//!   Group commit: a record is written in its place under the lock, and synced after the lock is
//!   given back ([`HostAuditSink::place`], then [`HostAuditSink::settle`]). One `sync_data` covers
//!   every record written before it, so a writer whose record another's sync covered returns at
//!   once. A sync that fails leaves the sink refusing every later record until it is reopened: the
//!   kernel may have dropped the pages it could not write, and a later sync would not say so.
//! - Check and write happen under an exclusive lock on `<file>.lock` (`flock`), held by one writer in
//!   all processes sharing the file. A writer first reads what others appended since its last look,
//!   so its heads are current; the heads survive restarts because they are read back from the file.
//! - A record cut short (a short write, or power lost in the middle of one) was never acknowledged:
//!   the next writer moves the fragment to `<file>.torn` and cuts it off, so the log stays whole.
//! - Rotation: past `rotate_bytes`, the file is renamed to `<file>.000001`, `<file>.000002`, … and a
//!   new one begins. The chain simply continues into it; `<file>.heads` keeps every stream's head as
//!   of the rotation, so neither writers nor a verifier of the newest segment need the older ones.
//!
//! Every sink refuses an empty line or one holding CR or LF, which would break the framing.
//!
//! The console's audit viewer (`crate::serve::audit_view`) reads an organization's stream back in
//! two bounded reads: the records from its checkpoint on, for the chain check
//! ([`HostAuditSink::lines_after`]), and the records in a time range with an action, for the rows
//! and exports ([`HostAuditSink::lines_matching`], a page's newest rows and their count:
//! [`HostAuditSink::newest_matching`]). The SQLite sink answers them from its indexes
//! (`(org, seq)` and `(org, at)`), reading only what the view needs; the JSONL sink has no index
//! and reads its whole trail on every view. The checkpoint, kept beside the trail and moved
//! forward only, is the `audit_checkpoint` table (SQLite) or `<file>.checkpoint` (JSONL).

use std::collections::HashMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use mfa_step_core::audit::chain::Record;
use mfa_step_core::kernel::ports::{
    AppendError, AuditEntry, AuditSink, Head, PortError, PortResult, RefusalNote, links_to,
};
use rusqlite::{Connection, OptionalExtension, params};

use super::sqlite_writer::Writer;
use super::store::{Readers, open_connection, sqlite_error};
use super::unit::{Relinker, placed_head};
use super::{BackendError, lock};

/// An audit sink as the host drives it: the core's port, with an append in two steps.
///
/// `place` checks the record against its stream's head and gives it its place in the stream
/// (`place_linked`, which the host uses at commit, relinks it to the head it finds instead);
/// `settle` returns once it is durable. The sink's lock is given back between the two, so the next
/// writer places its record while this one is being synced, and records written meanwhile share
/// one sync. A record is acknowledged only after `settle`. A sink that cannot split the two does
/// the whole append in `place` (the default).
pub trait HostAuditSink: AuditSink + Send + Sync {
    /// Checks the record against the stream's head and puts it in its place.
    ///
    /// # Errors
    /// As [`AuditSink::append`].
    fn place(&self, entry: &AuditEntry) -> Result<Placed, AppendError> {
        self.append(entry).map(|()| Placed::Durable)
    }

    /// Returns once a placed record is durable.
    ///
    /// # Errors
    /// It could not be made durable: the record must not be acknowledged.
    fn settle(&self, placed: Placed) -> PortResult<()> {
        match placed {
            Placed::Durable => Ok(()),
            // Only the sink that placed a record pending knows how to make it durable: a wrapper
            // that forwards `place` must forward `settle` too.
            Placed::Pending(_) => Err(PortError(
                "a record placed pending reached a sink that cannot settle it".to_owned(),
            )),
        }
    }

    /// Whether `settle` would return `Ok` at once, without waiting.
    fn settled(&self, placed: Placed) -> bool {
        placed == Placed::Durable
    }

    /// Whether `head` and `place` never wait on a disk or the network, so that the host may call
    /// them in place rather than on its blocking pool (`crate::host::Offload`).
    fn runs_in_place(&self) -> bool {
        false
    }

    /// Places a record of a unit of work after its stream's head as found under the sink's lock,
    /// relinking it there when the head has moved ([`Relinker::link`]), so that it never
    /// conflicts. Returns the placement and the head the record made.
    ///
    /// The default reads the head and places the record separately, and relinks again when
    /// another writer came between (a bounded number of times): for wrappers and test doubles.
    /// Every sink here overrides it to do both under one lock.
    ///
    /// # Errors
    /// The record could not be placed; nothing was written.
    fn place_linked(&self, entry: &AuditEntry, relinker: &Relinker) -> PortResult<(Placed, Head)> {
        for _ in 0..PLACE_ATTEMPTS {
            let head = self.head(&entry.org_id)?;
            let linked = relinker.link(entry, head.as_ref())?;
            match self.place(&linked) {
                Ok(placed) => return Ok((placed, placed_head(&linked))),
                Err(AppendError::Conflict) => {}
                Err(AppendError::Unavailable(m)) => return Err(PortError(m)),
            }
        }
        Err(PortError(
            "the organization's audit stream stayed busy; try again".to_owned(),
        ))
    }

    /// The database this sink keeps its records in, when a store may write them in its own
    /// transaction ([`super::HostStore::commit_unit`]): `sqlite:<canonical path>` or the
    /// Postgres store's name for its database. `None` (the default): no store may.
    fn database(&self) -> Option<String> {
        None
    }

    /// The stored lines of `org`'s stream from `seq` `from_seq` on (that record included: the
    /// viewer checks again that the checkpoint's record still carries its hash), in `seq` order,
    /// at most `limit` of them: the chain check of the console's audit viewer
    /// (`crate::serve::audit_view`), which verifies from its checkpoint in bounded steps.
    /// `Ok(None)` (the default): this sink is not read back.
    ///
    /// # Errors
    /// The trail could not be read: the viewer shows "try again", never a partial list.
    fn lines_after(
        &self,
        org: &str,
        from_seq: u64,
        limit: usize,
    ) -> PortResult<Option<Vec<String>>> {
        let _ = (org, from_seq, limit);
        Ok(None)
    }

    /// The stored lines of `org`'s stream written from `from_at` to `to_at` (Unix seconds, both
    /// included; `None`: no bound) with `action` (`None`: any), newest first: the rows and
    /// exports of the console's audit viewer, which then checks every field of its filter on
    /// each line ([`mfa_step_core::web::console::audit::AuditQuery::matches`]). A sink may
    /// return more lines than asked (never fewer). `Ok(None)` (the default): this sink is not
    /// read back.
    ///
    /// # Errors
    /// The trail could not be read: the viewer shows "try again", never a partial list.
    fn lines_matching(
        &self,
        org: &str,
        from_at: Option<i64>,
        to_at: Option<i64>,
        action: Option<&str>,
    ) -> PortResult<Option<Vec<String>>> {
        let _ = (org, from_at, to_at, action);
        Ok(None)
    }

    /// The newest `limit` lines [`HostAuditSink::lines_matching`] would return, newest first,
    /// and how many it would return in all: a page of the console's audit viewer, which shows
    /// the newest records and counts the rest. The default reads them all and keeps `limit`; a
    /// sink with an index counts without reading the lines. The count may include a record
    /// written after the lines were read, never miss one of them.
    ///
    /// # Errors
    /// The trail could not be read: the viewer shows "try again".
    fn newest_matching(
        &self,
        org: &str,
        from_at: Option<i64>,
        to_at: Option<i64>,
        action: Option<&str>,
        limit: usize,
    ) -> PortResult<Option<(Vec<String>, u64)>> {
        Ok(self
            .lines_matching(org, from_at, to_at, action)?
            .map(|mut lines| {
                let total = lines.len() as u64;
                lines.truncate(limit);
                (lines, total)
            }))
    }

    /// `org`'s verification checkpoint: the last record a view verified the chain through.
    ///
    /// # Errors
    /// It could not be read.
    fn checkpoint(&self, org: &str) -> PortResult<Option<Head>> {
        let _ = org;
        Ok(None)
    }

    /// Moves `org`'s checkpoint forward to `head`, verified at `at` (Unix seconds); a checkpoint
    /// already further along stays. The default keeps none, so every view verifies from the start.
    ///
    /// # Errors
    /// It could not be written (the view still shows what it verified).
    fn advance_checkpoint(&self, org: &str, head: &Head, at: i64) -> PortResult<()> {
        let _ = (org, head, at);
        Ok(())
    }
}

/// How often [`HostAuditSink::place_linked`]'s default relinks before giving up.
const PLACE_ATTEMPTS: usize = 32;

/// A record given its place by [`HostAuditSink::place`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a placed record is acknowledged only once it is settled"]
pub enum Placed {
    /// Already durable.
    Durable,
    /// Written, to be synced: the sink's ticket for it.
    Pending(u64),
}

impl HostAuditSink for MemoryAuditSink {
    fn runs_in_place(&self) -> bool {
        true
    }

    fn place_linked(&self, entry: &AuditEntry, relinker: &Relinker) -> PortResult<(Placed, Head)> {
        validate_line(entry).map_err(append_error)?;
        let mut entries = lock(&self.entries, "the memory audit sink")?;
        let linked = relinker.link(entry, head_of(&entries, &entry.org_id).as_ref())?;
        let head = placed_head(&linked);
        entries.push(linked.into_owned());
        Ok((Placed::Durable, head))
    }
}

impl HostAuditSink for SqliteAuditSink {
    /// Head, relink and insert as one piece of the writer's work.
    fn place_linked(&self, entry: &AuditEntry, relinker: &Relinker) -> PortResult<(Placed, Head)> {
        validate_line(entry).map_err(append_error)?;
        let (entry, relinker) = (entry.clone(), relinker.clone());
        self.writer
            .run(move |conn| sqlite_place_linked(conn, &entry, &relinker))
            .map(|head| (Placed::Durable, head))
    }

    fn database(&self) -> Option<String> {
        Some(self.database.clone())
    }

    /// On the `(org, seq)` key: the records from `from_seq` on, and no earlier one.
    fn lines_after(
        &self,
        org: &str,
        from_seq: u64,
        limit: usize,
    ) -> PortResult<Option<Vec<String>>> {
        let from = i64::try_from(from_seq).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.readers.read("audit stream", |conn| {
            conn.prepare_cached(
                "SELECT line FROM audit_log WHERE org = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3",
            )?
            .query_map(params![org, from, limit], |row| row.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()
            .map(Some)
        })
    }

    /// On the `(org, at)` index when a date bounds the read, else on the `(org, seq)` key.
    fn lines_matching(
        &self,
        org: &str,
        from_at: Option<i64>,
        to_at: Option<i64>,
        action: Option<&str>,
    ) -> PortResult<Option<Vec<String>>> {
        self.newest_matching(org, from_at, to_at, action, usize::MAX)
            .map(|read| read.map(|(lines, _)| lines))
    }

    /// The lines with `LIMIT`, then the count on the indexes alone when no action is asked.
    fn newest_matching(
        &self,
        org: &str,
        from_at: Option<i64>,
        to_at: Option<i64>,
        action: Option<&str>,
        limit: usize,
    ) -> PortResult<Option<(Vec<String>, u64)>> {
        let timed = from_at.is_some() || to_at.is_some();
        let (from, to) = (from_at.unwrap_or(i64::MIN), to_at.unwrap_or(i64::MAX));
        let all = limit == usize::MAX;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.readers.read("audit records", |conn| {
            let sql = matching_sql(timed, action.is_some());
            let lines = conn
                .prepare_cached(&format!("SELECT line {sql} ORDER BY seq DESC LIMIT ?5"))?
                .query_map(params![org, from, to, action, limit], |row| row.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            // Read after the lines: it counts at least them.
            let total = if all {
                lines.len() as u64
            } else {
                let n: i64 = conn
                    .prepare_cached(&format!("SELECT count(*) {sql}"))?
                    .query_row(params![org, from, to, action], |row| row.get(0))?;
                u64::try_from(n).unwrap_or(0)
            };
            Ok(Some((lines, total)))
        })
    }

    fn checkpoint(&self, org: &str) -> PortResult<Option<Head>> {
        self.readers.read("audit checkpoint", |conn| {
            conn.prepare_cached("SELECT seq, hash FROM audit_checkpoint WHERE org = ?1")?
                .query_row(params![org], |row| {
                    Ok(Head {
                        seq: u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0),
                        hash: row.get(1)?,
                    })
                })
                .optional()
        })
    }

    fn advance_checkpoint(&self, org: &str, head: &Head, at: i64) -> PortResult<()> {
        let seq =
            i64::try_from(head.seq).map_err(|_| PortError("audit seq out of range".to_owned()))?;
        let (org, hash) = (org.to_owned(), head.hash.clone());
        self.writer.run(move |conn| {
            conn.execute(CHECKPOINT_ADVANCE, params![org, seq, hash, at])
                .map(|_| ())
                .map_err(|e| sqlite_error("audit checkpoint", &e))
        })
    }
}

/// The `FROM … WHERE …` of [`HostAuditSink::lines_matching`] in SQLite: `?1` org, `?2`..`?3` the
/// time range, `?4` the action. A condition is left out rather than written `?2 IS NULL OR …`, so
/// that the planner picks the `(org, at)` index for a range and the `(org, seq)` key otherwise.
/// Every variant names every parameter, so one binding fits them all.
fn matching_sql(timed: bool, action: bool) -> &'static str {
    match (timed, action) {
        (true, true) => "FROM audit_log WHERE org = ?1 AND at BETWEEN ?2 AND ?3 AND action = ?4",
        (true, false) => "FROM audit_log WHERE org = ?1 AND at BETWEEN ?2 AND ?3 AND ?4 IS NULL",
        (false, true) => "FROM audit_log WHERE org = ?1 AND ?2 <= ?3 AND action = ?4",
        (false, false) => "FROM audit_log WHERE org = ?1 AND ?2 <= ?3 AND ?4 IS NULL",
    }
}

/// Moves a checkpoint forward only: two views racing never take it back.
const CHECKPOINT_ADVANCE: &str = "INSERT INTO audit_checkpoint (org, seq, hash, at)
    VALUES (?1, ?2, ?3, ?4)
    ON CONFLICT (org) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, at = excluded.at
    WHERE excluded.seq > audit_checkpoint.seq";

/// Places `entry` in the `audit_log` table after the head it has now, relinked when needed; on
/// the writer's connection, so that nothing comes between the head and the insert.
pub(crate) fn sqlite_place_linked(
    conn: &Connection,
    entry: &AuditEntry,
    relinker: &Relinker,
) -> PortResult<Head> {
    validate_line(entry).map_err(append_error)?;
    let head = sqlite_head(conn, &entry.org_id).map_err(|e| sqlite_error("audit head", &e))?;
    let linked = relinker.link(entry, head.as_ref())?;
    sqlite_insert(conn, &linked).map_err(|e| sqlite_error("audit append", &e))?;
    Ok(placed_head(&linked))
}

/// Inserts one record; the `(org, seq)` key refuses a second record at a taken position.
fn sqlite_insert(conn: &Connection, entry: &AuditEntry) -> rusqlite::Result<()> {
    let seq = i64::try_from(entry.seq)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    conn.prepare_cached(
        "INSERT INTO audit_log (org, seq, at, action, hash, line)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        entry.org_id,
        seq,
        entry.at,
        entry.action,
        entry.hash,
        entry.line
    ])
    .map(drop)
}

fn append_error(e: AppendError) -> PortError {
    match e {
        AppendError::Unavailable(m) => PortError(m),
        AppendError::Conflict => PortError("unexpected conflict".to_owned()),
    }
}

pub(crate) fn validate_line(entry: &AuditEntry) -> Result<(), AppendError> {
    if entry.line.is_empty() {
        return Err(AppendError::Unavailable(
            "refused audit record: its line is empty".to_owned(),
        ));
    }
    if entry.line.contains(['\r', '\n']) {
        return Err(AppendError::Unavailable(
            "refused audit record: its line contains a line break; it must be one line of JSON"
                .to_owned(),
        ));
    }
    Ok(())
}

fn unavailable(e: PortError) -> AppendError {
    AppendError::Unavailable(e.0)
}

// ---------------------------------------------------------------------------------------------
// MemoryAuditSink

/// Keeps every accepted record in memory, for tests.
#[derive(Debug, Default)]
pub struct MemoryAuditSink {
    entries: Mutex<Vec<AuditEntry>>,
    notes: Mutex<Vec<RefusalNote>>,
}

impl MemoryAuditSink {
    /// A sink with no records.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Every refusal noted for the host's log so far (`audit.note-refusal`), in order.
    #[must_use]
    pub fn notes(&self) -> Vec<RefusalNote> {
        self.notes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Every record accepted so far, in order.
    #[must_use]
    pub fn entries(&self) -> Vec<AuditEntry> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

fn head_of(entries: &[AuditEntry], org: &str) -> Option<Head> {
    entries
        .iter()
        .rev()
        .find(|e| e.org_id == org)
        .map(|e| Head {
            seq: e.seq,
            hash: e.hash.clone(),
        })
}

impl AuditSink for MemoryAuditSink {
    fn head(&self, org: &str) -> PortResult<Option<Head>> {
        Ok(head_of(&lock(&self.entries, "the memory audit sink")?, org))
    }

    fn append(&self, entry: &AuditEntry) -> Result<(), AppendError> {
        validate_line(entry)?;
        let mut entries = lock(&self.entries, "the memory audit sink").map_err(unavailable)?;
        if !links_to(entry, head_of(&entries, &entry.org_id).as_ref()) {
            return Err(AppendError::Conflict);
        }
        entries.push(entry.clone());
        Ok(())
    }
    fn note_refusal(&self, note: &RefusalNote) {
        self.notes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(note.clone());
    }
}

// ---------------------------------------------------------------------------------------------
// JsonlAuditSink

/// Appends each record's line to a JSON Lines file and syncs it before acknowledging.
///
/// The file has no index: the console's audit viewer reads the whole trail (every segment) on
/// each view and filters it here, where the SQLite and Postgres sinks read only the records the
/// view needs. Keep a JSONL trail for hosts whose console is seldom used, or rotate and archive
/// its segments.
pub struct JsonlAuditSink {
    path: PathBuf,
    rotate_bytes: Option<u64>,
    state: Mutex<FileState>,
    /// Records written (`FileState::written`) that are known to be on disk.
    synced: AtomicU64,
    /// Held by the one writer syncing at a time; the others wait for it, then look again.
    sync_turn: Mutex<()>,
    /// Set when a sync (or a rotation's) failed: every later record is refused.
    broken: AtomicBool,
    /// How many syncs `settle` has made, for the tests.
    syncs: AtomicU64,
    /// The current segment's length at the last look, to tell when a rotation is near.
    offset_hint: AtomicU64,
}

/// How close to `rotate_bytes` a segment may grow before its writes leave the executor threads
/// (an audit line is far shorter).
const ROTATION_MARGIN: u64 = 256 << 10;

/// What one writer knows of the file, brought up to date under the lock before every use.
struct FileState {
    /// The current segment, opened for reading and appending; shared with a writer syncing it.
    file: Arc<File>,
    /// How many records this sink has written, in every segment: a record's ticket is this count
    /// just after it is written.
    written: u64,
    /// Its identity, to notice that another process rotated it away.
    identity: (u64, u64),
    /// How far it has been read.
    offset: u64,
    /// Every stream's head as of `offset`.
    heads: HashMap<String, Head>,
}

/// The sidecar files of a JSONL audit log.
fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The rotated segments of `path`, oldest first, then `path` itself when it exists.
///
/// # Errors
/// The folder cannot be listed.
pub fn jsonl_segments(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    let folder = match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(p) => p.to_path_buf(),
        None => PathBuf::from("."),
    };
    let base = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut numbered = Vec::new();
    for item in std::fs::read_dir(&folder)? {
        let name = item?.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&base).and_then(|r| r.strip_prefix('.')) else {
            continue;
        };
        if rest.len() == 6
            && rest.bytes().all(|b| b.is_ascii_digit())
            && let Ok(n) = rest.parse::<u32>()
        {
            numbered.push((n, folder.join(&name)));
        }
    }
    numbered.sort();
    let mut segments: Vec<PathBuf> = numbered.into_iter().map(|(_, p)| p).collect();
    if path.exists() {
        segments.push(path.to_path_buf());
    }
    Ok(segments)
}

/// The heads saved at the last rotation (empty before any).
///
/// # Errors
/// The file exists but cannot be read or parsed.
pub fn jsonl_rotation_heads(path: &Path) -> std::io::Result<HashMap<String, Head>> {
    match std::fs::read(sidecar(path, ".heads")) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(HashMap::new()),
        Err(e) => Err(e),
    }
}

fn identity(file: &File) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata()?;
    Ok((meta.dev(), meta.ino()))
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
}

impl JsonlAuditSink {
    /// Opens (or creates) the log at `path`, creating missing parent folders, and reads the streams'
    /// heads back from it. Never rotates.
    ///
    /// # Errors
    /// A folder or the file cannot be created, opened or read.
    pub fn open(path: impl AsRef<Path>) -> super::Result<Self> {
        Self::open_rotating(path, None)
    }

    /// Like [`JsonlAuditSink::open`], rotating the file once it passes `rotate_bytes`.
    ///
    /// # Errors
    /// A folder or the file cannot be created, opened or read.
    pub fn open_rotating(path: impl AsRef<Path>, rotate_bytes: Option<u64>) -> super::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let io = |action, path: &Path, source| BackendError::Io {
            action,
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| io("create the folder", parent, e))?;
        }
        // Create the lock file and the log under the lock, so that a rotation cannot interleave.
        let guard = FileLock::take(&path).map_err(|e| io("lock the audit file", &path, e))?;
        let file = open_append(&path).map_err(|e| io("open the audit file", &path, e))?;
        let mut state = FileState {
            identity: identity(&file).map_err(|e| io("read the audit file", &path, e))?,
            file: Arc::new(file),
            written: 0,
            offset: 0,
            heads: jsonl_rotation_heads(&path).map_err(|e| io("read the heads file", &path, e))?,
        };
        state
            .catch_up(&path)
            .map_err(|e| io("read the audit file", &path, e))?;
        drop(guard);
        Ok(Self {
            path,
            rotate_bytes,
            state: Mutex::new(state),
            synced: AtomicU64::new(0),
            sync_turn: Mutex::new(()),
            broken: AtomicBool::new(false),
            syncs: AtomicU64::new(0),
            offset_hint: AtomicU64::new(0),
        })
    }

    /// The audit file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn fail(&self, what: &str, e: &dyn fmt::Display) -> PortError {
        PortError(format!("audit file {}: {what}: {e}", self.path.display()))
    }

    /// Runs `f` with the state current, holding the in-process mutex and the cross-process lock.
    fn locked<T>(
        &self,
        f: impl FnOnce(&mut FileState) -> Result<T, AppendError>,
    ) -> Result<T, AppendError> {
        if self.broken.load(Ordering::Acquire) {
            return Err(unavailable(self.refusing()));
        }
        let mut state = lock(&self.state, "the audit file").map_err(unavailable)?;
        let _guard =
            FileLock::take(&self.path).map_err(|e| unavailable(self.fail("cannot lock", &e)))?;
        if let Err(e) = state.catch_up(&self.path) {
            // It may have failed to sync what this sink wrote before another process rotated:
            // nothing written since can be vouched for.
            self.broken.store(true, Ordering::Release);
            return Err(unavailable(self.fail("cannot read", &e)));
        }
        self.offset_hint.store(state.offset, Ordering::Release);
        f(&mut state)
    }

    /// Writes the record at the end of the current segment (rotating first if it is full) and
    /// returns its ticket for [`JsonlAuditSink::sync_through`]; it is not yet synced.
    fn write_record(&self, state: &mut FileState, entry: &AuditEntry) -> PortResult<u64> {
        if let Some(limit) = self.rotate_bytes
            && state.offset > 0
            && state.offset + entry.line.len() as u64 >= limit
        {
            self.rotate(state)?;
        }
        let mut record = Vec::with_capacity(entry.line.len() + 1);
        record.extend_from_slice(entry.line.as_bytes());
        record.push(b'\n');
        // One write call: with O_APPEND the kernel places it at the end in one piece.
        let written = loop {
            match (&*state.file).write(&record) {
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                other => break other,
            }
        }
        .map_err(|e| self.fail("cannot append", &e))?;
        if written < record.len() {
            // Cut the fragment off now: it was never acknowledged.
            let _ = state.file.set_len(state.offset);
            return Err(self.fail(
                "short write",
                &format_args!(
                    "{written} of {} bytes; the record was not stored",
                    record.len()
                ),
            ));
        }
        state.offset += record.len() as u64;
        state.written += 1;
        state.heads.insert(
            entry.org_id.clone(),
            Head {
                seq: entry.seq,
                hash: entry.hash.clone(),
            },
        );
        Ok(state.written)
    }

    /// Returns once the record with `ticket` is on disk: at once when another writer's sync
    /// already covered it, else after syncing the segment (which covers every record written so
    /// far, each earlier segment having been synced when it was rotated away).
    fn sync_through(&self, ticket: u64) -> PortResult<()> {
        let covered = || {
            if self.broken.load(Ordering::Acquire) {
                return Err(self.refusing());
            }
            Ok(self.synced.load(Ordering::Acquire) >= ticket)
        };
        if covered()? {
            return Ok(());
        }
        let _turn = lock(&self.sync_turn, "the audit file's sync")?;
        if covered()? {
            return Ok(());
        }
        let (target, file) = {
            let state = lock(&self.state, "the audit file")?;
            (state.written, Arc::clone(&state.file))
        };
        self.syncs.fetch_add(1, Ordering::Relaxed);
        match file.sync_data() {
            Ok(()) => {
                self.synced.fetch_max(target, Ordering::AcqRel);
                Ok(())
            }
            Err(e) => {
                self.broken.store(true, Ordering::Release);
                Err(self.fail("cannot sync to disk", &e))
            }
        }
    }

    fn refusing(&self) -> PortError {
        self.fail(
            "refusing records",
            &"an earlier sync to disk failed; restart the host once the disk is healthy",
        )
    }

    /// Renames the full segment away and starts a new one; the heads file carries the chain over.
    fn rotate(&self, state: &mut FileState) -> PortResult<()> {
        let heads_path = sidecar(&self.path, ".heads");
        let tmp = sidecar(&self.path, ".heads.tmp");
        let heads = serde_json::to_vec(&state.heads).map_err(|e| self.fail("cannot rotate", &e))?;
        // Every record of the segment reaches the disk first: the heads file must never name a
        // record that is not there, and a writer waiting to settle one of them then syncs only
        // the new segment.
        if let Err(e) = state.file.sync_data() {
            self.broken.store(true, Ordering::Release);
            return Err(self.fail("cannot sync to disk", &e));
        }
        self.synced.fetch_max(state.written, Ordering::AcqRel);
        let write_heads = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&heads)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &heads_path)
        };
        write_heads().map_err(|e| self.fail("cannot save the heads for rotation", &e))?;
        // One past the highest segment present, so that a segment is never overwritten even when
        // older ones were archived away.
        let next = jsonl_segments(&self.path)
            .map_err(|e| self.fail("cannot list segments", &e))?
            .iter()
            .filter_map(|p| p.extension()?.to_str()?.parse::<u32>().ok())
            .max()
            .unwrap_or(0)
            + 1;
        let segment = sidecar(&self.path, &format!(".{next:06}"));
        std::fs::rename(&self.path, &segment).map_err(|e| self.fail("cannot rotate", &e))?;
        let file =
            open_append(&self.path).map_err(|e| self.fail("cannot start a new segment", &e))?;
        if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty())
            && let Ok(dir) = File::open(parent)
        {
            let _ = dir.sync_all();
        }
        state.identity = identity(&file).map_err(|e| self.fail("cannot rotate", &e))?;
        state.file = Arc::new(file);
        state.offset = 0;
        Ok(())
    }
}

impl FileState {
    /// Reads what other writers appended since the last look (following a rotation if there was
    /// one), and moves a torn fragment at the end aside.
    fn catch_up(&mut self, path: &Path) -> std::io::Result<()> {
        let current = open_append(path)?;
        if identity(&current)? != self.identity {
            // Another process rotated: its heads file covers everything before the new segment.
            // Records this sink wrote to the old one and has not synced yet are synced now, rather
            // than trusting the other process to have done it (an older binary, a `mv`).
            self.file.sync_data()?;
            self.heads = jsonl_rotation_heads(path)?;
            self.identity = identity(&current)?;
            self.file = Arc::new(current);
            self.offset = 0;
        }
        let len = self.file.metadata()?.len();
        if len <= self.offset {
            return Ok(());
        }
        (&*self.file).seek(SeekFrom::Start(self.offset))?;
        let mut reader = BufReader::new(&*self.file);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line)?;
            if n == 0 {
                break;
            }
            // A record cut short by a crash, or a run of zeros where the disk had not yet written
            // what a crash interrupted (records written but not yet synced: a line holding a NUL
            // byte is never one of ours). Nothing from there on was acknowledged: every
            // acknowledged record was synced with everything before it. Keep it all aside, then
            // cut it off.
            if line.last() != Some(&b'\n') || line.contains(&0) {
                let mut rest = line.clone();
                reader.read_to_end(&mut rest)?;
                let mut torn = OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(sidecar(path, ".torn"))?;
                torn.write_all(&rest)?;
                if rest.last() != Some(&b'\n') {
                    torn.write_all(b"\n")?;
                }
                torn.sync_data()?;
                self.file.set_len(self.offset)?;
                self.file.sync_data()?;
                break;
            }
            if let Ok(text) = std::str::from_utf8(&line[..n - 1])
                && let Ok(record) = Record::parse(text)
            {
                self.heads.insert(
                    record.org,
                    Head {
                        seq: record.seq,
                        hash: record.hash,
                    },
                );
            }
            self.offset += n as u64;
        }
        Ok(())
    }
}

/// An exclusive `flock` on `<file>.lock`, released on drop.
struct FileLock(File);

impl FileLock {
    fn take(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(sidecar(path, ".lock"))?;
        file.lock()?;
        Ok(Self(file))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// One organization's checkpoint in `<file>.checkpoint`.
#[derive(serde::Serialize, serde::Deserialize)]
struct Checkpoint {
    seq: u64,
    hash: String,
    at: i64,
}

impl Checkpoint {
    fn head(self) -> Head {
        Head {
            seq: self.seq,
            hash: self.hash,
        }
    }
}

impl JsonlAuditSink {
    fn checkpoints(&self) -> PortResult<std::collections::BTreeMap<String, Checkpoint>> {
        match std::fs::read(sidecar(&self.path, ".checkpoint")) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).unwrap_or_default()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(std::collections::BTreeMap::new()),
            Err(e) => Err(self.fail("read the checkpoint", &e)),
        }
    }
}

impl JsonlAuditSink {
    /// Every line of `org`'s stream, in `seq` order, for the console's audit viewer: every
    /// segment, read whole (the file has no index, so a JSONL trail costs a full read per view),
    /// up to its last complete line, so that a record being appended right now is not half-read
    /// as a broken one.
    fn stream_lines(&self, org: &str) -> PortResult<Vec<String>> {
        let marker = format!("\"org\":\"{org}\",");
        let segments = jsonl_segments(&self.path).map_err(|e| self.fail("list segments", &e))?;
        let mut lines = Vec::new();
        for segment in segments {
            let mut bytes = Vec::new();
            File::open(&segment)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(|e| self.fail("read", &e))?;
            let whole = bytes
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |at| at + 1);
            let text = String::from_utf8_lossy(&bytes[..whole]);
            // Another organization's record may quote this one's id in a field: parse to be sure.
            // A line that does not parse but names the organization is kept, for the chain check
            // to report.
            lines.extend(
                text.lines()
                    .filter(|l| l.contains(&marker))
                    .filter(|l| Record::parse(l).map_or(true, |r| r.org == org))
                    .map(str::to_owned),
            );
        }
        Ok(lines)
    }
}

impl fmt::Debug for JsonlAuditSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonlAuditSink")
            .field("path", &self.path)
            .field("rotate_bytes", &self.rotate_bytes)
            .finish_non_exhaustive()
    }
}

impl AuditSink for JsonlAuditSink {
    fn head(&self, org: &str) -> PortResult<Option<Head>> {
        self.locked(|state| Ok(state.heads.get(org).cloned()))
            .map_err(|e| match e {
                AppendError::Unavailable(m) => PortError(m),
                AppendError::Conflict => PortError("unexpected conflict".to_owned()),
            })
    }

    fn append(&self, entry: &AuditEntry) -> Result<(), AppendError> {
        let placed = self.place(entry)?;
        self.settle(placed).map_err(unavailable)
    }
}

impl HostAuditSink for JsonlAuditSink {
    fn place(&self, entry: &AuditEntry) -> Result<Placed, AppendError> {
        validate_line(entry)?;
        if self.broken.load(Ordering::Acquire) {
            return Err(unavailable(self.refusing()));
        }
        self.locked(|state| {
            if !links_to(entry, state.heads.get(&entry.org_id)) {
                return Err(AppendError::Conflict);
            }
            self.write_record(state, entry)
                .map(Placed::Pending)
                .map_err(unavailable)
        })
    }

    /// Under the file's lock: the head is current (other processes' records read), the record
    /// relinked to it when needed and written; synced by `settle`.
    fn place_linked(&self, entry: &AuditEntry, relinker: &Relinker) -> PortResult<(Placed, Head)> {
        validate_line(entry).map_err(append_error)?;
        if self.broken.load(Ordering::Acquire) {
            return Err(self.refusing());
        }
        self.locked(|state| {
            let linked = relinker
                .link(entry, state.heads.get(&entry.org_id))
                .map_err(unavailable)?;
            let ticket = self.write_record(state, &linked).map_err(unavailable)?;
            Ok((Placed::Pending(ticket), placed_head(&linked)))
        })
        .map_err(append_error)
    }

    fn settle(&self, placed: Placed) -> PortResult<()> {
        match placed {
            Placed::Durable => Ok(()),
            Placed::Pending(ticket) => self.sync_through(ticket),
        }
    }

    fn settled(&self, placed: Placed) -> bool {
        match placed {
            Placed::Durable => true,
            Placed::Pending(ticket) => {
                !self.broken.load(Ordering::Acquire)
                    && self.synced.load(Ordering::Acquire) >= ticket
            }
        }
    }

    /// `head` and `place` take the file's lock, read what other processes appended and write one
    /// line, all to the page cache; only `settle` waits for the disk. The lock is held by another
    /// writer only for the same few system calls. Near a rotation (which syncs three times under
    /// the lock) the calls go to the pool instead.
    fn runs_in_place(&self) -> bool {
        self.rotate_bytes
            .is_none_or(|limit| self.offset_hint.load(Ordering::Acquire) + ROTATION_MARGIN < limit)
    }

    /// The whole trail read (the file has no index), then the records from `from_seq` on kept.
    /// A line of the organization that does not parse is kept too, for the chain check to report.
    fn lines_after(
        &self,
        org: &str,
        from_seq: u64,
        limit: usize,
    ) -> PortResult<Option<Vec<String>>> {
        let mut lines = self.stream_lines(org)?;
        lines.retain(|l| Record::parse(l).map_or(true, |r| r.seq >= from_seq));
        lines.truncate(limit);
        Ok(Some(lines))
    }

    /// The whole trail read (the file has no index), then filtered: a record's time is its
    /// line's `at`, which has one width (`YYYY-MM-DDTHH:MM:SSZ`) and so compares as text.
    fn lines_matching(
        &self,
        org: &str,
        from_at: Option<i64>,
        to_at: Option<i64>,
        action: Option<&str>,
    ) -> PortResult<Option<Vec<String>>> {
        let from = from_at.map(|at| mfa_step_core::Timestamp(at).rfc3339());
        let to = to_at.map(|at| mfa_step_core::Timestamp(at).rfc3339());
        let mut lines = self.stream_lines(org)?;
        lines.retain(|l| {
            Record::parse(l).is_ok_and(|r| {
                from.as_ref().is_none_or(|f| r.at >= *f)
                    && to.as_ref().is_none_or(|t| r.at <= *t)
                    && action.is_none_or(|a| r.action == a)
            })
        });
        lines.reverse();
        Ok(Some(lines))
    }

    /// `<file>.checkpoint`: a JSON object, organization to `{seq, hash, at}`. One that does not
    /// parse is no checkpoint (the next view verifies from the start and writes it again).
    fn checkpoint(&self, org: &str) -> PortResult<Option<Head>> {
        Ok(self.checkpoints()?.remove(org).map(|c| c.head()))
    }

    fn advance_checkpoint(&self, org: &str, head: &Head, at: i64) -> PortResult<()> {
        let path = sidecar(&self.path, ".checkpoint");
        let fail = |e: std::io::Error| self.fail("write the checkpoint", &e);
        let _lock = FileLock::take(&path).map_err(fail)?;
        let mut all = self.checkpoints()?;
        if all.get(org).is_some_and(|c| c.seq >= head.seq) {
            return Ok(());
        }
        all.insert(
            org.to_owned(),
            Checkpoint {
                seq: head.seq,
                hash: head.hash.clone(),
                at,
            },
        );
        let json = serde_json::to_vec(&all).map_err(|e| self.fail("write the checkpoint", &e))?;
        // A new file renamed over the old one: a reader sees the old or the new, never half.
        let fresh = sidecar(&self.path, ".checkpoint.new");
        let mut file = File::create(&fresh).map_err(fail)?;
        file.write_all(&json)
            .and_then(|()| file.sync_data())
            .map_err(fail)?;
        std::fs::rename(&fresh, &path).map_err(fail)
    }
}

// ---------------------------------------------------------------------------------------------
// SqliteAuditSink

const AUDIT_SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS audit_log (
        org TEXT NOT NULL,
        seq INTEGER NOT NULL,
        at INTEGER NOT NULL,
        action TEXT NOT NULL,
        hash TEXT NOT NULL,
        line TEXT NOT NULL,
        PRIMARY KEY (org, seq)
    ) STRICT;
    CREATE INDEX IF NOT EXISTS audit_log_org_at ON audit_log (org, at);
    CREATE TABLE IF NOT EXISTS audit_checkpoint (
        org TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        hash TEXT NOT NULL,
        at INTEGER NOT NULL
    ) STRICT;
";

/// Keeps records in the `audit_log` table of a SQLite database (it may be the store's own file).
/// Check and insert run as one piece of the database writer's work, committed with the other
/// appends waiting ([`super::sqlite_writer`]), and `(org, seq)` is the primary key, so no two
/// writers in any process can take the same position.
pub struct SqliteAuditSink {
    writer: Arc<Writer>,
    readers: Readers,
    path: PathBuf,
    /// `sqlite:<canonical path>` (see [`HostAuditSink::database`]).
    database: String,
}

impl SqliteAuditSink {
    /// Opens (or creates) the database at `path` and its `audit_log` table.
    ///
    /// # Errors
    /// As [`super::SqliteStore::open`].
    pub fn open(path: impl AsRef<Path>) -> super::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let conn = open_connection(&path, AUDIT_SCHEMA)?;
        let writer = Writer::shared(&path, conn, "the SQLite audit sink").map_err(|source| {
            BackendError::Io {
                action: "start the writer thread for",
                path: path.clone(),
                source,
            }
        })?;
        Ok(Self {
            writer,
            readers: Readers::new(path.clone(), "the SQLite audit sink"),
            database: super::store::sqlite_database(&path),
            path,
        })
    }

    /// The database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn sqlite_head(conn: &Connection, org: &str) -> rusqlite::Result<Option<Head>> {
    conn.prepare_cached("SELECT seq, hash FROM audit_log WHERE org = ?1 ORDER BY seq DESC LIMIT 1")?
        .query_row(params![org], |row| {
            Ok(Head {
                seq: u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0),
                hash: row.get(1)?,
            })
        })
        .optional()
}

impl fmt::Debug for SqliteAuditSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteAuditSink")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl AuditSink for SqliteAuditSink {
    fn head(&self, org: &str) -> PortResult<Option<Head>> {
        self.readers
            .read("audit head", |conn| sqlite_head(conn, org))
    }

    fn append(&self, entry: &AuditEntry) -> Result<(), AppendError> {
        validate_line(entry)?;
        i64::try_from(entry.seq)
            .map_err(|_| AppendError::Unavailable("audit seq out of range".to_owned()))?;
        let entry = entry.clone();
        let outcome = self.writer.run(move |conn| {
            let fail = |e: rusqlite::Error| sqlite_error("audit append", &e);
            let head = sqlite_head(conn, &entry.org_id).map_err(fail)?;
            if !links_to(&entry, head.as_ref()) {
                // The head moved: nothing is written, and the caller relinks.
                return Ok(false);
            }
            sqlite_insert(conn, &entry).map(|()| true).map_err(fail)
        });
        match outcome {
            Ok(true) => Ok(()),
            Ok(false) => Err(AppendError::Conflict),
            Err(e) => Err(unavailable(e)),
        }
    }
}

/// Every line of the `audit_log` table at `path`, in insertion order, with its rowid.
///
/// # Errors
/// The database cannot be opened or read.
pub fn sqlite_lines(path: &Path) -> super::Result<Vec<(i64, String)>> {
    let sqlite = |source| BackendError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(sqlite)?;
    let mut stmt = conn
        .prepare("SELECT rowid, line FROM audit_log ORDER BY rowid")
        .map_err(sqlite)?;
    let rows = stmt
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .map_err(sqlite)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(sqlite)?;
    Ok(rows)
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly on purpose"
)]
pub(crate) mod tests {
    use super::*;
    use mfa_step_core::Timestamp;
    use mfa_step_core::audit::verify::Verifier;
    use mfa_step_core::audit::{Action, Event, Outcome};
    use std::sync::Arc;

    pub(crate) fn event(org: &str, note: &str) -> Event {
        Event {
            org: org.to_owned(),
            actor: "u1".to_owned(),
            subject: "u1".to_owned(),
            action: Action::CodeSent,
            outcome: Outcome::Success,
            reason: Some(note.to_owned()),
            ip: None,
            user_agent: Some("caf\u{e9} \u{2713}".to_owned()),
            device_id: None,
            challenge_id: None,
        }
    }

    /// The entry linked after `head`, as the component builds it.
    pub(crate) fn linked(org: &str, note: &str, head: Option<&Head>) -> AuditEntry {
        let (seq, prev) = Head::next(head);
        let (line, hash) = event(org, note).seal(note, seq, Timestamp(1_700_000_000), &prev, None);
        AuditEntry {
            org_id: org.to_owned(),
            seq,
            at: 1_700_000_000,
            action: "code_sent".to_owned(),
            prev,
            hash,
            line,
        }
    }

    /// Appends like the component: read the head, link, retry on conflict.
    pub(crate) fn append(sink: &dyn AuditSink, org: &str, note: &str) -> AuditEntry {
        loop {
            let entry = linked(org, note, sink.head(org).unwrap().as_ref());
            match sink.append(&entry) {
                Ok(()) => return entry,
                Err(AppendError::Conflict) => {}
                Err(e) => panic!("{e:?}"),
            }
        }
    }

    pub(crate) fn verify_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> Verifier {
        let mut v = Verifier::new(None);
        for line in lines {
            v.check(line).unwrap();
        }
        v
    }

    fn read_segments(path: &Path) -> String {
        jsonl_segments(path)
            .unwrap()
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }

    /// Appends a record of `org` with `action`, written at `at`.
    pub(crate) fn append_at(
        sink: &dyn AuditSink,
        org: &str,
        action: Action,
        at: i64,
    ) -> AuditEntry {
        let head = sink.head(org).unwrap();
        let (seq, prev) = Head::next(head.as_ref());
        let mut event = event(org, "timed");
        event.action = action;
        let (line, hash) = event.seal(&format!("t{seq}"), seq, Timestamp(at), &prev, None);
        let entry = AuditEntry {
            org_id: org.to_owned(),
            seq,
            at,
            action: action.as_str().to_owned(),
            prev,
            hash,
            line,
        };
        sink.append(&entry).unwrap();
        entry
    }

    /// What the console's audit viewer relies on from a sink: an organization's lines from a
    /// `seq` on, in order, bounded, and no other organization's; the lines in a time range with
    /// an action, newest first; and a checkpoint that only moves forward.
    pub(crate) fn check_viewer_reads(sink: &dyn HostAuditSink) {
        let one = append(sink, "acme", "one");
        let other = append(sink, "globex", "g");
        let two = append(sink, "acme", "two");
        let three = append(sink, "acme", "three");
        let after = |org, from, limit| sink.lines_after(org, from, limit).unwrap().unwrap();
        assert_eq!(
            after("acme", 0, 10),
            [&one.line, &two.line, &three.line].map(String::clone)
        );
        // The record at `from` included, none before it; at most `limit`.
        assert_eq!(
            after("acme", 2, 10),
            [&two.line, &three.line].map(String::clone)
        );
        assert_eq!(
            after("acme", 1, 2),
            [&one.line, &two.line].map(String::clone)
        );
        assert_eq!(after("acme", 3, 1), std::slice::from_ref(&three.line));
        assert!(after("acme", 4, 10).is_empty());
        assert_eq!(after("globex", 0, 10), std::slice::from_ref(&other.line));
        assert!(after("nobody", 0, 10).is_empty());
        assert_eq!(sink.checkpoint("acme").unwrap(), None);
        let at = |e: &AuditEntry| Head {
            seq: e.seq,
            hash: e.hash.clone(),
        };
        sink.advance_checkpoint("acme", &at(&two), 1).unwrap();
        assert_eq!(sink.checkpoint("acme").unwrap(), Some(at(&two)));
        // Never back: a slower view that verified less leaves it where it is.
        sink.advance_checkpoint("acme", &at(&one), 2).unwrap();
        assert_eq!(sink.checkpoint("acme").unwrap(), Some(at(&two)));
        assert_eq!(sink.checkpoint("globex").unwrap(), None);

        // The time range (both ends included) and the action, newest first.
        let day = 86_400;
        let t = 1_796_000_000;
        let r1 = append_at(sink, "clinic", Action::CodeSent, t);
        let r2 = append_at(sink, "clinic", Action::CodeVerified, t + day);
        let noise = append_at(sink, "globex", Action::CodeSent, t + day);
        let r3 = append_at(sink, "clinic", Action::CodeSent, t + day + 5);
        let r4 = append_at(sink, "clinic", Action::CodeSent, t + 2 * day);
        let matching = |from, to, action| {
            let lines = sink
                .lines_matching("clinic", from, to, action)
                .unwrap()
                .unwrap();
            assert!(
                !lines.contains(&noise.line),
                "another organization's record"
            );
            lines
        };
        let lines = |records: &[&AuditEntry]| -> Vec<String> {
            records.iter().map(|r| r.line.clone()).collect()
        };
        assert_eq!(matching(None, None, None), lines(&[&r4, &r3, &r2, &r1]));
        assert_eq!(matching(Some(t + day), None, None), lines(&[&r4, &r3, &r2]));
        assert_eq!(
            matching(None, Some(t + day + 5), None),
            lines(&[&r3, &r2, &r1])
        );
        assert_eq!(
            matching(Some(t + day), Some(t + day + 5), Some("code_sent")),
            lines(&[&r3])
        );
        assert_eq!(matching(None, None, Some("code_verified")), lines(&[&r2]));
        assert_eq!(
            matching(None, None, Some("code_sent")),
            lines(&[&r4, &r3, &r1])
        );
        assert!(matching(Some(t + 1), Some(t + day - 1), None).is_empty());
        // A page: the newest few, and how many in all.
        let newest = |from, to, action, limit| {
            sink.newest_matching("clinic", from, to, action, limit)
                .unwrap()
                .unwrap()
        };
        assert_eq!(newest(None, None, None, 2), (lines(&[&r4, &r3]), 4));
        assert_eq!(newest(None, None, Some("code_sent"), 1), (lines(&[&r4]), 3));
        assert_eq!(
            newest(Some(t + day), Some(t + day + 5), None, 1),
            (lines(&[&r3]), 2)
        );
        assert_eq!(newest(Some(t + 3 * day), None, None, 5), (Vec::new(), 0));
        assert_eq!(
            newest(None, None, None, 10),
            (lines(&[&r4, &r3, &r2, &r1]), 4)
        );
        assert!(matching(None, None, Some("admin_console_viewed")).is_empty());
        assert_eq!(
            sink.lines_matching("nobody", None, None, None).unwrap(),
            Some(Vec::new())
        );
    }

    #[test]
    fn sqlite_and_jsonl_sinks_read_a_stream_back_and_keep_a_forward_only_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        check_viewer_reads(&SqliteAuditSink::open(dir.path().join("a.sqlite")).unwrap());
        let path = dir.path().join("a.jsonl");
        check_viewer_reads(&JsonlAuditSink::open(&path).unwrap());
        // A rotated JSONL log is read across its segments.
        let sink = JsonlAuditSink::open_rotating(dir.path().join("r.jsonl"), Some(1)).unwrap();
        let lines: Vec<String> = (0..3)
            .map(|i| append(&sink, "acme", &format!("n{i}")).line)
            .collect();
        assert_eq!(
            sink.lines_after("acme", 0, 10).unwrap(),
            Some(lines.clone())
        );
        let newest_first: Vec<String> = lines.iter().rev().cloned().collect();
        assert_eq!(
            sink.lines_matching("acme", None, None, None).unwrap(),
            Some(newest_first)
        );
        // A checkpoint file that does not parse is no checkpoint.
        std::fs::write(sidecar(&path, ".checkpoint"), b"{not json").unwrap();
        let sink = JsonlAuditSink::open(&path).unwrap();
        assert_eq!(sink.checkpoint("acme").unwrap(), None);
    }

    #[test]
    fn sqlite_reads_the_viewer_asks_for_use_the_tables_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.sqlite");
        drop(SqliteAuditSink::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        let plan = |sql: &str| -> String {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let all = params!["acme", 1_i64, 2_i64, "code_sent"];
            let rows = stmt
                .query_map(&all[..stmt.parameter_count()], |row| {
                    row.get::<_, String>(3)
                })
                .unwrap();
            rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
        };
        let after =
            plan("SELECT line FROM audit_log WHERE org = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3");
        assert!(
            after.contains("USING INDEX") && after.contains("seq>?"),
            "{after}"
        );
        for action in [true, false] {
            let lines = |timed| {
                format!(
                    "SELECT line {} ORDER BY seq DESC",
                    matching_sql(timed, action)
                )
            };
            let timed = plan(&lines(true));
            assert!(timed.contains("audit_log_org_at"), "{timed}");
            let count = plan(&format!("SELECT count(*) {}", matching_sql(true, action)));
            assert!(count.contains("audit_log_org_at"), "{count}");
            let untimed = plan(&lines(false));
            assert!(
                untimed.contains("USING INDEX") && !untimed.contains("SCAN audit_log"),
                "{untimed}"
            );
        }
    }

    #[test]
    fn jsonl_stores_lines_byte_for_byte_and_reads_heads_back_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/audit/audit.jsonl");
        let sink = JsonlAuditSink::open(&path).unwrap();
        let a1 = append(&sink, "acme", "a1");
        let b1 = append(&sink, "beta", "b1");
        let a2 = append(&sink, "acme", "a2");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n{}\n{}\n", a1.line, b1.line, a2.line)
        );
        drop(sink);
        let sink = JsonlAuditSink::open(&path).unwrap();
        assert_eq!(
            sink.head("acme").unwrap(),
            Some(Head {
                seq: 2,
                hash: a2.hash.clone()
            })
        );
        let a3 = append(&sink, "acme", "a3");
        assert_eq!((a3.seq, &a3.prev), (3, &a2.hash));
        let content = std::fs::read_to_string(&path).unwrap();
        assert_eq!(verify_lines(content.lines()).records(), 4);
    }

    #[test]
    fn an_entry_that_does_not_link_to_the_head_is_a_conflict_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let jsonl = JsonlAuditSink::open(&path).unwrap();
        let sqlite = SqliteAuditSink::open(dir.path().join("audit.db")).unwrap();
        let memory = MemoryAuditSink::new();
        for sink in [&jsonl as &dyn AuditSink, &sqlite, &memory] {
            let first = append(sink, "acme", "one");
            // Linked to nothing (seq 1 again), and linked with the right seq but a wrong prev.
            assert_eq!(
                sink.append(&linked("acme", "x", None)),
                Err(AppendError::Conflict)
            );
            let mut forged = linked(
                "acme",
                "y",
                Some(&Head {
                    seq: 1,
                    hash: "ab".repeat(32),
                }),
            );
            forged.seq = 2;
            assert_eq!(sink.append(&forged), Err(AppendError::Conflict));
            assert_eq!(sink.head("acme").unwrap().map(|h| h.hash), Some(first.hash));
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
        assert_eq!(memory.entries().len(), 1);
    }

    #[test]
    fn jsonl_a_torn_tail_is_moved_aside_and_never_joins_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let first = append(&JsonlAuditSink::open(&path).unwrap(), "acme", "one");
        // Power lost in the middle of the next record.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"v\":2,\"id\":\"to").unwrap();
        drop(f);
        let sink = JsonlAuditSink::open(&path).unwrap();
        let second = append(&sink, "acme", "two");
        assert_eq!(second.prev, first.hash);
        let content = std::fs::read_to_string(&path).unwrap();
        assert_eq!(content, format!("{}\n{}\n", first.line, second.line));
        assert_eq!(
            std::fs::read_to_string(sidecar(&path, ".torn")).unwrap(),
            "{\"v\":2,\"id\":\"to\n"
        );
    }

    #[test]
    fn jsonl_zeros_left_by_a_crash_between_unsynced_records_are_moved_aside_from_there_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let first = append(&JsonlAuditSink::open(&path).unwrap(), "acme", "one");
        // Power lost with two records written but not synced: the disk kept a block of zeros
        // where the first was, and the whole second one.
        let lost = linked(
            "acme",
            "lost",
            Some(&Head {
                seq: 1,
                hash: first.hash.clone(),
            }),
        );
        let kept = linked(
            "acme",
            "kept",
            Some(&Head {
                seq: 2,
                hash: lost.hash.clone(),
            }),
        );
        let mut tail = vec![0_u8; lost.line.len()];
        tail.push(b'\n');
        tail.extend_from_slice(kept.line.as_bytes());
        tail.push(b'\n');
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&tail).unwrap();
        drop(f);
        let sink = JsonlAuditSink::open(&path).unwrap();
        // The chain goes on from the last record that was there whole before the zeros.
        let next = append(&sink, "acme", "next");
        assert_eq!((next.seq, next.prev.as_str()), (2, first.hash.as_str()));
        let content = std::fs::read_to_string(&path).unwrap();
        assert_eq!(content, format!("{}\n{}\n", first.line, next.line));
        assert_eq!(verify_lines(content.lines()).records(), 2);
        assert_eq!(std::fs::read(sidecar(&path, ".torn")).unwrap(), tail);
    }

    #[test]
    fn jsonl_records_placed_at_once_share_syncs_and_each_is_synced_when_settled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let sink = Arc::new(JsonlAuditSink::open(&path).unwrap());
        // As the host does: place under the stream's turn (here one mutex per org), give the turn
        // back, then settle.
        let turns: Arc<[Mutex<()>; 2]> = Arc::new([Mutex::new(()), Mutex::new(())]);
        let (threads, each) = (16, 25);
        let barrier = Arc::new(std::sync::Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (sink, turns, barrier) = (sink.clone(), turns.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    for i in 0..each {
                        let org = ["acme", "beta"][(t + i) % 2];
                        let placed = {
                            let _turn = turns[(t + i) % 2].lock().unwrap();
                            let entry =
                                linked(org, &format!("t{t}-{i}"), sink.head(org).unwrap().as_ref());
                            sink.place(&entry).unwrap()
                        };
                        let Placed::Pending(ticket) = placed else {
                            panic!("a JSONL record is synced when settled, not when placed")
                        };
                        sink.settle(placed).unwrap();
                        assert!(sink.synced.load(Ordering::Acquire) >= ticket);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let records = (threads * each) as u64;
        assert_eq!(
            verify_lines(read_segments(&path).lines()).records(),
            records
        );
        let syncs = sink.syncs.load(Ordering::Relaxed);
        assert!(
            syncs < records,
            "{threads} writers at once should share syncs: {syncs} syncs for {records} records"
        );
    }

    #[test]
    fn a_broken_jsonl_sink_refuses_heads_too_and_a_pending_record_needs_its_own_sink() {
        let dir = tempfile::tempdir().unwrap();
        let sink = JsonlAuditSink::open(dir.path().join("audit.jsonl")).unwrap();
        append(&sink, "acme", "one");
        // As after a failed sync: readiness (which reads a head) must see it, not only appends.
        sink.broken.store(true, Ordering::Release);
        assert!(sink.head("acme").is_err());
        assert!(sink.place(&linked("acme", "two", None)).is_err());
        // A sink that did not place a record pending cannot vouch for it.
        let memory = MemoryAuditSink::new();
        assert!(memory.settle(Placed::Pending(1)).is_err());
        assert!(!memory.settled(Placed::Pending(1)));
        assert!(memory.settle(Placed::Durable).is_ok());
    }

    #[test]
    fn a_store_and_an_audit_table_in_one_file_share_one_writer() {
        use mfa_step_core::kernel::ports::Store as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("one.sqlite");
        let store = super::super::SqliteStore::open(&path).unwrap();
        let sink = SqliteAuditSink::open(&path).unwrap();
        let (_, before) = store.commit_stats();
        store.set("k", b"v", None).unwrap();
        append(&sink, "acme", "one");
        let (_, after) = store.commit_stats();
        assert_eq!(
            after - before,
            2,
            "the append went through the store's writer"
        );
        drop((store, sink));
        // Once both are gone, a new handle starts a writer of its own on the same file.
        let again = super::super::SqliteStore::open(&path).unwrap();
        assert_eq!(again.get("k").unwrap().as_deref(), Some(&b"v"[..]));
    }

    #[test]
    fn jsonl_calls_leave_the_executor_near_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let never = JsonlAuditSink::open(dir.path().join("a.jsonl")).unwrap();
        assert!(never.runs_in_place());
        let far =
            JsonlAuditSink::open_rotating(dir.path().join("b.jsonl"), Some(64 << 20)).unwrap();
        assert!(far.runs_in_place());
        let near = JsonlAuditSink::open_rotating(dir.path().join("c.jsonl"), Some(4096)).unwrap();
        assert!(
            !near.runs_in_place(),
            "a rotation syncs under the lock: not on the executor"
        );
    }

    #[test]
    fn writers_sharing_a_file_or_a_database_never_fork_a_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let db = dir.path().join("audit.db");
        // Two sinks on one file stand for two processes: each has its own lock file handle.
        let pairs: [(
            Arc<dyn AuditSink + Send + Sync>,
            Arc<dyn AuditSink + Send + Sync>,
        ); 2] = [
            (
                Arc::new(JsonlAuditSink::open_rotating(&path, Some(4096)).unwrap()),
                Arc::new(JsonlAuditSink::open_rotating(&path, Some(4096)).unwrap()),
            ),
            (
                Arc::new(SqliteAuditSink::open(&db).unwrap()),
                Arc::new(SqliteAuditSink::open(&db).unwrap()),
            ),
        ];
        for (first, second) in pairs {
            let threads: Vec<_> = (0..6)
                .map(|t| {
                    let sink = Arc::clone(if t % 2 == 0 { &first } else { &second });
                    std::thread::spawn(move || {
                        for i in 0..25 {
                            let org = if i % 3 == 0 { "beta" } else { "acme" };
                            append(sink.as_ref(), org, &format!("t{t}-{i}"));
                        }
                    })
                })
                .collect();
            for thread in threads {
                thread.join().unwrap();
            }
            assert_eq!(first.head("acme").unwrap().map(|h| h.seq), Some(96));
            assert_eq!(second.head("beta").unwrap().map(|h| h.seq), Some(54));
        }
        let jsonl = read_segments(&path);
        assert!(
            jsonl_segments(&path).unwrap().len() > 2,
            "rotated under load"
        );
        assert_eq!(verify_lines(jsonl.lines()).records(), 150);
        let rows = sqlite_lines(&db).unwrap();
        assert_eq!(
            verify_lines(rows.iter().map(|(_, l)| l.as_str())).records(),
            150
        );
    }

    #[test]
    fn jsonl_rotation_continues_the_chain_and_the_newest_segment_verifies_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let sink = JsonlAuditSink::open_rotating(&path, Some(2000)).unwrap();
        for i in 0..20 {
            append(
                &sink,
                if i % 4 == 0 { "beta" } else { "acme" },
                &format!("r{i}"),
            );
        }
        drop(sink);
        let segments = jsonl_segments(&path).unwrap();
        assert!(segments.len() >= 3, "{segments:?}");
        assert!(
            segments[0]
                .to_string_lossy()
                .ends_with("audit.jsonl.000001")
        );
        let v = verify_lines(read_segments(&path).lines().collect::<Vec<_>>());
        assert_eq!(v.records(), 20);
        // The newest segment on its own, starting from the heads saved at the last rotation.
        let mut alone = Verifier::new(None);
        for (org, head) in jsonl_rotation_heads(&path).unwrap() {
            alone.resume(&org, head);
        }
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            alone.check(line).unwrap();
        }
        // A restart continues where the rotated chain left off.
        let sink = JsonlAuditSink::open_rotating(&path, Some(2000)).unwrap();
        assert_eq!(sink.head("acme").unwrap().map(|h| h.seq), Some(15));
        append(&sink, "acme", "after");
        assert_eq!(
            verify_lines(read_segments(&path).lines().collect::<Vec<_>>()).records(),
            21
        );
        // An operator archives the oldest segment away; later rotations never reuse a number that
        // is still present.
        let kept = segments[segments.len() - 2].clone();
        let kept_content = std::fs::read(&kept).unwrap();
        std::fs::remove_file(&segments[0]).unwrap();
        for i in 0..20 {
            append(&sink, "acme", &format!("later{i}"));
        }
        assert_eq!(
            std::fs::read(&kept).unwrap(),
            kept_content,
            "never overwritten"
        );
        let now = jsonl_segments(&path).unwrap();
        assert!(now.len() > segments.len() - 1, "{now:?}");
    }

    #[test]
    fn lines_that_would_break_the_framing_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let jsonl = JsonlAuditSink::open(&path).unwrap();
        let sqlite = SqliteAuditSink::open(dir.path().join("audit.db")).unwrap();
        let memory = MemoryAuditSink::new();
        for line in ["", "{}\n{}", "{}\r", "{}\n"] {
            let mut entry = linked("acme", "x", None);
            entry.line = line.to_owned();
            for sink in [&jsonl as &dyn AuditSink, &sqlite, &memory] {
                assert!(
                    matches!(sink.append(&entry), Err(AppendError::Unavailable(_))),
                    "{line:?}"
                );
            }
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        assert!(memory.entries().is_empty());
        assert_eq!(sqlite.head("acme").unwrap(), None);
    }

    #[test]
    fn jsonl_open_fails_cleanly_where_no_file_can_be() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("not-a-folder");
        std::fs::write(&blocker, b"").unwrap();
        let err = JsonlAuditSink::open(blocker.join("audit.jsonl")).unwrap_err();
        assert!(err.to_string().contains("not-a-folder"), "{err}");
    }
}
