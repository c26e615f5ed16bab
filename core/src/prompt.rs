//! The hosted-prompt protocol: how an identity provider sends a browser to mfa-step and learns the
//! outcome, like Duo's hosted prompt. The pages that run in between arrive with the hosted-pages
//! work; this module is the part both sides must agree on, and it decides everything about it.
//!
//! Both messages are JWTs (RFC 7519) in compact form, signed with HMAC-SHA256 (`HS256`) under a key
//! the IdP and mfa-step share (`prompt_key`, at least 32 bytes, hex; never the host's `hmac_key`), so
//! any JWT library on the IdP's side can make and check them. Nothing but `{"alg":"HS256",
//! "typ":"JWT"}` is accepted as a header: `alg: none` and every other algorithm are refused.
//!
//! **Request** (IdP → browser → `GET /prompt?request=<jwt>`), claims:
//!
//! | claim | meaning |
//! |---|---|
//! | `iss` | the IdP's client id: must equal the `prompt_client_id` setting |
//! | `aud` | `"mfa-step"` |
//! | `sub`, `org`, `email`, `roles`, `locale` | the login context: who, in which organization, where codes go |
//! | `return_to` | where the browser goes back: must start with one of the `prompt_return_urls` |
//! | `nonce` | the IdP's value, echoed in the result to bind it to the IdP's session |
//! | `purpose` | optional: `"login"` (the default) or `"devices"`: after the second factor, the user manages their trusted browsers instead of returning at once |
//! | `jti` | a unique id: each request is accepted once |
//! | `iat`, `exp` | issued and expiry times (Unix seconds); at most 300 s apart, 30 s of clock skew allowed |
//!
//! **Result** (mfa-step → browser → `return_to?result=<jwt>`), claims `iss: "mfa-step"`, `aud` (the
//! IdP's client id), `sub`, `org`, `outcome` (`success`, `denied`, `cancelled`), `via` (how the
//! outcome came about: `code`, `trusted-device`, `not-required`, `grace`, `locked`, `cancelled`),
//! `amr` (RFC 8176: `["otp","mfa"]` after a code, `["mfa"]` for a trusted browser, `[]` otherwise),
//! `auth_time`, `nonce` (the request's), `jti`, `iat`, `exp` (`iat` + 120 s).
//! The IdP checks the signature, `aud`, `exp`, its own `nonce`, and accepts each `jti` once.
//!
//! A refused request is recorded (`access_denied`, reason `prompt:<why>`) in the stream of the
//! organization it names. A tampered request (`prompt:bad-signature`) is recorded under the
//! organization and user it claims, which the reason marks as unverified; a token too broken to
//! name anyone is refused without a record.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::audit::{Action, Event, Outcome};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::secret::HmacKey;
use crate::time::Timestamp;
use crate::{input, keys, otp};

/// The only header accepted, and the one results carry.
const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;
/// The audience requests must name.
pub const AUDIENCE: &str = "mfa-step";
/// The longest a request may live, from `iat` to `exp`.
pub const MAX_REQUEST_LIFETIME: i64 = 300;
/// Clock difference tolerated between the IdP and mfa-step.
pub const CLOCK_SKEW: i64 = 30;
/// How long a result is valid for the IdP.
pub const RESULT_LIFETIME: i64 = 120;

/// The protocol's settings: the shared key, the IdP's client id and where browsers may return.
pub struct PromptConfig {
    key: HmacKey,
    /// The IdP's client id (`iss` of requests, `aud` of results).
    pub client_id: String,
    /// Allowed starts of `return_to`, each an absolute `https://` URL (or `http://localhost…`).
    pub return_urls: Vec<String>,
}

impl std::fmt::Debug for PromptConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptConfig")
            .field("key", &"<redacted>")
            .field("client_id", &self.client_id)
            .field("return_urls", &self.return_urls)
            .finish()
    }
}

