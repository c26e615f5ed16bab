//! The per-request host state and the component's custom imports (`store`, `mailer`, `audit`,
//! `config`). Reads, counters, mail and config are direct calls into a backend; `set`, `delete`
//! and `audit.append` are held in the call's unit of work and written at `store.commit`
//! (`wit/store.wit`, "Unit of work"; [`Unit`]). No decisions are taken here: a backend failure is
//! handed to the component as an error, and the component's core fails closed.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use mfa_step_core::kernel::ports::{
    AppendError, AuditEntry, Head, Mailer, OutgoingMail, PortError, PortResult, RefusalNote,
};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};
use zeroize::Zeroizing;

use crate::backends::audit::validate_line;
use crate::backends::{
    HostAuditSink, HostStore, Put, Relinker, Unit, validate_key, validate_value,
};
use crate::bindings::mfa_step::plugin::{audit, config, mailer, store};
use crate::clock::Clock;

/// Settings and secrets for the `config` import. Values are wiped on drop and never printed.
#[derive(Clone, Default)]
pub struct Config(Arc<HashMap<String, Zeroizing<String>>>);

impl Config {
    /// Builds a config from name/value pairs.
    pub fn new<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self(Arc::new(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), Zeroizing::new(v.into())))
                .collect(),
        ))
    }

    /// One setting.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).map(|v| v.as_str().to_owned())
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.0.keys().collect();
        names.sort();
        f.debug_struct("Config")
            .field("names", &names)
            .field("values", &"<redacted>")
            .finish()
    }
}

/// The backends behind the imports, shared by every request.
#[derive(Clone)]
pub struct Backends {
    /// Behind `store`.
    pub store: Arc<dyn HostStore>,
    /// Behind `mailer`.
    pub mailer: Arc<dyn Mailer + Send + Sync>,
    /// Behind `audit`.
    pub audit: Arc<dyn HostAuditSink>,
    /// Behind `config`.
    pub config: Config,
    /// Behind `wasi:clocks`.
    pub clock: Clock,
    /// Which backend calls run on tokio's blocking pool.
    pub offload: Offload,
}

/// Which backend calls run on tokio's blocking pool rather than on the executor thread serving
/// the request.
///
/// A call that may wait on a disk or the network (a SQLite commit, a Postgres or Redis round trip,
/// SMTP, an audit file's sync) is handed to the pool, so that one slow call holds up only the
/// request waiting for it. A call that never waits (an in-memory map, a read of SQLite's WAL
/// snapshot) runs in place: the hand-off costs two thread switches, 13–40 µs, far more than the
/// call, and a verify makes about 17 calls (BENCHMARKS.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offload {
    /// `get`, `list-keys`, and reading a counter (`increment` by 0 with no expiry).
    pub store_reads: bool,
    /// `set`, `delete`, and `increment` otherwise.
    pub store_writes: bool,
    /// The mailer, and the audit sink's calls other than those it says run in place
    /// ([`HostAuditSink::runs_in_place`]).
    pub others: bool,
}

impl Offload {
    /// Every call on the pool: backends whose every call may wait.
    pub const ALL: Self = Self {
        store_reads: true,
        store_writes: true,
        others: true,
    };
    /// Every call in place: in-memory backends (tests).
    pub const NONE: Self = Self {
        store_reads: false,
        store_writes: false,
        others: false,
    };
}

/// One request's store data.
pub struct HostState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    backends: Backends,
    /// This call's unit of work, held until the component commits it (`store.commit`); dropped
    /// with the instance when it traps.
    unit: Unit,
}

/// The head each stream was left at by this process's last commit to it, per sink: what `head`
/// answers without asking the sink. It may be behind (another process appended since): the record
/// is relinked at commit anyway ([`Relinker`]), so it only has to be a good guess.
struct KnownHeads;

type StreamKey = (usize, String);

/// More streams than this and the guesses are dropped and learned again.
const KNOWN_HEADS_LIMIT: usize = 4096;

