//! Fault injection, to prove that the component fails closed.
//!
//! One [`Faults`] handle (cheap to clone, shared with the test) drives any number of wrappers:
//! [`FaultyStore`], [`FaultyMailer`] and [`FaultyAuditSink`]. While a switch is on, the wrapped
//! calls it covers return `PortError("injected fault: …")` without reaching the inner backend, so
//! nothing half-happens behind the error; while it is off they delegate unchanged.
//!
//! | switch | calls that fail |
//! | --- | --- |
//! | [`Faults::fail_store_reads`] | `get`, `list_keys` |
//! | [`Faults::fail_store_writes`] | `set`, `delete`, `increment` |
//! | [`Faults::fail_store_writes_after`] | every store write after the first `n` |
//! | [`Faults::fail_mail`] | `send` |
//! | [`Faults::fail_audit`] | `head`, `append` |
//!
//! `increment(key, 0)` counts as a write: the core cannot tell a read of a counter from an update.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use mfa_step_core::kernel::ports::Head;
use mfa_step_core::kernel::ports::{
    AppendError, AuditEntry, AuditSink, Mailer, OutgoingMail, PortError, PortResult, RefusalNote,
    Store,
};

/// The write budget meaning "no limit".
const UNLIMITED: i64 = -1;

/// Shared fault switches. Clones share the same switches. All off by default.
#[derive(Debug, Clone)]
pub struct Faults {
    inner: Arc<Switches>,
}

#[derive(Debug)]
struct Switches {
    store_reads: AtomicBool,
    store_writes: AtomicBool,
    mail: AtomicBool,
    audit: AtomicBool,
    /// Store writes still allowed; [`UNLIMITED`] for no limit.
    write_budget: AtomicI64,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            inner: Arc::new(Switches {
                store_reads: AtomicBool::new(false),
                store_writes: AtomicBool::new(false),
                mail: AtomicBool::new(false),
                audit: AtomicBool::new(false),
                write_budget: AtomicI64::new(UNLIMITED),
            }),
        }
    }
}

impl Faults {
    /// Switches that are all off.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes store reads (`get`, `list_keys`) fail, or succeed again.
    pub fn fail_store_reads(&self, on: bool) {
        self.inner.store_reads.store(on, Ordering::SeqCst);
    }

    /// Makes store writes (`set`, `delete`, `increment`) fail, or succeed again.
    pub fn fail_store_writes(&self, on: bool) {
        self.inner.store_writes.store(on, Ordering::SeqCst);
    }

    /// Lets the next `n` store writes through, then fails every later one (until [`Faults::clear`]).
    pub fn fail_store_writes_after(&self, n: u32) {
        self.inner
            .write_budget
            .store(i64::from(n), Ordering::SeqCst);
    }

    /// Makes `send` fail, or succeed again.
    pub fn fail_mail(&self, on: bool) {
        self.inner.mail.store(on, Ordering::SeqCst);
    }

    /// Makes audit `append` fail, or succeed again.
    pub fn fail_audit(&self, on: bool) {
        self.inner.audit.store(on, Ordering::SeqCst);
    }

    /// Turns every switch off and removes the write budget.
    pub fn clear(&self) {
        self.fail_store_reads(false);
        self.fail_store_writes(false);
        self.fail_mail(false);
        self.fail_audit(false);
        self.inner.write_budget.store(UNLIMITED, Ordering::SeqCst);
    }

    fn check(switch: &AtomicBool, what: &str) -> PortResult<()> {
        if switch.load(Ordering::SeqCst) {
            return Err(PortError(format!("injected fault: {what}")));
        }
        Ok(())
    }

    fn check_read(&self, op: &str) -> PortResult<()> {
        Self::check(&self.inner.store_reads, &format!("store read ({op})"))
    }

    /// Checks the write switch, then spends one unit of the budget (if any).
    fn check_write(&self, op: &str) -> PortResult<()> {
        Self::check(&self.inner.store_writes, &format!("store write ({op})"))?;
        let spent =
            self.inner
                .write_budget
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                    (left > 0).then(|| left - 1)
                });
        match spent {
            // Spent one of the allowed writes, or there is no budget at all.
            Ok(_) | Err(UNLIMITED) => Ok(()),
            Err(_) => Err(PortError(format!(
                "injected fault: store write ({op}) after the allowed writes"
            ))),
        }
    }
}

