//! The state of a user's step that several concerns share: the current challenge (at most one per
//! user, with the seed of its code, never the code) and the guess counters behind the lock.
//!
//! The login step ([`crate::login`]) drives a challenge through its life; enrollment
//! ([`crate::policy::enrollment`]) opens one to confirm an address; administration resets it. They
//! all read and write it here, so a challenge is opened, resumed, replaced and judged locked in one
//! way only: asking for one while the user's challenge for the same purpose and address is live
//! (its code unused, room left for a code's full life) and was opened by the same browser on the
//! same network (the address and user agent its opening was recorded with) resumes it, unchanged
//! and unrecorded, so
//! that an IdP that asks again on each render of its prompt neither spends an email nor strands the
//! code already sent; otherwise opening one replaces the user's earlier challenge and is recorded
//! (`challenge_started`) or withdrawn. A replaced challenge's per-code counters (`attempts`, `used`) are kept: a verify that
//! loaded the old challenge before the replace may still be running, and deleting its `used`
//! counter would let the same code succeed a second time. A seed is redacted in `Debug`.
//!
//! It also takes the numbered slots every limit is counted with ([`Engine::take_slot`], the rules
//! in [`throttle`]): the slot is taken by an atomic `increment` *before* anything is looked at, and
//! stamped with the caller's `now` before its owner goes on.

use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};

use crate::audit::{Action, Outcome};
use crate::engine::Engine;
use crate::engine::record::{EventExt, Who};
use crate::engine::throttle::{self, GuessState, SendRoom, Stamp};
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
    /// The seed every code of this challenge derives from (each generation its own code), drawn
    /// when the challenge opens: sends racing to mint its first code mint the same one. Absent in a
    /// challenge stored before it existed (a random seed per code then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) seed: Option<Secret>,
    /// Who opened it: a keyed hash of the client's address and user agent ([`opener`]), so that
    /// only the same browser on the same network resumes it. Absent in a challenge stored before
    /// it existed, which is never resumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) opener: Option<String>,
}

/// The keyed hash that ties a challenge to the browser that opened it: its address and user agent,
/// as the audit record of its opening names them. Keyed, so the store holds neither in the clear.
fn opener(key: &crate::kernel::secret::HmacKey, who: &Who<'_>) -> String {
    let ip_len = who.ip.len().to_string();
    hex::encode(crate::kernel::secret::hmac_sha256(
        key.as_bytes(),
        &[
            b"mfa-step/challenge-opener/v1\0",
            ip_len.as_bytes(),
            b":",
            who.ip.as_bytes(),
            who.user_agent.as_bytes(),
        ],
    ))
}

/// A seed as stored, redacted in `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Secret(pub(crate) String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A kind of numbered slot (see [`throttle`]): where its keys are and which rule judges it.
pub(crate) struct Slots<'a> {
    /// The counter of slots taken (the hint).
    pub(crate) count: &'a str,
    /// Slot `k`'s claim counter.
    pub(crate) claim: &'a dyn Fn(i64) -> String,
    /// Slot `k`'s stamp.
    pub(crate) stamp: &'a dyn Fn(i64) -> String,
    /// The slot `k` depends on, and the spacing after it.
    pub(crate) rule: &'a dyn Fn(i64) -> (i64, i64),
    /// The last slot that may be taken, if any.
    pub(crate) limit: Option<i64>,
    /// The first slot whose stamp any rule reads (earlier ones are not stamped).
    pub(crate) stamped_from: i64,
    /// The longest spacing `rule` gives: how long after its stamp a slot can make another wait.
    pub(crate) longest_spacing: i64,
    /// How long after the latest slot the count of slots taken is kept (at least
    /// `longest_spacing`), or `None` for good. The count is what a new slot number starts from,
    /// so it is kept longer than every claim and stamp (see [`keys`], "Expiry").
    pub(crate) count_kept: Option<i64>,
}

/// The expiries of a slot taken at `now` under `slots`: its claim's, its stamp's (later, so that a
/// remembered claim always has its stamp), and the count's (later still).
fn slot_expiries(slots: &Slots<'_>, now: Timestamp) -> (Option<i64>, Option<i64>, Option<i64>) {
    let claim = now.plus(slots.longest_spacing);
    (
        keys::keep_until(claim),
        keys::keep_until(claim.plus(STAMP_AFTER_CLAIM)),
        slots
            .count_kept
            .and_then(|kept| keys::guard_until(now.plus(kept.max(slots.longest_spacing)))),
    )
}

