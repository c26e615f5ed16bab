//! The console's audit viewer as `serve` serves it, over a real socket: the component decides
//! (session, organization, filter, the record of the view) and the host fills in the rows, the
//! chain's status and the exports from its own trail (`host_harness::serve::audit_view`). What an
//! admin relies on: the filtered rows of their organization only, exports an auditor can use
//! (JSONL that re-verifies, CSV with a header), a chain check that starts from the last verified
//! record and never moves past a tampered one, "try again" when the trail cannot be read, and the
//! query header never reaching the browser.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::path::Path;
use std::sync::{Arc, OnceLock};

use host_harness::backends::{
    HostAuditSink, HostStore, JsonlAuditSink, MemoryAuditSink, MemoryMailer, MemoryStore,
    SqliteAuditSink,
};
use host_harness::serve::{self, Options, Stopped};
use host_harness::{Backends, Clock, Config, Runtime, World};
use mfa_step_core::audit::verify::Verifier;
use mfa_step_core::kernel::ports::{
    AppendError, AuditEntry, AuditSink, Head, PortError, PortResult, RefusalNote,
};
use serde_json::json;

mod support;

use support::raw_request;

const API_KEY: &str = "audit-view-test-api-key-0123456789";
const HMAC_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const QUERY_HEADER: &str = "x-mfa-step-audit-query";

fn runtime() -> Arc<Runtime> {
    static RUNTIME: OnceLock<Arc<Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| Arc::new(Runtime::new(World::HttpApp).expect("the http-app component")))
        .clone()
}

fn backends(audit: Arc<dyn HostAuditSink>) -> Backends {
    let store: Arc<dyn HostStore> = Arc::new(MemoryStore::new());
    Backends {
        store,
        mailer: Arc::new(MemoryMailer::new()),
        audit,
        config: Config::new([("hmac_key", HMAC_KEY), ("api_key", API_KEY)]),
        clock: Clock::System,
        offload: host_harness::Offload::ALL,
    }
}

/// A server in this process over a real socket.
struct InProcess {
    addr: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<anyhow::Result<Stopped>>,
}

