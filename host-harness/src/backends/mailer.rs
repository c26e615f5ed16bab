//! Mailers: [`MemoryMailer`] for tests, [`OutboxMailer`] (files a person can open) for development,
//! and [`SmtpMailer`] for delivery.
//!
//! Guarantees, for every mailer here:
//! - A `to`, `subject` or `sender_name` holding CR, LF or NUL is refused before anything is built
//!   (header injection), as is a recipient that is not one valid address.
//! - The MIME message is built by one function for the outbox and for SMTP: `multipart/alternative`
//!   (text/plain, then text/html, UTF-8) with `From`, `To`, `Subject`, `Date`, `Message-ID` and
//!   `Auto-Submitted: auto-generated` (RFC 3834, so auto-responders do not answer a code).
//! - No error, log line or `Debug` output carries a message body (it holds a one-time code) or the
//!   SMTP password; server replies are reduced to their status code.
//!
//! [`SmtpMailer`] and [`OutboxMailer`] block the calling thread; async callers use `spawn_blocking`.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{Address, Message, SmtpTransport, Transport};
use mfa_step_core::kernel::ports::{Mailer, OutgoingMail, PortError, PortResult};
use zeroize::Zeroizing;

use super::{BackendError, lock};

/// The `From` address of the mailers that do not deliver ([`MemoryMailer`], [`OutboxMailer`] by default).
const LOCAL_FROM_ADDRESS: &str = "mfa-step@localhost";

/// Checks the fields that become headers: no CR, LF or NUL in `to`, `subject` or `sender_name`,
/// and `to` is one valid address. Every mailer here calls it before building anything.
///
/// # Errors
/// The field at fault is named; its content is not echoed.
pub fn validate_outgoing_mail(mail: &OutgoingMail) -> PortResult<()> {
    let fields = [
        ("recipient", Some(mail.to.as_str())),
        ("subject", Some(mail.subject.as_str())),
        ("sender name", mail.sender_name.as_deref()),
    ];
    for (name, value) in fields {
        if value.is_some_and(|v| v.contains(['\r', '\n', '\0'])) {
            return Err(PortError(format!(
                "refused: the {name} contains a line break or NUL (header injection)"
            )));
        }
    }
    parse_recipient(&mail.to).map(drop)
}

fn parse_recipient(to: &str) -> PortResult<Address> {
    to.parse::<Address>().map_err(|_| {
        PortError("rejected recipient: the address is not one valid email address".to_owned())
    })
}

/// Builds the MIME message: the one place the outbox and SMTP share.
fn build_message(mail: &OutgoingMail, from: &Address) -> PortResult<Message> {
    validate_outgoing_mail(mail)?;
    let to = parse_recipient(&mail.to)?;
    Message::builder()
        .from(Mailbox::new(mail.sender_name.clone(), from.clone()))
        .to(Mailbox::new(None, to))
        .subject(mail.subject.clone())
        .date_now()
        .message_id(None)
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("Auto-Submitted"),
            "auto-generated".to_owned(),
        ))
        .multipart(MultiPart::alternative_plain_html(
            mail.text.clone(),
            mail.html.clone(),
        ))
        // lettre's errors name a header or an address rule, never a body.
        .map_err(|e| PortError(format!("cannot build the message: {e}")))
}

fn parse_from_address(from_address: &str) -> super::Result<Address> {
    from_address.parse::<Address>().map_err(|_| {
        BackendError::Config(format!(
            "the from address `{from_address}` is not a valid email address"
        ))
    })
}

// ---------------------------------------------------------------------------------------------
// MemoryMailer

/// Keeps every accepted message in memory, so that tests can read the code that was sent.
///
/// It applies the same checks as the real mailers (and builds the MIME message, then drops it),
/// so a message a test sees here would also have been sent.
#[derive(Debug, Default)]
pub struct MemoryMailer {
    sent: Mutex<Vec<OutgoingMail>>,
}

