//! The host conformance kit (`wit/conformance.wit`) run by the wasmtime host over each of its
//! backends, and over three planted faults, each a test-only wrapper around a real backend that
//! breaks one guarantee the component relies on: the kit must name it.
//!
//! - Passes: memory; SQLite with its audit table in the same file (one transaction per unit);
//!   SQLite with a JSONL trail; Redis and Postgres on real servers (`#[ignore]`d here, run by
//!   `.ci/suites` with `--ignored`, where `MFA_STEP_TEST_REDIS` and `MFA_STEP_TEST_POSTGRES` are
//!   set: run without them, they fail, never skip).
//! - Fails: an increment made of a read and a write (`atomic-increment`); a sink that acknowledges
//!   a record and drops it (`audit-append`); a store that answers a failed read as absent
//!   (`fails-closed:get`, `fails-closed:increment`); and, so that no check is vacuous, a prefix
//!   matched as a `LIKE` pattern, counters read as values, expiring keys forgotten at once, values
//!   cut short. Each fault must be named, and nothing else.
//! - The CLI: `mfa-step conformance` runs the same kit, `mfa-step component conformance` writes it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use host_harness::backends::{
    Faults, FaultyAuditSink, FaultyStore, HostAuditSink, HostStore, JsonlAuditSink,
    MemoryAuditSink, MemoryMailer, MemoryStore, PostgresAuditSink, PostgresStore, RedisStore,
    SqliteAuditSink, SqliteStore,
};
use host_harness::conformance::{Kit, Plan, Report, broken};
use host_harness::{Backends, Clock, Config, Offload};
use mfa_step_core::kernel::ports::{
    AppendError, AuditEntry, AuditSink, Head, PortResult, RefusalNote, Store,
};

const KEY: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

fn backends(
    store: Arc<dyn HostStore>,
    audit: Arc<dyn HostAuditSink>,
    offload: Offload,
) -> Backends {
    Backends {
        store,
        mailer: Arc::new(MemoryMailer::new()),
        audit,
        config: Config::new([("hmac_key", KEY)]),
        clock: Clock::System,
        offload,
    }
}

/// How `serve` offloads a store's calls (`main.rs`): a network store's every call, SQLite's
/// writes, the memory store's none.
const NETWORK: Offload = Offload::ALL;
const SQLITE: Offload = Offload {
    store_reads: false,
    store_writes: true,
    others: true,
};

/// Runs the kit on a multi-threaded runtime, as `serve` does: the backends are made inside it
/// (a Postgres store starts its asynchronous client there), and `broken` is what
/// `expect-failures` runs over (default: [`broken`], the same backends behind fault injection).
fn run(plan: Plan, make: impl FnOnce() -> (Backends, Option<Backends>)) -> Report {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let entered = rt.enter();
    let (backends, failing) = make();
    let failing = failing.unwrap_or_else(|| broken(&backends));
    let kit = Kit::new().unwrap();
    drop(entered);
    let report = rt.block_on(kit.run(&backends, &failing, plan));
    eprint!("{report}");
    report
}

fn assert_passes(report: &Report) {
    assert!(report.passed(), "the host broke the contract:\n{report}");
}

/// The checks a report names, to compare with the one fault planted.
fn checks(report: &Report) -> HashSet<&str> {
    report.findings.iter().map(|f| f.check.as_str()).collect()
}

#[test]
fn memory_store_and_sink_conform() {
    let report = run(Plan::default(), || {
        let b = backends(
            Arc::new(MemoryStore::new()),
            Arc::new(MemoryAuditSink::new()),
            Offload::NONE,
        );
        (b, None)
    });
    assert_passes(&report);
    assert_eq!(report.plan.instances, 16);
}

/// The kit itself refuses a run too small to count, whatever the runner: a foreign runner that
/// hammers with 4 instances is told so instead of passing.
#[test]
fn a_run_with_fewer_than_eight_instances_does_not_pass() {
    let report = run(
        Plan {
            instances: 4,
            rounds: 2,
        },
        || {
            let b = backends(
                Arc::new(MemoryStore::new()),
                Arc::new(MemoryAuditSink::new()),
                Offload::NONE,
            );
            (b, None)
        },
    );
    assert!(!report.passed(), "{report}");
    assert_eq!(checks(&report), HashSet::from(["plan"]), "{report}");
    let judged = report.findings.iter().find(|f| f.step == "judge");
    assert!(
        judged.is_some_and(|f| f.seen.contains("4 instances")),
        "{report}"
    );
}