static KNOWN_HEADS: std::sync::LazyLock<std::sync::Mutex<HashMap<StreamKey, Head>>> =
    std::sync::LazyLock::new(|| std::sync::Mutex::new(HashMap::new()));

impl KnownHeads {
    fn get(key: &StreamKey) -> Option<Head> {
        KNOWN_HEADS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    fn remember(sink: usize, heads: impl IntoIterator<Item = (String, Head)>) {
        let mut known = KNOWN_HEADS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (org, head) in heads {
            if known.len() >= KNOWN_HEADS_LIMIT {
                known.clear();
            }
            // Commits of one stream can finish out of order: keep the newest.
            match known.entry((sink, org)) {
                std::collections::hash_map::Entry::Occupied(mut e) => {
                    if e.get().seq < head.seq {
                        e.insert(head);
                    }
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(head);
                }
            }
        }
    }
}

impl HostState {
    /// Fresh state for one instance.
    #[must_use]
    pub fn new(backends: Backends) -> Self {
        let mut wasi = WasiCtx::builder();
        if let Clock::Test(clock) = &backends.clock {
            wasi.wall_clock(clock.clone())
                .monotonic_clock(clock.clone());
        }
        Self {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            backends,
            unit: Unit::default(),
        }
    }

    /// Which sink's streams [`KnownHeads`] speaks of.
    fn sink_key(&self) -> usize {
        Arc::as_ptr(&self.backends.audit).cast::<()>() as usize
    }
}

impl Drop for HostState {
    fn drop(&mut self) {
        if !self.unit.is_empty() {
            // A trap, or a call that ended without `commit`: by the contract, nothing of it is
            // kept. The component commits at the end of every call, so outside a trap this is a
            // bug worth seeing.
            tracing::debug!(
                values = self.unit.values.len(),
                records = self.unit.records.len(),
                "an instance ended with an uncommitted unit of work; it was dropped"
            );
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: Default::default(),
        }
    }
}

/// Runs a blocking backend call on tokio's blocking pool (when `offload` is set), so that a slow disk
/// or mail server holds up only the request waiting for it, never the executor threads serving other
/// requests.
async fn blocking<T: Send + 'static>(
    offload: bool,
    call: impl FnOnce() -> PortResult<T> + Send + 'static,
) -> PortResult<T> {
    if !offload {
        return call();
    }
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|e| PortError(format!("the backend call did not complete: {e}")))?
}

/// The backends report a broken limit (key or value too large, bad characters) as `invalid …`.
fn store_error(e: PortError) -> store::StoreError {
    if e.0.starts_with("invalid ") {
        store::StoreError::Invalid(e.0)
    } else {
        store::StoreError::Unavailable(e.0)
    }
}

