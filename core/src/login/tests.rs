//! The login step's rules, stepped with an explicit clock over in-memory ports: codes, throttles,
//! fail-closed ordering, trusted browsers at `begin` and `verify`, and the audit chain the step
//! writes. The same behaviours are proven again end to end through the compiled component in
//! `tests/`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use rand_core::{OsRng, TryRngCore, UnwrapErr};

use crate::audit::verify::Verifier;
use crate::engine::Engine;
use crate::kernel::error::{Error, Result};
use crate::kernel::keys;
use crate::kernel::model::{CodeSent, Decision, DevicePresentation, LoginContext, Verified};
use crate::kernel::ports::{
    AppendError, AuditEntry, AuditSink, Head, PortError, PortResult, Store,
};
use crate::kernel::secret::HmacKey;
use crate::kernel::settings::Settings;
use crate::kernel::time::Timestamp;
use crate::testing::{MemAudit, MemMailer, MemStore};

pub(super) struct World {
    pub(super) store: MemStore,
    pub(super) mailer: MemMailer,
    pub(super) audit: MemAudit,
    pub(super) key: HmacKey,
    pub(super) rng: UnwrapErr<OsRng>,
}

pub(super) const T0: Timestamp = Timestamp(1_795_000_000);

impl World {
    pub(super) fn new() -> Self {
        Self {
            store: MemStore::default(),
            mailer: MemMailer::default(),
            audit: MemAudit::default(),
            key: HmacKey::from_bytes(&[7; 32]).unwrap(),
            rng: OsRng.unwrap_err(),
        }
    }
    pub(super) fn engine(&self) -> Engine<'_> {
        Engine {
            store: &self.store,
            mailer: &self.mailer,
            audit: &self.audit,
            settings: Settings::default(),
            key: &self.key,
        }
    }
    pub(super) fn begin(&mut self, ctx: &LoginContext, now: Timestamp) -> String {
        let engine = Engine {
            store: &self.store,
            mailer: &self.mailer,
            audit: &self.audit,
            settings: Settings::default(),
            key: &self.key,
        };
        match engine
            .end_call(engine.begin(ctx, now, &mut self.rng))
            .unwrap()
        {
            Decision::Challenge(c) => c.challenge_id,
            other => panic!("expected a challenge, got {other:?}"),
        }
    }
    pub(super) fn send(
        &mut self,
        ctx: &LoginContext,
        id: &str,
        now: Timestamp,
    ) -> Result<CodeSent> {
        let engine = Engine {
            store: &self.store,
            mailer: &self.mailer,
            audit: &self.audit,
            settings: Settings::default(),
            key: &self.key,
        };
        let sent = engine.send_code(ctx, id, now, &mut self.rng);
        engine.end_call(sent)
    }
    pub(super) fn verify(
        &mut self,
        ctx: &LoginContext,
        id: &str,
        code: &str,
        now: Timestamp,
    ) -> Result<Verified> {
        let engine = Engine {
            store: &self.store,
            mailer: &self.mailer,
            audit: &self.audit,
            settings: Settings::default(),
            key: &self.key,
        };
        let verified = engine.verify(ctx, id, code, false, now, &mut self.rng);
        engine.end_call(verified)
    }
    /// A verify that asks to remember the browser.
    pub(super) fn verify_trusting(
        &mut self,
        ctx: &LoginContext,
        id: &str,
        code: &str,
        now: Timestamp,
    ) -> Result<Verified> {
        let engine = Engine {
            store: &self.store,
            mailer: &self.mailer,
            audit: &self.audit,
            settings: Settings::default(),
            key: &self.key,
        };
        let verified = engine.verify(ctx, id, code, true, now, &mut self.rng);
        engine.end_call(verified)
    }
    /// A `begin` whose decision the test judges.
    pub(super) fn decide(&mut self, ctx: &LoginContext, now: Timestamp) -> Result<Decision> {
        let engine = Engine {
            store: &self.store,
            mailer: &self.mailer,
            audit: &self.audit,
            settings: Settings::default(),
            key: &self.key,
        };
        let decided = engine.begin(ctx, now, &mut self.rng);
        engine.end_call(decided)
    }
}

