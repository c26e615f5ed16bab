//! `hammer` and `judge`: what many instances at once must leave behind.
//!
//! Each `hammer` instance, each round: one `increment` of a shared counter (it keeps the number
//! the host answered), one value of its own, and one audit record for the run's organization,
//! appended as the component appends (read `head`, link, `append`, relink on `conflict`) and
//! committed with the value. At the end it stores the numbers it was answered.
//!
//! `judge` then reads it all back on a fresh instance. An atomic counter answers every number from
//! 1 to the total exactly once; a lost update shows as a short total, two callers answered the
//! same number, or both. A stream that kept every acknowledged record has its head at `seq` =
//! the number of appends.

use mfa_step_core::audit::chain::SealKey;
use mfa_step_core::audit::{Action, Event, Outcome};
use mfa_step_core::kernel::ports::Head;
use mfa_step_core::{HmacKey, Timestamp};

use crate::alone::{EXPIRING, VISIBLE, VISIBLE_VALUE, expect_keys, shape};
use crate::bindings::mfa_step::plugin::audit::{self, AuditError, Entry};
use crate::bindings::mfa_step::plugin::{config, store};
use crate::{Findings, Run, commit, new_id, now};

/// How many instances and rounds a run may ask for: enough to load a host, few enough that one
/// instance's answered numbers fit in one value.
const MAX_INSTANCES: u32 = 1024;
/// See [`MAX_INSTANCES`].
const MAX_ROUNDS: u32 = 1024;
/// The fewest instances at once that make a run count (`wit/conformance.wit`, step 4): fewer
/// rarely overlap enough to lose an update, so a runner that asks for fewer proves nothing.
const MIN_INSTANCES: u32 = 8;

/// How often an append relinks after a `conflict` before the kit gives up (the component's bound).
const MAX_APPEND_ATTEMPTS: usize = 32;

/// The run's shape, as the runner gave it.
#[derive(Clone, Copy)]
pub(crate) struct Plan {
    instances: u32,
    rounds: u32,
}

impl Plan {
    /// The plan, or `None` (with a finding) when the runner asked for too few instances at once,
    /// no rounds, or too much.
    pub(crate) fn new(instances: u32, rounds: u32, found: &mut Findings) -> Option<Self> {
        if (MIN_INSTANCES..=MAX_INSTANCES).contains(&instances)
            && (1..=MAX_ROUNDS).contains(&rounds)
        {
            Some(Self { instances, rounds })
        } else {
            found.add(
                "plan",
                format!(
                    "the runner asked for {instances} instances at once of {rounds} rounds; \
                     instances must be {MIN_INSTANCES} to {MAX_INSTANCES} (fewer rarely overlap \
                     enough to lose an update) and rounds 1 to {MAX_ROUNDS}"
                ),
            );
            None
        }
    }

    fn total(self) -> u64 {
        u64::from(self.instances) * u64::from(self.rounds)
    }
}

/// The counter every instance increments.
const COUNTER: &str = "hammer:count";

/// One instance's share of the load. See the module documentation.
pub(crate) fn hammer(run: &Run, instance: u32, plan: Plan, found: &mut Findings) {
    if instance >= plan.instances {
        found.add(
            "plan",
            format!(
                "instance {instance} of {} does not exist (they count from 0)",
                plan.instances
            ),
        );
        return;
    }
    let Some(seal) = seal_key(found) else {
        return;
    };
    let counter = run.key(COUNTER);
    let mut answered = Vec::new();
    for round in 0..plan.rounds {
        match store::increment(&counter, 1, None) {
            Ok(n) => answered.push(n.to_string()),
            Err(e) => found.add(
                "atomic-increment",
                format!("increment failed: {}", crate::describe(&e)),
            ),
        }
        let key = run.key(&format!("hammer:v:{instance}:{round}"));
        found.ok(
            "visible-after-commit",
            "set",
            store::set(&key, format!("{instance}:{round}").as_bytes(), None),
        );
        append(run, instance, &seal, found);
        commit("visible-after-commit", found);
    }
    let seen = run.key(&format!("hammer:seen:{instance}"));
    if found
        .ok(
            "atomic-increment",
            "set",
            store::set(&seen, answered.join(",").as_bytes(), None),
        )
        .is_some()
    {
        commit("atomic-increment", found);
    }
}

