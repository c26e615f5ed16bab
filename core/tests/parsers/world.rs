//! The harness every property shares: a seeded RNG (so that two runs of one call, one with a refused
//! input and one without it, can be compared byte for byte), a world over the core's in-memory
//! ports that can be forked, the state a property compares (every value, counter and expiry,
//! every audit record, every note for the host's log, every mail), the worlds the entry points are
//! driven in, and the runner.

use std::fmt::Write as _;

use proptest::test_runner::{Config, TestCaseError, TestRunner};
use rand_core::{CryptoRng, RngCore};

use mfa_step_core::kernel::keys;
use mfa_step_core::kernel::ports::{RefusalNote, Store as _};
use mfa_step_core::testing::{MemAudit, MemMailer, MemStore};
use mfa_step_core::web::hosted::{WebMethod, WebRequest, WebResponse};
use mfa_step_core::web::prompt::PromptConfig;
use mfa_step_core::{
    AuditEntry, Decision, DevicePresentation, Engine, HmacKey, LoginContext, OutgoingMail,
    Settings, Timestamp,
};

/// The test clock's start.
pub const T0: i64 = 1_795_000_000;
/// The organization and user every world is about.
pub const ORG: &str = "acme";
pub const USER: &str = "dr-a";
pub const EMAIL: &str = "dr-a@clinic.example";
pub const IP: &str = "203.0.113.7";
pub const AGENT: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
/// The hosted prompt's client and where it may return.
pub const CLIENT: &str = "idp-1";
pub const RETURN: &str = "https://idp.example/mfa/return";
/// The prompt's shared key (not the host's key).
pub const PROMPT_KEY: [u8; 32] = [9; 32];

/// Runs `test` on `cases` values of `strategy`; a failure panics with the shrunk input. Regression
/// files are off: a failure is reported with its minimal input, and kept (if it is a bug) as a
/// named test in `found.rs`, never as a file in the tree. `PROPTEST_CASES`, when set, overrides
/// `cases` (for a longer soak).
pub fn check<S: proptest::strategy::Strategy>(
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    if let Err(e) = TestRunner::new(config).run(&strategy, test) {
        panic!("{e}");
    }
}

/// Letters and digits.
pub const ALNUM: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
/// What an identifier may hold (`kernel::input::id`).
pub const ID_CHARS: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._@+|-";

/// A string of `len` characters drawn from `alphabet`. (Much cheaper than a regex strategy in a
/// debug build, which matters at thousands of cases.)
pub fn of(
    alphabet: &'static str,
    len: impl Into<proptest::collection::SizeRange>,
) -> impl proptest::strategy::Strategy<Value = String> + Clone {
    use proptest::strategy::Strategy as _;
    proptest::collection::vec(
        proptest::sample::select(alphabet.chars().collect::<Vec<_>>()),
        len,
    )
    .prop_map(String::from_iter)
}

/// Any text: every `char` is possible (control characters, unassigned code points, surrogates
/// excepted, which a `str` cannot hold), biased by proptest towards the awkward ones. Unlike
/// `any::<String>()` (`\PC*`), it does produce control characters.
pub fn text(
    len: impl Into<proptest::collection::SizeRange>,
) -> impl proptest::strategy::Strategy<Value = String> + Clone {
    use proptest::strategy::Strategy as _;
    proptest::collection::vec(proptest::arbitrary::any::<char>(), len).prop_map(String::from_iter)
}

