//! The login step as a user and an attacker meet it, through the compiled component and a test
//! clock: single use, the 10-minute lifetime, the send window, resends, the per-code guess budget,
//! the growing wrong-guess delays and the lock, one answer for every kind of bad code, input
//! validation that stores nothing, and the 30-day bound on an attacker who holds the password.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use crate::common;
use common::*;
use host_harness::wit::{self, Decision, ErrorKind, MfaError};

const DAY: i64 = 86_400;

/// Opens a challenge and sends its code; returns the challenge id, the code from the email and when
/// the code expires.
async fn fresh_code(h: &Harness, c: &wit::LoginContext) -> (String, String, i64) {
    let id = h.challenge(c).await;
    let sent = h.send_code(c, &id).await.expect("the code is sent");
    assert!(!sent.resent, "a new challenge gets a new code");
    (id, h.last_code(), sent.code_expires_at)
}

/// The error of `r`, which must be of kind `want`.
fn err_of<T: std::fmt::Debug>(r: Result<T, MfaError>, want: ErrorKind) -> MfaError {
    match r {
        Err(e) if e.kind == want => e,
        other => panic!("expected {want:?}, got {other:?}"),
    }
}

async fn failures(h: &Harness, c: &wit::LoginContext) -> u32 {
    h.status(c).await.unwrap().consecutive_failures
}

#[tokio::test]
async fn a_code_works_once_and_only_once() {
    let h = Harness::new();
    let c = ctx("dr-once");
    let (id, code, _) = fresh_code(&h, &c).await;

    let ok = h
        .verify(&c, &id, &code)
        .await
        .expect("the emailed code works");
    assert_eq!(ok.amr, ["otp", "mfa"]);

    err_of(h.verify(&c, &id, &code).await, ErrorKind::Rejected);
    // The user's first code confirms the address: its success is recorded as `enrolled`.
    let verified = h
        .actions()
        .iter()
        .filter(|a| *a == "code_verified" || *a == "enrolled")
        .count();
    assert_eq!(verified, 1, "exactly one success was recorded");
    // The challenge is finished: it cannot send another code either.
    err_of(h.send_code(&c, &id).await, ErrorKind::Rejected);
    assert_eq!(h.status(&c).await.unwrap().active_challenge, None);
}

#[tokio::test]
async fn a_code_is_accepted_at_600_seconds_and_refused_at_601() {
    let h = Harness::new();
    let (at_limit, past_limit) = (ctx("dr-at-600"), ctx("dr-at-601"));
    let (id_a, code_a, expires_a) = fresh_code(&h, &at_limit).await;
    let (id_b, code_b, expires_b) = fresh_code(&h, &past_limit).await;
    assert_eq!(expires_a, T0 + 600);
    assert_eq!(expires_b, T0 + 600);

    h.clock.advance(600);
    h.verify(&at_limit, &id_a, &code_a)
        .await
        .expect("valid while now <= issued + 600");

    h.clock.advance(1);
    err_of(
        h.verify(&past_limit, &id_b, &code_b).await,
        ErrorKind::Rejected,
    );
    assert_eq!(h.rejection_reasons(), ["expired"]);
}

