//! The organization admin's console: pages an admin opens in a browser, org-scoped, script-free,
//! in the admin's language and the organization's look. Five screens share one entry, session and
//! page shell ([`Screen`]): "Adoption and health" (`health`), the policy (`policy`), the branding
//! (`branding`), the users (`users`) and the audit trail (`audit`, whose records the host fills in).
//!
//! ```text
//! IdP admin console ──POST /v1/admin/console-link (API key, actor, org_id)──▶ {url, expires_at}
//!   browser ──GET /admin/console?token=…──▶ MAC (constant time), expiry, the actor's right again,
//!                    │                       first use of the link: else 403 (link refused)
//!                    │ session cookie __Host-mfa-console (Strict), 200 "opening" page
//!                    ▼ (meta refresh, same site)
//!              GET /admin/console/health?days=7…90 ── recorded: admin_console_viewed ──▶ charts
//!              GET …/policy, …/branding, …/users, …/user, …/audit ── recorded ──▶ a screen
//!              POST …/policy, …/branding, …/user (CSRF) ──▶ the admin calls, recorded as always
//!              POST /admin/console/sign-out (CSRF) ──▶ session deleted, cookie cleared
//! ```
//!
//! **Link.** As the email preview's (`web::preview`), under its own key label, so that neither
//! link opens the other's page:
//! `token = hex(payload) "." hex(HMAC-SHA256(HMAC-SHA256(host key, "mfa-step/console-link/v1"), payload))`
//! with `payload = {"u": admin, "a": admin's org, "r": roles, "o": org, "x": expiry, "n": nonce}`.
//! It lives [`LINK_TTL_SECONDS`] and opens one session only: its first use takes a counter under
//! its MAC to 1 (kept past its expiry, so a replay within its life finds it taken).
//!
//! **Session.** 128 random bits in an `HttpOnly`, `Secure`, `SameSite=Strict`, `__Host-` cookie;
//! the store keeps it under `HMAC(key, id)`, with its CSRF token, for [`SESSION_TTL_SECONDS`]
//! (no sliding: an admin opens a new link after that). The link's answer is a page that refreshes
//! to the console rather than a redirect: the link comes from the IdP's site, and a `Strict` cookie
//! set on a cross-site navigation is not sent on its redirect, but is on a navigation our own page
//! starts.
//!
//! **Scope.** A session is for one organization, the link's. An org-admin gets links for their own
//! organization only and a platform-admin for any (`kernel::authority`, as every admin call); the
//! actor's right is checked again, from the roles the signed link carried, when the link is opened
//! and at every page (a role revoked at the IdP since counts from the next link). A page asked for
//! another organization (`?org=`) is refused (403) and the refusal recorded in the admin's own
//! stream. Every page view is recorded in the organization's stream (`admin_console_viewed`, the
//! admin as actor); a view that cannot be recorded is not shown.
//!
//! **Pages.** The content security policy has no `script-src` (no script runs), styles need the
//! response's nonce, forms post only to this origin, nothing may frame a page. Words come from
//! `core/i18n/console/` ([`words`]), kept out of the plugin's build.

pub mod audit;
#[cfg(test)]
mod audit_tests;
mod branding;
#[cfg(test)]
mod branding_tests;
mod health;
mod policy;
#[cfg(test)]
mod policy_tests;
#[cfg(test)]
mod tests;
mod users;
#[cfg(test)]
mod users_tests;
pub mod words;

use askama::Template;
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use self::health::HealthView;
use self::words::ConsoleText;
use super::hosted::ui::{accepted_language, text_color_on};
use super::hosted::{WebMethod, WebRequest, WebResponse, cookie_value, field, short_agent};
use crate::audit::{Action, Event, Outcome};
use crate::email::branding::Branding;
use crate::email::i18n;
use crate::engine::Engine;
use crate::engine::record::EventExt;
use crate::engine::stats::day_of;
use crate::kernel::authority::may_administer;
use crate::kernel::error::{Error, Result};
use crate::kernel::model::Actor;
use crate::kernel::ports::RefusalNote;
use crate::kernel::secret::{self, HmacKey, hmac_sha256};
use crate::kernel::time::Timestamp;
use crate::kernel::{keys, random};

/// How long a console link works.
pub const LINK_TTL_SECONDS: i64 = 300;
/// How long a console session lives from the moment its link is opened.
pub const SESSION_TTL_SECONDS: i64 = 900;
/// The console session's cookie.
pub const SESSION_COOKIE: &str = "__Host-mfa-console";
/// The days the health page shows unless asked, and the range it accepts.
pub const DEFAULT_DAYS: i64 = 14;
/// Fewest days the health page shows.
pub const MIN_DAYS: i64 = 7;
/// Most days the health page shows.
pub const MAX_DAYS: i64 = 90;