/// Commits `unit`: in one transaction of the store's database when the store keeps the sink's
/// records there (SQLite with its audit table in the same file, Postgres with its trail), so that
/// the values and the records are kept together or not at all. Otherwise the store and the sink
/// cannot share a transaction, and the values are written first, then the records: the order the
/// component itself follows without a unit of work. A record the sink then refuses fails the
/// commit where the component appended it (it commits with each record), and the component takes
/// back what it wrote and counted, as it does for a refused append; a crash in between leaves a
/// change without its record, the one window this pairing keeps.
async fn commit_unit(backends: Backends, sink_key: usize, unit: Unit) -> PortResult<()> {
    let relinker = Relinker::new(backends.config.0.get("hmac_key").map(|k| k.as_str()));
    let store = backends.store.clone();
    let sink = backends.audit.clone();
    let sink_database = sink.database();
    if let Some(done) = store.commit_unit(&unit, sink_database.as_deref(), &relinker) {
        KnownHeads::remember(sink_key, done.await?);
        return Ok(());
    }
    if !unit.values.is_empty() {
        if let Some(applied) = store.apply_async(&unit.values) {
            applied.await?;
        } else {
            let store = store.clone();
            let values = unit.values;
            blocking(backends.offload.store_writes, move || store.apply(&values)).await?;
        }
    }
    if unit.records.is_empty() {
        return Ok(());
    }
    let offload = backends.offload.others && !sink.runs_in_place();
    let records = unit.records;
    let placed = {
        let sink = sink.clone();
        blocking(offload, move || {
            records
                .iter()
                .map(|record| {
                    sink.place_linked(record, &relinker)
                        .map(|(ticket, head)| (ticket, (record.org_id.clone(), head)))
                })
                .collect::<PortResult<Vec<_>>>()
        })
        .await
        .map_err(|e| PortError(format!("audit sink unavailable: {}", e.0)))?
    };
    // Acknowledged only once durable: a wait for the disk goes to the pool, unless another
    // writer's sync has already covered the records.
    for (ticket, _) in &placed {
        if !sink.settled(*ticket) {
            let sink = sink.clone();
            let ticket = *ticket;
            blocking(backends.offload.others, move || sink.settle(ticket))
                .await
                .map_err(|e| PortError(format!("audit sink unavailable: {}", e.0)))?;
        }
    }
    KnownHeads::remember(sink_key, placed.into_iter().map(|(_, head)| head));
    Ok(())
}

impl store::Host for HostState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, store::StoreError> {
        if let Some(held) = self.unit.get(&key) {
            return Ok(held);
        }
        if let Some(handed) = self.backends.store.get_async(&key) {
            return handed.await.map_err(store_error);
        }
        let store = self.backends.store.clone();
        blocking(self.backends.offload.store_reads, move || store.get(&key))
            .await
            .map_err(store_error)
    }
    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        expires_at: Option<i64>,
    ) -> Result<(), store::StoreError> {
        // Refused now, as the store would refuse it: the call sees the error where it made it.
        validate_key(&key)
            .and_then(|()| validate_value(&value))
            .map_err(store_error)?;
        self.unit
            .values
            .insert(key, Some(Put { value, expires_at }));
        Ok(())
    }
    async fn delete(&mut self, key: String) -> Result<(), store::StoreError> {
        validate_key(&key).map_err(store_error)?;
        self.unit.values.insert(key, None);
        Ok(())
    }
    async fn increment(
        &mut self,
        key: String,
        delta: i64,
        expires_at: Option<i64>,
    ) -> Result<i64, store::StoreError> {
        let read = delta == 0 && expires_at.is_none();
        // Counters apply at once. A delete of the same key held in the unit would otherwise
        // come after this increment: it is applied first, as the call asked. A plain read sees
        // the counter as the delete leaves it, and writes nothing outside the unit.
        if matches!(self.unit.values.get(&key), Some(None)) {
            if read {
                return Ok(0);
            }
            let deleted = if let Some(handed) = self.backends.store.delete_async(&key) {
                handed.await
            } else {
                let store = self.backends.store.clone();
                let key = key.clone();
                blocking(self.backends.offload.store_writes, move || {
                    store.delete(&key)
                })
                .await
            };
            deleted.map_err(store_error)?;
            self.unit.values.remove(&key);
        }
        if !read {
            self.unit.counted = true;
        }
        if let Some(handed) = self.backends.store.increment_async(&key, delta, expires_at) {
            return handed.await.map_err(store_error);
        }
        let store = self.backends.store.clone();
        let offload = if read {
            self.backends.offload.store_reads
        } else {
            self.backends.offload.store_writes
        };
        blocking(offload, move || store.increment(&key, delta, expires_at))
            .await
            .map_err(store_error)
    }
    async fn list_keys(&mut self, prefix: String) -> Result<Vec<String>, store::StoreError> {
        let listed = if let Some(handed) = self.backends.store.list_keys_async(&prefix) {
            handed.await
        } else {
            let store = self.backends.store.clone();
            let prefix = prefix.clone();
            blocking(self.backends.offload.store_reads, move || {
                store.list_keys(&prefix)
            })
            .await
        };
        Ok(self.unit.list(&prefix, listed.map_err(store_error)?))
    }
    async fn commit(&mut self) -> Result<(), store::StoreError> {
        let unit = std::mem::take(&mut self.unit);
        let counted = unit.counted;
        let committed = commit_unit(self.backends.clone(), self.sink_key(), unit).await;
        if committed.is_err() && counted {
            // The call may go on and answer after a later commit (a best-effort tidy-up's
            // failure does not fail a login): that commit must still make these counts durable.
            self.unit.counted = true;
        }
        committed.map_err(|e| store::StoreError::Unavailable(e.0))
    }
}