#[tokio::test]
async fn the_fourth_email_within_five_minutes_is_refused_until_the_window_slides() {
    let h = Harness::new();
    let c = ctx("dr-sends");
    let id = h.challenge(&c).await;

    let first = h.send_code(&c, &id).await.unwrap();
    assert_eq!(first.sends_left, 2);
    h.clock.advance(100);
    assert_eq!(h.send_code(&c, &id).await.unwrap().sends_left, 1);
    h.clock.advance(100);
    assert_eq!(h.send_code(&c, &id).await.unwrap().sends_left, 0);
    assert_eq!(h.emails_sent(), 3);

    // T0+250: the oldest email (T0) leaves the window at T0+300.
    h.clock.advance(50);
    let e = err_of(h.send_code(&c, &id).await, ErrorKind::Throttled);
    assert_eq!(e.retry_after_seconds, Some(50));
    assert_eq!(h.emails_sent(), 3, "a refused send mails nothing");

    // A new challenge does not reset the window: it belongs to the user.
    let id = h.challenge(&c).await;
    h.clock.advance(49);
    let e = err_of(h.send_code(&c, &id).await, ErrorKind::Throttled);
    assert_eq!(e.retry_after_seconds, Some(1));

    h.clock.advance(1);
    let sent = h.send_code(&c, &id).await.expect("the window slid");
    assert_eq!(
        sent.sends_left, 0,
        "T0+100, T0+200 and T0+300 are in the window"
    );
    assert_eq!(h.emails_sent(), 4);
    let e = err_of(h.send_code(&c, &id).await, ErrorKind::Throttled);
    assert_eq!(e.retry_after_seconds, Some(100), "T0+100 leaves at T0+400");
    assert!(h.actions().iter().any(|a| a == "send_throttled"));
}

#[tokio::test]
async fn a_resend_while_the_code_lives_carries_the_same_code_and_expiry() {
    let h = Harness::new();
    let c = ctx("dr-resend");
    let (id, code, expires) = fresh_code(&h, &c).await;

    h.clock.advance(60);
    let again = h.send_code(&c, &id).await.unwrap();
    assert!(again.resent);
    assert_eq!(h.last_code(), code);
    assert_eq!(again.code_expires_at, expires);

    // Still live at exactly +600: still the same code.
    h.clock.set(T0 + 600);
    let last_moment = h.send_code(&c, &id).await.unwrap();
    assert!(last_moment.resent);
    assert_eq!(h.last_code(), code);
    assert_eq!(last_moment.code_expires_at, expires);

    // After expiry (and once the send window has room again) a send gives a new code.
    h.clock.set(T0 + 601);
    let fresh = h.send_code(&c, &id).await.unwrap();
    assert!(!fresh.resent);
    assert_eq!(fresh.code_expires_at, T0 + 601 + 600);
    let new_code = h.last_code();
    assert_ne!(new_code, code);

    err_of(h.verify(&c, &id, &code).await, ErrorKind::Rejected);
    h.verify(&c, &id, &new_code)
        .await
        .expect("the new code works");
}

#[tokio::test]
async fn five_wrong_guesses_kill_the_code() {
    let h = Harness::new();
    let c = ctx("dr-five");
    let (id, code, _) = fresh_code(&h, &c).await;
    for _ in 0..5 {
        err_of(h.verify(&c, &id, &wrong(&code)).await, ErrorKind::Rejected);
    }
    // Five failures also start the 30 s delay; wait it out, then the right code is dead anyway.
    h.clock.advance(30);
    err_of(h.verify(&c, &id, &code).await, ErrorKind::Rejected);
    assert_eq!(
        h.rejection_reasons().last().map(String::as_str),
        Some("code-guesses-exhausted")
    );
}

#[tokio::test]
async fn a_resend_does_not_refill_the_guess_budget_and_a_dead_code_is_replaced() {
    let h = Harness::new();
    let c = ctx("dr-budget");
    let (id, code, _) = fresh_code(&h, &c).await;
    for _ in 0..3 {
        err_of(h.verify(&c, &id, &wrong(&code)).await, ErrorKind::Rejected);
    }
    let resent = h.send_code(&c, &id).await.unwrap();
    assert!(resent.resent, "the code is live with 3 guesses used");
    assert_eq!(h.last_code(), code);
    for _ in 0..2 {
        err_of(h.verify(&c, &id, &wrong(&code)).await, ErrorKind::Rejected);
    }
    h.clock.advance(30);
    err_of(h.verify(&c, &id, &code).await, ErrorKind::Rejected);

    // The code has had its 5 guesses: a send now gives a NEW code, not the dead one.
    let replaced = h.send_code(&c, &id).await.unwrap();
    assert!(!replaced.resent);
    assert_eq!(replaced.code_expires_at, h.clock.now() + 600);
    let new_code = h.last_code();
    assert_ne!(new_code, code);
    // Six failures so far: the next try waits 60 s.
    let e = err_of(h.verify(&c, &id, &new_code).await, ErrorKind::Throttled);
    assert_eq!(e.retry_after_seconds, Some(60));
    h.clock.advance(60);
    h.verify(&c, &id, &new_code)
        .await
        .expect("the replacement code works");
}

