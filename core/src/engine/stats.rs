//! Day counts: per organization and per UTC day, how `begin` decided (let through, refused, a code
//! required at login or to enroll, a trusted browser), how many code emails went out or were
//! refused, how many codes were used, how many users enrolled, were throttled or locked.
//! The admin console's "Adoption and health" page reads them; nothing decides anything from them.
//!
//! They are kept as events happen, never by scanning the trail (Spin has no cheap scan, and a page
//! view must not cost a read of every record): the concern that decides an event counts it, once
//! its record is written, with the store's atomic `increment` (no read-modify-write). Each call
//! counts at most what it decided, once: a `begin` one outcome (so "logins that reached the step"
//! is the sum of the outcomes, [`DayCounts::reached`], not a counter of its own), a verified code
//! either `verified` or `enrolled` ([`DayCounts::verified`] adds them). Every increment is a write on
//! the login path, so there are no more of them than that.
//!
//! ```text
//!  event decided ─▶ record appended ─▶ increment v1:stat:<org>:<day>:<stat>:<shard>   shard = rng % 8
//!                                          │ fails
//!                                          ├─▶ increment v1:stat-lost:<org>:<day>     (best effort)
//!                                          └─▶ note-refusal "stats:not-counted:<stat>" (host's log)
//!  page view ─▶ sum the 8 shards of each stat and day; a day closed for two days is summed once
//!               and kept whole under v1:stat-day:<org>:<day>
//! ```
//!
//! **Sharded.** A busy organization's logins would all bump the same counter, and a store that
//! serializes writes to one key would serialize them. Each increment picks one of [`SHARDS`] keys
//! at random; the reader sums them. Nothing is lost to a race: each shard is an atomic counter.
//!
//! **A statistic, not a record.** The audit trail is the record of truth. A count that cannot be
//! written changes nothing about the call that made it (a login is neither refused nor let through
//! because of it, and its answer is the same): the failure is made visible instead, as a `lost`
//! count the page shows ("figures may be short") and a note in the host's log. An event counted
//! whose call then fails at its final commit stays counted: the figures may be one ahead of the
//! trail, never a reason to refuse a login.
//!
//! **Kept [`KEEP_DAYS`].** Every key expires [`KEEP_DAYS`] after its day ends; the page asks for at
//! most 90 days.

use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};

use crate::engine::Engine;
use crate::kernel::error::{Error, Result};
use crate::kernel::keys;
use crate::kernel::ports::RefusalNote;
use crate::kernel::time::Timestamp;

/// How many counters one day's stat is spread over.
pub const SHARDS: u32 = 8;
/// How long a day's counts are kept after the day ends.
pub const KEEP_DAYS: i64 = 400;
/// Seconds in a UTC day.
pub const DAY_SECONDS: i64 = 86_400;

/// What is counted. The names are the keys' and the page's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    /// A `begin` let through without a code (no rule requires one, or the grace period).
    Allowed,
    /// A `begin` refused (the user is locked).
    Denied,
    /// A `begin` that opened a challenge for a login (a code was required). The same browser back
    /// at its live challenge is not counted again.
    ChallengeLogin,
    /// A `begin` that opened a challenge to enroll (confirm an address), likewise.
    ChallengeEnrollment,
    /// A code email the mail service accepted (a first send or a re-send).
    CodeSent,
    /// A code email the mail service refused at send time.
    DeliveryFailed,
    /// A code accepted for a login or an address change (an enrollment's code counts as
    /// [`Stat::Enrolled`]).
    Verified,
    /// An enrollment completed: its code accepted, the address confirmed for the first time.
    Enrolled,
    /// A `begin` let through by a trusted browser.
    Trusted,
    /// A send or a guess refused by a throttle.
    Throttled,
    /// A user locked.
    Locked,
}

impl Stat {
    /// Every stat, in the order [`DayCounts::counts`] holds them.
    pub const ALL: [Self; 11] = [
        Self::Allowed,
        Self::Denied,
        Self::ChallengeLogin,
        Self::ChallengeEnrollment,
        Self::CodeSent,
        Self::DeliveryFailed,
        Self::Verified,
        Self::Enrolled,
        Self::Trusted,
        Self::Throttled,
        Self::Locked,
    ];