impl mailer::Host for HostState {
    async fn send(&mut self, message: mailer::Message) -> Result<(), mailer::MailError> {
        let mail = OutgoingMail {
            to: message.to,
            sender_name: message.sender_name,
            subject: message.subject,
            html: message.html,
            text: message.text,
        };
        let mailer = self.backends.mailer.clone();
        blocking(self.backends.offload.others, move || mailer.send(&mail))
            .await
            .map_err(|e| mailer::MailError::Unavailable(e.0))
    }
}

impl audit::Host for HostState {
    /// The head this call links to: its own last record of the stream, else the head this
    /// process last left the stream at, else the sink's. Only a guess for the component to link
    /// to: the record's place is decided at commit.
    async fn head(
        &mut self,
        org_id: String,
    ) -> Result<Option<audit::ChainHead>, audit::AuditError> {
        let known = self
            .unit
            .head(&org_id)
            .or_else(|| KnownHeads::get(&(self.sink_key(), org_id.clone())));
        let head = match known {
            Some(head) => Some(head),
            None => {
                let sink = self.backends.audit.clone();
                let offload = self.backends.offload.others && !sink.runs_in_place();
                blocking(offload, move || sink.head(&org_id))
                    .await
                    .map_err(|e| audit::AuditError::Unavailable(e.0))?
            }
        };
        Ok(head.map(|h| audit::ChainHead {
            seq: h.seq,
            hash: h.hash,
        }))
    }

    async fn note_refusal(&mut self, note: audit::RefusalNote) {
        let note = RefusalNote {
            rule: note.rule,
            claimed_org: note.claimed_org,
            ip: note.ip,
            user_agent: note.user_agent,
        };
        crate::refusals::note(&note);
        // A sink that keeps notes (the memory sink, for tests) gets it too; the others drop it.
        self.backends.audit.note_refusal(&note);
    }

    /// Takes the record into the call's unit of work; it is placed, and made durable, at
    /// `commit`. A line that would break the framing is refused now, as the sink would.
    async fn append(&mut self, entry: audit::Entry) -> Result<(), audit::AuditError> {
        let entry = AuditEntry {
            org_id: entry.org_id,
            seq: entry.seq,
            at: entry.at,
            action: entry.action,
            prev: entry.prev,
            hash: entry.hash,
            line: entry.line,
        };
        validate_line(&entry).map_err(|e| match e {
            AppendError::Conflict => audit::AuditError::Conflict,
            AppendError::Unavailable(m) => audit::AuditError::Unavailable(m),
        })?;
        self.unit.records.push(entry);
        Ok(())
    }
}

impl config::Host for HostState {
    fn get(&mut self, name: String) -> Option<String> {
        self.backends.config.get(&name)
    }
}

impl crate::bindings::mfa_step::plugin::types::Host for HostState {}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly on purpose"
)]
mod tests {
    use mfa_step_core::kernel::ports::{AuditSink, Store};

    use super::*;
    use crate::backends::PortFuture;
    use crate::backends::audit::tests::{linked, verify_lines};
    use crate::backends::{
        JsonlAuditSink, MemoryAuditSink, MemoryMailer, MemoryStore, SqliteAuditSink, SqliteStore,
    };

