//! `serve` under slow and many clients, over real sockets against the real binary: what a client
//! or an attacker sees (status, headers, when a connection closes) and what keeps working for
//! everyone else meanwhile.
//!
//! - A flood of 500 connections, each announcing a 65 000-byte body and sending one byte (the
//!   issue's slow-body attack, from 500 loopback addresses so that no per-client cap applies): the
//!   health check and whole REST logins keep succeeding, and their p99 is printed and bounded.
//! - Past the per-client cap, unauthenticated requests get a whole 503 with `Retry-After` (never a
//!   dropped connection) while an API-key caller from the same address still gets through; past
//!   the overall cap, everyone gets the 503.
//! - A head sent too slowly, and an idle connection, are closed after `--header-timeout`; a body
//!   sent too slowly gets 408 after `--body-timeout`.
//! - Past `--max-connections`, a new connection waits (in the kernel's backlog) and is answered
//!   once a place frees.
//! - Behind `--trusted-proxy`, the client is the right-most untrusted `X-Forwarded-For` hop.
//!
//! Every flood is bounded (at most 500 sockets, loopback only) and ends with its test. The tests
//! run one at a time, so that the flood's latency figures hold only its own load.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod support;

use support::{BIN, Raw, free_port, parse_raw, read_raw};

/// How long any single wait may take before the test fails as hung.
const HANG: Duration = Duration::from_secs(60);
/// The slow-body flood's size.
const FLOOD: usize = 500;

fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The flood holds 500 sockets here and the server as many: a soft limit of 1024 would be tight.
fn raise_fd_limit() {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap();
    assert!(limit >= 2 * FLOOD as u64 + 256, "open-file limit {limit}");
}

// ---------------------------------------------------------------------------------------------
// The binary

/// `mfa-step serve --demo` on a free port; its log (standard error) read line by line.
struct Server {
    child: Child,
    addr: String,
    data: PathBuf,
    key: String,
    log: Mutex<mpsc::Receiver<String>>,
}

impl Drop for Server {
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

impl Server {
    /// Starts the server with `extra` flags and returns once it answers (its walk-through is
    /// printed only then).
    fn start(data: &Path, extra: &[&str]) -> Self {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut child = Command::new(BIN)
            .args(["serve", "--demo", "--log-format", "json", "--listen", &addr])
            .arg("--data-dir")
            .arg(data)
            .args(extra)
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
        let first = stdout.recv_timeout(HANG).unwrap_or_else(|_| {
            let seen: Vec<String> = log.try_iter().collect();
            panic!(
                "serve printed no walk-through; its log:\n{}",
                seen.join("\n")
            )
        });
        assert!(first.starts_with("Demo clinic seeded"), "{first}");
        std::thread::spawn(move || while stdout.recv().is_ok() {});
        let key = std::fs::read_to_string(data.join("api.key"))
            .unwrap()
            .trim()
            .to_owned();
        Self {
            child,
            addr,
            data: data.to_owned(),
            key,
            log: Mutex::new(log),
        }
    }

    /// Reads the log until a line satisfies `pred`.
    fn wait_for_log(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + HANG;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = self
                .log
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .recv_timeout(left)
            else {
                panic!("no log line {what}; saw:\n{}", seen.join("\n"));
            };
            if pred(&line) {
                return line;
            }
            seen.push(line);
        }
    }

    /// A metric's value (the one series of `name` with exactly `labels`), or 0 when absent.
    fn metric(&self, name: &str, labels: &str) -> f64 {
        let series = format!("{name}{labels} ");
        let Ok((200, page)) = try_get(&self.addr, "/metrics") else {
            return 0.0;
        };
        page.lines()
            .find_map(|l| l.strip_prefix(&series)?.parse().ok())
            .unwrap_or(0.0)
    }

