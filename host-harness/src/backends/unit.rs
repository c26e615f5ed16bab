//! One export call's unit of work (`wit/store.wit`, "Unit of work"): the values it set or deleted
//! and the audit records it appended, held by the host until the component calls `store.commit`,
//! then kept all together or not at all. Counters are not part of it: they apply at once.
//!
//! Records are linked at commit, not when the component links them: under the stream's own lock
//! or transaction, each record is given the place after the head found there ([`Relinker`]), so
//! that writers in any number of processes never conflict and no stream is held across a call.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::OnceLock;

use mfa_step_core::HmacKey;
use mfa_step_core::audit::chain::{Record, SealKey, seal_line};
use mfa_step_core::kernel::ports::{AuditEntry, Head, PortError, PortResult, links_to};
use zeroize::Zeroizing;

/// A value as a unit writes it: the bytes and their expiry.
#[derive(Clone, PartialEq, Eq)]
pub struct Put {
    /// The value.
    pub value: Vec<u8>,
    /// When the host may forget it (`wit/store.wit`, "Expiry").
    pub expires_at: Option<i64>,
}

impl std::fmt::Debug for Put {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Put")
            .field("value", &format_args!("<{} bytes>", self.value.len()))
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The values of a unit, by key (sorted, so that every writer takes row locks in the same order):
/// `Some` is a `set`, `None` a `delete` (of the value and of any counter of that key). Only the
/// last write of a key is kept, so a `set` after a `delete` of the same key leaves its counter:
/// the component never uses one key as both (`wit/store.wit`).
pub type Values = BTreeMap<String, Option<Put>>;

/// One export call's writes, as the host holds them until `commit`.
#[derive(Debug, Default)]
pub struct Unit {
    /// The last `set` or `delete` of each key.
    pub values: Values,
    /// The records appended, in order, as the component linked them.
    pub records: Vec<AuditEntry>,
    /// Whether the call changed a counter (an increment other than a plain read). A store that
    /// acknowledges increments before they are durable makes them durable at commit, even when
    /// the unit holds nothing else.
    pub counted: bool,
}

impl Unit {
    /// Whether there is nothing to write.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.values.is_empty() && self.records.is_empty()
    }

    /// The head `org`'s stream has for this call: its last record appended in this unit, if any.
    #[must_use]
    pub fn head(&self, org: &str) -> Option<Head> {
        self.records
            .iter()
            .rev()
            .find(|r| r.org_id == org)
            .map(|r| Head {
                seq: r.seq,
                hash: r.hash.clone(),
            })
    }

    /// What `get` answers for `key` from this unit: `None` when the unit did not touch it.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<Option<Vec<u8>>> {
        self.values
            .get(key)
            .map(|put| put.as_ref().map(|p| p.value.clone()))
    }

    /// `listed` (the committed keys with `prefix`) as this call sees them: its deletes gone, its
    /// sets added.
    #[must_use]
    pub fn list(&self, prefix: &str, listed: Vec<String>) -> Vec<String> {
        let mut keys: Vec<String> = listed
            .into_iter()
            .filter(|k| !matches!(self.values.get(k), Some(None)))
            .collect();
        for (key, put) in self.values.range(prefix.to_owned()..) {
            if !key.starts_with(prefix) {
                break;
            }
            if put.is_some() && !keys.contains(key) {
                keys.push(key.clone());
            }
        }
        keys
    }
}

/// Gives a record the place after a stream's head, resealing it with the host's key when that
/// place is not the one the component linked it to.
#[derive(Clone)]
pub struct Relinker {
    /// The host's key (hex), until a record needs relinking.
    key: Option<Zeroizing<String>>,
    /// The seal key, derived from `key` the first time a record needs it (most never do).
    seal: OnceLock<Option<SealKey>>,
}

impl std::fmt::Debug for Relinker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relinker")
            .field("has_key", &self.key.is_some())
            .finish_non_exhaustive()
    }
}

impl Relinker {
    /// A relinker sealing with the seal key derived from `hmac_key` (hex), the key the component
    /// seals with. Without a usable key, a record that needs a new place cannot be given one: its
    /// commit fails (closed), and only records that already link are placed.
    #[must_use]
    pub fn new(hmac_key: Option<&str>) -> Self {
        Self {
            key: hmac_key.map(|hex| Zeroizing::new(hex.to_owned())),
            seal: OnceLock::new(),
        }
    }

    fn seal(&self) -> Option<&SealKey> {
        self.seal
            .get_or_init(|| {
                let key = HmacKey::from_hex(self.key.as_deref()?).ok()?;
                Some(SealKey::derive(&key))
            })
            .as_ref()
    }

    /// `entry` placed after `head`: itself when it links there already, else a copy with the next
    /// `seq`, `prev` set to the head's hash, and `hash`, `seal` and the line computed again by the
    /// chain's rules (`mfa_step_core::audit::chain`).
    ///
    /// # Errors
    /// The line is not a record of the chain's schema, or there is no key to seal with.
    pub fn link<'e>(
        &self,
        entry: &'e AuditEntry,
        head: Option<&Head>,
    ) -> PortResult<Cow<'e, AuditEntry>> {
        if links_to(entry, head) {
            return Ok(Cow::Borrowed(entry));
        }
        let seal = self.seal().ok_or_else(|| {
            PortError(
                "cannot relink an audit record: the host has no usable hmac_key to seal it with"
                    .to_owned(),
            )
        })?;
        let mut record = Record::parse(&entry.line)
            .map_err(|e| PortError(format!("cannot relink an audit record: {e}")))?;
        if record.org != entry.org_id {
            return Err(PortError(
                "cannot relink an audit record: its line names another organization".to_owned(),
            ));
        }
        let (seq, prev) = Head::next(head);
        record.seq = seq;
        record.prev = prev.clone();
        let (line, hash) = seal_line(&record.prefix_json(), Some(seal));
        Ok(Cow::Owned(AuditEntry {
            org_id: entry.org_id.clone(),
            seq,
            at: entry.at,
            action: entry.action.clone(),
            prev,
            hash,
            line,
        }))
    }
}

/// The head a placed record makes.
#[must_use]
pub fn placed_head(entry: &AuditEntry) -> Head {
    Head {
        seq: entry.seq,
        hash: entry.hash.clone(),
    }
}
