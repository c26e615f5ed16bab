//! What the store may forget, and that forgetting it never lets anything through: every key a
//! login writes expires except the user's and the organization's own, and a host that sweeps as
//! early as the expiries allow (at every step below) never lets a fourth email into a window,
//! never lifts a lock, and never brings a revoked browser back.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use rand_core::{OsRng, TryRngCore};

use super::tests::{T0, World, ctx, wrong};
use crate::kernel::error::Error;
use crate::kernel::keys;
use crate::kernel::model::{Actor, Decision};
use crate::kernel::ports::Store as _;
use crate::kernel::settings::Settings;
use crate::kernel::time::Timestamp;

const DAY: i64 = 86_400;

/// The kinds of key kept for good: one per user or per organization, never one per request.
const KEPT_FOR_GOOD: [&str; 9] = [
    "v1:streak:",
    // The current streak's count of wrong codes (deleted when the streak ends).
    "v1:failures:",
    "v1:audit-count:",
    "v1:enrollment:",
    "v1:grace-start:",
    "v1:grace-logins:",
    "v1:grace-spent:",
    "v1:policy:",
    // The organization's list of its users (`roster`): one entry per user.
    "v1:user-seen:",
];

fn kept_for_good_is_per_user(w: &World) {
    for key in w.store.kept_for_good() {
        assert!(
            KEPT_FOR_GOOD.iter().any(|kind| key.starts_with(kind)),
            "{key} is kept for good, but is not a per-user or per-organization key"
        );
    }
}

/// Guesses wrong codes, sweeping before each call, until `verify` says the user is locked;
/// returns the time of that answer.
fn guess_until_locked(w: &mut World, user: &str, mut now: Timestamp) -> Timestamp {
    let c = ctx(user);
    let mut id = w.begin(&c, now);
    w.send(&c, &id, now).unwrap();
    let mut code = w.mailer.last_code().unwrap();
    for _ in 0..200 {
        w.store.sweep(now.0);
        match w.verify(&c, &id, &wrong(&code), now) {
            Err(Error::Locked) => return now,
            Err(Error::Throttled { retry_after }) => now = now.plus(i64::from(retry_after)),
            Err(Error::Rejected) => {
                now = now.plus(1);
                // A dead code (five guesses): a new challenge and a new email.
                if w.send(&c, &id, now).is_err() {
                    id = match w.decide(&c, now) {
                        Ok(Decision::Challenge(ch)) => ch.challenge_id,
                        Ok(Decision::Deny(_)) => return now,
                        other => panic!("{other:?}"),
                    };
                    if let Err(Error::Throttled { retry_after }) = w.send(&c, &id, now) {
                        now = now.plus(i64::from(retry_after));
                        w.send(&c, &id, now).unwrap();
                    }
                }
                code = w.mailer.last_code().unwrap();
            }
            other => panic!("{other:?}"),
        }
    }
    panic!("never locked")
}