pub(super) fn ctx(user: &str) -> LoginContext {
    LoginContext {
        user_id: user.into(),
        org_id: "acme".into(),
        email: format!("{user}@clinic.example"),
        roles: vec!["provider".into()],
        locale: None,
        device: DevicePresentation {
            ip: "203.0.113.7".into(),
            ..Default::default()
        },
    }
}

pub(super) fn wrong(code: &str) -> String {
    let n: u32 = code.parse().unwrap();
    format!("{:06}", (n + 1) % 1_000_000)
}

#[test]
fn a_code_works_once() {
    let mut w = World::new();
    let c = ctx("dr-a");
    let id = w.begin(&c, T0);
    w.send(&c, &id, T0).unwrap();
    let code = w.mailer.last_code().unwrap();
    assert!(w.verify(&c, &id, &code, T0.plus(5)).is_ok());
    assert_eq!(
        w.verify(&c, &id, &code, T0.plus(6)).err(),
        Some(Error::Rejected)
    );
    assert_eq!(
        w.audit.actions(),
        [
            "challenge_started",
            "code_sent",
            // The first verified code confirmed the address.
            "enrolled",
            "code_rejected"
        ]
    );
}

#[test]
fn a_code_expires_after_ten_minutes() {
    let mut w = World::new();
    let c = ctx("dr-b");
    let id = w.begin(&c, T0);
    w.send(&c, &id, T0).unwrap();
    let code = w.mailer.last_code().unwrap();
    assert_eq!(
        w.verify(&c, &id, &code, T0.plus(601)).err(),
        Some(Error::Rejected)
    );
    // And at exactly ten minutes it still works (a fresh challenge, same rule).
    let id = w.begin(&c, T0.plus(700));
    w.send(&c, &id, T0.plus(700)).unwrap();
    let code = w.mailer.last_code().unwrap();
    assert!(w.verify(&c, &id, &code, T0.plus(1300)).is_ok());
}

#[test]
fn resend_carries_the_same_code_and_the_fourth_send_waits() {
    let mut w = World::new();
    let c = ctx("dr-c");
    let id = w.begin(&c, T0);
    let first = w.send(&c, &id, T0).unwrap();
    assert!(!first.resent);
    let code = w.mailer.last_code().unwrap();
    let again = w.send(&c, &id, T0.plus(30)).unwrap();
    assert!(again.resent);
    assert_eq!(w.mailer.last_code().unwrap(), code);
    assert_eq!(again.code_expires_at, first.code_expires_at);
    w.send(&c, &id, T0.plus(60)).unwrap();
    assert_eq!(
        w.send(&c, &id, T0.plus(90)).err(),
        Some(Error::Throttled { retry_after: 210 })
    );
    assert!(w.send(&c, &id, T0.plus(300)).is_ok());
}

/// A store failure between taking a send slot and stamping it leaves the slot taken with no time
/// (its owner died). The first send that depends on it stamps it with its own time and waits one
/// window from there: the user loses one window, never every future email.
#[test]
fn a_send_slot_whose_owner_died_costs_one_window_not_every_email() {
    let mut w = World::new();
    let c = ctx("dr-orphan");
    let id = w.begin(&c, T0);
    // Slot 1 taken, never stamped, the count never bumped: what a failure between the two leaves.
    w.store
        .increment(&keys::send_slot("acme", "dr-orphan", 1), 1, None)
        .unwrap();
    w.send(&c, &id, T0).unwrap();
    w.send(&c, &id, T0.plus(10)).unwrap();
    // Slots 2 and 3 went out; the 4th email depends on slot 1, the orphan.
    assert_eq!(
        w.send(&c, &id, T0.plus(20)).err(),
        Some(Error::Throttled { retry_after: 300 })
    );
    assert_eq!(w.mailer.sent.borrow().len(), 2);
    assert_eq!(
        w.send(&c, &id, T0.plus(319)).err(),
        Some(Error::Throttled { retry_after: 1 })
    );
    w.send(&c, &id, T0.plus(320)).unwrap();
    assert_eq!(w.mailer.sent.borrow().len(), 3);
}

