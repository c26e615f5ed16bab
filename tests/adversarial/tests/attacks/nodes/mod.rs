//! Several nodes on one shared store, and nodes killed mid-load: the shipped release `mfa-step
//! serve` (not `adversary-serve`: these backends are the shipped binary's), run as two processes
//! with their own ports and data folders and the same keys, over real sockets.
//!
//! - Two nodes on one Postgres database, and two on one Redis key space with the audit trail in
//!   Postgres: 1000 concurrent verifies of one right code, spread over both, succeed exactly once
//!   and every other one is refused (no 5xx); the shared trail has no fork (each organization's
//!   `seq` runs 1..n, each `prev` is the previous record's `hash`, every line verifies and is
//!   sealed).
//! - Two Postgres nodes hold the per-user send cap (3 emails of 64 parallel sends, across both
//!   outboxes) and the per-code guess limit (5 looked at of 8, 64, 256 parallel wrong codes), as
//!   `sends` and `guesses` assert for one node.
//! - A node killed with SIGKILL under load loses no acknowledged record: every `begin` answered 200
//!   has its `challenge_started` record, whether the survivor shares Postgres with it or the node
//!   restarts on its own SQLite store and JSONL trail; the trail still verifies.
//!
//! Each case makes its own fresh state (a new Postgres database, a flushed Redis database number
//! kept for this suite) from the servers CI starts (`.ci/servers.sh`); without their URLs in
//! `MFA_STEP_TEST_POSTGRES` and `MFA_STEP_TEST_REDIS` it fails, never skips.
//!
//! `cluster.rs` holds the scaffolding: fresh state (a database, a Redis database number), [`Node`]
//! (start, kill, call, read its outbox) and [`Trail`] (the core's verifier with the seal key, and for
//! Postgres the columns walked on their own); this file, the cases.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mfa_step_core::audit::chain::Record;
use serde_json::json;

use crate::support::*;

/// The Redis database number this suite flushes and uses (no other suite touches it).
const REDIS_DB: u32 = 7;
/// A second organization, so that the trail holds more than one stream.
const ORG_B: &str = "beta-clinic";
/// Client threads of the load cases, and how long they run (the kill comes half way).
const LOAD_THREADS: usize = 16;
const LOAD_FOR: Duration = Duration::from_secs(3);

mod cluster;

use cluster::*;

// ---------------------------------------------------------------------------------------------
// Cases 1 and 3: one code, one success

const VERIFIES: usize = 1000;

