//! `GET /readyz`: whether this server can do its work now, for a load balancer or an orchestrator.
//!
//! Ready means the store and the audit sink both answer a cheap read: a `get` of one fixed key that
//! nothing writes ([`STORE_PROBE_KEY`]), and the `head` of one fixed audit stream that no
//! organization has ([`AUDIT_PROBE_STREAM`]). Neither writes anything; both reach the real database
//! or file (the JSONL sink takes its lock and reads what others appended). Without those two the
//! component fails closed on every login, so a server without them should get no traffic. The
//! mailer is not probed: sending is not cheap, and a login that needs no code works without it.
//!
//! Each probe runs off the executor and is bounded by a timeout; a backend whose previous probe
//! has not returned yet (a hung disk, a locked database) is reported down at once instead of
//! stacking another blocked thread behind it. The answer names what is down, never why: the reasons
//! (file paths, database errors) go to the host's log only.
//!
//! Probes count in no metric: `mfa_step_store_errors_total` counts what the component was told.

use std::sync::Arc;
use std::time::Duration;

use mfa_step_core::kernel::ports::Store;
use tokio::sync::Semaphore;

use crate::backends::HostAuditSink;
use crate::host::Backends;

/// The store key the probe reads. Printable ASCII, outside every namespace the core writes.
pub const STORE_PROBE_KEY: &str = "host/readyz-probe";
/// The audit stream whose head the probe reads; no organization id has a `/`.
pub const AUDIT_PROBE_STREAM: &str = "host/readyz-probe";
/// How long one probe may take before its backend counts as down.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The readiness probes over one server's backends.
pub struct Probes {
    store: Arc<dyn Store + Send + Sync>,
    audit: Arc<dyn HostAuditSink>,
    store_busy: Arc<Semaphore>,
    audit_busy: Arc<Semaphore>,
    timeout: Duration,
}

impl std::fmt::Debug for Probes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probes")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// What a probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// The backends that did not answer, by name (`store`, `audit`); empty when ready.
    pub down: Vec<&'static str>,
}

impl Readiness {
    /// Whether every backend answered.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.down.is_empty()
    }

    /// 200 when ready, else 503.
    #[must_use]
    pub fn status(&self) -> hyper::StatusCode {
        if self.is_ready() {
            hyper::StatusCode::OK
        } else {
            hyper::StatusCode::SERVICE_UNAVAILABLE
        }
    }

    /// `{"status":"ready"}`, or `{"status":"unavailable","down":[…]}`.
    #[must_use]
    pub fn body(&self) -> String {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            status: &'static str,
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            down: &'a [&'static str],
        }
        let status = if self.is_ready() {
            "ready"
        } else {
            "unavailable"
        };
        serde_json::to_string(&Body {
            status,
            down: &self.down,
        })
        // Two fixed names cannot fail to serialize; were it to happen, the status still holds.
        .unwrap_or_else(|_| format!(r#"{{"status":"{status}"}}"#))
    }
}

impl Probes {
    /// Probes over `backends`' store and audit sink, each bounded by `timeout`.
    #[must_use]
    pub fn new(backends: &Backends, timeout: Duration) -> Self {
        Self {
            store: backends.store.clone(),
            audit: backends.audit.clone(),
            store_busy: Arc::new(Semaphore::new(1)),
            audit_busy: Arc::new(Semaphore::new(1)),
            timeout,
        }
    }

    /// Probes the store and the audit sink at once.
    pub async fn check(&self) -> Readiness {
        let store = self.store.clone();
        let audit = self.audit.clone();
        let (store_up, audit_up) = tokio::join!(
            probe("store", &self.store_busy, self.timeout, move || store
                .get(STORE_PROBE_KEY)
                .map(drop)),
            probe("audit", &self.audit_busy, self.timeout, move || audit
                .head(AUDIT_PROBE_STREAM)
                .map(drop)),
        );
        let mut down = Vec::new();
        if !store_up {
            down.push("store");
        }
        if !audit_up {
            down.push("audit");
        }
        Readiness { down }
    }
}

