//! The hosted prompt's signed request (`Engine::open_prompt`, and `GET /prompt?request=` through
//! `Engine::hosted_page`): a compact HS256 JWT, its header, its signature, its claims, its times,
//! where it sends the browser back, and its one use.
//!
//! What a refusal may leave behind is part of the design, so "no state change on refusal" here is
//! exactly that and nothing more: a token not signed with the prompt key (malformed, another
//! algorithm, a wrong signature) changes no store key and no organization's stream, and is noted
//! once for the host's own log (`note_refusal`) with the organization it claims, unverified; a
//! signed request refused for its claims, audience, times or return URL is recorded once
//! (`access_denied`, `prompt:<why>`) in the stream of the organization it names (with the store's
//! count of that stream), or not at all when it names no valid organization and user; signed
//! claims that do not deserialize leave nothing. A replayed `jti` also counts its presentation on
//! the request's use counter.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use mfa_step_core::kernel::keys;
use mfa_step_core::kernel::secret::hmac_sha256;
use mfa_step_core::web::hosted::WebMethod;
use mfa_step_core::web::prompt::{PromptPurpose, PromptRequest, Refusal};
use mfa_step_core::{Error, Timestamp};

use crate::world::{
    CLIENT, PROMPT_KEY, RETURN, State, T0, World, browser, check, garbage, noted, only_recorded,
    prompt_config, rng, unchanged,
};

const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// A compact JWT of `header` and `payload`, signed with HS256 under `key`.
pub fn sign(key: &[u8], header: &str, payload: &[u8]) -> String {
    let input = format!("{}.{}", B64.encode(header), B64.encode(payload));
    let sig = B64.encode(hmac_sha256(key, &[input.as_bytes()]));
    format!("{input}.{sig}")
}

/// What `open_prompt` answers, in one world, at `now`.
fn open(w: &World, token: &str, now: i64, seed: u64) -> Result<PromptRequest, Error> {
    w.engine().open_prompt(
        &prompt_config(),
        token,
        ("198.51.100.4", "agent"),
        Timestamp(now),
        &mut rng(seed),
    )
}

/// The refusal a message stands for (four refusals share the "not valid" message).
fn refused_with(
    r: &Result<PromptRequest, Error>,
    allowed: &[Refusal],
) -> Result<(), TestCaseError> {
    match r {
        Err(Error::Forbidden(m)) if allowed.iter().any(|a| a.message() == *m) => Ok(()),
        other => Err(TestCaseError::fail(format!(
            "expected one of {allowed:?}, got {other:?}"
        ))),
    }
}

const INVALID: [Refusal; 4] = [
    Refusal::Malformed,
    Refusal::Algorithm,
    Refusal::Signature,
    Refusal::Claims,
];

/// Valid claims: ids, an address, roles, a nonce of any text, a `jti`, times the request is live
/// at `T0`, a `return_to` under the allowed URL, and sometimes a purpose.
#[derive(Debug, Clone)]
struct Claims {
    sub: String,
    org: String,
    email: String,
    roles: Vec<String>,
    locale: Option<String>,
    nonce: String,
    jti: String,
    iat: i64,
    exp: i64,
    return_to: String,
    purpose: Option<PromptPurpose>,
}

impl Claims {
    fn json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "iss": CLIENT, "aud": "mfa-step", "sub": self.sub, "org": self.org,
            "email": self.email, "roles": self.roles, "return_to": self.return_to,
            "nonce": self.nonce, "jti": self.jti, "iat": self.iat, "exp": self.exp,
        });
        if let Some(l) = &self.locale {
            v["locale"] = l.clone().into();
        }
        if let Some(p) = self.purpose {
            v["purpose"] = serde_json::to_value(p).unwrap();
        }
        v
    }

    fn token(&self) -> String {
        sign(
            &PROMPT_KEY,
            HEADER,
            &serde_json::to_vec(&self.json()).unwrap(),
        )
    }
}

fn id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._@+|-]{1,40}"
}

