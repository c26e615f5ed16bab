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
//!   (both on by default) make it.
//!
//! Schema: `connect` creates the tables (`mfa_step_kv`, `mfa_step_counters`, `mfa_step_audit_log`)
//! in the first schema of the connection's `search_path`, in one transaction under an advisory lock
//! so that nodes starting at once do not race, and records its version in `mfa_step_schema`. Store
//! and audit sink share that one schema, so they may use one database or two. A database whose
//! schema a newer host made is refused rather than misused.
//!
//! Connections: each handle keeps up to 16 idle connections and opens another when none is idle.
//! A connection that broke (the server restarted, a proxy cut it) is dropped, never reused; one
//! idle for a while is checked before use. There is no TLS (no TLS stack is linked for Postgres):
//! reach the server over a private network or a Unix socket; `sslmode=require` fails at connect.
//!
//! Secrets: the URL's password never appears in a `Debug`, an error or a log. Server errors are
//! shown by SQLSTATE and message, never with their `DETAIL`, which can quote a key.
//!
//! Calls block the calling thread, and each connection drives its own small tokio runtime: call
//! these from a thread that may block (tokio's `spawn_blocking`, as `serve` does with `offload`),
//! never from an async task, where the client panics. `connect` and dropping are safe anywhere.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mfa_step_core::kernel::ports::{
    AppendError, AuditEntry, AuditSink, GENESIS, Head, PortError, PortResult, Store,
};
use postgres::config::Host;
use postgres::error::{Severity, SqlState};
use postgres::{Client, Config, NoTls, Statement};

use super::audit::{HostAuditSink, validate_line};
use super::store::{HostStore, Sweep, overflow, validate_key, validate_prefix, validate_value};
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
const MIGRATIONS: [&str; 1] = [r#"
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
"#];

// ---------------------------------------------------------------------------------------------
// Connections

/// Connections to one database, kept for reuse.
struct Pool {
    config: Config,
    /// The database as `postgres://user@host:port/name`, without the password.
    server: String,
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
        let (config, server) = parse_url(url)?;
        let pool = Self {
            config,
            server,
            what,
            idle: Mutex::new(Vec::new()),
            slots: CallSlots::new(),
        };
        let first = off_runtime(|| {
            let mut conn = pool.open().map_err(|e| describe(&e))?;
            migrate(&mut conn.client)?;
            Ok::<_, String>(conn)
        })
        .unwrap_or_else(|| Err("the thread connecting to it panicked".to_owned()))
        .map_err(|reason| {
            BackendError::Config(format!(
                "cannot use the Postgres database {}: {reason}",
                pool.server
            ))
        })?;
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
fn parse_url(url: &str) -> super::Result<(Config, String)> {
    // Only the URL form: its parser's errors name options, never values; the `key=value` form's
    // can quote a character of the password.
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(BackendError::Config(
            "the Postgres URL must start with postgres:// or postgresql:// \
             (e.g. postgres://mfa:PASSWORD@db.internal:5432/mfa)"
                .to_owned(),
        ));
    }
    let mut config: Config = url.parse().map_err(|e| {
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
fn describe_server(config: &Config) -> String {
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
    pool: Pool,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/name`, with any
    /// option rust-postgres reads, e.g. `?connect_timeout=5`) and brings it to the current schema.
    ///
    /// # Errors
    /// The URL is malformed, the server cannot be reached or refuses the login, the schema cannot
    /// be created, or a newer host made it. The message names the host, never the password.
    pub fn connect(url: &str) -> super::Result<Self> {
        Ok(Self {
            pool: Pool::connect(url, "the Postgres store")?,
        })
    }

    /// The database, as `postgres://user@host:port/name` (no password).
    #[must_use]
    pub fn server(&self) -> &str {
        &self.pool.server
    }
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("server", &self.pool.server)
            .finish_non_exhaustive()
    }
}

// Every call is a network round trip: the host runs them on its blocking pool.
impl HostStore for PostgresStore {}

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
        outcome.map_err(|e| {
            if e.code() == Some(&SqlState::NUMERIC_VALUE_OUT_OF_RANGE) {
                overflow()
            } else {
                port_error("increment", &e)
            }
        })
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

impl HostAuditSink for PostgresAuditSink {}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly on purpose"
)]
mod tests {
    use super::*;
    use crate::backends::audit::tests::{append, linked};
    use crate::backends::store::tests::{
        check_backlog_sweep, check_expiry, check_limits, check_semantics, increment_concurrently,
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
            (1, Some(1))
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