    /// Waits until `metric(name, labels)` satisfies `pred`; returns the last value seen.
    fn wait_metric(
        &self,
        name: &str,
        labels: &str,
        within: Duration,
        pred: impl Fn(f64) -> bool,
    ) -> f64 {
        let deadline = Instant::now() + within;
        loop {
            let value = self.metric(name, labels);
            if pred(value) || Instant::now() >= deadline {
                return value;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn in_flight(&self) -> f64 {
        self.metric("mfa_step_http_requests_in_flight", "")
    }

    fn refusals(&self, reason: &str) -> f64 {
        self.metric(
            "mfa_step_http_refusals_total",
            &format!("{{reason=\"{reason}\"}}"),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Clients

/// A runtime only to bind client sockets to a chosen loopback address before connecting (std
/// cannot); the sockets are then used blocking.
fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_io()
            .build()
            .unwrap()
    })
}

/// A connection to `addr` from `from` (any address of 127.0.0.0/8 is this machine's).
fn connect_from(from: Ipv4Addr, addr: &str) -> TcpStream {
    let addr: SocketAddr = addr.parse().unwrap();
    let stream = rt().block_on(async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(from.into(), 0)).unwrap();
        socket.connect(addr).await.unwrap().into_std().unwrap()
    });
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(HANG)).unwrap();
    stream
}

/// The slow request: a head announcing 65 000 bytes of body, then one byte of it.
fn slow_body(from: Ipv4Addr, addr: &str, path: &str, headers: &[(&str, &str)]) -> TcpStream {
    let mut stream = connect_from(from, addr);
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 65000\r\n"
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(b"c").unwrap();
    stream
}

/// One whole request from `from`, on a connection that then closes.
fn send_from(
    from: Ipv4Addr,
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Raw {
    let mut stream = connect_from(from, addr);
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    stream.write_all(head.as_bytes()).unwrap();
    read_raw(&mut stream)
}

/// One request that reports a dropped connection or a timeout as an error instead of panicking.
fn try_request(
    addr: &str,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .map_err(|e| e.to_string())?;
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("{method} {path}: read: {e}"))?;
    if raw.is_empty() {
        return Err(format!(
            "{method} {path}: connection closed without response"
        ));
    }
    let raw = parse_raw(&raw);
    Ok((raw.status, raw.body))
}

fn try_get(addr: &str, path: &str) -> Result<(u16, String), String> {
    try_request(addr, "GET", path, None, "")
}

/// A whole REST login for a user of the demo clinic: begin, send-code, the code from the outbox,
/// verify. Returns how long it took.
fn login(server: &Server, template: &Value, user: &str) -> Result<Duration, String> {
    let started = Instant::now();
    let email = format!("{user}@demo-clinic.example");
    let mut context = template.clone();
    context["user_id"] = json!(user);
    context["email"] = json!(email);
    let call = |path: &str, body: &Value| -> Result<Value, String> {
        let (status, text) = try_request(
            &server.addr,
            "POST",
            path,
            Some(&server.key),
            &body.to_string(),
        )?;
        let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status == 200 {
            Ok(answer)
        } else {
            Err(format!("{path}: {status} {text}"))
        }
    };
    let decision = call("/v1/login/begin", &json!({ "context": context }))?;
    if decision["outcome"] != "challenge" {
        return Err(format!("begin: {decision}"));
    }
    let challenge = decision["challenge_id"].as_str().unwrap_or_default();
    call(
        "/v1/login/send-code",
        &json!({ "context": context, "challenge_id": challenge }),
    )?;
    let code = code_for(&server.data.join("outbox"), &email)?;
    let verified = call(
        "/v1/login/verify",
        &json!({ "context": context, "challenge_id": challenge, "code": code }),
    )?;
    if verified["amr"] != json!(["otp", "mfa"]) {
        return Err(format!("verify: {verified}"));
    }
    Ok(started.elapsed())
}

/// The code in the latest email to `email` in the outbox.
fn code_for(outbox: &Path, email: &str) -> Result<String, String> {
    let suffix = format!("-{email}.txt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(outbox)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(&suffix))
        .collect();
    files.sort();
    let file = files.last().ok_or_else(|| format!("no email to {email}"))?;
    let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
    text.lines()
        .map(str::trim)
        .find(|l| l.len() == 6 && l.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_owned)
        .ok_or_else(|| format!("no code in the email to {email}"))
}

fn template(server: &Server) -> Value {
    serde_json::from_str(&std::fs::read_to_string(server.data.join("demo/dr-demo.json")).unwrap())
        .unwrap()
}

/// A health check's status, or how it failed.
type Answered = Result<u16, String>;
/// A login's duration, or how it failed.
type LoggedIn = Result<Duration, String>;

/// The `p`-th percentile by nearest rank.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn assert_busy(raw: &Raw, what: &str) {
    assert_eq!(raw.status, 503, "{what}: {}", raw.body);
    assert_eq!(raw.header("retry-after"), Some("1"), "{what}");
    assert_eq!(raw.header("connection"), Some("close"), "{what}");
    let body: Value = serde_json::from_str(&raw.body).unwrap();
    assert_eq!(body["error"]["kind"], "unavailable", "{what}: {body}");
    assert_eq!(body["error"]["retry_after_seconds"], 1, "{what}: {body}");
}

