//! What an operator relies on in `serve`, over real sockets: `/metrics` counts exactly what was
//! sent, `/readyz` follows the backends, the JSON log holds one object per request and no secret,
//! SIGTERM lets the request in flight finish and exits 0, and `--demo`'s walk-through appears only
//! once the server answers.
//!
//! The binary is used where the process matters (signals, exit code, standard streams); an
//! in-process server over a real `TcpListener` where a backend must fail or pause on cue.
//! Waits are on events (a log line, a channel, a gauge); the long timeouts only turn a hang into a
//! clear failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use host_harness::backends::{
    Faults, FaultyAuditSink, FaultyStore, MemoryAuditSink, MemoryMailer, MemoryStore,
};
use host_harness::serve::{self, Options, Stopped};
use host_harness::{Backends, Clock, Config, Runtime, World};
use mfa_step_core::kernel::ports::{PortResult, Store};

mod support;

use support::{BIN, free_port, raw_request, request};

/// How long any single wait may take before the test fails as hung.
const HANG: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// The exposition, parsed

/// One sample line: metric name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the sample lines of an OpenMetrics/Prometheus text exposition (comments skipped).
fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a value after the series");
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("labels end with }");
                (name.to_owned(), parse_labels(body))
            }
        };
        samples.push(Sample {
            name,
            labels,
            value: value.parse().expect("a numeric value"),
        });
    }
    samples
}

/// `a="x",b="y\"z"` into a map, honouring the format's escapes.
fn parse_labels(mut rest: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").expect("key=\"value\"");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().expect("a closing quote") {
                (_, '\\') => match chars.next().expect("an escaped character").1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.to_owned(), value);
        rest = after[end + 1..]
            .strip_prefix(',')
            .unwrap_or(&after[end + 1..]);
    }
    labels
}

/// The value of the one series of `name` with exactly `labels`, or 0 when it is absent (a
/// counter that never moved).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let wanted: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == name && s.labels == wanted)
        .collect();
    assert!(found.len() <= 1, "{name} {labels:?} is repeated");
    found.first().map_or(0.0, |s| s.value)
}

