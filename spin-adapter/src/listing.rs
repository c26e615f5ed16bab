//! `list-keys` without a scan: an index of each user's device keys and of each organization's
//! known users, built on the atomic `increment` (Spin's key-value store has no prefix query, and
//! its compare-and-swap does not hold on Redis).
//!
//! The component lists two kinds of prefix ([`FAMILIES`]; ids hold no colon): a user's devices,
//! `v1:device:<org>:<user>:`, and an organization's known users (`core::roster`),
//! `v1:user-seen:<org>:`. Every value key under such a prefix is filed in its *parent*'s index
//! before the value is written:
//!
//! ```text
//!  set(K, v, E)                                   list-keys(P)
//!   │ mark = get(list-mark:K)                       │ n = get(list-count:P)
//!   │ covered: the mark's expiry ≥ E, or for good?  │ K₁…Kₙ = get(list-slot:P1…Pn)
//!   ├─ yes ─────────────────────────┐               │ the Kᵢ under P, once each,
//!   └─ no: slot = the mark's, or    │               │ whose val:Kᵢ is present
//!          increment(list-count:P);  │               ▼
//!          list-slot:P<slot> = K,    │
//!          list-mark:K = "<slot> E", │
//!          both filed to expire at E │
//!   ┌────────────────────────────────┘
//!   ▼ val:K = v
//! ```
//!
//! - **Never a value without its entry.** The entry is written with the value, ahead of it in
//!   one batch (`set_many`: one transaction on Spin's SQLite store, one `MSET` on Redis), and a
//!   failure to claim its slot fails the `set` before anything is written; an entry without its
//!   value (a `delete`, a swept value) is only skipped by readers. `delete` leaves the entry: removing it
//!   could race a `set` that found the mark and skipped filing.
//! - **An entry outlives its value.** It is filed to expire with the latest expiry any `set`
//!   asked for (a `set` with a later one files it again), and the sweep keeps a key whose note was
//!   extended.
//! - **Races only duplicate.** Two first `set`s of one key may each take a slot; readers drop the
//!   duplicate.
//! - **Stores written before the index** are filed once per family by its first lister: it scans
//!   the store, files every key of that family, then writes the family's ready key (`list-ready`
//!   for devices, as before users were listed, so that an adapter of that time running beside
//!   this one during an upgrade agrees with it; `list-users-ready` for users). Until then every
//!   lister of the family scans.
//!
//! Any other prefix is listed by a scan ([`list`] answers `None`).

use std::collections::BTreeSet;

use crate::expiring::{self, Keys};
use crate::mapping;

/// The keys the component lists by prefix, how many colons end a listed prefix of each, and the
/// key set once the family's keys written before it was indexed are filed:
/// `v1:device:<org>:<user>:<device>` and `v1:user-seen:<org>:<user>`.
pub const FAMILIES: [(&str, usize, &str); 2] = [
    ("v1:device:", 4, mapping::LIST_READY),
    ("v1:user-seen:", 3, mapping::LIST_USERS_READY),
];
/// The value of a family's ready key.
const READY_VALUE: &[u8] = b"v1";

/// The family `key` belongs to.
fn family_of(key: &str) -> Option<&'static (&'static str, usize, &'static str)> {
    FAMILIES
        .iter()
        .find(|(family, _, _)| key.starts_with(family))
}

/// The key-value operations the index needs, beyond [`Keys`].
pub trait Listing: Keys {
    /// The values at `keys`, in their order (`None` for an absent one).
    ///
    /// # Errors
    /// The store could not be read.
    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, String> {
        keys.iter().map(|key| self.get(key)).collect()
    }
    /// Every key in the store (a scan).
    ///
    /// # Errors
    /// The store could not be read.
    fn all_keys(&self) -> Result<Vec<String>, String>;
}

