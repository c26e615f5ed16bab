//! Case 8: a flood of unsigned hosted-prompt requests. 500 `GET /prompt?request=<jwt>` whose
//! signature is wrong, half naming an organization that exists, half naming organizations that do
//! not. A request whose signature fails proves nothing about whom it names, so it must not write
//! into that organization's audit stream (anyone could fill it) nor create anything in the store
//! for an organization nobody made (anyone could fill the store): 0 records appended to the named
//! organization, 0 records and 0 store keys for the unknown ones. The refusals belong in a
//! host-level, rate-limited log.

use serde_json::json;

use crate::support::*;

const N: usize = 500;
/// Threads sending them: under the per-client cap (32 unauthenticated requests in flight).
const SENDERS: usize = 8;

/// Base64url without padding (RFC 4648 §5), as JWTs are written.
fn b64url(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ABC[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// A well-formed request for `user` of `org` whose signature is not the key's.
fn forged(org: &str, user: &str, i: usize, now: i64) -> String {
    let header = b64url(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = json!({
        "iss": PROMPT_CLIENT_ID,
        "aud": "mfa-step",
        "sub": user,
        "org": org,
        "email": email(user),
        "roles": ["provider"],
        "return_to": PROMPT_RETURN,
        "nonce": format!("nonce-{i}"),
        "jti": format!("forged-{i}"),
        "iat": now,
        "exp": now + 120,
    });
    let payload = b64url(claims.to_string().as_bytes());
    let signature = b64url(&[i as u8; 32]);
    format!("{header}.{payload}.{signature}")
}

#[test]
fn unsigned_prompt_requests_write_nothing_for_the_orgs_they_name() {
    let _serial = one_at_a_time();
    let s = Adversary::start("prompt");
    let named = "named-clinic";
    // The named organization exists: someone signed in there.
    s.sign_in(&ctx(named, "dr-real", &["provider"]));
    let before = s.audit().into_iter().filter(|r| r.org == named).count();
    let keys_before = s.keys().len();
    let now = s.now();

    let answers: Vec<Result<Reply, String>> = std::thread::scope(|scope| {
        let senders: Vec<_> = (0..SENDERS)
            .map(|t| {
                let s = &s;
                scope.spawn(move || {
                    (t..N)
                        .step_by(SENDERS)
                        .map(|i| {
                            let token = if i % 2 == 0 {
                                forged(named, &format!("victim-{i}"), i, now)
                            } else {
                                forged(&format!("ghost-org-{i}"), "victim", i, now)
                            };
                            http(
                                None,
                                &s.addr,
                                "GET",
                                &format!("/prompt?request={token}"),
                                &[],
                                "",
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        senders
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    });
    let statuses = {
        let mut m = std::collections::BTreeMap::<String, usize>::new();
        for a in &answers {
            let k = a
                .as_ref()
                .map_or_else(|e| e.clone(), |r| r.status.to_string());
            *m.entry(k).or_default() += 1;
        }
        m
    };
    let audit = s.audit();
    let appended = audit.iter().filter(|r| r.org == named).count() - before;
    let ghost_records = audit
        .iter()
        .filter(|r| r.org.starts_with("ghost-org-"))
        .count();
    let keys = s.keys();
    let ghost_keys = keys.iter().filter(|k| k.contains("ghost-org-")).count();
    eprintln!(
        "[prompt] {N} unsigned prompt requests (half naming {named}, half unknown orgs): statuses \
         {statuses:?}; audit records appended to {named}: {appended}; records in unknown orgs' \
         streams: {ghost_records}; store keys for unknown orgs: {ghost_keys} (store keys {} -> {})",
        keys_before,
        keys.len()
    );
    assert_eq!(
        statuses.get("403").copied().unwrap_or(0),
        N,
        "each forged request is refused with the 403 page: {statuses:?}"
    );
    assert_eq!(
        appended, 0,
        "records appended to {named} by unsigned requests"
    );
    assert_eq!(
        ghost_records, 0,
        "records in the streams of orgs that do not exist"
    );
    assert_eq!(
        ghost_keys, 0,
        "store keys created for orgs that do not exist"
    );
    s.verify_log();
}