#[tokio::test]
async fn wrong_guesses_across_codes_grow_the_delay_and_lock_the_user_at_20() {
    let h = Harness::new();
    let c = ctx("dr-lockout");
    // The documented delay before the next try after F consecutive failures, F = 5..=19.
    let delays: [u32; 15] = [
        30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600, 3600, 3600, 3600, 3600, 3600,
    ];
    let (mut id, mut code, mut expires) = fresh_code(&h, &c).await;
    let mut guesses_on_code = 0;
    let mut codes_used = 1;

    for f in 0..20u32 {
        if f >= 5 {
            let delay = delays[(f - 5) as usize];
            let e = err_of(h.verify(&c, &id, &wrong(&code)).await, ErrorKind::Throttled);
            assert_eq!(e.retry_after_seconds, Some(delay), "after {f} failures");
            let status = h.status(&c).await.unwrap();
            assert_eq!(
                status.verify_blocked_until,
                Some(h.clock.now() + i64::from(delay))
            );
            h.clock.advance(i64::from(delay) - 1);
            let e = err_of(h.verify(&c, &id, &code).await, ErrorKind::Throttled);
            assert_eq!(e.retry_after_seconds, Some(1), "even the right code waits");
            assert_eq!(failures(&h, &c).await, f, "a refused try is not a guess");
            h.clock.advance(1);
        } else {
            assert_eq!(h.status(&c).await.unwrap().verify_blocked_until, None);
        }
        if guesses_on_code == 5 || h.clock.now() > expires {
            (id, code, expires) = fresh_code(&h, &c).await;
            guesses_on_code = 0;
            codes_used += 1;
        }
        err_of(h.verify(&c, &id, &wrong(&code)).await, ErrorKind::Rejected);
        guesses_on_code += 1;
        assert_eq!(failures(&h, &c).await, f + 1, "every code's guesses count");
    }
    assert!(codes_used >= 4, "20 guesses needed at least 4 codes");

    let status = h.status(&c).await.unwrap();
    assert!(status.locked);
    assert_eq!(status.consecutive_failures, 20);
    let locked: Vec<_> = h
        .audit_records()
        .into_iter()
        .filter(|r| r["action"] == "user_locked")
        .collect();
    assert_eq!(locked.len(), 1);
    assert_eq!(locked[0]["reason"], "consecutive-failures");

    // Even the right code of the live challenge is refused now.
    err_of(h.verify(&c, &id, &code).await, ErrorKind::Locked);
    err_of(h.send_code(&c, &id).await, ErrorKind::Locked);
    match h.begin(&c).await {
        Ok(Decision::Deny(d)) => assert_eq!(d.why.rule, "user:locked"),
        other => panic!("a locked user's login is denied, got {other:?}"),
    }
    // Only an admin reset unlocks: time does not.
    h.clock.advance(40 * DAY);
    assert!(h.status(&c).await.unwrap().locked);
    assert!(matches!(h.begin(&c).await, Ok(Decision::Deny(_))));
}