    const KEY: &str = "0707070707070707070707070707070707070707070707070707070707070707";

    fn backends(store: Arc<dyn HostStore>, audit: Arc<dyn HostAuditSink>) -> Backends {
        Backends {
            store,
            mailer: Arc::new(MemoryMailer::new()),
            audit,
            config: Config::new([("hmac_key", KEY)]),
            clock: Clock::System,
            offload: Offload::NONE,
        }
    }

    fn wit_entry(e: &AuditEntry) -> audit::Entry {
        audit::Entry {
            org_id: e.org_id.clone(),
            seq: e.seq,
            at: e.at,
            action: e.action.clone(),
            prev: e.prev.clone(),
            hash: e.hash.clone(),
            line: e.line.clone(),
        }
    }

    /// What the component does to append: read the head through the import, link, append.
    async fn append(state: &mut HostState, org: &str, note: &str) {
        let head = audit::Host::head(state, org.to_owned())
            .await
            .unwrap()
            .map(|h| Head {
                seq: h.seq,
                hash: h.hash,
            });
        let entry = linked(org, note, head.as_ref());
        audit::Host::append(state, wit_entry(&entry)).await.unwrap();
    }

    #[tokio::test]
    async fn a_units_writes_are_its_own_until_commit_then_everyones() {
        let store = Arc::new(MemoryStore::new());
        let sink = Arc::new(MemoryAuditSink::new());
        store.set("v1:gone", b"old", None).unwrap();
        let mut state = HostState::new(backends(store.clone(), sink.clone()));
        store::Host::set(&mut state, "v1:new".into(), b"new".to_vec(), Some(99))
            .await
            .unwrap();
        store::Host::delete(&mut state, "v1:gone".into())
            .await
            .unwrap();
        append(&mut state, "acme", "one").await;
        append(&mut state, "acme", "two").await;

        // The call reads its own writes…
        let own = store::Host::get(&mut state, "v1:new".into()).await.unwrap();
        assert_eq!(own, Some(b"new".to_vec()));
        let mut listed = store::Host::list_keys(&mut state, "v1:".into())
            .await
            .unwrap();
        listed.sort();
        assert_eq!(listed, ["v1:new"]);
        // …and no one else does.
        assert_eq!(store.get("v1:new").unwrap(), None);
        assert_eq!(store.get("v1:gone").unwrap(), Some(b"old".to_vec()));
        assert!(sink.entries().is_empty());

        store::Host::commit(&mut state).await.unwrap();
        assert_eq!(store.get("v1:new").unwrap(), Some(b"new".to_vec()));
        assert_eq!(store.get("v1:gone").unwrap(), None);
        let lines: Vec<String> = sink.entries().into_iter().map(|e| e.line).collect();
        assert_eq!(
            verify_lines(lines.iter().map(String::as_str)).heads()["acme"].seq,
            2
        );
    }

    #[tokio::test]
    async fn an_instance_dropped_before_its_commit_keeps_nothing() {
        let store = Arc::new(MemoryStore::new());
        let sink = Arc::new(MemoryAuditSink::new());
        let mut state = HostState::new(backends(store.clone(), sink.clone()));
        store::Host::set(&mut state, "v1:k".into(), b"v".to_vec(), None)
            .await
            .unwrap();
        append(&mut state, "acme", "lost").await;
        // A trap ends the instance here, before `commit`.
        drop(state);
        assert_eq!(store.get("v1:k").unwrap(), None);
        assert!(sink.entries().is_empty());
    }

    /// A call holding the delete of a counter at 5.
    async fn holding_the_delete_of_a_counter() -> (Arc<MemoryStore>, HostState) {
        let store = Arc::new(MemoryStore::new());
        store.increment("v1:n", 5, None).unwrap();
        let mut state = HostState::new(backends(store.clone(), Arc::new(MemoryAuditSink::new())));
        store::Host::delete(&mut state, "v1:n".into())
            .await
            .unwrap();
        (store, state)
    }

