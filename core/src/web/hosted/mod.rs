//! The hosted pages: what a clinician's browser sees between the identity provider's password page
//! and its return, like Duo's hosted prompt. Every decision here is the engine's; the component
//! (`guest/`) only turns an HTTP request into a [`WebRequest`] and a [`WebResponse`] back.
//!
//! ```text
//! IdP ──302──▶ GET /prompt?request=<jwt> ── refused ──▶ 403 page (recorded)
//!                   │ accepted once: session cookie __Host-mfa-prompt, 303
//!                   ▼
//!              GET /prompt/step ── trusted browser / not required ──▶ 303 return_to?result=<jwt>
//!                   │ challenge: the email goes out at once                 ▲
//!                   ▼                                                       │
//!              code page ── POST /prompt/verify (right code) ───────────────┤
//!                   ├─ POST /prompt/resend (same code while it lives; throttled → retry time)
//!                   ├─ POST /prompt/cancel ──▶ result "cancelled"
//!                   └─ locked ──▶ locked page ──▶ result "denied"
//! devices sessions (`purpose: devices`): after the second factor, GET /prompt/devices lists the
//! user's trusted browsers (revoke one, revoke all), and POST /prompt/done returns.
//! ```
//!
//! **Sessions.** Opening a request creates a session: a random 128-bit id in an `HttpOnly`, `Secure`,
//! `SameSite=Lax`, `__Host-` cookie; the store keeps it under `HMAC(key, id)`, so reading the store
//! does not yield a usable cookie. It lives [`SESSION_TTL_SECONDS`] and ends when the browser returns.
//!
//! **Forms.** Every form carries the session's CSRF token (128 random bits, compared in constant time)
//! on top of `SameSite=Lax`. Pages run no script at all: the CSP has no `script-src`, styles need the
//! response's nonce, `form-action` allows only this origin and the IdP's return origins (a form's
//! redirect back to the IdP is checked against it), and nothing may frame a page.
//!
//! **Words.** Pages speak the user's language (the request's `locale`, else the browser's
//! `Accept-Language`, else the organization's default) and wear the organization's name, logo and
//! color; the header's text is black or white, whichever contrasts more with that color.
//!
//! The seams: routing, the request and response types and the session gate (CSRF check, expiry)
//! are here; `session.rs` opens and keys sessions, `ui.rs` renders pages, `code.rs` runs the second
//! factor and `devices.rs` the trusted-browser pages.

mod code;
mod devices;
mod session;
#[cfg(test)]
mod tests;
pub(in crate::web) mod ui;

use rand_core::CryptoRng;
use subtle::ConstantTimeEq;

use self::session::Session;
use self::ui::Ui;
use crate::engine::Engine;
use crate::kernel::error::Result;
use crate::kernel::model::{Actor, BrowserTraits, DevicePresentation, LoginContext};
use crate::kernel::time::Timestamp;
use crate::web::prompt::PromptConfig;

/// The prompt session's cookie.
pub const SESSION_COOKIE: &str = "__Host-mfa-prompt";
/// How long a prompt session lives from the moment the request is accepted.
pub const SESSION_TTL_SECONDS: i64 = 900;
/// Longest user agent kept for the records; longer ones are cut (at a character boundary).
const MAX_AGENT: usize = 256;

/// The request methods the pages tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebMethod {
    /// `GET`.
    Get,
    /// `POST`.
    Post,
    /// Anything else.
    Other,
}

/// A browser's request, as the host received it. Its cookies and form hold secrets (the session,
/// the device token, a code): `Debug` shows neither.
#[derive(Clone, Copy)]
pub struct WebRequest<'a> {
    /// Method.
    pub method: WebMethod,
    /// Path, without the query.
    pub path: &'a str,
    /// The query, without `?`.
    pub query: &'a str,
    /// The body (`application/x-www-form-urlencoded` for the pages' forms).
    pub form: &'a [u8],
    /// The `Cookie` header, all of it.
    pub cookies: &'a str,
    /// `User-Agent`.
    pub user_agent: &'a str,
    /// The client's IP, as the host saw it (never a header the client could set).
    pub client_ip: &'a str,
    /// `Accept-Language`.
    pub accept_language: &'a str,
}