// ---------------------------------------------------------------------------------------------
// The tests

/// The attack, doubled: before the fix, each slow body held one of the pool's 256
/// instances while it waited, and `/healthz` and every login got "connection closed without
/// response". Run with default flags, so that it runs unchanged against a build from before.
#[test]
fn a_flood_of_500_slow_bodies_leaves_healthz_and_rest_logins_working() {
    let _serial = one_at_a_time();
    raise_fd_limit();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let template = template(&server);
    login(&server, &template, "warm-up").unwrap();

    // 500 sockets from 500 addresses: 127.77.0.1 … 127.77.1.250.
    let flood: Vec<TcpStream> = (0..FLOOD)
        .map(|i| {
            let from = Ipv4Addr::new(127, 77, (i / 250) as u8, (i % 250 + 1) as u8);
            slow_body(from, &server.addr, "/prompt/verify", &[])
        })
        .collect();
    let flooded = Instant::now();
    // The server has read every head once all 500 are admitted (a build without the gauge: 0).
    let held = server.wait_metric(
        "mfa_step_http_requests_in_flight",
        "",
        Duration::from_secs(5),
        |v| v >= FLOOD as f64,
    );

    // Meanwhile: 4 callers of the API doing 10 logins each, and the health check.
    let (health, results): (Vec<Answered>, Vec<LoggedIn>) = std::thread::scope(|scope| {
        let callers: Vec<_> = (0..4)
            .map(|t| {
                let (server, template) = (&server, &template);
                scope.spawn(move || {
                    (0..10)
                        .map(|i| login(server, template, &format!("flood-{t}-{i}")))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut health = Vec::new();
        for _ in 0..20 {
            health.push(try_get(&server.addr, "/healthz").map(|(s, _)| s));
            std::thread::sleep(Duration::from_millis(25));
        }
        let logins = callers
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect();
        (health, logins)
    });
    let during = flooded.elapsed();
    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    let mut times: Vec<Duration> = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .copied()
        .collect();
    times.sort();
    eprintln!(
        "flood of {FLOOD} slow bodies: {} of {} logins succeeded in {:.2} s; latency p50 {:?}, p99 {:?}, max {:?}",
        times.len(),
        results.len(),
        during.as_secs_f64(),
        times.get(times.len() / 2),
        (!times.is_empty()).then(|| percentile(&times, 99.0)),
        times.last(),
    );
    let unhealthy: Vec<_> = health.iter().filter(|h| **h != Ok(200)).collect();
    eprintln!(
        "/healthz during the flood: {} of {} answered 200",
        health.len() - unhealthy.len(),
        health.len()
    );
    assert!(
        unhealthy.is_empty(),
        "/healthz during the flood: {unhealthy:?}"
    );
    assert!(
        failures.is_empty(),
        "logins failed during the flood: {failures:?}"
    );
    let p99 = percentile(&times, 99.0);
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?}");

    // The flood was held all along: every slow request admitted, none answered, none holding an
    // instance (the body's deadline, 10 s, had not passed).
    assert_eq!(
        held, FLOOD as f64,
        "the server did not hold the flood's requests"
    );
    assert!(
        during < Duration::from_secs(9),
        "too slow to tell: {during:?}"
    );
    for stream in &flood {
        stream.set_nonblocking(true).unwrap();
        let mut byte = [0u8; 1];
        match stream.peek(&mut byte) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("a flood socket was answered or closed: {other:?}"),
        }
    }
    assert_eq!(
        server.metric("mfa_step_component_instances_in_flight", ""),
        0.0
    );
    assert_eq!(server.refusals("busy"), 0.0);
    assert_eq!(server.refusals("busy-client"), 0.0);
}

#[test]
fn past_the_per_client_cap_unauthenticated_requests_get_503_and_an_api_key_caller_gets_through() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--max-in-flight-per-client", "4", "--body-timeout", "60"],
    );
    let me = Ipv4Addr::new(127, 88, 0, 1);
    let held: Vec<TcpStream> = (0..4)
        .map(|_| slow_body(me, &server.addr, "/prompt/verify", &[]))
        .collect();
    assert_eq!(
        server.wait_metric("mfa_step_http_requests_in_flight", "", HANG, |v| v >= 4.0),
        4.0
    );

    // 16 more slow bodies from the same address: each a whole 503 at once, never a drop.
    for i in 0..16 {
        let mut stream = slow_body(me, &server.addr, "/prompt/verify", &[]);
        assert_busy(&read_raw(&mut stream), &format!("slow body {i}"));
    }
    let health = send_from(me, &server.addr, "GET", "/healthz", &[], "");
    assert_busy(&health, "/healthz from the same address");
    // Another address is another client.
    let other = send_from(
        Ipv4Addr::new(127, 88, 0, 2),
        &server.addr,
        "GET",
        "/healthz",
        &[],
        "",
    );
    assert_eq!(other.status, 200, "{}", other.body);

    // A caller with the API key shares only the overall cap: it gets through from the same address.
    let begin = std::fs::read_to_string(server.data.join("demo/dr-demo-begin.json")).unwrap();
    let auth = format!("Bearer {}", server.key);
    let api = send_from(
        me,
        &server.addr,
        "POST",
        "/v1/login/begin",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        &begin,
    );
    assert_eq!(api.status, 200, "{}", api.body);
    // A wrong key is the component's 401, answered before any budget is taken.
    let wrong = send_from(
        me,
        &server.addr,
        "POST",
        "/v1/login/begin",
        &[("Authorization", "Bearer wrong")],
        &begin,
    );
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert_eq!(wrong.header("www-authenticate"), Some("Bearer"));
    let wrong: Value = serde_json::from_str(&wrong.body).unwrap();
    assert_eq!(wrong["error"]["kind"], "unauthorized");

    assert_eq!(server.refusals("busy-client"), 17.0);
    assert_eq!(server.refusals("busy"), 0.0);
    assert_eq!(
        server.metric(
            "mfa_step_http_requests_total",
            "{route=\"/prompt/*\",method=\"POST\",status=\"503\"}"
        ),
        16.0
    );

    // Once its requests end (the client hangs up), the address gets in again.
    drop(held);
    assert_eq!(
        server.wait_metric("mfa_step_http_requests_in_flight", "", HANG, |v| v == 0.0),
        0.0
    );
    let again = send_from(me, &server.addr, "GET", "/healthz", &[], "");
    assert_eq!(again.status, 200, "{}", again.body);
}