/// Enrolls a user on node B, opens a login on node A, then fires [`VERIFIES`] concurrent verifies
/// of A's emailed code, alternating A and B.
fn one_code_one_success(case: &str, nodes: &[Node; 2], audit: &FreshPostgres, keys: &Keys) {
    raise_fd_limit(3 * VERIFIES as u64 + 256);
    let [a, b] = nodes;
    let user = "dr-once";
    let c = ctx(ORG, user, &["provider"]);
    // Enrolled on B: A must see it (a login's code, not an enrollment's).
    let id = b.challenge_sent(&c, "enrollment");
    let v = b.post(
        "/v1/login/verify",
        &json!({ "context": c, "challenge_id": id, "code": b.code(&email(user)) }),
    );
    assert_eq!(v.status, 200, "enrollment on node b: {}", v.text);
    let id = a.challenge_sent(&c, "login");
    let code = a.code(&email(user));

    let started = Instant::now();
    let answers = together(VERIFIES, |i| {
        nodes[i % 2].try_post(
            "/v1/login/verify",
            &json!({ "context": c, "challenge_id": id, "code": code }),
        )
    });
    let took = started.elapsed();
    let mix = statuses(&answers);
    let per_node: Vec<BTreeMap<String, usize>> = (0..2)
        .map(|n| statuses(answers.iter().skip(n).step_by(2)))
        .collect();
    let again = b.post(
        "/v1/login/verify",
        &json!({ "context": c, "challenge_id": id, "code": code }),
    );
    let trail = Trail::of_rows(&audit.audit_rows(), keys);
    let (whole, report) = audit.tool_verify(keys, TempDir::new("nodes-verify").path());
    let recs: Vec<&Record> = trail.of_user(ORG, user).collect();
    let successes = recs.iter().filter(|r| is_success(r)).count();
    let mut actions = BTreeMap::<&str, usize>::new();
    let mut rejected = BTreeMap::<String, usize>::new();
    for r in &recs {
        *actions.entry(r.action.as_str()).or_default() += 1;
        if r.action == "code_rejected" {
            *rejected
                .entry(r.reason.clone().unwrap_or_default())
                .or_default() += 1;
        }
    }
    eprintln!(
        "[{case}] {VERIFIES} concurrent verifies of one right code over 2 nodes in {:.2} s: \
         answers {mix:?} (node a {:?}, node b {:?}); the same code again: {}; shared trail: {} \
         records {:?}, {} problems (`mfa-step audit verify`: {report}); the user's {actions:?}, \
         code_rejected reasons {rejected:?}",
        took.as_secs_f64(),
        per_node[0],
        per_node[1],
        again.outcome(),
        trail.records.len(),
        trail.per_org,
        trail.broken.len(),
    );
    assert_eq!(count(&mix, &["200 "]), 1, "exactly one success: {mix:?}");
    assert_eq!(
        count(&mix, &["200 ", "403 rejected", "429 throttled"]),
        VERIFIES,
        "every other answer is a refusal, no 5xx, no failure: {mix:?}"
    );
    assert_ne!(again.status, 200, "the code works again: {}", again.text);
    assert_eq!(
        successes, 2,
        "the enrollment's success record and exactly one more: {actions:?}"
    );
    trail.assert_whole(case);
    assert!(whole, "mfa-step audit verify: {report}");
}

#[test]
fn two_postgres_nodes_one_code_one_success() {
    let _serial = one_at_a_time();
    let db = FreshPostgres::new();
    let (dir, keys) = (TempDir::new("nodes-pg-once"), Keys::fresh());
    // The URL on the command line; the audit trail defaults to the store's database.
    let nodes = two_nodes(&dir, &keys, &["--store", &db.url], &[]);
    one_code_one_success("nodes: 2 postgres", &nodes, &db, &keys);
}

#[test]
fn two_redis_nodes_one_code_one_success() {
    let _serial = one_at_a_time();
    let redis = fresh_redis();
    let audit = FreshPostgres::new();
    let (dir, keys) = (TempDir::new("nodes-redis-once"), Keys::fresh());
    // Both URLs from the environment, as an operator keeps a password off the command line.
    let env = [
        ("MFA_STEP_STORE", redis.as_str()),
        ("MFA_STEP_AUDIT_URL", audit.url.as_str()),
    ];
    let nodes = two_nodes(&dir, &keys, &["--audit-sink", "postgres"], &env);
    one_code_one_success("nodes: 2 redis", &nodes, &audit, &keys);
}

// ---------------------------------------------------------------------------------------------
// Case 2: the send cap and the guess limits across nodes