impl std::fmt::Debug for WebRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("form", &format_args!("<{} bytes>", self.form.len()))
            .field("cookies", &"<redacted>")
            .field("client_ip", &self.client_ip)
            .finish_non_exhaustive()
    }
}

/// What the host sends back. Its cookies and its redirect to the IdP (a signed result) are
/// bearer secrets: `Debug` shows the header names only.
#[derive(Clone, PartialEq, Eq)]
pub struct WebResponse {
    /// Status.
    pub status: u16,
    /// The page, if any (a redirect has none).
    pub html: Option<String>,
    /// Headers: `location`, `set-cookie` (possibly several), `content-security-policy`,
    /// `retry-after`.
    pub headers: Vec<(&'static str, String)>,
}

impl std::fmt::Debug for WebResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(k, _)| *k).collect();
        f.debug_struct("WebResponse")
            .field("status", &self.status)
            .field("headers", &names)
            .finish_non_exhaustive()
    }
}

impl WebResponse {
    fn redirect(to: &str) -> Self {
        Self {
            status: 303,
            html: None,
            headers: vec![("location", to.to_owned())],
        }
    }

    fn with_cookie(mut self, cookie: Option<String>) -> Self {
        if let Some(c) = cookie {
            self.headers.push(("set-cookie", c));
        }
        self
    }
}

/// One cookie's value from a `Cookie` header.
pub(in crate::web) fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim())
}

