//! The [`Engine`]: one set of ports (store, mailer, audit sink), the platform's limits and the host's
//! key, built per request. This module holds the struct and what every concern needs to work
//! through it: reading and writing JSON values, recording changes so that they fail closed
//! (`record.rs`), the user's step state that several concerns share (`state.rs`: the current
//! challenge and the guess counters, with the [`throttle`] rules that judge them), the day counts
//! the admin console draws ([`stats`]), and the organization's branding.
//!
//! What the engine *does* lives in the concern modules above, each an `impl Engine` block: trusted
//! devices ([`crate::devices`]), policy and enrollment ([`crate::policy`]), the login step
//! ([`crate::login`]), administration ([`crate::admin`]) and the web pages ([`crate::web`]). Its
//! code names none of them (`core/tests/layers.rs` checks), so each of them can name it.
//!
//! It guarantees that a stored value that does not parse never reads as absent: [`Engine::load_json`]
//! fails with [`Error::Store`] (the caller sees `unavailable`, and the entry points record it as
//! `access_denied` / `store:unreadable:<kind>` with [`Engine::noting_unreadable`]). "Absent" is the
//! permissive answer for most keys (no policy is the platform's, no grace start starts the grace
//! again, no confirmed address forgets an opt-in, no last wrong code skips the delay), so only a
//! caller that can show absence is the restrictive answer for its key may ask
//! [`Engine::load_stored`] to tell it apart (a trusted device: no device is "ask for a code"). It
//! never reads a clock or draws entropy: `now` and the RNG are arguments of every call that needs
//! them.

pub(crate) mod record;
pub(crate) mod state;
pub mod stats;
#[cfg(test)]
mod stats_tests;
pub mod throttle;

use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};

use crate::audit::Event;
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

/// A stored value as read: absent, parsed, or present but unreadable.
pub(crate) enum Stored<T> {
    /// Nothing stored under the key.
    Absent,
    /// The value.
    Value(T),
    /// Bytes that do not parse as the expected value (a bug, a version skew, a mis-wired host).
    Unreadable,
}

/// The kind of value a key holds, for messages and records: the segment after the layout version
/// (`v1:policy:acme` is a `policy`). Never a value, and never a user's id.
pub(crate) fn kind_of(key: &str) -> &str {
    key.split(':').nth(1).unwrap_or("value")
}

