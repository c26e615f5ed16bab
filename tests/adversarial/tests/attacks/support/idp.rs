//! What an IdP sends (login contexts, actors) and the flows the cases build on (a live code, a
//! sign-in, a trusted browser), over the REST API.

use serde_json::{Value, json};

use super::{Adversary, Reply};

/// A login context for `user` of `org` with `roles`, from one browser on one network.
pub fn ctx(org: &str, user: &str, roles: &[&str]) -> Value {
    json!({
        "user_id": user,
        "org_id": org,
        "email": email(user),
        "roles": roles,
        "locale": "en",
        "device": {
            "ip": "203.0.113.7",
            "traits": {
                "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/131.0",
                "browser_family": "Chrome",
                "browser_major": 131,
                "platform": "Windows",
                "language": "en-US",
                "time_zone": "America/Chicago",
                "screen_class": "desktop"
            }
        }
    })
}

pub fn email(user: &str) -> String {
    format!("{user}@clinic.example")
}

/// The same context presenting a trusted-device cookie.
pub fn with_cookie(c: &Value, cookie: &str) -> Value {
    let mut c = c.clone();
    c["device"]["cookie"] = json!(cookie);
    c
}

/// An actor (for devices and admin calls).
pub fn actor(org: &str, user: &str, roles: &[&str]) -> Value {
    json!({
        "user_id": user,
        "org_id": org,
        "roles": roles,
        "ip": "203.0.113.7",
        "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/131.0"
    })
}

/// The organization's admin.
pub fn admin(org: &str) -> Value {
    actor(org, "it-admin", &["org-admin"])
}

/// A code that is certainly not `code`.
pub fn wrong(code: &str) -> String {
    let n: u64 = code.parse().unwrap();
    format!("{:06}", (n + 1) % 1_000_000)
}

/// What a browser sends back for a `Set-Cookie` value: the `id.token` after the name.
pub fn cookie_value(set_cookie: &str) -> String {
    let pair = set_cookie.split(';').next().unwrap_or_default().trim();
    let (name, value) = pair.split_once('=').unwrap();
    assert_eq!(name, "__Host-mfa-device", "{set_cookie}");
    value.to_owned()
}

impl Adversary {
    /// `begin`, expecting a challenge: its id and rule.
    pub fn challenge(&self, c: &Value) -> (String, String) {
        let r = self.post("/v1/login/begin", &json!({ "context": c }));
        assert_eq!(
            (r.status, r.json["outcome"].as_str()),
            (200, Some("challenge")),
            "begin: {}",
            r.text
        );
        (
            r.json["challenge_id"].as_str().unwrap().to_owned(),
            r.json["why"]["rule"].as_str().unwrap().to_owned(),
        )
    }

    pub fn send(&self, c: &Value, id: &str) -> Reply {
        self.post(
            "/v1/login/send-code",
            &json!({ "context": c, "challenge_id": id }),
        )
    }

    pub fn verify(&self, c: &Value, id: &str, code: &str, remember: bool) -> Reply {
        self.post(
            "/v1/login/verify",
            &json!({ "context": c, "challenge_id": id, "code": code, "remember_device": remember }),
        )
    }

    /// A challenge with its code sent: `(challenge id, code)`.
    pub fn live_code(&self, c: &Value) -> (String, String) {
        let (id, _) = self.challenge(c);
        let sent = self.send(c, &id);
        assert_eq!(sent.status, 200, "send-code: {}", sent.text);
        (id, self.code(c["email"].as_str().unwrap()))
    }

    /// Signs in with an emailed code (enrolling the first time).
    pub fn sign_in(&self, c: &Value) {
        let (id, code) = self.live_code(c);
        let v = self.verify(c, &id, &code, false);
        assert_eq!(v.status, 200, "verify: {}", v.text);
    }

    /// Signs in with an emailed code, remembering the browser: `(device id, cookie)`.
    pub fn trust(&self, c: &Value) -> (String, String) {
        let (id, code) = self.live_code(c);
        let v = self.verify(c, &id, &code, true);
        assert_eq!(v.status, 200, "verify: {}", v.text);
        (
            v.json["device_id"].as_str().unwrap().to_owned(),
            cookie_value(v.json["set_cookie"].as_str().unwrap()),
        )
    }
}
