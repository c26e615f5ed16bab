//! What the core reads back rather than receives: stored values (a mis-wired host, a version skew
//! or a hand-edited store can hold anything), the audit log (`audit::chain::Record::parse` and
//! `audit::verify::Verifier::check`, which `audit verify` runs over a log on disk), and the host's
//! configuration (`Settings::from_lookup`, `HmacKey::from_hex`, `PromptConfig::from_lookup`).
//!
//! A stored value that does not parse never reads as absent where absent would be the permissive
//! answer: the call answers `unavailable` ([`Error::Store`]) and records which kind of value was
//! unreadable, and nothing else changes; an unreadable trusted device is no device (a code is
//! asked). A log line that is not the record it claims to be is refused, and the verifier's state
//! is as it was. A configuration value out of bounds is refused naming it, never clamped.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use mfa_step_core::audit::chain::{Problem, Record, SealKey};
use mfa_step_core::audit::verify::Verifier;
use mfa_step_core::kernel::keys;
use mfa_step_core::kernel::ports::Store as _;
use mfa_step_core::web::hosted::WebMethod;
use mfa_step_core::web::prompt::PromptConfig;
use mfa_step_core::{Decision, Error, HmacKey, Settings, Timestamp};

use crate::world::{
    ALNUM, ORG, T0, USER, World, browser, check, ctx_with_cookie, enrolled_with_device, garbage,
    hosted_at_code_page, of, only_recorded, rng, unchanged, with_code_sent,
};

/// Bytes that are no value of any stored type: not JSON at all, or JSON of a shape no stored
/// value has.
fn unreadable() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        any::<Vec<u8>>().prop_filter("not JSON", |b| serde_json::from_slice::<serde_json::Value>(
            b
        )
        .is_err()),
        garbage()
            .prop_map(String::into_bytes)
            .prop_filter("not JSON", |b| serde_json::from_slice::<serde_json::Value>(
                b
            )
            .is_err()),
        prop::sample::select(vec![
            "null",
            "1",
            "-1",
            "\"x\"",
            "true",
            "{}",
            "[1]",
            "[{}]",
            "{\"v\":1}",
            "[null]",
            "{\"v\":99,\"x\":[]}",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
    ]
}

#[test]
fn an_unreadable_stored_value_is_unavailable_recorded_and_changes_nothing_else() {
    let (base, cookie) = enrolled_with_device();
    let kinds = prop::sample::select(vec![
        (keys::policy(ORG), "policy"),
        (keys::branding(ORG), "branding"),
        (keys::enrollment(ORG, USER), "enrollment"),
        (keys::platform_roles(), "platform-roles"),
    ]);
    check(
        256,
        (kinds, unreadable(), any::<bool>()),
        |((key, kind), bytes, with_cookie)| {
            let w = base.fork();
            w.store.set(&key, &bytes, None).unwrap();
            let before = w.state();
            let c = ctx_with_cookie(with_cookie.then_some(cookie.as_str()));
            let r = w.engine().begin(&c, Timestamp(T0 + 500), &mut rng(1));
            prop_assert!(
                matches!(&r, Err(Error::Store(m)) if m.contains("does not parse")),
                "{kind}: {r:?}"
            );
            let reason = format!("store:unreadable:{kind}");
            only_recorded(&before, &w.state(), ORG, &[reason.as_str()], false)
        },
    );
}

#[test]
fn an_unreadable_trusted_device_is_no_device() {
    let (base, cookie) = enrolled_with_device();
    let id = cookie.split_once('.').unwrap().0.to_owned();
    let key = keys::device(ORG, USER, &id);
    check(256, unreadable(), |bytes| {
        let w = base.fork();
        w.store.set(&key, &bytes, w.store.expiry(&key)).unwrap();
        let r = w.engine().begin(
            &ctx_with_cookie(Some(&cookie)),
            Timestamp(T0 + 500),
            &mut rng(1),
        );
        prop_assert!(matches!(r, Ok(Decision::Challenge(_))), "{r:?}");
        // Recorded as such, and the record left as it was (no device was made of it).
        let after = w.state();
        let noted = after.audit.iter().any(|e| {
            e.action == "device_challenged"
                && crate::world::reason_of(e).as_deref() == Some("store:unreadable:device")
        });
        prop_assert!(noted, "no device_challenged record");
        prop_assert_eq!(w.store.get(&key).unwrap(), Some(bytes));
        Ok(())
    });
}

