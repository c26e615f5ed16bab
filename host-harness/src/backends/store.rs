//! Key-value stores: [`MemoryStore`] for tests and [`SqliteStore`] for a real host.
//!
//! Both keep the contract of `wit/store.wit`:
//! - Keys are 1 to [`MAX_KEY_BYTES`] bytes of printable ASCII, values at most [`MAX_VALUE_BYTES`];
//!   anything else is refused with an error that starts with `invalid` and never echoes the value.
//! - Counters live in their own namespace: `increment` never touches a value, `get` and `list_keys`
//!   never see a counter, and `delete` removes both.
//! - `increment` is atomic and checked: an overflow is an error and leaves the counter unchanged;
//!   reading a counter (`increment(key, 0, None)`) creates nothing.
//! - Expiry: `set` replaces a key's expiry, `increment` extends it (the later of the two; a key
//!   kept for good stays so). An expired key reads as it was until [`Sweep::sweep`] forgets it;
//!   `serve` sweeps every minute ([`spawn_sweeper`]), all expired keys in one transaction.
//!
//! [`SqliteStore`] adds durability and sharing across processes:
//! - WAL journal with `synchronous=FULL`: a call that returned `Ok` survives a crash or power loss.
//! - `busy_timeout` of 5 s: processes sharing one file wait for each other instead of failing.
//! - Group commit: one writer thread per database takes every write waiting, runs each in its own
//!   savepoint of one transaction and commits once ([`super::sqlite_writer`]), so concurrent
//!   requests share a sync; a caller hears `Ok` only after the commit. Reads have connections of
//!   their own beside the writer.
//! - `increment` is one `INSERT … ON CONFLICT DO UPDATE … RETURNING` statement, so concurrent calls
//!   from any number of threads or processes never lose an update; `delete` is one piece of work.
//! - Tables are `STRICT`, so a value of the wrong type can never be stored (an overflowing counter
//!   would otherwise silently become a float).
//!
//! Calls block the calling thread (a queue, a lock, disk I/O); async callers use `spawn_blocking`.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mfa_step_core::kernel::ports::{Head, PortError, PortResult, Store};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::sqlite_writer::Writer;
use super::unit::{Relinker, Unit, Values};
use super::{BackendError, lock};

/// A store that forgets expired keys when asked (see `wit/store.wit`, "Expiry").
pub trait Sweep: Send + Sync {
    /// Forgets every key whose expiry is at or before `now` (Unix seconds), at once; returns how
    /// many.
    ///
    /// # Errors
    /// The backend failed; nothing was forgotten.
    fn sweep(&self, now: i64) -> PortResult<u64>;
}

/// A boxed future of a port call's outcome, as the host awaits it.
pub type PortFuture<T> = std::pin::Pin<Box<dyn Future<Output = PortResult<T>> + Send>>;

/// A store as the host drives it: the core's port, and for a store whose writes have a thread of
/// their own (SQLite's writer), a way to hand a write over and await its answer, so that no
/// blocking-pool thread sits waiting for the commit. `None` (the default) means the host calls the
/// synchronous method, on its blocking pool or in place (`crate::host::Offload`).
pub trait HostStore: Store + Send + Sync {
    /// `get`, handed over (a store whose client is asynchronous answers on the executor).
    fn get_async(&self, key: &str) -> Option<PortFuture<Option<Vec<u8>>>> {
        let _ = key;
        None
    }

    /// `list-keys`, handed over.
    fn list_keys_async(&self, prefix: &str) -> Option<PortFuture<Vec<String>>> {
        let _ = prefix;
        None
    }

    /// `set`, handed over.
    fn set_async(
        &self,
        key: &str,
        value: &[u8],
        expires_at: Option<i64>,
    ) -> Option<PortFuture<()>> {
        let _ = (key, value, expires_at);
        None
    }

    /// `delete`, handed over.
    fn delete_async(&self, key: &str) -> Option<PortFuture<()>> {
        let _ = key;
        None
    }

    /// `increment`, handed over. The host offers plain reads (`increment(key, 0, None)`) too; a
    /// store whose reads never wait (SQLite's WAL snapshot) answers `None` for them.
    fn increment_async(
        &self,
        key: &str,
        delta: i64,
        expires_at: Option<i64>,
    ) -> Option<PortFuture<i64>> {
        let _ = (key, delta, expires_at);
        None
    }

    /// Writes a unit's values (`Some` sets, `None` deletes the value and any counter of the key):
    /// all of them or, on an error, none. The default writes them one by one through
    /// [`Store::set`] and [`Store::delete`], which is all or none only for a single key: every
    /// real store here overrides it with one transaction (test doubles keep it).
    ///
    /// # Errors
    /// The backend failed; nothing was written (but see above for the default).
    fn apply(&self, values: &Values) -> PortResult<()> {
        for (key, put) in values {
            match put {
                Some(put) => self.set(key, &put.value, put.expires_at)?,
                None => self.delete(key)?,
            }
        }
        Ok(())
    }

    /// [`HostStore::apply`], handed over.
    fn apply_async(&self, values: &Values) -> Option<PortFuture<()>> {
        let _ = values;
        None
    }

    /// Commits a whole unit, its values and its records, in one transaction of this store's own
    /// database, when the audit sink keeps its records there (`sink_database` is
    /// [`HostAuditSink::database`] and names this store's database). Each record is placed after
    /// the head found in that transaction ([`Relinker::link`]). Answers the head each organization's
    /// stream was left at. `None`: this store cannot, and the host commits the records through the
    /// sink, then the values through [`HostStore::apply`].
    ///
    /// A store that acknowledges increments before they are durable makes them durable here, also
    /// for a unit that holds nothing else ([`Unit::counted`]): the host calls this for every unit.
    fn commit_unit(
        &self,
        unit: &Unit,
        sink_database: Option<&str>,
        relinker: &Relinker,
    ) -> Option<PortFuture<Vec<(String, Head)>>> {
        let _ = (unit, sink_database, relinker);
        None
    }
}

