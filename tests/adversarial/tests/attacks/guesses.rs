//! Cases 2 and 3: parallel guessing, counted from the audit trail the server wrote.
//!
//! The README's rules: 5 guesses per code; the first 5 consecutive wrong codes are free, and from
//! then on the n-th consecutive try (n ≥ 6) is looked at only 30 s · 2^(n−6) (at most 1 h) after
//! the previous one (30 s after the 5th wrong code, 60 s after the 6th, …); 20 consecutive wrong
//! codes lock; 50 wrong codes in a fixed 30-day window lock until it ends, so at most 100 in any
//! 30 days.

use std::collections::BTreeMap;

use serde_json::json;

use crate::support::*;

const DAY: i64 = 86_400;
/// The fixed failure window.
const WINDOW: i64 = 30 * DAY;

/// The README's delay before the next try after `n` consecutive wrong codes.
fn delay_after(n: usize) -> i64 {
    if n < 5 {
        0
    } else {
        (30_i64 << (n - 5).min(12)).min(3600)
    }
}

/// Every breach of the delay schedule and of the lock at 20, streak by streak (a success ends a
/// streak), in chain order.
fn delay_breaches(recs: &[Rec]) -> Vec<String> {
    let mut broken = Vec::new();
    let mut streak: Vec<i64> = Vec::new();
    let mut check = |streak: &mut Vec<i64>| {
        streak.sort_unstable();
        for (i, pair) in streak.windows(2).enumerate() {
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
        if r.is_success() {
            check(&mut streak);
        } else if r.counted_wrong() {
            streak.push(r.at);
        }
    }
    check(&mut streak);
    broken
}

/// `n` wrong codes at once against one live code.
fn burst(
    s: &Adversary,
    c: &serde_json::Value,
    id: &str,
    bad: &str,
    n: usize,
) -> Vec<Result<Reply, String>> {
    together(n, |_| {
        s.try_post(
            "/v1/login/verify",
            &json!({ "context": c, "challenge_id": id, "code": bad }),
        )
    })
}

/// Case 2: N parallel wrong codes, each burst on a fresh user's fresh challenge.
#[test]
fn parallel_wrong_codes_get_at_most_5_looked_at_and_none_inside_a_delay() {
    let _serial = one_at_a_time();
    let s = Adversary::start("guesses");
    let mut broken = Vec::new();
    for n in [8, 64, 256] {
        let user = format!("burst-{n}");
        let c = ctx(ORG, &user, &["provider"]);
        let (id, code) = s.live_code(&c);
        let bad = wrong(&code);
        let answers = burst(&s, &c, &id, &bad, n);
        let outcomes = outcomes(&answers);
        let recs = s.audit_of(ORG, &user);
        let mut per_code: BTreeMap<&str, usize> = BTreeMap::new();
        for r in recs.iter().filter(|r| r.action == "code_rejected") {
            *per_code.entry(r.challenge.as_str()).or_default() += 1;
        }
        let compared = recs.iter().filter(|r| r.compared_wrong()).count();
        let counted = recs.iter().filter(|r| r.counted_wrong()).count();
        eprintln!(
            "[guesses] N={n}: answers {outcomes:?}; audit: {compared} wrong codes looked at, \
             code_rejected per code {:?}, {} verify_throttled",
            per_code.values().collect::<Vec<_>>(),
            recs.iter()
                .filter(|r| r.action == "verify_throttled")
                .count(),
        );
        if per_code.values().any(|&k| k > 5) || counted > 5 {
            broken.push(format!(
                "N={n}: {per_code:?} code_rejected per code, {counted} counted"
            ));
        }
        let rejected = outcomes.get("rejected").copied().unwrap_or(0);
        if rejected > 5 {
            broken.push(format!("N={n}: {rejected} answers `rejected` (looked at)"));
        }
        let refused: usize = ["rejected", "throttled", "unavailable"]
            .iter()
            .map(|k| outcomes.get(*k).copied().unwrap_or(0))
            .sum();
        if refused != n {
            broken.push(format!("N={n}: answers other than a refusal: {outcomes:?}"));
        }
        if recs.iter().any(Rec::is_success) {
            broken.push(format!("N={n}: a wrong code was accepted"));
        }
        broken.extend(
            delay_breaches(&recs)
                .into_iter()
                .map(|b| format!("N={n}: {b}")),
        );

        // The delay the burst started is the README's: a try 29 s after the 5th wrong code is
        // refused; at 30 s, on a fresh code, the 6th is looked at.
        s.advance(29);
        let early = s.verify(&c, &id, &bad, false);
        if early.kind() != Some("throttled") {
            broken.push(format!(
                "N={n}: a try 29 s after the 5th wrong code: {}",
                early.text
            ));
        }
        s.advance(1);
        let resent = s.send(&c, &id);
        let fresh = s.code(&email(&user));
        let sixth = s.verify(&c, &id, &wrong(&fresh), false);
        eprintln!(
            "[guesses] N={n}: 29 s after the 5th wrong code: {}; at 30 s (send-code {}): {}",
            early.outcome(),
            resent.outcome(),
            sixth.outcome()
        );
        if sixth.kind() != Some("rejected") {
            broken.push(format!(
                "N={n}: the 6th try, 30 s after the 5th: {}",
                sixth.text
            ));
        }
        let recs = s.audit_of(ORG, &user);
        broken.extend(
            delay_breaches(&recs)
                .into_iter()
                .map(|b| format!("N={n}, after: {b}")),
        );
        let times: Vec<i64> = recs
            .iter()
            .filter(|r| r.counted_wrong())
            .map(|r| r.at)
            .collect();
        if times.len() != 6 || times[5] - times[4] != 30 {
            broken.push(format!("N={n}: wrong codes counted at {times:?}"));
        }
    }
    s.verify_log();
    assert!(broken.is_empty(), "{broken:#?}");
}

/// Case 3: a month of parallel guessing on the test clock. The attacker (who holds the password)
/// asks for a fresh code every 10 minutes and tries 8 wrong codes at once; the real user signs in
/// between (a success ends the streak but not the 30-day count); whenever the user is locked, the
/// clock jumps past the lock. Starts 12 hours before a fixed window's edge, so that two windows'
/// worth can fall close together: at most 50 per fixed window, at most 100 in any 30 days.
#[test]
fn a_month_of_parallel_guessing_stays_within_100_in_any_30_days() {
    let _serial = one_at_a_time();
    let edge = (T0.div_euclid(WINDOW) + 1) * WINDOW;
    let s = Adversary::start_at("month", edge - 12 * 3600);
    let user = "dr-month";
    let c = ctx(ORG, user, &["provider"]);
    let end = edge + 31 * DAY;
    let (mut rounds, mut lock_jumps, mut bursts) = (0, 0, 0);
    let mut answers = BTreeMap::<String, usize>::new();
    loop {
        let now = s.now();
        if now >= end {
            break;
        }
        rounds += 1;
        // The real user signs in, when not locked.
        let b = s.post("/v1/login/begin", &json!({ "context": c }));
        if b.json["outcome"] == "deny" {
            // Locked: jump past the lock (the 30-day window's end).
            let next = (now.div_euclid(WINDOW) + 1) * WINDOW;
            s.set_clock(next.min(end));
            lock_jumps += 1;
            continue;
        }
        if b.json["outcome"] == "challenge" {
            let id = b.json["challenge_id"].as_str().unwrap().to_owned();
            if s.send(&c, &id).status == 200 {
                let code = s.code(&email(user));
                let _ = s.verify(&c, &id, &code, false);
            }
        }
        // The attacker: a fresh code, 8 wrong guesses at once.
        let b = s.post("/v1/login/begin", &json!({ "context": c }));
        if b.json["outcome"] == "challenge" {
            let id = b.json["challenge_id"].as_str().unwrap().to_owned();
            if s.send(&c, &id).status == 200 {
                let bad = wrong(&s.code(&email(user)));
                bursts += 1;
                for (k, v) in outcomes(&burst(&s, &c, &id, &bad, 8)) {
                    *answers.entry(k).or_default() += v;
                }
            }
        }
        s.advance(600);
    }
    let recs = s.audit_of(ORG, user);
    let mut times: Vec<i64> = recs
        .iter()
        .filter(|r| r.counted_wrong())
        .map(|r| r.at)
        .collect();
    times.sort_unstable();
    let mut per_window: BTreeMap<i64, usize> = BTreeMap::new();
    for t in &times {
        *per_window.entry(t.div_euclid(WINDOW)).or_default() += 1;
    }
    let (mut most, mut lo) = (0, 0);
    for hi in 0..times.len() {
        while times[hi] - times[lo] >= WINDOW {
            lo += 1;
        }
        most = most.max(hi + 1 - lo);
    }
    let logins = recs.iter().filter(|r| r.is_success()).count();
    eprintln!(
        "[month] {rounds} rounds over {:.1} simulated days ({bursts} bursts of 8 wrong codes, \
         {lock_jumps} jumps past a lock, {logins} real sign-ins, {} expired keys swept): {} wrong \
         codes counted; per fixed 30-day window {:?}; most in any 30 days: {most}; verify answers \
         {answers:?}",
        (end - (edge - 12 * 3600)) as f64 / DAY as f64,
        s.swept(),
        times.len(),
        per_window.values().collect::<Vec<_>>(),
    );
    let breaches = delay_breaches(&recs);
    assert!(
        per_window.values().all(|&n| n <= 50),
        "wrong codes per fixed 30-day window: {per_window:?}"
    );
    assert!(most <= 100, "{most} wrong codes counted within 30 days");
    assert!(
        per_window.values().any(|&n| n == 50),
        "the attack reaches the window's cap: {per_window:?}"
    );
    assert!(breaches.is_empty(), "{breaches:#?}");
    s.verify_log();
}