#[test]
fn an_unreadable_challenge_is_unavailable_and_changes_nothing() {
    let (base, _, id, code) = with_code_sent();
    let key = keys::challenge(ORG, USER);
    check(256, (unreadable(), 0u8..3), |(bytes, call)| {
        let w = base.fork();
        w.store.set(&key, &bytes, w.store.expiry(&key)).unwrap();
        let before = w.state();
        let e = w.engine();
        let c = ctx_with_cookie(None);
        let at = Timestamp(T0 + 150);
        let r = match call {
            0 => e.verify(&c, &id, &code, false, at, &mut rng(1)).map(drop),
            1 => e.send_code(&c, &id, at, &mut rng(1)).map(drop),
            _ => e.status(&c, at).map(drop),
        };
        prop_assert!(
            matches!(&r, Err(Error::Store(m)) if m.contains("does not parse")),
            "{r:?}"
        );
        unchanged(&before, &w.state())
    });
}

#[test]
fn an_unreadable_session_is_the_try_again_page_and_changes_nothing() {
    let h = hosted_at_code_page(None);
    let session = h
        .world
        .store
        .snapshot()
        .0
        .into_iter()
        .map(|(k, _)| k)
        .find(|k| k.starts_with("v1:prompt-session:"))
        .unwrap();
    let paths = prop::sample::select(vec![
        (WebMethod::Get, "/prompt/step"),
        (WebMethod::Post, "/prompt/verify"),
        (WebMethod::Post, "/prompt/cancel"),
        (WebMethod::Get, "/prompt/devices"),
    ]);
    check(256, (unreadable(), paths), |(bytes, (method, path))| {
        let w = h.world.fork();
        w.store
            .set(&session, &bytes, w.store.expiry(&session))
            .unwrap();
        let before = w.state();
        let form = format!("csrf={}&code={}", h.csrf, h.code);
        let r = w.page(
            &browser(method, path, "", form.as_bytes(), &h.cookies),
            T0 + 210,
            1,
        );
        prop_assert_eq!(r.status, 503);
        unchanged(&before, &w.state())
    });
}

/// A log the engine wrote: logins, codes, a trusted device, hosted-prompt refusals, admin calls.
fn a_real_log() -> (World, Vec<String>) {
    let h = hosted_at_code_page(None);
    let w = h.world;
    // A few more records of other kinds, in another organization too.
    let mut other = ctx_with_cookie(None);
    other.org_id = "globex".to_owned();
    other.device.traits.user_agent = "ü\u{2028}\"\\".repeat(80);
    let _ = w.engine().begin(&other, Timestamp(T0 + 300), &mut rng(77));
    let lines = w
        .audit
        .entries
        .borrow()
        .iter()
        .map(|e| e.line.clone())
        .collect();
    (w, lines)
}

