//! The parts of a Spin suite: the build, `spin up` on a free port with its own state, a mail API
//! stand-in that keeps what it is sent, HTTP/1.1 over real sockets from a chosen loopback address,
//! the IdP's side of the hosted prompt, and `mfa-step audit verify --spin-kv` on what Spin stored.
//!
//! Nothing here skips: a missing `spin` binary, a failed build or a missing `mfa-step` binary
//! fails the test that needed it, with the command that fixes it.

pub mod http;
pub mod idp;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub use http::{Reply, request};

/// The repository's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Spin CLI: `SPIN_BIN`, else `../shared/tools/spin` beside the clone. Missing fails.
pub fn spin_bin() -> PathBuf {
    let path = std::env::var_os("SPIN_BIN")
        .map_or_else(|| root().join("../shared/tools/spin"), PathBuf::from);
    assert!(
        path.is_file(),
        "no Spin CLI at {} (set SPIN_BIN to Spin 4.0.x's `spin`): the Spin suite fails without it",
        path.display()
    );
    path
}

/// The `mfa-step` CLI that verifies the audit stream: `MFA_STEP_BIN`, else `target/debug/mfa-step`.
pub fn mfa_step_bin() -> PathBuf {
    let path = std::env::var_os("MFA_STEP_BIN")
        .map_or_else(|| root().join("target/debug/mfa-step"), PathBuf::from);
    assert!(
        path.is_file(),
        "no mfa-step CLI at {} (run `cargo build -p host-harness`, or set MFA_STEP_BIN)",
        path.display()
    );
    path
}

/// Builds both components once per test binary, as `spin build` does (`bash spin/build.sh`).
pub fn build() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    run_script_once(&BUILT, "spin/build.sh");
}

/// Runs `bash <script>` from the repository root the first time `cell` is asked, and panics with
/// its output, then and every later time, if it failed.
pub fn run_script_once(cell: &'static OnceLock<Result<(), String>>, script: &str) {
    let built = cell.get_or_init(|| {
        let out = Command::new("bash")
            .arg(script)
            .current_dir(root())
            .output()
            .map_err(|e| format!("run bash {script}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "bash {script} failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    if let Err(e) = built {
        panic!("{e}");
    }
}

/// `spin up --from <manifest>` on 127.0.0.1:`port` with its state in `state`, on Spin's SQLite
/// store or, with `redis`, on that Redis (a runtime config written into `dir`). The caller adds
/// variables, then starts it with [`spawn_in_group`].
pub fn spin_up(
    manifest: &str,
    port: u16,
    state: &Path,
    dir: &Path,
    redis: Option<&str>,
) -> Command {
    let mut command = Command::new(spin_bin());
    command
        .current_dir(root())
        .args(["up", "--from", manifest, "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--state-dir")
        .arg(state);
    if let Some(url) = redis {
        let config = dir.join("runtime-config.toml");
        std::fs::write(
            &config,
            format!("[key_value_store.default]\ntype = \"redis\"\nurl = \"{url}\"\n"),
        )
        .unwrap();
        command.arg("--runtime-config-file").arg(config);
    }
    command
}

/// Starts `command` with its output in `log`, in a process group of its own: `spin up` runs the
/// app in a child (`spin trigger http`), and [`kill_group`] must reach both.
pub fn spawn_in_group(mut command: Command, log: &Path) -> Child {
    let file = std::fs::File::create(log).unwrap();
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    command
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file);
    command
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", spin_bin().display()))
}

/// Kills `child` and its process group now, with SIGKILL, as a crash would.
pub fn kill_group(child: &mut Child) {
    let group = format!("-{}", child.id());
    let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
    let _ = child.kill();
    let _ = child.wait();
}

/// A port nobody listens on now (the OS's pick, released at once). Ports handed out in this
/// process are never handed out again.
pub fn free_port() -> u16 {
    static HANDED: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut handed = HANDED.lock().unwrap();
        if !handed.contains(&port) {
            handed.push(port);
            return port;
        }
    }
}

/// The mail API stand-in: answers what the adapter posts like `spin/mail-sink.py` (202 with the
/// right bearer token, 401 without) and keeps every message.
pub struct MailSink {
    /// Where it listens.
    pub port: u16,
    messages: Arc<Mutex<Vec<Value>>>,
    /// While set, every message is refused with a 503 (a mail API that is down).
    pub down: Arc<std::sync::atomic::AtomicBool>,
}

/// The bearer token the sink accepts.
pub const MAIL_TOKEN: &str = "sink-token";

impl MailSink {
    /// Listens on a free loopback port, answering in a thread for as long as the process runs.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (kept, refusing) = (Arc::clone(&messages), Arc::clone(&down));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (kept, refusing) = (Arc::clone(&kept), Arc::clone(&refusing));
                std::thread::spawn(move || {
                    let _ = answer_mail(stream, &kept, &refusing);
                });
            }
        });
        Self {
            port,
            messages,
            down,
        }
    }

    /// Every message sent to `to`, oldest first.
    pub fn to(&self, to: &str) -> Vec<Value> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m["to"] == to)
            .cloned()
            .collect()
    }

    /// The code in the newest message to `to` (the line of digits alone in its text part).
    pub fn code(&self, to: &str) -> String {
        let newest = self
            .to(to)
            .pop()
            .unwrap_or_else(|| panic!("no email reached {to}"));
        code_in(newest["text"].as_str().unwrap_or_default())
            .unwrap_or_else(|| panic!("no code in the email to {to}"))
    }
}