impl InProcess {
    async fn start(backends: Backends) -> Self {
        let listener = serve::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(serve::serve_with(
            runtime(),
            backends,
            listener,
            Options::default(),
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            addr,
            stop: Some(stop),
            served,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        assert_eq!(self.served.await.unwrap().unwrap(), Stopped::Drained);
    }

    /// One request from another thread (the server's runtime stays free). Every answer is
    /// checked for the query header, which must never reach a client.
    async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> support::Raw {
        let (addr, method, path, body) = (
            self.addr.clone(),
            method.to_owned(),
            path.to_owned(),
            body.to_owned(),
        );
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
        let raw = tokio::task::spawn_blocking(move || {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            raw_request(&addr, &method, &path, &headers, &body)
        })
        .await
        .unwrap();
        assert!(
            raw.headers.iter().all(|(n, _)| n != QUERY_HEADER),
            "the query header reached the client: {:?}",
            raw.headers
        );
        raw
    }

    async fn api(&self, path: &str, body: &serde_json::Value) -> support::Raw {
        let auth = format!("Bearer {API_KEY}");
        self.call(
            "POST",
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            &body.to_string(),
        )
        .await
    }

    /// A login step for `user` of `org`: one record in `org`'s stream (or more).
    async fn login(&self, user: &str, org: &str) {
        let context = json!({
            "user_id": user, "org_id": org, "email": format!("{user}@clinic.example"),
            "roles": ["provider"],
            "device": { "ip": "203.0.113.7", "cookie": null,
                        "traits": { "user_agent": "Mozilla/5.0 Test" } }
        });
        let r = self
            .api("/v1/login/begin", &json!({ "context": context }))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }

    /// Opens `org`'s console as its admin: the session cookie (`name=value`).
    async fn console(&self, org: &str) -> String {
        let admin = json!({
            "user_id": "admin-1", "org_id": org, "roles": ["org-admin"],
            "ip": "198.51.100.4", "user_agent": "Mozilla/5.0 Admin"
        });
        let link = self
            .api(
                "/v1/admin/console-link",
                &json!({ "actor": admin, "org_id": org }),
            )
            .await;
        assert_eq!(link.status, 200, "{}", link.body);
        let url: serde_json::Value = serde_json::from_str(&link.body).unwrap();
        let page = self
            .call("GET", url["url"].as_str().unwrap(), &[], "")
            .await;
        assert_eq!(page.status, 200, "{}", page.body);
        let cookie = page.header("set-cookie").unwrap();
        cookie.split(';').next().unwrap().to_owned()
    }

    async fn get(&self, path: &str, cookie: &str) -> support::Raw {
        self.call("GET", path, &[("Cookie", cookie)], "").await
    }
}

/// The rows of the records table: each row's cells (seq first).
fn rows(html: &str) -> Vec<Vec<String>> {
    let Some(start) = html.find("<table id=\"audit-table\">") else {
        return Vec::new();
    };
    let body = &html[start..];
    let body = &body[body.find("<tbody>").unwrap()..body.find("</tbody>").unwrap()];
    body.split("<tr>")
        .skip(1)
        .map(|row| {
            row.split(['<', '>'])
                .collect::<Vec<_>>()
                .windows(2)
                .filter(|w| w[0].starts_with("th scope=\"row\"") || w[0].starts_with("td"))
                .map(|w| w[1].to_owned())
                .collect()
        })
        .collect()
}

/// The chain status sentence.
fn chain(html: &str) -> String {
    let at = html.find("id=\"chain-status\"").expect("a chain status");
    let rest = &html[at..];
    rest[rest.find('>').unwrap() + 1..rest.find("</p>").unwrap()].to_owned()
}

/// `org`'s lines in the SQLite table, in stream order.
fn stored(db: &Path, org: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT line FROM audit_log WHERE org = ?1 ORDER BY seq")
        .unwrap();
    stmt.query_map([org], |row| row.get(0))
        .unwrap()
        .collect::<rusqlite::Result<Vec<String>>>()
        .unwrap()
}

/// `org`'s checkpoint in the SQLite table.
fn checkpoint(db: &Path, org: &str) -> Option<(u64, String)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(
        "SELECT seq, hash FROM audit_checkpoint WHERE org = ?1",
        [org],
        |row| Ok((row.get::<_, i64>(0)? as u64, row.get(1)?)),
    )
    .ok()
}

fn seq_of(line: &str) -> u64 {
    serde_json::from_str::<serde_json::Value>(line).unwrap()["seq"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_viewer_shows_filtered_rows_exports_them_and_verifies_from_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.sqlite");
    let sink: Arc<dyn HostAuditSink> = Arc::new(SqliteAuditSink::open(&db).unwrap());
    let server = InProcess::start(backends(sink)).await;
    for (user, org) in [("u1", "acme"), ("u2", "acme"), ("u9", "globex")] {
        server.login(user, org).await;
    }
    let cookie = server.console("acme").await;

    // The page: u1's records only, newest first, the chain verified from its start.
    let page = server
        .get("/admin/console/audit?user=u1&lang=en", &cookie)
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        !page.body.contains("id=\"audit-fallback\""),
        "the host filled it in"
    );
    let lines = stored(&db, "acme");
    let u1: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("\"actor\":\"u1\"") || l.contains("\"subject\":\"u1\""))
        .collect();
    assert!(!u1.is_empty(), "{lines:?}");
    let shown = rows(&page.body);
    let expected: Vec<String> = u1.iter().rev().map(|l| seq_of(l).to_string()).collect();
    assert_eq!(
        shown.iter().map(|r| r[0].clone()).collect::<Vec<_>>(),
        expected
    );
    assert!(
        shown.iter().all(|r| r[4] == "u1" || r[5] == "u1"),
        "{shown:?}"
    );
    assert!(!page.body.contains(">u9<") && !page.body.contains(">u2<"));
    let head = seq_of(lines.last().unwrap());
    assert_eq!(
        chain(&page.body),
        format!(
            "The chain is verified from its first record through seq {head}: {head} records checked."
        )
    );
    let first = checkpoint(&db, "acme").expect("a checkpoint");
    assert_eq!(first.0, head);
    assert_eq!(
        page.header("content-length")
            .map(|l| l.parse::<usize>().unwrap()),
        Some(page.body.len())
    );

