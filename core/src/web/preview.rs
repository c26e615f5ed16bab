//! The page where an organization's admin previews its verification email in a browser.
//!
//! A browser carries no API key, so the page is opened through a short-lived link that the IdP's
//! admin console asks for on the admin's behalf (`preview-link`, authorized like every admin call):
//!
//! ```text
//! token   = hex(payload) "." hex(HMAC-SHA256(link key, payload))
//! payload = {"u": admin user id, "o": org id, "r": admin's roles, "x": expiry (Unix seconds)}
//! link key = HMAC-SHA256(host key, "mfa-step/admin-link/v1")
//! ```
//!
//! The link lives 5 minutes and only shows the preview (a sample code, the branding): it reveals
//! nothing the admin could not already read through `get-branding`, and changes nothing. Opening it
//! checks the MAC in constant time, the expiry, and the actor's right to administer the organization
//! again (a role revoked since is honoured within those 5 minutes only through the IdP's next link).

use askama::Template;
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::email::i18n;
use crate::engine::Engine;
use crate::kernel::error::{Error, Result};
use crate::kernel::input;
use crate::kernel::model::Actor;
use crate::kernel::secret::{HmacKey, hmac_sha256};
use crate::kernel::time::Timestamp;

/// How long a preview link works.
pub const LINK_TTL_SECONDS: i64 = 300;

const LINK_LABEL: &[u8] = b"mfa-step/admin-link/v1";

/// A link to the preview page. Its URL carries a signed bearer token: `Debug` shows the page's path
/// only.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct PreviewLink {
    /// The page's path and query, to be opened in the admin's browser.
    pub url: String,
    /// When it stops working.
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for PreviewLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = self.url.split('?').next().unwrap_or_default();
        f.debug_struct("PreviewLink")
            .field("url", &format_args!("{path}?<redacted>"))
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct Payload {
    u: String,
    o: String,
    r: Vec<String>,
    x: i64,
}

fn mac(key: &HmacKey, payload: &[u8]) -> Vec<u8> {
    let link_key = hmac_sha256(key.as_bytes(), &[LINK_LABEL]);
    hmac_sha256(&link_key, &[payload])
}

#[derive(Template)]
#[template(path = "web/admin_preview.html")]
struct Page<'a> {
    org: &'a str,
    subject: &'a str,
    html: &'a str,
    text: &'a str,
    token: &'a str,
    lang: &'a str,
    languages: Vec<(&'static str, String)>,
    expires: String,
}

fn invalid_link() -> Error {
    Error::Forbidden(
        "this preview link is not valid or has expired; open a new one from your admin console",
    )
}

impl Engine<'_> {
    /// A link to the preview page of `org`'s email, for an admin of it.
    ///
    /// # Errors
    /// [`Error::Forbidden`] (recorded); [`Error::InvalidInput`]; [`Error::Store`]; [`Error::Audit`].
    pub fn preview_link<R: CryptoRng + ?Sized>(
        &self,
        actor: &Actor,
        org: &str,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<PreviewLink> {
        let actor = self.canonical_actor(actor);
        let actor = actor.as_ref();
        let org = self.canonical_id(org);
        let org = org.as_ref();
        // The same check as the preview itself, refusals recorded.
        self.preview_email(actor, org, None, None, now, rng)?;
        let expires_at = now.plus(LINK_TTL_SECONDS);
        let payload = serde_json::to_vec(&Payload {
            u: actor.user_id.clone(),
            o: org.to_owned(),
            r: actor.roles.clone(),
            x: expires_at.0,
        })
        .map_err(|e| Error::Misconfigured(e.to_string()))?;
        let token = format!(
            "{}.{}",
            hex::encode(&payload),
            hex::encode(mac(self.key, &payload))
        );
        Ok(PreviewLink {
            url: format!("/admin/branding/preview?token={token}"),
            expires_at,
        })
    }

    /// The preview page a link opens, in `language` (else the organization's default).
    ///
    /// # Errors
    /// [`Error::Forbidden`] for a tampered, foreign or expired link, or an actor no longer allowed;
    /// [`Error::InvalidInput`]; [`Error::Store`].
    pub fn preview_page<R: CryptoRng + ?Sized>(
        &self,
        token: &str,
        language: Option<&str>,
        time_zone: Option<&str>,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<String> {
        let (payload_hex, mac_hex) = token.split_once('.').ok_or_else(invalid_link)?;
        let payload = hex::decode(payload_hex).map_err(|_| invalid_link())?;
        let presented = hex::decode(mac_hex).map_err(|_| invalid_link())?;
        if !bool::from(mac(self.key, &payload).ct_eq(&presented)) {
            return Err(invalid_link());
        }
        let payload: Payload = serde_json::from_slice(&payload).map_err(|_| invalid_link())?;
        if now.0 > payload.x {
            return Err(invalid_link());
        }
        let actor = Actor {
            user_id: payload.u,
            org_id: payload.o.clone(),
            roles: payload.r,
            ..Actor::default()
        };
        if let Some(tag) = language {
            input::text("lang", tag)?;
        }
        let mail = self.preview_email(&actor, &payload.o, language, time_zone, now, rng)?;
        let branding = self.branding_of(&payload.o)?;
        let lang = i18n::choose(language, &branding.default_language);
        let page = Page {
            org: &branding.display_name,
            subject: &mail.subject,
            html: &mail.html,
            text: &mail.text,
            token,
            lang,
            languages: i18n::supported()
                .into_iter()
                .map(|tag| (tag, i18n::messages(tag).language))
                .collect(),
            expires: Timestamp(payload.x).rfc3339(),
        };
        page.render()
            .map_err(|e| Error::Misconfigured(e.to_string()))
    }
}
