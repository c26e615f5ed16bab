//! The login context, the actor and the ids, as the engine's entry points receive them (the REST
//! API and the WIT hand them over as they came). Every entry point validates its input first, so
//! a refused context, actor, id or code must leave everything exactly as it was: no value, no
//! counter, no expiry, no record, no note, no mail. The world has state worth disturbing: an
//! enrolled user with a trusted device and a login challenge whose code was sent.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use mfa_step_core::{Actor, CredentialChange, Error, Timestamp};

use crate::input::{bad_id, break_ctx, broken};
use crate::world::{
    ORG, T0, USER, World, check, ctx, garbage, of, rng, text, unchanged, with_code_sent,
};

/// Refused with [`Error::InvalidInput`] naming `expected`.
fn refused<T: std::fmt::Debug>(r: &Result<T, Error>, expected: &str) -> Result<(), TestCaseError> {
    match r {
        Err(Error::InvalidInput { field, .. }) if *field == expected => Ok(()),
        other => Err(TestCaseError::fail(format!(
            "expected invalid {expected}, got {other:?}"
        ))),
    }
}

/// A step-up token of the right form (not the one `verify` handed out).
const STEP_UP: &str = "0123456789abcdef0123456789abcdef";

/// The login step's entry points.
const STEPS: [&str; 6] = [
    "begin",
    "send_code",
    "verify",
    "status",
    "enroll",
    "change_email",
];

#[test]
fn a_refused_login_context_changes_nothing_at_any_step() {
    let (base, _, id, code) = with_code_sent();
    let before = base.state();
    let strategy = (
        prop::sample::select(STEPS.to_vec()),
        break_ctx(),
        any::<bool>(),
    );
    check(256, strategy, |(step, (which, junk), remember)| {
        let Some((bad, field)) = broken(&ctx(), which, &junk) else {
            return Ok(());
        };
        let w = base.fork();
        let e = w.engine();
        let at = Timestamp(T0 + 150);
        let r = match step {
            "begin" => e.begin(&bad, at, &mut rng(1)).map(drop),
            "send_code" => e.send_code(&bad, &id, at, &mut rng(1)).map(drop),
            "verify" => e
                .verify(&bad, &id, &code, remember, at, &mut rng(1))
                .map(drop),
            "status" => e.status(&bad, at).map(drop),
            "enroll" => e.enroll(&bad, at, &mut rng(1)).map(drop),
            _ => e.change_email(&bad, STEP_UP, at, &mut rng(1)).map(drop),
        };
        refused(&r, field)?;
        unchanged(&before, &w.state())
    });
}

#[test]
fn a_challenge_id_that_is_not_an_id_changes_nothing() {
    let (base, _, _, code) = with_code_sent();
    let before = base.state();
    check(256, (bad_id(), any::<bool>()), |(id, verify)| {
        let w = base.fork();
        let e = w.engine();
        let at = Timestamp(T0 + 150);
        let r = if verify {
            e.verify(&ctx(), &id, &code, false, at, &mut rng(1))
                .map(drop)
        } else {
            e.send_code(&ctx(), &id, at, &mut rng(1)).map(drop)
        };
        refused(&r, "challenge_id")?;
        unchanged(&before, &w.state())
    });
}

/// What is left of a typed code once spaces, tabs and dashes are dropped is not six ASCII digits,
/// or the input is longer than 32 bytes.
fn not_a_code() -> impl Strategy<Value = String> {
    prop_oneof![
        garbage(),
        of("0123456789", 0..6),
        of("0123456789", 7..40),
        of("0123456789 -\t", 33..60),
        (of("0123456789", 0..6), text(1..3), of("0123456789", 0..6))
            .prop_map(|(a, b, c)| format!("{a}{b}{c}")),
        of("٠١٢٣٤٥٦٧٨٩０１２３４５６７８９", 6..=6),
    ]
    .prop_filter("cannot be a code", |s| {
        let left: String = s
            .chars()
            .filter(|c| !matches!(c, ' ' | '\t' | '-'))
            .collect();
        s.len() > 32 || !(left.len() == 6 && left.bytes().all(|b| b.is_ascii_digit()))
    })
}