/// One field of a form or query, percent-decoded.
pub(in crate::web) fn field(body: &[u8], name: &str) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A user agent as the records keep it: control characters dropped, cut at [`MAX_AGENT`] bytes (at
/// a character boundary). A browser cannot send a header the login's checks would refuse.
pub(in crate::web) fn short_agent(agent: &str) -> String {
    let mut kept = String::new();
    for ch in agent.chars().filter(|c| !c.is_control()) {
        if kept.len() + ch.len_utf8() > MAX_AGENT {
            break;
        }
        kept.push(ch);
    }
    kept
}

impl Engine<'_> {
    /// Answers one browser request to a `/prompt` page. Never fails: a host failure (store, mail,
    /// audit) is a "try again" page that changed nothing, and without `config` the pages are off.
    pub fn hosted_page<R: CryptoRng + ?Sized>(
        &self,
        config: Option<&PromptConfig>,
        req: &WebRequest<'_>,
        now: Timestamp,
        rng: &mut R,
    ) -> WebResponse {
        let ui = self.ui(config, None, req, rng);
        let Some(config) = config else {
            return ui.status(404, "off", &ui.t.off_heading, &ui.t.off_body, None, false);
        };
        // Each session page: whether it is a form (its CSRF token is checked), and its handler.
        let page: (bool, Handler<Self, R>) = match (req.method, req.path) {
            (WebMethod::Get, "/prompt") => {
                return self
                    .open_session(config, req, now, rng)
                    .unwrap_or_else(|_| ui.unavailable());
            }
            (WebMethod::Get, "/prompt/step") => (false, Self::step),
            (WebMethod::Post, "/prompt/verify") => (true, Self::verify_form),
            (WebMethod::Post, "/prompt/resend") => (true, Self::resend),
            (WebMethod::Post, "/prompt/cancel") => (true, Self::cancel),
            (WebMethod::Get, "/prompt/devices") => (false, Self::devices_page),
            (WebMethod::Post, "/prompt/devices/revoke") => (true, Self::revoke),
            (WebMethod::Post, "/prompt/devices/revoke-all") => (true, Self::revoke_all),
            (WebMethod::Post, "/prompt/done") => (true, Self::done),
            (
                _,
                "/prompt"
                | "/prompt/step"
                | "/prompt/verify"
                | "/prompt/resend"
                | "/prompt/cancel"
                | "/prompt/devices"
                | "/prompt/devices/revoke"
                | "/prompt/devices/revoke-all"
                | "/prompt/done",
            ) => {
                let t = &ui.t;
                return ui.status(
                    405,
                    "refused",
                    &t.refused_heading,
                    &t.form_stale,
                    None,
                    false,
                );
            }
            _ => {
                let t = &ui.t;
                return ui.status(
                    404,
                    "expired",
                    &t.expired_heading,
                    &t.expired_body,
                    None,
                    false,
                );
            }
        };
        let (form, handler) = page;
        let answer = self.with_session(config, req, now, rng, form, handler);
        answer.unwrap_or_else(|_| ui.unavailable())
    }

    /// Loads the browser's session (an expired or unknown one is the expired page), checks the
    /// form's CSRF token when `form`, and runs `f`.
    fn with_session<R: CryptoRng + ?Sized>(
        &self,
        config: &PromptConfig,
        req: &WebRequest<'_>,
        now: Timestamp,
        rng: &mut R,
        form: bool,
        f: Handler<Self, R>,
    ) -> Result<WebResponse> {
        let id = cookie_value(req.cookies, SESSION_COOKIE).unwrap_or_default();
        let key = self.session_key(id);
        let session = if id.is_empty() {
            None
        } else {
            self.load_json::<Session>(&key)?
        };
        let Some(mut session) = session.filter(|s| now <= s.expires_at) else {
            return Ok(self.ui(Some(config), None, req, rng).expired());
        };
        let ui = self.ui(Some(config), Some(&session.request), req, rng);
        if form {
            let presented = field(req.form, "csrf").unwrap_or_default();
            if !bool::from(presented.as_bytes().ct_eq(session.csrf.as_bytes())) {
                return Ok(ui.status(
                    403,
                    "refused",
                    &ui.t.refused_heading,
                    &ui.t.form_stale,
                    None,
                    false,
                ));
            }
        }
        let ctx = Ctx {
            config,
            req,
            now,
            ui,
            key,
        };
        // A host failure past this point is the "try again" page in the session's own language.
        Ok(f(self, &ctx, &mut session, rng).unwrap_or_else(|_| ctx.ui.unavailable()))
    }
}

/// A session page's handler: the engine, the request's context, the loaded session, the RNG.
type Handler<E, R> = fn(&E, &Ctx<'_>, &mut Session, &mut R) -> Result<WebResponse>;

/// One request's context for the session handlers.
struct Ctx<'a> {
    config: &'a PromptConfig,
    req: &'a WebRequest<'a>,
    now: Timestamp,
    ui: Ui,
    key: String,
}

impl Ctx<'_> {
    fn device_cookie(&self) -> Option<&str> {
        cookie_value(self.req.cookies, crate::devices::COOKIE_NAME)
    }

    /// The login the session runs, from this browser and network.
    fn login(&self, s: &Session) -> LoginContext {
        let r = &s.request;
        LoginContext {
            user_id: r.user_id.clone(),
            org_id: r.org_id.clone(),
            email: r.email.clone(),
            roles: r.roles.clone(),
            locale: Some(self.ui.lang.to_owned()),
            device: DevicePresentation {
                cookie: self.device_cookie().map(str::to_owned),
                traits: BrowserTraits {
                    user_agent: short_agent(self.req.user_agent),
                    ..BrowserTraits::default()
                },
                ip: self.req.client_ip.to_owned(),
            },
        }
    }

    fn actor(&self, s: &Session) -> Actor {
        Actor {
            user_id: s.request.user_id.clone(),
            org_id: s.request.org_id.clone(),
            roles: s.request.roles.clone(),
            ip: self.req.client_ip.to_owned(),
            user_agent: short_agent(self.req.user_agent),
        }
    }
}