#[test]
fn past_the_overall_cap_everyone_gets_503_even_with_the_api_key() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--max-in-flight", "3", "--body-timeout", "60"],
    );
    let held: Vec<TcpStream> = (1..=3)
        .map(|i| {
            slow_body(
                Ipv4Addr::new(127, 89, 0, i),
                &server.addr,
                "/prompt/verify",
                &[],
            )
        })
        .collect();
    assert_eq!(
        server.wait_metric("mfa_step_http_requests_in_flight", "", HANG, |v| v >= 3.0),
        3.0
    );
    let begin = std::fs::read_to_string(server.data.join("demo/dr-demo-begin.json")).unwrap();
    let auth = format!("Bearer {}", server.key);
    let api = send_from(
        Ipv4Addr::LOCALHOST,
        &server.addr,
        "POST",
        "/v1/login/begin",
        &[("Authorization", &auth)],
        &begin,
    );
    assert_busy(&api, "an API-key caller past the overall cap");
    let health = send_from(
        Ipv4Addr::LOCALHOST,
        &server.addr,
        "GET",
        "/healthz",
        &[],
        "",
    );
    assert_busy(&health, "/healthz past the overall cap");
    // The operator's pages take no budget.
    let ready = send_from(Ipv4Addr::LOCALHOST, &server.addr, "GET", "/readyz", &[], "");
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(server.refusals("busy"), 2.0);

    drop(held);
    server.wait_metric("mfa_step_http_requests_in_flight", "", HANG, |v| v == 0.0);
    let api = send_from(
        Ipv4Addr::LOCALHOST,
        &server.addr,
        "POST",
        "/v1/login/begin",
        &[("Authorization", &auth)],
        &begin,
    );
    assert_eq!(api.status, 200, "{}", api.body);
}