    #[tokio::test]
    async fn an_increment_after_a_held_delete_of_its_key_counts_from_zero() {
        let (store, mut state) = holding_the_delete_of_a_counter().await;
        let n = store::Host::increment(&mut state, "v1:n".into(), 1, None)
            .await
            .unwrap();
        assert_eq!(n, 1, "the delete the call asked for came first");
        store::Host::commit(&mut state).await.unwrap();
        assert_eq!(store.increment("v1:n", 0, None).unwrap(), 1);
    }

    #[tokio::test]
    async fn a_plain_read_of_a_counter_whose_delete_is_held_writes_nothing() {
        let (store, mut state) = holding_the_delete_of_a_counter().await;
        let n = store::Host::increment(&mut state, "v1:n".into(), 0, None)
            .await
            .unwrap();
        assert_eq!(n, 0, "as the held delete leaves it");
        // The instance traps: the delete was never committed, so the counter is as it was.
        drop(state);
        assert_eq!(store.increment("v1:n", 0, None).unwrap(), 5);
    }

    /// A store whose next unit commit fails, and which notes whether each unit it was handed had
    /// counted something.
    #[derive(Default)]
    struct Commits {
        inner: MemoryStore,
        fail_next: std::sync::atomic::AtomicBool,
        counted: std::sync::Mutex<Vec<bool>>,
    }

    impl Store for Commits {
        fn get(&self, key: &str) -> PortResult<Option<Vec<u8>>> {
            self.inner.get(key)
        }
        fn set(&self, key: &str, value: &[u8], expires_at: Option<i64>) -> PortResult<()> {
            self.inner.set(key, value, expires_at)
        }
        fn delete(&self, key: &str) -> PortResult<()> {
            self.inner.delete(key)
        }
        fn increment(&self, key: &str, delta: i64, expires_at: Option<i64>) -> PortResult<i64> {
            self.inner.increment(key, delta, expires_at)
        }
        fn list_keys(&self, prefix: &str) -> PortResult<Vec<String>> {
            self.inner.list_keys(prefix)
        }
    }

    impl HostStore for Commits {
        fn commit_unit(
            &self,
            unit: &Unit,
            _sink_database: Option<&str>,
            _relinker: &Relinker,
        ) -> Option<PortFuture<Vec<(String, Head)>>> {
            self.counted.lock().unwrap().push(unit.counted);
            let failed = self
                .fail_next
                .swap(false, std::sync::atomic::Ordering::SeqCst);
            Some(Box::pin(std::future::ready(if failed {
                Err(PortError("the commit failed".to_owned()))
            } else {
                Ok(Vec::new())
            })))
        }
    }

    #[tokio::test]
    async fn counts_of_a_unit_whose_commit_failed_are_made_durable_by_the_next_commit() {
        let store = Arc::new(Commits::default());
        let mut state = HostState::new(backends(store.clone(), Arc::new(MemoryAuditSink::new())));
        store::Host::increment(&mut state, "v1:n".into(), 1, None)
            .await
            .unwrap();
        store
            .fail_next
            .store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(store::Host::commit(&mut state).await.is_err());
        // Nothing counted since, but the next commit must still cover the increment.
        store::Host::commit(&mut state).await.unwrap();
        store::Host::commit(&mut state).await.unwrap();
        assert_eq!(*store.counted.lock().unwrap(), [true, true, false]);
    }

    #[tokio::test]
    async fn an_invalid_write_is_refused_when_made_and_never_joins_the_unit() {
        let store = Arc::new(MemoryStore::new());
        let mut state = HostState::new(backends(store.clone(), Arc::new(MemoryAuditSink::new())));
        let refused = store::Host::set(&mut state, "bad\nkey".into(), b"v".to_vec(), None).await;
        assert!(matches!(refused, Err(store::StoreError::Invalid(_))));
        let big = vec![0; crate::backends::MAX_VALUE_BYTES + 1];
        let refused = store::Host::set(&mut state, "v1:big".into(), big, None).await;
        assert!(matches!(refused, Err(store::StoreError::Invalid(_))));
        store::Host::commit(&mut state).await.unwrap();
        assert_eq!(store.get("v1:big").unwrap(), None);
    }