/// A call that finds a slot unstamped notes its own time beside the slot, never over its owner's
/// stamp: when the owner stamps a later call time, the slot counts from the later of the two.
#[test]
fn a_noted_time_never_moves_an_owners_stamp_back() {
    let mut w = World::new();
    let c = ctx("dr-late");
    let id = w.begin(&c, T0);
    w.store
        .increment(&keys::send_slot("acme", "dr-late", 1), 1, None)
        .unwrap();
    w.send(&c, &id, T0).unwrap();
    w.send(&c, &id, T0.plus(10)).unwrap();
    // The 4th email finds slot 1 unstamped at T0 + 20 and notes that time.
    assert!(w.send(&c, &id, T0.plus(20)).is_err());
    // Then slot 1's owner stamps its own call time, T0 + 25.
    let stamp = keys::send_at("acme", "dr-late", 1);
    w.store
        .set(&stamp, &serde_json::to_vec(&T0.plus(25)).unwrap(), None)
        .unwrap();
    assert_eq!(
        w.send(&c, &id, T0.plus(320)).err(),
        Some(Error::Throttled { retry_after: 5 })
    );
    w.send(&c, &id, T0.plus(325)).unwrap();
    assert_eq!(w.mailer.sent.borrow().len(), 3);
}

#[test]
fn unknown_user_looks_like_a_wrong_code() {
    let mut w = World::new();
    let nobody = ctx("never-seen");
    assert_eq!(
        w.verify(&nobody, "00112233445566778899aabbccddeeff", "123456", T0)
            .err(),
        Some(Error::Rejected)
    );
    let c = ctx("dr-d");
    let id = w.begin(&c, T0);
    w.send(&c, &id, T0).unwrap();
    let code = w.mailer.last_code().unwrap();
    assert_eq!(
        w.verify(&c, &id, &wrong(&code), T0).err(),
        Some(Error::Rejected)
    );
}

#[test]
fn fifth_wrong_guess_kills_the_code_and_delays_start() {
    let mut w = World::new();
    let c = ctx("dr-e");
    let id = w.begin(&c, T0);
    w.send(&c, &id, T0).unwrap();
    let code = w.mailer.last_code().unwrap();
    for _ in 0..5 {
        assert_eq!(
            w.verify(&c, &id, &wrong(&code), T0).err(),
            Some(Error::Rejected)
        );
    }
    // Five failures: the next try waits 30 s, and then the dead code is still refused.
    assert_eq!(
        w.verify(&c, &id, &code, T0.plus(1)).err(),
        Some(Error::Throttled { retry_after: 29 })
    );
    assert_eq!(
        w.verify(&c, &id, &code, T0.plus(30)).err(),
        Some(Error::Rejected)
    );
    // A new email brings a new code, which works.
    let sent = w.send(&c, &id, T0.plus(100)).unwrap();
    assert!(!sent.resent);
    let fresh = w.mailer.last_code().unwrap();
    assert!(w.verify(&c, &id, &fresh, T0.plus(200)).is_ok());
}