impl PromptConfig {
    /// Reads `prompt_key`, `prompt_client_id` and `prompt_return_urls` (comma-separated);
    /// `None` when `prompt_key` is not set (the hosted prompt is off).
    ///
    /// # Errors
    /// [`Error::Misconfigured`] for a short key, a missing client id or an unsafe return URL.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        let Some(key) = get("prompt_key") else {
            return Ok(None);
        };
        let key = HmacKey::from_hex(key.trim()).map_err(|_| {
            Error::Misconfigured("prompt_key must be at least 32 bytes in hex".into())
        })?;
        let client_id = get("prompt_client_id")
            .filter(|c| input::id("prompt_client_id", c).is_ok())
            .ok_or_else(|| {
                Error::Misconfigured("prompt_client_id must be set to the IdP's client id".into())
            })?;
        let return_urls: Vec<String> = get("prompt_return_urls")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect();
        if return_urls.is_empty() {
            return Err(Error::Misconfigured(
                "prompt_return_urls must list where browsers may return".into(),
            ));
        }
        if client_id == AUDIENCE {
            // Requests name the client as `iss` and results name mfa-step: the two must differ, or
            // a request could pass for a result at a careless IdP.
            return Err(Error::Misconfigured(format!(
                "prompt_client_id must not be `{AUDIENCE}`"
            )));
        }
        for url in &return_urls {
            if !safe_return_url(url) {
                return Err(Error::Misconfigured(format!(
                    "prompt_return_urls: `{url}` must be https://host/… (or http://localhost/…, http://127.0.0.1/…), with its host ended by a /, and no spaces, quotes, `;`, `@` or `#`"
                )));
            }
        }
        Ok(Some(Self {
            key,
            client_id,
            return_urls,
        }))
    }

    /// A config for tests and hosts that hold the parts already.
    #[must_use]
    pub fn new(key: HmacKey, client_id: &str, return_urls: &[&str]) -> Self {
        Self {
            key,
            client_id: client_id.to_owned(),
            return_urls: return_urls.iter().map(|u| (*u).to_owned()).collect(),
        }
    }

    fn mac(&self, signing_input: &[u8]) -> Vec<u8> {
        crate::secret::hmac_sha256(self.key.as_bytes(), &[signing_input])
    }

    /// A compact HS256 JWT of `claims`.
    pub(crate) fn sign<T: Serialize>(&self, claims: &T) -> Result<String> {
        let payload =
            serde_json::to_vec(claims).map_err(|e| Error::Misconfigured(e.to_string()))?;
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(HEADER),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let sig = URL_SAFE_NO_PAD.encode(self.mac(input.as_bytes()));
        Ok(format!("{input}.{sig}"))
    }

    /// The payload of a compact HS256 JWT signed with this key, or why not.
    pub(crate) fn open(&self, token: &str) -> std::result::Result<Vec<u8>, Refusal> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Refusal::Malformed);
        };
        let header = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| Refusal::Malformed)?;
        let header: serde_json::Value =
            serde_json::from_slice(&header).map_err(|_| Refusal::Malformed)?;
        if header != serde_json::json!({"alg": "HS256", "typ": "JWT"})
            && header != serde_json::json!({"alg": "HS256"})
        {
            return Err(Refusal::Algorithm);
        }
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| Refusal::Malformed)?;
        let input_len = token.len() - token.rsplit('.').next().map_or(0, str::len) - 1;
        let expected = self.mac(&token.as_bytes()[..input_len]);
        if !bool::from(expected.ct_eq(&sig)) {
            return Err(Refusal::Signature);
        }
        URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| Refusal::Malformed)
    }
}

/// An allowed start of `return_to`: `https://<host>[:port]/…`, or plain HTTP to this machine only
/// (`localhost`, `127.0.0.1`); printable ASCII without the characters that would change its meaning
/// in a URL or in the pages' `form-action` policy, which lists each one's origin.
fn safe_return_url(url: &str) -> bool {
    if !url.bytes().all(|b| b.is_ascii_graphic())
        || url.contains([';', ',', '"', '\'', '\\', '#', '@'])
    {
        return false;
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return false;
    };
    // The host must be ended by a `/`, so that `https://idp.example` cannot be extended to
    // `https://idp.example.evil.test`.
    let Some((authority, _)) = rest.split_once('/') else {
        return false;
    };
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        Some(_) => return false,
        None => authority,
    };
    match scheme {
        "https" => !host.is_empty(),
        "http" => host == "localhost" || host == "127.0.0.1",
        _ => false,
    }
}

