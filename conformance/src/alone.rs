//! `prepare`: the checks one instance makes by itself, each under the name of the contract clause
//! it holds the host to (`wit/conformance.wit`). A check goes on after a finding where it can, so
//! that one run reports every broken clause, not only the first.
//!
//! Every key is the run's own (`conformance:<run-id>:…`), and every unit is committed before the
//! next check reads across it, so the checks hold over a host that keeps writes until `commit` as
//! over one whose every call is durable when it returns.

use crate::bindings::mfa_step::plugin::store::{self, StoreError};
use crate::{Findings, Run, commit, describe, now};

/// The largest key and value the contract promises to keep (`store.wit`).
pub(crate) const MAX_KEY: usize = 512;
/// See [`MAX_KEY`].
pub(crate) const MAX_VALUE: usize = 64 * 1024;

/// The value `prepare` leaves for `judge` at [`VISIBLE`].
pub(crate) const VISIBLE_VALUE: &[u8] = b"committed by prepare";
/// Where `prepare` leaves a committed value for `judge`, on another instance, to read.
pub(crate) const VISIBLE: &str = "prepare:visible";
/// Where `prepare` leaves a value that expires in an hour, which `judge` must still find.
pub(crate) const EXPIRING: &str = "prepare:expiring";

/// Runs every check of one instance.
pub(crate) fn prepare(run: &Run, found: &mut Findings) {
    namespaces(run, found);
    zero_increment(run, found);
    increment(run, found);
    delete_then_increment(run, found);
    list_keys(run, found);
    read_your_writes(run, found);
    delete_absent(run, found);
    expiry(run, found);
    limits(run, found);
}

/// A counter is invisible to `get` and `list-keys`; a value is invisible to `increment`.
fn namespaces(run: &Run, found: &mut Findings) {
    const CHECK: &str = "namespaces";
    let counter = run.key("ns:counter");
    let value = run.key("ns:value");
    if let Some(n) = found.ok(CHECK, "increment", store::increment(&counter, 1, None))
        && n != 1
    {
        found.add(
            CHECK,
            format!("a new counter incremented by 1 answered {n}, not 1"),
        );
    }
    if let Some(Some(_)) = found.ok(CHECK, "get", store::get(&counter)) {
        found.add(
            CHECK,
            "get of a key used only as a counter answered a value, not none",
        );
    }
    if found
        .ok(CHECK, "set", store::set(&value, b"value", None))
        .is_none()
    {
        return;
    }
    commit(CHECK, found);
    if let Some(n) = found.ok(CHECK, "increment", store::increment(&value, 0, None))
        && n != 0
    {
        found.add(
            CHECK,
            format!("increment by 0 of a key holding only a value answered {n}, not 0"),
        );
    }
    if let Some(keys) = found.ok(CHECK, "list-keys", store::list_keys(&run.key("ns:"))) {
        expect_keys(
            CHECK,
            "after a set and an increment under it",
            &keys,
            &[&value],
            found,
        );
    }
    match found.ok(CHECK, "get", store::get(&value)) {
        Some(Some(v)) if v == b"value" => {}
        Some(v) => found.add(
            CHECK,
            format!("get of a committed value answered {}", shape(v.as_deref())),
        ),
        None => {}
    }
}

/// `increment(k, 0, none)` answers 0 for an absent counter and makes nothing appear.
fn zero_increment(run: &Run, found: &mut Findings) {
    const CHECK: &str = "zero-increment";
    let key = run.key("zero:k");
    for _ in 0..2 {
        if let Some(n) = found.ok(CHECK, "increment", store::increment(&key, 0, None))
            && n != 0
        {
            found.add(
                CHECK,
                format!("increment(k, 0, none) of an absent counter answered {n}, not 0"),
            );
        }
    }
    if let Some(Some(_)) = found.ok(CHECK, "get", store::get(&key)) {
        found.add(CHECK, "increment(k, 0, none) made a value appear at k");
    }
    if let Some(keys) = found.ok(CHECK, "list-keys", store::list_keys(&run.key("zero:"))) {
        expect_keys(CHECK, "after increment(k, 0, none)", &keys, &[], found);
    }
}