/// The code in an email's text: a line of 6 to 9 digits.
pub fn code_in(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .find(|l| (6..=9).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_owned)
}

fn answer_mail(
    stream: TcpStream,
    kept: &Mutex<Vec<Value>>,
    down: &std::sync::atomic::AtomicBool,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut length = 0usize;
    let mut authorized = false;
    let mut first = String::new();
    reader.read_line(&mut first)?;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().unwrap_or(0),
            "authorization" => authorized = value.trim() == format!("Bearer {MAIL_TOKEN}"),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let status = if !authorized {
        "401 Unauthorized"
    } else if down.load(Ordering::SeqCst) {
        "503 Service Unavailable"
    } else {
        kept.lock()
            .unwrap()
            .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
        "202 Accepted"
    };
    let mut stream = stream;
    stream.write_all(
        format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// Where the app keeps its key-value store.
#[derive(Clone, Debug)]
pub enum Kv {
    /// Spin's default: a SQLite file in the state directory.
    Sqlite,
    /// A Redis database (a runtime config like `spin/runtime-config-redis.toml`, with this URL).
    Redis(String),
}

/// One `spin up` of the app, with its own state directory, keys and mail sink; killed on drop.
pub struct App {
    child: Mutex<Option<Child>>,
    /// Where it listens (127.0.0.1).
    pub port: u16,
    /// The bearer token of the REST API.
    pub api_key: String,
    /// The key every stored hash and the audit seals derive from (hex).
    pub hmac_key: String,
    /// The hosted prompt's key shared with the IdP (hex).
    pub prompt_key: String,
    /// Its state directory (key-value file, component logs).
    pub state: PathBuf,
    /// The store.
    pub kv: Kv,
    _dir: Arc<tempfile::TempDir>,
}

/// The IdP's client id for the hosted prompt.
pub const CLIENT_ID: &str = "test-idp";
/// Where the hosted prompt sends the browser back.
pub const RETURN_URL: &str = "https://idp.example/return";

/// How to start an app.
#[derive(Clone)]
pub struct Options {
    /// The store.
    pub kv: Kv,
    /// Keys to share with another app on the same store (`None`: fresh ones).
    pub keys: Option<(String, String, String)>,
    /// Extra variables (`name`, value).
    pub variables: Vec<(String, String)>,
    /// Environment for the `spin` process itself (e.g. a fake clock).
    pub env: Vec<(String, String)>,
}

impl Options {
    /// Spin's default SQLite store, fresh keys.
    pub fn sqlite() -> Self {
        Self {
            kv: Kv::Sqlite,
            keys: None,
            variables: Vec::new(),
            env: Vec::new(),
        }
    }

    /// A Redis store at `url`, fresh keys.
    pub fn redis(url: &str) -> Self {
        Self {
            kv: Kv::Redis(url.to_owned()),
            ..Self::sqlite()
        }
    }
}

/// `bytes` random bytes, hex.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut buf)
        .unwrap();
    hex::encode(buf)
}

impl App {
    /// Builds (once), then `spin up` with `mail` as the mail API; waits until `/healthz` answers.
    pub fn start(mail: &MailSink, options: &Options) -> Self {
        build();
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let state = dir.path().join("state");
        let (api_key, hmac_key, prompt_key) = options
            .keys
            .clone()
            .unwrap_or_else(|| (random_hex(32), random_hex(32), random_hex(32)));
        let port = free_port();
        let redis = match &options.kv {
            Kv::Redis(url) => Some(url.as_str()),
            Kv::Sqlite => None,
        };
        let mut command = spin_up("spin.toml", port, &state, dir.path(), redis);
        let variables = [
            ("HMAC_KEY", hmac_key.clone()),
            ("API_KEY", api_key.clone()),
            ("MAIL_API_ORIGIN", format!("http://127.0.0.1:{}", mail.port)),
            ("MAIL_API_PATH", "/send".to_owned()),
            ("MAIL_API_TOKEN", MAIL_TOKEN.to_owned()),
            ("PROMPT_KEY", prompt_key.clone()),
            ("PROMPT_CLIENT_ID", CLIENT_ID.to_owned()),
            ("PROMPT_RETURN_URLS", RETURN_URL.to_owned()),
        ];
        for (name, value) in variables {
            command.env(format!("SPIN_VARIABLE_{name}"), value);
        }
        for (name, value) in &options.variables {
            command.env(
                format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase()),
                value,
            );
        }
        command.envs(options.env.iter().map(|(k, v)| (k, v)));
        let child = spawn_in_group(command, &dir.path().join("spin.log"));
        let app = Self {
            child: Mutex::new(Some(child)),
            port,
            api_key,
            hmac_key,
            prompt_key,
            state,
            kv: options.kv.clone(),
            _dir: dir,
        };
        app.wait_until_up();
        app
    }

    fn wait_until_up(&self) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(120) {
            if let Ok(r) = request(None, self.port, "GET", "/healthz", &[], "")
                && r.status == 200
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "spin up did not answer /healthz within 120 s; its output:\n{}",
            self.spin_log()
        );
    }

    /// What `spin up` printed.
    pub fn spin_log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("spin.log")).unwrap_or_default()
    }

    /// What the component (and the adapter) wrote to standard error.
    pub fn component_stderr(&self) -> String {
        std::fs::read_to_string(self.state.join("logs/mfa-step_stderr.txt")).unwrap_or_default()
    }

    /// `POST` a JSON body to a REST route with the API key.
    pub fn post(&self, path: &str, body: &Value) -> Reply {
        let auth = format!("Bearer {}", self.api_key);
        request(
            None,
            self.port,
            "POST",
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            &body.to_string(),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Where `mfa-step audit verify --spin-kv` reads.
    pub fn kv_source(&self) -> String {
        match &self.kv {
            Kv::Sqlite => self.state.join("sqlite_key_value.db").display().to_string(),
            Kv::Redis(url) => url.clone(),
        }
    }

    /// `mfa-step audit verify --spin-kv <store>` with the app's key (seals checked): its exit
    /// status and output.
    pub fn audit_verify(&self) -> (bool, String) {
        let out = Command::new(mfa_step_bin())
            .args(["audit", "verify", "--quiet", "--spin-kv"])
            .arg(self.kv_source())
            .env("MFA_STEP_HMAC_KEY", &self.hmac_key)
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// Verifies the audit stream, failing the test unless it is whole; returns the report.
    pub fn assert_audit_whole(&self) -> String {
        let (ok, report) = self.audit_verify();
        assert!(ok, "mfa-step audit verify --spin-kv: {report}");
        assert!(report.contains("OK: the log is whole"), "{report}");
        assert!(report.contains("seals checked"), "{report}");
        assert!(
            report.contains("counts checked against the store"),
            "{report}"
        );
        report
    }

    /// Every audit record (its JSON) of `org`, in order, read from the store.
    pub fn audit_records(&self, org: &str) -> Vec<Value> {
        let out = Command::new(mfa_step_bin())
            .args(["audit", "export", "--org", org, "--spin-kv"])
            .arg(self.kv_source())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mfa-step audit export: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Kills `spin up` and the app's process (`spin trigger http`) now, with SIGKILL, as a crash
    /// would: the whole process group it was started in.
    pub fn kill(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            kill_group(&mut child);
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A fresh Redis database for one test, on the server at `MFA_STEP_TEST_REDIS` (`.ci/servers.sh`):
/// its URL, with the database number. Missing fails.
pub fn redis_db() -> String {
    static NEXT: AtomicU16 = AtomicU16::new(1);
    let base = std::env::var("MFA_STEP_TEST_REDIS")
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| {
        panic!(
            "MFA_STEP_TEST_REDIS is not set: start a Redis with `. .ci/servers.sh && start_servers`"
        )
    });
    let db = NEXT.fetch_add(1, Ordering::SeqCst);
    assert!(db < 16, "more Redis databases than a default server has");
    let url = format!("{}/{db}", base.trim_end_matches('/'));
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_connection().unwrap();
    redis::cmd("FLUSHDB").exec(&mut conn).unwrap();
    url
}

/// A login context for `user` of `org` (a provider, so that the platform's defaults ask for a
/// code), from one browser on one network.
pub fn ctx(org: &str, user: &str) -> Value {
    json!({
        "user_id": user,
        "org_id": org,
        "email": email(user),
        "roles": ["provider"],
        "locale": "en",
        "device": {
            "ip": "203.0.113.7",
            "traits": {
                "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0",
                "browser_family": "Firefox",
                "browser_major": 133,
                "platform": "Linux",
                "language": "en-US",
                "time_zone": "Europe/Paris",
                "screen_class": "desktop"
            }
        }
    })
}

/// Where `user`'s codes go.
pub fn email(user: &str) -> String {
    format!("{user}@clinic.example")
}

/// The organization's admin, as an actor.
pub fn admin(org: &str) -> Value {
    json!({
        "user_id": "it-admin",
        "org_id": org,
        "roles": ["org-admin"],
        "ip": "203.0.113.7",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0"
    })
}

/// A loopback address other than 127.0.0.1, outside its /16: a browser on another network.
pub const OTHER_NETWORK: Ipv4Addr = Ipv4Addr::new(127, 1, 0, 1);

/// A wall clock the test moves forward: `spin up` runs under libfaketime (Debian's `libfaketime`),
/// which reads the offset from a file at every call. Monotonic time is left alone, so Spin's own
/// timers are not disturbed. Missing libfaketime fails.
pub struct FakeClock {
    file: tempfile::NamedTempFile,
    offset: Mutex<u64>,
}

/// Where Debian's libfaketime is.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

impl FakeClock {
    /// A clock at the real time (offset 0).
    pub fn new() -> Self {
        assert!(
            Path::new(LIBFAKETIME).is_file(),
            "no {LIBFAKETIME}: install Debian's libfaketime (apt-get install libfaketime)"
        );
        let clock = Self {
            file: tempfile::NamedTempFile::new().unwrap(),
            offset: Mutex::new(0),
        };
        clock.advance(0);
        clock
    }

    /// The environment that puts a process on this clock.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("LD_PRELOAD", LIBFAKETIME.to_owned()),
            (
                "FAKETIME_TIMESTAMP_FILE",
                self.file.path().display().to_string(),
            ),
            ("FAKETIME_NO_CACHE", "1".to_owned()),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_owned()),
            ("FAKETIME_DONT_RESET", "1".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Moves the clock `seconds` forward.
    pub fn advance(&self, seconds: u64) {
        let mut offset = self.offset.lock().unwrap();
        *offset += seconds;
        std::fs::write(self.file.path(), format!("+{}\n", *offset)).unwrap();
    }
}

/// Rewrites one field of the stored audit record `audit:<org>:<seq>` in Spin's SQLite store, as
/// someone with the file could.
pub fn tamper_sqlite_record(app: &App, org: &str, seq: u64) {
    let conn = rusqlite::Connection::open(app.state.join("sqlite_key_value.db")).unwrap();
    let key = format!("audit:{org}:{seq:020}");
    let line: Vec<u8> = conn
        .query_row(
            "SELECT value FROM spin_key_value WHERE store = 'default' AND key = ?1",
            [&key],
            |row| row.get(0),
        )
        .unwrap();
    let mut record: Value = serde_json::from_slice(&line).unwrap();
    record["outcome"] = json!("success-edited");
    conn.execute(
        "UPDATE spin_key_value SET value = ?1 WHERE store = 'default' AND key = ?2",
        rusqlite::params![serde_json::to_vec(&record).unwrap(), key],
    )
    .unwrap();
}
