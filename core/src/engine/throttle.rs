//! Throttles: how many emails a user can be sent, and how many wrong codes can be tried.
//!
//! ## Sending (at most `sends_per_window` emails per `send_window_seconds`, sliding)
//!
//! ```text
//!            send ok (log < cap)                  oldest entry leaves the window
//!   [open] ───────────────────────▶ [open|full] ──────────────────────────────▶ [open]
//!                                      │ send while full
//!                                      ▼
//!                               throttled, retry-after = oldest + window − now
//! ```
//! The send log (the times of the last emails) decides exactly, but is read and written without a
//! lock. An atomic per-window counter (`increment` on the aligned window) backs it up, so that a burst
//! of concurrent requests still cannot exceed the cap within one aligned window.
//!
//! ## Guessing (per user, across codes and resends)
//!
//! ```text
//!  F = consecutive wrong codes (reset by a success or an admin reset)
//!  W = wrong codes in the current fixed 30-day window (reset only by an admin reset)
//!
//!  F < 5 ──wrong──▶ F+1           no delay
//!  5 ≤ F < 20      next try waits 30 s · 2^(F−5), at most 1 h
//!  F ≥ 20 ─────────▶ [locked]  begin denied, verify and send refused, until an admin reset
//!  W ≥ 50 ─────────▶ [locked]  the same, until the 30-day window ends or an admin reset
//! ```
//! Each code also dies after 5 guesses (`MAX_GUESSES_PER_CODE`), so the user must ask for a new
//! email, and emails are capped as above.
//!
//! ## The bound on an attacker (who already has the password)
//! - Without the real user logging in meanwhile: at most 20 wrong guesses before the lock, so
//!   P(success) ≤ 20 / 10^6 = 2·10⁻⁵ with 6 digits.
//! - Over any 30 days, whatever the real user does (each success resets F but not W): any 30-day span
//!   touches at most two fixed windows, so at most 2 · 50 = 100 wrong guesses, P ≤ 10⁻⁴.
//!
//! Both are below NIST SP 800-63B §5.2.2's ceiling of 100 consecutive failures; tests step a clock
//! through 30 days of attack to check them.

use serde::{Deserialize, Serialize};

use crate::kernel::time::Timestamp;

/// Guesses allowed against one code before it dies.
pub const MAX_GUESSES_PER_CODE: i64 = 5;
/// Consecutive failures from which each next try is delayed.
pub const DELAY_FROM: i64 = 5;
/// Consecutive failures that lock the user.
pub const LOCK_AT: i64 = 20;
/// Failures in one 30-day window that lock the user.
pub const WINDOW_CAP: i64 = 50;
/// The failure window: 30 days.
pub const WINDOW_SECONDS: i64 = 30 * 24 * 3600;
/// Longest delay between tries.
pub const MAX_DELAY_SECONDS: i64 = 3600;

/// Delay before the next try after `failures` consecutive failures.
#[must_use]
pub fn guess_delay(failures: i64) -> i64 {
    if failures < DELAY_FROM {
        return 0;
    }
    let exp = u32::try_from(failures - DELAY_FROM)
        .unwrap_or(u32::MAX)
        .min(12);
    (30_i64 << exp).min(MAX_DELAY_SECONDS)
}

/// Which fixed 30-day failure window `now` is in.
#[must_use]
pub fn failure_window(now: Timestamp) -> i64 {
    now.0.div_euclid(WINDOW_SECONDS)
}

/// The guess gate for a user, from the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuessState {
    /// Consecutive failures.
    pub failures: i64,
    /// Failures in the current 30-day window.
    pub window_failures: i64,
    /// Last failure time.
    pub last_failure: Option<Timestamp>,
}

impl GuessState {
    /// Locked: too many consecutive failures or too many in the window.
    #[must_use]
    pub fn locked(&self) -> bool {
        self.failures >= LOCK_AT || self.window_failures >= WINDOW_CAP
    }

    /// Until when a guess must wait, if it must wait now.
    #[must_use]
    pub fn wait_until(&self, now: Timestamp) -> Option<Timestamp> {
        let until = self.last_failure?.plus(guess_delay(self.failures));
        (now < until).then_some(until)
    }
}

/// The times of the user's recent emails, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendLog(pub Vec<Timestamp>);

impl SendLog {
    /// Drops the entries that left the window (older than `now − window`).
    pub fn prune(&mut self, now: Timestamp, window: i64) {
        self.0.retain(|t| t.plus(window) > now);
        self.0.sort_unstable();
    }

    /// When the window next has room, if it is full now (call after [`Self::prune`]).
    #[must_use]
    pub fn full_until(&self, cap: u32, window: i64) -> Option<Timestamp> {
        if self.0.len() < cap as usize {
            return None;
        }
        // The entry that must leave for one more send to fit.
        let idx = self.0.len() - cap as usize;
        self.0.get(idx).map(|t| t.plus(window))
    }

    /// Emails left in the window.
    #[must_use]
    pub fn left(&self, cap: u32) -> u32 {
        cap.saturating_sub(u32::try_from(self.0.len()).unwrap_or(u32::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_then_cap() {
        let d: Vec<i64> = (0..22).map(guess_delay).collect();
        assert_eq!(&d[..5], &[0, 0, 0, 0, 0]);
        assert_eq!(&d[5..12], &[30, 60, 120, 240, 480, 960, 1920]);
        assert!(d[12..].iter().all(|&x| x == MAX_DELAY_SECONDS));
    }

    #[test]
    fn lock_thresholds() {
        let s = |failures, window_failures| GuessState {
            failures,
            window_failures,
            last_failure: None,
        };
        assert!(!s(LOCK_AT - 1, 0).locked());
        assert!(s(LOCK_AT, 0).locked());
        assert!(!s(0, WINDOW_CAP - 1).locked());
        assert!(s(0, WINDOW_CAP).locked());
    }

    #[test]
    fn wait_is_measured_from_the_last_failure() {
        let st = GuessState {
            failures: 6,
            window_failures: 6,
            last_failure: Some(Timestamp(1000)),
        };
        assert_eq!(st.wait_until(Timestamp(1000)), Some(Timestamp(1060)));
        assert_eq!(st.wait_until(Timestamp(1059)), Some(Timestamp(1060)));
        assert_eq!(st.wait_until(Timestamp(1060)), None);
    }

    #[test]
    fn send_log_slides() {
        let mut log = SendLog(vec![Timestamp(0), Timestamp(100), Timestamp(200)]);
        log.prune(Timestamp(250), 300);
        assert_eq!(log.full_until(3, 300), Some(Timestamp(300)));
        assert_eq!(log.left(3), 0);
        log.prune(Timestamp(300), 300);
        assert_eq!(log.0.len(), 2);
        assert_eq!(log.full_until(3, 300), None);
    }
}
