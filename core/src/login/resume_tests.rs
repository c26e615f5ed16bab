//! `begin` resumes the user's live challenge instead of replacing it, so that an IdP that asks again
//! on each render of its prompt page neither spends an email nor strands the code already sent; and
//! `allow` and `verify` say which methods they vouch for, and since when.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use super::tests::{T0, World, ctx};
use crate::kernel::keys;
use crate::kernel::model::{Decision, Purpose};
use crate::kernel::ports::Store as _;
use crate::kernel::settings::Settings;

/// The challenge `begin` answers, or a panic naming what it answered instead.
fn challenge_of(
    w: &mut World,
    c: &crate::kernel::model::LoginContext,
    now: crate::kernel::time::Timestamp,
) -> crate::kernel::model::ChallengeView {
    match w.decide(c, now).unwrap() {
        Decision::Challenge(ch) => ch,
        other => panic!("expected a challenge, got {other:?}"),
    }
}

#[test]
fn a_second_begin_resumes_the_live_challenge_and_the_emailed_code_still_works() {
    let mut w = World::new();
    let c = ctx("dr-render");
    let first = challenge_of(&mut w, &c, T0);
    w.send(&c, &first.challenge_id, T0).unwrap();
    let code = w.mailer.last_code().unwrap();
    // The IdP renders its prompt again, twice.
    let again = challenge_of(&mut w, &c, T0.plus(30));
    let third = challenge_of(&mut w, &c, T0.plus(60));
    assert_eq!(again.challenge_id, first.challenge_id);
    assert_eq!(third.challenge_id, first.challenge_id);
    assert_eq!(
        again.expires_at, first.expires_at,
        "resuming extends nothing"
    );
    assert_eq!(
        w.mailer.sent.borrow().len(),
        1,
        "no email spent by resuming"
    );
    assert!(
        w.verify(&c, &first.challenge_id, &code, T0.plus(90))
            .is_ok()
    );
    assert_eq!(
        w.audit.actions(),
        ["challenge_started", "code_sent", "enrolled"],
        "a resume changes nothing, so it records nothing"
    );
}

#[test]
fn a_challenge_whose_code_was_used_is_replaced() {
    let mut w = World::new();
    let c = ctx("dr-used");
    let id = w.begin(&c, T0);
    w.send(&c, &id, T0).unwrap();
    // The code spent the way a winning verify spends it, its tidy-up (the delete) lost.
    assert_eq!(w.store.increment(&keys::used(&id, 1), 1, None).unwrap(), 1);
    assert_ne!(w.begin(&c, T0.plus(1)), id);
}

#[test]
fn a_challenge_without_room_for_a_whole_code_is_replaced() {
    let mut w = World::new();
    let c = ctx("dr-late");
    let settings = Settings::default();
    let id = w.begin(&c, T0);
    let end = T0.plus(settings.challenge_ttl_seconds);
    let last_resume = end.plus(-settings.code_ttl_seconds);
    assert_eq!(
        w.begin(&c, last_resume),
        id,
        "a code sent now still lives its 10 minutes"
    );
    assert_ne!(w.begin(&c, last_resume.plus(1)), id);
}

#[test]
fn another_address_or_purpose_opens_a_new_challenge() {
    let mut w = World::new();
    let mut c = ctx("dr-moved");
    let first = challenge_of(&mut w, &c, T0);
    assert_eq!(first.purpose, Purpose::Enrollment);
    // Not enrolled yet, and the IdP now names another address: the code must go there.
    c.email = "dr-moved.other@clinic.example".into();
    let second = challenge_of(&mut w, &c, T0.plus(5));
    assert_ne!(second.challenge_id, first.challenge_id);
    assert_eq!(second.masked_email, "d***@clinic.example");
    // Enrolled with that address, a login challenge replaces the enrollment one.
    w.send(&c, &second.challenge_id, T0.plus(5)).unwrap();
    let code = w.mailer.last_code().unwrap();
    w.verify(&c, &second.challenge_id, &code, T0.plus(6))
        .unwrap();
    let login = challenge_of(&mut w, &c, T0.plus(7));
    assert_eq!(login.purpose, Purpose::Login);
    assert_ne!(login.challenge_id, second.challenge_id);
}

#[test]
fn a_stored_challenge_that_does_not_parse_is_replaced_not_resumed() {
    let mut w = World::new();
    let c = ctx("dr-broken");
    w.store
        .set(&keys::challenge("acme", "dr-broken"), b"{not json", None)
        .unwrap();
    let id = w.begin(&c, T0);
    w.send(&c, &id, T0).unwrap();
    let code = w.mailer.last_code().unwrap();
    assert!(w.verify(&c, &id, &code, T0.plus(1)).is_ok());
}

#[test]
fn allow_and_verify_say_which_methods_and_since_when() {
    let mut w = World::new();
    let mut c = ctx("dr-amr");
    // Enroll, then sign in once with a code, remembering the browser.
    let id = w.begin(&c, T0);
    w.send(&c, &id, T0).unwrap();
    let code = w.mailer.last_code().unwrap();
    w.verify(&c, &id, &code, T0.plus(1)).unwrap();
    let id = w.begin(&c, T0.plus(10));
    w.send(&c, &id, T0.plus(10)).unwrap();
    let code = w.mailer.last_code().unwrap();
    let verified = w.verify_trusting(&c, &id, &code, T0.plus(20)).unwrap();
    assert_eq!(verified.amr, ["otp", "mfa"]);
    assert_eq!(verified.second_factor_at, T0.plus(20));
    let cookie = verified.set_cookie.unwrap();
    let token = cookie.split(';').next().unwrap().split_once('=').unwrap().1;
    c.device.cookie = Some(token.to_owned());

    // A day later the browser stands in for the code: `mfa`, as of when its code was entered.
    let Decision::Allow(allowed) = w.decide(&c, T0.plus(86_400)).unwrap() else {
        panic!("trusted")
    };
    assert_eq!(allowed.why.rule, "device:trusted");
    assert_eq!(allowed.amr, ["mfa"]);
    assert_eq!(allowed.second_factor_at, Some(T0.plus(20)));

    // No rule asks a code of a user without a privileged role: no second factor is claimed.
    let mut plain = ctx("pt-amr");
    plain.roles = vec!["patient".into()];
    let Decision::Allow(allowed) = w.decide(&plain, T0).unwrap() else {
        panic!("not required")
    };
    assert_eq!(allowed.why.rule, "policy:not-required");
    assert!(allowed.amr.is_empty());
    assert_eq!(allowed.second_factor_at, None);
}

#[test]
fn another_browser_or_network_opens_its_own_challenge() {
    let mut w = World::new();
    let c = ctx("dr-two-places");
    let id = w.begin(&c, T0);
    let mut elsewhere = c.clone();
    elsewhere.device.ip = "198.51.100.20".into();
    let other = w.begin(&elsewhere, T0.plus(1));
    assert_ne!(other, id, "another network replaces, recorded");
    let mut other_browser = elsewhere.clone();
    other_browser.device.traits.user_agent = "Mozilla/5.0 (Macintosh) Safari/605.1.15".into();
    let third = w.begin(&other_browser, T0.plus(2));
    assert_ne!(third, other, "another browser replaces, recorded");
    assert_eq!(
        w.begin(&other_browser, T0.plus(3)),
        third,
        "the same one resumes"
    );
    assert_eq!(
        w.audit.actions(),
        [
            "challenge_started",
            "challenge_started",
            "challenge_started"
        ]
    );
}
