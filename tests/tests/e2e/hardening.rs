//! Hardening (issue 14), through the compiled component:
//!
//! - **Trust follows today's policy.** A browser trusted under a generous policy is re-judged at
//!   every `begin` against the organization's policy as it is now: remembering switched off revokes
//!   it (`device:not-allowed`), fewer trust days revoke one verified longer ago than they allow
//!   (`device:trust-shortened`) and shorten the rest.
//! - **A revoke cannot be undone by a rotation.** A store that pauses a trusted login between
//!   loading its device and writing the rotated one back; each revoke path (owner, revoke-all,
//!   credential change, reset) lands in that gap; the device must stay revoked.
//! - **Unreadable state is unavailable.** A store that returns bytes that do not parse for one key:
//!   never `allow`, always `unavailable` (and a record of it), for every value the core keeps,
//!   except a trusted device, whose absence is the restrictive answer (a code is asked, recorded).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::sync::{Arc, Mutex};

use crate::common;

use common::*;
use host_harness::backends::MemoryStore;
use host_harness::wit::{self, CredentialChange, Decision, ErrorKind, Mandate, OrgPolicy};
use mfa_step_core::kernel::keys;
use mfa_step_core::kernel::ports::{PortResult, Store};
use serde_json::Value;

const ORG: &str = "acme-health";
const DAY: i64 = 86_400;

fn admin() -> wit::Actor {
    actor("it-admin", ORG, &["org-admin"])
}

fn platform_admin() -> wit::Actor {
    actor("root", "platform", &["platform-admin"])
}

fn policy(mandate: Mandate, trust_days: u8, remember: bool) -> OrgPolicy {
    OrgPolicy {
        mandate,
        required_roles: Vec::new(),
        trust_days,
        allow_remember_device: remember,
        ipv4_change_prefix: 16,
        ipv6_change_prefix: 48,
        enrollment_grace_days: 0,
        enrollment_grace_logins: 0,
    }
}

fn with_cookie(c: &wit::LoginContext, cookie: &str) -> wit::LoginContext {
    let mut c = c.clone();
    c.device.cookie = Some(cookie.to_owned());
    c
}

fn with_roles(user: &str, roles: &[&str]) -> wit::LoginContext {
    let mut c = ctx(user);
    c.roles = roles.iter().map(|r| (*r).to_owned()).collect();
    c
}

/// Signs in with an emailed code, remembering the browser: its device id and cookie.
async fn trust(h: &Harness, c: &wit::LoginContext) -> (String, String) {
    let id = h.challenge(c).await;
    h.send_code(c, &id).await.unwrap();
    let v = h.verify_remember(c, &id, &h.last_code()).await.unwrap();
    (v.device_id.unwrap(), cookie_value(&v.set_cookie.unwrap()))
}

/// `begin`, which must ask for a code; returns the deciding rule.
async fn asked(h: &Harness, c: &wit::LoginContext) -> String {
    match h.begin(c).await {
        Ok(Decision::Challenge(ch)) => ch.why.rule,
        other => panic!("expected a challenge, got {other:?}"),
    }
}

/// `begin` on a trusted browser: the rotated cookie.
async fn trusted(h: &Harness, c: &wit::LoginContext) -> (String, wit::Allowed) {
    match h.begin(c).await {
        Ok(Decision::Allow(a)) if a.why.rule == "device:trusted" => {
            let cookie = a.set_cookie.as_deref().map(cookie_value).unwrap();
            (cookie, a)
        }
        other => panic!("expected the trusted device to let the login through, got {other:?}"),
    }
}

fn records(h: &Harness, action: &str) -> Vec<Value> {
    h.audit_records()
        .into_iter()
        .filter(|r| r["action"] == action)
        .collect()
}

