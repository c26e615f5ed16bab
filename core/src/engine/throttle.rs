//! Throttles: how many emails a user can be sent, and how many wrong codes can be tried.
//!
//! Every limit is **counted first**: a send or a guess first takes a numbered *slot* with the
//! store's atomic `increment` (the one call whose result comes back as `1` owns the slot), and only
//! the slot's owner goes on. Whether a slot may be taken is judged *before* taking it, from the
//! stamp (the `now` of the call that owns it) of an earlier slot that is already taken. Nothing is
//! read, decided and written back; there is no compare-and-swap (Spin on Redis cannot do one), and
//! no counter is ever rolled back to let a refused call through. So concurrency can never exceed a
//! limit, only refuse a call that a slower, serial world would have let through.
//!
//! ## Slots
//!
//! ```text
//!  k = taken + 1            (a hint: `taken` counts owners, and is only ever behind)
//!  loop:
//!    judge slot k on the stamp of the slot it depends on ──refused──▶ wait (nothing taken)
//!    increment(claim[k], 1) == 1 ? ──yes──▶ stamp[k] = now; taken += 1; go on as slot k
//!                                  └─no───▶ k + 1 (someone owns k)
//! ```
//! The taken slots always form a prefix `1..=m` (a call tries `k` only when `k − 1` is taken or
//! `k ≤ taken + 1`), so slot numbers are the order in which owners were admitted. A slot that is
//! taken but not yet stamped is *in flight*: its owner's `now` is the present, so a slot that
//! depends on it waits its whole spacing, and notes its own `now` beside the slot (never over the
//! owner's stamp); a slot counts from the later of the two. So a slot whose owner failed between
//! taking and stamping it costs one spacing from the first call that needs it — see "Residual".
//!
//! ## Sending (at most `cap` = `sends_per_window` emails in any `window` = `send_window_seconds`)
//!
//! ```text
//!  send slot k ≤ cap                     open
//!  send slot k > cap                     open once  now ≥ stamp[k − cap] + window
//!                                        else throttled, retry-after = stamp[k − cap] + window − now
//! ```
//! *Proof of the bound.* Take any `cap + 1` emails; their slots are distinct, so two of them, `i <
//! j`, are equal modulo `cap`: `j = i + m·cap` with `m ≥ 1`. Following the chain `i, i + cap, …,
//! j`, each slot was admitted at least `window` after the previous one's stamp, so `t_j ≥ t_i +
//! window`: the two cannot both fall in one span shorter than `window`. So any `window` seconds hold
//! at most `cap` emails — at an aligned edge or anywhere else, in any burst. A refused call takes
//! no slot. A slot whose record is refused sent nothing and is given back by *voiding* it: its
//! stamp becomes the stamp of the slot it depended on (`stamp[k] := stamp[k − cap]`, or the distant
//! past for `k ≤ cap`). The proof survives: along a chain, a voided stamp equals its predecessor's
//! and an emailed one is at least its predecessor's plus `window`, so stamps never decrease along a
//! chain and `t_j ≥ stamp[j − cap] + window ≥ t_i + window` still holds for two emails `i < j`. (A
//! slot whose mail then fails stays spent: its `code_sent` record is written.)
//!
//! ## Guessing (per user, across codes and resends)
//!
//! ```text
//!  S = the streak: bumped (never reset) by a success or an admin reset; guess slots are per S
//!  k = the guess's slot in the streak = its number among consecutive tries
//!  W = tries in the current fixed 30-day window (a ticket: increment first, judge the result)
//!
//!  k ≤ 5                   looked at at once (slots from the 5th on are stamped)
//!  6 ≤ k ≤ 20              looked at once  now ≥ stamp[k − 1] + 30 s · 2^(k−6) (at most 1 h);
//!                          else throttled (nothing taken)
//!  k > 20 ───────────────▶ [locked]  begin denied, verify and send refused, until an admin reset
//!  W ticket > 50 ────────▶ [locked]  the same, until the 30-day window ends or an admin reset
//!  a success ──────────── S + 1 (a new streak), and its W ticket is given back
//! ```
//! Each code also dies after 5 guesses (`MAX_GUESSES_PER_CODE`, its own counter, incremented
//! before the compare), so the user must ask for a new email, and emails are capped as above.
//!
//! *No try inside a delay, exactly.* The `n`-th try of a streak (`n ≥ 6`) is admitted only by a
//! call whose `now` is at least the `now` of the streak's `(n − 1)`-th try plus `delay(n − 1)`: the
//! `(n − 1)`-th slot is stamped with its owner's `now` before that owner looks at its code, and a
//! slot in flight makes the next one wait. Concurrent tries therefore queue behind each other's
//! stamps: a burst of N tries at one instant gets the 5 free ones looked at, and every other one is
//! throttled without being counted. `delay(n)` is measured from the previous try's call, as the
//! audit records' times show it. (A guess that read the streak just before a success replaced it
//! finishes in the old streak, under the old streak's rules: each streak keeps its own bound.)
//!
//! *At most 50 wrong codes per fixed window, 100 in any 30 days.* Every try that gets a slot then
//! takes a ticket `w = increment(W, 1)` and is looked at only if `w ≤ 50`; a success gives its
//! ticket back (`increment(W, −1)`, after its own increment). Let `g` be the window's last admitted
//! wrong try. When `g` took its ticket, `w_g = I − D ≤ 50`, with `I` the increments so far and `D`
//! the give-backs so far. Every give-back belongs to a distinct success that incremented earlier,
//! and every admitted wrong try incremented no later than `g`, so (admitted wrong tries) ≤ `I − D`
//! ≤ 50. Refused tickets only add to `I`. Any 30 days overlap at most two fixed windows: at most
//! 100 wrong codes looked at, whatever the real user does and however many calls run at once.
//!
//! ## The bound on an attacker (who already has the password)
//! - Without the real user logging in meanwhile: at most 20 wrong guesses before the lock, so
//!   P(success) ≤ 20 / 10^6 = 2·10⁻⁵ with 6 digits.
//! - Over any 30 days, whatever the real user does (each success starts a new streak but does not
//!   reset W): at most 100 wrong guesses, P ≤ 10⁻⁴.
//!
//! Both are below NIST SP 800-63B §5.2.2's ceiling of 100 consecutive failures; the e2e suite
//! (`tests/tests/e2e/limits.rs`) drives bursts of 8, 64 and 256 parallel calls and a month of
//! parallel guessing through the compiled component and counts the records.
//!
//! ## Residual
//! A store failure between taking a slot and stamping it (two consecutive store calls) leaves that
//! slot in flight. The first call that depends on it notes its own `now` under a key of its own
//! (`keys::stamp_seen`) and waits the slot's spacing from there: the user loses one spacing (a
//! guess delay, or one send window). The owner's stamp is never overwritten and a slot counts from
//! the later of the two times, so once the owner has stamped, every bound above holds as proved.
//! The one gap: an owner that stamps more than a whole spacing (≥ 30 s) after taking its slot, while
//! a later call has already been judged on the noted time, which may precede the owner's own call
//! time by at most the noting call's own time in flight. Such an owner is a hung request; a
//! request's time in flight is bounded by the host's deadlines (seconds).

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

