//! Postgres backends: [`PostgresStore`] and [`PostgresAuditSink`], for several `serve` nodes that
//! share one database.
//!
//! Both keep the contracts of their SQLite counterparts ([`super::store`], [`super::audit`]), so the
//! component cannot tell them apart:
//! - Keys, prefixes and values are checked by the same rules ([`validate_key`], [`validate_value`]),
//!   with the same `invalid …` messages, before anything reaches the server.
//! - `increment` is one `INSERT … ON CONFLICT DO UPDATE … RETURNING` statement: Postgres locks the
//!   counter's row for it, so concurrent calls from any number of threads or nodes never lose an
//!   update. An overflow (SQLSTATE 22003) aborts the statement, changes nothing and is reported as
//!   the SQLite store reports it. `increment(key, 0, None)` reads and creates nothing.
//! - `delete` removes the value and the counter in one statement; a sweep forgets expired keys in
//!   slices of 600 s of expiry, oldest first, one transaction each.
//! - `list_keys` is a range scan of the primary key. The key columns use the `"C"` collation, so
//!   keys sort byte by byte and the range `[prefix, prefix + 0x7F)` holds exactly the keys that start
//!   with `prefix`, whatever collation the database was made with.
//! - An audit `append` is one `INSERT … SELECT … WHERE` that inserts only a record linking to its
//!   stream's head, and `(org, seq)` is the primary key: of two writers on any nodes linking to one
//!   head, exactly one inserts and the other hears [`AppendError::Conflict`]. No lock is held
//!   between calls.
//! - `Ok` comes after the server committed: as durable as its `fsync` and `synchronous_commit`
//!   (both on by default) make it; for a relaxed increment, see "Durability of counters".
//!
//! Units of work (`wit/store.wit`, "Unit of work"):
//! - A record is placed under its organization's advisory lock (`pg_advisory_xact_lock`, keyed by
//!   `stream_lock`), held to the end of the transaction that reads the stream's head, relinks
//!   the record there ([`Relinker::link`]) and inserts it: writers on any node take turns, so
//!   `place_linked` never conflicts. The primary key still guards against a writer that does not
//!   take the lock (`append`, an older node).
//! - When the sink keeps its records in the store's own database and schema
//!   ([`PostgresStore::database`]), `commit_unit` commits a unit's records and values in one
//!   transaction. Group commit: the store's writer thread, with its own connection, takes every
//!   unit waiting (at most `MAX_BATCH`, 256) and commits them in one transaction: the streams' locks
//!   in key order (one statement), their heads read after them, each unit's records relinked in
//!   turn, all records in one insert, every value (the last write of each key; sets then deletes,
//!   each in key order), `COMMIT`; only then does it answer. A unit whose records cannot be
//!   relinked fails alone, before anything is written. If the server refuses the batch, each unit
//!   is committed alone, so that only a unit it refuses fails; if the connection is lost during
//!   `COMMIT`, no one knows what was kept, and every unit of the batch fails without a retry (a
//!   retry could place a record twice). Writers lock streams in one order and rows in key order;
//!   a deadlock with another writer (a sweep deletes in its own order) is broken by the server, and
//!   the units are then committed one by one.
//! - `apply` writes a unit's values in one transaction of a pooled connection; `apply_async`,
//!   `set_async` and `delete_async` go through the writer as units of values.
//!
//! Handed-over calls: made inside a tokio runtime (as `serve` makes it), the store answers `get`,
//! `list-keys` and `increment` with the asynchronous client (`tokio-postgres`), awaited on the
//! executor: no blocking-pool thread, no thread switch per call. Its connections (at most
//! `ASYNC_CONNECTIONS`) run as tasks of that runtime and carry several callers' queries at once,
//! sent without waiting for each other (pipelined), so many calls share a system call and a wake
//! of the server. Transactions never run on these shared connections (another caller's statement
//! would land inside them): they run on the writer's connection or a pooled one. Outside a
//! runtime (the CLI, the sweeper, tests) the synchronous methods serve every call.
//!
//! Durability of counters: once the writer has committed a unit, handed-over increments run with
//! `synchronous_commit = off`: the server answers once the commit is in its WAL buffers, without
//! waiting for the flush, and every other session sees the new count at once, as before. Such an
//! increment is nonetheless durable before its call is answered:
//! - The component answers only after `store.commit`, and every unit of a call that changed a
//!   counter ([`Unit::counted`]) reaches the writer (the host hands every unit to `commit_unit`),
//!   after the call's increments returned.
//! - The writer's transactions commit with the session's default `synchronous_commit` (on, or
//!   stricter), and a synchronous commit flushes the WAL up to its own commit record, which lies
//!   after the commit record of every increment that returned before the transaction began, on
//!   any connection: one WAL per server. With synchronous replication the wait covers the standby
//!   the same way.
//! - A synchronous commit that wrote no WAL flushes nothing (the server skips the wait). So a batch
//!   that writes no record and sets no value (a delete of an absent key writes nothing either) but
//!   holds a counted unit writes the writer's flush row (`FLUSH`): a counter of its own, under a
//!   key no caller can name, that a sweep forgets a day after its last write.
//!
//!   What a crash can lose is an increment whose call had not been answered, exactly what it could
//!   lose before (the call fails; counters only ever err on the refusing side). A call that only
//!   reads may see a count that a crash then loses; it answers from a count other calls will also
//!   have seen. Until the first unit, and for increments made through the synchronous methods, each
//!   increment waits for its own flush, as before.
//! - A store whose units go to a sink in another database never relaxes its increments; should a
//!   relaxed store meet such a unit (one host, two sinks), it fails that unit closed.
//!
//! Schema: `connect` creates the tables (`mfa_step_kv`, `mfa_step_counters`, `mfa_step_audit_log`;
//! the console viewer's `mfa_step_audit_checkpoint`, version 2; its `(org, at)` index on the log,
//! version 3) in the first schema of the connection's `search_path`, in one transaction under an
//! advisory lock so that nodes starting at once do not race, and records its version in
//! `mfa_step_schema`. Store and audit sink share that one schema, so they may use one database or
//! two. A database whose schema a newer host made is refused rather than misused.
//!
//! Connections: each handle keeps up to 16 idle connections and opens another when none is idle;
//! a store adds its writer's connection and, in a runtime, up to `ASYNC_CONNECTIONS` more.
//! A connection that broke (the server restarted, a proxy cut it) is dropped, never reused; one
//! idle for a while is checked before use. There is no TLS (no TLS stack is linked for Postgres):
//! reach the server over a private network or a Unix socket; `sslmode=require` fails at connect.
//!
//! Secrets: the URL's password never appears in a `Debug`, an error or a log. Server errors are
//! shown by SQLSTATE and message, never with their `DETAIL`, which can quote a key.
//!
//! The synchronous methods block the calling thread, and each pooled connection drives its own
//! small tokio runtime: call them from a thread that may block (tokio's `spawn_blocking`, as
//! `serve` does with `offload`), never from an async task, where the client panics. `connect`,
//! dropping and the handed-over calls are safe anywhere.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use mfa_step_core::kernel::ports::{
    AppendError, AuditEntry, AuditSink, GENESIS, Head, PortError, PortResult, Store,
};
use postgres::config::Host;
use postgres::error::{Severity, SqlState};
use postgres::{Client, Config, NoTls, Statement};

use super::audit::{HostAuditSink, Placed, validate_line};
use super::store::{
    HostStore, PortFuture, Sweep, overflow, validate_key, validate_prefix, validate_value,
};
use super::unit::{Put, Relinker, Unit, Values, placed_head};
use super::{BackendError, CallSlot, CallSlots, lock};

/// How many idle connections a handle keeps; more are opened when needed and closed after use.
const IDLE_CONNECTIONS: usize = 16;
/// How long a connection may sit idle before it is checked with a round trip before use.
const CHECK_IDLE_AFTER: Duration = Duration::from_secs(30);
/// How long that check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long opening a connection may take, unless the URL says otherwise (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How wide a slice of expiries one sweep transaction forgets, in seconds (as SQLite's).
const SWEEP_SLICE_SECONDS: i64 = 600;
/// The advisory lock that serializes migrations: "mfa_step" in ASCII.
const MIGRATION_LOCK: i64 = 0x6d66_615f_7374_6570;

/// The schema, one step per version: `mfa_step_schema` holds how many steps ran. A step never
/// changes once released; a new version appends one. `IF NOT EXISTS` lets a step finish a database
/// whose version table was lost.
const MIGRATIONS: [&str; 3] = [
    r#"
    CREATE TABLE IF NOT EXISTS mfa_step_kv (
        key text COLLATE "C" PRIMARY KEY,
        value bytea NOT NULL,
        expires_at bigint
    );
    CREATE TABLE IF NOT EXISTS mfa_step_counters (
        key text COLLATE "C" PRIMARY KEY,
        value bigint NOT NULL,
        expires_at bigint
    );
    CREATE INDEX IF NOT EXISTS mfa_step_kv_expiry ON mfa_step_kv (expires_at)
        WHERE expires_at IS NOT NULL;
    CREATE INDEX IF NOT EXISTS mfa_step_counters_expiry ON mfa_step_counters (expires_at)
        WHERE expires_at IS NOT NULL;
    CREATE TABLE IF NOT EXISTS mfa_step_audit_log (
        org text NOT NULL,
        seq bigint NOT NULL CHECK (seq > 0),
        at bigint NOT NULL,
        action text NOT NULL,
        prev text NOT NULL,
        hash text NOT NULL,
        line text NOT NULL,
        PRIMARY KEY (org, seq)
    );
"#,
    r#"
    CREATE TABLE IF NOT EXISTS mfa_step_audit_checkpoint (
        org text PRIMARY KEY,
        seq bigint NOT NULL,
        hash text NOT NULL,
        at bigint NOT NULL
    );
"#,
    // The console viewer's time-range read. Built once, at the upgrade, holding back audit
    // appends for as long as it takes (seconds for millions of records).
    r#"
    CREATE INDEX IF NOT EXISTS mfa_step_audit_log_at ON mfa_step_audit_log (org, at);
"#,
];

// ---------------------------------------------------------------------------------------------
// Connections

/// Connections to one database, kept for reuse.
struct Pool {
    config: Config,
    /// The same settings, for the asynchronous client ([`AsyncPool`]).
    async_config: tokio_postgres::Config,
    /// The database as `postgres://user@host:port/name`, without the password.
    server: String,
    /// [`Pool::server`] and the schema the tables are in: see [`PostgresStore::database`].
    database: String,
    what: &'static str,
    idle: Mutex<Vec<Conn>>,
    /// The calls running now: at most [`CallSlots::MAX`], and so as many connections.
    slots: CallSlots,
}

/// One connection and the statements prepared on it.
struct Conn {
    client: Client,
    statements: HashMap<&'static str, Statement>,
    idle_since: Instant,
}

impl Conn {
    /// `sql` prepared on this connection, once.
    fn statement(&mut self, sql: &'static str) -> Result<Statement, postgres::Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql)?;
        self.statements.insert(sql, statement.clone());
        Ok(statement)
    }
}

impl Pool {
    /// Parses `url`, opens a first connection and brings the database to the current schema.
    fn connect(url: &str, what: &'static str) -> super::Result<Self> {
        let (async_config, server) = parse_url(url)?;
        let mut pool = Self {
            config: Config::from(async_config.clone()),
            async_config,
            database: String::new(),
            server,
            what,
            idle: Mutex::new(Vec::new()),
            slots: CallSlots::new(),
        };
        let (first, schema) = off_runtime(|| {
            let mut conn = pool.open().map_err(|e| describe(&e))?;
            migrate(&mut conn.client)?;
            // Where `migrate` made the tables: unqualified names resolve there.
            let schema: String = conn
                .client
                .query_one("SELECT current_schema()::text", &[])
                .and_then(|row| row.try_get(0))
                .map_err(|e| describe(&e))?;
            Ok::<_, String>((conn, schema))
        })
        .unwrap_or_else(|| Err("the thread connecting to it panicked".to_owned()))
        .map_err(|reason| {
            BackendError::Config(format!(
                "cannot use the Postgres database {}: {reason}",
                pool.server
            ))
        })?;
        pool.database = format!("{}?schema={schema}", pool.server);
        lock(&pool.idle, what)
            .map_err(|e| BackendError::Config(e.0))?
            .push(first);
        Ok(pool)
    }

    fn open(&self) -> Result<Conn, postgres::Error> {
        Ok(Conn {
            client: self.config.connect(NoTls)?,
            statements: HashMap::new(),
            idle_since: Instant::now(),
        })
    }