impl HostStore for MemoryStore {
    /// Under the store's lock: no reader sees half of the values.
    fn apply(&self, values: &Values) -> PortResult<()> {
        for (key, put) in values {
            validate_key(key)?;
            if let Some(put) = put {
                validate_value(&put.value)?;
            }
        }
        let mut maps = self.maps()?;
        for (key, put) in values {
            match put {
                Some(put) => {
                    maps.values.insert(key.clone(), put.value.clone());
                    match put.expires_at {
                        Some(at) => maps.expiries.insert(key.clone(), at),
                        None => maps.expiries.remove(key),
                    };
                }
                None => {
                    maps.values.remove(key);
                    maps.counters.remove(key);
                    maps.expiries.remove(key);
                }
            }
        }
        Ok(())
    }
}

impl HostStore for SqliteStore {
    fn set_async(
        &self,
        key: &str,
        value: &[u8],
        expires_at: Option<i64>,
    ) -> Option<PortFuture<()>> {
        Some(self.submit(Self::set_work(key, value, expires_at)))
    }

    fn delete_async(&self, key: &str) -> Option<PortFuture<()>> {
        Some(self.submit(Self::delete_work(key)))
    }

    fn increment_async(
        &self,
        key: &str,
        delta: i64,
        expires_at: Option<i64>,
    ) -> Option<PortFuture<i64>> {
        if delta == 0 && expires_at.is_none() {
            // A plain read: the WAL snapshot answers it in place, without the writer.
            return None;
        }
        Some(self.submit(Self::increment_work(key, delta, expires_at)))
    }

    fn apply(&self, values: &Values) -> PortResult<()> {
        self.writer.run(Self::apply_work(values)?)
    }

    fn apply_async(&self, values: &Values) -> Option<PortFuture<()>> {
        Some(self.submit(Self::apply_work(values)))
    }

    fn commit_unit(
        &self,
        unit: &Unit,
        sink_database: Option<&str>,
        relinker: &Relinker,
    ) -> Option<PortFuture<Vec<(String, Head)>>> {
        // Increments are durable when they return: an empty unit has nothing left to commit.
        if unit.is_empty() || sink_database != Some(self.database.as_str()) {
            return None;
        }
        Some(self.submit(Self::unit_work(unit, relinker)))
    }
}

/// Sweeps `store` every `every`, at the time `clock` tells, on tokio's blocking pool, until the
/// runtime stops. A failed sweep is logged and tried again at the next tick (it only keeps more).
pub fn spawn_sweeper(
    store: std::sync::Arc<dyn Sweep>,
    clock: crate::clock::Clock,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let store = store.clone();
            let now = clock.now();
            match tokio::task::spawn_blocking(move || store.sweep(now)).await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => tracing::debug!(forgotten = n, "expired keys swept"),
                Ok(Err(e)) => tracing::warn!(error = %e, "sweeping expired keys failed"),
                Err(e) => tracing::warn!(error = %e, "the sweep did not finish"),
            }
        }
    })
}

/// The longest key the store accepts, in bytes (`wit/store.wit`).
pub const MAX_KEY_BYTES: usize = 512;
/// The largest value the store accepts, in bytes (`wit/store.wit`).
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// How long a call waits for another process holding the database's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Checks a key against the WIT limits: 1 to [`MAX_KEY_BYTES`] bytes of printable ASCII.
///
/// Every store here calls it; a WIT adapter may call it first to report `store-error::invalid`.
///
/// # Errors
/// The key is empty, too long or holds a byte outside `0x20..=0x7E`; the message starts with `invalid`.
pub fn validate_key(key: &str) -> PortResult<()> {
    if key.is_empty() {
        return Err(PortError("invalid key: it is empty".to_owned()));
    }
    validate_key_text(key, "key")
}

/// Checks a value against the WIT limit of [`MAX_VALUE_BYTES`].
///
/// # Errors
/// The value is too large; the message starts with `invalid` and gives only its length.
pub fn validate_value(value: &[u8]) -> PortResult<()> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(PortError(format!(
            "invalid value: {} bytes is over the limit of {MAX_VALUE_BYTES} bytes",
            value.len()
        )));
    }
    Ok(())
}

/// A prefix follows the key rules but may be empty (it then lists every value key).
pub(crate) fn validate_prefix(prefix: &str) -> PortResult<()> {
    validate_key_text(prefix, "prefix")
}

fn validate_key_text(text: &str, what: &str) -> PortResult<()> {
    if text.len() > MAX_KEY_BYTES {
        return Err(PortError(format!(
            "invalid {what}: {} bytes is over the limit of {MAX_KEY_BYTES} bytes",
            text.len()
        )));
    }
    if let Some(position) = text.bytes().position(|b| !(0x20..=0x7E).contains(&b)) {
        return Err(PortError(format!(
            "invalid {what}: byte {position} is not printable ASCII (0x20 to 0x7E)"
        )));
    }
    Ok(())
}

/// The error every store gives for an increment past the 64-bit range (the counter unchanged).
pub(crate) fn overflow() -> PortError {
    PortError(
        "counter overflow: the increment would leave the 64-bit range; nothing changed".to_owned(),
    )
}

// ---------------------------------------------------------------------------------------------
// MemoryStore

/// A store in process memory, for tests and single-process demos. Nothing survives a restart.
#[derive(Default)]
pub struct MemoryStore {
    maps: Mutex<MemoryMaps>,
}

#[derive(Default)]
struct MemoryMaps {
    values: HashMap<String, Vec<u8>>,
    counters: HashMap<String, i64>,
    /// Expiries of values and counters (the core never uses one key as both).
    expiries: HashMap<String, i64>,
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn maps(&self) -> PortResult<std::sync::MutexGuard<'_, MemoryMaps>> {
        lock(&self.maps, "the memory store")
    }
}

impl fmt::Debug for MemoryStore {
    /// Shows sizes only: values are the component's state, not for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("MemoryStore");
        match self.maps.lock() {
            Ok(maps) => s
                .field("values", &maps.values.len())
                .field("counters", &maps.counters.len()),
            Err(_) => s.field("state", &"poisoned"),
        };
        s.finish()
    }
}

impl Store for MemoryStore {
    fn get(&self, key: &str) -> PortResult<Option<Vec<u8>>> {
        validate_key(key)?;
        Ok(self.maps()?.values.get(key).cloned())
    }

    fn set(&self, key: &str, value: &[u8], expires_at: Option<i64>) -> PortResult<()> {
        validate_key(key)?;
        validate_value(value)?;
        let mut maps = self.maps()?;
        maps.values.insert(key.to_owned(), value.to_vec());
        match expires_at {
            Some(at) => maps.expiries.insert(key.to_owned(), at),
            None => maps.expiries.remove(key),
        };
        Ok(())
    }