#[tokio::test]
async fn a_success_resets_the_consecutive_failures() {
    let h = Harness::new();
    let c = ctx("dr-reset");
    let (id, code, _) = fresh_code(&h, &c).await;
    for _ in 0..4 {
        err_of(h.verify(&c, &id, &wrong(&code)).await, ErrorKind::Rejected);
    }
    assert_eq!(failures(&h, &c).await, 4);
    h.verify(&c, &id, &code).await.unwrap();
    let status = h.status(&c).await.unwrap();
    assert_eq!(status.consecutive_failures, 0);
    assert_eq!(status.verify_blocked_until, None);

    // With the streak reset, five more wrong codes are all judged without delay (had the streak
    // stayed at 4, the second of them would wait 30 s).
    let (id, code, _) = fresh_code(&h, &c).await;
    for _ in 0..5 {
        err_of(h.verify(&c, &id, &wrong(&code)).await, ErrorKind::Rejected);
    }
    assert_eq!(failures(&h, &c).await, 5);
}

#[tokio::test]
async fn every_kind_of_bad_code_gets_the_same_answer() {
    let h = Harness::new();
    let mut answers: Vec<(&str, MfaError)> = Vec::new();

    let unknown_user = ctx("dr-never-seen");
    let r = h
        .verify(&unknown_user, "0123456789abcdef0123456789abcdef", "123456")
        .await;
    answers.push(("unknown user", err_of(r, ErrorKind::Rejected)));

    let c = ctx("dr-unknown-challenge");
    let (_, code, _) = fresh_code(&h, &c).await;
    let r = h
        .verify(&c, "fedcba9876543210fedcba9876543210", &code)
        .await;
    answers.push(("unknown challenge", err_of(r, ErrorKind::Rejected)));

    let c = ctx("dr-wrong");
    let (id, code, _) = fresh_code(&h, &c).await;
    let r = h.verify(&c, &id, &wrong(&code)).await;
    answers.push(("wrong code", err_of(r, ErrorKind::Rejected)));

    let c = ctx("dr-used");
    let (id, code, _) = fresh_code(&h, &c).await;
    h.verify(&c, &id, &code).await.unwrap();
    let r = h.verify(&c, &id, &code).await;
    answers.push(("used code", err_of(r, ErrorKind::Rejected)));

    let c = ctx("dr-not-sent");
    let id = h.challenge(&c).await;
    let r = h.verify(&c, &id, "123456").await;
    answers.push(("no code sent yet", err_of(r, ErrorKind::Rejected)));

    let c = ctx("dr-expired");
    let (id, code, _) = fresh_code(&h, &c).await;
    h.clock.advance(601);
    let r = h.verify(&c, &id, &code).await;
    answers.push(("expired code", err_of(r, ErrorKind::Rejected)));

    let (first_case, first) = &answers[0];
    for (case, e) in &answers {
        assert_eq!(e.message, first.message, "{case} vs {first_case}");
        assert_eq!(e.field, None, "{case}");
        assert_eq!(e.retry_after_seconds, None, "{case}");
    }
    // The audit trail (for admins) does tell them apart: each case really took its own path.
    let mut reasons = h.rejection_reasons();
    reasons.sort();
    assert_eq!(
        reasons,
        // A used code's challenge is gone (deleted by the success): it reads as an unknown challenge.
        [
            "expired",
            "no-challenge",
            "no-challenge",
            "no-challenge",
            "no-code-sent",
            "wrong-code"
        ]
    );
}

