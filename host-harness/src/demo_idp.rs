//! The demo identity provider behind `serve --demo`: the *other party* of the hosted prompt, played
//! by the host so that a newcomer can try the prompt in a browser. It is not part of the component
//! and decides nothing about MFA; it does what a real IdP must do with mfa-step, no more:
//!
//! - `GET /demo/`: a sign-in form (one of three demo users, a language, and whether to sign in or
//!   to manage trusted browsers).
//! - `POST /demo/start`: signs a request JWT (HS256 under the shared `prompt_key`, `iss`
//!   `demo-idp`, `aud` `mfa-step`, a fresh random `nonce` and `jti`, two minutes to live), keeps the
//!   nonce in a cookie (`demo-idp-nonce`, HttpOnly, SameSite=Lax, Path=/demo) and sends the browser to
//!   `/prompt?request=<jwt>`.
//! - `GET /demo/return?result=<jwt>`: accepts the result only if it is signed with the shared key
//!   under HS256 (no other algorithm), names `iss` `mfa-step` and `aud` `demo-idp`, has not expired,
//!   carries the nonce this browser's cookie holds, and was not accepted before (its `jti`). Anything
//!   else is answered `400` with the reason, and shows no user.
//!
//! It defends against a forged, tampered, misdirected, expired or replayed result, and against a
//! result minted for another browser's sign-in (the nonce). Every value shown is HTML-escaped, and
//! every page carries a strict content security policy, `no-store` and `nosniff`.
//! The key is never logged or shown.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand_core::{OsRng, TryRngCore};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use crate::settings::{DEMO_CLIENT_ID, DemoPrompt};

