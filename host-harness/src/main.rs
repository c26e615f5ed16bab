//! `mfa-step`: run the mfa-step component locally.
//!
//! - `mfa-step serve` serves the component's REST API on 127.0.0.1:8080 with SQLite, a file outbox
//!   and a JSONL audit trail under `.mfa-step/`.
//! - `mfa-step inspect` lists the component's imports and exports, and fails if it imports anything
//!   but the WIT package's own interfaces and WASI.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand, ValueEnum};
use host_harness::backends::{
    JsonlAuditSink, MemoryStore, OutboxMailer, SmtpConfig, SmtpMailer, SmtpPassword, SmtpTls,
    SqliteStore,
};
use host_harness::{Backends, Clock, Runtime, World, inspect, settings};
use mfa_step_core::ports::{Mailer, Store};

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
    /// List the component's imports and exports for both worlds.
    Inspect,
    /// Render an organization's code email (with a sample code) to HTML and text files.
    PreviewEmail(PreviewArgs),
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

#[derive(Clone, Copy, ValueEnum)]
enum StoreKind {
    /// A SQLite file (durable; the default).
    Sqlite,
    /// Memory only: everything is lost when the server stops.
    Memory,
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
    /// Where state lives.
    #[arg(long, value_enum, default_value = "sqlite")]
    store: StoreKind,
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
    /// JSONL audit file (default: <data-dir>/audit.jsonl).
    #[arg(long)]
    audit: Option<PathBuf>,
    /// Write ready-made request bodies for a demo clinic to <data-dir>/demo/ and print a walk-through.
    #[arg(long)]
    demo: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,wasmtime=warn,cranelift=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Serve(args) => run_serve(*args),
        Command::Inspect => run_inspect(),
        Command::PreviewEmail(args) => run_preview(&args),
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
    for world in [World::Plugin, World::HttpApp] {
        let report = inspect::inspect(world)?;
        clean &= report.foreign_imports().is_empty();
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
    let config = settings::component_config(&args.data_dir)?;
    let backends = Backends {
        store: Arc::new(SqliteStore::open(args.data_dir.join("mfa-step.sqlite"))?),
        mailer: Arc::new(host_harness::backends::MemoryMailer::new()),
        audit: Arc::new(JsonlAuditSink::open(args.data_dir.join("audit.jsonl"))?),
        config,
        clock: Clock::System,
        offload: true,
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

fn run_serve(args: ServeArgs) -> Result<ExitCode> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("create {}", args.data_dir.display()))?;
    let config = settings::component_config(&args.data_dir)?;
    let store: Arc<dyn Store + Send + Sync> = match args.store {
        StoreKind::Sqlite => {
            let path = args
                .db
                .clone()
                .unwrap_or_else(|| args.data_dir.join("mfa-step.sqlite"));
            tracing::info!(db = %path.display(), "SQLite store");
            Arc::new(SqliteStore::open(&path)?)
        }
        StoreKind::Memory => {
            tracing::warn!("memory store: everything is lost when the server stops");
            Arc::new(MemoryStore::new())
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
    let audit_path = args
        .audit
        .clone()
        .unwrap_or_else(|| args.data_dir.join("audit.jsonl"));
    tracing::info!(audit = %audit_path.display(), "audit trail");
    let audit = Arc::new(JsonlAuditSink::open(&audit_path)?);
    let backends = Backends {
        store,
        mailer,
        audit,
        config,
        clock: Clock::System,
        offload: true,
    };

    if args.demo {
        let walkthrough = host_harness::demo::seed(&args.data_dir, args.listen)?;
        write_stdout(&walkthrough)?;
    }

    let runtime = Arc::new(Runtime::new(World::HttpApp)?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = host_harness::serve::bind(args.listen).await?;
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        host_harness::serve::serve(runtime, backends, listener, shutdown).await
    })?;
    Ok(ExitCode::SUCCESS)
}