/// Any text up to 64 characters, or any bytes read as UTF-8 (lossily).
pub fn garbage() -> impl proptest::strategy::Strategy<Value = String> + Clone {
    use proptest::strategy::Strategy as _;
    proptest::prop_oneof![
        text(0..64),
        proptest::arbitrary::any::<Vec<u8>>()
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

/// splitmix64: deterministic, so a call can be replayed exactly. Not a CSPRNG; the core only
/// needs the trait bound, and these tests need reproducibility, not secrecy.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl RngCore for Rng {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

impl CryptoRng for Rng {}

/// A seeded RNG.
pub fn rng(seed: u64) -> Rng {
    Rng(seed)
}

/// The in-memory ports, the host's key and the platform's settings.
pub struct World {
    pub store: MemStore,
    pub mailer: MemMailer,
    pub audit: MemAudit,
    pub key: HmacKey,
    pub settings: Settings,
}

impl World {
    pub fn new() -> Self {
        Self {
            store: MemStore::default(),
            mailer: MemMailer::default(),
            audit: MemAudit::default(),
            key: HmacKey::from_bytes(&[7; 32]).unwrap(),
            settings: Settings::default(),
        }
    }

    pub fn engine(&self) -> Engine<'_> {
        Engine {
            store: &self.store,
            mailer: &self.mailer,
            audit: &self.audit,
            settings: self.settings.clone(),
            key: &self.key,
        }
    }

    /// An independent copy: every value and counter, every audit record, every mail.
    pub fn fork(&self) -> Self {
        let copy = Self {
            key: self.key.clone(),
            settings: self.settings.clone(),
            ..Self::new()
        };
        let (values, counters) = self.store.snapshot();
        for (k, v) in values {
            copy.store.set(&k, &v, self.store.expiry(&k)).unwrap();
        }
        for (k, n) in counters {
            copy.store.increment(&k, n, self.store.expiry(&k)).unwrap();
        }
        copy.audit
            .entries
            .borrow_mut()
            .clone_from(&self.audit.entries.borrow());
        copy.audit
            .notes
            .borrow_mut()
            .clone_from(&self.audit.notes.borrow());
        copy.mailer
            .sent
            .borrow_mut()
            .clone_from(&self.mailer.sent.borrow());
        copy
    }

    /// What a property compares.
    pub fn state(&self) -> State {
        let (values, counters) = self.store.snapshot();
        // The store's contract: an absent counter is 0, so a counter back at 0 is no change.
        let counters: Vec<(String, i64)> = counters.into_iter().filter(|(_, n)| *n != 0).collect();
        let mut expiries: Vec<(String, Option<i64>)> = values
            .iter()
            .map(|(k, _)| k)
            .chain(counters.iter().map(|(k, _)| k))
            .map(|k| (k.clone(), self.store.expiry(k)))
            .collect();
        expiries.sort();
        State {
            values,
            counters,
            expiries,
            audit: self.audit.entries.borrow().clone(),
            notes: self.audit.notes.borrow().clone(),
            mail: self.mailer.sent.borrow().clone(),
        }
    }

    /// One hosted-page request.
    pub fn page(&self, req: &WebRequest<'_>, at: i64, seed: u64) -> WebResponse {
        self.engine()
            .hosted_page(Some(&prompt_config()), req, Timestamp(at), &mut rng(seed))
    }
}

/// Every value, every non-zero counter (with the expiries of both), every audit record, every
/// refusal noted for the host's log, and every mail of a world.
#[derive(Clone, PartialEq, Eq)]
pub struct State {
    pub values: Vec<(String, Vec<u8>)>,
    pub counters: Vec<(String, i64)>,
    /// When the host may forget each of those keys.
    pub expiries: Vec<(String, Option<i64>)>,
    pub audit: Vec<AuditEntry>,
    pub notes: Vec<RefusalNote>,
    pub mail: Vec<OutgoingMail>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("values", &self.values.len())
            .field("counters", &self.counters)
            .field("audit", &self.audit.len())
            .field("notes", &self.notes)
            .field("mail", &self.mail.len())
            .finish()
    }
}

