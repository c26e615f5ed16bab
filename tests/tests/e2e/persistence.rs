//! State lives in the host's store, not in the component: over a SQLite file, a code sent before a
//! restart works after it, and the send window and the wrong-guess streak survive it too. And the
//! `plugin` world (no wasi:http), which an IdP host loads, runs the same login step.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use crate::common;
use std::path::Path;
use std::sync::Arc;

use common::*;
use host_harness::backends::SqliteStore;
use host_harness::wit::ErrorKind;

/// A harness over a fresh `SqliteStore::open` of `path`: new store handle, mailer, audit sink and
/// instances, as after a host restart. The clock starts at `now`.
fn restarted(path: &Path, now: i64) -> Harness {
    let store = SqliteStore::open(path).expect("open the SQLite store");
    let h = Harness::with(http_app(), Arc::new(store), default_config());
    h.clock.set(now);
    h
}

#[tokio::test]
async fn a_code_sent_before_a_restart_works_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db.sqlite");
    let c = ctx("dr-restart");

    let (id, code) = {
        let before = restarted(&db, T0);
        let id = before.challenge(&c).await;
        before.send_code(&c, &id).await.unwrap();
        (id, before.last_code())
    };

    let after = restarted(&db, T0 + 60);
    let status = after.status(&c).await.unwrap();
    assert_eq!(status.active_challenge.as_deref(), Some(id.as_str()));
    assert_eq!(status.code_expires_at, Some(T0 + 600));
    let resent = after.send_code(&c, &id).await.unwrap();
    assert!(resent.resent, "the live code survived: a send re-sends it");
    assert_eq!(after.last_code(), code);
    after
        .verify(&c, &id, &code)
        .await
        .expect("the code from before the restart works");
    match after.verify(&c, &id, &code).await {
        Err(e) if e.kind == ErrorKind::Rejected => {}
        other => panic!("still single use: {other:?}"),
    }

    // And its use survives the next restart.
    let again = restarted(&db, T0 + 61);
    match again.verify(&c, &id, &code).await {
        Err(e) if e.kind == ErrorKind::Rejected => {}
        other => panic!("a used code stays used across restarts: {other:?}"),
    }
}

#[tokio::test]
async fn the_send_window_and_the_failure_streak_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db.sqlite");
    let c = ctx("dr-counters");

    let (id, code) = {
        let before = restarted(&db, T0);
        let id = before.challenge(&c).await;
        for _ in 0..3 {
            before.send_code(&c, &id).await.unwrap();
        }
        let code = before.last_code();
        for _ in 0..5 {
            assert!(before.verify(&c, &id, &wrong(&code)).await.is_err());
        }
        (id, code)
    };

    let after = restarted(&db, T0 + 10);
    let status = after.status(&c).await.unwrap();
    assert_eq!(status.sends_left, 0);
    assert_eq!(status.consecutive_failures, 5);
    assert_eq!(status.verify_blocked_until, Some(T0 + 30));
    match after.send_code(&c, &id).await {
        Err(e) if e.kind == ErrorKind::Throttled => assert_eq!(e.retry_after_seconds, Some(290)),
        other => panic!("the window is still full: {other:?}"),
    }
    match after.verify(&c, &id, &code).await {
        Err(e) if e.kind == ErrorKind::Throttled => assert_eq!(e.retry_after_seconds, Some(20)),
        other => panic!("the delay still runs: {other:?}"),
    }
    // The code's 5 guesses were spent before the restart: after the delay it is still dead.
    after.clock.set(T0 + 30);
    match after.verify(&c, &id, &code).await {
        Err(e) if e.kind == ErrorKind::Rejected => {}
        other => panic!("the per-code budget survived: {other:?}"),
    }
    assert_eq!(after.status(&c).await.unwrap().consecutive_failures, 6);
}

#[tokio::test]
async fn the_plugin_world_runs_the_same_login_step() {
    let h = Harness::plugin();
    let c = ctx("dr-plugin");
    let id = h.challenge(&c).await;
    let sent = h.send_code(&c, &id).await.unwrap();
    assert_eq!(
        (sent.resent, sent.code_expires_at, sent.sends_left),
        (false, T0 + 600, 2)
    );
    let code = h.last_code();
    match h.verify(&c, &id, &wrong(&code)).await {
        Err(e) if e.kind == ErrorKind::Rejected => {}
        other => panic!("a wrong code is refused: {other:?}"),
    }
    h.verify(&c, &id, &code)
        .await
        .expect("the code works in the plugin world");
    match h.verify(&c, &id, &code).await {
        Err(e) if e.kind == ErrorKind::Rejected => {}
        other => panic!("once: {other:?}"),
    }
    assert_eq!(
        h.actions(),
        [
            "challenge_started",
            "code_sent",
            "code_rejected",
            "enrolled",
            "code_rejected"
        ]
    );

    // It has no HTTP export: the runtime says so instead of serving.
    let req = hyper::Request::builder()
        .method("GET")
        .uri("http://localhost/healthz")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    assert!(h.runtime.handle(&h.backends, req).await.is_err());
}
