//! The unit of work (`wit/store.wit`, "Unit of work") on Spin's key-value store: the component's
//! `set`s are held, and written in one batch with the unit's audit record, or at `commit`.
//!
//! Each write to Spin's SQLite store is a transaction of its own, and so a sync to disk, on the
//! one connection every request's store calls queue on: a new user's `begin` wrote its challenge
//! in one and its record in another. The contract lets a host hold a unit's `set`s and `delete`s
//! until `commit` and keep all of them or none; this module holds the `set`s (a `delete` is
//! written at once):
//!
//! - A `set` (its value, its listing entry, its expiry's note and slot: one [`Batch`]) joins the
//!   held writes. Only slot numbers, atomic increments, are taken at once.
//! - `get` answers a held value (read-your-writes).
//! - The held writes are written in the same `set_many` as the next audit record and
//!   `audit-newest` (one transaction on SQLite, one `MSET` on Redis: the record and the `set`s it
//!   describes, together or not at all), or on their own by `commit`. `list-keys` writes them
//!   first: the index it reads is in the store.
//! - A `delete` that succeeds takes its key out of the held writes (the rest stays held).
//! - A unit whose held writes were dropped is *lost*: a write of them failed, or its `append`
//!   failed. Until its `commit` no record is taken (it would be stored without part of its change)
//!   and the component's `append` answers `unavailable` before claiming a position. The component
//!   then puts back what it wrote (`set`s of the values before, held after the loss), and the
//!   `commit` writes those and answers `err`; the next unit starts afresh. A record write that
//!   fails keeps the held writes for its retry, while its position's claim is fresh.
//!
//! Never held: counters (an increment applies at once, the contract's count-first limits),
//! `delete`s, and the adapter's own bookkeeping outside a `set` (sweeps, a counter's expiry, audit
//! claims and stalls). An instance that ends without a `commit` (a trap) leaves its held `set`s
//! unwritten.

use std::cell::{Cell, RefCell};

use crate::expiring::{Batch, Keys};

/// Why the unit's `commit` or record fails after its held writes were dropped.
const LOST: &str = "this unit of work's writes were not kept (a write of them failed, or its \
                    audit record could not be stored): its changes were dropped, only what was \
                    put back since is written";

/// The writes held for the current unit of work.
#[derive(Debug, Default)]
pub struct Held {
    writes: RefCell<Batch>,
    /// The unit's held writes were dropped: its next `commit` fails, and no record is written.
    lost: Cell<bool>,
}

impl Held {
    /// Holds `batch` until the unit is written; a key held twice is written once, with its later
    /// value.
    pub fn hold(&self, batch: Batch) {
        self.writes.borrow_mut().append(batch);
    }

    /// The held value at the store key `stored`, if any.
    #[must_use]
    pub fn value(&self, stored: &str) -> Option<Vec<u8>> {
        self.writes.borrow().get(stored).map(<[u8]>::to_vec)
    }

    /// Takes the store keys `stored` out of the held writes (a `delete` of them).
    pub fn forget(&self, stored: &[String]) {
        self.writes.borrow_mut().remove(stored);
    }