#[test]
fn sqlite_store_and_audit_table_in_one_file_conform() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let report = run(Plan::default(), || {
        let store = Arc::new(SqliteStore::open(&path).unwrap());
        let sink = Arc::new(SqliteAuditSink::open(&path).unwrap());
        assert!(
            sink.database().is_some(),
            "the unit commits in one transaction"
        );
        (backends(store, sink, SQLITE), None)
    });
    assert_passes(&report);
}

#[test]
fn sqlite_store_with_a_jsonl_trail_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let report = run(Plan::default(), || {
        let store = Arc::new(SqliteStore::open(dir.path().join("state.db")).unwrap());
        let sink = Arc::new(JsonlAuditSink::open(dir.path().join("audit.jsonl")).unwrap());
        (backends(store, sink, SQLITE), None)
    });
    assert_passes(&report);
    // The trail the kit left verifies with the component's own verifier, seals included.
    let lines = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    let key = mfa_step_core::HmacKey::from_hex(KEY).unwrap();
    let mut verifier = mfa_step_core::audit::verify::Verifier::new(Some(
        mfa_step_core::audit::chain::SealKey::derive(&key),
    ));
    for line in lines.lines() {
        verifier.check(line).unwrap();
    }
    let total = u64::from(report.plan.instances * report.plan.rounds);
    assert_eq!(verifier.records(), total);
}

const NEEDS_REDIS: &str = "needs a Redis server: MFA_STEP_TEST_REDIS (run by .ci/suites)";
const NEEDS_POSTGRES: &str = "needs a Postgres server: MFA_STEP_TEST_POSTGRES (run by .ci/suites)";

fn server(var: &str, needs: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| panic!("{var} is not set: this test {needs}"))
}

#[test]
#[ignore = "needs a Redis server: MFA_STEP_TEST_REDIS (run by .ci/suites)"]
fn redis_store_conforms() {
    let url = server("MFA_STEP_TEST_REDIS", NEEDS_REDIS);
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("mfa-step-conformance-{}", std::process::id());
    let report = run(Plan::default(), || {
        let store = Arc::new(RedisStore::connect_with_prefix(&url, &prefix).unwrap());
        let sink = Arc::new(JsonlAuditSink::open(dir.path().join("audit.jsonl")).unwrap());
        (backends(store, sink, NETWORK), None)
    });
    assert_passes(&report);
}

#[test]
#[ignore = "needs a Postgres server: MFA_STEP_TEST_POSTGRES (run by .ci/suites)"]
fn postgres_store_and_trail_conform() {
    let admin = server("MFA_STEP_TEST_POSTGRES", NEEDS_POSTGRES);
    // A schema of its own, dropped at the end, so that runs never meet.
    let schema = format!("conformance_{}", std::process::id());
    let mut client = postgres::Client::connect(&admin, postgres::NoTls)
        .unwrap_or_else(|e| panic!("cannot reach MFA_STEP_TEST_POSTGRES: {e}"));
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        ))
        .unwrap();
    let separator = if admin.contains('?') { '&' } else { '?' };
    let url = format!("{admin}{separator}options=-csearch_path%3D{schema}");
    let report = run(Plan::default(), || {
        let store = Arc::new(PostgresStore::connect(&url).unwrap());
        let sink = Arc::new(PostgresAuditSink::connect(&url).unwrap());
        (backends(store, sink, NETWORK), None)
    });
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .unwrap();
    assert_passes(&report);
}

// ---------------------------------------------------------------------------------------------
// Planted faults

/// (a) A counter read, then written back plus the delta, with a pause between: two callers that
/// overlap both write the same count, and one update is lost. Counters are kept as values of the
/// real store under keys of their own, so `get` and `list-keys` still never see them.
struct NonAtomicIncrement(MemoryStore);

impl NonAtomicIncrement {
    fn counter_key(key: &str) -> String {
        format!("counter/{key}")
    }
}

impl Store for NonAtomicIncrement {
    fn get(&self, key: &str) -> PortResult<Option<Vec<u8>>> {
        self.0.get(key)
    }
    fn set(&self, key: &str, value: &[u8], expires_at: Option<i64>) -> PortResult<()> {
        self.0.set(key, value, expires_at)
    }
    fn delete(&self, key: &str) -> PortResult<()> {
        self.0.delete(&Self::counter_key(key))?;
        self.0.delete(key)
    }
    fn increment(&self, key: &str, delta: i64, expires_at: Option<i64>) -> PortResult<i64> {
        let at = Self::counter_key(key);
        let read = self.0.get(&at)?.map_or(0, |v| {
            String::from_utf8_lossy(&v).parse::<i64>().unwrap_or(0)
        });
        if delta == 0 {
            return Ok(read);
        }
        std::thread::sleep(Duration::from_millis(2));
        let new = read + delta;
        self.0.set(&at, new.to_string().as_bytes(), expires_at)?;
        Ok(new)
    }
    fn list_keys(&self, prefix: &str) -> PortResult<Vec<String>> {
        Ok(self
            .0
            .list_keys(prefix)?
            .into_iter()
            .filter(|k| !k.starts_with("counter/"))
            .collect())
    }
}