    /// Waits (at most [`CallSlots::WAIT`]) for a turn among [`CallSlots::MAX`] calls.
    fn slot(&self, op: &str) -> PortResult<CallSlot<'_>> {
        self.slots.take(self.what, || {
            format!(
                "postgres {op} failed: all {} connections to {} stayed busy for {} s",
                CallSlots::MAX,
                self.server,
                CallSlots::WAIT.as_secs()
            )
        })
    }
    /// An idle connection that still works, or a new one.
    fn checkout(&self, op: &str) -> PortResult<Conn> {
        loop {
            let Some(mut conn) = lock(&self.idle, self.what)?.pop() else {
                break;
            };
            if conn.client.is_closed() {
                continue;
            }
            if conn.idle_since.elapsed() < CHECK_IDLE_AFTER
                || conn.client.is_valid(CHECK_TIMEOUT).is_ok()
            {
                return Ok(conn);
            }
            // The server or the network dropped it while it sat idle; the others that are as old
            // are checked when their turn comes, and a new connection serves this call.
            break;
        }
        self.open().map_err(|e| {
            PortError(format!(
                "postgres {op} failed: cannot connect to {}: {}",
                self.server,
                describe(&e)
            ))
        })
    }

    /// Runs `work` on a connection and keeps the connection for the next call, unless it broke.
    /// The outer error is the pool's (no connection); the inner one is what `work` met.
    fn with<T>(
        &self,
        op: &str,
        work: impl FnOnce(&mut Conn) -> Result<T, postgres::Error>,
    ) -> PortResult<Result<T, postgres::Error>> {
        let _slot = self.slot(op)?;
        let mut conn = self.checkout(op)?;
        let outcome = work(&mut conn);
        let reusable =
            !conn.client.is_closed() && outcome.as_ref().err().is_none_or(statement_refused);
        if reusable {
            conn.idle_since = Instant::now();
            let spare = {
                let mut idle = lock(&self.idle, self.what)?;
                if idle.len() < IDLE_CONNECTIONS {
                    idle.push(conn);
                    None
                } else {
                    Some(conn)
                }
            };
            // Closed outside the lock: closing waits for the server.
            drop(spare);
        } else {
            // What broke this one (a restart, a failover) most likely broke the idle ones too:
            // forget them all, so that the next calls open new connections instead of each
            // failing on an old one.
            let stale = std::mem::take(&mut *lock(&self.idle, self.what)?);
            drop((conn, stale));
        }
        Ok(outcome)
    }

    /// [`Pool::with`] for work whose every failure is reported as a port error.
    fn run<T>(
        &self,
        op: &str,
        work: impl FnOnce(&mut Conn) -> Result<T, postgres::Error>,
    ) -> PortResult<T> {
        self.with(op, work)?.map_err(|e| port_error(op, &e))
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let idle = std::mem::take(
            self.idle
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        if idle.is_empty() || tokio::runtime::Handle::try_current().is_err() {
            // Closed right here, one by one.
            return;
        }
        // Closing a connection blocks on its own runtime, which tokio forbids inside an async
        // task: close them on a thread of their own.
        let _ = std::thread::Builder::new()
            .name("postgres-close".to_owned())
            .spawn(move || drop(idle));
    }
}

/// Runs `f` where a connection may block: on a thread of its own when the caller is inside a tokio
/// runtime (the client would panic there), else right here. `None` when `f` panicked.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> Option<T> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Some(f());
    }
    std::thread::scope(|scope| scope.spawn(f).join().ok())
}

/// Whether the server refused a statement but kept the session: the connection is still good.
/// Anything else (a socket error, a protocol error, a `FATAL` from the server) drops it.
/// A statement the server no longer knows (`26000`: a pooler between us, a `DISCARD ALL`) drops it
/// too, with its cache of prepared statements, or every later call on it would fail the same way.
fn statement_refused(e: &postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| {
        !matches!(
            db.parsed_severity(),
            Some(Severity::Fatal | Severity::Panic)
        ) && *db.code() != SqlState::INVALID_SQL_STATEMENT_NAME
    })
}

/// Every record of the `mfa_step_audit_log` table at `url`, as `(org, seq, line)`, by organization
/// then position: each stream in the order its chain must hold. Reads only (no migration), for
/// `mfa-step audit`.
///
/// # Errors
/// The URL is malformed, the server cannot be reached, or the table cannot be read; the messages
/// never hold the password.
pub fn audit_lines(url: &str) -> super::Result<Vec<(String, i64, String)>> {
    let (config, server) = parse_url(url)?;
    let config = Config::from(config);
    let read = || -> Result<Vec<(String, i64, String)>, postgres::Error> {
        let mut client = config.connect(NoTls)?;
        let rows = client.query(
            "SELECT org, seq, line FROM mfa_step_audit_log ORDER BY org, seq",
            &[],
        )?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
            .collect()
    };
    off_runtime(read)
        .ok_or_else(|| BackendError::Config(format!("reading {server} panicked")))?
        .map_err(|e| {
            BackendError::Config(format!(
                "cannot read the audit trail at {server}: {}",
                describe(&e)
            ))
        })
}

/// Checks the URL's form, applies the defaults, and describes it without its password.
fn parse_url(url: &str) -> super::Result<(tokio_postgres::Config, String)> {
    // Only the URL form: its parser's errors name options, never values; the `key=value` form's
    // can quote a character of the password.
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(BackendError::Config(
            "the Postgres URL must start with postgres:// or postgresql:// \
             (e.g. postgres://mfa:PASSWORD@db.internal:5432/mfa)"
                .to_owned(),
        ));
    }
    let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
        BackendError::Config(format!(
            "the Postgres URL cannot be parsed: {}",
            describe(&e)
        ))
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("mfa-step");
    }
    let server = describe_server(&config);
    Ok((config, server))
}

/// `postgres://user@host:port/name`: what an operator needs to find the database, and no password.
fn describe_server(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                Host::Tcp(name) if name.contains(':') => format!("[{name}]:{port}"),
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(path) => format!("{}:{port}", path.display()),
            }
        })
        .collect();
    let user = config
        .get_user()
        .map(|u| format!("{u}@"))
        .unwrap_or_default();
    format!(
        "postgres://{user}{}/{}",
        hosts.join(","),
        config.get_dbname().unwrap_or("")
    )
}

/// A Postgres failure in words. Not `Display` of a server error: that adds its `DETAIL`, which
/// can quote a key (`Key (key)=(…) already exists`). Client errors name the failure only.
fn describe(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} {}: {}", db.severity(), db.code().code(), db.message());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn port_error(op: &str, e: &postgres::Error) -> PortError {
    PortError(format!("postgres {op} failed: {}", describe(e)))
}

/// Brings the database to the current schema, in one transaction under [`MIGRATION_LOCK`].
fn migrate(client: &mut Client) -> Result<(), String> {
    let db = |e: postgres::Error| describe(&e);
    let mut tx = client.transaction().map_err(db)?;
    // Held until the commit: a second node starting now waits here, then finds the work done.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(db)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS mfa_step_schema (version integer NOT NULL)")
        .map_err(db)?;
    let found: Option<i32> = tx
        .query_one("SELECT max(version) FROM mfa_step_schema", &[])
        .and_then(|row| row.try_get(0))
        .map_err(db)?;
    let found = found.unwrap_or(0);
    let done = usize::try_from(found)
        .map_err(|_| format!("its schema version {found} is not one mfa-step writes"))?;
    if done > MIGRATIONS.len() {
        return Err(format!(
            "its schema is version {found}, made by a newer mfa-step; this one knows versions up \
             to {}: upgrade this host",
            MIGRATIONS.len()
        ));
    }
    for step in MIGRATIONS.iter().skip(done) {
        tx.batch_execute(step).map_err(db)?;
    }
    if done < MIGRATIONS.len() {
        let version = i32::try_from(MIGRATIONS.len()).unwrap_or(i32::MAX);
        tx.execute("DELETE FROM mfa_step_schema", &[]).map_err(db)?;
        tx.execute(
            "INSERT INTO mfa_step_schema (version) VALUES ($1)",
            &[&version],
        )
        .map_err(db)?;
    }
    tx.commit().map_err(db)
}

// ---------------------------------------------------------------------------------------------
// PostgresStore

const GET: &str = "SELECT value FROM mfa_step_kv WHERE key = $1";
const SET: &str = "INSERT INTO mfa_step_kv (key, value, expires_at) VALUES ($1, $2, $3)
    ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at";
/// One statement, so no reader ever sees the value gone but the counter still there.
const DELETE: &str = "WITH value_gone AS (DELETE FROM mfa_step_kv WHERE key = $1)
    DELETE FROM mfa_step_counters WHERE key = $1";
const READ_COUNTER: &str = "SELECT value FROM mfa_step_counters WHERE key = $1";
/// A read with an expiry extends that of a counter that has one; it creates nothing.
const EXTEND_COUNTER: &str = "WITH touched AS (
        UPDATE mfa_step_counters SET expires_at = GREATEST(expires_at, $2)
        WHERE key = $1 AND expires_at IS NOT NULL
        RETURNING value)
    SELECT COALESCE((SELECT value FROM touched),
        (SELECT value FROM mfa_step_counters WHERE key = $1), 0)";
/// A new counter takes the expiry given; one that has an expiry keeps the later of the two; one
/// kept for good stays so; `NULL` leaves it.
const INCREMENT: &str = "INSERT INTO mfa_step_counters AS c (key, value, expires_at)
    VALUES ($1, $2, $3)
    ON CONFLICT (key) DO UPDATE SET value = c.value + excluded.value,
        expires_at = CASE
            WHEN c.expires_at IS NULL OR excluded.expires_at IS NULL THEN c.expires_at
            ELSE GREATEST(c.expires_at, excluded.expires_at) END
    RETURNING c.value";
/// Keys are printable ASCII (at most 0x7E) and sort byte by byte (`"C"`), so every key starting
/// with the prefix is in `[prefix, prefix + 0x7F)`: a range scan, with no `LIKE` escaping.
const LIST_KEYS: &str = r#"SELECT key FROM mfa_step_kv
    WHERE key >= $1::text COLLATE "C" AND key < ($1::text || chr(127)) COLLATE "C"
    ORDER BY key"#;
const OLDEST_EXPIRED: &str = "SELECT LEAST(
    (SELECT min(expires_at) FROM mfa_step_kv WHERE expires_at <= $1),
    (SELECT min(expires_at) FROM mfa_step_counters WHERE expires_at <= $1))";
const SWEEP_VALUES: &str = "DELETE FROM mfa_step_kv WHERE expires_at <= $1";
const SWEEP_COUNTERS: &str = "DELETE FROM mfa_step_counters WHERE expires_at <= $1";

/// A store in a Postgres database, shared by every node that connects to it.
pub struct PostgresStore {
    /// The synchronous calls ([`Store`], [`Sweep`], [`HostStore::apply`]).
    pool: Pool,
    /// The calls handed over (`*_async`) that read or increment, when the store was made inside a
    /// tokio runtime; `None` elsewhere, and the host calls the synchronous methods.
    reads: Option<Arc<AsyncPool>>,
    /// Commits units of work (and handed-over `set`, `delete` and `apply`), several at a time.
    writer: UnitWriter,
    /// Whether increments handed over may commit without waiting for the WAL flush
    /// (`synchronous_commit = off`): set once a unit of work has been committed by the writer,
    /// which from then on makes them durable (module docs, "Durability of counters").
    relaxed: Arc<AtomicBool>,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/name`, with any
    /// option rust-postgres reads, e.g. `?connect_timeout=5`) and brings it to the current schema.
    /// Made inside a tokio runtime (as `serve` does), its handed-over reads and increments run
    /// on that runtime with the asynchronous client.
    ///
    /// # Errors
    /// The URL is malformed, the server cannot be reached or refuses the login, the schema cannot
    /// be created, or a newer host made it, or the writer thread cannot be started. The message
    /// names the host, never the password.
    pub fn connect(url: &str) -> super::Result<Self> {
        let pool = Pool::connect(url, "the Postgres store")?;
        let relaxed = Arc::new(AtomicBool::new(false));
        let reads = tokio::runtime::Handle::try_current()
            .ok()
            .map(|runtime| Arc::new(AsyncPool::new(&pool, runtime, Arc::clone(&relaxed))));
        let writer = UnitWriter::spawn(&pool, Arc::clone(&relaxed)).map_err(|e| {
            BackendError::Config(format!(
                "cannot start the writer thread for {}: {e}",
                pool.server
            ))
        })?;
        Ok(Self {
            pool,
            reads,
            writer,
            relaxed,
        })
    }

    /// The database, as `postgres://user@host:port/name` (no password).
    #[must_use]
    pub fn server(&self) -> &str {
        &self.pool.server
    }

    /// The database and schema the tables are in, as `postgres://user@host:port/name?schema=s`
    /// (no password): equal to [`PostgresAuditSink::database`] when both name the same server,
    /// database, user and schema, and then a unit of work commits its records and values in one
    /// transaction ([`HostStore::commit_unit`]).
    #[must_use]
    pub fn database(&self) -> &str {
        &self.pool.database
    }

    /// How many transactions the writer has committed, and how many units they held.
    #[must_use]
    pub fn commit_stats(&self) -> (u64, u64) {
        self.writer.stats()
    }
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("server", &self.pool.server)
            .field("asynchronous", &self.reads.is_some())
            .finish_non_exhaustive()
    }
}

/// A refusal, as a future.
fn refused<T: Send + 'static>(e: PortError) -> PortFuture<T> {
    Box::pin(std::future::ready(Err(e)))
}

/// The key and value limits of `wit/store.wit`, for every value of a unit.
fn validate_values(values: &Values) -> PortResult<()> {
    for (key, put) in values {
        validate_key(key)?;
        if let Some(put) = put {
            validate_value(&put.value)?;
        }
    }
    Ok(())
}

