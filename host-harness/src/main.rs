//! `mfa-step`: run the mfa-step component locally.
//!
//! - `mfa-step serve` serves the component's REST API on 127.0.0.1:8080 with SQLite, a file outbox
//!   and a JSONL audit trail under `.mfa-step/`.
//! - `mfa-step inspect` lists each embedded component's imports and exports, and fails if one
//!   imports anything its WIT world does not declare or lacks an import the world requires.
//! - `mfa-step component <plugin|http-app|conformance> --out FILE` writes an embedded component out.
//! - `mfa-step conformance --store <store>` runs the host conformance kit over a store and audit
//!   sink, and exits 1 on any finding.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand, ValueEnum};
use host_harness::audit_log::{self, Checks, DatabaseUrl, Filter, Source};
use host_harness::backends::{
    HostAuditSink, HostStore, JsonlAuditSink, MemoryStore, OutboxMailer, PostgresAuditSink,
    PostgresStore, RedisStore, SmtpConfig, SmtpMailer, SmtpPassword, SmtpTls, SqliteAuditSink,
    SqliteStore, Sweep, spawn_sweeper,
};
use host_harness::conformance::Plan;
use host_harness::serve::admission::{self, Limits};
use host_harness::serve::client_ip::TrustedProxies;
use host_harness::{Backends, Clock, Offload, Runtime, World, inspect, settings};
use mfa_step_core::kernel::ports::Mailer;

#[derive(Parser)]
#[command(
    name = "mfa-step",
    version,
    about = "Email MFA with trusted devices, as a WebAssembly component"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the component's REST API.
    Serve(Box<ServeArgs>),
    /// List each embedded component's imports and exports; fail if one imports anything its WIT
    /// world does not declare, or lacks an import the world requires.
    Inspect,
    /// Write an embedded component to a file, for other hosts (e.g. the Node package).
    Component(ComponentArgs),
    /// Run the host conformance kit over a store and audit sink: exits 1 on any finding.
    Conformance(ConformanceArgs),
    /// Render an organization's code email (with a sample code) to HTML and text files.
    PreviewEmail(PreviewArgs),
    /// Read the audit trail: verify its hash chain, export it for a SIEM, follow it.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check every record's form, hash, seal and link, and each stream's end against the store's
    /// count. Prints the first broken link and why; exits 1 if there is one.
    Verify(VerifyArgs),
    /// Write the records of an organization and time range as JSONL (for a SIEM).
    Export(ExportArgs),
    /// Print the last records, and with --follow keep printing new ones.
    Tail(TailArgs),
    /// Print every stream's head (seq and hash) as JSON: keep a copy elsewhere as an anchor.
    Head(LogArgs),
}

#[derive(clap::Args, Clone)]
struct LogArgs {
    /// Folder holding `serve`'s database, keys and audit file.
    #[arg(long, default_value = ".mfa-step")]
    data_dir: PathBuf,
    /// Which kind of log to read (as `serve --audit-sink`).
    #[arg(long, value_enum, default_value = "jsonl")]
    audit_sink: AuditSinkKind,
    /// The log: the JSONL file (default <data-dir>/audit.jsonl) or the SQLite database holding the
    /// audit_log table (default <data-dir>/mfa-step.sqlite).
    #[arg(long)]
    audit: Option<PathBuf>,
    /// The Postgres database holding the trail, with --audit-sink postgres. A URL with a password
    /// belongs in MFA_STEP_AUDIT_URL.
    #[arg(long, env = "MFA_STEP_AUDIT_URL", hide_env_values = true)]
    audit_url: Option<String>,
    /// Read the trail of the app on Spin instead: its key-value store, the SQLite file
    /// (<state dir>/sqlite_key_value.db, default .spin/) or a redis://… URL. Seals need the app's
    /// hmac_key (MFA_STEP_HMAC_KEY or <data-dir>/hmac.key); the counts are the store's.
    #[arg(long, conflicts_with_all = ["audit", "audit_url"])]
    spin_kv: Option<String>,
}

