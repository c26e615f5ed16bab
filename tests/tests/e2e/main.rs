//! End-to-end tests: the compiled component driven through the wasmtime harness, as an IdP (the
//! function exports) and as a REST client (the HTTP export) would drive it.
//!
//! One test binary with a module per concern, so that a change in `core/` relinks one binary, not
//! one per suite, and the component is compiled once per run (wasmtime's on-disk cache keeps it
//! across runs).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod common;

mod audit_trail;
mod console;
mod devices;
mod emails;
mod enrollment;
mod fail_closed;
mod hardening;
mod limits;
mod login_flow;
mod openapi;
mod persistence;
mod policies;
mod prompt_refusals;
mod rest_api;
mod serve_liveness;
mod smoke;
