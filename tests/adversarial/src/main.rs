//! `adversary-serve`: the real `serve` (host-harness's `serve_with`, the `http-app` component, a
//! SQLite store and a SQLite audit table in one file, as `mfa-step serve --audit-sink sqlite` runs)
//! with test hooks around its backends, driven from a control API on a second loopback port:
//! a test clock, a store that garbles or holds chosen keys, fault switches, and a mail log.
//! Where `mfa-step serve` forgets expired keys every minute by the system clock, this one forgets
//! them each time the test clock moves, at the new time: as early as the expiries allow.
//!
//! It exists so that the adversarial suite (`tests/attacks/`) can attack a release build over real
//! sockets, including the cases that need time to pass or a race to be staged. The hooks live in
//! this test-only crate, never in host-harness, so the shipped `mfa-step` cannot contain them; the
//! suite checks that it does not (`tests/attacks/shipped.rs`).
//!
//! Once both ports listen it prints one JSON line on standard output:
//! `{"marker": …, "serve": "127.0.0.1:…", "control": "127.0.0.1:…", "clock": …}`.
//! Its log (standard error, `RUST_LOG`, default `warn`) is the harness's.
//!
//! Modules: [`hooks`] (the wrapped backends), [`control`] (the control API).

mod control;
mod hooks;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use host_harness::backends::{
    FaultyAuditSink, FaultyMailer, FaultyStore, SqliteAuditSink, SqliteStore, Sweep,
};
use host_harness::serve::admission::Limits;
use host_harness::{Backends, Clock, Runtime, TestClock, World, settings};

use crate::control::Controls;
use crate::hooks::{HookedStore, Hooks, MailLog, Shared};

/// `serve` with test hooks, for the adversarial suite only.
#[derive(Parser)]
#[command(name = "adversary-serve")]
struct Args {
    /// Folder for the database (store and audit table) and the keys (created on first run).
    #[arg(long)]
    data_dir: PathBuf,
    /// Where the REST API and the hosted pages are served (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Where the control API listens: a loopback address, never the served one.
    #[arg(long, default_value = "127.0.0.1:0")]
    control: SocketAddr,
    /// The test clock's start, Unix seconds.
    #[arg(long, default_value_t = 1_795_000_000)]
    clock_start: i64,
}

/// File descriptors kept for everything but client connections (as `mfa-step serve` keeps).
const FD_RESERVE: u64 = 256;

fn main() -> Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "warn,wasmtime=warn,cranelift=warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    if !args.control.ip().is_loopback() {
        bail!("--control must be a loopback address: it drives the clock and the store");
    }

    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("create {}", args.data_dir.display()))?;
    let config = settings::component_config(&args.data_dir, None)?;
    let db = args.data_dir.join("mfa-step.sqlite");
    let clock = TestClock::at(args.clock_start);
    let hooks = Hooks::default();
    let mail = MailLog::new(clock.clone());
    let sqlite = Arc::new(SqliteStore::open(&db)?);
    let sweeper: Arc<dyn Sweep> = sqlite.clone();
    let backends = Backends {
        store: Arc::new(HookedStore::new(
            FaultyStore::new(Shared(sqlite), hooks.faults.clone()),
            hooks.clone(),
        )),
        mailer: Arc::new(FaultyMailer::new(mail.clone(), hooks.faults.clone())),
        audit: Arc::new(FaultyAuditSink::new(
            SqliteAuditSink::open(&db)?,
            hooks.faults.clone(),
        )),
        config,
        clock: Clock::Test(clock.clone()),
        offload: host_harness::Offload::ALL,
    };
    let options = host_harness::serve::Options {
        limits: Limits {
            max_connections: connection_cap(Limits::default().max_connections),
            ..Limits::default()
        },
        ..host_harness::serve::Options::default()
    };
    let runtime = Arc::new(Runtime::new(World::HttpApp)?);

    let control = std::net::TcpListener::bind(args.control)
        .with_context(|| format!("bind the control API on {}", args.control))?;
    let control_addr = control.local_addr()?;
    let controls = Controls {
        clock: clock.clone(),
        hooks,
        mail,
        sweeper,
    };
    std::thread::spawn(move || control::run(control, controls));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = host_harness::serve::bind(args.listen).await?;
        let served = listener.local_addr()?;
        let ready = serde_json::json!({
            "marker": control::MARKER,
            "serve": served.to_string(),
            "control": control_addr.to_string(),
            "clock": clock.now(),
        });
        let mut out = std::io::stdout().lock();
        writeln!(out, "{ready}")?;
        out.flush()?;
        drop(out);
        let shutdown = async {
            // Without a handler the server runs until it is killed, which is how the suite ends it.
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        host_harness::serve::serve_with(runtime, backends, listener, options, shutdown).await
    })?;
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(())
}

/// Raises the open-file soft limit to the hard one and fits `wanted` connections in it, as
/// `mfa-step serve` does: the flood holds 500 sockets.
fn connection_cap(wanted: usize) -> usize {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            let room = usize::try_from(limit.saturating_sub(FD_RESERVE).max(1)).unwrap_or(wanted);
            wanted.min(room)
        }
        Err(e) => {
            tracing::warn!(error = %e, "the open-file limit cannot be raised");
            wanted
        }
    }
}
