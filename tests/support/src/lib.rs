//! Test-only support shared by the host harness's unit tests and the end-to-end tests.
//!
//! [`SmtpSink`] is a real SMTP server on a loopback port, in-process: the SMTP protocol (commands,
//! their order, replies, `AUTH PLAIN`/`LOGIN`, dot-unstuffing of `DATA`) is the `mailin` crate's
//! state machine, the one `mailin-embedded` serves; this file only moves its lines over a
//! `std::net` socket and records what was accepted. (`mailin-embedded` itself is not used: it turns
//! on rustls's default crypto provider, aws-lc-rs, next to the ring provider the harness uses, and
//! with both compiled in rustls can no longer pick a default provider at run time.)
//!
//! What it guarantees to a test:
//! - Every message it accepted is in [`SmtpSink::received`] before the client sees the `250` that
//!   ends `DATA`, so a test reads it right after a blocking send returns; no polling.
//! - The content is the bytes the client sent, after SMTP's dot-unstuffing, with CRLF line ends.
//! - It listens on `127.0.0.1` only, and stops listening when dropped.
//!
//! It is not a mail server to run: no TLS (so no `STARTTLS`), no relaying, no size limit.

use std::borrow::Cow;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use mailin::{Action, AuthMechanism, Handler, Response, SessionBuilder, response};

/// How long a connection may stay silent before the server hangs up, so that a test whose client
/// stalls fails instead of leaving a thread behind forever.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// One message the server accepted: its envelope and its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The envelope sender (`MAIL FROM`), without the angle brackets.
    pub mail_from: String,
    /// The envelope recipients (`RCPT TO`) the server accepted, in order, without angle brackets.
    pub rcpt_to: Vec<String>,
    /// The message as sent in `DATA`: headers, a blank line, the body; CRLF line ends.
    pub data: Vec<u8>,
}

impl Received {
    /// The message as text (it is 7-bit or UTF-8 in these tests; anything else is replaced).
    #[must_use]
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.data)
    }
}

/// Decides whether a recipient is refused: `Some((code, text))` is the reply to `RCPT TO`.
type RecipientRule = dyn Fn(&str) -> Option<(u16, String)> + Send + Sync;

/// How a [`SmtpSink`] behaves; [`SmtpSink::builder`] starts from "accept everything".
#[must_use]
pub struct SmtpSinkBuilder {
    refuse: Arc<RecipientRule>,
    credentials: Option<(String, String)>,
}

impl SmtpSinkBuilder {
    /// Refuses each recipient for which `rule` returns `Some((code, text))`, with that reply.
    pub fn refuse_recipients(
        mut self,
        rule: impl Fn(&str) -> Option<(u16, String)> + Send + Sync + 'static,
    ) -> Self {
        self.refuse = Arc::new(rule);
        self
    }

    /// Requires `AUTH` (PLAIN or LOGIN) with this user name and password before `MAIL FROM`, and
    /// answers any other with `535`. Offered over plain text: the sink has no TLS.
    pub fn require_auth(mut self, username: &str, password: &str) -> Self {
        self.credentials = Some((username.to_owned(), password.to_owned()));
        self
    }

    /// Binds `127.0.0.1` on a free port and starts accepting connections on a thread.
    ///
    /// # Errors
    /// The socket cannot be bound or the thread cannot be started.
    pub fn start(self) -> io::Result<SmtpSink> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let addr = listener.local_addr()?;
        let mut session = SessionBuilder::new("mfa-step-test-sink");
        if self.credentials.is_some() {
            session
                .enable_auth(AuthMechanism::Plain)
                .enable_auth(AuthMechanism::Login)
                .insecure_enable_plaintext_auth();
        }
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let recorder = Recorder {
            refuse: self.refuse,
            credentials: self.credentials.map(Arc::new),
            received: Arc::clone(&received),
            current: None,
        };
        let accept = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name(format!("smtp-sink-{}", addr.port()))
                .spawn(move || accept_loop(&listener, &session, &recorder, &stop))?
        };
        Ok(SmtpSink {
            addr,
            received,
            stop,
            accept: Some(accept),
        })
    }
}

