//! The control API: a small HTTP/1.1 server on a second loopback port, never on the served one,
//! through which the suite turns the hooks. Every route lives under [`PREFIX`], and
//! [`ROUTES`] lists them all: the suite checks that none of these strings (nor [`MARKER`]) is in
//! the shipped `mfa-step` binary, and that each is in this one (so the check can see them).
//!
//! | route | what |
//! |---|---|
//! | `GET /__adversary/` | the marker and the route list |
//! | `GET /__adversary/clock` | `{"now"}`: the test clock, Unix seconds |
//! | `POST /__adversary/clock/advance?seconds=N` | moves it forward, then sweeps: `{"now", "swept"}` |
//! | `POST /__adversary/clock/set?to=T` | sets it (409 if that is in the past), then sweeps |
//! | `POST /__adversary/sweep` | forgets the keys expired at the clock's time: `{"now", "swept"}` |
//! | `POST /__adversary/garble?prefix=P` | existing values under `P` read as garbage |
//! | `POST /__adversary/garble/clear` | stops garbling |
//! | `POST /__adversary/pause?op=set&prefix=P` | holds the next `op` (`set`, `increment`, `delete`) under `P` |
//! | `GET /__adversary/pause/held?wait_ms=N` | `{"held": key or null}`, waiting up to N ms |
//! | `POST /__adversary/pause/release` | lets it go |
//! | `POST /__adversary/faults?store_reads=1&store_writes=0&mail=0&audit=0` | host-harness's fault switches |
//! | `POST /__adversary/faults/clear` | all off |
//! | `GET /__adversary/mail?to=ADDR` | `{"mail": [{"at", "to", "subject", "text"}]}` |
//!
//! Requests are answered one per connection (`Connection: close`), each on its own thread, so a
//! long `pause/held` wait holds up nothing else.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use host_harness::TestClock;
use host_harness::backends::Sweep;
use serde_json::{Value, json};

use crate::hooks::{Hooks, MailLog, Op};

/// In this binary's bytes and its control API's index; never in the shipped `mfa-step`.
pub const MARKER: &str = "mfa-step-adversary-hooks/v1";
/// Every control route starts with it.
pub const PREFIX: &str = "/__adversary/";

const INDEX: &str = "/__adversary/";
const CLOCK: &str = "/__adversary/clock";
const CLOCK_ADVANCE: &str = "/__adversary/clock/advance";
const CLOCK_SET: &str = "/__adversary/clock/set";
const SWEEP: &str = "/__adversary/sweep";
const GARBLE: &str = "/__adversary/garble";
const GARBLE_CLEAR: &str = "/__adversary/garble/clear";
const PAUSE: &str = "/__adversary/pause";
const PAUSE_HELD: &str = "/__adversary/pause/held";
const PAUSE_RELEASE: &str = "/__adversary/pause/release";
const FAULTS: &str = "/__adversary/faults";
const FAULTS_CLEAR: &str = "/__adversary/faults/clear";
const MAIL: &str = "/__adversary/mail";

/// Every control route.
pub const ROUTES: [&str; 13] = [
    INDEX,
    CLOCK,
    CLOCK_ADVANCE,
    CLOCK_SET,
    SWEEP,
    GARBLE,
    GARBLE_CLEAR,
    PAUSE,
    PAUSE_HELD,
    PAUSE_RELEASE,
    FAULTS,
    FAULTS_CLEAR,
    MAIL,
];

/// The longest `pause/held` waits.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// What the control API drives.
#[derive(Clone)]
pub struct Controls {
    /// The component's clock.
    pub clock: TestClock,
    /// The store's, mailer's and audit sink's hooks.
    pub hooks: Hooks,
    /// What was mailed.
    pub mail: MailLog,
    /// The store, to forget expired keys when the clock moves (as `serve` does every minute).
    pub sweeper: Arc<dyn Sweep>,
}

/// Answers control requests on `listener` until the process ends.
pub fn run(listener: TcpListener, controls: Controls) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let controls = controls.clone();
        std::thread::spawn(move || {
            if let Err(e) = answer(stream, &controls) {
                tracing::debug!(error = %e, "a control request failed");
            }
        });
    }
}

fn answer(stream: TcpStream, controls: &Controls) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    // A body is never needed; it is read so that the client's write completes.
    let mut body = vec![0u8; length.min(64 * 1024)];
    reader.read_exact(&mut body)?;
    let (path, query) = target.split_once('?').unwrap_or((target.as_str(), ""));
    let (status, value) = route(controls, &method, path, query);
    let text = value.to_string();
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        if status == 200 { "OK" } else { "Error" },
        text.len()
    )?;
    stream.flush()
}

