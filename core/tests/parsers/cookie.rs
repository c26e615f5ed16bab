//! The trusted-device cookie (`__Host-mfa-device`: `<32 hex id>.<64 hex token>`, or the whole
//! `name=value` pair), as `Engine::begin` and `Engine::verify` (remembering the browser) read it
//! from the login context.
//!
//! The same cookie reaches `begin` from the hosted pages' `Cookie` header (`GET /prompt/step`).
//!
//! A cookie that does not parse is no cookie: the browser is asked for a code, never refused. So
//! the typed refusal here is "no device", and the property is the strongest one there is: the
//! call with the refused cookie leaves exactly the state (every value, counter, expiry, audit
//! record and mail, ids included, the RNG being seeded alike) that the same call without a cookie
//! leaves, and it is never let through on the device.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use mfa_step_core::devices::COOKIE_NAME;
use mfa_step_core::{Decision, Timestamp};

use crate::world::{
    T0, World, check, cookie_value, ctx_with_cookie, enrolled_with_device, garbage, of, rng,
    with_code_sent,
};

const HEX: &str = "0123456789abcdef";

/// A valid cookie with one thing wrong. Surrounding whitespace, the `__Host-mfa-device=` prefix and
/// the case of the hex digits are normalizations (the same cookie, see `valid_cookies…`), so none
/// of these produce them.
#[derive(Debug, Clone)]
enum Bad {
    /// Cut at a position.
    Truncate(usize),
    /// A character inserted inside (not at either end): a separator, a control character, unicode.
    Insert(usize, char),
    /// A hex digit replaced by another hex digit: well formed, someone else's (or no one's).
    FlipHex(usize, char),
    /// Another id or token length, hex all the same.
    Lengths(usize, usize),
    /// The pair under another name.
    OtherName(String),
    /// Sent twice in one value, as a confused host might join a `Cookie` header.
    Twice(&'static str),
    /// Padded with spaces past the longest value read (4096 bytes).
    Huge(usize),
    /// No separator, or another one.
    Separator(char),
}

fn bad() -> impl Strategy<Value = Bad> {
    let inside = prop_oneof![
        Just('.'),
        Just('='),
        Just(';'),
        Just(','),
        Just(' '),
        Just('\0'),
        Just('\t'),
        Just('\n'),
        Just('\u{85}'),
        Just('\u{a0}'),
        Just('\u{3000}'),
        Just('é'),
        Just('０'),
        Just('𝕏'),
        any::<char>(),
    ];
    prop_oneof![
        (0usize..97).prop_map(Bad::Truncate),
        (1usize..97, inside).prop_map(|(i, c)| Bad::Insert(i, c)),
        (
            0usize..97,
            prop::sample::select(b"0123456789abcdef".to_vec())
        )
            .prop_map(|(i, c)| Bad::FlipHex(i, char::from(c))),
        (0usize..80, 0usize..140)
            .prop_filter("another length", |(a, b)| (*a, *b) != (32, 64))
            .prop_map(|(a, b)| Bad::Lengths(a, b)),
        of(
            "!#$%&'*+.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-",
            1..30
        )
        .prop_filter("another name", |n| n != COOKIE_NAME)
        .prop_map(Bad::OtherName),
        prop::sample::select(vec!["; ", ";", ",", " ", ".", ""]).prop_map(Bad::Twice),
        (4097usize..20_000).prop_map(Bad::Huge),
        prop_oneof![
            Just(':'),
            Just('-'),
            Just('_'),
            Just('='),
            Just(';'),
            Just('|')
        ]
        .prop_map(Bad::Separator),
    ]
}

/// `bad` applied to the valid `cookie`; `None` when it happens to leave it as it was.
fn apply(cookie: &str, bad: &Bad) -> Option<String> {
    let out = match bad {
        Bad::Truncate(n) => cookie[..n % cookie.len()].to_owned(),
        Bad::Insert(i, c) => {
            let at = 1 + i % (cookie.len() - 1);
            format!("{}{c}{}", &cookie[..at], &cookie[at..])
        }
        Bad::FlipHex(i, c) => {
            let at = i % cookie.len();
            if cookie.as_bytes()[at] == b'.' {
                return None;
            }
            format!("{}{c}{}", &cookie[..at], &cookie[at + 1..])
        }
        Bad::Lengths(a, b) => format!("{}.{}", "a".repeat(*a), "b".repeat(*b)),
        Bad::OtherName(name) => format!("{name}={cookie}"),
        Bad::Twice(sep) => format!("{COOKIE_NAME}={cookie}{sep}{COOKIE_NAME}={cookie}"),
        Bad::Huge(n) => format!("{cookie}{}", " ".repeat(n - cookie.len())),
        Bad::Separator(c) => cookie.replace('.', &c.to_string()),
    };
    (out != cookie).then_some(out)
}

/// `begin` in two forks of `base`, one with `cookie` and one without: both must end in the same
/// state, and neither on the device.
fn same_as_no_cookie(base: &World, cookie: &str) -> Result<(), TestCaseError> {
    let (with, without) = (base.fork(), base.fork());
    let at = Timestamp(T0 + 500);
    let a = with
        .engine()
        .begin(&ctx_with_cookie(Some(cookie)), at, &mut rng(42));
    let b = without
        .engine()
        .begin(&ctx_with_cookie(None), at, &mut rng(42));
    prop_assert!(
        matches!(a, Ok(Decision::Challenge(_))),
        "a refused cookie must be asked for a code: {a:?}"
    );
    prop_assert_eq!(&a, &b);
    let (sa, sb) = (with.state(), without.state());
    prop_assert!(
        sa == sb,
        "a refused cookie left another state than no cookie:\n{}",
        crate::world::diff(&sb, &sa)
    );
    Ok(())
}

#[test]
fn arbitrary_cookies_never_panic_and_count_as_no_cookie() {
    let (base, _) = enrolled_with_device();
    let garbage = prop_oneof![
        garbage(),
        of("0123456789abcdefABCDEF.=; ", 0..120),
        // Well formed, but no device of this user.
        (of(HEX, 32), of(HEX, 64)).prop_map(|(id, token)| format!("{id}.{token}")),
    ];
    check(256, garbage, |cookie| same_as_no_cookie(&base, &cookie));
}

#[test]
fn near_valid_cookies_are_no_device_never_accepted() {
    let (base, cookie) = enrolled_with_device();
    check(256, bad(), |bad| {
        let Some(mutated) = apply(&cookie, &bad) else {
            return Ok(());
        };
        same_as_no_cookie(&base, &mutated)
    });
}

#[test]
fn valid_cookies_are_accepted_and_their_rotation_round_trips() {
    let (base, cookie) = enrolled_with_device();
    // The normalizations that keep it the same cookie: the name, whitespace around, hex case.
    let spelled = (
        any::<bool>(),
        "[ \t]{0,3}",
        "[ \t]{0,3}",
        prop::collection::vec(any::<bool>(), 97),
    );
    check(64, spelled, |(named, lead, trail, upper)| {
        let w = base.fork();
        let cased: String = cookie
            .chars()
            .zip(&upper)
            .map(|(c, up)| if *up { c.to_ascii_uppercase() } else { c })
            .collect();
        let value = if named {
            format!("{lead}{COOKIE_NAME}={cased}{trail}")
        } else {
            format!("{lead}{cased}{trail}")
        };
        let mut at = T0 + 500;
        let mut presented = value;
        // Each login rotates the token; the rotated cookie is accepted next time.
        for seed in 0..3 {
            let d = w
                .engine()
                .begin(
                    &ctx_with_cookie(Some(&presented)),
                    Timestamp(at),
                    &mut rng(seed),
                )
                .map_err(|e| TestCaseError::fail(format!("{e}")))?;
            let Decision::Allow(allowed) = d else {
                return Err(TestCaseError::fail(format!("not let through: {d:?}")));
            };
            prop_assert_eq!(allowed.why.rule.as_str(), "device:trusted");
            presented = cookie_value(allowed.set_cookie.as_deref().unwrap());
            at += 100;
        }
        Ok(())
    });
}

#[test]
fn verify_remembering_with_a_refused_cookie_makes_a_new_device_as_without_one() {
    let (base, cookie, id, code) = with_code_sent();
    let refused = prop_oneof![
        garbage(),
        bad().prop_filter_map("changed", move |b| apply(&cookie, &b)),
    ];
    check(128, refused, |presented| {
        let (with, without) = (base.fork(), base.fork());
        let at = Timestamp(T0 + 120);
        let a = with.engine().verify(
            &ctx_with_cookie(Some(&presented)),
            &id,
            &code,
            true,
            at,
            &mut rng(9),
        );
        let b = without
            .engine()
            .verify(&ctx_with_cookie(None), &id, &code, true, at, &mut rng(9));
        prop_assert!(a.is_ok(), "{a:?}");
        prop_assert_eq!(&a, &b);
        prop_assert!(
            with.state() == without.state(),
            "{}",
            crate::world::diff(&without.state(), &with.state())
        );
        Ok(())
    });
}

#[test]
fn through_the_hosted_pages_a_refused_device_cookie_is_no_cookie() {
    use mfa_step_core::web::hosted::{SESSION_COOKIE, WebMethod};

    use crate::world::{browser, prompt_token, set_cookie};

    let (base, cookie) = enrolled_with_device();
    let query = format!("request={}", prompt_token("req-9", None));
    let r = base.page(
        &browser(WebMethod::Get, "/prompt", &query, b"", ""),
        T0 + 100,
        10,
    );
    let session = format!(
        "{SESSION_COOKIE}={}",
        set_cookie(&r, SESSION_COOKIE).unwrap()
    );
    let step = |w: &World, device: Option<&str>| {
        let cookies = device.map_or_else(
            || session.clone(),
            |d| format!("{session}; {COOKIE_NAME}={d}"),
        );
        w.page(
            &browser(WebMethod::Get, "/prompt/step", "", b"", &cookies),
            T0 + 110,
            3,
        )
    };
    // The valid cookie lets the browser straight back to the IdP.
    let trusted = step(&base.fork(), Some(&cookie));
    assert_eq!(trusted.status, 303);
    // In a header, padding around a value is not part of it, and a value that is itself the
    // `name=value` pair is that pair (both as `begin` reads a context's cookie): so neither the
    // padded nor the doubled cookie is a refusal here.
    let refused = prop_oneof![
        garbage(),
        bad()
            .prop_filter("a refusal in a header too", |b| {
                !matches!(b, Bad::Huge(_) | Bad::Twice(_))
            })
            .prop_filter_map("changed", {
                let cookie = cookie.clone();
                move |b| apply(&cookie, &b)
            }),
    ];
    check(128, refused, |device| {
        let (with, without) = (base.fork(), base.fork());
        let a = step(&with, Some(&device));
        let b = step(&without, None);
        prop_assert_eq!(a.status, 200, "asked for a code");
        prop_assert!(a == b, "another page than without a cookie");
        prop_assert!(
            with.state() == without.state(),
            "{}",
            crate::world::diff(&without.state(), &with.state())
        );
        Ok(())
    });
}
