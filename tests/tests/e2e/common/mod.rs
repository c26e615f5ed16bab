//! Shared test harness: the compiled component (compiled once per process, and cached on disk by wasmtime across processes), fault-injectable
//! in-memory backends, a test clock, and helpers to call the component as an IdP would (function
//! exports) or as a REST client would (the HTTP export, in-process).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use host_harness::backends::{
    Faults, FaultyAuditSink, FaultyMailer, FaultyStore, MemoryAuditSink, MemoryMailer, MemoryStore,
};
use host_harness::wit::{self, Decision, ErrorKind, MfaError};
use host_harness::{Backends, Clock, Config, Runtime, TestClock, World};
use http_body_util::{BodyExt, Full};
use mfa_step_core::kernel::ports::Store;

/// 2026-11-18T11:06:40Z: an ordinary weekday morning.
pub const T0: i64 = 1_795_000_000;
/// A well-formed step-up token that no `verify` handed out.
pub const NOBODYS_STEP_UP: &str = "00000000000000000000000000000000";
pub const API_KEY: &str = "test-api-key-0123456789";
pub const HMAC_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

static HTTP_APP: OnceLock<Arc<Runtime>> = OnceLock::new();
static PLUGIN: OnceLock<Arc<Runtime>> = OnceLock::new();

/// The `http-app` component, compiled once per test binary.
pub fn http_app() -> Arc<Runtime> {
    HTTP_APP
        .get_or_init(|| {
            Arc::new(Runtime::new(World::HttpApp).expect("compile the http-app component"))
        })
        .clone()
}

/// The `plugin` component, compiled once per test binary.
pub fn plugin() -> Arc<Runtime> {
    PLUGIN
        .get_or_init(|| {
            Arc::new(Runtime::new(World::Plugin).expect("compile the plugin component"))
        })
        .clone()
}

pub struct Harness {
    pub runtime: Arc<Runtime>,
    pub backends: Backends,
    pub clock: TestClock,
    pub faults: Faults,
    pub mailer: Arc<FaultyMailer<MemoryMailer>>,
    pub audit: Arc<FaultyAuditSink<MemoryAuditSink>>,
    pub store: Arc<dyn Store + Send + Sync>,
    /// The store as the test sees it: behind no faults, and remembering every key the component named.
    pub tracked: Arc<KeyTracker>,
    /// The step-up token of the last successful `verify`, as an IdP keeps it in the sign-in's session.
    pub step_up: std::sync::Mutex<Option<String>>,
}

pub fn default_config() -> Config {
    Config::new([("hmac_key", HMAC_KEY), ("api_key", API_KEY)])
}

impl Harness {
    /// The http-app component over in-memory backends, at `T0`.
    pub fn new() -> Self {
        Self::with(http_app(), Arc::new(MemoryStore::new()), default_config())
    }

    /// The plugin component (no wasi:http) over in-memory backends.
    pub fn plugin() -> Self {
        Self::with(plugin(), Arc::new(MemoryStore::new()), default_config())
    }

    pub fn with(
        runtime: Arc<Runtime>,
        store: Arc<dyn Store + Send + Sync>,
        config: Config,
    ) -> Self {
        let faults = Faults::new();
        let clock = TestClock::at(T0);
        let tracked = Arc::new(KeyTracker::new(store));
        let store: Arc<dyn host_harness::backends::HostStore> =
            Arc::new(FaultyStore::new(ArcStore(tracked.clone()), faults.clone()));
        let mailer = Arc::new(FaultyMailer::new(MemoryMailer::new(), faults.clone()));
        let audit = Arc::new(FaultyAuditSink::new(MemoryAuditSink::new(), faults.clone()));
        let backends = Backends {
            store: store.clone(),
            mailer: mailer.clone(),
            audit: audit.clone(),
            config,
            clock: Clock::Test(clock.clone()),
            offload: host_harness::Offload::ALL,
        };
        Self {
            runtime,
            backends,
            clock,
            faults,
            mailer,
            audit,
            store,
            tracked,
            step_up: std::sync::Mutex::new(None),
        }
    }

    /// The same harness with its clock (as the test and the component see it) set to `unix_seconds`,
    /// which may be before `T0` ([`TestClock::set`] only moves forward).
    pub fn starting_at(mut self, unix_seconds: i64) -> Self {
        self.clock = TestClock::at(unix_seconds);
        self.backends.clock = Clock::Test(self.clock.clone());
        self
    }

