//! Issue 14, item 3 and 9c: every limit is counted first, so that concurrency can never exceed it.
//!
//! The compiled component, driven from many tokio tasks on a multi-thread runtime released together
//! by a barrier (the host runs store calls on the blocking pool, so the calls really overlap). Each
//! test asserts the number a user or an attacker relies on, read back from what the in-memory
//! backends saw: the audit records and their times (the test clock), and the emails sent.
//!
//! - per code: at most 5 guesses are looked at;
//! - per streak of consecutive wrong codes: from the 5th, each next one is looked at no earlier
//!   than 30 s · 2^(n−5) (at most 1 h) after the previous one, and the 20th locks;
//! - per 30 days: at most 50 wrong guesses looked at in a fixed 30-day window, so at most 100 in
//!   any 30 days;
//! - sends: at most 3 emails in any 300 s, at a window edge too;
//! - a code works once, even when its challenge is replaced while a verify holds it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use host_harness::backends::MemoryStore;
use host_harness::wit::{self, Decision, ErrorKind};
use mfa_step_core::kernel::ports::{PortResult, Store};
use serde_json::Value;
use tokio::sync::Barrier;

use host_harness::{Runtime, World};

use crate::common::{Harness, T0, code_in, ctx, default_config, wrong};

/// This module's own `plugin` component: a burst of 256 calls needs every slot of a runtime's
/// instance pool (`INSTANCE_CAPACITY`), so it cannot share the pool the other suites use.
fn runtime() -> Arc<Runtime> {
    static RUNTIME: std::sync::OnceLock<Arc<Runtime>> = std::sync::OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            Arc::new(Runtime::new(World::Plugin).expect("compile the plugin component"))
        })
        .clone()
}

/// One test of this module at a time: two bursts of 256 would overflow the pool.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A harness over this module's runtime and fresh in-memory backends.
fn harness() -> Harness {
    Harness::with(runtime(), Arc::new(MemoryStore::new()), default_config())
}

const DAY: i64 = 24 * 3600;
/// The fixed failure window (`throttle::WINDOW_SECONDS`).
const WINDOW: i64 = 30 * DAY;

/// One audit record as the tests read it.
#[derive(Debug, Clone)]
struct Rec {
    at: i64,
    action: String,
    reason: String,
    challenge: String,
}

fn records(h: &Harness) -> Vec<Rec> {
    h.audit
        .inner()
        .entries()
        .into_iter()
        .map(|e| {
            let line: Value = serde_json::from_str(&e.line).unwrap();
            Rec {
                at: e.at,
                action: e.action,
                reason: line["reason"].as_str().unwrap_or_default().to_owned(),
                challenge: line["challenge_id"].as_str().unwrap_or_default().to_owned(),
            }
        })
        .collect()
}

/// A guess that was looked at against a live code and found wrong.
fn compared_wrong(r: &Rec) -> bool {
    r.action == "code_rejected" && r.reason == "wrong-code"
}

/// A code that was accepted (a login, or an address confirmed).
fn is_success(r: &Rec) -> bool {
    ["code_verified", "enrolled", "email_changed"].contains(&r.action.as_str())
}

/// A guess that counted as a wrong code (every rejection but the lock's own refusal).
fn counted_wrong(r: &Rec) -> bool {
    (r.action == "code_rejected" || r.action == "code_expired") && r.reason != "user:locked"
}

/// The README's delay before the next try after `n` consecutive wrong codes.
fn delay_after(n: usize) -> i64 {
    if n < 5 {
        0
    } else {
        (30_i64 << (n - 5).min(12)).min(3600)
    }
}

/// Every breach of "from the 5th consecutive wrong code each next try waits 30 s · 2^(n−5)", and
/// of "20 consecutive wrong codes lock": streaks end at a `code_verified` (chain order).
fn delay_breaches(recs: &[Rec]) -> Vec<String> {
    let mut broken = Vec::new();
    let mut streak: Vec<i64> = Vec::new();
    let mut check = |streak: &mut Vec<i64>| {
        streak.sort_unstable();
        for (i, pair) in streak.windows(2).enumerate() {
            // `pair[1]` is wrong code number i + 2, tried after i + 1 wrong codes.
            let need = delay_after(i + 1);
            if pair[1] - pair[0] < need {
                broken.push(format!(
                    "wrong code {} came {} s after the previous one, inside its {need} s delay",
                    i + 2,
                    pair[1] - pair[0]
                ));
            }
        }
        if streak.len() > 20 {
            broken.push(format!(
                "{} consecutive wrong codes, past the lock at 20",
                streak.len()
            ));
        }
        streak.clear();
    };
    for r in recs {
        if is_success(r) {
            check(&mut streak);
        } else if counted_wrong(r) {
            streak.push(r.at);
        }
    }
    check(&mut streak);
    broken
}