/// Whether `to` is on the allow-list: it starts with an allowed URL at a path-segment boundary
/// (`…/return` allows `…/return?x` and `…/return/x`, not `…/returnX`), is printable ASCII, and has
/// no fragment and no dot segment.
fn return_allowed(allowed: &[String], to: &str) -> bool {
    let path = to.split('?').next().unwrap_or_default();
    let clean = to.bytes().all(|b| b.is_ascii_graphic())
        && !to.contains(['#', '\\'])
        && !path.split('/').any(|segment| {
            segment == "." || segment == ".." || segment.to_ascii_lowercase().contains("%2e")
        });
    clean
        && allowed.iter().any(|a| {
            to.strip_prefix(a.as_str()).is_some_and(|rest| {
                a.ends_with('/') || rest.is_empty() || rest.starts_with(['/', '?'])
            })
        })
}

/// The payload of a token whose signature did not hold, read only to name whom it claims to be
/// for in the record of its refusal.
fn unverified_payload(token: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(token.split('.').nth(1)?).ok()
}

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a compact JWT, or its parts do not decode.
    Malformed,
    /// A header other than HS256.
    Algorithm,
    /// The signature is not the shared key's: tampered, or from someone else.
    Signature,
    /// Claims missing, malformed or out of bounds.
    Claims,
    /// `iss` is not our IdP, or `aud` is not mfa-step.
    Audience,
    /// Past `exp`, or issued in the future, or living longer than allowed.
    Expired,
    /// This `jti` was accepted before.
    Replayed,
    /// `return_to` is not on the allow-list.
    ReturnUrl,
}

impl Refusal {
    /// The reason recorded, `prompt:<why>`.
    #[must_use]
    pub fn rule(self) -> &'static str {
        match self {
            Self::Malformed => "prompt:malformed",
            Self::Algorithm => "prompt:algorithm",
            Self::Signature => "prompt:bad-signature",
            Self::Claims => "prompt:bad-claims",
            Self::Audience => "prompt:wrong-audience",
            Self::Expired => "prompt:expired",
            Self::Replayed => "prompt:replayed",
            Self::ReturnUrl => "prompt:return-url-not-allowed",
        }
    }

    /// What the page tells the person holding the browser.
    #[must_use]
    pub fn message(self) -> &'static str {
        match self {
            Self::Malformed | Self::Algorithm | Self::Signature | Self::Claims => {
                "This sign-in link is not valid. Go back to your organization's sign-in page and start again."
            }
            Self::Audience => {
                "This sign-in link was made for another service. Go back to your organization's sign-in page."
            }
            Self::Expired => {
                "This sign-in link has expired. Go back to your organization's sign-in page and start again."
            }
            Self::Replayed => {
                "This sign-in link was already used. Go back to your organization's sign-in page and start again."
            }
            Self::ReturnUrl => {
                "This sign-in link would send you somewhere your organization has not approved, so it was refused."
            }
        }
    }
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

/// What the IdP sends the user for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PromptPurpose {
    /// The second factor of a login; the browser returns at once.
    #[default]
    Login,
    /// The second factor, then the trusted-browser page; the browser returns when the user is done.
    Devices,
}

/// An accepted request: the login the pages run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptRequest {
    /// The user.
    pub user_id: String,
    /// The organization.
    pub org_id: String,
    /// Where codes go (before enrollment).
    pub email: String,
    /// The user's roles.
    pub roles: Vec<String>,
    /// The user's language, if the IdP knows it.
    pub locale: Option<String>,
    /// Where the browser returns.
    pub return_to: String,
    /// The IdP's nonce, echoed in the result.
    pub nonce: String,
    /// The request's expiry.
    pub expires_at: Timestamp,
    /// Login or device management.
    #[serde(default)]
    pub purpose: PromptPurpose,
}

