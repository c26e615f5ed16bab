//! Case 5: a code works once. 1000 connections verify the same right code at once: exactly one
//! succeeds, in the answers and in the audit trail; every other one is refused.

use serde_json::json;

use crate::support::*;

const N: usize = 1000;

#[test]
fn a_thousand_concurrent_verifies_of_one_right_code_succeed_exactly_once() {
    let _serial = one_at_a_time();
    raise_fd_limit(2 * N as u64 + 256);
    let s = Adversary::start("single-use");
    let user = "dr-once";
    let c = ctx(ORG, user, &["provider"]);
    s.sign_in(&c); // enrolled: the next code is a login's
    s.advance(300);
    let (id, code) = s.live_code(&c);
    let started = std::time::Instant::now();
    let answers = together(N, |_| {
        s.try_post(
            "/v1/login/verify",
            &json!({ "context": c, "challenge_id": id, "code": code }),
        )
    });
    let took = started.elapsed();
    let outcomes = outcomes(&answers);
    let successes = outcomes.get("ok").copied().unwrap_or(0);
    let recs = s.audit_of(ORG, user);
    let recorded = recs.iter().filter(|r| r.is_success()).count();
    let mut rejected = std::collections::BTreeMap::<&str, usize>::new();
    for r in recs.iter().filter(|r| r.action == "code_rejected") {
        *rejected.entry(r.reason.as_str()).or_default() += 1;
    }
    eprintln!(
        "[single-use] {N} concurrent verifies of one right code in {:.2} s: answers {outcomes:?}; \
         audit: {} success record (after the sign-in's), {:?}, code_rejected reasons {rejected:?}",
        took.as_secs_f64(),
        recorded - 1,
        tally(&recs)
    );
    assert_eq!(successes, 1, "{outcomes:?}");
    assert_eq!(
        recorded,
        2,
        "the sign-in's record and exactly one more: {:?}",
        tally(&recs)
    );
    let refused: usize = ["rejected", "throttled", "unavailable"]
        .iter()
        .map(|k| outcomes.get(*k).copied().unwrap_or(0))
        .sum();
    assert_eq!(
        successes + refused,
        N,
        "every other answer is a refusal: {outcomes:?}"
    );
    // The code is spent for good.
    let again = s.verify(&c, &id, &code, false);
    assert_ne!(again.status, 200, "{}", again.text);
    s.verify_log();
}
