//! The verify path three ways: the core called natively, a warm component instance reused across
//! calls, and a fresh instance per call (what `serve` does). Each iteration first opens a challenge and
//! sends a code outside the timed region, then times one successful `verify`.
//!
//! Run: `cargo bench -p host-harness --bench verify`. Numbers go in BENCHMARKS.md.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "benchmark"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use host_harness::backends::{MemoryAuditSink, MemoryMailer, MemoryStore};
use host_harness::wit::{self, Decision};
use host_harness::{Backends, Clock, Config, Runtime, TestClock, World};
use mfa_step_core::{DevicePresentation, Engine, HmacKey, LoginContext, Settings, Timestamp};
use rand_core::{OsRng, TryRngCore};

const HMAC_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const T0: i64 = 1_795_000_000;

fn code_in(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .find(|l| l.len() == 6 && l.bytes().all(|b| b.is_ascii_digit()))
        .unwrap()
        .to_owned()
}

fn core_ctx(user: &str) -> LoginContext {
    LoginContext {
        user_id: user.into(),
        org_id: "bench".into(),
        email: format!("{user}@clinic.example"),
        roles: vec!["provider".into()],
        locale: None,
        device: DevicePresentation {
            ip: "203.0.113.7".into(),
            ..Default::default()
        },
    }
}

fn wit_ctx(user: &str) -> wit::LoginContext {
    wit::LoginContext {
        user_id: user.into(),
        org_id: "bench".into(),
        email: format!("{user}@clinic.example"),
        roles: vec!["provider".into()],
        locale: None,
        device: wit::DevicePresentation {
            cookie: None,
            traits: wit::BrowserTraits {
                user_agent: String::new(),
                browser_family: None,
                browser_major: None,
                platform: None,
                language: None,
                time_zone: None,
                screen_class: None,
            },
            ip: "203.0.113.7".into(),
        },
    }
}

fn native(c: &mut Criterion) {
    let store = MemoryStore::new();
    let mailer = MemoryMailer::new();
    let audit = MemoryAuditSink::new();
    let key = HmacKey::from_hex(HMAC_KEY).unwrap();
    let engine = Engine {
        store: &store,
        mailer: &mailer,
        audit: &audit,
        settings: Settings::default(),
        key: &key,
    };
    let mut rng = OsRng.unwrap_err();
    let mut n = 0u64;
    c.bench_function("verify/native core", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                let ctx = core_ctx(&format!("u{n}"));
                // Enroll first (the user's first code confirms the address): what is timed is a
                // login's verify, the one users make every day.
                for _ in 0..2 {
                    let mfa_step_core::Decision::Challenge(ch) =
                        engine.begin(&ctx, Timestamp(T0), &mut rng).unwrap()
                    else {
                        panic!("expected a challenge")
                    };
                    engine
                        .send_code(&ctx, &ch.challenge_id, Timestamp(T0), &mut rng)
                        .unwrap();
                    let code = code_in(&mailer.last().unwrap().text);
                    if ch.purpose == mfa_step_core::Purpose::Login {
                        break;
                    }
                    engine
                        .verify(
                            &ctx,
                            &ch.challenge_id,
                            &code,
                            false,
                            Timestamp(T0),
                            &mut rng,
                        )
                        .unwrap();
                }
                let mfa_step_core::Decision::Challenge(ch) =
                    engine.begin(&ctx, Timestamp(T0), &mut rng).unwrap()
                else {
                    panic!("expected a challenge")
                };
                let ch = ch.challenge_id;
                engine
                    .send_code(&ctx, &ch, Timestamp(T0), &mut rng)
                    .unwrap();
                let code = code_in(&mailer.last().unwrap().text);
                let start = Instant::now();
                engine
                    .verify(&ctx, &ch, &code, false, Timestamp(T0), &mut rng)
                    .unwrap();
                total += start.elapsed();
            }
            total
        });
    });
}