/// Runs `n` copies of `f` on the runtime's worker threads, released together by a barrier.
async fn together<T, F, Fut>(n: usize, f: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let barrier = barrier.clone();
            let fut = f(i);
            tokio::spawn(async move {
                barrier.wait().await;
                fut.await
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// A challenge for `user` with its code sent: `(challenge id, code)`.
async fn live_code(h: &Harness, c: &wit::LoginContext) -> (String, String) {
    let id = h.challenge(c).await;
    h.send_code(c, &id).await.unwrap();
    (id, h.last_code())
}

/// A busy clinic: 256 users of one organization begin at the same instant, and each `begin`
/// appends its record to the one stream. Every call answers (no `unavailable`): writers take turns
/// at the stream's head instead of racing for it, and the chain has no fork and no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_one_clinics_writers_never_loses_the_chain_race() {
    let _one = ONE_AT_A_TIME.lock().await;
    let h = Arc::new(harness());
    let n = 256;
    let answers = together(n, |i| {
        let h = h.clone();
        async move {
            h.begin(&ctx(&format!("clinician-{i}")))
                .await
                .map(|_| ())
                .map_err(|e| e.kind)
        }
    })
    .await;
    let failed: Vec<_> = answers.iter().filter(|a| a.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {n} failed: {failed:?}",
        failed.len()
    );
    let entries = h.audit.inner().entries();
    let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=n as u64).collect::<Vec<_>>(),
        "one unbroken stream"
    );
    eprintln!("{n} writers of one organization at once: {n} records, 0 unavailable");
}

// ---------------------------------------------------------------------------------------------
// Item 3: parallel guesses.
// ---------------------------------------------------------------------------------------------

/// N parallel wrong codes on one fresh challenge, all at one instant: five are looked at (the
/// five that need no delay), every other one waits (`throttled`), nobody is locked.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_wrong_codes_are_counted_before_any_is_looked_at() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut broken = Vec::new();
    for n in [8, 64, 256] {
        let h = Arc::new(harness());
        let c = ctx("dr-burst");
        let (id, code) = live_code(&h, &c).await;
        let bad = wrong(&code);
        let answers = together(n, |_| {
            let (h, c, id, bad) = (h.clone(), c.clone(), id.clone(), bad.clone());
            async move {
                h.verify(&c, &id, &bad)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.kind)
            }
        })
        .await;
        let recs = records(&h);
        let compared = recs.iter().filter(|r| compared_wrong(r)).count();
        let counted = recs.iter().filter(|r| counted_wrong(r)).count();
        let rejected = answers
            .iter()
            .filter(|a| **a == Err(ErrorKind::Rejected))
            .count();
        let throttled = answers
            .iter()
            .filter(|a| **a == Err(ErrorKind::Throttled))
            .count();
        if compared > 5 {
            broken.push(format!(
                "N={n}: {compared} wrong codes looked at against one code"
            ));
        }
        if counted > 5 || rejected > 5 {
            broken.push(format!(
                "N={n}: {counted} wrong codes counted ({rejected} answers `rejected`) in one second: \
                 the 6th must wait 30 s"
            ));
        }
        // Every call is answered `rejected` or `throttled`: the writers of one organization take
        // turns linking its stream (the host's stream lease), so no refusal's record loses a race
        // and none answers `unavailable`.
        let unavailable = answers
            .iter()
            .filter(|a| **a == Err(ErrorKind::Unavailable))
            .count();
        if rejected + throttled != n {
            broken.push(format!(
                "N={n}: {rejected} rejected + {throttled} throttled of {n} ({unavailable} \
                 unavailable): {:?}",
                answers
                    .iter()
                    .filter(|a| !matches!(a, Err(ErrorKind::Rejected | ErrorKind::Throttled)))
                    .collect::<Vec<_>>()
            ));
        }
        eprintln!(
            "N={n}: {rejected} rejected, {throttled} throttled, {unavailable} unavailable; \
             {compared} compared"
        );
        broken.extend(
            delay_breaches(&recs)
                .into_iter()
                .map(|b| format!("N={n}: {b}")),
        );
        let status = h.status(&c).await.unwrap();
        if status.locked {
            broken.push(format!("N={n}: one burst locked the user"));
        }
        if status.consecutive_failures != 5 {
            broken.push(format!(
                "N={n}: {} consecutive failures counted, 5 were looked at",
                status.consecutive_failures
            ));
        }
        // The delay the burst started is the README's: 30 s after the 5th wrong code.
        h.clock.advance(29);
        let early = h.verify(&c, &id, &bad).await;
        if early.as_ref().err().map(|e| e.kind) != Some(ErrorKind::Throttled) {
            broken.push(format!(
                "N={n}: a try 29 s after the 5th wrong code: {early:?}"
            ));
        }
    }
    assert!(broken.is_empty(), "{broken:#?}");
}