impl Engine<'_> {
    /// Ends one call: commits what its unit of work holds since the last record
    /// ([`Engine::commit`]), so that an answer is given only once what it reports is durable. Every
    /// entry point's answer passes through here, refusals too. When the commit fails, the answer,
    /// whatever it was, becomes [`Error::Store`] (`unavailable`).
    ///
    /// # Errors
    /// `result`'s, or [`Error::Store`] when the commit failed.
    pub fn end_call<T>(&self, result: Result<T>) -> Result<T> {
        self.commit()?;
        result
    }

    /// Commits the call's unit of work so far (`wit/store.wit`, "Unit of work"): every value
    /// written since the last commit and every record appended, kept together or not at all.
    /// The engine commits with each record ([`Engine::append`]), so that a record and the change
    /// it describes stand or fall together and a failure is met where the record was made (its
    /// caller takes back the counters it spent); where it checks after a write that others must
    /// see first (a device's write-back, see `devices::trust`); and at the end of every call.
    ///
    /// # Errors
    /// [`Error::Store`]: the records since the last commit were not kept, and the values may or
    /// may not have been (`wit/store.wit`): callers put back what they wrote, as for a refused
    /// record.
    pub(crate) fn commit(&self) -> Result<()> {
        self.store.commit().map_err(Error::store)
    }

    /// Reads a JSON value: `None` when absent. A value that does not parse is an error
    /// ([`Error::unreadable`], seen by callers as `unavailable`), never absent.
    ///
    /// # Errors
    /// [`Error::Store`] when the store fails or the value does not parse.
    pub(crate) fn load_json<T: for<'de> Deserialize<'de>>(&self, key: &str) -> Result<Option<T>> {
        match self.load_stored(key)? {
            Stored::Absent => Ok(None),
            Stored::Value(value) => Ok(Some(value)),
            Stored::Unreadable => Err(Error::unreadable(kind_of(key))),
        }
    }

    /// Reads a JSON value, telling an unreadable one apart. Only for keys whose absence is provably
    /// the restrictive answer; the caller decides (and records) what an unreadable value means.
    ///
    /// # Errors
    /// [`Error::Store`] when the store fails.
    pub(crate) fn load_stored<T: for<'de> Deserialize<'de>>(&self, key: &str) -> Result<Stored<T>> {
        Ok(match self.store.get(key).map_err(Error::store)? {
            None => Stored::Absent,
            Some(bytes) => serde_json::from_slice(&bytes).map_or(Stored::Unreadable, Stored::Value),
        })
    }

    /// Hands `result` on; when it failed on a stored value that does not parse, first records that
    /// (`event()`'s stream and parties, reason `store:unreadable:<kind>`), so that an operator sees
    /// which kind of value is broken. Best effort: the caller is answered `unavailable` either way.
    pub(crate) fn noting_unreadable<T, R: CryptoRng + ?Sized>(
        &self,
        result: Result<T>,
        event: impl FnOnce() -> Event,
        now: crate::kernel::time::Timestamp,
        rng: &mut R,
    ) -> Result<T> {
        if let Err(e) = &result
            && let Some(kind) = e.unreadable_kind()
        {
            let mut event = event();
            event.reason = Some(format!("store:unreadable:{kind}"));
            let _ = self.record(event, now, rng);
        }
        result
    }

    /// `ctx` as the core uses it: its ids and roles folded when `id_case = fold`.
    pub(crate) fn canonical_context<'c>(
        &self,
        ctx: &'c crate::kernel::model::LoginContext,
    ) -> std::borrow::Cow<'c, crate::kernel::model::LoginContext> {
        crate::kernel::input::canonical_context(self.settings.fold_ids, ctx)
    }

    /// `actor` as the core uses it: its ids and roles folded when `id_case = fold`.
    pub(crate) fn canonical_actor<'a>(
        &self,
        actor: &'a crate::kernel::model::Actor,
    ) -> std::borrow::Cow<'a, crate::kernel::model::Actor> {
        crate::kernel::input::canonical_actor(self.settings.fold_ids, actor)
    }

    /// An id or role as the core uses it: folded when `id_case = fold`.
    pub(crate) fn canonical_id<'a>(&self, id: &'a str) -> std::borrow::Cow<'a, str> {
        crate::kernel::input::canonical(self.settings.fold_ids, id)
    }

    /// Writes `value` as JSON at `key`, to be kept until `expires_at` (see [`keys`], "Expiry").
    pub(crate) fn put<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        expires_at: Option<i64>,
    ) -> Result<()> {
        let bytes = serde_json::to_vec(value).map_err(|e| Error::Store(e.to_string()))?;
        self.store
            .set(key, &bytes, expires_at)
            .map_err(Error::store)
    }

    /// The organization's branding as stored, or the neutral default.
    pub(crate) fn branding_of(&self, org: &str) -> Result<Branding> {
        Ok(self
            .load_json(&keys::branding(org))?
            .unwrap_or_else(|| Branding::default_for(org)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic, reason = "tests")]
mod tests {
    use super::*;
    use crate::testing::{MemAudit, MemMailer, MemStore};

    #[test]
    fn a_value_that_does_not_parse_is_unavailable_never_absent() {
        let (store, mailer, audit) = (
            MemStore::default(),
            MemMailer::default(),
            MemAudit::default(),
        );
        let key = HmacKey::from_hex(&"00".repeat(32)).unwrap();
        let engine = Engine {
            store: &store,
            mailer: &mailer,
            audit: &audit,
            settings: Settings::default(),
            key: &key,
        };
        let policy = keys::policy("acme");
        assert_eq!(engine.load_json::<Vec<String>>(&policy), Ok(None));
        store.set(&policy, b"[\"a\"]", None).unwrap();
        assert_eq!(
            engine.load_json::<Vec<String>>(&policy),
            Ok(Some(vec!["a".to_owned()]))
        );
        for garbage in [&b"\xff{"[..], b"", b"{\"a\":1}", b"null"] {
            store.set(&policy, garbage, None).unwrap();
            let err = engine.load_json::<Vec<String>>(&policy).unwrap_err();
            assert_eq!(err.unreadable_kind(), Some("policy"), "{garbage:?}");
            assert!(matches!(err, Error::Store(_)), "seen as unavailable");
            assert!(matches!(
                engine.load_stored::<Vec<String>>(&policy),
                Ok(Stored::Unreadable)
            ));
        }
        // A store failure is not an unreadable value.
        store.fail.set(true);
        let err = engine.load_json::<Vec<String>>(&policy).unwrap_err();
        assert_eq!(err.unreadable_kind(), None);
    }

    #[test]
    fn the_kind_of_a_key_names_no_value() {
        assert_eq!(kind_of(&keys::policy("acme")), "policy");
        assert_eq!(kind_of(&keys::platform_roles()), "platform-roles");
        assert_eq!(kind_of(&keys::grace_start("acme", "u")), "grace-start");
        assert_eq!(kind_of(&keys::device("acme", "u", "d")), "device");
        assert_eq!(kind_of("odd"), "value");
    }

    #[test]
    fn an_undo_puts_back_a_key_written_twice_as_it_was_before_the_first_write() {
        let (store, mailer, audit) = (
            MemStore::default(),
            MemMailer::default(),
            MemAudit::default(),
        );
        let key = HmacKey::from_hex(&"00".repeat(32)).unwrap();
        let engine = Engine {
            store: &store,
            mailer: &mailer,
            audit: &audit,
            settings: Settings::default(),
            key: &key,
        };
        store.set("v", b"original", None).unwrap();
        store.increment("c", 5, None).unwrap();
        let before = store.snapshot();
        let mut undo = record::Undo::default();
        for (value, delta) in [(&b"first"[..], 2), (&b"second"[..], 3)] {
            engine.remember_value(&mut undo, "v", None).unwrap();
            engine.remember_counter(&mut undo, "c", None).unwrap();
            store.set("v", value, None).unwrap();
            store.increment("c", delta, None).unwrap();
        }
        engine.remember_value(&mut undo, "new", None).unwrap();
        store.set("new", b"x", None).unwrap();
        engine.undo(undo);
        assert_eq!(store.snapshot(), before);
    }
}
