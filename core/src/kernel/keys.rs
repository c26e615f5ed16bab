//! Every store key the core uses, in one place. Components are validated identifiers (see
//! [`crate::kernel::input::id`]), which never contain the `:` separator, so no two keys can collide.
//! The `v1:` prefix versions the layout.
//!
//! ## Expiry
//!
//! Every key that a request, a code, a device or a window creates is written with an expiry
//! (`expires_at` on `set` and `increment`), after which the host may forget it at any time, in any
//! order. Keys that exist once per user or organization (policies, enrollment, the guess streak,
//! the audit count) are kept. The expiries are chosen so that forgetting a key is never the
//! permissive answer:
//! - a value is kept [`LINGER_SECONDS`] past the moment it stops mattering ([`keep_until`]): a
//!   challenge past its end, a device past its trust, a session past its life;
//! - a counter that *guards* a value (a code's `attempts` and `used`, a device's `epoch` and
//!   `rotation`, a prompt request's use) is kept longer still ([`guard_until`]), so the value goes
//!   first: a code is never found without its `used` count, a revoked device never without its epoch;
//! - the numbered slots of a limit ([`crate::engine::state`]) keep their claims until their
//!   spacing has run out, their stamps a little longer, and the count of slots taken longer than
//!   any of them: a forgotten slot has nothing left to wait for, and the count is never forgotten
//!   while a slot it would let be taken twice is remembered.
//!
//! A sweep that runs late only keeps state longer. Reading a counter (`increment(key, 0, None)`)
//! creates nothing.

use crate::kernel::time::Timestamp;

/// How long past the moment a value stops mattering the host is asked to keep it: slack for the
/// hosts' clocks and for a request still running.
pub const LINGER_SECONDS: i64 = 3600;

/// The expiry of a value that stops mattering at `end`.
#[must_use]
pub fn keep_until(end: Timestamp) -> Option<i64> {
    Some(end.plus(LINGER_SECONDS).0)
}

/// The expiry of a counter that guards a value that stops mattering at `end`: after the value's own.
#[must_use]
pub fn guard_until(end: Timestamp) -> Option<i64> {
    Some(end.plus(2 * LINGER_SECONDS).0)
}