impl MemoryMailer {
    /// A mailer that has sent nothing yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Every message accepted so far, oldest first.
    #[must_use]
    pub fn messages(&self) -> Vec<OutgoingMail> {
        self.sent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The latest message accepted, if any.
    #[must_use]
    pub fn last(&self) -> Option<OutgoingMail> {
        self.sent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .last()
            .cloned()
    }
}

impl Mailer for MemoryMailer {
    fn send(&self, mail: &OutgoingMail) -> PortResult<()> {
        let from = parse_recipient(LOCAL_FROM_ADDRESS)?;
        build_message(mail, &from)?;
        lock(&self.sent, "the memory mailer")?.push(mail.clone());
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// OutboxMailer

/// Writes each message to a folder instead of sending it, for development and demos:
/// `<dir>/<NNNNNN>-<recipient>.eml` (the full MIME message, openable in a mail client) and
/// `<dir>/<NNNNNN>-<recipient>.txt` (`To`, `Subject`, a blank line, then the plain-text part).
///
/// `NNNNNN` is a zero-padded number that grows with each message and continues after a restart.
/// Each file appears whole or not at all (written to a temporary file, synced, then renamed).
/// The files hold live codes: on Unix each is created mode 0600, and the folder (and any parent
/// it creates) 0700; a folder that exists open to others is closed to 0700 when the mailer opens.
/// Numbers are unique within one process; give each process its own folder.
pub struct OutboxMailer {
    dir: PathBuf,
    from: Address,
    next: Mutex<u64>,
}

impl OutboxMailer {
    /// Opens the outbox folder `dir`, creating it if missing, and continues its numbering.
    ///
    /// # Errors
    /// The folder cannot be created or listed.
    pub fn new(dir: impl Into<PathBuf>) -> super::Result<Self> {
        let dir = dir.into();
        let io = |action, source| BackendError::Io {
            action,
            path: dir.clone(),
            source,
        };
        private_dir(&dir).map_err(|e| io("create the folder", e))?;
        let mut last = 0;
        for entry in std::fs::read_dir(&dir).map_err(|e| io("list the folder", e))? {
            let name = entry.map_err(|e| io("list the folder", e))?.file_name();
            let number = name
                .to_str()
                .and_then(|n| n.split_once('-'))
                .and_then(|(digits, _)| digits.parse::<u64>().ok());
            last = last.max(number.unwrap_or(0));
        }
        Ok(Self {
            from: parse_from_address(LOCAL_FROM_ADDRESS)?,
            dir,
            next: Mutex::new(last.saturating_add(1)),
        })
    }

    /// Uses `from_address` in the `From` header instead of `mfa-step@localhost`.
    ///
    /// # Errors
    /// `from_address` is not a valid email address.
    pub fn with_from_address(mut self, from_address: &str) -> super::Result<Self> {
        self.from = parse_from_address(from_address)?;
        Ok(self)
    }

    /// The outbox folder.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn write_atomically(&self, name: &str, contents: &[u8]) -> PortResult<()> {
        let target = self.dir.join(name);
        let temp = self.dir.join(format!(".{name}.tmp"));
        let fail = |action: &str, e: std::io::Error| {
            PortError(format!("outbox: cannot {action} {}: {e}", target.display()))
        };
        // A temporary file a crash left behind keeps its mode: it is replaced, never reused.
        match std::fs::remove_file(&temp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(fail("create", e)),
            _ => {}
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&temp).map_err(|e| fail("create", e))?;
        let written = file
            .write_all(contents)
            .and_then(|()| file.sync_all())
            .and_then(|()| std::fs::rename(&temp, &target));
        if let Err(e) = written {
            // Best effort: a leftover temporary file is hidden and harmless.
            let _ = std::fs::remove_file(&temp);
            return Err(fail("write", e));
        }
        Ok(())
    }
}

/// Creates `dir` (and missing parents) mode 0700, or closes an existing one to 0700.
#[cfg(unix)]
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let permissions = std::fs::metadata(dir)?.permissions();
    if permissions.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

impl fmt::Debug for OutboxMailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboxMailer")
            .field("dir", &self.dir)
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

/// Keeps a recipient usable in a file name: letters, digits and `@._+-`; anything else becomes `_`.
fn sanitize_for_file_name(recipient: &str) -> String {
    recipient
        .chars()
        .take(100)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "@._+-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Mailer for OutboxMailer {
    fn send(&self, mail: &OutgoingMail) -> PortResult<()> {
        let eml = build_message(mail, &self.from)?.formatted();
        let mut txt = format!(
            "To: {}\nSubject: {}\n\n{}",
            mail.to, mail.subject, mail.text
        );
        if !txt.ends_with('\n') {
            txt.push('\n');
        }
        // Held while writing, so that numbers follow the order of the files on disk.
        let mut next = lock(&self.next, "the outbox")?;
        let number = *next;
        // Used up even if a write below fails, so a half-written pair is never overwritten.
        *next = number.saturating_add(1);
        let stem = format!("{number:06}-{}", sanitize_for_file_name(&mail.to));
        self.write_atomically(&format!("{stem}.eml"), &eml)?;
        // The .txt last: a person watching the folder finds both once it appears.
        self.write_atomically(&format!("{stem}.txt"), txt.as_bytes())
    }
}

// ---------------------------------------------------------------------------------------------
// SmtpMailer

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain text, no TLS at all: the code and any password cross the network readable.
    /// Only for a relay on the same machine or a test server.
    None,
    /// Connect in plain text, then require `STARTTLS` (usually port 587); refuses to go on without it.
    StartTls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
}

/// An SMTP password. Its `Debug` is redacted and its memory is zeroed on drop.
#[derive(Clone)]
pub struct SmtpPassword(Zeroizing<String>);

impl SmtpPassword {
    /// Wraps a password.
    #[must_use]
    pub fn new(password: impl Into<String>) -> Self {
        Self(Zeroizing::new(password.into()))
    }

