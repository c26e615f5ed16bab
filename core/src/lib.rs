//! # mfa-step core
//!
//! The pure MFA engine. It decides everything (whether a login needs a code, whether a code is
//! right, whether a user is throttled or locked) and owns nothing: storage, mail and audit come in
//! through the [`ports`] traits, the time comes in as a [`Timestamp`] argument and randomness as a
//! [`rand_core::CryptoRng`] argument. It never reads a clock, never touches a file or a socket and
//! never draws entropy of its own, so every rule can be stepped through in a test.
//!
//! The component (`guest/`) and the hosts are adapters over this crate: they translate, never decide.

pub mod admin;
pub mod audit;
pub mod branding;
pub mod chain;
pub mod devices;
pub mod email;
pub mod engine;
pub mod enrollment;
pub mod error;
pub mod hosted;
pub mod i18n;
pub mod input;
pub mod keys;
pub mod model;
pub mod otp;
pub mod policy;
pub mod ports;
pub mod preview_page;
pub mod prompt;
pub mod secret;
pub mod settings;
pub mod throttle;
pub mod time;
mod trust;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use engine::Engine;
pub use error::{Error, Result};
pub use model::*;
pub use ports::{AppendError, AuditEntry, AuditSink, Mailer, OutgoingMail, PortError, Store};
pub use secret::{HmacKey, OtpCode};
pub use settings::Settings;
pub use time::Timestamp;

#[cfg(test)]
mod engine_tests;