/// How the prompt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PromptOutcome {
    /// The second factor was given (or a trusted device or the policy let the user through).
    Success,
    /// The user may not sign in (locked).
    Denied,
    /// The user gave up.
    Cancelled,
}

/// What the result tells the IdP: the outcome, and how it came about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Success, denied, cancelled.
    pub outcome: PromptOutcome,
    /// `code`, `trusted-device`, `not-required`, `grace`, `locked` or `cancelled`.
    pub via: String,
    /// RFC 8176 methods.
    pub amr: Vec<String>,
}

#[derive(Serialize)]
struct ResultClaims<'a> {
    iss: &'static str,
    aud: &'a str,
    sub: &'a str,
    org: &'a str,
    outcome: PromptOutcome,
    via: &'a str,
    amr: &'a [String],
    auth_time: i64,
    nonce: &'a str,
    jti: String,
    iat: i64,
    exp: i64,
}

impl Engine<'_> {
    /// Accepts a signed request once, or refuses it (recorded when it names an organization
    /// trustworthily).
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
        // A token whose signature fails is still read for whom it names: the refusal of a
        // tampered request is recorded in that organization's stream (its claims are marked as
        // unverified by the reason, `prompt:bad-signature`).
        let (payload, forged) = match config.open(token) {
            Ok(payload) => (payload, false),
            Err(Refusal::Signature) => match unverified_payload(token) {
                Some(payload) => (payload, true),
                None => return Ok(Err(Refusal::Signature)),
            },
            Err(refusal) => return Ok(Err(refusal)),
        };
        let Ok(claims) = serde_json::from_slice::<RequestClaims>(&payload) else {
            return Ok(Err(if forged {
                Refusal::Signature
            } else {
                Refusal::Claims
            }));
        };
        let refuse = |refusal: Refusal,
                      rng: &mut R|
         -> Result<std::result::Result<PromptRequest, Refusal>> {
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
        if forged {
            return refuse(Refusal::Signature, rng);
        }
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
            .increment(&keys::prompt_request(&config.client_id, &claims.jti), 1)
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
        }))
    }

    /// The URL that returns the browser to the IdP with the signed outcome.
    ///
    /// # Errors
    /// [`Error::Misconfigured`] if the claims cannot be serialized (never, for these types).
    pub fn prompt_result<R: CryptoRng + ?Sized>(
        &self,
        config: &PromptConfig,
        request: &PromptRequest,
        verdict: &Verdict,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<String> {
        let token = config.sign(&ResultClaims {
            iss: AUDIENCE,
            aud: &config.client_id,
            sub: &request.user_id,
            org: &request.org_id,
            outcome: verdict.outcome,
            via: &verdict.via,
            amr: &verdict.amr,
            auth_time: now.0,
            nonce: &request.nonce,
            jti: otp::new_id(rng),
            iat: now.0,
            exp: now.0 + RESULT_LIFETIME,
        })?;
        let separator = if request.return_to.contains('?') {
            '&'
        } else {
            '?'
        };
        Ok(format!("{}{separator}result={token}", request.return_to))
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly on purpose"
)]
mod tests {
    use super::*;
    use crate::testing::{MemAudit, MemMailer, MemStore};
    use crate::{Settings, Store as _};
    use rand_core::{OsRng, TryRngCore};

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
    fn tampered_foreign_expired_and_misdirected_requests_are_refused_and_recorded() {
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
        // The tampered and foreign-signed ones are recorded under whom they claim, as unverified;
        // `alg: none` is refused before anything is read.
        let reasons: Vec<String> = w
            .audit
            .entries
            .borrow()
            .iter()
            .map(|e| e.line.clone())
            .collect();
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(reasons[0].contains("\"reason\":\"prompt:bad-signature\""));
        assert!(reasons[0].contains("\"subject\":\"someone-else\""));
        assert!(reasons[1].contains("prompt:bad-signature"));

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
                .increment(&keys::prompt_request("idp-1", "r2"), 0)
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
}