/// The prefix whose index files `key`: `key` up to its family's last listed colon, when it is in
/// one of [`FAMILIES`].
#[must_use]
pub fn parent(key: &str) -> Option<&str> {
    let (_, colons, _) = family_of(key)?;
    let end = key.match_indices(':').nth(colons - 1)?.0;
    let parent = &key[..=end];
    // `v1:device::…` or `v1:device:o::…`: an empty org or user is not a listed prefix.
    (!parent.contains("::")).then_some(parent)
}

fn count_key(parent: &str) -> String {
    format!("{}{parent}", mapping::LIST_COUNT_PREFIX)
}

fn slot_key(parent: &str, slot: i64) -> String {
    format!("{}{parent}{slot}", mapping::LIST_SLOT_PREFIX)
}

fn mark_key(key: &str) -> String {
    format!("{}{key}", mapping::LIST_MARK_PREFIX)
}

/// A mark: the key's slot and the expiry its entry is filed with (`None`: for good).
/// A stored mark's slot and expiry. An unreadable mark is none: the key is filed again, in a new
/// slot (a duplicate entry, never a lost one).
fn parse_mark(bytes: &[u8]) -> Option<(i64, Option<i64>)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (slot, until) = text.split_once(' ')?;
    let until = match until {
        "none" => None,
        at => Some(at.parse().ok()?),
    };
    Some((slot.parse().ok()?, until))
}

/// Files the component's value key `key` in its parent's index, to last at least until
/// `expires_at`: claims the slot now and adds the entry (slot, mark and their expiry notes) to
/// `batch`, ahead of the value, which the caller adds after it and writes with it. Keys outside
/// [`FAMILIES`] are left alone.
///
/// # Errors
/// The store failed: the batch must not be written.
pub fn on_set(
    kv: &impl Keys,
    batch: &mut expiring::Batch,
    key: &str,
    expires_at: Option<i64>,
    now: i64,
) -> Result<(), String> {
    let Some(parent) = parent(key) else {
        return Ok(());
    };
    let stored_mark = kv.get(&mark_key(key))?;
    let mark = stored_mark.as_deref().and_then(parse_mark);
    let covered = match (mark, expires_at) {
        (Some((_, None)), _) => true,
        (Some((_, Some(filed))), Some(wanted)) => filed >= wanted,
        _ => false,
    };
    if covered {
        return Ok(());
    }
    // A slot number just taken was never used, and a mark never stored was never filed (a mark is
    // swept with its note, in one batch): neither can have an expiry noted to replace, so neither
    // note is read. A slot or a mark written before may have one.
    let expire = |batch: &mut expiring::Batch, stored: &str, fresh: bool| {
        if fresh {
            expiring::on_first_set(kv, batch, stored, expires_at, now)
        } else {
            expiring::on_set(kv, batch, stored, expires_at, now)
        }
    };
    let (slot, fresh_slot) = match mark {
        Some((slot, _)) => (slot, false),
        None => (kv.increment(&count_key(parent), 1)?, true),
    };
    let slot_key = slot_key(parent, slot);
    batch.set(slot_key.clone(), key.as_bytes().to_vec());
    expire(batch, &slot_key, fresh_slot)?;
    let until = expires_at.map_or_else(|| "none".to_owned(), |at| at.to_string());
    let mark_key = mark_key(key);
    batch.set(mark_key.clone(), format!("{slot} {until}").into_bytes());
    expire(batch, &mark_key, stored_mark.is_none())?;
    Ok(())
}