#[derive(clap::Args)]
struct VerifyArgs {
    #[command(flatten)]
    log: LogArgs,
    /// Do not check seals (for an auditor without the key: the chain alone is checked).
    #[arg(long)]
    no_seal: bool,
    /// The SQLite store whose record counts reveal a truncated log (default
    /// <data-dir>/mfa-step.sqlite when it exists; without one, truncation is not checked).
    #[arg(long)]
    store: Option<PathBuf>,
    /// Verify only the newest JSONL segment, starting from the heads saved at the last rotation.
    #[arg(long)]
    newest_segment: bool,
    /// Print no progress.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(clap::Args)]
struct ExportArgs {
    #[command(flatten)]
    log: LogArgs,
    #[command(flatten)]
    filter: FilterArgs,
    /// Write here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(clap::Args)]
struct FilterArgs {
    /// Only this organization.
    #[arg(long)]
    org: Option<String>,
    /// Only records at or after this time (RFC 3339, or YYYY-MM-DD for its start in UTC).
    #[arg(long)]
    since: Option<String>,
    /// Only records before this time (same forms).
    #[arg(long)]
    until: Option<String>,
}

#[derive(clap::Args)]
struct TailArgs {
    #[command(flatten)]
    log: LogArgs,
    #[command(flatten)]
    filter: FilterArgs,
    /// How many records.
    #[arg(short = 'n', long, default_value_t = 20)]
    lines: usize,
    /// Keep printing new records as they are appended (checks every second).
    #[arg(long, short)]
    follow: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AuditSinkKind {
    /// JSON Lines files, rotated (the default).
    Jsonl,
    /// The audit_log table of a SQLite database.
    Sqlite,
    /// The mfa_step_audit_log table of a Postgres database (at --audit-url or MFA_STEP_AUDIT_URL).
    Postgres,
}

#[derive(clap::Args)]
struct ComponentArgs {
    /// Which component: the world it implements.
    #[arg(value_enum)]
    component: inspect::Embedded,
    /// The file to write the component's bytes to.
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
struct PreviewArgs {
    /// The organization whose branding to use (as stored by `serve` in the data folder).
    #[arg(long)]
    org: String,
    /// Language tag (default: the organization's default language).
    #[arg(long)]
    lang: Option<String>,
    /// IANA time zone for the expiry time (default: UTC).
    #[arg(long)]
    time_zone: Option<String>,
    /// Folder holding `serve`'s database and keys.
    #[arg(long, default_value = ".mfa-step")]
    data_dir: PathBuf,
    /// Where to write `<org>-<lang>.html` and `.txt`.
    #[arg(long, default_value = ".")]
    out: PathBuf,
}

/// Where `serve` keeps state (`--store`).
#[derive(Clone)]
enum StoreChoice {
    /// A SQLite file (durable; the default).
    Sqlite,
    /// Memory only: everything is lost when the server stops.
    Memory,
    /// A Postgres database, which several nodes may share.
    Postgres(String),
    /// A Redis or Valkey server, which several nodes may share.
    Redis(String),
}

/// Parses `--store`. The message never repeats the value: a URL may hold a password.
fn parse_store(text: &str) -> std::result::Result<StoreChoice, String> {
    match text {
        "sqlite" => Ok(StoreChoice::Sqlite),
        "memory" => Ok(StoreChoice::Memory),
        url if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Ok(StoreChoice::Postgres(url.to_owned()))
        }
        url if url.starts_with("redis://") || url.starts_with("rediss://") => {
            Ok(StoreChoice::Redis(url.to_owned()))
        }
        _ => Err("expected sqlite, memory, a postgres://… URL or a redis://… URL".to_owned()),
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum MailerKind {
    /// Write each email to files in the outbox folder (the default, for local use).
    Outbox,
    /// Deliver through an SMTP server.
    Smtp,
}

#[derive(Clone, Copy, ValueEnum)]
enum TlsKind {
    /// STARTTLS, required (port 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No TLS at all: only for a relay on this machine.
    DangerNone,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Folder for the database, keys, outbox and audit trail.
    #[arg(long, default_value = ".mfa-step")]
    data_dir: PathBuf,
    /// Where state lives: `sqlite`, `memory`, or a `postgres://…` or `redis://…` URL that several
    /// nodes share. A URL with a password belongs in MFA_STEP_STORE, not on the command line.
    #[arg(long, env = "MFA_STEP_STORE", hide_env_values = true, default_value = "sqlite",
          value_parser = parse_store)]
    store: StoreChoice,
    /// SQLite file (default: <data-dir>/mfa-step.sqlite).
    #[arg(long)]
    db: Option<PathBuf>,
    /// How emails leave.
    #[arg(long, value_enum, default_value = "outbox")]
    mailer: MailerKind,
    /// Outbox folder (default: <data-dir>/outbox).
    #[arg(long)]
    outbox: Option<PathBuf>,
    /// SMTP server host (with --mailer smtp).
    #[arg(long)]
    smtp_host: Option<String>,
    /// SMTP server port.
    #[arg(long, default_value_t = 587)]
    smtp_port: u16,
    /// Sender address for SMTP.
    #[arg(long, default_value = "mfa@localhost")]
    smtp_from: String,
    /// SMTP transport security.
    #[arg(long, value_enum, default_value = "starttls")]
    smtp_tls: TlsKind,
    /// SMTP user name; the password comes from MFA_STEP_SMTP_PASSWORD.
    #[arg(long)]
    smtp_user: Option<String>,
    /// Where the audit trail goes (default: `postgres` with a Postgres store, else `jsonl`).
    #[arg(long, value_enum)]
    audit_sink: Option<AuditSinkKind>,
    /// The Postgres database for --audit-sink postgres (default: the store's, with a Postgres
    /// store). A URL with a password belongs in MFA_STEP_AUDIT_URL.
    #[arg(long, env = "MFA_STEP_AUDIT_URL", hide_env_values = true)]
    audit_url: Option<String>,
    /// The audit log: the JSONL file (default <data-dir>/audit.jsonl) or, with --audit-sink sqlite,
    /// the database for its audit_log table (default: the store's database).
    #[arg(long)]
    audit: Option<PathBuf>,
    /// Rotate the JSONL audit file when it passes this many KiB (0: never; at most 1 TiB).
    #[arg(long, default_value_t = 65_536, value_parser = clap::value_parser!(u64).range(0..=MAX_ROTATE_KIB))]
    audit_rotate_kib: u64,
    /// Write ready-made request bodies for a demo clinic to <data-dir>/demo/, print a walk-through,
    /// and serve a demo identity provider at /demo/ that signs in through the hosted prompt.
    #[arg(long)]
    demo: bool,
    /// How the log is written to standard error: `text` for people, `json` (one object per line)
    /// for a log pipeline.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// For test suites only, with --demo: the component's clock is the system clock plus the
    /// seconds written in FILE (re-read every 100 ms; time never goes back), so a browser suite can
    /// step across wrong-code delays. Time is then not real. Debug builds only: the release
    /// binary, the one shipped, has no such flag (the adversarial suite checks it).
    #[cfg(debug_assertions)]
    #[arg(long, value_name = "FILE")]
    test_clock_offset_file: Option<PathBuf>,
    /// Seconds between sweeps that forget the store's expired keys (abandoned sign-ins, spent codes'
    /// counters, old throttle slots); 0 never sweeps.
    #[arg(long, value_name = "SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(0..=MAX_SECONDS))]
    sweep_every: u64,
    /// Seconds to let requests in flight finish after SIGTERM or Ctrl-C before cutting them.
    #[arg(long, value_name = "SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(0..=MAX_SECONDS))]
    shutdown_grace: u64,
    /// Open client connections at once; past it new ones wait in the kernel's backlog. Lowered to
    /// fit the open-file limit (raised to its hard limit at start) if need be.
    #[arg(long, value_name = "N", default_value_t = admission::DEFAULT_MAX_CONNECTIONS as u64,
          value_parser = clap::value_parser!(u64).range(1..=MAX_COUNT))]
    max_connections: u64,
    /// Requests in flight at once (from their head until their answer is ready to send); past it,
    /// 503 with Retry-After.
    #[arg(long, value_name = "N", default_value_t = admission::DEFAULT_MAX_IN_FLIGHT as u64,
          value_parser = clap::value_parser!(u64).range(1..=MAX_COUNT))]
    max_in_flight: u64,
    /// Of those, from one client address (IPv6: one /64), on routes without the API key; past it,
    /// 503 with Retry-After. API-key callers share only --max-in-flight.
    #[arg(long, value_name = "N", default_value_t = admission::DEFAULT_MAX_IN_FLIGHT_PER_CLIENT as u64,
          value_parser = clap::value_parser!(u64).range(1..=MAX_COUNT))]
    max_in_flight_per_client: u64,
    /// Seconds for a request's head to arrive (also how long an idle keep-alive connection stays
    /// open); past it the connection is closed.
    #[arg(long, value_name = "SECONDS", default_value_t = admission::DEFAULT_HEADER_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=MAX_SECONDS))]
    header_timeout: u64,
    /// Seconds for a request's whole body to arrive after its head; past it, 408.
    #[arg(long, value_name = "SECONDS", default_value_t = admission::DEFAULT_BODY_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=MAX_SECONDS))]
    body_timeout: u64,
    /// Seconds a write of an answer may make no progress (a client that does not read); past
    /// it the connection is closed.
    #[arg(long, value_name = "SECONDS", default_value_t = admission::DEFAULT_WRITE_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=MAX_SECONDS))]
    write_timeout: u64,
    /// A proxy (CIDR or address) whose X-Forwarded-For is believed: the client is then the
    /// right-most hop that is not a trusted proxy. Repeat it or give several. Without it the TCP
    /// peer is the client.
    #[arg(long, value_name = "CIDR", num_args = 1.., action = clap::ArgAction::Append,
          value_parser = TrustedProxies::parse_cidr)]
    trusted_proxy: Vec<ipnet::IpNet>,
}

