//! Accepting a request (IdP → browser → `GET /prompt?request=<jwt>`): its signature, its claims,
//! its times, where it sends the browser back, and that it is used once. The first refusal of a
//! signed request that names an organization is recorded in that organization's stream; later
//! ones, and every refusal of a request not signed with the prompt key, are noted in the host's
//! log only.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand_core::CryptoRng;
use serde::Deserialize;

use super::{
    AUDIENCE, CLOCK_SKEW, MAX_REQUEST_LIFETIME, PromptConfig, PromptPurpose, PromptRequest, Refusal,
};
use crate::audit::{Action, Event, Outcome};
use crate::engine::Engine;
use crate::kernel::error::{Error, Result};
use crate::kernel::ports::RefusalNote;
use crate::kernel::time::Timestamp;
use crate::kernel::{input, keys};

/// Whether `to` is on the allow-list: it starts with an allowed URL at a path-segment boundary
/// (`…/return` allows `…/return?x` and `…/return/x`, not `…/returnX`), is printable ASCII, and has
/// no fragment, no dot segment and no percent-encoded dot, slash, backslash or percent in its path.
fn return_allowed(allowed: &[String], to: &str) -> bool {
    let path = to.split('?').next().unwrap_or_default();
    let lower = path.to_ascii_lowercase();
    // No encoded dot, slash, backslash or percent in the path: a server that decodes them before
    // it resolves dot segments would otherwise leave the allowed prefix (`…/return/..%2Fadmin`).
    let encoded = ["%2e", "%2f", "%5c", "%25"]
        .iter()
        .any(|e| lower.contains(e));
    let clean = to.bytes().all(|b| b.is_ascii_graphic())
        && !to.contains(['#', '\\'])
        && !encoded
        && !path.split('/').any(|segment| {
            // `..;x` is a dot segment to servers that strip path parameters first.
            let name = segment.split(';').next().unwrap_or_default();
            name == "." || name == ".."
        });
    clean
        && allowed.iter().any(|a| {
            to.strip_prefix(a.as_str()).is_some_and(|rest| {
                a.ends_with('/') || rest.is_empty() || rest.starts_with(['/', '?'])
            })
        })
}

/// How long the refusal of a signed request is remembered: it is recorded again at most this often.
const REFUSAL_MEMORY_SECONDS: i64 = 86_400;

/// How much of a user agent a refusal note keeps.
const NOTED_USER_AGENT_CHARS: usize = 256;

/// The organization an unsigned payload claims, for the note of its refusal.
#[derive(Deserialize)]
struct ClaimedOrg {
    org: String,
}