const LINK_LABEL: &[u8] = b"mfa-step/console-link/v1";
const SESSION_LABEL: &[u8] = b"mfa-step/console-session/v1\0";
const HEALTH: &str = "/admin/console/health";
const POLICY: &str = "/admin/console/policy";
const BRANDING: &str = "/admin/console/branding";
const BRANDING_EMAIL: &str = "/admin/console/branding/email";
const USERS: &str = "/admin/console/users";
const USER: &str = "/admin/console/user";
const AUDIT: &str = "/admin/console/audit";
const AUDIT_EXPORT: &str = "/admin/console/audit/export";

/// Every console route: (method, path). The component's route table has exactly these rows.
pub const ROUTES: [(WebMethod, &str); 13] = [
    (WebMethod::Get, "/admin/console"),
    (WebMethod::Get, "/admin/console/health"),
    (WebMethod::Get, "/admin/console/policy"),
    (WebMethod::Post, "/admin/console/policy"),
    (WebMethod::Get, "/admin/console/branding"),
    (WebMethod::Post, "/admin/console/branding"),
    (WebMethod::Get, "/admin/console/branding/email"),
    (WebMethod::Get, "/admin/console/users"),
    (WebMethod::Get, "/admin/console/user"),
    (WebMethod::Post, "/admin/console/user"),
    (WebMethod::Get, "/admin/console/audit"),
    (WebMethod::Get, "/admin/console/audit/export"),
    (WebMethod::Post, "/admin/console/sign-out"),
];

/// The screens, in the order the console's navigation lists them: (id, path).
const SCREENS: [(&str, &str); 5] = [
    ("health", HEALTH),
    ("policy", POLICY),
    ("branding", BRANDING),
    ("users", USERS),
    ("audit", AUDIT),
];

/// Whether `path` is the console's (its pages route among themselves).
#[must_use]
pub fn is_console_path(path: &str) -> bool {
    path == "/admin/console" || path.starts_with("/admin/console/")
}

/// A link that opens the console. Its URL carries a signed bearer token: `Debug` shows the path.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct ConsoleLink {
    /// The page's path and query, to be opened in the admin's browser.
    pub url: String,
    /// When it stops working.
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for ConsoleLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = self.url.split('?').next().unwrap_or_default();
        f.debug_struct("ConsoleLink")
            .field("url", &format_args!("{path}?<redacted>"))
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct Payload {
    u: String,
    a: String,
    r: Vec<String>,
    o: String,
    x: i64,
    n: String,
}

fn link_mac(key: &HmacKey, payload: &[u8]) -> Vec<u8> {
    let link_key = hmac_sha256(key.as_bytes(), &[LINK_LABEL]);
    hmac_sha256(&link_key, &[payload])
}

/// A console session as stored. No `Debug`: it holds the CSRF token.
#[derive(Clone, Serialize, Deserialize)]
struct Session {
    v: u8,
    admin: String,
    admin_org: String,
    roles: Vec<String>,
    org: String,
    csrf: String,
    expires_at: Timestamp,
}

impl Session {
    fn actor(&self, req: &WebRequest<'_>) -> Actor {
        Actor {
            user_id: self.admin.clone(),
            org_id: self.admin_org.clone(),
            roles: self.roles.clone(),
            ip: req.client_ip.to_owned(),
            user_agent: short_agent(req.user_agent),
        }
    }
}

fn session_cookie(id: &str, max_age: i64) -> String {
    cookie::Cookie::build((SESSION_COOKIE, id.to_owned()))
        .http_only(true)
        .secure(true)
        .same_site(cookie::SameSite::Strict)
        .path("/")
        .max_age(cookie::time::Duration::seconds(max_age.max(0)))
        .build()
        .to_string()
}

/// A message in place of a screen.
struct Message {
    id: &'static str,
    heading: String,
    body: String,
    alert: bool,
    link: Option<(String, String)>,
}