    /// The password itself, for handing to the SMTP client only.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SmtpPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SmtpPassword(<redacted>)")
    }
}

/// Where and how [`SmtpMailer`] delivers.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// The server's host name (also the name its TLS certificate must carry).
    pub host: String,
    /// The server's port, e.g. 587 with [`SmtpTls::StartTls`], 465 with [`SmtpTls::Tls`].
    pub port: u16,
    /// The address in the `From` header and the SMTP envelope.
    pub from_address: String,
    /// How the connection is protected.
    pub tls: SmtpTls,
    /// User name for SMTP authentication; set together with `password`, or neither.
    pub username: Option<String>,
    /// Password for SMTP authentication.
    pub password: Option<SmtpPassword>,
    /// How long to wait for the server at each step before giving up.
    pub timeout: Duration,
}

impl SmtpConfig {
    /// A configuration without authentication and with a 30 s timeout.
    #[must_use]
    pub fn new(
        host: impl Into<String>,
        port: u16,
        from_address: impl Into<String>,
        tls: SmtpTls,
    ) -> Self {
        Self {
            host: host.into(),
            port,
            from_address: from_address.into(),
            tls,
            username: None,
            password: None,
            timeout: Duration::from_secs(30),
        }
    }
}

/// Delivers through an SMTP server, one connection per message.
pub struct SmtpMailer {
    transport: SmtpTransport,
    from: Address,
    server: String,
}

