//! `expect-failures`: while the runner has broken the backends, every import must answer `err`.
//!
//! The one answer that must never come is a plausible `ok`: a `get` answering `none` or an
//! `increment` answering 0 reads to the component as "no code sent yet", "no wrong guess yet", and
//! a store that is down would then let every limit through. A host that holds `set`, `delete` and
//! `append` until `commit` may answer them `ok`; its `commit` must then answer `err`.

use crate::bindings::mfa_step::plugin::audit;
use crate::bindings::mfa_step::plugin::store;
use crate::together::{entry, seal_key};
use crate::{Findings, Run, new_id, now};

/// Checks every import against broken backends.
pub(crate) fn expect_failures(run: &Run, found: &mut Findings) {
    let key = run.key("broken:k");
    let counter = run.key("broken:n");
    if let Ok(value) = store::get(&key) {
        found.add(
            "fails-closed:get",
            format!(
                "get answered ok({}) with the backends broken",
                if value.is_some() { "a value" } else { "none" }
            ),
        );
    }
    if let Ok(keys) = store::list_keys(&run.key("broken:")) {
        found.add(
            "fails-closed:list-keys",
            format!(
                "list-keys answered ok ({} keys) with the backends broken",
                keys.len()
            ),
        );
    }
    for (delta, what) in [
        (0, "increment(k, 0, none), a read,"),
        (1, "increment(k, 1, none)"),
    ] {
        if let Ok(n) = store::increment(&counter, delta, None) {
            found.add(
                "fails-closed:increment",
                format!("{what} answered ok({n}) with the backends broken"),
            );
        }
    }
    // A stream this run never wrote to: a host may answer a head it already knows from memory.
    let org = format!("{}-broken", run.org);
    if let Ok(head) = audit::head(&org) {
        found.add(
            "fails-closed:head",
            format!(
                "head answered ok({}) with the backends broken",
                if head.is_some() { "a head" } else { "none" }
            ),
        );
    }

    // A unit holding one of each write: each may fail at once, or be held until `commit`.
    let mut held = Vec::new();
    if store::set(&key, b"v", None).is_ok() {
        held.push("set");
    }
    if store::delete(&run.key("broken:d")).is_ok() {
        held.push("delete");
    }
    // Sealed as every record is (a host may refuse to relink one that is not); a missing key is
    // `config`'s finding, and the record goes unsealed.
    let seal = seal_key(found);
    let record = entry(&org, "broken", None, (&new_id(), now()), seal.as_ref());
    if audit::append(&record).is_ok() {
        held.push("append");
    }
    if !held.is_empty() && store::commit().is_ok() {
        for call in held {
            found.add(
                &format!("fails-closed:{call}"),
                format!("{call} and the commit after it answered ok with the backends broken"),
            );
        }
    }
}
