//! The JSON bodies the REST API (and the WIT) hand to the core, as the core's own types read them
//! (`LoginContext`, `Actor`, `OrgPolicy`, `Branding`, `CredentialChange`), then the checks the
//! admin calls make on what parsed (`OrgPolicy::validate`, `Branding::validate`, the platform's
//! roles), and the admin's signed preview link (`Engine::preview_page`).
//!
//! A body with an unknown field, a field twice, a value of the wrong type or a cut-off end does
//! not parse; what parses and is valid round-trips; a policy, branding or role list the checks
//! refuse is refused naming its field and changes nothing (the admin is authorized, so there is
//! no refusal to record); a preview link that is not this host's, or has expired, shows nothing
//! and changes nothing.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde::Serialize;
use serde::de::DeserializeOwned;

use mfa_step_core::email::branding::Branding;
use mfa_step_core::policy::{Mandate, OrgPolicy};
use mfa_step_core::{Actor, CredentialChange, Error, LoginContext, Settings, Timestamp};

use crate::input::{valid_ctx, valid_id, valid_role};
use crate::world::{ALNUM, ORG, T0, World, check, garbage, of, rng, text, unchanged};

/// Arbitrary bytes, and JSON-ish text, never panic any body's parser.
#[test]
fn arbitrary_bodies_never_panic() {
    let bytes = prop_oneof![
        any::<Vec<u8>>(),
        of("{}[]\":,0123456789.eE+-truefalsnul abcxyz\\", 0..80).prop_map(String::into_bytes),
        garbage().prop_map(String::into_bytes),
    ];
    check(1024, bytes, |b| {
        let _ = serde_json::from_slice::<LoginContext>(&b);
        let _ = serde_json::from_slice::<Actor>(&b);
        let _ = serde_json::from_slice::<OrgPolicy>(&b);
        let _ = serde_json::from_slice::<Branding>(&b);
        let _ = serde_json::from_slice::<CredentialChange>(&b);
        Ok(())
    });
}

fn valid_actor() -> impl Strategy<Value = Actor> {
    (
        valid_id(),
        valid_id(),
        prop::collection::vec(valid_role(), 0..4),
        prop::option::of(any::<std::net::IpAddr>()),
        of(ALNUM, 0..40),
    )
        .prop_map(|(user_id, org_id, roles, ip, user_agent)| Actor {
            user_id,
            org_id,
            roles,
            ip: ip.map(|i| i.to_string()).unwrap_or_default(),
            user_agent,
        })
}

/// A policy that only tightens the default platform settings.
fn valid_policy() -> impl Strategy<Value = OrgPolicy> {
    let d = Settings::default();
    (
        prop::sample::select(vec![Mandate::Inherit, Mandate::Everyone, Mandate::ByRole]),
        prop::collection::vec(valid_role(), 0..4),
        0..=d.trust_days,
        any::<bool>(),
        d.ipv4_change_prefix..=32,
        d.ipv6_change_prefix..=128,
        0u32..=mfa_step_core::policy::MAX_GRACE_DAYS,
        0u32..=mfa_step_core::policy::MAX_GRACE_LOGINS,
    )
        .prop_map(
            |(mandate, roles, trust_days, remember, v4, v6, days, logins)| OrgPolicy {
                mandate,
                required_roles: if mandate == Mandate::ByRole {
                    roles
                } else {
                    Vec::new()
                },
                trust_days,
                allow_remember_device: remember,
                ipv4_change_prefix: v4,
                ipv6_change_prefix: v6,
                enrollment_grace_days: days,
                enrollment_grace_logins: logins,
            },
        )
}

fn color() -> impl Strategy<Value = String> {
    of("0123456789abcdefABCDEF", 6).prop_map(|h| format!("#{h}"))
}