fn scrape(addr: &str) -> Vec<Sample> {
    let raw = raw_request(addr, "GET", "/metrics", &[], "");
    assert_eq!(raw.status, 200, "{}", raw.body);
    assert!(
        raw.header("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        raw.headers
    );
    assert!(raw.body.ends_with("# EOF\n"), "{}", raw.body);
    parse_exposition(&raw.body)
}

#[test]
fn the_exposition_parser_reads_labels_and_escapes() {
    let s = parse_exposition("# TYPE x counter\nx_total{a=\"1\",b=\"q\\\"r,s\"} 7\ny 2.5\n# EOF\n");
    assert_eq!(value(&s, "x_total", &[("a", "1"), ("b", "q\"r,s")]), 7.0);
    assert_eq!(value(&s, "y", &[]), 2.5);
    assert_eq!(
        value(&s, "x_total", &[("a", "1")]),
        0.0,
        "labels match exactly"
    );
}

// ---------------------------------------------------------------------------------------------
// The binary

/// `mfa-step serve --demo` on a free port, its standard output and error read line by line.
struct Serve {
    child: Child,
    addr: String,
    /// Standard error, a line at a time.
    log: mpsc::Receiver<String>,
    /// Every log line read so far.
    seen: Vec<String>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Serve {
    /// Starts the server and returns once its walk-through is printed, i.e. once it answers
    /// (`the_demo_walkthrough_appears_once_the_server_answers` holds it to that).
    fn start(data: &Path, extra: &[&str]) -> Self {
        Self::start_with_env(data, extra, &[])
    }

    fn start_with_env(data: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut child = Command::new(BIN)
            .args(["serve", "--demo", "--listen", &addr, "--data-dir"])
            .arg(data)
            .args(extra)
            .envs(env.iter().copied())
            .env_remove("MFA_STEP_API_KEY")
            .env_remove("MFA_STEP_HMAC_KEY")
            .env_remove("MFA_STEP_PROMPT_KEY")
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mfa-step serve");
        let stdout = lines(child.stdout.take().unwrap());
        let log = lines(child.stderr.take().unwrap());
        let first = stdout
            .recv_timeout(HANG)
            .expect("serve --demo printed its walk-through");
        assert!(first.starts_with("Demo clinic seeded"), "{first}");
        // Keep draining the walk-through so that the server never blocks on a full pipe.
        std::thread::spawn(move || while stdout.recv().is_ok() {});
        Self {
            child,
            addr,
            log,
            seen: Vec::new(),
        }
    }

    /// Reads the log until a line satisfies `pred`, and returns it.
    fn wait_for_log(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + HANG;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .log
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no log line {what}; saw:\n{}", self.seen.join("\n")));
            self.seen.push(line.clone());
            if pred(&line) {
                return line;
            }
        }
    }

    /// The exit status, once the process has ended.
    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + HANG;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "serve did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn json(line: &str) -> serde_json::Value {
    let value: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert!(value.is_object(), "not an object: {line}");
    value
}

#[test]
fn the_demo_walkthrough_appears_once_the_server_answers() {
    let dir = tempfile::tempdir().unwrap();
    // Without the compilation cache the component takes a while to compile: a walk-through printed
    // before that (as it once was) would be read long before the port opens.
    let server = Serve::start_with_env(
        &dir.path().join("data"),
        &[],
        &[("MFA_STEP_COMPILE_CACHE", "off")],
    );
    // `start` returned on the walk-through's first line: the server must answer right now, with no
    // retry.
    let (status, body) = request(&server.addr, "GET", "/healthz", None, "");
    assert_eq!(status, 200, "{body}");
}

#[test]
fn metrics_count_exactly_the_requests_sent_and_never_a_raw_path() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Serve::start(&data, &[]);
    let healthz = [("route", "/healthz"), ("method", "GET"), ("status", "200")];
    let before = scrape(&server.addr);
    for _ in 0..7 {
        assert_eq!(request(&server.addr, "GET", "/healthz", None, "").0, 200);
    }
    let begin = std::fs::read_to_string(data.join("demo/dr-demo-begin.json")).unwrap();
    let (status, _) = request(&server.addr, "POST", "/v1/login/begin", None, &begin);
    assert_eq!(status, 401, "without the key");
    let made_up = "/secret-path-4f1e?code=123456";
    assert_eq!(request(&server.addr, "GET", made_up, None, "").0, 404);
    let raw = raw_request(&server.addr, "GET", "/metrics", &[], "");
    assert!(!raw.body.contains("secret-path") && !raw.body.contains("123456"));
    let after = parse_exposition(&raw.body);

    let total = "mfa_step_http_requests_total";
    assert_eq!(
        value(&after, total, &healthz) - value(&before, total, &healthz),
        7.0
    );
    assert_eq!(
        value(
            &after,
            total,
            &[
                ("route", "/v1/login/begin"),
                ("method", "POST"),
                ("status", "401")
            ]
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            total,
            &[("route", "other"), ("method", "GET"), ("status", "404")]
        ),
        1.0
    );
    // The scrape before this one counts too, under its own class.
    assert!(
        value(
            &after,
            total,
            &[("route", "/metrics"), ("method", "GET"), ("status", "200")]
        ) >= 1.0
    );
    let latency = "mfa_step_http_request_duration_seconds_count";
    assert_eq!(
        value(&after, latency, &[("route", "/healthz")])
            - value(&before, latency, &[("route", "/healthz")]),
        7.0
    );
    assert_eq!(
        value(&after, "mfa_step_component_instance_capacity", &[]),
        256.0
    );
    assert_eq!(
        value(&after, "mfa_step_component_instances_in_flight", &[]),
        0.0
    );
    for op in ["get", "set", "delete", "increment", "list_keys"] {
        assert_eq!(
            value(&after, "mfa_step_store_errors_total", &[("op", op)]),
            0.0
        );
    }
    // Every request series has exactly the three bounded labels.
    for s in after.iter().filter(|s| s.name == total) {
        let keys: Vec<&str> = s.labels.keys().map(String::as_str).collect();
        assert_eq!(keys, ["method", "route", "status"], "{s:?}");
    }
}