    pub async fn begin(&self, ctx: &wit::LoginContext) -> Result<Decision, MfaError> {
        let (mut store, plugin) = self.runtime.instantiate(&self.backends).await.unwrap();
        plugin
            .mfa_step_plugin_login_step()
            .call_begin(&mut store, ctx)
            .await
            .expect("no trap")
    }

    /// `begin`, expecting a challenge; returns its id.
    pub async fn challenge(&self, ctx: &wit::LoginContext) -> String {
        match self.begin(ctx).await {
            Ok(Decision::Challenge(c)) => c.challenge_id,
            other => panic!("expected a challenge, got {other:?}"),
        }
    }

    pub async fn send_code(
        &self,
        ctx: &wit::LoginContext,
        id: &str,
    ) -> Result<wit::CodeSent, MfaError> {
        let (mut store, plugin) = self.runtime.instantiate(&self.backends).await.unwrap();
        plugin
            .mfa_step_plugin_login_step()
            .call_send_code(&mut store, ctx, id)
            .await
            .expect("no trap")
    }

    pub async fn verify(
        &self,
        ctx: &wit::LoginContext,
        id: &str,
        code: &str,
    ) -> Result<wit::Verified, MfaError> {
        let (mut store, plugin) = self.runtime.instantiate(&self.backends).await.unwrap();
        let verified = plugin
            .mfa_step_plugin_login_step()
            .call_verify(&mut store, ctx, id, code, false)
            .await
            .expect("no trap");
        self.keep_step_up(&verified);
        verified
    }

    /// Keeps the step-up token of a successful verify, as the sign-in's session would.
    fn keep_step_up(&self, verified: &Result<wit::Verified, MfaError>) {
        if let Ok(v) = verified {
            *self.step_up.lock().unwrap() = v.step_up.clone();
        }
    }

    pub async fn status(&self, ctx: &wit::LoginContext) -> Result<wit::UserStatus, MfaError> {
        let (mut store, plugin) = self.runtime.instantiate(&self.backends).await.unwrap();
        plugin
            .mfa_step_plugin_login_step()
            .call_status(&mut store, ctx)
            .await
            .expect("no trap")
    }

    /// `verify` with "remember this browser" ticked.
    pub async fn verify_remember(
        &self,
        ctx: &wit::LoginContext,
        id: &str,
        code: &str,
    ) -> Result<wit::Verified, MfaError> {
        let (mut store, plugin) = self.runtime.instantiate(&self.backends).await.unwrap();
        let verified = plugin
            .mfa_step_plugin_login_step()
            .call_verify(&mut store, ctx, id, code, true)
            .await
            .expect("no trap");
        self.keep_step_up(&verified);
        verified
    }

    /// The actor's trusted devices (the `devices` export).
    pub async fn devices(&self, actor: &wit::Actor) -> Result<Vec<wit::DeviceInfo>, MfaError> {
        let (mut store, plugin) = self.runtime.instantiate(&self.backends).await.unwrap();
        plugin
            .mfa_step_plugin_devices()
            .call_list_devices(&mut store, actor)
            .await
            .expect("no trap")
    }

    /// Revokes one of the actor's devices (the `devices` export).
    pub async fn revoke(&self, actor: &wit::Actor, device_id: &str) -> Result<(), MfaError> {
        let (mut store, plugin) = self.runtime.instantiate(&self.backends).await.unwrap();
        plugin
            .mfa_step_plugin_devices()
            .call_revoke(&mut store, actor, device_id)
            .await
            .expect("no trap")
    }

    /// Revokes all of the actor's devices (the `devices` export).
    pub async fn revoke_all(&self, actor: &wit::Actor) -> Result<u32, MfaError> {
        let (mut store, plugin) = self.runtime.instantiate(&self.backends).await.unwrap();
        plugin
            .mfa_step_plugin_devices()
            .call_revoke_all(&mut store, actor)
            .await
            .expect("no trap")
    }

    /// Reports a credential change (the `admin` export).
    pub async fn credential_changed(
        &self,
        actor: &wit::Actor,
        org_id: &str,
        user_id: &str,
        change: wit::CredentialChange,
    ) -> Result<u32, MfaError> {
        let (mut store, plugin) = self.runtime.instantiate(&self.backends).await.unwrap();
        plugin
            .mfa_step_plugin_admin()
            .call_credential_changed(&mut store, actor, org_id, user_id, change)
            .await
            .expect("no trap")
    }

    /// The code in the last email, read the way a person reads it: from the plain-text part.
    pub fn last_code(&self) -> String {
        let mail = self.mailer.inner().last().expect("an email was sent");
        code_in(&mail.text).expect("the email's text part holds a code")
    }