fn claims() -> impl Strategy<Value = Claims> {
    // `iat` from 270 s before now to 30 s after (skew); a lifetime that keeps `exp` within skew of now.
    let times = (-30i64..=270).prop_flat_map(|age| {
        let min_life = (age - 30).max(0);
        (Just(age), min_life..=300i64)
    });
    (
        (id(), id(), crate::input::valid_email()),
        prop::collection::vec("[A-Za-z0-9._:-]{1,20}", 0..5),
        prop::option::of("[a-z]{2}(-[A-Z]{2})?"),
        "\\PC{1,60}",
        id(),
        times,
        prop_oneof![
            Just(String::new()),
            "\\?state=[A-Za-z0-9_-]{0,20}",
            "/[a-z0-9]{1,10}",
        ],
        prop::option::of(prop_oneof![
            Just(PromptPurpose::Login),
            Just(PromptPurpose::Devices)
        ]),
    )
        .prop_map(
            |((sub, org, email), roles, locale, nonce, jti, (age, life), tail, purpose)| Claims {
                sub,
                org,
                email,
                roles,
                locale,
                nonce,
                jti,
                iat: T0 - age,
                exp: T0 - age + life,
                return_to: format!("{RETURN}{tail}"),
                purpose,
            },
        )
}

#[test]
fn arbitrary_tokens_never_panic_and_change_nothing_but_a_note() {
    let w = World::new();
    let before = w.state();
    let garbage = prop_oneof![
        garbage(),
        "[A-Za-z0-9_.=+/-]{0,300}",
        // Three parts that decode, of arbitrary bytes.
        (any::<Vec<u8>>(), any::<Vec<u8>>(), any::<Vec<u8>>()).prop_map(|(a, b, c)| format!(
            "{}.{}.{}",
            B64.encode(a),
            B64.encode(b),
            B64.encode(c)
        )),
        // The right header, an arbitrary payload, signed: the claims parser gets garbage.
        any::<Vec<u8>>().prop_map(|p| sign(&PROMPT_KEY, HEADER, &p)),
    ];
    check(1024, garbage, |token| {
        let w = w.fork();
        let r = open(&w, &token, T0, 1);
        refused_with(&r, &INVALID)?;
        let after = w.state();
        // Unsigned: noted for the host's log, naming no one; signed but not claims: nothing.
        if after.notes.len() == before.notes.len() {
            unchanged(&before, &after)
        } else {
            noted(&before, &after, &UNSIGNED, &[None])
        }
    });
}

