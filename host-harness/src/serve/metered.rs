//! Counting backend errors at the port boundary: decorators over the store, mailer and audit sink
//! that `serve` puts around the backends the component's imports call. Each passes every call and
//! its answer through unchanged (the component sees exactly what the backend said) and counts an
//! error by the call that returned it. Nothing of a key, value, mail or record is looked at.

use std::sync::Arc;

use mfa_step_core::kernel::ports::Head;
use mfa_step_core::kernel::ports::{
    AppendError, AuditEntry, AuditSink, Mailer, OutgoingMail, PortResult, RefusalNote, Store,
};

use super::metrics::Metrics;
use crate::backends::{HostAuditSink, HostStore, Placed, PortFuture, Relinker, Unit, Values};
use crate::host::Backends;

/// `backends` with their store, mailer and audit sink counted in `metrics`.
#[must_use]
pub fn instrument(backends: Backends, metrics: &Arc<Metrics>) -> Backends {
    Backends {
        store: Arc::new(MeteredStore {
            inner: backends.store,
            metrics: metrics.clone(),
        }),
        mailer: Arc::new(MeteredMailer {
            inner: backends.mailer,
            metrics: metrics.clone(),
        }),
        audit: Arc::new(MeteredAuditSink {
            inner: backends.audit,
            metrics: metrics.clone(),
        }),
        ..backends
    }
}

struct MeteredStore {
    inner: Arc<dyn HostStore>,
    metrics: Arc<Metrics>,
}

impl MeteredStore {
    fn count<T>(&self, op: &'static str, result: PortResult<T>) -> PortResult<T> {
        if result.is_err() {
            self.metrics.store_error(op);
        }
        result
    }
}

impl MeteredStore {
    /// A handed-over call, counted when its answer comes.
    fn count_later<T: Send + 'static>(
        &self,
        op: &'static str,
        handed: Option<PortFuture<T>>,
    ) -> Option<PortFuture<T>> {
        let metrics = Arc::clone(&self.metrics);
        handed.map(|future| -> PortFuture<T> {
            Box::pin(async move {
                let result = future.await;
                if result.is_err() {
                    metrics.store_error(op);
                }
                result
            })
        })
    }
}

impl HostStore for MeteredStore {
    fn get_async(&self, key: &str) -> Option<PortFuture<Option<Vec<u8>>>> {
        self.count_later("get", self.inner.get_async(key))
    }

    fn list_keys_async(&self, prefix: &str) -> Option<PortFuture<Vec<String>>> {
        self.count_later("list_keys", self.inner.list_keys_async(prefix))
    }

    fn apply(&self, values: &Values) -> PortResult<()> {
        self.count("commit", self.inner.apply(values))
    }

    fn apply_async(&self, values: &Values) -> Option<PortFuture<()>> {
        self.count_later("commit", self.inner.apply_async(values))
    }

    fn commit_unit(
        &self,
        unit: &Unit,
        sink_database: Option<&str>,
        relinker: &Relinker,
    ) -> Option<PortFuture<Vec<(String, Head)>>> {
        self.count_later(
            "commit",
            self.inner.commit_unit(unit, sink_database, relinker),
        )
    }

    fn set_async(
        &self,
        key: &str,
        value: &[u8],
        expires_at: Option<i64>,
    ) -> Option<PortFuture<()>> {
        self.count_later("set", self.inner.set_async(key, value, expires_at))
    }

    fn delete_async(&self, key: &str) -> Option<PortFuture<()>> {
        self.count_later("delete", self.inner.delete_async(key))
    }

    fn increment_async(
        &self,
        key: &str,
        delta: i64,
        expires_at: Option<i64>,
    ) -> Option<PortFuture<i64>> {
        self.count_later(
            "increment",
            self.inner.increment_async(key, delta, expires_at),
        )
    }
}

impl Store for MeteredStore {
    fn get(&self, key: &str) -> PortResult<Option<Vec<u8>>> {
        self.count("get", self.inner.get(key))
    }

    fn set(&self, key: &str, value: &[u8], expires_at: Option<i64>) -> PortResult<()> {
        self.count("set", self.inner.set(key, value, expires_at))
    }

    fn delete(&self, key: &str) -> PortResult<()> {
        self.count("delete", self.inner.delete(key))
    }

    fn increment(&self, key: &str, delta: i64, expires_at: Option<i64>) -> PortResult<i64> {
        self.count("increment", self.inner.increment(key, delta, expires_at))
    }

    fn list_keys(&self, prefix: &str) -> PortResult<Vec<String>> {
        self.count("list_keys", self.inner.list_keys(prefix))
    }
}

struct MeteredMailer {
    inner: Arc<dyn Mailer + Send + Sync>,
    metrics: Arc<Metrics>,
}

