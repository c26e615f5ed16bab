//! Recording: every change the engine makes goes into the audit trail, and a change whose record
//! cannot be written does not stand.
//!
//! Each operation makes its change, then appends its record (which touches only the sink), then
//! reports success; if the sink refuses the record, what the change overwrote is put back
//! ([`Undo`]) and the caller gets [`Error::Audit`]. [`Engine::put_recorded`] and
//! [`Engine::delete_recorded`] hold that ordering for a single value; larger changes note what they
//! overwrite with [`Engine::remember_value`] and [`Engine::remember_counter`]. Appending links the
//! record to its organization's chain and relinks when another writer got there first, so records
//! are never forked or numbered twice (see [`crate::audit::chain`]).
//!
//! [`Who`] names whom a call is about; [`EventExt`] fills in a record's reason, challenge and
//! device. An [`Undo`] holds store values it may put back (a challenge with its code's seed, a
//! device), so its `Debug` shows the keys only.

use rand_core::CryptoRng;
use serde::Serialize;

use crate::audit::chain::SealKey;
use crate::audit::{Action, Event, Outcome};
use crate::engine::Engine;
use crate::kernel::error::{Error, Result};
use crate::kernel::keys;
use crate::kernel::model::LoginContext;
use crate::kernel::ports::{AppendError, AuditEntry, Head};
use crate::kernel::random;
use crate::kernel::time::Timestamp;

/// Who a login-step call is about, for records and keys.
pub(crate) struct Who<'c> {
    pub(crate) org: &'c str,
    pub(crate) user: &'c str,
    pub(crate) ip: String,
    pub(crate) user_agent: &'c str,
}

impl<'c> Who<'c> {
    pub(crate) fn of(ctx: &'c LoginContext, ip: std::net::IpAddr) -> Self {
        Self {
            org: &ctx.org_id,
            user: &ctx.user_id,
            ip: ip.to_string(),
            user_agent: &ctx.device.traits.user_agent,
        }
    }

    pub(crate) fn event(&self, action: Action, outcome: Outcome) -> Event {
        Event {
            org: self.org.to_owned(),
            actor: self.user.to_owned(),
            subject: self.user.to_owned(),
            action,
            outcome,
            reason: None,
            ip: Some(self.ip.clone()),
            user_agent: (!self.user_agent.is_empty()).then(|| self.user_agent.to_owned()),
            device_id: None,
            challenge_id: None,
        }
    }
}

/// Fills in the optional parts of a record.
pub(crate) trait EventExt {
    fn reason(self, reason: &str) -> Self;
    fn challenge(self, id: &str) -> Self;
    fn device(self, id: &str) -> Self;
}

impl EventExt for Event {
    fn reason(mut self, reason: &str) -> Self {
        self.reason = Some(reason.to_owned());
        self
    }
    fn challenge(mut self, id: &str) -> Self {
        self.challenge_id = Some(id.to_owned());
        self
    }
    fn device(mut self, id: &str) -> Self {
        self.device_id = Some(id.to_owned());
        self
    }
}

/// What a change overwrote, to put back if its record cannot be written.
#[derive(Default)]
pub(crate) struct Undo {
    /// A key, what it held, and the expiry to put it back with: the one the change would have
    /// given it, which is never earlier than the value's own (see [`keys`], "Expiry").
    values: Vec<(String, Option<Vec<u8>>, Option<i64>)>,
    /// A counter, its value, and the expiry to put it back with.
    counters: Vec<(String, i64, Option<i64>)>,
}

impl std::fmt::Debug for Undo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let values: Vec<&str> = self.values.iter().map(|(k, _, _)| k.as_str()).collect();
        let counters: Vec<&str> = self.counters.iter().map(|(k, _, _)| k.as_str()).collect();
        f.debug_struct("Undo")
            .field("values", &values)
            .field("counters", &counters)
            .finish()
    }
}

/// How often an append relinks after losing a race for its stream's next position before giving up.
const MAX_APPEND_ATTEMPTS: usize = 32;

