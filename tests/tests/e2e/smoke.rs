//! The smallest end-to-end proof: the compiled component issues a code, and the code works once.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use crate::common;
use common::*;

#[tokio::test]
async fn a_code_works_once_through_the_component() {
    let h = Harness::new();
    let c = ctx("dr-smoke");
    let id = h.challenge(&c).await;
    h.send_code(&c, &id).await.unwrap();
    let code = h.last_code();
    assert!(h.verify(&c, &id, &code).await.is_ok());
    assert_eq!(
        kind(&h.verify(&c, &id, &code).await),
        Some(host_harness::wit::ErrorKind::Rejected)
    );
}
