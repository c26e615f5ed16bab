//! Expiry over Spin's key-value store, which has none (`wit/store.wit`, "Expiry").
//!
//! Spin's store cannot expire a key by itself, so the adapter keeps an index and sweeps it:
//! - **Noting.** A `set` or `increment` with an expiry writes the key's expiry beside it
//!   (`expiry:<key>`, the latest asked for) and files the key in the bucket of that time
//!   ([`BUCKET_SECONDS`] wide): a slot claimed with the atomic `increment` (`expiry-count:<bucket>`),
//!   then the key's name in it (`expiry-slot:<bucket>:<n>`). A `set` without an expiry keeps the
//!   key for good: its noted expiry is removed.
//! - **Batching.** The note and the slot are not written one by one: they join a [`Batch`], which
//!   the caller writes with `set_many` together with the value they are about (a `set`), or on
//!   their own after the counter (an `increment`). On Spin's SQLite store a batch is one
//!   transaction, so one sync to disk instead of one per key; on Redis it is one `MSET`. Spin's
//!   SQLite store serves every request through one connection, so each sync a write saves is
//!   time every other request waits less (`BENCHMARKS.md`, "Spin"). A slot claimed whose batch
//!   then failed is left empty, and sweeps step over empty slots.
//! - **Sweeping.** Whoever writes with an expiry first in a window of [`SWEEP_EVERY_SECONDS`]
//!   (`expiry-claim:<window>`, the call whose increment returns 1; the claim is filed to expire
//!   too) sweeps the buckets that are due, oldest first, from `expiry-next` (a bucket and a slot):
//!   each filed key whose noted expiry has passed by [`GRACE_SECONDS`] is deleted with its note
//!   and its slot in one `delete_many`; the slot of a key extended since (it is filed again in
//!   its later bucket) or already gone is deleted alone. A sweep stops after [`SWEEP_BUDGET`]
//!   slots and the next one goes on: at most 600 keys a minute are forgotten, so a store that
//!   files more expiries than that a minute, for good, falls behind.
//!
//! Without compare-and-swap two writers extending one counter can leave the earlier of their two
//! expiries as its note (last write wins). Both compute theirs from the same rule a moment apart,
//! so the difference is seconds; the sweep's [`GRACE_SECONDS`] of slack covers it, and a key
//! forgotten late only keeps more. Sweeps that overlap do the same deletions twice, harmlessly.

use crate::mapping;

/// How wide a bucket of expiries is, in seconds.
pub const BUCKET_SECONDS: i64 = 600;
/// How long after its expiry a key is kept at least: the slack for racing notes.
pub const GRACE_SECONDS: i64 = 600;
/// The most slots one sweep looks at.
pub const SWEEP_BUDGET: usize = 100;
/// How often a sweep may start: the first write with an expiry in each window of this many
/// seconds sweeps. One sweep a minute forgot at most 100 keys a minute, fewer than a busy
/// platform files (each login files a few: its challenge, its counters), so its index would
/// only have grown; six make 600 a minute, and a sweep of 100 slots is one request's extra
/// few hundred store calls.
pub const SWEEP_EVERY_SECONDS: i64 = 10;

/// The key-value operations expiry needs. Errors are messages that never hold a value.
pub trait Keys {
    /// The value at `key`, if any.
    ///
    /// # Errors
    /// The store could not be read.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String>;
    /// Stores `value` at `key`.
    ///
    /// # Errors
    /// The store could not be written.
    fn set(&self, key: &str, value: &[u8]) -> Result<(), String>;
    /// Removes `key` (a value or a counter); absent is fine.
    ///
    /// # Errors
    /// The store could not be written.
    fn delete(&self, key: &str) -> Result<(), String>;
    /// Removes every key of `keys`, as one atomic write where the store has one (Spin's SQLite
    /// store: one transaction; Redis: one `DEL`), else one by one in their order.
    ///
    /// # Errors
    /// The store could not be written; on a store without an atomic batch, a prefix of `keys`
    /// may be removed.
    fn delete_many(&self, keys: &[String]) -> Result<(), String> {
        keys.iter().try_for_each(|key| self.delete(key))
    }
    /// Atomically adds `delta` to the counter at `key` (absent = 0) and returns the new value.
    ///
    /// # Errors
    /// The store could not be written.
    fn increment(&self, key: &str, delta: i64) -> Result<i64, String>;
    /// Stores every pair of `writes`, as one atomic write where the store has one (Spin's SQLite
    /// store: one transaction; Redis: one `MSET`), else one by one in their order.
    ///
    /// # Errors
    /// The store could not be written; on a store without an atomic batch, a prefix of `writes`
    /// may be stored.
    fn set_many(&self, writes: &[(String, Vec<u8>)]) -> Result<(), String> {
        writes
            .iter()
            .try_for_each(|(key, value)| self.set(key, value))
    }
    /// The counter at `key` (absent = 0), read without writing ([`mapping::decode_counter`]).
    ///
    /// # Errors
    /// The store could not be read, or `key` holds something else than a counter.
    fn counter(&self, key: &str) -> Result<i64, String> {
        self.get(key)?.map_or(Ok(0), |bytes| {
            mapping::decode_counter(&bytes).ok_or_else(|| {
                format!("{key} holds no counter: the store was changed outside the adapter")
            })
        })
    }
}

