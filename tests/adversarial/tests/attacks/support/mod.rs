//! What the cases share: finding the release binaries, starting `adversary-serve`, HTTP/1.1 over
//! real sockets, the control API, and reading what the server wrote (the audit table and the store's
//! keys in its SQLite file) the way an operator would, from outside the process.
//!
//! `wire` speaks HTTP over the sockets; `idp` is what an identity provider sends and the flows
//! built on it.

mod idp;
mod wire;

pub use idp::*;
pub use wire::*;

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, mpsc};
use std::time::Duration;

use serde_json::Value;

/// How long any single wait may take before a case fails as hung.
pub const HANG: Duration = Duration::from_secs(60);
/// The org most cases use.
pub const ORG: &str = "acme-health";
/// The hosted prompt's settings `adversary-serve` runs with (the key is the IdP's and ours).
pub const PROMPT_KEY: &str = "a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0";
pub const PROMPT_CLIENT_ID: &str = "test-idp";
pub const PROMPT_RETURN: &str = "https://idp.example/return";
/// The test clock's start when a case does not choose one (a Tuesday in November 2026).
pub const T0: i64 = 1_795_000_000;

/// One case at a time: each prints figures that should hold only its own load.
pub fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------------
// The binaries

/// `target/release/<name>`: `$CARGO_TARGET_DIR` if set, else the workspace's `target/`. Fails,
/// never skips, when it is missing: the suite builds nothing itself.
pub fn release_bin(name: &str) -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace.join(dir)
            }
        }
        _ => workspace.join("target"),
    };
    let path = target.join("release").join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --release --locked -p mfa-step-adversarial -p host-harness` first",
        path.display()
    );
    path
}

/// A folder removed when dropped (no tempfile crate: its dependencies would unify features
/// differently from the release build and rebuild the host).
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(what: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "mfa-step-adversarial-{}-{what}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `f` over `n` threads released together by a barrier; their results in order.
pub fn together<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let barrier = std::sync::Barrier::new(n);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (barrier, f) = (&barrier, &f);
                std::thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn_scoped(scope, move || {
                        barrier.wait();
                        f(i)
                    })
                    .unwrap()
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// The flood holds hundreds of sockets here and as many in the server.
pub fn raise_fd_limit(at_least: u64) {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap();
    assert!(limit >= at_least, "open-file limit {limit} < {at_least}");
}

// ---------------------------------------------------------------------------------------------
// adversary-serve

/// `adversary-serve` on free ports over a fresh data folder; killed when dropped.
pub struct Adversary {
    child: Child,
    /// Where the REST API and the hosted pages answer.
    pub addr: String,
    /// Where the control API answers.
    pub control: String,
    /// The API key.
    pub key: String,
    pub data: PathBuf,
    log: PathBuf,
    /// Keys the sweeps after each clock move forgot.
    swept: std::sync::atomic::AtomicU64,
    _dir: TempDir,
}

impl Drop for Adversary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Adversary {
    pub fn start(what: &str) -> Self {
        Self::start_at(what, T0)
    }

    /// Starts it with the test clock at `clock`; returns once both ports listen.
    pub fn start_at(what: &str, clock: i64) -> Self {
        let dir = TempDir::new(what);
        let data = dir.path().join("data");
        let log = dir.path().join("adversary-serve.log");
        let mut command = Command::new(release_bin("adversary-serve"));
        command
            .arg("--data-dir")
            .arg(&data)
            .args(["--clock-start", &clock.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy().into_owned();
            if name.starts_with("MFA_STEP_") && name != "MFA_STEP_COMPILE_CACHE" {
                command.env_remove(name);
            }
        }
        command
            .env("MFA_STEP_PROMPT_KEY", PROMPT_KEY)
            .env("MFA_STEP_PROMPT_CLIENT_ID", PROMPT_CLIENT_ID)
            .env("MFA_STEP_PROMPT_RETURN_URLS", PROMPT_RETURN)
            .env_remove("RUST_LOG");
        let mut child = command.spawn().expect("start adversary-serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let Ok(first) = rx.recv_timeout(HANG) else {
            let _ = child.kill();
            panic!(
                "adversary-serve did not start; its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        let ready: Value = serde_json::from_str(&first).unwrap();
        let key = std::fs::read_to_string(data.join("api.key"))
            .unwrap()
            .trim()
            .to_owned();
        Self {
            child,
            addr: ready["serve"].as_str().unwrap().to_owned(),
            control: ready["control"].as_str().unwrap().to_owned(),
            key,
            data,
            log,
            swept: std::sync::atomic::AtomicU64::new(0),
            _dir: dir,
        }
    }

    /// The server's log so far (for a failure message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `POST path` with the API key; connection failures are errors.
    pub fn try_post(&self, path: &str, body: &Value) -> Result<Reply, String> {
        let auth = format!("Bearer {}", self.key);
        http(
            None,
            &self.addr,
            "POST",
            path,
            &[
                ("Authorization", auth.as_str()),
                ("Content-Type", "application/json"),
            ],
            &body.to_string(),
        )
    }

    /// `POST path` with the API key.
    pub fn post(&self, path: &str, body: &Value) -> Reply {
        self.try_post(path, body)
            .unwrap_or_else(|e| panic!("{path}: {e}\nserver log:\n{}", self.log()))
    }

    /// A control call; panics unless it answers 200.
    pub fn control(&self, method: &str, path_and_query: &str) -> Value {
        let reply = http(None, &self.control, method, path_and_query, &[], "")
            .unwrap_or_else(|e| panic!("control {path_and_query}: {e}"));
        assert_eq!(
            reply.status, 200,
            "control {path_and_query}: {}",
            reply.text
        );
        reply.json
    }

    pub fn now(&self) -> i64 {
        self.control("GET", "/__adversary/clock")["now"]
            .as_i64()
            .unwrap()
    }

    /// Moves the test clock forward (the server then forgets what expired); the new time.
    pub fn advance(&self, seconds: i64) -> i64 {
        self.moved(self.control(
            "POST",
            &format!("/__adversary/clock/advance?seconds={seconds}"),
        ))
    }

    /// Sets the test clock (never back; the server then forgets what expired); the new time.
    pub fn set_clock(&self, to: i64) -> i64 {
        self.moved(self.control("POST", &format!("/__adversary/clock/set?to={to}")))
    }

    fn moved(&self, answer: Value) -> i64 {
        self.swept
            .fetch_add(answer["swept"].as_u64().unwrap(), Ordering::SeqCst);
        answer["now"].as_i64().unwrap()
    }

    /// Keys forgotten by the sweeps so far.
    pub fn swept(&self) -> u64 {
        self.swept.load(Ordering::SeqCst)
    }

    pub fn garble(&self, prefix: &str) {
        self.control("POST", &format!("/__adversary/garble?prefix={prefix}"));
    }

    pub fn clear_garbling(&self) {
        self.control("POST", "/__adversary/garble/clear");
    }

    pub fn pause(&self, op: &str, prefix: &str) {
        self.control(
            "POST",
            &format!("/__adversary/pause?op={op}&prefix={prefix}"),
        );
    }

    /// The key a paused call holds, waiting up to `wait`.
    pub fn held(&self, wait: Duration) -> Option<String> {
        self.control(
            "GET",
            &format!("/__adversary/pause/held?wait_ms={}", wait.as_millis()),
        )["held"]
            .as_str()
            .map(str::to_owned)
    }

    pub fn release(&self) -> bool {
        self.control("POST", "/__adversary/pause/release")["released"]
            .as_bool()
            .unwrap()
    }

    pub fn faults(&self, switches: &str) {
        self.control("POST", &format!("/__adversary/faults?{switches}"));
    }

    pub fn clear_faults(&self) {
        self.control("POST", "/__adversary/faults/clear");
    }

    /// The emails to `to`, oldest first: `(test clock time, text)`.
    pub fn mail(&self, to: &str) -> Vec<(i64, String)> {
        self.control("GET", &format!("/__adversary/mail?to={to}"))["mail"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["at"].as_i64().unwrap(),
                    m["text"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// The code in the latest email to `to`.
    pub fn code(&self, to: &str) -> String {
        let mail = self.mail(to);
        let (_, text) = mail.last().unwrap_or_else(|| panic!("no email to {to}"));
        text.lines()
            .map(str::trim)
            .find(|l| l.len() == 6 && l.bytes().all(|b| b.is_ascii_digit()))
            .unwrap_or_else(|| panic!("no code in the email to {to}"))
            .to_owned()
    }

    // -----------------------------------------------------------------------------------------
    // What the server wrote, read from its SQLite file

    fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open_with_flags(
            self.data.join("mfa-step.sqlite"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap()
    }

    /// Every audit record, in chain order per organization.
    pub fn audit(&self) -> Vec<Rec> {
        let db = self.db();
        let mut stmt = db
            .prepare("SELECT org, at, action, line FROM audit_log ORDER BY org, seq")
            .unwrap();
        stmt.query_map([], |row| {
            let line: String = row.get(3)?;
            let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
            Ok(Rec {
                org: row.get(0)?,
                at: row.get(1)?,
                action: row.get(2)?,
                reason: s("reason"),
                subject: s("subject"),
                challenge: s("challenge_id"),
            })
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    }

    /// The audit records about `subject` in `org`.
    pub fn audit_of(&self, org: &str, subject: &str) -> Vec<Rec> {
        self.audit()
            .into_iter()
            .filter(|r| r.org == org && r.subject == subject)
            .collect()
    }

    /// Every key in the store: values and counters.
    pub fn keys(&self) -> Vec<String> {
        let db = self.db();
        let mut keys = Vec::new();
        for table in ["kv", "counters"] {
            let mut stmt = db.prepare(&format!("SELECT key FROM {table}")).unwrap();
            keys.extend(
                stmt.query_map([], |row| row.get::<_, String>(0))
                    .unwrap()
                    .map(Result::unwrap),
            );
        }
        keys
    }

    /// `mfa-step audit verify` (the shipped binary) over what this server wrote: the chain, the
    /// seals and the store's counts. Its report.
    pub fn verify_log(&self) -> String {
        let out = Command::new(release_bin("mfa-step"))
            .args(["audit", "verify", "--quiet", "--audit-sink", "sqlite"])
            .arg("--data-dir")
            .arg(&self.data)
            .env_remove("MFA_STEP_HMAC_KEY")
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "mfa-step audit verify: {report}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        report
    }
}

/// One audit record as the cases read it.
#[derive(Debug, Clone)]
pub struct Rec {
    pub org: String,
    pub at: i64,
    pub action: String,
    pub reason: String,
    pub subject: String,
    pub challenge: String,
}

impl Rec {
    /// A code accepted (a login, or an address confirmed).
    pub fn is_success(&self) -> bool {
        ["code_verified", "enrolled", "email_changed"].contains(&self.action.as_str())
    }

    /// A guess looked at against a live code and found wrong.
    pub fn compared_wrong(&self) -> bool {
        self.action == "code_rejected" && self.reason == "wrong-code"
    }

    /// A guess that counted as a wrong code (every rejection but the lock's own refusal).
    pub fn counted_wrong(&self) -> bool {
        (self.action == "code_rejected" || self.action == "code_expired")
            && self.reason != "user:locked"
    }
}

/// How many records of each action.
pub fn tally(recs: &[Rec]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in recs {
        *out.entry(r.action.clone()).or_default() += 1;
    }
    out
}

/// How many of each outcome.
pub fn outcomes(replies: &[Result<Reply, String>]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in replies {
        let key = match r {
            Ok(reply) => reply.outcome(),
            Err(e) => format!("failed: {e}"),
        };
        *out.entry(key).or_default() += 1;
    }
    out
}