impl HostStore for PostgresStore {
    fn get_async(&self, key: &str) -> Option<PortFuture<Option<Vec<u8>>>> {
        let pool = self.reads.clone()?;
        if let Err(e) = validate_key(key) {
            return Some(refused(e));
        }
        let key = key.to_owned();
        Some(Box::pin(async move {
            pool.run("get", |conn| async move {
                let statement = conn.statement(GET).await?;
                conn.client
                    .query_opt(&statement, &[&key])
                    .await?
                    .map(|row| row.try_get(0))
                    .transpose()
            })
            .await?
            .map_err(|e| port_error("get", &e))
        }))
    }

    fn list_keys_async(&self, prefix: &str) -> Option<PortFuture<Vec<String>>> {
        let pool = self.reads.clone()?;
        if let Err(e) = validate_prefix(prefix) {
            return Some(refused(e));
        }
        let prefix = prefix.to_owned();
        Some(Box::pin(async move {
            pool.run("list_keys", |conn| async move {
                let statement = conn.statement(LIST_KEYS).await?;
                conn.client
                    .query(&statement, &[&prefix])
                    .await?
                    .iter()
                    .map(|row| row.try_get(0))
                    .collect()
            })
            .await?
            .map_err(|e| port_error("list_keys", &e))
        }))
    }

    fn increment_async(
        &self,
        key: &str,
        delta: i64,
        expires_at: Option<i64>,
    ) -> Option<PortFuture<i64>> {
        let pool = self.reads.clone()?;
        if let Err(e) = validate_key(key) {
            return Some(refused(e));
        }
        let key = key.to_owned();
        Some(Box::pin(async move {
            let relaxed = Arc::clone(&pool.relaxed);
            let outcome = pool
                .run("increment", |conn| async move {
                    if let (0, None) = (delta, expires_at) {
                        let statement = conn.statement(READ_COUNTER).await?;
                        return conn
                            .client
                            .query_opt(&statement, &[&key])
                            .await?
                            .map_or(Ok(0), |row| row.try_get(0));
                    }
                    conn.relax(&relaxed).await?;
                    if let (0, Some(at)) = (delta, expires_at) {
                        let statement = conn.statement(EXTEND_COUNTER).await?;
                        return conn
                            .client
                            .query_one(&statement, &[&key, &at])
                            .await?
                            .try_get(0);
                    }
                    let statement = conn.statement(INCREMENT).await?;
                    conn.client
                        .query_one(&statement, &[&key, &delta, &expires_at])
                        .await?
                        .try_get(0)
                })
                .await?;
            outcome.map_err(|e| increment_error(&e))
        }))
    }

    /// Through the writer, as one unit of one value: committed with others, durably.
    fn set_async(
        &self,
        key: &str,
        value: &[u8],
        expires_at: Option<i64>,
    ) -> Option<PortFuture<()>> {
        let put = Put {
            value: value.to_vec(),
            expires_at,
        };
        Some(self.apply_owned(Values::from([(key.to_owned(), Some(put))])))
    }

    /// Through the writer, as [`PostgresStore::set_async`].
    fn delete_async(&self, key: &str) -> Option<PortFuture<()>> {
        Some(self.apply_owned(Values::from([(key.to_owned(), None)])))
    }

    /// One transaction on a connection of the pool; every value is checked first.
    fn apply(&self, values: &Values) -> PortResult<()> {
        validate_values(values)?;
        if values.is_empty() {
            return Ok(());
        }
        let mut merged = Merged::default();
        merged.add(values);
        self.pool.run("commit", |conn| {
            let statements = ValueStatements::prepare(conn)?;
            let mut tx = conn.client.transaction()?;
            statements.write(&mut tx, &merged)?;
            tx.commit()
        })
    }

    /// Through the writer, as a unit with values only.
    fn apply_async(&self, values: &Values) -> Option<PortFuture<()>> {
        Some(self.apply_owned(values.clone()))
    }

    fn commit_unit(
        &self,
        unit: &Unit,
        sink_database: Option<&str>,
        relinker: &Relinker,
    ) -> Option<PortFuture<Vec<(String, Head)>>> {
        let relaxed = self.relaxed.load(Ordering::Acquire);
        if sink_database == Some(self.pool.database.as_str()) {
            if unit.is_empty() && !(unit.counted && relaxed) {
                return None;
            }
            if self.reads.is_some() {
                // Every unit from now on reaches the writer, whose synchronous commit flushes
                // the WAL over the increments its call made before: they may stop waiting for
                // the flush themselves.
                self.relaxed.store(true, Ordering::Release);
            }
            return Some(self.writer.submit(
                unit.values.clone(),
                unit.records.clone(),
                unit.counted,
                relinker.clone(),
            ));
        }
        // The records go to another database, through the sink. Increments were relaxed only
        // because units reached the writer; a store shared with a second sink makes them durable
        // here for a unit without records, and fails closed for one with records, which it cannot
        // place (one host has one sink: this does not happen in `serve`).
        if !(relaxed && unit.counted) {
            return None;
        }
        if !unit.records.is_empty() {
            return Some(refused(PortError(
                "the Postgres store cannot make this call's counters durable: its audit records \
                 go to another database than the units committed before; use one audit sink"
                    .to_owned(),
            )));
        }
        Some(
            self.writer
                .submit(unit.values.clone(), Vec::new(), true, relinker.clone()),
        )
    }
}

impl PostgresStore {
    /// Hands `values` to the writer, checked first.
    fn apply_owned(&self, values: Values) -> PortFuture<()> {
        let done = self
            .writer
            .submit(values, Vec::new(), false, Relinker::new(None));
        Box::pin(async move { done.await.map(drop) })
    }
}

/// An increment's failure: an overflow as every store words it, anything else as it came.
fn increment_error(e: &postgres::Error) -> PortError {
    if e.code() == Some(&SqlState::NUMERIC_VALUE_OUT_OF_RANGE) {
        overflow()
    } else {
        port_error("increment", e)
    }
}

impl Store for PostgresStore {
    fn get(&self, key: &str) -> PortResult<Option<Vec<u8>>> {
        validate_key(key)?;
        self.pool.run("get", |conn| {
            let statement = conn.statement(GET)?;
            conn.client
                .query_opt(&statement, &[&key])?
                .map(|row| row.try_get(0))
                .transpose()
        })
    }

    fn set(&self, key: &str, value: &[u8], expires_at: Option<i64>) -> PortResult<()> {
        validate_key(key)?;
        validate_value(value)?;
        self.pool.run("set", |conn| {
            let statement = conn.statement(SET)?;
            conn.client
                .execute(&statement, &[&key, &value, &expires_at])
                .map(drop)
        })
    }

    fn delete(&self, key: &str) -> PortResult<()> {
        validate_key(key)?;
        self.pool.run("delete", |conn| {
            let statement = conn.statement(DELETE)?;
            conn.client.execute(&statement, &[&key]).map(drop)
        })
    }

    fn increment(&self, key: &str, delta: i64, expires_at: Option<i64>) -> PortResult<i64> {
        validate_key(key)?;
        let outcome = self
            .pool
            .with("increment", |conn| match (delta, expires_at) {
                (0, None) => {
                    let statement = conn.statement(READ_COUNTER)?;
                    conn.client
                        .query_opt(&statement, &[&key])?
                        .map_or(Ok(0), |row| row.try_get(0))
                }
                (0, Some(at)) => {
                    let statement = conn.statement(EXTEND_COUNTER)?;
                    conn.client.query_one(&statement, &[&key, &at])?.try_get(0)
                }
                _ => {
                    let statement = conn.statement(INCREMENT)?;
                    conn.client
                        .query_one(&statement, &[&key, &delta, &expires_at])?
                        .try_get(0)
                }
            })?;
        outcome.map_err(|e| increment_error(&e))
    }

    fn list_keys(&self, prefix: &str) -> PortResult<Vec<String>> {
        validate_prefix(prefix)?;
        self.pool.run("list_keys", |conn| {
            let statement = conn.statement(LIST_KEYS)?;
            conn.client
                .query(&statement, &[&prefix])?
                .iter()
                .map(|row| row.try_get(0))
                .collect()
        })
    }
}

impl Sweep for PostgresStore {
    /// Forgets expired keys in slices of [`SWEEP_SLICE_SECONDS`] of expiry, oldest first, one
    /// transaction each: a backlog never holds many rows locked for long, and since a guarding
    /// counter expires after the value it guards, no reader ever sees the guard gone and the value
    /// kept. Nodes may sweep at once: a row one of them forgot is simply not there for the other.
    fn sweep(&self, now: i64) -> PortResult<u64> {
        let mut forgotten = 0_u64;
        loop {
            let slice = self.pool.run("sweep", |conn| {
                let oldest = conn.statement(OLDEST_EXPIRED)?;
                let values = conn.statement(SWEEP_VALUES)?;
                let counters = conn.statement(SWEEP_COUNTERS)?;
                let mut tx = conn.client.transaction()?;
                let oldest: Option<i64> = tx.query_one(&oldest, &[&now])?.try_get(0)?;
                let Some(oldest) = oldest else {
                    return Ok(None);
                };
                let cutoff = oldest.saturating_add(SWEEP_SLICE_SECONDS).min(now);
                let gone = tx.execute(&values, &[&cutoff])? + tx.execute(&counters, &[&cutoff])?;
                tx.commit()?;
                Ok(Some(gone))
            })?;
            match slice {
                Some(n) => forgotten = forgotten.saturating_add(n),
                None => return Ok(forgotten),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Units of work: the writer

/// Takes the advisory locks of a batch's streams, in the order of the (sorted) array.
const LOCK_STREAMS: &str = "SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k";
/// Takes the advisory lock of one stream.
const LOCK_STREAM: &str = "SELECT pg_advisory_xact_lock($1)";
/// The head of each stream named, by the primary key (one index probe each), or `NULL`s.
const HEADS: &str = "SELECT o.org, h.seq, h.hash FROM unnest($1::text[]) AS o(org)
    LEFT JOIN LATERAL (SELECT l.seq, l.hash FROM mfa_step_audit_log l
        WHERE l.org = o.org ORDER BY l.seq DESC LIMIT 1) AS h ON true";
/// Every record of a batch, in one statement. The `(org, seq)` key still refuses a place another
/// writer took (one that does not take the stream's lock: [`AuditSink::append`]).
const INSERT_RECORDS: &str =
    "INSERT INTO mfa_step_audit_log (org, seq, at, action, prev, hash, line)
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[],
        $6::text[], $7::text[])";
/// Every value set, in key order (the order every writer takes row locks in).
const PUT_VALUES: &str = "INSERT INTO mfa_step_kv (key, value, expires_at)
    SELECT * FROM unnest($1::text[], $2::bytea[], $3::bigint[])
    ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at";
/// Values deleted ($1), and the counters of every key deleted ($2), in one statement.
const DELETE_VALUES: &str =
    "WITH values_gone AS (DELETE FROM mfa_step_kv WHERE key = ANY($1::text[]))
    DELETE FROM mfa_step_counters WHERE key = ANY($2::text[])";
/// A write to a row of the writer's own, for a transaction that must flush the WAL and has
/// nothing else to write (module docs, "Durability of counters"). Its key holds a control
/// character, so no caller can name it (`validate_key`); its expiry lets a sweep forget it.
const FLUSH: &str = "INSERT INTO mfa_step_counters (key, value, expires_at) VALUES ($1, 0, $2)
    ON CONFLICT (key) DO UPDATE SET value = 0, expires_at = excluded.expires_at";

/// The most units one transaction commits. Under load a batch holds about the requests in flight.
const MAX_BATCH: usize = 256;
/// How many units may wait for the writer; past it a unit fails at once (as SQLite's writer).
const WRITER_QUEUE: usize = 4 * MAX_BATCH;
/// How long the flush row is kept after its last write, in seconds.
const FLUSH_ROW_SECONDS: i64 = 86_400;

/// The advisory lock key of an organization's stream: FNV-1a (64 bits) of a label and the id,
/// the same on every node and in every version. Two organizations sharing a key only take turns.
fn stream_lock(org: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in b"mfa-step audit stream\0".iter().chain(org.as_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// The head each stream a unit wrote to was left at, as [`HostStore::commit_unit`] answers.
type Heads = Vec<(String, Head)>;
/// A unit's answer.
type Outcome = PortResult<Heads>;

/// One unit, as the writer takes it.
struct Job {
    values: Values,
    records: Vec<AuditEntry>,
    counted: bool,
    relinker: Relinker,
    reply: tokio::sync::oneshot::Sender<Outcome>,
}

impl Job {
    fn answer(self, outcome: Outcome) {
        // A caller that has gone (a dropped request) needs no answer.
        let _ = self.reply.send(outcome);
    }
}

/// The handle to a store's writer thread: units go in through a bounded channel, answers come
/// back on one channel each. Dropping it ends the thread once it has answered what is queued.
struct UnitWriter {
    jobs: mpsc::SyncSender<Job>,
    /// Transactions committed, and the units they held.
    stats: Arc<(AtomicU64, AtomicU64)>,
}

impl UnitWriter {
    fn spawn(pool: &Pool, relaxed: Arc<AtomicBool>) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::sync_channel(WRITER_QUEUE);
        let stats = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
        let mut thread = WriterThread {
            config: pool.config.clone(),
            server: pool.server.clone(),
            conn: None,
            relaxed,
            flush_key: format!("\u{1}mfa-step wal flush {:016x}", {
                use rand_core::TryRngCore;
                rand_core::OsRng.try_next_u64().unwrap_or_default()
            }),
            stats: Arc::clone(&stats),
        };
        std::thread::Builder::new()
            .name("postgres writer".to_owned())
            .spawn(move || {
                while let Ok(first) = queue.recv() {
                    let mut batch = vec![first];
                    batch.extend(queue.try_iter().take(MAX_BATCH - 1));
                    thread.commit(batch);
                }
            })?;
        Ok(Self { jobs, stats })
    }

    /// Hands a unit over; its records are checked first, and its values were checked by the
    /// caller or are checked here.
    fn submit(
        &self,
        values: Values,
        records: Vec<AuditEntry>,
        counted: bool,
        relinker: Relinker,
    ) -> PortFuture<Vec<(String, Head)>> {
        if let Err(e) = validate_values(&values) {
            return refused(e);
        }
        for record in &records {
            if let Err(e) = validate_line(record) {
                return refused(append_error(e));
            }
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job {
            values,
            records,
            counted,
            relinker,
            reply,
        };
        if let Err(e) = self.jobs.try_send(job) {
            return refused(PortError(match e {
                mpsc::TrySendError::Full(_) => format!(
                    "the Postgres store: {WRITER_QUEUE} units are already waiting for the \
                     database; try again"
                ),
                mpsc::TrySendError::Disconnected(_) => {
                    "the Postgres store: its writer thread has stopped; restart the host".to_owned()
                }
            }));
        }
        Box::pin(async move {
            answer.await.unwrap_or_else(|_| {
                Err(PortError(
                    "the Postgres store: its writer thread stopped before committing; nothing \
                     of the unit is known to be kept"
                        .to_owned(),
                ))
            })
        })
    }

    fn stats(&self) -> (u64, u64) {
        (
            self.stats.0.load(Ordering::Relaxed),
            self.stats.1.load(Ordering::Relaxed),
        )
    }
}

fn append_error(e: AppendError) -> PortError {
    match e {
        AppendError::Unavailable(m) => PortError(m),
        AppendError::Conflict => PortError("unexpected audit conflict".to_owned()),
    }
}

/// Why a batch's transaction failed.
struct Failure {
    error: PortError,
    /// Whether it surely kept nothing (the server refused a statement, or the connection broke
    /// before `COMMIT` was sent), so that its units may be tried again one by one. After a lost
    /// `COMMIT` no one knows, and nothing is tried again.
    kept_nothing: bool,
}

/// The writer thread's state: its own connection, opened when first needed and again after it
/// broke.
struct WriterThread {
    config: Config,
    server: String,
    conn: Option<Conn>,
    relaxed: Arc<AtomicBool>,
    flush_key: String,
    stats: Arc<(AtomicU64, AtomicU64)>,
}

impl WriterThread {
    /// Commits `batch` in one transaction and answers every unit; when that fails and surely kept
    /// nothing, commits each unit alone, so that a unit the server refuses fails alone.
    fn commit(&mut self, batch: Vec<Job>) {
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.transaction(&batch)))
                .unwrap_or_else(|_| {
                    self.conn = None;
                    Err(Failure {
                error: PortError(
                    "the Postgres writer could not commit this unit (it panicked); nothing of it \
                     was kept"
                        .to_owned(),
                ),
                kept_nothing: true,
            })
                });
        match outcome {
            Ok(outcomes) => {
                for (job, outcome) in batch.into_iter().zip(outcomes) {
                    job.answer(outcome);
                }
            }
            Err(failure) if failure.kept_nothing && batch.len() > 1 => {
                for job in batch {
                    let alone = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        self.transaction(std::slice::from_ref(&job))
                    }));
                    let outcome = match alone {
                        Ok(Ok(mut outcomes)) => outcomes.pop().unwrap_or_else(|| {
                            Err(PortError("the Postgres writer lost a unit".to_owned()))
                        }),
                        Ok(Err(failure)) => Err(failure.error),
                        Err(_) => {
                            self.conn = None;
                            Err(PortError(
                                "the Postgres writer could not commit this unit (it panicked); \
                                 nothing of it was kept"
                                    .to_owned(),
                            ))
                        }
                    };
                    job.answer(outcome);
                }
            }
            Err(failure) => {
                for job in batch {
                    job.answer(Err(failure.error.clone()));
                }
            }
        }
    }