/// The largest count a `serve` cap takes (connections, requests in flight): far past what one
/// process serves, far below tokio's `Semaphore::MAX_PERMITS` (`usize::MAX >> 3`).
const MAX_COUNT: u64 = 1 << 20;
/// The longest a `serve` deadline or grace period may be: a day.
const MAX_SECONDS: u64 = 86_400;
/// The largest `--audit-rotate-kib`: 1 TiB (so that the size in bytes fits in a `u64`).
const MAX_ROTATE_KIB: u64 = 1 << 30;

#[derive(Clone, Copy, Default, ValueEnum)]
enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line, the event's fields at the top level.
    Json,
}

/// The log goes to standard error, filtered by `RUST_LOG`. Whatever the format, the harness logs
/// no code, token, key, query, body or header: only what each call site names.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,wasmtime=warn,cranelift=warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(match &cli.command {
        Command::Serve(args) => args.log_format,
        _ => LogFormat::Text,
    });
    let outcome = match cli.command {
        Command::Serve(args) => run_serve(*args),
        Command::Inspect => run_inspect(),
        Command::Component(args) => std::fs::write(&args.out, args.component.bytes())
            .with_context(|| format!("write {}", args.out.display()))
            .map(|()| ExitCode::SUCCESS),
        Command::Conformance(args) => run_conformance(&args),
        Command::PreviewEmail(args) => run_preview(&args),
        Command::Audit(command) => run_audit(command),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_inspect() -> Result<ExitCode> {
    let mut clean = true;
    for component in inspect::Embedded::ALL {
        let report = inspect::inspect(component)?;
        clean &= report.matches_world();
        write_stdout(&report.to_string())?;
    }
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn write_stdout(text: &str) -> Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

fn run_preview(args: &PreviewArgs) -> Result<ExitCode> {
    let config = settings::component_config(&args.data_dir, None)?;
    let backends = Backends {
        store: Arc::new(SqliteStore::open(args.data_dir.join("mfa-step.sqlite"))?),
        mailer: Arc::new(host_harness::backends::MemoryMailer::new()),
        audit: Arc::new(JsonlAuditSink::open(args.data_dir.join("audit.jsonl"))?),
        config,
        clock: Clock::System,
        offload: Offload::ALL,
    };
    // The local operator acts as a platform admin; the preview is recorded like any admin call.
    let operator = host_harness::wit::Actor {
        user_id: "local-operator".to_owned(),
        org_id: args.org.clone(),
        roles: vec!["platform-admin".to_owned()],
        ip: "127.0.0.1".to_owned(),
        user_agent: "mfa-step preview-email".to_owned(),
    };
    let runtime = Runtime::new(World::Plugin)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let preview = rt.block_on(async {
        let (mut store, plugin) = runtime.instantiate(&backends).await?;
        plugin
            .mfa_step_plugin_admin()
            .call_preview_email(
                &mut store,
                &operator,
                &args.org,
                args.lang.as_deref(),
                args.time_zone.as_deref(),
            )
            .await
    })?;
    let preview = preview.map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let lang = args.lang.clone().unwrap_or_else(|| "default".to_owned());
    std::fs::create_dir_all(&args.out)?;
    let base = args.out.join(format!("{}-{lang}", args.org));
    let (html, text) = (base.with_extension("html"), base.with_extension("txt"));
    std::fs::write(&html, preview.html)?;
    std::fs::write(
        &text,
        format!("Subject: {}\n\n{}", preview.subject, preview.text),
    )?;
    write_stdout(&format!("{}\n{}\n", html.display(), text.display()))?;
    Ok(ExitCode::SUCCESS)
}

/// `--test-clock-offset-file`, which only debug builds have.
#[cfg(debug_assertions)]
fn test_clock_file(args: &ServeArgs) -> Option<&PathBuf> {
    args.test_clock_offset_file.as_ref()
}

/// A release build has no test clock.
#[cfg(not(debug_assertions))]
fn test_clock_file(_: &ServeArgs) -> Option<&PathBuf> {
    None
}

fn run_serve(args: ServeArgs) -> Result<ExitCode> {
    // Shifted time sweeps a store's keys early and writes expiries far ahead: only the demo, on
    // its own data directory, may run on it.
    if test_clock_file(&args).is_some() && !args.demo {
        return Err(anyhow::anyhow!(
            "--test-clock-offset-file is for test suites: it needs --demo"
        ));
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("create {}", args.data_dir.display()))?;
    let demo_prompt = if args.demo {
        Some(settings::DemoPrompt::new(&args.data_dir, args.listen)?)
    } else {
        None
    };
    let config = settings::component_config(&args.data_dir, demo_prompt.as_ref())?;
    // The runtime comes first: a store whose client is asynchronous (Postgres) starts its
    // connections on it, so that the requests' calls are answered on the executor.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let entered = rt.enter();
    let (store, sweeper): (Arc<dyn HostStore>, Arc<dyn Sweep>) = match &args.store {
        StoreChoice::Sqlite => {
            let path = args
                .db
                .clone()
                .unwrap_or_else(|| args.data_dir.join("mfa-step.sqlite"));
            tracing::info!(db = %path.display(), "SQLite store");
            let store = Arc::new(SqliteStore::open(&path)?);
            (store.clone(), store)
        }
        StoreChoice::Memory => {
            tracing::warn!("memory store: everything is lost when the server stops");
            let store = Arc::new(MemoryStore::new());
            (store.clone(), store)
        }
        StoreChoice::Postgres(url) => {
            let store = Arc::new(PostgresStore::connect(url)?);
            tracing::info!(store = ?store, "Postgres store");
            (store.clone(), store)
        }
        StoreChoice::Redis(url) => {
            let store = Arc::new(RedisStore::connect(url)?);
            tracing::info!(store = ?store, "Redis store");
            (store.clone(), store)
        }
    };
    let mailer: Arc<dyn Mailer + Send + Sync> = match args.mailer {
        MailerKind::Outbox => {
            let dir = args
                .outbox
                .clone()
                .unwrap_or_else(|| args.data_dir.join("outbox"));
            tracing::info!(outbox = %dir.display(), "emails are written to files");
            Arc::new(OutboxMailer::new(dir)?)
        }
        MailerKind::Smtp => {
            let host = args
                .smtp_host
                .clone()
                .context("--mailer smtp needs --smtp-host")?;
            let tls = match args.smtp_tls {
                TlsKind::Starttls => SmtpTls::StartTls,
                TlsKind::Tls => SmtpTls::Tls,
                TlsKind::DangerNone => SmtpTls::None,
            };
            let mut smtp = SmtpConfig::new(host, args.smtp_port, args.smtp_from.clone(), tls);
            if let Some(user) = &args.smtp_user {
                smtp.username = Some(user.clone());
                smtp.password = Some(SmtpPassword::new(
                    std::env::var("MFA_STEP_SMTP_PASSWORD")
                        .context("--smtp-user needs MFA_STEP_SMTP_PASSWORD")?,
                ));
            }
            Arc::new(SmtpMailer::new(&smtp)?)
        }
    };
    let audit_sink = args.audit_sink.unwrap_or(match args.store {
        StoreChoice::Postgres(_) => AuditSinkKind::Postgres,
        _ => AuditSinkKind::Jsonl,
    });
    let audit = audit_sink_of(&args, audit_sink)?;
    if matches!(args.store, StoreChoice::Redis(_)) && audit_sink != AuditSinkKind::Postgres {
        tracing::warn!(
            "the audit trail is a file of this node's: nodes sharing the Redis store should share \
             an audit trail in Postgres (--audit-sink postgres --audit-url …)"
        );
    }
    let clock = match test_clock_file(&args) {
        None => Clock::System,
        Some(file) => {
            tracing::warn!(
                file = %file.display(),
                "TEST CLOCK: the component's time is the system clock plus this file's offset; \
                 time is not real (for test suites only)"
            );
            Clock::Test(host_harness::clock::offset_by_file(file.clone()))
        }
    };
    let backends = Backends {
        store,
        mailer,
        audit,
        config,
        clock: clock.clone(),
        offload: Offload {
            // A memory map never waits; SQLite reads a WAL snapshot beside the writer, without
            // waiting for it; its writes wait for a commit, and a network store for a round trip.
            store_reads: matches!(args.store, StoreChoice::Postgres(_) | StoreChoice::Redis(_)),
            store_writes: !matches!(args.store, StoreChoice::Memory),
            others: true,
        },
    };

    // The demo's files are written now (a failure stops the start), its walk-through printed once
    // the server answers.
    let (demo_idp, walkthrough) = match &demo_prompt {
        Some(prompt) => {
            let walkthrough = host_harness::demo::seed(&args.data_dir, args.listen)?;
            let idp = host_harness::demo_idp::DemoIdp::new(prompt, args.listen)?;
            (Some(Arc::new(idp)), Some(walkthrough))
        }
        None => (None, None),
    };
    let limits = Limits {
        max_connections: connection_cap(args.max_connections),
        max_in_flight: usize::try_from(args.max_in_flight).unwrap_or(usize::MAX),
        max_in_flight_per_client: usize::try_from(args.max_in_flight_per_client)
            .unwrap_or(usize::MAX),
        header_timeout: std::time::Duration::from_secs(args.header_timeout),
        body_timeout: std::time::Duration::from_secs(args.body_timeout),
        write_timeout: std::time::Duration::from_secs(args.write_timeout),
    };
    let options = host_harness::serve::Options {
        demo: demo_idp,
        shutdown_grace: std::time::Duration::from_secs(args.shutdown_grace),
        limits,
        trusted_proxies: TrustedProxies::new(args.trusted_proxy.clone()),
    };

    let runtime = Arc::new(Runtime::new(World::HttpApp)?);
    drop(entered);
    rt.block_on(async move {
        // Signals are caught from before the listener opens: none can kill the server uncleanly.
        let shutdown = shutdown_signal()?;
        let listener = host_harness::serve::bind(args.listen).await?;
        // Expired keys are forgotten every `--sweep-every` seconds (see `wit/store.wit`).
        let sweeping = (args.sweep_every > 0).then(|| {
            spawn_sweeper(
                sweeper,
                clock,
                std::time::Duration::from_secs(args.sweep_every),
            )
        });
        if let Some(walkthrough) = &walkthrough {
            write_stdout(walkthrough)?;
        }
        let stopped =
            host_harness::serve::serve_with(runtime, backends, listener, options, shutdown).await;
        if let Some(task) = sweeping {
            task.abort();
        }
        stopped
    })?;
    // Connections cut after the grace period may leave a backend call running on a blocking
    // thread (a hung mail server): it is not waited for.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(ExitCode::SUCCESS)
}

/// File descriptors kept for everything but client connections: the database, the audit and
/// outbox files, the compilation cache, standard streams, blocking threads' work.
const FD_RESERVE: u64 = 256;

/// Raises the open-file soft limit to the hard one (a default soft limit of 1024 would run out
/// long before the connection cap), and returns `wanted` lowered to fit in it if need be.
fn connection_cap(wanted: u64) -> usize {
    let fitted = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            let room = limit.saturating_sub(FD_RESERVE).max(1);
            if wanted > room {
                tracing::warn!(
                    open_file_limit = limit,
                    max_connections = room,
                    "--max-connections lowered to fit the open-file limit; raise the hard limit \
                     (ulimit -Hn, LimitNOFILE=) for more"
                );
                room
            } else {
                wanted
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "the open-file limit cannot be read or raised");
            wanted
        }
    };
    usize::try_from(fitted).unwrap_or(usize::MAX)
}

