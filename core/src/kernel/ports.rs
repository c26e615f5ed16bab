//! What the core needs from the outside world, as traits. The component implements them over the WIT
//! imports; native hosts and tests implement them directly. Each mirrors one WIT interface, with the
//! same contract (see `wit/store.wit`, `wit/mailer.wit`, `wit/audit.wit`).
//!
//! The audit sink's contract speaks of a stream's [`Head`] (its newest record: where the next one
//! links), so `Head` and the first record's link, [`GENESIS`], live here with the trait; how records
//! are hashed and sealed into that chain is the audit layer's business (`audit::chain`).
//! What a port reports back is a [`PortError`] with a host-written reason, never a secret.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A failure reported by a port, with a host-written reason (never a secret: hosts are told so).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortError(pub String);

impl fmt::Display for PortError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Result of a port call.
pub type PortResult<T> = std::result::Result<T, PortError>;

/// Durable key-value storage with an atomic counter. See `wit/store.wit`.
///
/// `expires_at` (Unix seconds) on `set` and `increment` says when the host may forget a key: at
/// any time after it, in any order, by a sweep or natively (Redis). `None` keeps it. The core
/// chooses each key's expiry so that forgetting it is either neutral or more restrictive (see
/// `kernel::keys`, "Expiry"): a key that guards another outlives it.
pub trait Store {
    /// Reads a value; `None` when absent.
    ///
    /// # Errors
    /// The backend failed.
    fn get(&self, key: &str) -> PortResult<Option<Vec<u8>>>;
    /// Writes a value, replacing the previous one and its expiry.
    ///
    /// # Errors
    /// The backend failed.
    fn set(&self, key: &str, value: &[u8], expires_at: Option<i64>) -> PortResult<()>;
    /// Removes a value or counter; absent is fine.
    ///
    /// # Errors
    /// The backend failed.
    fn delete(&self, key: &str) -> PortResult<()>;
    /// Atomically adds `delta` to a counter (absent = 0) and returns the new value. With
    /// `expires_at`, the counter's expiry becomes the later of its own and this one (the core gives
    /// one key either always an expiry or never). `increment(key, 0, None)` reads a counter and
    /// creates nothing.
    ///
    /// # Errors
    /// The backend failed.
    fn increment(&self, key: &str, delta: i64, expires_at: Option<i64>) -> PortResult<i64>;
    /// Value keys starting with `prefix`.
    ///
    /// # Errors
    /// The backend failed.
    fn list_keys(&self, prefix: &str) -> PortResult<Vec<String>>;
    /// Commits the unit of work (`wit/store.wit`, "Unit of work"): makes every `set` and `delete`
    /// since the last commit, and every audit record appended since, durable together, or none of
    /// them. A store whose every call is durable when it returns has nothing left to do (this
    /// default).
    ///
    /// # Errors
    /// The unit's records were not kept (its values may have been, when the store and the trail
    /// cannot share a transaction): the call must not report success.
    fn commit(&self) -> PortResult<()> {
        Ok(())
    }
}

/// One rendered email. Its `Debug` leaves out the bodies, which carry the code.
#[derive(Clone, PartialEq, Eq)]
pub struct OutgoingMail {
    /// Recipient address.
    pub to: String,
    /// Display name for `From`.
    pub sender_name: Option<String>,
    /// Subject line (never contains the code).
    pub subject: String,
    /// HTML part.
    pub html: String,
    /// Plain-text part.
    pub text: String,
}

impl fmt::Debug for OutgoingMail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutgoingMail")
            .field("to", &self.to)
            .field("sender_name", &self.sender_name)
            .field("subject", &self.subject)
            .field("html", &"<redacted>")
            .field("text", &"<redacted>")
            .finish()
    }
}

/// Delivers email. See `wit/mailer.wit`.
pub trait Mailer {
    /// Hands the message to the mail service.
    ///
    /// # Errors
    /// The service refused it or could not be reached.
    fn send(&self, mail: &OutgoingMail) -> PortResult<()>;
}

/// One audit record as the sink stores it. See `wit/audit.wit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Organization stream.
    pub org_id: String,
    /// Position in the stream: the sink's head `seq` + 1, or 1 for the first record.
    pub seq: u64,
    /// Event time, Unix seconds.
    pub at: i64,
    /// Action name.
    pub action: String,
    /// The hash this record links to: the sink's head hash, or [`GENESIS`].
    pub prev: String,
    /// This record's hash.
    pub hash: String,
    /// Canonical JSON line.
    pub line: String,
}

/// The `prev` of an organization's first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The newest record of a stream: where the next one links.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// Its sequence number.
    pub seq: u64,
    /// Its hash (hex).
    pub hash: String,
}

impl Head {
    /// The `(seq, prev)` of the record that follows `head` (the first record when there is none).
    #[must_use]
    pub fn next(head: Option<&Self>) -> (u64, String) {
        head.map_or_else(
            || (1, GENESIS.to_owned()),
            |h| (h.seq.saturating_add(1), h.hash.clone()),
        )
    }
}

/// Why the sink did not append a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendError {
    /// The stream's head is no longer the one the record links to (another writer appended first):
    /// nothing was written; read the head again and relink.
    Conflict,
    /// The sink could not persist the record.
    Unavailable(String),
}

/// A request refused before anyone it names could be trusted (see `wit/audit.wit`,
/// `refusal-note`): for the host's own log, never an organization's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusalNote {
    /// The rule that refused it.
    pub rule: String,
    /// The organization it claims to be for (a valid id), unverified.
    pub claimed_org: Option<String>,
    /// The client's address.
    pub ip: Option<String>,
    /// The client's user agent, truncated.
    pub user_agent: Option<String>,
}

/// Appends audit records durably, one organization stream at a time. See `wit/audit.wit`.
pub trait AuditSink {
    /// The newest record of `org`'s stream, if any.
    ///
    /// # Errors
    /// The sink could not be read.
    fn head(&self, org: &str) -> PortResult<Option<Head>>;

    /// Appends one record if it links to the stream's current head (`seq` = head + 1 and `prev` =
    /// head hash), atomically with that check; `Ok` only once it is durable.
    ///
    /// # Errors
    /// [`AppendError::Conflict`] when the head moved; [`AppendError::Unavailable`] otherwise.
    fn append(&self, entry: &AuditEntry) -> Result<(), AppendError>;

    /// Notes a refusal in the host's own log, rate-limited there. The contract lets a host drop
    /// these notes, which is what a sink that keeps no log does (this default).
    fn note_refusal(&self, note: &RefusalNote) {
        let _ = note;
    }
}

/// Whether `entry` links to `head`: the check every sink makes under its lock.
#[must_use]
pub fn links_to(entry: &AuditEntry, head: Option<&Head>) -> bool {
    let (seq, prev) = Head::next(head);
    entry.seq == seq && entry.prev == prev
}