/// Values to be written together with one [`Keys::set_many`], in the order they were added.
#[derive(Default)]
#[must_use = "a batch is written only by `write`"]
pub struct Batch(Vec<(String, Vec<u8>)>);

/// Names the keys only: a value may be a challenge's seed.
impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(k, _)| k))
            .finish()
    }
}

impl Batch {
    /// Adds `key = value` to the batch; a key added twice is written once, with its later value.
    pub fn set(&mut self, key: String, value: Vec<u8>) {
        self.0.retain(|(k, _)| *k != key);
        self.0.push((key, value));
    }

    /// Adds every write of `other`, after this batch's own ([`Batch::set`] each).
    pub fn append(&mut self, other: Self) {
        for (key, value) in other.0 {
            self.set(key, value);
        }
    }

    /// Takes `keys` out of the batch.
    pub fn remove(&mut self, keys: &[String]) {
        self.0.retain(|(k, _)| !keys.contains(k));
    }

    /// The value the batch would write at `key`.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, value)| value.as_slice())
    }

    /// Whether the batch writes nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The writes, in order.
    #[must_use]
    pub fn writes(&self) -> &[(String, Vec<u8>)] {
        &self.0
    }

    /// Writes the batch in one `set_many` (nothing for an empty one).
    ///
    /// # Errors
    /// The store failed.
    pub fn write(self, keys: &impl Keys) -> Result<(), String> {
        if self.0.is_empty() {
            return Ok(());
        }
        keys.set_many(&self.0)
    }
}

/// Where the noted expiry of the Spin key `stored` is.
#[must_use]
pub fn note_key(stored: &str) -> String {
    format!("{}{stored}", mapping::EXPIRY_PREFIX)
}

fn count_key(bucket: i64) -> String {
    format!("{}{bucket}", mapping::EXPIRY_COUNT_PREFIX)
}

fn slot_key(bucket: i64, slot: i64) -> String {
    format!("{}{bucket}:{slot}", mapping::EXPIRY_SLOT_PREFIX)
}

fn claim_key(window: i64) -> String {
    format!("{}{window}", mapping::EXPIRY_CLAIM_PREFIX)
}

/// Where the next sweep starts: a bucket and a slot in it (`<bucket>:<slot>`).
fn cursor(keys: &impl Keys) -> Result<Option<(i64, i64)>, String> {
    Ok(keys
        .get(mapping::EXPIRY_NEXT)?
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| {
            let (bucket, slot) = text.split_once(':')?;
            Some((bucket.parse().ok()?, slot.parse().ok()?))
        }))
}

fn set_cursor(keys: &impl Keys, bucket: i64, slot: i64) -> Result<(), String> {
    keys.set(mapping::EXPIRY_NEXT, cursor_value(bucket, slot).as_bytes())
}

fn cursor_value(bucket: i64, slot: i64) -> String {
    format!("{bucket}:{slot}")
}

fn read_i64(keys: &impl Keys, key: &str) -> Result<Option<i64>, String> {
    Ok(keys
        .get(key)?
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.parse().ok()))
}