    /// The stat's name in keys.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Denied => "denied",
            Self::ChallengeLogin => "challenge-login",
            Self::ChallengeEnrollment => "challenge-enrollment",
            Self::CodeSent => "code-sent",
            Self::DeliveryFailed => "delivery-failed",
            Self::Verified => "verified",
            Self::Enrolled => "enrolled",
            Self::Trusted => "trusted",
            Self::Throttled => "throttled",
            Self::Locked => "locked",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// The UTC day `at` falls in, as days since 1970-01-01.
#[must_use]
pub const fn day_of(at: Timestamp) -> i64 {
    at.0.div_euclid(DAY_SECONDS)
}

/// The expiry of a day's keys.
fn keep_day(day: i64) -> Option<i64> {
    Some(
        day.saturating_add(1 + KEEP_DAYS)
            .saturating_mul(DAY_SECONDS),
    )
}

/// One organization's counts for one UTC day.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayCounts {
    /// The day, as days since 1970-01-01.
    pub day: i64,
    /// Each stat's count, in [`Stat::ALL`]'s order.
    pub counts: [i64; 11],
    /// Events that could not be counted (their increment failed): the figures may be short by this.
    pub lost: i64,
}

impl DayCounts {
    /// The count of `stat`.
    #[must_use]
    pub fn get(&self, stat: Stat) -> i64 {
        self.counts[stat.index()]
    }

    /// Logins that reached the step and got a new decision: every `begin` outcome.
    #[must_use]
    pub fn reached(&self) -> i64 {
        [
            Stat::Allowed,
            Stat::Denied,
            Stat::Trusted,
            Stat::ChallengeLogin,
            Stat::ChallengeEnrollment,
        ]
        .iter()
        .map(|s| self.get(*s))
        .sum()
    }

    /// Logins that needed a code: at login or to enroll.
    #[must_use]
    pub fn required(&self) -> i64 {
        self.get(Stat::ChallengeLogin) + self.get(Stat::ChallengeEnrollment)
    }

    /// Codes accepted, for any purpose.
    #[must_use]
    pub fn verified(&self) -> i64 {
        self.get(Stat::Verified) + self.get(Stat::Enrolled)
    }
}

impl Engine<'_> {
    /// Counts one `stat` event of `org` on `now`'s day, on a random shard. Never fails: a count
    /// that cannot be written is counted as lost and noted in the host's log instead (see the
    /// module doc), and the caller's answer is the same either way.
    pub(crate) fn count<R: CryptoRng + ?Sized>(
        &self,
        org: &str,
        stat: Stat,
        now: Timestamp,
        rng: &mut R,
    ) {
        let day = day_of(now);
        let shard = rng.next_u32() % SHARDS;
        let key = keys::stat(org, day, stat.name(), shard);
        if self.store.increment(&key, 1, keep_day(day)).is_err() {
            let _ = self
                .store
                .increment(&keys::stat_lost(org, day), 1, keep_day(day));
            self.audit.note_refusal(&RefusalNote {
                rule: format!("stats:not-counted:{}", stat.name()),
                claimed_org: Some(org.to_owned()),
                ip: None,
                user_agent: None,
            });
        }
    }

    /// `org`'s counts for `day`, summed over the shards. A day that ended at least two days before
    /// `today` no longer moves: it is summed once and kept whole (best effort), so a page of past
    /// days costs one read a day.
    ///
    /// # Errors
    /// [`Error::Store`] when the store fails or a kept day does not parse.
    pub(crate) fn day_counts(&self, org: &str, day: i64, today: i64) -> Result<DayCounts> {
        let closed = day <= today - 2;
        let whole_key = keys::stat_day(org, day);
        if closed && let Some(whole) = self.load_json::<DayCounts>(&whole_key)? {
            return Ok(whole);
        }
        let read = |key: &str| self.store.increment(key, 0, None).map_err(Error::store);
        let mut counts = DayCounts {
            day,
            ..DayCounts::default()
        };
        for stat in Stat::ALL {
            for shard in 0..SHARDS {
                counts.counts[stat.index()] += read(&keys::stat(org, day, stat.name(), shard))?;
            }
        }
        counts.lost = read(&keys::stat_lost(org, day))?;
        if closed {
            let _ = self.put(&whole_key, &counts, keep_day(day));
        }
        Ok(counts)
    }
}
