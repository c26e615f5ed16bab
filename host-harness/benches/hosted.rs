//! The hosted pages through the `http-app` component, a fresh instance per request (what `serve`
//! does: `Runtime::handle`), over in-memory backends and a test clock that never moves:
//! - "code page": `GET /prompt/step` for a session whose challenge is live (the session, branding,
//!   policy and send-state reads, and the page render);
//! - "verify form": `POST /prompt/verify` with the right code, answered by a 303 to the IdP carrying
//!   the signed result. Each iteration first opens a new request (a fresh user and `jti`) and shows
//!   the code page, which sends the email, outside the timed region; a fresh user each time keeps
//!   every throttle cold. That user's first code is an enrollment, as on a clinician's first login.
//!
//! The timed region is the request in and the whole body out, as a browser receives it.
//!
//! Run: `cargo bench -p host-harness --bench hosted`. Numbers go in BENCHMARKS.md.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "benchmark"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use host_harness::backends::{MemoryAuditSink, MemoryMailer, MemoryStore};
use host_harness::{Backends, Clock, Config, Runtime, TestClock, World};
use http_body_util::{BodyExt, Full};

const HMAC_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
/// The key the IdP and mfa-step share (hex, 32 bytes).
const PROMPT_KEY: &str = "5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c";
const RETURN_TO: &str = "https://idp.example/mfa/return";
const T0: i64 = 1_795_000_000;
const SESSION_COOKIE: &str = "__Host-mfa-prompt";

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> impl Iterator<Item = &str> {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The prompt session's cookie, as the browser sends it back.
    fn session_cookie(&self) -> String {
        self.header("set-cookie")
            .filter_map(|c| c.split(';').next())
            .find(|pair| pair.starts_with(&format!("{SESSION_COOKIE}=")))
            .expect("a session cookie")
            .to_owned()
    }

    fn csrf(&self) -> String {
        let at = self.body.find("name=\"csrf\" value=\"").expect("a form") + 19;
        self.body[at..at + 32].to_owned()
    }
}

struct Bench {
    runtime: Arc<Runtime>,
    backends: Backends,
    mailer: Arc<MemoryMailer>,
}

impl Bench {
    fn new() -> Self {
        let mailer = Arc::new(MemoryMailer::new());
        let backends = Backends {
            store: Arc::new(MemoryStore::new()),
            mailer: mailer.clone(),
            audit: Arc::new(MemoryAuditSink::new()),
            config: Config::new([
                ("hmac_key", HMAC_KEY),
                ("prompt_key", PROMPT_KEY),
                ("prompt_client_id", "idp-bench"),
                ("prompt_return_urls", "https://idp.example/mfa/"),
            ]),
            clock: Clock::Test(TestClock::at(T0)),
            // In-memory backends are called inline, as verify.rs's non-offloaded rows.
            offload: host_harness::Offload::NONE,
        };
        Self {
            runtime: Arc::new(Runtime::new(World::HttpApp).unwrap()),
            backends,
            mailer,
        }
    }

    /// One browser request, answered by a fresh instance; the whole body is read.
    async fn send(&self, method: &str, target: &str, cookie: &str, form: &str) -> Reply {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("http://localhost{target}"))
            .header("user-agent", "Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0")
            .header("x-mfa-client-ip", "198.51.100.23")
            .header("cookie", cookie);
        if method == "POST" {
            req = req.header("content-type", "application/x-www-form-urlencoded");
        }
        let req = req
            .body(Full::new(Bytes::from(form.as_bytes().to_vec())))
            .unwrap();
        let resp = self.runtime.handle(&self.backends, req).await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned()))
            .collect();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body: String::from_utf8(body.to_vec()).unwrap(),
        }
    }

    /// The IdP's redirect for `user` (request `jti`), then the code page, which sends the email.
    /// Returns the session cookie, the code page and the code.
    async fn open(&self, user: &str, jti: &str) -> (String, Reply, String) {
        let opened = self
            .send(
                "GET",
                &format!("/prompt?request={}", request(user, jti)),
                "",
                "",
            )
            .await;
        assert_eq!(opened.status, 303, "{}", opened.body);
        let cookie = opened.session_cookie();
        let page = self.send("GET", "/prompt/step", &cookie, "").await;
        assert_eq!(page.status, 200, "{}", page.body);
        let code = code_in(&self.mailer.last().unwrap().text);
        (cookie, page, code)
    }
}

/// A request the way an IdP signs it.
fn request(user: &str, jti: &str) -> String {
    let claims = serde_json::json!({
        "iss": "idp-bench", "aud": "mfa-step", "sub": user, "org": "acme-health",
        "email": format!("{user}@clinic.example"), "roles": ["provider"], "locale": "en",
        "return_to": format!("{RETURN_TO}?state=abc"), "nonce": "nonce-1", "jti": jti,
        "iat": T0, "exp": T0 + 120,
    });
    let key = jsonwebtoken::EncodingKey::from_secret(&hex::decode(PROMPT_KEY).unwrap());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
}

/// The result's `outcome`, checked the way the IdP checks it (the test clock is not the wall clock
/// jsonwebtoken reads, so expiry is not checked).
fn outcome(result: &str) -> String {
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&["idp-bench"]);
    validation.set_issuer(&["mfa-step"]);
    validation.validate_exp = false;
    let key = jsonwebtoken::DecodingKey::from_secret(&hex::decode(PROMPT_KEY).unwrap());
    let claims = jsonwebtoken::decode::<serde_json::Value>(result, &key, &validation).unwrap();
    claims.claims["outcome"].as_str().unwrap().to_owned()
}

fn code_in(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .find(|l| l.len() == 6 && l.bytes().all(|b| b.is_ascii_digit()))
        .unwrap()
        .to_owned()
}

fn hosted(c: &mut Criterion) {
    let bench = Bench::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // One session serves every iteration: showing the code page of a live challenge changes nothing
    // in the store (no email, no write), and the clock stands still, so the session never expires.
    let (cookie, _, _) = rt.block_on(bench.open("page-user", "page-request"));
    c.bench_function("hosted/code page (fresh instance per request)", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let page = bench.send("GET", "/prompt/step", &cookie, "").await;
                    total += start.elapsed();
                    assert_eq!(page.status, 200, "{}", page.body);
                    assert!(page.body.contains("name=\"code\""), "{}", page.body);
                }
                total
            })
        });
    });

    let emails_before = bench.mailer.messages().len();
    let mut n = 0usize;
    c.bench_function("hosted/verify form (fresh instance per request)", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    n += 1;
                    let id = format!("v{n}");
                    let (cookie, page, code) = bench.open(&id, &id).await;
                    let form = format!("csrf={}&code={code}", page.csrf());
                    let start = Instant::now();
                    let done = bench.send("POST", "/prompt/verify", &cookie, &form).await;
                    total += start.elapsed();
                    assert_eq!(done.status, 303, "{}", done.body);
                    let location = done.header("location").next().unwrap();
                    let result = location
                        .strip_prefix(&format!("{RETURN_TO}?state=abc&result="))
                        .expect("back to the IdP's return URL");
                    assert_eq!(outcome(result), "success");
                }
                total
            })
        });
    });
    // Each verify iteration sent exactly one email: no throttle or resend got in the way.
    assert_eq!(bench.mailer.messages().len() - emails_before, n);
}

criterion_group!(benches, hosted);
criterion_main!(benches);
