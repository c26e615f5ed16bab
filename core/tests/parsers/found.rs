//! Properties that found a real bug, with its minimal reproduction: each failed before its fix
//! (`Accept-Language` weights in `web::hosted::ui`, encoded separators in `return_to` in
//! `web::prompt::request`) and guards it since.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use mfa_step_core::email::i18n;
use mfa_step_core::{Error, Timestamp};

use crate::language::lang_of;
use crate::world::{
    CLIENT, EMAIL, ORG, PROMPT_KEY, RETURN, T0, USER, World, check, prompt_config, rng,
};

fn page_for(accept_language: &str) -> String {
    lang_of(&crate::language::page_for(accept_language))
}

// --- Found 1: `Accept-Language` weights are ignored, `q=0` included ---------------------------------
//
// `web::hosted::ui::accepted_language` takes the first supported tag in the order written and
// never reads `q`. RFC 9110 §12.4.2: "a value of 0 means not acceptable", and the weights, not
// the order, rank the rest. Minimal reproduction: `Accept-Language: es;q=0, en` gets a Spanish
// page (expected English); `en;q=0.1, es;q=0.9` gets English (expected Spanish).

#[test]
fn accept_language_q_zero_means_not_acceptable() {
    assert_eq!(page_for("es;q=0, en"), "en");
    assert_eq!(page_for("en;q=0.1, es;q=0.9"), "es");
}

#[test]
fn accept_language_follows_the_weights() {
    let entry = (
        prop::sample::select(vec!["en", "es", "fr", "de", "en-GB", "es-MX", "*"]),
        0u32..=1000,
    );
    check(256, prop::collection::vec(entry, 1..5), |entries| {
        let header = entries
            .iter()
            .map(|(t, q)| format!("{t};q={}.{:03}", q / 1000, q % 1000))
            .collect::<Vec<_>>()
            .join(", ");
        // The supported tag of the highest non-zero weight (the first among equals), else the
        // default.
        let mut best: Option<(&str, u32)> = None;
        for (t, q) in &entries {
            let primary = t.split('-').next().unwrap_or_default();
            if *q > 0 && i18n::is_supported(primary) && best.is_none_or(|(_, b)| *q > b) {
                best = Some((i18n::choose(Some(primary), "en"), *q));
            }
        }
        let expected = best.map_or("en", |(t, _)| t);
        prop_assert_eq!(page_for(&header), expected, "{}", header);
        Ok(())
    });
}

// --- Found 2: `return_to` escapes the allowed path through an encoded separator ----------------------
//
// `web::prompt::request::return_allowed` refuses a dot segment, spelled plainly or with `%2e`,
// because a server that decodes before it normalizes would resolve it. The same server decodes
// `%2F` (and, on some, `%5C`) into a separator, and then `..%2F` is a dot segment: with the
// allow-list `https://idp.example/mfa/return`, a request signed with
// `return_to = "https://idp.example/mfa/return/..%2F..%2Fadmin"` is accepted, and the signed
// result goes to `https://idp.example/admin?result=…` on such an IdP. Minimal reproduction:
// `https://idp.example/mfa/return/..%2Fx` is accepted (expected: refused as
// `prompt:return-url-not-allowed`, like `https://idp.example/mfa/return/%2e%2e/x`).

fn open_with_return_to(to: &str) -> Result<String, Error> {
    let claims = serde_json::json!({
        "iss": CLIENT, "aud": "mfa-step", "sub": USER, "org": ORG, "email": EMAIL,
        "return_to": to, "nonce": "n-1", "jti": "j-1", "iat": T0, "exp": T0 + 60,
    });
    let token = crate::prompt::sign(
        &PROMPT_KEY,
        r#"{"alg":"HS256","typ":"JWT"}"#,
        &serde_json::to_vec(&claims).unwrap(),
    );
    World::new()
        .engine()
        .open_prompt(
            &prompt_config(),
            &token,
            ("203.0.113.7", "t"),
            Timestamp(T0),
            &mut rng(1),
        )
        .map(|r| r.return_to)
}

#[test]
fn an_encoded_separator_does_not_make_a_dot_segment_pass() {
    assert!(
        open_with_return_to(&format!("{RETURN}/%2e%2e/x")).is_err(),
        "the encoded-dot spelling is refused"
    );
    assert!(open_with_return_to(&format!("{RETURN}/..%2Fx")).is_err());
}

#[test]
fn an_accepted_return_to_has_no_dot_segment_once_decoded() {
    let piece = prop::sample::select(vec![
        "..", ".", "a", "%2F", "%2f", "%5C", "%5c", "%2e", "%2E", "/",
    ]);
    check(512, prop::collection::vec(piece, 1..8), |pieces| {
        let to = format!("{RETURN}/{}", pieces.concat());
        if open_with_return_to(&to).is_ok() {
            let path = to.split('?').next().unwrap().to_ascii_lowercase();
            let decoded = path
                .replace("%2f", "/")
                .replace("%5c", "/")
                .replace("%2e", ".");
            let dotted = decoded.split('/').any(|s| s == "." || s == "..");
            if dotted {
                return Err(TestCaseError::fail(format!(
                    "accepted {to:?}, which decodes to a dot segment"
                )));
            }
        }
        Ok(())
    });
}