#[test]
fn input_that_cannot_be_a_code_is_refused_before_it_counts_as_a_guess() {
    let (base, _, id, code) = with_code_sent();
    let before = base.state();
    check(512, (not_a_code(), any::<bool>()), |(typed, remember)| {
        let w = base.fork();
        let r = w.engine().verify(
            &ctx(),
            &id,
            &typed,
            remember,
            Timestamp(T0 + 150),
            &mut rng(1),
        );
        refused(&r, "code")?;
        unchanged(&before, &w.state())
    });
    // The property is not vacuous: the right code, spaced, is a guess that counts (and passes).
    let w = base.fork();
    let spaced = format!(" {}-{} ", &code[..3], &code[3..]);
    assert!(
        w.engine()
            .verify(
                &ctx(),
                &id,
                &spaced,
                false,
                Timestamp(T0 + 150),
                &mut rng(1)
            )
            .is_ok()
    );
}

/// An admin of the world's organization, with one field broken; the field its refusal names.
fn broken_actor() -> impl Strategy<Value = (Actor, &'static str)> {
    let admin = Actor {
        user_id: "admin-1".to_owned(),
        org_id: ORG.to_owned(),
        roles: vec!["org-admin".to_owned(), "platform-admin".to_owned()],
        ip: "198.51.100.9".to_owned(),
        user_agent: "console".to_owned(),
    };
    (0u8..5, bad_id(), garbage()).prop_filter_map("broken", move |(which, id, junk)| {
        let mut a = admin.clone();
        let field = match which {
            0 => {
                a.user_id = id;
                "actor.user_id"
            }
            1 => {
                a.org_id = id;
                "actor.org_id"
            }
            2 => {
                a.roles.push(format!("{junk} !"));
                "roles"
            }
            3 => {
                a.user_agent = format!("{junk}\u{0}");
                "actor.user_agent"
            }
            _ => {
                let ip = format!("{junk}#");
                if ip.trim().is_empty() {
                    return None;
                }
                a.ip = ip;
                "actor.ip"
            }
        };
        Some((a, field))
    })
}

/// The calls that take an actor.
const ACTOR_CALLS: [&str; 15] = [
    "revoke_device",
    "revoke_all_devices",
    "list_devices",
    "credential_changed",
    "get_policy",
    "set_policy",
    "reset_user",
    "get_platform_roles",
    "set_platform_roles",
    "get_branding",
    "set_branding",
    "preview_email",
    "preview_link",
    "user_status_for",
    "preview_email_zone",
];

/// Calls `call` as `actor`, about the world's user and organization (and its device `device`).
fn as_actor(w: &World, call: &str, actor: &Actor, ids: (&str, &str, &str)) -> Result<(), Error> {
    let (org, user, device) = ids;
    let e = w.engine();
    let at = Timestamp(T0 + 150);
    let r = &mut rng(1);
    let policy = mfa_step_core::policy::OrgPolicy::inherit(&e.settings);
    let branding = mfa_step_core::email::branding::Branding::default_for(ORG);
    match call {
        "revoke_device" => e.revoke_device(actor, device, at, r),
        "revoke_all_devices" => e.revoke_all_devices(actor, at, r).map(drop),
        "list_devices" => e.list_devices(actor, at).map(drop),
        "credential_changed" => e
            .credential_changed(actor, org, user, CredentialChange::PasswordChanged, at, r)
            .map(drop),
        "get_policy" => e.get_policy(actor, org, at, r).map(drop),
        "set_policy" => e.set_policy(actor, org, &policy, at, r),
        "reset_user" => e.reset_user(actor, org, user, at, r),
        "get_platform_roles" => e.get_platform_roles(actor, at, r).map(drop),
        "set_platform_roles" => e.set_platform_roles(actor, &["platform-admin".to_owned()], at, r),
        "get_branding" => e.get_branding(actor, org, at, r).map(drop),
        "set_branding" => e.set_branding(actor, org, &branding, at, r),
        "preview_email" => e.preview_email(actor, org, None, None, at, r).map(drop),
        "preview_link" => e.preview_link(actor, org, at, r).map(drop),
        "user_status_for" => e.user_status_for(actor, org, user, at, r).map(drop),
        // `preview_email` with a time zone that is not text, for a valid actor.
        _ => e
            .preview_email(actor, org, Some("en"), Some(user), at, r)
            .map(drop),
    }
}