/// Files `stored` to be forgotten after `at`: claims a slot in `at`'s bucket now, and adds the
/// note and the slot's entry to `batch`.
fn file(
    keys: &impl Keys,
    batch: &mut Batch,
    stored: &str,
    at: i64,
    now: i64,
) -> Result<(), String> {
    let bucket = at.div_euclid(BUCKET_SECONDS);
    let slot = keys.increment(&count_key(bucket), 1)?;
    batch.set(note_key(stored), at.to_string().into_bytes());
    batch.set(slot_key(bucket, slot), stored.as_bytes().to_vec());
    // Sweeping starts at the bucket of the first write's time, not of its expiry: every later
    // expiry is after that time, so no bucket is filed behind the cursor. The store's first
    // filed key takes slot 1 of its bucket, so only a bucket's first key looks for the cursor
    // (one read saved on every other write; if that first write failed to place it, the next
    // bucket's first key does, and the keys filed before are only kept longer).
    if slot == 1 && keys.get(mapping::EXPIRY_NEXT)?.is_none() {
        let first = now.div_euclid(BUCKET_SECONDS);
        batch.set(
            mapping::EXPIRY_NEXT.to_owned(),
            cursor_value(first, 1).into_bytes(),
        );
    }
    Ok(())
}

/// For a `set` of `stored` whose value is in `batch`: its expiry is replaced by `at` (none keeps
/// it for good), the note and slot joining `batch` so that the value and its expiry are written
/// together.
///
/// # Errors
/// The store failed: the batch must not be written (the value would be kept without its expiry).
pub fn on_set(
    keys: &impl Keys,
    batch: &mut Batch,
    stored: &str,
    at: Option<i64>,
    now: i64,
) -> Result<(), String> {
    match at {
        Some(at) => file(keys, batch, stored, at, now),
        // A key kept for good has no note (the component gives a key an expiry always or never):
        // a read, not a write, on each of its sets; a note left by another version goes.
        None => {
            let note = note_key(stored);
            match keys.get(&note)? {
                Some(_) => keys.delete(&note),
                None => Ok(()),
            }
        }
    }
}

/// [`on_set`] for a key written for the first time, which has no expiry noted to replace: with
/// `at` it is filed, without it nothing is read or written.
///
/// # Errors
/// The store failed: the batch must not be written.
pub fn on_first_set(
    keys: &impl Keys,
    batch: &mut Batch,
    stored: &str,
    at: Option<i64>,
    now: i64,
) -> Result<(), String> {
    if at.is_none() {
        return Ok(());
    }
    on_set(keys, batch, stored, at, now)
}

/// After an `increment` of the counter `stored` that left it at `value`: with `at`, its expiry
/// becomes the later of its noted one and `at`. A counter at 0 is not noted (a read creates
/// nothing: the adapter reads a counter with a `get`).
///
/// # Errors
/// The store failed; the counter is changed, its expiry may not be (it is then kept longer).
pub fn after_increment(
    keys: &impl Keys,
    stored: &str,
    value: i64,
    at: Option<i64>,
    now: i64,
) -> Result<(), String> {
    let Some(at) = at else { return Ok(()) };
    if value == 0 {
        return Ok(());
    }
    match read_i64(keys, &note_key(stored))? {
        Some(noted) if noted >= at => Ok(()),
        _ => {
            let mut batch = Batch::default();
            file(keys, &mut batch, stored, at, now)?;
            batch.write(keys)
        }
    }
}

/// Sweeps the buckets due at `now` if this is the first call of its window
/// ([`SWEEP_EVERY_SECONDS`]) to ask; returns how many keys it forgot.
///
/// # Errors
/// The store failed; what was not swept is swept by a later sweep.
pub fn sweep_if_due(keys: &impl Keys, now: i64) -> Result<usize, String> {
    let claim = claim_key(now.div_euclid(SWEEP_EVERY_SECONDS));
    // Read before claiming: only the window's first writers pay the claim's write.
    if keys.counter(&claim)? != 0 || keys.increment(&claim, 1)? != 1 {
        return Ok(0);
    }
    // The claim itself is swept a few minutes on.
    let mut batch = Batch::default();
    file(keys, &mut batch, &claim, now + 120, now)?;
    batch.write(keys)?;
    sweep(keys, now)
}

/// One instance's asking for sweeps: the window ([`SWEEP_EVERY_SECONDS`]) it last asked in. Spin
/// makes an instance per request, and a request may write several keys with an expiry: only its
/// first asks (one read of the window's claim), since the answer cannot change for the rest of
/// the window (the claim is taken, by this instance or another, or this one just swept).
#[derive(Debug, Default)]
pub struct SweepGate(std::cell::Cell<Option<i64>>);