    /// The connection, opened if there is none or it broke.
    fn connection(&mut self) -> Result<&mut Conn, Failure> {
        if self.conn.as_ref().is_some_and(|c| c.client.is_closed()) {
            self.conn = None;
        }
        if self.conn.is_none() {
            let client = self.config.connect(NoTls).map_err(|e| Failure {
                error: PortError(format!(
                    "postgres commit failed: cannot connect to {}: {}",
                    self.server,
                    describe(&e)
                )),
                // Another try would meet the same server.
                kept_nothing: false,
            })?;
            self.conn = Some(Conn {
                client,
                statements: HashMap::new(),
                idle_since: Instant::now(),
            });
        }
        self.conn.as_mut().ok_or_else(|| Failure {
            error: PortError("postgres commit failed: no connection".to_owned()),
            kept_nothing: false,
        })
    }

    /// One transaction for `jobs`: each unit's outcome, or the transaction's failure.
    fn transaction(&mut self, jobs: &[Job]) -> Result<Vec<Outcome>, Failure> {
        let relaxed = self.relaxed.load(Ordering::Acquire);
        let flush = (self.flush_key.clone(), flush_expiry());
        let conn = self.connection()?;
        let mut committing = false;
        let outcome = write_units(conn, jobs, relaxed.then_some(&flush), &mut committing);
        match outcome {
            Ok(outcomes) => {
                self.stats.0.fetch_add(1, Ordering::Relaxed);
                self.stats.1.fetch_add(jobs.len() as u64, Ordering::Relaxed);
                Ok(outcomes)
            }
            Err(e) => {
                let refused = e.as_db_error().is_some_and(|db| {
                    !matches!(
                        db.parsed_severity(),
                        Some(Severity::Fatal | Severity::Panic)
                    )
                });
                if !statement_refused(&e)
                    || self.conn.as_ref().is_some_and(|c| c.client.is_closed())
                {
                    self.conn = None;
                }
                Err(Failure {
                    error: port_error("commit", &e),
                    kept_nothing: refused || !committing,
                })
            }
        }
    }
}

/// When the flush row may be forgotten: a day from now.
fn flush_expiry() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    now.saturating_add(FLUSH_ROW_SECONDS)
}

/// The values of several units as one write: the last `set` or `delete` of each key, and every
/// key whose counter a `delete` removed on the way.
#[derive(Default)]
struct Merged<'a> {
    last: BTreeMap<&'a str, Option<&'a Put>>,
    counters_gone: BTreeSet<&'a str>,
}

impl<'a> Merged<'a> {
    fn add(&mut self, values: &'a Values) {
        for (key, put) in values {
            self.last.insert(key, put.as_ref());
            if put.is_none() {
                self.counters_gone.insert(key);
            }
        }
    }
}

/// The statements that write values, prepared on a connection.
struct ValueStatements {
    put: Statement,
    delete: Statement,
}

impl ValueStatements {
    fn prepare(conn: &mut Conn) -> Result<Self, postgres::Error> {
        Ok(Self {
            put: conn.statement(PUT_VALUES)?,
            delete: conn.statement(DELETE_VALUES)?,
        })
    }

    /// Writes `merged`, sets first, each in key order. `true` when a row was surely written (a
    /// set always is; a delete of an absent key writes nothing).
    fn write(
        &self,
        tx: &mut postgres::Transaction<'_>,
        merged: &Merged<'_>,
    ) -> Result<bool, postgres::Error> {
        let puts: Vec<(&str, &Put)> = merged
            .last
            .iter()
            .filter_map(|(key, put)| put.map(|put| (*key, put)))
            .collect();
        if !puts.is_empty() {
            let keys: Vec<&str> = puts.iter().map(|(key, _)| *key).collect();
            let values: Vec<&[u8]> = puts.iter().map(|(_, put)| put.value.as_slice()).collect();
            let expiries: Vec<Option<i64>> = puts.iter().map(|(_, put)| put.expires_at).collect();
            tx.execute(&self.put, &[&keys, &values, &expiries])?;
        }
        let values_gone: Vec<&str> = merged
            .last
            .iter()
            .filter(|(_, put)| put.is_none())
            .map(|(key, _)| *key)
            .collect();
        let counters_gone: Vec<&str> = merged.counters_gone.iter().copied().collect();
        if !values_gone.is_empty() || !counters_gone.is_empty() {
            tx.execute(&self.delete, &[&values_gone, &counters_gone])?;
        }
        Ok(!puts.is_empty())
    }
}

/// `job`'s records placed after `heads` (and after each other): the records as linked, and the
/// head each of its streams is left at.
fn link_unit(
    job: &Job,
    heads: &HashMap<String, Option<Head>>,
) -> PortResult<(Vec<AuditEntry>, Heads)> {
    let mut linked: Vec<AuditEntry> = Vec::with_capacity(job.records.len());
    let mut left: Heads = Vec::new();
    for record in &job.records {
        let head = match left.iter().find(|(org, _)| *org == record.org_id) {
            Some((_, head)) => Some(head.clone()),
            None => heads.get(&record.org_id).cloned().flatten(),
        };
        let entry = job.relinker.link(record, head.as_ref())?.into_owned();
        i64::try_from(entry.seq)
            .map_err(|_| PortError("refused audit record: its seq is out of range".to_owned()))?;
        match left.iter_mut().find(|(org, _)| *org == entry.org_id) {
            Some((_, head)) => *head = placed_head(&entry),
            None => left.push((entry.org_id.clone(), placed_head(&entry))),
        }
        linked.push(entry);
    }
    Ok((linked, left))
}

/// The writer's transaction for `jobs`: the streams' locks in key order, their heads read after
/// the locks (a statement of its own sees every commit made before it, `READ COMMITTED`), each
/// unit's records relinked there, every record in one insert, every value, the flush row when
/// the WAL must be flushed and nothing else is written (`flush`: the key and its expiry, given
/// while increments are relaxed), then `COMMIT`. A unit whose records cannot be relinked fails
/// alone, before anything is written; the others go on.
fn write_units(
    conn: &mut Conn,
    jobs: &[Job],
    flush: Option<&(String, i64)>,
    committing: &mut bool,
) -> Result<Vec<Outcome>, postgres::Error> {
    let lock_streams = conn.statement(LOCK_STREAMS)?;
    let read_heads = conn.statement(HEADS)?;
    let insert_records = conn.statement(INSERT_RECORDS)?;
    let flush_row = conn.statement(FLUSH)?;
    let value_statements = ValueStatements::prepare(conn)?;
    let orgs: BTreeSet<&str> = jobs
        .iter()
        .flat_map(|job| job.records.iter().map(|r| r.org_id.as_str()))
        .collect();
    let mut tx = conn.client.transaction()?;
    let mut heads: HashMap<String, Option<Head>> = HashMap::new();
    if !orgs.is_empty() {
        let mut keys: Vec<i64> = orgs.iter().map(|org| stream_lock(org)).collect();
        keys.sort_unstable();
        keys.dedup();
        tx.execute(&lock_streams, &[&keys])?;
        let names: Vec<&str> = orgs.iter().copied().collect();
        for row in tx.query(&read_heads, &[&names])? {
            let org: String = row.try_get(0)?;
            let seq: Option<i64> = row.try_get(1)?;
            let hash: Option<String> = row.try_get(2)?;
            let head = seq.zip(hash).map(|(seq, hash)| Head {
                seq: u64::try_from(seq).unwrap_or(0),
                hash,
            });
            heads.insert(org, head);
        }
    }
    let mut outcomes = Vec::with_capacity(jobs.len());
    let mut placed: Vec<AuditEntry> = Vec::new();
    let mut merged = Merged::default();
    let mut counted = false;
    for job in jobs {
        match link_unit(job, &heads) {
            Ok((linked, left)) => {
                for (org, head) in &left {
                    heads.insert(org.clone(), Some(head.clone()));
                }
                placed.extend(linked);
                merged.add(&job.values);
                counted |= job.counted;
                outcomes.push(Ok(left));
            }
            Err(e) => outcomes.push(Err(e)),
        }
    }
    let mut written = false;
    if !placed.is_empty() {
        let orgs: Vec<&str> = placed.iter().map(|e| e.org_id.as_str()).collect();
        // Checked in `link_unit`.
        let seqs: Vec<i64> = placed
            .iter()
            .map(|e| i64::try_from(e.seq).unwrap_or(i64::MAX))
            .collect();
        let ats: Vec<i64> = placed.iter().map(|e| e.at).collect();
        let actions: Vec<&str> = placed.iter().map(|e| e.action.as_str()).collect();
        let prevs: Vec<&str> = placed.iter().map(|e| e.prev.as_str()).collect();
        let hashes: Vec<&str> = placed.iter().map(|e| e.hash.as_str()).collect();
        let lines: Vec<&str> = placed.iter().map(|e| e.line.as_str()).collect();
        tx.execute(
            &insert_records,
            &[&orgs, &seqs, &ats, &actions, &prevs, &hashes, &lines],
        )?;
        written = true;
    }
    written |= value_statements.write(&mut tx, &merged)?;
    if let Some((key, expires_at)) = flush
        && counted
        && !written
    {
        tx.execute(&flush_row, &[key, expires_at])?;
    }
    *committing = true;
    tx.commit()?;
    Ok(outcomes)
}

