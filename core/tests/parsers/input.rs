//! The pure parsers at the edge (`kernel::input`): identifiers, addresses, free text, IP addresses,
//! roles, typed codes, whole login contexts and actors; and the small readers beside them (a
//! masked address, a language tag, a time zone name, an instant, an API key). Each is checked
//! against its documented contract on arbitrary input, on valid input from a strategy, and on
//! valid input with one thing wrong. They are cheap, so they run many cases.

use std::net::IpAddr;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use mfa_step_core::email::i18n;
use mfa_step_core::kernel::input::{
    self, MAX_CODE_INPUT, MAX_EMAIL, MAX_ID, MAX_ROLE, MAX_ROLES, MAX_TEXT,
};
use mfa_step_core::kernel::secret::api_key_matches;
use mfa_step_core::{Actor, BrowserTraits, DevicePresentation, Error, LoginContext, Timestamp};

use crate::world::{ALNUM, ID_CHARS, check, garbage, of, text};

/// The field an [`Error::InvalidInput`] names.
fn field<T>(r: &Result<T, Error>) -> Option<&'static str> {
    match r {
        Err(Error::InvalidInput { field, .. }) => Some(field),
        _ => None,
    }
}

/// Refused with [`Error::InvalidInput`] naming `expected`.
fn refused<T: std::fmt::Debug>(r: &Result<T, Error>, expected: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(field(r), Some(expected), "{:?}", r);
    Ok(())
}

fn id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._@+|-".contains(&b)
}

pub fn valid_id() -> impl Strategy<Value = String> + Clone {
    of(ID_CHARS, 1..=MAX_ID)
}

/// A valid identifier with one thing wrong: empty, too long, or a character outside the set.
pub fn bad_id() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        Just(String::new()),
        of(ALNUM, MAX_ID + 1..300),
        (of(ID_CHARS, 0..60), any::<char>(), of(ID_CHARS, 0..60))
            .prop_filter("outside the set", |(_, c, _)| !c.is_ascii()
                || !id_byte(*c as u8))
            .prop_map(|(a, c, b)| format!("{a}{c}{b}")),
    ]
}

#[test]
fn ids_accept_exactly_their_alphabet() {
    check(1024, prop_oneof![garbage(), valid_id(), bad_id()], |s| {
        let r = input::id("user_id", &s);
        let valid = (1..=MAX_ID).contains(&s.len()) && s.bytes().all(id_byte);
        prop_assert_eq!(r.is_ok(), valid, "{:?}", s);
        if !valid {
            refused(&r, "user_id")?;
        }
        Ok(())
    });
}

pub fn valid_email() -> impl Strategy<Value = String> + Clone {
    const ATOM: &str = "abcdefghijklmnopqrstuvwxyz0123456789_+-";
    const LOWER: &str = "abcdefghijklmnopqrstuvwxyz0123456789";
    // Labels that neither start nor end with a dash.
    let label = (of(LOWER, 1..10), prop::option::of(of(LOWER, 1..10)))
        .prop_map(|(a, b)| b.map_or_else(|| a.clone(), |b| format!("{a}-{b}")));
    // A dot-atom local part: atoms joined by single dots, at most 64 bytes.
    let local = prop::collection::vec(of(ATOM, 1..16), 1..5).prop_map(|atoms| {
        let mut local = atoms.join(".");
        local.truncate(64);
        local.trim_end_matches('.').to_owned()
    });
    (local, prop::collection::vec(label, 2..4))
        .prop_map(|(local, labels)| format!("{local}@{}", labels.join(".")))
}