#[tokio::test]
async fn malformed_input_is_refused_naming_the_field_and_stores_nothing() {
    let h = Harness::new();
    let c = ctx("dr-input");
    let (id, code, _) = fresh_code(&h, &c).await;

    let mut bad_email = ctx("dr-input");
    bad_email.email = "not-an-address".to_owned();
    let mut bad_user = ctx("dr-input");
    bad_user.user_id = "dr:input".to_owned();
    let oversized = "1".repeat(100);

    let before = h.snapshot();
    assert!(
        !before.is_empty(),
        "the user has state that could be damaged"
    );
    let (records, emails) = (h.audit_records().len(), h.emails_sent());

    let cases: Vec<(&str, &str, Result<(), MfaError>)> = vec![
        (
            "begin with a bad email",
            "email",
            h.begin(&bad_email).await.map(drop),
        ),
        (
            "begin with ':' in the user id",
            "user_id",
            h.begin(&bad_user).await.map(drop),
        ),
        (
            "send-code with ':' in the user id",
            "user_id",
            h.send_code(&bad_user, &id).await.map(drop),
        ),
        (
            "send-code with a bad challenge id",
            "challenge_id",
            h.send_code(&c, "abc:def").await.map(drop),
        ),
        (
            "verify with an oversized code",
            "code",
            h.verify(&c, &id, &oversized).await.map(drop),
        ),
        (
            "verify with letters in the code",
            "code",
            h.verify(&c, &id, "12a456").await.map(drop),
        ),
        (
            "verify with 5 digits",
            "code",
            h.verify(&c, &id, "12345").await.map(drop),
        ),
        (
            "verify with a bad email",
            "email",
            h.verify(&bad_email, &id, &code).await.map(drop),
        ),
        (
            "status with ':' in the user id",
            "user_id",
            h.status(&bad_user).await.map(drop),
        ),
    ];
    for (case, field, r) in cases {
        let e = err_of(r, ErrorKind::InvalidInput);
        assert_eq!(e.field.as_deref(), Some(field), "{case}");
        assert!(
            !e.message.contains(&oversized) && !e.message.contains("12a456"),
            "{case}: {}",
            e.message
        );
    }

    assert_eq!(h.snapshot(), before, "the store is unchanged");
    assert_eq!(h.audit_records().len(), records, "nothing was recorded");
    assert_eq!(h.emails_sent(), emails, "nothing was mailed");
    // None of it counted as a guess: the code still works at the first try, with no streak.
    assert_eq!(failures(&h, &c).await, 0);
    h.verify(&c, &id, &code).await.unwrap();
}

#[tokio::test]
async fn status_reports_sends_expiry_delay_and_lock() {
    let h = Harness::new();
    let c = ctx("dr-status");
    let s = h.status(&c).await.unwrap();
    assert_eq!(
        (
            s.locked,
            s.consecutive_failures,
            s.sends_left,
            s.active_challenge,
            s.code_expires_at
        ),
        (false, 0, 3, None, None)
    );
    assert_eq!((s.verify_blocked_until, s.next_send_at), (None, None));

    let id = h.challenge(&c).await;
    let s = h.status(&c).await.unwrap();
    assert_eq!(s.active_challenge.as_deref(), Some(id.as_str()));
    assert_eq!(
        (s.code_expires_at, s.sends_left),
        (None, 3),
        "no code before send-code"
    );

    h.send_code(&c, &id).await.unwrap();
    let code = h.last_code();
    h.clock.advance(10);
    h.send_code(&c, &id).await.unwrap();
    h.clock.advance(10);
    h.send_code(&c, &id).await.unwrap();
    let s = h.status(&c).await.unwrap();
    assert_eq!(s.code_expires_at, Some(T0 + 600));
    assert_eq!(s.sends_left, 0);
    assert_eq!(s.next_send_at, Some(T0 + 300));

    for _ in 0..5 {
        err_of(h.verify(&c, &id, &wrong(&code)).await, ErrorKind::Rejected);
    }
    let s = h.status(&c).await.unwrap();
    assert_eq!(s.consecutive_failures, 5);
    assert_eq!(s.verify_blocked_until, Some(T0 + 20 + 30));
    assert!(!s.locked);

    h.clock.set(T0 + 601);
    let s = h.status(&c).await.unwrap();
    assert_eq!(s.code_expires_at, None, "the code expired");
    assert_eq!(s.verify_blocked_until, None, "the delay is over");
    assert_eq!(
        (s.sends_left, s.next_send_at),
        (3, None),
        "the window emptied"
    );
    assert_eq!(
        s.consecutive_failures, 5,
        "only a success resets the streak"
    );
    let text = format!("{s:?}");
    assert!(!text.contains(&code), "status never carries the code");
}

