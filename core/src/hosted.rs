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

use askama::Template;
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::branding::Branding;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::i18n::{self, PageText};
use crate::model::{
    Actor, BrowserTraits, ChallengeView, Decision, DevicePresentation, LoginContext, Purpose,
};
use crate::prompt::{PromptConfig, PromptOutcome, PromptPurpose, PromptRequest, Refusal, Verdict};
use crate::time::Timestamp;
use crate::{devices, keys, otp};

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

/// How a finished second factor came about: the result's `via` and `amr`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Passed {
    via: String,
    amr: Vec<String>,
}

/// A prompt session as stored. No `Debug`: it holds the CSRF token.
#[derive(Clone, Serialize, Deserialize)]
struct Session {
    v: u8,
    request: PromptRequest,
    csrf: String,
    expires_at: Timestamp,
    challenge: Option<ChallengeView>,
    passed: Option<Passed>,
    denied: bool,
    notice: Option<Notice>,
}

/// A message for the next page, after a redirect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Notice {
    Revoked,
}

/// The session cookie.
fn session_cookie(id: &str, max_age: i64) -> String {
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
fn clear_device_cookie() -> String {
    cookie::Cookie::build((devices::COOKIE_NAME, ""))
        .http_only(true)
        .secure(true)
        .same_site(cookie::SameSite::Lax)
        .path("/")
        .max_age(cookie::time::Duration::ZERO)
        .build()
        .to_string()
}

/// One cookie's value from a `Cookie` header.
fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim())
}

/// One field of a form or query, percent-decoded.
fn field(body: &[u8], name: &str) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `scheme://host[:port]` of an absolute URL.
fn origin(url: &str) -> &str {
    let start = url.find("://").map_or(0, |i| i + 3);
    url[start..]
        .find('/')
        .map_or(url, |slash| &url[..start + slash])
}

/// The first language of an `Accept-Language` header that the pages speak.
fn accepted_language(header: &str) -> Option<&'static str> {
    header
        .split(',')
        .map(|part| part.split(';').next().unwrap_or_default().trim())
        .find(|tag| i18n::is_supported(tag))
        .map(|tag| i18n::choose(Some(tag), "en"))
}

/// Relative luminance of `#rrggbb` (WCAG 2.2).
fn luminance(hex: &str) -> f64 {
    let channel = |i: usize| {
        let v = hex
            .get(i..i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .map_or(0.0, |b| f64::from(b) / 255.0);
        if v <= 0.040_45 {
            v / 12.92
        } else {
            ((v + 0.055) / 1.055).powf(2.4)
        }
    };
    0.2126 * channel(1) + 0.7152 * channel(3) + 0.0722 * channel(5)
}

/// Black or white text, whichever contrasts more with `background` (one of them always reaches
/// 4.5:1, WCAG AA for text).
fn text_color_on(background: &str) -> &'static str {
    let l = luminance(background);
    let on_white = 1.05 / (l + 0.05);
    let on_black = (l + 0.05) / 0.05;
    if on_white >= on_black {
        "#ffffff"
    } else {
        "#000000"
    }
}

/// Fills `{name}` placeholders.
fn fill(text: &str, values: &[(&str, &str)]) -> String {
    values.iter().fold(text.to_owned(), |t, (name, value)| {
        t.replace(&format!("{{{name}}}"), value)
    })
}

/// A user agent as the records keep it: control characters dropped, cut at [`MAX_AGENT`] bytes (at
/// a character boundary). A browser cannot send a header the login's checks would refuse.
fn short_agent(agent: &str) -> String {
    let mut kept = String::new();
    for ch in agent.chars().filter(|c| !c.is_control()) {
        if kept.len() + ch.len_utf8() > MAX_AGENT {
            break;
        }
        kept.push(ch);
    }
    kept
}

/// A page with its `Retry-After` (seconds).
fn with_retry_after(mut page: WebResponse, seconds: u32) -> WebResponse {
    page.headers.push(("retry-after", seconds.to_string()));
    page
}

/// Minutes from `now` until `at`, rounded up.
fn minutes_until(now: Timestamp, at: Timestamp) -> String {
    ((at.0 - now.0).max(0) + 59).div_euclid(60).to_string()
}