/// What differs between two states, key by key, for a failure message.
pub fn diff(before: &State, after: &State) -> String {
    let mut out = String::new();
    let values = |s: &State| {
        s.values
            .iter()
            .cloned()
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let (a, b) = (values(before), values(after));
    for k in a
        .keys()
        .chain(b.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        if a.get(k) != b.get(k) {
            let show = |v: Option<&Vec<u8>>| v.map(|v| String::from_utf8_lossy(v).into_owned());
            let _ = writeln!(
                out,
                "value {k}: {:?} -> {:?}",
                show(a.get(k)),
                show(b.get(k))
            );
        }
    }
    let counters = |s: &State| {
        s.counters
            .iter()
            .cloned()
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let (a, b) = (counters(before), counters(after));
    for k in a
        .keys()
        .chain(b.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        if a.get(k) != b.get(k) {
            let _ = writeln!(out, "counter {k}: {:?} -> {:?}", a.get(k), b.get(k));
        }
    }
    let expiries = |s: &State| {
        s.expiries
            .iter()
            .cloned()
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let (a, b) = (expiries(before), expiries(after));
    for k in a
        .keys()
        .chain(b.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        if a.get(k) != b.get(k) {
            let _ = writeln!(out, "expiry {k}: {:?} -> {:?}", a.get(k), b.get(k));
        }
    }
    for e in after.audit.iter().skip(before.audit.len()) {
        let _ = writeln!(out, "audit + {}", e.line);
    }
    if after.audit.len() < before.audit.len()
        || after.audit[..before.audit.len()] != before.audit[..]
    {
        let _ = writeln!(out, "audit: earlier records changed");
    }
    for n in after.notes.iter().skip(before.notes.len()) {
        let _ = writeln!(out, "note + {n:?}");
    }
    if after.mail != before.mail {
        let _ = writeln!(out, "mail: {} -> {}", before.mail.len(), after.mail.len());
    }
    out
}

/// The state did not change at all.
pub fn unchanged(before: &State, after: &State) -> Result<(), TestCaseError> {
    if before == after {
        Ok(())
    } else {
        Err(TestCaseError::fail(format!(
            "a refused input changed the state:\n{}",
            diff(before, after)
        )))
    }
}

/// A refusal of something nobody vouches for (an unsigned request): noted once in the host's
/// log with one of `rules` and a claimed organization among `claimed`, and nothing else changed
/// (no store key, no record in any organization's stream).
pub fn noted(
    before: &State,
    after: &State,
    rules: &[&str],
    claimed: &[Option<&str>],
) -> Result<(), TestCaseError> {
    let fail = |why: &str| {
        Err(TestCaseError::fail(format!(
            "{why} (allowed: one note with {rules:?}, claiming {claimed:?})\n{}",
            diff(before, after)
        )))
    };
    if after.notes.len() != before.notes.len() + 1
        || after.notes[..before.notes.len()] != before.notes[..]
    {
        return fail("not exactly one note more");
    }
    let note = &after.notes[before.notes.len()];
    if !rules.contains(&note.rule.as_str()) || !claimed.contains(&note.claimed_org.as_deref()) {
        return fail(&format!("unexpected note {note:?}"));
    }
    let mut expected = after.clone();
    expected.notes.pop();
    unchanged(before, &expected)
}

/// The `reason` of an audit record.
pub fn reason_of(entry: &AuditEntry) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(&entry.line).ok()?;
    v["reason"].as_str().map(str::to_owned)
}

/// A refusal that is recorded by design: the state changed by exactly `access_denied` records in
/// `org`'s stream, each with one of `reasons`, and by the store's count of that stream (which
/// anchors the log against truncation); nothing else. No record at all is accepted too when
/// `may_be_silent` (a token too broken to name anyone is refused without one).
pub fn only_recorded(
    before: &State,
    after: &State,
    org: &str,
    reasons: &[&str],
    may_be_silent: bool,
) -> Result<(), TestCaseError> {
    let fail = |why: &str| {
        Err(TestCaseError::fail(format!(
            "{why} (allowed: access_denied in {org} with {reasons:?})\n{}",
            diff(before, after)
        )))
    };
    let added = after.audit.len().saturating_sub(before.audit.len());
    if after.audit.len() < before.audit.len()
        || after.audit[..before.audit.len()] != before.audit[..]
    {
        return fail("earlier audit records changed");
    }
    if added == 0 && !may_be_silent {
        return fail("the refusal was not recorded");
    }
    if added > 1 {
        return fail("more than one record for one refusal");
    }
    for e in &after.audit[before.audit.len()..] {
        let reason = reason_of(e).unwrap_or_default();
        if e.org_id != org || e.action != "access_denied" || !reasons.contains(&reason.as_str()) {
            return fail(&format!("unexpected record {}", e.line));
        }
    }
    let mut expected = before.clone();
    if added > 0 {
        let count = keys::audit_count(org);
        match expected.counters.iter_mut().find(|(k, _)| *k == count) {
            Some((_, n)) => *n += added as i64,
            None => {
                expected.counters.push((count.clone(), added as i64));
                expected.counters.sort();
                // The count is kept for good.
                expected.expiries.push((count, None));
                expected.expiries.sort();
            }
        }
    }
    expected.audit = after.audit.clone();
    // A signed request's refusal is also counted once under its jti (`v1:prompt-refused:…`), so
    // that a replayed URL is recorded once: that counter may take one step, nothing else.
    let refusals = |s: &State| -> i64 {
        s.counters
            .iter()
            .filter(|(k, _)| k.starts_with("v1:prompt-refused:"))
            .map(|(_, n)| *n)
            .sum()
    };
    if refusals(after) - refusals(before) > 1 {
        return fail("more than one refusal counted");
    }
    let strip = |s: &State| {
        let mut s = s.clone();
        s.counters
            .retain(|(k, _)| !k.starts_with("v1:prompt-refused:"));
        s.expiries
            .retain(|(k, _)| !k.starts_with("v1:prompt-refused:"));
        s
    };
    if strip(&expected) != strip(after) {
        return fail("the store changed beyond the record's count");
    }
    Ok(())
}

/// The prompt's configuration: the shared key, the client, the one allowed return URL.
pub fn prompt_config() -> PromptConfig {
    PromptConfig::new(HmacKey::from_bytes(&PROMPT_KEY).unwrap(), CLIENT, &[RETURN])
}

/// The login context of the world's user, from a Chrome on Windows at [`IP`], without a cookie.
pub fn ctx() -> LoginContext {
    LoginContext {
        user_id: USER.to_owned(),
        org_id: ORG.to_owned(),
        email: EMAIL.to_owned(),
        roles: vec!["provider".to_owned()],
        locale: Some("en".to_owned()),
        device: DevicePresentation {
            cookie: None,
            traits: mfa_step_core::BrowserTraits {
                user_agent: AGENT.to_owned(),
                ..Default::default()
            },
            ip: IP.to_owned(),
        },
    }
}

/// [`ctx`] presenting `cookie`.
pub fn ctx_with_cookie(cookie: Option<&str>) -> LoginContext {
    let mut c = ctx();
    c.device.cookie = cookie.map(str::to_owned);
    c
}

/// The value a `Set-Cookie` header stores.
pub fn cookie_value(set_cookie: &str) -> String {
    cookie::Cookie::parse(set_cookie.to_owned())
        .unwrap()
        .value()
        .to_owned()
}

/// A world whose user enrolled and had this browser remembered, and the device cookie's value.
pub fn enrolled_with_device() -> (World, String) {
    let w = World::new();
    let c = ctx();
    let e = w.engine();
    let id = match e.begin(&c, Timestamp(T0), &mut rng(1)).unwrap() {
        Decision::Challenge(ch) => ch.challenge_id,
        other => panic!("expected an enrollment challenge, got {other:?}"),
    };
    e.send_code(&c, &id, Timestamp(T0), &mut rng(2)).unwrap();
    let code = w.mailer.last_code().unwrap();
    let verified = e
        .verify(&c, &id, &code, true, Timestamp(T0 + 10), &mut rng(3))
        .unwrap();
    let cookie = cookie_value(&verified.set_cookie.unwrap());
    drop(e);
    (w, cookie)
}

/// [`enrolled_with_device`], with a login challenge open and its code sent (a browser without the
/// cookie): the challenge id and the code.
pub fn with_code_sent() -> (World, String, String, String) {
    let (w, cookie) = enrolled_with_device();
    let c = ctx();
    let e = w.engine();
    let id = match e.begin(&c, Timestamp(T0 + 100), &mut rng(4)).unwrap() {
        Decision::Challenge(ch) => ch.challenge_id,
        other => panic!("expected a login challenge, got {other:?}"),
    };
    e.send_code(&c, &id, Timestamp(T0 + 100), &mut rng(5))
        .unwrap();
    let code = w.mailer.last_code().unwrap();
    drop(e);
    (w, cookie, id, code)
}

/// A hosted-prompt request for the world's user, signed with the prompt key.
pub fn prompt_token(jti: &str, purpose: Option<&str>) -> String {
    let mut claims = serde_json::json!({
        "iss": CLIENT, "aud": "mfa-step", "sub": USER, "org": ORG, "email": EMAIL,
        "roles": ["provider"], "return_to": format!("{RETURN}?state=s1"), "nonce": "n-1",
        "jti": jti, "iat": T0, "exp": T0 + 120,
    });
    if let Some(p) = purpose {
        claims["purpose"] = p.into();
    }
    crate::prompt::sign(
        &PROMPT_KEY,
        r#"{"alg":"HS256","typ":"JWT"}"#,
        &serde_json::to_vec(&claims).unwrap(),
    )
}

/// A browser request with the world's browser's headers.
pub fn browser<'a>(
    method: WebMethod,
    path: &'a str,
    query: &'a str,
    form: &'a [u8],
    cookies: &'a str,
) -> WebRequest<'a> {
    WebRequest {
        method,
        path,
        query,
        form,
        cookies,
        user_agent: AGENT,
        client_ip: IP,
        accept_language: "en-US,en;q=0.8",
    }
}