/// The component's value keys under `prefix`, from the index; `None` when `prefix` is not one the
/// index serves (the caller scans).
///
/// # Errors
/// The store failed.
pub fn list(kv: &impl Listing, prefix: &str, now: i64) -> Result<Option<Vec<String>>, String> {
    if parent(prefix) != Some(prefix) {
        return Ok(None);
    }
    let Some((family, _, ready)) = family_of(prefix) else {
        return Ok(None);
    };
    if kv.get(ready)?.as_deref() != Some(READY_VALUE) {
        file_existing(kv, family, ready, now)?;
    }
    let filed = kv.counter(&count_key(prefix))?;
    if filed <= 0 {
        return Ok(Some(Vec::new()));
    }
    let slots: Vec<String> = (1..=filed).map(|slot| slot_key(prefix, slot)).collect();
    let candidates: BTreeSet<String> = kv
        .get_many(&slots)?
        .into_iter()
        .flatten()
        .filter_map(|bytes| String::from_utf8(bytes).ok())
        .filter(|key| parent(key) == Some(prefix))
        .collect();
    let candidates: Vec<String> = candidates.into_iter().collect();
    let stored: Vec<String> = candidates.iter().map(|k| mapping::value_key(k)).collect();
    let present = kv.get_many(&stored)?;
    Ok(Some(
        candidates
            .into_iter()
            .zip(present)
            .filter_map(|(key, value)| value.map(|_| key))
            .collect(),
    ))
}

