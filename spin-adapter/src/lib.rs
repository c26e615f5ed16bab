//! # spin-adapter
//!
//! A WebAssembly component that lets Spin run the mfa-step component unchanged. It exports the
//! `mfa-step:plugin` interfaces the component imports (`store`, `mailer`, `audit`, `config`, and
//! the type-only `types`) and implements each with Spin's own APIs through `spin-sdk` 5.2:
//!
//! | export | Spin API |
//! |---|---|
//! | `store.get` / `set` / `delete` / `list-keys` | `fermyon:spin/key-value` on the `default` store |
//! | `store.increment` | `wasi:keyvalue/atomics.increment` on the same store (no compare-and-swap) |
//! | `mailer.send` | an HTTP `POST` of the message as JSON to the `mail_api_url` variable |
//! | `audit.append` | a key-value write, then an optional `POST` to the `siem_url` variable |
//! | `config.get` | Spin variables |
//!
//! Spin composes it with the guest through `[component.mfa-step.dependencies]` in `spin.toml`.
//! Each export is a direct mapping and decides nothing about MFA; the translations themselves
//! (key names, the mail API's JSON body, status mapping) are in [`mapping`], which builds and is
//! tested on the host. The Spin half exists only on `wasm32`.

pub mod mapping;

#[cfg(target_arch = "wasm32")]
mod component;
