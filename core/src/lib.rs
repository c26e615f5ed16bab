//! # mfa-step core
//!
//! The pure MFA engine. It decides everything (whether a login needs a code, whether a code is
//! right, whether a user is throttled or locked) and owns nothing: storage, mail and audit come in
//! through the [`kernel::ports`] traits, the time comes in as a [`Timestamp`] argument and randomness
//! as a [`rand_core::CryptoRng`] argument. It never reads a clock (`core/clippy.toml` forbids it),
//! never touches a file or a socket and never draws entropy of its own, so every rule can be stepped
//! through in a test.
//!
//! The component (`guest/`) and the hosts are adapters over this crate: they translate, never decide.
//!
//! ## Map
//!
//! Folders by concern, arrows one way: a module names only modules in layers below its own (see
//! `core/README.md`, whose layer table `core/tests/layers.rs` reads and enforces).
//!
//! ```text
//!  redaction_tests  (tests only) every secret-holding type, formatted with a marker inside
//!  web              prompt protocol, hosted pages, preview page, admin console
//!  admin            policies, branding, platform roles, user resets and status
//!  login            begin, send-code, verify, status; one-time codes
//!  policy           who must use MFA; an organization's policy; enrollment
//!  devices  roster  trusted browsers: the rules and the flows | who the users are
//!  engine           the Engine; recorded writes; challenge and guess state; throttles; day counts
//!  audit  email  testing
//!                   audit events, hash chain, log verification | branding, languages, the code
//!                   email | in-memory port fakes
//!  kernel           errors, ports, secrets, time, keys, input, settings, model, ids, authority
//! ```

pub mod admin;
pub mod audit;
pub mod devices;
pub mod email;
pub mod engine;
pub mod kernel;
pub mod login;
pub mod policy;
pub mod roster;
pub mod web;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

#[cfg(test)]
mod redaction_tests;

pub use engine::Engine;
pub use kernel::error::{Error, Result};
pub use kernel::model::*;
pub use kernel::ports::{
    AppendError, AuditEntry, AuditSink, Mailer, OutgoingMail, PortError, Store,
};
pub use kernel::secret::{HmacKey, OtpCode};
pub use kernel::settings::Settings;
pub use kernel::time::Timestamp;
