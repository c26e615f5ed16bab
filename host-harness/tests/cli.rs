//! The `mfa-step` binary as a user runs it: `serve --demo` over real TCP with SQLite and the file
//! outbox, the README's walk-through, state surviving a restart, and `inspect`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mfa-step");

struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(data_dir: &Path) -> Server {
    let addr = format!("127.0.0.1:{}", free_port());
    let child = Command::new(BIN)
        .args(["serve", "--demo", "--listen", &addr, "--data-dir"])
        .arg(data_dir)
        .env_remove("MFA_STEP_API_KEY")
        .env_remove("MFA_STEP_HMAC_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mfa-step serve");
    let server = Server { child, addr };
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(&server.addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "serve did not start listening within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

/// One HTTP/1.1 request; returns the status and the body.
fn request(
    addr: &str,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let status: u16 = raw.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

fn latest_code(outbox: &Path) -> String {
    let mut files: Vec<_> = std::fs::read_dir(outbox)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    let text = std::fs::read_to_string(files.last().expect("an email in the outbox")).unwrap();
    text.lines()
        .map(str::trim)
        .find(|l| l.len() == 6 && l.bytes().all(|b| b.is_ascii_digit()))
        .expect("a code line in the email")
        .to_owned()
}

#[test]
fn serve_demo_walkthrough_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start(&data);
    let key = std::fs::read_to_string(data.join("api.key")).unwrap();
    let ctx = std::fs::read_to_string(data.join("demo/dr-demo.json")).unwrap();
    let begin = std::fs::read_to_string(data.join("demo/dr-demo-begin.json")).unwrap();

    // Without the key: 401, and nothing happens.
    let (status, body) = request(&server.addr, "POST", "/v1/login/begin", None, &begin);
    assert_eq!(status, 401, "{body}");
    assert_eq!(request(&server.addr, "GET", "/healthz", None, "").0, 200);

    let (status, decision) = request(&server.addr, "POST", "/v1/login/begin", Some(&key), &begin);
    assert_eq!(status, 200, "{decision}");
    assert_eq!(decision["outcome"], "challenge");
    let ch = decision["challenge_id"].as_str().unwrap().to_owned();
    let send = format!(r#"{{"context": {ctx}, "challenge_id": "{ch}"}}"#);
    let (status, sent) = request(
        &server.addr,
        "POST",
        "/v1/login/send-code",
        Some(&key),
        &send,
    );
    assert_eq!(status, 200, "{sent}");
    let code = latest_code(&data.join("outbox"));

    // Restart the server: the challenge and its code live in SQLite, not in the process.
    drop(server);
    let server = start(&data);
    let verify = format!(r#"{{"context": {ctx}, "challenge_id": "{ch}", "code": "{code}"}}"#);
    let (status, ok) = request(
        &server.addr,
        "POST",
        "/v1/login/verify",
        Some(&key),
        &verify,
    );
    assert_eq!(status, 200, "{ok}");
    assert_eq!(ok["amr"], serde_json::json!(["otp", "mfa"]));
    let (status, again) = request(
        &server.addr,
        "POST",
        "/v1/login/verify",
        Some(&key),
        &verify,
    );
    assert_eq!(status, 403, "{again}");
    assert_eq!(again["error"]["kind"], "rejected");

    // The audit trail recorded the flow, and never the code.
    let audit = std::fs::read_to_string(data.join("audit.jsonl")).unwrap();
    let actions: Vec<String> = audit
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["action"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        actions,
        [
            "challenge_started",
            "code_sent",
            "code_verified",
            "code_rejected"
        ]
    );
    assert!(!audit.contains(&code));
    // The key files are private to the user.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(data.join("hmac.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "hmac.key must not be readable by others");
    }
}

#[test]
fn inspect_lists_only_the_package_and_wasi() {
    let out = Command::new(BIN)
        .arg("inspect")
        .output()
        .expect("run mfa-step inspect");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let imports: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("mfa-step:") || l.starts_with("wasi:"))
        .collect();
    assert!(imports.contains(&"mfa-step:plugin/store@0.1.0"), "{text}");
    assert!(
        imports.contains(&"mfa-step:plugin/login-step@0.1.0"),
        "{text}"
    );
    assert!(
        imports.contains(&"wasi:http/incoming-handler@0.2.12"),
        "{text}"
    );
    // The plugin world has no HTTP at all.
    let plugin = text.split("world http-app").next().unwrap();
    assert!(!plugin.contains("wasi:http"), "{plugin}");
    assert!(!text.contains("FOREIGN"), "{text}");
}

#[test]
fn preview_email_writes_the_branded_email_to_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out_dir = dir.path().join("out");
    let out = Command::new(BIN)
        .args([
            "preview-email",
            "--org",
            "demo-clinic",
            "--lang",
            "es",
            "--time-zone",
            "America/Chicago",
            "--data-dir",
        ])
        .arg(&data)
        .arg("--out")
        .arg(&out_dir)
        .env_remove("MFA_STEP_API_KEY")
        .env_remove("MFA_STEP_HMAC_KEY")
        .output()
        .expect("run mfa-step preview-email");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(out_dir.join("demo-clinic-es.txt")).unwrap();
    assert!(
        text.starts_with("Subject: Tu código de verificación de demo-clinic"),
        "{text}"
    );
    assert!(
        text.contains("(America/Chicago)") && text.contains("\n    123456\n"),
        "{text}"
    );
    let html = std::fs::read_to_string(out_dir.join("demo-clinic-es.html")).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>") && html.contains("lang=\"es\""));
    // The sample code never lands in the audit trail.
    let audit = std::fs::read_to_string(data.join("audit.jsonl")).unwrap_or_default();
    assert!(!audit.contains("123456"));
}