#[test]
fn audit_lines_that_are_not_their_record_are_refused_and_the_verifier_is_unmoved() {
    let (w, lines) = a_real_log();
    let seal = SealKey::derive(&w.key);
    // The log as written checks, with its seals, against the store's counts.
    let mut verifier = Verifier::new(Some(seal.clone()));
    for line in &lines {
        verifier.check(line).unwrap();
    }
    let counted = w
        .store
        .snapshot()
        .1
        .into_iter()
        .filter_map(|(k, n)| {
            Some((
                k.strip_prefix("v1:audit-count:")?.to_owned(),
                u64::try_from(n).ok()?,
            ))
        })
        .collect();
    verifier.finish(&counted).unwrap();

    // Arbitrary lines.
    check(
        1024,
        prop_oneof![garbage(), of("{}[]\":,0123456789abcdefnulltrue", 0..200)],
        |line| {
            let mut v = Verifier::new(Some(seal.clone()));
            prop_assert!(matches!(Record::parse(&line), Err(Problem::Unreadable(_))));
            prop_assert!(v.check(&line).is_err());
            prop_assert_eq!(v.records(), 0);
            prop_assert!(v.heads().is_empty());
            Ok(())
        },
    );

    // Any line of the real log with one character replaced, inserted or removed is refused at
    // that line, and the verifier is where it was after the line before.
    let edit = (
        any::<prop::sample::Index>(),
        any::<prop::sample::Index>(),
        0u8..3,
        any::<char>(),
    );
    check(512, edit, |(which, at, how, c)| {
        let n = which.index(lines.len());
        let line = &lines[n];
        let mut chars: Vec<char> = line.chars().collect();
        let i = at.index(chars.len());
        match how {
            0 => chars[i] = c,
            1 => chars.insert(i, c),
            _ => {
                chars.remove(i);
            }
        }
        let edited: String = chars.into_iter().collect();
        prop_assume!(edited != *line);
        let mut v = Verifier::new(Some(seal.clone()));
        for earlier in &lines[..n] {
            v.check(earlier).unwrap();
        }
        let (heads, records) = (v.heads().clone(), v.records());
        prop_assert!(
            v.check(&edited).is_err(),
            "accepted an edited line: {edited}"
        );
        prop_assert_eq!(v.heads(), &heads);
        prop_assert_eq!(v.records(), records);
        Ok(())
    });

    // Two lines swapped: the log still checks exactly when every organization's own stream is
    // unchanged (streams interleave freely), and a refused line leaves the verifier unmoved.
    let org_of = |l: &str| Record::parse(l).unwrap().org;
    check(
        256,
        (any::<prop::sample::Index>(), any::<prop::sample::Index>()),
        |(a, b)| {
            let mut log = lines.clone();
            log.swap(a.index(lines.len()), b.index(lines.len()));
            let streams = |log: &[String]| {
                let mut by_org = std::collections::BTreeMap::<String, Vec<String>>::new();
                for l in log {
                    by_org.entry(org_of(l)).or_default().push(l.clone());
                }
                by_org
            };
            let same_streams = streams(&log) == streams(&lines);
            let mut v = Verifier::new(Some(seal.clone()));
            let mut all_ok = true;
            for l in &log {
                let before = (v.heads().clone(), v.records());
                if v.check(l).is_err() {
                    prop_assert_eq!((v.heads().clone(), v.records()), before);
                    all_ok = false;
                    break;
                }
            }
            prop_assert_eq!(all_ok, same_streams);
            Ok(())
        },
    );
}

#[test]
fn settings_are_refused_out_of_bounds_never_clamped() {
    // (name, min, max)
    let bounded = [
        ("code_ttl_seconds", 60i64, 600i64),
        ("code_digits", 6, 9),
        ("sends_per_window", 1, 3),
        ("send_window_seconds", 300, 3600),
        ("challenge_ttl_seconds", 300, 3600),
        ("trust_days", 0, 30),
        ("ipv4_change_prefix", 8, 32),
        ("ipv6_change_prefix", 16, 128),
    ];
    let value = prop_oneof![
        garbage(),
        any::<i64>().prop_map(|n| n.to_string()),
        (-10i64..5000, "[ \t]{0,2}").prop_map(|(n, pad)| format!("{pad}{n}{pad}")),
        Just("1e2".to_owned()),
        Just("+7".to_owned()),
        Just("0x10".to_owned()),
        Just("９".to_owned()),
    ];
    check(
        1024,
        (prop::sample::select(bounded.to_vec()), value),
        |((name, min, max), raw)| {
            let r = Settings::from_lookup(|k| (k == name).then(|| raw.clone()));
            match raw.trim().parse::<i64>() {
                Ok(n) if (min..=max).contains(&n) => {
                    let s = r.map_err(|e| TestCaseError::fail(e.to_string()))?;
                    let got = match name {
                        "code_ttl_seconds" => s.code_ttl_seconds,
                        "code_digits" => i64::from(s.code_digits),
                        "sends_per_window" => i64::from(s.sends_per_window),
                        "send_window_seconds" => s.send_window_seconds,
                        "challenge_ttl_seconds" => s.challenge_ttl_seconds,
                        "trust_days" => i64::from(s.trust_days),
                        "ipv4_change_prefix" => i64::from(s.ipv4_change_prefix),
                        _ => i64::from(s.ipv6_change_prefix),
                    };
                    prop_assert_eq!(got, n);
                }
                _ => prop_assert!(
                    matches!(&r, Err(Error::Misconfigured(m)) if m.contains(name)),
                    "{r:?}"
                ),
            }
            Ok(())
        },
    );
    check(1024, garbage(), |raw| {
        let r = Settings::from_lookup(|k| (k == "allow_remember_device").then(|| raw.clone()));
        match raw.trim() {
            "true" | "false" => {
                prop_assert_eq!(r.map(|s| s.allow_remember_device), Ok(raw.trim() == "true"))
            }
            _ => prop_assert!(matches!(r, Err(Error::Misconfigured(_)))),
        }
        let r = Settings::from_lookup(|k| (k == "required_roles").then(|| raw.clone()));
        let roles: Vec<String> = raw
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .collect();
        match mfa_step_core::kernel::input::roles(&roles) {
            Ok(()) => prop_assert_eq!(r.map(|s| s.required_roles), Ok(roles)),
            Err(_) => prop_assert!(matches!(r, Err(Error::Misconfigured(_)))),
        }
        Ok(())
    });
}

