//! The protocol from both ends: requests signed as an IdP signs them, refused when tampered,
//! foreign, expired, replayed or misdirected, and results an IdP can check.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly on purpose"
)]

use rand_core::{OsRng, TryRngCore};

use super::*;
use crate::engine::Engine;
use crate::kernel::keys;
use crate::kernel::ports::Store as _;
use crate::kernel::settings::Settings;
use crate::testing::{MemAudit, MemMailer, MemStore};

const T0: i64 = 1_795_000_000;

fn config() -> PromptConfig {
    PromptConfig::new(
        HmacKey::from_bytes(&[9u8; 32]).unwrap(),
        "idp-1",
        &["https://idp.example/mfa/return"],
    )
}

fn claims() -> serde_json::Value {
    serde_json::json!({
        "iss": "idp-1", "aud": "mfa-step", "sub": "dr-a", "org": "acme",
        "email": "dr-a@clinic.example", "roles": ["provider"], "locale": "es",
        "return_to": "https://idp.example/mfa/return?state=xyz", "nonce": "n-123",
        "jti": "req-1", "iat": T0, "exp": T0 + 120,
    })
}

struct World {
    store: MemStore,
    mailer: MemMailer,
    audit: MemAudit,
    key: HmacKey,
}

impl World {
    fn new() -> Self {
        Self {
            store: MemStore::default(),
            mailer: MemMailer::default(),
            audit: MemAudit::default(),
            key: HmacKey::from_bytes(&[7; 32]).unwrap(),
        }
    }
    fn engine(&self) -> Engine<'_> {
        Engine {
            store: &self.store,
            mailer: &self.mailer,
            audit: &self.audit,
            settings: Settings::default(),
            key: &self.key,
        }
    }
    fn open(&self, token: &str, at: i64) -> Result<PromptRequest> {
        self.engine().open_prompt(
            &config(),
            token,
            ("203.0.113.7", "test"),
            Timestamp(at),
            &mut OsRng.unwrap_err(),
        )
    }
}

fn with(change: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut c = claims();
    change(&mut c);
    config().sign(&c).unwrap()
}

fn refused(r: Result<PromptRequest>) -> &'static str {
    match r {
        Err(Error::Forbidden(m)) => m,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_signed_request_is_accepted_once() {
    let w = World::new();
    let token = with(|_| {});
    let req = w.open(&token, T0 + 5).unwrap();
    assert_eq!(req.user_id, "dr-a");
    assert_eq!(req.locale.as_deref(), Some("es"));
    assert_eq!(req.return_to, "https://idp.example/mfa/return?state=xyz");
    assert!(
        w.audit.entries.borrow().is_empty(),
        "acceptance is not an event yet"
    );
    assert_eq!(refused(w.open(&token, T0 + 6)), Refusal::Replayed.message());
    assert_eq!(w.audit.actions(), ["access_denied"]);
    assert!(w.audit.entries.borrow()[0].line.contains("prompt:replayed"));
}

#[test]
fn tampered_foreign_expired_and_misdirected_requests_are_refused_noted_or_recorded() {
    let w = World::new();
    let good = with(|_| {});
    // Change the payload without re-signing.
    let mut parts: Vec<&str> = good.split('.').collect();
    let forged = URL_SAFE_NO_PAD.encode(
        serde_json::to_vec(&{
            let mut c = claims();
            c["sub"] = "someone-else".into();
            c
        })
        .unwrap(),
    );
    parts[1] = &forged;
    assert_eq!(
        refused(w.open(&parts.join("."), T0)),
        Refusal::Signature.message()
    );
    // `alg: none`, with or without a signature.
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims()).unwrap())
    );
    assert_eq!(refused(w.open(&none, T0)), Refusal::Malformed.message());
    // Signed by another key.
    let other = PromptConfig::new(
        HmacKey::from_bytes(&[8u8; 32]).unwrap(),
        "idp-1",
        &["https://idp.example/"],
    );
    assert_eq!(
        refused(w.open(&other.sign(&claims()).unwrap(), T0)),
        Refusal::Signature.message()
    );
    // None of them is signed with the prompt key: nothing in any organization's stream, nothing
    // in the store; each is noted in the host's log, the tampered and foreign-signed ones with the
    // organization they claim (unverified).
    assert!(w.audit.entries.borrow().is_empty(), "recorded in a stream");
    assert_eq!(
        w.store.snapshot(),
        (Vec::new(), Vec::new()),
        "the store changed"
    );
    let notes = w.audit.notes.borrow();
    let rules: Vec<&str> = notes.iter().map(|n| n.rule.as_str()).collect();
    assert_eq!(
        rules,
        [
            "prompt:bad-signature",
            "prompt:algorithm",
            "prompt:bad-signature"
        ]
    );
    assert_eq!(notes[0].claimed_org.as_deref(), Some("acme"));
    assert_eq!(notes[1].claimed_org.as_deref(), Some("acme"));
    drop(notes);

    let cases: [(&str, String, i64, Refusal); 10] = [
        (
            "overflowing times",
            with(|c| {
                c["jti"] = "r6".into();
                c["iat"] = i64::MIN.into();
            }),
            T0,
            Refusal::Expired,
        ),
        (
            "expiry before issue",
            with(|c| {
                c["jti"] = "r7".into();
                c["exp"] = (T0 - 10).into();
            }),
            T0 - 20,
            Refusal::Expired,
        ),
        (
            "past the path",
            with(|c| {
                c["jti"] = "r8".into();
                c["return_to"] = "https://idp.example/mfa/returnX".into();
            }),
            T0,
            Refusal::ReturnUrl,
        ),
        (
            "dot segments",
            with(|c| {
                c["jti"] = "r9".into();
                c["return_to"] = "https://idp.example/mfa/return/../admin".into();
            }),
            T0,
            Refusal::ReturnUrl,
        ),
        (
            "audience",
            with(|c| c["aud"] = "another-service".into()),
            T0,
            Refusal::Audience,
        ),
        (
            "issuer",
            with(|c| c["iss"] = "idp-2".into()),
            T0,
            Refusal::Audience,
        ),
        (
            "expired",
            with(|c| c["jti"] = "r2".into()),
            T0 + 120 + CLOCK_SKEW + 1,
            Refusal::Expired,
        ),
        (
            "too long",
            with(|c| {
                c["jti"] = "r3".into();
                c["exp"] = (T0 + 301).into();
            }),
            T0,
            Refusal::Expired,
        ),
        (
            "elsewhere",
            with(|c| {
                c["jti"] = "r4".into();
                c["return_to"] = "https://idp.example.evil.test/mfa/return".into();
            }),
            T0,
            Refusal::ReturnUrl,
        ),
        (
            "bad email",
            with(|c| {
                c["jti"] = "r5".into();
                c["email"] = "not an address".into();
            }),
            T0,
            Refusal::Claims,
        ),
    ];
    for (name, token, at, refusal) in cases {
        assert_eq!(refused(w.open(&token, at)), refusal.message(), "{name}");
        let last = w.audit.entries.borrow().last().unwrap().line.clone();
        assert!(last.contains(refusal.rule()), "{name}: {last}");
    }
    // None of the refused requests used up a jti that a good one could need.
    assert_eq!(
        w.store
            .increment(&keys::prompt_request("idp-1", "r2"), 0, None)
            .unwrap(),
        0
    );
}