/// Deltas add up (negative ones too), an expiry keeps the count, and `delete` removes a counter.
fn increment(run: &Run, found: &mut Findings) {
    const CHECK: &str = "increment";
    let key = run.key("incr:n");
    let steps: [(i64, Option<i64>, i64); 4] = [
        (5, None, 5),
        (-7, None, -2),
        (0, None, -2),
        (3, Some(now().saturating_add(3600)), 1),
    ];
    for (delta, expires_at, expected) in steps {
        match found.ok(
            CHECK,
            "increment",
            store::increment(&key, delta, expires_at),
        ) {
            Some(n) if n == expected => {}
            Some(n) => {
                found.add(
                    CHECK,
                    format!("increment by {delta} answered {n}, not {expected}"),
                );
                return;
            }
            None => return,
        }
    }
    if found.ok(CHECK, "delete", store::delete(&key)).is_none() || !commit(CHECK, found) {
        return;
    }
    if let Some(n) = found.ok(CHECK, "increment", store::increment(&key, 0, None))
        && n != 0
    {
        found.add(CHECK, format!("a deleted counter reads {n}, not 0"));
    }
}

/// A call's store operations take effect in the order it makes them, counters included: a counter
/// deleted and then incremented in one unit of work counts from 0, and the commit does not delete
/// it afterwards. A host that holds the delete until `commit` while the increment applies at once
/// gets this backwards (the component's undo of an admin reset relies on it).
fn delete_then_increment(run: &Run, found: &mut Findings) {
    const CHECK: &str = "delete-then-increment";
    let key = run.key("held:n");
    if found
        .ok(CHECK, "increment", store::increment(&key, 5, None))
        .is_none()
        || !commit(CHECK, found)
        || found.ok(CHECK, "delete", store::delete(&key)).is_none()
    {
        return;
    }
    let steps: [(i64, &str, i64); 3] = [
        (0, "read right after its delete", 0),
        (2, "incremented by 2 after its delete", 2),
        (0, "read again", 2),
    ];
    for (delta, what, expected) in steps {
        match found.ok(CHECK, "increment", store::increment(&key, delta, None)) {
            Some(n) if n == expected => {}
            Some(n) => {
                found.add(
                    CHECK,
                    format!(
                        "a counter deleted in this call and {what} answered {n}, not {expected}"
                    ),
                );
                return;
            }
            None => return,
        }
    }
    if !commit(CHECK, found) {
        return;
    }
    if let Some(n) = found.ok(CHECK, "increment", store::increment(&key, 0, None))
        && n != 2
    {
        found.add(
            CHECK,
            format!(
                "a counter deleted and then incremented to 2 in one call reads {n} after the \
                 commit: the held delete was applied after the increment"
            ),
        );
    }
}

/// `list-keys` answers exactly the value keys under the prefix: not counters, not deleted keys,
/// not keys under a neighbouring prefix. The prefix holds the characters that are wildcards or
/// escapes in SQL `LIKE` and Redis `SCAN MATCH`, which a backend must take literally.
fn list_keys(run: &Run, found: &mut Findings) {
    const CHECK: &str = "list-keys";
    let prefix = run.key("list:a%_*?[\\]k:");
    let (a, b, gone) = (
        format!("{prefix}a"),
        format!("{prefix}b"),
        format!("{prefix}gone"),
    );
    // What a wildcard or a shorter prefix would wrongly take in.
    let neighbours = [
        run.key("list:aXY*?[\\]k:x"),
        run.key("list:a%_zz[\\]k:x"),
        run.key("list:a%_*?x\\]k:x"),
        run.key("list:a%_*?[\\]kx"),
        run.key("list:a%_*?[\\]k"),
        run.key("list:b"),
    ];
    let mut wrote = true;
    for key in [&a, &b, &gone].into_iter().chain(&neighbours) {
        wrote &= found
            .ok(CHECK, "set", store::set(key, b"v", None))
            .is_some();
    }
    if !wrote || !commit(CHECK, found) {
        return;
    }
    found.ok(
        CHECK,
        "increment",
        store::increment(&format!("{prefix}counter"), 1, None),
    );
    if found.ok(CHECK, "delete", store::delete(&gone)).is_none() || !commit(CHECK, found) {
        return;
    }
    if let Some(keys) = found.ok(CHECK, "list-keys", store::list_keys(&prefix)) {
        expect_keys(
            CHECK,
            "after committed sets, a delete and a counter",
            &keys,
            &[&a, &b],
            found,
        );
    }
}