/// The user's current challenge (value).
#[must_use]
pub fn challenge(org: &str, user: &str) -> String {
    format!("v1:challenge:{org}:{user}")
}
/// Guesses made against one code (counter).
#[must_use]
pub fn attempts(challenge_id: &str, generation: u32) -> String {
    format!("v1:attempts:{challenge_id}:{generation}")
}
/// Successful uses of one code (counter): the first verify to take it to 1 wins. Never deleted
/// while the code could still be verified (a replaced challenge keeps it).
#[must_use]
pub fn used(challenge_id: &str, generation: u32) -> String {
    format!("v1:used:{challenge_id}:{generation}")
}
/// The user's guess streak (counter): bumped, never reset, by a success and by an admin reset, so
/// that the slots of a streak that ended are never taken again.
#[must_use]
pub fn streak(org: &str, user: &str) -> String {
    format!("v1:streak:{org}:{user}")
}
/// Consecutive wrong codes in one streak (counter): the guess slots taken, counted after each is
/// taken (so never ahead of them). The lock's count and the hint where the next slot is.
#[must_use]
pub fn failures(org: &str, user: &str, streak: i64) -> String {
    format!("v1:failures:{org}:{user}:{streak}")
}
/// One guess slot of a streak (counter): the call whose `increment` returns 1 owns it.
#[must_use]
pub fn guess_slot(org: &str, user: &str, streak: i64, slot: i64) -> String {
    format!("v1:guess-slot:{org}:{user}:{streak}:{slot}")
}
/// When the owner of a guess slot called (value): the clock the next slot's delay runs from.
#[must_use]
pub fn guess_at(org: &str, user: &str, streak: i64, slot: i64) -> String {
    format!("v1:guess-at:{org}:{user}:{streak}:{slot}")
}
/// When a call first found the slot whose stamp is at `stamp_key` taken but not stamped (value):
/// kept apart from the owner's own stamp, which it never overwrites; a slot counts from the later
/// of the two (see `engine::throttle`, "Residual").
#[must_use]
pub fn stamp_seen(stamp_key: &str) -> String {
    format!("{stamp_key}:seen")
}
/// Wrong codes in one fixed 30-day window (counter), not reset by a success.
#[must_use]
pub fn failures_window(org: &str, user: &str, window: i64) -> String {
    format!("v1:failures-30d:{org}:{user}:{window}")
}
/// Send slots taken (counter), counted after each is taken: the hint where the next slot is.
#[must_use]
pub fn sends(org: &str, user: &str) -> String {
    format!("v1:sends:{org}:{user}")
}
/// One send slot (counter): the call whose `increment` returns 1 owns it.
#[must_use]
pub fn send_slot(org: &str, user: &str, slot: i64) -> String {
    format!("v1:send-slot:{org}:{user}:{slot}")
}
/// When the owner of a send slot called (value): the slot `sends_per_window` later waits a window
/// after it.
#[must_use]
pub fn send_at(org: &str, user: &str, slot: i64) -> String {
    format!("v1:send-at:{org}:{user}:{slot}")
}
/// Records appended to the organization's audit stream (counter): the anchor against which a
/// truncated log shows.
#[must_use]
pub fn audit_count(org: &str) -> String {
    format!("v1:audit-count:{org}")
}
/// One trusted device (value).
#[must_use]
pub fn device(org: &str, user: &str, device_id: &str) -> String {
    format!("v1:device:{org}:{user}:{device_id}")
}
/// The prefix of all of a user's devices.
#[must_use]
pub fn devices_of(org: &str, user: &str) -> String {
    format!("v1:device:{org}:{user}:")
}
/// Rotations of one device generation (counter): the first login to take it to 1 rotates.
#[must_use]
pub fn device_rotation(device_id: &str, generation: u64) -> String {
    format!("v1:device-rotation:{device_id}:{generation}")
}
/// Revocations of one device (counter): its record counts only while this equals the record's
/// `epoch`, so a record a concurrent write put back after a revoke never counts again.
#[must_use]
pub fn device_epoch(org: &str, user: &str, device_id: &str) -> String {
    format!("v1:device-epoch:{org}:{user}:{device_id}")
}
/// An organization's MFA policy (value).
#[must_use]
pub fn policy(org: &str) -> String {
    format!("v1:policy:{org}")
}
/// An organization's email branding (value).
#[must_use]
pub fn branding(org: &str) -> String {
    format!("v1:branding:{org}")
}
/// The user's confirmed MFA address (value).
#[must_use]
pub fn enrollment(org: &str, user: &str) -> String {
    format!("v1:enrollment:{org}:{user}")
}
/// When an unenrolled user who must use MFA first signed in (value): the grace period's start.
#[must_use]
pub fn grace_start(org: &str, user: &str) -> String {
    format!("v1:grace-start:{org}:{user}")
}
/// Sign-ins an unenrolled user made in the grace period (counter).
#[must_use]
pub fn grace_logins(org: &str, user: &str) -> String {
    format!("v1:grace-logins:{org}:{user}")
}
/// Set once the user has enrolled (value): the grace period is spent for good, even after a reset.
#[must_use]
pub fn grace_spent(org: &str, user: &str) -> String {
    format!("v1:grace-spent:{org}:{user}")
}
/// The step-up grant of the user's last verified code (value): the MAC of the token `verify`
/// returned to that sign-in, and when. `change-email` needs the token.
#[must_use]
pub fn step_up(org: &str, user: &str) -> String {
    format!("v1:step-up:{org}:{user}")
}
/// Uses of one step-up grant (counter, under the grant's MAC): the first to take it to 1 spends it.
#[must_use]
pub fn step_up_used(mac: &str) -> String {
    format!("v1:step-up-used:{mac}")
}
/// The platform's roles that require MFA, as a platform admin set them (value).
#[must_use]
pub fn platform_roles() -> String {
    "v1:platform-roles".to_owned()
}
/// Uses of one hosted-prompt request (counter): the first to take it to 1 is accepted.
#[must_use]
pub fn prompt_request(client_id: &str, jti: &str) -> String {
    format!("v1:prompt-request:{client_id}:{jti}")
}

/// Refusals of one signed hosted-prompt request (counter): the first is recorded in its
/// organization's stream, the rest only noted for the host's log, so that replaying one signed URL
/// cannot flood a stream.
#[must_use]
pub fn prompt_refused(client_id: &str, jti: &str) -> String {
    format!("v1:prompt-refused:{client_id}:{jti}")
}

/// A hosted-prompt session, under the MAC of its cookie's id (see `web::hosted`).
#[must_use]
pub fn prompt_session(id_mac: &str) -> String {
    format!("v1:prompt-session:{id_mac}")
}

/// One shard of one day's count of one event kind in an organization (counter; see
/// `engine::stats`). Kept for a while after its day, then forgotten: it guards nothing.
#[must_use]
pub fn stat(org: &str, day: i64, stat: &str, shard: u32) -> String {
    format!("v1:stat:{org}:{day}:{stat}:{shard}")
}

/// Events of one day in an organization whose count could not be written (counter).
#[must_use]
pub fn stat_lost(org: &str, day: i64) -> String {
    format!("v1:stat-lost:{org}:{day}")
}

/// One closed day's counts of an organization, summed once (value).
#[must_use]
pub fn stat_day(org: &str, day: i64) -> String {
    format!("v1:stat-day:{org}:{day}")
}

/// An admin console session, under the MAC of its cookie's id (see `web::console`).
#[must_use]
pub fn console_session(id_mac: &str) -> String {
    format!("v1:console-session:{id_mac}")
}

/// Uses of one admin console link (counter, under the MAC of its token): the first to take it to
/// 1 opens a session.
#[must_use]
pub fn console_link_used(mac: &str) -> String {
    format!("v1:console-link-used:{mac}")
}

/// A known user of an organization: last seen at login, on the roster, roles (value; see
/// `roster`). Kept a while after the user was last seen or listed.
#[must_use]
pub fn user_seen(org: &str, user: &str) -> String {
    format!("v1:user-seen:{org}:{user}")
}

/// The prefix of every known user of an organization.
#[must_use]
pub fn users_seen(org: &str) -> String {
    format!("v1:user-seen:{org}:")
}