#[test]
fn two_postgres_nodes_hold_the_send_cap_and_guess_limits() {
    let _serial = one_at_a_time();
    let db = FreshPostgres::new();
    let (dir, keys) = (TempDir::new("nodes-pg-limits"), Keys::fresh());
    let nodes = two_nodes(&dir, &keys, &["--store", &db.url], &[]);
    let [a, b] = &nodes;
    let mut broken = Vec::new();
    let started = Instant::now();
    let mut requests = 0;

    // 64 sends at once for one challenge, alternating the nodes.
    let user = "dr-sends";
    let c = ctx(ORG, user, &["provider"]);
    let r = a.post("/v1/login/begin", &json!({ "context": c }));
    let id = r.json["challenge_id"].as_str().unwrap().to_owned();
    let answers = together(64, |i| {
        nodes[i % 2].try_post(
            "/v1/login/send-code",
            &json!({ "context": c, "challenge_id": id }),
        )
    });
    requests += 65;
    let mix = statuses(&answers);
    let mailed = [a.mail(&email(user)).len(), b.mail(&email(user)).len()];
    let retry: Vec<i64> = answers
        .iter()
        .filter_map(|a| a.as_ref().ok())
        .filter(|r| r.kind() == Some("throttled"))
        .map(|r| r.json["error"]["retry_after_seconds"].as_i64().unwrap_or(0))
        .collect();
    eprintln!(
        "[nodes: limits] 64 parallel sends over 2 nodes: emails {} (node a {}, node b {}); \
         answers {mix:?}; throttled ones say retry after {:?}..{:?} s",
        mailed[0] + mailed[1],
        mailed[0],
        mailed[1],
        retry.iter().min(),
        retry.iter().max()
    );
    if mailed[0] + mailed[1] != 3 || count(&mix, &["200 "]) > 3 {
        broken.push(format!(
            "64 parallel sends: {mailed:?} emails, answers {mix:?}"
        ));
    }
    if retry.iter().any(|r| !(1..=300).contains(r)) {
        broken.push(format!("a throttled send's retry_after: {retry:?}"));
    }
    if count(&mix, &["200 ", "429 throttled", "503 unavailable"]) != 64 {
        broken.push(format!("64 parallel sends answered {mix:?}"));
    }

    // 8, 64, 256 wrong codes at once against one live code, alternating the nodes.
    for n in [8, 64, 256] {
        let user = format!("burst-{n}");
        let c = ctx(ORG, &user, &["provider"]);
        let id = a.challenge_sent(&c, "enrollment");
        let bad = wrong(&a.code(&email(&user)));
        let answers = together(n, |i| {
            nodes[i % 2].try_post(
                "/v1/login/verify",
                &json!({ "context": c, "challenge_id": id, "code": bad }),
            )
        });
        requests += 2 + n;
        let mix = statuses(&answers);
        let trail = Trail::of_rows(&db.audit_rows(), &keys);
        let recs: Vec<&Record> = trail.of_user(ORG, &user).collect();
        let mut per_code = BTreeMap::<&str, usize>::new();
        for r in recs.iter().filter(|r| r.action == "code_rejected") {
            *per_code
                .entry(r.challenge_id.as_deref().unwrap_or_default())
                .or_default() += 1;
        }
        let reason = |r: &Record| r.reason.clone().unwrap_or_default();
        let compared = recs
            .iter()
            .filter(|r| r.action == "code_rejected" && reason(r) == "wrong-code")
            .count();
        let counted = recs
            .iter()
            .filter(|r| {
                (r.action == "code_rejected" || r.action == "code_expired")
                    && reason(r) != "user:locked"
            })
            .count();
        eprintln!(
            "[nodes: limits] N={n} parallel wrong codes over 2 nodes: answers {mix:?}; shared \
             trail: {compared} wrong codes looked at, code_rejected per code {:?}, {} \
             verify_throttled",
            per_code.values().collect::<Vec<_>>(),
            recs.iter()
                .filter(|r| r.action == "verify_throttled")
                .count(),
        );
        if per_code.values().any(|&k| k > 5) || counted > 5 {
            broken.push(format!(
                "N={n}: {per_code:?} code_rejected per code, {counted} counted"
            ));
        }
        if count(&mix, &["403 rejected"]) > 5 {
            broken.push(format!(
                "N={n}: more than 5 answers `rejected` (looked at): {mix:?}"
            ));
        }
        if count(&mix, &["403 rejected", "429 throttled", "503 unavailable"]) != n {
            broken.push(format!("N={n}: answers other than a refusal: {mix:?}"));
        }
        if recs.iter().any(|r| is_success(r)) {
            broken.push(format!("N={n}: a wrong code was accepted"));
        }
        broken.extend(trail.broken.iter().map(|b| format!("N={n}: trail: {b}")));
    }
    eprintln!(
        "[nodes: limits] {requests} requests in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    assert!(broken.is_empty(), "{broken:#?}");
}

// ---------------------------------------------------------------------------------------------
// Cases 4 and 5: a node killed mid-load

/// One `begin` of the load: when it was sent, to which node, and its answer.
#[derive(Clone)]
struct Sent {
    at: Instant,
    node: usize,
    org: &'static str,
    user: String,
    answer: Result<Reply, String>,
}

impl Sent {
    /// The challenge an answer 200 acknowledged.
    fn acknowledged(&self) -> Option<(String, String)> {
        let reply = self.answer.as_ref().ok().filter(|r| r.status == 200)?;
        Some((
            self.org.to_owned(),
            reply.json["challenge_id"].as_str()?.to_owned(),
        ))
    }
}

/// [`LOAD_THREADS`] threads doing `begin`s for fresh users of two organizations for
/// [`LOAD_FOR`] (or until no node is up), spread over the nodes `up` still marks alive; `kill`
/// runs half way. Every answer, when `kill` returned, and how long the load ran.
fn load(nodes: &[&Node], up: &[AtomicBool], kill: impl FnOnce()) -> (Vec<Sent>, Instant, Duration) {
    let t0 = Instant::now();
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..LOAD_THREADS)
            .map(|t| {
                scope.spawn(move || {
                    let mut sent = Vec::new();
                    let mut i = 0;
                    while t0.elapsed() < LOAD_FOR {
                        let alive: Vec<usize> = (0..nodes.len())
                            .filter(|&n| up[n].load(Ordering::SeqCst))
                            .collect();
                        if alive.is_empty() {
                            break;
                        }
                        let node = alive[(t + i) % alive.len()];
                        let org = if i % 2 == 0 { ORG } else { ORG_B };
                        let user = format!("load-{t}-{i}");
                        let c = ctx(org, &user, &["provider"]);
                        let at = Instant::now();
                        let answer =
                            nodes[node].try_post("/v1/login/begin", &json!({ "context": c }));
                        sent.push(Sent {
                            at,
                            node,
                            org,
                            user,
                            answer,
                        });
                        i += 1;
                    }
                    sent
                })
            })
            .collect();
        std::thread::sleep(LOAD_FOR / 2);
        kill();
        let killed = Instant::now();
        let sent = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        (sent, killed, t0.elapsed())
    })
}