/// The payload of a token whose signature did not hold, read only to name the organization it
/// claims in the note of its refusal.
fn unverified_payload(token: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(token.split('.').nth(1)?).ok()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestClaims {
    iss: String,
    aud: String,
    sub: String,
    org: String,
    email: String,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    locale: Option<String>,
    return_to: String,
    nonce: String,
    jti: String,
    iat: i64,
    exp: i64,
    #[serde(default)]
    purpose: PromptPurpose,
}

impl Engine<'_> {
    /// Notes the refusal of a request that is not signed with the prompt key in the host's log,
    /// with the organization it claims when its payload names a valid one.
    fn note_unsigned(&self, refusal: Refusal, token: &str, where_from: (&str, &str)) {
        let claimed_org = unverified_payload(token)
            .and_then(|p| serde_json::from_slice::<ClaimedOrg>(&p).ok())
            .map(|c| c.org);
        self.note(refusal, claimed_org.as_deref(), where_from);
    }

    /// Notes a refusal in the host's log (never a stream), with the organization the request
    /// names when that is a valid id.
    fn note(&self, refusal: Refusal, org: Option<&str>, (ip, user_agent): (&str, &str)) {
        self.audit.note_refusal(&RefusalNote {
            rule: refusal.rule().to_owned(),
            claimed_org: org
                .filter(|org| input::id("org", org).is_ok())
                .map(str::to_owned),
            ip: (!ip.is_empty()).then(|| ip.to_owned()),
            user_agent: (!user_agent.is_empty())
                .then(|| user_agent.chars().take(NOTED_USER_AGENT_CHARS).collect()),
        });
    }

    /// Accepts a signed request once, or refuses it (recorded once when it is signed and names an
    /// organization; noted in the host's log otherwise).
    ///
    /// # Errors
    /// [`Error::Forbidden`] with the page's message; [`Error::Store`]; [`Error::Audit`].
    pub fn open_prompt<R: CryptoRng + ?Sized>(
        &self,
        config: &PromptConfig,
        token: &str,
        where_from: (&str, &str),
        now: Timestamp,
        rng: &mut R,
    ) -> Result<PromptRequest> {
        self.check_prompt(config, token, where_from, now, rng)?
            .map_err(|r| Error::Forbidden(r.message()))
    }

    /// [`Self::open_prompt`], with the refusal as a value for a page to explain in its language.
    /// The outer error is a host failure (store, audit).
    pub(crate) fn check_prompt<R: CryptoRng + ?Sized>(
        &self,
        config: &PromptConfig,
        token: &str,
        where_from: (&str, &str),
        now: Timestamp,
        rng: &mut R,
    ) -> Result<std::result::Result<PromptRequest, Refusal>> {
        // A token that is not signed with the prompt key names nothing anyone vouches for: its
        // refusal is noted in the host's own log, never in the stream of the organization it
        // claims (see `wit/audit.wit`, `note-refusal`), and it changes nothing in the store.
        let payload = match config.open(token) {
            Ok(payload) => payload,
            Err(refusal) => {
                self.note_unsigned(refusal, token, where_from);
                return Ok(Err(refusal));
            }
        };
        let Ok(mut claims) = serde_json::from_slice::<RequestClaims>(&payload) else {
            return Ok(Err(Refusal::Claims));
        };
        // The IdP's ids as the core uses them (`id_case`); the result names them as sent.
        let sent = (claims.sub.clone(), claims.org.clone());
        claims.org = self.canonical_id(&claims.org).into_owned();
        claims.sub = self.canonical_id(&claims.sub).into_owned();
        let as_sent = (sent != (claims.sub.clone(), claims.org.clone())).then_some(sent);
        for role in &mut claims.roles {
            *role = self.canonical_id(role).into_owned();
        }
        // From here the request is signed by the identity provider: a refusal is recorded in the
        // stream of the organization it names, when that is a valid id.
        let refuse = |refusal: Refusal,
                      rng: &mut R|
         -> Result<std::result::Result<PromptRequest, Refusal>> {
            // Once per request: replaying one signed URL (from a browser's history) a million
            // times appends one record, and notes the rest in the host's log.
            let first = input::id("jti", &claims.jti).is_ok()
                && self
                    .store
                    .increment(
                        &keys::prompt_refused(&config.client_id, &claims.jti),
                        1,
                        keys::keep_until(now.plus(REFUSAL_MEMORY_SECONDS)),
                    )
                    .map_err(Error::store)?
                    == 1;
            if !first {
                self.note(refusal, Some(&claims.org), where_from);
                return Ok(Err(refusal));
            }
            if input::id("org", &claims.org).is_ok() && input::id("sub", &claims.sub).is_ok() {
                let event = Event {
                    org: claims.org.clone(),
                    actor: claims.sub.clone(),
                    subject: claims.sub.clone(),
                    action: Action::AccessDenied,
                    outcome: Outcome::Denied,
                    reason: Some(refusal.rule().to_owned()),
                    ip: (!where_from.0.is_empty()).then(|| where_from.0.to_owned()),
                    user_agent: (!where_from.1.is_empty()).then(|| where_from.1.to_owned()),
                    device_id: None,
                    challenge_id: None,
                };
                self.record(event, now, rng)?;
            }
            Ok(Err(refusal))
        };
        let well_formed = input::id("sub", &claims.sub).is_ok()
            && input::id("org", &claims.org).is_ok()
            && input::email(&claims.email).is_ok()
            && input::roles(&claims.roles).is_ok()
            && input::id("jti", &claims.jti).is_ok()
            && !claims.nonce.is_empty()
            && claims.nonce.len() <= 256;
        if !well_formed {
            return refuse(Refusal::Claims, rng);
        }
        if claims.iss != config.client_id || claims.aud != AUDIENCE {
            return refuse(Refusal::Audience, rng);
        }
        // Saturating and checked: hostile numbers must not wrap past the bounds.
        let lifetime = claims.exp.checked_sub(claims.iat);
        if now.0 > claims.exp.saturating_add(CLOCK_SKEW)
            || claims.iat > now.0.saturating_add(CLOCK_SKEW)
            || lifetime.is_none_or(|l| !(0..=MAX_REQUEST_LIFETIME).contains(&l))
        {
            return refuse(Refusal::Expired, rng);
        }
        if !return_allowed(&config.return_urls, &claims.return_to) {
            return refuse(Refusal::ReturnUrl, rng);
        }
        let uses = self
            .store
            .increment(
                &keys::prompt_request(&config.client_id, &claims.jti),
                1,
                // The use is remembered as long as the request could be accepted.
                keys::guard_until(Timestamp(claims.exp.saturating_add(CLOCK_SKEW))),
            )
            .map_err(Error::store)?;
        if uses != 1 {
            return refuse(Refusal::Replayed, rng);
        }
        Ok(Ok(PromptRequest {
            user_id: claims.sub,
            org_id: claims.org,
            email: claims.email,
            roles: claims.roles,
            locale: claims.locale,
            return_to: claims.return_to,
            nonce: claims.nonce,
            expires_at: Timestamp(claims.exp),
            purpose: claims.purpose,
            as_sent,
        }))
    }
}