#[derive(Template)]
#[template(path = "web/console.html")]
struct Page<'a> {
    lang: &'static str,
    title: String,
    org: &'a str,
    logo: Option<&'a str>,
    header_bg: &'a str,
    header_fg: &'static str,
    nonce: &'a str,
    t: &'a ConsoleText,
    refresh: Option<String>,
    sign_out: Option<String>,
    message: Option<Message>,
    health: Option<HealthView>,
    /// A screen's own content, rendered by its module's template (escaped there).
    body: Option<String>,
    /// The screens' links, once signed in: (href, label, current).
    nav: Vec<(String, String, bool)>,
    days: i64,
    day_choices: [i64; 4],
    languages: Vec<(&'static str, String)>,
}

/// One response's language, words, look and nonce.
struct Look {
    lang: &'static str,
    t: ConsoleText,
    branding: Branding,
    nonce: String,
}

impl Look {
    fn render(
        &self,
        status: u16,
        heading: &str,
        fill_in: impl FnOnce(&mut Page<'_>),
    ) -> WebResponse {
        let mut page = Page {
            lang: self.lang,
            title: format!(
                "{heading} · {} · {}",
                self.t.title, self.branding.display_name
            ),
            org: &self.branding.display_name,
            logo: self.branding.logo_url.as_deref(),
            header_bg: &self.branding.primary_color,
            header_fg: text_color_on(&self.branding.primary_color),
            nonce: &self.nonce,
            t: &self.t,
            refresh: None,
            sign_out: None,
            message: None,
            health: None,
            body: None,
            nav: Vec::new(),
            days: DEFAULT_DAYS,
            day_choices: [7, 14, 30, 90],
            languages: i18n::supported()
                .into_iter()
                .map(|tag| (tag, i18n::messages(tag).language))
                .collect(),
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
                    "default-src 'none'; style-src 'nonce-{}'; img-src https:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
                    self.nonce
                ),
            )],
        }
    }

    fn message(&self, status: u16, id: &'static str, body: &str) -> WebResponse {
        let heading = if status >= 500 {
            self.t.title.clone()
        } else {
            self.t.denied_heading.clone()
        };
        self.render(status, &heading, |p| {
            p.message = Some(Message {
                id,
                heading: heading.clone(),
                body: body.to_owned(),
                alert: true,
                link: None,
            });
        })
    }

    fn unavailable(&self) -> WebResponse {
        self.message(503, "unavailable", &self.t.unavailable_body)
    }
}

fn with_cookie(mut page: WebResponse, cookie: String) -> WebResponse {
    page.headers.push(("set-cookie", cookie));
    page
}

/// A signed-in admin's request to a screen of their organization: the session, the admin as the
/// actor of what they do, and the response's look.
struct Screen {
    session: Session,
    actor: Actor,
    look: Look,
}

impl Screen {
    /// The organization the session is for.
    fn org(&self) -> &str {
        &self.session.org
    }

    /// Fills in the shell around a screen: the sign-out form, the screens' links with `current`
    /// marked.
    fn shell(&self, p: &mut Page<'_>, current: &str) {
        let t = &self.look.t;
        let lang = self.look.lang;
        p.sign_out = Some(self.session.csrf.clone());
        p.nav = SCREENS
            .iter()
            .map(|(id, path)| {
                let label = match *id {
                    "health" => &t.nav_health,
                    "policy" => &t.nav_policy,
                    "branding" => &t.nav_branding,
                    "users" => &t.nav_users,
                    _ => &t.nav_audit,
                };
                (format!("{path}?lang={lang}"), label.clone(), *id == current)
            })
            .collect();
    }

    /// A screen's page: the shell around `body`, which the screen's own template rendered.
    fn page(&self, status: u16, heading: &str, current: &str, body: String) -> WebResponse {
        self.look.render(status, heading, |p| {
            self.shell(p, current);
            p.body = Some(body);
        })
    }

    /// A message in place of a screen's content (a refusal, a bad form), in the shell.
    fn message(&self, status: u16, id: &'static str, heading: &str, body: &str) -> WebResponse {
        self.look.render(status, heading, |p| {
            self.shell(p, "");
            p.message = Some(Message {
                id,
                heading: heading.to_owned(),
                body: body.to_owned(),
                alert: true,
                link: None,
            });
        })
    }

    /// Whether a form's CSRF token is the session's.
    fn csrf_holds(&self, req: &WebRequest<'_>) -> bool {
        let presented = field(req.form, "csrf").unwrap_or_default();
        bool::from(presented.as_bytes().ct_eq(self.session.csrf.as_bytes()))
    }
}