impl Mailer for MeteredMailer {
    fn send(&self, mail: &OutgoingMail) -> PortResult<()> {
        let result = self.inner.send(mail);
        if result.is_err() {
            self.metrics.mail_error();
        }
        result
    }
}

struct MeteredAuditSink {
    inner: Arc<dyn HostAuditSink>,
    metrics: Arc<Metrics>,
}

impl AuditSink for MeteredAuditSink {
    fn head(&self, org: &str) -> PortResult<Option<Head>> {
        let result = self.inner.head(org);
        if result.is_err() {
            self.metrics.audit_error("head");
        }
        result
    }

    fn append(&self, entry: &AuditEntry) -> Result<(), AppendError> {
        let result = self.inner.append(entry);
        if let Err(AppendError::Unavailable(_)) = result {
            self.metrics.audit_error("append");
        }
        result
    }

    fn note_refusal(&self, note: &RefusalNote) {
        self.inner.note_refusal(note);
    }
}

impl HostAuditSink for MeteredAuditSink {
    fn place(&self, entry: &AuditEntry) -> Result<Placed, AppendError> {
        let result = self.inner.place(entry);
        if let Err(AppendError::Unavailable(_)) = result {
            self.metrics.audit_error("append");
        }
        result
    }

    fn settle(&self, placed: Placed) -> PortResult<()> {
        let result = self.inner.settle(placed);
        if result.is_err() {
            self.metrics.audit_error("append");
        }
        result
    }

    fn settled(&self, placed: Placed) -> bool {
        self.inner.settled(placed)
    }

    fn runs_in_place(&self) -> bool {
        self.inner.runs_in_place()
    }

    fn place_linked(&self, entry: &AuditEntry, relinker: &Relinker) -> PortResult<(Placed, Head)> {
        let result = self.inner.place_linked(entry, relinker);
        if result.is_err() {
            self.metrics.audit_error("append");
        }
        result
    }

    fn database(&self) -> Option<String> {
        self.inner.database()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::backends::{
        Faults, FaultyAuditSink, FaultyMailer, FaultyStore, MemoryAuditSink, MemoryMailer,
        MemoryStore,
    };
    use crate::{Clock, Config};

    fn count(text: &str, series: &str) -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap()
    }

    #[test]
    fn errors_are_counted_by_call_and_answers_pass_unchanged() {
        let faults = Faults::new();
        let metrics = Arc::new(Metrics::new());
        let backends = instrument(
            Backends {
                store: Arc::new(FaultyStore::new(MemoryStore::new(), faults.clone())),
                mailer: Arc::new(FaultyMailer::new(MemoryMailer::new(), faults.clone())),
                audit: Arc::new(FaultyAuditSink::new(MemoryAuditSink::new(), faults.clone())),
                config: Config::default(),
                clock: Clock::System,
                offload: crate::host::Offload::NONE,
            },
            &metrics,
        );
        backends.store.set("k", b"v", None).unwrap();
        assert_eq!(backends.store.get("k").unwrap().as_deref(), Some(&b"v"[..]));
        faults.fail_store_reads(true);
        faults.fail_mail(true);
        faults.fail_audit(true);
        for _ in 0..3 {
            assert!(backends.store.get("k").is_err());
        }
        assert!(backends.store.list_keys("").is_err());
        assert!(
            backends.store.increment("n", 1, None).is_ok(),
            "writes still pass"
        );
        let mail = OutgoingMail {
            to: "a@example.com".to_owned(),
            sender_name: None,
            subject: "s".to_owned(),
            html: String::new(),
            text: String::new(),
        };
        assert!(backends.mailer.send(&mail).is_err());
        assert!(backends.audit.head("acme").is_err());
        faults.clear();
        // A record that does not link to the head is a conflict: refused, not an error.
        let stray = AuditEntry {
            org_id: "acme".to_owned(),
            seq: 7,
            at: 0,
            action: "code_sent".to_owned(),
            prev: "00".repeat(32),
            hash: "ab".repeat(32),
            line: "{}".to_owned(),
        };
        assert_eq!(backends.audit.append(&stray), Err(AppendError::Conflict));

        let text = metrics.encode().unwrap();
        assert_eq!(count(&text, "mfa_step_store_errors_total{op=\"get\"}"), 3);
        assert_eq!(
            count(&text, "mfa_step_store_errors_total{op=\"list_keys\"}"),
            1
        );
        assert_eq!(count(&text, "mfa_step_store_errors_total{op=\"set\"}"), 0);
        assert_eq!(
            count(&text, "mfa_step_store_errors_total{op=\"increment\"}"),
            0
        );
        assert_eq!(count(&text, "mfa_step_mail_errors_total"), 1);
        assert_eq!(count(&text, "mfa_step_audit_errors_total{op=\"head\"}"), 1);
        assert_eq!(
            count(&text, "mfa_step_audit_errors_total{op=\"append\"}"),
            0
        );
    }
}