impl SweepGate {
    /// [`sweep_if_due`], unless this gate asked in `now`'s window already (then 0).
    ///
    /// # Errors
    /// The store failed; what was not swept is swept by a later sweep.
    pub fn sweep_if_due(&self, keys: &impl Keys, now: i64) -> Result<usize, String> {
        let window = now.div_euclid(SWEEP_EVERY_SECONDS);
        if self.0.replace(Some(window)) == Some(window) {
            return Ok(0);
        }
        sweep_if_due(keys, now)
    }
}

/// Sweeps the buckets due at `now`, oldest first, within [`SWEEP_BUDGET`] slots.
///
/// # Errors
/// The store failed; what was not swept is swept by a later sweep.
pub fn sweep(keys: &impl Keys, now: i64) -> Result<usize, String> {
    let Some((mut bucket, mut first)) = cursor(keys)? else {
        return Ok(0);
    };
    // A bucket is due once every expiry in it is `GRACE_SECONDS` past.
    let last_due = (now - GRACE_SECONDS).div_euclid(BUCKET_SECONDS) - 1;
    let (mut looked, mut forgotten) = (0, 0);
    while bucket <= last_due {
        let filed = keys.counter(&count_key(bucket))?;
        for slot in first..=filed {
            if looked == SWEEP_BUDGET {
                set_cursor(keys, bucket, slot)?;
                return Ok(forgotten);
            }
            looked += 1;
            let entry = slot_key(bucket, slot);
            if let Some(stored) = keys.get(&entry)?.and_then(|b| String::from_utf8(b).ok()) {
                let note = note_key(&stored);
                if read_i64(keys, &note)?.is_some_and(|at| at + GRACE_SECONDS <= now) {
                    // The key before its note, and its slot last, on a store without an atomic
                    // batch: a slot is never gone while its key is still there to forget.
                    keys.delete_many(&[stored, note, entry])?;
                    forgotten += 1;
                    continue;
                }
            }
            keys.delete(&entry)?;
        }
        keys.delete(&count_key(bucket))?;
        bucket += 1;
        first = 1;
        set_cursor(keys, bucket, first)?;
    }
    Ok(forgotten)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    /// A store in a map; counters as decimal text, like any value.
    #[derive(Default)]
    struct Map(RefCell<BTreeMap<String, Vec<u8>>>);

    impl Keys for Map {
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
            Ok(self.0.borrow().get(key).cloned())
        }
        fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
            self.0.borrow_mut().insert(key.to_owned(), value.to_vec());
            Ok(())
        }
        fn delete(&self, key: &str) -> Result<(), String> {
            self.0.borrow_mut().remove(key);
            Ok(())
        }
        fn increment(&self, key: &str, delta: i64) -> Result<i64, String> {
            let now = read_i64(self, key)?.unwrap_or(0) + delta;
            self.set(key, now.to_string().as_bytes())?;
            Ok(now)
        }
    }

    impl Map {
        fn has(&self, key: &str) -> bool {
            self.0.borrow().contains_key(key)
        }
        /// Every key that is not the adapter's own bookkeeping.
        fn data(&self) -> Vec<String> {
            self.0
                .borrow()
                .keys()
                .filter(|k| !k.starts_with("expiry"))
                .cloned()
                .collect()
        }
    }

    const T: i64 = 1_795_000_000;

    fn put(m: &Map, key: &str, at: Option<i64>) {
        let mut batch = Batch::default();
        batch.set(key.to_owned(), b"x".to_vec());
        on_set(m, &mut batch, key, at, T).unwrap();
        batch.write(m).unwrap();
    }

    fn bump(m: &Map, key: &str, at: Option<i64>) {
        let value = m.increment(key, 1).unwrap();
        after_increment(m, key, value, at, T).unwrap();
    }

    #[test]
    fn a_key_is_kept_until_its_expiry_and_its_grace_then_swept_with_its_bookkeeping() {
        let m = Map::default();
        put(&m, "val:a", Some(T + 100));
        put(&m, "val:kept", None);
        bump(&m, "ctr:n", Some(T + 100));
        // Before the bucket is due, nothing goes, whenever the sweep runs.
        for now in (T..T + 100 + GRACE_SECONDS).step_by(60) {
            assert_eq!(sweep(&m, now).unwrap(), 0, "at {now}");
        }
        let due =
            (T + 100).div_euclid(BUCKET_SECONDS) * BUCKET_SECONDS + BUCKET_SECONDS + GRACE_SECONDS;
        assert_eq!(sweep(&m, due).unwrap(), 2);
        assert_eq!(m.data(), ["val:kept"]);
        // Only the cursor is left of the bookkeeping.
        let left: Vec<String> = m.0.borrow().keys().cloned().collect();
        assert_eq!(left, ["expiry-next", "val:kept"]);
    }

    #[test]
    fn an_extended_key_is_kept_and_a_key_set_for_good_is_never_swept() {
        let m = Map::default();
        bump(&m, "ctr:hint", Some(T + 60));
        bump(&m, "ctr:hint", Some(T + 7200));
        // A later, earlier expiry (a racing writer) does not shorten it.
        bump(&m, "ctr:hint", Some(T + 120));
        put(&m, "val:v", Some(T + 60));
        put(&m, "val:v", None);
        sweep(&m, T + 3600).unwrap();
        assert!(m.has("ctr:hint"), "extended to T + 7200");
        assert!(m.has("val:v"), "set again for good");
        sweep(&m, T + 7200 + BUCKET_SECONDS + GRACE_SECONDS).unwrap();
        assert!(!m.has("ctr:hint"));
        assert!(m.has("val:v"));
    }

    #[test]
    fn a_long_first_expiry_hides_no_shorter_one_filed_after_it() {
        let m = Map::default();
        // The first key ever filed lives a month; the next only a minute.
        put(&m, "val:month", Some(T + 30 * 86_400));
        put(&m, "val:minute", Some(T + 60));
        sweep(&m, T + 60 + BUCKET_SECONDS + GRACE_SECONDS).unwrap();
        assert_eq!(m.data(), ["val:month"]);
    }

    /// A map that keeps the keys of each write call: a `set_many` is one batch, a `set` a batch
    /// of one.
    #[derive(Default)]
    struct Batches {
        map: Map,
        writes: RefCell<Vec<Vec<String>>>,
        deletes: RefCell<Vec<Vec<String>>>,
    }

    impl Keys for Batches {
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
            self.map.get(key)
        }
        fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
            self.writes.borrow_mut().push(vec![key.to_owned()]);
            self.map.set(key, value)
        }
        fn set_many(&self, writes: &[(String, Vec<u8>)]) -> Result<(), String> {
            self.writes
                .borrow_mut()
                .push(writes.iter().map(|(k, _)| k.clone()).collect());
            writes.iter().try_for_each(|(k, v)| self.map.set(k, v))
        }
        fn delete(&self, key: &str) -> Result<(), String> {
            self.deletes.borrow_mut().push(vec![key.to_owned()]);
            self.map.delete(key)
        }
        fn delete_many(&self, keys: &[String]) -> Result<(), String> {
            self.deletes.borrow_mut().push(keys.to_vec());
            keys.iter().try_for_each(|k| self.map.delete(k))
        }
        fn increment(&self, key: &str, delta: i64) -> Result<i64, String> {
            self.map.increment(key, delta)
        }
    }

    #[test]
    fn a_value_and_its_expiry_are_written_in_one_batch_and_a_counters_expiry_in_one_more() {
        let m = Batches::default();
        let bucket = (T + 100).div_euclid(BUCKET_SECONDS);
        let mut batch = Batch::default();
        batch.set("val:a".to_owned(), b"x".to_vec());
        on_set(&m, &mut batch, "val:a", Some(T + 100), T).unwrap();
        batch.write(&m).unwrap();
        let mut batch = Batch::default();
        batch.set("val:b".to_owned(), b"y".to_vec());
        on_set(&m, &mut batch, "val:b", Some(T + 100), T).unwrap();
        batch.write(&m).unwrap();
        let value = m.increment("ctr:c", 1).unwrap();
        after_increment(&m, "ctr:c", value, Some(T + 100), T).unwrap();
        assert_eq!(
            *m.writes.borrow(),
            [
                // The store's first filed key places the sweep's cursor, in the same batch.
                vec![
                    "val:a".to_owned(),
                    "expiry:val:a".to_owned(),
                    format!("expiry-slot:{bucket}:1"),
                    "expiry-next".to_owned(),
                ],
                vec![
                    "val:b".to_owned(),
                    "expiry:val:b".to_owned(),
                    format!("expiry-slot:{bucket}:2"),
                ],
                vec!["expiry:ctr:c".to_owned(), format!("expiry-slot:{bucket}:3")],
            ]
        );
        // A slot claimed whose batch was never written is stepped over by the sweep.
        let mut lost = Batch::default();
        on_set(&m, &mut lost, "val:lost", Some(T + 100), T).unwrap();
        drop(lost);
        let due = (bucket + 1) * BUCKET_SECONDS + GRACE_SECONDS;
        assert_eq!(sweep(&m, due).unwrap(), 3);
        assert!(!m.map.has("val:a") && !m.map.has("val:b") && !m.map.has("ctr:c"));
        // Each forgotten key goes with its note and its slot in one delete; the empty slot and
        // the bucket's count alone.
        assert_eq!(
            m.deletes.borrow()[..4],
            [
                vec![
                    "val:a".to_owned(),
                    "expiry:val:a".to_owned(),
                    format!("expiry-slot:{bucket}:1"),
                ],
                vec![
                    "val:b".to_owned(),
                    "expiry:val:b".to_owned(),
                    format!("expiry-slot:{bucket}:2"),
                ],
                vec![
                    "ctr:c".to_owned(),
                    "expiry:ctr:c".to_owned(),
                    format!("expiry-slot:{bucket}:3"),
                ],
                vec![format!("expiry-slot:{bucket}:4")],
            ]
        );
    }

    #[test]
    fn a_key_added_twice_to_a_batch_is_written_once_with_its_later_value() {
        let m = Map::default();
        let mut batch = Batch::default();
        batch.set("val:k".to_owned(), b"1".to_vec());
        batch.set("val:j".to_owned(), b"2".to_vec());
        batch.set("val:k".to_owned(), b"3".to_vec());
        batch.write(&m).unwrap();
        assert_eq!(m.get("val:k").unwrap().as_deref(), Some(&b"3"[..]));
        assert_eq!(m.get("val:j").unwrap().as_deref(), Some(&b"2"[..]));
    }

    #[test]
    fn a_counter_read_is_never_filed() {
        let m = Map::default();
        after_increment(&m, "ctr:r", 0, Some(T), T).unwrap();
        assert!(m.0.borrow().is_empty());
    }

    #[test]
    fn one_sweep_a_window_within_its_budget_and_the_next_goes_on() {
        let m = Map::default();
        let n = 5 * SWEEP_BUDGET + 10;
        for i in 0..n {
            put(&m, &format!("val:{i}"), Some(T));
        }
        let later = T + 2 * BUCKET_SECONDS + GRACE_SECONDS;
        assert_eq!(later % SWEEP_EVERY_SECONDS, 0, "the test starts a window");
        assert_eq!(sweep_if_due(&m, later).unwrap(), SWEEP_BUDGET);
        assert_eq!(
            sweep_if_due(&m, later + SWEEP_EVERY_SECONDS - 1).unwrap(),
            0,
            "the same window"
        );
        // Within 60 s, each window's first writer goes on where the last stopped.
        for window in 1..5 {
            assert_eq!(
                sweep_if_due(&m, later + window * SWEEP_EVERY_SECONDS).unwrap(),
                SWEEP_BUDGET,
                "window {window}"
            );
        }
        assert_eq!(
            sweep_if_due(&m, later + 5 * SWEEP_EVERY_SECONDS).unwrap(),
            10,
            "the last ten, within 60 s"
        );
        assert!(m.data().is_empty());
        // The claims are swept too, a few minutes on.
        sweep(&m, later + 3 * BUCKET_SECONDS).unwrap();
        assert!(!m.0.borrow().keys().any(|k| k.starts_with("expiry-claim:")));
    }

    #[test]
    fn an_instance_asks_for_a_sweep_once_a_window() {
        let m = Map::default();
        for i in 0..3 {
            put(&m, &format!("val:{i}"), Some(T));
        }
        let later = T + 2 * BUCKET_SECONDS + GRACE_SECONDS;
        let gate = SweepGate::default();
        m.increment(&claim_key(later.div_euclid(SWEEP_EVERY_SECONDS)), 1)
            .unwrap();
        assert_eq!(
            gate.sweep_if_due(&m, later).unwrap(),
            0,
            "claimed by another"
        );
        // The claim gone, this instance would win it, but it asked in this window already.
        m.delete(&claim_key(later.div_euclid(SWEEP_EVERY_SECONDS)))
            .unwrap();
        assert_eq!(gate.sweep_if_due(&m, later + 1).unwrap(), 0);
        assert_eq!(m.data().len(), 3);
        // The next window it asks again, and sweeps.
        assert_eq!(
            gate.sweep_if_due(&m, later + SWEEP_EVERY_SECONDS).unwrap(),
            3
        );
        assert!(m.data().is_empty());
    }
}
