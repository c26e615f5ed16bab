//! # spin-adapter
//!
//! A WebAssembly component that lets Spin run the mfa-step component unchanged. It exports the
//! `mfa-step:plugin` interfaces the component imports (`store`, `mailer`, `audit`, `config`, and
//! the type-only `types`) and implements each with Spin's own APIs through `spin-sdk` 5.2:
//!
//! | export | Spin API |
//! |---|---|
//! | `store.get` / `set` / `delete` | `fermyon:spin/key-value` on the `default` store; expiries through an index the writers sweep ([`expiring`]); `set`s held for the unit's audit record or `commit` ([`unit`]) |
//! | `store.list-keys` | a user's devices from a per-user index built on `increment` ([`listing`]); other prefixes by a scan |
//! | `store.increment` | `wasi:keyvalue/atomics.increment` on the same store (no compare-and-swap) |
//! | `mailer.send` | an HTTP `POST` of the message as JSON to the `mail_api_url` variable |
//! | `audit.head` | key-value reads: `audit-newest`, then the newest record's line (its `hash`) |
//! | `audit.append` | claim the position with `increment`, write the line with `audit-newest` and the unit's held `set`s in one batch; then an optional `POST` to `siem_url` |
//! | `config.get` | Spin variables |
//!
//! Spin composes it with the guest through `[component.mfa-step.dependencies]` in `spin.toml`.
//! Each export decides nothing about MFA. The translations (key names, the mail API's JSON body,
//! status mapping) are in [`mapping`]; the one export that is more than a translation, `audit`,
//! is in [`audit_stream`]. Spin's key-value store has no lock and no compare-and-swap that holds on
//! Redis, so "append only if the record links to the head, atomically" is built from its atomic
//! `increment`: each position of an organization's stream is claimed by the one writer whose
//! increment returns 1. Its residual risk, documented there: a writer that dies between claiming a
//! position and writing it makes that organization's audited operations fail closed until the
//! position is taken over, after [`audit_stream::STALL_TIMEOUT`] (4 s); the takeover is safe as long
//! as no write is delayed inside the store's client by more than 3 s and the instances' clocks
//! agree to within about as much. Both modules build and are tested on the host; the Spin half
//! exists only on `wasm32`.

pub mod audit_stream;
pub mod expiring;
pub mod listing;
pub mod mapping;
pub mod unit;

#[cfg(target_arch = "wasm32")]
mod component;
