//! `change-email` needs the step-up token that this sign-in's `verify` returned: within 5 minutes,
//! once, and only the latest one. A colleague on an identical workstation behind the same NAT, who
//! holds the password but never saw the token, cannot move the address.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use rand_core::{OsRng, TryRngCore};

use super::tests::{T0, World, ctx};
use crate::kernel::error::Error;
use crate::kernel::model::LoginContext;
use crate::kernel::time::Timestamp;
use crate::policy::enrollment::FRESH_VERIFICATION_SECONDS;

/// Enrolls `user` and signs them in once; returns the step-up token of that sign-in.
fn enrolled_and_signed_in(w: &mut World, user: &str, now: Timestamp) -> String {
    let c = ctx(user);
    for _ in 0..2 {
        // The first challenge confirms the address, the second is a login.
        let id = w.begin(&c, now);
        w.send(&c, &id, now).unwrap();
        let code = w.mailer.last_code().unwrap();
        let verified = w.verify(&c, &id, &code, now).unwrap();
        assert!(verified.step_up.is_some());
        if w.engine().enrollment_of("acme", user).unwrap().is_some() && verified.amr.len() == 2 {
            return verified.step_up.unwrap();
        }
    }
    panic!("not signed in")
}

fn moving(user: &str) -> LoginContext {
    let mut c = ctx(user);
    c.email = format!("{user}.new@clinic.example");
    c
}

fn change(w: &World, c: &LoginContext, token: &str, now: Timestamp) -> Result<String, Error> {
    w.engine()
        .change_email(c, token, now, &mut OsRng.unwrap_err())
        .map(|challenge| challenge.challenge_id)
}

#[test]
fn the_sign_ins_own_token_opens_a_change_once() {
    let mut w = World::new();
    let token = enrolled_and_signed_in(&mut w, "dr-move", T0);
    let c = moving("dr-move");
    change(&w, &c, &token, T0.plus(10)).unwrap();
    assert!(
        matches!(
            change(&w, &c, &token, T0.plus(11)),
            Err(Error::Forbidden(_))
        ),
        "a token is spent by its first use"
    );
}

#[test]
fn a_colleague_without_the_token_cannot_move_the_address() {
    let mut w = World::new();
    let token = enrolled_and_signed_in(&mut w, "dr-victim", T0);
    // Same user id, same browser, same network, seconds later: only the token differs.
    let c = moving("dr-victim");
    let guessed = "0123456789abcdef0123456789abcdef";
    assert!(matches!(
        change(&w, &c, guessed, T0.plus(5)),
        Err(Error::Forbidden(_))
    ));
    // The refusal is recorded, and the real sign-in's token still works.
    change(&w, &c, &token, T0.plus(6)).unwrap();
}

#[test]
fn a_token_lapses_after_five_minutes_and_a_newer_sign_in_replaces_it() {
    let mut w = World::new();
    let first = enrolled_and_signed_in(&mut w, "dr-slow", T0);
    let c = moving("dr-slow");
    let late = T0.plus(FRESH_VERIFICATION_SECONDS + 1);
    assert!(matches!(
        change(&w, &c, &first, late),
        Err(Error::Forbidden(_))
    ));

    let later = late.plus(60);
    let second = enrolled_and_signed_in(&mut w, "dr-slow", later);
    assert_ne!(first, second);
    assert!(matches!(
        change(&w, &c, &first, later.plus(1)),
        Err(Error::Forbidden(_))
    ));
    change(&w, &c, &second, later.plus(2)).unwrap();
}

#[test]
fn a_malformed_token_is_invalid_input_and_changes_nothing() {
    let mut w = World::new();
    enrolled_and_signed_in(&mut w, "dr-typo", T0);
    let before = w.store.snapshot();
    for bad in [
        "",
        "XYZ",
        "0123456789ABCDEF0123456789ABCDEF",
        &"a".repeat(33),
    ] {
        assert!(
            matches!(
                change(&w, &moving("dr-typo"), bad, T0.plus(1)),
                Err(Error::InvalidInput { .. })
            ),
            "{bad:?}"
        );
    }
    assert_eq!(w.store.snapshot(), before);
}

#[test]
fn a_credential_change_takes_the_step_up_away() {
    let mut w = World::new();
    let token = enrolled_and_signed_in(&mut w, "dr-reset-pw", T0);
    let me = crate::kernel::model::Actor {
        user_id: "dr-reset-pw".into(),
        org_id: "acme".into(),
        roles: vec!["provider".into()],
        ip: "203.0.113.7".into(),
        user_agent: String::new(),
    };
    w.engine()
        .credential_changed(
            &me,
            "acme",
            "dr-reset-pw",
            crate::kernel::model::CredentialChange::PasswordChanged,
            T0.plus(1),
            &mut OsRng.unwrap_err(),
        )
        .unwrap();
    assert!(matches!(
        change(&w, &moving("dr-reset-pw"), &token, T0.plus(2)),
        Err(Error::Forbidden(_))
    ));
}
