//! The adversarial suite (issue 14): a release `serve` attacked over real sockets, each case
//! asserting the number a user or an attacker relies on, and printing its figures.
//!
//! Every case but `nodes` runs the release `adversary-serve` (this crate's binary: host-harness's
//! `serve_with` over SQLite, with a test clock, a garbling and pausing store, fault switches and a
//! mail log, driven from a control API on a second loopback port), one fresh server per case, one
//! case at a time. `shipped` proves the shipped release `mfa-step` carries none of those hooks;
//! `nodes` runs the shipped `mfa-step serve` itself, two nodes at a time on the Postgres and Redis
//! servers CI starts (`.ci/servers.sh`), since those backends are the shipped binary's. The suite
//! builds nothing: it fails when the binaries are missing (`cargo build --release --locked -p
//! mfa-step-adversarial -p host-harness`).
//!
//! | module | attack | the number |
//! |---|---|---|
//! | `flood` | 500 slow bodies (a large Content-Length, one byte) while REST logins go on | every login succeeds, p99 < 1 s |
//! | `guesses` | 8, 64, 256 parallel wrong codes on fresh challenges; a month of parallel guessing | ≤ 5 looked at per code, none inside a delay; ≤ 50 per fixed 30-day window, ≤ 100 in any 30 days |
//! | `sends` | 64 parallel sends; bursts across a window edge | ≤ 3 emails in any 300 s |
//! | `single_use` | 1000 concurrent verifies of one right code | exactly 1 success |
//! | `devices` | policy tightened after a browser is trusted; revokes racing a paused rotation | no trusted login after either |
//! | `prompt` | 500 unsigned prompt requests naming a real and unknown orgs | 0 records, 0 store keys |
//! | `garbled` | values the decisions read, garbled in the store | never allow, `unavailable`, recorded |
//! | `nodes` | two `mfa-step serve` nodes on one Postgres database or Redis key space: 1000 verifies of one code, 64 sends, parallel wrong codes; a node killed (SIGKILL) mid-load, shared Postgres or SQLite + JSONL | exactly 1 success and a trail with no fork; ≤ 3 emails, ≤ 5 looked at per code; every acknowledged begin recorded |
//! | `shipped` | the hooks in the shipped binary | none: no flag, no route string, 404 |
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests fail loudly on purpose"
)]

mod devices;
mod flood;
mod garbled;
mod guesses;
mod nodes;
mod prompt;
mod sends;
mod shipped;
mod single_use;
mod support;
