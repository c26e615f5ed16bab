//! The audit trail as an auditor and an operator meet it: `serve` writing it under load, killed
//! with SIGKILL, or run twice on one data folder; and `mfa-step audit verify / export / tail / head`
//! reading it back, catching every kind of tampering.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mfa_step_core::audit::chain::{Record, seal_line};
use mfa_step_core::kernel::ports::Head;
use support::{BIN, Server, request, start_with};

fn context(user: &str, org: &str) -> String {
    serde_json::json!({
        "user_id": user,
        "org_id": org,
        "email": format!("{user}@example.org"),
        "roles": ["provider"],
        "locale": "en",
        "device": { "ip": "203.0.113.7", "traits": { "user_agent": "audit test", "browser_family": "curl", "platform": "Linux" } }
    })
    .to_string()
}

/// One login begun: returns the challenge id when the server acknowledged it.
fn begin(server: &Server, key: &str, user: &str, org: &str) -> Option<String> {
    let body = format!(r#"{{"context": {}}}"#, context(user, org));
    let (status, decision) = request(&server.addr, "POST", "/v1/login/begin", Some(key), &body);
    (status == 200).then(|| decision["challenge_id"].as_str().unwrap().to_owned())
}

fn audit(data: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("audit")
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env_remove("MFA_STEP_HMAC_KEY")
        .output()
        .expect("run mfa-step audit")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `audit verify` on `log` (with `extra` arguments): its exit code and report.
fn verify(data: &Path, log: &Path, extra: &[&str]) -> (i32, String) {
    let mut args = vec!["verify", "--quiet", "--audit", log.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = audit(data, &args);
    let report = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap(), report)
}

/// A data folder in which `serve` recorded some logins of two organizations.
fn recorded(extra: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start_with(&data, extra);
    let key = std::fs::read_to_string(data.join("api.key")).unwrap();
    for i in 0..6 {
        let org = if i % 3 == 0 { "beta" } else { "acme" };
        begin(&server, &key, &format!("dr-{i}"), org).expect("begin acknowledged");
    }
    drop(server);
    (dir, data)
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(
        path,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
}

fn index_of(lines: &[String], org: &str, seq: u64) -> usize {
    lines
        .iter()
        .position(|l| {
            let r = Record::parse(l).unwrap();
            r.org == org && r.seq == seq
        })
        .unwrap()
}

#[test]
fn verify_catches_edit_delete_insert_reorder_and_truncate() {
    let (_dir, data) = recorded(&[]);
    let log = data.join("audit.jsonl");
    let original = lines(&log);
    assert_eq!(original.len(), 6);

    let (code, report) = verify(&data, &log, &[]);
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("6 records in 2 streams"), "{report}");
    assert!(report.contains("seals checked"), "{report}");
    assert!(
        report.contains("counts checked against the store"),
        "{report}"
    );
    assert!(report.contains("OK: the log is whole"), "{report}");

    let a2 = index_of(&original, "acme", 2);
    let a3 = index_of(&original, "acme", 3);
    let tampered = data.join("tampered.jsonl");
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        (
            "edit",
            {
                let mut l = original.clone();
                l[a2] = l[a2].replace("203.0.113.7", "198.51.100.66");
                l
            },
            "its contents do not match its hash: the record was edited",
        ),
        (
            "delete",
            {
                let mut l = original.clone();
                l.remove(a2);
                l
            },
            "expected seq 2: the records between are missing",
        ),
        (
            "insert",
            {
                let mut l = original.clone();
                l.insert(a3 + 1, original[a2].clone());
                l
            },
            "the sequence goes back",
        ),
        (
            "reorder",
            {
                let mut l = original.clone();
                l.swap(a2, a3);
                l
            },
            "expected seq 2",
        ),
        (
            "truncate",
            {
                let mut l = original.clone();
                l.pop();
                l
            },
            "the tail was removed",
        ),
    ];
    for (name, lines, why) in cases {
        write_lines(&tampered, &lines);
        let (code, report) = verify(&data, &tampered, &[]);
        assert_eq!(code, 1, "{name} must be detected: {report}");
        assert!(report.contains("BROKEN"), "{name}: {report}");
        assert!(report.contains(why), "{name}: expected `{why}` in {report}");
    }
    // The first broken link is named by file and line.
    write_lines(&tampered, &{
        let mut l = original.clone();
        l[a3] = l[a3]
            .replace("\"provider\"", "\"x\"")
            .replace("audit test", "audit-test");
        l
    });
    let (_, report) = verify(&data, &tampered, &[]);
    assert!(
        report.contains(&format!("tampered.jsonl:{}: org acme, seq 3", a3 + 1)),
        "{report}"
    );
}

#[test]
fn a_rechained_forgery_passes_the_plain_chain_but_not_the_seal() {
    let (_dir, data) = recorded(&[]);
    let log = data.join("audit.jsonl");
    // Rewrite acme's records from seq 2 on, recomputing every hash, as a store admin could.
    let mut heads: std::collections::HashMap<String, Head> = std::collections::HashMap::new();
    let forged: Vec<String> = lines(&log)
        .iter()
        .map(|line| {
            let mut r = Record::parse(line).unwrap();
            if r.org == "acme" && r.seq >= 2 {
                r.ip = Some("198.51.100.66".into());
                r.prev = Head::next(heads.get(&r.org)).1;
                let (line, hash) = seal_line(&r.prefix_json(), None);
                heads.insert(r.org.clone(), Head { seq: r.seq, hash });
                line
            } else {
                heads.insert(
                    r.org.clone(),
                    Head {
                        seq: r.seq,
                        hash: r.hash.clone(),
                    },
                );
                line.clone()
            }
        })
        .collect();
    write_lines(&log, &forged);
    let (code, report) = verify(&data, &log, &["--no-seal"]);
    assert_eq!(
        code, 0,
        "the plain chain cannot see a full rewrite: {report}"
    );
    assert!(report.contains("seals not checked"), "{report}");
    let (code, report) = verify(&data, &log, &[]);
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains("org acme, seq 2: it has no seal"),
        "{report}"
    );
}

