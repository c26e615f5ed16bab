//! Case 4: parallel sends. The README: at most 3 emails per user in any 5 minutes, a sliding
//! window with no aligned edge to send across. Emails are counted in the mail log the server's
//! mailer kept, each with the test clock's time when it was handed over.

use serde_json::json;

use crate::support::*;

const WINDOW: i64 = 300;

/// `n` send-code calls at once on one challenge.
fn burst(s: &Adversary, c: &serde_json::Value, id: &str, n: usize) -> Vec<Result<Reply, String>> {
    together(n, |_| {
        s.try_post(
            "/v1/login/send-code",
            &json!({ "context": c, "challenge_id": id }),
        )
    })
}

/// The most of `times` within any `window` seconds.
fn most_in(times: &[i64], window: i64) -> usize {
    let mut t = times.to_vec();
    t.sort_unstable();
    let (mut most, mut lo) = (0, 0);
    for hi in 0..t.len() {
        while t[hi] - t[lo] >= window {
            lo += 1;
        }
        most = most.max(hi + 1 - lo);
    }
    most
}

#[test]
fn parallel_sends_deliver_at_most_3_in_any_300_seconds_even_across_a_window_edge() {
    let _serial = one_at_a_time();
    let s = Adversary::start("sends");
    let mut broken = Vec::new();

    // 64 sends at one instant.
    let user = "dr-sends";
    let c = ctx(ORG, user, &["provider"]);
    let (id, _) = s.challenge(&c);
    let answers = burst(&s, &c, &id, 64);
    let outcomes = outcomes(&answers);
    let mailed = s.mail(&email(user)).len();
    let retry: Vec<i64> = answers
        .iter()
        .filter_map(|a| a.as_ref().ok())
        .filter(|r| r.kind() == Some("throttled"))
        .map(|r| r.json["error"]["retry_after_seconds"].as_i64().unwrap_or(0))
        .collect();
    eprintln!(
        "[sends] N=64 at one instant: {mailed} emails; answers {outcomes:?}; throttled ones say \
         retry after {:?}..{:?} s",
        retry.iter().min(),
        retry.iter().max()
    );
    if mailed != 3 || outcomes.get("ok").copied().unwrap_or(0) > 3 {
        broken.push(format!(
            "64 parallel sends: {mailed} emails, answers {outcomes:?}"
        ));
    }
    if retry.iter().any(|r| !(1..=WINDOW).contains(r)) {
        broken.push(format!("a throttled send's retry_after: {retry:?}"));
    }
    let refused_or_ok: usize = ["ok", "throttled", "unavailable"]
        .iter()
        .map(|k| outcomes.get(*k).copied().unwrap_or(0))
        .sum();
    if refused_or_ok != 64 {
        broken.push(format!("64 parallel sends answered {outcomes:?}"));
    }

    // Bursts of 16 across an aligned 300 s edge: every second from 2 s before it to 2 s after it,
    // then when the first emails leave the window, then a whole window later.
    let user = "dr-edge";
    let c = ctx(ORG, user, &["provider"]);
    let edge = (s.now().div_euclid(WINDOW) + 2) * WINDOW;
    s.set_clock(edge - 2);
    let (id, _) = s.challenge(&c);
    let mut per_burst = Vec::new();
    for step in [0, 1, 1, 1, 1, 295, 1, 1, 1, 1, 300] {
        let now = s.advance(step);
        let before = s.mail(&email(user)).len();
        burst(&s, &c, &id, 16);
        per_burst.push((now - edge, s.mail(&email(user)).len() - before));
    }
    let times: Vec<i64> = s.mail(&email(user)).iter().map(|(at, _)| *at).collect();
    let most = most_in(&times, WINDOW);
    eprintln!(
        "[sends] bursts of 16 across a window edge (s from the edge, emails): {per_burst:?}; \
         {} emails in all, most in any 300 s: {most}",
        times.len()
    );
    if most > 3 {
        broken.push(format!("{most} emails within 300 s: {times:?}"));
    }
    if times.len() < 6 {
        broken.push(format!("the window does not slide: {times:?}"));
    }
    s.verify_log();
    assert!(broken.is_empty(), "{broken:#?}");
}
