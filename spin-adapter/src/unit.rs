//! The unit of work (`wit/store.wit`, "Unit of work") on Spin's key-value store: the component's
//! `set`s are held, and written in one batch with the unit's audit record, or at `commit`.
//!
//! Each write to Spin's SQLite store is a transaction of its own, and so a sync to disk, on the
//! one connection every request's store calls queue on: a new user's `begin` wrote its challenge
//! in one and its record in another. The contract lets a host hold a unit's `set`s and `delete`s
//! until `commit` and keep all of them or none; this module holds the `set`s:
//!
//! - A `set` (its value, its listing entry, its expiry's note and slot: one [`Batch`]) joins the
//!   held writes. Only slot numbers, atomic increments, are taken at once.
//! - `get` answers a held value (read-your-writes).
//! - The held writes are written in the same `set_many` as the next audit record and
//!   `audit-newest` (one transaction on SQLite, one `MSET` on Redis: the record and the change it
//!   describes, together or not at all), or on their own by `commit`, and before a `delete` or a
//!   `list-keys`, which work on the store itself.
//! - A write that fails drops the held writes (none of the unit): the call answers `unavailable`
//!   and the component puts back what it wrote, as the contract has it. A record write is
//!   retried with them while its position's claim is fresh; an `append` that fails drops them.
//!
//! Never held: counters (an increment applies at once, the contract's count-first limits), and the
//! adapter's own bookkeeping outside a `set` (sweeps, a counter's expiry, audit claims and stalls).
//! An instance that ends without a `commit` (a trap) leaves its held writes unwritten, as a
//! transaction that was never committed.

use std::cell::RefCell;

use crate::expiring::{Batch, Keys};

/// The writes held for the current unit of work.
#[derive(Debug, Default)]
pub struct Held(RefCell<Batch>);

impl Held {
    /// Holds `batch` until the unit is written; a key held twice is written once, with its later
    /// value.
    pub fn hold(&self, batch: Batch) {
        self.0.borrow_mut().append(batch);
    }

    /// The held value at the store key `stored`, if any.
    #[must_use]
    pub fn value(&self, stored: &str) -> Option<Vec<u8>> {
        self.0.borrow().get(stored).map(<[u8]>::to_vec)
    }

    /// Whether nothing is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.borrow().is_empty()
    }

    /// Writes the held writes in one `set_many` (nothing when none are held). They are no longer
    /// held afterwards, whether or not the write succeeded.
    ///
    /// # Errors
    /// The store failed: none of the held writes may be kept (an atomic batch keeps none).
    pub fn flush(&self, keys: &impl Keys) -> Result<(), String> {
        self.0.take().write(keys)
    }

    /// Writes the held writes and then `writes` (an audit record and its mark) in one `set_many`.
    /// On success nothing is held any more; on failure the held writes stay held, for a retry of
    /// the same record.
    ///
    /// # Errors
    /// The store failed.
    pub fn write_with(&self, keys: &impl Keys, writes: &[(String, Vec<u8>)]) -> Result<(), String> {
        let mut all = self.0.borrow().writes().to_vec();
        all.extend_from_slice(writes);
        keys.set_many(&all)?;
        drop(self.0.take());
        Ok(())
    }

    /// Drops the held writes, unwritten: the unit they belong to failed.
    pub fn discard(&self) {
        drop(self.0.take());
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
        held.flush(&m).unwrap();
        assert_eq!(m.batches.get(), 1);
    }

    #[test]
    fn a_failed_record_write_keeps_the_values_for_its_retry_and_a_failed_flush_keeps_none() {
        let m = Map::default();
        let held = Held::default();
        held.hold(batch(&[("val:c", "new")]));
        m.down.set(true);
        assert!(held.write_with(&m, &record()).is_err());
        assert_eq!(held.value("val:c").as_deref(), Some(&b"new"[..]));
        m.down.set(false);
        held.write_with(&m, &record()).unwrap();
        assert_eq!(m.get("val:c").unwrap().as_deref(), Some(&b"new"[..]));

        held.hold(batch(&[("val:d", "d")]));
        m.down.set(true);
        assert!(held.flush(&m).is_err());
        assert!(
            held.is_empty(),
            "a unit whose write failed is dropped whole"
        );
        m.down.set(false);
        held.flush(&m).unwrap();
        assert_eq!(m.get("val:d").unwrap(), None);

        held.hold(batch(&[("val:e", "e")]));
        held.discard();
        held.flush(&m).unwrap();
        assert_eq!(m.get("val:e").unwrap(), None);
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
