//! The `mfa-step` binary as a user runs it: `serve --demo` over real TCP with SQLite and the file
//! outbox, the README's walk-through, state surviving a restart, and `inspect`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::path::Path;
use std::process::Command;

mod support;

use support::{BIN, request, start};

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
            // The demo user's first code confirms the address.
            "enrolled",
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
fn inspect_checks_each_component_against_its_world() {
    let out = Command::new(BIN)
        .arg("inspect")
        .output()
        .expect("run mfa-step inspect");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let imports: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("mfa-step:") || l.starts_with("wasi:"))
        .collect();
    assert!(imports.contains(&"mfa-step:plugin/store@0.2.0"), "{text}");
    assert!(
        imports.contains(&"mfa-step:plugin/login-step@0.2.0"),
        "{text}"
    );
    assert!(
        imports.contains(&"wasi:http/incoming-handler@0.2.12"),
        "{text}"
    );
    // The plugin world has no HTTP at all, and no WASI but its clock and randomness (the wasip2
    // build imported wasi:cli and wasi:io too).
    let plugin = text.split("world http-app").next().unwrap();
    assert!(!plugin.contains("wasi:http"), "{plugin}");
    assert!(!text.contains("wasi:cli"), "{text}");
    assert!(!text.contains("@0.2.6"), "{text}");
    assert_eq!(
        text.matches("the imports are the world's").count(),
        text.matches("\nworld ").count() + 1,
        "{text}"
    );
    assert!(!text.contains("NOT"), "{text}");
}

/// The plugin's size budget: identity providers load it per tenant, and it ships in the npm
/// package. See BENCHMARKS.md ("Component size") for what takes the room and how it was cut.
#[test]
fn the_plugin_component_is_at_most_400_kib() {
    let size = host_harness::PLUGIN_WASM.len();
    assert!(
        size <= 400 * 1024,
        "the plugin component is {size} bytes, over its 409,600-byte budget"
    );
}

#[test]
fn component_writes_the_embedded_bytes() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [
        ("plugin", host_harness::PLUGIN_WASM),
        ("http-app", host_harness::HTTP_WASM),
    ] {
        let file = dir.path().join(format!("{name}.wasm"));
        let out = Command::new(BIN)
            .args(["component", name, "--out"])
            .arg(&file)
            .output()
            .expect("run mfa-step component");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(std::fs::read(&file).unwrap() == bytes, "{name}");
    }
    let out = Command::new(BIN)
        .args(["component", "nonesuch", "--out"])
        .arg(dir.path().join("x.wasm"))
        .output()
        .unwrap();
    assert!(!out.status.success());
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

/// The test clock shifts the component's time (and the sweeper's): a real deployment must not be
/// able to start on it by mistake.
#[test]
fn serve_refuses_the_test_clock_without_demo() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--test-clock-offset-file",
        ])
        .arg(dir.path().join("offset"))
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("it needs --demo"), "{stderr}");
}
