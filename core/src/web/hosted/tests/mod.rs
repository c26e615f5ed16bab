//! The hosted pages, driven like a browser drives them: a cookie jar, forms, redirects followed by
//! hand, a test clock.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly on purpose"
)]

mod code;
mod device_pages;
mod sessions;
mod words;

use std::cell::RefCell;
use std::collections::BTreeMap;

use rand_core::{OsRng, TryRngCore};

use super::ui::{luminance, text_color_on};
use super::{SESSION_COOKIE, SESSION_TTL_SECONDS, WebMethod, WebRequest, WebResponse};
use crate::devices;
use crate::email::branding::Branding;
use crate::engine::Engine;
use crate::kernel::keys;
use crate::kernel::ports::{PortError, PortResult, Store};
use crate::kernel::secret::HmacKey;
use crate::kernel::settings::Settings;
use crate::kernel::time::Timestamp;
use crate::testing::{MemAudit, MemMailer, MemStore};
use crate::web::prompt::PromptConfig;

const T0: i64 = 1_795_000_000;
const RETURN: &str = "https://idp.example/mfa/return";

fn config() -> PromptConfig {
    PromptConfig::new(HmacKey::from_bytes(&[9u8; 32]).unwrap(), "idp-1", &[RETURN])
}

fn request(user: &str, jti: &str, at: i64, extra: &[(&str, serde_json::Value)]) -> String {
    let mut claims = serde_json::json!({
        "iss": "idp-1", "aud": "mfa-step", "sub": user, "org": "acme",
        "email": format!("{user}@clinic.example"), "roles": ["provider"],
        "return_to": format!("{RETURN}?state=s1"), "nonce": "n-1",
        "jti": jti, "iat": at, "exp": at + 120,
    });
    for (k, v) in extra {
        claims[*k] = v.clone();
    }
    config().sign(&claims).unwrap()
}

/// A browser: cookies, a user agent, an address.
struct Browser {
    jar: RefCell<BTreeMap<String, String>>,
    agent: &'static str,
    ip: &'static str,
}

impl Browser {
    fn new() -> Self {
        Self {
            jar: RefCell::new(BTreeMap::new()),
            agent: "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36",
            ip: "203.0.113.7",
        }
    }

    fn cookies(&self) -> String {
        self.jar
            .borrow()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn take(&self, r: &WebResponse) {
        for (name, value) in &r.headers {
            if *name == "set-cookie" {
                let parsed = cookie::Cookie::parse(value.clone()).unwrap();
                if parsed.max_age() == Some(cookie::time::Duration::ZERO) {
                    self.jar.borrow_mut().remove(parsed.name());
                } else {
                    self.jar
                        .borrow_mut()
                        .insert(parsed.name().to_owned(), parsed.value().to_owned());
                }
            }
        }
    }
}

fn header<'a>(r: &'a WebResponse, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.as_str())
}

fn html(r: &WebResponse) -> &str {
    r.html.as_deref().unwrap_or_default()
}

/// The CSRF token in a page's first form.
fn csrf(page: &WebResponse) -> String {
    let h = html(page);
    let at = h.find("name=\"csrf\" value=\"").expect("a form") + 19;
    h[at..at + 32].to_owned()
}

struct World {
    store: MemStore,
    mailer: MemMailer,
    audit: MemAudit,
    key: HmacKey,
    settings: Settings,
}

impl World {
    fn new() -> Self {
        Self {
            store: MemStore::default(),
            mailer: MemMailer::default(),
            audit: MemAudit::default(),
            key: HmacKey::from_bytes(&[7; 32]).unwrap(),
            settings: Settings::default(),
        }
    }

    fn engine(&self) -> Engine<'_> {
        Engine {
            store: &self.store,
            mailer: &self.mailer,
            audit: &self.audit,
            settings: self.settings.clone(),
            key: &self.key,
        }
    }

    fn call(
        &self,
        b: &Browser,
        method: WebMethod,
        path_and_query: &str,
        form: &str,
        at: i64,
    ) -> WebResponse {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let cookies = b.cookies();
        let req = WebRequest {
            method,
            path,
            query,
            form: form.as_bytes(),
            cookies: &cookies,
            user_agent: b.agent,
            client_ip: b.ip,
            accept_language: "en-US,en;q=0.8",
        };
        let r = self.engine().hosted_page(
            Some(&config()),
            &req,
            Timestamp(at),
            &mut OsRng.unwrap_err(),
        );
        b.take(&r);
        r
    }

    fn get(&self, b: &Browser, path: &str, at: i64) -> WebResponse {
        self.call(b, WebMethod::Get, path, "", at)
    }

    fn post(&self, b: &Browser, path: &str, form: &str, at: i64) -> WebResponse {
        self.call(b, WebMethod::Post, path, form, at)
    }

    /// Opens a request and follows the redirect to the step page.
    fn open(&self, b: &Browser, token: &str, at: i64) -> WebResponse {
        let r = self.get(b, &format!("/prompt?request={token}"), at);
        assert_eq!(r.status, 303, "{}", html(&r));
        assert_eq!(header(&r, "location"), Some("/prompt/step"));
        self.get(b, "/prompt/step", at)
    }

    /// The claims of the result a redirect carries.
    fn result(r: &WebResponse) -> serde_json::Value {
        assert_eq!(r.status, 303, "{}", html(r));
        let location = header(r, "location").unwrap();
        assert!(location.starts_with(&format!("{RETURN}?state=s1&result=")));
        let token = location.rsplit("result=").next().unwrap();
        serde_json::from_slice(&config().open(token).unwrap()).unwrap()
    }
}

/// Enrolls `user` in this browser (remembering it when `remember`), returning the final redirect.
fn enroll(w: &World, b: &Browser, user: &str, remember: bool, at: i64) -> WebResponse {
    let page = w.open(b, &request(user, &format!("{user}-enroll"), at, &[]), at);
    assert_eq!(page.status, 200);
    assert!(html(&page).contains("Confirm your email address"));
    let code = w.mailer.last_code().unwrap();
    let spaced = format!("{} {}", &code[..3], &code[3..]);
    let form = format!(
        "csrf={}&code={}{}",
        csrf(&page),
        spaced.replace(' ', "+"),
        if remember { "&remember=on" } else { "" }
    );
    w.post(b, "/prompt/verify", &form, at + 20)
}
