//! The test hooks `adversary-serve` puts around real backends, and nothing else: a store that
//! garbles or holds chosen keys, and a mailer that keeps what it sent with the test clock's time.
//! Both delegate to the real backend otherwise, so what the suite attacks is `serve` over SQLite.
//!
//! - **Garbling** ([`Hooks::garble`]): a `get` of a key under an armed prefix whose value exists
//!   returns [`GARBAGE`] instead (bytes that parse as nothing the core stores). An absent value stays
//!   absent: the hook models a corrupt value, not a made-up one. The stored bytes are untouched, so
//!   disarming shows the value intact.
//! - **Pausing** ([`Hooks::arm_pause`]): the next `set` (or `increment`, `delete`) of a key under an
//!   armed prefix stops before it reaches the store, says which key it holds, and waits until the
//!   test releases it (at most [`PAUSE_LIMIT`], so a test that dies cannot wedge the server). It holds
//!   no lock of the store meanwhile: other requests go on. One pause at a time, used once.
//! - **Faults**: host-harness's own [`Faults`] switches, one layer further in.
//!
//! ```text
//!   component ─▶ HookedStore (garble, pause) ─▶ FaultyStore (fail) ─▶ SqliteStore ◀─ sweeps
//!   component ─▶ FaultyMailer (fail) ─▶ MailLog (kept in memory, with the test clock's time)
//!   component ─▶ FaultyAuditSink (fail) ─▶ SqliteAuditSink (the store's own file)
//! ```

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use host_harness::TestClock;
use host_harness::backends::Faults;
use mfa_step_core::kernel::ports::{Mailer, OutgoingMail, PortResult, Store};

/// What a garbled `get` returns: not JSON, not UTF-8.
pub const GARBAGE: &[u8] = b"\xff{not json";

/// The longest a paused call waits for its release before it goes on by itself.
pub const PAUSE_LIMIT: Duration = Duration::from_secs(60);

/// The store calls a pause can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `set`.
    Set,
    /// `increment` with a non-zero delta.
    Increment,
    /// `delete`.
    Delete,
}

impl Op {
    /// Parses `set`, `increment` or `delete`.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "set" => Some(Self::Set),
            "increment" => Some(Self::Increment),
            "delete" => Some(Self::Delete),
            _ => None,
        }
    }
}

#[derive(Debug, Default)]
struct PauseState {
    /// The next call to hold, when armed.
    armed: Option<(Op, String)>,
    /// The key of the call being held.
    held: Option<String>,
    /// Set by the release; the held call clears it when it goes on.
    released: bool,
}

/// The switches the control API turns. Cheap to clone; clones share them.
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    garbled: Arc<Mutex<Vec<String>>>,
    pause: Arc<(Mutex<PauseState>, Condvar)>,
    /// host-harness's fault switches, for the `FaultyStore`, `FaultyMailer` and `FaultyAuditSink`.
    pub faults: Faults,
}

/// A hook's lock is never held across a call that can panic; a poisoned one is used as it is.
fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Hooks {
    /// Garbles every existing value under `prefix` (adds to those already armed).
    pub fn garble(&self, prefix: &str) {
        locked(&self.garbled).push(prefix.to_owned());
    }

    /// Stops garbling.
    pub fn clear_garbling(&self) {
        locked(&self.garbled).clear();
    }

    /// The prefixes garbled now.
    #[must_use]
    pub fn garbled(&self) -> Vec<String> {
        locked(&self.garbled).clone()
    }

    fn garbles(&self, key: &str) -> bool {
        locked(&self.garbled).iter().any(|p| key.starts_with(p))
    }

    /// Holds the next `op` of a key under `prefix` (replacing a pause armed but not yet hit).
    pub fn arm_pause(&self, op: Op, prefix: &str) {
        let (state, _) = &*self.pause;
        let mut s = locked(state);
        s.armed = Some((op, prefix.to_owned()));
        s.released = false;
    }

    /// Waits up to `within` for a call to be held; the key it holds.
    #[must_use]
    pub fn wait_held(&self, within: Duration) -> Option<String> {
        let (state, changed) = &*self.pause;
        let deadline = Instant::now() + within;
        let mut s = locked(state);
        while s.held.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            s = changed
                .wait_timeout(s, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        s.held.clone()
    }

    /// Lets the held call go on (and disarms a pause not yet hit). Whether a call was held.
    pub fn release(&self) -> bool {
        let (state, changed) = &*self.pause;
        let mut s = locked(state);
        s.armed = None;
        let was_held = s.held.is_some();
        if was_held {
            s.released = true;
        }
        changed.notify_all();
        was_held
    }

    /// Called before every write: holds it when it is the armed one.
    fn maybe_hold(&self, op: Op, key: &str) {
        let (state, changed) = &*self.pause;
        let mut s = locked(state);
        let hit = s
            .armed
            .as_ref()
            .is_some_and(|(o, prefix)| *o == op && key.starts_with(prefix.as_str()));
        if !hit {
            return;
        }
        s.armed = None;
        s.held = Some(key.to_owned());
        s.released = false;
        changed.notify_all();
        let deadline = Instant::now() + PAUSE_LIMIT;
        while !s.released {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(key, "a paused store call was never released; it goes on");
                break;
            }
            s = changed
                .wait_timeout(s, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        s.held = None;
        s.released = false;
        changed.notify_all();
    }
}

/// A [`Store`] with the garbling and pausing hooks in front of `inner`.
pub struct HookedStore<S> {
    inner: S,
    hooks: Hooks,
}

impl<S> HookedStore<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, hooks: Hooks) -> Self {
        Self { inner, hooks }
    }
}