/// One line of `n` characters, none a control character.
fn line(n: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = String> {
    text(n).prop_map(|s| {
        s.chars()
            .map(|c| if c.is_control() { 'x' } else { c })
            .collect()
    })
}

fn valid_branding() -> impl Strategy<Value = Branding> {
    (
        (line(1..=80), line(1..=80), line(0..=120), line(0..=300)),
        (color(), color()),
        prop::option::of(
            of("abcdefghijklmnopqrstuvwxyz0123456789-./_?=&%~", 1..100)
                .prop_map(|p| format!("https://{p}")),
        ),
        prop::sample::select(mfa_step_core::email::i18n::supported()),
    )
        .prop_filter("a host", |(_, _, logo, _)| {
            logo.as_ref()
                .is_none_or(|u| !u["https://".len()..].starts_with('/'))
        })
        .prop_map(
            |(
                (display_name, sender_name, support_contact, footer_text),
                (primary_color, accent_color),
                logo_url,
                lang,
            )| Branding {
                display_name,
                logo_url,
                primary_color,
                accent_color,
                sender_name,
                support_contact,
                footer_text,
                default_language: lang.to_owned(),
            },
        )
}

/// `value` round-trips through JSON; with an unknown field, a field twice, a wrong type or a
/// cut-off end it does not parse.
fn json_contract<T>(
    value: &T,
    (extra, cut, which): (String, usize, usize),
) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let text = serde_json::to_string(value).unwrap();
    prop_assert_eq!(&serde_json::from_str::<T>(&text).unwrap(), value);
    let object = serde_json::to_value(value).unwrap();
    let map = object.as_object().unwrap();
    let fields: Vec<&String> = map.keys().collect();
    let field = fields[which % fields.len()];
    // An unknown field.
    if !map.contains_key(&extra) {
        let mut v = object.clone();
        v[&extra] = true.into();
        prop_assert!(
            serde_json::from_value::<T>(v).is_err(),
            "unknown field {extra:?} accepted"
        );
    }
    // A field twice, with its own value.
    let twice = format!(
        "{},\"{field}\":{}}}",
        &text[..text.len() - 1],
        serde_json::to_string(&map[field]).unwrap()
    );
    prop_assert!(
        serde_json::from_str::<T>(&twice).is_err(),
        "duplicate {field} accepted"
    );
    // The wrong type: every field is a string, a number, a bool, an object or an array; swapping
    // between an array and an object, or a string and a number, is never right.
    let mut v = object.clone();
    v[field.as_str()] = match &map[field] {
        serde_json::Value::String(_) => serde_json::json!(7),
        serde_json::Value::Null => serde_json::json!([1]),
        _ => serde_json::json!({"x": 1}),
    };
    prop_assert!(
        serde_json::from_value::<T>(v).is_err(),
        "wrong type for {field} accepted"
    );
    // Cut off.
    let mut at = cut % text.len();
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    prop_assert!(
        serde_json::from_str::<T>(&text[..at]).is_err(),
        "cut at {at} accepted"
    );
    Ok(())
}

fn mutation() -> impl Strategy<Value = (String, usize, usize)> {
    (
        of("abcdefghijklmnopqrstuvwxyz_", 1..12),
        any::<usize>(),
        any::<usize>(),
    )
}

#[test]
fn valid_bodies_round_trip_and_near_valid_ones_do_not_parse() {
    check(256, (valid_ctx(), mutation()), |(c, m)| {
        mfa_step_core::kernel::input::login_context(&c)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        json_contract(&c, m.clone())?;
        json_contract(&c.device, m.clone())?;
        json_contract(&c.device.traits, m)
    });
    check(256, (valid_actor(), mutation()), |(a, m)| {
        prop_assert!(mfa_step_core::kernel::input::actor(&a).is_ok());
        json_contract(&a, m)
    });
    check(256, (valid_policy(), mutation()), |(p, m)| {
        prop_assert_eq!(p.validate(&Settings::default()), Ok(()));
        json_contract(&p, m)
    });
    check(256, (valid_branding(), mutation()), |(b, m)| {
        prop_assert_eq!(b.validate(), Ok(()), "{:?}", b);
        json_contract(&b, m)
    });
    check(64, any::<u8>(), |n| {
        let name = [
            "password-changed",
            "mfa-reset",
            "password_changed",
            "PasswordChanged",
            "",
        ][usize::from(n) % 5];
        let parsed = serde_json::from_str::<CredentialChange>(&format!("\"{name}\""));
        prop_assert_eq!(parsed.is_ok(), n % 5 < 2);
        Ok(())
    });
}

fn admin() -> Actor {
    Actor {
        user_id: "admin-1".to_owned(),
        org_id: ORG.to_owned(),
        roles: vec!["org-admin".to_owned(), "platform-admin".to_owned()],
        ..Actor::default()
    }
}