/// One daily sign-in of the real user: begin, send, verify the emailed code, waiting out whatever
/// the attacker's activity imposes (send window, guess delay). `false` when the login is denied
/// because the user is locked.
async fn real_user_logs_in(h: &Harness, c: &wit::LoginContext) -> bool {
    for _ in 0..20 {
        let id = match h.begin(c).await.unwrap() {
            Decision::Challenge(ch) => ch.challenge_id,
            Decision::Deny(d) => {
                assert_eq!(d.why.rule, "user:locked");
                return false;
            }
            Decision::Allow(a) => panic!("no trusted devices yet: {a:?}"),
        };
        match h.send_code(c, &id).await {
            Ok(_) => {}
            Err(e) if e.kind == ErrorKind::Throttled => {
                h.clock.advance(i64::from(e.retry_after_seconds.unwrap()));
                continue;
            }
            Err(e) if e.kind == ErrorKind::Locked => return false,
            Err(e) => panic!("the user's send failed: {e:?}"),
        }
        match h.verify(c, &id, &h.last_code()).await {
            Ok(_) => return true,
            Err(e) if e.kind == ErrorKind::Throttled => {
                h.clock.advance(i64::from(e.retry_after_seconds.unwrap()));
            }
            Err(e) if e.kind == ErrorKind::Locked => return false,
            Err(e) => panic!("the user's own code failed: {e:?}"),
        }
    }
    panic!("the real user could not finish a login");
}

/// The attacker's current code: they cannot read the email, but the test can, to be sure every
/// guess is wrong (a lucky guess would end the experiment, not measure the bound).
struct Attempt {
    id: String,
    code: String,
    expires: i64,
    guesses: u32,
}

#[tokio::test]
async fn an_attacker_with_the_password_gets_at_most_100_guesses_in_30_days() {
    let h = Harness::new();
    let victim = ctx("dr-victim");
    let end = T0 + 30 * DAY;
    let mut next_login = T0 + DAY / 2;
    let mut attempt: Option<Attempt> = None;
    let (mut evaluated, mut logins_ok, mut logins_denied) = (0u32, 0u32, 0u32);

    for _step in 0..50_000 {
        let now = h.clock.now();
        if now >= end {
            break;
        }
        if now >= next_login {
            next_login += DAY;
            attempt = None; // the user's `begin` replaces the attacker's challenge
            if real_user_logs_in(&h, &victim).await {
                logins_ok += 1;
                assert_eq!(
                    failures(&h, &victim).await,
                    0,
                    "a success resets the streak"
                );
            } else {
                assert!(
                    h.status(&victim).await.unwrap().locked,
                    "only a lock denies the user"
                );
                logins_denied += 1;
            }
            continue;
        }
        // The attacker waits (polling hourly) but never past the user's next login.
        let wait = |h: &Harness| h.clock.set((now + 3600).min(next_login).min(end));
        let status = h.status(&victim).await.unwrap();
        // A 20th consecutive failure would lock the user for good; the attacker stops at 19 and
        // lets the user's next success reset the streak.
        if status.locked || status.consecutive_failures >= 19 {
            wait(&h);
            continue;
        }
        if attempt
            .as_ref()
            .is_none_or(|a| a.guesses >= 5 || now > a.expires)
        {
            let id = match h.begin(&victim).await.unwrap() {
                Decision::Challenge(ch) => ch.challenge_id,
                other => panic!("unlocked, so a challenge: {other:?}"),
            };
            match h.send_code(&victim, &id).await {
                Ok(sent) => {
                    attempt = Some(Attempt {
                        id,
                        code: h.last_code(),
                        expires: sent.code_expires_at,
                        guesses: 0,
                    });
                }
                Err(e) if e.kind == ErrorKind::Throttled => {
                    let r = i64::from(e.retry_after_seconds.unwrap());
                    h.clock.set((now + r).min(next_login));
                    attempt = None;
                    continue;
                }
                Err(e) => panic!("attacker's send: {e:?}"),
            }
        }
        let a = attempt.as_mut().unwrap();
        match h.verify(&victim, &a.id, &wrong(&a.code)).await {
            Err(e) if e.kind == ErrorKind::Rejected => {
                evaluated += 1;
                a.guesses += 1;
            }
            Err(e) if e.kind == ErrorKind::Throttled => {
                let r = i64::from(e.retry_after_seconds.unwrap());
                h.clock.set((now + r).min(next_login));
            }
            Err(e) if e.kind == ErrorKind::Locked => wait(&h),
            other => panic!("a wrong code can only be refused: {other:?}"),
        }
    }
    assert!(h.clock.now() >= end, "the simulation covered 30 days");

    // Every wrong guess the component judged, by its own records (the user never mistyped).
    let judged = h
        .rejection_reasons()
        .iter()
        .filter(|r| *r != "user:locked")
        .count();
    assert_eq!(judged, evaluated as usize);
    assert!(
        evaluated <= 100,
        "{evaluated} wrong guesses in 30 days: more than 2 x 50 (logins ok {logins_ok}, denied {logins_denied})"
    );
    assert!(
        evaluated > 20,
        "the user's successes let the attacker past one streak: the 30-day cap stopped it"
    );
    assert!(
        logins_ok >= 1,
        "the real user did log in while under attack"
    );
    assert!(
        h.status(&victim).await.unwrap().locked,
        "the attacker ended up locked"
    );
    assert!(
        h.audit_records()
            .iter()
            .any(|r| r["action"] == "user_locked" && r["reason"] == "failures-in-30-days")
    );
}