/// Bursts of parallel wrong codes, one every 10 s on fresh codes, until the lock: no wrong code is
/// ever looked at inside a delay, and the lock comes at exactly 20 consecutive wrong codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bursts_across_the_delays_never_try_inside_one_and_lock_at_20() {
    let _one = ONE_AT_A_TIME.lock().await;
    let h = Arc::new(harness());
    let c = ctx("dr-delays");
    let mut locked_after = None;
    for round in 0..2000 {
        let id = match h.begin(&c).await {
            Ok(Decision::Challenge(ch)) => ch.challenge_id,
            Ok(Decision::Deny(_)) => {
                locked_after = Some(round);
                break;
            }
            other => panic!("round {round}: {other:?}"),
        };
        // A fresh code when the last one is spent; sends are capped, so the round may reuse it.
        let code = match h.send_code(&c, &id).await {
            Ok(_) => h.last_code(),
            Err(e) if e.kind == ErrorKind::Throttled => h.last_code(),
            Err(e) if e.kind == ErrorKind::Locked => {
                locked_after = Some(round);
                break;
            }
            Err(e) => panic!("round {round}: send {e:?}"),
        };
        let bad = wrong(&code);
        together(16, |_| {
            let (h, c, id, bad) = (h.clone(), c.clone(), id.clone(), bad.clone());
            async move {
                let _ = h.verify(&c, &id, &bad).await;
            }
        })
        .await;
        h.clock.advance(10 * 60);
    }
    assert!(locked_after.is_some(), "the attack ends in a lock");
    let recs = records(&h);
    let breaches = delay_breaches(&recs);
    assert!(breaches.is_empty(), "{breaches:#?}");
    let counted = recs.iter().filter(|r| counted_wrong(r)).count();
    assert_eq!(counted, 20, "locked at exactly 20 consecutive wrong codes");
    assert_eq!(
        recs.iter()
            .filter(|r| r.action == "user_locked" && r.reason == "consecutive-failures")
            .count(),
        1
    );
    // Per code, at most 5 guesses were looked at. A resumed challenge keeps its id across codes:
    // each `code_sent` of it (not `code_resent`) starts its next code. Sends and bursts take turns
    // here, so the trail's order is the order of the codes.
    let mut codes: BTreeMap<&str, usize> = BTreeMap::new();
    let mut per_code: BTreeMap<(&str, usize), usize> = BTreeMap::new();
    for r in &recs {
        if r.action == "code_sent" {
            *codes.entry(r.challenge.as_str()).or_default() += 1;
        } else if compared_wrong(r) {
            let code = codes.get(r.challenge.as_str()).copied().unwrap_or(0);
            *per_code.entry((r.challenge.as_str(), code)).or_default() += 1;
        }
    }
    assert!(per_code.values().all(|&n| n <= 5), "{per_code:?}");
}