fn stored_devices(h: &Harness, user: &str) -> Vec<String> {
    h.tracked.list_keys(&keys::devices_of(ORG, user)).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Item 2: trust re-checked against today's policy.
// ---------------------------------------------------------------------------------------------

/// The reproduction: trust a browser, the org admin switches remembering off; the next
/// `begin` with the cookie asks for a code, the device is revoked with a record naming the policy,
/// and switching remembering back on does not bring it back.
#[tokio::test]
async fn switching_remembering_off_ends_every_trusted_browser_at_its_next_login() {
    let h = Harness::plugin();
    let c = ctx("dr-remember-off");
    let (device, cookie) = trust(&h, &c).await;
    h.clock.advance(60);
    let (cookie, _) = trusted(&h, &with_cookie(&c, &cookie)).await;

    h.set_policy(&admin(), ORG, &policy(Mandate::Inherit, 0, false))
        .await
        .unwrap();
    h.clock.advance(60);
    assert_eq!(
        asked(&h, &with_cookie(&c, &cookie)).await,
        "device:not-allowed"
    );
    let revoked = records(&h, "device_revoked");
    assert_eq!(revoked.len(), 1, "{:?}", h.actions());
    assert_eq!(
        (&revoked[0]["reason"], &revoked[0]["device_id"]),
        (
            &Value::from("policy:remember-device-off"),
            &Value::from(device)
        )
    );
    assert!(stored_devices(&h, "dr-remember-off").is_empty());
    let me = actor("dr-remember-off", ORG, &["provider"]);
    assert!(h.devices(&me).await.unwrap().is_empty());

    // Back on: the ended trust stays ended.
    h.set_policy(&admin(), ORG, &policy(Mandate::Inherit, 30, true))
        .await
        .unwrap();
    assert_eq!(asked(&h, &with_cookie(&c, &cookie)).await, "role:provider");
}

/// `trust_days: 0` alone (remembering still "allowed") trusts nothing either.
#[tokio::test]
async fn zero_trust_days_end_every_trusted_browser() {
    let h = Harness::plugin();
    let c = ctx("dr-zero-days");
    let (_, cookie) = trust(&h, &c).await;
    h.set_policy(&admin(), ORG, &policy(Mandate::Inherit, 0, true))
        .await
        .unwrap();
    h.clock.advance(60);
    assert_eq!(
        asked(&h, &with_cookie(&c, &cookie)).await,
        "device:not-allowed"
    );
    assert!(stored_devices(&h, "dr-zero-days").is_empty());
}

/// Fewer trust days: a browser verified longer ago than they allow is revoked
/// (`device:trust-shortened`); one verified more recently stays trusted, but only until its
/// verification plus the new trust days, and the devices list shows that end.
#[tokio::test]
async fn fewer_trust_days_end_older_trust_and_shorten_the_rest() {
    let h = Harness::plugin();
    let old = ctx("dr-old");
    let recent = ctx("dr-recent");
    let (_, old_cookie) = trust(&h, &old).await;
    h.clock.advance(8 * DAY);
    let (_, recent_cookie) = trust(&h, &recent).await;
    let recent_verified = T0 + 8 * DAY;
    h.clock.advance(2 * DAY);
    let (old_cookie, _) = trusted(&h, &with_cookie(&old, &old_cookie)).await;

    h.set_policy(&admin(), ORG, &policy(Mandate::Inherit, 7, true))
        .await
        .unwrap();
    h.clock.advance(60);
    // Verified 10 days ago: more than 7.
    assert_eq!(
        asked(&h, &with_cookie(&old, &old_cookie)).await,
        "device:trust-shortened"
    );
    let revoked = records(&h, "device_revoked");
    assert_eq!(
        revoked.last().unwrap()["reason"],
        "policy:trust-days",
        "{:?}",
        h.actions()
    );
    assert!(stored_devices(&h, "dr-old").is_empty());

    // Verified 2 days ago: still trusted, until 7 days after its verification.
    let (recent_cookie, a) = trusted(&h, &with_cookie(&recent, &recent_cookie)).await;
    let until = recent_verified + 7 * DAY;
    assert!(a.why.message.contains(&rfc3339(until)), "{}", a.why.message);
    let me = actor("dr-recent", ORG, &["provider"]);
    let list = h.devices(&me).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].expires_at, until);
    h.clock.set(until + 1);
    let rule = asked(&h, &with_cookie(&recent, &recent_cookie)).await;
    assert!(
        rule == "device:expired" || rule == "device:trust-shortened",
        "{rule}"
    );
}

fn rfc3339(t: i64) -> String {
    mfa_step_core::kernel::time::Timestamp(t).rfc3339()
}

// ---------------------------------------------------------------------------------------------
// Item 6: a revoke that lands in the middle of a rotation stays.
// ---------------------------------------------------------------------------------------------

/// A store that, once armed, holds the first `set` of a key starting with a prefix: it tells the
/// test it is holding (before writing anything), then waits for the test to let it go. The host
/// runs store calls on tokio's blocking pool, so holding here pauses one component call while
/// others go on.
struct Pausing {
    inner: Arc<dyn Store + Send + Sync>,
    armed: Mutex<Option<Armed>>,
}

