//! Host implementations of the core's ports: stores, mailers, audit sinks, and fault injection.
//!
//! Every backend here is `Send + Sync` (the harness shares them through `Arc` across tokio tasks)
//! and reports every failure as a [`PortError`](mfa_step_core::kernel::ports::PortError): none panics, so a
//! failing disk, database or mail server makes the component fail closed instead of crashing the host.
//! No error message ever carries a value, a message body or a password: bodies carry one-time codes.
//!
//! | port | for tests | for a real host |
//! | --- | --- | --- |
//! | [`Store`](mfa_step_core::kernel::ports::Store) | [`MemoryStore`] | [`SqliteStore`]; for several nodes [`PostgresStore`], [`RedisStore`] |
//! | [`Mailer`](mfa_step_core::kernel::ports::Mailer) | [`MemoryMailer`] | [`OutboxMailer`] (files), [`SmtpMailer`] |
//! | [`AuditSink`](mfa_step_core::kernel::ports::AuditSink) | [`MemoryAuditSink`] | [`JsonlAuditSink`], [`SqliteAuditSink`], [`PostgresAuditSink`] |
//!
//! [`FaultyStore`], [`FaultyMailer`] and [`FaultyAuditSink`] wrap any of them and fail on demand,
//! driven by one shared [`Faults`] handle, to prove that the component fails closed.
//!
//! Port calls return [`PortError`](mfa_step_core::kernel::ports::PortError); constructors, which run while
//! the host starts, return [`BackendError`].

use std::path::PathBuf;

pub mod audit;
pub mod faults;
pub mod mailer;
pub mod postgres;
pub mod redis;
mod sqlite_writer;
pub mod store;
pub mod unit;

pub use self::postgres::{PostgresAuditSink, PostgresStore};
pub use self::redis::RedisStore;
pub use audit::{HostAuditSink, JsonlAuditSink, MemoryAuditSink, Placed, SqliteAuditSink};
pub use faults::{Faults, FaultyAuditSink, FaultyMailer, FaultyStore};
pub use mailer::{
    MemoryMailer, OutboxMailer, SmtpConfig, SmtpMailer, SmtpPassword, SmtpTls,
    validate_outgoing_mail,
};
pub use store::{
    HostStore, MAX_KEY_BYTES, MAX_VALUE_BYTES, MemoryStore, PortFuture, SqliteStore, Sweep,
    spawn_sweeper, validate_key, validate_value,
};
pub use unit::{Put, Relinker, Unit, Values};

/// Why a backend could not be set up (opening a database, creating a folder, reading a config).
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The SQLite database could not be opened or prepared.
    #[error("cannot open the SQLite store at {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What SQLite reported.
        #[source]
        source: rusqlite::Error,
    },
    /// A file or folder could not be created, opened or read.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done, e.g. `create the folder`.
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// What the operating system reported.
        #[source]
        source: std::io::Error,
    },
    /// A setting is missing, malformed or contradicts another one.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Result of setting up a backend.
pub type Result<T> = std::result::Result<T, BackendError>;

/// A bound on the calls a network store's pool runs at once, and so on its connections (one is
/// opened only when none is idle): a busy node cannot exhaust the server's connections. A call
/// waits at most [`CallSlots::WAIT`] for a turn, then fails closed.
pub(crate) struct CallSlots {
    busy: std::sync::Mutex<usize>,
    freed: std::sync::Condvar,
}

/// A turn of [`CallSlots`], given back on drop.
pub(crate) struct CallSlot<'a>(&'a CallSlots);

impl CallSlots {
    /// How many calls of one pool run at once.
    pub(crate) const MAX: usize = 16;
    /// How long a call waits for a turn.
    pub(crate) const WAIT: std::time::Duration = std::time::Duration::from_secs(5);

    pub(crate) fn new() -> Self {
        Self {
            busy: std::sync::Mutex::new(0),
            freed: std::sync::Condvar::new(),
        }
    }

    /// Waits for a turn; `busy` describes the failure when none comes in time.
    pub(crate) fn take(
        &self,
        what: &str,
        busy: impl FnOnce() -> String,
    ) -> mfa_step_core::kernel::ports::PortResult<CallSlot<'_>> {
        let deadline = std::time::Instant::now() + Self::WAIT;
        let mut running = lock(&self.busy, what)?;
        while *running >= Self::MAX {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(mfa_step_core::kernel::ports::PortError(busy()));
            }
            running = self
                .freed
                .wait_timeout(running, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        *running += 1;
        Ok(CallSlot(self))
    }
}

impl Drop for CallSlot<'_> {
    fn drop(&mut self) {
        let mut running = self
            .0
            .busy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *running = running.saturating_sub(1);
        drop(running);
        self.0.freed.notify_one();
    }
}

/// Locks a mutex, turning poisoning (a panic while another caller held it) into a port error
/// instead of a second panic: the caller then fails closed.
fn lock<'a, T>(
    mutex: &'a std::sync::Mutex<T>,
    what: &str,
) -> mfa_step_core::kernel::ports::PortResult<std::sync::MutexGuard<'a, T>> {
    mutex.lock().map_err(|_| {
        mfa_step_core::kernel::ports::PortError(format!(
            "{what} is unusable: an earlier call panicked while holding its lock; restart the host"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + 'static>() {}

    #[test]
    fn every_backend_is_send_and_sync() {
        assert_send_sync::<MemoryStore>();
        assert_send_sync::<SqliteStore>();
        assert_send_sync::<MemoryMailer>();
        assert_send_sync::<OutboxMailer>();
        assert_send_sync::<SmtpMailer>();
        assert_send_sync::<MemoryAuditSink>();
        assert_send_sync::<JsonlAuditSink>();
        assert_send_sync::<SqliteAuditSink>();
        assert_send_sync::<Faults>();
        assert_send_sync::<FaultyStore<SqliteStore>>();
        assert_send_sync::<FaultyMailer<SmtpMailer>>();
        assert_send_sync::<FaultyAuditSink<JsonlAuditSink>>();
    }
}