/// A [`Store`] that fails on demand. See the module documentation.
#[derive(Debug)]
pub struct FaultyStore<S> {
    inner: S,
    faults: Faults,
}

impl<S> FaultyStore<S> {
    /// Wraps `inner`, driven by `faults`.
    pub fn new(inner: S, faults: Faults) -> Self {
        Self { inner, faults }
    }

    /// The wrapped store, to inspect it behind the faults.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

// Faults wrap the synchronous calls: a faulty store has no hand-over path.
impl<S: Store + Send + Sync> super::HostStore for FaultyStore<S> {
    /// Every write of the unit is checked (and spends the budget) before any is made, so that an
    /// injected fault leaves none of them written, like a real store's rolled-back transaction.
    fn apply(&self, values: &super::Values) -> PortResult<()> {
        for put in values.values() {
            self.faults
                .check_write(if put.is_some() { "set" } else { "delete" })?;
        }
        for (key, put) in values {
            match put {
                Some(put) => self.inner.set(key, &put.value, put.expires_at)?,
                None => self.inner.delete(key)?,
            }
        }
        Ok(())
    }
}

impl<S: Store> Store for FaultyStore<S> {
    fn get(&self, key: &str) -> PortResult<Option<Vec<u8>>> {
        self.faults.check_read("get")?;
        self.inner.get(key)
    }

    fn set(&self, key: &str, value: &[u8], expires_at: Option<i64>) -> PortResult<()> {
        self.faults.check_write("set")?;
        self.inner.set(key, value, expires_at)
    }

    fn delete(&self, key: &str) -> PortResult<()> {
        self.faults.check_write("delete")?;
        self.inner.delete(key)
    }

    fn increment(&self, key: &str, delta: i64, expires_at: Option<i64>) -> PortResult<i64> {
        self.faults.check_write("increment")?;
        self.inner.increment(key, delta, expires_at)
    }

    fn list_keys(&self, prefix: &str) -> PortResult<Vec<String>> {
        self.faults.check_read("list_keys")?;
        self.inner.list_keys(prefix)
    }
}

/// A [`Mailer`] that fails on demand. See the module documentation.
#[derive(Debug)]
pub struct FaultyMailer<M> {
    inner: M,
    faults: Faults,
}

impl<M> FaultyMailer<M> {
    /// Wraps `inner`, driven by `faults`.
    pub fn new(inner: M, faults: Faults) -> Self {
        Self { inner, faults }
    }

    /// The wrapped mailer, e.g. to read what a [`MemoryMailer`](super::MemoryMailer) received.
    pub fn inner(&self) -> &M {
        &self.inner
    }
}

impl<M: Mailer> Mailer for FaultyMailer<M> {
    fn send(&self, mail: &OutgoingMail) -> PortResult<()> {
        Faults::check(&self.faults.inner.mail, "mail")?;
        self.inner.send(mail)
    }
}

/// An [`AuditSink`] that fails on demand. See the module documentation.
#[derive(Debug)]
pub struct FaultyAuditSink<A> {
    inner: A,
    faults: Faults,
}

impl<A> FaultyAuditSink<A> {
    /// Wraps `inner`, driven by `faults`.
    pub fn new(inner: A, faults: Faults) -> Self {
        Self { inner, faults }
    }

    /// The wrapped sink.
    pub fn inner(&self) -> &A {
        &self.inner
    }
}

// Fault injection wraps whole appends: a faulty sink places and settles in one step.
impl<A: super::HostAuditSink> super::HostAuditSink for FaultyAuditSink<A> {
    /// Checked, then placed by the wrapped sink (under its own lock, relinked there). The sink
    /// names no database ([`super::HostAuditSink::database`]): a store must not write its records
    /// around the faults.
    fn place_linked(
        &self,
        entry: &AuditEntry,
        relinker: &super::Relinker,
    ) -> PortResult<(super::Placed, Head)> {
        Faults::check(&self.faults.inner.audit, "audit")?;
        let (placed, head) = self.inner.place_linked(entry, relinker)?;
        // Settled here: a pending record's ticket is the wrapped sink's, which the host never sees.
        self.inner.settle(placed)?;
        Ok((super::Placed::Durable, head))
    }
}

impl<A: AuditSink> AuditSink for FaultyAuditSink<A> {
    fn head(&self, org: &str) -> PortResult<Option<Head>> {
        Faults::check(&self.faults.inner.audit, "audit")?;
        self.inner.head(org)
    }