    fn delete(&self, key: &str) -> PortResult<()> {
        validate_key(key)?;
        let mut maps = self.maps()?;
        maps.values.remove(key);
        maps.counters.remove(key);
        maps.expiries.remove(key);
        Ok(())
    }

    fn increment(&self, key: &str, delta: i64, expires_at: Option<i64>) -> PortResult<i64> {
        validate_key(key)?;
        let mut maps = self.maps()?;
        let current = maps.counters.get(key).copied();
        if current.is_none() && delta == 0 {
            return Ok(0);
        }
        let next = current
            .unwrap_or(0)
            .checked_add(delta)
            .ok_or_else(overflow)?;
        maps.counters.insert(key.to_owned(), next);
        if let Some(at) = expires_at {
            match maps.expiries.get_mut(key) {
                Some(kept) => *kept = (*kept).max(at),
                None if current.is_none() => {
                    maps.expiries.insert(key.to_owned(), at);
                }
                None => {}
            }
        }
        Ok(next)
    }

    fn list_keys(&self, prefix: &str) -> PortResult<Vec<String>> {
        validate_prefix(prefix)?;
        Ok(self
            .maps()?
            .values
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect())
    }
}

impl Sweep for MemoryStore {
    fn sweep(&self, now: i64) -> PortResult<u64> {
        let mut maps = self.maps()?;
        let gone: Vec<String> = maps
            .expiries
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(key, _)| key.clone())
            .collect();
        for key in &gone {
            maps.expiries.remove(key);
            maps.values.remove(key);
            maps.counters.remove(key);
        }
        Ok(u64::try_from(gone.len()).unwrap_or(u64::MAX))
    }
}

// ---------------------------------------------------------------------------------------------
// SqliteStore

/// The schema. `STRICT` makes SQLite refuse a value of the wrong type instead of converting it.
/// `expires_at` is Unix seconds, `NULL` for a key kept for good; the partial indexes hold only the
/// keys that expire, which is what a sweep reads.
const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL,
        expires_at INTEGER) STRICT;
    CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, value INTEGER NOT NULL,
        expires_at INTEGER) STRICT;
";

/// What a database made before keys expired lacks. Each step runs once, in order, and
/// `PRAGMA user_version` counts the steps run.
const MIGRATIONS: [&str; 1] = ["
    ALTER TABLE kv ADD COLUMN expires_at INTEGER;
    ALTER TABLE counters ADD COLUMN expires_at INTEGER;
"];

/// The indexes, made after the migrations (they need the `expires_at` columns).
const INDEXES: &str = "
    CREATE INDEX IF NOT EXISTS kv_expiry ON kv (expires_at) WHERE expires_at IS NOT NULL;
    CREATE INDEX IF NOT EXISTS counters_expiry ON counters (expires_at)
        WHERE expires_at IS NOT NULL;
";

/// Brings a store database to the current schema: a new one is made whole and marked current; an
/// old one gets the missing migrations, in one transaction.
fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: usize = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let has_expiry: bool = tx.query_row(
        "SELECT COUNT(*) > 0 FROM pragma_table_info('kv') WHERE name = 'expires_at'",
        [],
        |row| row.get(0),
    )?;
    // A database made with this schema already has every column: nothing to migrate.
    let from = if has_expiry {
        MIGRATIONS.len()
    } else {
        version
    };
    for step in MIGRATIONS.iter().skip(from) {
        tx.execute_batch(step)?;
    }
    tx.execute_batch(INDEXES)?;
    tx.pragma_update(None, "user_version", MIGRATIONS.len())?;
    tx.commit()
}

/// A durable store in one SQLite file, safe to share between threads and between processes.
///
/// Writes go through the database's one writer thread, which commits concurrent callers' writes
/// together ([`super::sqlite_writer`]); reads use connections of their own, which WAL lets run
/// beside the writer. Across processes SQLite's file locks serialize writers, with a 5 s busy
/// timeout.
pub struct SqliteStore {
    writer: Arc<Writer>,
    readers: Readers,
    path: PathBuf,
    /// `sqlite:<canonical path>`: a sink with the same [`super::HostAuditSink::database`] shares
    /// this store's writer, and a unit of work commits in one piece ([`HostStore::commit_unit`]).
    database: String,
}

/// How a SQLite database is named for [`HostStore::commit_unit`]: by its canonical path, the key
/// its writer is shared by.
pub(crate) fn sqlite_database(path: &Path) -> String {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    format!("sqlite:{}", path.display())
}

impl SqliteStore {
    /// Opens (or creates) the database at `path`, creating missing parent folders, and prepares it:
    /// 5 s busy timeout, WAL journal, `synchronous=FULL`, and the `kv` and `counters` tables.
    ///
    /// # Errors
    /// The folder cannot be created, the file cannot be opened as a SQLite database, WAL mode
    /// cannot be enabled (e.g. a file system without shared memory support), or the writer thread
    /// cannot be started.
    pub fn open(path: impl AsRef<Path>) -> super::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut conn = open_connection(&path, SCHEMA)?;
        migrate(&mut conn).map_err(|source| BackendError::Sqlite {
            path: path.clone(),
            source,
        })?;
        let writer =
            Writer::shared(&path, conn, "the SQLite store").map_err(|source| BackendError::Io {
                action: "start the writer thread for",
                path: path.clone(),
                source,
            })?;
        Ok(Self {
            writer,
            readers: Readers::new(path.clone(), "the SQLite store"),
            database: sqlite_database(&path),
            path,
        })
    }

    /// The database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many transactions have committed writes so far, and how many writes they held.
    #[must_use]
    pub fn commit_stats(&self) -> (u64, u64) {
        self.writer.stats()
    }
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Read-only connections to one database, kept for reuse: WAL lets any number of them read beside
/// the writer, each seeing every commit made before its read began.
pub(crate) struct Readers {
    path: PathBuf,
    what: &'static str,
    idle: Mutex<Vec<Connection>>,
}

/// How many idle read connections are kept; more are opened when needed and closed after use.
const IDLE_READERS: usize = 16;