/// The seal key, derived from config `hmac_key` as the component derives it.
pub(crate) fn seal_key(found: &mut Findings) -> Option<SealKey> {
    let Some(hex_key) = config::get("hmac_key") else {
        found.add(
            "config",
            "config answered none for hmac_key; the kit seals its records with it",
        );
        return None;
    };
    match HmacKey::from_hex(&hex_key) {
        Ok(key) => Some(SealKey::derive(&key)),
        Err(_) => {
            found.add(
                "config",
                "config's hmac_key is not hex of at least 32 bytes",
            );
            None
        }
    }
}

/// Appends one record to the run's stream, as the component does: read the head, link to it,
/// append, and on `conflict` read the head again.
fn append(run: &Run, instance: u32, seal: &SealKey, found: &mut Findings) {
    const CHECK: &str = "audit-append";
    let (id, at) = (new_id(), now());
    let subject = format!("instance-{instance}");
    for _ in 0..MAX_APPEND_ATTEMPTS {
        let head = match audit::head(&run.org) {
            Ok(head) => head.map(|h| Head {
                seq: h.seq,
                hash: h.hash,
            }),
            Err(e) => {
                found.add(CHECK, format!("head failed: {}", audit_error(&e)));
                return;
            }
        };
        match audit::append(&entry(
            &run.org,
            &subject,
            head.as_ref(),
            (&id, at),
            Some(seal),
        )) {
            Ok(()) => return,
            Err(AuditError::Conflict) => {}
            Err(e) => {
                found.add(CHECK, format!("append failed: {}", audit_error(&e)));
                return;
            }
        }
    }
    found.add(
        CHECK,
        format!(
            "append answered conflict {MAX_APPEND_ATTEMPTS} times in a row, relinking each time"
        ),
    );
}

/// The record `(id, at)` of `org`, linked after `head` and sealed by the core's chain code, as the
/// component makes it: a relinking host can parse and relink it, a verifier can check it.
pub(crate) fn entry(
    org: &str,
    subject: &str,
    head: Option<&Head>,
    (id, at): (&str, i64),
    seal: Option<&SealKey>,
) -> Entry {
    let event = Event {
        org: org.to_owned(),
        actor: "conformance-kit".to_owned(),
        subject: subject.to_owned(),
        // A harmless action to find in a trail: the kit's records let no one in.
        action: Action::AccessDenied,
        outcome: Outcome::Denied,
        reason: Some("conformance:check".to_owned()),
        ip: None,
        user_agent: None,
        device_id: None,
        challenge_id: None,
    };
    let (seq, prev) = Head::next(head);
    let (line, hash) = event.seal(id, seq, Timestamp(at), &prev, seal);
    Entry {
        org_id: org.to_owned(),
        seq,
        at,
        action: event.action.as_str().to_owned(),
        prev,
        hash,
        line,
    }
}

