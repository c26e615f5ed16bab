//! Day counts: each lands on its UTC day, no increment is lost to a race between threads, a
//! closed day is kept whole, every key expires, and a count that cannot be written is seen (lost
//! count, a note in the host's log) and never an error.
#![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

use std::collections::HashMap;
use std::sync::Mutex;

use rand_core::{OsRng, TryRngCore};

use crate::engine::Engine;
use crate::engine::stats::*;
use crate::kernel::keys;
use crate::kernel::ports::{PortError, PortResult, Store};
use crate::kernel::secret::HmacKey;
use crate::kernel::settings::Settings;
use crate::kernel::time::Timestamp;
use crate::testing::{MemAudit, MemMailer, MemStore};

/// 2026-11-18T11:06:40Z.
const T0: Timestamp = Timestamp(1_795_000_000);

fn engine<'a>(
    store: &'a dyn Store,
    mailer: &'a MemMailer,
    audit: &'a MemAudit,
    key: &'a HmacKey,
) -> Engine<'a> {
    Engine {
        store,
        mailer,
        audit,
        settings: Settings::default(),
        key,
    }
}

/// A store that threads can share: one lock over counters (an atomic `increment`, like every
/// host's), which can be told to fail on keys with a prefix.
#[derive(Default)]
struct SharedStore {
    counters: Mutex<HashMap<String, (i64, Option<i64>)>>,
    values: Mutex<HashMap<String, Vec<u8>>>,
    fail_prefix: Option<&'static str>,
}

impl SharedStore {
    fn check(&self, key: &str) -> PortResult<()> {
        match self.fail_prefix {
            Some(p) if key.starts_with(p) => Err(PortError("injected".into())),
            _ => Ok(()),
        }
    }
}

impl Store for SharedStore {
    fn get(&self, key: &str) -> PortResult<Option<Vec<u8>>> {
        self.check(key)?;
        Ok(self.values.lock().unwrap().get(key).cloned())
    }
    fn set(&self, key: &str, value: &[u8], _: Option<i64>) -> PortResult<()> {
        self.check(key)?;
        self.values
            .lock()
            .unwrap()
            .insert(key.to_owned(), value.to_vec());
        Ok(())
    }
    fn delete(&self, key: &str) -> PortResult<()> {
        self.check(key)?;
        self.values.lock().unwrap().remove(key);
        Ok(())
    }
    fn increment(&self, key: &str, delta: i64, expires_at: Option<i64>) -> PortResult<i64> {
        self.check(key)?;
        let mut counters = self.counters.lock().unwrap();
        if delta == 0 {
            return Ok(counters.get(key).map_or(0, |c| c.0));
        }
        let slot = counters.entry(key.to_owned()).or_insert((0, expires_at));
        slot.0 += delta;
        slot.1 = slot.1.max(expires_at);
        Ok(slot.0)
    }
    fn list_keys(&self, _: &str) -> PortResult<Vec<String>> {
        Ok(Vec::new())
    }
}

#[test]
fn counts_land_on_their_utc_day_and_step_across_midnight() {
    let (store, mailer, audit) = (
        MemStore::default(),
        MemMailer::default(),
        MemAudit::default(),
    );
    let key = HmacKey::from_bytes(&[1; 32]).unwrap();
    let e = engine(&store, &mailer, &audit, &key);
    let mut rng = OsRng.unwrap_err();
    let today = day_of(T0);
    let midnight = Timestamp((today + 1) * DAY_SECONDS);
    // Three before midnight (the last at 23:59:59), two after (the first at 00:00:00).
    for at in [T0, T0.plus(60), midnight.plus(-1)] {
        e.count("acme", Stat::Allowed, at, &mut rng);
    }
    for at in [midnight, midnight.plus(3600)] {
        e.count("acme", Stat::Allowed, at, &mut rng);
    }
    e.count("acme", Stat::Locked, midnight, &mut rng);
    e.count("globex", Stat::Allowed, T0, &mut rng);
    let first = e.day_counts("acme", today, today + 1).unwrap();
    let second = e.day_counts("acme", today + 1, today + 1).unwrap();
    assert_eq!(first.get(Stat::Allowed), 3);
    assert_eq!(first.get(Stat::Locked), 0);
    assert_eq!(second.get(Stat::Allowed), 2);
    assert_eq!(second.get(Stat::Locked), 1);
    assert_eq!(
        e.day_counts("globex", today, today)
            .unwrap()
            .get(Stat::Allowed),
        1
    );
    assert_eq!(
        e.day_counts("acme", today - 1, today + 1).unwrap(),
        DayCounts {
            day: today - 1,
            ..DayCounts::default()
        }
    );
    // Every key expires KEEP_DAYS after its day ends; none is kept for good.
    assert!(store.kept_for_good().iter().all(|k| !k.contains("stat")));
    let (_, counters) = store.snapshot();
    for (k, _) in counters
        .iter()
        .filter(|(k, _)| k.starts_with("v1:stat:acme:"))
    {
        let day: i64 = k.split(':').nth(3).unwrap().parse().unwrap();
        assert_eq!(
            store.expiry(k),
            Some((day + 1 + KEEP_DAYS) * DAY_SECONDS),
            "{k}"
        );
    }
}