/// Reads until the server closes the connection; returns what it sent and when it closed.
fn until_closed(stream: &mut TcpStream) -> (Vec<u8>, Instant) {
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    (got, Instant::now())
}

#[test]
fn a_head_sent_too_slowly_and_an_idle_connection_are_closed_after_the_header_timeout() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["--header-timeout", "1"]);
    let started = Instant::now();
    // Half a head, then nothing.
    let mut half = TcpStream::connect(&server.addr).unwrap();
    half.set_read_timeout(Some(HANG)).unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // A head trickled a byte every 200 ms: it never ends in time, though bytes keep coming.
    let mut trickle = TcpStream::connect(&server.addr).unwrap();
    trickle.set_read_timeout(Some(HANG)).unwrap();
    let mut writer = trickle.try_clone().unwrap();
    let trickling = std::thread::spawn(move || {
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        {
            if writer.write_all(&[*byte]).is_err() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    });
    // Connected, and not a byte sent.
    let mut idle = TcpStream::connect(&server.addr).unwrap();
    idle.set_read_timeout(Some(HANG)).unwrap();

    for (name, stream) in [
        ("half a head", &mut half),
        ("a trickled head", &mut trickle),
        ("an idle connection", &mut idle),
    ] {
        let (got, closed) = until_closed(stream);
        let after = closed - started;
        assert!(
            got.is_empty() || got.starts_with(b"HTTP/1.1 408"),
            "{name}: {}",
            String::from_utf8_lossy(&got)
        );
        assert!(
            after >= Duration::from_millis(900) && after < Duration::from_secs(5),
            "{name} closed after {after:?}"
        );
    }
    assert!(trickling.join().unwrap(), "the trickle was never cut off");
    assert!(server.refusals("header-timeout") >= 3.0);
    // A prompt client is unaffected.
    assert_eq!(try_get(&server.addr, "/healthz").unwrap().0, 200);
}

#[test]
fn a_body_sent_too_slowly_gets_408_after_the_body_timeout() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["--body-timeout", "1"]);
    let started = Instant::now();
    let mut slow = slow_body(Ipv4Addr::LOCALHOST, &server.addr, "/prompt/verify", &[]);
    let answer = read_raw(&mut slow);
    let after = started.elapsed();
    assert_eq!(answer.status, 408, "{}", answer.body);
    assert_eq!(answer.header("connection"), Some("close"));
    let body: Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(body["error"]["kind"], "timeout", "{body}");
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(5),
        "answered after {after:?}"
    );
    assert_eq!(server.refusals("body-timeout"), 1.0);
    assert_eq!(
        server.metric(
            "mfa_step_http_requests_total",
            "{route=\"/prompt/*\",method=\"POST\",status=\"408\"}"
        ),
        1.0
    );
    assert_eq!(server.in_flight(), 0.0);
}

#[test]
fn past_the_connection_cap_a_new_connection_waits_and_is_answered_once_a_place_frees() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--max-connections", "8", "--header-timeout", "60"],
    );
    let mut idle: Vec<TcpStream> = (0..7)
        .map(|_| TcpStream::connect(&server.addr).unwrap())
        .collect();
    // The scrape is the eighth: the server has taken all seven (a scrape cannot see fewer than
    // eight from now on, its own included); the eighth place comes back once the scrape is done.
    assert_eq!(
        server.wait_metric("mfa_step_http_connections_open", "", HANG, |v| v >= 8.0),
        8.0
    );
    std::thread::sleep(Duration::from_millis(300));
    idle.push(TcpStream::connect(&server.addr).unwrap());

    // The ninth connects (the kernel's backlog) but is not served while all eight are open.
    let mut ninth = TcpStream::connect(&server.addr).unwrap();
    ninth
        .write_all(
            format!(
                "GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                server.addr
            )
            .as_bytes(),
        )
        .unwrap();
    ninth
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut byte = [0u8; 1];
    let waited = ninth.read(&mut byte);
    assert!(
        matches!(&waited, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "served past the cap: {waited:?}"
    );
    drop(idle.pop());
    ninth.set_read_timeout(Some(HANG)).unwrap();
    let answer = read_raw(&mut ninth);
    assert_eq!(answer.status, 200, "{}", answer.body);
}