#[test]
fn every_key_a_login_writes_expires_except_the_users_and_the_orgs_own() {
    let mut w = World::new();
    let mut c = ctx("dr-exp");
    let id = w.begin(&c, T0);
    w.send(&c, &id, T0).unwrap();
    let code = w.mailer.last_code().unwrap();
    // Wrong guesses up to the delays, so that slots, stamps and window tickets exist.
    let mut now = T0;
    for _ in 0..5 {
        now = now.plus(1);
        assert_eq!(
            w.verify(&c, &id, &wrong(&code), now).err(),
            Some(Error::Rejected)
        );
    }
    let id = w.begin(&c, now.plus(1));
    w.send(&c, &id, now.plus(1)).unwrap();
    let code = w.mailer.last_code().unwrap();
    now = now.plus(31);
    let verified = w.verify_trusting(&c, &id, &code, now).unwrap();
    c.device.cookie = verified
        .set_cookie
        .as_deref()
        .and_then(|s| s.split(';').next())
        .and_then(|p| p.split_once('='))
        .map(|(_, v)| v.to_owned());
    assert!(c.device.cookie.is_some());
    // A trusted login rotates the device: a rotation counter and a new record.
    now = now.plus(3600);
    assert!(matches!(w.decide(&c, now), Ok(Decision::Allow(_))));
    kept_for_good_is_per_user(&w);

    // Swept once the last of it stopped mattering: only the kept keys are left.
    w.store.sweep(now.plus(31 * DAY).0);
    let (values, counters) = w.store.snapshot();
    let left: Vec<&String> = values
        .iter()
        .map(|(k, _)| k)
        .chain(counters.iter().map(|(k, _)| k))
        .collect();
    let kept = w.store.kept_for_good();
    // The organization's day counts (`engine::stats`) are statistics kept for a year, not the
    // user's state: they outlive the month, and go too once their own time is up.
    let (counts, state): (Vec<&String>, Vec<&String>) =
        left.into_iter().partition(|k| k.starts_with("v1:stat:"));
    assert_eq!(state.len(), kept.len(), "left after the sweep: {state:?}");
    assert!(!counts.is_empty(), "the login was counted");
    w.store
        .sweep(now.plus((crate::engine::stats::KEEP_DAYS + 2) * DAY).0);
    let (values, counters) = w.store.snapshot();
    assert!(
        values
            .iter()
            .map(|(k, _)| k)
            .chain(counters.iter().map(|(k, _)| k))
            .all(|k| !k.starts_with("v1:stat")),
        "day counts are forgotten after their year"
    );
    // And the user signs in as a fresh one would.
    let later = now.plus(31 * DAY);
    c.device.cookie = None;
    let id = w.begin(&c, later);
    w.send(&c, &id, later).unwrap();
    let code = w.mailer.last_code().unwrap();
    w.verify(&c, &id, &code, later.plus(1)).unwrap();
}

#[test]
fn reading_a_counter_creates_nothing() {
    let mut w = World::new();
    let c = ctx("dr-read");
    w.begin(&c, T0);
    let (_, mut counters) = w.store.snapshot();
    // The counters a begin writes: the record it appended, counted; and the organization's day
    // count of what it decided (`engine::stats`): one challenge opened to enroll.
    let day_counts: Vec<i64> = counters
        .iter()
        .filter(|(k, _)| k.starts_with("v1:stat:"))
        .map(|(_, n)| *n)
        .collect();
    assert_eq!(day_counts, [1], "{counters:?}");
    counters.retain(|(k, _)| !k.starts_with("v1:audit-count:") && !k.starts_with("v1:stat:"));
    assert!(
        counters.is_empty(),
        "a begin only reads counters, yet these exist: {counters:?}"
    );
}

#[test]
fn a_codes_counters_outlive_its_challenge() {
    let mut w = World::new();
    let c = ctx("dr-code");
    let id = w.begin(&c, T0);
    w.send(&c, &id, T0).unwrap();
    let code = w.mailer.last_code().unwrap();
    assert!(w.verify(&c, &id, &wrong(&code), T0.plus(1)).is_err());
    let challenge = w.store.expiry(&keys::challenge("acme", "dr-code")).unwrap();
    let attempts = w.store.expiry(&keys::attempts(&id, 1)).unwrap();
    assert!(attempts > challenge, "{attempts} ≤ {challenge}");
    w.verify(&c, &id, &code, T0.plus(2)).unwrap();
    let used = w.store.expiry(&keys::used(&id, 1)).unwrap();
    assert!(used > challenge, "{used} ≤ {challenge}");
}