#[derive(Template)]
#[template(path = "prompt.html")]
struct Page<'a> {
    lang: &'static str,
    title: String,
    org: &'a str,
    logo: Option<&'a str>,
    header_bg: &'a str,
    header_fg: &'static str,
    nonce: &'a str,
    support: Option<String>,
    code: Option<CodeView>,
    status: Option<StatusView>,
    devices: Option<DevicesView>,
}

struct CodeView {
    heading: String,
    sent_to: String,
    why_label: String,
    why: String,
    label: String,
    hint: String,
    digits: u8,
    error: Option<String>,
    notice: Option<String>,
    csrf: String,
    remember: Option<String>,
    remember_hint: String,
    verify: String,
    resend: String,
    resend_wait: Option<String>,
    cancel: String,
}

struct StatusView {
    id: &'static str,
    heading: String,
    body: String,
    /// A button back to the IdP (the session's cancel form), with its label.
    back: Option<(String, String)>,
    /// A link that tries the step again, with its label.
    retry: Option<String>,
}

struct DevicesView {
    heading: String,
    intro: String,
    none: String,
    notice: Option<String>,
    csrf: String,
    rows: Vec<DeviceRow>,
    current_label: String,
    revoke: String,
    revoke_all: String,
    done: String,
}

struct DeviceRow {
    id: String,
    label: String,
    current: bool,
    until: String,
    used: String,
    revoke_label: String,
}

/// What every page of one response shares: language, look, nonce, the CSP.
struct Ui {
    lang: &'static str,
    t: PageText,
    utc: String,
    branding: Branding,
    nonce: String,
    form_action: String,
}

