//! # mfa-step-spin-tests
//!
//! The Spin app (`spin.toml`) run on a real Spin and driven over HTTP: the tests are in `tests/`,
//! this library is empty. See `tests/suite.rs` for what is covered and how CI runs it.
