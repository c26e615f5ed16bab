//! The one error type of the core. Every variant says what was wrong and what to do, and none ever
//! carries a code, a token or a key: messages are written here, never copied from a secret.

use crate::kernel::ports::PortError;

/// Everything that can go wrong in the core.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A field of the input is malformed or too large. Nothing was stored.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// The offending field, in the REST/WIT spelling (e.g. `email`, `device.ip`).
        field: &'static str,
        /// What is wrong with it and what is expected.
        reason: String,
    },
    /// Wrong, expired or used code, or unknown challenge or user: one answer on purpose.
    #[error("the code is not valid; check the latest email or request a new code")]
    Rejected,
    /// Too many sends or guesses for now.
    #[error("too many attempts; try again in {retry_after} seconds")]
    Throttled {
        /// Seconds until a retry can succeed.
        retry_after: u32,
    },
    /// Too many consecutive wrong codes.
    #[error("too many wrong codes: MFA is locked for this account; an administrator can unlock it")]
    Locked,
    /// The caller may not do this.
    #[error("not allowed: {0}")]
    Forbidden(&'static str),
    /// The store failed; nothing took effect.
    #[error(
        "storage is unavailable; the call did not complete and granted nothing; try again: {0}"
    )]
    Store(String),
    /// The mailer failed; the code was not delivered.
    #[error("the email could not be sent; try again: {0}")]
    Mail(String),
    /// The audit sink failed; the operation did not take effect.
    #[error(
        "the audit trail is unavailable; the call did not complete and granted nothing; try again: {0}"
    )]
    Audit(String),
    /// The host's configuration is missing or out of bounds.
    #[error("misconfigured: {0}")]
    Misconfigured(String),
    /// Reserved by the contract, not built yet.
    #[error("not implemented yet: {0}")]
    NotImplemented(&'static str),
}

/// How an [`Error::unreadable`] message starts (before the kind of value).
const UNREADABLE: &str = "a stored value does not parse: ";

/// The core's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps a store failure.
    pub(crate) fn store(e: PortError) -> Self {
        Self::Store(e.0)
    }
    /// Wraps an audit failure.
    pub(crate) fn audit(e: PortError) -> Self {
        Self::Audit(e.0)
    }
    /// A stored value of kind `kind` (a key's kind, never its value) that does not parse: reported as
    /// [`Error::Store`], the error a caller sees for any store failure, so it grants nothing.
    pub(crate) fn unreadable(kind: &str) -> Self {
        Self::Store(format!("{UNREADABLE}{kind}"))
    }
    /// The kind of stored value that did not parse, when this error is [`Error::unreadable`].
    pub(crate) fn unreadable_kind(&self) -> Option<&str> {
        match self {
            Self::Store(m) => m.strip_prefix(UNREADABLE),
            _ => None,
        }
    }
    /// Shorthand for [`Error::InvalidInput`].
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidInput {
            field,
            reason: reason.into(),
        }
    }
}