impl Readers {
    pub(crate) fn new(path: PathBuf, what: &'static str) -> Self {
        Self {
            path,
            what,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open(&self.path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // Read-write for WAL's shared-memory index, but refusing any write: writes go through the
        // writer.
        conn.pragma_update(None, "query_only", true)?;
        Ok(conn)
    }

    /// Runs `read` on an idle connection (or a new one) and keeps the connection for the next.
    pub(crate) fn read<T>(
        &self,
        op: &str,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> PortResult<T> {
        let idle = lock(&self.idle, self.what)?.pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.open().map_err(|e| sqlite_error(op, &e))?,
        };
        let outcome = read(&conn).map_err(|e| sqlite_error(op, &e));
        let mut idle = lock(&self.idle, self.what)?;
        if idle.len() < IDLE_READERS {
            idle.push(conn);
        }
        outcome
    }
}

/// Opens (or creates) a SQLite database at `path` the way every SQLite backend here uses it: parent
/// folders created, 5 s busy timeout, WAL journal, `synchronous=FULL`, then `schema` applied.
pub(crate) fn open_connection(path: &Path, schema: &str) -> super::Result<Connection> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| BackendError::Io {
            action: "create the folder",
            path: parent.to_path_buf(),
            source,
        })?;
    }
    let sqlite = |source| BackendError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let conn = Connection::open(path).map_err(sqlite)?;
    // The busy timeout first, so that the statements below also wait for another process.
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(sqlite)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(BackendError::Config(format!(
            "{} cannot use SQLite's WAL journal (it reports `{mode}`); put it on a local file system",
            path.display()
        )));
    }
    // FULL: in WAL mode, NORMAL may lose the last commits on power loss; FULL syncs every commit.
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sqlite)?;
    conn.execute_batch(schema).map_err(sqlite)?;
    Ok(conn)
}

/// Describes a SQLite failure. rusqlite's messages name the failure, never a bound parameter.
pub(crate) fn sqlite_error(op: &str, e: &rusqlite::Error) -> PortError {
    PortError(format!("sqlite {op} failed: {e}"))
}

/// A counter's value, or 0 when it is absent.
fn read_counter(conn: &Connection, key: &str) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT value FROM counters WHERE key = ?1")?
        .query_row([key], |row| row.get(0))
        .optional()
        .map(Option::unwrap_or_default)
}

/// A piece of the writer's work, ready to hand over.
type Work<T> = Box<dyn FnOnce(&Connection) -> PortResult<T> + Send>;

/// Writes validated values on the writer's connection: a set replaces a value and its expiry, a
/// delete removes the value and any counter of the key.
fn write_values(conn: &Connection, values: &Values) -> PortResult<()> {
    let run = || -> rusqlite::Result<()> {
        for (key, put) in values {
            match put {
                Some(put) => {
                    conn.prepare_cached(
                        "INSERT INTO kv (key, value, expires_at) VALUES (?1, ?2, ?3)
                         ON CONFLICT(key) DO UPDATE SET value = excluded.value,
                             expires_at = excluded.expires_at",
                    )?
                    .execute(params![key, put.value, put.expires_at])?;
                }
                None => {
                    conn.prepare_cached("DELETE FROM kv WHERE key = ?1")?
                        .execute([key])?;
                    conn.prepare_cached("DELETE FROM counters WHERE key = ?1")?
                        .execute([key])?;
                }
            }
        }
        Ok(())
    };
    run().map_err(|e| sqlite_error("commit", &e))
}

impl SqliteStore {
    fn set_work(key: &str, value: &[u8], expires_at: Option<i64>) -> PortResult<Work<()>> {
        validate_key(key)?;
        validate_value(value)?;
        let (key, value) = (key.to_owned(), value.to_vec());
        Ok(Box::new(move |conn| {
            conn.prepare_cached(
                "INSERT INTO kv (key, value, expires_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value,
                     expires_at = excluded.expires_at",
            )
            .and_then(|mut stmt| stmt.execute(params![key, value, expires_at]))
            .map(drop)
            .map_err(|e| sqlite_error("set", &e))
        }))
    }

    /// One piece of work, so no reader ever sees the value gone but the counter still there.
    fn delete_work(key: &str) -> PortResult<Work<()>> {
        validate_key(key)?;
        let key = key.to_owned();
        Ok(Box::new(move |conn| {
            let run = || -> rusqlite::Result<()> {
                conn.prepare_cached("DELETE FROM kv WHERE key = ?1")?
                    .execute([&key])?;
                conn.prepare_cached("DELETE FROM counters WHERE key = ?1")?
                    .execute([&key])?;
                Ok(())
            };
            run().map_err(|e| sqlite_error("delete", &e))
        }))
    }

    /// An increment that writes: a delta, or a read that extends an expiry.
    fn increment_work(key: &str, delta: i64, expires_at: Option<i64>) -> PortResult<Work<i64>> {
        validate_key(key)?;
        let key = key.to_owned();
        Ok(Box::new(move |conn| {
            if delta == 0 {
                // A read with an expiry extends that of a counter that has one; it creates nothing.
                let run = || -> rusqlite::Result<i64> {
                    if let Some(at) = expires_at {
                        conn.prepare_cached(
                            "UPDATE counters SET expires_at = MAX(expires_at, ?2)
                             WHERE key = ?1 AND expires_at IS NOT NULL",
                        )?
                        .execute(params![key, at])?;
                    }
                    read_counter(conn, &key)
                };
                return run().map_err(|e| sqlite_error("increment", &e));
            }
            // One statement under the database's write lock, so no update is ever lost. A new
            // counter takes the expiry given; one that has an expiry keeps the later of the two;
            // one kept for good stays so.
            let result = conn
                .prepare_cached(
                    "INSERT INTO counters (key, value, expires_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT(key) DO UPDATE SET value = value + excluded.value,
                         expires_at = CASE
                             WHEN counters.expires_at IS NULL OR excluded.expires_at IS NULL
                                 THEN counters.expires_at
                             ELSE MAX(counters.expires_at, excluded.expires_at) END
                     RETURNING value",
                )
                .and_then(|mut stmt| {
                    stmt.query_row(params![key, delta, expires_at], |row| row.get(0))
                });
            match result {
                Ok(value) => Ok(value),
                // SQLite turns an overflowing sum into a float, which the STRICT table refuses
                // (the statement is rolled back).
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    Err(overflow())
                }
                Err(e) => Err(sqlite_error("increment", &e)),
            }
        }))
    }

    /// A unit's values as one piece of work: all of them or, on an error, none (the piece runs
    /// in its own savepoint).
    fn apply_work(values: &Values) -> PortResult<Work<()>> {
        for (key, put) in values {
            validate_key(key)?;
            if let Some(put) = put {
                validate_value(&put.value)?;
            }
        }
        let values = values.clone();
        Ok(Box::new(move |conn| write_values(conn, &values)))
    }

    /// A whole unit as one piece of work: each record placed after the head the table has now,
    /// then the values. The writer runs one piece at a time, so no other writer in this process
    /// comes between the head and the insert; other processes wait for the database's lock.
    fn unit_work(unit: &Unit, relinker: &Relinker) -> PortResult<Work<Vec<(String, Head)>>> {
        let values = Self::apply_work(&unit.values)?;
        let records = unit.records.clone();
        let relinker = relinker.clone();
        Ok(Box::new(move |conn| {
            let mut heads = Vec::with_capacity(records.len());
            for record in &records {
                heads.push((
                    record.org_id.clone(),
                    super::audit::sqlite_place_linked(conn, record, &relinker)?,
                ));
            }
            values(conn)?;
            Ok(heads)
        }))
    }

    /// Hands a piece of work to the writer, or answers its validation error at once.
    fn submit<T: Send + 'static>(&self, work: PortResult<Work<T>>) -> PortFuture<T> {
        match work {
            Ok(work) => self.writer.submit(work),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }
}