/// Every acknowledged begin missing from `trail`, as `node org/user challenge`; and how many
/// begins that got no answer were recorded all the same (allowed: the record comes first).
fn missing(sent: &[Sent], trail: &Trail) -> (Vec<String>, usize) {
    let recorded = trail.started();
    let missing = sent
        .iter()
        .filter_map(|s| Some((s, s.acknowledged()?)))
        .filter(|(_, ack)| !recorded.contains(ack))
        .map(|(s, (org, id))| format!("node {} {org}/{} {id}", s.node, s.user))
        .collect();
    let users: BTreeSet<(&str, &str)> = trail
        .records
        .iter()
        .filter(|r| r.action == "challenge_started")
        .map(|r| (r.org.as_str(), r.subject.as_str()))
        .collect();
    let unanswered = sent
        .iter()
        .filter(|s| s.answer.is_err() && users.contains(&(s.org, s.user.as_str())))
        .count();
    (missing, unanswered)
}

#[test]
fn a_node_killed_mid_load_loses_no_acknowledged_record() {
    let _serial = one_at_a_time();
    let db = FreshPostgres::new();
    let (dir, keys) = (TempDir::new("nodes-pg-kill"), Keys::fresh());
    let [a, b] = two_nodes(&dir, &keys, &["--store", &db.url], &[]);
    let up = [AtomicBool::new(true), AtomicBool::new(true)];
    let (sent, killed, took) = load(&[&a, &b], &up, || {
        // As a load balancer would, stop sending to it; the calls in flight fail.
        up[1].store(false, Ordering::SeqCst);
        b.kill();
    });
    let mix = statuses(sent.iter().map(|s| &s.answer));
    let of = |n: usize, after: bool| {
        statuses(
            sent.iter()
                .filter(|s| s.node == n && (s.at > killed) == after)
                .map(|s| &s.answer),
        )
    };
    let trail = Trail::of_rows(&db.audit_rows(), &keys);
    let (whole, report) = db.tool_verify(&keys, TempDir::new("nodes-verify").path());
    let (missing, unanswered) = missing(&sent, &trail);
    let acked = sent.iter().filter(|s| s.acknowledged().is_some()).count();
    let a_after = count(&of(0, true), &["200 "]);
    eprintln!(
        "[nodes: kill] {} begins from {LOAD_THREADS} threads in {:.2} s, node b killed (SIGKILL) \
         half way: answers {mix:?}; node a before {:?}, after {:?}; node b before {:?}, after \
         {:?}; {acked} acknowledged, {} of them without a record ({unanswered} failed calls \
         recorded all the same); shared trail: {} records {:?}, {} problems (`mfa-step audit \
         verify`: {report})",
        sent.len(),
        took.as_secs_f64(),
        of(0, false),
        of(0, true),
        of(1, false),
        of(1, true),
        missing.len(),
        trail.records.len(),
        trail.per_org,
        trail.broken.len(),
    );
    assert!(
        count(&of(1, false), &["200 "]) > 0,
        "node b answered nothing before the kill: {:?}",
        of(1, false)
    );
    assert!(
        a_after > 0,
        "node a stopped answering after the kill: {:?}",
        of(0, true)
    );
    assert!(
        missing.is_empty(),
        "acknowledged begins without their record: {:?}",
        &missing[..missing.len().min(20)]
    );
    trail.assert_whole("nodes: kill");
    assert!(whole, "mfa-step audit verify: {report}");
}