impl Engine<'_> {
    /// Appends one audit record to the end of its organization's chain: read the head, link, ask
    /// the sink to append if the head has not moved, and relink when another writer got there first.
    /// Then commits the call's unit of work with it ([`Engine::commit`]): the record and the
    /// changes before it are kept together or not at all, so a caller that takes back what it
    /// spent when the record fails does so for a commit that failed too. Then counts the record in
    /// the store, the anchor that makes a truncated log detectable (a failure there loses nothing:
    /// the log is simply one ahead of its count).
    pub(crate) fn append<R: CryptoRng + ?Sized>(
        &self,
        event: Event,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<()> {
        let id = random::new_id(rng);
        let seal = SealKey::derive(self.key);
        for _ in 0..MAX_APPEND_ATTEMPTS {
            let head = self.audit.head(&event.org).map_err(Error::audit)?;
            let (seq, prev) = Head::next(head.as_ref());
            let (line, hash) = event.seal(&id, seq, now, &prev, Some(&seal));
            let entry = AuditEntry {
                org_id: event.org.clone(),
                seq,
                at: now.0,
                action: event.action.as_str().to_owned(),
                prev,
                hash,
                line,
            };
            match self.audit.append(&entry) {
                Ok(()) => {
                    // The record and the changes before it are durable together, or neither is.
                    self.commit()?;
                    let _ = self
                        .store
                        .increment(&keys::audit_count(&event.org), 1, None);
                    return Ok(());
                }
                Err(AppendError::Conflict) => {}
                Err(AppendError::Unavailable(why)) => return Err(Error::Audit(why)),
            }
        }
        Err(Error::Audit(
            "the organization's audit stream stayed busy; try again".to_owned(),
        ))
    }

    /// Writes one audit record for an event that changes nothing (a refusal, a throttle).
    pub(crate) fn record<R: CryptoRng + ?Sized>(
        &self,
        event: Event,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<()> {
        self.append(event, now, rng)
    }

    /// Writes `value` at `key` as one recorded change: write, append the record; if the sink refuses it, put back what was there before and fail with
    /// [`Error::Audit`]. The one place that holds the fail-closed ordering for a single value.
    /// Returns the value it replaced.
    pub(crate) fn put_recorded<T: Serialize, R: CryptoRng + ?Sized>(
        &self,
        key: &str,
        (value, expires_at): (&T, Option<i64>),
        event: Event,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<Option<Vec<u8>>> {
        let previous = self.store.get(key).map_err(Error::store)?;
        self.replace_recorded(key, previous, (value, expires_at), event, now, rng)
    }

    /// [`Engine::put_recorded`] for a caller that has just read what `key` holds (`previous`),
    /// which is put back if the record is refused; returns it.
    pub(crate) fn replace_recorded<T: Serialize, R: CryptoRng + ?Sized>(
        &self,
        key: &str,
        previous: Option<Vec<u8>>,
        (value, expires_at): (&T, Option<i64>),
        event: Event,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<Option<Vec<u8>>> {
        self.put(key, value, expires_at)?;
        if let Err(e) = self.append(event, now, rng) {
            let _ = match &previous {
                Some(bytes) => self.store.set(key, bytes, expires_at),
                None => self.store.delete(key),
            };
            return Err(e);
        }
        Ok(previous)
    }

    /// Removes `key` as one recorded change, putting it back (kept until `expires_at`) if the
    /// record cannot be written.
    pub(crate) fn delete_recorded<R: CryptoRng + ?Sized>(
        &self,
        (key, expires_at): (&str, Option<i64>),
        event: Event,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<()> {
        let mut undo = Undo::default();
        self.remember_value(&mut undo, key, expires_at)?;
        self.store.delete(key).map_err(Error::store)?;
        self.append(event, now, rng)
            .inspect_err(|_| self.undo(undo))
    }

    /// Notes a value's current content, to put it back with [`Engine::undo`] and keep until
    /// `expires_at`: the expiry the change about to be made gives the key.
    pub(crate) fn remember_value(
        &self,
        undo: &mut Undo,
        key: &str,
        expires_at: Option<i64>,
    ) -> Result<()> {
        let value = self.store.get(key).map_err(Error::store)?;
        undo.values.push((key.to_owned(), value, expires_at));
        Ok(())
    }

    /// Notes a counter's current value, to put it back with [`Engine::undo`] (kept until
    /// `expires_at` if it must be made again).
    pub(crate) fn remember_counter(
        &self,
        undo: &mut Undo,
        key: &str,
        expires_at: Option<i64>,
    ) -> Result<()> {
        let value = self.store.increment(key, 0, None).map_err(Error::store)?;
        undo.counters.push((key.to_owned(), value, expires_at));
        Ok(())
    }

    /// Puts back what `undo` noted, after the record of a change was refused, newest first: a key
    /// noted twice (written twice in one change) ends as it was before the first write. Best
    /// effort: the store just failed or the sink did, and the caller is answered with that error
    /// either way.
    pub(crate) fn undo(&self, undo: Undo) {
        for (key, value, expires_at) in undo.values.into_iter().rev() {
            let _ = match value {
                Some(bytes) => self.store.set(&key, &bytes, expires_at),
                None => self.store.delete(&key),
            };
        }
        for (key, value, expires_at) in undo.counters.into_iter().rev() {
            if let Ok(now) = self.store.increment(&key, 0, None) {
                let _ = self.store.increment(&key, value - now, expires_at);
            }
        }
    }
}