/// Count first: a guess refused inside a delay takes no slot (the streak stays at 5), so asking
/// again too early never makes the next delay longer or brings the lock nearer.
#[test]
fn a_guess_refused_inside_a_delay_counts_nothing() {
    let mut w = World::new();
    let c = ctx("dr-early");
    let id = w.begin(&c, T0);
    w.send(&c, &id, T0).unwrap();
    let code = w.mailer.last_code().unwrap();
    for _ in 0..5 {
        let _ = w.verify(&c, &id, &wrong(&code), T0);
    }
    for s in 1..30_u32 {
        assert_eq!(
            w.verify(&c, &id, &wrong(&code), T0.plus(i64::from(s)))
                .err(),
            Some(Error::Throttled {
                retry_after: 30 - s
            })
        );
    }
    let status = w.engine().status(&c, T0.plus(29)).unwrap();
    assert_eq!(status.consecutive_failures, 5);
    assert_eq!(status.verify_blocked_until, Some(T0.plus(30)));
    // The 6th try at 30 s is counted; the 7th waits 60 s after it.
    assert_eq!(
        w.verify(&c, &id, &wrong(&code), T0.plus(30)).err(),
        Some(Error::Rejected)
    );
    assert_eq!(
        w.verify(&c, &id, &wrong(&code), T0.plus(89)).err(),
        Some(Error::Throttled { retry_after: 1 })
    );
}

/// The 30-day cap counts wrong codes only: a user who signs in many times a day, with a slip now
/// and then, is never locked by it (a success gives its window ticket back).
#[test]
fn successes_never_use_up_the_30_day_cap() {
    let mut w = World::new();
    let c = ctx("dr-busy");
    for day in 0..29 {
        for login in 0..4 {
            let now = T0.plus(day * 86_400 + login * 3_600);
            let id = w.begin(&c, now);
            w.send(&c, &id, now).unwrap();
            let code = w.mailer.last_code().unwrap();
            if login == 0 && day % 2 == 0 {
                assert_eq!(
                    w.verify(&c, &id, &wrong(&code), now).err(),
                    Some(Error::Rejected)
                );
            }
            w.verify(&c, &id, &code, now)
                .unwrap_or_else(|e| panic!("day {day}, login {login}: {e:?}"));
        }
    }
    let status = w.engine().status(&c, T0.plus(29 * 86_400)).unwrap();
    assert!(!status.locked);
    assert_eq!(status.consecutive_failures, 0);
}

/// Item 9c: replacing a challenge keeps its `used` counter, so a verify that loaded the old
/// challenge cannot take the spent code to 1 again.
#[test]
fn a_replaced_challenge_keeps_its_used_counter() {
    let mut w = World::new();
    let c = ctx("dr-replaced");
    let id = w.begin(&c, T0);
    w.send(&c, &id, T0).unwrap();
    let code = w.mailer.last_code().unwrap();
    // Spend the code the way a winning verify does, then replace the challenge.
    assert_eq!(w.store.increment(&keys::used(&id, 1), 1, None).unwrap(), 1);
    let next = w.begin(&c, T0.plus(1));
    assert_ne!(next, id);
    assert_eq!(
        w.store.increment(&keys::used(&id, 1), 1, None).unwrap(),
        2,
        "the old code stays spent"
    );
    assert_eq!(
        w.verify(&c, &id, &code, T0.plus(2)).err(),
        Some(Error::Rejected)
    );
}

#[test]
fn failing_audit_leaves_the_code_usable_and_nothing_verified() {
    let mut w = World::new();
    let c = ctx("dr-f");
    let id = w.begin(&c, T0);
    w.send(&c, &id, T0).unwrap();
    let code = w.mailer.last_code().unwrap();
    w.audit.fail.set(true);
    assert!(matches!(w.verify(&c, &id, &code, T0), Err(Error::Audit(_))));
    w.audit.fail.set(false);
    assert!(w.verify(&c, &id, &code, T0.plus(1)).is_ok());
}

#[test]
fn failing_store_refuses_and_changes_nothing() {
    let mut w = World::new();
    let c = ctx("dr-g");
    let id = w.begin(&c, T0);
    w.send(&c, &id, T0).unwrap();
    let code = w.mailer.last_code().unwrap();
    let before = w.store.snapshot();
    w.store.fail.set(true);
    assert!(matches!(w.verify(&c, &id, &code, T0), Err(Error::Store(_))));
    assert!(matches!(w.send(&c, &id, T0), Err(Error::Store(_))));
    w.store.fail.set(false);
    assert_eq!(w.store.snapshot(), before);
}