#[test]
fn the_json_log_has_one_object_per_line_with_path_and_status_and_no_query_or_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Serve::start(&data, &["--log-format", "json"]);
    let key = std::fs::read_to_string(data.join("api.key")).unwrap();
    let key = key.trim();
    let begin = std::fs::read_to_string(data.join("demo/dr-demo-begin.json")).unwrap();

    let (status, _) = request(
        &server.addr,
        "GET",
        "/healthz?probe=query-secret-9c2d",
        None,
        "",
    );
    assert_eq!(status, 200);
    let line = server.wait_for_log("for GET /healthz", |l| l.contains("\"/healthz\""));
    let event = json(&line);
    assert_eq!(event["path"], "/healthz", "{line}");
    assert_eq!(event["status"], 200, "{line}");
    assert_eq!(event["method"], "GET", "{line}");
    assert_eq!(event["level"], "INFO", "{line}");

    let (status, _) = request(&server.addr, "POST", "/v1/login/begin", Some(key), &begin);
    assert_eq!(status, 200);
    let line = server.wait_for_log("for the begin", |l| l.contains("/v1/login/begin"));
    assert_eq!(json(&line)["status"], 200, "{line}");

    // Every line so far, start-up included, is one JSON object, and none holds a secret.
    assert!(server.seen.len() >= 3, "{:?}", server.seen);
    for line in &server.seen {
        json(line);
        assert!(!line.contains("query-secret"), "a query was logged: {line}");
        assert!(!line.contains(key), "the API key was logged: {line}");
        assert!(!line.contains("dr-demo@"), "a body was logged: {line}");
    }
}

#[test]
fn sigterm_lets_the_request_in_flight_finish_then_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Serve::start(&data, &["--log-format", "json"]);
    let key = std::fs::read_to_string(data.join("api.key")).unwrap();
    let begin = std::fs::read_to_string(data.join("demo/dr-demo-begin.json")).unwrap();
    let (first, rest) = begin.split_at(begin.len() / 2);

    // A begin whose body is only half sent: the host is reading it when the signal comes (the
    // request is admitted; it takes an instance once its body is whole).
    let mut client = TcpStream::connect(&server.addr).unwrap();
    client.set_read_timeout(Some(HANG)).unwrap();
    write!(
        client,
        "POST /v1/login/begin HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{first}",
        server.addr,
        key.trim(),
        begin.len()
    )
    .unwrap();
    client.flush().unwrap();
    let deadline = Instant::now() + HANG;
    while value(
        &scrape(&server.addr),
        "mfa_step_http_requests_in_flight",
        &[],
    ) < 1.0
    {
        assert!(Instant::now() < deadline, "the begin was never admitted");
        std::thread::sleep(Duration::from_millis(10));
    }

    let pid = server.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    server.wait_for_log("announcing the shutdown", |l| l.contains("shutting down"));
    // No new connection is taken from now on.
    assert!(
        TcpStream::connect(&server.addr).is_err(),
        "the listener is still open"
    );

    client.write_all(rest.as_bytes()).unwrap();
    client.flush().unwrap();
    let mut raw = String::new();
    client.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a whole answer");
    assert!(head.starts_with("HTTP/1.1 200 "), "{raw}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    let answer: serde_json::Value = serde_json::from_str(&body).expect("the whole JSON answer");
    assert_eq!(answer["outcome"], "challenge", "{answer}");

    let status = server.wait_exit();
    assert_eq!(status.code(), Some(0), "{status:?}");
    server.wait_for_log("saying every request was answered", |l| {
        l.contains("every request in flight was answered")
    });
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].strip_prefix("\r\n").unwrap();
    }
    out
}

// ---------------------------------------------------------------------------------------------
// In process, with backends that fail or pause on cue

const API_KEY: &str = "ops-test-api-key-0123456789";
const HMAC_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn runtime() -> Arc<Runtime> {
    static RUNTIME: OnceLock<Arc<Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| Arc::new(Runtime::new(World::HttpApp).expect("the http-app component")))
        .clone()
}