/// A valid address with one thing wrong.
fn bad_email() -> impl Strategy<Value = String> {
    let forbidden = prop_oneof![
        prop::sample::select(vec![
            ' ', '\t', '\r', '\n', '\0', '<', '>', '(', ')', '[', ']', ',', ';', ':', '\\', '"',
            '\u{85}', '\u{a0}', '\u{2028}'
        ]),
        any::<char>().prop_filter("control or space", |c| c.is_control() || c.is_whitespace()),
    ];
    (valid_email(), 0usize..300, forbidden, 0u8..8).prop_map(|(e, at, c, how)| {
        let (local, domain) = e.split_once('@').unwrap();
        match how {
            0 => {
                let mut chars: Vec<char> = e.chars().collect();
                let i = at % (chars.len() + 1);
                chars.insert(i, c);
                chars.into_iter().collect()
            }
            1 => format!("{local}@@{domain}"),
            2 => format!("{local}@{domain}@{domain}"),
            3 => format!("{local}@{}", domain.split('.').next().unwrap()),
            4 => format!("{local}@.{domain}"),
            5 => format!("{local}@{domain}."),
            6 => format!("{}@{domain}", "a".repeat(65)),
            _ => format!("{local}@{}", domain.replacen('.', "..", 1)),
        }
    })
}

#[test]
fn emails_follow_their_contract() {
    check(
        1024,
        prop_oneof![garbage(), valid_email(), bad_email()],
        |s| {
            let r = input::email(&s);
            let contract = || {
                let (local, domain) = s.split_once('@')?;
                let ok = !s.is_empty()
                    && s.len() <= MAX_EMAIL
                    && !s.chars().any(|c| {
                        c.is_control() || c.is_whitespace() || "<>()[],;:\\\"".contains(c)
                    })
                    && !domain.contains('@')
                    && (1..=64).contains(&local.len())
                    && domain.contains('.')
                    && !domain.starts_with(['.', '-'])
                    && !domain.ends_with(['.', '-'])
                    && !domain.contains("..");
                ok.then_some(())
            };
            prop_assert_eq!(r.is_ok(), contract().is_some(), "{:?}", s);
            if r.is_err() {
                refused(&r, "email")?;
            }
            Ok(())
        },
    );
    check(512, (valid_email(), bad_email()), |(good, bad)| {
        prop_assert!(input::email(&good).is_ok(), "{good:?}");
        refused(&input::email(&bad), "email")
    });
}

#[test]
fn text_is_bounded_and_has_no_control_characters() {
    let strings = prop_oneof![garbage(), of(ALNUM, 500..530), text(500..530), text(0..20)];
    check(512, strings, |s| {
        let r = input::text("device.traits.user_agent", &s);
        let valid = s.len() <= MAX_TEXT && !s.chars().any(char::is_control);
        prop_assert_eq!(r.is_ok(), valid);
        if !valid {
            refused(&r, "device.traits.user_agent")?;
        }
        Ok(())
    });
}