    fn append(&self, entry: &AuditEntry) -> Result<(), AppendError> {
        Faults::check(&self.faults.inner.audit, "audit")
            .map_err(|e| AppendError::Unavailable(e.0))?;
        self.inner.append(entry)
    }
    /// Never fails (the contract has no error), faults or not.
    fn note_refusal(&self, note: &RefusalNote) {
        self.inner.note_refusal(note);
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
    use super::super::{MemoryAuditSink, MemoryMailer, MemoryStore};
    use super::*;

    fn injected<T: std::fmt::Debug>(result: PortResult<T>) -> bool {
        matches!(result, Err(PortError(m)) if m.starts_with("injected fault: "))
    }

    #[test]
    fn store_switches_cover_their_calls_and_reach_nothing() {
        let faults = Faults::new();
        let store = FaultyStore::new(MemoryStore::new(), faults.clone());
        store.set("k", b"v", None).unwrap();
        store.increment("n", 1, None).unwrap();

        faults.fail_store_reads(true);
        assert!(injected(store.get("k")));
        assert!(injected(store.list_keys("")));
        store.set("k", b"w", None).unwrap();
        assert_eq!(
            store.increment("n", 1, None).unwrap(),
            2,
            "writes still pass"
        );
        faults.fail_store_reads(false);

        faults.fail_store_writes(true);
        assert!(injected(store.set("k", b"x", None)));
        assert!(injected(store.delete("k")));
        assert!(injected(store.increment("n", 1, None)));
        assert_eq!(
            store.get("k").unwrap().as_deref(),
            Some(&b"w"[..]),
            "reads still pass"
        );
        faults.fail_store_writes(false);

        assert_eq!(store.inner().get("k").unwrap().as_deref(), Some(&b"w"[..]));
        assert_eq!(
            store.increment("n", 0, None).unwrap(),
            2,
            "failed writes changed nothing"
        );
    }

    #[test]
    fn write_budget_lets_n_writes_through_then_fails_until_cleared() {
        let faults = Faults::new();
        let store = FaultyStore::new(MemoryStore::new(), faults.clone());
        faults.fail_store_writes_after(2);
        store.set("a", b"1", None).unwrap();
        assert!(
            store.get("a").unwrap().is_some(),
            "reads do not spend the budget"
        );
        store.increment("n", 1, None).unwrap();
        assert!(injected(store.set("b", b"2", None)));
        assert!(injected(store.delete("a")));
        assert_eq!(store.inner().get("b").unwrap(), None);
        assert_eq!(store.inner().get("a").unwrap().as_deref(), Some(&b"1"[..]));
        faults.clear();
        store.set("b", b"2", None).unwrap();

        faults.fail_store_writes_after(0);
        assert!(injected(store.set("c", b"3", None)));
    }

    #[test]
    fn mail_and_audit_switches() {
        let faults = Faults::new();
        let mailer = FaultyMailer::new(MemoryMailer::new(), faults.clone());
        let audit = FaultyAuditSink::new(MemoryAuditSink::new(), faults.clone());
        let mail = OutgoingMail {
            to: "a@example.com".to_owned(),
            sender_name: None,
            subject: "s".to_owned(),
            html: "<p>h</p>".to_owned(),
            text: "t".to_owned(),
        };
        let entry = AuditEntry {
            org_id: "acme".to_owned(),
            seq: 1,
            at: 0,
            action: "code_sent".to_owned(),
            prev: mfa_step_core::kernel::ports::GENESIS.to_owned(),
            hash: "ab".repeat(32),
            line: "{}".to_owned(),
        };
        faults.fail_mail(true);
        faults.fail_audit(true);
        assert!(injected(mailer.send(&mail)));
        assert!(matches!(
            audit.append(&entry),
            Err(AppendError::Unavailable(m)) if m.contains("injected")
        ));
        assert!(injected(audit.head("acme")));
        assert!(mailer.inner().messages().is_empty());
        assert!(audit.inner().entries().is_empty());
        faults.clear();
        mailer.send(&mail).unwrap();
        audit.append(&entry).unwrap();
        assert_eq!(mailer.inner().messages(), [mail]);
        assert_eq!(audit.inner().entries(), [entry]);
    }
}