struct Armed {
    prefix: String,
    holding: tokio::sync::oneshot::Sender<()>,
    release: std::sync::mpsc::Receiver<()>,
}

impl Pausing {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            inner: Arc::new(MemoryStore::new()),
            armed: Mutex::new(None),
        })
    }

    /// Holds the next write of a key under `prefix`: a signal when it holds, and the release.
    fn arm(
        &self,
        prefix: &str,
    ) -> (
        tokio::sync::oneshot::Receiver<()>,
        std::sync::mpsc::Sender<()>,
    ) {
        let (holding, held) = tokio::sync::oneshot::channel();
        let (release_tx, release) = std::sync::mpsc::channel();
        *self.armed.lock().unwrap() = Some(Armed {
            prefix: prefix.to_owned(),
            holding,
            release,
        });
        (held, release_tx)
    }
}

impl Store for Pausing {
    fn get(&self, key: &str) -> PortResult<Option<Vec<u8>>> {
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: &[u8], expires_at: Option<i64>) -> PortResult<()> {
        let hold = {
            let mut armed = self.armed.lock().unwrap();
            if armed.as_ref().is_some_and(|a| key.starts_with(&a.prefix)) {
                armed.take()
            } else {
                None
            }
        };
        if let Some(a) = hold {
            let _ = a.holding.send(());
            let _ = a.release.recv();
        }
        self.inner.set(key, value, expires_at)
    }
    fn delete(&self, key: &str) -> PortResult<()> {
        self.inner.delete(key)
    }
    fn increment(&self, key: &str, delta: i64, expires_at: Option<i64>) -> PortResult<i64> {
        self.inner.increment(key, delta, expires_at)
    }
    fn list_keys(&self, prefix: &str) -> PortResult<Vec<String>> {
        self.inner.list_keys(prefix)
    }
}

const REVOKES: [&str; 4] = ["revoke", "revoke-all", "credential-changed", "reset-user"];

async fn revoke(h: &Harness, how: &str, user: &str, device: &str) {
    let me = actor(user, ORG, &["provider"]);
    match how {
        "revoke" => h.revoke(&me, device).await.unwrap(),
        "revoke-all" => assert_eq!(h.revoke_all(&me).await.unwrap(), 1),
        "credential-changed" => assert_eq!(
            h.credential_changed(&admin(), ORG, user, CredentialChange::PasswordChanged)
                .await
                .unwrap(),
            1
        ),
        _ => h.reset_user(&admin(), ORG, user).await.unwrap(),
    }
}

/// The race: a trusted `begin` has loaded its device and is about to write the rotated one
/// back when a revoke (each of the four ways) lands; then the write goes ahead. The device must stay
/// revoked: the racing login is not let through on it, and neither the old nor any new cookie is
/// trusted afterwards.
#[tokio::test]
async fn a_revoke_during_a_trusted_login_stays_revoked() {
    let mut broken = Vec::new();
    for how in REVOKES {
        let store = Pausing::new();
        let h = Harness::with(plugin(), store.clone(), default_config());
        let user = "dr-race";
        let c = ctx(user);
        let (device, cookie) = trust(&h, &c).await;
        h.clock.advance(60);

        let (held, release) = store.arm(&keys::devices_of(ORG, user));
        let presented = with_cookie(&c, &cookie);
        let login = h.begin(&presented);
        let revoker = async {
            held.await.expect("the rotation reaches its write");
            revoke(&h, how, user, &device).await;
            release.send(()).unwrap();
        };
        let (answer, ()) = tokio::join!(login, revoker);

        let mut cookies = vec![cookie.clone()];
        match &answer {
            Ok(Decision::Allow(a)) => {
                broken.push(format!(
                    "{how}: the racing login was let through ({})",
                    a.why.rule
                ));
                cookies.extend(a.set_cookie.as_deref().map(cookie_value));
            }
            Ok(_) => {}
            Err(e) => broken.push(format!("{how}: the racing login failed: {e:?}")),
        }
        if !stored_devices(&h, user).is_empty() {
            broken.push(format!("{how}: the revoked device is stored again"));
        }
        h.clock.advance(5);
        for (i, cookie) in cookies.iter().enumerate() {
            if let Ok(Decision::Allow(a)) = h.begin(&with_cookie(&c, cookie)).await {
                broken.push(format!(
                    "{how}: cookie {i} is trusted again after the revoke ({})",
                    a.why.rule
                ));
            }
        }
        assert_eq!(records(&h, "device_revoked").len(), 1, "{how}");
    }
    assert!(broken.is_empty(), "{broken:#?}");
}