impl SmtpMailer {
    /// Prepares a mailer for `config`. Nothing is sent and no connection is opened yet.
    ///
    /// # Errors
    /// The from address is invalid, only one of username and password is set, or the TLS
    /// settings cannot be built for `host`.
    pub fn new(config: &SmtpConfig) -> super::Result<Self> {
        let from = parse_from_address(&config.from_address)?;
        let tls = |wrap: fn(TlsParameters) -> Tls| {
            TlsParameters::new(config.host.clone())
                .map(wrap)
                .map_err(|e| BackendError::Config(format!("TLS for `{}`: {e}", config.host)))
        };
        let tls = match config.tls {
            SmtpTls::None => Tls::None,
            SmtpTls::StartTls => tls(Tls::Required)?,
            SmtpTls::Tls => tls(Tls::Wrapper)?,
        };
        let mut builder = SmtpTransport::builder_dangerous(config.host.clone())
            .port(config.port)
            .tls(tls)
            .timeout(Some(config.timeout));
        match (&config.username, &config.password) {
            (Some(user), Some(password)) => {
                builder = builder
                    .credentials(Credentials::new(user.clone(), password.expose().to_owned()));
            }
            (None, None) => {}
            _ => {
                return Err(BackendError::Config(
                    "SMTP username and password must be set together".to_owned(),
                ));
            }
        }
        Ok(Self {
            transport: builder.build(),
            from,
            server: format!("{}:{}", config.host, config.port),
        })
    }
}

impl fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpMailer")
            .field("server", &self.server)
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

/// Describes an SMTP failure without the server's reply text, which may quote what was sent.
fn smtp_error(server: &str, e: &lettre::transport::smtp::Error) -> PortError {
    let message = if let Some(code) = e.status() {
        if e.is_permanent() {
            format!("the SMTP server {server} refused the message (reply {code})")
        } else {
            format!("the SMTP server {server} deferred the message (reply {code}); retry later")
        }
    } else if e.is_timeout() {
        format!("the SMTP server {server} did not answer in time")
    } else if e.is_response() || e.is_client() {
        format!("the SMTP server {server} answered something unexpected")
    } else {
        // Connection, network and TLS failures: their causes are socket and certificate errors,
        // raised before or regardless of what was sent.
        format!("cannot talk to the SMTP server {server}: {e}")
    };
    PortError(message)
}

impl Mailer for SmtpMailer {
    fn send(&self, mail: &OutgoingMail) -> PortResult<()> {
        let message = build_message(mail, &self.from)?;
        self.transport
            .send(&message)
            .map(drop)
            .map_err(|e| smtp_error(&self.server, &e))
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly on purpose"
)]
mod tests {
    use super::*;
    use mfa_step_test_support::SmtpSink;
    use std::net::{Ipv4Addr, TcpListener};

