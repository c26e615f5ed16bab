//! Property tests for every parser of untrusted input in the core (issue 14, the adversarial
//! suite): arbitrary bytes never panic, near-valid inputs are refused with their typed error and
//! never accepted, valid inputs are accepted (and round-trip), and a refusal reached through an
//! entry point of the engine leaves everything exactly as it was (every store value, counter and
//! expiry, every audit record, every note for the host's log, every mail), or changed by exactly
//! the trace the design keeps of it (a refused signed request's record, an unsigned one's note).
//!
//! ```text
//! world     the harness: seeded RNG, forkable in-memory world, the state compared, the runner
//! prompt    the hosted prompt's signed request (JWT): header, signature, claims, times, return_to
//! cookie    the trusted-device cookie, at begin and at verify (remembering)
//! hosted    the pages' method, path, query, form bodies and Cookie header
//! language  Accept-Language
//! input     kernel::input: ids, addresses, text, IPs, roles, codes, whole contexts and actors
//! context   the same inputs refused at every entry point of the engine, changing nothing
//! bodies    the REST API's JSON bodies, policy / branding / role checks, the preview link
//! stored    stored values read back, audit log lines, the host's configuration
//! found     properties that found a bug, with its minimal reproduction (fixed, kept as guards)
//! ```
//!
//! Regression files are off (see `world::check`): a failing case is reported with its shrunk
//! input, and a real bug is kept as a named test with its minimal reproduction in `found.rs`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly on purpose"
)]

#[path = "parsers/world.rs"]
mod world;

#[path = "parsers/prompt.rs"]
mod prompt;

#[path = "parsers/cookie.rs"]
mod cookie;

#[path = "parsers/hosted.rs"]
mod hosted;

#[path = "parsers/language.rs"]
mod language;

#[path = "parsers/input.rs"]
mod input;

#[path = "parsers/context.rs"]
mod context;

#[path = "parsers/bodies.rs"]
mod bodies;

#[path = "parsers/stored.rs"]
mod stored;

#[path = "parsers/found.rs"]
mod found;