#[test]
fn a_refused_actor_changes_nothing_in_any_call() {
    let (base, cookie, _, _) = with_code_sent();
    let device = cookie.split_once('.').unwrap().0.to_owned();
    let before = base.state();
    let calls = prop::sample::select(ACTOR_CALLS[..14].to_vec());
    check(256, (calls, broken_actor()), |(call, (actor, field))| {
        let w = base.fork();
        let r = as_actor(&w, call, &actor, (ORG, USER, &device));
        refused(&r, field)?;
        unchanged(&before, &w.state())
    });
}

#[test]
fn ids_that_are_not_ids_change_nothing_in_any_call() {
    let (base, cookie, _, _) = with_code_sent();
    let device = cookie.split_once('.').unwrap().0.to_owned();
    let before = base.state();
    let admin = Actor {
        user_id: "admin-1".to_owned(),
        org_id: ORG.to_owned(),
        roles: vec!["platform-admin".to_owned()],
        ..Actor::default()
    };
    // Which id is broken, and the calls that take it (and the field their refusal names).
    let cases = prop_oneof![
        prop::sample::select(vec![
            "credential_changed",
            "get_policy",
            "set_policy",
            "reset_user",
            "get_branding",
            "set_branding",
            "preview_email",
            "preview_link",
            "user_status_for",
        ])
        .prop_map(|c| (c, 0usize, "org_id")),
        prop::sample::select(vec!["credential_changed", "reset_user", "user_status_for"])
            .prop_map(|c| (c, 1usize, "user_id")),
        Just(("revoke_device", 2usize, "device_id")),
        // A time zone with a control character.
        Just(("preview_email_zone", 1usize, "time_zone")),
    ];
    check(
        256,
        (cases, bad_id(), text(0..4)),
        |((call, which, field), id, junk)| {
            let mut ids = [ORG.to_owned(), USER.to_owned(), device.clone()];
            ids[which] = if field == "time_zone" {
                format!("{junk}\u{1}")
            } else {
                id
            };
            let w = base.fork();
            let r = as_actor(&w, call, &admin, (&ids[0], &ids[1], &ids[2]));
            refused(&r, field)?;
            unchanged(&before, &w.state())
        },
    );
}

#[test]
fn step_up_tokens_are_32_lower_case_hex_digits_and_a_refused_one_changes_nothing() {
    check(
        2048,
        prop_oneof![garbage(), of("0123456789abcdefABCDEF", 30..34)],
        |t| {
            let valid = t.len() == 32 && t.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            let r = mfa_step_core::kernel::input::token("step_up", &t);
            prop_assert_eq!(r.is_ok(), valid);
            if !valid {
                refused(&r, "step_up")?;
            }
            Ok(())
        },
    );
    let (base, _, _, _) = with_code_sent();
    let before = base.state();
    let mut moved = ctx();
    moved.email = "dr-a@new.example".to_owned();
    let tokens = prop_oneof![
        garbage(),
        of("0123456789abcdefABCDEF", 30..34),
        of("0123456789abcdef", 32)
    ];
    check(256, tokens, |t| {
        let w = base.fork();
        let r = w
            .engine()
            .change_email(&moved, &t, Timestamp(T0 + 150), &mut rng(1));
        if mfa_step_core::kernel::input::token("step_up", &t).is_err() {
            refused(&r, "step_up")?;
            unchanged(&before, &w.state())
        } else {
            // Well formed but not this sign-in's: refused, and recorded as such.
            prop_assert!(matches!(r, Err(Error::Forbidden(_))), "{r:?}");
            crate::world::only_recorded(
                &before,
                &w.state(),
                ORG,
                &[
                    "email-change:no-step-up",
                    "email-change:step-up-expired",
                    "email-change:step-up-mismatch",
                ],
                false,
            )
        }
    });
}
