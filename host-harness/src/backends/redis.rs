//! [`RedisStore`]: the store in Redis (7.0 or later) or Valkey, shared by several `serve` nodes.
//!
//! It keeps the contract of `wit/store.wit` exactly as [`SqliteStore`](super::SqliteStore) does
//! (same limits, same `invalid …` and overflow messages), with Redis doing the expiry:
//!
//! ```text
//!   {prefix}:v:{key}   a value      SET … [EXAT at]                     get / set / delete
//!   {prefix}:c:{key}   a counter    one Lua script: INCRBY + EXPIREAT   increment / delete
//!   {prefix}:index     sorted set of the value keys (all score 0)       list_keys / sweep
//! ```
//!
//! - Two namespaces: `get` and `list_keys` never see a counter; `delete` removes both keys in one
//!   `DEL`, and the key's index entry in the same `MULTI`/`EXEC`. `set` writes the value and its
//!   index entry in one `MULTI`/`EXEC` too.
//! - `increment` is one Lua script, so it is atomic for every node sharing the server: it adds
//!   with `INCRBY` (which refuses to overflow and leaves the counter unchanged) and applies the
//!   expiry rule: a counter created by the call takes the expiry given, one that has an expiry
//!   keeps the later of the two (`EXPIREAT … GT`, hence Redis 7.0, checked by [`RedisStore::connect`]),
//!   one kept for good stays so. A read (`delta` 0) creates nothing.
//! - Expiry is Redis's own: an expired key is gone at once for every reader (the contract allows
//!   forgetting it any time after its expiry). Redis expires by **its** clock while the component
//!   chooses expiries by the host's, so the two must agree (NTP on both); `connect` warns when
//!   they differ by more than [`CLOCK_SKEW_WARNING`] seconds. Expiries Redis cannot take are
//!   clamped: one at or before the Unix epoch becomes second 1 (gone at once), one past year
//!   292 million becomes that year (kept in practice for good).
//! - `list_keys` reads a range of the index (`ZRANGE … BYLEX`: keys are printable ASCII, so every
//!   key with the prefix sorts in `[prefix, prefix + 0x7F)`), never the keyspace; names whose value
//!   has expired are dropped from the answer and pruned from the index.
//! - [`Sweep::sweep`] prunes index entries whose value Redis has expired (Redis forgets the keys
//!   themselves), a [`SWEEP_CHUNK`] at a time. Pruning is a Lua script that removes a name only if
//!   its value is still absent, so a name set again meanwhile keeps its entry.
//!
//! Durability is the server's: the contract's "durable before `ok`" needs `appendonly yes` with
//! `appendfsync always` (or a replica setup that waits); `connect` warns when it can see that the
//! server does not fsync every write. Standalone Redis or Valkey only, not Redis Cluster (a
//! `delete` spans keys in different slots). No TLS (`rediss://`): the client is built without it.
//!
//! Connections: a small pool of synchronous connections ([`MAX_IDLE`] kept idle; more opened when
//! needed), each with [`IO_TIMEOUT`] on connect, read and write. A connection whose call failed
//! with an I/O error is dropped, not reused. Calls block; async callers use `spawn_blocking`.
//!
//! Error messages name the operation and what Redis said, never a value or the password; a
//! server is described as `redis://[user:<redacted>@]host:port/db` (also by `Debug`).

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::redis::{
    Client, ConnectionAddr, ConnectionInfo, ConnectionLike, ErrorKind, IntoConnectionInfo,
    RedisError, RedisResult, Script,
};
use mfa_step_core::kernel::ports::{PortError, PortResult, Store};

use super::store::{HostStore, overflow, validate_prefix};
use super::{BackendError, CallSlots, Sweep, lock, validate_key, validate_value};

/// The namespace [`RedisStore::connect`] uses.
pub const DEFAULT_PREFIX: &str = "mfa-step";

/// How long connecting, sending a command or waiting for its reply may take.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// How many idle connections the pool keeps; more are opened when needed and closed after use.
pub const MAX_IDLE: usize = 16;

/// How many index entries one step of a sweep reads (`ZSCAN … COUNT`) and checks.
pub const SWEEP_CHUNK: usize = 500;

/// How far (seconds) Redis's clock may be from the host's before `connect` warns.
pub const CLOCK_SKEW_WARNING: i64 = 2;

/// The longest namespace prefix, in bytes.
const MAX_PREFIX_BYTES: usize = 64;

/// The latest expiry Redis takes: it keeps expiries in milliseconds, in an `i64`.
const LATEST_EXPIRY: i64 = i64::MAX / 1000;

/// The error code the increment script answers an overflow with.
const OVERFLOW_CODE: &str = "MFASTEP_OVERFLOW";

/// `KEYS[1]`: the counter. `ARGV[1]`: delta (decimal), `ARGV[2]`: expiry (Unix seconds) or empty.
/// Answers the new value as a string (a Lua number is a double and would round a large counter),
/// or nil for a read of an absent counter.
const INCREMENT_SCRIPT: &str = r"
local existed = redis.call('EXISTS', KEYS[1]) == 1
if ARGV[1] == '0' and not existed then
  return false
end
if ARGV[1] ~= '0' then
  local added = redis.pcall('INCRBY', KEYS[1], ARGV[1])
  if type(added) == 'table' and added.err then
    if string.find(added.err, 'overflow', 1, true) then
      return redis.error_reply('MFASTEP_OVERFLOW the increment would leave the 64-bit range')
    end
    return added
  end