/// Runs `call` on the blocking pool within `timeout`, unless the previous call has not returned.
async fn probe<E: std::fmt::Display + Send + 'static>(
    backend: &'static str,
    busy: &Arc<Semaphore>,
    timeout: Duration,
    call: impl FnOnce() -> Result<(), E> + Send + 'static,
) -> bool {
    let Ok(permit) = busy.clone().try_acquire_owned() else {
        tracing::warn!(
            backend,
            "readiness: the previous probe has not returned; still down"
        );
        return false;
    };
    let task = tokio::task::spawn_blocking(move || {
        // Held until the backend returns, however long after the timeout that is.
        let _permit = permit;
        call()
    });
    match tokio::time::timeout(timeout, task).await {
        Ok(Ok(Ok(()))) => true,
        Ok(Ok(Err(e))) => {
            tracing::warn!(backend, error = %e, "readiness: probe failed");
            false
        }
        Ok(Err(e)) => {
            tracing::warn!(backend, error = %e, "readiness: probe did not complete");
            false
        }
        Err(_) => {
            tracing::warn!(
                backend,
                timeout_ms = timeout.as_millis() as u64,
                "readiness: probe timed out"
            );
            false
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use std::sync::Mutex;
    use std::sync::mpsc;

    use mfa_step_core::kernel::ports::{PortError, PortResult};

    use super::*;
    use crate::backends::{
        Faults, FaultyAuditSink, FaultyStore, MemoryAuditSink, MemoryMailer, MemoryStore,
    };
    use crate::{Clock, Config};

    fn backends(store: Arc<dyn crate::backends::HostStore>, faults: &Faults) -> Backends {
        Backends {
            store,
            mailer: Arc::new(MemoryMailer::new()),
            audit: Arc::new(FaultyAuditSink::new(MemoryAuditSink::new(), faults.clone())),
            config: Config::default(),
            clock: Clock::System,
            offload: crate::host::Offload::ALL,
        }
    }

    #[tokio::test]
    async fn each_backend_down_is_named_and_nothing_is_written() {
        let faults = Faults::new();
        let store = Arc::new(FaultyStore::new(MemoryStore::new(), faults.clone()));
        let probes = Probes::new(&backends(store.clone(), &faults), PROBE_TIMEOUT);
        let ready = probes.check().await;
        assert!(ready.is_ready());
        assert_eq!(ready.body(), r#"{"status":"ready"}"#);

        faults.fail_store_reads(true);
        let ready = probes.check().await;
        assert_eq!(ready.down, ["store"]);
        assert_eq!(ready.status(), hyper::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(ready.body(), r#"{"status":"unavailable","down":["store"]}"#);

        faults.fail_audit(true);
        assert_eq!(probes.check().await.down, ["store", "audit"]);
        faults.fail_store_reads(false);
        assert_eq!(probes.check().await.down, ["audit"]);
        faults.clear();
        assert!(probes.check().await.is_ready());
        assert!(store.inner().list_keys("").unwrap().is_empty());
    }

    /// Blocks every `get` until the test lets it go.
    struct HungStore(Mutex<mpsc::Receiver<()>>);

    impl crate::backends::HostStore for HungStore {}

    impl Store for HungStore {
        fn get(&self, _: &str) -> PortResult<Option<Vec<u8>>> {
            let _ = self.0.lock().unwrap().recv();
            Ok(None)
        }
        fn set(&self, _: &str, _: &[u8], _: Option<i64>) -> PortResult<()> {
            Err(PortError("unused".to_owned()))
        }
        fn delete(&self, _: &str) -> PortResult<()> {
            Err(PortError("unused".to_owned()))
        }
        fn increment(&self, _: &str, _: i64, _: Option<i64>) -> PortResult<i64> {
            Err(PortError("unused".to_owned()))
        }
        fn list_keys(&self, _: &str) -> PortResult<Vec<String>> {
            Err(PortError("unused".to_owned()))
        }
    }

    #[tokio::test]
    async fn a_hung_store_is_down_and_its_probes_do_not_pile_up() {
        let (release, hold) = mpsc::channel();
        let store = Arc::new(HungStore(Mutex::new(hold)));
        let probes = Probes::new(&backends(store, &Faults::new()), Duration::from_millis(50));
        // The first probe times out; the second finds the first still blocked and does not wait.
        assert_eq!(probes.check().await.down, ["store"]);
        assert_eq!(probes.store_busy.available_permits(), 0);
        assert_eq!(probes.check().await.down, ["store"]);
        // Once the store answers, the next probe is ready (after the blocked call gives its slot back).
        release.send(()).unwrap();
        release.send(()).unwrap();
        let _ = probes.store_busy.acquire().await.unwrap();
        assert!(probes.check().await.is_ready());
    }
}
