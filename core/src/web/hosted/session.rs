//! Prompt sessions: what a browser holds between accepting a request and returning to the IdP.
//!
//! A session's id is 128 random bits in an `HttpOnly`, `Secure`, `SameSite=Lax`, `__Host-` cookie;
//! the store keeps the session under `HMAC(key, id)`, so reading the store does not yield a usable
//! cookie. A session carries the accepted request, its CSRF token (which is why it has no `Debug`),
//! the open challenge and, once the second factor is given, how it was given. Opening a request
//! ends any session the browser left behind.

use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};

use super::{
    SESSION_COOKIE, SESSION_TTL_SECONDS, WebRequest, WebResponse, cookie_value, field, short_agent,
};
use crate::devices;
use crate::engine::Engine;
use crate::kernel::error::Result;
use crate::kernel::model::ChallengeView;
use crate::kernel::secret;
use crate::kernel::time::Timestamp;
use crate::kernel::{keys, random};
use crate::web::prompt::{PromptConfig, PromptRequest, Refusal};

/// How a finished second factor came about: the result's `via` and `amr`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Passed {
    pub(super) via: String,
    pub(super) amr: Vec<String>,
}

/// A prompt session as stored. No `Debug`: it holds the CSRF token.
#[derive(Clone, Serialize, Deserialize)]
pub(super) struct Session {
    pub(super) v: u8,
    pub(super) request: PromptRequest,
    pub(super) csrf: String,
    pub(super) expires_at: Timestamp,
    pub(super) challenge: Option<ChallengeView>,
    pub(super) passed: Option<Passed>,
    pub(super) denied: bool,
    pub(super) notice: Option<Notice>,
}

/// A message for the next page, after a redirect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) enum Notice {
    Revoked,
}

/// The session cookie.
pub(super) fn session_cookie(id: &str, max_age: i64) -> String {
    cookie::Cookie::build((SESSION_COOKIE, id.to_owned()))
        .http_only(true)
        .secure(true)
        .same_site(cookie::SameSite::Lax)
        .path("/")
        .max_age(cookie::time::Duration::seconds(max_age.max(0)))
        .build()
        .to_string()
}

/// A `Set-Cookie` that removes the device cookie from this browser.
pub(super) fn clear_device_cookie() -> String {
    cookie::Cookie::build((devices::COOKIE_NAME, ""))
        .http_only(true)
        .secure(true)
        .same_site(cookie::SameSite::Lax)
        .path("/")
        .max_age(cookie::time::Duration::ZERO)
        .build()
        .to_string()
}

impl Engine<'_> {
    /// `GET /prompt?request=<jwt>`: accept the request once and open a session.
    pub(super) fn open_session<R: CryptoRng + ?Sized>(
        &self,
        config: &PromptConfig,
        req: &WebRequest<'_>,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<WebResponse> {
        let token = field(req.query.as_bytes(), "request").unwrap_or_default();
        let checked = self.check_prompt(
            config,
            &token,
            (req.client_ip, &short_agent(req.user_agent)),
            now,
            rng,
        )?;
        let request = match checked {
            Ok(request) => request,
            Err(refusal) => {
                let ui = self.ui(Some(config), None, req, rng);
                let body = match refusal {
                    Refusal::Malformed
                    | Refusal::Algorithm
                    | Refusal::Signature
                    | Refusal::Claims => &ui.t.refused_invalid,
                    Refusal::Audience => &ui.t.refused_audience,
                    Refusal::Expired => &ui.t.refused_expired,
                    Refusal::Replayed => &ui.t.refused_replayed,
                    Refusal::ReturnUrl => &ui.t.refused_return,
                };
                return Ok(ui.status(403, "refused", &ui.t.refused_heading, body, None, false));
            }
        };
        // A session this browser left behind is over.
        if let Some(old) = cookie_value(req.cookies, SESSION_COOKIE) {
            let _ = self.store.delete(&self.session_key(old));
        }
        let id = random::new_id(rng);
        let session = Session {
            v: 1,
            request,
            csrf: random::new_id(rng),
            expires_at: now.plus(SESSION_TTL_SECONDS),
            challenge: None,
            passed: None,
            denied: false,
            notice: None,
        };
        self.put_session(&self.session_key(&id), &session)?;
        Ok(WebResponse::redirect("/prompt/step")
            .with_cookie(Some(session_cookie(&id, SESSION_TTL_SECONDS))))
    }

    /// Writes a session, kept until a little after it ends (an abandoned one is then swept).
    pub(super) fn put_session(&self, key: &str, session: &Session) -> Result<()> {
        self.put(key, session, keys::keep_until(session.expires_at))
    }

    pub(super) fn session_key(&self, id: &str) -> String {
        let mac = secret::hmac_sha256(
            self.key.as_bytes(),
            &[b"mfa-step/prompt-session/v1\0", id.as_bytes()],
        );
        keys::prompt_session(&hex::encode(mac))
    }
}