    /// Whether `commit` has nothing to do: nothing held, and nothing lost.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        !self.lost.get() && self.writes.borrow().is_empty()
    }

    /// Whether the unit is lost ([`Held::discard`], a failed write): no record may be appended
    /// until its `commit`.
    #[must_use]
    pub fn is_lost(&self) -> bool {
        self.lost.get()
    }

    /// Ends the unit (`commit`): writes the held writes in one `set_many` (nothing when none are
    /// held). Nothing is held afterwards, and a new unit starts, whether or not it succeeded. A
    /// lost unit's held writes are those made after the loss (the component's put-backs): they
    /// are written, and the commit still fails.
    ///
    /// # Errors
    /// The unit was lost before, or the store failed now (an atomic batch keeps none of it).
    pub fn commit(&self, keys: &impl Keys) -> Result<(), String> {
        let lost = self.lost.replace(false);
        self.writes.take().write(keys)?;
        if lost {
            return Err(LOST.to_owned());
        }
        Ok(())
    }

    /// Writes the held writes now, in one `set_many`, and goes on with the unit (before
    /// `list-keys`).
    ///
    /// # Errors
    /// The unit was lost before, or the store failed now: the unit is lost.
    pub fn flush(&self, keys: &impl Keys) -> Result<(), String> {
        if self.lost.get() {
            return Err(LOST.to_owned());
        }
        self.writes
            .take()
            .write(keys)
            .inspect_err(|_| self.lost.set(true))
    }

    /// Writes the held writes and then `writes` (an audit record and its mark) in one `set_many`.
    /// On success nothing is held any more; on failure the held writes stay held, for a retry of
    /// the same record.
    ///
    /// # Errors
    /// The unit was lost before (the record is refused: it would be stored without part of its
    /// change), or the store failed.
    pub fn write_with(&self, keys: &impl Keys, writes: &[(String, Vec<u8>)]) -> Result<(), String> {
        if self.lost.get() {
            return Err(LOST.to_owned());
        }
        let mut all = self.writes.borrow().writes().to_vec();
        all.extend_from_slice(writes);
        keys.set_many(&all)?;
        drop(self.writes.take());
        Ok(())
    }

    /// Drops the writes held now, unwritten: the unit they belong to failed (its `commit` fails).
    pub fn discard(&self) {
        drop(self.writes.take());
        self.lost.set(true);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::collections::BTreeMap;

    /// A store in a map that counts `set_many` calls; `down` fails every write.
    #[derive(Default)]
    struct Map {
        map: RefCell<BTreeMap<String, Vec<u8>>>,
        batches: Cell<usize>,
        down: Cell<bool>,
    }

    impl Keys for Map {
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
            Ok(self.map.borrow().get(key).cloned())
        }
        fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
            self.set_many(&[(key.to_owned(), value.to_vec())])
        }
        fn set_many(&self, writes: &[(String, Vec<u8>)]) -> Result<(), String> {
            if self.down.get() {
                return Err("the store is down".to_owned());
            }
            self.batches.set(self.batches.get() + 1);
            let mut map = self.map.borrow_mut();
            for (key, value) in writes {
                map.insert(key.clone(), value.clone());
            }
            Ok(())
        }
        fn delete(&self, key: &str) -> Result<(), String> {
            self.map.borrow_mut().remove(key);
            Ok(())
        }
        fn increment(&self, key: &str, delta: i64) -> Result<i64, String> {
            let now = self.counter(key)? + delta;
            self.set(key, now.to_string().as_bytes())?;
            Ok(now)
        }
    }

    fn batch(pairs: &[(&str, &str)]) -> Batch {
        let mut batch = Batch::default();
        for (key, value) in pairs {
            batch.set((*key).to_owned(), value.as_bytes().to_vec());
        }
        batch
    }

    fn record() -> Vec<(String, Vec<u8>)> {
        vec![
            ("audit:acme:1".to_owned(), b"{}".to_vec()),
            ("audit-newest:acme".to_owned(), b"1".to_vec()),
        ]
    }

    #[test]
    fn held_values_are_read_back_and_written_with_the_record_in_one_batch() {
        let m = Map::default();
        let held = Held::default();
        held.hold(batch(&[("val:c", "old"), ("expiry:val:c", "100")]));
        held.hold(batch(&[("val:c", "new"), ("val:d", "d")]));
        assert_eq!(held.value("val:c").as_deref(), Some(&b"new"[..]));
        assert_eq!(held.value("val:e"), None);
        assert!(m.map.borrow().is_empty(), "nothing written yet");
        held.write_with(&m, &record()).unwrap();
        assert_eq!(
            m.batches.get(),
            1,
            "one write for the values and the record"
        );
        assert_eq!(m.get("val:c").unwrap().as_deref(), Some(&b"new"[..]));
        assert_eq!(m.get("expiry:val:c").unwrap().as_deref(), Some(&b"100"[..]));
        assert!(m.get("audit:acme:1").unwrap().is_some());
        assert!(held.is_empty());
        // Nothing held: a commit writes nothing.
        held.commit(&m).unwrap();
        assert_eq!(m.batches.get(), 1);
        // A delete takes its key out; the rest is written at commit.
        held.hold(batch(&[
            ("val:e", "e"),
            ("expiry:val:e", "100"),
            ("val:f", "f"),
        ]));
        held.forget(&["val:e".to_owned(), "expiry:val:e".to_owned()]);
        assert_eq!(held.value("val:e"), None);
        held.commit(&m).unwrap();
        assert_eq!(m.get("val:e").unwrap(), None);
        assert_eq!(m.get("expiry:val:e").unwrap(), None);
        assert_eq!(m.get("val:f").unwrap().as_deref(), Some(&b"f"[..]));
    }

    #[test]
    fn a_failed_record_write_keeps_the_values_for_its_retry_and_a_lost_unit_fails_its_commit() {
        let m = Map::default();
        let held = Held::default();
        held.hold(batch(&[("val:c", "new")]));
        m.down.set(true);
        assert!(held.write_with(&m, &record()).is_err());
        assert_eq!(held.value("val:c").as_deref(), Some(&b"new"[..]));
        m.down.set(false);
        held.write_with(&m, &record()).unwrap();
        assert_eq!(m.get("val:c").unwrap().as_deref(), Some(&b"new"[..]));

        // A failed write of the unit loses it whole, and says so until the unit ends: no record
        // is written without it, and its commit fails (then the next unit starts afresh).
        held.hold(batch(&[("val:d", "d")]));
        m.down.set(true);
        assert!(held.flush(&m).is_err());
        m.down.set(false);
        assert!(
            held.write_with(&m, &record()).is_err(),
            "no record without its change"
        );
        assert!(!held.is_empty(), "the commit has something to say");
        assert!(held.commit(&m).is_err());
        assert_eq!(m.get("val:d").unwrap(), None);
        held.hold(batch(&[("val:g", "g")]));
        held.commit(&m).unwrap();
        assert_eq!(m.get("val:g").unwrap().as_deref(), Some(&b"g"[..]));

        // So does a unit whose record could not be stored; what the component then puts back
        // (held after the loss) is written by the commit that fails.
        m.set("val:e", b"before").unwrap();
        held.hold(batch(&[("val:e", "changed"), ("val:h", "h")]));
        held.discard();
        assert!(held.is_lost());
        assert_eq!(held.value("val:e"), None, "the change is dropped");
        held.hold(batch(&[("val:k", "put back")]));
        assert!(held.commit(&m).is_err());
        assert!(!held.is_lost(), "the next unit starts afresh");
        assert_eq!(m.get("val:e").unwrap().as_deref(), Some(&b"before"[..]));
        assert_eq!(m.get("val:h").unwrap(), None);
        assert_eq!(m.get("val:k").unwrap().as_deref(), Some(&b"put back"[..]));
        held.commit(&m).unwrap();
    }

    #[test]
    fn held_writes_show_their_keys_never_their_values() {
        let held = Held::default();
        held.hold(batch(&[("val:v1:challenge:acme:dr-a", "seed-0123456789")]));
        let shown = format!("{held:?}");
        assert!(shown.contains("val:v1:challenge:acme:dr-a"), "{shown}");
        assert!(!shown.contains("seed-0123456789"), "{shown}");
    }
}