    /// 16 calls of one organization at once, each linking its record to the head it read and
    /// committing: none conflicts (the records are relinked at commit), and the chain holds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sixteen_calls_linking_to_one_head_all_commit_and_the_chain_holds() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn HostStore> =
            Arc::new(SqliteStore::open(dir.path().join("state.db")).unwrap());
        let sink = Arc::new(JsonlAuditSink::open(dir.path().join("audit.jsonl")).unwrap());
        let shared = backends(store.clone(), sink.clone());
        // Every call reads the same head before any commits: none commits until all have read.
        let all_read = Arc::new(tokio::sync::Barrier::new(16));
        let calls: Vec<_> = (0..16)
            .map(|i| {
                let backends = Backends {
                    offload: Offload::ALL,
                    ..shared.clone()
                };
                let all_read = all_read.clone();
                tokio::spawn(async move {
                    let mut state = HostState::new(backends);
                    let head = audit::Host::head(&mut state, "acme".into()).await.unwrap();
                    all_read.wait().await;
                    assert!(head.is_none());
                    let entry = linked("acme", &format!("call {i}"), None);
                    audit::Host::append(&mut state, wit_entry(&entry))
                        .await
                        .unwrap();
                    store::Host::set(&mut state, format!("v1:k{i}"), vec![1], None)
                        .await
                        .unwrap();
                    store::Host::commit(&mut state).await
                })
            })
            .collect();
        for call in calls {
            call.await.unwrap().unwrap();
        }
        let lines = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
        let v = verify_lines(lines.lines());
        assert_eq!(v.heads()["acme"].seq, 16);
        for i in 0..16 {
            assert_eq!(store.get(&format!("v1:k{i}")).unwrap(), Some(vec![1]));
        }
    }

    /// A store and its audit table in one SQLite file commit a unit in one piece: a record that
    /// cannot be placed takes the unit's values with it.
    #[tokio::test]
    async fn in_one_sqlite_file_a_unit_is_kept_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = Arc::new(SqliteStore::open(&path).unwrap());
        let sink = Arc::new(SqliteAuditSink::open(&path).unwrap());
        assert_eq!(sink.database(), Some(sqlite_database_of(&path)));

        let mut state = HostState::new(backends(store.clone(), sink.clone()));
        store::Host::set(&mut state, "v1:kept".into(), b"v".to_vec(), None)
            .await
            .unwrap();
        append(&mut state, "acme", "kept").await;
        store::Host::commit(&mut state).await.unwrap();
        assert_eq!(store.get("v1:kept").unwrap(), Some(b"v".to_vec()));
        assert_eq!(sink.head("acme").unwrap().unwrap().seq, 1);

        // A record linked to a head that is not there must be relinked, and its line is no
        // record: the commit fails, and the value written with it is not kept either.
        let mut state = HostState::new(backends(store.clone(), sink.clone()));
        store::Host::set(&mut state, "v1:lost".into(), b"v".to_vec(), None)
            .await
            .unwrap();
        let mut bad = linked("acme", "bad", None);
        bad.line = "not a record".to_owned();
        audit::Host::append(&mut state, wit_entry(&bad))
            .await
            .unwrap();
        let failed = store::Host::commit(&mut state).await;
        assert!(matches!(failed, Err(store::StoreError::Unavailable(m)) if m.contains("relink")));
        assert_eq!(store.get("v1:lost").unwrap(), None);
        assert_eq!(sink.head("acme").unwrap().unwrap().seq, 1);
    }

    fn sqlite_database_of(path: &std::path::Path) -> String {
        crate::backends::store::sqlite_database(path)
    }
}