/// The same race against the other write-back of a device: a verify that renews the device its
/// cookie names ("remember this browser" again). A revoke landing between its load and its write
/// leaves no trusted device behind.
#[tokio::test]
async fn a_revoke_during_a_renewal_stays_revoked() {
    let mut broken = Vec::new();
    for how in REVOKES {
        let store = Pausing::new();
        let h = Harness::with(plugin(), store.clone(), default_config());
        let user = "dr-renew";
        let c = ctx(user);
        let (device, cookie) = trust(&h, &c).await;
        // A code asked on another network, the old cookie still presented: verify renews it.
        let mut moved = with_cookie(&c, &cookie);
        moved.device.ip = "198.51.100.20".to_owned();
        let id = h.challenge(&moved).await;
        h.send_code(&moved, &id).await.unwrap();
        let code = h.last_code();

        let (held, release) = store.arm(&keys::devices_of(ORG, user));
        let renew = h.verify_remember(&moved, &id, &code);
        let revoker = async {
            held.await.expect("the renewal reaches its write");
            revoke(&h, how, user, &device).await;
            release.send(()).unwrap();
        };
        let (answer, ()) = tokio::join!(renew, revoker);
        let mut cookies = vec![cookie.clone()];
        match answer {
            Ok(v) => cookies.extend(v.set_cookie.as_deref().map(cookie_value)),
            Err(e) => broken.push(format!("{how}: the verify failed: {e:?}")),
        }
        if !stored_devices(&h, user).is_empty() {
            broken.push(format!("{how}: the revoked device is stored again"));
        }
        h.clock.advance(5);
        for (i, cookie) in cookies.iter().enumerate() {
            if let Ok(Decision::Allow(a)) = h.begin(&with_cookie(&moved, cookie)).await {
                broken.push(format!(
                    "{how}: cookie {i} is trusted again after the revoke ({})",
                    a.why.rule
                ));
            }
        }
    }
    assert!(broken.is_empty(), "{broken:#?}");
}

// ---------------------------------------------------------------------------------------------
// Item 4: a stored value that does not parse is unavailable, never absent.
// ---------------------------------------------------------------------------------------------

const GARBAGE: &[u8] = b"\xff{not json";

/// `begin` must answer `unavailable` (never allow, never a challenge that forgets the value), and
/// the refusal is recorded naming the kind of value.
async fn unavailable_and_recorded(h: &Harness, c: &wit::LoginContext, kind: &str) -> Vec<String> {
    let mut broken = Vec::new();
    let before = records(h, "access_denied").len();
    match h.begin(c).await {
        Err(e) if e.kind == ErrorKind::Unavailable => {}
        other => broken.push(format!("{kind}: begin answered {other:?}")),
    }
    let denied = records(h, "access_denied");
    if denied.len() != before + 1
        || denied.last().unwrap()["reason"] != format!("store:unreadable:{kind}")
    {
        broken.push(format!(
            "{kind}: no record of the unreadable value: {denied:?}"
        ));
    }
    broken
}