/// Reads back what every `hammer` left. See the module documentation.
pub(crate) fn judge(run: &Run, plan: Plan, found: &mut Findings) {
    let total = plan.total();
    counter(run, plan, found);
    values(run, plan, found);
    for (key, expected) in [(VISIBLE, VISIBLE_VALUE), (EXPIRING, b"kept".as_slice())] {
        let check = if key == VISIBLE {
            "visible-after-commit"
        } else {
            "expiry"
        };
        match found.ok(check, "get", store::get(&run.key(key))) {
            Some(Some(v)) if v == expected => {}
            Some(v) => found.add(
                check,
                format!(
                    "a value prepare committed read on another instance as {}",
                    shape(v.as_deref())
                ),
            ),
            None => {}
        }
    }
    match audit::head(&run.org) {
        Ok(Some(head)) if head.seq == total => {
            let well_formed = head.hash.len() == 64
                && head
                    .hash
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !well_formed {
                found.add(
                    "audit-head",
                    "the head's hash is not 64 lower-case hex digits",
                );
            }
        }
        Ok(Some(head)) => found.add(
            "audit-append",
            format!(
                "after {total} acknowledged appends the stream's head is at seq {}: {}",
                head.seq,
                if head.seq < total {
                    "records were lost, or head answers an older one"
                } else {
                    "records were added"
                }
            ),
        ),
        Ok(None) => found.add(
            "audit-append",
            format!("after {total} acknowledged appends the stream has no head"),
        ),
        Err(e) => found.add("audit-head", format!("head failed: {}", audit_error(&e))),
    }
}

/// The shared counter holds the total, and the increments answered 1 to the total once each.
fn counter(run: &Run, plan: Plan, found: &mut Findings) {
    const CHECK: &str = "atomic-increment";
    let total = plan.total();
    if let Some(n) = found.ok(
        CHECK,
        "increment",
        store::increment(&run.key(COUNTER), 0, None),
    ) && u64::try_from(n).ok() != Some(total)
    {
        found.add(
            CHECK,
            format!("{total} concurrent increments by 1 left the counter at {n}"),
        );
    }
    let mut answered: Vec<i64> = Vec::new();
    for instance in 0..plan.instances {
        let key = run.key(&format!("hammer:seen:{instance}"));
        match found.ok(CHECK, "get", store::get(&key)) {
            Some(Some(v)) => answered.extend(
                String::from_utf8_lossy(&v)
                    .split(',')
                    .filter_map(|n| n.parse::<i64>().ok()),
            ),
            Some(None) => found.add(
                CHECK,
                format!("instance {instance} left no answered numbers"),
            ),
            None => {}
        }
    }
    answered.sort_unstable();
    let repeated = answered.windows(2).filter(|w| w[0] == w[1]).count();
    if repeated > 0 {
        found.add(
            CHECK,
            format!(
                "{repeated} concurrent increments answered a number another increment had answered"
            ),
        );
    }
    answered.dedup();
    let expected = u64::try_from(answered.len()).ok() == Some(total)
        && answered.first() == Some(&1)
        && answered.last().and_then(|n| u64::try_from(*n).ok()) == Some(total);
    if !expected && repeated == 0 {
        found.add(
            CHECK,
            format!(
                "the increments answered {} distinct numbers, not 1 to {total}",
                answered.len()
            ),
        );
    }
}

/// Every value a `hammer` committed is visible here, and listed exactly.
fn values(run: &Run, plan: Plan, found: &mut Findings) {
    const CHECK: &str = "visible-after-commit";
    let mut expected = Vec::new();
    let mut missing = 0u64;
    for instance in 0..plan.instances {
        for round in 0..plan.rounds {
            let key = run.key(&format!("hammer:v:{instance}:{round}"));
            match found.ok(CHECK, "get", store::get(&key)) {
                Some(Some(v)) if v == format!("{instance}:{round}").as_bytes() => {}
                Some(_) => missing += 1,
                None => return,
            }
            expected.push(key);
        }
    }
    if missing > 0 {
        found.add(
            CHECK,
            format!("{missing} of {} committed values read back absent or different on another instance", plan.total()),
        );
    }
    if let Some(keys) = found.ok(
        "list-keys",
        "list-keys",
        store::list_keys(&run.key("hammer:v:")),
    ) {
        let expected: Vec<&String> = expected.iter().collect();
        expect_keys(
            "list-keys",
            "after the concurrent instances",
            &keys,
            &expected,
            found,
        );
    }
}

/// An audit error, as a finding quotes it.
pub(crate) fn audit_error(e: &AuditError) -> String {
    match e {
        AuditError::Conflict => "conflict".to_owned(),
        AuditError::Unavailable(m) => format!("unavailable ({m})"),
    }
}