    /// Every address the core accepts is one the mailer can send to: otherwise `begin` would
    /// accept a user whose every `send-code` fails (and spends a send), so that they can never sign
    /// in. Generated from the characters that matter at each place in an address.
    #[test]
    fn every_address_the_core_accepts_the_mailer_accepts() {
        use proptest::prelude::*;
        let piece = "[a-zA-Z0-9._+~!#$%&'*/=?^`{|}-]{0,12}";
        let domain = "[a-zA-Z0-9._~!-]{1,20}|[a-z0-9]{60,70}\\.example";
        let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
            cases: 4096,
            failure_persistence: None,
            ..Default::default()
        });
        let accepted = std::cell::Cell::new(0_u32);
        runner
            .run(&(piece, piece, domain), |(a, b, d)| {
                let address = format!("{a}{b}@{d}");
                if mfa_step_core::kernel::input::email(&address).is_ok() {
                    accepted.set(accepted.get() + 1);
                    prop_assert!(
                        address.parse::<Address>().is_ok(),
                        "the core accepts {address:?}, the mailer does not"
                    );
                }
                Ok(())
            })
            .unwrap();
        assert!(
            accepted.get() > 100,
            "only {} accepted addresses tried",
            accepted.get()
        );
    }

    fn mail(to: &str) -> OutgoingMail {
        OutgoingMail {
            to: to.to_owned(),
            sender_name: Some("Acme Corp".to_owned()),
            subject: "Your sign-in code".to_owned(),
            html: "<p>Your code is <b>493021</b>.</p>".to_owned(),
            text: "Your code is 493021.\nIt expires in 10 minutes.".to_owned(),
        }
    }

    // --- shared checks ------------------------------------------------------------------------

    #[test]
    fn header_fields_with_line_breaks_are_refused() {
        let cases = [
            OutgoingMail {
                to: "a@example.com\r\nBcc: evil@example.com".to_owned(),
                ..mail("x@example.com")
            },
            OutgoingMail {
                subject: "hi\nBcc: evil@example.com".to_owned(),
                ..mail("a@example.com")
            },
            OutgoingMail {
                subject: "hi\r".to_owned(),
                ..mail("a@example.com")
            },
            OutgoingMail {
                sender_name: Some("Acme\r\nBcc: evil@example.com".to_owned()),
                ..mail("a@example.com")
            },
        ];
        let memory = MemoryMailer::new();
        let dir = tempfile::tempdir().unwrap();
        let outbox = OutboxMailer::new(dir.path()).unwrap();
        for case in &cases {
            for err in [
                memory.send(case).unwrap_err(),
                outbox.send(case).unwrap_err(),
            ] {
                assert!(err.0.contains("header injection"), "{err}");
                assert!(!err.0.contains("evil"), "the value is not echoed: {err}");
            }
        }
        assert!(memory.messages().is_empty());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn an_invalid_recipient_is_rejected() {
        for to in ["", "not an address", "a@b@c", "<a@example.com>"] {
            let err = MemoryMailer::new().send(&mail(to)).unwrap_err();
            assert!(err.0.starts_with("rejected recipient"), "{to:?}: {err}");
        }
    }

    #[test]
    fn the_mime_message_has_every_header_and_both_parts() {
        let from = parse_recipient("noreply@acme.test").unwrap();
        let eml = String::from_utf8(
            build_message(&mail("bob@example.com"), &from)
                .unwrap()
                .formatted(),
        )
        .unwrap();
        let (head, body) = eml.split_once("\r\n\r\n").unwrap();
        for header in [
            "From: \"Acme Corp\" <noreply@acme.test>\r\n",
            "To: bob@example.com\r\n",
            "Subject: Your sign-in code\r\n",
            "Auto-Submitted: auto-generated\r\n",
            "MIME-Version: 1.0\r\n",
            "Content-Type: multipart/alternative;",
        ] {
            assert!(head.contains(header), "missing {header:?} in\n{head}");
        }
        assert!(head.contains("\r\nDate: "), "{head}");
        assert!(head.contains("\r\nMessage-ID: <"), "{head}");
        let plain = body
            .find("Content-Type: text/plain; charset=utf-8")
            .unwrap();
        let html = body.find("Content-Type: text/html; charset=utf-8").unwrap();
        assert!(plain < html, "text/plain comes first");
        assert!(body.contains("Your code is 493021.\r\nIt expires in 10 minutes."));
        assert!(body.contains("<p>Your code is <b>493021</b>.</p>"));
    }

    #[test]
    fn without_a_sender_name_from_is_the_bare_address() {
        let from = parse_recipient("noreply@acme.test").unwrap();
        let no_name = OutgoingMail {
            sender_name: None,
            ..mail("bob@example.com")
        };
        let eml = String::from_utf8(build_message(&no_name, &from).unwrap().formatted()).unwrap();
        assert!(eml.contains("From: noreply@acme.test\r\n"), "{eml}");
    }

    #[test]
    fn debug_of_a_mail_never_shows_the_code() {
        let memory = MemoryMailer::new();
        memory.send(&mail("a@example.com")).unwrap();
        assert!(!format!("{memory:?}").contains("493021"));
    }

    // --- MemoryMailer ---------------------------------------------------------------------------

    #[test]
    fn memory_mailer_keeps_messages_in_order() {
        let memory = MemoryMailer::new();
        assert_eq!(memory.last(), None);
        memory.send(&mail("a@example.com")).unwrap();
        memory.send(&mail("b@example.com")).unwrap();
        let to: Vec<_> = memory.messages().into_iter().map(|m| m.to).collect();
        assert_eq!(to, ["a@example.com", "b@example.com"]);
        assert_eq!(memory.last().unwrap(), mail("b@example.com"));
    }

    // --- OutboxMailer ---------------------------------------------------------------------------

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn outbox_writes_eml_and_txt_and_numbers_continue_after_restart() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("outbox/nested");
        let outbox = OutboxMailer::new(&dir).unwrap();
        outbox.send(&mail("alice@example.com")).unwrap();
        outbox.send(&mail("bob+mfa@example.com")).unwrap();
        drop(outbox);
        let outbox = OutboxMailer::new(&dir)
            .unwrap()
            .with_from_address("noreply@acme.test")
            .unwrap();
        outbox.send(&mail("carol@example.com")).unwrap();
        assert_eq!(
            names(&dir),
            [
                "000001-alice@example.com.eml",
                "000001-alice@example.com.txt",
                "000002-bob+mfa@example.com.eml",
                "000002-bob+mfa@example.com.txt",
                "000003-carol@example.com.eml",
                "000003-carol@example.com.txt",
            ]
        );
        let txt = std::fs::read_to_string(dir.join("000003-carol@example.com.txt")).unwrap();
        assert_eq!(
            txt,
            "To: carol@example.com\nSubject: Your sign-in code\n\n\
             Your code is 493021.\nIt expires in 10 minutes.\n"
        );
        let eml = std::fs::read_to_string(dir.join("000003-carol@example.com.eml")).unwrap();
        assert!(
            eml.contains("From: \"Acme Corp\" <noreply@acme.test>\r\n"),
            "{eml}"
        );
        assert!(eml.contains("Content-Type: multipart/alternative;"));
        assert!(eml.contains("Auto-Submitted: auto-generated\r\n"));
        assert!(eml.contains("Your code is 493021."));
    }

    #[cfg(unix)]
    #[test]
    fn outbox_files_are_readable_by_their_owner_only_and_its_folder_openable_by_them_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("outbox/nested");
        let outbox = OutboxMailer::new(&dir).unwrap();
        outbox.send(&mail("alice@example.com")).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&root.path().join("outbox")), 0o700);
        for name in names(&dir) {
            assert_eq!(mode(&dir.join(&name)), 0o600, "{name}");
        }
        // A folder that was open to others is closed, and a temporary file a crash left behind,
        // open to others, is not reused as it is.
        let open = root.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        let leftover = open.join(".000001-bob@example.com.eml.tmp");
        std::fs::write(&leftover, b"old").unwrap();
        std::fs::set_permissions(&leftover, std::fs::Permissions::from_mode(0o644)).unwrap();
        let outbox = OutboxMailer::new(&open).unwrap();
        assert_eq!(mode(&open), 0o700);
        outbox.send(&mail("bob@example.com")).unwrap();
        for name in names(&open) {
            assert_eq!(mode(&open.join(&name)), 0o600, "{name}");
        }
        assert!(!leftover.exists());
    }

    #[test]
    fn outbox_file_names_are_sanitized() {
        assert_eq!(sanitize_for_file_name("a/../b@x.com"), "a_.._b@x.com");
        assert_eq!(sanitize_for_file_name("\"we ird\"@x.com"), "_we_ird_@x.com");
        assert_eq!(sanitize_for_file_name(&"a".repeat(300)).len(), 100);
        let root = tempfile::tempdir().unwrap();
        let outbox = OutboxMailer::new(root.path()).unwrap();
        outbox.send(&mail("x/y=z@example.com")).unwrap();
        assert_eq!(
            names(root.path()),
            [
                "000001-x_y_z@example.com.eml",
                "000001-x_y_z@example.com.txt"
            ]
        );
    }

    #[test]
    fn outbox_failure_is_an_error() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("outbox");
        let outbox = OutboxMailer::new(&dir).unwrap();
        std::fs::remove_dir(&dir).unwrap();
        // A file where the folder was: nothing can be written there.
        std::fs::write(&dir, b"").unwrap();
        let err = outbox.send(&mail("a@example.com")).unwrap_err();
        assert!(err.0.starts_with("outbox: cannot create"), "{err}");
        assert!(!err.0.contains("493021"));
        let err = OutboxMailer::new(&dir).unwrap_err();
        assert!(err.to_string().contains("outbox"), "{err}");
    }

    // --- SmtpMailer against a real server --------------------------------------------------------

    /// A real SMTP server on loopback (the test-support crate's sink: mailin's SMTP state machine
    /// over a socket). It refuses recipients starting with `reject` with a reply that echoes a
    /// marker, to check that errors do not carry reply text.
    fn server() -> SmtpSink {
        SmtpSink::builder()
            .refuse_recipients(|to| {
                to.starts_with("reject")
                    .then(|| (550, "5.1.1 no such user ECHOED-REPLY-TEXT".to_owned()))
            })
            .start()
            .unwrap()
    }

    fn config(port: u16, tls: SmtpTls) -> SmtpConfig {
        SmtpConfig {
            timeout: Duration::from_secs(10),
            ..SmtpConfig::new("127.0.0.1", port, "noreply@acme.test", tls)
        }
    }

    fn free_port() -> u16 {
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[test]
    fn smtp_mailer_delivers_to_a_real_server() {
        let server = server();
        let mailer = SmtpMailer::new(&config(server.port(), SmtpTls::None)).unwrap();
        mailer.send(&mail("bob@example.com")).unwrap();
        mailer
            .send(&OutgoingMail {
                sender_name: None,
                text: "Second message.".to_owned(),
                ..mail("carol@example.com")
            })
            .unwrap();

        let received = server.received();
        assert_eq!(received.len(), 2, "{received:?}");
        assert_eq!(received[0].mail_from, "noreply@acme.test");
        assert_eq!(received[0].rcpt_to, ["bob@example.com"]);
        let eml = received[0].text();
        let (head, body) = eml.split_once("\r\n\r\n").expect("headers, then a body");
        let head_lower = head.to_ascii_lowercase();
        for header in [
            "\r\nmessage-id: <",
            "\r\ndate: ",
            "\r\nauto-submitted: auto-generated\r\n",
            "\r\ncontent-type: multipart/alternative;",
            "\r\nto: bob@example.com\r\n",
            "\r\nsubject: your sign-in code\r\n",
        ] {
            assert!(
                format!("\r\n{head_lower}\r\n").contains(header),
                "missing {header:?} in\n{head}"
            );
        }
        assert!(
            head.contains("From: \"Acme Corp\" <noreply@acme.test>"),
            "{head}"
        );
        let plain = body
            .find("Content-Type: text/plain; charset=utf-8")
            .unwrap();
        let html = body.find("Content-Type: text/html; charset=utf-8").unwrap();
        assert!(plain < html, "text/plain first, then text/html");
        assert!(
            body[plain..html].contains("Your code is 493021.\r\nIt expires in 10 minutes."),
            "{body}"
        );
        assert!(
            body[html..].contains("<p>Your code is <b>493021</b>.</p>"),
            "{body}"
        );

        assert_eq!(received[1].mail_from, "noreply@acme.test");
        assert_eq!(received[1].rcpt_to, ["carol@example.com"]);
        let eml = received[1].text();
        assert!(
            eml.contains("\r\nFrom: noreply@acme.test\r\n")
                || eml.starts_with("From: noreply@acme.test\r\n")
        );
        assert!(eml.contains("Second message."));
    }

    #[test]
    fn smtp_refusal_is_an_error_without_the_reply_text() {
        let server = server();
        let mailer = SmtpMailer::new(&config(server.port(), SmtpTls::None)).unwrap();
        let err = mailer.send(&mail("reject-me@example.com")).unwrap_err();
        assert!(err.0.contains("refused the message (reply 550)"), "{err}");
        assert!(!err.0.contains("ECHOED"), "{err}");
        assert!(!err.0.contains("493021"), "{err}");
        assert_eq!(server.received(), []);
    }

    #[test]
    fn smtp_credentials_reach_the_server_and_a_wrong_password_is_refused() {
        let server = SmtpSink::builder()
            .require_auth("mailer", "right-password")
            .start()
            .unwrap();
        let with = |password: &str| SmtpConfig {
            username: Some("mailer".to_owned()),
            password: Some(SmtpPassword::new(password)),
            ..config(server.port(), SmtpTls::None)
        };
        SmtpMailer::new(&with("right-password"))
            .unwrap()
            .send(&mail("bob@example.com"))
            .unwrap();
        assert_eq!(server.received().len(), 1);

        let err = SmtpMailer::new(&with("wrong-password"))
            .unwrap()
            .send(&mail("carol@example.com"))
            .unwrap_err();
        assert!(err.0.contains("(reply 535)"), "{err}");
        assert!(
            !err.0.contains("password") && !err.0.contains("493021"),
            "{err}"
        );
        // And without credentials, the server will not take the message at all (a permanent
        // refusal of MAIL FROM: 530 from most servers, 503 "bad sequence" from this one).
        let err = SmtpMailer::new(&config(server.port(), SmtpTls::None))
            .unwrap()
            .send(&mail("carol@example.com"))
            .unwrap_err();
        assert!(err.0.contains("refused the message (reply 5"), "{err}");
        assert_eq!(server.received().len(), 1, "only the authenticated message");
    }

    /// The sink offers no STARTTLS, as a misconfigured or downgraded server would: the mailer must
    /// stop before `MAIL FROM`, never fall back to plain text. (A completed STARTTLS handshake is
    /// not tested: the mailer trusts the web PKI roots only, which no loopback server can satisfy.)
    #[test]
    fn starttls_required_but_not_offered_sends_nothing() {
        let server = server();
        let err = SmtpMailer::new(&config(server.port(), SmtpTls::StartTls))
            .unwrap()
            .send(&mail("bob@example.com"))
            .unwrap_err();
        assert!(
            err.0.contains(&format!("127.0.0.1:{}", server.port())),
            "{err}"
        );
        assert!(!err.0.contains("493021"), "{err}");
        assert_eq!(server.received(), []);
    }

    #[test]
    fn smtp_to_a_closed_port_is_an_error() {
        let port = free_port();
        let config = SmtpConfig {
            timeout: Duration::from_secs(5),
            ..SmtpConfig::new("127.0.0.1", port, "noreply@acme.test", SmtpTls::None)
        };
        let err = SmtpMailer::new(&config)
            .unwrap()
            .send(&mail("bob@example.com"))
            .unwrap_err();
        assert!(err.0.contains(&format!("127.0.0.1:{port}")), "{err}");
        assert!(!err.0.contains("493021"), "{err}");
    }

    #[test]
    fn smtp_tls_modes_build() {
        for tls in [SmtpTls::None, SmtpTls::StartTls, SmtpTls::Tls] {
            SmtpMailer::new(&SmtpConfig::new(
                "smtp.example.com",
                587,
                "a@example.com",
                tls,
            ))
            .unwrap();
        }
    }

    #[test]
    fn smtp_config_is_checked() {
        let mut config = SmtpConfig::new("localhost", 25, "not an address", SmtpTls::None);
        assert!(SmtpMailer::new(&config).is_err());
        config.from_address = "a@example.com".to_owned();
        config.username = Some("user".to_owned());
        let err = SmtpMailer::new(&config).unwrap_err();
        assert!(err.to_string().contains("together"), "{err}");
        config.password = Some(SmtpPassword::new("pw"));
        SmtpMailer::new(&config).unwrap();
    }

    #[test]
    fn debug_of_smtp_config_hides_the_password() {
        let config = SmtpConfig {
            username: Some("mailer".to_owned()),
            password: Some(SmtpPassword::new("hunter2-very-secret")),
            ..SmtpConfig::new("smtp.example.com", 587, "a@example.com", SmtpTls::StartTls)
        };
        let debug = format!("{config:?} {:?}", SmtpMailer::new(&config).unwrap());
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
        assert!(debug.contains("smtp.example.com"), "{debug}");
    }
}