/// Resolves on the first SIGTERM or SIGINT (Ctrl-C). The handlers are installed when this is
/// called, not when the future is first polled.
///
/// # Errors
/// A handler cannot be installed.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("catch SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("catch SIGINT")?;
        Ok(async move {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::info!(signal = name, "stopping");
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            match tokio::signal::ctrl_c().await {
                Ok(()) => tracing::info!(signal = "Ctrl-C", "stopping"),
                // Without a handler the server runs until killed, as it would without this one.
                Err(e) => {
                    tracing::warn!(error = %e, "Ctrl-C cannot be caught");
                    std::future::pending::<()>().await;
                }
            }
        })
    }
}

/// The audit sink `serve` writes to: at `--audit` or its default place for a file, at
/// `--audit-url` or the Postgres store's database for Postgres.
fn audit_sink_of(args: &ServeArgs, kind: AuditSinkKind) -> Result<Arc<dyn HostAuditSink>> {
    let log = LogArgs {
        data_dir: args.data_dir.clone(),
        audit_sink: kind,
        audit: args.audit.clone().or_else(|| match kind {
            AuditSinkKind::Jsonl | AuditSinkKind::Postgres => None,
            AuditSinkKind::Sqlite => args.db.clone(),
        }),
        audit_url: args.audit_url.clone().or_else(|| match &args.store {
            StoreChoice::Postgres(url) => Some(url.clone()),
            _ => None,
        }),
        spin_kv: None,
    };
    Ok(match log.source()? {
        Source::Jsonl(path) | Source::JsonlNewest(path) => {
            tracing::info!(audit = %path.display(), "audit trail: JSONL");
            let rotate = (args.audit_rotate_kib > 0).then_some(args.audit_rotate_kib << 10);
            Arc::new(JsonlAuditSink::open_rotating(&path, rotate)?)
        }
        Source::Sqlite(path) => {
            tracing::info!(audit = %path.display(), "audit trail: SQLite table audit_log");
            Arc::new(SqliteAuditSink::open(&path)?)
        }
        Source::Postgres(url) => {
            let sink = Arc::new(PostgresAuditSink::connect(&url.0)?);
            tracing::info!(audit = ?sink, "audit trail: Postgres table mfa_step_audit_log");
            sink
        }
        Source::SpinKv(_) => anyhow::bail!("serve cannot write to Spin's key-value store"),
    })
}