#[test]
fn failing_mail_is_an_error_and_recorded() {
    let mut w = World::new();
    let c = ctx("dr-h");
    let id = w.begin(&c, T0);
    w.mailer.fail.set(true);
    assert!(matches!(w.send(&c, &id, T0), Err(Error::Mail(_))));
    assert_eq!(
        w.audit.actions().last().map(String::as_str),
        Some("code_delivery_failed")
    );
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let w = World::new();
    let mut c = ctx("dr-i");
    c.email = "not-an-email".into();
    let before = w.store.snapshot();
    let mut rng = OsRng.unwrap_err();
    let err = w.engine().begin(&c, T0, &mut rng).err();
    assert!(
        matches!(err, Some(Error::InvalidInput { field: "email", .. })),
        "{err:?}"
    );
    assert_eq!(w.store.snapshot(), before);
    assert!(w.audit.entries.borrow().is_empty());
}

#[test]
fn no_secret_reaches_the_audit_trail() {
    let mut w = World::new();
    let c = ctx("dr-j");
    let id = w.begin(&c, T0);
    w.send(&c, &id, T0).unwrap();
    let code = w.mailer.last_code().unwrap();
    let _ = w.verify(&c, &id, &wrong(&code), T0);
    w.verify(&c, &id, &code, T0).unwrap();
    for entry in w.audit.entries.borrow().iter() {
        assert!(!entry.line.contains(&code), "{}", entry.line);
        assert!(!entry.line.contains(&c.email), "{}", entry.line);
    }
}

fn cookie_value(set_cookie: &str) -> String {
    let pair = set_cookie.split(';').next().unwrap();
    pair.split_once('=').unwrap().1.to_owned()
}

#[test]
fn a_remembered_browser_skips_the_code_rotates_and_catches_a_replayed_token() {
    let mut w = World::new();
    let mut c = ctx("dr-k");
    c.device.traits.user_agent = "Mozilla/5.0 (Windows NT 10.0) Chrome/131.0 Safari/537.36".into();
    let id = w.begin(&c, T0);
    w.send(&c, &id, T0).unwrap();
    let code = w.mailer.last_code().unwrap();
    let engine = Engine {
        store: &w.store,
        mailer: &w.mailer,
        audit: &w.audit,
        settings: Settings::default(),
        key: &w.key,
    };
    let verified = engine.verify(&c, &id, &code, true, T0, &mut w.rng).unwrap();
    let first = cookie_value(verified.set_cookie.as_deref().unwrap());

    c.device.cookie = Some(first.clone());
    let Decision::Allow(allowed) = engine.begin(&c, T0.plus(3600), &mut w.rng).unwrap() else {
        panic!("trusted")
    };
    assert_eq!(allowed.why.rule, "device:trusted");
    let second = cookie_value(allowed.set_cookie.as_deref().unwrap());
    assert_ne!(first, second, "a trusted login rotates the token");
    assert_eq!(w.mailer.sent.borrow().len(), 1, "no code was mailed");

    // The old token after the grace period: replayed, so the device is revoked.
    c.device.cookie = Some(first);
    let d = engine.begin(&c, T0.plus(3600 + 61), &mut w.rng).unwrap();
    assert!(matches!(d, Decision::Challenge(_)), "{d:?}");
    c.device.cookie = Some(second);
    let d = engine.begin(&c, T0.plus(3600 + 62), &mut w.rng).unwrap();
    assert!(
        matches!(d, Decision::Challenge(_)),
        "the revoked device's newest token is dead too: {d:?}"
    );
    assert!(w.audit.actions().contains(&"device_token_reuse".to_owned()));
}