/// A month of parallel guessing around a fixed window's edge, with the real user logging in
/// between (each success ends the streak but not the 30-day count): at most 50 wrong codes are
/// looked at per fixed 30-day window, so at most 100 in any 30 days.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_month_of_parallel_guessing_stays_within_100() {
    let _one = ONE_AT_A_TIME.lock().await;
    // Start 12 h before a fixed window ends, so that two windows' worth of guesses can fall in
    // one day.
    let edge = (T0.div_euclid(WINDOW) + 1) * WINDOW;
    let h = Arc::new(harness().starting_at(edge - 12 * 3600));
    let user = ctx("dr-month");
    let attacker = ctx("dr-month");
    let end = edge + 31 * DAY;
    let mut round = 0_u64;
    while h.clock.now() < end {
        round += 1;
        // The real user signs in (when not locked): the streak ends.
        if let Ok(Decision::Challenge(ch)) = h.begin(&user).await
            && h.send_code(&user, &ch.challenge_id).await.is_ok()
        {
            let _ = h.verify(&user, &ch.challenge_id, &h.last_code()).await;
        }
        // The attacker (who has the password) asks for a fresh code and tries it in parallel:
        // 5 tries a round, 4 every 7th round, so that the window's count comes to 49 before a
        // round of 5.
        if let Ok(Decision::Challenge(ch)) = h.begin(&attacker).await
            && h.send_code(&attacker, &ch.challenge_id).await.is_ok()
        {
            let bad = wrong(&h.last_code());
            let n = if round.is_multiple_of(7) { 4 } else { 5 };
            let id = ch.challenge_id;
            together(n, |_| {
                let (h, c, id, bad) = (h.clone(), attacker.clone(), id.clone(), bad.clone());
                async move {
                    let _ = h.verify(&c, &id, &bad).await;
                }
            })
            .await;
        }
        h.clock.advance(2 * 3600);
    }
    let recs = records(&h);
    let times: Vec<i64> = recs
        .iter()
        .filter(|r| compared_wrong(r))
        .map(|r| r.at)
        .collect();
    let mut per_window: BTreeMap<i64, usize> = BTreeMap::new();
    for t in &times {
        *per_window.entry(t.div_euclid(WINDOW)).or_default() += 1;
    }
    let mut sorted = times.clone();
    sorted.sort_unstable();
    let mut most = 0;
    let mut lo = 0;
    for hi in 0..sorted.len() {
        while sorted[hi] - sorted[lo] >= WINDOW {
            lo += 1;
        }
        most = most.max(hi + 1 - lo);
    }
    assert!(
        per_window.values().all(|&n| n <= 50),
        "wrong codes looked at per fixed 30-day window: {per_window:?}"
    );
    assert!(most <= 100, "{most} wrong codes looked at within 30 days");
    assert!(
        per_window.values().any(|&n| n == 50),
        "the attack reaches the cap: {per_window:?}"
    );
    let breaches = delay_breaches(&recs);
    assert!(breaches.is_empty(), "{breaches:#?}");
}

// ---------------------------------------------------------------------------------------------
// Item 3: parallel sends.
// ---------------------------------------------------------------------------------------------

/// Emails sent so far, each at the test clock's time when its burst ran.
struct Mailbox {
    times: Vec<i64>,
}

impl Mailbox {
    fn note(&mut self, h: &Harness, before: usize, at: i64) {
        let now = h.emails_sent();
        self.times.extend(std::iter::repeat_n(at, now - before));
    }

    /// The most emails in any `window` seconds.
    fn most_in(&self, window: i64) -> usize {
        let mut t = self.times.clone();
        t.sort_unstable();
        let mut most = 0;
        let mut lo = 0;
        for hi in 0..t.len() {
            while t[hi] - t[lo] >= window {
                lo += 1;
            }
            most = most.max(hi + 1 - lo);
        }
        most
    }
}

async fn send_burst(
    h: &Arc<Harness>,
    c: &wit::LoginContext,
    id: &str,
    n: usize,
) -> Vec<Result<u32, (ErrorKind, u32)>> {
    together(n, |_| {
        let (h, c, id) = (h.clone(), c.clone(), id.to_owned());
        async move {
            h.send_code(&c, &id)
                .await
                .map(|s| s.sends_left)
                .map_err(|e| (e.kind, e.retry_after_seconds.unwrap_or(0)))
        }
    })
    .await
}