/// The nonce cookie's name.
pub const NONCE_COOKIE: &str = "demo-idp-nonce";
/// The largest form body accepted.
const MAX_FORM: usize = 16 * 1024;
/// How long a request lives (the component allows up to 300 s).
const REQUEST_LIFETIME: u64 = 120;
/// Clock difference tolerated on a result's expiry (as the component tolerates on requests).
const LEEWAY: u64 = 30;
/// The audience of requests, and the issuer of results.
const MFA_STEP: &str = "mfa-step";
/// The demo users: id, roles, label.
const USERS: [(&str, &str, &str); 3] = [
    ("dr-demo", "provider", "dr-demo (provider)"),
    ("coach-demo", "coach", "coach-demo (coach)"),
    ("admin-demo", "org-admin", "admin-demo (org-admin)"),
];
/// The demo organization.
const ORG: &str = "demo-clinic";
const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;background:#f5f6f8;color:#1b1f24}\
main{max-width:32rem;margin:3rem auto;padding:2rem;background:#fff;border-radius:8px;box-shadow:0 1px 4px #0002}\
label{display:block;margin-top:1rem;font-weight:600}select,button{font:inherit;margin-top:.25rem}\
select{display:block;width:100%;padding:.4rem}button{margin-top:1.5rem;margin-right:.5rem;padding:.5rem 1rem}\
dt{font-weight:600;margin-top:.5rem}dd{margin-left:0}[role=alert]{color:#a4000f}";

/// Whether the demo identity provider answers `path`.
#[must_use]
pub fn owns(path: &str) -> bool {
    path == "/demo" || path.starts_with("/demo/")
}

/// The demo identity provider: the shared key and the hosts browsers may come back to.
pub struct DemoIdp {
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// `host:port` of each allowed return URL, lower case.
    hosts: Vec<String>,
    /// Used when the request's `Host` is not one of `hosts`.
    fallback_host: String,
    /// Results accepted, by `jti`, with their expiry: each is accepted once.
    seen: Mutex<HashMap<String, u64>>,
}

impl std::fmt::Debug for DemoIdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoIdp")
            .field("key", &"<redacted>")
            .field("hosts", &self.hosts)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct RequestClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    org: &'a str,
    email: String,
    roles: [&'a str; 1],
    locale: &'a str,
    return_to: String,
    nonce: &'a str,
    jti: String,
    iat: u64,
    exp: u64,
    purpose: &'a str,
}

#[derive(Deserialize)]
struct ResultClaims {
    sub: String,
    org: String,
    outcome: String,
    #[serde(default)]
    amr: Vec<String>,
    auth_time: i64,
    nonce: String,
    jti: String,
    exp: u64,
}

type Page = Response<Full<Bytes>>;

impl DemoIdp {
    /// The demo identity provider for the prompt `serve --demo` configured on `listen`.
    ///
    /// # Errors
    /// The prompt key is not hex.
    pub fn new(prompt: &DemoPrompt, listen: SocketAddr) -> Result<Self> {
        let key = Zeroizing::new(
            hex::decode(prompt.key_hex.trim()).context("the prompt key must be hexadecimal")?,
        );
        let hosts = prompt
            .return_urls
            .iter()
            .filter_map(|u| u.strip_prefix("http://")?.strip_suffix("/demo/return"))
            .map(str::to_ascii_lowercase)
            .collect();
        Ok(Self {
            encoding: EncodingKey::from_secret(&key),
            decoding: DecodingKey::from_secret(&key),
            hosts,
            fallback_host: format!("127.0.0.1:{}", listen.port()),
            seen: Mutex::new(HashMap::new()),
        })
    }

    /// Answers one request to a path [`owns`] accepts. Never fails: every problem is a page.
    pub async fn handle<B>(&self, req: Request<B>) -> Page
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = req.uri().path().to_owned();
        match (req.method(), path.as_str()) {
            (&Method::GET, "/demo") => redirect("/demo/"),
            (&Method::GET, "/demo/") => form_page(),
            (&Method::POST, "/demo/start") => {
                let host = self.return_host(req.headers());
                match read_form(req.into_body()).await {
                    Ok(form) => self.start(&form, &host),
                    Err(page) => page,
                }
            }
            (&Method::GET, "/demo/return") => {
                let token = req.uri().query().and_then(|q| {
                    form_urlencoded::parse(q.as_bytes())
                        .find(|(k, _)| k == "result")
                        .map(|(_, v)| v.into_owned())
                });
                let nonce = cookie(req.headers(), NONCE_COOKIE);
                self.finish(token.as_deref(), nonce, unix_now())
            }
            (_, "/demo" | "/demo/" | "/demo/return") => not_allowed("GET"),
            (_, "/demo/start") => not_allowed("POST"),
            _ => message_page(
                StatusCode::NOT_FOUND,
                "Not found",
                "The demo identity provider has no such page.",
            ),
        }
    }

    /// `host:port` for `return_to`: the browser's own `Host` when it is allowed (so that the nonce
    /// cookie comes back with the browser), else 127.0.0.1.
    fn return_host(&self, headers: &HeaderMap) -> String {
        headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_ascii_lowercase)
            .filter(|h| self.hosts.contains(h))
            .unwrap_or_else(|| self.fallback_host.clone())
    }

    fn start(&self, form: &[(String, String)], host: &str) -> Page {
        let field = |name: &str| {
            form.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let Some((user, role, _)) = USERS.iter().find(|(u, _, _)| Some(*u) == field("user")) else {
            return bad_request("Choose one of the demo users.");
        };
        let Some(locale) = field("locale").filter(|l| ["en", "es"].contains(l)) else {
            return bad_request("Choose English or Spanish.");
        };
        let Some(purpose) = field("purpose").filter(|p| ["login", "devices"].contains(p)) else {
            return bad_request("Choose to sign in or to manage trusted browsers.");
        };
        let (Ok(nonce), Ok(jti)) = (random_hex(), random_hex()) else {
            return server_error();
        };
        let now = unix_now();
        let claims = RequestClaims {
            iss: DEMO_CLIENT_ID,
            aud: MFA_STEP,
            sub: user,
            org: ORG,
            email: format!("{user}@{ORG}.example"),
            roles: [role],
            locale,
            return_to: format!("http://{host}/demo/return"),
            nonce: &nonce,
            jti,
            iat: now,
            exp: now + REQUEST_LIFETIME,
            purpose,
        };
        let Ok(token) =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
        else {
            return server_error();
        };
        let mut resp = redirect(&format!("/prompt?request={token}"));
        let cookie = format!(
            "{NONCE_COOKIE}={nonce}; HttpOnly; SameSite=Lax; Path=/demo; Max-Age={}",
            REQUEST_LIFETIME + 600
        );
        match HeaderValue::from_str(&cookie) {
            Ok(v) => {
                resp.headers_mut().insert(header::SET_COOKIE, v);
                resp
            }
            Err(_) => server_error(),
        }
    }

    /// Checks a result and shows it, or says why it was rejected.
    fn finish(&self, token: Option<&str>, nonce: Option<&str>, now: u64) -> Page {
        match self.verify(token, nonce, now) {
            Ok(claims) => {
                let mut resp = result_page(&claims);
                // The sign-in this browser started is over: its nonce goes.
                resp.headers_mut().insert(
                    header::SET_COOKIE,
                    HeaderValue::from_static(
                        "demo-idp-nonce=; HttpOnly; SameSite=Lax; Path=/demo; Max-Age=0",
                    ),
                );
                resp
            }
            Err(why) => rejected_page(why),
        }
    }

    fn verify(
        &self,
        token: Option<&str>,
        nonce: Option<&str>,
        now: u64,
    ) -> std::result::Result<ResultClaims, &'static str> {
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or("the link carries no result")?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_issuer(&[MFA_STEP]);
        validation.set_audience(&[DEMO_CLIENT_ID]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY;
        let claims = jsonwebtoken::decode::<ResultClaims>(token, &self.decoding, &validation)
            .map_err(|e| why_invalid(e.kind()))?
            .claims;
        let expected =
            nonce.ok_or("this browser holds no sign-in started here (no nonce cookie)")?;
        if !bool::from(claims.nonce.as_bytes().ct_eq(expected.as_bytes())) {
            return Err("its nonce does not match the sign-in this browser started");
        }
        if !matches!(claims.outcome.as_str(), "success" | "denied" | "cancelled") {
            return Err("its outcome is not one this provider knows");
        }
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.retain(|_, exp| exp.saturating_add(LEEWAY) >= now);
        if seen.contains_key(&claims.jti) {
            return Err("it was used already (each result is accepted once)");
        }
        seen.insert(claims.jti.clone(), claims.exp);
        Ok(claims)
    }
}

fn why_invalid(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidSignature => "its signature does not match the shared key",
        ErrorKind::InvalidAlgorithm => "it is not signed with HS256",
        ErrorKind::ExpiredSignature => "it has expired",
        ErrorKind::InvalidIssuer => "it was not issued by mfa-step",
        ErrorKind::InvalidAudience => "it is meant for another client",
        ErrorKind::MissingRequiredClaim(_) => "a required claim is missing",
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => "it is not a well-formed result",
        _ => "it could not be verified",
    }
}