#[test]
fn another_browser_on_the_same_device_cookie_is_asked_again() {
    let mut w = World::new();
    let mut c = ctx("dr-l");
    c.device.traits.user_agent = "Mozilla/5.0 (Windows NT 10.0) Chrome/130.0 Safari/537.36".into();
    let id = w.begin(&c, T0);
    w.send(&c, &id, T0).unwrap();
    let code = w.mailer.last_code().unwrap();
    let engine = Engine {
        store: &w.store,
        mailer: &w.mailer,
        audit: &w.audit,
        settings: Settings::default(),
        key: &w.key,
    };
    let verified = engine.verify(&c, &id, &code, true, T0, &mut w.rng).unwrap();
    c.device.cookie = Some(cookie_value(verified.set_cookie.as_deref().unwrap()));
    c.device.traits.user_agent =
        "Mozilla/5.0 (Windows NT 10.0; rv:133.0) Gecko/20100101 Firefox/133.0".into();
    let Decision::Challenge(ch) = engine.begin(&c, T0.plus(10), &mut w.rng).unwrap() else {
        panic!("asked again")
    };
    assert_eq!(ch.why.rule, "device:new-browser");
}

#[test]
fn records_form_one_sealed_chain_per_org_and_count_themselves() {
    use crate::audit::chain::SealKey;
    let mut w = World::new();
    let c = ctx("dr-k");
    let id = w.begin(&c, T0);
    w.send(&c, &id, T0).unwrap();
    let code = w.mailer.last_code().unwrap();
    // An expired code is recorded as such, not as a wrong one.
    assert_eq!(
        w.verify(&c, &id, &code, T0.plus(601)).err(),
        Some(Error::Rejected)
    );
    assert_eq!(
        w.audit.actions(),
        ["challenge_started", "code_sent", "code_expired"]
    );
    let mut v = Verifier::new(Some(SealKey::derive(&w.key)));
    for e in w.audit.entries.borrow().iter() {
        let r = v.check(&e.line).unwrap();
        assert_eq!((r.seq, &r.hash, &r.org), (e.seq, &e.hash, &e.org_id));
    }
    assert_eq!(v.heads()[&c.org_id].seq, 3);
    let counted = w
        .store
        .increment(&keys::audit_count(&c.org_id), 0, None)
        .unwrap();
    assert_eq!(counted, 3);
}

/// A store whose unit of work fails to commit (every other call works).
struct FailingCommit<'a>(&'a MemStore);

impl Store for FailingCommit<'_> {
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
    fn commit(&self) -> PortResult<()> {
        Err(PortError("the disk is full".to_owned()))
    }
}

#[test]
fn a_record_whose_commit_fails_is_unavailable_counts_nothing_and_gives_the_code_back() {
    let mut w = World::new();
    let c = ctx("dr-k");
    let id = w.begin(&c, T0);
    w.send(&c, &id, T0).unwrap();
    let code = w.mailer.last_code().unwrap();
    let count = |w: &World| {
        w.store
            .increment(&keys::audit_count(&c.org_id), 0, None)
            .unwrap()
    };
    assert_eq!(count(&w), 2);
    let failing = FailingCommit(&w.store);
    let engine = Engine {
        store: &failing,
        ..w.engine()
    };
    let mut rng = OsRng.unwrap_err();
    // The right code: its record and the changes before it are not kept (by a host that holds
    // them; this sink keeps records at once), so the code is given back; a wrong one: refused
    // as unavailable too.
    for guess in [code.as_str(), "000000"] {
        let verified = engine.verify(&c, &id, guess, false, T0.plus(5), &mut rng);
        assert!(
            matches!(engine.end_call(verified), Err(Error::Store(ref m)) if m.contains("the disk is full")),
            "{guess}"
        );
    }
    assert_eq!(
        count(&w),
        2,
        "a record is counted only once it is committed"
    );
    // Once commits work again, the code works.
    assert!(w.verify(&c, &id, &code, T0.plus(40)).is_ok());
}

/// A sink whose head is stale once: another writer appends between `head` and `append`.
struct Racing<'a> {
    inner: &'a MemAudit,
    raced: std::cell::Cell<bool>,
}