impl Ui {
    fn page(&self, status: u16, title: &str, fill_in: impl FnOnce(&mut Page<'_>)) -> WebResponse {
        let header_fg = text_color_on(&self.branding.primary_color);
        let mut page = Page {
            lang: self.lang,
            title: format!("{title} · {}", self.branding.display_name),
            org: &self.branding.display_name,
            logo: self.branding.logo_url.as_deref(),
            header_bg: &self.branding.primary_color,
            header_fg,
            nonce: &self.nonce,
            support: (!self.branding.support_contact.is_empty()).then(|| {
                fill(
                    &self.t.support,
                    &[("support", &self.branding.support_contact)],
                )
            }),
            code: None,
            status: None,
            devices: None,
        };
        fill_in(&mut page);
        // Askama renders only what these types hold; a failure is a bug, answered as a bare 500.
        let (status, html) = page.render().map_or_else(
            |_| (500, "<!DOCTYPE html><title>Error</title>".to_owned()),
            |html| (status, html),
        );
        WebResponse {
            status,
            html: Some(html),
            headers: vec![(
                "content-security-policy",
                format!(
                    "default-src 'none'; style-src 'nonce-{}'; img-src https:; form-action 'self'{}; frame-ancestors 'none'; base-uri 'none'",
                    self.nonce, self.form_action
                ),
            )],
        }
    }

    fn status(
        &self,
        status: u16,
        id: &'static str,
        heading: &str,
        body: &str,
        back: Option<&str>,
        retry: bool,
    ) -> WebResponse {
        let view = StatusView {
            id,
            heading: heading.to_owned(),
            body: body.to_owned(),
            back: back.map(|csrf| {
                (
                    csrf.to_owned(),
                    fill(&self.t.back, &[("org", &self.branding.display_name)]),
                )
            }),
            retry: retry.then(|| self.t.try_again.clone()),
        };
        self.page(status, heading, |p| p.status = Some(view))
    }

    fn expired(&self) -> WebResponse {
        self.status(
            410,
            "expired",
            &self.t.expired_heading,
            &self.t.expired_body,
            None,
            false,
        )
        .with_cookie(Some(session_cookie("", 0)))
    }

    fn unavailable(&self) -> WebResponse {
        self.status(
            503,
            "unavailable",
            &self.t.unavailable_heading,
            &self.t.unavailable_body,
            None,
            false,
        )
    }

    /// `text` with `{until}` (a clock time) and `{minutes}` (from `now`) filled in.
    fn when(&self, text: &str, now: Timestamp, until: Timestamp) -> String {
        fill(
            text,
            &[
                ("until", &self.clock(until)),
                ("minutes", &minutes_until(now, until)),
            ],
        )
    }

    fn clock(&self, at: Timestamp) -> String {
        i18n::clock(at, None, &self.utc)
    }
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

    /// The language and look for a page: the session's user and organization when there is one.
    fn ui<R: CryptoRng + ?Sized>(
        &self,
        config: Option<&PromptConfig>,
        request: Option<&PromptRequest>,
        req: &WebRequest<'_>,
        rng: &mut R,
    ) -> Ui {
        // A store failure here only costs the organization's look; the page still works.
        let branding = request
            .and_then(|r| self.branding_of(&r.org_id).ok())
            .unwrap_or_else(|| Branding::default_for("mfa-step"));
        let lang = request
            .and_then(|r| r.locale.as_deref())
            .filter(|tag| i18n::is_supported(tag))
            .map(|tag| i18n::choose(Some(tag), "en"))
            .or_else(|| accepted_language(req.accept_language))
            .unwrap_or_else(|| i18n::choose(None, &branding.default_language));
        let messages = i18n::messages(lang);
        let form_action = config.map_or_else(String::new, |c| {
            let mut origins: Vec<&str> = c.return_urls.iter().map(|u| origin(u)).collect();
            origins.sort_unstable();
            origins.dedup();
            origins.iter().map(|o| format!(" {o}")).collect()
        });
        Ui {
            lang,
            t: messages.page,
            utc: messages.utc,
            branding,
            nonce: otp::new_id(rng),
            form_action,
        }
    }

    /// `GET /prompt?request=<jwt>`: accept the request once and open a session.
    fn open_session<R: CryptoRng + ?Sized>(
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
        let id = otp::new_id(rng);
        let session = Session {
            v: 1,
            request,
            csrf: otp::new_id(rng),
            expires_at: now.plus(SESSION_TTL_SECONDS),
            challenge: None,
            passed: None,
            denied: false,
            notice: None,
        };
        self.put(&self.session_key(&id), &session)?;
        Ok(WebResponse::redirect("/prompt/step")
            .with_cookie(Some(session_cookie(&id, SESSION_TTL_SECONDS))))
    }

    fn session_key(&self, id: &str) -> String {
        let mac = crate::secret::hmac_sha256(
            self.key.as_bytes(),
            &[b"mfa-step/prompt-session/v1\0", id.as_bytes()],
        );
        keys::prompt_session(&hex::encode(mac))
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

    /// `GET /prompt/step`: decide, send the email if a code is needed, show the page.
    fn step<R: CryptoRng + ?Sized>(
        &self,
        c: &Ctx<'_>,
        s: &mut Session,
        rng: &mut R,
    ) -> Result<WebResponse> {
        if s.passed.is_some() {
            return Ok(WebResponse::redirect("/prompt/devices"));
        }
        if s.denied {
            return Ok(self.locked_page(c, s, None));
        }
        if let Some(challenge) = &s.challenge
            && c.now <= challenge.expires_at
        {
            return self.code_page(c, s, 200, None, None);
        }
        let login = c.login(s);
        match self.begin(&login, c.now, rng)? {
            Decision::Allow(allowed) => {
                let (via, amr): (&str, &[&str]) = match allowed.why.rule.as_str() {
                    "device:trusted" => ("trusted-device", &["mfa"]),
                    "enrollment:grace" => ("grace", &[]),
                    _ => ("not-required", &[]),
                };
                let passed = Passed {
                    via: via.to_owned(),
                    amr: amr.iter().map(|m| (*m).to_owned()).collect(),
                };
                self.passed(c, s, passed, allowed.set_cookie, rng)
            }
            Decision::Deny(denied) => {
                s.denied = true;
                self.put(&c.key, s)?;
                Ok(self.locked_page(c, s, Some(&denied.why.message)))
            }
            Decision::Challenge(challenge) => {
                match self.send_code(&login, &challenge.challenge_id, c.now, rng) {
                    Ok(_) => {
                        s.challenge = Some(challenge);
                        self.put(&c.key, s)?;
                        self.code_page(c, s, 200, None, None)
                    }
                    Err(Error::Throttled { retry_after }) => {
                        let until = c.now.plus(i64::from(retry_after));
                        let body = c.ui.when(&c.ui.t.throttled_body, c.now, until);
                        let page = c.ui.status(
                            429,
                            "throttled",
                            &c.ui.t.throttled_heading,
                            &body,
                            Some(&s.csrf),
                            true,
                        );
                        Ok(with_retry_after(page, retry_after))
                    }
                    Err(Error::Locked) => self.lock_out(c, s),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// The second factor is done: back to the IdP, or on to the devices page.
    fn passed<R: CryptoRng + ?Sized>(
        &self,
        c: &Ctx<'_>,
        s: &mut Session,
        passed: Passed,
        device_cookie: Option<String>,
        rng: &mut R,
    ) -> Result<WebResponse> {
        let next = match s.request.purpose {
            PromptPurpose::Devices => {
                s.challenge = None;
                s.passed = Some(passed);
                self.put(&c.key, s)
                    .map(|()| WebResponse::redirect("/prompt/devices"))
            }
            PromptPurpose::Login => self.finish(c, s, PromptOutcome::Success, &passed, rng),
        };
        // The device's token may have been rotated already: whatever happens next, this browser
        // must get its new cookie, or its next visit would present a retired token and be taken
        // for a thief. A failure here lets nobody through; it is the "try again" page.
        Ok(next
            .unwrap_or_else(|_| c.ui.unavailable())
            .with_cookie(device_cookie))
    }

    /// Ends the session and sends the browser back with the signed outcome.
    fn finish<R: CryptoRng + ?Sized>(
        &self,
        c: &Ctx<'_>,
        s: &Session,
        outcome: PromptOutcome,
        passed: &Passed,
        rng: &mut R,
    ) -> Result<WebResponse> {
        let verdict = Verdict {
            outcome,
            via: passed.via.clone(),
            amr: passed.amr.clone(),
        };
        let url = self.prompt_result(c.config, &s.request, &verdict, c.now, rng)?;
        self.store.delete(&c.key).map_err(Error::store)?;
        Ok(WebResponse::redirect(&url).with_cookie(Some(session_cookie("", 0))))
    }

    /// The user is locked: the session remembers it (its way back is `denied`), and says so.
    fn lock_out(&self, c: &Ctx<'_>, s: &mut Session) -> Result<WebResponse> {
        s.denied = true;
        self.put(&c.key, s)?;
        Ok(self.locked_page(c, s, None))
    }

    fn locked_page(&self, c: &Ctx<'_>, s: &Session, why: Option<&str>) -> WebResponse {
        let body = why.map_or_else(|| i18n::messages(c.ui.lang).explain.locked, str::to_owned);
        c.ui.status(
            423,
            "locked",
            &c.ui.t.locked_heading,
            &body,
            Some(&s.csrf),
            false,
        )
    }

    /// The code page (or the enrollment page: the same form, another heading).
    fn code_page(
        &self,
        c: &Ctx<'_>,
        s: &Session,
        status: u16,
        error: Option<String>,
        notice: Option<String>,
    ) -> Result<WebResponse> {
        let Some(challenge) = &s.challenge else {
            return Ok(WebResponse::redirect("/prompt/step"));
        };
        let t = &c.ui.t;
        let policy = self.org_policy(&s.request.org_id)?;
        let settings = self.scoped(&policy).settings;
        let digits = settings.code_digits;
        let digits_text = digits.to_string();
        let user = self.status_of(&s.request.org_id, &s.request.user_id, c.now)?;
        let resend_wait = (user.sends_left == 0)
            .then_some(user.next_send_at)
            .flatten()
            .map(|at| c.ui.when(&t.resend_wait, c.now, at));
        let heading = match challenge.purpose {
            Purpose::Login => t.code_heading.clone(),
            Purpose::Enrollment | Purpose::EmailChange => t.enroll_heading.clone(),
        };
        let view = CodeView {
            heading: heading.clone(),
            sent_to: fill(
                &t.sent_to,
                &[("digits", &digits_text), ("email", &challenge.masked_email)],
            ),
            why_label: t.why_label.clone(),
            why: challenge.why.message.clone(),
            label: t.code_label.clone(),
            hint: fill(&t.code_hint, &[("digits", &digits_text)]),
            digits,
            error,
            notice,
            csrf: s.csrf.clone(),
            remember: settings
                .allow_remember_device
                .then(|| fill(&t.remember, &[("days", &settings.trust_days.to_string())])),
            remember_hint: t.remember_hint.clone(),
            verify: t.verify.clone(),
            resend: t.resend.clone(),
            resend_wait,
            cancel: t.cancel.clone(),
        };
        // An error is in the title too: it is the first thing a screen reader says.
        let title = match &view.error {
            Some(_) => format!("{}: {heading}", t.error_title),
            None => heading,
        };
        Ok(c.ui.page(status, &title, |p| p.code = Some(view)))
    }

    /// `POST /prompt/verify`.
    fn verify_form<R: CryptoRng + ?Sized>(
        &self,
        c: &Ctx<'_>,
        s: &mut Session,
        rng: &mut R,
    ) -> Result<WebResponse> {
        let Some(challenge) = s.challenge.clone() else {
            return Ok(WebResponse::redirect("/prompt/step"));
        };
        // People paste codes with spaces, non-breaking spaces or dashes in them (WCAG 3.3.8).
        let code: String = field(c.req.form, "code")
            .unwrap_or_default()
            .chars()
            .filter(|ch| !ch.is_whitespace() && *ch != '-')
            .collect();
        let remember = field(c.req.form, "remember").is_some_and(|v| v == "on");
        let login = c.login(s);
        let t = &c.ui.t;
        let org = self.branding_of(&s.request.org_id)?.display_name;
        match self.verify(&login, &challenge.challenge_id, &code, remember, c.now, rng) {
            Ok(verified) => {
                let passed = Passed {
                    via: "code".to_owned(),
                    amr: verified.amr,
                };
                self.passed(c, s, passed, verified.set_cookie, rng)
            }
            Err(Error::Rejected) => {
                let error = fill(&t.wrong_code, &[("org", &org)]);
                self.code_page(c, s, 200, Some(error), None)
            }
            Err(Error::InvalidInput { field: "code", .. }) => {
                let digits = self
                    .scoped(&self.org_policy(&s.request.org_id)?)
                    .settings
                    .code_digits
                    .to_string();
                let error = fill(&t.bad_format, &[("digits", &digits)]);
                self.code_page(c, s, 200, Some(error), None)
            }
            Err(Error::Throttled { retry_after }) => {
                let until = c.now.plus(i64::from(retry_after));
                let error = fill(&t.slow_down, &[("until", &c.ui.clock(until))]);
                Ok(with_retry_after(
                    self.code_page(c, s, 429, Some(error), None)?,
                    retry_after,
                ))
            }
            Err(Error::Locked) => self.lock_out(c, s),
            Err(e) => Err(e),
        }
    }

    /// `POST /prompt/resend`: the same code again while it lives, a new one after.
    fn resend<R: CryptoRng + ?Sized>(
        &self,
        c: &Ctx<'_>,
        s: &mut Session,
        rng: &mut R,
    ) -> Result<WebResponse> {
        let Some(challenge) = s.challenge.clone() else {
            return Ok(WebResponse::redirect("/prompt/step"));
        };
        let login = c.login(s);
        let t = &c.ui.t;
        match self.send_code(&login, &challenge.challenge_id, c.now, rng) {
            Ok(sent) => {
                let notice = if sent.resent {
                    t.resent_same.clone()
                } else {
                    t.sent_new.clone()
                };
                self.code_page(c, s, 200, None, Some(notice))
            }
            Err(Error::Throttled { retry_after }) => {
                let until = c.now.plus(i64::from(retry_after));
                let notice = c.ui.when(&t.resend_wait, c.now, until);
                // The page's own line under the button says when, unless the window is not spent.
                let status = self.status_of(&s.request.org_id, &s.request.user_id, c.now)?;
                let notice = (status.sends_left > 0).then_some(notice);
                Ok(with_retry_after(
                    self.code_page(c, s, 429, None, notice)?,
                    retry_after,
                ))
            }
            Err(Error::Locked) => self.lock_out(c, s),
            Err(Error::Rejected) => {
                // The challenge lapsed: start the step again.
                s.challenge = None;
                self.put(&c.key, s)?;
                Ok(WebResponse::redirect("/prompt/step"))
            }
            Err(e) => Err(e),
        }
    }

    /// `POST /prompt/cancel`: back to the IdP, `denied` for a locked user, else `cancelled`.
    fn cancel<R: CryptoRng + ?Sized>(
        &self,
        c: &Ctx<'_>,
        s: &mut Session,
        rng: &mut R,
    ) -> Result<WebResponse> {
        let (outcome, via) = if s.denied {
            (PromptOutcome::Denied, "locked")
        } else {
            (PromptOutcome::Cancelled, "cancelled")
        };
        let passed = Passed {
            via: via.to_owned(),
            amr: Vec::new(),
        };
        self.finish(c, s, outcome, &passed, rng)
    }

    /// `GET /prompt/devices`: the user's trusted browsers, after the second factor.
    fn devices_page<R: CryptoRng + ?Sized>(
        &self,
        c: &Ctx<'_>,
        s: &mut Session,
        _rng: &mut R,
    ) -> Result<WebResponse> {
        if s.passed.is_none() {
            return Ok(WebResponse::redirect("/prompt/step"));
        }
        let t = &c.ui.t;
        let current = c
            .device_cookie()
            .and_then(devices::parse_cookie)
            .map(|p| p.device_id);
        let rows = self
            .list_devices(&c.actor(s), c.now)?
            .into_iter()
            .map(|d| DeviceRow {
                current: current.as_deref() == Some(d.device_id.as_str()),
                until: fill(&t.device_until, &[("until", &d.expires_at.date())]),
                used: fill(
                    &t.device_used,
                    &[
                        ("when", &d.last_used_at.date()),
                        ("network", &d.last_network),
                    ],
                ),
                revoke_label: fill(
                    &t.revoke_label,
                    &[("label", &d.label), ("until", &d.expires_at.date())],
                ),
                id: d.device_id,
                label: d.label,
            })
            .collect();
        let notice = s.notice.take();
        if notice.is_some() {
            self.put(&c.key, s)?;
        }
        let view = DevicesView {
            heading: t.devices_heading.clone(),
            intro: t.devices_intro.clone(),
            none: t.devices_none.clone(),
            notice: notice.map(|Notice::Revoked| t.revoked.clone()),
            csrf: s.csrf.clone(),
            rows,
            current_label: t.device_current.clone(),
            revoke: t.revoke.clone(),
            revoke_all: t.revoke_all.clone(),
            done: t.done.clone(),
        };
        Ok(c.ui.page(200, &t.devices_heading, |p| p.devices = Some(view)))
    }

    /// `POST /prompt/devices/revoke`.
    fn revoke<R: CryptoRng + ?Sized>(
        &self,
        c: &Ctx<'_>,
        s: &mut Session,
        rng: &mut R,
    ) -> Result<WebResponse> {
        if s.passed.is_none() {
            return Ok(WebResponse::redirect("/prompt/step"));
        }
        let device_id = field(c.req.form, "device_id").unwrap_or_default();
        match self.revoke_device(&c.actor(s), &device_id, c.now, rng) {
            Ok(()) => {
                s.notice = Some(Notice::Revoked);
                self.put(&c.key, s)?;
            }
            // Already gone, or never this user's: the list shows what is left.
            Err(Error::Forbidden(_) | Error::InvalidInput { .. }) => {}
            Err(e) => return Err(e),
        }
        let this_browser = c
            .device_cookie()
            .and_then(devices::parse_cookie)
            .is_some_and(|p| p.device_id == device_id.to_ascii_lowercase());
        Ok(WebResponse::redirect("/prompt/devices")
            .with_cookie(this_browser.then(clear_device_cookie)))
    }

    /// `POST /prompt/devices/revoke-all`.
    fn revoke_all<R: CryptoRng + ?Sized>(
        &self,
        c: &Ctx<'_>,
        s: &mut Session,
        rng: &mut R,
    ) -> Result<WebResponse> {
        if s.passed.is_none() {
            return Ok(WebResponse::redirect("/prompt/step"));
        }
        self.revoke_all_devices(&c.actor(s), c.now, rng)?;
        s.notice = Some(Notice::Revoked);
        self.put(&c.key, s)?;
        Ok(WebResponse::redirect("/prompt/devices").with_cookie(Some(clear_device_cookie())))
    }

    /// `POST /prompt/done`: back to the IdP after managing devices.
    fn done<R: CryptoRng + ?Sized>(
        &self,
        c: &Ctx<'_>,
        s: &mut Session,
        rng: &mut R,
    ) -> Result<WebResponse> {
        let Some(passed) = s.passed.clone() else {
            return Ok(WebResponse::redirect("/prompt/step"));
        };
        self.finish(c, s, PromptOutcome::Success, &passed, rng)
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
        cookie_value(self.req.cookies, devices::COOKIE_NAME)
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

#[cfg(test)]
#[path = "hosted_tests.rs"]
mod tests;