// ---------------------------------------------------------------------------------------------
// Handed-over reads and increments: the asynchronous client

/// How many connections the asynchronous client opens at most (within [`CallSlots::MAX`]).
/// Queries share them, sent back to back without waiting for each other's answers (pipelined):
/// fewer connections mean fewer system calls and server processes. On the 2-core box with the
/// server beside the host, a verify-shaped load of 16 callers ran fastest on 2 connections
/// (~1,550 units/s in a debug build, against ~1,220 on 8 and 660 through the blocking pool).
const ASYNC_CONNECTIONS: usize = 4;
/// How many queries every connection must have in flight before another is opened: 16 callers
/// use about 2 connections, more callers up to [`ASYNC_CONNECTIONS`].
const PIPELINE_DEPTH: usize = 8;

/// Connections of the asynchronous client, their tasks on the runtime the store was made in.
struct AsyncPool {
    config: tokio_postgres::Config,
    runtime: tokio::runtime::Handle,
    server: String,
    conns: Mutex<Vec<Arc<AsyncConn>>>,
    /// Held while a connection is opened, so that callers open one at a time.
    opening: tokio::sync::Mutex<()>,
    /// The store's [`PostgresStore::relaxed`].
    relaxed: Arc<AtomicBool>,
}

/// One connection of the asynchronous client.
struct AsyncConn {
    client: tokio_postgres::Client,
    statements: Mutex<HashMap<&'static str, Statement>>,
    /// Queries sent and not yet answered.
    in_flight: AtomicUsize,
    /// Whether its session commits without waiting for the WAL flush.
    relaxed: AtomicBool,
}

/// A query's turn on a connection, given back on drop (also when the caller's future is dropped).
struct Busy(Arc<AsyncConn>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl AsyncConn {
    /// `sql` prepared on this connection, once.
    async fn statement(&self, sql: &'static str) -> Result<Statement, postgres::Error> {
        let cached = self
            .statements
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(sql)
            .cloned();
        if let Some(statement) = cached {
            return Ok(statement);
        }
        let statement = self.client.prepare(sql).await?;
        self.statements
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(sql, statement.clone());
        Ok(statement)
    }

    /// Lets this session's commits skip the wait for the WAL flush, once the store allows it.
    async fn relax(&self, allowed: &AtomicBool) -> Result<(), postgres::Error> {
        if allowed.load(Ordering::Acquire) && !self.relaxed.swap(true, Ordering::AcqRel) {
            let set = self
                .client
                .batch_execute("SET synchronous_commit = off")
                .await;
            if set.is_err() {
                self.relaxed.store(false, Ordering::Release);
            }
            set?;
        }
        Ok(())
    }
}

impl AsyncPool {
    fn new(pool: &Pool, runtime: tokio::runtime::Handle, relaxed: Arc<AtomicBool>) -> Self {
        Self {
            config: pool.async_config.clone(),
            runtime,
            server: pool.server.clone(),
            conns: Mutex::new(Vec::new()),
            opening: tokio::sync::Mutex::new(()),
            relaxed,
        }
    }

    /// The least busy open connection, unless every one is busy enough that another should be
    /// opened (or `force`).
    fn pick(&self, force: bool) -> PortResult<Option<Busy>> {
        let mut conns = lock(&self.conns, "the Postgres store")?;
        conns.retain(|c| !c.client.is_closed());
        let count = conns.len();
        let Some(best) = conns
            .iter()
            .min_by_key(|c| c.in_flight.load(Ordering::Acquire))
        else {
            return Ok(None);
        };
        if force
            || count >= ASYNC_CONNECTIONS
            || best.in_flight.load(Ordering::Acquire) < PIPELINE_DEPTH
        {
            best.in_flight.fetch_add(1, Ordering::AcqRel);
            return Ok(Some(Busy(Arc::clone(best))));
        }
        Ok(None)
    }

    async fn checkout(&self, op: &str) -> PortResult<Busy> {
        if let Some(busy) = self.pick(false)? {
            return Ok(busy);
        }
        let _turn = self.opening.lock().await;
        if let Some(busy) = self.pick(false)? {
            return Ok(busy);
        }
        match self.config.connect(NoTls).await {
            Ok((client, connection)) => {
                // The connection's task: it ends when the client is dropped or the socket closes.
                drop(self.runtime.spawn(async move {
                    let _ = connection.await;
                }));
                let conn = Arc::new(AsyncConn {
                    client,
                    statements: Mutex::new(HashMap::new()),
                    in_flight: AtomicUsize::new(1),
                    relaxed: AtomicBool::new(false),
                });
                lock(&self.conns, "the Postgres store")?.push(Arc::clone(&conn));
                Ok(Busy(conn))
            }
            // Busy connections are better than none.
            Err(e) => self.pick(true)?.ok_or_else(|| {
                PortError(format!(
                    "postgres {op} failed: cannot connect to {}: {}",
                    self.server,
                    describe(&e)
                ))
            }),
        }
    }

    /// Runs `work` on a connection; one that broke is forgotten, never used again. The outer
    /// error is the pool's (no connection); the inner one is what `work` met.
    async fn run<T, F, Fut>(&self, op: &str, work: F) -> PortResult<Result<T, postgres::Error>>
    where
        F: FnOnce(Arc<AsyncConn>) -> Fut,
        Fut: Future<Output = Result<T, postgres::Error>>,
    {
        let busy = self.checkout(op).await?;
        let outcome = work(Arc::clone(&busy.0)).await;
        if let Err(e) = &outcome
            && (busy.0.client.is_closed() || !statement_refused(e))
        {
            // What broke it most likely broke the others too (a restart, a failover): forget
            // them all, so that the next calls open new connections.
            lock(&self.conns, "the Postgres store")?.clear();
        }
        Ok(outcome)
    }
}

// ---------------------------------------------------------------------------------------------
// PostgresAuditSink

const AUDIT_HEAD: &str =
    "SELECT seq, hash FROM mfa_step_audit_log WHERE org = $1 ORDER BY seq DESC LIMIT 1";
/// Inserts the record only if it links to its stream's head, as [`links_to`] says: the first
/// record (`seq` 1 after [`GENESIS`]) of a stream that has none, or the record after an existing
/// one whose hash it carries. The primary key settles a race: a second writer linking to the same
/// head waits for the first, then inserts nothing.
///
/// [`links_to`]: mfa_step_core::kernel::ports::links_to
const AUDIT_APPEND: &str = "INSERT INTO mfa_step_audit_log (org, seq, at, action, prev, hash, line)
    SELECT $1::text, $2::bigint, $3::bigint, $4::text, $5::text, $6::text, $7::text
    WHERE ($2::bigint = 1 AND $5::text = $8::text
            AND NOT EXISTS (SELECT 1 FROM mfa_step_audit_log WHERE org = $1::text))
        OR EXISTS (SELECT 1 FROM mfa_step_audit_log
            WHERE org = $1::text AND seq = $2::bigint - 1 AND hash = $5::text)
    ON CONFLICT (org, seq) DO NOTHING";

/// Keeps audit records in the `mfa_step_audit_log` table of a Postgres database, shared by every
/// node that connects to it (it may be the store's own database).
pub struct PostgresAuditSink {
    pool: Pool,
}

impl PostgresAuditSink {
    /// Connects to the database at `url` and brings it to the current schema.
    ///
    /// # Errors
    /// As [`PostgresStore::connect`].
    pub fn connect(url: &str) -> super::Result<Self> {
        Ok(Self {
            pool: Pool::connect(url, "the Postgres audit sink")?,
        })
    }

    /// The database, as `postgres://user@host:port/name` (no password).
    #[must_use]
    pub fn server(&self) -> &str {
        &self.pool.server
    }

    /// The database and schema the records are in: see [`PostgresStore::database`].
    #[must_use]
    pub fn database(&self) -> &str {
        &self.pool.database
    }
}

impl fmt::Debug for PostgresAuditSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresAuditSink")
            .field("server", &self.pool.server)
            .finish_non_exhaustive()
    }
}

impl AuditSink for PostgresAuditSink {
    fn head(&self, org: &str) -> PortResult<Option<Head>> {
        self.pool.run("audit head", |conn| {
            let statement = conn.statement(AUDIT_HEAD)?;
            conn.client
                .query_opt(&statement, &[&org])?
                .map(|row| {
                    Ok(Head {
                        seq: u64::try_from(row.try_get::<_, i64>(0)?).unwrap_or(0),
                        hash: row.try_get(1)?,
                    })
                })
                .transpose()
        })
    }

    fn append(&self, entry: &AuditEntry) -> Result<(), AppendError> {
        validate_line(entry)?;
        let seq = i64::try_from(entry.seq)
            .map_err(|_| AppendError::Unavailable("audit seq out of range".to_owned()))?;
        let outcome = self
            .pool
            .with("audit append", |conn| {
                let statement = conn.statement(AUDIT_APPEND)?;
                conn.client.execute(
                    &statement,
                    &[
                        &entry.org_id,
                        &seq,
                        &entry.at,
                        &entry.action,
                        &entry.prev,
                        &entry.hash,
                        &entry.line,
                        &GENESIS,
                    ],
                )
            })
            .map_err(|e| AppendError::Unavailable(e.0))?;
        match outcome {
            Ok(1) => Ok(()),
            // It did not link to the head, or another writer took its place first: nothing was
            // written, and the caller relinks.
            Ok(_) => Err(AppendError::Conflict),
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => Err(AppendError::Conflict),
            Err(e) => Err(AppendError::Unavailable(port_error("audit append", &e).0)),
        }
    }
}

/// How often `place_linked` relinks, under the stream's lock, a record whose place a writer that
/// does not take the lock ([`AuditSink::append`], e.g. an older node) took first.
const PLACE_ATTEMPTS: usize = 8;

impl HostAuditSink for PostgresAuditSink {
    /// One transaction: the stream's advisory lock, its head read after it, the record relinked
    /// there and inserted, `COMMIT`. Writers on any node that take the lock take turns, so none
    /// ever conflicts.
    fn place_linked(&self, entry: &AuditEntry, relinker: &Relinker) -> PortResult<(Placed, Head)> {
        validate_line(entry).map_err(append_error)?;
        let key = stream_lock(&entry.org_id);
        let placed = self.pool.run("audit append", |conn| {
            let lock_stream = conn.statement(LOCK_STREAM)?;
            let read_head = conn.statement(AUDIT_HEAD)?;
            let insert = conn.statement(AUDIT_APPEND)?;
            let mut tx = conn.client.transaction()?;
            tx.execute(&lock_stream, &[&key])?;
            for _ in 0..PLACE_ATTEMPTS {
                let head = tx
                    .query_opt(&read_head, &[&entry.org_id])?
                    .map(|row| {
                        Ok::<_, postgres::Error>(Head {
                            seq: u64::try_from(row.try_get::<_, i64>(0)?).unwrap_or(0),
                            hash: row.try_get(1)?,
                        })
                    })
                    .transpose()?;
                // Nothing is written when it cannot be relinked: the transaction rolls back.
                let linked = match relinker.link(entry, head.as_ref()) {
                    Ok(linked) => linked,
                    Err(e) => return Ok(Err(e)),
                };
                let Ok(seq) = i64::try_from(linked.seq) else {
                    return Ok(Err(PortError(
                        "refused audit record: its seq is out of range".to_owned(),
                    )));
                };
                let inserted = tx.execute(
                    &insert,
                    &[
                        &linked.org_id,
                        &seq,
                        &linked.at,
                        &linked.action,
                        &linked.prev,
                        &linked.hash,
                        &linked.line,
                        &GENESIS,
                    ],
                )?;
                if inserted == 1 {
                    tx.commit()?;
                    return Ok(Ok(placed_head(&linked)));
                }
            }
            Ok(Err(PortError(
                "the organization's audit stream stayed busy; try again".to_owned(),
            )))
        })??;
        Ok((Placed::Durable, placed))
    }

    fn database(&self) -> Option<String> {
        Some(self.pool.database.clone())
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
        self.pool.run("audit stream", |conn| {
            let statement = conn.statement(AUDIT_FROM_SEQ)?;
            conn.client
                .query(&statement, &[&org, &from, &limit])?
                .iter()
                .map(|row| row.try_get(0))
                .collect::<Result<Vec<String>, _>>()
                .map(Some)
        })
    }

    /// On the `(org, at)` index (schema version 3) when a date bounds the read, else on the
    /// `(org, seq)` key.
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

    /// The lines with `LIMIT`, then the count.
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
        self.pool.run("audit records", |conn| {
            let (lines_sql, count_sql) = audit_matching(timed, action.is_some());
            let statement = conn.statement(lines_sql)?;
            let lines = conn
                .client
                .query(&statement, &[&org, &from, &to, &action, &limit])?
                .iter()
                .map(|row| row.try_get(0))
                .collect::<Result<Vec<String>, _>>()?;
            // Read after the lines: it counts at least them.
            let total = if all {
                lines.len() as u64
            } else {
                let statement = conn.statement(count_sql)?;
                let n: i64 = conn
                    .client
                    .query_one(&statement, &[&org, &from, &to, &action])?
                    .try_get(0)?;
                u64::try_from(n).unwrap_or(0)
            };
            Ok(Some((lines, total)))
        })
    }

    fn checkpoint(&self, org: &str) -> PortResult<Option<Head>> {
        self.pool.run("audit checkpoint", |conn| {
            let statement = conn.statement(CHECKPOINT_GET)?;
            conn.client
                .query_opt(&statement, &[&org])?
                .map(|row| {
                    Ok(Head {
                        seq: u64::try_from(row.try_get::<_, i64>(0)?).unwrap_or(0),
                        hash: row.try_get(1)?,
                    })
                })
                .transpose()
        })
    }

    fn advance_checkpoint(&self, org: &str, head: &Head, at: i64) -> PortResult<()> {
        let seq =
            i64::try_from(head.seq).map_err(|_| PortError("audit seq out of range".to_owned()))?;
        self.pool.run("audit checkpoint", |conn| {
            let statement = conn.statement(CHECKPOINT_ADVANCE)?;
            conn.client
                .execute(&statement, &[&org, &seq, &head.hash, &at])
                .map(|_| ())
        })
    }
}