#[test]
fn behind_a_trusted_proxy_the_client_is_the_right_most_untrusted_forwarded_hop() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &[
            "--trusted-proxy",
            "127.0.0.1/32",
            "10.0.0.0/8",
            "--max-in-flight-per-client",
            "2",
            "--body-timeout",
            "60",
        ],
    );
    let proxy = Ipv4Addr::LOCALHOST;
    // Two slow requests the proxy forwards for 198.51.100.7 (a made-up hop left of it).
    let forwarded = [("X-Forwarded-For", "203.0.113.50, 198.51.100.7")];
    let _held: Vec<TcpStream> = (0..2)
        .map(|_| slow_body(proxy, &server.addr, "/prompt/verify", &forwarded))
        .collect();
    assert_eq!(
        server.wait_metric("mfa_step_http_requests_in_flight", "", HANG, |v| v >= 2.0),
        2.0
    );
    // The same client through the proxy, over two header lines, through a second trusted hop: full.
    let same = send_from(
        proxy,
        &server.addr,
        "GET",
        "/healthz",
        &[
            ("X-Forwarded-For", "192.0.2.1"),
            ("X-Forwarded-For", "198.51.100.7 , 10.1.2.3"),
        ],
        "",
    );
    assert_busy(&same, "the same client through the proxy");
    // Another client through the same proxy is not.
    let other = send_from(
        proxy,
        &server.addr,
        "GET",
        "/healthz",
        &[("X-Forwarded-For", "198.51.100.7, 198.51.100.8")],
        "",
    );
    assert_eq!(other.status, 200, "{}", other.body);
    let line = server.wait_for_log("for the other client", |l| {
        l.contains("\"/healthz\"") && l.contains("\"status\":200")
    });
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["client"], "198.51.100.8", "{line}");
    // A peer that is not a trusted proxy is the client, whatever it forwards.
    let direct = send_from(
        Ipv4Addr::new(127, 90, 0, 1),
        &server.addr,
        "GET",
        "/healthz",
        &[("X-Forwarded-For", "198.51.100.7")],
        "",
    );
    assert_eq!(direct.status, 200, "{}", direct.body);
    let line = server.wait_for_log("for the direct client", |l| {
        l.contains("\"/healthz\"") && l.contains("\"status\":200")
    });
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["client"], "127.90.0.1", "{line}");
    // Garbage from the trusted proxy's side: the nearest known address (the proxy) is the client.
    let garbage = send_from(
        proxy,
        &server.addr,
        "GET",
        "/healthz",
        &[("X-Forwarded-For", "198.51.100.7, unknown")],
        "",
    );
    assert_eq!(garbage.status, 200, "{}", garbage.body);
    let line = server.wait_for_log("for the garbage hop", |l| {
        l.contains("\"/healthz\"") && l.contains("\"status\":200")
    });
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["client"], "127.0.0.1", "{line}");
}

/// A connection from `from` whose receive window is a few KiB: an answer its client does not read
/// fills it at once, and the server's writes stall.
fn connect_small_window(from: Ipv4Addr, addr: &str) -> TcpStream {
    let addr: SocketAddr = addr.parse().unwrap();
    let stream = rt().block_on(async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        // Before connecting, so that the window offered in the handshake is the small one.
        socket.set_recv_buffer_size(4096).unwrap();
        socket.bind(SocketAddr::new(from.into(), 0)).unwrap();
        socket.connect(addr).await.unwrap().into_std().unwrap()
    });
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(HANG)).unwrap();
    stream
}

/// One scrape of `/metrics`, and a series' value in it (0 when absent).
fn scrape(server: &Server) -> String {
    try_get(&server.addr, "/metrics").unwrap().1
}

fn series(page: &str, name: &str) -> f64 {
    let series = format!("{name} ");
    page.lines()
        .find_map(|l| l.strip_prefix(&series)?.parse().ok())
        .unwrap_or(0.0)
}