/// Files every key of `family` already in the store (written before it was indexed), each with
/// the expiry noted for it, then sets the family's `ready` key.
fn file_existing(kv: &impl Listing, family: &str, ready: &str, now: i64) -> Result<(), String> {
    for stored in kv.all_keys()? {
        let Some(key) = stored.strip_prefix(mapping::VALUE_PREFIX) else {
            continue;
        };
        if !key.starts_with(family) || parent(key).is_none() {
            continue;
        }
        let until = kv
            .get(&expiring::note_key(&stored))?
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|text| text.parse().ok());
        let mut batch = expiring::Batch::default();
        on_set(kv, &mut batch, key, until, now)?;
        batch.write(kv)?;
    }
    kv.set(ready, READY_VALUE)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;
    use std::cell::{Cell, RefCell};
    use std::collections::BTreeMap;

    fn read_mark(kv: &impl Keys, key: &str) -> Result<Option<(i64, Option<i64>)>, String> {
        Ok(kv.get(&mark_key(key))?.as_deref().and_then(parse_mark))
    }

    /// A store in a map, counting scans and noting the keys read; `fail_on` makes writes of keys
    /// with that prefix fail.
    #[derive(Default)]
    struct Map {
        map: RefCell<BTreeMap<String, Vec<u8>>>,
        scans: Cell<usize>,
        reads: RefCell<Vec<String>>,
        fail_on: RefCell<Option<String>>,
    }

    impl Keys for Map {
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
            self.reads.borrow_mut().push(key.to_owned());
            Ok(self.map.borrow().get(key).cloned())
        }
        fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
            if let Some(prefix) = self.fail_on.borrow().as_deref()
                && key.starts_with(prefix)
            {
                return Err(format!("planted failure writing {prefix}…"));
            }
            self.map.borrow_mut().insert(key.to_owned(), value.to_vec());
            Ok(())
        }
        fn delete(&self, key: &str) -> Result<(), String> {
            self.map.borrow_mut().remove(key);
            Ok(())
        }
        fn increment(&self, key: &str, delta: i64) -> Result<i64, String> {
            let now = self.counter(key)? + delta;
            self.map
                .borrow_mut()
                .insert(key.to_owned(), now.to_string().into_bytes());
            Ok(now)
        }
    }

    impl Listing for Map {
        fn all_keys(&self) -> Result<Vec<String>, String> {
            self.scans.set(self.scans.get() + 1);
            Ok(self.map.borrow().keys().cloned().collect())
        }
    }

    const T: i64 = 1_795_000_000;
    const ALICE: &str = "v1:device:org-1:alice:";

    /// The component's `set`, as the adapter does it.
    fn put(m: &Map, key: &str, at: Option<i64>) -> Result<(), String> {
        let mut batch = expiring::Batch::default();
        on_set(m, &mut batch, key, at, T)?;
        let stored = mapping::value_key(key);
        batch.set(stored.clone(), b"device".to_vec());
        expiring::on_set(m, &mut batch, &stored, at, T)?;
        batch.write(m)
    }

    fn listed(m: &Map, prefix: &str) -> Vec<String> {
        let mut keys = list(m, prefix, T).unwrap().expect("an indexed prefix");
        keys.sort();
        keys
    }

    /// The index's own entries, with their expiry notes.
    fn index(m: &Map) -> Vec<(String, Vec<u8>)> {
        m.map
            .borrow()
            .iter()
            .filter(|(k, _)| k.starts_with("list-") || k.starts_with("expiry:list-"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    #[test]
    fn a_users_devices_are_listed_without_a_scan_and_nobody_elses() {
        let m = Map::default();
        put(&m, &format!("{ALICE}d1"), Some(T + 100)).unwrap();
        put(&m, &format!("{ALICE}d2"), None).unwrap();
        put(&m, "v1:device:org-1:alice.b:d3", Some(T + 100)).unwrap();
        put(&m, "v1:device:org-2:alice:d4", Some(T + 100)).unwrap();
        put(&m, "v1:challenge:org-1:alice", Some(T + 100)).unwrap();
        let scans_to_get_ready = m.scans.get();
        assert_eq!(
            listed(&m, ALICE),
            [format!("{ALICE}d1"), format!("{ALICE}d2")]
        );
        assert_eq!(listed(&m, "v1:device:org-1:bob:"), Vec::<String>::new());
        // The first list files what was there before (one scan), later ones never scan.
        assert_eq!(m.scans.get(), scans_to_get_ready + 1);
        listed(&m, ALICE);
        put(&m, &format!("{ALICE}d5"), Some(T + 100)).unwrap();
        assert_eq!(listed(&m, ALICE).len(), 3);
        assert_eq!(m.scans.get(), scans_to_get_ready + 1);
    }

    #[test]
    fn other_prefixes_are_left_to_a_scan() {
        let m = Map::default();
        for prefix in [
            "v1:device:",
            "v1:device:org-1:",
            "v1:device:org-1:alice",
            "v1:device:org-1:alice:d1",
            "v1:device::alice:",
            "v1:user-seen:",
            "v1:user-seen:org-1",
            "v1:user-seen:org-1:alice",
            "v1:user-seen::",
            "conformance:run:",
            "",
        ] {
            assert_eq!(list(&m, prefix, T).unwrap(), None, "{prefix:?}");
        }
        assert!(m.map.borrow().is_empty(), "nothing written for a scan");
    }

    #[test]
    fn a_deleted_or_swept_device_is_not_listed_and_a_set_again_one_is() {
        let m = Map::default();
        let d1 = format!("{ALICE}d1");
        put(&m, &d1, Some(T + 100)).unwrap();
        m.delete(&mapping::value_key(&d1)).unwrap();
        assert!(listed(&m, ALICE).is_empty());
        put(&m, &d1, Some(T + 100)).unwrap();
        assert_eq!(listed(&m, ALICE), std::slice::from_ref(&d1));
        // One slot for the key, whatever its history.
        assert_eq!(m.counter(&count_key(ALICE)).unwrap(), 1);
    }

    #[test]
    fn writing_a_device_again_with_the_same_expiry_writes_no_index() {
        let m = Map::default();
        let d1 = format!("{ALICE}d1");
        put(&m, &d1, Some(T + 100)).unwrap();
        let before = index(&m);
        assert_eq!(
            before.len(),
            5,
            "count, slot, mark and two notes: {before:?}"
        );
        for _ in 0..3 {
            put(&m, &d1, Some(T + 100)).unwrap();
            put(&m, &d1, Some(T + 50)).unwrap();
        }
        assert_eq!(index(&m), before);
    }

    #[test]
    fn the_entry_lasts_as_long_as_the_longest_expiry_asked_for() {
        let m = Map::default();
        let d1 = format!("{ALICE}d1");
        put(&m, &d1, Some(T + 100)).unwrap();
        put(&m, &d1, Some(T + 86_400)).unwrap();
        // Sweeping what was due at the first expiry leaves the entry of the extended value.
        let due = T + 100 + expiring::BUCKET_SECONDS + expiring::GRACE_SECONDS;
        expiring::sweep(&m, due).unwrap();
        assert_eq!(listed(&m, ALICE), std::slice::from_ref(&d1));
        // Once the value is past its expiry, its entry goes with it.
        expiring::sweep(
            &m,
            T + 86_400 + 2 * expiring::BUCKET_SECONDS + expiring::GRACE_SECONDS,
        )
        .unwrap();
        assert!(listed(&m, ALICE).is_empty());
        assert!(
            !m.map
                .borrow()
                .keys()
                .any(|k| k.starts_with("list-slot:") || k.starts_with("list-mark:")),
            "the entry and the mark are swept"
        );
        // And a device kept for good keeps its entry for good.
        put(&m, &d1, None).unwrap();
        expiring::sweep(&m, T + 10 * 86_400).unwrap();
        assert_eq!(listed(&m, ALICE), [d1]);
    }

    #[test]
    fn a_failed_index_write_fails_the_set_before_the_value() {
        let m = Map::default();
        *m.fail_on.borrow_mut() = Some("list-slot:".to_owned());
        assert!(put(&m, &format!("{ALICE}d1"), Some(T + 100)).is_err());
        assert!(
            m.get(&mapping::value_key(&format!("{ALICE}d1")))
                .unwrap()
                .is_none()
        );
        *m.fail_on.borrow_mut() = Some("list-mark:".to_owned());
        assert!(put(&m, &format!("{ALICE}d2"), Some(T + 100)).is_err());
        assert!(
            m.get(&mapping::value_key(&format!("{ALICE}d2")))
                .unwrap()
                .is_none()
        );
        // The next write files it.
        *m.fail_on.borrow_mut() = None;
        put(&m, &format!("{ALICE}d2"), Some(T + 100)).unwrap();
        assert_eq!(listed(&m, ALICE), [format!("{ALICE}d2")]);
    }

    #[test]
    fn an_unreadable_mark_or_slot_never_hides_a_device() {
        let m = Map::default();
        let d1 = format!("{ALICE}d1");
        put(&m, &d1, Some(T + 100)).unwrap();
        m.set(&mark_key(&d1), b"garbage").unwrap();
        put(&m, &d1, Some(T + 100)).unwrap();
        assert_eq!(listed(&m, ALICE), std::slice::from_ref(&d1));
        // A slot naming another user's key (a store changed by hand) is not listed.
        m.set(&slot_key(ALICE, 9), b"v1:device:org-1:mallory:x")
            .unwrap();
        m.increment(&count_key(ALICE), 7).unwrap();
        put(&m, "v1:device:org-1:mallory:x", None).unwrap();
        assert_eq!(listed(&m, ALICE), [d1]);
    }

    #[test]
    fn devices_written_before_the_index_are_filed_by_the_first_list() {
        let m = Map::default();
        // Written by an adapter without the index: the value and its expiry note only.
        let old = format!("{ALICE}old");
        let stored = mapping::value_key(&old);
        let mut batch = expiring::Batch::default();
        batch.set(stored.clone(), b"device".to_vec());
        expiring::on_set(&m, &mut batch, &stored, Some(T + 100), T).unwrap();
        batch.write(&m).unwrap();
        assert_eq!(listed(&m, ALICE), std::slice::from_ref(&old));
        assert_eq!(
            m.get(mapping::LIST_READY).unwrap().as_deref(),
            Some(READY_VALUE)
        );
        assert_eq!(
            read_mark(&m, &old).unwrap(),
            Some((1, Some(T + 100))),
            "filed with its noted expiry"
        );
    }

    #[test]
    fn the_component_lists_exactly_the_prefixes_the_index_serves() {
        // core's own key builders, so that a change there cannot quietly fall back to scans.
        use mfa_step_core::kernel::keys;
        let prefix = keys::devices_of("org-1", "alice");
        assert_eq!(parent(&prefix), Some(prefix.as_str()));
        let key = keys::device("org-1", "alice", "d-1");
        assert_eq!(parent(&key), Some(prefix.as_str()));
        let users = keys::users_seen("org-1");
        assert_eq!(parent(&users), Some(users.as_str()));
        let key = keys::user_seen("org-1", "alice");
        assert_eq!(parent(&key), Some(users.as_str()));
    }

    #[test]
    fn an_organizations_users_are_listed_without_a_scan_and_nobody_elses() {
        let m = Map::default();
        let org = "v1:user-seen:org-1:";
        put(&m, "v1:user-seen:org-1:alice", Some(T + 100)).unwrap();
        put(&m, "v1:user-seen:org-1:bob", Some(T + 100)).unwrap();
        put(&m, "v1:user-seen:org-2:carol", Some(T + 100)).unwrap();
        put(&m, "v1:device:org-1:alice:d1", Some(T + 100)).unwrap();
        // A user seen again on a later day is filed again in the same slot.
        put(&m, "v1:user-seen:org-1:alice", Some(T + 200)).unwrap();
        assert_eq!(
            listed(&m, org),
            ["v1:user-seen:org-1:alice", "v1:user-seen:org-1:bob"]
        );
        assert_eq!(m.counter(&count_key(org)).unwrap(), 2);
        assert_eq!(
            listed(&m, "v1:user-seen:org-2:"),
            ["v1:user-seen:org-2:carol"]
        );
    }

    #[test]
    fn users_written_before_they_were_indexed_are_filed_once_and_devices_stay_ready() {
        let m = Map::default();
        // A store whose devices were indexed by an adapter of before users were listed (its ready
        // key set as that adapter sets it), and a user entry nothing filed.
        put(&m, &format!("{ALICE}d1"), Some(T + 100)).unwrap();
        assert_eq!(listed(&m, ALICE), [format!("{ALICE}d1")]);
        assert_eq!(
            m.get(mapping::LIST_READY).unwrap().as_deref(),
            Some(&b"v1"[..])
        );
        let user = "v1:user-seen:org-1:alice";
        m.set(&mapping::value_key(user), b"1 - provider").unwrap();
        assert_eq!(listed(&m, "v1:user-seen:org-1:"), [user]);
        assert_eq!(
            m.get(mapping::LIST_USERS_READY).unwrap().as_deref(),
            Some(READY_VALUE)
        );
        // The devices' ready key is untouched (an older adapter beside this one still agrees),
        // and no device was filed twice.
        assert_eq!(
            m.get(mapping::LIST_READY).unwrap().as_deref(),
            Some(&b"v1"[..])
        );
        assert_eq!(m.counter(&count_key(ALICE)).unwrap(), 1, "no second slot");
        assert_eq!(listed(&m, ALICE), [format!("{ALICE}d1")]);
    }

    #[test]
    fn a_key_filed_for_the_first_time_reads_no_note_of_its_entry_and_one_filed_again_does() {
        let m = Map::default();
        let user = "v1:user-seen:org-1:alice";
        put(&m, user, None).unwrap();
        let entry_notes = |m: &Map| -> Vec<String> {
            m.reads
                .borrow()
                .iter()
                .filter(|k| k.starts_with("expiry:list-"))
                .cloned()
                .collect()
        };
        assert_eq!(
            entry_notes(&m),
            Vec::<String>::new(),
            "a fresh slot and mark"
        );
        assert_eq!(listed(&m, "v1:user-seen:org-1:"), [user]);

        // An unreadable mark files the key again in a new slot, and its note is looked for (an
        // expiry noted for it must not outlive the mark written now).
        let device = format!("{ALICE}d1");
        put(&m, &device, Some(T + 100)).unwrap();
        m.set(&mark_key(&device), b"garbage").unwrap();
        m.reads.borrow_mut().clear();
        put(&m, &device, None).unwrap();
        assert_eq!(
            entry_notes(&m),
            [format!("expiry:list-mark:{device}")],
            "the new slot's note is not read, the mark's is"
        );
        assert!(
            m.get(&expiring::note_key(&mark_key(&device)))
                .unwrap()
                .is_none(),
            "the mark, now for good, has no expiry left"
        );
        assert_eq!(listed(&m, ALICE), [device]);
    }
}