/// A valid request with one thing wrong, and the refusals it may meet.
#[derive(Debug, Clone)]
enum Bad {
    /// Signed with another key.
    OtherKey([u8; 32]),
    /// One character of the signature replaced.
    FlipSig(usize, char),
    /// The signature cut.
    TruncateSig(usize),
    /// A header other than HS256 (`none`, another algorithm, extra or odd fields), correctly signed.
    Header(&'static str),
    /// Times out of bounds.
    Times(i64, i64),
    /// A claim replaced by a malformed value; whether the claims still deserialize (a value of
    /// the wrong type does not: then nothing can be recorded).
    Claim(&'static str, serde_json::Value, bool),
    /// A claim removed.
    Missing(&'static str),
    /// An extra claim.
    Unknown(String),
    /// A claim given twice (raw JSON), the second time with the same value.
    Duplicate(&'static str),
    /// Another client or audience.
    Audience(&'static str, String),
    /// A `return_to` off the allow-list.
    ReturnTo(String),
    /// The whole token cut at a position.
    Truncate(usize),
    /// A character inserted into the token at a position (a separator, a control character, any).
    Insert(usize, char),
    /// The payload padded to a huge length (signature then wrong).
    Huge(usize),
}

fn bad() -> impl Strategy<Value = Bad> {
    let ctl = prop_oneof![
        Just('\0'),
        Just('\n'),
        Just('\r'),
        Just('\u{7f}'),
        Just('\u{85}'),
        Just('\u{2028}'),
        Just('é'),
        Just('𝕏'),
        Just('.'),
        Just('='),
        Just('+'),
        Just('/'),
        Just(' '),
        any::<char>(),
    ];
    let bad_id = prop_oneof![
        Just((serde_json::Value::from(""), true)),
        Just(("a".repeat(129).into(), true)),
        "[A-Za-z0-9]{0,10}[ :/#<>\"\\\\é\\x00-\\x1f][A-Za-z0-9]{0,10}"
            .prop_map(|s| (s.into(), true)),
        Just((42.into(), false)),
        Just((serde_json::Value::Null, false)),
    ];
    prop_oneof![
        any::<[u8; 32]>()
            .prop_filter("another key", |k| *k != PROMPT_KEY)
            .prop_map(Bad::OtherKey),
        (0usize..43, "[A-Za-z0-9_-]").prop_map(|(i, s)| Bad::FlipSig(i, s.chars().next().unwrap())),
        (0usize..43).prop_map(Bad::TruncateSig),
        prop::sample::select(vec![
            r#"{"alg":"none"}"#,
            r#"{"alg":"none","typ":"JWT"}"#,
            r#"{"alg":"None","typ":"JWT"}"#,
            r#"{"alg":"HS512","typ":"JWT"}"#,
            r#"{"alg":"RS256","typ":"JWT"}"#,
            r#"{"alg":"hs256","typ":"JWT"}"#,
            r#"{"alg":"HS256","typ":"jwt"}"#,
            r#"{"alg":"HS256","typ":"JWT","kid":"k1"}"#,
            r#"{"alg":"HS256","typ":"JWT","crit":["exp"]}"#,
            r#"{"alg":["HS256"],"typ":"JWT"}"#,
            r#"{"alg":"HS256 ","typ":"JWT"}"#,
            r#"{"typ":"JWT"}"#,
            r#"{}"#,
            r#"[]"#,
            r#"null"#,
            r#""HS256""#,
        ])
        .prop_map(Bad::Header),
        prop_oneof![
            // Expired beyond the skew.
            (31i64..1_000_000).prop_map(|late| (T0 - late - 120, T0 - late)),
            // Issued beyond the skew in the future.
            (31i64..1_000_000).prop_map(|early| (T0 + early, T0 + early + 60)),
            // Living longer than 300 s.
            (301i64..10_000).prop_map(|life| (T0 - 10, T0 - 10 + life)),
            // Expiring before it was issued.
            (1i64..10_000).prop_map(|d| (T0, T0 - d)),
            // Hostile extremes.
            Just((i64::MIN, T0)),
            Just((i64::MIN, i64::MAX)),
            Just((T0, i64::MAX)),
            Just((i64::MAX, i64::MAX)),
            Just((i64::MAX, i64::MIN)),
        ]
        .prop_map(|(iat, exp)| Bad::Times(iat, exp)),
        prop_oneof![
            bad_id.clone().prop_map(|(v, ok)| ("sub", v, ok)),
            bad_id.clone().prop_map(|(v, ok)| ("org", v, ok)),
            bad_id.prop_map(|(v, ok)| ("jti", v, ok)),
            prop::sample::select(vec![
                "",
                "no-at",
                "a@b",
                "a@@b.c",
                "a b@c.d",
                "a@b.c\r\nBcc: x@y.z",
                "<a@b.c>",
                "@b.c",
                "a@.b.c",
                "a@b..c",
            ])
            .prop_map(|e| ("email", e.into(), true)),
            Just(("email", format!("{}@x.co", "a".repeat(300)).into(), true)),
            Just(("roles", serde_json::json!(vec!["r"; 33]), true)),
            Just(("roles", serde_json::json!(["ok", "bad role"]), true)),
            Just(("roles", serde_json::json!(["a".repeat(65)]), true)),
            Just(("roles", "provider".into(), false)),
            Just(("nonce", "".into(), true)),
            Just(("nonce", "n".repeat(257).into(), true)),
            Just(("iat", "1795000000".into(), false)),
            Just(("exp", 1.5e9.into(), false)),
            Just(("purpose", "admin".into(), false)),
            Just(("locale", 7.into(), false)),
        ]
        .prop_map(|(k, v, parses)| Bad::Claim(k, v, parses)),
        prop::sample::select(vec![
            "iss",
            "aud",
            "sub",
            "org",
            "email",
            "return_to",
            "nonce",
            "jti",
            "iat",
            "exp"
        ])
        .prop_map(Bad::Missing),
        "[a-z_]{1,12}"
            .prop_filter("not a claim", |k| {
                ![
                    "iss",
                    "aud",
                    "sub",
                    "org",
                    "email",
                    "roles",
                    "locale",
                    "return_to",
                    "nonce",
                    "jti",
                    "iat",
                    "exp",
                    "purpose",
                ]
                .contains(&k.as_str())
            })
            .prop_map(Bad::Unknown),
        prop::sample::select(vec!["sub", "org", "iss", "exp", "return_to", "jti"])
            .prop_map(Bad::Duplicate),
        prop_oneof![
            Just(("iss", "idp-2".to_owned())),
            Just(("iss", "IDP-1".to_owned())),
            Just(("iss", "idp-1 ".to_owned())),
            Just(("aud", "MFA-STEP".to_owned())),
            Just(("aud", "idp-1".to_owned())),
            Just(("aud", "mfa-step\0".to_owned())),
            "\\PC{0,20}".prop_map(|s| ("aud", s)),
        ]
        .prop_filter("not the right one", |(k, v)| {
            !((*k == "aud" && v == "mfa-step") || (*k == "iss" && v == CLIENT))
        })
        .prop_map(|(k, v)| Bad::Audience(k, v)),
        prop_oneof![
            Just("https://evil.example/mfa/return".to_owned()),
            Just("http://idp.example/mfa/return".to_owned()),
            Just("https://idp.example/mfa/returnX".to_owned()),
            Just("https://idp.example/mfa/return@evil.example".to_owned()),
            Just("https://idp.example.evil.test/mfa/return".to_owned()),
            Just("https://idp.example/mfa/return#frag".to_owned()),
            Just("https://idp.example/mfa/return/../admin".to_owned()),
            Just("https://idp.example/mfa/return/%2e%2e/admin".to_owned()),
            Just("https://idp.example/mfa/return/%2E./admin".to_owned()),
            Just("https://idp.example/mfa/return\\..\\admin".to_owned()),
            Just("//idp.example/mfa/return".to_owned()),
            Just("/mfa/return".to_owned()),
            Just(String::new()),
            // Outside printable ASCII: a space, a control character, any non-ASCII character.
            "[ \\x00-\\x1f\\x7f\\u{80}-\\u{10ffff}]".prop_map(|c| format!("{RETURN}?x={c}")),
        ]
        .prop_map(Bad::ReturnTo),
        (0usize..400).prop_map(Bad::Truncate),
        (0usize..400, ctl).prop_map(|(i, c)| Bad::Insert(i, c)),
        (4_000usize..40_000).prop_map(Bad::Huge),
    ]
}

/// What a refusal leaves behind.
#[derive(Debug, Clone)]
enum Effect {
    /// Not signed with the prompt key: one note for the host's log with one of these rules,
    /// claiming the organization or none; nothing else.
    Noted(Vec<&'static str>),
    /// Signed: a record in the named organization's stream with this reason, or nothing at all
    /// when the claims name no valid organization and user (`silent`).
    Recorded(&'static str, bool),
    /// Signed, but the claims do not deserialize: nothing at all.
    Silent,
}

/// The rules of a refusal of an unsigned request.
pub const UNSIGNED: [&str; 3] = [
    "prompt:malformed",
    "prompt:algorithm",
    "prompt:bad-signature",
];

impl Effect {
    fn check(&self, before: &State, after: &State, org: &str) -> Result<(), TestCaseError> {
        match self {
            Self::Noted(rules) => noted(before, after, rules, &[None, Some(org)]),
            Self::Recorded(reason, silent) => only_recorded(before, after, org, &[reason], *silent),
            Self::Silent => unchanged(before, after),
        }
    }
}

/// The token `bad` makes of `c`, the refusals it may meet, and what it may leave behind.
fn apply(c: &Claims, bad: &Bad) -> (String, Vec<Refusal>, Effect) {
    let good = c.token();
    let signed = |claims: &serde_json::Value| {
        sign(&PROMPT_KEY, HEADER, &serde_json::to_vec(claims).unwrap())
    };
    let sig_at = good.rfind('.').unwrap() + 1;
    let mut json = c.json();
    match bad {
        Bad::OtherKey(k) => (
            sign(k, HEADER, &serde_json::to_vec(&json).unwrap()),
            vec![Refusal::Signature],
            Effect::Noted(vec!["prompt:bad-signature"]),
        ),
        Bad::FlipSig(i, ch) => {
            let mut t: Vec<char> = good.chars().collect();
            let at = sig_at + i % (t.len() - sig_at);
            t[at] = *ch;
            // A flipped last character may only change bits the decoder refuses (malformed).
            (
                t.into_iter().collect(),
                INVALID.to_vec(),
                Effect::Noted(UNSIGNED.to_vec()),
            )
        }
        Bad::TruncateSig(n) => (
            good[..sig_at + n].to_owned(),
            INVALID.to_vec(),
            Effect::Noted(UNSIGNED.to_vec()),
        ),
        Bad::Header(h) => (
            sign(&PROMPT_KEY, h, &serde_json::to_vec(&json).unwrap()),
            vec![Refusal::Algorithm, Refusal::Malformed],
            Effect::Noted(vec!["prompt:algorithm", "prompt:malformed"]),
        ),
        Bad::Times(iat, exp) => {
            json["iat"] = (*iat).into();
            json["exp"] = (*exp).into();
            (
                signed(&json),
                vec![Refusal::Expired],
                Effect::Recorded("prompt:expired", false),
            )
        }
        Bad::Claim(k, v, parses) => {
            json[*k] = v.clone();
            let effect = if *parses && *k == "jti" {
                // No valid jti to count the refusal under (see `Replayed`): only noted.
                Effect::Noted(vec!["prompt:bad-claims"])
            } else if *parses {
                Effect::Recorded("prompt:bad-claims", ["sub", "org"].contains(k))
            } else {
                Effect::Silent
            };
            (signed(&json), vec![Refusal::Claims], effect)
        }
        Bad::Missing(k) => {
            json.as_object_mut().unwrap().remove(*k);
            (signed(&json), vec![Refusal::Claims], Effect::Silent)
        }
        Bad::Unknown(k) => {
            json[k.as_str()] = true.into();
            (signed(&json), vec![Refusal::Claims], Effect::Silent)
        }
        Bad::Duplicate(k) => {
            let raw = serde_json::to_string(&json).unwrap();
            let dup = format!(
                "{},\"{k}\":{}}}",
                &raw[..raw.len() - 1],
                serde_json::to_string(&json[*k]).unwrap()
            );
            (
                sign(&PROMPT_KEY, HEADER, dup.as_bytes()),
                vec![Refusal::Claims],
                Effect::Silent,
            )
        }
        Bad::Audience(k, v) => {
            json[*k] = v.clone().into();
            (
                signed(&json),
                vec![Refusal::Audience],
                Effect::Recorded("prompt:wrong-audience", false),
            )
        }
        Bad::ReturnTo(to) => {
            json["return_to"] = to.clone().into();
            (
                signed(&json),
                vec![Refusal::ReturnUrl],
                Effect::Recorded("prompt:return-url-not-allowed", false),
            )
        }
        Bad::Truncate(n) => {
            let mut at = n % good.len();
            while !good.is_char_boundary(at) {
                at -= 1;
            }
            (
                good[..at].to_owned(),
                INVALID.to_vec(),
                Effect::Noted(UNSIGNED.to_vec()),
            )
        }
        Bad::Insert(i, ch) => {
            let mut t: Vec<char> = good.chars().collect();
            let at = i % (t.len() + 1);
            t.insert(at, *ch);
            (
                t.into_iter().collect(),
                INVALID.to_vec(),
                Effect::Noted(UNSIGNED.to_vec()),
            )
        }
        Bad::Huge(n) => {
            json["nonce"] = "n".repeat(*n).into();
            let huge = signed(&json);
            // The huge payload under the original (now wrong) signature.
            let (head_payload, _) = huge.rsplit_once('.').unwrap();
            let sig = good.rsplit('.').next().unwrap();
            (
                format!("{head_payload}.{sig}"),
                vec![Refusal::Signature],
                Effect::Noted(vec!["prompt:bad-signature"]),
            )
        }
    }
}

#[test]
fn near_valid_requests_are_refused_with_their_reason_and_change_nothing_else() {
    check(384, (claims(), bad()), |(c, bad)| {
        let w = World::new();
        let before = w.state();
        let (token, refusals, effect) = apply(&c, &bad);
        prop_assume!(token != c.token());
        let r = open(&w, &token, T0, 1);
        refused_with(&r, &refusals)?;
        effect.check(&before, &w.state(), &c.org)
    });
}

#[test]
fn valid_requests_are_accepted_once_exactly_as_signed() {
    check(256, claims(), |c| {
        let w = World::new();
        let before = w.state();
        let req = open(&w, &c.token(), T0, 1).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(&req.user_id, &c.sub);
        prop_assert_eq!(&req.org_id, &c.org);
        prop_assert_eq!(&req.email, &c.email);
        prop_assert_eq!(&req.roles, &c.roles);
        prop_assert_eq!(&req.locale, &c.locale);
        prop_assert_eq!(&req.nonce, &c.nonce);
        prop_assert_eq!(&req.return_to, &c.return_to);
        prop_assert_eq!(req.expires_at, Timestamp(c.exp));
        prop_assert_eq!(req.purpose, c.purpose.unwrap_or_default());
        // Acceptance takes the `jti`'s one use, and nothing else.
        let use_key = keys::prompt_request(CLIENT, &c.jti);
        let mut expected = before.clone();
        expected.counters.push((use_key.clone(), 1));
        expected.counters.sort();
        // Remembered as long as the request could be accepted, and longer.
        let until = keys::guard_until(Timestamp(c.exp + 30));
        expected.expiries.push((use_key.clone(), until));
        expected.expiries.sort();
        prop_assert_eq!(&w.state(), &expected);
        // Once.
        let again = w.state();
        let r = open(&w, &c.token(), T0, 2);
        refused_with(&r, &[Refusal::Replayed])?;
        let mut after = w.state();
        // The replay counts its presentation on the `jti`'s counter: the one change besides its record.
        let uses = after
            .counters
            .iter_mut()
            .find(|(k, _)| *k == use_key)
            .unwrap();
        prop_assert_eq!(uses.1, 2);
        uses.1 = 1;
        only_recorded(&again, &after, &c.org, &["prompt:replayed"], false)
    });
}

#[test]
fn the_hosted_page_refuses_near_valid_requests_with_a_403_and_the_same_record() {
    check(128, (claims(), bad()), |(c, bad)| {
        let (token, _, effect) = apply(&c, &bad);
        prop_assume!(token != c.token());
        let w = World::new();
        let before: State = w.state();
        let query = format!("request={token}");
        let r = w.page(&browser(WebMethod::Get, "/prompt", &query, b"", ""), T0, 1);
        prop_assert_eq!(r.status, 403);
        prop_assert!(
            r.headers
                .iter()
                .all(|(k, _)| *k != "set-cookie" && *k != "location")
        );
        effect.check(&before, &w.state(), &c.org)
    });
}