impl Store for SqliteStore {
    fn get(&self, key: &str) -> PortResult<Option<Vec<u8>>> {
        validate_key(key)?;
        self.readers.read("get", |conn| {
            conn.prepare_cached("SELECT value FROM kv WHERE key = ?1")?
                .query_row([key], |row| row.get(0))
                .optional()
        })
    }

    fn set(&self, key: &str, value: &[u8], expires_at: Option<i64>) -> PortResult<()> {
        self.writer.run(Self::set_work(key, value, expires_at)?)
    }

    fn delete(&self, key: &str) -> PortResult<()> {
        self.writer.run(Self::delete_work(key)?)
    }

    fn increment(&self, key: &str, delta: i64, expires_at: Option<i64>) -> PortResult<i64> {
        if delta == 0 && expires_at.is_none() {
            // A plain read creates nothing and writes nothing.
            validate_key(key)?;
            return self
                .readers
                .read("increment", |conn| read_counter(conn, key));
        }
        self.writer
            .run(Self::increment_work(key, delta, expires_at)?)
    }

    fn list_keys(&self, prefix: &str) -> PortResult<Vec<String>> {
        validate_prefix(prefix)?;
        // Keys are printable ASCII (at most 0x7E), so every key that starts with `prefix` sorts in
        // [prefix, prefix + 0x7F): a range scan of the primary key index, with no LIKE escaping.
        let upper = format!("{prefix}\u{7f}");
        self.readers.read("list_keys", |conn| {
            let mut stmt =
                conn.prepare_cached("SELECT key FROM kv WHERE key >= ?1 AND key < ?2")?;
            let rows = stmt.query_map([prefix, upper.as_str()], |row| row.get::<_, String>(0))?;
            rows.collect()
        })
    }
}

impl Sweep for SqliteStore {
    /// Forgets expired keys in slices of [`SWEEP_SLICE_SECONDS`] of expiry, oldest first, one
    /// piece of the writer's work each: a backlog never holds the database for long, and since a
    /// guarding counter expires after the value it guards, no reader ever sees the guard gone and
    /// the value kept.
    fn sweep(&self, now: i64) -> PortResult<u64> {
        let mut forgotten = 0_u64;
        loop {
            let slice = self.writer.run(move |conn| {
                let run = || -> rusqlite::Result<Option<usize>> {
                    let oldest: Option<i64> = conn.query_row(
                        "SELECT MIN(m) FROM (
                             SELECT MIN(expires_at) AS m FROM kv WHERE expires_at <= ?1
                             UNION ALL
                             SELECT MIN(expires_at) FROM counters WHERE expires_at <= ?1)",
                        [now],
                        |row| row.get(0),
                    )?;
                    let Some(oldest) = oldest else {
                        return Ok(None);
                    };
                    let cutoff = oldest.saturating_add(SWEEP_SLICE_SECONDS).min(now);
                    let values = conn.execute("DELETE FROM kv WHERE expires_at <= ?1", [cutoff])?;
                    let counters =
                        conn.execute("DELETE FROM counters WHERE expires_at <= ?1", [cutoff])?;
                    Ok(Some(values + counters))
                };
                run().map_err(|e| sqlite_error("sweep", &e))
            })?;
            match slice {
                Some(n) => forgotten += u64::try_from(n).unwrap_or(u64::MAX),
                None => return Ok(forgotten),
            }
        }
    }
}