/// A valid policy with one thing loosened or malformed, and the field its refusal names.
fn bad_policy() -> impl Strategy<Value = (OrgPolicy, &'static str)> {
    let d = Settings::default();
    (valid_policy(), 0u8..8, any::<u32>(), text(0..6)).prop_map(move |(mut p, which, n, junk)| {
        let field = match which {
            0 => {
                p.mandate = Mandate::ByRole;
                p.required_roles.push(format!("{junk} !"));
                "policy.required_roles"
            }
            1 => {
                p.mandate = Mandate::Everyone;
                p.required_roles = vec!["provider".to_owned()];
                "policy.required_roles"
            }
            2 => {
                p.trust_days = d
                    .trust_days
                    .saturating_add(1)
                    .max((n % 256) as u8)
                    .max(d.trust_days + 1);
                "policy.trust_days"
            }
            3 => {
                p.ipv4_change_prefix = if n % 2 == 0 {
                    (n % u32::from(d.ipv4_change_prefix)) as u8
                } else {
                    33u8.saturating_add((n % 200) as u8)
                };
                "policy.ipv4_change_prefix"
            }
            4 => {
                p.ipv6_change_prefix = if n % 2 == 0 {
                    (n % u32::from(d.ipv6_change_prefix)) as u8
                } else {
                    129u8.saturating_add((n % 100) as u8)
                };
                "policy.ipv6_change_prefix"
            }
            5 => {
                p.enrollment_grace_days = mfa_step_core::policy::MAX_GRACE_DAYS + 1 + n % 1000;
                "policy.enrollment_grace_days"
            }
            6 => {
                p.enrollment_grace_logins = mfa_step_core::policy::MAX_GRACE_LOGINS + 1 + n % 1000;
                "policy.enrollment_grace_logins"
            }
            _ => {
                p.mandate = Mandate::ByRole;
                p.required_roles = vec!["r".to_owned(); 33];
                "policy.required_roles"
            }
        };
        (p, field)
    })
}

/// A valid branding with one field malformed (header injection, a script URL, an odd color, an
/// unsupported language, an empty or huge name), and the field its refusal names.
fn bad_branding() -> impl Strategy<Value = (Branding, &'static str)> {
    let ctl = prop::sample::select(vec!['\r', '\n', '\0', '\u{7f}', '\u{85}', '\u{1b}']);
    (valid_branding(), 0u8..9, ctl, text(0..8)).prop_map(|(mut b, which, c, junk)| {
        let field = match which {
            0 => {
                b.display_name = format!(
                    "{}{c}Bcc: x@evil.example",
                    b.display_name.chars().take(40).collect::<String>()
                );
                "branding.display_name"
            }
            1 => {
                b.sender_name = format!("{c}{}", b.sender_name);
                "branding.sender_name"
            }
            2 => {
                b.display_name = "n".repeat(81);
                "branding.display_name"
            }
            3 => {
                b.support_contact = format!("help{c}");
                "branding.support_contact"
            }
            4 => {
                b.footer_text = "f".repeat(301);
                "branding.footer_text"
            }
            5 => {
                b.primary_color = format!("red;{junk}");
                "branding.primary_color"
            }
            6 => {
                b.accent_color = "#12345g".to_owned();
                "branding.accent_color"
            }
            7 => {
                b.logo_url = Some(
                    [
                        "http://a.example/l.png",
                        "javascript:alert(1)",
                        "https://a.example/\"x",
                        "https://a.example/ x",
                        "https:///x",
                        "https://a.example/<",
                    ][junk.len() % 6]
                        .to_owned(),
                );
                "branding.logo_url"
            }
            _ => {
                b.default_language = format!("xx{junk}");
                "branding.default_language"
            }
        };
        (b, field)
    })
}

#[test]
fn refused_policies_brandings_and_role_lists_change_nothing() {
    let (base, _) = crate::world::enrolled_with_device();
    let before = base.state();
    let refused = |r: Result<(), Error>, field: &str| -> Result<(), TestCaseError> {
        match r {
            Err(Error::InvalidInput { field: f, .. }) if f == field => Ok(()),
            other => Err(TestCaseError::fail(format!(
                "expected invalid {field}, got {other:?}"
            ))),
        }
    };
    check(256, bad_policy(), |(p, field)| {
        let w = base.fork();
        refused(
            w.engine()
                .set_policy(&admin(), ORG, &p, Timestamp(T0 + 150), &mut rng(1)),
            field,
        )?;
        unchanged(&before, &w.state())
    });
    check(256, bad_branding(), |(b, field)| {
        let w = base.fork();
        refused(
            w.engine()
                .set_branding(&admin(), ORG, &b, Timestamp(T0 + 150), &mut rng(1)),
            field,
        )?;
        unchanged(&before, &w.state())
    });
    let roles = prop_oneof![
        prop::collection::vec(valid_role(), 0..5).prop_filter("no platform-admin", |r| !r
            .iter()
            .any(|r| r == "platform-admin")),
        prop::collection::vec(valid_role(), 33..40),
        (prop::collection::vec(valid_role(), 0..4), text(0..6)).prop_map(|(mut r, junk)| {
            r.push("platform-admin".to_owned());
            r.push(format!("{junk} "));
            r
        }),
    ];
    check(256, roles, |r| {
        let w = base.fork();
        refused(
            w.engine()
                .set_platform_roles(&admin(), &r, Timestamp(T0 + 150), &mut rng(1)),
            "roles",
        )?;
        unchanged(&before, &w.state())
    });
    // Not vacuous: valid ones are stored.
    let w = base.fork();
    w.engine()
        .set_policy(
            &admin(),
            ORG,
            &OrgPolicy::inherit(&w.settings),
            Timestamp(T0 + 150),
            &mut rng(1),
        )
        .unwrap();
    assert_ne!(w.state(), before);
}