/// N parallel sends on one challenge deliver at most 3 emails, and the refused ones say when the
/// next one can go.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_sends_deliver_at_most_three() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut broken = Vec::new();
    for n in [8, 64, 256] {
        let h = Arc::new(harness());
        let c = ctx("dr-sends");
        let id = h.challenge(&c).await;
        let answers = send_burst(&h, &c, &id, n).await;
        let sent = h.emails_sent();
        let ok = answers.iter().filter(|a| a.is_ok()).count();
        if sent > 3 || ok > 3 {
            broken.push(format!(
                "N={n}: {sent} emails ({ok} answers ok) in one instant"
            ));
        }
        if sent != 3 {
            broken.push(format!("N={n}: {sent} emails, the window allows 3"));
        }
        for a in &answers {
            match a {
                Ok(_) => {}
                Err((ErrorKind::Throttled, retry)) if (1..=300).contains(retry) => {}
                other => broken.push(format!("N={n}: a refused send answered {other:?}")),
            }
        }
        // Racing first sends mint one code (the challenge's seed): all 3 emails carry it, and it
        // is the one that verifies.
        let codes: std::collections::BTreeSet<String> = h
            .mailer
            .inner()
            .messages()
            .iter()
            .filter_map(|m| code_in(&m.text))
            .collect();
        if codes.len() != 1 {
            broken.push(format!(
                "N={n}: the emails carry {} different codes",
                codes.len()
            ));
        }
        if let Some(code) = codes.first()
            && h.verify(&c, &id, code).await.is_err()
        {
            broken.push(format!("N={n}: the mailed code does not verify"));
        }
        let status = h.status(&c).await.unwrap();
        if status.sends_left != 0 || status.next_send_at != Some(T0 + 300) {
            broken.push(format!(
                "N={n}: status says {} left, next at {:?}",
                status.sends_left, status.next_send_at
            ));
        }
    }
    assert!(broken.is_empty(), "{broken:#?}");
}

/// Parallel sends spread across an aligned window's edge (every second from 2 s before it to 2 s
/// after it, then at every later second when the first emails leave the window): never more than
/// 3 emails in any 300 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sends_across_a_window_edge_never_exceed_the_cap() {
    let _one = ONE_AT_A_TIME.lock().await;
    let edge = (T0.div_euclid(300) + 1) * 300;
    let h = Arc::new(harness().starting_at(edge - 2));
    let c = ctx("dr-edge");
    let id = h.challenge(&c).await;
    let mut mail = Mailbox { times: Vec::new() };
    let mut at = edge - 2;
    for step in [0, 1, 1, 1, 1, 295, 1, 1, 1, 1, 300] {
        h.clock.advance(step);
        at += step;
        let before = h.emails_sent();
        send_burst(&h, &c, &id, 16).await;
        mail.note(&h, before, at);
    }
    assert!(
        mail.most_in(300) <= 3,
        "{} emails within 300 s: {:?}",
        mail.most_in(300),
        mail.times
    );
    assert!(mail.times.len() >= 6, "the window slides: {:?}", mail.times);
}

// ---------------------------------------------------------------------------------------------
// Item 9c: a verify racing a challenge replace.
// ---------------------------------------------------------------------------------------------

/// A store that can hold one call at a given store operation until the test lets it go. The host
/// runs store calls on the blocking pool, so holding one pauses that component call only.
struct Holding {
    inner: MemoryStore,
    armed: Mutex<Vec<Armed>>,
}

struct Armed {
    op: &'static str,
    prefix: String,
    holding: Option<tokio::sync::oneshot::Sender<()>>,
    release: std::sync::mpsc::Receiver<()>,
}

impl Holding {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            inner: MemoryStore::new(),
            armed: Mutex::new(Vec::new()),
        })
    }

    /// Holds the next `op` ("set" or "increment" with a non-zero delta) of a key under `prefix`.
    fn arm(
        &self,
        op: &'static str,
        prefix: &str,
    ) -> (
        tokio::sync::oneshot::Receiver<()>,
        std::sync::mpsc::Sender<()>,
    ) {
        let (holding, held) = tokio::sync::oneshot::channel();
        let (release_tx, release) = std::sync::mpsc::channel();
        self.armed.lock().unwrap().push(Armed {
            op,
            prefix: prefix.to_owned(),
            holding: Some(holding),
            release,
        });
        (held, release_tx)
    }

    fn hold(&self, op: &str, key: &str) {
        let hit = {
            let mut armed = self.armed.lock().unwrap();
            armed
                .iter()
                .position(|a| a.op == op && key.starts_with(&a.prefix))
                .map(|i| armed.remove(i))
        };
        if let Some(mut a) = hit {
            let _ = a.holding.take().unwrap().send(());
            let _ = a.release.recv();
        }
    }
}