/// Before `commit`, this instance reads its own `set` and `delete`, in `get` and `list-keys`.
fn read_your_writes(run: &Run, found: &mut Findings) {
    const CHECK: &str = "read-your-writes";
    let prefix = run.key("ryw:");
    let (kept, dropped) = (format!("{prefix}kept"), format!("{prefix}dropped"));
    if found
        .ok(CHECK, "set", store::set(&dropped, b"old", None))
        .is_none()
        || !commit(CHECK, found)
    {
        return;
    }
    let mut steps_ok = true;
    for value in [b"one".as_slice(), b"two"] {
        steps_ok &= found
            .ok(CHECK, "set", store::set(&kept, value, None))
            .is_some();
        match found.ok(CHECK, "get", store::get(&kept)) {
            Some(Some(v)) if v == value => {}
            Some(v) => found.add(
                CHECK,
                format!(
                    "get before commit, after this instance's set, answered {}",
                    shape(v.as_deref())
                ),
            ),
            None => {}
        }
    }
    steps_ok &= found.ok(CHECK, "delete", store::delete(&dropped)).is_some();
    if let Some(Some(_)) = found.ok(CHECK, "get", store::get(&dropped)) {
        found.add(
            CHECK,
            "get before commit, after this instance's delete, answered the old value",
        );
    }
    if let Some(keys) = found.ok(CHECK, "list-keys", store::list_keys(&prefix)) {
        expect_keys(
            CHECK,
            "before commit, after a set and a delete",
            &keys,
            &[&kept],
            found,
        );
    }
    if steps_ok && commit(CHECK, found) {
        match found.ok(CHECK, "get", store::get(&kept)) {
            Some(Some(v)) if v == b"two" => {}
            Some(v) => found.add(
                CHECK,
                format!("after commit, get answered {}", shape(v.as_deref())),
            ),
            None => {}
        }
    }
    // Left for `judge`: committed here, read on another instance.
    if found
        .ok(
            CHECK,
            "set",
            store::set(&run.key(VISIBLE), VISIBLE_VALUE, None),
        )
        .is_some()
    {
        commit(CHECK, found);
    }
}

/// `delete` of a key that was never written succeeds, and so does the commit after it.
fn delete_absent(run: &Run, found: &mut Findings) {
    const CHECK: &str = "delete-absent";
    if let Err(e) = store::delete(&run.key("never-written")) {
        found.add(
            CHECK,
            format!("delete of an absent key answered {}", describe(&e)),
        );
    }
    commit(CHECK, found);
}

/// A key whose expiry lies ahead is kept (`judge` reads it again, later).
fn expiry(run: &Run, found: &mut Findings) {
    const CHECK: &str = "expiry";
    let key = run.key(EXPIRING);
    if found
        .ok(
            CHECK,
            "set",
            store::set(&key, b"kept", Some(now().saturating_add(3600))),
        )
        .is_some()
        && commit(CHECK, found)
    {
        match found.ok(CHECK, "get", store::get(&key)) {
            Some(Some(v)) if v == b"kept" => {}
            Some(v) => found.add(
                CHECK,
                format!("a key expiring in an hour read as {}", shape(v.as_deref())),
            ),
            None => {}
        }
    }
}