    // Two more records (a login, then this view's own): only they are checked.
    server.login("u3", "acme").await;
    let page = server.get("/admin/console/audit", &cookie).await;
    assert_eq!(page.status, 200);
    let lines = stored(&db, "acme");
    let now = seq_of(lines.last().unwrap());
    assert_eq!(
        chain(&page.body),
        format!(
            "The chain is verified through seq {now}: {} new records checked after the checkpoint at seq {head}.",
            now - head
        )
    );
    assert_eq!(checkpoint(&db, "acme").unwrap().0, now);

    // Exports: every match, as a download; JSONL is the stored bytes and verifies again.
    let jsonl = server
        .get("/admin/console/audit/export?format=jsonl&user=u1", &cookie)
        .await;
    assert_eq!(jsonl.status, 200);
    assert_eq!(jsonl.header("content-type"), Some("application/x-ndjson"));
    assert!(
        jsonl
            .header("content-disposition")
            .unwrap()
            .starts_with("attachment; filename=\"audit-acme-")
    );
    let lines = stored(&db, "acme");
    let u1: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("\"actor\":\"u1\"") || l.contains("\"subject\":\"u1\""))
        .collect();
    assert_eq!(
        jsonl.body,
        u1.iter().map(|l| format!("{l}\n")).collect::<String>()
    );
    let mut all = Verifier::new(None);
    for line in &lines {
        all.check(line).unwrap();
    }
    let csv = server
        .get(
            "/admin/console/audit/export?format=csv&action=admin_console_viewed",
            &cookie,
        )
        .await;
    assert_eq!(csv.status, 200);
    assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
    assert_eq!(
        csv.headers
            .iter()
            .filter(|(n, _)| n == "content-type")
            .count(),
        1,
        "one type: the download's"
    );
    let csv_rows: Vec<&str> = csv.body.split("\r\n").filter(|r| !r.is_empty()).collect();
    assert!(csv_rows[0].starts_with("v,id,seq,at,org,actor,subject,action,outcome,reason"));
    let views = stored(&db, "acme")
        .iter()
        .filter(|l| l.contains("\"action\":\"admin_console_viewed\""))
        .count();
    assert_eq!(csv_rows.len(), 1 + views, "{}", csv.body);
    assert!(
        csv_rows[1..]
            .iter()
            .all(|r| r.contains(",\"admin_console_viewed\","))
    );
    assert!(
        csv.body
            .contains("console:audit-export:csv:action=admin_console_viewed")
    );

    // Dates and an action, read in the query: the records of that action from the first day on,
    // newest first; none before 2001.
    let lines = stored(&db, "acme");
    let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    let (day, action) = (
        &first["at"].as_str().unwrap()[..10],
        first["action"].as_str().unwrap(),
    );
    let page = server
        .get(
            &format!("/admin/console/audit?from={day}&to=9999-12-31&action={action}"),
            &cookie,
        )
        .await;
    assert_eq!(page.status, 200);
    let expected: Vec<String> = lines
        .iter()
        .rev()
        .filter(|l| l.contains(&format!("\"action\":\"{action}\"")))
        .map(|l| seq_of(l).to_string())
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(
        rows(&page.body)
            .iter()
            .map(|r| r[0].clone())
            .collect::<Vec<_>>(),
        expected
    );
    let page = server
        .get(
            "/admin/console/audit?from=1999-01-01&to=2000-12-31",
            &cookie,
        )
        .await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("id=\"audit-empty\""), "{}", page.body);

    // A record after the checkpoint is edited: broken at its seq; the checkpoint stays.
    server.login("u4", "acme").await;
    let before = checkpoint(&db, "acme").unwrap();
    let tampered = seq_of(stored(&db, "acme").last().unwrap());
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let changed = conn
            .execute(
                "UPDATE audit_log SET line = replace(line, '\"ip\":\"203.0.113.7\"', '\"ip\":\"192.0.2.66\"') \
                 WHERE org = 'acme' AND seq = ?1",
                [tampered as i64],
            )
            .unwrap();
        assert_eq!(changed, 1);
    }
    for _ in 0..2 {
        let page = server.get("/admin/console/audit", &cookie).await;
        assert_eq!(page.status, 200);
        assert_eq!(
            chain(&page.body),
            format!(
                "The chain is broken at seq {tampered}: a record was changed, removed or inserted. Run mfa-step audit verify on the host to see why."
            )
        );
        assert_eq!(
            checkpoint(&db, "acme").unwrap(),
            before,
            "never past a break"
        );
    }
    // Another organization's trail was never read into acme's pages.
    assert!(checkpoint(&db, "globex").is_none());
    server.stop().await;
}

