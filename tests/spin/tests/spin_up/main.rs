//! mfa-step on a real Spin: `bash spin/build.sh`, then `spin up` (Spin 4.0.x, `SPIN_BIN`, default
//! `../shared/tools/spin`) on a free port with a mail API stand-in, driven over real HTTP as an IdP
//! and a browser would, then its key-value store read back and the audit stream verified with
//! `mfa-step audit verify --spin-kv`.
//!
//! - `sqlite::` Spin's default key-value store (a SQLite file in the state directory): the REST
//!   flow (enrollment, the emailed code, a remembered browser, a trusted begin with a rotated
//!   cookie, a replayed code, a mail API that is down, an admin reset), the lock after 20 wrong
//!   codes (on a clock moved forward with libfaketime), and the hosted prompt pages (a remembered
//!   browser, a new network made with a second loopback source address, never a header, and
//!   proof that the address the component sees is Spin's `spin-client-addr`, not one a client
//!   sends).
//! - `redis::` the same on a real Redis (`MFA_STEP_TEST_REDIS`, `.ci/servers.sh`), and two
//!   `spin up` on one Redis: one code verified concurrently through both works once, the send
//!   cap holds across both, the audit stream does not fork, and a writer killed between claiming
//!   an audit position and writing it blocks its organization for at most 5 s.
//! - `conformance::` the host conformance kit (`spin/conformance.toml`) over the same adapter, on
//!   SQLite and on a Redis of its own: no finding while healthy, every import `err` once the
//!   store is broken (the SQLite file overwritten, the Redis server killed).
//!
//! Every test is `#[ignore]`d in the README's `cargo test` (it needs the Spin CLI, a build and,
//! for `redis::`, a server); CI runs them with `cargo test -p mfa-step-spin-tests -- --ignored`,
//! where a missing binary or server fails them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

mod conformance;
mod prompt;
mod redis;
mod rest;
mod support;

mod sqlite {
    use crate::support::{App, MailSink, Options};

    #[test]
    #[ignore = "needs the Spin CLI and a build: cargo test -p mfa-step-spin-tests -- --ignored"]
    fn the_rest_flow_works_on_spin_and_its_audit_stream_verifies() {
        let mail = MailSink::start();
        let app = App::start(&mail, &Options::sqlite());
        crate::rest::flow(&app, &mail, "acme");
        crate::rest::mail_down_fails_closed(&app, &mail, "acme");
        crate::rest::console(&app, "acme");
        let report = app.assert_audit_whole();
        assert!(report.contains("acme: seq"), "{report}");
        // The verifier reads what Spin stored: one edited record breaks it.
        crate::support::tamper_sqlite_record(&app, "acme", 2);
        let (ok, report) = app.audit_verify();
        assert!(!ok, "{report}");
        assert!(
            report.contains("BROKEN: audit:acme:00000000000000000002"),
            "{report}"
        );
    }

    #[test]
    #[ignore = "needs the Spin CLI, a build and libfaketime: cargo test -p mfa-step-spin-tests -- --ignored"]
    fn twenty_wrong_codes_lock_the_user_until_an_admin_resets_them() {
        crate::rest::lock_after_twenty(&Options::sqlite());
    }

    #[test]
    #[ignore = "needs the Spin CLI and a build: cargo test -p mfa-step-spin-tests -- --ignored"]
    fn the_hosted_prompt_remembers_a_browser_and_asks_again_on_a_new_network() {
        let mail = MailSink::start();
        let app = App::start(&mail, &Options::sqlite());
        crate::prompt::remembered_then_new_network(&app, &mail, "clinic");
        app.assert_audit_whole();
    }

    #[test]
    #[ignore = "needs the Spin CLI and a build: cargo test -p mfa-step-spin-tests -- --ignored"]
    fn the_client_address_is_spins_spin_client_addr_not_a_header_the_client_sends() {
        let mail = MailSink::start();
        let app = App::start(&mail, &Options::sqlite());
        crate::prompt::client_address_is_the_sockets(&app, &mail, "clinic");
        app.assert_audit_whole();
    }
}