/// The largest key and value are kept byte for byte; one byte more, or a control character, is
/// refused with `invalid` and never kept.
fn limits(run: &Run, found: &mut Findings) {
    const CHECK: &str = "limits";
    // Every printable ASCII byte, the space included, in the longest key.
    let mut key = run.key("limits:");
    let printable: Vec<char> = (0x20u8..=0x7E).map(char::from).collect();
    let mut i = 0;
    while key.len() < MAX_KEY {
        key.push(printable[i % printable.len()]);
        i += 1;
    }
    let value: Vec<u8> = (0..MAX_VALUE).map(|i| (i % 251) as u8).collect();
    if found
        .ok(
            CHECK,
            "set of a 512-byte key and a 64 KiB value",
            store::set(&key, &value, None),
        )
        .is_some()
        && commit(CHECK, found)
    {
        match found.ok(CHECK, "get of a 512-byte key", store::get(&key)) {
            Some(Some(v)) if v == value => {}
            Some(v) => found.add(
                CHECK,
                format!(
                    "a 64 KiB value at a 512-byte key read back as {}",
                    shape(v.as_deref())
                ),
            ),
            None => {}
        }
        if let Some(keys) = found.ok(CHECK, "list-keys", store::list_keys(&run.key("limits:"))) {
            expect_keys(
                CHECK,
                "after setting the 512-byte key",
                &keys,
                &[&key],
                found,
            );
        }
    }

    let long_key = format!("{key}x");
    let control_key = run.key("limits-bad:a\nb");
    let big_key = run.key("limits-bad:big");
    let big_value = vec![b'v'; MAX_VALUE + 1];
    refused(
        CHECK,
        "a 513-byte key",
        store::set(&long_key, b"v", None),
        found,
    );
    refused(
        CHECK,
        "a key holding a line feed",
        store::set(&control_key, b"v", None),
        found,
    );
    refused(
        CHECK,
        "a 65,537-byte value",
        store::set(&big_key, &big_value, None),
        found,
    );
    match store::increment(&long_key, 1, None) {
        Err(StoreError::Invalid(_)) => {}
        other => found.add(
            CHECK,
            format!(
                "increment of a 513-byte key answered {}, not invalid",
                answer(&other)
            ),
        ),
    }
    if let Some(Some(_)) = found.ok(CHECK, "get", store::get(&big_key)) {
        found.add(CHECK, "a 65,537-byte value was kept");
    }
}

/// A `set` that breaks the limits is refused with `invalid`: by the call, or (a host that checks
/// only when it writes) by the `commit` after it.
fn refused(check: &str, what: &str, set: Result<(), StoreError>, found: &mut Findings) {
    match set {
        Err(StoreError::Invalid(_)) => {}
        Err(e) => found.add(
            check,
            format!("set of {what} answered {}, not invalid", describe(&e)),
        ),
        Ok(()) => match store::commit() {
            Err(StoreError::Invalid(_)) => {}
            Err(e) => found.add(
                check,
                format!(
                    "set of {what} answered ok, and commit {}, not invalid",
                    describe(&e)
                ),
            ),
            Ok(()) => found.add(
                check,
                format!("set of {what} and commit both answered ok: it was kept"),
            ),
        },
    }
}

/// Compares listed keys with the expected ones, in any order, naming the strays and the missing.
pub(crate) fn expect_keys(
    check: &str,
    when: &str,
    listed: &[String],
    expected: &[&String],
    found: &mut Findings,
) {
    let mut listed: Vec<&String> = listed.iter().collect();
    listed.sort();
    let mut expected = expected.to_vec();
    expected.sort();
    if listed != expected {
        // A few of each name the fault; a thousand would bury it.
        let stray: Vec<&&String> = listed
            .iter()
            .filter(|k| expected.binary_search(k).is_err())
            .take(5)
            .collect();
        let missing: Vec<&&String> = expected
            .iter()
            .filter(|k| listed.binary_search(k).is_err())
            .take(5)
            .collect();
        found.add(
            check,
            format!(
                "list-keys {when} answered {} keys, not {}: unexpected {stray:?}, missing {missing:?} (at most 5 of each)",
                listed.len(),
                expected.len()
            ),
        );
    }
}

/// What a read answered, without the bytes: the kit never echoes a stored value.
pub(crate) fn shape(value: Option<&[u8]>) -> String {
    value.map_or_else(
        || "none".to_owned(),
        |v| format!("another value ({} bytes)", v.len()),
    )
}

/// A store answer, without its value.
fn answer<T>(result: &Result<T, StoreError>) -> String {
    match result {
        Ok(_) => "ok".to_owned(),
        Err(e) => describe(e),
    }
}
