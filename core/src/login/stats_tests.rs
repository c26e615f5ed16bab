//! The day counts the login step keeps (`engine::stats`), against what the audit trail says
//! happened: a scripted day of logins over in-memory ports, and the same day over a store whose
//! count keys all fail, which must answer every call exactly as before.
#![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

use rand_core::{OsRng, TryRngCore};

use super::tests::{T0, ctx, wrong};
use crate::engine::Engine;
use crate::engine::stats::{DayCounts, Stat, day_of};
use crate::kernel::model::Decision;
use crate::kernel::ports::{PortError, PortResult, Store};
use crate::kernel::secret::HmacKey;
use crate::kernel::settings::Settings;
use crate::testing::{MemAudit, MemMailer, MemStore};

/// A store whose count writes fail (when `broken`), and nothing else: not the lost counter.
struct Counting {
    inner: MemStore,
    broken: bool,
}

impl Store for Counting {
    fn get(&self, key: &str) -> PortResult<Option<Vec<u8>>> {
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: &[u8], expires_at: Option<i64>) -> PortResult<()> {
        self.inner.set(key, value, expires_at)
    }
    fn delete(&self, key: &str) -> PortResult<()> {
        self.inner.delete(key)
    }
    fn increment(&self, key: &str, delta: i64, expires_at: Option<i64>) -> PortResult<i64> {
        if self.broken && delta != 0 && key.starts_with("v1:stat:") {
            return Err(PortError("injected".into()));
        }
        self.inner.increment(key, delta, expires_at)
    }
    fn list_keys(&self, prefix: &str) -> PortResult<Vec<String>> {
        self.inner.list_keys(prefix)
    }
}

/// Runs a scripted day; returns every call's answer (as text), the trail's actions and the counts.
fn a_day(broken: bool) -> (Vec<String>, Vec<String>, DayCounts) {
    let store = Counting {
        inner: MemStore::default(),
        broken,
    };
    let (mailer, audit) = (MemMailer::default(), MemAudit::default());
    let key = HmacKey::from_bytes(&[7; 32]).unwrap();
    let e = Engine {
        store: &store,
        mailer: &mailer,
        audit: &audit,
        settings: Settings::default(),
        key: &key,
    };
    let mut rng = OsRng.unwrap_err();
    let mut answers = Vec::new();
    let mut note =
        |s: String| answers.push(s.split("challenge_id").next().unwrap_or("").to_owned());
    let challenge = |d: &Decision| match d {
        Decision::Challenge(c) => c.challenge_id.clone(),
        other => panic!("{other:?}"),
    };
    // dr-a enrolls, then signs in with a code and asks to be remembered, then comes back trusted.
    let mut a = ctx("dr-a");
    a.device.traits.user_agent = "Mozilla/5.0 Chrome/131.0".into();
    let d = e.begin(&a, T0, &mut rng).unwrap();
    let id = challenge(&d);
    note(format!(
        "{:?}",
        e.send_code(&a, &id, T0, &mut rng).map(|s| s.resent)
    ));
    let code = mailer.last_code().unwrap();
    note(format!(
        "{:?}",
        e.verify(&a, &id, &code, false, T0, &mut rng).is_ok()
    ));
    let d = e.begin(&a, T0.plus(60), &mut rng).unwrap();
    let id = challenge(&d);
    e.send_code(&a, &id, T0.plus(60), &mut rng).unwrap();
    let code = mailer.last_code().unwrap();
    let v = e
        .verify(&a, &id, &code, true, T0.plus(61), &mut rng)
        .unwrap();
    let cookie = v.set_cookie.unwrap();
    a.device.cookie = Some(
        cookie
            .split(';')
            .next()
            .unwrap()
            .split_once('=')
            .unwrap()
            .1
            .to_owned(),
    );
    let d = e.begin(&a, T0.plus(120), &mut rng).unwrap();
    note(format!("{}", matches!(d, Decision::Allow(_))));
    // dr-b: the mail service refuses the first email; three more sends, the third throttled.
    let b = ctx("dr-b");
    let id = challenge(&e.begin(&b, T0.plus(200), &mut rng).unwrap());
    mailer.fail.set(true);
    note(format!(
        "{:?}",
        e.send_code(&b, &id, T0.plus(200), &mut rng)
            .map(|s| s.resent)
    ));
    mailer.fail.set(false);
    for s in 1..=3 {
        note(format!(
            "{:?}",
            e.send_code(&b, &id, T0.plus(200 + s), &mut rng)
                .map(|s| s.resent)
        ));
    }
    // dr-c: wrong codes an hour apart (past every delay) until locked, then once more.
    let c = ctx("dr-c");
    let id = challenge(&e.begin(&c, T0.plus(300), &mut rng).unwrap());
    e.send_code(&c, &id, T0.plus(300), &mut rng).unwrap();
    let code = mailer.last_code().unwrap();
    for i in 0..21 {
        let at = T0.plus(301 + i * 3601);
        note(format!(
            "{:?}",
            e.verify(&c, &id, &wrong(&code), false, at, &mut rng).err()
        ));
    }
    let at = T0.plus(301 + 21 * 3601);
    note(format!(
        "{:?}",
        e.begin(&c, at, &mut rng)
            .map(|d| matches!(d, Decision::Deny(_)))
    ));
    let today = day_of(T0);
    let mut counts = e.day_counts("acme", today, today).unwrap();
    // The lock came after midnight: add the next day.
    let next = e.day_counts("acme", today + 1, today + 1).unwrap();
    for (n, c) in counts.counts.iter_mut().zip(next.counts) {
        *n += c;
    }
    counts.lost += next.lost;
    (answers, audit.actions(), counts)
}