/// The stamp of a send slot given back before any slot it could depend on (far in the past, so
/// nothing waits after it).
pub const VOID: Timestamp = Timestamp(i64::MIN / 4);

/// What a slot's stamp says, as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamp {
    /// There is no such slot (a number below 1): nothing to wait for.
    None,
    /// The slot's owner called at this time.
    At(Timestamp),
    /// Taken, not stamped yet: its owner is calling now.
    InFlight,
}

/// Until when a slot that must come `spacing` seconds after `earlier` must wait, if it must wait
/// at `now`. A slot in flight is as recent as `now`.
#[must_use]
pub fn wait_after(earlier: Stamp, spacing: i64, now: Timestamp) -> Option<Timestamp> {
    if spacing <= 0 {
        return None;
    }
    let until = match earlier {
        Stamp::None => return None,
        Stamp::At(t) => t.plus(spacing),
        Stamp::InFlight => now.plus(spacing),
    };
    (now < until).then_some(until)
}

/// The slot a guess-slot `k` (1-based, in its streak) depends on, and the spacing after it.
#[must_use]
pub fn guess_rule(k: i64) -> (i64, i64) {
    (k - 1, guess_delay(k - 1))
}

/// The slot a send-slot `k` depends on, and the spacing after it.
#[must_use]
pub fn send_rule(k: i64, cap: u32, window: i64) -> (i64, i64) {
    (k - i64::from(cap), window)
}

/// The guess gate for a user, from the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuessState {
    /// Consecutive failures: the slots taken in the current streak.
    pub failures: i64,
    /// Tries counted in the current 30-day window.
    pub window_failures: i64,
    /// The stamp of the streak's latest slot.
    pub last_failure: Stamp,
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
        let (_, spacing) = guess_rule(self.failures + 1);
        wait_after(self.last_failure, spacing, now)
    }
}

/// The room in a user's send window: the stamps of the last `cap` send slots, oldest first (slot
/// numbers below 1 as [`Stamp::None`]). The next slot depends on the first, the one after on the
/// second, and so on; a refused slot stops the queue, so the room is the run of open ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendRoom(pub Vec<Stamp>);