end
local value = redis.call('GET', KEYS[1])
if ARGV[2] ~= '' then
  if not existed then
    redis.call('EXPIREAT', KEYS[1], ARGV[2])
  elseif redis.call('PTTL', KEYS[1]) >= 0 then
    redis.call('EXPIREAT', KEYS[1], ARGV[2], 'GT')
  end
end
return value
";

/// `KEYS[1]`: the index; `KEYS[i + 1]`: the value key of the name `ARGV[i]`. Removes each name
/// whose value is absent now (checked again here: a name set since it was found stale stays).
/// Answers how many it removed.
const PRUNE_SCRIPT: &str = r"
local removed = 0
for i, name in ipairs(ARGV) do
  if redis.call('EXISTS', KEYS[i + 1]) == 0 then
    removed = removed + redis.call('ZREM', KEYS[1], name)
  end
end
return removed
";

/// A store in one Redis (or Valkey) database, safe to share between threads and between hosts.
pub struct RedisStore {
    pool: Pool,
    keys: Keys,
    increment_script: Script,
    prune_script: Script,
}

/// Where a store's keys live in the database.
struct Keys {
    prefix: String,
    index: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            index: format!("{prefix}:index"),
        }
    }

    fn value(&self, key: &str) -> String {
        format!("{}:v:{key}", self.prefix)
    }

    fn counter(&self, key: &str) -> String {
        format!("{}:c:{key}", self.prefix)
    }
}

/// Connections to one server: the idle ones, and how to open more.
struct Pool {
    client: Client,
    /// `redis://[user:<redacted>@]host:port/db`, for messages and `Debug`.
    target: String,
    idle: Mutex<Vec<::redis::Connection>>,
    /// The calls running now: at most [`CallSlots::MAX`], and so as many connections.
    slots: CallSlots,
}

impl Pool {
    fn open(&self) -> RedisResult<::redis::Connection> {
        let conn = self.client.get_connection_with_timeout(IO_TIMEOUT)?;
        conn.set_read_timeout(Some(IO_TIMEOUT))?;
        conn.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(conn)
    }

    /// Runs `call` on an idle connection (or a new one), then keeps the connection for the next
    /// call unless it broke: after an I/O error (a timeout included) a reply may still be on its
    /// way, and reading it as the next call's reply would mix two calls up.
    fn call<T>(
        &self,
        op: &str,
        call: impl FnOnce(&mut ::redis::Connection) -> RedisResult<T>,
    ) -> PortResult<T> {
        let _slot = self.slots.take("the Redis connection pool", || {
            format!(
                "redis {op} failed: all {} connections to {} stayed busy for {} s",
                CallSlots::MAX,
                self.target,
                CallSlots::WAIT.as_secs()
            )
        })?;
        let idle = lock(&self.idle, "the Redis connection pool")?.pop();
        let mut conn = match idle {
            Some(conn) => conn,
            None => self.open().map_err(|e| redis_error(op, &e))?,
        };
        let outcome = call(&mut conn);
        let broken = match &outcome {
            Err(e) => e.is_io_error() || e.is_unrecoverable_error(),
            Ok(_) => false,
        };
        if !broken && conn.is_open() {
            // A poisoned pool only loses this connection; the call's outcome stands.
            if let Ok(mut idle) = self.idle.lock()
                && idle.len() < MAX_IDLE
            {
                idle.push(conn);
            }
        }
        outcome.map_err(|e| redis_error(op, &e))
    }
}

/// Describes a failed call. A type error is not repeated: redis-rs quotes the reply in it, which
/// may be a value.
fn redis_error(op: &str, e: &RedisError) -> PortError {
    if e.code() == Some(OVERFLOW_CODE) {
        return overflow();
    }
    if e.kind() == ErrorKind::TypeError {
        return PortError(format!(
            "redis {op} failed: the reply was not of the type expected (a key holding something \
             else than mfa-step put there?)"
        ));
    }
    PortError(format!("redis {op} failed: {e}"))
}

/// `redis://[user:<redacted>@]host:port/db`: where a connection goes, never its password.
fn describe(info: &ConnectionInfo) -> String {
    let auth = match (&info.redis.username, &info.redis.password) {
        (None, None) => String::new(),
        (user, password) => format!(
            "{}{}@",
            user.as_deref().unwrap_or(""),
            if password.is_some() {
                ":<redacted>"
            } else {
                ""
            }
        ),
    };
    match &info.addr {
        ConnectionAddr::Unix(path) => {
            format!("redis+unix://{auth}{}?db={}", path.display(), info.redis.db)
        }
        ConnectionAddr::TcpTls { host, port, .. } => {
            format!("rediss://{auth}{host}:{port}/{}", info.redis.db)
        }
        addr => format!("redis://{auth}{addr}/{}", info.redis.db),
    }
}

/// An expiry Redis takes: `EXAT` refuses 0 and negative times, and both `EXAT` and `EXPIREAT`
/// refuse times whose milliseconds overflow. Clamping keeps the order of expiries, and the
/// meaning (already past; kept in practice for good).
fn redis_expiry(at: i64) -> i64 {
    at.clamp(1, LATEST_EXPIRY)
}