/// An organization's records from a `seq` on, in stream order, at most `$3` of them (the console
/// viewer's chain check).
const AUDIT_FROM_SEQ: &str =
    "SELECT line FROM mfa_step_audit_log WHERE org = $1 AND seq >= $2 ORDER BY seq LIMIT $3";

/// An organization's records in a time range (`$2`..`$3`) with an action (`$4`): the newest `$5`
/// (the console viewer's rows), and how many there are. A condition is left out rather than
/// written `$2 IS NULL OR …`, which a generic plan could not use an index for; every variant
/// names every parameter, with its type, so one binding fits them all.
fn audit_matching(timed: bool, action: bool) -> (&'static str, &'static str) {
    macro_rules! both {
        ($where:literal) => {
            (
                concat!(
                    "SELECT line FROM mfa_step_audit_log WHERE ",
                    $where,
                    " ORDER BY seq DESC LIMIT $5"
                ),
                concat!("SELECT count(*) FROM mfa_step_audit_log WHERE ", $where),
            )
        };
    }
    match (timed, action) {
        (true, true) => both!("org = $1 AND at BETWEEN $2 AND $3 AND action = $4::text"),
        (true, false) => both!("org = $1 AND at BETWEEN $2 AND $3 AND $4::text IS NULL"),
        (false, true) => both!("org = $1 AND $2::bigint <= $3::bigint AND action = $4::text"),
        (false, false) => both!("org = $1 AND $2::bigint <= $3::bigint AND $4::text IS NULL"),
    }
}

const CHECKPOINT_GET: &str = "SELECT seq, hash FROM mfa_step_audit_checkpoint WHERE org = $1";
/// Forward only: two views racing never take a checkpoint back.
const CHECKPOINT_ADVANCE: &str = "INSERT INTO mfa_step_audit_checkpoint (org, seq, hash, at)
    VALUES ($1, $2, $3, $4)
    ON CONFLICT (org) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, at = excluded.at
    WHERE excluded.seq > mfa_step_audit_checkpoint.seq";

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly on purpose"
)]
mod tests {
    use super::*;
    use crate::backends::audit::tests::{append, linked, verify_lines};
    use crate::backends::store::MAX_VALUE_BYTES;
    use crate::backends::store::tests::{
        check_apply, check_backlog_sweep, check_expiry, check_limits, check_semantics,
        increment_concurrently,
    };
    use mfa_step_core::audit::verify::Verifier;
    use rand_core::{OsRng, TryRngCore};
    use std::sync::Arc;

    const SERVER_ENV: &str = "MFA_STEP_TEST_POSTGRES";

    /// A schema of its own on the test server, so that tests run in parallel; dropped at the end.
    struct Scratch {
        admin_url: String,
        schema: String,
        /// The server's URL with this schema first in the `search_path`.
        url: String,
    }

    impl Scratch {
        fn new() -> Self {
            let admin_url = std::env::var(SERVER_ENV).unwrap_or_else(|_| {
                panic!(
                    "{SERVER_ENV} is not set: this test needs a Postgres server, e.g. \
                     {SERVER_ENV}=postgres://postgres@127.0.0.1:55432/postgres"
                )
            });
            let schema = format!("t_{:016x}", OsRng.try_next_u64().unwrap());
            Client::connect(&admin_url, NoTls)
                .unwrap_or_else(|e| panic!("cannot reach {SERVER_ENV}: {}", describe(&e)))
                .batch_execute(&format!("CREATE SCHEMA {schema}"))
                .unwrap();
            let separator = if admin_url.contains('?') { '&' } else { '?' };
            // Its own application name too, so a test can find its own connections.
            let url = format!(
                "{admin_url}{separator}options=-csearch_path%3D{schema}&application_name={schema}"
            );
            Self {
                admin_url,
                schema,
                url,
            }
        }

        fn store(&self) -> PostgresStore {
            PostgresStore::connect(&self.url).unwrap()
        }

        fn sink(&self) -> PostgresAuditSink {
            PostgresAuditSink::connect(&self.url).unwrap()
        }

        /// A plain client in the scratch schema, to look under the backends.
        fn client(&self) -> Client {
            Client::connect(&self.url, NoTls).unwrap()
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            if let Ok(mut admin) = Client::connect(&self.admin_url, NoTls) {
                let _ = admin.batch_execute(&format!("DROP SCHEMA {} CASCADE", self.schema));
            }
        }
    }

    #[test]
    #[ignore = "needs a Postgres server: MFA_STEP_TEST_POSTGRES (run by .ci/suites)"]
    fn postgres_store_semantics() {
        let scratch = Scratch::new();
        let store = scratch.store();
        check_semantics(&store);
        check_apply(&store);
        // Word for word the SQLite store's refusal.
        assert_eq!(store.increment("big", 1, None), Err(overflow()));
    }

    #[test]
    #[ignore = "needs a Postgres server: MFA_STEP_TEST_POSTGRES (run by .ci/suites)"]
    fn postgres_store_limits() {
        let scratch = Scratch::new();
        check_limits(&scratch.store());
    }

    #[test]
    #[ignore = "needs a Postgres server: MFA_STEP_TEST_POSTGRES (run by .ci/suites)"]
    fn postgres_store_expiry() {
        let scratch = Scratch::new();
        check_expiry(&scratch.store());
    }

    #[test]
    #[ignore = "needs a Postgres server: MFA_STEP_TEST_POSTGRES (run by .ci/suites)"]
    fn postgres_a_backlog_is_swept_slice_by_slice_and_all_of_it_goes() {
        check_backlog_sweep(&Scratch::new().store());
    }

    #[test]
    #[ignore = "needs a Postgres server: MFA_STEP_TEST_POSTGRES (run by .ci/suites)"]
    fn postgres_keys_sort_byte_by_byte_whatever_the_database_collation() {
        let scratch = Scratch::new();
        let _store = scratch.store();
        let collations: Vec<(String, String)> = scratch
            .client()
            .query(
                "SELECT table_name::text, collation_name::text FROM information_schema.columns
                 WHERE table_schema = current_schema() AND column_name = 'key'
                 ORDER BY table_name",
                &[],
            )
            .unwrap()
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        assert_eq!(
            collations,
            [
                ("mfa_step_counters".to_owned(), "C".to_owned()),
                ("mfa_step_kv".to_owned(), "C".to_owned())
            ]
        );
    }

    /// `url` naming the database `name` instead, with the same options.
    fn with_database(url: &str, name: &str) -> String {
        let (scheme, rest) = url.split_once("://").unwrap();
        let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        let options = tail.find('?').map_or("", |i| &tail[i..]);
        format!("{scheme}://{authority}/{name}{options}")
    }

    /// A database of its own, dropped at the end (with any connection still open to it).
    struct ScratchDatabase {
        admin_url: String,
        name: String,
    }

