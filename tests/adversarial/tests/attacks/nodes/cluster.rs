//! The scaffolding of the `nodes` cases: fresh state on the test servers, [`Node`] (one
//! `mfa-step serve` process: start, kill, call, read its outbox) and [`Trail`] (a shared audit
//! trail read back and checked).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use mfa_step_core::HmacKey;
use mfa_step_core::audit::chain::{Record, SealKey};
use mfa_step_core::audit::verify::Verifier;
use serde_json::{Value, json};

use crate::support::*;

use super::REDIS_DB;

// ---------------------------------------------------------------------------------------------
// Fresh state

pub(super) fn env_url(name: &str, what: &str) -> String {
    match std::env::var(name) {
        Ok(url) if !url.trim().is_empty() => url.trim().to_owned(),
        _ => panic!(
            "{name} is not set: this case needs a {what} server (CI starts one with \
             `source .ci/servers.sh && start_servers`, which exports it)"
        ),
    }
}

pub(super) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .unwrap();
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// `url` with its path (the database) replaced by `/{path}`, its query kept.
pub(super) fn with_path(url: &str, path: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").expect("a URL") + 3;
    let authority_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{path}", &base[..authority_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// A database of its own on the test Postgres server, dropped afterwards (kept, and named, when
/// the case failed).
pub(super) struct FreshPostgres {
    pub(super) admin: String,
    pub(super) name: String,
    pub(super) url: String,
}

impl FreshPostgres {
    pub(super) fn new() -> Self {
        let admin = env_url("MFA_STEP_TEST_POSTGRES", "PostgreSQL");
        let name = format!("nodes_{}", random_hex(8));
        pg(&admin)
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name} on MFA_STEP_TEST_POSTGRES: {e}"));
        let url = with_path(&admin, &name);
        Self { admin, name, url }
    }

    /// Every audit row, in chain order per organization.
    pub(super) fn audit_rows(&self) -> Vec<AuditRow> {
        pg(&self.url)
            .query(
                "SELECT org, seq::bigint, prev::text, hash::text, line::text \
                 FROM mfa_step_audit_log ORDER BY org, seq",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| AuditRow {
                org: r.get(0),
                seq: r.get(1),
                prev: r.get(2),
                hash: r.get(3),
                line: r.get(4),
            })
            .collect()
    }
}

impl Drop for FreshPostgres {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("[nodes] kept database {} for a look", self.name);
            return;
        }
        if let Ok(mut c) = postgres::Client::connect(&self.admin, postgres::NoTls) {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

pub(super) fn pg(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls)
        .unwrap_or_else(|e| panic!("connect to the test Postgres server: {e}"))
}