impl HostStore for NonAtomicIncrement {}

#[test]
fn a_non_atomic_increment_is_found() {
    let report = run(Plan::default(), || {
        let b = backends(
            Arc::new(NonAtomicIncrement(MemoryStore::new())),
            Arc::new(MemoryAuditSink::new()),
            // On the blocking pool, so that the instances' increments really overlap.
            Offload::ALL,
        );
        (b, None)
    });
    assert!(report.has("atomic-increment"), "not found:\n{report}");
    assert_eq!(
        checks(&report),
        HashSet::from(["atomic-increment"]),
        "{report}"
    );
}

/// (b) A sink that acknowledges every fourth record and keeps none of them.
struct LosingSink {
    inner: MemoryAuditSink,
    appends: AtomicU64,
}

impl AuditSink for LosingSink {
    fn head(&self, org: &str) -> PortResult<Option<Head>> {
        self.inner.head(org)
    }
    fn append(&self, entry: &AuditEntry) -> Result<(), AppendError> {
        if self.appends.fetch_add(1, Ordering::SeqCst) % 4 == 3 {
            return Ok(());
        }
        self.inner.append(entry)
    }
    fn note_refusal(&self, note: &RefusalNote) {
        self.inner.note_refusal(note);
    }
}

impl HostAuditSink for LosingSink {}

#[test]
fn a_lost_append_is_found() {
    let report = run(Plan::default(), || {
        let sink = LosingSink {
            inner: MemoryAuditSink::new(),
            appends: AtomicU64::new(0),
        };
        let b = backends(Arc::new(MemoryStore::new()), Arc::new(sink), Offload::ALL);
        (b, None)
    });
    assert!(report.has("audit-append"), "not found:\n{report}");
    assert_eq!(checks(&report), HashSet::from(["audit-append"]), "{report}");
}

/// (c) A store that answers a failed read as an absent key, and a failed increment as 0.
struct AbsentOnError(FaultyStore<MemoryStore>);

impl Store for AbsentOnError {
    fn get(&self, key: &str) -> PortResult<Option<Vec<u8>>> {
        Ok(self.0.get(key).unwrap_or(None))
    }
    fn set(&self, key: &str, value: &[u8], expires_at: Option<i64>) -> PortResult<()> {
        self.0.set(key, value, expires_at)
    }
    fn delete(&self, key: &str) -> PortResult<()> {
        self.0.delete(key)
    }
    fn increment(&self, key: &str, delta: i64, expires_at: Option<i64>) -> PortResult<i64> {
        Ok(self.0.increment(key, delta, expires_at).unwrap_or(0))
    }
    fn list_keys(&self, prefix: &str) -> PortResult<Vec<String>> {
        self.0.list_keys(prefix)
    }
}

impl HostStore for AbsentOnError {}

#[test]
fn an_error_read_as_absent_is_found() {
    let report = run(Plan::default(), || {
        let working = backends(
            Arc::new(MemoryStore::new()),
            Arc::new(MemoryAuditSink::new()),
            Offload::NONE,
        );
        // The same kind of store, failing: its errors are swallowed on the way out.
        let faults = Faults::new();
        faults.fail_store_reads(true);
        faults.fail_store_writes(true);
        faults.fail_audit(true);
        let failing = Backends {
            store: Arc::new(AbsentOnError(FaultyStore::new(
                MemoryStore::new(),
                faults.clone(),
            ))),
            audit: Arc::new(FaultyAuditSink::new(MemoryAuditSink::new(), faults)),
            ..working.clone()
        };
        (working, Some(failing))
    });
    assert!(report.has("fails-closed:get"), "not found:\n{report}");
    assert!(report.has("fails-closed:increment"), "not found:\n{report}");
    assert_eq!(
        checks(&report),
        HashSet::from(["fails-closed:get", "fails-closed:increment"]),
        "{report}"
    );
}