fn backends(offload: bool) -> (Backends, Arc<MemoryMailer>) {
    let mailer = Arc::new(MemoryMailer::new());
    let backends = Backends {
        store: Arc::new(MemoryStore::new()),
        mailer: mailer.clone(),
        audit: Arc::new(MemoryAuditSink::new()),
        config: Config::new([("hmac_key", HMAC_KEY)]),
        clock: Clock::Test(TestClock::at(T0)),
        offload: if offload {
            host_harness::Offload::ALL
        } else {
            host_harness::Offload::NONE
        },
    };
    (backends, mailer)
}

/// Confirms the user's address (their first code), so that the timed verify is a login's.
async fn enroll(
    step: &host_harness::bindings::exports::mfa_step::plugin::login_step::Guest,
    store: &mut wasmtime::Store<host_harness::HostState>,
    ctx: &wit::LoginContext,
    mailer: &MemoryMailer,
) {
    let Ok(Decision::Challenge(ch)) = step.call_begin(&mut *store, ctx).await.unwrap() else {
        panic!()
    };
    step.call_send_code(&mut *store, ctx, &ch.challenge_id)
        .await
        .unwrap()
        .unwrap();
    let code = code_in(&mailer.last().unwrap().text);
    step.call_verify(&mut *store, ctx, &ch.challenge_id, &code, false)
        .await
        .unwrap()
        .unwrap();
}

fn component(c: &mut Criterion) {
    for offload in [false, true] {
        component_with(c, offload);
    }
}

/// With `offload`, every backend call goes through tokio's blocking pool, as `serve` does for SQLite
/// and SMTP; without, the in-memory backends are called inline and only the component boundary is measured.
fn component_with(c: &mut Criterion, offload: bool) {
    let suffix = if offload { " (backends offloaded)" } else { "" };
    let runtime = Runtime::new(World::HttpApp).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (backends, mailer) = backends(offload);
    let mut n = 0u64;

    let (mut store, plugin) = rt.block_on(runtime.instantiate(&backends)).unwrap();
    c.bench_function(&format!("verify/warm instance{suffix}"), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let step = plugin.mfa_step_plugin_login_step();
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    n += 1;
                    let ctx = wit_ctx(&format!("w{n}"));
                    enroll(step, &mut store, &ctx, &mailer).await;
                    let Ok(Decision::Challenge(ch)) =
                        step.call_begin(&mut store, &ctx).await.unwrap()
                    else {
                        panic!()
                    };
                    step.call_send_code(&mut store, &ctx, &ch.challenge_id)
                        .await
                        .unwrap()
                        .unwrap();
                    let code = code_in(&mailer.last().unwrap().text);
                    let start = Instant::now();
                    step.call_verify(&mut store, &ctx, &ch.challenge_id, &code, false)
                        .await
                        .unwrap()
                        .unwrap();
                    total += start.elapsed();
                }
                total
            })
        });
    });

    c.bench_function(&format!("verify/fresh instance per call{suffix}"), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    n += 1;
                    let ctx = wit_ctx(&format!("f{n}"));
                    let (mut s, p) = runtime.instantiate(&backends).await.unwrap();
                    let step = p.mfa_step_plugin_login_step();
                    enroll(step, &mut s, &ctx, &mailer).await;
                    let Ok(Decision::Challenge(ch)) = step.call_begin(&mut s, &ctx).await.unwrap()
                    else {
                        panic!()
                    };
                    step.call_send_code(&mut s, &ctx, &ch.challenge_id)
                        .await
                        .unwrap()
                        .unwrap();
                    let code = code_in(&mailer.last().unwrap().text);
                    drop(s);
                    let start = Instant::now();
                    let (mut s, p) = runtime.instantiate(&backends).await.unwrap();
                    p.mfa_step_plugin_login_step()
                        .call_verify(&mut s, &ctx, &ch.challenge_id, &code, false)
                        .await
                        .unwrap()
                        .unwrap();
                    drop(s);
                    total += start.elapsed();
                }
                total
            })
        });
    });
}

criterion_group!(benches, native, component);
criterion_main!(benches);