#[test]
fn the_sqlite_sink_keeps_a_verifiable_chain_and_shows_tampering() {
    let (_dir, data) = recorded(&["--audit-sink", "sqlite"]);
    let db = data.join("mfa-step.sqlite");
    let sqlite = ["--audit-sink", "sqlite"];
    let (code, report) = verify(&data, &db, &sqlite);
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("6 records in 2 streams"), "{report}");

    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "UPDATE audit_log SET line = replace(line, '203.0.113.7', '198.51.100.66') WHERE org = 'acme' AND seq = 2",
        [],
    )
    .unwrap();
    let (code, report) = verify(&data, &db, &sqlite);
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains("org acme, seq 2: its contents do not match"),
        "{report}"
    );
    conn.execute("DELETE FROM audit_log WHERE org = 'acme' AND seq = 2", [])
        .unwrap();
    let (code, report) = verify(&data, &db, &sqlite);
    assert_eq!(code, 1, "{report}");
    assert!(report.contains("expected seq 2"), "{report}");
    conn.execute("DELETE FROM audit_log WHERE org = 'acme' AND seq >= 2", [])
        .unwrap();
    let (code, report) = verify(&data, &db, &sqlite);
    assert_eq!(code, 1, "{report}");
    assert!(report.contains("the store counted 4 records"), "{report}");
}