/// The value of the first `set-cookie` header named `name`.
pub fn set_cookie(r: &WebResponse, name: &str) -> Option<String> {
    r.headers
        .iter()
        .filter(|(k, _)| *k == "set-cookie")
        .map(|(_, v)| cookie::Cookie::parse(v.clone()).unwrap())
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

/// The CSRF token in a page's first form.
pub fn csrf_of(r: &WebResponse) -> String {
    let html = r.html.as_deref().unwrap_or_default();
    let at = html.find("name=\"csrf\" value=\"").unwrap() + 19;
    html[at..at + 32].to_owned()
}

/// A hosted session at the code page (an enrolled user, a browser without a device cookie): the
/// world, the `Cookie` header that carries the session, and the page's CSRF token.
pub struct Hosted {
    pub world: World,
    pub cookies: String,
    pub csrf: String,
    /// The code the page's email carried.
    pub code: String,
}

/// Opens a `purpose` session for the enrolled user and follows it to the code page.
pub fn hosted_at_code_page(purpose: Option<&str>) -> Hosted {
    let (world, _) = enrolled_with_device();
    let token = prompt_token("req-1", purpose);
    let query = format!("request={token}");
    let r = world.page(
        &browser(WebMethod::Get, "/prompt", &query, b"", ""),
        T0 + 100,
        10,
    );
    assert_eq!(r.status, 303);
    let session = set_cookie(&r, mfa_step_core::web::hosted::SESSION_COOKIE).unwrap();
    let cookies = format!("{}={session}", mfa_step_core::web::hosted::SESSION_COOKIE);
    let page = world.page(
        &browser(WebMethod::Get, "/prompt/step", "", b"", &cookies),
        T0 + 100,
        11,
    );
    assert_eq!(page.status, 200, "{:?}", page.html);
    let csrf = csrf_of(&page);
    let code = world.mailer.last_code().unwrap();
    Hosted {
        world,
        cookies,
        csrf,
        code,
    }
}