impl AuditSink for Racing<'_> {
    fn head(&self, org: &str) -> PortResult<Option<Head>> {
        self.inner.head(org)
    }
    fn append(&self, entry: &AuditEntry) -> std::result::Result<(), AppendError> {
        if !self.raced.replace(true) {
            // The other writer takes the position this entry was linked for.
            self.inner.append(entry)?;
            return self.inner.append(entry);
        }
        self.inner.append(entry)
    }
}

#[test]
fn a_writer_that_loses_the_race_relinks_instead_of_forking() {
    let w = World::new();
    let racing = Racing {
        inner: &w.audit,
        raced: std::cell::Cell::new(false),
    };
    let engine = Engine {
        store: &w.store,
        mailer: &w.mailer,
        audit: &racing,
        settings: Settings::default(),
        key: &w.key,
    };
    let mut rng = OsRng.unwrap_err();
    engine.begin(&ctx("dr-l"), T0, &mut rng).unwrap();
    let entries = w.audit.entries.borrow();
    assert_eq!(entries.len(), 2, "the rival's record and ours, relinked");
    assert_eq!((entries[0].seq, entries[1].seq), (1, 2));
    assert_eq!(entries[1].prev, entries[0].hash);
    let mut v = Verifier::new(None);
    for e in entries.iter() {
        v.check(&e.line).unwrap();
    }
}

/// A store that notes every key read with `get`.
struct NotingReads<'a> {
    inner: &'a MemStore,
    reads: std::cell::RefCell<Vec<String>>,
}

impl Store for NotingReads<'_> {
    fn get(&self, key: &str) -> PortResult<Option<Vec<u8>>> {
        self.reads.borrow_mut().push(key.to_owned());
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: &[u8], expires_at: Option<i64>) -> PortResult<()> {
        self.inner.set(key, value, expires_at)
    }
    fn delete(&self, key: &str) -> PortResult<()> {
        self.inner.delete(key)
    }
    fn increment(&self, key: &str, delta: i64, expires_at: Option<i64>) -> PortResult<i64> {
        self.inner.increment(key, delta, expires_at)
    }
    fn list_keys(&self, prefix: &str) -> PortResult<Vec<String>> {
        self.inner.list_keys(prefix)
    }
}

#[test]
fn a_challenge_replaced_reads_the_old_one_once_and_puts_it_back_when_its_record_fails() {
    let mut w = World::new();
    let c = ctx("dr-r");
    w.begin(&c, T0);
    let key = keys::challenge(&c.org_id, &c.user_id);
    let old = w
        .store
        .get(&key)
        .unwrap()
        .expect("the first challenge is stored");
    // Another network: the live challenge is not resumed but replaced, and its record fails.
    let mut moved = c.clone();
    moved.device.ip = "198.51.100.9".into();
    let noting = NotingReads {
        inner: &w.store,
        reads: std::cell::RefCell::default(),
    };
    w.audit.fail.set(true);
    let engine = Engine {
        store: &noting,
        mailer: &w.mailer,
        audit: &w.audit,
        settings: Settings::default(),
        key: &w.key,
    };
    let decided = engine.begin(&moved, T0.plus(60), &mut w.rng);
    assert!(matches!(decided, Err(Error::Audit(_))), "{decided:?}");
    let reads = noting.reads.borrow();
    assert_eq!(
        reads.iter().filter(|k| **k == key).count(),
        1,
        "the challenge is read once: {reads:?}"
    );
    assert_eq!(
        w.store.get(&key).unwrap(),
        Some(old),
        "the old challenge is back"
    );

    // With the trail back, the same begin replaces it.
    w.audit.fail.set(false);
    let id = w.begin(&moved, T0.plus(60));
    assert!(
        w.store
            .get(&key)
            .unwrap()
            .is_some_and(|v| { String::from_utf8(v).unwrap().contains(&id) })
    );
}