fn backends(store: Arc<dyn host_harness::backends::HostStore>, faults: &Faults) -> Backends {
    Backends {
        store,
        mailer: Arc::new(MemoryMailer::new()),
        audit: Arc::new(FaultyAuditSink::new(MemoryAuditSink::new(), faults.clone())),
        config: Config::new([("hmac_key", HMAC_KEY), ("api_key", API_KEY)]),
        clock: Clock::System,
        offload: host_harness::Offload::ALL,
    }
}

/// A begin request body for a demo user.
fn begin_body() -> String {
    let dir = tempfile::tempdir().unwrap();
    host_harness::demo::seed(dir.path(), "127.0.0.1:8080".parse().unwrap()).unwrap();
    std::fs::read_to_string(dir.path().join("demo/dr-demo-begin.json")).unwrap()
}

/// A server in this process over a real socket, stopped by `stop`.
struct InProcess {
    addr: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<anyhow::Result<Stopped>>,
}

async fn start_in_process(backends: Backends, options: Options) -> InProcess {
    let listener = serve::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(serve::serve_with(
        runtime(),
        backends,
        listener,
        options,
        async move {
            let _ = stopped.await;
        },
    ));
    InProcess {
        addr,
        stop: Some(stop),
        served,
    }
}

impl InProcess {
    /// Signals shutdown and waits until the listener is closed.
    async fn shut_down(&mut self) {
        let _ = self.stop.take().unwrap().send(());
        let addr = self.addr.clone();
        tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + HANG;
            while TcpStream::connect(&addr).is_ok() {
                assert!(Instant::now() < deadline, "the listener stayed open");
                std::thread::sleep(Duration::from_millis(5));
            }
        })
        .await
        .unwrap();
    }
}

