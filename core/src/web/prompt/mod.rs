//! The hosted-prompt protocol: how an identity provider sends a browser to mfa-step and learns the
//! outcome, like Duo's hosted prompt. The pages that run in between are [`super::hosted`]; this
//! module is the part both sides must agree on, and it decides everything about it: the shared key
//! and settings here, accepting a request in `request.rs`, signing the result in `result.rs`.
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
//! A refused request that is signed with the prompt key is recorded (`access_denied`, reason
//! `prompt:<why>`) in the stream of the organization it names, once per request (its `jti`):
//! replays of one URL are noted in the host's log after that. A request not signed with the key
//! (`prompt:bad-signature`, `prompt:algorithm`, `prompt:malformed`) names only what its sender
//! chose: it is noted in the host's log (`audit.note-refusal`), never recorded, and writes nothing
//! to the store.

mod request;
mod result;
#[cfg(test)]
mod tests;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::kernel::error::{Error, Result};
use crate::kernel::input;
use crate::kernel::secret::{self, HmacKey};
use crate::kernel::time::Timestamp;

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
        secret::hmac_sha256(self.key.as_bytes(), &[signing_input])
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
    /// The user and organization ids exactly as the IdP sent them, when `id_case = fold` changed
    /// them: the result names them as sent, so that the IdP finds its own sign-in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_sent: Option<(String, String)>,
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
