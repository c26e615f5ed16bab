//! Case 1: a slow-connection flood. 500 sockets, each from its own loopback address (so that no
//! per-client cap is what saves the server), announce a 65 000-byte body and send one byte; while
//! they are held, 4 callers run 10 whole REST logins each (begin, send-code, the code from the
//! mail, verify). Every login must succeed, with p99 under a second.

use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

const FLOOD: usize = 500;

/// The slow request: a head announcing 65 000 bytes, then one byte of them.
fn slow_body(from: Ipv4Addr, addr: &str) -> TcpStream {
    use std::io::Write as _;
    let mut stream = connect_from(from, addr).unwrap();
    write!(
        stream,
        "POST /prompt/verify HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 65000\r\n\r\nc"
    )
    .unwrap();
    stream
}

/// A whole REST login; how long it took.
fn login(s: &Adversary, user: &str) -> Result<Duration, String> {
    let started = Instant::now();
    let c = ctx(ORG, user, &["provider"]);
    let call = |path: &str, body: serde_json::Value| -> Result<serde_json::Value, String> {
        let r = s.try_post(path, &body)?;
        if r.status == 200 {
            Ok(r.json)
        } else {
            Err(format!("{path}: {} {}", r.status, r.text))
        }
    };
    let begun = call("/v1/login/begin", json!({ "context": c }))?;
    let id = begun["challenge_id"]
        .as_str()
        .ok_or_else(|| format!("begin: {begun}"))?
        .to_owned();
    call(
        "/v1/login/send-code",
        json!({ "context": c, "challenge_id": id }),
    )?;
    let code = s.code(&email(user));
    let verified = call(
        "/v1/login/verify",
        json!({ "context": c, "challenge_id": id, "code": code }),
    )?;
    if verified["amr"] != json!(["otp", "mfa"]) {
        return Err(format!("verify: {verified}"));
    }
    Ok(started.elapsed())
}

/// The `p`-th percentile by nearest rank.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A metric's value from the served port's `/metrics`, or 0.
fn metric(s: &Adversary, series: &str) -> f64 {
    let Ok(r) = http(None, &s.addr, "GET", "/metrics", &[], "") else {
        return 0.0;
    };
    r.text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{series} "))?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn rest_logins_go_on_through_a_flood_of_500_slow_bodies() {
    let _serial = one_at_a_time();
    raise_fd_limit(2 * FLOOD as u64 + 256);
    let s = Adversary::start("flood");
    login(&s, "warm-up").unwrap();

    // 127.66.0.1 … 127.66.1.250.
    let flood: Vec<TcpStream> = (0..FLOOD)
        .map(|i| {
            slow_body(
                Ipv4Addr::new(127, 66, (i / 250) as u8, (i % 250 + 1) as u8),
                &s.addr,
            )
        })
        .collect();
    let flooded = Instant::now();
    // Every slow request is admitted and waiting for its body before the logins start.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut held = 0.0;
    while Instant::now() < deadline {
        held = metric(&s, "mfa_step_http_requests_in_flight");
        if held >= FLOOD as f64 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        held, FLOOD as f64,
        "the flood is held before the logins start"
    );

    let results: Vec<Result<Duration, String>> = std::thread::scope(|scope| {
        let callers: Vec<_> = (0..4)
            .map(|t| {
                let s = &s;
                scope.spawn(move || {
                    (0..10)
                        .map(|i| login(s, &format!("flood-{t}-{i}")))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        callers
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect()
    });
    let during = flooded.elapsed();
    let still_held = metric(&s, "mfa_step_http_requests_in_flight");
    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    let mut times: Vec<Duration> = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .copied()
        .collect();
    times.sort();
    let (p50, p99) = if times.is_empty() {
        (Duration::ZERO, Duration::MAX)
    } else {
        (percentile(&times, 50.0), percentile(&times, 99.0))
    };
    eprintln!(
        "[flood] {FLOOD} slow bodies held ({still_held} requests in flight after the logins); \
         {} of {} REST logins succeeded in {:.2} s; login latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        times.len(),
        results.len(),
        during.as_secs_f64(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        times.last().map_or(0.0, |t| t.as_secs_f64() * 1e3),
    );
    assert!(
        failures.is_empty(),
        "logins failed during the flood: {failures:?}"
    );
    assert_eq!(times.len(), 40);
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?}");
    // The flood was in place all along: its body deadline (10 s) had not passed.
    assert!(
        during < Duration::from_secs(9),
        "too slow to tell: {during:?}"
    );
    assert!(
        still_held >= FLOOD as f64,
        "the flood was let go early: {still_held}"
    );
    drop(flood);
}