impl RedisStore {
    /// Connects to the server at `url` (`redis://[[user]:password@]host[:port][/db]` or
    /// `redis+unix:///path?db=N`) with the keys under `mfa-step:`. See
    /// [`connect_with_prefix`](Self::connect_with_prefix).
    ///
    /// # Errors
    /// As [`connect_with_prefix`](Self::connect_with_prefix).
    pub fn connect(url: &str) -> super::Result<Self> {
        Self::connect_with_prefix(url, DEFAULT_PREFIX)
    }

    /// Connects to the server at `url` with the keys under `{prefix}:` (several deployments, or
    /// tests, can share a database), checks that it is Redis 7.0 or later, and warns (log) when
    /// its clock is off from the host's or it does not fsync every write.
    ///
    /// # Errors
    /// [`BackendError::Config`] when the prefix is empty, longer than 64 bytes or not printable
    /// ASCII, the URL does not parse (it is not repeated: it may hold a password), the server
    /// cannot be reached or refuses the credentials (the message names `host:port/db`, never the
    /// password), or the server is older than 7.0.
    pub fn connect_with_prefix(url: &str, prefix: &str) -> super::Result<Self> {
        if prefix.is_empty() || prefix.len() > MAX_PREFIX_BYTES || validate_prefix(prefix).is_err()
        {
            return Err(BackendError::Config(format!(
                "the Redis key prefix must be 1 to {MAX_PREFIX_BYTES} bytes of printable ASCII"
            )));
        }
        let info = url.into_connection_info().map_err(|e| {
            BackendError::Config(format!(
                "the Redis URL does not parse ({e}); expected \
                 redis://[[user]:password@]host[:port][/db] (the URL is not repeated here: it may \
                 hold a password)"
            ))
        })?;
        let target = describe(&info);
        let unreachable =
            |e: RedisError| BackendError::Config(format!("cannot use Redis at {target}: {e}"));
        let client = Client::open(info.clone()).map_err(unreachable)?;
        let pool = Pool {
            client,
            target: target.clone(),
            idle: Mutex::new(Vec::new()),
            slots: CallSlots::new(),
        };
        let mut conn = pool.open().map_err(unreachable)?;
        let info_server: String = ::redis::cmd("INFO")
            .arg("server")
            .query(&mut conn)
            .map_err(unreachable)?;
        check_version(&info_server, &target)?;
        warn_about_clock(&mut conn, &target);
        warn_about_durability(&mut conn, &target);
        if let Ok(mut idle) = pool.idle.lock() {
            idle.push(conn);
        }
        Ok(Self {
            pool,
            keys: Keys::new(prefix),
            increment_script: Script::new(INCREMENT_SCRIPT),
            prune_script: Script::new(PRUNE_SCRIPT),
        })
    }

    /// The server's clock, Unix seconds (`TIME`): the one Redis expires keys by.
    ///
    /// # Errors
    /// Redis failed.
    pub fn server_time(&self) -> PortResult<i64> {
        self.pool.call("time", server_time)
    }

    /// Removes from the index those of `names` whose value is gone; answers how many it removed.
    fn prune(&self, conn: &mut ::redis::Connection, names: &[String]) -> RedisResult<u64> {
        if names.is_empty() {
            return Ok(0);
        }
        let mut invocation = self.prune_script.key(&self.keys.index);
        for name in names {
            invocation.key(self.keys.value(name));
        }
        invocation.arg(names).invoke(conn)
    }

    /// The names among `names` whose value exists, and those whose value is gone.
    fn split_live(
        &self,
        conn: &mut ::redis::Connection,
        names: Vec<String>,
    ) -> RedisResult<(Vec<String>, Vec<String>)> {
        if names.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let mut pipe = ::redis::pipe();
        for name in &names {
            pipe.exists(self.keys.value(name));
        }
        let exists: Vec<bool> = pipe.query(conn)?;
        let (live, gone): (Vec<_>, Vec<_>) = names
            .into_iter()
            .zip(exists)
            .partition(|(_, exists)| *exists);
        Ok((
            live.into_iter().map(|(name, _)| name).collect(),
            gone.into_iter().map(|(name, _)| name).collect(),
        ))
    }
}

fn server_time(conn: &mut ::redis::Connection) -> RedisResult<i64> {
    let (seconds, _micros): (i64, i64) = ::redis::cmd("TIME").query(conn)?;
    Ok(seconds)
}

/// Refuses a server older than 7.0 (`EXPIREAT … GT`). A server that hides its version (`INFO`
/// renamed or filtered) is let through: on an older one, `increment` with an expiry then fails
/// (closed) instead of keeping a wrong expiry.
fn check_version(info_server: &str, target: &str) -> super::Result<()> {
    let version = info_server
        .lines()
        .find_map(|line| line.trim().strip_prefix("redis_version:"));
    let major = version
        .and_then(|v| v.split('.').next())
        .and_then(|major| major.parse::<u32>().ok());
    match (version, major) {
        (Some(version), Some(major)) if major < 7 => Err(BackendError::Config(format!(
            "Redis at {target} is version {version}; mfa-step needs 7.0 or later (EXPIREAT … GT)"
        ))),
        _ => Ok(()),
    }
}