fn normalized(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

#[test]
fn ip_addresses_round_trip_and_junk_is_refused() {
    let spelled = prop_oneof![
        garbage(),
        of("0123456789abcdefABCDEF.:% \t[]/", 0..45),
        any::<IpAddr>().prop_map(|ip| ip.to_string()),
    ];
    check(1024, spelled, |s| {
        let r = input::ip("device.ip", &s);
        prop_assert_eq!(
            r.as_ref().ok().copied(),
            s.trim().parse::<IpAddr>().ok().map(normalized)
        );
        if r.is_err() {
            refused(&r, "device.ip")?;
        }
        Ok(())
    });
    // Valid addresses in any of their spellings (IPv4-mapped IPv6 becomes IPv4; whitespace around
    // is trimmed).
    check(
        1024,
        (any::<IpAddr>(), any::<bool>(), "[ \t]{0,2}"),
        |(ip, mapped, pad)| {
            let text = match (ip, mapped) {
                (IpAddr::V4(v4), true) => v4.to_ipv6_mapped().to_string(),
                _ => ip.to_string(),
            };
            prop_assert_eq!(
                input::ip("ip", &format!("{pad}{text}{pad}")).ok(),
                Some(normalized(ip))
            );
            Ok(())
        },
    );
    // One thing wrong: a character no address has inside, a zone, a fifth octet, an octet past 255,
    // a port.
    let junk = prop_oneof![
        "[g-zG-Z/%#@,;_ \\x00\\n]".prop_map(|s| s.chars().next().unwrap()),
        Just('é'),
        Just('０'),
    ];
    check(
        1024,
        (any::<IpAddr>(), 0usize..50, junk, 0u8..5, 256u32..100_000),
        |(ip, at, c, how, big)| {
            let text = ip.to_string();
            let bad = match (how, ip) {
                (0, _) => {
                    // Strictly inside, where trimming does not reach.
                    let mut chars: Vec<char> = text.chars().collect();
                    chars.insert(1 + at % (chars.len() - 1), c);
                    chars.into_iter().collect()
                }
                (1, _) => format!("{text}%eth0"),
                (2, IpAddr::V4(_)) => format!("{text}.1"),
                (3, IpAddr::V4(v4)) => {
                    let o = v4.octets();
                    format!("{}.{}.{}.{big}", o[0], o[1], o[2])
                }
                (4, IpAddr::V4(_)) => format!("{text}:443"),
                (4, IpAddr::V6(_)) => format!("[{text}]:443"),
                _ => format!("{text}/32"),
            };
            refused(&input::ip("device.ip", &bad), "device.ip")
        },
    );
}

pub fn valid_role() -> impl Strategy<Value = String> + Clone {
    of(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-",
        1..=MAX_ROLE,
    )
}

#[test]
fn roles_are_bounded_in_number_length_and_alphabet() {
    let role = prop_oneof![
        8 => valid_role(),
        1 => text(0..8),
        1 => Just(String::new()),
        1 => of(ALNUM, MAX_ROLE + 1..80),
    ];
    check(384, prop::collection::vec(role, 0..40), |roles| {
        let r = input::roles(&roles);
        let valid = roles.len() <= MAX_ROLES
            && roles.iter().all(|r| {
                (1..=MAX_ROLE).contains(&r.len())
                    && r.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
            });
        prop_assert_eq!(r.is_ok(), valid);
        if !valid {
            refused(&r, "roles")?;
        }
        Ok(())
    });
}

#[test]
fn codes_are_digits_with_spacing_only() {
    let typed = prop_oneof![garbage(), of("0123456789 -\t", 0..40), text(0..12)];
    check(1024, (typed, 6u8..=9), |(s, digits)| {
        let r = input::code(&s, digits);
        let cleaned: String = s
            .chars()
            .filter(|c| !matches!(c, ' ' | '\t' | '-'))
            .collect();
        let valid = s.len() <= MAX_CODE_INPUT
            && cleaned.len() == usize::from(digits)
            && cleaned.bytes().all(|b| b.is_ascii_digit());
        prop_assert_eq!(r.is_ok(), valid);
        if valid {
            prop_assert_eq!(r.ok(), Some(cleaned));
        } else {
            refused(&r, "code")?;
        }
        Ok(())
    });
    // The digits, however people paste them, come back as the digits.
    let spaced = (6u8..=9).prop_flat_map(|n| {
        (
            Just(n),
            prop::collection::vec(0u8..10, usize::from(n)),
            prop::collection::vec(
                prop::sample::select(vec!["", "", " ", "-", "\t", " - "]),
                usize::from(n) + 1,
            ),
        )
    });
    check(1024, spaced, |(n, digits, seps)| {
        let plain: String = digits.iter().map(|d| char::from(b'0' + d)).collect();
        let typed: String = seps
            .iter()
            .zip(plain.chars().map(Some).chain([None]))
            .map(|(s, c)| format!("{s}{}", c.map(String::from).unwrap_or_default()))
            .collect();
        prop_assume!(typed.len() <= MAX_CODE_INPUT);
        prop_assert_eq!(input::code(&typed, n).ok(), Some(plain));
        Ok(())
    });
}

#[test]
fn masked_addresses_show_the_first_character_and_the_domain_only() {
    check(1024, prop_oneof![garbage(), valid_email()], |s| {
        let masked = input::mask_email(&s);
        match s.split_once('@') {
            Some((local, domain)) => {
                let first: String = local.chars().take(1).collect();
                prop_assert_eq!(masked, format!("{first}***@{domain}"));
            }
            None => prop_assert_eq!(masked, "***"),
        }
        Ok(())
    });
}

/// A valid login context.
pub fn valid_ctx() -> impl Strategy<Value = LoginContext> {
    // Free text of any character but a control one.
    let free = |n: usize| {
        text(0..n).prop_map(|s| s.chars().filter(|c| !c.is_control()).collect::<String>())
    };
    (
        (valid_id(), valid_id(), valid_email()),
        prop::collection::vec(valid_role(), 0..6),
        prop::option::of(of(
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-",
            1..=35,
        )),
        prop::option::of(text(0..100)),
        (
            free(100),
            prop::option::of(free(20)),
            prop::option::of(any::<u32>()),
        ),
        (
            prop::option::of(free(20)),
            prop::option::of(free(20)),
            prop::option::of(free(20)),
            prop::option::of(free(20)),
        ),
        any::<IpAddr>(),
    )
        .prop_map(
            |(
                (user_id, org_id, email),
                roles,
                locale,
                cookie,
                (ua, family, major),
                (platform, language, tz, screen),
                ip,
            )| {
                LoginContext {
                    user_id,
                    org_id,
                    email,
                    roles,
                    locale,
                    device: DevicePresentation {
                        cookie,
                        traits: BrowserTraits {
                            user_agent: ua,
                            browser_family: family,
                            browser_major: major,
                            platform,
                            language,
                            time_zone: tz,
                            screen_class: screen,
                        },
                        ip: ip.to_string(),
                    },
                }
            },
        )
}

/// Breaks one field of a valid context; returns the field the refusal must name.
pub fn break_ctx() -> impl Strategy<Value = (u8, String)> {
    (
        0u8..12,
        prop_oneof![bad_id(), bad_email(), text(0..4), of(ALNUM, 513..520)],
    )
}

pub fn broken(ctx: &LoginContext, which: u8, junk: &str) -> Option<(LoginContext, &'static str)> {
    let mut c = ctx.clone();
    let t = &mut c.device.traits;
    let field = match which {
        0 => {
            c.user_id = junk.to_owned();
            "user_id"
        }
        1 => {
            c.org_id = junk.to_owned();
            "org_id"
        }
        2 => {
            c.email = junk.to_owned();
            "email"
        }
        3 => {
            c.roles.push(format!("{junk} "));
            "roles"
        }
        4 => {
            c.roles = vec!["r".to_owned(); MAX_ROLES + 1];
            "roles"
        }
        5 => {
            c.locale = Some(format!("{junk}!"));
            "locale"
        }
        6 => {
            t.user_agent = format!("{junk}\u{1}");
            "device.traits.user_agent"
        }
        7 => {
            t.browser_family = Some(format!("\n{junk}"));
            "device.traits.browser_family"
        }
        8 => {
            t.platform = Some("p".repeat(MAX_TEXT + 1));
            "device.traits.platform"
        }
        9 => {
            t.language = Some(format!("{junk}\u{7f}"));
            "device.traits.language"
        }
        10 => {
            t.time_zone = Some(format!("{junk}\u{9f}"));
            "device.traits.time_zone"
        }
        _ => {
            c.device.ip = format!("{junk}x");
            "device.ip"
        }
    };
    // A junk that happens to be valid for this field breaks nothing.
    match which {
        0 | 1 if input::id("x", junk).is_ok() => None,
        2 if input::email(junk).is_ok() => None,
        _ => Some((c, field)),
    }
}

#[test]
fn login_contexts_are_accepted_whole_or_refused_naming_the_first_bad_field() {
    check(256, valid_ctx(), |c| {
        let ip = input::login_context(&c).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(ip, normalized(c.device.ip.parse().unwrap()));
        Ok(())
    });
    check(256, (valid_ctx(), break_ctx()), |(c, (which, junk))| {
        let Some((bad, field)) = broken(&c, which, &junk) else {
            return Ok(());
        };
        refused(&input::login_context(&bad), field)
    });
}

#[test]
fn actors_are_accepted_whole_or_refused_naming_the_field() {
    let agent =
        text(0..100).prop_map(|s| s.chars().filter(|c| !c.is_control()).collect::<String>());
    let actor = (
        valid_id(),
        valid_id(),
        prop::collection::vec(valid_role(), 0..4),
        prop::option::of(any::<IpAddr>()),
        agent,
    );
    check(
        512,
        (actor, 0u8..6, prop_oneof![bad_id(), garbage()]),
        |((user_id, org_id, roles, ip, ua), which, junk)| {
            let mut a = Actor {
                user_id,
                org_id,
                roles,
                ip: ip.map(|i| i.to_string()).unwrap_or_default(),
                user_agent: ua,
            };
            prop_assert!(input::actor(&a).is_ok());
            let field = match which {
                0 if input::id("x", &junk).is_err() => {
                    a.user_id = junk;
                    "actor.user_id"
                }
                1 if input::id("x", &junk).is_err() => {
                    a.org_id = junk;
                    "actor.org_id"
                }
                2 => {
                    a.roles.push(String::new());
                    "roles"
                }
                3 => {
                    a.user_agent = format!("{junk}\0");
                    "actor.user_agent"
                }
                4 if !junk.trim().is_empty() && junk.trim().parse::<IpAddr>().is_err() => {
                    a.ip = junk;
                    "actor.ip"
                }
                _ => return Ok(()),
            };
            refused(&input::actor(&a), field)
        },
    );
}

#[test]
fn language_tags_time_zones_and_instants_never_panic() {
    let supported = i18n::supported();
    let tags = prop_oneof![
        garbage(),
        of(
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_/+",
            0..20
        )
    ];
    check(
        1024,
        (tags.clone(), tags, any::<i64>()),
        |(tag, zone, at)| {
            let chosen = i18n::choose(Some(&tag), &zone);
            prop_assert!(supported.contains(&chosen));
            // A tag is supported when its primary subtag is, in any case (`es-MX`, `EN_gb`).
            let primary = tag
                .split(['-', '_'])
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            prop_assert_eq!(
                i18n::is_supported(&tag),
                supported.contains(&primary.as_str())
            );
            let clock = i18n::clock(Timestamp(at), Some(&zone), "UTC");
            prop_assert!(!clock.is_empty());
            let t = Timestamp(at);
            let _ = (
                t.rfc3339(),
                t.date(),
                t.clock_utc(),
                t.plus(at),
                t.seconds_until(Timestamp(!at)),
            );
            Ok(())
        },
    );
    // Real zones name themselves.
    let zones = prop::sample::select(vec![
        "America/Chicago",
        "Europe/Madrid",
        "Asia/Kolkata",
        "UTC",
        "Pacific/Chatham",
    ]);
    check(
        256,
        (zones, -10_000_000_000i64..10_000_000_000),
        |(zone, at)| {
            let named = format!("({zone})");
            prop_assert!(i18n::clock(Timestamp(at), Some(zone), "UTC").ends_with(&named));
            Ok(())
        },
    );
}

#[test]
fn api_keys_match_only_themselves() {
    check(1024, (garbage(), garbage()), |(presented, configured)| {
        prop_assert_eq!(
            api_key_matches(&presented, &configured),
            !configured.is_empty() && presented == configured
        );
        prop_assert_eq!(
            api_key_matches(&configured, &configured),
            !configured.is_empty()
        );
        Ok(())
    });
}