/// A real SMTP server on `127.0.0.1`, recording each message it accepts; stops when dropped.
pub struct SmtpSink {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl SmtpSink {
    /// A server that accepts every sender and recipient, without authentication.
    ///
    /// # Errors
    /// As [`SmtpSinkBuilder::start`].
    pub fn start() -> io::Result<Self> {
        Self::builder().start()
    }

    /// A server to configure before starting it.
    pub fn builder() -> SmtpSinkBuilder {
        SmtpSinkBuilder {
            refuse: Arc::new(|_| None),
            credentials: None,
        }
    }

    /// The port it listens on (on `127.0.0.1`).
    #[must_use]
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every message accepted so far, oldest first.
    #[must_use]
    pub fn received(&self) -> Vec<Received> {
        lock(&self.received).clone()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the blocking accept so that the loop sees the flag; a failure means it is gone.
        let _ = TcpStream::connect(self.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// A poisoned lock only means another connection's thread panicked; the list is still whole.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn accept_loop(
    listener: &TcpListener,
    session: &SessionBuilder,
    recorder: &Recorder,
    stop: &AtomicBool,
) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let (session, recorder) = (session.clone(), recorder.clone());
        // One thread per connection, as mailin-embedded does; each ends with its connection.
        let _ = std::thread::Builder::new()
            .name("smtp-sink-session".to_owned())
            .spawn(move || {
                // A client that hangs up early is the client's test to fail, not the server's.
                let _ = serve(stream, &session, recorder);
            });
    }
}

/// Runs one SMTP session: the greeting, then a reply (or none, inside `DATA`) per line.
fn serve(stream: TcpStream, session: &SessionBuilder, recorder: Recorder) -> io::Result<()> {
    let peer = stream
        .peer_addr()
        .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |a| a.ip());
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(IDLE_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = BufWriter::new(stream);
    let mut session = session.build(peer, recorder);
    reply(&mut writer, &session.greeting())?;
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let response = session.process(&line);
        match response.action {
            Action::NoReply => {}
            Action::Reply => reply(&mut writer, &response)?,
            // No TLS is offered, so an upgrade is never asked for; end the session if it is.
            Action::Close | Action::UpgradeTls => return reply(&mut writer, &response),
        }
    }
}

fn reply(writer: &mut BufWriter<TcpStream>, response: &Response) -> io::Result<()> {
    response.write_to(writer)?;
    writer.flush()
}

/// The sink's decisions for one connection, and where accepted messages go.
#[derive(Clone)]
struct Recorder {
    refuse: Arc<RecipientRule>,
    credentials: Option<Arc<(String, String)>>,
    received: Arc<Mutex<Vec<Received>>>,
    /// The message being received, between `DATA` and the final `.`.
    current: Option<Received>,
}

impl Recorder {
    fn check_credentials(&self, username: &str, password: &str) -> Response {
        match &self.credentials {
            Some(expected) if expected.0 == username && expected.1 == password => response::AUTH_OK,
            _ => response::INVALID_CREDENTIALS,
        }
    }
}

impl Handler for Recorder {
    fn rcpt(&mut self, to: &str) -> Response {
        match (self.refuse)(to) {
            Some((code, text)) => Response::custom(code, text),
            None => response::OK,
        }
    }

    fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        self.current = Some(Received {
            mail_from: from.to_owned(),
            rcpt_to: to.to_vec(),
            data: Vec::new(),
        });
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> io::Result<()> {
        if let Some(message) = &mut self.current {
            message.data.extend_from_slice(buf);
        }
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        // Recorded before the 250 goes out: a client that has its answer finds the message here.
        if let Some(message) = self.current.take() {
            lock(&self.received).push(message);
        }
        Response::custom(250, "Message accepted".to_owned())
    }

    fn auth_plain(
        &mut self,
        _authorization_id: &str,
        authentication_id: &str,
        password: &str,
    ) -> Response {
        self.check_credentials(authentication_id, password)
    }

    fn auth_login(&mut self, username: &str, password: &str) -> Response {
        self.check_credentials(username, password)
    }
}
