//! A hosted-prompt request that is not signed with the prompt key names nothing anyone vouches for:
//! a flood of them, naming a real organization and invented ones, appends nothing to any stream and
//! writes nothing to the store; each refusal is only noted for the host's own log.

use std::sync::Arc;

use serde_json::json;

use crate::common::*;

const PROMPT_KEY: &str = "5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c";
/// Not the prompt key: what an attacker who does not hold it signs with.
const WRONG_KEY: &[u8] = b"not-the-prompt-key-not-the-prompt-key";

fn forged(org: &str, jti: &str) -> String {
    let claims = json!({
        "iss": "idp-test", "aud": "mfa-step", "sub": "dr-victim", "org": org,
        "email": "dr-victim@clinic.example", "roles": ["provider"],
        "return_to": "https://idp.example/mfa/return", "nonce": "n", "jti": jti,
        "iat": T0, "exp": T0 + 60,
    });
    let key = jsonwebtoken::EncodingKey::from_secret(WRONG_KEY);
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
}

#[tokio::test]
async fn a_flood_of_unsigned_prompt_requests_appends_nothing_and_stores_nothing() {
    let config = host_harness::Config::new([
        ("hmac_key", HMAC_KEY),
        ("api_key", API_KEY),
        ("prompt_key", PROMPT_KEY),
        ("prompt_client_id", "idp-test"),
        ("prompt_return_urls", "https://idp.example/mfa/"),
    ]);
    let h = Harness::with(
        http_app(),
        Arc::new(host_harness::backends::MemoryStore::new()),
        config,
    );
    // The real organization has a stream already.
    h.challenge(&ctx("dr-a")).await;
    let records = h.audit_records().len();
    let before = h.snapshot();

    const FLOOD: usize = 300;
    for i in 0..FLOOD {
        let org = if i % 2 == 0 {
            "acme-health".to_owned()
        } else {
            format!("ghost-{i}")
        };
        let path = format!("/prompt?request={}", forged(&org, &format!("j{i}")));
        let reply = h
            .http_with(
                "GET",
                &path,
                &[("user-agent", "flood/1".to_owned())],
                Vec::new(),
            )
            .await;
        assert_eq!(reply.status, 403, "request {i}");
    }

    assert_eq!(h.audit_records().len(), records, "a stream grew");
    assert_eq!(h.snapshot(), before, "the store changed");
    let ghost_keys = h.tracked.keys_with_prefix("v1:");
    assert!(
        !ghost_keys.iter().any(|k| k.contains("ghost-")),
        "keys for invented organizations: {ghost_keys:?}"
    );
    let notes = h.audit.inner().notes();
    assert_eq!(
        notes.len(),
        FLOOD,
        "every refusal is noted for the host's log"
    );
    assert!(notes.iter().all(|n| n.rule == "prompt:bad-signature"));
    assert_eq!(
        notes
            .iter()
            .filter(|n| n.claimed_org.as_deref() == Some("acme-health"))
            .count(),
        FLOOD / 2
    );
    eprintln!(
        "{FLOOD} unsigned requests: 0 records, 0 keys, {} notes",
        notes.len()
    );
}