/// A sink whose trail cannot be read back (its appends work): neither read, or (`rows_read`)
/// only the chain check's.
struct Unreadable(MemoryAuditSink, bool);

impl AuditSink for Unreadable {
    fn head(&self, org: &str) -> PortResult<Option<Head>> {
        self.0.head(org)
    }
    fn append(&self, entry: &AuditEntry) -> Result<(), AppendError> {
        self.0.append(entry)
    }
    fn note_refusal(&self, note: &RefusalNote) {
        self.0.note_refusal(note);
    }
}

impl HostAuditSink for Unreadable {
    fn lines_after(
        &self,
        _org: &str,
        _from_seq: u64,
        _limit: usize,
    ) -> PortResult<Option<Vec<String>>> {
        Err(PortError("injected read fault".to_owned()))
    }
    fn lines_matching(
        &self,
        _org: &str,
        _from_at: Option<i64>,
        _to_at: Option<i64>,
        _action: Option<&str>,
    ) -> PortResult<Option<Vec<String>>> {
        if self.1 {
            Ok(Some(Vec::new()))
        } else {
            Err(PortError("injected read fault".to_owned()))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trail_that_cannot_be_read_is_a_try_again_page_and_never_a_partial_file() {
    // Neither read works, or the rows are read and the chain check's read fails.
    for rows_read in [false, true] {
        let sink = Unreadable(MemoryAuditSink::new(), rows_read);
        let server = InProcess::start(backends(Arc::new(sink))).await;
        let cookie = server.console("acme").await;
        let page = server.get("/admin/console/audit?lang=es", &cookie).await;
        assert_eq!(page.status, 503);
        assert!(page.body.contains("id=\"audit-unavailable\""));
        assert!(page.body.contains("Inténtelo de nuevo"));
        assert!(!page.body.contains("audit-table") && !page.body.contains("chain-status"));
        let export = server
            .get("/admin/console/audit/export?format=csv", &cookie)
            .await;
        assert_eq!(export.status, 503);
        assert_eq!(export.header("content-disposition"), None);
        assert_eq!(
            export.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert!(export.body.contains("Try again"));
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jsonl_trail_is_read_and_its_checkpoint_kept_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.jsonl");
    let sink: Arc<dyn HostAuditSink> = Arc::new(JsonlAuditSink::open(&file).unwrap());
    let server = InProcess::start(backends(sink)).await;
    server.login("u1", "acme").await;
    server.login("u1", "globex").await;
    let cookie = server.console("acme").await;
    let page = server.get("/admin/console/audit", &cookie).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let acme: Vec<String> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"org\":\"acme\""))
        .map(str::to_owned)
        .collect();
    let head = seq_of(acme.last().unwrap());
    assert_eq!(rows(&page.body).len(), acme.len());
    assert!(chain(&page.body).starts_with(&format!(
        "The chain is verified from its first record through seq {head}:"
    )));
    let kept: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("audit.jsonl.checkpoint")).unwrap())
            .unwrap();
    assert_eq!(kept["acme"]["seq"], head);
    assert!(kept.get("globex").is_none());
    server.stop().await;
}