impl Store for Holding {
    fn get(&self, key: &str) -> PortResult<Option<Vec<u8>>> {
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: &[u8], expires_at: Option<i64>) -> PortResult<()> {
        self.hold("set", key);
        self.inner.set(key, value, expires_at)
    }
    fn delete(&self, key: &str) -> PortResult<()> {
        self.hold("delete", key);
        self.inner.delete(key)
    }
    fn increment(&self, key: &str, delta: i64, expires_at: Option<i64>) -> PortResult<i64> {
        if delta != 0 {
            self.hold("increment", key);
        }
        self.inner.increment(key, delta, expires_at)
    }
    fn list_keys(&self, prefix: &str) -> PortResult<Vec<String>> {
        self.inner.list_keys(prefix)
    }
}

/// Two verifies of the right code load the same challenge; the first wins and is held as its
/// unit of work commits (before it tidies up), the second is held just before it takes the code's
/// `used` counter, and meanwhile a new `begin` replaces the challenge. The code must still work
/// only once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_verify_racing_a_challenge_replace_cannot_succeed_twice() {
    let _one = ONE_AT_A_TIME.lock().await;
    let store = Holding::new();
    let h = Arc::new(Harness::with(runtime(), store.clone(), default_config()));
    let c = ctx("dr-replace");
    let (id, code) = live_code(&h, &c).await;

    // The first verify has taken the code and is held as its unit of work commits, before any
    // of its writes (the challenge's removal is the first of them, in key order).
    let (first_held, first_go) = store.arm("delete", "v1:challenge:");
    let first = {
        let (h, c, id, code) = (h.clone(), c.clone(), id.clone(), code.clone());
        tokio::spawn(async move { h.verify(&c, &id, &code).await })
    };
    first_held.await.unwrap();

    // The second has loaded the same challenge and is held before it takes the `used` counter.
    let (second_held, second_go) = store.arm("increment", "v1:used:");
    let mut second = {
        let (h, c, id, code) = (h.clone(), c.clone(), id.clone(), code.clone());
        tokio::spawn(async move { h.verify(&c, &id, &code).await })
    };
    tokio::select! {
        held = second_held => held.unwrap(),
        done = &mut second => panic!("the second verify ended without being held: {done:?}"),
    }

    // A new sign-in replaces the challenge meanwhile.
    let replaced = h.challenge(&c).await;
    assert_ne!(replaced, id);

    second_go.send(()).unwrap();
    let second = second.await.unwrap();
    first_go.send(()).unwrap();
    let first = first.await.unwrap();
    let wins = [&first, &second].iter().filter(|r| r.is_ok()).count();
    assert_eq!(wins, 1, "first: {first:?}, second: {second:?}");
    assert_eq!(
        records(&h).iter().filter(|r| is_success(r)).count(),
        1,
        "{:?}",
        h.actions()
    );
}

/// A step-up token works once however many `change-email` calls present it at the same instant:
/// 64 in parallel, one challenge opened, 63 refused (`forbidden`), and one `step-up-spent` record
/// per refusal past the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_step_up_token_presented_64_times_at_once_works_once() {
    let _one = ONE_AT_A_TIME.lock().await;
    let h = Arc::new(harness());
    let c = ctx("dr-stepup");
    // Enroll (the first code confirms the address), then sign in: the second verify's token.
    for _ in 0..2 {
        let (id, code) = live_code(&h, &c).await;
        h.verify(&c, &id, &code).await.unwrap();
    }
    let token = h.step_up.lock().unwrap().clone().expect("a step-up token");
    let mut moved = c.clone();
    moved.email = "dr-stepup@elsewhere.example".to_owned();
    let n = 64;
    let answers = together(n, |_| {
        let (h, moved, token) = (h.clone(), moved.clone(), token.clone());
        async move {
            h.change_email_with(&moved, &token)
                .await
                .map(|_| ())
                .map_err(|e| e.kind)
        }
    })
    .await;
    let opened = answers.iter().filter(|a| a.is_ok()).count();
    let forbidden = answers
        .iter()
        .filter(|a| **a == Err(ErrorKind::Forbidden))
        .count();
    assert_eq!((opened, forbidden), (1, n - 1), "{answers:?}");
    let spent = records(&h)
        .iter()
        .filter(|r| r.reason == "email-change:step-up-spent")
        .count();
    assert_eq!(spent, n - 1);
}
