//! The audit trail's costs: appending one linked record to each durable sink (with its fsync), and
//! verifying a log (hashes, seals and links) record by record.
//!
//! Run: `cargo bench -p host-harness --bench audit`. Numbers go in BENCHMARKS.md.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "benchmark"
)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use host_harness::backends::{JsonlAuditSink, SqliteAuditSink};
use mfa_step_core::audit::chain::SealKey;
use mfa_step_core::audit::verify::Verifier;
use mfa_step_core::audit::{Action, Event, Outcome};
use mfa_step_core::kernel::ports::{AuditEntry, AuditSink, Head};
use mfa_step_core::{HmacKey, Timestamp};

const HMAC_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn event(i: u64) -> Event {
    Event {
        org: "bench".to_owned(),
        actor: format!("u{i}"),
        subject: format!("u{i}"),
        action: Action::CodeVerified,
        outcome: Outcome::Success,
        reason: None,
        ip: Some("203.0.113.7".to_owned()),
        user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0".to_owned()),
        device_id: None,
        challenge_id: Some("0123456789abcdef0123456789abcdef".to_owned()),
    }
}

/// The next record after `head`, linked and sealed as the component builds it.
fn linked(i: u64, head: Option<&Head>, seal: &SealKey) -> AuditEntry {
    let (seq, prev) = Head::next(head);
    let (line, hash) = event(i).seal(
        &format!("{i:032x}"),
        seq,
        Timestamp(1_795_000_000),
        &prev,
        Some(seal),
    );
    AuditEntry {
        org_id: "bench".to_owned(),
        seq,
        at: 1_795_000_000,
        action: "code_verified".to_owned(),
        prev,
        hash,
        line,
    }
}

fn append(c: &mut Criterion) {
    let seal = SealKey::derive(&HmacKey::from_hex(HMAC_KEY).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let sinks: [(&str, Box<dyn AuditSink>); 2] = [
        (
            "audit/append jsonl (head + linked append + fsync)",
            Box::new(JsonlAuditSink::open(dir.path().join("audit.jsonl")).unwrap()),
        ),
        (
            "audit/append sqlite (head + linked append + commit)",
            Box::new(SqliteAuditSink::open(dir.path().join("audit.sqlite")).unwrap()),
        ),
    ];
    for (name, sink) in sinks {
        let mut i = 0u64;
        c.bench_function(name, |b| {
            b.iter(|| {
                i += 1;
                let head = sink.head("bench").unwrap();
                sink.append(&linked(i, head.as_ref(), &seal)).unwrap();
            });
        });
    }
}

fn verify(c: &mut Criterion) {
    let key = HmacKey::from_hex(HMAC_KEY).unwrap();
    let seal = SealKey::derive(&key);
    let mut head = None;
    let lines: Vec<String> = (0..10_000u64)
        .map(|i| {
            let entry = linked(i, head.as_ref(), &seal);
            head = Some(Head {
                seq: entry.seq,
                hash: entry.hash.clone(),
            });
            entry.line
        })
        .collect();
    let mut group = c.benchmark_group("audit/verify");
    group.throughput(Throughput::Elements(lines.len() as u64));
    group.sample_size(10);
    group.bench_function("10k records, seals checked", |b| {
        b.iter(|| {
            let mut v = Verifier::new(Some(SealKey::derive(&key)));
            for line in &lines {
                v.check(line).unwrap();
            }
            assert_eq!(v.records(), 10_000);
        });
    });
    group.finish();
}

criterion_group!(benches, append, verify);
criterion_main!(benches);
