//! The per-request host state and the component's custom imports (`store`, `mailer`, `audit`,
//! `config`), each a direct call into a backend. No decisions are taken here: a backend failure is
//! handed to the component as an error, and the component's core fails closed.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use mfa_step_core::kernel::ports::{
    AppendError, AuditEntry, Mailer, OutgoingMail, PortError, PortResult, RefusalNote,
};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};
use zeroize::Zeroizing;

use crate::backends::{HostAuditSink, HostStore};
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
    /// The organization whose stream this instance is linking a record to, held from its `head`
    /// to its `append` (see [`StreamLeases`]).
    lease: Option<(LeaseKey, tokio::sync::OwnedMutexGuard<()>)>,
}

/// Who may link the next record of an organization's stream, per sink and organization.
///
/// The component appends a record by reading the stream's head, linking the record to it, and
/// asking the sink to append it if the head has not moved (`wit/audit.wit`). Racing writers of one
/// organization would otherwise lose that race to each other and relink, and under enough of them
/// give up (`unavailable`). So `head` takes the organization's lease and `append` gives it back:
/// writers of one organization in this process take turns for the few microseconds of linking and
/// the append itself, and never conflict. Writers in other processes sharing the sink still meet
/// the sink's own check, and relink. The lease is given back as soon as the record has its place
/// in the stream ([`HostAuditSink::place`]), before the wait for the disk, so that one writer's
/// sync never holds up the next one's linking, and records written meanwhile share a sync. It is
/// also given back when the instance ends, whatever happened, and an instance holds at most one.
/// An organization's entry is removed once no one holds or waits for its lease, so the map holds
/// only the streams being written.
struct StreamLeases;

type LeaseKey = (usize, String);

static LEASES: std::sync::LazyLock<
    std::sync::Mutex<HashMap<LeaseKey, Arc<tokio::sync::Mutex<()>>>>,
> = std::sync::LazyLock::new(|| std::sync::Mutex::new(HashMap::new()));

impl StreamLeases {
    /// The lease of a stream (a sink and an organization).
    fn of(key: &LeaseKey) -> Arc<tokio::sync::Mutex<()>> {
        let mut leases = LEASES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        leases
            .entry(key.clone())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())))
            .clone()
    }

    /// Gives `guard` back, and forgets the stream's entry if no one else holds or awaits it.
    fn release(key: &LeaseKey, guard: tokio::sync::OwnedMutexGuard<()>) {
        drop(guard);
        let mut leases = LEASES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Under the map's lock no one can take a new reference; 1 is the map's own.
        if leases.get(key).is_some_and(|m| Arc::strong_count(m) == 1) {
            leases.remove(key);
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
            lease: None,
        }
    }

    /// Takes `org`'s stream lease for this instance (waiting for the writer that holds it), unless
    /// it holds it already; a lease on another stream is given back first.
    async fn lease(&mut self, org: &str) {
        let sink = Arc::as_ptr(&self.backends.audit).cast::<()>() as usize;
        let key = (sink, org.to_owned());
        if self.lease.as_ref().is_some_and(|(held, _)| *held == key) {
            return;
        }
        self.release_lease();
        let guard = StreamLeases::of(&key).lock_owned().await;
        self.lease = Some((key, guard));
    }

    /// Gives back the stream lease this instance holds, if any.
    fn release_lease(&mut self) {
        if let Some((key, guard)) = self.lease.take() {
            StreamLeases::release(&key, guard);
        }
    }
}

impl Drop for HostState {
    fn drop(&mut self) {
        self.release_lease();
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

impl store::Host for HostState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, store::StoreError> {
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
        if let Some(handed) = self.backends.store.set_async(&key, &value, expires_at) {
            return handed.await.map_err(store_error);
        }
        let store = self.backends.store.clone();
        blocking(self.backends.offload.store_writes, move || {
            store.set(&key, &value, expires_at)
        })
        .await
        .map_err(store_error)
    }
    async fn delete(&mut self, key: String) -> Result<(), store::StoreError> {
        if let Some(handed) = self.backends.store.delete_async(&key) {
            return handed.await.map_err(store_error);
        }
        let store = self.backends.store.clone();
        blocking(self.backends.offload.store_writes, move || {
            store.delete(&key)
        })
        .await
        .map_err(store_error)
    }
    async fn increment(
        &mut self,
        key: String,
        delta: i64,
        expires_at: Option<i64>,
    ) -> Result<i64, store::StoreError> {
        let read = delta == 0 && expires_at.is_none();
        if !read && let Some(handed) = self.backends.store.increment_async(&key, delta, expires_at)
        {
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
        let store = self.backends.store.clone();
        blocking(self.backends.offload.store_reads, move || {
            store.list_keys(&prefix)
        })
        .await
        .map_err(store_error)
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
    async fn head(
        &mut self,
        org_id: String,
    ) -> Result<Option<audit::ChainHead>, audit::AuditError> {
        self.lease(&org_id).await;
        let sink = self.backends.audit.clone();
        let offload = self.backends.offload.others && !sink.runs_in_place();
        let head = blocking(offload, move || sink.head(&org_id)).await;
        if head.is_err() {
            // No append follows a failed read: the turn is over.
            self.release_lease();
        }
        head.map(|head| {
            head.map(|h| audit::ChainHead {
                seq: h.seq,
                hash: h.hash,
            })
        })
        .map_err(|e| audit::AuditError::Unavailable(e.0))
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
        let sink = self.backends.audit.clone();
        let lease = self.lease.take();
        let offload = self.backends.offload.others;
        let place = {
            let sink = sink.clone();
            move || {
                let placed = sink.place(&entry);
                // Placed or not, this writer's turn is over: the next one may link to the record
                // while it is being made durable.
                if let Some((key, guard)) = lease {
                    StreamLeases::release(&key, guard);
                }
                Ok(placed)
            }
        };
        let placed = blocking(offload && !sink.runs_in_place(), place).await;
        // Acknowledged only once durable: a wait for the disk goes to the pool, unless another
        // writer's sync has already covered the record.
        let outcome = match placed {
            Ok(Ok(placed)) if !sink.settled(placed) => {
                blocking(offload, move || Ok(sink.settle(placed)))
                    .await
                    .map(|settled| settled.map_err(|e| AppendError::Unavailable(e.0)))
            }
            other => other.map(|placed| placed.map(drop)),
        };
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(AppendError::Conflict)) => Err(audit::AuditError::Conflict),
            Ok(Err(AppendError::Unavailable(m))) | Err(PortError(m)) => {
                Err(audit::AuditError::Unavailable(m))
            }
        }
    }
}

impl config::Host for HostState {
    fn get(&mut self, name: String) -> Option<String> {
        self.backends.config.get(&name)
    }
}

impl crate::bindings::mfa_step::plugin::types::Host for HostState {}