#[test]
fn sqlite_node_killed_mid_load_loses_no_acknowledged_record() {
    let _serial = one_at_a_time();
    let (dir, keys) = (TempDir::new("nodes-sqlite-kill"), Keys::fresh());
    let node = Node::start("solo", dir.path(), &keys, &[], &[]);
    let up = [AtomicBool::new(true)];
    let (sent, _, took) = load(&[&node], &up, || {
        up[0].store(false, Ordering::SeqCst);
        node.kill();
    });
    let data = node.data.clone();
    drop(node);
    let mix = statuses(sent.iter().map(|s| &s.answer));
    let acked = sent.iter().filter(|s| s.acknowledged().is_some()).count();

    // Restarted on the same folder, it goes on answering and chaining.
    let again = Node::start("solo", dir.path(), &keys, &[], &[]);
    let after: Vec<Sent> = (0..20)
        .map(|i| {
            let user = format!("after-{i}");
            let c = ctx(ORG, &user, &["provider"]);
            let at = Instant::now();
            let answer = again.try_post("/v1/login/begin", &json!({ "context": c }));
            Sent {
                at,
                node: 0,
                org: ORG,
                user,
                answer,
            }
        })
        .collect();
    let after_mix = statuses(after.iter().map(|s| &s.answer));
    let jsonl = std::fs::read_to_string(data.join("audit.jsonl")).unwrap();
    let trail = Trail::of_lines(jsonl.lines(), &keys);
    // The begins before the kill and after the restart alike.
    let (missing, unanswered) = missing(&[sent.as_slice(), &after].concat(), &trail);
    let (whole, report) = audit_verify(&keys, &["--data-dir".as_ref(), data.as_os_str()]);
    eprintln!(
        "[nodes: sqlite kill] {} begins from {LOAD_THREADS} threads in {:.2} s, the node killed \
         (SIGKILL) half way (the load stops with it): answers {mix:?}; {acked} acknowledged, {} of \
         them without a record ({unanswered} failed calls recorded all the same); \
         restarted: 20 begins {after_mix:?}; audit.jsonl: {} records {:?}, {} problems; \
         `mfa-step audit verify`: {} {}",
        sent.len(),
        took.as_secs_f64(),
        missing.len(),
        trail.records.len(),
        trail.per_org,
        trail.broken.len(),
        if whole { "whole" } else { "BROKEN" },
        report
    );
    assert!(acked > 0, "nothing acknowledged before the kill: {mix:?}");
    assert!(
        missing.is_empty(),
        "acknowledged begins without their record: {:?}",
        &missing[..missing.len().min(20)]
    );
    assert_eq!(
        count(&after_mix, &["200 "]),
        20,
        "after the restart: {after_mix:?}"
    );
    trail.assert_whole("nodes: sqlite kill");
    assert!(whole, "mfa-step audit verify: {report}");
}