/// Logs a warning when Redis's clock is more than [`CLOCK_SKEW_WARNING`] seconds off the host's:
/// keys would then expire early or late by that much.
fn warn_about_clock(conn: &mut ::redis::Connection, target: &str) {
    let host = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    match server_time(conn) {
        Ok(redis) if (redis - host).abs() > CLOCK_SKEW_WARNING => tracing::warn!(
            redis = %target,
            skew_seconds = redis - host,
            "Redis's clock is off from this host's: keys will expire early or late by that much"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(redis = %target, error = %e, "cannot read Redis's clock"),
    }
}

/// Logs a warning when the server says it does not fsync every write (`CONFIG GET` allowed):
/// an acknowledged write could then be lost in a crash; and when it may evict keys before their
/// expiry. Silent when it cannot tell.
fn warn_about_durability(conn: &mut ::redis::Connection, target: &str) {
    let config = |name: &str, conn: &mut ::redis::Connection| {
        ::redis::cmd("CONFIG")
            .arg("GET")
            .arg(name)
            .query::<Vec<String>>(conn)
            .ok()
            .and_then(|pair| pair.into_iter().nth(1))
    };
    let appendonly = config("appendonly", conn);
    let appendfsync = config("appendfsync", conn);
    if let (Some(appendonly), Some(appendfsync)) = (appendonly, appendfsync)
        && (appendonly != "yes" || appendfsync != "always")
    {
        tracing::warn!(
            redis = %target,
            %appendonly,
            %appendfsync,
            "Redis does not fsync every write: an acknowledged write can be lost in a crash \
             (set appendonly yes, appendfsync always)"
        );
    }
    // A key evicted before its expiry is a counter reset: a send cap or a guess limit forgotten.
    if let Some(policy) = config("maxmemory-policy", conn)
        && policy != "noeviction"
    {
        tracing::warn!(
            redis = %target,
            %policy,
            "Redis may evict keys before they expire, which forgets send caps and guess limits \
             early (set maxmemory-policy noeviction)"
        );
    }
}

impl fmt::Debug for RedisStore {
    /// Shows where the store is, never the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.pool.target)
            .field("prefix", &self.keys.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Queues a `set` of a checked key and value: the value (a plain SET drops any earlier expiry,
    /// as `set` replaces it) and its name in the index.
    fn queue_set(&self, pipe: &mut ::redis::Pipeline, key: &str, value: &[u8], at: Option<i64>) {
        pipe.cmd("SET").arg(self.keys.value(key)).arg(value);
        if let Some(at) = at {
            pipe.arg("EXAT").arg(redis_expiry(at));
        }
        pipe.ignore()
            .cmd("ZADD")
            .arg(&self.keys.index)
            .arg(0)
            .arg(key)
            .ignore();
    }

    /// Queues a `delete` of a checked key: its value, its counter and its name in the index.
    fn queue_delete(&self, pipe: &mut ::redis::Pipeline, key: &str) {
        pipe.cmd("DEL")
            .arg(self.keys.value(key))
            .arg(self.keys.counter(key))
            .ignore()
            .cmd("ZREM")
            .arg(&self.keys.index)
            .arg(key)
            .ignore();
    }
}

// Every call is a network round trip: the host runs them on its blocking pool.
impl HostStore for RedisStore {
    /// One `MULTI`/`EXEC` transaction: Redis runs all of it or, if it is refused before running
    /// (a command it cannot queue), none of it.
    fn apply(&self, values: &super::Values) -> PortResult<()> {
        for (key, put) in values {
            validate_key(key)?;
            if let Some(put) = put {
                validate_value(&put.value)?;
            }
        }
        if values.is_empty() {
            return Ok(());
        }
        let mut pipe = ::redis::pipe();
        pipe.atomic();
        for (key, put) in values {
            match put {
                Some(put) => self.queue_set(&mut pipe, key, &put.value, put.expires_at),
                None => self.queue_delete(&mut pipe, key),
            }
        }
        self.pool.call("commit", |conn| pipe.query::<()>(conn))
    }
}

impl Store for RedisStore {
    fn get(&self, key: &str) -> PortResult<Option<Vec<u8>>> {
        validate_key(key)?;
        let value_key = self.keys.value(key);
        self.pool.call("get", |conn| {
            ::redis::cmd("GET").arg(&value_key).query(conn)
        })
    }

    fn set(&self, key: &str, value: &[u8], expires_at: Option<i64>) -> PortResult<()> {
        validate_key(key)?;
        validate_value(value)?;
        let mut pipe = ::redis::pipe();
        pipe.atomic();
        self.queue_set(&mut pipe, key, value, expires_at);
        self.pool.call("set", |conn| pipe.query::<()>(conn))
    }

    fn delete(&self, key: &str) -> PortResult<()> {
        validate_key(key)?;
        let mut pipe = ::redis::pipe();
        pipe.atomic();
        self.queue_delete(&mut pipe, key);
        self.pool.call("delete", |conn| pipe.query::<()>(conn))
    }

    fn increment(&self, key: &str, delta: i64, expires_at: Option<i64>) -> PortResult<i64> {
        validate_key(key)?;
        let counter = self.keys.counter(key);
        if delta == 0 && expires_at.is_none() {
            // A plain read creates nothing and writes nothing.
            return self
                .pool
                .call("increment", |conn| {
                    ::redis::cmd("GET").arg(&counter).query::<Option<i64>>(conn)
                })
                .map(Option::unwrap_or_default);
        }
        let at = expires_at.map(|at| redis_expiry(at).to_string());
        self.pool
            .call("increment", |conn| {
                self.increment_script
                    .key(&counter)
                    .arg(delta)
                    .arg(at.as_deref().unwrap_or(""))
                    .invoke::<Option<i64>>(conn)
            })
            .map(Option::unwrap_or_default)
    }

    fn list_keys(&self, prefix: &str) -> PortResult<Vec<String>> {
        validate_prefix(prefix)?;
        let (low, high) = (format!("[{prefix}"), format!("({prefix}\u{7f}"));
        self.pool.call("list_keys", |conn| {
            let names: Vec<String> = ::redis::cmd("ZRANGE")
                .arg(&self.keys.index)
                .arg(&low)
                .arg(&high)
                .arg("BYLEX")
                .query(conn)?;
            let (live, gone) = self.split_live(conn, names)?;
            self.prune(conn, &gone)?;
            Ok(live)
        })
    }
}

impl Sweep for RedisStore {
    /// Redis forgets expired keys by itself, by its own clock (so `now` is not used: the host's
    /// clock and Redis's must agree). This prunes the index of the names whose value Redis has
    /// forgotten, [`SWEEP_CHUNK`] entries at a time, and answers how many entries it removed.
    fn sweep(&self, _now: i64) -> PortResult<u64> {
        let mut cursor = 0_u64;
        let mut removed = 0_u64;
        loop {
            let (next, chunk_removed) = self.pool.call("sweep", |conn| {
                let (next, entries): (u64, Vec<String>) = ::redis::cmd("ZSCAN")
                    .arg(&self.keys.index)
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(SWEEP_CHUNK)
                    .query(conn)?;
                // Members and scores alternate.
                let names = entries.into_iter().step_by(2).collect();
                let (_, gone) = self.split_live(conn, names)?;
                Ok((next, self.prune(conn, &gone)?))
            })?;
            removed = removed.saturating_add(chunk_removed);
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly on purpose"
)]
mod tests {
    use super::*;
    use crate::backends::store::tests::{
        check_apply, check_limits, check_semantics, increment_concurrently, sorted,
    };
    use rand_core::{OsRng, TryRngCore};
    use std::sync::Arc;

    const NEEDS_REDIS: &str = "needs a Redis server: MFA_STEP_TEST_REDIS (run by .ci/suites)";

    /// The server under test. Run explicitly, a test without one fails: it must never pass
    /// without having run.
    fn url() -> String {
        std::env::var("MFA_STEP_TEST_REDIS").unwrap_or_else(|_| {
            panic!(
                "MFA_STEP_TEST_REDIS is not set: point it at a Redis 7+ server, e.g. \
                 redis://127.0.0.1:56379/ ({NEEDS_REDIS})"
            )
        })
    }

    /// A prefix no other test (or run) uses.
    fn fresh_prefix() -> String {
        let mut bytes = [0u8; 8];
        OsRng.try_fill_bytes(&mut bytes).unwrap();
        format!("mfa-step-test-{}", hex::encode(bytes))
    }

    /// A store under a fresh prefix; its keys are deleted when it is dropped.
    struct Fresh {
        store: Arc<RedisStore>,
        prefix: String,
    }

    impl Fresh {
        fn new() -> Self {
            let prefix = fresh_prefix();
            let store = Arc::new(RedisStore::connect_with_prefix(&url(), &prefix).unwrap());
            Self { store, prefix }
        }

        /// Another node: a second store on the same server and prefix.
        fn other_node(&self) -> Arc<RedisStore> {
            Arc::new(RedisStore::connect_with_prefix(&url(), &self.prefix).unwrap())
        }
    }

    impl Drop for Fresh {
        fn drop(&mut self) {
            let Ok(mut conn) = raw() else { return };
            let keys: Vec<String> = ::redis::cmd("KEYS")
                .arg(format!("{}:*", self.prefix))
                .query(&mut conn)
                .unwrap_or_default();
            if !keys.is_empty() {
                let _ = ::redis::cmd("DEL").arg(keys).query::<()>(&mut conn);
            }
        }
    }

    /// A plain connection, to look at what the store put in Redis.
    fn raw() -> RedisResult<::redis::Connection> {
        Client::open(url().as_str())?.get_connection_with_timeout(IO_TIMEOUT)
    }

    fn query<T: ::redis::FromRedisValue>(command: &mut ::redis::Cmd) -> T {
        command.query(&mut raw().unwrap()).unwrap()
    }

    /// `EXPIRETIME` of a raw key: Unix seconds, -1 for none, -2 for absent.
    fn expire_time(key: &str) -> i64 {
        query(::redis::cmd("EXPIRETIME").arg(key))
    }

    fn index(fresh: &Fresh) -> Vec<String> {
        sorted(query(
            ::redis::cmd("ZRANGE")
                .arg(format!("{}:index", fresh.prefix))
                .arg(0)
                .arg(-1),
        ))
    }

    #[test]
    #[ignore = "needs a Redis server: MFA_STEP_TEST_REDIS (run by .ci/suites)"]
    fn redis_store_semantics() {
        let fresh = Fresh::new();
        check_semantics(&*fresh.store);
        check_apply(&*fresh.store);
    }

    #[test]
    #[ignore = "needs a Redis server: MFA_STEP_TEST_REDIS (run by .ci/suites)"]
    fn redis_store_limits() {
        let fresh = Fresh::new();
        check_limits(&*fresh.store);
    }

    #[test]
    #[ignore = "needs a Redis server: MFA_STEP_TEST_REDIS (run by .ci/suites)"]
    fn redis_keys_live_in_two_namespaces_under_the_prefix() {
        let fresh = Fresh::new();
        let store = &fresh.store;
        let p = &fresh.prefix;
        store.set("k", b"value", None).unwrap();
        store.increment("k", 7, None).unwrap();
        let raw_value: Vec<u8> = query(::redis::cmd("GET").arg(format!("{p}:v:k")));
        assert_eq!(raw_value, b"value");
        let raw_counter: i64 = query(::redis::cmd("GET").arg(format!("{p}:c:k")));
        assert_eq!(raw_counter, 7);
        assert_eq!(index(&fresh), ["k"], "counters are not indexed");
        // Another prefix on the same server sees none of it.
        let other = Fresh::new();
        assert_eq!(other.store.get("k").unwrap(), None);
        assert_eq!(other.store.increment("k", 0, None).unwrap(), 0);
        assert!(other.store.list_keys("").unwrap().is_empty());
        store.delete("k").unwrap();
        let left: i64 = query(
            ::redis::cmd("EXISTS")
                .arg(format!("{p}:v:k"))
                .arg(format!("{p}:c:k")),
        );
        assert_eq!(left, 0, "delete removes the value and the counter");
        assert!(index(&fresh).is_empty(), "and the index entry");
    }

    /// Expiry on Redis's own clock: rules checked exactly with `EXPIRETIME`, then a real wait
    /// for the short ones to go.
    #[test]
    #[ignore = "needs a Redis server: MFA_STEP_TEST_REDIS (run by .ci/suites)"]
    fn redis_expiry_follows_the_contract_on_real_time() {
        let fresh = Fresh::new();
        let store = &fresh.store;
        let p = &fresh.prefix;
        let now = store.server_time().unwrap();
        let (soon, later, latest) = (now + 1, now + 4, now + 5);

        store.set("e/v", b"x", Some(soon)).unwrap();
        store.increment("e/c", 1, Some(soon)).unwrap();
        // Kept for good stays so, whatever expiry comes later.
        store.set("e/kept", b"x", None).unwrap();
        store.increment("e/kept", 1, None).unwrap();
        assert_eq!(store.increment("e/kept", 1, Some(soon)).unwrap(), 2);
        assert_eq!(store.increment("e/kept", 0, Some(soon)).unwrap(), 2);
        // A counter keeps the later of the two, whichever order they come in.
        store.increment("e/grown", 1, Some(later)).unwrap();
        assert_eq!(store.increment("e/grown", 1, Some(soon)).unwrap(), 2);
        store.increment("e/extended", 1, Some(soon)).unwrap();
        assert_eq!(store.increment("e/extended", 0, Some(later)).unwrap(), 1);
        store.increment("e/extended", 1, Some(latest)).unwrap();
        // `None` leaves a counter's expiry as it is.
        store.increment("e/left", 1, Some(later)).unwrap();
        store.increment("e/left", 1, None).unwrap();
        // `set` replaces the expiry: later, earlier, or none.
        store.set("e/reset", b"x", Some(soon)).unwrap();
        store.set("e/reset", b"y", Some(later)).unwrap();
        store.set("e/shortened", b"x", Some(later)).unwrap();
        store.set("e/shortened", b"y", Some(soon)).unwrap();
        store.set("e/cleared", b"x", Some(soon)).unwrap();
        store.set("e/cleared", b"y", None).unwrap();
        // Reads create nothing, with or without an expiry.
        assert_eq!(store.increment("e/read", 0, None).unwrap(), 0);
        assert_eq!(store.increment("e/read", 0, Some(later)).unwrap(), 0);

        assert_eq!(expire_time(&format!("{p}:v:e/v")), soon);
        assert_eq!(expire_time(&format!("{p}:c:e/c")), soon);
        assert_eq!(expire_time(&format!("{p}:v:e/kept")), -1);
        assert_eq!(expire_time(&format!("{p}:c:e/kept")), -1);
        assert_eq!(expire_time(&format!("{p}:c:e/grown")), later);
        assert_eq!(expire_time(&format!("{p}:c:e/extended")), latest);
        assert_eq!(expire_time(&format!("{p}:c:e/left")), later);
        assert_eq!(expire_time(&format!("{p}:v:e/reset")), later);
        assert_eq!(expire_time(&format!("{p}:v:e/shortened")), soon);
        assert_eq!(expire_time(&format!("{p}:v:e/cleared")), -1);
        assert_eq!(
            expire_time(&format!("{p}:c:e/read")),
            -2,
            "a read creates nothing"
        );
        // Names to be pruned by the sweep below, never listed before it.
        for i in 0..5 {
            store.set(&format!("s/{i}"), b"x", Some(soon)).unwrap();
        }
        store.set("s/live", b"x", Some(later)).unwrap();

        // Until its time, every key is kept.
        assert_eq!(
            sorted(store.list_keys("e/").unwrap()),
            ["e/cleared", "e/kept", "e/reset", "e/shortened", "e/v"]
        );
        assert_eq!(store.increment("e/c", 0, None).unwrap(), 1);

        // Wait (on Redis's clock) until the first expiry has passed.
        while store.server_time().unwrap() <= soon {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(store.get("e/v").unwrap(), None);
        assert_eq!(store.get("e/shortened").unwrap(), None);
        assert_eq!(store.increment("e/c", 0, None).unwrap(), 0);
        assert_eq!(store.get("e/reset").unwrap().as_deref(), Some(&b"y"[..]));
        assert_eq!(store.get("e/cleared").unwrap().as_deref(), Some(&b"y"[..]));
        assert_eq!(store.increment("e/kept", 0, None).unwrap(), 2);
        assert_eq!(store.increment("e/grown", 0, None).unwrap(), 2);
        assert_eq!(store.increment("e/extended", 0, None).unwrap(), 2);
        assert_eq!(store.increment("e/left", 0, None).unwrap(), 2);
        // Expired values leave list_keys, and their index entries go with them.
        assert_eq!(
            sorted(store.list_keys("e/").unwrap()),
            ["e/cleared", "e/kept", "e/reset"]
        );
        assert!(
            !index(&fresh)
                .iter()
                .any(|n| n == "e/v" || n == "e/shortened"),
            "list_keys pruned the expired names"
        );
        // The sweep prunes exactly the stale entries left, and then nothing.
        assert_eq!(store.sweep(now + 2).unwrap(), 5);
        assert_eq!(index(&fresh), ["e/cleared", "e/kept", "e/reset", "s/live"]);
        assert_eq!(store.sweep(now + 2).unwrap(), 0);
    }

    #[test]
    #[ignore = "needs a Redis server: MFA_STEP_TEST_REDIS (run by .ci/suites)"]
    fn redis_expiries_in_the_past_or_far_future_are_accepted() {
        let fresh = Fresh::new();
        let store = &fresh.store;
        let now = store.server_time().unwrap();
        for (i, at) in [now - 10, 1, 0, -5, i64::MIN].into_iter().enumerate() {
            store.set(&format!("p/{i}"), b"x", Some(at)).unwrap();
            assert_eq!(
                store.get(&format!("p/{i}")).unwrap(),
                None,
                "{at}: already expired"
            );
            // The increment still answers the value it made.
            assert_eq!(store.increment(&format!("p/{i}"), 3, Some(at)).unwrap(), 3);
            assert_eq!(store.increment(&format!("p/{i}"), 0, None).unwrap(), 0);
        }
        assert!(store.list_keys("p/").unwrap().is_empty());
        store.set("far", b"x", Some(i64::MAX)).unwrap();
        assert_eq!(store.increment("far", 1, Some(i64::MAX)).unwrap(), 1);
        assert_eq!(store.increment("far", 1, Some(now + 60)).unwrap(), 2);
        assert_eq!(store.get("far").unwrap().as_deref(), Some(&b"x"[..]));
        let p = &fresh.prefix;
        assert_eq!(expire_time(&format!("{p}:v:far")), LATEST_EXPIRY);
        assert_eq!(expire_time(&format!("{p}:c:far")), LATEST_EXPIRY);
    }

    #[test]
    #[ignore = "needs a Redis server: MFA_STEP_TEST_REDIS (run by .ci/suites)"]
    fn redis_sweep_prunes_a_large_index_in_chunks() {
        let fresh = Fresh::new();
        let store = &fresh.store;
        // Expired at once: their index entries are stale from the start.
        let stale = 3 * SWEEP_CHUNK + 7;
        for i in 0..stale {
            store.set(&format!("gone/{i}"), b"x", Some(1)).unwrap();
        }
        for i in 0..10 {
            store.set(&format!("live/{i}"), b"x", None).unwrap();
        }
        assert_eq!(index(&fresh).len(), stale + 10);
        assert_eq!(store.sweep(0).unwrap(), u64::try_from(stale).unwrap());
        assert_eq!(index(&fresh).len(), 10);
        assert_eq!(store.list_keys("").unwrap().len(), 10);
        assert_eq!(store.sweep(0).unwrap(), 0);
    }

    #[test]
    #[ignore = "needs a Redis server: MFA_STEP_TEST_REDIS (run by .ci/suites)"]
    fn redis_overflow_is_the_sqlite_error_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = super::super::SqliteStore::open(dir.path().join("s.sqlite")).unwrap();
        sqlite.increment("big", i64::MAX, None).unwrap();
        let sqlite_err = sqlite.increment("big", 1, None).unwrap_err();

        let fresh = Fresh::new();
        let store = &fresh.store;
        let now = store.server_time().unwrap();
        assert_eq!(store.increment("big", i64::MAX, None).unwrap(), i64::MAX);
        assert_eq!(store.increment("big", 1, None).unwrap_err(), sqlite_err);
        assert_eq!(
            store
                .increment("big", i64::MAX, Some(now + 60))
                .unwrap_err(),
            sqlite_err
        );
        assert_eq!(store.increment("big", 0, None).unwrap(), i64::MAX);
        assert_eq!(
            expire_time(&format!("{}:c:big", fresh.prefix)),
            -1,
            "a refused increment leaves the expiry too"
        );
        assert_eq!(store.increment("small", i64::MIN, None).unwrap(), i64::MIN);
        assert_eq!(store.increment("small", -1, None).unwrap_err(), sqlite_err);
        assert_eq!(store.increment("small", 0, None).unwrap(), i64::MIN);
        assert_eq!(store.increment("small", i64::MAX, None).unwrap(), -1);
    }

    #[test]
    #[ignore = "needs a Redis server: MFA_STEP_TEST_REDIS (run by .ci/suites)"]
    fn redis_increments_from_8_threads_lose_nothing() {
        let fresh = Fresh::new();
        increment_concurrently(vec![Arc::clone(&fresh.store); 8], 200);
        assert_eq!(fresh.store.increment("hits", 0, None).unwrap(), 1600);
    }

    #[test]
    #[ignore = "needs a Redis server: MFA_STEP_TEST_REDIS (run by .ci/suites)"]
    fn redis_increments_from_two_nodes_lose_nothing() {
        let fresh = Fresh::new();
        let (first, second) = (Arc::clone(&fresh.store), fresh.other_node());
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
        // read-your-writes across nodes
        first.set("k", b"from first", None).unwrap();
        assert_eq!(
            second.get("k").unwrap().as_deref(),
            Some(&b"from first"[..])
        );
        assert_eq!(second.list_keys("").unwrap(), ["k"]);
        second.delete("k").unwrap();
        assert_eq!(first.get("k").unwrap(), None);
    }

    #[test]
    #[ignore = "needs a Redis server: MFA_STEP_TEST_REDIS (run by .ci/suites)"]
    fn redis_a_broken_connection_is_dropped_not_reused() {
        let fresh = Fresh::new();
        let store = &fresh.store;
        store.set("k", b"v", None).unwrap();
        let id: i64 = store
            .pool
            .call("client id", |conn| {
                ::redis::cmd("CLIENT").arg("ID").query(conn)
            })
            .unwrap();
        assert_eq!(lock(&store.pool.idle, "pool").unwrap().len(), 1);
        let killed: i64 = query(::redis::cmd("CLIENT").arg("KILL").arg("ID").arg(id));
        assert_eq!(killed, 1);
        // The call on the killed connection fails (closed, as the contract wants) ...
        let err = store.get("k").unwrap_err();
        assert!(err.0.starts_with("redis get failed"), "{err}");
        assert!(
            lock(&store.pool.idle, "pool").unwrap().is_empty(),
            "the broken connection was dropped"
        );
        // ... and the next one gets a fresh connection.
        assert_eq!(store.get("k").unwrap().as_deref(), Some(&b"v"[..]));
    }

    #[test]
    #[ignore = "needs a Redis server: MFA_STEP_TEST_REDIS (run by .ci/suites)"]
    fn redis_refused_credentials_fail_connect_without_the_password() {
        let url = url();
        let Some(rest) = url.strip_prefix("redis://").filter(|r| !r.contains('@')) else {
            panic!("MFA_STEP_TEST_REDIS must be redis://host:port/ without credentials here");
        };
        let wrong = format!("redis://mfa-step-nobody:wrong-s3cret-pass@{rest}");
        let err = RedisStore::connect(&wrong).unwrap_err().to_string();
        assert!(!err.contains("wrong-s3cret-pass"), "{err}");
        assert!(err.contains("<redacted>"), "{err}");
    }

    // Needs no server: these run on every `cargo test`.

    #[test]
    fn an_unreachable_server_fails_connect_naming_the_host_not_the_password() {
        // Port 1 on loopback: nothing listens there, the connection is refused at once.
        let err = RedisStore::connect("redis://admin:hunter2-secret@127.0.0.1:1/3")
            .unwrap_err()
            .to_string();
        assert!(err.contains("127.0.0.1:1"), "{err}");
        assert!(!err.contains("hunter2-secret"), "{err}");
        assert!(
            err.starts_with("invalid configuration: cannot use Redis at"),
            "{err}"
        );
    }

    #[test]
    fn a_url_that_does_not_parse_is_not_repeated() {
        for url in [
            "http://user:hunter2-secret@host/",
            "redis://user:hunter2-secret@host/not-a-number",
            "hunter2-secret",
        ] {
            let err = RedisStore::connect(url).unwrap_err().to_string();
            assert!(!err.contains("hunter2-secret"), "{err}");
            assert!(err.contains("does not parse"), "{err}");
        }
    }

    #[test]
    fn a_prefix_must_be_printable_ascii() {
        for prefix in ["", "new\nline", &"p".repeat(MAX_PREFIX_BYTES + 1)] {
            let err = RedisStore::connect_with_prefix("redis://127.0.0.1:1/", prefix)
                .unwrap_err()
                .to_string();
            assert!(err.contains("prefix"), "{err}");
        }
    }

    #[test]
    fn the_description_of_a_server_never_holds_the_password() {
        let info = "redis://admin:hunter2-secret@cache.example:6380/2"
            .into_connection_info()
            .unwrap();
        assert_eq!(
            describe(&info),
            "redis://admin:<redacted>@cache.example:6380/2"
        );
        let info = "redis://:hunter2-secret@cache.example/"
            .into_connection_info()
            .unwrap();
        assert_eq!(describe(&info), "redis://:<redacted>@cache.example:6379/0");
        let info = "redis://cache.example".into_connection_info().unwrap();
        assert_eq!(describe(&info), "redis://cache.example:6379/0");
    }

    #[test]
    fn expiries_are_clamped_to_what_redis_takes_in_order() {
        assert_eq!(redis_expiry(i64::MIN), 1);
        assert_eq!(redis_expiry(0), 1);
        assert_eq!(redis_expiry(1_700_000_000), 1_700_000_000);
        assert_eq!(redis_expiry(i64::MAX), LATEST_EXPIRY);
    }

    #[test]
    fn an_old_server_is_refused_and_a_silent_one_let_through() {
        let old = "# Server\r\nredis_version:6.2.14\r\nredis_mode:standalone\r\n";
        let err = check_version(old, "redis://h:1/0").unwrap_err().to_string();
        assert!(err.contains("6.2.14") && err.contains("7.0"), "{err}");
        check_version("redis_version:7.0.15\r\n", "t").unwrap();
        // Valkey 8 reports the Redis version it is compatible with.
        check_version("redis_version:7.2.4\r\nvalkey_version:8.0.1\r\n", "t").unwrap();
        check_version("", "t").unwrap();
    }
}