// Hooks pause and garble the synchronous calls, which the host runs on its blocking pool.
impl<S: Store + Send + Sync> host_harness::backends::HostStore for HookedStore<S> {}

impl<S: Store> Store for HookedStore<S> {
    fn get(&self, key: &str) -> PortResult<Option<Vec<u8>>> {
        let value = self.inner.get(key)?;
        Ok(match value {
            Some(_) if self.hooks.garbles(key) => Some(GARBAGE.to_vec()),
            other => other,
        })
    }

    fn set(&self, key: &str, value: &[u8], expires_at: Option<i64>) -> PortResult<()> {
        self.hooks.maybe_hold(Op::Set, key);
        self.inner.set(key, value, expires_at)
    }

    fn delete(&self, key: &str) -> PortResult<()> {
        self.hooks.maybe_hold(Op::Delete, key);
        self.inner.delete(key)
    }

    fn increment(&self, key: &str, delta: i64, expires_at: Option<i64>) -> PortResult<i64> {
        if delta != 0 {
            self.hooks.maybe_hold(Op::Increment, key);
        }
        self.inner.increment(key, delta, expires_at)
    }

    fn list_keys(&self, prefix: &str) -> PortResult<Vec<String>> {
        self.inner.list_keys(prefix)
    }
}

/// A store shared with the sweeper: the hooks wrap it, the control API sweeps it.
pub struct Shared<S>(pub Arc<S>);

impl<S: Store> Store for Shared<S> {
    fn get(&self, key: &str) -> PortResult<Option<Vec<u8>>> {
        self.0.get(key)
    }

    fn set(&self, key: &str, value: &[u8], expires_at: Option<i64>) -> PortResult<()> {
        self.0.set(key, value, expires_at)
    }

    fn delete(&self, key: &str) -> PortResult<()> {
        self.0.delete(key)
    }

    fn increment(&self, key: &str, delta: i64, expires_at: Option<i64>) -> PortResult<i64> {
        self.0.increment(key, delta, expires_at)
    }

    fn list_keys(&self, prefix: &str) -> PortResult<Vec<String>> {
        self.0.list_keys(prefix)
    }
}

/// One email as the mail log keeps it.
#[derive(Debug, Clone)]
pub struct Sent {
    /// The test clock's time when the component handed it over.
    pub at: i64,
    /// The recipient.
    pub to: String,
    /// The subject.
    pub subject: String,
    /// The plain-text part (it carries the code).
    pub text: String,
}

/// A [`Mailer`] that keeps every email in memory, stamped with the test clock. Clones share the log.
#[derive(Debug, Clone)]
pub struct MailLog {
    clock: TestClock,
    sent: Arc<Mutex<Vec<Sent>>>,
}

impl MailLog {
    /// An empty log on `clock`.
    #[must_use]
    pub fn new(clock: TestClock) -> Self {
        Self {
            clock,
            sent: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// The emails sent to `to` (every one when `None`), oldest first.
    #[must_use]
    pub fn to(&self, to: Option<&str>) -> Vec<Sent> {
        locked(&self.sent)
            .iter()
            .filter(|m| to.is_none_or(|t| m.to == t))
            .cloned()
            .collect()
    }
}

impl Mailer for MailLog {
    fn send(&self, mail: &OutgoingMail) -> PortResult<()> {
        host_harness::backends::validate_outgoing_mail(mail)?;
        locked(&self.sent).push(Sent {
            at: self.clock.now(),
            to: mail.to.clone(),
            subject: mail.subject.clone(),
            text: mail.text.clone(),
        });
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use host_harness::backends::MemoryStore;

    #[test]
    fn garbling_changes_what_is_read_never_what_is_stored() {
        let hooks = Hooks::default();
        let store = HookedStore::new(MemoryStore::new(), hooks.clone());
        store.set("v1:policy:acme", b"{}", None).unwrap();
        hooks.garble("v1:policy:");
        assert_eq!(store.get("v1:policy:acme").unwrap().unwrap(), GARBAGE);
        assert_eq!(
            store.get("v1:policy:other").unwrap(),
            None,
            "absent stays absent"
        );
        hooks.clear_garbling();
        assert_eq!(store.get("v1:policy:acme").unwrap().unwrap(), b"{}");
    }

    #[test]
    fn a_pause_holds_one_write_until_released() {
        let hooks = Hooks::default();
        let store = Arc::new(HookedStore::new(MemoryStore::new(), hooks.clone()));
        hooks.arm_pause(Op::Set, "v1:device:");
        let writer = {
            let store = store.clone();
            std::thread::spawn(move || store.set("v1:device:a:b:c", b"1", None).unwrap())
        };
        assert_eq!(
            hooks.wait_held(Duration::from_secs(5)).as_deref(),
            Some("v1:device:a:b:c")
        );
        assert_eq!(
            store.get("v1:device:a:b:c").unwrap(),
            None,
            "held before the write"
        );
        store.set("v1:device:a:b:d", b"2", None).unwrap();
        assert!(hooks.release());
        writer.join().unwrap();
        assert!(store.get("v1:device:a:b:c").unwrap().is_some());
        assert_eq!(hooks.wait_held(Duration::from_millis(10)), None);
    }
}
