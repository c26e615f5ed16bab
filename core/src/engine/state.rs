//! The state of a user's step that several concerns share: the current challenge (at most one per
//! user, with the seed of its code, never the code) and the guess counters behind the lock.
//!
//! The login step ([`crate::login`]) drives a challenge through its life; enrollment
//! ([`crate::policy::enrollment`]) opens one to confirm an address; administration resets it. They
//! all read and write it here, so a challenge is opened, replaced and judged locked in one way only:
//! opening one replaces the user's earlier challenge and forgets its per-code counters, and it is
//! recorded (`challenge_started`) or withdrawn. A seed is redacted in `Debug`.

use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};

use crate::audit::{Action, Outcome};
use crate::engine::Engine;
use crate::engine::record::{EventExt, Who};
use crate::engine::throttle::{self, GuessState};
use crate::kernel::error::{Error, Result};
use crate::kernel::model::{ChallengeView, Explanation, Purpose};
use crate::kernel::time::Timestamp;
use crate::kernel::{input, keys, random};

/// A code that was sent: its seed, never the code.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredCode {
    pub(crate) generation: u32,
    pub(crate) seed: String,
    pub(crate) issued_at: Timestamp,
    pub(crate) expires_at: Timestamp,
}

impl std::fmt::Debug for StoredCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCode")
            .field("generation", &self.generation)
            .field("seed", &"<redacted>")
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The user's current challenge, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredChallenge {
    pub(crate) v: u8,
    pub(crate) id: String,
    pub(crate) purpose: Purpose,
    /// Where the code goes.
    pub(crate) email: String,
    pub(crate) created_at: Timestamp,
    pub(crate) expires_at: Timestamp,
    pub(crate) code: Option<StoredCode>,
    /// For an address being confirmed: whether the user enrols of their own accord.
    #[serde(default)]
    pub(crate) opt_in: bool,
}

impl Engine<'_> {
    /// Opens a challenge (replacing the user's earlier one), recorded as `challenge_started`.
    #[allow(
        clippy::too_many_arguments,
        reason = "one call site per purpose, all named"
    )]
    pub(crate) fn open_challenge<R: CryptoRng + ?Sized>(
        &self,
        who: &Who<'_>,
        purpose: Purpose,
        email: &str,
        opt_in: bool,
        why: Explanation,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<ChallengeView> {
        let challenge = StoredChallenge {
            v: 1,
            id: random::new_id(rng),
            purpose,
            email: email.to_owned(),
            created_at: now,
            expires_at: now.plus(self.settings.challenge_ttl_seconds),
            code: None,
            opt_in,
        };
        let challenge_key = keys::challenge(who.org, who.user);
        let event = who
            .event(Action::ChallengeStarted, Outcome::Success)
            .reason(&why.rule);
        // If the record cannot be written the challenge is withdrawn: no unrecorded login step.
        let previous = self.put_recorded(
            &challenge_key,
            &challenge,
            event.challenge(&challenge.id),
            now,
            rng,
        )?;
        if let Some(old) = previous
            .as_deref()
            .and_then(|b| serde_json::from_slice::<StoredChallenge>(b).ok())
        {
            self.forget_counters(&old);
        }
        Ok(ChallengeView {
            challenge_id: challenge.id,
            purpose: challenge.purpose,
            masked_email: input::mask_email(&challenge.email),
            expires_at: challenge.expires_at,
            why,
        })
    }

    /// The challenge stored at `key`, if any (see [`Engine::load_json`]).
    pub(crate) fn load_challenge(&self, key: &str) -> Result<Option<StoredChallenge>> {
        self.load_json(key)
    }

    /// Drops a replaced challenge's per-code counters. Best effort: leftovers are unreachable.
    pub(crate) fn forget_counters(&self, old: &StoredChallenge) {
        let last = old.code.as_ref().map_or(0, |c| c.generation);
        for generation in 0..=last {
            let _ = self.store.delete(&keys::attempts(&old.id, generation));
            let _ = self.store.delete(&keys::used(&old.id, generation));
        }
    }

    /// The user's guess counters, as [`throttle`] judges them.
    pub(crate) fn guess_state(&self, who: &Who<'_>, now: Timestamp) -> Result<GuessState> {
        let failures = self
            .store
            .increment(&keys::failures(who.org, who.user), 0)
            .map_err(Error::store)?;
        let window_key = keys::failures_window(who.org, who.user, throttle::failure_window(now));
        let window_failures = self.store.increment(&window_key, 0).map_err(Error::store)?;
        let last_failure = self.load_json::<Timestamp>(&keys::last_failure(who.org, who.user))?;
        Ok(GuessState {
            failures,
            window_failures,
            last_failure,
        })
    }

    /// Refuses (and records) a locked user.
    pub(crate) fn refuse_if_locked<R: CryptoRng + ?Sized>(
        &self,
        who: &Who<'_>,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<()> {
        if self.guess_state(who, now)?.locked() {
            self.record(
                who.event(Action::AccessDenied, Outcome::Denied)
                    .reason("user:locked"),
                now,
                rng,
            )?;
            return Err(Error::Locked);
        }
        Ok(())
    }
}