    pub fn emails_sent(&self) -> usize {
        self.mailer.inner().messages().len()
    }

    /// The audit actions recorded so far, in order.
    pub fn actions(&self) -> Vec<String> {
        self.audit
            .inner()
            .entries()
            .into_iter()
            .map(|e| e.action)
            .collect()
    }

    /// One in-process HTTP request to the component's REST API: status and JSON body.
    pub async fn http(
        &self,
        method: &str,
        path: &str,
        api_key: Option<&str>,
        body: &str,
    ) -> (u16, serde_json::Value) {
        let reply = self
            .http_full(method, path, api_key, body.as_bytes().to_vec())
            .await;
        (reply.status, reply.json)
    }

    /// One in-process HTTP request to the component's REST API, with the response headers.
    pub async fn http_full(
        &self,
        method: &str,
        path: &str,
        api_key: Option<&str>,
        body: Vec<u8>,
    ) -> HttpReply {
        let auth = api_key.map(|key| format!("Bearer {key}"));
        self.http_raw(method, path, auth.as_deref(), body).await
    }

    /// One in-process HTTP request with an arbitrary `Authorization` header value (or none).
    pub async fn http_raw(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
        body: Vec<u8>,
    ) -> HttpReply {
        let mut headers = vec![("content-type", "application/json".to_owned())];
        if let Some(value) = authorization {
            headers.push(("authorization", value.to_owned()));
        }
        self.http_with(method, path, &headers, body).await
    }

