//! In-memory fakes of the ports, for tests and benchmarks of the core alone. Not for production:
//! nothing here is durable. Enabled by the `testing` feature. The fakes keep the ports' contracts
//! (the audit fake refuses a record that does not link to its stream's head) and can be told to
//! fail, so tests can prove that a failing port changes nothing.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use crate::kernel::ports::{
    AppendError, AuditEntry, AuditSink, Head, Mailer, OutgoingMail, PortError, PortResult,
    RefusalNote, Store, links_to,
};

/// Every value and every counter, sorted: what [`MemStore::snapshot`] returns.
pub type Snapshot = (Vec<(String, Vec<u8>)>, Vec<(String, i64)>);

/// A value or counter's expiry as stored: `None` never expires.
pub type Expiry = Option<i64>;

/// A store in a `HashMap`, with a switch that makes every call fail. Its values hold the engine's
/// state (a code's seed, a session's CSRF token), so its `Debug` shows sizes only.
#[derive(Default)]
pub struct MemStore {
    values: RefCell<HashMap<String, Vec<u8>>>,
    counters: RefCell<HashMap<String, i64>>,
    /// The expiry of every key written with one (values and counters share the map: the core never
    /// uses one key as both).
    expiries: RefCell<HashMap<String, i64>>,
    /// When set, every call fails.
    pub fail: Cell<bool>,
}

impl MemStore {
    fn check(&self) -> PortResult<()> {
        if self.fail.get() {
            Err(PortError("injected store fault".into()))
        } else {
            Ok(())
        }
    }

    /// A snapshot of all values and counters, to prove that a failed call changed nothing.
    #[must_use]
    pub fn snapshot(&self) -> Snapshot {
        let mut v: Vec<_> = self
            .values
            .borrow()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut c: Vec<_> = self
            .counters
            .borrow()
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        v.sort();
        c.sort();
        (v, c)
    }

    /// When `key` may be forgotten, as the last write set it (`None`: never, or no such key).
    #[must_use]
    pub fn expiry(&self, key: &str) -> Expiry {
        self.expiries.borrow().get(key).copied()
    }

    /// Every key that is kept for good (written without an expiry), sorted.
    #[must_use]
    pub fn kept_for_good(&self) -> Vec<String> {
        let expiries = self.expiries.borrow();
        let mut keys: Vec<String> = self
            .values
            .borrow()
            .keys()
            .chain(self.counters.borrow().keys())
            .filter(|k| !expiries.contains_key(*k))
            .cloned()
            .collect();
        keys.sort();
        keys
    }

    /// Forgets every key whose expiry is at or before `now`, as a host's sweep does; returns how
    /// many.
    pub fn sweep(&self, now: i64) -> usize {
        let mut expiries = self.expiries.borrow_mut();
        let gone: Vec<String> = expiries
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in &gone {
            expiries.remove(key);
            self.values.borrow_mut().remove(key);
            self.counters.borrow_mut().remove(key);
        }
        gone.len()
    }
}

impl std::fmt::Debug for MemStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemStore")
            .field("values", &self.values.borrow().len())
            .field("counters", &self.counters.borrow().len())
            .field("fail", &self.fail.get())
            .finish()
    }
}

impl Store for MemStore {
    fn get(&self, key: &str) -> PortResult<Option<Vec<u8>>> {
        self.check()?;
        Ok(self.values.borrow().get(key).cloned())
    }
    fn set(&self, key: &str, value: &[u8], expires_at: Option<i64>) -> PortResult<()> {
        self.check()?;
        self.values
            .borrow_mut()
            .insert(key.to_owned(), value.to_vec());
        let mut expiries = self.expiries.borrow_mut();
        match expires_at {
            Some(at) => expiries.insert(key.to_owned(), at),
            None => expiries.remove(key),
        };
        Ok(())
    }
    fn delete(&self, key: &str) -> PortResult<()> {
        self.check()?;
        self.values.borrow_mut().remove(key);
        self.counters.borrow_mut().remove(key);
        self.expiries.borrow_mut().remove(key);
        Ok(())
    }
    fn increment(&self, key: &str, delta: i64, expires_at: Option<i64>) -> PortResult<i64> {
        self.check()?;
        let mut counters = self.counters.borrow_mut();
        let existed = counters.contains_key(key);
        if !existed && delta == 0 {
            // A read creates nothing.
            return Ok(0);
        }
        let slot = counters.entry(key.to_owned()).or_insert(0);
        *slot += delta;
        if let Some(at) = expires_at {
            let mut expiries = self.expiries.borrow_mut();
            // Extend only: the later of the two. A counter kept for good stays so.
            match expiries.get_mut(key) {
                Some(current) => *current = (*current).max(at),
                None if !existed => {
                    expiries.insert(key.to_owned(), at);
                }
                None => {}
            }
        }
        Ok(*slot)
    }
    fn list_keys(&self, prefix: &str) -> PortResult<Vec<String>> {
        self.check()?;
        Ok(self
            .values
            .borrow()
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect())
    }
}

/// Captures mail; can be told to fail.
#[derive(Debug, Default)]
pub struct MemMailer {
    /// Every message accepted.
    pub sent: RefCell<Vec<OutgoingMail>>,
    /// When set, sending fails.
    pub fail: Cell<bool>,
}

impl Mailer for MemMailer {
    fn send(&self, mail: &OutgoingMail) -> PortResult<()> {
        if self.fail.get() {
            return Err(PortError("injected mail fault".into()));
        }
        self.sent.borrow_mut().push(mail.clone());
        Ok(())
    }
}

impl MemMailer {
    /// The code in the last message's text part: the run of digits on its own indented line.
    #[must_use]
    pub fn last_code(&self) -> Option<String> {
        let sent = self.sent.borrow();
        let text = &sent.last()?.text;
        text.lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
            .map(str::to_owned)
    }
}

/// Captures audit entries; can be told to fail.
#[derive(Debug, Default)]
pub struct MemAudit {
    /// Every entry accepted.
    pub entries: RefCell<Vec<AuditEntry>>,
    /// Every refusal noted for the host's log (never a stream's record).
    pub notes: RefCell<Vec<RefusalNote>>,
    /// When set, appending fails.
    pub fail: Cell<bool>,
}

impl AuditSink for MemAudit {
    fn head(&self, org: &str) -> PortResult<Option<Head>> {
        if self.fail.get() {
            return Err(PortError("injected audit fault".into()));
        }
        Ok(self
            .entries
            .borrow()
            .iter()
            .rev()
            .find(|e| e.org_id == org)
            .map(|e| Head {
                seq: e.seq,
                hash: e.hash.clone(),
            }))
    }

    fn append(&self, entry: &AuditEntry) -> Result<(), AppendError> {
        if self.fail.get() {
            return Err(AppendError::Unavailable("injected audit fault".into()));
        }
        if !links_to(entry, self.head(&entry.org_id).ok().flatten().as_ref()) {
            return Err(AppendError::Conflict);
        }
        self.entries.borrow_mut().push(entry.clone());
        Ok(())
    }

    fn note_refusal(&self, note: &RefusalNote) {
        self.notes.borrow_mut().push(note.clone());
    }
}

impl MemAudit {
    /// The actions recorded, in order.
    #[must_use]
    pub fn actions(&self) -> Vec<String> {
        self.entries
            .borrow()
            .iter()
            .map(|e| e.action.clone())
            .collect()
    }
}