/// The reviewer's scenario: before the fix, an answer held its component instance, its overall
/// admission and its per-client admission until its last byte was sent, and nothing bounded how
/// long a write could take. 32 clients per address on 8 addresses that ask for `/openapi.json`
/// (128 KB) and never read took all 256 instances, and every login got 503.
#[test]
fn clients_that_never_read_their_answers_hold_no_instance_and_are_cut_after_the_write_timeout() {
    let _serial = one_at_a_time();
    raise_fd_limit();
    const READERS: usize = 256;
    const PIPELINED: usize = 8;
    const STALLING: usize = 4;
    const STALLING_PIPELINED: usize = 100;
    const WRITE_TIMEOUT: u64 = 5;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &[
            "--max-in-flight-per-client",
            "32",
            // Far past the write timeout: a connection closed before it was cut by a stalled write.
            "--header-timeout",
            "60",
            "--write-timeout",
            &WRITE_TIMEOUT.to_string(),
        ],
    );
    let template = template(&server);
    login(&server, &template, "warm-up").unwrap();
    let whole = try_get(&server.addr, "/openapi.json").unwrap().1.len();
    assert!(whole > 50_000, "/openapi.json is {whole} bytes");

    // 32 readers on each of 8 addresses (127.91.0.1 … 127.91.0.8), none of which reads.
    let started = Instant::now();
    let readers: Vec<TcpStream> = (0..READERS)
        .map(|i| {
            let from = Ipv4Addr::new(127, 91, 0, (i / 32 + 1) as u8);
            let mut stream = connect_small_window(from, &server.addr);
            // Several answers in a row, more than the kernel's buffers on both sides hold.
            let one = format!(
                "GET /openapi.json HTTP/1.1\r\nHost: {}\r\n\r\n",
                server.addr
            );
            stream.write_all(one.repeat(PIPELINED).as_bytes()).unwrap();
            stream
        })
        .collect();
    let answered = server.wait_metric(
        "mfa_step_http_requests_total",
        "{route=\"/openapi.json\",method=\"GET\",status=\"200\"}",
        HANG,
        |v| v >= (READERS + 1) as f64,
    );
    assert!(answered >= (READERS + 1) as f64, "{answered} answered");
    // Once every connection's writes have stalled (the kernel takes a few answers first), no
    // instance and no admission is held for a reader, though all of them are still connected.
    let answers = |page: &str| -> Vec<String> {
        page.lines()
            .filter(|l| l.starts_with("mfa_step_http_requests_total{route=\"/openapi.json\""))
            .map(str::to_owned)
            .collect()
    };
    // Idle twice in a row with no new answer in between: every reader is stalled or done.
    let settle = |within: Duration| {
        let deadline = Instant::now() + within;
        let mut last: Option<String> = None;
        loop {
            let page = scrape(&server);
            let idle = series(&page, "mfa_step_component_instances_in_flight") == 0.0
                && series(&page, "mfa_step_http_requests_in_flight") == 0.0;
            let settled = idle
                && last
                    .as_deref()
                    .is_some_and(|l| answers(l) == answers(&page));
            if settled || Instant::now() >= deadline {
                return page;
            }
            last = idle.then_some(page);
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let page = settle(Duration::from_secs(15));
    eprintln!(
        "stalled readers after {:?}: {:?}",
        started.elapsed(),
        answers(&page)
    );
    assert_eq!(
        series(&page, "mfa_step_component_instances_in_flight"),
        0.0,
        "{page}"
    );
    assert_eq!(series(&page, "mfa_step_http_requests_in_flight"), 0.0);
    // Every reader is still connected, or was cut by the write timeout: none was let go.
    assert!(
        series(&page, "mfa_step_http_connections_open")
            + series(
                &page,
                "mfa_step_http_refusals_total{reason=\"write-timeout\"}"
            )
            > READERS as f64,
        "the readers' connections are open: {page}"
    );

    // Meanwhile a whole REST login, and an address whose 32 readers are stalled, get through.
    let took = login(&server, &template, "during-stalled-readers").unwrap();
    assert!(took < Duration::from_secs(3), "login took {took:?}");
    let same = send_from(
        Ipv4Addr::new(127, 91, 0, 1),
        &server.addr,
        "GET",
        "/healthz",
        &[],
        "",
    );
    assert_eq!(same.status, 200, "{}", same.body);
    assert_eq!(server.refusals("busy-client"), 0.0);
    assert_eq!(server.refusals("busy-instances"), 0.0);

    // A reader whose unread answers pass what the kernel buffers (4 MB on Linux's loopback by
    // default) stalls the server's writes: past the write timeout its connection is closed, long
    // before the header timeout would close an idle one, and it never gets the rest.
    let stalling: Vec<TcpStream> = (0..STALLING)
        .map(|i| {
            let from = Ipv4Addr::new(127, 92, 0, i as u8 + 1);
            let mut stream = connect_small_window(from, &server.addr);
            let one = format!(
                "GET /openapi.json HTTP/1.1\r\nHost: {}\r\n\r\n",
                server.addr
            );
            stream
                .write_all(one.repeat(STALLING_PIPELINED).as_bytes())
                .unwrap();
            stream
        })
        .collect();
    let sent = Instant::now();
    // Stalled, not yet cut: they hold no instance and no admission either.
    let page = settle(Duration::from_secs(WRITE_TIMEOUT - 1));
    if sent.elapsed() < Duration::from_secs(WRITE_TIMEOUT) {
        assert_eq!(
            series(&page, "mfa_step_component_instances_in_flight"),
            0.0,
            "{page}"
        );
        assert_eq!(series(&page, "mfa_step_http_requests_in_flight"), 0.0);
    }
    let cut = server.wait_metric(
        "mfa_step_http_refusals_total",
        "{reason=\"write-timeout\"}",
        HANG,
        |v| v >= STALLING as f64,
    );
    let after = sent.elapsed();
    assert_eq!(cut, STALLING as f64);
    assert!(
        after >= Duration::from_secs(WRITE_TIMEOUT - 1) && after < Duration::from_secs(40),
        "cut after {after:?}"
    );
    for mut stream in stalling {
        let mut got = Vec::new();
        let _ = stream.read_to_end(&mut got);
        assert!(got.starts_with(b"HTTP/1.1 200 "));
        assert!(
            got.len() < STALLING_PIPELINED * whole,
            "{} of {} bytes",
            got.len(),
            STALLING_PIPELINED * whole
        );
    }
    // The readers that never read (all their answers in the kernel's buffers) stay connected,
    // idle, holding nothing.
    assert_eq!(
        server.metric("mfa_step_component_instances_in_flight", ""),
        0.0
    );
    drop(readers);
}

/// A head larger than the connection's buffer (64 KiB) is refused: 431 or a closed connection,
/// instead of hyper's default ~400 KB per connection.
#[test]
fn an_oversized_head_is_refused() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let mut stream = TcpStream::connect(&server.addr).unwrap();
    stream.set_read_timeout(Some(HANG)).unwrap();
    let padding = "a".repeat(100 * 1024);
    // The server may close while the head is still being sent: a failed write is an answer too.
    let _ = write!(
        stream,
        "GET /healthz HTTP/1.1\r\nHost: {}\r\nX-Padding: {padding}\r\nConnection: close\r\n\r\n",
        server.addr
    );
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    assert!(
        got.is_empty() || got.starts_with(b"HTTP/1.1 431 "),
        "{}",
        String::from_utf8_lossy(&got[..got.len().min(200)])
    );
    // An ordinary large head (8 KiB of cookies, say) still gets through.
    let cookie = "c".repeat(8 * 1024);
    let ok = send_from(
        Ipv4Addr::LOCALHOST,
        &server.addr,
        "GET",
        "/healthz",
        &[("Cookie", &cookie)],
        "",
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
}

/// A numeric flag out of its range is a usage error (exit 2) naming the flag, never a panic at
/// start (`Semaphore::new` with more than its maximum of permits).
#[test]
fn an_out_of_range_serve_flag_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    for (flag, value) in [
        ("--max-in-flight", "18446744073709551615"),
        ("--max-connections", "0"),
        ("--write-timeout", "0"),
    ] {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args([flag, value])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + HANG;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                panic!("serve {flag} {value} is still running");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert_eq!(status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(
            stderr.contains("invalid value") && stderr.contains(flag),
            "{flag} {value}: {stderr}"
        );
    }
}