    impl Drop for ScratchDatabase {
        fn drop(&mut self) {
            if let Ok(mut admin) = Client::connect(&self.admin_url, NoTls) {
                let _ = admin.batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ));
            }
        }
    }

    #[test]
    #[ignore = "needs a Postgres server: MFA_STEP_TEST_POSTGRES (run by .ci/suites)"]
    fn postgres_lists_keys_in_byte_order_in_a_database_that_sorts_like_a_dictionary() {
        let scratch = Scratch::new();
        let database = ScratchDatabase {
            admin_url: scratch.admin_url.clone(),
            name: scratch.schema.clone(),
        };
        // ICU's English order: case and punctuation weigh less than letters (Postgres 15+).
        Client::connect(&database.admin_url, NoTls)
            .unwrap()
            .batch_execute(&format!(
                "CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8' LOCALE 'C' \
                 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'",
                database.name
            ))
            .unwrap_or_else(|e| {
                panic!(
                    "this test needs a Postgres 15+ server built with ICU: {}",
                    describe(&e)
                )
            });
        let url = with_database(&database.admin_url, &database.name);
        let byte_order: bool = Client::connect(&url, NoTls)
            .unwrap()
            .query_one("SELECT 'a~' < 'a' || chr(127) AND 'B' < 'a'", &[])
            .unwrap()
            .get(0);
        assert!(!byte_order, "the database must not sort byte by byte");
        let store = PostgresStore::connect(&url).unwrap();
        check_semantics(&store);
        check_limits(&store);
    }

    #[test]
    #[ignore = "needs a Postgres server: MFA_STEP_TEST_POSTGRES (run by .ci/suites)"]
    fn postgres_connect_and_drop_are_safe_in_async_code_and_calls_run_on_the_blocking_pool() {
        let scratch = Scratch::new();
        let url = scratch.url.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let store = Arc::new(PostgresStore::connect(&url).unwrap());
            let sink = PostgresAuditSink::connect(&url).unwrap();
            let handle = Arc::clone(&store);
            let value = tokio::task::spawn_blocking(move || {
                handle.set("k", b"v", None)?;
                handle.get("k")
            })
            .await
            .unwrap()
            .unwrap();
            assert_eq!(value.as_deref(), Some(&b"v"[..]));
            // Dropped on an executor thread, with idle connections to close.
            drop(store);
            drop(sink);
        });
    }

    #[test]
    #[ignore = "needs a Postgres server: MFA_STEP_TEST_POSTGRES (run by .ci/suites)"]
    fn postgres_64_callers_at_once_share_at_most_16_connections() {
        let scratch = Scratch::new();
        let store = Arc::new(scratch.store());
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = {
            let (done, admin_url, name) = (
                Arc::clone(&done),
                scratch.admin_url.clone(),
                scratch.schema.clone(),
            );
            std::thread::spawn(move || {
                let mut admin = Client::connect(&admin_url, NoTls).unwrap();
                let mut most = 0_i64;
                while !done.load(std::sync::atomic::Ordering::Acquire) {
                    let open: i64 = admin
                        .query_one(
                            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                            &[&name],
                        )
                        .unwrap()
                        .get(0);
                    most = most.max(open);
                    std::thread::sleep(Duration::from_millis(2));
                }
                most
            })
        };
        increment_concurrently(vec![Arc::clone(&store); 64], 20);
        done.store(true, std::sync::atomic::Ordering::Release);
        let most = watcher.join().unwrap();
        assert!(most <= 16, "{most} connections open at once");
        assert!(most > 1, "the callers ran at once ({most} connections)");
    }

    #[test]
    #[ignore = "needs a Postgres server: MFA_STEP_TEST_POSTGRES (run by .ci/suites)"]
    fn postgres_increments_from_8_threads_lose_nothing() {
        let scratch = Scratch::new();
        let store = Arc::new(scratch.store());
        increment_concurrently(vec![Arc::clone(&store); 8], 200);
        assert_eq!(store.increment("hits", 0, None).unwrap(), 1600);
    }

    #[test]
    #[ignore = "needs a Postgres server: MFA_STEP_TEST_POSTGRES (run by .ci/suites)"]
    fn postgres_increments_from_two_nodes_lose_nothing() {
        let scratch = Scratch::new();
        let first = Arc::new(scratch.store());
        let second = Arc::new(scratch.store());
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
        // Read-your-writes across nodes.
        first.set("k", b"from first", Some(50)).unwrap();
        assert_eq!(
            second.get("k").unwrap().as_deref(),
            Some(&b"from first"[..])
        );
        assert_eq!(second.sweep(50).unwrap(), 1);
        assert_eq!(first.get("k").unwrap(), None);
    }

    #[test]
    #[ignore = "needs a Postgres server: MFA_STEP_TEST_POSTGRES (run by .ci/suites)"]
    fn postgres_migrations_run_once_however_many_nodes_start() {
        let scratch = Scratch::new();
        // Nodes starting at once: the advisory lock makes the others wait, then find it done.
        let url = Arc::new(scratch.url.clone());
        let starts: Vec<_> = (0..4)
            .map(|i| {
                let url = Arc::clone(&url);
                std::thread::spawn(move || {
                    if i % 2 == 0 {
                        drop(PostgresStore::connect(&url).unwrap());
                    } else {
                        drop(PostgresAuditSink::connect(&url).unwrap());
                    }
                })
            })
            .collect();
        for start in starts {
            start.join().unwrap();
        }
        let store = scratch.store();
        store.set("kept", b"v", None).unwrap();
        store.increment("n", 7, Some(100)).unwrap();
        drop(store);
        // Again, later: nothing is made twice, nothing is lost.
        let store = scratch.store();
        let _sink = scratch.sink();
        assert_eq!(store.get("kept").unwrap().as_deref(), Some(&b"v"[..]));
        assert_eq!(store.increment("n", 0, None).unwrap(), 7);
        let mut client = scratch.client();
        let row = client
            .query_one("SELECT count(*), max(version) FROM mfa_step_schema", &[])
            .unwrap();
        assert_eq!(
            (row.get::<_, i64>(0), row.get::<_, Option<i32>>(1)),
            (1, Some(i32::try_from(MIGRATIONS.len()).unwrap()))
        );
        // A schema a newer host made is refused, not misused.
        client
            .execute("UPDATE mfa_step_schema SET version = 99", &[])
            .unwrap();
        let err = PostgresStore::connect(&scratch.url)
            .unwrap_err()
            .to_string();
        assert!(err.contains("version 99") && err.contains("newer"), "{err}");
    }

    #[test]
    #[ignore = "needs a Postgres server: MFA_STEP_TEST_POSTGRES (run by .ci/suites)"]
    fn postgres_broken_connections_fail_one_call_and_are_replaced() {
        let scratch = Scratch::new();
        let store = scratch.store();
        store.set("k", b"v", None).unwrap();
        // Three idle connections.
        let conns: Vec<Conn> = (0..3)
            .map(|_| store.pool.checkout("test").unwrap())
            .collect();
        store.pool.idle.lock().unwrap().extend(conns);
        // The server ends the store's connections (a restart, a failover, an operator).
        let ended: i64 = Client::connect(&scratch.admin_url, NoTls)
            .unwrap()
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE application_name = $1",
                &[&scratch.schema],
            )
            .unwrap()
            .get(0);
        assert_eq!(ended, 3);
        let mut failures = 0;
        let value = loop {
            match store.get("k") {
                Ok(value) => break value,
                Err(e) => {
                    assert!(e.0.starts_with("postgres get failed"), "{e}");
                    failures += 1;
                    assert!(failures < 2, "a broken connection was used: {e}");
                }
            }
        };
        assert_eq!(value.as_deref(), Some(&b"v"[..]));
        assert_eq!(store.get("k").unwrap().as_deref(), Some(&b"v"[..]));
    }

    /// `url` with `password` in it, replacing any it had.
    fn with_password(url: &str, password: &str) -> String {
        let (scheme, rest) = url.split_once("://").unwrap();
        let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        let (user, host) = authority
            .rsplit_once('@')
            .map_or(("postgres", authority), |(user, host)| {
                (user.split(':').next().unwrap(), host)
            });
        format!("{scheme}://{user}:{password}@{host}{tail}")
    }

    #[test]
    #[ignore = "needs a Postgres server: MFA_STEP_TEST_POSTGRES (run by .ci/suites)"]
    fn postgres_debug_and_errors_never_show_the_password() {
        let scratch = Scratch::new();
        // The server's own password if the URL has one; else one the server never asks for.
        let (config, _) = parse_url(&scratch.url).unwrap();
        let (url, password) = match config.get_password() {
            Some(p) => (scratch.url.clone(), String::from_utf8(p.to_vec()).unwrap()),
            None => (
                with_password(&scratch.url, "hunter2-Secret"),
                "hunter2-Secret".to_owned(),
            ),
        };
        let store = PostgresStore::connect(&url).unwrap();
        let sink = PostgresAuditSink::connect(&url).unwrap();
        // A failing call, a failing append: the messages name the failure only.
        store.set("dup", b"v", None).unwrap();
        let failures = [store
            .increment("big", i64::MAX, None)
            .and_then(|_| store.increment("big", 1, None))];
        let mut entry = linked("acme", &password, None);
        entry.line.push('\0');
        let refused = sink.append(&entry);
        assert!(
            matches!(refused, Err(AppendError::Unavailable(_))),
            "{refused:?}"
        );
        for shown in [
            format!("{store:?}"),
            format!("{sink:?}"),
            store.server().to_owned(),
            format!("{failures:?}"),
            format!("{refused:?}"),
        ] {
            assert!(!shown.contains(&password), "{shown}");
        }
        assert!(format!("{store:?}").contains(config.get_dbname().unwrap_or("")));
    }

    #[test]
    #[ignore = "needs a Postgres server: MFA_STEP_TEST_POSTGRES (run by .ci/suites)"]
    fn postgres_the_viewers_reads_can_use_the_logs_indexes() {
        let scratch = Scratch::new();
        drop(scratch.sink());
        let mut client = scratch.client();
        // A tiny table is read whole anyway: forbid that, to see which index each read can use.
        client.batch_execute("SET enable_seqscan = off").unwrap();
        let mut plan = |sql: &str, params: &[&(dyn postgres::types::ToSql + Sync)]| {
            client
                .query(&format!("EXPLAIN {sql}"), params)
                .unwrap()
                .iter()
                .map(|row| row.get::<_, String>(0))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let (org, from, to, limit) = ("acme", 1_i64, 2_i64, 10_i64);
        let after = plan(AUDIT_FROM_SEQ, &[&org, &from, &limit]);
        assert!(after.contains("mfa_step_audit_log_pkey"), "{after}");
        for with_action in [true, false] {
            let action: Option<&str> = with_action.then_some("code_sent");
            let (lines, count) = audit_matching(true, with_action);
            let timed = plan(lines, &[&org, &from, &to, &action, &limit]);
            assert!(timed.contains("mfa_step_audit_log_at"), "{timed}");
            let counted = plan(count, &[&org, &from, &to, &action]);
            assert!(counted.contains("mfa_step_audit_log_at"), "{counted}");
            let untimed = plan(
                audit_matching(false, with_action).0,
                &[&org, &from, &to, &action, &limit],
            );
            // Either index serves it (the planner picks by the table's statistics).
            assert!(!untimed.contains("Seq Scan"), "{untimed}");
        }
    }

    /// Two nodes on one scratch schema: two sinks, each with its own connections.
    fn two_sinks(scratch: &Scratch) -> (Arc<PostgresAuditSink>, Arc<PostgresAuditSink>) {
        (Arc::new(scratch.sink()), Arc::new(scratch.sink()))
    }

    /// Every stored line, each stream in order.
    fn stored_lines(scratch: &Scratch) -> Vec<String> {
        scratch
            .client()
            .query("SELECT line FROM mfa_step_audit_log ORDER BY org, seq", &[])
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect()
    }

    #[test]
    #[ignore = "needs a Postgres server: MFA_STEP_TEST_POSTGRES (run by .ci/suites)"]
    fn postgres_audit_writers_on_two_nodes_never_fork_a_chain() {
        let scratch = Scratch::new();
        let (first, second) = two_sinks(&scratch);
        let barrier = Arc::new(std::sync::Barrier::new(6));
        let threads: Vec<_> = (0..6)
            .map(|t| {
                let sink = Arc::clone(if t % 2 == 0 { &first } else { &second });
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
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
        let mut verifier = Verifier::new(None);
        for line in stored_lines(&scratch) {
            verifier.check(&line).unwrap();
        }
        assert_eq!(verifier.records(), 150);
        assert_eq!(
            verifier.heads()["acme"],
            first.head("acme").unwrap().unwrap()
        );
        assert_eq!(
            verifier.heads()["beta"],
            second.head("beta").unwrap().unwrap()
        );
    }

    #[test]
    #[ignore = "needs a Postgres server: MFA_STEP_TEST_POSTGRES (run by .ci/suites)"]
    fn postgres_audit_reads_a_stream_back_and_keeps_a_forward_only_checkpoint() {
        let scratch = Scratch::new();
        crate::backends::audit::tests::check_viewer_reads(&scratch.sink());
    }

    #[test]
    #[ignore = "needs a Postgres server: MFA_STEP_TEST_POSTGRES (run by .ci/suites)"]
    fn postgres_audit_an_entry_that_does_not_link_to_the_head_is_a_conflict() {
        let scratch = Scratch::new();
        let sink = scratch.sink();
        assert_eq!(sink.head("acme").unwrap(), None);
        // The first record must start at 1 after the genesis hash.
        let mut early = linked("acme", "x", None);
        early.prev = "ab".repeat(32);
        assert_eq!(sink.append(&early), Err(AppendError::Conflict));
        let first = append(&sink, "acme", "one");
        assert_eq!((first.seq, first.prev.as_str()), (1, GENESIS));
        // Linked to nothing (seq 1 again), linked with the right seq but a wrong prev, linked
        // past the head.
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
        assert_eq!(sink.append(&forged), Err(AppendError::Conflict));
        forged = linked(
            "acme",
            "z",
            Some(&Head {
                seq: 2,
                hash: first.hash.clone(),
            }),
        );
        assert_eq!(sink.append(&forged), Err(AppendError::Conflict));
        assert_eq!(
            sink.head("acme").unwrap(),
            Some(Head {
                seq: 1,
                hash: first.hash.clone()
            })
        );
        // Another stream starts on its own.
        let beta = append(&sink, "beta", "b1");
        assert_eq!(beta.seq, 1);
        let second = append(&sink, "acme", "two");
        assert_eq!((second.seq, &second.prev), (2, &first.hash));
        assert_eq!(stored_lines(&scratch), [first.line, second.line, beta.line]);
    }

    #[test]
    #[ignore = "needs a Postgres server: MFA_STEP_TEST_POSTGRES (run by .ci/suites)"]
    fn postgres_audit_lines_that_would_break_the_framing_are_refused() {
        let scratch = Scratch::new();
        let sink = scratch.sink();
        for line in ["", "{}\n{}", "{}\r", "{}\n"] {
            let mut entry = linked("acme", "x", None);
            entry.line = line.to_owned();
            assert!(
                matches!(sink.append(&entry), Err(AppendError::Unavailable(_))),
                "{line:?}"
            );
        }
        assert_eq!(sink.head("acme").unwrap(), None);
        let mut entry = linked("acme", "x", None);
        entry.seq = u64::MAX;
        assert!(matches!(
            sink.append(&entry),
            Err(AppendError::Unavailable(_))
        ));
    }

    // Units of work.

    /// A key the relinker seals with (any 32 bytes).
    fn relinker() -> Relinker {
        Relinker::new(Some(&"ab".repeat(32)))
    }

    /// The outcome of a handed-over call, awaited on a runtime of its own.
    fn wait<T>(future: PortFuture<T>) -> PortResult<T> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(future)
    }

    fn put(value: &[u8]) -> Option<Put> {
        Some(Put {
            value: value.to_vec(),
            expires_at: None,
        })
    }

    /// `unit` committed by `store` as the host does with a sink in the same database.
    fn commit(
        store: &PostgresStore,
        unit: &Unit,
        relinker: &Relinker,
    ) -> PortResult<Vec<(String, Head)>> {
        let database = store.database().to_owned();
        wait(store.commit_unit(unit, Some(&database), relinker).unwrap())
    }

    /// Every record of `org`, checked as one chain with no gap: returns how many.
    fn verify_stream(scratch: &Scratch, org: &str) -> u64 {
        let lines: Vec<String> = scratch
            .client()
            .query(
                "SELECT seq, line FROM mfa_step_audit_log WHERE org = $1 ORDER BY seq",
                &[&org],
            )
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, row)| {
                assert_eq!(row.get::<_, i64>(0), i64::try_from(i).unwrap() + 1, "a gap");
                row.get(1)
            })
            .collect();
        let verifier = verify_lines(lines.iter().map(String::as_str));
        assert_eq!(verifier.records(), lines.len() as u64);
        verifier.records()
    }

    #[test]
    #[ignore = "needs a Postgres server: MFA_STEP_TEST_POSTGRES (run by .ci/suites)"]
    fn postgres_store_and_sink_name_one_database_and_never_its_password() {
        let scratch = Scratch::new();
        let (store, sink) = (scratch.store(), scratch.sink());
        assert_eq!(
            HostAuditSink::database(&sink).as_deref(),
            Some(store.database())
        );
        assert!(
            store
                .database()
                .ends_with(&format!("?schema={}", scratch.schema))
        );
        // Another schema of the same server is another database for a unit.
        let other = Scratch::new();
        assert_ne!(other.store().database(), store.database());
        let (config, _) = parse_url(&scratch.url).unwrap();
        if let Some(password) = config.get_password() {
            let password = String::from_utf8(password.to_vec()).unwrap();
            assert!(!store.database().contains(&password));
        }
    }

    #[test]
    #[ignore = "needs a Postgres server: MFA_STEP_TEST_POSTGRES (run by .ci/suites)"]
    fn postgres_apply_is_all_or_none() {
        let scratch = Scratch::new();
        let store = scratch.store();
        store.set("old", b"v", None).unwrap();
        store.increment("old", 3, None).unwrap();
        // An invalid key or value among valid ones: nothing is written, by either path.
        for bad in [
            Values::from([
                ("a".to_owned(), put(b"1")),
                ("bad\nkey".to_owned(), put(b"2")),
                ("old".to_owned(), None),
            ]),
            Values::from([
                ("a".to_owned(), put(b"1")),
                ("b".to_owned(), put(&vec![0; MAX_VALUE_BYTES + 1])),
                ("old".to_owned(), None),
            ]),
        ] {
            assert!(store.apply(&bad).unwrap_err().0.starts_with("invalid"));
            let handed = wait(store.apply_async(&bad).unwrap());
            assert!(handed.unwrap_err().0.starts_with("invalid"));
            assert_eq!(store.get("a").unwrap(), None);
            assert_eq!(store.get("old").unwrap().as_deref(), Some(&b"v"[..]));
        }
        // Valid values go in together: sets, and deletes of a value and its counter.
        let good = Values::from([
            ("a".to_owned(), put(b"1")),
            ("b".to_owned(), put(b"2")),
            ("old".to_owned(), None),
        ]);
        store.apply(&good).unwrap();
        assert_eq!(store.get("a").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(store.get("old").unwrap(), None);
        assert_eq!(
            store.increment("old", 0, None).unwrap(),
            0,
            "its counter went too"
        );
        wait(
            store
                .apply_async(&Values::from([
                    ("a".to_owned(), None),
                    ("c".to_owned(), put(b"3")),
                ]))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(store.list_keys("").unwrap(), ["b", "c"]);
    }

    #[test]
    #[ignore = "needs a Postgres server: MFA_STEP_TEST_POSTGRES (run by .ci/suites)"]
    fn postgres_place_linked_from_two_nodes_never_conflicts_and_the_chain_holds() {
        let scratch = Scratch::new();
        let (first, second) = two_sinks(&scratch);
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let sink = Arc::clone(if t % 2 == 0 { &first } else { &second });
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    let relinker = relinker();
                    barrier.wait();
                    for i in 0..25 {
                        // Linked to a head long gone, as a busy component's guess would be.
                        let entry = linked("acme", &format!("t{t}-{i}"), None);
                        let (placed, head) = sink.place_linked(&entry, &relinker).unwrap();
                        assert_eq!(placed, Placed::Durable);
                        assert!(head.seq >= 1);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(verify_stream(&scratch, "acme"), 200);
        assert_eq!(first.head("acme").unwrap().map(|h| h.seq), Some(200));
        // A record that cannot be relinked (no key to seal it with) is refused, nothing written.
        let stale = linked("acme", "stale", None);
        assert!(first.place_linked(&stale, &Relinker::new(None)).is_err());
        assert_eq!(verify_stream(&scratch, "acme"), 200);
    }

    #[test]
    #[ignore = "needs a Postgres server: MFA_STEP_TEST_POSTGRES (run by .ci/suites)"]
    fn postgres_units_from_16_threads_commit_together_and_a_bad_one_fails_alone() {
        let scratch = Scratch::new();
        let store = Arc::new(scratch.store());
        let barrier = Arc::new(std::sync::Barrier::new(16));
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let store = Arc::clone(&store);
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    let relinker = relinker();
                    let no_key = Relinker::new(None);
                    barrier.wait();
                    let mut kept = 0;
                    for i in 0..20 {
                        let note = format!("t{t}-{i}");
                        let bad = i % 7 == 3;
                        let unit = Unit {
                            values: Values::from([
                                (format!("v/{note}"), put(note.as_bytes())),
                                (format!("gone/{t}"), None),
                            ]),
                            records: vec![
                                linked("acme", &note, None),
                                linked("acme", &format!("{note}+"), None),
                            ],
                            counted: true,
                        };
                        let outcome = commit(&store, &unit, if bad { &no_key } else { &relinker });
                        if bad {
                            // Its stream has moved on (this thread's first unit is in it), and
                            // with no key its records cannot be resealed at a new place.
                            let refused = outcome.unwrap_err().0;
                            assert!(refused.contains("cannot relink"), "{refused}");
                            continue;
                        }
                        let heads = outcome.unwrap();
                        assert_eq!(heads.len(), 1);
                        assert_eq!(heads[0].0, "acme");
                        kept += 1;
                    }
                    kept
                })
            })
            .collect();
        let kept: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(kept, 16 * 17);
        assert_eq!(verify_stream(&scratch, "acme"), 2 * kept);
        // Every kept unit's value is there, and no refused one's.
        let mut client = scratch.client();
        let values: i64 = client
            .query_one("SELECT count(*) FROM mfa_step_kv WHERE key LIKE 'v/%'", &[])
            .unwrap()
            .get(0);
        assert_eq!(u64::try_from(values).unwrap(), kept);
        for t in 0..16 {
            for i in 0..20 {
                let note = format!("t{t}-{i}");
                let value = store.get(&format!("v/{note}")).unwrap();
                if value.is_some() {
                    assert_eq!(value.as_deref(), Some(note.as_bytes()));
                    // Its two records are in the stream.
                    for reason in [note.clone(), format!("{note}+")] {
                        let n: i64 = client
                            .query_one(
                                "SELECT count(*) FROM mfa_step_audit_log WHERE line LIKE $1",
                                &[&format!("%\"{reason}\"%")],
                            )
                            .unwrap()
                            .get(0);
                        assert_eq!(n, 1, "{reason}");
                    }
                }
            }
        }
        let (commits, units) = store.commit_stats();
        assert!(commits < units, "{commits} commits for {units} units");
    }

    #[test]
    #[ignore = "needs a Postgres server: MFA_STEP_TEST_POSTGRES (run by .ci/suites)"]
    fn postgres_a_units_values_and_records_are_kept_together_or_not_at_all() {
        let scratch = Scratch::new();
        let store = scratch.store();
        let relinker = relinker();
        commit(
            &store,
            &Unit {
                values: Values::from([("first".to_owned(), put(b"1"))]),
                records: vec![linked("acme", "first", None)],
                counted: false,
            },
            &relinker,
        )
        .unwrap();
        // A record that cannot be relinked: its values are not kept either.
        let unlinkable = Unit {
            values: Values::from([("second".to_owned(), put(b"2"))]),
            records: vec![linked("acme", "second", None)],
            counted: true,
        };
        assert!(commit(&store, &unlinkable, &Relinker::new(None)).is_err());
        assert_eq!(store.get("second").unwrap(), None);
        // A record the server refuses (a NUL byte cannot be stored as text): the batch fails,
        // each unit is tried alone, and only the refused one is lost, values and all.
        let refused = Unit {
            values: Values::from([("third".to_owned(), put(b"3"))]),
            records: vec![{
                let mut entry = linked("beta", "third", None);
                entry.line.push('\0');
                entry
            }],
            counted: false,
        };
        let good = Unit {
            values: Values::from([("fourth".to_owned(), put(b"4"))]),
            records: vec![linked("acme", "fourth", None)],
            counted: false,
        };
        let database = store.database().to_owned();
        let (refused, good) = (
            store
                .commit_unit(&refused, Some(&database), &relinker)
                .unwrap(),
            store
                .commit_unit(&good, Some(&database), &relinker)
                .unwrap(),
        );
        assert!(wait(refused).is_err());
        let heads = wait(good).unwrap();
        assert_eq!(heads[0].1.seq, 2);
        assert_eq!(store.get("third").unwrap(), None);
        assert_eq!(store.get("fourth").unwrap().as_deref(), Some(&b"4"[..]));
        assert_eq!(verify_stream(&scratch, "acme"), 2);
        assert_eq!(verify_stream(&scratch, "beta"), 0);
        // A unit for another database is left to the host.
        assert!(
            store
                .commit_unit(&unlinkable, Some("sqlite:/x"), &relinker)
                .is_none()
        );
        assert!(
            store
                .commit_unit(&Unit::default(), Some(&database), &relinker)
                .is_none()
        );
    }

    #[test]
    #[ignore = "needs a Postgres server: MFA_STEP_TEST_POSTGRES (run by .ci/suites)"]
    fn postgres_handed_over_calls_answer_as_the_synchronous_ones_do() {
        let scratch = Scratch::new();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            // Made inside a runtime, as `serve` makes it: reads and increments are asynchronous.
            let store = Arc::new(scratch.store());
            assert!(format!("{store:?}").contains("asynchronous: true"));
            store
                .set_async("k", b"v", Some(100))
                .unwrap()
                .await
                .unwrap();
            assert_eq!(
                store.get_async("k").unwrap().await.unwrap().as_deref(),
                Some(&b"v"[..])
            );
            assert_eq!(store.get_async("none").unwrap().await.unwrap(), None);
            assert_eq!(store.list_keys_async("").unwrap().await.unwrap(), ["k"]);
            assert_eq!(
                store.list_keys_async("x").unwrap().await.unwrap(),
                Vec::<String>::new()
            );
            let refused = store.get_async("bad\nkey").unwrap().await;
            assert!(refused.unwrap_err().0.starts_with("invalid key"));
            assert_eq!(
                store.increment_async("n", 0, None).unwrap().await.unwrap(),
                0
            );
            assert_eq!(
                store
                    .increment_async("n", 2, Some(50))
                    .unwrap()
                    .await
                    .unwrap(),
                2
            );
            assert_eq!(
                store
                    .increment_async("n", 0, Some(80))
                    .unwrap()
                    .await
                    .unwrap(),
                2
            );
            store
                .increment_async("big", i64::MAX, None)
                .unwrap()
                .await
                .unwrap();
            let overflow_refused = store.increment_async("big", 1, None).unwrap().await;
            assert_eq!(overflow_refused.unwrap_err(), overflow());
            store.delete_async("k").unwrap().await.unwrap();
            // The synchronous calls, where a thread may block.
            let sync = |call: fn(&PostgresStore) -> u64| {
                let store = Arc::clone(&store);
                tokio::task::spawn_blocking(move || call(&store))
            };
            let found = sync(|s| u64::from(s.get("k").unwrap().is_some())).await;
            assert_eq!(found.unwrap(), 0);
            assert_eq!(
                sync(|s| s.sweep(79).unwrap()).await.unwrap(),
                0,
                "extended to 80"
            );
            assert_eq!(sync(|s| s.sweep(80).unwrap()).await.unwrap(), 1);

            // 64 tasks at once: every value handed out once, on a few pipelined connections.
            let tasks: Vec<_> = (0..64)
                .map(|_| {
                    let store = Arc::clone(&store);
                    tokio::spawn(
                        async move { store.increment_async("hits", 1, None).unwrap().await },
                    )
                })
                .collect();
            let mut seen = Vec::new();
            for task in tasks {
                seen.push(task.await.unwrap().unwrap());
            }
            seen.sort_unstable();
            assert_eq!(seen, (1..=64).collect::<Vec<_>>());
            let open = store.reads.as_ref().unwrap().conns.lock().unwrap().len();
            assert!((1..=ASYNC_CONNECTIONS).contains(&open), "{open}");

            // Once a unit has been committed, increments skip the flush, and a unit with
            // nothing else to write flushes the WAL with the writer's row.
            let database = store.database().to_owned();
            let unit = Unit {
                values: Values::from([("u".to_owned(), put(b"1"))]),
                records: vec![linked("acme", "u", None)],
                counted: true,
            };
            store
                .commit_unit(&unit, Some(&database), &relinker())
                .unwrap()
                .await
                .unwrap();
            assert_eq!(
                store
                    .increment_async("hits", 1, None)
                    .unwrap()
                    .await
                    .unwrap(),
                65
            );
            let counted = Unit {
                counted: true,
                ..Unit::default()
            };
            let flushed = store.commit_unit(&counted, Some(&database), &relinker());
            assert_eq!(flushed.unwrap().await.unwrap(), []);
            let rows: i64 = tokio::task::spawn_blocking({
                let url = scratch.url.clone();
                move || {
                    Client::connect(&url, NoTls)
                        .unwrap()
                        .query_one(
                            "SELECT count(*) FROM mfa_step_counters WHERE key LIKE chr(1) || '%'",
                            &[],
                        )
                        .unwrap()
                        .get(0)
                }
            })
            .await
            .unwrap();
            assert_eq!(rows, 1, "the flush row");
            // Dropped inside the runtime: nothing blocks or panics.
            drop(store);
        });
    }

    // Tests that need no server.

    #[test]
    fn postgres_backends_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<PostgresStore>();
        assert_send_sync::<PostgresAuditSink>();
    }

    #[test]
    fn an_unreachable_or_malformed_url_fails_without_showing_the_password() {
        // Port 1 on loopback: refused at once, no server needed.
        let url = "postgres://mfa:s3cret-Pa55@127.0.0.1:1/mfa?connect_timeout=5";
        let errors = [
            PostgresStore::connect(url).unwrap_err().to_string(),
            PostgresAuditSink::connect(url).unwrap_err().to_string(),
        ];
        for err in &errors {
            assert!(err.contains("postgres://mfa@127.0.0.1:1/mfa"), "{err}");
            assert!(!err.contains("s3cret"), "{err}");
        }
        for malformed in [
            "host=127.0.0.1 password='s3cret-Pa55",
            "postgres://mfa:s3cret-Pa55@127.0.0.1:port/mfa",
            "postgres://mfa:s3cret-Pa55@127.0.0.1/mfa?s3cret=1&sslmode=s3cret",
        ] {
            let err = PostgresStore::connect(malformed).unwrap_err().to_string();
            assert!(err.contains("Postgres URL"), "{err}");
            assert!(!err.contains("s3cret-Pa55"), "{err}");
        }
    }

    #[test]
    fn the_server_is_described_without_its_password() {
        let (_, server) = parse_url("postgresql://mfa:pw%40x@db.internal,[::1]:6543/prod").unwrap();
        assert_eq!(server, "postgres://mfa@db.internal:5432,[::1]:6543/prod");
        let (config, server) =
            parse_url("postgres://mfa:pw@db:5433/prod?connect_timeout=2").unwrap();
        assert_eq!(server, "postgres://mfa@db:5433/prod");
        assert_eq!(config.get_connect_timeout(), Some(&Duration::from_secs(2)));
        assert_eq!(config.get_application_name(), Some("mfa-step"));
    }
}