#[test]
fn a_closed_day_is_summed_once_and_kept_whole() {
    let (store, mailer, audit) = (
        MemStore::default(),
        MemMailer::default(),
        MemAudit::default(),
    );
    let key = HmacKey::from_bytes(&[1; 32]).unwrap();
    let e = engine(&store, &mailer, &audit, &key);
    let mut rng = OsRng.unwrap_err();
    let day = day_of(T0);
    for _ in 0..5 {
        e.count("acme", Stat::CodeSent, T0, &mut rng);
    }
    // Yesterday's day may still move (a call that began before midnight): not kept whole.
    assert_eq!(
        e.day_counts("acme", day, day + 1)
            .unwrap()
            .get(Stat::CodeSent),
        5
    );
    assert_eq!(store.get(&keys::stat_day("acme", day)).unwrap(), None);
    // Two days on, it is summed and kept; the kept sum is what a later page reads.
    assert_eq!(
        e.day_counts("acme", day, day + 2)
            .unwrap()
            .get(Stat::CodeSent),
        5
    );
    assert!(store.get(&keys::stat_day("acme", day)).unwrap().is_some());
    assert_eq!(
        store.expiry(&keys::stat_day("acme", day)),
        Some((day + 1 + KEEP_DAYS) * DAY_SECONDS)
    );
    for shard in 0..SHARDS {
        store
            .delete(&keys::stat("acme", day, Stat::CodeSent.name(), shard))
            .unwrap();
    }
    assert_eq!(
        e.day_counts("acme", day, day + 3)
            .unwrap()
            .get(Stat::CodeSent),
        5
    );
    // A kept day that does not parse is an error, never a zero.
    store.set(&keys::stat_day("acme", day), b"{", None).unwrap();
    assert!(e.day_counts("acme", day, day + 3).is_err());
}

#[test]
fn parallel_counts_lose_nothing_and_spread_over_shards() {
    const THREADS: usize = 8;
    const EACH: usize = 250;
    let store = SharedStore::default();
    let key = HmacKey::from_bytes(&[1; 32]).unwrap();
    let barrier = std::sync::Barrier::new(THREADS);
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                let (mailer, audit) = (MemMailer::default(), MemAudit::default());
                let e = engine(&store, &mailer, &audit, &key);
                let mut rng = OsRng.unwrap_err();
                barrier.wait();
                for i in 0..EACH {
                    // Half of them a day later: both days must add up.
                    let at = if i % 2 == 0 { T0 } else { T0.plus(DAY_SECONDS) };
                    e.count("acme", Stat::Verified, at, &mut rng);
                }
            });
        }
    });
    let (mailer, audit) = (MemMailer::default(), MemAudit::default());
    let e = engine(&store, &mailer, &audit, &key);
    let day = day_of(T0);
    let first = e.day_counts("acme", day, day + 1).unwrap();
    let second = e.day_counts("acme", day + 1, day + 1).unwrap();
    assert_eq!(first.get(Stat::Verified), (THREADS * EACH / 2) as i64);
    assert_eq!(second.get(Stat::Verified), (THREADS * EACH / 2) as i64);
    assert_eq!(first.lost + second.lost, 0);
    let used = store.counters.lock().unwrap().len();
    // 2 days × 8 shards; with 1,000 random picks a day every shard is taken (1 − (7/8)^1000 ≈ 1).
    assert_eq!(used, 2 * SHARDS as usize);
}

#[test]
fn a_count_that_cannot_be_written_is_seen_never_an_error() {
    let store = SharedStore {
        fail_prefix: Some("v1:stat:"),
        ..SharedStore::default()
    };
    let (mailer, audit) = (MemMailer::default(), MemAudit::default());
    let key = HmacKey::from_bytes(&[1; 32]).unwrap();
    let e = engine(&store, &mailer, &audit, &key);
    let mut rng = OsRng.unwrap_err();
    e.count("acme", Stat::Allowed, T0, &mut rng);
    e.count("acme", Stat::Locked, T0, &mut rng);
    let day = day_of(T0);
    // The lost counter has its own key (not failing here): the page says the figures may be short.
    assert_eq!(
        store
            .increment(&keys::stat_lost("acme", day), 0, None)
            .unwrap(),
        2
    );
    let notes = audit.notes.borrow();
    assert_eq!(notes.len(), 2);
    assert_eq!(notes[0].rule, "stats:not-counted:allowed");
    assert_eq!(notes[1].rule, "stats:not-counted:locked");
    assert_eq!(notes[0].claimed_org.as_deref(), Some("acme"));
    // And a store that fails altogether: still no panic, still a note.
    drop(notes);
    let dead = MemStore::default();
    dead.fail.set(true);
    let e = engine(&dead, &mailer, &audit, &key);
    e.count("acme", Stat::Allowed, T0, &mut rng);
    assert_eq!(audit.notes.borrow().len(), 3);
    assert!(e.day_counts("acme", day, day).is_err());
}