/// Redis database [`REDIS_DB`] of the test server, flushed: its URL.
pub(super) fn fresh_redis() -> String {
    let url = env_url("MFA_STEP_TEST_REDIS", "Redis");
    let rest = url
        .strip_prefix("redis://")
        .unwrap_or_else(|| panic!("MFA_STEP_TEST_REDIS must be a redis:// URL"));
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let (password, host) = match authority.rsplit_once('@') {
        Some((user_info, host)) => (
            Some(user_info.rsplit(':').next().unwrap_or(user_info).to_owned()),
            host,
        ),
        None => (None, authority),
    };
    let mut conn = TcpStream::connect(host).unwrap_or_else(|e| panic!("connect to Redis: {e}"));
    conn.set_read_timeout(Some(HANG)).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let db = REDIS_DB.to_string();
    let mut commands = vec![vec!["SELECT", db.as_str()], vec!["FLUSHDB"]];
    if let Some(p) = &password {
        commands.insert(0, vec!["AUTH", p.as_str()]);
    }
    for args in commands {
        let mut msg = format!("*{}\r\n", args.len());
        for a in &args {
            msg.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        conn.write_all(msg.as_bytes()).unwrap();
        let mut reply = String::new();
        reader.read_line(&mut reply).unwrap();
        assert_eq!(reply.trim_end(), "+OK", "Redis {}: {reply}", args[0]);
    }
    with_path(&url, &db)
}

// ---------------------------------------------------------------------------------------------
// Nodes

/// The secrets every node of a case shares.
pub(super) struct Keys {
    pub(super) hmac: String,
    pub(super) api: String,
}

impl Keys {
    pub(super) fn fresh() -> Self {
        Self {
            hmac: random_hex(32),
            api: random_hex(32),
        }
    }

    pub(super) fn seal(&self) -> SealKey {
        SealKey::derive(&HmacKey::from_hex(&self.hmac).unwrap())
    }
}

/// One `mfa-step serve` process, on a free port over `<dir>/<name>`; killed when dropped.
pub(super) struct Node {
    pub(super) name: String,
    /// Behind a lock so that a case can kill a node other threads are calling.
    pub(super) child: Mutex<Child>,
    pub(super) addr: String,
    pub(super) data: PathBuf,
    pub(super) log: PathBuf,
    pub(super) api_key: String,
}

impl Node {
    /// Starts it (again, over the same data folder when `dir` and `name` are the same) with
    /// `args` after `serve` and `env` on top of the keys; returns once `/readyz` answers 200.
    pub(super) fn start(
        name: &str,
        dir: &Path,
        keys: &Keys,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let data = dir.join(name);
        let log = dir.join(format!("{name}.log"));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut command = Command::new(release_bin("mfa-step"));
        command
            .args([
                "serve",
                "--log-format",
                "json",
                "--listen",
                &addr,
                "--data-dir",
            ])
            .arg(&data)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        for (var, _) in std::env::vars_os() {
            let var = var.to_string_lossy().into_owned();
            if var.starts_with("MFA_STEP_") && var != "MFA_STEP_COMPILE_CACHE" {
                command.env_remove(var);
            }
        }
        command
            .env("MFA_STEP_HMAC_KEY", &keys.hmac)
            .env("MFA_STEP_API_KEY", &keys.api)
            .envs(env.iter().copied())
            .env_remove("RUST_LOG");
        let node = Self {
            name: name.to_owned(),
            child: Mutex::new(command.spawn().expect("start mfa-step serve")),
            addr,
            data,
            log,
            api_key: keys.api.clone(),
        };
        let deadline = Instant::now() + HANG;
        loop {
            if let Ok(r) = http(None, &node.addr, "GET", "/readyz", &[], "")
                && r.status == 200
            {
                return node;
            }
            let exited = node.child.lock().unwrap().try_wait();
            if let Ok(Some(status)) = exited {
                panic!("node {name} exited ({status}); its log:\n{}", node.log());
            }
            if Instant::now() > deadline {
                panic!("node {name} is not ready; its log:\n{}", node.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(super) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL (`Child::kill` on Unix): no shutdown, no flush.
    pub(super) fn kill(&self) {
        let mut child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = child.kill();
        let _ = child.wait();
    }

    pub(super) fn try_post(&self, path: &str, body: &Value) -> Result<Reply, String> {
        let auth = format!("Bearer {}", self.api_key);
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

    pub(super) fn post(&self, path: &str, body: &Value) -> Reply {
        self.try_post(path, body)
            .unwrap_or_else(|e| panic!("node {}: {path}: {e}\nits log:\n{}", self.name, self.log()))
    }

    /// `begin` then `send-code`, expecting a challenge and an email: the challenge id.
    pub(super) fn challenge_sent(&self, c: &Value, purpose: &str) -> String {
        let r = self.post("/v1/login/begin", &json!({ "context": c }));
        assert_eq!(
            (r.json["outcome"].as_str(), r.json["purpose"].as_str()),
            (Some("challenge"), Some(purpose)),
            "begin on node {}: {}",
            self.name,
            r.text
        );
        let id = r.json["challenge_id"].as_str().unwrap().to_owned();
        let sent = self.post(
            "/v1/login/send-code",
            &json!({ "context": c, "challenge_id": id }),
        );
        assert_eq!(sent.status, 200, "send-code: {}", sent.text);
        id
    }

    /// The outbox's `.txt` files to `to`, oldest first (`NNNNNN-<to>.txt`).
    pub(super) fn mail(&self, to: &str) -> Vec<PathBuf> {
        let suffix = format!("-{to}.txt");
        let Ok(dir) = std::fs::read_dir(self.data.join("outbox")) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = dir
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(&suffix) && !n.starts_with('.'))
            })
            .collect();
        files.sort();
        files
    }

    /// The code in the latest email to `to`: the body's line of 6 digits.
    pub(super) fn code(&self, to: &str) -> String {
        let mail = self.mail(to);
        let last = mail
            .last()
            .unwrap_or_else(|| panic!("no email to {to} in node {}'s outbox", self.name));
        std::fs::read_to_string(last)
            .unwrap()
            .lines()
            .map(str::trim)
            .find(|l| l.len() == 6 && l.bytes().all(|b| b.is_ascii_digit()))
            .unwrap_or_else(|| panic!("no code in {}", last.display()))
            .to_owned()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            // The folder goes with the case: what the node logged goes into the failure.
            let log = self.log();
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| !l.contains(r#""level":"INFO""#))
                .collect();
            eprintln!(
                "[nodes] node {}'s log, but INFO lines (last 40 of {}):\n{}",
                self.name,
                lines.len(),
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
    }
}

/// Two nodes over one shared store: `args` (and `env`) name it.
pub(super) fn two_nodes(
    dir: &TempDir,
    keys: &Keys,
    args: &[&str],
    env: &[(&str, &str)],
) -> [Node; 2] {
    ["a", "b"].map(|name| Node::start(name, dir.path(), keys, args, env))
}

/// How many of each answer: `200 ok`, `403 rejected`, `429 throttled`, `503 unavailable`, or
/// the failure.
pub(super) fn statuses<'a>(
    replies: impl IntoIterator<Item = &'a Result<Reply, String>>,
) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in replies {
        let key = match r {
            Ok(reply) => format!("{} {}", reply.status, reply.outcome()),
            Err(e) => format!("failed: {e}"),
        };
        *out.entry(key).or_default() += 1;
    }
    out
}

pub(super) fn count(mix: &BTreeMap<String, usize>, prefixes: &[&str]) -> usize {
    mix.iter()
        .filter(|(k, _)| prefixes.iter().any(|p| k.starts_with(p)))
        .map(|(_, n)| n)
        .sum()
}

// ---------------------------------------------------------------------------------------------
// The trail

pub(super) struct AuditRow {
    pub(super) org: String,
    pub(super) seq: i64,
    pub(super) prev: String,
    pub(super) hash: String,
    pub(super) line: String,
}

/// A trail read back: its records, and every way it is not one unbroken, sealed chain per
/// organization.
pub(super) struct Trail {
    pub(super) records: Vec<Record>,
    pub(super) per_org: BTreeMap<String, usize>,
    pub(super) broken: Vec<String>,
}

impl Trail {
    /// Lines in stored order (organizations may interleave), checked with the core's verifier
    /// and the case's seal key.
    pub(super) fn of_lines<'a>(lines: impl IntoIterator<Item = &'a str>, keys: &Keys) -> Self {
        let mut verifier = Verifier::new(Some(keys.seal()));
        let mut trail = Self {
            records: Vec::new(),
            per_org: BTreeMap::new(),
            broken: Vec::new(),
        };
        for line in lines {
            match verifier.check(line) {
                Ok(record) => {
                    *trail.per_org.entry(record.org.clone()).or_default() += 1;
                    trail.records.push(record);
                }
                Err(b) => trail.broken.push(format!("verifier: {b}")),
            }
        }
        trail
    }

    /// Postgres rows in (org, seq) order: the lines verified, and the columns walked on their
    /// own (seq 1..n without gap or repeat, each `prev` the row before's `hash`) and compared
    /// with the line they index.
    pub(super) fn of_rows(rows: &[AuditRow], keys: &Keys) -> Self {
        let mut trail = Self::of_lines(rows.iter().map(|r| r.line.as_str()), keys);
        let mut before: Option<&AuditRow> = None;
        for row in rows {
            let same_org = before.filter(|b| b.org == row.org);
            let expected = same_org.map_or(1, |b| b.seq + 1);
            if row.seq != expected {
                trail.broken.push(format!(
                    "org {}: seq {} where {expected} was next",
                    row.org, row.seq
                ));
            }
            if let Some(b) = same_org
                && row.prev != b.hash
            {
                trail.broken.push(format!(
                    "org {}, seq {}: prev is not seq {}'s hash (a fork)",
                    row.org, row.seq, b.seq
                ));
            }
            match Record::parse(&row.line) {
                Ok(r)
                    if r.org == row.org
                        && i64::try_from(r.seq) == Ok(row.seq)
                        && r.hash == row.hash
                        && r.prev == row.prev => {}
                _ => trail.broken.push(format!(
                    "org {}, seq {}: the columns are not the line's",
                    row.org, row.seq
                )),
            }
            before = Some(row);
        }
        trail
    }

    pub(super) fn of_user<'a>(
        &'a self,
        org: &'a str,
        user: &'a str,
    ) -> impl Iterator<Item = &'a Record> {
        self.records
            .iter()
            .filter(move |r| r.org == org && r.subject == user)
    }

    /// `(org, challenge id)` of every `challenge_started` record.
    pub(super) fn started(&self) -> BTreeSet<(String, String)> {
        self.records
            .iter()
            .filter(|r| r.action == "challenge_started")
            .filter_map(|r| Some((r.org.clone(), r.challenge_id.clone()?)))
            .collect()
    }

    pub(super) fn assert_whole(&self, case: &str) {
        assert!(
            self.broken.is_empty(),
            "[{case}] the trail is not one chain per organization ({} problems): {:#?}",
            self.broken.len(),
            &self.broken[..self.broken.len().min(20)]
        );
    }
}