#[test]
fn export_tail_and_head_read_what_serve_wrote() {
    let (_dir, data) = recorded(&[]);
    let all = lines(&data.join("audit.jsonl"));

    let out = audit(&data, &["export", "--org", "acme"]);
    assert!(out.status.success());
    let exported: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(exported.len(), 4);
    assert!(exported.iter().all(|l| l.contains(r#""org":"acme""#)));
    assert!(
        exported.iter().all(|l| all.iter().any(|a| a == l)),
        "exported byte for byte"
    );

    // Time ranges: everything was written today, nothing before 2000 or after 2100.
    let none = audit(&data, &["export", "--until", "2000-01-01"]);
    assert_eq!(stdout(&none), "");
    let today = audit(
        &data,
        &[
            "export",
            "--since",
            "2000-01-01T00:00:00Z",
            "--until",
            "2100-01-01",
        ],
    );
    assert_eq!(stdout(&today).lines().count(), 6);
    let bad = audit(&data, &["export", "--since", "yesterday"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("neither an RFC 3339 time"));

    let out = audit(&data, &["export", "--org", "beta", "--out"]);
    assert!(!out.status.success(), "--out needs a path");
    let file = data.join("beta.jsonl");
    let out = audit(
        &data,
        &["export", "--org", "beta", "--out", file.to_str().unwrap()],
    );
    assert!(out.status.success());
    assert_eq!(lines(&file).len(), 2);

    let out = audit(&data, &["tail", "-n", "2"]);
    assert_eq!(stdout(&out).lines().collect::<Vec<_>>(), all[4..].to_vec());

    let out = audit(&data, &["head"]);
    let heads: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(heads["acme"]["seq"], 4);
    assert_eq!(heads["beta"]["seq"], 2);
    let last_acme = Record::parse(&all[index_of(&all, "acme", 4)]).unwrap();
    assert_eq!(heads["acme"]["hash"], last_acme.hash);
}

/// Clients hammering `servers` (round robin) with logins of one organization until `stop`;
/// returns the challenge ids the servers acknowledged.
fn load(
    servers: &[&Server],
    key: &str,
    org: &str,
    clients: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<Vec<String>>> {
    (0..clients)
        .map(|c| {
            let addrs: Vec<String> = servers.iter().map(|s| s.addr.clone()).collect();
            let (key, org, stop) = (key.to_owned(), org.to_owned(), Arc::clone(stop));
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                let mut i = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    let addr = &addrs[(c + i) % addrs.len()];
                    let body = format!(r#"{{"context": {}}}"#, context(&format!("u{c}-{i}"), &org));
                    let Ok(mut stream) = std::net::TcpStream::connect(addr) else { break };
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                    use std::io::{Read as _, Write as _};
                    let sent = write!(
                        stream,
                        "POST /v1/login/begin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let mut raw = String::new();
                    if sent.is_err() || stream.read_to_string(&mut raw).is_err() {
                        break;
                    }
                    if raw.starts_with("HTTP/1.1 200") {
                        let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b);
                        let v: serde_json::Value = serde_json::from_str(body).unwrap();
                        acked.push(v["challenge_id"].as_str().unwrap().to_owned());
                    } else if raw.is_empty() {
                        break;
                    } else {
                        panic!("unexpected answer: {raw}");
                    }
                    i += 1;
                }
                acked
            })
        })
        .collect()
}

fn challenge_ids(log: &[String]) -> std::collections::HashSet<String> {
    log.iter()
        .filter_map(|l| Record::parse(l).ok())
        .filter(|r| r.action == "challenge_started")
        .filter_map(|r| r.challenge_id)
        .collect()
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_record_and_the_chain_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = start_with(&data, &["--audit-rotate-kib", "8"]);
    let key = std::fs::read_to_string(data.join("api.key")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(&[&server], &key, "acme", 4, &stop);
    std::thread::sleep(Duration::from_secs(3));
    // SIGKILL while requests are in flight.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    stop.store(true, Ordering::SeqCst);
    let acked: Vec<String> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    assert!(
        acked.len() >= 20,
        "the load ran: {} logins acknowledged",
        acked.len()
    );

    let log: Vec<String> = support_segments(&data.join("audit.jsonl"));
    let recorded = challenge_ids(&log);
    let lost: Vec<&String> = acked.iter().filter(|id| !recorded.contains(*id)).collect();
    assert!(lost.is_empty(), "acknowledged but not in the log: {lost:?}");
    let (code, report) = verify(&data, &data.join("audit.jsonl"), &[]);
    assert_eq!(code, 0, "{report}");

    // A restarted server continues the same chain.
    let server = start_with(&data, &["--audit-rotate-kib", "8"]);
    begin(&server, &key, "after-restart", "acme").unwrap();
    drop(server);
    let (code, report) = verify(&data, &data.join("audit.jsonl"), &[]);
    assert_eq!(code, 0, "{report}");
    assert!(
        report.contains(&format!("acme: seq {}", log.len() + 1)),
        "{report}"
    );
}

fn support_segments(path: &Path) -> Vec<String> {
    host_harness::backends::audit::jsonl_segments(path)
        .unwrap()
        .iter()
        .flat_map(|p| lines(p))
        .collect()
}

#[test]
fn two_servers_on_one_data_folder_keep_one_chain() {
    for sink in [
        &["--audit-rotate-kib", "8"][..],
        &["--audit-sink", "sqlite"][..],
    ] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let first = start_with(&data, sink);
        let second = start_with(&data, sink);
        let key = std::fs::read_to_string(data.join("api.key")).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let clients = load(&[&first, &second], &key, "acme", 4, &stop);
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, Ordering::SeqCst);
        let acked: Vec<String> = clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect();
        drop((first, second));
        assert!(acked.len() >= 20, "the load ran: {}", acked.len());

        let (log, path) = if sink[1] == "sqlite" {
            let db = data.join("mfa-step.sqlite");
            let rows = host_harness::backends::audit::sqlite_lines(&db).unwrap();
            (rows.into_iter().map(|(_, l)| l).collect::<Vec<_>>(), db)
        } else {
            (
                support_segments(&data.join("audit.jsonl")),
                data.join("audit.jsonl"),
            )
        };
        // One record per acknowledged login, all in one chain with no fork and no gap.
        assert_eq!(log.len(), acked.len(), "{sink:?}");
        assert_eq!(challenge_ids(&log).len(), acked.len());
        let mut args = vec![];
        if sink[1] == "sqlite" {
            args.extend_from_slice(&["--audit-sink", "sqlite"]);
        }
        let (code, report) = verify(&data, &path, &args);
        assert_eq!(code, 0, "{sink:?}: {report}");
        assert!(
            report.contains(&format!("acme: seq {}", acked.len())),
            "{report}"
        );
    }
}