/// The value of query parameter `name`, percent-decoded.
fn param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn bad(message: &str) -> (u16, Value) {
    (400, json!({ "error": message }))
}

fn route(c: &Controls, method: &str, path: &str, query: &str) -> (u16, Value) {
    let post = method == "POST";
    let now = || json!({ "now": c.clock.now() });
    // Forgets what expired by the clock's time, as `serve`'s sweeper does by the system clock.
    let sweep = || {
        let at = c.clock.now();
        match c.sweeper.sweep(at) {
            Ok(n) => (200, json!({ "now": at, "swept": n })),
            Err(e) => (
                500,
                json!({ "error": format!("the sweep failed: {e}"), "now": at }),
            ),
        }
    };
    match (post, path) {
        (false, INDEX) => (200, json!({ "marker": MARKER, "routes": ROUTES })),
        (false, CLOCK) => (200, now()),
        (true, SWEEP) => sweep(),
        (true, CLOCK_ADVANCE) => match param(query, "seconds").and_then(|s| s.parse().ok()) {
            Some(seconds) if seconds >= 0 => {
                c.clock.advance(seconds);
                sweep()
            }
            _ => bad("seconds: a whole number of seconds, not negative"),
        },
        (true, CLOCK_SET) => match param(query, "to").and_then(|s| s.parse::<i64>().ok()) {
            Some(to) if to >= c.clock.now() => {
                c.clock.set(to);
                sweep()
            }
            Some(_) => (
                409,
                json!({ "error": "the test clock does not go back", "now": c.clock.now() }),
            ),
            None => bad("to: Unix seconds"),
        },
        (true, GARBLE) => match param(query, "prefix") {
            Some(prefix) if !prefix.is_empty() => {
                c.hooks.garble(&prefix);
                (200, json!({ "garbled": c.hooks.garbled() }))
            }
            _ => bad("prefix: the start of the keys to garble"),
        },
        (true, GARBLE_CLEAR) => {
            c.hooks.clear_garbling();
            (200, json!({ "garbled": [] }))
        }
        (true, PAUSE) => {
            let op = param(query, "op").unwrap_or_else(|| "set".to_owned());
            match (Op::parse(&op), param(query, "prefix")) {
                (Some(op), Some(prefix)) if !prefix.is_empty() => {
                    c.hooks.arm_pause(op, &prefix);
                    (200, json!({ "armed": true }))
                }
                _ => bad("op: set, increment or delete; prefix: the start of the key"),
            }
        }
        (false, PAUSE_HELD) => {
            let wait = param(query, "wait_ms")
                .and_then(|s| s.parse().ok())
                .map_or(Duration::ZERO, Duration::from_millis)
                .min(MAX_WAIT);
            (200, json!({ "held": c.hooks.wait_held(wait) }))
        }
        (true, PAUSE_RELEASE) => (200, json!({ "released": c.hooks.release() })),
        (true, FAULTS) => {
            let faults = &c.hooks.faults;
            let on = |name: &str| param(query, name).map(|v| v == "1" || v == "true");
            if let Some(v) = on("store_reads") {
                faults.fail_store_reads(v);
            }
            if let Some(v) = on("store_writes") {
                faults.fail_store_writes(v);
            }
            if let Some(v) = on("mail") {
                faults.fail_mail(v);
            }
            if let Some(v) = on("audit") {
                faults.fail_audit(v);
            }
            (200, json!({ "faults": "set" }))
        }
        (true, FAULTS_CLEAR) => {
            c.hooks.faults.clear();
            (200, json!({ "faults": "clear" }))
        }
        (false, MAIL) => {
            let to = param(query, "to");
            let mail: Vec<Value> = c
                .mail
                .to(to.as_deref())
                .into_iter()
                .map(|m| json!({ "at": m.at, "to": m.to, "subject": m.subject, "text": m.text }))
                .collect();
            (200, json!({ "mail": mail }))
        }
        _ if ROUTES.contains(&path) => (405, json!({ "error": "wrong method" })),
        _ if path.starts_with(PREFIX) => (
            404,
            json!({ "error": "no such control route", "routes": ROUTES }),
        ),
        _ => (
            404,
            json!({ "error": "the control API lives under /__adversary/" }),
        ),
    }
}