/// How much longer a slot's stamp is kept than its claim.
const STAMP_AFTER_CLAIM: i64 = 60;

/// The outcome of [`Engine::take_slot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Taken {
    /// This call owns slot `k` (stamped).
    Slot(i64),
    /// The next slot opens at this time; nothing was taken.
    Wait(Timestamp),
    /// Past the limit; nothing was taken.
    Full,
}

impl Engine<'_> {
    /// Opens a challenge (replacing the user's earlier one), recorded as `challenge_started`; or
    /// resumes the user's live one for the same purpose and address (see the module docs).
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
        self.open_or_resume(who, purpose, email, opt_in, why, now, rng)
            .map(|(view, _)| view)
    }

    /// [`Engine::open_challenge`], telling whether the challenge is a new one (`true`: opened and
    /// recorded) or the user's live one resumed (`false`: nothing changed, nothing recorded).
    #[allow(
        clippy::too_many_arguments,
        reason = "one call site per purpose, all named"
    )]
    pub(crate) fn open_or_resume<R: CryptoRng + ?Sized>(
        &self,
        who: &Who<'_>,
        purpose: Purpose,
        email: &str,
        opt_in: bool,
        why: Explanation,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<(ChallengeView, bool)> {
        let challenge_key = keys::challenge(who.org, who.user);
        let opener = opener(self.key, who);
        // Read once: whether it can be resumed, and what to put back if the new one's record fails.
        let previous = self.store.get(&challenge_key).map_err(Error::store)?;
        if let Some(live) =
            self.resumable(previous.as_deref(), purpose, email, opt_in, &opener, now)?
        {
            let view = ChallengeView {
                challenge_id: live.id,
                purpose: live.purpose,
                masked_email: input::mask_email(&live.email),
                expires_at: live.expires_at,
                why,
            };
            return Ok((view, false));
        }
        let challenge = StoredChallenge {
            v: 1,
            id: random::new_id(rng),
            purpose,
            email: email.to_owned(),
            created_at: now,
            expires_at: now.plus(self.settings.challenge_ttl_seconds),
            code: None,
            opt_in,
            seed: Some(Secret(random::new_seed(rng))),
            opener: Some(opener),
        };
        let event = who
            .event(Action::ChallengeStarted, Outcome::Success)
            .reason(&why.rule);
        // If the record cannot be written the challenge is withdrawn: no unrecorded login step.
        // The replaced challenge's counters stay (see the module doc).
        self.replace_recorded(
            &challenge_key,
            previous,
            (&challenge, keys::keep_until(challenge.expires_at)),
            event.challenge(&challenge.id),
            now,
            rng,
        )?;
        let view = ChallengeView {
            challenge_id: challenge.id,
            purpose: challenge.purpose,
            masked_email: input::mask_email(&challenge.email),
            expires_at: challenge.expires_at,
            why,
        };
        Ok((view, true))
    }

    /// The stored challenge `stored` (the user's, as read) when it can be resumed for `purpose`,
    /// `email` and `opt_in` by `opener`: the same ones, the same browser on the same network, room
    /// left for a code sent now to live its whole life, and its current code (if one was sent) not
    /// used. A challenge that does not parse is replaced, never resumed.
    #[allow(
        clippy::too_many_arguments,
        reason = "what a resume must match, each named"
    )]
    fn resumable(
        &self,
        stored: Option<&[u8]>,
        purpose: Purpose,
        email: &str,
        opt_in: bool,
        opener: &str,
        now: Timestamp,
    ) -> Result<Option<StoredChallenge>> {
        let Some(Ok(live)) = stored.map(serde_json::from_slice::<StoredChallenge>) else {
            return Ok(None);
        };
        if live.purpose != purpose
            || live.email != email
            || live.opt_in != opt_in
            || live.opener.as_deref() != Some(opener)
            || now.plus(self.settings.code_ttl_seconds) > live.expires_at
        {
            return Ok(None);
        }
        if let Some(code) = &live.code {
            let used = self
                .store
                .increment(&keys::used(&live.id, code.generation), 0, None)
                .map_err(Error::store)?;
            if used != 0 {
                return Ok(None);
            }
        }
        Ok(Some(live))
    }

    /// The challenge stored at `key`, if any (see [`Engine::load_json`]).
    pub(crate) fn load_challenge(&self, key: &str) -> Result<Option<StoredChallenge>> {
        self.load_json(key)
    }

    /// The user's current guess streak (see [`keys::streak`]).
    pub(crate) fn streak_of(&self, who: &Who<'_>) -> Result<i64> {
        self.store
            .increment(&keys::streak(who.org, who.user), 0, None)
            .map_err(Error::store)
    }

    /// The user's guess counters in `streak`, as [`throttle`] judges them.
    pub(crate) fn guess_state_in(
        &self,
        who: &Who<'_>,
        streak: i64,
        now: Timestamp,
    ) -> Result<GuessState> {
        let failures = self
            .store
            .increment(&keys::failures(who.org, who.user, streak), 0, None)
            .map_err(Error::store)?;
        let window_key = keys::failures_window(who.org, who.user, throttle::failure_window(now));
        let window_failures = self
            .store
            .increment(&window_key, 0, None)
            .map_err(Error::store)?;
        // Only a slot from the 5th on is stamped (and only then does the next one wait).
        let last_failure = if failures >= throttle::DELAY_FROM {
            self.stamp(
                &keys::guess_at(who.org, who.user, streak, failures),
                &keys::guess_slot(who.org, who.user, streak, failures),
                failures,
            )?
        } else {
            Stamp::None
        };
        Ok(GuessState {
            failures,
            window_failures,
            last_failure,
        })
    }

    /// The user's guess counters, as [`throttle`] judges them.
    pub(crate) fn guess_state(&self, who: &Who<'_>, now: Timestamp) -> Result<GuessState> {
        let streak = self.streak_of(who)?;
        self.guess_state_in(who, streak, now)
    }

    /// The stamp of slot number `slot` stored at `key`, whose claim is `claim` (a slot below 1 has
    /// none to wait for): the later of its owner's stamp and the time a call first found it
    /// unstamped ([`keys::stamp_seen`]); in flight when it has neither but is claimed; nothing to
    /// wait for when its claim is gone too, which happens only once its spacing has run out.
    pub(crate) fn stamp(&self, key: &str, claim: &str, slot: i64) -> Result<Stamp> {
        if slot < 1 {
            return Ok(Stamp::None);
        }
        let owner = self.load_json::<Timestamp>(key)?;
        let seen = self.load_json::<Timestamp>(&keys::stamp_seen(key))?;
        Ok(match (owner, seen) {
            (Some(a), Some(b)) => Stamp::At(a.max(b)),
            (Some(t), None) | (None, Some(t)) => Stamp::At(t),
            (None, None) => {
                if self.store.increment(claim, 0, None).map_err(Error::store)? > 0 {
                    Stamp::InFlight
                } else {
                    // Forgotten (expired): nothing to wait for. A slot below the count that was
                    // never claimed cannot be (the count only follows claims).
                    Stamp::None
                }
            }
        })
    }

    /// Takes the first free slot from `hint + 1` on, judging each before taking it (see
    /// [`throttle`]): `rule(k)` names the slot `k` depends on and the spacing after it. Slots
    /// above `limit` are never taken. The slot is stamped with `now` before it is handed back.
    ///
    /// # Errors
    /// [`Error::Store`]; a failure after the slot is taken leaves it spent (never given back).
    pub(crate) fn take_slot(&self, slots: &Slots<'_>, hint: i64, now: Timestamp) -> Result<Taken> {
        let mut k = hint.max(0) + 1;
        let (claim_kept, stamp_kept, count_kept) = slot_expiries(slots, now);
        loop {
            if slots.limit.is_some_and(|limit| k > limit) {
                return Ok(Taken::Full);
            }
            let (earlier, spacing) = (slots.rule)(k);
            if spacing > 0 {
                let key = (slots.stamp)(earlier);
                let mut stamp = self.stamp(&key, &(slots.claim)(earlier), earlier)?;
                if stamp == Stamp::InFlight {
                    // Taken, not stamped: its owner is calling now, or failed between taking and
                    // stamping it. Note when we saw it so, beside (never over) the owner's stamp:
                    // the slot counts from the later of the two, so an orphan costs one spacing,
                    // never a wait that nothing ends, and a live owner's stamp is never moved back.
                    self.put(&keys::stamp_seen(&key), &now, stamp_kept)?;
                    stamp = Stamp::At(now);
                }
                if let Some(until) = throttle::wait_after(stamp, spacing, now) {
                    return Ok(Taken::Wait(until));
                }
            }
            if self
                .store
                .increment(&(slots.claim)(k), 1, claim_kept)
                .map_err(Error::store)?
                == 1
            {
                if k >= slots.stamped_from {
                    self.put(&(slots.stamp)(k), &now, stamp_kept)?;
                }
                self.store
                    .increment(slots.count, 1, count_kept)
                    .map_err(Error::store)?;
                return Ok(Taken::Slot(k));
            }
            k += 1;
        }
    }

    /// Takes the user's next guess slot in `streak` (at most [`throttle::LOCK_AT`]).
    pub(crate) fn take_guess_slot(
        &self,
        who: &Who<'_>,
        streak: i64,
        hint: i64,
        now: Timestamp,
    ) -> Result<Taken> {
        let (org, user) = (who.org, who.user);
        let count = keys::failures(org, user, streak);
        let slots = Slots {
            count: &count,
            claim: &|k| keys::guess_slot(org, user, streak, k),
            stamp: &|k| keys::guess_at(org, user, streak, k),
            rule: &throttle::guess_rule,
            limit: Some(throttle::LOCK_AT),
            // Slot k waits after slot k − 1 only from the 5th failure on.
            stamped_from: throttle::DELAY_FROM,
            longest_spacing: throttle::MAX_DELAY_SECONDS,
            // The streak's count is its lock and its delays: kept for good while the streak lasts
            // (a success or a reset deletes it), so no quiet spell lifts a lock or resets a delay.
            count_kept: None,
        };
        self.take_slot(&slots, hint, now)
    }

    /// Takes the user's next send slot (the window's rule from the settings).
    pub(crate) fn take_send_slot(&self, who: &Who<'_>, now: Timestamp) -> Result<Taken> {
        let (org, user) = (who.org, who.user);
        let (cap, window) = (
            self.settings.sends_per_window,
            self.settings.send_window_seconds,
        );
        let count = keys::sends(org, user);
        // Read with the expiry it is about to get: a count that expires just now is either
        // forgotten before this read (with every slot it counted) or kept past this call, never
        // forgotten between this read and the increment that follows the new slot.
        let hint = self
            .store
            .increment(&count, 0, keys::guard_until(now.plus(window)))
            .map_err(Error::store)?;
        let slots = Slots {
            count: &count,
            claim: &|k| keys::send_slot(org, user, k),
            stamp: &|k| keys::send_at(org, user, k),
            rule: &|k| throttle::send_rule(k, cap, window),
            limit: None,
            stamped_from: 1,
            longest_spacing: window,
            count_kept: Some(window),
        };
        self.take_slot(&slots, hint, now)
    }

    /// Gives back send slot `k`, whose email never went out (its record was refused): its stamp
    /// becomes that of the slot it depended on, so the slot `cap` later waits only as long as it
    /// would have without it. Safe (see [`throttle`]): along every chain `k, k + cap, …` stamps
    /// never decrease, and the proof of the cap needs only that. Best effort: if it fails, the
    /// slot simply stays spent.
    pub(crate) fn void_send_slot(&self, org: &str, user: &str, k: i64, now: Timestamp) {
        let cap = i64::from(self.settings.sends_per_window);
        let earlier = match self.stamp(
            &keys::send_at(org, user, k - cap),
            &keys::send_slot(org, user, k - cap),
            k - cap,
        ) {
            Ok(Stamp::At(t)) => t,
            Ok(Stamp::None) => throttle::VOID,
            // In flight or unreadable: it cannot be given back safely now; it stays spent.
            Ok(Stamp::InFlight) | Err(_) => return,
        };
        // Kept as long as the stamp it replaces (taken at `now`: the slot was taken a moment ago).
        let window = self.settings.send_window_seconds;
        let kept = keys::keep_until(now.plus(window + STAMP_AFTER_CLAIM));
        let _ = self.put(&keys::send_at(org, user, k), &earlier, kept);
    }

    /// The room in the user's send window after send slot `last` (pass the slots taken so far).
    pub(crate) fn send_room(&self, org: &str, user: &str, last: i64) -> Result<SendRoom> {
        let cap = i64::from(self.settings.sends_per_window);
        let stamps = (last - cap + 1..=last)
            .map(|k| {
                self.stamp(
                    &keys::send_at(org, user, k),
                    &keys::send_slot(org, user, k),
                    k,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(SendRoom(stamps))
    }

    /// Whether the user is locked.
    pub(crate) fn is_locked(&self, who: &Who<'_>, now: Timestamp) -> Result<bool> {
        Ok(self.guess_state(who, now)?.locked())
    }

    /// Refuses (and records) a locked user.
    pub(crate) fn refuse_if_locked<R: CryptoRng + ?Sized>(
        &self,
        who: &Who<'_>,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<()> {
        if self.is_locked(who, now)? {
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
