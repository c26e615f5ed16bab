//! The host's log of refusals that belong to no organization's stream (`audit.note-refusal`): a
//! hosted-prompt request that is not signed with the prompt key names only what its sender chose.
//!
//! A flood of them must cost the log little, so notes pass a token bucket: [`BURST`] at once, then
//! [`PER_SECOND`] a second; the notes it drops are counted and reported on the next line that is
//! written (`suppressed`). The bucket is one per process, shared by every request.

use std::sync::Mutex;
use std::time::Instant;

use mfa_step_core::kernel::ports::RefusalNote;

/// Notes written at once before the rate applies.
pub const BURST: f64 = 20.0;
/// Notes written per second, sustained.
pub const PER_SECOND: f64 = 1.0;

struct Bucket {
    tokens: f64,
    last: Instant,
    suppressed: u64,
}

static BUCKET: Mutex<Option<Bucket>> = Mutex::new(None);

/// Whether a note may be written now from `bucket`, and how many were dropped since the last one
/// written.
fn admit(bucket: &Mutex<Option<Bucket>>, now: Instant) -> Option<u64> {
    let mut guard = bucket
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let bucket = guard.get_or_insert(Bucket {
        tokens: BURST,
        last: now,
        suppressed: 0,
    });
    let refill = now.saturating_duration_since(bucket.last).as_secs_f64() * PER_SECOND;
    bucket.tokens = (bucket.tokens + refill).min(BURST);
    bucket.last = now;
    if bucket.tokens >= 1.0 {
        bucket.tokens -= 1.0;
        Some(std::mem::take(&mut bucket.suppressed))
    } else {
        bucket.suppressed = bucket.suppressed.saturating_add(1);
        None
    }
}

/// Writes `note` to the log at `warn`, unless the rate is spent (then it is only counted). A note
/// whose rule starts with `stats:` is not a refusal: a day count the admin console reads could not
/// be written (the login's answer did not change), and it is logged as such.
pub fn note(note: &RefusalNote) {
    if let Some(suppressed) = admit(&BUCKET, Instant::now()) {
        if note.rule.starts_with("stats:") {
            tracing::warn!(
                rule = %note.rule,
                org = note.claimed_org.as_deref().unwrap_or("-"),
                suppressed,
                "a day count was not written: the admin console's figures may be short"
            );
            return;
        }
        tracing::warn!(
            rule = %note.rule,
            claimed_org = note.claimed_org.as_deref().unwrap_or("-"),
            ip = note.ip.as_deref().unwrap_or("-"),
            user_agent = note.user_agent.as_deref().unwrap_or("-"),
            suppressed,
            "refused an unsigned request (no organization's stream)"
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_passes_then_the_rate_holds_and_the_dropped_are_counted() {
        // A bucket of the test's own: the process's one is shared with every other test.
        let bucket = Mutex::new(None);
        let start = Instant::now();
        let passed = (0..100).filter(|_| admit(&bucket, start).is_some()).count();
        assert_eq!(passed, BURST as usize);
        // Two seconds later: two more, the first reporting the 80 it dropped.
        let later = start + Duration::from_secs(2);
        assert_eq!(admit(&bucket, later), Some(80));
        assert_eq!(admit(&bucket, later), Some(0));
        assert_eq!(admit(&bucket, later), None);
    }
}