#[test]
fn the_result_is_a_jwt_the_idp_can_check() {
    let w = World::new();
    let req = w.open(&with(|_| {}), T0).unwrap();
    let url = w
        .engine()
        .prompt_result(
            &config(),
            &req,
            &Verdict {
                outcome: PromptOutcome::Success,
                via: "code".to_owned(),
                amr: vec!["otp".to_owned(), "mfa".to_owned()],
            },
            Timestamp(T0 + 40),
            &mut OsRng.unwrap_err(),
        )
        .unwrap();
    let (base, token) = url.split_once("&result=").unwrap();
    assert_eq!(base, "https://idp.example/mfa/return?state=xyz");
    let payload: serde_json::Value =
        serde_json::from_slice(&config().open(token).unwrap()).unwrap();
    assert_eq!(payload["aud"], "idp-1");
    assert_eq!(payload["iss"], "mfa-step");
    assert_eq!(payload["sub"], "dr-a");
    assert_eq!(payload["outcome"], "success");
    assert_eq!(payload["nonce"], "n-123");
    assert_eq!(payload["amr"], serde_json::json!(["otp", "mfa"]));
    assert_eq!(payload["exp"], T0 + 40 + RESULT_LIFETIME);
    // Any flipped character breaks it.
    let mut bad = token.to_owned();
    bad.replace_range(10..11, if &token[10..11] == "A" { "B" } else { "A" });
    assert!(config().open(&bad).is_err());
}

#[test]
fn settings_refuse_unsafe_return_urls_and_missing_parts() {
    let lookup = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    };
    assert!(PromptConfig::from_lookup(lookup(&[])).unwrap().is_none());
    let key = "ab".repeat(32);
    let key: &'static str = Box::leak(key.into_boxed_str());
    for urls in [
        "http://idp.example/return",
        "https://idp.example",
        "",
        "http://localhost.evil.test/",
        "http://localhost@evil.test/",
        "https://idp.example/a;script-src *",
        "https://idp.example/a b",
        "https://idp.example:x/",
    ] {
        let urls: &'static str = Box::leak(urls.to_owned().into_boxed_str());
        let pairs: &'static [(&str, &str)] = Box::leak(
            vec![
                ("prompt_key", key),
                ("prompt_client_id", "idp-1"),
                ("prompt_return_urls", urls),
            ]
            .into_boxed_slice(),
        );
        assert!(
            matches!(
                PromptConfig::from_lookup(lookup(pairs)),
                Err(Error::Misconfigured(_))
            ),
            "{urls}"
        );
    }
    let ok = PromptConfig::from_lookup(lookup(&[
        (
            "prompt_key",
            "abababababababababababababababababababababababababababababababab",
        ),
        ("prompt_client_id", "idp-1"),
        (
            "prompt_return_urls",
            "https://idp.example/mfa/, http://localhost:8080/demo/",
        ),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!(ok.return_urls.len(), 2);
    assert!(!format!("{ok:?}").contains("abab"), "the key never shows");
}

/// A signed request's refusal is recorded once: replaying the URL (from a shared workstation's
/// history, say) a thousand times appends one record to its organization's stream and notes the
/// rest in the host's log.
#[test]
fn a_replayed_signed_request_is_recorded_once_and_noted_after() {
    let w = World::new();
    let token = with(|c| c["jti"] = "r-flood".into());
    w.open(&token, T0).unwrap();
    for _ in 0..1000 {
        assert_eq!(refused(w.open(&token, T0 + 1)), Refusal::Replayed.message());
    }
    let records = w.audit.entries.borrow();
    let replayed: Vec<_> = records
        .iter()
        .filter(|e| e.line.contains("prompt:replayed"))
        .collect();
    assert_eq!(replayed.len(), 1, "one record for 1000 replays");
    let notes = w.audit.notes.borrow();
    assert_eq!(notes.len(), 999);
    assert!(notes.iter().all(|n| n.rule == "prompt:replayed"));
    assert!(
        notes
            .iter()
            .all(|n| n.claimed_org.as_deref() == Some("acme"))
    );
}