/// The kit is the published artifact: small enough to hand to every host.
#[test]
fn the_kit_is_small() {
    let size = host_harness::runtime::CONFORMANCE_WASM.len();
    eprintln!("the conformance kit is {size} bytes");
    assert!(size < 512 * 1024, "the kit grew to {size} bytes");
}

/// The CLI runs the same kit and says so; `component conformance` hands the kit to other hosts.
#[test]
fn the_cli_runs_the_kit_and_writes_it_out() {
    let bin = env!("CARGO_BIN_EXE_mfa-step");
    let run = std::process::Command::new(bin)
        .args([
            "conformance",
            "--store",
            "sqlite",
            "--instances",
            "8",
            "--rounds",
            "4",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("8 instances × 4 rounds"), "{stdout}");
    assert!(
        stdout.contains("OK: the host keeps the store and audit contract"),
        "{stdout}"
    );

    // Fewer instances than make a run count is refused, not run.
    let few = std::process::Command::new(bin)
        .args(["conformance", "--store", "memory", "--instances", "4"])
        .output()
        .unwrap();
    assert!(!few.status.success());

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("kit.wasm");
    let written = std::process::Command::new(bin)
        .args(["component", "conformance", "--out"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(written.success());
    assert_eq!(
        std::fs::read(&out).unwrap(),
        host_harness::runtime::CONFORMANCE_WASM
    );
}

/// Further single faults, each of which the kit must name: the checks are not vacuous.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// `list-keys` matches the prefix as SQL `LIKE` does, `%` and `_` as wildcards.
    PrefixAsLikePattern,
    /// `get` of a counter's key answers the count.
    CountersReadAsValues,
    /// A key set with an expiry is forgotten at once.
    ForgetsExpiringKeys,
    /// Values are cut to 32 KiB.
    TruncatesValues,
}

struct Planted(MemoryStore, Fault);

/// Whether `key` matches the SQL `LIKE` pattern `pattern` (no escapes).
fn like(key: &[u8], pattern: &[u8]) -> bool {
    match pattern.split_first() {
        None => key.is_empty(),
        Some((b'%', rest)) => (0..=key.len()).any(|i| like(&key[i..], rest)),
        Some((b'_', rest)) => !key.is_empty() && like(&key[1..], rest),
        Some((c, rest)) => key.first() == Some(c) && like(&key[1..], rest),
    }
}

impl Store for Planted {
    fn get(&self, key: &str) -> PortResult<Option<Vec<u8>>> {
        let value = self.0.get(key)?;
        if value.is_none() && matches!(self.1, Fault::CountersReadAsValues) {
            let n = self.0.increment(key, 0, None)?;
            return Ok((n != 0).then(|| n.to_string().into_bytes()));
        }
        Ok(value)
    }
    fn set(&self, key: &str, value: &[u8], expires_at: Option<i64>) -> PortResult<()> {
        match self.1 {
            Fault::ForgetsExpiringKeys if expires_at.is_some() => Ok(()),
            Fault::TruncatesValues => {
                self.0
                    .set(key, &value[..value.len().min(32 << 10)], expires_at)
            }
            _ => self.0.set(key, value, expires_at),
        }
    }
    fn delete(&self, key: &str) -> PortResult<()> {
        self.0.delete(key)
    }
    fn increment(&self, key: &str, delta: i64, expires_at: Option<i64>) -> PortResult<i64> {
        self.0.increment(key, delta, expires_at)
    }
    fn list_keys(&self, prefix: &str) -> PortResult<Vec<String>> {
        if !matches!(self.1, Fault::PrefixAsLikePattern) {
            return self.0.list_keys(prefix);
        }
        let pattern = format!("{prefix}%");
        Ok(self
            .0
            .list_keys("")?
            .into_iter()
            .filter(|k| like(k.as_bytes(), pattern.as_bytes()))
            .collect())
    }
}

impl HostStore for Planted {}

#[test]
fn other_planted_faults_are_named() {
    for (fault, check) in [
        (Fault::PrefixAsLikePattern, "list-keys"),
        (Fault::CountersReadAsValues, "namespaces"),
        (Fault::ForgetsExpiringKeys, "expiry"),
        (Fault::TruncatesValues, "limits"),
    ] {
        let report = run(Plan::default(), || {
            let store = Arc::new(Planted(MemoryStore::new(), fault));
            let b = backends(store, Arc::new(MemoryAuditSink::new()), Offload::NONE);
            (b, None)
        });
        assert_eq!(
            checks(&report),
            HashSet::from([check]),
            "{fault:?}: {report}"
        );
    }
}