/// The reproduction, and its siblings for the values `begin` decides with: the org's
/// policy (a mandate), the platform's roles, the grace period's start, the confirmed address (an
/// opt-in) and the branding. Each garbled, `begin` is unavailable.
#[tokio::test]
async fn a_garbled_value_begin_reads_is_unavailable_never_allow() {
    let mut broken = Vec::new();

    // The org's policy says everyone: a scheduler must use MFA.
    let h = Harness::plugin();
    h.set_policy(&admin(), ORG, &policy(Mandate::Everyone, 30, true))
        .await
        .unwrap();
    let c = with_roles("scheduler-1", &["scheduler"]);
    assert_eq!(asked(&h, &c).await, "org:acme-health:mandate");
    h.tracked.set(&keys::policy(ORG), GARBAGE, None).unwrap();
    broken.extend(unavailable_and_recorded(&h, &c, "policy").await);

    // The platform's roles name the scheduler.
    let h = Harness::plugin();
    let roles = ["platform-admin".to_owned(), "scheduler".to_owned()];
    h.set_platform_roles(&platform_admin(), &roles)
        .await
        .unwrap();
    assert_eq!(asked(&h, &c).await, "role:scheduler");
    h.tracked
        .set(&keys::platform_roles(), GARBAGE, None)
        .unwrap();
    broken.extend(unavailable_and_recorded(&h, &c, "platform-roles").await);

    // The grace period is over; a garbled start must not start it again.
    let h = Harness::plugin();
    let mut grace = policy(Mandate::Everyone, 30, true);
    grace.enrollment_grace_days = 3;
    h.set_policy(&admin(), ORG, &grace).await.unwrap();
    let g = ctx("dr-grace");
    assert!(matches!(h.begin(&g).await, Ok(Decision::Allow(_))));
    h.clock.advance(4 * DAY);
    assert_eq!(asked(&h, &g).await, "org:acme-health:mandate");
    h.tracked
        .set(&keys::grace_start(ORG, "dr-grace"), GARBAGE, None)
        .unwrap();
    broken.extend(unavailable_and_recorded(&h, &g, "grace-start").await);

    // A receptionist who opted in: the confirmed address is what makes MFA apply.
    let h = Harness::plugin();
    let r = with_roles("desk-1", &["receptionist"]);
    let ch = h.enroll(&r).await.unwrap();
    h.send_code(&r, &ch.challenge_id).await.unwrap();
    h.verify(&r, &ch.challenge_id, &h.last_code())
        .await
        .unwrap();
    assert_eq!(asked(&h, &r).await, "user:opted-in");
    h.tracked
        .set(&keys::enrollment(ORG, "desk-1"), GARBAGE, None)
        .unwrap();
    broken.extend(unavailable_and_recorded(&h, &r, "enrollment").await);

    // The organization's branding (the language of every explanation).
    let h = Harness::plugin();
    h.tracked.set(&keys::branding(ORG), GARBAGE, None).unwrap();
    broken.extend(unavailable_and_recorded(&h, &ctx("dr-brand"), "branding").await);

    assert!(broken.is_empty(), "{broken:#?}");
}

/// The admin calls that read a value: a garbled policy or platform roles are `unavailable`, not
/// the platform's defaults (which an admin could then save back, loosening the organization).
#[tokio::test]
async fn admin_reads_of_a_garbled_value_are_unavailable() {
    let h = Harness::plugin();
    h.set_policy(&admin(), ORG, &policy(Mandate::Everyone, 30, true))
        .await
        .unwrap();
    h.tracked.set(&keys::policy(ORG), GARBAGE, None).unwrap();
    assert_eq!(
        kind(&h.get_policy(&admin(), ORG).await),
        Some(ErrorKind::Unavailable)
    );
    h.tracked
        .set(&keys::platform_roles(), GARBAGE, None)
        .unwrap();
    assert_eq!(
        kind(&h.get_platform_roles(&platform_admin()).await),
        Some(ErrorKind::Unavailable)
    );
    // The devices list of an org whose policy is unreadable: unavailable, not a guess.
    let me = actor("dr-list", ORG, &["provider"]);
    assert_eq!(kind(&h.devices(&me).await), Some(ErrorKind::Unavailable));
}

/// The values the rest of the step reads: a garbled challenge, send log or last verification makes
/// the call unavailable; none of them lets a code through, sends more, or moves an address.
#[tokio::test]
async fn a_garbled_value_the_step_reads_grants_nothing() {
    let mut broken = Vec::new();

    // The challenge: the right code is not accepted against a value that does not parse.
    let h = Harness::plugin();
    let c = ctx("dr-challenge");
    let id = h.challenge(&c).await;
    h.send_code(&c, &id).await.unwrap();
    let code = h.last_code();
    let good = h
        .tracked
        .get(&keys::challenge(ORG, "dr-challenge"))
        .unwrap();
    h.tracked
        .set(&keys::challenge(ORG, "dr-challenge"), GARBAGE, None)
        .unwrap();
    let v = h.verify(&c, &id, &code).await;
    if kind(&v) != Some(ErrorKind::Unavailable) {
        broken.push(format!("challenge: verify answered {v:?}"));
    }
    let s = h.send_code(&c, &id).await;
    if kind(&s) != Some(ErrorKind::Unavailable) {
        broken.push(format!("challenge: send-code answered {s:?}"));
    }
    h.tracked
        .set(&keys::challenge(ORG, "dr-challenge"), &good.unwrap(), None)
        .unwrap();
    assert!(h.verify(&c, &id, &code).await.is_ok(), "intact again");

    // The step-up grant (what change-email checks the sign-in's token against).
    let h = Harness::plugin();
    let c = ctx("dr-move");
    let id = h.challenge(&c).await;
    h.send_code(&c, &id).await.unwrap();
    h.verify(&c, &id, &h.last_code()).await.unwrap();
    h.tracked
        .set(&keys::step_up(ORG, "dr-move"), GARBAGE, None)
        .unwrap();
    let mut moved = c.clone();
    moved.email = "dr-move@elsewhere.example".to_owned();
    let r = h.change_email(&moved).await;
    if kind(&r) != Some(ErrorKind::Unavailable) {
        broken.push(format!("step-up: change-email answered {r:?}"));
    }

    assert!(broken.is_empty(), "{broken:#?}");
}