/// A preview link's token for the world's admin, made at `at`.
fn preview_token(w: &World, at: i64) -> String {
    let link = w
        .engine()
        .preview_link(&admin(), ORG, Timestamp(at), &mut rng(1))
        .unwrap();
    link.url.split_once("token=").unwrap().1.to_owned()
}

#[test]
fn preview_links_open_only_as_made_and_refused_ones_change_nothing() {
    let w = World::new();
    let token = preview_token(&w, T0);
    let before = w.state();
    let forbidden = |r: &Result<String, Error>| matches!(r, Err(Error::Forbidden(m)) if m.contains("preview link"));
    // Arbitrary tokens.
    check(
        1024,
        prop_oneof![garbage(), of("0123456789abcdef.", 0..200)],
        |t| {
            let r = w
                .engine()
                .preview_page(&t, None, None, Timestamp(T0), &mut rng(2));
            prop_assert!(forbidden(&r), "{r:?}");
            unchanged(&before, &w.state())
        },
    );
    // The valid token with one thing wrong: a hex digit changed, cut, a character inserted, the
    // halves swapped, another key's MAC, or opened after it expired.
    let (payload, mac) = token.split_once('.').unwrap();
    let other = {
        let o = World {
            key: mfa_step_core::HmacKey::from_bytes(&[8; 32]).unwrap(),
            ..World::new()
        };
        preview_token(&o, T0)
    };
    let bad = prop_oneof![
        (
            any::<prop::sample::Index>(),
            prop::sample::select(b"0123456789abcdef".to_vec())
        )
            .prop_map({
                let t = token.clone();
                move |(i, c)| {
                    let mut b = t.clone().into_bytes();
                    let i = i.index(b.len());
                    if b[i] != b'.' {
                        b[i] = c;
                    }
                    String::from_utf8(b).unwrap()
                }
            }),
        any::<prop::sample::Index>().prop_map({
            let t = token.clone();
            move |i| t[..i.index(t.len())].to_owned()
        }),
        (any::<prop::sample::Index>(), any::<char>()).prop_map({
            let t = token.clone();
            move |(i, c)| {
                let mut chars: Vec<char> = t.chars().collect();
                chars.insert(i.index(chars.len() + 1), c);
                chars.into_iter().collect()
            }
        }),
        Just(format!("{mac}.{payload}")),
        Just(other),
        Just(format!("{payload}.{mac}.{mac}")),
    ];
    check(512, (bad, any::<bool>()), |(t, late)| {
        prop_assume!(t != token);
        let at = if late { T0 + 301 } else { T0 };
        let r = w
            .engine()
            .preview_page(&t, None, None, Timestamp(at), &mut rng(2));
        prop_assert!(forbidden(&r), "{r:?}");
        unchanged(&before, &w.state())
    });
    // Expired as made.
    let r = w
        .engine()
        .preview_page(&token, None, None, Timestamp(T0 + 301), &mut rng(2));
    assert!(forbidden(&r), "{r:?}");
    // Valid: as made (in any hex case), in any language and any text time zone; a language or zone
    // with a control character is refused naming it, and nothing changes either way.
    let spelled = (
        any::<bool>(),
        prop::option::of(garbage()),
        prop::option::of(garbage()),
    );
    check(128, spelled, |(upper, lang, zone)| {
        let t = if upper {
            token.to_ascii_uppercase()
        } else {
            token.clone()
        };
        let r = w.engine().preview_page(
            &t,
            lang.as_deref(),
            zone.as_deref(),
            Timestamp(T0 + 10),
            &mut rng(2),
        );
        let bad = |v: &Option<String>| {
            v.as_ref()
                .is_some_and(|v| v.len() > 512 || v.chars().any(char::is_control))
        };
        match (bad(&lang), bad(&zone)) {
            (true, _) => prop_assert!(
                matches!(r, Err(Error::InvalidInput { field: "lang", .. })),
                "{r:?}"
            ),
            (false, true) => prop_assert!(
                matches!(
                    r,
                    Err(Error::InvalidInput {
                        field: "time_zone",
                        ..
                    })
                ),
                "{r:?}"
            ),
            (false, false) => {
                prop_assert!(r.as_ref().is_ok_and(|html| html.contains("<html")), "{r:?}")
            }
        }
        unchanged(&before, &w.state())
    });
}