    /// One in-process HTTP request with these headers, as a browser or an IdP sends it.
    pub async fn http_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> HttpReply {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("http://localhost{path}"));
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        let req = req.body(Full::new(Bytes::from(body))).unwrap();
        let resp = self
            .runtime
            .handle(&self.backends, req)
            .await
            .expect("the component answers");
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    value.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .expect("read the body")
            .to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        HttpReply {
            status,
            headers,
            json,
            body: bytes.to_vec(),
        }
    }

    /// Every audit record so far, parsed (each line is one JSON object).
    pub fn audit_records(&self) -> Vec<serde_json::Value> {
        self.audit
            .inner()
            .entries()
            .iter()
            .map(|e| serde_json::from_str(&e.line).expect("each audit line is JSON"))
            .collect()
    }

    /// The `reason` of every `code_rejected` record, in order.
    pub fn rejection_reasons(&self) -> Vec<String> {
        self.audit_records()
            .iter()
            .filter(|r| r["action"] == "code_rejected" || r["action"] == "code_expired")
            .map(|r| r["reason"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// What the store holds under every key the component has named so far (absent keys left out).
    pub fn snapshot(&self) -> Snapshot {
        self.tracked.snapshot()
    }
}

/// A REST response as the client sees it.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    /// Header names in lower case, in the order sent.
    pub headers: Vec<(String, String)>,
    pub json: serde_json::Value,
    pub body: Vec<u8>,
}

impl HttpReply {
    /// Every value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The error kind, for an error body.
    pub fn kind(&self) -> Option<&str> {
        self.json["error"]["kind"].as_str()
    }
}

/// The store contents under the keys a [`KeyTracker`] has seen: `(value, counter)` per key.
pub type Snapshot = std::collections::BTreeMap<String, (Option<Vec<u8>>, i64)>;

/// A store wrapper that remembers every key named in any call, so that a test can compare the
/// whole state it could have changed before and after an operation. `MemoryStore` and
/// `SqliteStore` have no "dump everything" call (and counters are not listed by `list_keys`).
pub struct KeyTracker {
    inner: Arc<dyn Store + Send + Sync>,
    keys: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

impl KeyTracker {
    pub fn new(inner: Arc<dyn Store + Send + Sync>) -> Self {
        Self {
            inner,
            keys: std::sync::Mutex::new(std::collections::BTreeSet::new()),
        }
    }

    fn note(&self, key: &str) {
        self.keys.lock().unwrap().insert(key.to_owned());
    }

    /// Values and counters under every key seen so far; keys holding neither are left out, so that
    /// a mere read of an absent key does not count as a change.
    pub fn snapshot(&self) -> Snapshot {
        let keys: Vec<String> = self.keys.lock().unwrap().iter().cloned().collect();
        keys.into_iter()
            .map(|k| {
                let value = self.inner.get(&k).unwrap();
                // `increment(k, 0)` is the store's documented way to read a counter.
                let counter = self.inner.increment(&k, 0, None).unwrap();
                (k, (value, counter))
            })
            .filter(|(_, (value, counter))| value.is_some() || *counter != 0)
            .collect()
    }

    /// A counter's current value (reads through no fault layer).
    pub fn counter(&self, key: &str) -> i64 {
        self.inner.increment(key, 0, None).unwrap()
    }

    /// The tracked keys that start with `prefix`.
    pub fn keys_with_prefix(&self, prefix: &str) -> Vec<String> {
        self.keys
            .lock()
            .unwrap()
            .iter()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect()
    }
}

impl Store for KeyTracker {
    fn get(&self, key: &str) -> mfa_step_core::kernel::ports::PortResult<Option<Vec<u8>>> {
        self.note(key);
        self.inner.get(key)
    }
    fn set(
        &self,
        key: &str,
        value: &[u8],
        expires_at: Option<i64>,
    ) -> mfa_step_core::kernel::ports::PortResult<()> {
        self.note(key);
        self.inner.set(key, value, expires_at)
    }
    fn delete(&self, key: &str) -> mfa_step_core::kernel::ports::PortResult<()> {
        self.note(key);
        self.inner.delete(key)
    }
    fn increment(
        &self,
        key: &str,
        delta: i64,
        expires_at: Option<i64>,
    ) -> mfa_step_core::kernel::ports::PortResult<i64> {
        self.note(key);
        self.inner.increment(key, delta, expires_at)
    }
    fn list_keys(&self, prefix: &str) -> mfa_step_core::kernel::ports::PortResult<Vec<String>> {
        self.inner.list_keys(prefix)
    }
}

/// The first line of `text` that is only digits (the code's own line in the email).
pub fn code_in(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .find(|l| l.len() >= 6 && l.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_owned)
}

/// A store shared with the test (so it can be inspected), behind the `Store` trait.
pub struct ArcStore(pub Arc<dyn Store + Send + Sync>);

impl Store for ArcStore {
    fn get(&self, key: &str) -> mfa_step_core::kernel::ports::PortResult<Option<Vec<u8>>> {
        self.0.get(key)
    }
    fn set(
        &self,
        key: &str,
        value: &[u8],
        expires_at: Option<i64>,
    ) -> mfa_step_core::kernel::ports::PortResult<()> {
        self.0.set(key, value, expires_at)
    }
    fn delete(&self, key: &str) -> mfa_step_core::kernel::ports::PortResult<()> {
        self.0.delete(key)
    }
    fn increment(
        &self,
        key: &str,
        delta: i64,
        expires_at: Option<i64>,
    ) -> mfa_step_core::kernel::ports::PortResult<i64> {
        self.0.increment(key, delta, expires_at)
    }
    fn list_keys(&self, prefix: &str) -> mfa_step_core::kernel::ports::PortResult<Vec<String>> {
        self.0.list_keys(prefix)
    }
}

/// A login context as an IdP would send it.
pub fn ctx(user: &str) -> wit::LoginContext {
    wit::LoginContext {
        user_id: user.to_owned(),
        org_id: "acme-health".to_owned(),
        email: format!("{user}@clinic.example"),
        roles: vec!["provider".to_owned()],
        locale: None,
        device: wit::DevicePresentation {
            cookie: None,
            traits: wit::BrowserTraits {
                user_agent: "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/131.0".to_owned(),
                browser_family: Some("Chrome".to_owned()),
                browser_major: Some(131),
                platform: Some("Windows".to_owned()),
                language: Some("en-US".to_owned()),
                time_zone: Some("America/Chicago".to_owned()),
                screen_class: Some("desktop".to_owned()),
            },
            ip: "203.0.113.7".to_owned(),
        },
    }
}

/// An actor (for the `devices` and `admin` exports) as an IdP would vouch for it.
pub fn actor(user: &str, org: &str, roles: &[&str]) -> wit::Actor {
    wit::Actor {
        user_id: user.to_owned(),
        org_id: org.to_owned(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        ip: "203.0.113.7".to_owned(),
        user_agent: "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/131.0".to_owned(),
    }
}

/// What a browser sends back for a `Set-Cookie` header value: the `id.token` after the name, up to
/// the first attribute. Panics unless it is the trusted-device cookie.
pub fn cookie_value(set_cookie: &str) -> String {
    let pair = set_cookie.split(';').next().unwrap_or_default().trim();
    let (name, value) = pair
        .split_once('=')
        .unwrap_or_else(|| panic!("not a cookie: {set_cookie}"));
    assert_eq!(name, "__Host-mfa-device", "{set_cookie}");
    value.to_owned()
}

/// A code that is certainly not `code`.
pub fn wrong(code: &str) -> String {
    let n: u64 = code.parse().unwrap();
    format!(
        "{:0width$}",
        (n + 1) % 10u64.pow(code.len() as u32),
        width = code.len()
    )
}

pub fn kind(r: &Result<impl std::fmt::Debug, MfaError>) -> Option<ErrorKind> {
    r.as_ref().err().map(|e| e.kind)
}

/// The `admin` export, one call per instance as an IdP's admin console would make them.
impl Harness {
    pub async fn set_policy(
        &self,
        who: &wit::Actor,
        org: &str,
        policy: &wit::OrgPolicy,
    ) -> Result<(), MfaError> {
        let (mut store, plugin) = self.runtime.instantiate(&self.backends).await.unwrap();
        plugin
            .mfa_step_plugin_admin()
            .call_set_policy(&mut store, who, org, policy)
            .await
            .expect("no trap")
    }

    pub async fn get_policy(
        &self,
        who: &wit::Actor,
        org: &str,
    ) -> Result<wit::OrgPolicy, MfaError> {
        let (mut store, plugin) = self.runtime.instantiate(&self.backends).await.unwrap();
        plugin
            .mfa_step_plugin_admin()
            .call_get_policy(&mut store, who, org)
            .await
            .expect("no trap")
    }

    pub async fn reset_user(
        &self,
        who: &wit::Actor,
        org: &str,
        user: &str,
    ) -> Result<(), MfaError> {
        let (mut store, plugin) = self.runtime.instantiate(&self.backends).await.unwrap();
        plugin
            .mfa_step_plugin_admin()
            .call_reset_user(&mut store, who, org, user)
            .await
            .expect("no trap")
    }

    pub async fn set_branding(
        &self,
        who: &wit::Actor,
        org: &str,
        branding: &wit::Branding,
    ) -> Result<(), MfaError> {
        let (mut store, plugin) = self.runtime.instantiate(&self.backends).await.unwrap();
        plugin
            .mfa_step_plugin_admin()
            .call_set_branding(&mut store, who, org, branding)
            .await
            .expect("no trap")
    }

    pub async fn get_branding(
        &self,
        who: &wit::Actor,
        org: &str,
    ) -> Result<wit::Branding, MfaError> {
        let (mut store, plugin) = self.runtime.instantiate(&self.backends).await.unwrap();
        plugin
            .mfa_step_plugin_admin()
            .call_get_branding(&mut store, who, org)
            .await
            .expect("no trap")
    }
}

/// Enrollment and platform administration (the `login-step` and `admin` exports).
impl Harness {
    /// Starts enrolling the context's user at the context's address.
    pub async fn enroll(&self, ctx: &wit::LoginContext) -> Result<wit::Challenge, MfaError> {
        let (mut store, plugin) = self.runtime.instantiate(&self.backends).await.unwrap();
        plugin
            .mfa_step_plugin_login_step()
            .call_enroll(&mut store, ctx)
            .await
            .expect("no trap")
    }

    /// Starts moving the user's MFA to the context's (new) address.
    /// `change-email` from the session that made the last successful `verify` (with its step-up
    /// token), or from one that never verified (a well-formed token nobody was given).
    pub async fn change_email(&self, ctx: &wit::LoginContext) -> Result<wit::Challenge, MfaError> {
        let token = self
            .step_up
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| NOBODYS_STEP_UP.to_owned());
        self.change_email_with(ctx, &token).await
    }

    /// `change-email` with this step-up token.
    pub async fn change_email_with(
        &self,
        ctx: &wit::LoginContext,
        step_up: &str,
    ) -> Result<wit::Challenge, MfaError> {
        let (mut store, plugin) = self.runtime.instantiate(&self.backends).await.unwrap();
        plugin
            .mfa_step_plugin_login_step()
            .call_change_email(&mut store, ctx, step_up)
            .await
            .expect("no trap")
    }

    pub async fn set_platform_roles(
        &self,
        who: &wit::Actor,
        roles: &[String],
    ) -> Result<(), MfaError> {
        let (mut store, plugin) = self.runtime.instantiate(&self.backends).await.unwrap();
        plugin
            .mfa_step_plugin_admin()
            .call_set_platform_roles(&mut store, who, roles)
            .await
            .expect("no trap")
    }
}

/// Platform roles, read back (the `admin` export).
impl Harness {
    pub async fn get_platform_roles(&self, who: &wit::Actor) -> Result<Vec<String>, MfaError> {
        let (mut store, plugin) = self.runtime.instantiate(&self.backends).await.unwrap();
        plugin
            .mfa_step_plugin_admin()
            .call_get_platform_roles(&mut store, who)
            .await
            .expect("no trap")
    }
}