/// An IdP that calls `begin` on each render of its prompt page: the live challenge is resumed, no
/// email is spent, the code already sent still works, and the answers say what to claim and since
/// when (the plugin world, as an IdP loads it).
#[tokio::test]
async fn rendering_the_prompt_again_resumes_the_challenge_and_the_answers_state_amr() {
    let h = Harness::plugin();
    let c = ctx("dr-renders");
    let (id, code, _) = fresh_code(&h, &c).await;
    h.clock.advance(20);
    for _ in 0..5 {
        assert_eq!(h.challenge(&c).await, id, "the same challenge, resumed");
    }
    assert_eq!(h.emails_sent(), 1, "resuming sends nothing");
    let started = h
        .actions()
        .iter()
        .filter(|a| *a == "challenge_started")
        .count();
    assert_eq!(started, 1, "a resume records nothing");
    h.clock.advance(10);
    let verified = h.verify_remember(&c, &id, &code).await.unwrap();
    assert_eq!(verified.amr, ["otp", "mfa"]);
    assert_eq!(verified.second_factor_at, T0 + 30);

    // Next day, the remembered browser stands in for the code, as of when it was entered.
    h.clock.advance(DAY);
    let mut again = c.clone();
    again.device.cookie = Some(cookie_value(&verified.set_cookie.unwrap()));
    match h.begin(&again).await.unwrap() {
        Decision::Allow(a) => {
            assert_eq!(a.amr, ["mfa"]);
            assert_eq!(a.second_factor_at, Some(T0 + 30));
        }
        other => panic!("expected the trusted browser to be let through, got {other:?}"),
    }
    // A user no rule asks a code of: nothing to claim.
    let mut patient = ctx("pt-renders");
    patient.roles = vec!["patient".to_owned()];
    match h.begin(&patient).await.unwrap() {
        Decision::Allow(a) => {
            assert!(a.amr.is_empty());
            assert_eq!(a.second_factor_at, None);
        }
        other => panic!("expected no code to be asked, got {other:?}"),
    }
}