/// A blocking HTTP request from another thread, so that the server's runtime stays free.
async fn call(addr: &str, method: &str, path: &str, key: Option<&str>, body: &str) -> support::Raw {
    let (addr, method, path, body) = (
        addr.to_owned(),
        method.to_owned(),
        path.to_owned(),
        body.to_owned(),
    );
    let auth = key.map(|k| format!("Bearer {k}"));
    tokio::task::spawn_blocking(move || {
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        raw_request(&addr, &method, &path, &headers, &body)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_naming_the_store_while_it_is_down_and_200_once_it_is_up() {
    let faults = Faults::new();
    let store = Arc::new(FaultyStore::new(MemoryStore::new(), faults.clone()));
    let mut server = start_in_process(backends(store, &faults), Options::default()).await;

    let ready = call(&server.addr, "GET", "/readyz", None, "").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.body, r#"{"status":"ready"}"#);
    assert_eq!(ready.header("cache-control"), Some("no-store"));

    faults.fail_store_reads(true);
    let down = call(&server.addr, "GET", "/readyz", None, "").await;
    assert_eq!(down.status, 503, "{}", down.body);
    assert_eq!(down.body, r#"{"status":"unavailable","down":["store"]}"#);
    assert_eq!(down.header("content-type"), Some("application/json"));
    // Liveness is not readiness: the process is alive and says so.
    assert_eq!(
        call(&server.addr, "GET", "/healthz", None, "").await.status,
        200
    );
    // The component fails closed, and the store's error is counted.
    let begin = call(
        &server.addr,
        "POST",
        "/v1/login/begin",
        Some(API_KEY),
        &begin_body(),
    )
    .await;
    assert_eq!(begin.status, 503, "{}", begin.body);
    let metrics = call(&server.addr, "GET", "/metrics", None, "").await;
    let samples = parse_exposition(&metrics.body);
    assert!(value(&samples, "mfa_step_store_errors_total", &[("op", "get")]) >= 1.0);
    assert_eq!(
        value(
            &samples,
            "mfa_step_http_requests_total",
            &[("route", "/readyz"), ("method", "GET"), ("status", "503")]
        ),
        1.0
    );

    faults.fail_audit(true);
    let both = call(&server.addr, "GET", "/readyz", None, "").await;
    assert_eq!(
        both.body,
        r#"{"status":"unavailable","down":["store","audit"]}"#
    );
    faults.clear();
    let up = call(&server.addr, "GET", "/readyz", None, "").await;
    assert_eq!(up.status, 200, "{}", up.body);

    let refused = call(&server.addr, "POST", "/readyz", None, "").await;
    assert_eq!(refused.status, 405);
    assert_eq!(refused.header("allow"), Some("GET, HEAD"));

    server.shut_down().await;
    assert_eq!(server.served.await.unwrap().unwrap(), Stopped::Drained);
}

/// A memory store whose first call, once armed, tells the test and waits for its word.
struct PausingStore {
    inner: MemoryStore,
    pause: Mutex<Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>>,
}

impl PausingStore {
    fn new() -> (Arc<Self>, mpsc::Receiver<()>, mpsc::Sender<()>) {
        let (entered_tx, entered_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel();
        let store = Arc::new(Self {
            inner: MemoryStore::new(),
            pause: Mutex::new(Some((entered_tx, release_rx))),
        });
        (store, entered_rx, release_tx)
    }

    fn gate(&self) {
        let pause = self.pause.lock().unwrap().take();
        if let Some((entered, release)) = pause {
            entered.send(()).unwrap();
            let _ = release.recv();
        }
    }
}

impl host_harness::backends::HostStore for PausingStore {}

impl Store for PausingStore {
    fn get(&self, key: &str) -> PortResult<Option<Vec<u8>>> {
        self.gate();
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: &[u8], expires_at: Option<i64>) -> PortResult<()> {
        self.gate();
        self.inner.set(key, value, expires_at)
    }
    fn delete(&self, key: &str) -> PortResult<()> {
        self.gate();
        self.inner.delete(key)
    }
    fn increment(&self, key: &str, delta: i64, expires_at: Option<i64>) -> PortResult<i64> {
        self.gate();
        self.inner.increment(key, delta, expires_at)
    }
    fn list_keys(&self, prefix: &str) -> PortResult<Vec<String>> {
        self.gate();
        self.inner.list_keys(prefix)
    }
}

/// Waits (off the runtime) until the store is entered.
async fn entered(rx: mpsc::Receiver<()>) {
    tokio::task::spawn_blocking(move || rx.recv_timeout(HANG).expect("the store was entered"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_a_request_held_in_the_store_and_answers_it_whole() {
    let (store, entered_rx, release) = PausingStore::new();
    let mut server = start_in_process(backends(store, &Faults::new()), Options::default()).await;
    let addr = server.addr.clone();
    let begin = tokio::spawn(async move {
        call(
            &addr,
            "POST",
            "/v1/login/begin",
            Some(API_KEY),
            &begin_body(),
        )
        .await
    });
    entered(entered_rx).await;

    server.shut_down().await;
    assert!(
        !server.served.is_finished(),
        "the server waits for the begin"
    );
    assert!(!begin.is_finished());

    release.send(()).unwrap();
    let answer = begin.await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("connection"), Some("close"));
    let answer: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(answer["outcome"], "challenge", "{answer}");
    assert_eq!(server.served.await.unwrap().unwrap(), Stopped::Drained);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_grace_period_a_request_that_never_ends_is_cut() {
    let (store, entered_rx, release) = PausingStore::new();
    let options = Options {
        shutdown_grace: Duration::from_millis(100),
        ..Options::default()
    };
    let mut server = start_in_process(backends(store, &Faults::new()), options).await;
    let addr = server.addr.clone();
    let body = begin_body();
    let begin = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(&addr).unwrap();
        stream.set_read_timeout(Some(HANG)).unwrap();
        write!(
            stream,
            "POST /v1/login/begin HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {API_KEY}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = Vec::new();
        // A cut connection ends (EOF) or is reset; either way nothing was answered.
        let _ = stream.read_to_end(&mut answer);
        answer
    });
    entered(entered_rx).await;

    server.shut_down().await;
    // The store is still held: only the grace period can end the wait.
    assert_eq!(server.served.await.unwrap().unwrap(), Stopped::GraceExpired);
    let answer = begin.await.unwrap();
    assert!(
        answer.is_empty(),
        "the begin was answered: {}",
        String::from_utf8_lossy(&answer)
    );
    release.send(()).unwrap();
}