impl Engine<'_> {
    /// A link that opens `org`'s admin console, for an admin of it.
    ///
    /// # Errors
    /// [`Error::Forbidden`] (recorded); [`Error::InvalidInput`]; [`Error::Store`]; [`Error::Audit`].
    pub fn console_link<R: CryptoRng + ?Sized>(
        &self,
        actor: &Actor,
        org: &str,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<ConsoleLink> {
        let actor = self.canonical_actor(actor);
        let actor = actor.as_ref();
        let org = self.canonical_id(org);
        let org = org.as_ref();
        self.authorize(actor, org, org, "console-link", now, rng)?;
        let expires_at = now.plus(LINK_TTL_SECONDS);
        let payload = serde_json::to_vec(&Payload {
            u: actor.user_id.clone(),
            a: actor.org_id.clone(),
            r: actor.roles.clone(),
            o: org.to_owned(),
            x: expires_at.0,
            n: random::new_id(rng),
        })
        .map_err(|e| Error::Misconfigured(e.to_string()))?;
        let token = format!(
            "{}.{}",
            hex::encode(&payload),
            hex::encode(link_mac(self.key, &payload))
        );
        Ok(ConsoleLink {
            url: format!("/admin/console?token={token}"),
            expires_at,
        })
    }

    /// Answers one browser request to an `/admin/console` page. Never fails: a host failure
    /// (store, audit) is a "try again" page that showed nothing.
    pub fn console_page<R: CryptoRng + ?Sized>(
        &self,
        req: &WebRequest<'_>,
        now: Timestamp,
        rng: &mut R,
    ) -> WebResponse {
        let look = self.look(None, req, rng);
        let known = ROUTES.iter().any(|(_, p)| *p == req.path);
        let answer = match (req.method, req.path) {
            (WebMethod::Get, "/admin/console") => self.open_console(req, now, rng),
            (WebMethod::Get, HEALTH) => self.health_page(req, now, rng),
            (WebMethod::Get, POLICY) => self.policy_page(req, now, rng),
            (WebMethod::Post, POLICY) => self.policy_post(req, now, rng),
            (WebMethod::Get, BRANDING) => self.branding_page(req, now, rng),
            (WebMethod::Post, BRANDING) => self.branding_post(req, now, rng),
            (WebMethod::Get, BRANDING_EMAIL) => self.branding_email(req, now, rng),
            (WebMethod::Get, USERS) => self.users_page(req, now, rng),
            (WebMethod::Get, USER) => self.user_page(req, now, rng),
            (WebMethod::Post, USER) => self.user_post(req, now, rng),
            (WebMethod::Get, AUDIT) => self.audit_page(req, now, rng),
            (WebMethod::Get, AUDIT_EXPORT) => self.audit_export(req, now, rng),
            (WebMethod::Post, "/admin/console/sign-out") => self.sign_out(req, now, rng),
            _ if known => return look.message(405, "refused", &look.t.form_stale),
            _ => return look.message(404, "not-found", &look.t.not_found),
        };
        answer.unwrap_or_else(|_| look.unavailable())
    }

    /// The language and look of a page: the `lang` asked for, else the browser's, else the
    /// organization's default; the organization's branding when the page is for one.
    fn look<R: CryptoRng + ?Sized>(
        &self,
        org: Option<&str>,
        req: &WebRequest<'_>,
        rng: &mut R,
    ) -> Look {
        // A store failure here only costs the organization's look; the page still works.
        let branding = org
            .and_then(|o| self.branding_of(o).ok())
            .unwrap_or_else(|| Branding::default_for("mfa-step"));
        let asked = field(req.query.as_bytes(), "lang").filter(|tag| i18n::is_supported(tag));
        let lang = asked
            .map(|tag| i18n::choose(Some(&tag), "en"))
            .or_else(|| accepted_language(req.accept_language))
            .unwrap_or_else(|| i18n::choose(None, &branding.default_language));
        Look {
            lang,
            t: words::words(lang),
            branding,
            nonce: random::new_id(rng),
        }
    }

    fn console_session_key(&self, id: &str) -> String {
        let mac = secret::hmac_sha256(self.key.as_bytes(), &[SESSION_LABEL, id.as_bytes()]);
        keys::console_session(&hex::encode(mac))
    }

    /// The link's payload when its MAC and expiry hold.
    fn check_link(&self, token: &str, now: Timestamp) -> Option<(Payload, Vec<u8>)> {
        let (payload_hex, mac_hex) = token.split_once('.')?;
        let payload = hex::decode(payload_hex).ok()?;
        let presented = hex::decode(mac_hex).ok()?;
        let mac = link_mac(self.key, &payload);
        if !bool::from(mac.ct_eq(&presented)) {
            return None;
        }
        let payload: Payload = serde_json::from_slice(&payload).ok()?;
        (now.0 <= payload.x).then_some((payload, mac))
    }

    /// `GET /admin/console?token=…`: check the link, spend it, open a session.
    fn open_console<R: CryptoRng + ?Sized>(
        &self,
        req: &WebRequest<'_>,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<WebResponse> {
        let token = field(req.query.as_bytes(), "token").unwrap_or_default();
        let Some((payload, mac)) = self.check_link(&token, now) else {
            // Nobody it names can be trusted: the host's log, not a stream.
            self.audit.note_refusal(&RefusalNote {
                rule: "console:invalid-link".to_owned(),
                claimed_org: None,
                ip: (!req.client_ip.is_empty()).then(|| req.client_ip.to_owned()),
                user_agent: Some(short_agent(req.user_agent)).filter(|a| !a.is_empty()),
            });
            let look = self.look(None, req, rng);
            return Ok(look.message(403, "link-refused", &look.t.denied_link));
        };
        let session = Session {
            v: 1,
            admin: payload.u,
            admin_org: payload.a,
            roles: payload.r,
            org: payload.o,
            csrf: random::new_id(rng),
            expires_at: now.plus(SESSION_TTL_SECONDS),
        };
        let look = self.look(Some(&session.org), req, rng);
        // The actor's right again (a refusal is recorded in their own stream).
        match self.authorize(
            &session.actor(req),
            &session.org,
            &session.org,
            "console",
            now,
            rng,
        ) {
            Ok(()) => {}
            Err(Error::Forbidden(_) | Error::InvalidInput { .. }) => {
                return Ok(look.message(403, "link-refused", &look.t.denied_link));
            }
            Err(e) => return Err(e),
        }
        // One session per link: the first use takes the counter to 1.
        let used = self
            .store
            .increment(
                &keys::console_link_used(&hex::encode(&mac)),
                1,
                keys::guard_until(Timestamp(payload.x)),
            )
            .map_err(Error::store)?;
        if used != 1 {
            return Ok(look.message(403, "link-refused", &look.t.denied_link));
        }
        // A session this browser left behind is over.
        if let Some(old) = cookie_value(req.cookies, SESSION_COOKIE).filter(|c| !c.is_empty()) {
            let _ = self.store.delete(&self.console_session_key(old));
        }
        let id = random::new_id(rng);
        self.put(
            &self.console_session_key(&id),
            &session,
            keys::keep_until(session.expires_at),
        )?;
        let to = format!("{HEALTH}?lang={}", look.lang);
        let page = look.render(200, &look.t.opening_heading, |p| {
            p.refresh = Some(to.clone());
            p.message = Some(Message {
                id: "opening",
                heading: look.t.opening_heading.clone(),
                body: look.t.opening_body.clone(),
                alert: false,
                link: Some((to.clone(), look.t.opening_link.clone())),
            });
        });
        Ok(with_cookie(page, session_cookie(&id, SESSION_TTL_SECONDS)))
    }

    /// The browser's live session, or the page that says it has none.
    fn session_of<R: CryptoRng + ?Sized>(
        &self,
        req: &WebRequest<'_>,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<std::result::Result<(String, Session), WebResponse>> {
        let id = cookie_value(req.cookies, SESSION_COOKIE).unwrap_or_default();
        let key = self.console_session_key(id);
        let session = if id.is_empty() {
            None
        } else {
            self.load_json::<Session>(&key)?
        };
        match session.filter(|s| now <= s.expires_at) {
            Some(s) => Ok(Ok((key, s))),
            None => {
                let look = self.look(None, req, rng);
                let page = look.message(401, "expired", &look.t.expired_body);
                Ok(Err(with_cookie(page, session_cookie("", 0))))
            }
        }
    }

    /// A request to one of the screens: the browser's live session, for an organization the admin
    /// still administers, and (for a `POST`) the session's CSRF token in the form; else the page
    /// that says why. A page asked for another organization (`?org=`) is refused and the refusal
    /// recorded in the admin's own stream.
    fn screen<R: CryptoRng + ?Sized>(
        &self,
        req: &WebRequest<'_>,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<std::result::Result<Screen, WebResponse>> {
        let (_, session) = match self.session_of(req, now, rng)? {
            Ok(found) => found,
            Err(page) => return Ok(Err(page)),
        };
        let actor = session.actor(req);
        let look = self.look(Some(&session.org), req, rng);
        let screen = Screen {
            session,
            actor,
            look,
        };
        let asked = field(req.query.as_bytes(), "org");
        if !may_administer(&screen.actor, screen.org())
            || asked.as_deref().is_some_and(|o| o != screen.org())
        {
            let target = asked.unwrap_or_else(|| screen.org().to_owned());
            let target = if crate::kernel::input::id("org_id", &target).is_ok() {
                target
            } else {
                "invalid".to_owned()
            };
            self.record(
                console_event(
                    &screen.actor,
                    &screen.actor.org_id,
                    &target,
                    Action::AccessDenied,
                    Outcome::Denied,
                )
                .reason(&format!("console:not-authorized:target-org:{target}")),
                now,
                rng,
            )?;
            return Ok(Err(screen.look.message(
                403,
                "wrong-org",
                &screen.look.t.denied_org,
            )));
        }
        if req.method == WebMethod::Post && !screen.csrf_holds(req) {
            let t = &screen.look.t;
            return Ok(Err(screen.message(
                403,
                "refused",
                &t.denied_heading,
                &t.form_stale,
            )));
        }
        Ok(Ok(screen))
    }

    /// Records that the admin viewed `what` (`console:<what>`) in the organization's stream. A
    /// view that cannot be recorded is not shown.
    fn viewed<R: CryptoRng + ?Sized>(
        &self,
        screen: &Screen,
        what: &str,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<()> {
        self.record(
            console_event(
                &screen.actor,
                screen.org(),
                screen.org(),
                Action::AdminConsoleViewed,
                Outcome::Success,
            )
            .reason(&format!("console:{what}")),
            now,
            rng,
        )
    }

    /// `GET /admin/console/health?days=…&lang=…[&org=…]`: the charts, recorded.
    fn health_page<R: CryptoRng + ?Sized>(
        &self,
        req: &WebRequest<'_>,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<WebResponse> {
        let screen = match self.screen(req, now, rng)? {
            Ok(screen) => screen,
            Err(page) => return Ok(page),
        };
        let t = &screen.look.t;
        let days = match field(req.query.as_bytes(), "days") {
            None => DEFAULT_DAYS,
            Some(d) => match d.parse::<i64>() {
                Ok(d) if (MIN_DAYS..=MAX_DAYS).contains(&d) => d,
                _ => return Ok(screen.message(400, "bad-days", &t.denied_heading, &t.bad_days)),
            },
        };
        // Every view leaves a record; one that cannot be recorded is not shown.
        self.viewed(&screen, &format!("health:days={days}"), now, rng)?;
        let today = day_of(now);
        let counts = (today - days + 1..=today)
            .map(|day| self.day_counts(screen.org(), day, today))
            .collect::<Result<Vec<_>>>()?;
        let view = health::build(t, &counts);
        Ok(screen.look.render(200, &t.health_heading, |p| {
            screen.shell(p, "health");
            p.health = Some(view);
            p.days = days;
        }))
    }

    /// `POST /admin/console/sign-out`: the session ends.
    fn sign_out<R: CryptoRng + ?Sized>(
        &self,
        req: &WebRequest<'_>,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<WebResponse> {
        let (key, session) = match self.session_of(req, now, rng)? {
            Ok(found) => found,
            Err(page) => return Ok(page),
        };
        let look = self.look(Some(&session.org), req, rng);
        let presented = field(req.form, "csrf").unwrap_or_default();
        if !bool::from(presented.as_bytes().ct_eq(session.csrf.as_bytes())) {
            return Ok(look.message(403, "refused", &look.t.form_stale));
        }
        self.store.delete(&key).map_err(Error::store)?;
        let page = look.render(200, &look.t.signed_out_heading, |p| {
            p.message = Some(Message {
                id: "signed-out",
                heading: look.t.signed_out_heading.clone(),
                body: look.t.signed_out_body.clone(),
                alert: false,
                link: None,
            });
        });
        Ok(with_cookie(page, session_cookie("", 0)))
    }
}

/// A console record: the admin acts on `subject` (an organization), in `org`'s stream.
fn console_event(
    actor: &Actor,
    org: &str,
    subject: &str,
    action: Action,
    outcome: Outcome,
) -> Event {
    Event {
        org: org.to_owned(),
        actor: actor.user_id.clone(),
        subject: subject.to_owned(),
        action,
        outcome,
        reason: None,
        ip: (!actor.ip.is_empty()).then(|| actor.ip.clone()),
        user_agent: (!actor.user_agent.is_empty()).then(|| actor.user_agent.clone()),
        device_id: None,
        challenge_id: None,
    }
}