#[test]
fn sweeping_as_early_as_allowed_never_lets_a_fourth_email_into_a_window() {
    let mut w = World::new();
    let c = ctx("dr-mail");
    let mut id = w.begin(&c, T0);
    let window = Settings::default().send_window_seconds;
    let mut sent = Vec::new();
    let mut now = T0;
    // Bursts of tries every 20 s for ten minutes, between idle gaps around each expiry (the
    // slots' claims and stamps, the count), with a sweep before each try.
    for gap in [
        0, 3500, 3700, 3900, 4100, 5000, 6000, 7000, 7300, 7500, 9000,
    ] {
        now = now.plus(gap);
        if gap >= window {
            w.store.sweep(now.0);
            id = w.begin(&c, now);
            assert!(
                w.send(&c, &id, now).is_ok(),
                "after {gap} s without an email, the next one goes out at once"
            );
            sent.push(now.0);
        }
        for _ in 0..30 {
            now = now.plus(20);
            w.store.sweep(now.0);
            match w.send(&c, &id, now) {
                Ok(_) => sent.push(now.0),
                Err(Error::Throttled { .. }) => {}
                Err(_) => id = w.begin(&c, now),
            }
        }
    }
    for (i, t) in sent.iter().enumerate() {
        let within = sent[i..].iter().take_while(|u| **u < t + window).count();
        assert!(
            within <= 3,
            "{within} emails from {t} on within {window} s: {sent:?}"
        );
    }
    assert!(sent.len() >= 50, "only {} emails went out", sent.len());
}

#[test]
fn a_lock_outlasts_any_quiet_spell_until_a_reset() {
    let mut w = World::new();
    let c = ctx("dr-lock");
    let locked_at = guess_until_locked(&mut w, "dr-lock", T0);
    // A year without a single try, swept at the end: still locked (the streak's count is kept
    // for good while the streak lasts, so no quiet spell lifts a lock or restarts the count).
    let later = locked_at.plus(365 * DAY);
    w.store.sweep(later.0);
    let d = w.decide(&c, later).unwrap();
    assert!(
        matches!(&d, Decision::Deny(denied) if denied.why.rule == "user:locked"),
        "{d:?}"
    );
    // An admin's reset ends it, and the ended streak's count goes with it.
    let admin = Actor {
        user_id: "it-admin".into(),
        org_id: "acme".into(),
        roles: vec!["org-admin".into()],
        ip: "203.0.113.7".into(),
        user_agent: String::new(),
    };
    w.engine()
        .reset_user(&admin, "acme", "dr-lock", later, &mut OsRng.unwrap_err())
        .unwrap();
    assert!(matches!(
        w.decide(&c, later.plus(1)),
        Ok(Decision::Challenge(_))
    ));
    let (_, counters) = w.store.snapshot();
    assert!(
        !counters
            .iter()
            .any(|(k, _)| k.starts_with("v1:failures:acme:dr-lock:")),
        "{counters:?}"
    );
}

#[test]
fn a_revoked_browser_never_comes_back_whatever_is_swept_when() {
    let mut w = World::new();
    let mut c = ctx("dr-dev");
    let id = w.begin(&c, T0);
    w.send(&c, &id, T0).unwrap();
    let code = w.mailer.last_code().unwrap();
    let verified = w.verify_trusting(&c, &id, &code, T0).unwrap();
    c.device.cookie = verified
        .set_cookie
        .as_deref()
        .and_then(|s| s.split(';').next())
        .and_then(|p| p.split_once('='))
        .map(|(_, v)| v.to_owned());
    let device_key = w
        .store
        .list_keys(&keys::devices_of("acme", "dr-dev"))
        .unwrap()
        .pop()
        .unwrap();
    let record = w.store.get(&device_key).unwrap().unwrap();
    let record_kept = w.store.expiry(&device_key);
    let actor = Actor {
        user_id: "dr-dev".into(),
        org_id: "acme".into(),
        roles: vec!["provider".into()],
        ip: "203.0.113.7".into(),
        user_agent: String::new(),
    };
    let mut rng = OsRng.unwrap_err();
    w.engine()
        .revoke_all_devices(&actor, T0.plus(10), &mut rng)
        .unwrap();
    // A login that loaded the record before the revoke writes it back after it, as it was.
    w.store.set(&device_key, &record, record_kept).unwrap();
    let mut now = T0.plus(20);
    while now < T0.plus(32 * DAY) {
        w.store.sweep(now.0);
        let d = w.decide(&c, now).unwrap();
        assert!(!matches!(d, Decision::Allow(_)), "trusted again at {now:?}");
        now = now.plus(6 * 3600);
    }
}