#[test]
fn a_scripted_day_counts_what_the_trail_records() {
    let (_, actions, counts) = a_day(false);
    let n = |a: &str| actions.iter().filter(|x| *x == a).count() as i64;
    assert_eq!(counts.reached(), 6, "dr-a thrice, dr-b once, dr-c twice");
    assert_eq!(
        counts.get(Stat::ChallengeEnrollment),
        3,
        "dr-a, dr-b, dr-c enroll"
    );
    assert_eq!(counts.get(Stat::ChallengeLogin), 1);
    assert_eq!(
        counts.get(Stat::ChallengeEnrollment) + counts.get(Stat::ChallengeLogin),
        n("challenge_started")
    );
    // Sent: dr-a twice, dr-b twice (after the refusal), dr-c once.
    assert_eq!(counts.get(Stat::CodeSent), 5);
    assert_eq!(counts.get(Stat::DeliveryFailed), n("code_delivery_failed"));
    assert_eq!(counts.get(Stat::DeliveryFailed), 1);
    // dr-a's enrollment code counts as the enrollment, the login's as verified: two in all.
    assert_eq!(counts.get(Stat::Verified), n("code_verified"));
    assert_eq!(counts.get(Stat::Verified), 1);
    assert_eq!(counts.verified(), 2);
    assert_eq!(counts.get(Stat::Enrolled), n("enrolled"));
    assert_eq!(counts.get(Stat::Enrolled), 1);
    assert_eq!(counts.get(Stat::Trusted), 1);
    assert_eq!(
        counts.get(Stat::Throttled),
        n("send_throttled") + n("verify_throttled")
    );
    assert_eq!(counts.get(Stat::Throttled), 1);
    assert_eq!(counts.get(Stat::Locked), n("user_locked"));
    assert_eq!(counts.get(Stat::Locked), 1);
    assert_eq!(counts.lost, 0);
}

#[test]
fn counts_that_cannot_be_written_change_no_answer_and_no_record() {
    let (answers, actions, counts) = a_day(false);
    let (broken_answers, broken_actions, broken_counts) = a_day(true);
    assert_eq!(answers, broken_answers);
    assert_eq!(actions, broken_actions);
    // Nothing was counted, and every count is seen as lost.
    assert_eq!(broken_counts.counts, [0; 11]);
    assert_eq!(broken_counts.lost, counts.counts.iter().sum::<i64>());
}

#[test]
fn the_same_browser_back_at_its_live_challenge_is_not_counted_again() {
    let store = MemStore::default();
    let (mailer, audit) = (MemMailer::default(), MemAudit::default());
    let key = HmacKey::from_bytes(&[7; 32]).unwrap();
    let e = Engine {
        store: &store,
        mailer: &mailer,
        audit: &audit,
        settings: Settings::default(),
        key: &key,
    };
    let mut rng = OsRng.unwrap_err();
    let c = ctx("dr-reload");
    let first = e.begin(&c, T0, &mut rng).unwrap();
    // A reload of the IdP's page: the same challenge, nothing recorded, nothing counted.
    let again = e.begin(&c, T0.plus(5), &mut rng).unwrap();
    assert_eq!(first, again);
    assert_eq!(audit.actions(), ["challenge_started"]);
    let today = day_of(T0);
    let counts = e.day_counts("acme", today, today).unwrap();
    assert_eq!(counts.reached(), 1);
    assert_eq!(counts.get(Stat::ChallengeEnrollment), 1);
}