impl SendRoom {
    /// Emails that can go now.
    #[must_use]
    pub fn left(&self, window: i64, now: Timestamp) -> u32 {
        let open = self
            .0
            .iter()
            .take_while(|s| wait_after(**s, window, now).is_none())
            .count();
        u32::try_from(open).unwrap_or(u32::MAX)
    }

    /// When the next email can go, if none can now.
    #[must_use]
    pub fn full_until(&self, window: i64, now: Timestamp) -> Option<Timestamp> {
        self.0.first().and_then(|s| wait_after(*s, window, now))
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
            last_failure: Stamp::None,
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
            last_failure: Stamp::At(Timestamp(1000)),
        };
        assert_eq!(st.wait_until(Timestamp(1000)), Some(Timestamp(1060)));
        assert_eq!(st.wait_until(Timestamp(1059)), Some(Timestamp(1060)));
        assert_eq!(st.wait_until(Timestamp(1060)), None);
    }

    #[test]
    fn the_first_five_slots_never_wait_and_the_sixth_waits_30_s() {
        for k in 1..=5 {
            let (_, spacing) = guess_rule(k);
            assert_eq!(wait_after(Stamp::InFlight, spacing, Timestamp(0)), None);
        }
        let (earlier, spacing) = guess_rule(6);
        assert_eq!((earlier, spacing), (5, 30));
        assert_eq!(
            wait_after(Stamp::At(Timestamp(100)), spacing, Timestamp(129)),
            Some(Timestamp(130))
        );
        assert_eq!(
            wait_after(Stamp::At(Timestamp(100)), spacing, Timestamp(130)),
            None
        );
    }

    #[test]
    fn a_slot_in_flight_makes_the_next_wait_its_whole_spacing() {
        let (_, spacing) = guess_rule(7);
        assert_eq!(
            wait_after(Stamp::InFlight, spacing, Timestamp(500)),
            Some(Timestamp(560))
        );
        assert_eq!(
            wait_after(Stamp::InFlight, 300, Timestamp(500)),
            Some(Timestamp(800))
        );
    }

    #[test]
    fn send_slots_depend_on_the_one_cap_earlier() {
        assert_eq!(send_rule(1, 3, 300), (-2, 300));
        assert_eq!(send_rule(4, 3, 300), (1, 300));
        assert_eq!(wait_after(Stamp::None, 300, Timestamp(0)), None);
    }

    #[test]
    fn send_room_slides() {
        let room = SendRoom(vec![
            Stamp::At(Timestamp(0)),
            Stamp::At(Timestamp(100)),
            Stamp::At(Timestamp(200)),
        ]);
        assert_eq!(room.left(300, Timestamp(250)), 0);
        assert_eq!(room.full_until(300, Timestamp(250)), Some(Timestamp(300)));
        assert_eq!(room.left(300, Timestamp(300)), 1);
        assert_eq!(room.full_until(300, Timestamp(300)), None);
        assert_eq!(room.left(300, Timestamp(500)), 3);
        // A slot in flight closes the queue behind it.
        let busy = SendRoom(vec![Stamp::None, Stamp::InFlight, Stamp::None]);
        assert_eq!(busy.left(300, Timestamp(0)), 1);
        let fresh = SendRoom(vec![Stamp::None; 3]);
        assert_eq!(fresh.left(300, Timestamp(0)), 3);
    }

    /// The pigeonhole proof of the module doc, checked by brute force: slots admitted by the
    /// send rule, in any order of stamps within a block, never put `cap + 1` in one window.
    #[test]
    fn admitted_send_slots_never_exceed_the_cap_in_any_window() {
        let (cap, window) = (3_u32, 300_i64);
        // Candidate call times, deliberately out of order around an aligned edge.
        let times = [299, 298, 300, 301, 1, 0, 599, 600, 601, 900, 899, 1200];
        let mut stamps: Vec<Timestamp> = Vec::new();
        for t in times {
            let k = i64::try_from(stamps.len()).unwrap_or(i64::MAX) + 1;
            let (earlier, spacing) = send_rule(k, cap, window);
            let stamp = usize::try_from(earlier - 1)
                .ok()
                .and_then(|i| stamps.get(i))
                .map_or(Stamp::None, |t| Stamp::At(*t));
            if wait_after(stamp, spacing, Timestamp(t)).is_none() {
                stamps.push(Timestamp(t));
            }
        }
        let mut sorted: Vec<i64> = stamps.iter().map(|t| t.0).collect();
        sorted.sort_unstable();
        for (i, t) in sorted.iter().enumerate() {
            let within = sorted[i..].iter().take_while(|u| **u - t < window).count();
            assert!(within <= cap as usize, "{sorted:?}");
        }
    }
}
