//! The shared kernel: the words every other module speaks, and nothing else. Errors, the ports, secrets
//! as types, time as a value, store keys, input validation, settings and the data types of the
//! contract.
//!
//! It guarantees that these building blocks hold their invariants on their own (a key is never
//! printed, a setting is never out of bounds, an identifier is always safe in a store key), so the
//! layers above cannot get them wrong. It defends against the layers above by knowing none of them:
//! nothing here names an engine, a policy or a page (`core/tests/layers.rs` checks it), so every
//! other module can build on it without an import circle.

pub mod authority;
pub mod error;
pub mod input;
pub mod keys;
pub mod model;
pub mod ports;
pub mod random;
pub mod secret;
pub mod settings;
pub mod time;
