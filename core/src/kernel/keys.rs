//! Every store key the core uses, in one place. Components are validated identifiers (see
//! [`crate::kernel::input::id`]), which never contain the `:` separator, so no two keys can collide.
//! The `v1:` prefix versions the layout.

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
/// When, in which browser and from which network the user last verified a code (value): how fresh
/// and where their last proof of the factor is.
#[must_use]
pub fn last_verified(org: &str, user: &str) -> String {
    format!("v1:last-verified:{org}:{user}")
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

/// A hosted-prompt session, under the MAC of its cookie's id (see `web::hosted`).
#[must_use]
pub fn prompt_session(id_mac: &str) -> String {
    format!("v1:prompt-session:{id_mac}")
}
