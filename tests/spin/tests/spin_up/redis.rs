//! The Spin app with its state in a real Redis (`MFA_STEP_TEST_REDIS`, `.ci/servers.sh`): the same
//! flows as on SQLite, then two `spin up` processes sharing one Redis database.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::rest::{challenge, send, verify};
use crate::support::{App, MailSink, Options, Reply, ctx, email, redis_db};

/// Two apps on one Redis database, with the same keys (two instances of one deployment).
fn two_instances(mail: &MailSink) -> (App, App) {
    let url = redis_db();
    let a = App::start(mail, &Options::redis(&url));
    let mut options = Options::redis(&url);
    options.keys = Some((a.api_key.clone(), a.hmac_key.clone(), a.prompt_key.clone()));
    let b = App::start(mail, &options);
    (a, b)
}

/// `n` calls at once (a barrier releases them), the even ones through `a`, the odd through `b`.
fn at_once(a: &App, b: &App, n: usize, call: impl Fn(&App, usize) -> Reply + Sync) -> Vec<Reply> {
    let barrier = Arc::new(Barrier::new(n));
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (barrier, call) = (Arc::clone(&barrier), &call);
                let app = if i % 2 == 0 { a } else { b };
                scope.spawn(move || {
                    barrier.wait();
                    call(app, i)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn statuses(replies: &[Reply]) -> std::collections::BTreeMap<u16, usize> {
    let mut counted = std::collections::BTreeMap::new();
    for r in replies {
        *counted.entry(r.status).or_default() += 1;
    }
    counted
}

#[test]
#[ignore = "needs the Spin CLI, a build and MFA_STEP_TEST_REDIS: cargo test -p mfa-step-spin-tests -- --ignored"]
fn the_rest_flow_and_the_hosted_prompt_work_with_state_in_redis() {
    let mail = MailSink::start();
    let app = App::start(&mail, &Options::redis(&redis_db()));
    crate::rest::flow(&app, &mail, "acme");
    crate::rest::mail_down_fails_closed(&app, &mail, "acme");
    crate::prompt::remembered_then_new_network(&app, &mail, "clinic");
    let report = app.assert_audit_whole();
    assert!(
        report.contains("acme: seq") && report.contains("clinic: seq"),
        "{report}"
    );
}

#[test]
#[ignore = "needs the Spin CLI, a build, libfaketime and MFA_STEP_TEST_REDIS: cargo test -p mfa-step-spin-tests -- --ignored"]
fn twenty_wrong_codes_lock_the_user_with_state_in_redis() {
    crate::rest::lock_after_twenty(&Options::redis(&redis_db()));
}

#[test]
#[ignore = "needs the Spin CLI, a build and MFA_STEP_TEST_REDIS: cargo test -p mfa-step-spin-tests -- --ignored"]
fn the_client_address_is_the_sockets_with_state_in_redis() {
    let mail = MailSink::start();
    let app = App::start(&mail, &Options::redis(&redis_db()));
    crate::prompt::client_address_is_the_sockets(&app, &mail, "clinic");
    app.assert_audit_whole();
}

#[test]
#[ignore = "needs the Spin CLI, a build and MFA_STEP_TEST_REDIS: cargo test -p mfa-step-spin-tests -- --ignored"]
fn two_spins_on_one_redis_share_single_use_codes_the_send_cap_and_one_audit_stream() {
    let mail = MailSink::start();
    let (a, b) = two_instances(&mail);
    let org = "shared";

    // One right code, verified 16 times at once through both instances: exactly one success.
    let c = ctx(org, "dr-once");
    let id = challenge(&a, &c);
    assert_eq!(send(&a, &c, &id).status, 200);
    let code = mail.code(&email("dr-once"));
    let replies = at_once(&a, &b, 16, |app, _| verify(app, &c, &id, &code, false));
    let counted = statuses(&replies);
    assert_eq!(
        counted.get(&200).copied(),
        Some(1),
        "exactly one success: {counted:?}"
    );
    assert!(
        replies
            .iter()
            .all(|r| r.status == 200 || r.kind() == Some("rejected") || r.status == 429),
        "{:?}",
        replies.iter().map(|r| &r.text).collect::<Vec<_>>()
    );

    // 12 sends at once through both: 3 emails, the rest refused with a time to wait.
    let c = ctx(org, "dr-cap");
    let id = challenge(&b, &c);
    let replies = at_once(&a, &b, 12, |app, _| send(app, &c, &id));
    let counted = statuses(&replies);
    assert_eq!(counted.get(&200).copied(), Some(3), "{counted:?}");
    assert_eq!(counted.get(&429).copied(), Some(9), "{counted:?}");
    assert_eq!(
        mail.to(&email("dr-cap")).len(),
        3,
        "3 emails reached the API"
    );

    // 40 sign-ins of one organization at once through both: one stream, whole, 40 more starts.
    let before = a.audit_records(org).len();
    let replies = at_once(&a, &b, 40, |app, i| {
        app.post(
            "/v1/login/begin",
            &json!({ "context": ctx(org, &format!("dr-{i}")) }),
        )
    });
    assert_eq!(
        statuses(&replies).get(&200).copied(),
        Some(40),
        "{:?}",
        statuses(&replies)
    );
    let records = a.audit_records(org);
    assert_eq!(
        records.len(),
        before + 40,
        "one challenge_started record per begin"
    );
    a.assert_audit_whole();
}

#[test]
#[ignore = "needs the Spin CLI, a build and MFA_STEP_TEST_REDIS: cargo test -p mfa-step-spin-tests -- --ignored"]
fn a_writer_killed_after_claiming_an_audit_position_blocks_its_org_for_at_most_5_s() {
    let mail = MailSink::start();
    let (a, b) = two_instances(&mail);
    let org = "crash";
    let begin =
        |app: &App, user: &str| app.post("/v1/login/begin", &json!({ "context": ctx(org, user) }));
    assert_eq!(begin(&b, "dr-first").status, 200);

    // `a` is killed (SIGKILL) in the middle of a stream of sign-ins.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    std::thread::scope(|scope| {
        let (a_ref, stop_ref) = (&a, Arc::clone(&stop));
        let load = scope.spawn(move || {
            let mut n = 0;
            while !stop_ref.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = crate::support::request(
                    None,
                    a_ref.port,
                    "POST",
                    "/v1/login/begin",
                    &[("Authorization", &format!("Bearer {}", a_ref.api_key))],
                    &json!({ "context": ctx(org, &format!("dr-load-{n}")) }).to_string(),
                );
                n += 1;
            }
        });
        std::thread::sleep(Duration::from_millis(700));
        a.kill();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = load.join();
    });
    assert!(
        crate::support::request(None, a.port, "GET", "/healthz", &[], "").is_err(),
        "the killed instance still answers"
    );
    // The kill lands between a claim and its write only by chance: the position after the head
    // is claimed here as such a writer claims it (if the kill did land there, it stays claimed).
    let head = head_seq(&b, org);
    claim(&b, org, head + 1);

    // The org's audited calls fail closed on `b` until the position is taken over.
    let blocked_at = Instant::now();
    let first = begin(&b, "dr-after-0");
    assert_eq!(
        (first.status, first.kind()),
        (503, Some("unavailable")),
        "the claimed position blocks the stream: {}",
        first.text
    );
    let mut n = 1;
    let through = loop {
        let r = begin(&b, &format!("dr-after-{n}"));
        if r.status == 200 {
            break blocked_at.elapsed();
        }
        assert_eq!(r.status, 503, "{}", r.text);
        assert!(
            blocked_at.elapsed() < Duration::from_secs(30),
            "still blocked after 30 s"
        );
        n += 1;
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!(
        "[spin redis] the org was blocked for {through:?} after a writer died holding a claim"
    );
    assert!(
        through <= Duration::from_millis(5_500),
        "blocked for {through:?}, more than 5 s"
    );
    // Other organizations were never blocked, and the stream is whole.
    assert_eq!(begin_other(&b).status, 200);
    b.assert_audit_whole();
}

fn begin_other(app: &App) -> Reply {
    app.post(
        "/v1/login/begin",
        &json!({ "context": ctx("elsewhere", "dr-x") }),
    )
}

/// The highest record position of `org` in the store.
fn head_seq(app: &App, org: &str) -> u64 {
    app.audit_records(org)
        .iter()
        .filter_map(|r| r["seq"].as_u64())
        .max()
        .unwrap_or(0)
}

/// Claims position `seq` of `org`'s stream in epoch 0, as a writer does before writing
/// (`spin-adapter/src/mapping.rs`: `audit-claim:<org>:<seq, 20 digits>:<epoch>`).
fn claim(app: &App, org: &str, seq: u64) {
    let crate::support::Kv::Redis(url) = &app.kv else {
        panic!("a Redis app")
    };
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let _: i64 = redis::cmd("INCRBY")
        .arg(format!("audit-claim:{org}:{seq:020}:0"))
        .arg(1)
        .query(&mut conn)
        .unwrap();
}
