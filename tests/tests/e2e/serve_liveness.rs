//! A mail server that hangs must hold up only the request waiting for it. With one executor thread, a
//! send whose mailer blocks until released must not stop `/healthz` from answering: the host runs
//! blocking backend calls off the executor. (No timing threshold: the order of events is the assertion;
//! the 60 s timeout only turns a hang into a clear failure.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use crate::common;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use host_harness::backends::{MemoryAuditSink, MemoryStore};
use host_harness::{Backends, Clock, TestClock};
use mfa_step_core::kernel::ports::{Mailer, OutgoingMail, PortResult};

/// Tells the test it was entered, then waits until the test releases it.
struct StuckMailer {
    entered: Mutex<mpsc::Sender<()>>,
    release: Mutex<mpsc::Receiver<()>>,
}

impl Mailer for StuckMailer {
    fn send(&self, _mail: &OutgoingMail) -> PortResult<()> {
        let _ = self.entered.lock().unwrap().send(());
        let _ = self.release.lock().unwrap().recv();
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_stuck_mailer_does_not_stall_other_requests() {
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel();
    let mailer = Arc::new(StuckMailer {
        entered: Mutex::new(entered_tx),
        release: Mutex::new(release_rx),
    });
    let h = Harness::new();
    let backends = Backends {
        store: Arc::new(MemoryStore::new()),
        mailer,
        audit: Arc::new(MemoryAuditSink::new()),
        config: default_config(),
        clock: Clock::Test(TestClock::at(T0)),
        offload: host_harness::Offload::ALL,
    };
    let h = Harness { backends, ..h };
    let c = ctx("dr-stuck");
    let id = h.challenge(&c).await;

    let runtime = h.runtime.clone();
    let b = h.backends.clone();
    let c2 = c.clone();
    let sending = tokio::spawn(async move {
        let (mut store, plugin) = runtime.instantiate(&b).await.unwrap();
        plugin
            .mfa_step_plugin_login_step()
            .call_send_code(&mut store, &c2, &id)
            .await
            .unwrap()
    });
    // Wait (off the executor) until the mailer is stuck inside the send.
    tokio::task::spawn_blocking(move || {
        entered_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the send reached the mailer")
    })
    .await
    .unwrap();

    let health =
        tokio::time::timeout(Duration::from_secs(60), h.http("GET", "/healthz", None, "")).await;
    let (status, _) = health.expect("healthz answered while the mailer was stuck");
    assert_eq!(status, 200);
    assert!(
        !sending.is_finished(),
        "the send is still waiting for the mailer"
    );

    release_tx.send(()).unwrap();
    let sent = sending.await.unwrap();
    assert!(sent.is_ok(), "{sent:?}");
}