impl LogArgs {
    fn source(&self) -> Result<Source> {
        if let Some(kv) = &self.spin_kv {
            return Ok(Source::SpinKv(audit_log::SpinKv::parse(kv)));
        }
        Ok(match self.audit_sink {
            AuditSinkKind::Jsonl => Source::Jsonl(
                self.audit
                    .clone()
                    .unwrap_or_else(|| self.data_dir.join("audit.jsonl")),
            ),
            AuditSinkKind::Sqlite => Source::Sqlite(
                self.audit
                    .clone()
                    .unwrap_or_else(|| self.data_dir.join("mfa-step.sqlite")),
            ),
            AuditSinkKind::Postgres => Source::Postgres(DatabaseUrl(
                self.audit_url.clone().context(
                    "--audit-sink postgres needs --audit-url or MFA_STEP_AUDIT_URL (or a Postgres store)",
                )?,
            )),
        })
    }
}

impl FilterArgs {
    fn filter(&self) -> Result<Filter> {
        Ok(Filter {
            org: self.org.clone(),
            since: self
                .since
                .as_deref()
                .map(audit_log::parse_instant)
                .transpose()?,
            until: self
                .until
                .as_deref()
                .map(audit_log::parse_instant)
                .transpose()?,
        })
    }
}

fn run_audit(command: AuditCommand) -> Result<ExitCode> {
    match command {
        AuditCommand::Verify(args) => run_verify(&args),
        AuditCommand::Export(args) => {
            let filter = args.filter.filter()?;
            let source = args.log.source()?;
            let n = match &args.out {
                Some(path) => {
                    let mut out = std::io::BufWriter::new(
                        std::fs::File::create(path)
                            .with_context(|| format!("create {}", path.display()))?,
                    );
                    audit_log::export(&source, &filter, &mut out)?
                }
                None => audit_log::export(&source, &filter, &mut std::io::stdout().lock())?,
            };
            eprintln!("exported {n} records");
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Tail(args) => run_tail(&args),
        AuditCommand::Head(log) => {
            let report = audit_log::verify(&log.source()?, Checks::default(), |_, _| {})?;
            if let Some((at, b)) = &report.broken {
                anyhow::bail!(
                    "the log is broken{}: {b}",
                    at.as_ref().map(|l| format!(" at {l}")).unwrap_or_default()
                );
            }
            write_stdout(&format!(
                "{}\n",
                serde_json::to_string_pretty(&report.heads)?
            ))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn run_verify(args: &VerifyArgs) -> Result<ExitCode> {
    let source = args.log.source()?;
    let mut checks = Checks::default();
    if !args.no_seal {
        let key = settings::existing_hmac_key(&args.log.data_dir)?;
        checks.seal = Some(mfa_step_core::audit::chain::SealKey::derive(&key));
    }
    let store = args
        .store
        .clone()
        .unwrap_or_else(|| args.log.data_dir.join("mfa-step.sqlite"));
    if let Source::SpinKv(kv) = &source {
        if args.store.is_some() {
            anyhow::bail!("--spin-kv reads the counts from the Spin store: drop --store");
        }
        checks.counted = Some(audit_log::spin_kv_counts(kv)?);
    } else if store.exists() {
        checks.counted = Some(audit_log::store_counts(&store)?);
    } else if args.store.is_some() {
        anyhow::bail!("no store at {}", store.display());
    }
    if args.newest_segment {
        let Source::Jsonl(path) = &source else {
            anyhow::bail!("--newest-segment applies to a JSONL log");
        };
        checks.resume = audit_log::rotation_heads(path)?;
        // Earlier segments are not read, so the store's counts still apply to the streams' ends.
    }
    let seals = checks.seal.is_some();
    let counts = checks.counted.is_some();
    let source = match source {
        Source::Jsonl(path) if args.newest_segment => Source::JsonlNewest(path),
        other => other,
    };
    let mut last_report = std::time::Instant::now();
    let quiet = args.quiet;
    let report = audit_log::verify(&source, checks, |done, total| {
        if !quiet && last_report.elapsed() >= std::time::Duration::from_secs(1) {
            last_report = std::time::Instant::now();
            let pct = done.saturating_mul(100).checked_div(total).unwrap_or(100);
            eprintln!("verifying… {pct}% ({done} of {total})");
        }
    })?;
    let mut out = format!(
        "{} records in {} streams; seals {}; counts {}\n",
        report.records,
        report.heads.len(),
        if seals { "checked" } else { "not checked" },
        if counts {
            "checked against the store"
        } else {
            "not checked (no store)"
        },
    );
    for (org, head) in &report.heads {
        out.push_str(&format!("  {org}: seq {} hash {}\n", head.seq, head.hash));
    }
    match &report.broken {
        None => {
            out.push_str("OK: the log is whole\n");
            write_stdout(&out)?;
            Ok(ExitCode::SUCCESS)
        }
        Some((at, b)) => {
            let at = at.as_ref().map(|l| format!("{l}: ")).unwrap_or_default();
            out.push_str(&format!("BROKEN: {at}{b}\n"));
            write_stdout(&out)?;
            Ok(ExitCode::from(1))
        }
    }
}

fn run_tail(args: &TailArgs) -> Result<ExitCode> {
    let filter = args.filter.filter()?;
    let source = args.log.source()?;
    let mut seen: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    let print =
        |lines: Vec<String>, seen: &mut std::collections::BTreeMap<String, u64>| -> Result<()> {
            let mut text = String::new();
            for line in lines {
                if let Ok(r) = mfa_step_core::audit::chain::Record::parse(&line) {
                    let last = seen.entry(r.org.clone()).or_insert(0);
                    if r.seq <= *last {
                        continue;
                    }
                    *last = r.seq;
                }
                text.push_str(&line);
                text.push('\n');
            }
            write_stdout(&text)
        };
    print(audit_log::last(&source, &filter, args.lines)?, &mut seen)?;
    if !args.follow {
        return Ok(ExitCode::SUCCESS);
    }
    // Everything already in the log counts as seen, printed or not.
    for (org, seq) in audit_log::last_seqs(&source)? {
        let last = seen.entry(org).or_insert(0);
        *last = (*last).max(seq);
    }
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
        print(audit_log::last(&source, &filter, usize::MAX)?, &mut seen)?;
    }
}

/// `mfa-step conformance`: the backends to check, and how hard to load them.
#[derive(clap::Args)]
struct ConformanceArgs {
    /// The store: `sqlite`, `memory`, or a `postgres://…` or `redis://…` URL. Point it at a
    /// scratch database: the kit writes keys of its own (`conformance:<run-id>:…`) and leaves
    /// them. A URL with a password belongs in MFA_STEP_CONFORMANCE_STORE (not `serve`'s
    /// MFA_STEP_STORE, so that a shell set up for `serve` never runs the kit on its database).
    #[arg(long, env = "MFA_STEP_CONFORMANCE_STORE", hide_env_values = true, value_parser = parse_store)]
    store: StoreChoice,
    /// The SQLite file, with --store sqlite (default: a fresh one, removed afterwards).
    #[arg(long)]
    db: Option<PathBuf>,
    /// The audit sink (default: `postgres` with a Postgres store, `sqlite` (the store's file) with
    /// a SQLite store, else `jsonl`). The kit appends to the stream `conformance-<run-id>`.
    #[arg(long, value_enum)]
    audit_sink: Option<AuditSinkKind>,
    /// The JSONL file or SQLite database of the trail (default: the store's SQLite file, or a
    /// fresh file, removed afterwards).
    #[arg(long)]
    audit: Option<PathBuf>,
    /// The Postgres database of the trail (default: the store's). A URL with a password belongs
    /// in MFA_STEP_CONFORMANCE_AUDIT_URL.
    #[arg(long, env = "MFA_STEP_CONFORMANCE_AUDIT_URL", hide_env_values = true)]
    audit_url: Option<String>,
    /// Instances hammering the host at once.
    #[arg(long, default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(i64::from(Plan::MIN_INSTANCES)..=i64::from(Plan::MAX_INSTANCES)))]
    instances: u32,
    /// Rounds each instance runs (an increment, a value and an audit record each).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    rounds: u32,
}

/// Runs the kit over the backends `serve` would open for the same options, with a fresh random
/// `hmac_key` (the kit's records are sealed with it; it is never written anywhere), and breaks
/// them by fault injection for `expect-failures` ([`conformance::broken`]).
fn run_conformance(args: &ConformanceArgs) -> Result<ExitCode> {
    use host_harness::conformance::{self, Kit};
    use rand_core::{OsRng, TryRngCore as _};

    let scratch = std::env::temp_dir().join(format!("mfa-step-conformance-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).with_context(|| format!("create {}", scratch.display()))?;
    let db = args
        .db
        .clone()
        .unwrap_or_else(|| scratch.join("conformance.sqlite"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let entered = rt.enter();
    let store: Arc<dyn HostStore> = match &args.store {
        StoreChoice::Sqlite => Arc::new(SqliteStore::open(&db)?),
        StoreChoice::Memory => Arc::new(MemoryStore::new()),
        StoreChoice::Postgres(url) => Arc::new(PostgresStore::connect(url)?),
        StoreChoice::Redis(url) => Arc::new(RedisStore::connect(url)?),
    };
    let kind = args.audit_sink.unwrap_or(match args.store {
        StoreChoice::Postgres(_) => AuditSinkKind::Postgres,
        StoreChoice::Sqlite => AuditSinkKind::Sqlite,
        _ => AuditSinkKind::Jsonl,
    });
    let audit: Arc<dyn HostAuditSink> = match kind {
        AuditSinkKind::Jsonl => Arc::new(JsonlAuditSink::open(
            args.audit
                .clone()
                .unwrap_or_else(|| scratch.join("audit.jsonl")),
        )?),
        AuditSinkKind::Sqlite => Arc::new(SqliteAuditSink::open(args.audit.clone().unwrap_or(db))?),
        AuditSinkKind::Postgres => {
            let url = args.audit_url.clone().or_else(|| match &args.store {
                StoreChoice::Postgres(url) => Some(url.clone()),
                _ => None,
            });
            let url = url.context(
                "--audit-sink postgres needs --audit-url or MFA_STEP_CONFORMANCE_AUDIT_URL",
            )?;
            Arc::new(PostgresAuditSink::connect(&url)?)
        }
    };
    let mut key = zeroize::Zeroizing::new([0u8; 32]);
    OsRng
        .try_fill_bytes(key.as_mut())
        .map_err(|e| anyhow::anyhow!("draw a key from the OS: {e}"))?;
    let backends = Backends {
        store,
        mailer: Arc::new(host_harness::backends::MemoryMailer::new()),
        audit,
        config: host_harness::Config::new([("hmac_key", hex::encode(key.as_ref()))]),
        clock: Clock::System,
        offload: Offload {
            store_reads: matches!(args.store, StoreChoice::Postgres(_) | StoreChoice::Redis(_)),
            store_writes: !matches!(args.store, StoreChoice::Memory),
            others: true,
        },
    };
    let broken = conformance::broken(&backends);
    let kit = Kit::new()?;
    drop(entered);
    let plan = Plan {
        instances: args.instances,
        rounds: args.rounds,
    };
    let report = rt.block_on(kit.run(&backends, &broken, plan));
    drop((backends, broken));
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    let _ = std::fs::remove_dir_all(&scratch);
    write_stdout(&report.to_string())?;
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