/// A trusted device's record is the one value whose absence is the restrictive answer (no device:
/// a code is asked). A garbled one is never trusted, is recorded, and revoke-all clears it.
#[tokio::test]
async fn a_garbled_device_is_no_device_and_is_recorded() {
    let h = Harness::plugin();
    let c = ctx("dr-garbled-device");
    let (device, cookie) = trust(&h, &c).await;
    h.tracked
        .set(
            &keys::device(ORG, "dr-garbled-device", &device),
            GARBAGE,
            None,
        )
        .unwrap();
    h.clock.advance(60);
    assert_eq!(asked(&h, &with_cookie(&c, &cookie)).await, "role:provider");
    let challenged = records(&h, "device_challenged");
    assert_eq!(
        challenged.last().map(|r| r["reason"].clone()),
        Some(Value::from("store:unreadable:device")),
        "{:?}",
        h.actions()
    );
    let me = actor("dr-garbled-device", ORG, &["provider"]);
    assert!(h.devices(&me).await.unwrap().is_empty());
    assert_eq!(h.revoke_all(&me).await.unwrap(), 1);
    assert!(stored_devices(&h, "dr-garbled-device").is_empty());
}

/// A user who must use MFA, with every kind of state the step keeps: a grace period spent, an
/// address confirmed, a live code, a wrong guess.
async fn rich_state(h: &Harness, c: &wit::LoginContext) {
    let mut grace = policy(Mandate::Everyone, 30, true);
    grace.enrollment_grace_days = 3;
    h.set_policy(&admin(), ORG, &grace).await.unwrap();
    assert!(matches!(h.begin(c).await, Ok(Decision::Allow(_))));
    h.clock.advance(4 * DAY);
    let id = h.challenge(c).await;
    h.send_code(c, &id).await.unwrap();
    h.verify(c, &id, &h.last_code()).await.unwrap();
    let id = h.challenge(c).await;
    h.send_code(c, &id).await.unwrap();
    let _ = h.verify(c, &id, &wrong(&h.last_code())).await;
    h.clock.advance(60);
}

/// Whatever the key names are, every stored value of a user who must use MFA, garbled one at a
/// time: `begin` never lets the user through without a code, and answers `unavailable` or a
/// challenge. (A trusted device's record is left out: no device is asked for here; the grace
/// period's "spent" mark counts by presence.)
#[tokio::test]
async fn no_garbled_value_lets_a_login_through() {
    let c = with_roles("dr-sweep", &["scheduler"]);
    let h = Harness::plugin();
    rich_state(&h, &c).await;
    assert_eq!(asked(&h, &c).await, "org:acme-health:mandate");
    let values: Vec<String> = h
        .snapshot()
        .into_iter()
        .filter(|(k, (value, _))| {
            value.is_some() && !k.starts_with("v1:device:") && !k.starts_with("v1:grace-spent:")
        })
        .map(|(k, _)| k)
        .collect();
    assert!(values.len() >= 5, "{values:?}");
    let mut broken = Vec::new();
    for key in &values {
        let h = Harness::plugin();
        rich_state(&h, &c).await;
        h.tracked.set(key, GARBAGE, None).unwrap();
        match h.begin(&c).await {
            Ok(Decision::Allow(a)) => broken.push(format!("{key}: allowed ({})", a.why.rule)),
            Err(e) if e.kind != ErrorKind::Unavailable => {
                broken.push(format!("{key}: {:?}", e.kind));
            }
            _ => {}
        }
    }
    assert!(broken.is_empty(), "{broken:#?}");
}