/// `mfa-step audit verify` (the shipped binary) with `args`, seals checked with the case's key:
/// whether it found the log whole, and its report (in short when it did).
pub(super) fn audit_verify(keys: &Keys, args: &[&std::ffi::OsStr]) -> (bool, String) {
    let out = Command::new(release_bin("mfa-step"))
        .args(["audit", "verify", "--quiet"])
        .args(args)
        .env_remove("MFA_STEP_AUDIT_URL")
        .env("MFA_STEP_HMAC_KEY", &keys.hmac)
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = report.lines().map(str::trim).collect();
    match (out.status.success(), lines.as_slice()) {
        // Whole: its first line (what was checked) and its verdict, without every stream's head.
        (true, [first, .., last]) => (true, format!("{first}; {last}")),
        (whole, _) => (whole, lines.join("; ")),
    }
}

impl FreshPostgres {
    /// [`audit_verify`] over this database's `mfa_step_audit_log` (`scratch`: an empty folder,
    /// so that no SQLite store is taken for the counts).
    pub(super) fn tool_verify(&self, keys: &Keys, scratch: &Path) -> (bool, String) {
        audit_verify(
            keys,
            &[
                "--audit-sink".as_ref(),
                "postgres".as_ref(),
                "--audit-url".as_ref(),
                self.url.as_ref(),
                "--data-dir".as_ref(),
                scratch.as_os_str(),
            ],
        )
    }
}

pub(super) fn is_success(r: &Record) -> bool {
    ["code_verified", "enrolled", "email_changed"].contains(&r.action.as_str())
}