/// How wide a slice of expiries one sweep transaction forgets, in seconds.
const SWEEP_SLICE_SECONDS: i64 = 600;

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly on purpose"
)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Arc;

    pub(crate) fn sorted(mut keys: Vec<String>) -> Vec<String> {
        keys.sort();
        keys
    }

    /// A unit's values are written all or none (`HostStore::apply`): sets with their expiries and
    /// deletes of values and counters together; one invalid value among them writes nothing.
    pub(crate) fn check_apply(store: &dyn HostStore) {
        use super::super::unit::{Put, Values};
        store.set("ap:gone", b"old", None).unwrap();
        store.increment("ap:gone", 3, None).unwrap();
        let put = |value: &[u8], expires_at| {
            Some(Put {
                value: value.to_vec(),
                expires_at,
            })
        };
        let mut values = Values::new();
        values.insert("ap:a".to_owned(), put(b"1", Some(i64::MAX / 2)));
        values.insert("ap:b".to_owned(), put(b"2", None));
        values.insert("ap:gone".to_owned(), None);
        store.apply(&values).unwrap();
        assert_eq!(store.get("ap:a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(store.get("ap:b").unwrap(), Some(b"2".to_vec()));
        assert_eq!(store.get("ap:gone").unwrap(), None);
        assert_eq!(store.increment("ap:gone", 0, None).unwrap(), 0);

        let mut bad = Values::new();
        bad.insert("ap:c".to_owned(), put(b"3", None));
        bad.insert("ap:d".to_owned(), put(&vec![0; MAX_VALUE_BYTES + 1], None));
        bad.insert("ap:a".to_owned(), None);
        let refused = store.apply(&bad).unwrap_err();
        assert!(refused.0.starts_with("invalid"), "{refused:?}");
        assert_eq!(store.get("ap:c").unwrap(), None, "nothing of it written");
        assert_eq!(store.get("ap:a").unwrap(), Some(b"1".to_vec()));
    }

    /// The store contract every backend keeps (`wit/store.wit`): values, counters, deletes, lists.
    pub(crate) fn check_semantics(store: &dyn Store) {
        // get / set / overwrite
        assert_eq!(store.get("a").unwrap(), None);
        store.set("a", b"one", None).unwrap();
        assert_eq!(store.get("a").unwrap().as_deref(), Some(&b"one"[..]));
        store.set("a", b"two", None).unwrap();
        assert_eq!(store.get("a").unwrap().as_deref(), Some(&b"two"[..]));
        store.set("empty", b"", None).unwrap();
        assert_eq!(store.get("empty").unwrap(), Some(Vec::new()));
        let binary: Vec<u8> = (0..=255).collect();
        store.set("bin", &binary, None).unwrap();
        assert_eq!(store.get("bin").unwrap(), Some(binary));

        // delete, also of an absent key
        store.delete("a").unwrap();
        assert_eq!(store.get("a").unwrap(), None);
        store.delete("a").unwrap();
        store.delete("never-there").unwrap();

        // counters: absent = 0, negative and zero deltas, zero reads
        assert_eq!(store.increment("c", 0, None).unwrap(), 0);
        assert_eq!(store.increment("c", 1, None).unwrap(), 1);
        assert_eq!(store.increment("c", 5, None).unwrap(), 6);
        assert_eq!(store.increment("c", -10, None).unwrap(), -4);
        assert_eq!(store.increment("c", 0, None).unwrap(), -4);

        // counters live in their own namespace
        assert_eq!(store.get("c").unwrap(), None, "a counter is not a value");
        store.set("both", b"v", None).unwrap();
        assert_eq!(store.increment("both", 3, None).unwrap(), 3);
        assert_eq!(store.get("both").unwrap().as_deref(), Some(&b"v"[..]));
        store.delete("both").unwrap();
        assert_eq!(store.get("both").unwrap(), None, "delete removes the value");
        assert_eq!(
            store.increment("both", 0, None).unwrap(),
            0,
            "and the counter"
        );
        store.delete("c").unwrap();
        assert_eq!(store.increment("c", 0, None).unwrap(), 0);

        // overflow is an error and changes nothing
        assert_eq!(store.increment("big", i64::MAX, None).unwrap(), i64::MAX);
        let err = store.increment("big", 1, None).unwrap_err();
        assert!(err.0.contains("overflow"), "{err}");
        assert_eq!(store.increment("big", 0, None).unwrap(), i64::MAX);
        assert_eq!(store.increment("small", i64::MIN, None).unwrap(), i64::MIN);
        assert!(store.increment("small", -1, None).is_err());
        assert_eq!(store.increment("small", 0, None).unwrap(), i64::MIN);

        // list_keys: value keys only, exact prefix (no wildcards, case-sensitive)
        for key in [
            "dev/u1/a",
            "dev/u1/b",
            "dev/u10/a",
            "dev/u2/a",
            "dev/U1/x",
            "dev%u1",
        ] {
            store.set(key, b"x", None).unwrap();
        }
        store.increment("dev/u1/counter", 1, None).unwrap();
        assert_eq!(
            sorted(store.list_keys("dev/u1/").unwrap()),
            ["dev/u1/a", "dev/u1/b"]
        );
        assert_eq!(
            sorted(store.list_keys("dev/u1").unwrap()),
            ["dev/u1/a", "dev/u1/b", "dev/u10/a"]
        );
        assert_eq!(store.list_keys("dev_u1").unwrap(), Vec::<String>::new());
        assert_eq!(store.list_keys("dev/u3/").unwrap(), Vec::<String>::new());
        assert_eq!(
            sorted(store.list_keys("").unwrap()),
            [
                "bin",
                "dev%u1",
                "dev/U1/x",
                "dev/u1/a",
                "dev/u1/b",
                "dev/u10/a",
                "dev/u2/a",
                "empty"
            ]
        );
        let edge = "~".repeat(MAX_KEY_BYTES);
        store.set(&edge, b"x", None).unwrap();
        assert_eq!(store.list_keys("~~").unwrap(), std::slice::from_ref(&edge));
        assert_eq!(store.list_keys(&edge).unwrap(), [edge]);
    }

    /// The WIT limits, run against every store.
    pub(crate) fn check_limits(store: &dyn Store) {
        let longest = "k".repeat(MAX_KEY_BYTES);
        store.set(&longest, b"ok", None).unwrap();
        assert!(store.get(&longest).unwrap().is_some());
        let too_long = "k".repeat(MAX_KEY_BYTES + 1);
        let biggest = vec![7u8; MAX_VALUE_BYTES];
        store.set("big", &biggest, None).unwrap();
        assert_eq!(store.get("big").unwrap(), Some(biggest));

        let bad_keys = [
            too_long.as_str(),
            "",
            "new\nline",
            "tab\t",
            "caf\u{e9}",
            "nul\0",
            "del\u{7f}",
        ];
        for key in bad_keys {
            for err in [
                store.get(key).unwrap_err(),
                store.set(key, b"v", None).unwrap_err(),
                store.delete(key).unwrap_err(),
                store.increment(key, 1, None).unwrap_err(),
            ] {
                assert!(err.0.starts_with("invalid key"), "{key:?}: {err}");
            }
        }
        for prefix in [too_long.as_str(), "new\nline", "caf\u{e9}"] {
            let err = store.list_keys(prefix).unwrap_err();
            assert!(err.0.starts_with("invalid prefix"), "{prefix:?}: {err}");
        }
        let err = store
            .set("v", &vec![1u8; MAX_VALUE_BYTES + 1], None)
            .unwrap_err();
        assert!(err.0.starts_with("invalid value"), "{err}");
        assert_eq!(
            store.get("v").unwrap(),
            None,
            "a refused set stores nothing"
        );
        // Printable ASCII includes the space and every symbol.
        let symbols: String = (0x20u8..=0x7E).map(char::from).collect();
        store.set(&symbols, b"s", None).unwrap();
        assert_eq!(store.list_keys(" !\"#").unwrap(), [symbols]);
    }

    fn sqlite(dir: &tempfile::TempDir) -> SqliteStore {
        SqliteStore::open(dir.path().join("store.sqlite")).unwrap()
    }

    /// Expiry, as `wit/store.wit` states it: kept until its time, forgotten by a sweep after it.
    pub(crate) fn check_expiry<S: Store + Sweep>(store: &S) {
        let key_count = |store: &S| {
            ["v", "c", "read", "kept", "grown", "reset"]
                .iter()
                .filter(|k| {
                    store.get(k).unwrap().is_some() || store.increment(k, 0, None).unwrap() != 0
                })
                .count()
        };
        store.set("v", b"x", Some(100)).unwrap();
        store.increment("c", 1, Some(100)).unwrap();
        store.set("kept", b"x", None).unwrap();
        // Extended: the later of the two, whichever order they come in.
        store.increment("grown", 1, Some(150)).unwrap();
        store.increment("grown", 1, Some(120)).unwrap();
        store.increment("grown", 0, Some(300)).unwrap();
        // A counter kept for good stays so; a value's expiry is replaced by the next set.
        store.increment("kept", 1, None).unwrap();
        store.increment("kept", 1, Some(50)).unwrap();
        store.set("reset", b"x", Some(50)).unwrap();
        store.set("reset", b"y", Some(400)).unwrap();
        // A read creates nothing, so there is nothing to keep.
        assert_eq!(store.increment("read", 0, None).unwrap(), 0);
        assert_eq!(store.increment("read", 0, Some(10)).unwrap(), 0);
        assert_eq!(key_count(store), 5);

        assert_eq!(
            store.sweep(99).unwrap(),
            0,
            "nothing expires before its time"
        );
        assert_eq!(
            store.sweep(100).unwrap(),
            2,
            "the value and the counter due at 100"
        );
        assert_eq!(store.get("v").unwrap(), None);
        assert_eq!(store.increment("c", 0, None).unwrap(), 0);
        assert_eq!(store.sweep(299).unwrap(), 0, "extended to 300");
        assert_eq!(store.increment("grown", 0, None).unwrap(), 2);
        assert_eq!(store.sweep(300).unwrap(), 1);
        assert_eq!(store.sweep(400).unwrap(), 1, "the second set's expiry");
        assert_eq!(store.sweep(i64::MAX).unwrap(), 0);
        assert_eq!(store.get("kept").unwrap().as_deref(), Some(&b"x"[..]));
        assert_eq!(store.increment("kept", 0, None).unwrap(), 2);
    }

    #[test]
    fn a_backlog_is_swept_slice_by_slice_and_all_of_it_goes() {
        let dir = tempfile::tempdir().unwrap();
        check_backlog_sweep(&sqlite(&dir));
    }

    /// 50 values and 50 counters expiring 300 s apart, swept in one call: every slice goes, and
    /// what is kept for good stays.
    pub(crate) fn check_backlog_sweep<S: Store + Sweep>(store: &S) {
        for i in 0..50_i64 {
            store.set(&format!("v{i}"), b"x", Some(i * 300)).unwrap();
            store
                .increment(&format!("c{i}"), 1, Some(i * 300 + 100))
                .unwrap();
        }
        store.set("kept", b"x", None).unwrap();
        assert_eq!(store.sweep(15_000).unwrap(), 100);
        assert_eq!(store.sweep(i64::MAX).unwrap(), 0);
        assert!(store.get("kept").unwrap().is_some());
    }

    #[test]
    fn memory_store_expiry() {
        check_expiry(&MemoryStore::new());
    }

    #[test]
    fn sqlite_store_expiry() {
        let dir = tempfile::tempdir().unwrap();
        check_expiry(&sqlite(&dir));
    }

    #[test]
    fn a_store_made_before_expiry_is_migrated_and_keeps_its_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL) STRICT;
                 CREATE TABLE counters (key TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT;
                 INSERT INTO kv VALUES ('old', x'01');
                 INSERT INTO counters VALUES ('n', 7);",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.get("old").unwrap(), Some(vec![1]));
        assert_eq!(store.increment("n", 0, None).unwrap(), 7);
        assert_eq!(
            store.sweep(i64::MAX).unwrap(),
            0,
            "old keys are kept for good"
        );
        check_expiry(&store);
        drop(store);
        // Opening it again migrates nothing twice.
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.get("old").unwrap(), Some(vec![1]));
    }

    #[test]
    fn memory_store_semantics() {
        check_semantics(&MemoryStore::new());
        check_apply(&MemoryStore::new());
    }

    #[test]
    fn memory_store_limits() {
        check_limits(&MemoryStore::new());
    }

    #[test]
    fn sqlite_store_semantics() {
        let dir = tempfile::tempdir().unwrap();
        check_semantics(&sqlite(&dir));
        check_apply(&sqlite(&dir));
    }

    #[test]
    fn sqlite_store_limits() {
        let dir = tempfile::tempdir().unwrap();
        check_limits(&sqlite(&dir));
    }

    #[test]
    fn sqlite_store_is_durable_and_shared_as_configured() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite(&dir);
        // The writer's connection: the one whose commits must be synced.
        let (mode, sync, busy) = store
            .writer
            .run(|conn| {
                let pragma = |name: &str| -> rusqlite::Result<String> {
                    conn.query_row(&format!("PRAGMA {name}"), [], |r| {
                        r.get::<_, rusqlite::types::Value>(0).map(|v| match v {
                            rusqlite::types::Value::Text(t) => t,
                            rusqlite::types::Value::Integer(i) => i.to_string(),
                            other => format!("{other:?}"),
                        })
                    })
                };
                Ok((
                    pragma("journal_mode").unwrap(),
                    pragma("synchronous").unwrap().parse::<i64>().unwrap(),
                    pragma("busy_timeout").unwrap().parse::<i64>().unwrap(),
                ))
            })
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(sync, 2, "synchronous=FULL");
        assert_eq!(busy, 5000);
    }

    #[test]
    fn sqlite_store_creates_parent_folders() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("a/b/store.sqlite")).unwrap();
        store.set("k", b"v", None).unwrap();
        assert!(dir.path().join("a/b/store.sqlite").is_file());
    }

    #[test]
    fn sqlite_store_refuses_a_file_that_is_not_a_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-a-db");
        std::fs::write(&path, vec![b'x'; 4096]).unwrap();
        let err = SqliteStore::open(&path).unwrap_err();
        assert!(err.to_string().contains("not-a-db"), "{err}");
    }

    #[test]
    fn sqlite_store_survives_drop_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = sqlite(&dir);
            store.set("kept", b"value", None).unwrap();
            store.set("gone", b"value", None).unwrap();
            store.delete("gone").unwrap();
            assert_eq!(store.increment("n", 41, None).unwrap(), 41);
        }
        let store = sqlite(&dir);
        assert_eq!(store.get("kept").unwrap().as_deref(), Some(&b"value"[..]));
        assert_eq!(store.get("gone").unwrap(), None);
        assert_eq!(store.increment("n", 1, None).unwrap(), 42);
        assert_eq!(store.list_keys("").unwrap(), ["kept"]);
    }

    /// Runs `per_thread` increments on each handle in its own thread, all starting at once, and
    /// checks that the values returned are exactly 1..=total: none lost, none handed out twice.
    pub(crate) fn increment_concurrently<S: Store + Send + Sync + 'static>(
        handles: Vec<Arc<S>>,
        per_thread: i64,
    ) {
        let total = i64::try_from(handles.len()).unwrap() * per_thread;
        let barrier = Arc::new(std::sync::Barrier::new(handles.len()));
        let threads: Vec<_> = handles
            .into_iter()
            .map(|store| {
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    (0..per_thread)
                        .map(|_| store.increment("hits", 1, None).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut seen: Vec<i64> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (1..=total).collect::<Vec<_>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_writes_handed_over_answer_as_the_synchronous_ones_do() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(sqlite(&dir));
        store
            .set_async("k", b"v", Some(100))
            .unwrap()
            .await
            .unwrap();
        assert_eq!(store.get("k").unwrap().as_deref(), Some(&b"v"[..]));
        store.delete_async("k").unwrap().await.unwrap();
        assert_eq!(store.get("k").unwrap(), None);
        // Refusals come back through the future, as the synchronous calls return them.
        let refused = store.set_async("bad\nkey", b"v", None).unwrap().await;
        assert!(refused.unwrap_err().0.starts_with("invalid key"));
        store.increment("big", i64::MAX, None).unwrap();
        let overflow = store.increment_async("big", 1, None).unwrap().await;
        assert_eq!(overflow.unwrap_err(), super::overflow());
        assert_eq!(store.increment("big", 0, None).unwrap(), i64::MAX);
        // 64 tasks at once: every value handed out once, in commits they share.
        let before = store.commit_stats();
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let store = Arc::clone(&store);
                tokio::spawn(async move { store.increment_async("n", 1, Some(500)).unwrap().await })
            })
            .collect();
        let mut seen = Vec::new();
        for task in tasks {
            seen.push(task.await.unwrap().unwrap());
        }
        seen.sort_unstable();
        assert_eq!(seen, (1..=64).collect::<Vec<_>>());
        let (commits, pieces) = store.commit_stats();
        assert_eq!(pieces - before.1, 64);
        assert!(commits - before.0 < 64, "64 writes at once share commits");
    }

    #[test]
    fn sqlite_increments_from_8_threads_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(sqlite(&dir));
        increment_concurrently(vec![Arc::clone(&store); 8], 200);
        assert_eq!(store.increment("hits", 0, None).unwrap(), 1600);
    }

    #[test]
    fn sqlite_increments_from_two_handles_on_one_file_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let first = Arc::new(sqlite(&dir));
        let second = Arc::new(sqlite(&dir));
        increment_concurrently(
            vec![
                Arc::clone(&first),
                Arc::clone(&second),
                Arc::clone(&first),
                Arc::clone(&second),
            ],
            250,
        );
        assert_eq!(first.increment("hits", 0, None).unwrap(), 1000);
        assert_eq!(second.increment("hits", 0, None).unwrap(), 1000);
        // read-your-writes across handles
        first.set("k", b"from first", None).unwrap();
        assert_eq!(
            second.get("k").unwrap().as_deref(),
            Some(&b"from first"[..])
        );
    }

    const CHILD_ENV: &str = "MFA_STEP_TEST_SQLITE_CHILD";
    const CHILD_INCREMENTS: usize = 300;

    /// Not a test on its own: `sqlite_increments_from_two_processes_lose_nothing` runs it in child
    /// processes. It increments the shared counter and writes the values it got, one per line.
    #[test]
    #[ignore = "helper run in a child process by sqlite_increments_from_two_processes_lose_nothing"]
    fn sqlite_child_process_increments() {
        // Run on its own (e.g. `--include-ignored`), it has nothing to do.
        let Ok(db) = std::env::var(CHILD_ENV) else {
            return;
        };
        let store = SqliteStore::open(&db).unwrap();
        let seen: Vec<String> = (0..CHILD_INCREMENTS)
            .map(|_| store.increment("hits", 1, None).unwrap().to_string())
            .collect();
        let out = format!("{db}.{}", std::process::id());
        std::fs::write(out, seen.join("\n")).unwrap();
    }

    #[test]
    fn sqlite_increments_from_two_processes_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("shared.sqlite");
        drop(SqliteStore::open(&db).unwrap());
        let exe = std::env::current_exe().unwrap();
        let name = "backends::store::tests::sqlite_child_process_increments";
        let children: Vec<_> = (0..2)
            .map(|_| {
                std::process::Command::new(&exe)
                    .args([name, "--exact", "--ignored", "--test-threads=1", "--quiet"])
                    .env(CHILD_ENV, &db)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "child failed: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                String::from_utf8_lossy(&out.stdout).contains("1 passed"),
                "the child ran no test: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        let mut seen: Vec<i64> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("shared.sqlite.") && !n.contains('-'))
            })
            .flat_map(|p| {
                std::fs::read_to_string(p)
                    .unwrap()
                    .lines()
                    .map(|l| l.parse::<i64>().unwrap())
                    .collect::<Vec<_>>()
            })
            .collect();
        seen.sort_unstable();
        let total = i64::try_from(2 * CHILD_INCREMENTS).unwrap();
        assert_eq!(seen, (1..=total).collect::<Vec<_>>());
        assert_eq!(
            SqliteStore::open(&db)
                .unwrap()
                .increment("hits", 0, None)
                .unwrap(),
            total
        );
    }
}