/// The form's fields, or the page refusing the body.
async fn read_form<B>(body: B) -> std::result::Result<Vec<(String, String)>, Page>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match Limited::new(body, MAX_FORM).collect().await {
        Ok(collected) => Ok(form_urlencoded::parse(&collected.to_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(message_page(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request refused",
            "The form is larger than this page accepts.",
        )),
        Err(_) => Err(bad_request("The form could not be read.")),
    }
}

/// The value of cookie `name`, if the browser sent it.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

fn random_hex() -> Result<String> {
    let mut bytes = [0u8; 16];
    OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| anyhow::anyhow!("the operating system's CSPRNG failed: {e}"))?;
    Ok(hex::encode(bytes))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Escapes text for HTML content and quoted attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A response with the headers every answer carries. `html` is the page's body markup.
fn page(status: StatusCode, title: &str, html: &str) -> Page {
    let doc = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{} · Demo clinic sign-in</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n{html}</main>\n</body>\n</html>\n",
        escape(title)
    );
    let mut resp = Response::new(Full::new(Bytes::from(doc)));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    let fixed: [(HeaderName, &'static str); 4] = [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    resp
}

fn redirect(location: &str) -> Page {
    let Ok(value) = HeaderValue::from_str(location) else {
        return server_error();
    };
    let mut resp = message_page(
        StatusCode::SEE_OTHER,
        "Redirecting",
        "Continue to the next page.",
    );
    resp.headers_mut().insert(header::LOCATION, value);
    resp
}

fn message_page(status: StatusCode, title: &str, message: &str) -> Page {
    let role = if status.is_client_error() || status.is_server_error() {
        " role=\"alert\""
    } else {
        ""
    };
    page(
        status,
        title,
        &format!(
            "<h1>{}</h1>\n<p{role}>{}</p>\n<p><a href=\"/demo/\">Back to the demo sign-in</a></p>\n",
            escape(title),
            escape(message)
        ),
    )
}

fn bad_request(message: &str) -> Page {
    message_page(StatusCode::BAD_REQUEST, "Request refused", message)
}

fn server_error() -> Page {
    message_page(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        "The demo identity provider could not sign the request. Try again.",
    )
}

fn not_allowed(allow: &'static str) -> Page {
    let mut resp = message_page(
        StatusCode::METHOD_NOT_ALLOWED,
        "Not allowed",
        "This page does not answer that method.",
    );
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}

fn form_page() -> Page {
    let mut users = String::new();
    for (id, _, label) in USERS {
        let _ = writeln!(users, "<option value=\"{id}\">{label}</option>");
    }
    page(
        StatusCode::OK,
        "Sign in",
        &format!(
            "<h1>Demo clinic sign-in</h1>\n\
             <p>This page plays the clinic's identity provider. Choose a user: mfa-step asks for the \
             second factor (the code arrives by email, in the outbox folder by default) and sends you \
             back here with a signed result.</p>\n\
             <form method=\"post\" action=\"/demo/start\">\n\
             <label for=\"user\">User</label>\n<select id=\"user\" name=\"user\">\n{users}</select>\n\
             <label for=\"locale\">Language</label>\n<select id=\"locale\" name=\"locale\">\n\
             <option value=\"en\">English</option>\n<option value=\"es\" lang=\"es\">Español</option>\n</select>\n\
             <button type=\"submit\" id=\"sign-in\" name=\"purpose\" value=\"login\">Sign in</button>\n\
             <button type=\"submit\" id=\"manage-devices\" name=\"purpose\" value=\"devices\">Manage trusted browsers</button>\n\
             </form>\n"
        ),
    )
}

fn result_page(claims: &ResultClaims) -> Page {
    let title = match claims.outcome.as_str() {
        "success" => "Signed in",
        "denied" => "Sign-in refused",
        _ => "Sign-in cancelled",
    };
    let time = jiff::Timestamp::from_second(claims.auth_time)
        .map(|t| {
            let t = t.to_string();
            format!("<time datetime=\"{t}\">{t}</time>", t = escape(&t))
        })
        .unwrap_or_else(|_| escape(&claims.auth_time.to_string()));
    page(
        StatusCode::OK,
        title,
        &format!(
            "<h1 id=\"result\">{title}</h1>\n\
             <p>The result is signed by mfa-step; this provider checked its signature, issuer, audience, \
             expiry and nonce, and accepts it once.</p>\n\
             <dl>\n<dt>User</dt><dd id=\"user\">{}</dd>\n\
             <dt>Organization</dt><dd id=\"org\">{}</dd>\n\
             <dt>Outcome</dt><dd id=\"outcome\">{}</dd>\n\
             <dt>Methods (amr)</dt><dd id=\"amr\">{}</dd>\n\
             <dt>Time</dt><dd id=\"time\">{time}</dd>\n</dl>\n\
             <p><a href=\"/demo/\">Back to the demo sign-in</a></p>\n",
            escape(&claims.sub),
            escape(&claims.org),
            escape(&claims.outcome),
            if claims.amr.is_empty() {
                "none (no second factor was needed)".to_owned()
            } else {
                escape(&claims.amr.join(", "))
            },
        ),
    )
}

fn rejected_page(why: &str) -> Page {
    page(
        StatusCode::BAD_REQUEST,
        "Result rejected",
        &format!(
            "<h1 id=\"result\">Result rejected</h1>\n\
             <p id=\"why\" role=\"alert\">This provider refused the result: {}.</p>\n\
             <p><a href=\"/demo/\">Back to the demo sign-in</a></p>\n",
            escape(why)
        ),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic, reason = "tests")]
mod tests {
    use super::*;

    fn idp() -> DemoIdp {
        let prompt = DemoPrompt {
            key_hex: Zeroizing::new("11".repeat(32)),
            return_urls: vec![
                "http://127.0.0.1:8080/demo/return".to_owned(),
                "http://localhost:8080/demo/return".to_owned(),
            ],
        };
        DemoIdp::new(&prompt, "127.0.0.1:8080".parse().unwrap()).unwrap()
    }

    fn headers(pairs: &[(HeaderName, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| (n.clone(), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn return_to_follows_an_allowed_host_only() {
        let idp = idp();
        assert_eq!(
            idp.return_host(&headers(&[(header::HOST, "LocalHost:8080")])),
            "localhost:8080"
        );
        assert_eq!(
            idp.return_host(&headers(&[(header::HOST, "evil.example:8080")])),
            "127.0.0.1:8080"
        );
        assert_eq!(idp.return_host(&HeaderMap::new()), "127.0.0.1:8080");
    }

    #[test]
    fn the_nonce_cookie_is_found_among_others() {
        let h = headers(&[
            (header::COOKIE, "a=1; demo-idp-nonce=abc"),
            (header::COOKIE, "b=2"),
        ]);
        assert_eq!(cookie(&h, NONCE_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
    }

    #[test]
    fn values_are_escaped() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn a_result_with_alg_none_or_no_link_is_rejected() {
        let idp = idp();
        let none = "eyJhbGciOiJub25lIn0.eyJpc3MiOiJtZmEtc3RlcCJ9.";
        assert!(idp.verify(Some(none), Some("n"), unix_now()).is_err());
        assert_eq!(
            idp.verify(None, Some("n"), unix_now()).err(),
            Some("the link carries no result")
        );
    }
}