#[test]
fn keys_are_hex_of_32_bytes_or_more_and_never_echoed() {
    let hexes = prop_oneof![
        garbage(),
        of("0123456789abcdefABCDEF", 0..130),
        (of("0123456789abcdef", 64..100), "[ \t\n]{0,2}")
            .prop_map(|(h, pad)| format!("{pad}{h}{pad}")),
    ];
    check(1024, hexes, |raw| {
        let r = HmacKey::from_hex(&raw);
        let bytes = hex::decode(raw.trim()).ok();
        prop_assert_eq!(
            r.is_ok(),
            bytes.is_some_and(|b| b.len() >= HmacKey::MIN_LEN)
        );
        if let Err(e) = &r {
            prop_assert!(matches!(e, Error::Misconfigured(_)));
            // The message never repeats the key (nor any long piece of it).
            let message = e.to_string();
            prop_assert!(
                raw.trim().len() < 12 || !message.contains(raw.trim()),
                "{message}"
            );
            let r = PromptConfig::from_lookup(|k| match k {
                "prompt_key" => Some(raw.clone()),
                "prompt_client_id" => Some("idp-1".to_owned()),
                _ => Some("https://idp.example/".to_owned()),
            });
            let message = r.err().map(|e| e.to_string()).unwrap_or_default();
            prop_assert!(
                raw.trim().len() < 12 || !message.contains(raw.trim()),
                "{message}"
            );
        }
        Ok(())
    });
}

/// The documented rule for an allowed return URL.
fn allowed_return(url: &str) -> bool {
    let printable = url.bytes().all(|b| b.is_ascii_graphic())
        && !url.contains([';', ',', '"', '\'', '\\', '#', '@']);
    let Some((scheme, rest)) = url.split_once("://") else {
        return false;
    };
    let Some((authority, _)) = rest.split_once('/') else {
        return false;
    };
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
        Some(_) => return false,
        None => authority,
    };
    printable
        && match scheme {
            "https" => !host.is_empty(),
            "http" => host == "localhost" || host == "127.0.0.1",
            _ => false,
        }
}

#[test]
fn prompt_settings_are_refused_unless_safe() {
    let url = prop_oneof![
        garbage(),
        (
            prop::sample::select(vec![
                "https://",
                "http://",
                "HTTPS://",
                "ftp://",
                "https:/",
                "javascript:",
                ""
            ]),
            prop::sample::select(vec![
                "idp.example",
                "localhost",
                "127.0.0.1",
                "",
                "a@b",
                "idp.example:443",
                "idp.example:",
                "idp.example:x"
            ]),
            prop::sample::select(vec![
                "/",
                "/mfa/return",
                "",
                "/a b",
                "/#x",
                "/a;b",
                "/é",
                "/ok?x=1"
            ]),
        )
            .prop_map(|(s, h, p)| format!("{s}{h}{p}")),
    ];
    let client = prop_oneof![
        Just("idp-1".to_owned()),
        Just("mfa-step".to_owned()),
        garbage(),
        of(ALNUM, 1..10)
    ];
    let list = prop::collection::vec(url, 0..4).prop_map(|u| u.join(","));
    check(1024, (client, list), |(client, urls)| {
        let r = PromptConfig::from_lookup(|k| match k {
            "prompt_key" => Some("ab".repeat(32)),
            "prompt_client_id" => Some(client.clone()),
            "prompt_return_urls" => Some(urls.clone()),
            _ => None,
        });
        let listed: Vec<&str> = urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect();
        let valid = mfa_step_core::kernel::input::id("x", &client).is_ok()
            && client != "mfa-step"
            && !listed.is_empty()
            && listed.iter().all(|u| allowed_return(u));
        match r {
            Ok(Some(c)) => {
                prop_assert!(valid, "accepted {client:?} {urls:?}");
                prop_assert_eq!(c.client_id, client);
                prop_assert_eq!(c.return_urls, listed);
            }
            Ok(None) => prop_assert!(false, "a key was given"),
            Err(e) => {
                prop_assert!(!valid, "refused {client:?} {urls:?}: {e}");
                prop_assert!(matches!(e, Error::Misconfigured(_)));
            }
        }
        Ok(())
    });
}
