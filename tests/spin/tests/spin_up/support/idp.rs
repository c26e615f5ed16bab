//! The identity provider's side of the hosted prompt, as any IdP would do it with a JWT library:
//! a signed request sends the browser to `/prompt`, and the result it brings back is checked.
//! The "browser" keeps its cookies by hand and connects from a chosen loopback address.

use std::net::Ipv4Addr;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};

use super::{App, CLIENT_ID, RETURN_URL, Reply, email, request};

/// The name of the hosted prompt's session cookie.
const SESSION_COOKIE: &str = "__Host-mfa-prompt";
/// The name of the trusted-browser cookie.
pub const DEVICE_COOKIE: &str = "__Host-mfa-device";

fn now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// A signed request for `user` of `org` (`purpose` "login" or "devices").
pub fn signed_request(app: &App, org: &str, user: &str, purpose: &str, nonce: &str) -> String {
    let iat = now();
    let claims = json!({
        "iss": CLIENT_ID,
        "aud": "mfa-step",
        "sub": user,
        "org": org,
        "email": email(user),
        "roles": ["provider"],
        "locale": "en",
        "purpose": purpose,
        "return_to": RETURN_URL,
        "nonce": nonce,
        "jti": format!("{nonce}-{}", super::random_hex(8)),
        "iat": iat,
        "exp": iat + 120,
    });
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&hex::decode(&app.prompt_key).unwrap()),
    )
    .unwrap()
}

/// The result's claims, checked as the IdP checks them (signature, issuer, audience, expiry).
pub fn check_result(app: &App, location: &str) -> Value {
    let token = location
        .strip_prefix(&format!("{RETURN_URL}?result="))
        .unwrap_or_else(|| panic!("not a return to the IdP: {location}"));
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_audience(&[CLIENT_ID]);
    validation.set_issuer(&["mfa-step"]);
    jsonwebtoken::decode::<Value>(
        token,
        &DecodingKey::from_secret(&hex::decode(&app.prompt_key).unwrap()),
        &validation,
    )
    .unwrap_or_else(|e| panic!("the result does not verify: {e}"))
    .claims
}

/// A browser: its cookies, and the network it connects from.
pub struct Browser {
    /// The source address of its connections.
    pub from: Ipv4Addr,
    cookies: Vec<(String, String)>,
    /// A header it sends with every request, as a client could (to show it is not believed).
    pub forged_header: Option<(String, String)>,
}

impl Browser {
    /// A browser on the network of `from`, with no cookies.
    pub fn new(from: Ipv4Addr) -> Self {
        Self {
            from,
            cookies: Vec::new(),
            forged_header: None,
        }
    }

    /// Its trusted-browser cookie's value, if it holds one.
    pub fn device_cookie(&self) -> Option<String> {
        self.cookies
            .iter()
            .find(|(n, _)| n == DEVICE_COOKIE)
            .map(|(_, v)| v.clone())
    }

    /// The same browser, moved to the network of `from` (its cookies go with it).
    pub fn move_to(&mut self, from: Ipv4Addr) {
        self.from = from;
    }

    /// A request with its cookies; the cookies it is sent are kept.
    pub fn go(&mut self, app: &App, method: &str, path: &str, form: &str) -> Reply {
        let cookie = self
            .cookies
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let mut headers = vec![(
            "User-Agent",
            "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0",
        )];
        if !cookie.is_empty() {
            headers.push(("Cookie", &cookie));
        }
        if method == "POST" {
            headers.push(("Content-Type", "application/x-www-form-urlencoded"));
        }
        if let Some((name, value)) = &self.forged_header {
            headers.push((name, value));
        }
        let reply = request(Some(self.from), app.port, method, path, &headers, form)
            .unwrap_or_else(|e| panic!("{e}"));
        for (name, value) in &reply.headers {
            if name != "set-cookie" {
                continue;
            }
            let pair = value.split(';').next().unwrap_or_default();
            let Some((cookie, content)) = pair.split_once('=') else {
                continue;
            };
            let (cookie, content) = (cookie.trim().to_owned(), content.trim().to_owned());
            self.cookies.retain(|(n, _)| *n != cookie);
            let expired = value.to_ascii_lowercase().contains("max-age=0");
            if !content.is_empty() && !expired {
                self.cookies.push((cookie, content));
            }
        }
        reply
    }

    /// Opens a signed request and follows it to the first page or back to the IdP: the last
    /// answer (a page, or the 303 to `return_to`).
    pub fn open(&mut self, app: &App, request: &str) -> Reply {
        let opened = self.go(app, "GET", &format!("/prompt?request={request}"), "");
        assert_eq!(opened.status, 303, "/prompt: {}", opened.text);
        assert!(
            self.cookies.iter().any(|(n, _)| n == SESSION_COOKIE),
            "no session cookie: {:?}",
            opened.headers
        );
        self.follow(app, opened)
    }

    /// Follows 303s within the prompt; stops at a page or at the return to the IdP.
    pub fn follow(&mut self, app: &App, mut reply: Reply) -> Reply {
        while reply.status == 303 {
            let location = reply.header("location").unwrap().to_owned();
            if location.starts_with(RETURN_URL) {
                return reply;
            }
            reply = self.go(app, "GET", &location, "");
        }
        reply
    }

    /// Posts a form of the current page (its CSRF token added) and follows the answer.
    pub fn submit(&mut self, app: &App, page: &Reply, action: &str, fields: &str) -> Reply {
        let csrf = csrf_of(&page.text);
        let form = if fields.is_empty() {
            format!("csrf={csrf}")
        } else {
            format!("csrf={csrf}&{fields}")
        };
        let reply = self.go(app, "POST", action, &form);
        self.follow(app, reply)
    }
}

/// The CSRF token in a page's forms.
pub fn csrf_of(page: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = page
        .find(marker)
        .unwrap_or_else(|| panic!("no form with a CSRF token in {page}"))
        + marker.len();
    page[start..]
        .split('"')
        .next()
        .unwrap_or_default()
        .to_owned()
}
