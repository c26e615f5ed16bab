//! The [`Engine`]: one set of ports (store, mailer, audit sink), the platform's limits and the host's
//! key, built per request. This module holds the struct and what every concern needs to work
//! through it: reading and writing JSON values, recording changes so that they fail closed
//! (`record.rs`), the user's step state that several concerns share (`state.rs`: the current
//! challenge and the guess counters, with the [`throttle`] rules that judge them), and the
//! organization's branding.
//!
//! What the engine *does* lives in the concern modules above, each an `impl Engine` block: trusted
//! devices ([`crate::devices`]), policy and enrollment ([`crate::policy`]), the login step
//! ([`crate::login`]), administration ([`crate::admin`]) and the web pages ([`crate::web`]). Its
//! code names none of them (`core/tests/layers.rs` checks), so each of them can name it.
//!
//! It guarantees that a value that does not parse reads as absent (for every key the core keeps,
//! absent is the restrictive answer), and it never reads a clock or draws entropy: `now` and the
//! RNG are arguments of every call that needs them.

pub(crate) mod record;
pub(crate) mod state;
pub mod throttle;

use serde::{Deserialize, Serialize};

use crate::email::branding::Branding;
use crate::kernel::error::{Error, Result};
use crate::kernel::keys;
use crate::kernel::ports::{AuditSink, Mailer, Store};
use crate::kernel::secret::HmacKey;
use crate::kernel::settings::Settings;

/// The MFA engine over one set of ports. Cheap to build: build one per request.
pub struct Engine<'a> {
    /// Storage.
    pub store: &'a dyn Store,
    /// Mail.
    pub mailer: &'a dyn Mailer,
    /// Audit trail.
    pub audit: &'a dyn AuditSink,
    /// Limits.
    pub settings: Settings,
    /// The host's key.
    pub key: &'a HmacKey,
}

impl Engine<'_> {
    /// Reads a JSON value. A value that does not parse (a foreign or corrupt record) reads as absent:
    /// for every key here, absent is the restrictive answer (no challenge, empty log, no last failure
    /// — the counters, which cannot be corrupted this way, carry the limits).
    pub(crate) fn load_json<T: for<'de> Deserialize<'de>>(&self, key: &str) -> Result<Option<T>> {
        let bytes = self.store.get(key).map_err(Error::store)?;
        Ok(bytes.and_then(|b| serde_json::from_slice(&b).ok()))
    }

    pub(crate) fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value).map_err(|e| Error::Store(e.to_string()))?;
        self.store.set(key, &bytes).map_err(Error::store)
    }

    /// The organization's branding as stored, or the neutral default.
    pub(crate) fn branding_of(&self, org: &str) -> Result<Branding> {
        Ok(self
            .load_json(&keys::branding(org))?
            .unwrap_or_else(|| Branding::default_for(org)))
    }
}
