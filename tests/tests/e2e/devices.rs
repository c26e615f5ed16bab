//! Trusted devices as a user, a thief and an administrator meet them, through the compiled component
//! and a test clock: a remembered browser skips the code until exactly 30 days after the verify (in
//! any time zone), asks again on another browser or network, rotates its token on every trusted
//! login and revokes itself when a rotated-away token comes back; only the owner sees and revokes a
//! device (over WIT and REST), a credential change revokes them all, the eleventh device pushes out
//! the oldest, a broken cookie is simply no device, and no token ever reaches the audit trail.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use crate::common;
use std::sync::Arc;

use common::*;
use host_harness::Config;
use host_harness::backends::MemoryStore;
use host_harness::wit::{self, CredentialChange, Decision, ErrorKind, MfaError};
use serde_json::{Value, json};

const DAY: i64 = 86_400;
const ORG: &str = "acme-health";
const OTHER_ORG: &str = "other-clinic";
/// What asks a provider for a code when no trusted device speaks for the browser (the platform's
/// role rule): the answer to a missing, broken, foreign or revoked cookie.
const NO_DEVICE: &str = "role:provider";
/// 30 days, the default trust.
const TRUST: i64 = 30 * DAY;

/// A browser the user chose to remember.
struct Trusted {
    device_id: String,
    /// What the browser sends back: `<device id>.<token>`.
    cookie: String,
    /// The whole `Set-Cookie` header value.
    set_cookie: String,
}

impl Trusted {
    fn token(&self) -> &str {
        self.cookie.split_once('.').unwrap().1
    }
}

/// Signs in with an emailed code, ticking "remember this browser".
async fn trust(h: &Harness, c: &wit::LoginContext) -> Trusted {
    let id = h.challenge(c).await;
    h.send_code(c, &id).await.expect("the code is sent");
    let verified = h
        .verify_remember(c, &id, &h.last_code())
        .await
        .expect("the code works");
    assert_eq!(verified.amr, ["otp", "mfa"]);
    let device_id = verified.device_id.expect("a device was trusted");
    let set_cookie = verified.set_cookie.expect("a cookie to set");
    let cookie = cookie_value(&set_cookie);
    assert!(cookie.starts_with(&format!("{device_id}.")), "{set_cookie}");
    Trusted {
        device_id,
        cookie,
        set_cookie,
    }
}

fn with_cookie(c: &wit::LoginContext, cookie: &str) -> wit::LoginContext {
    let mut c = c.clone();
    c.device.cookie = Some(cookie.to_owned());
    c
}

fn with_ip(c: &wit::LoginContext, ip: &str) -> wit::LoginContext {
    let mut c = c.clone();
    c.device.ip = ip.to_owned();
    c
}

fn in_org(c: &wit::LoginContext, org: &str) -> wit::LoginContext {
    let mut c = c.clone();
    c.org_id = org.to_owned();
    c
}

/// `begin`, which must let the login through on a trusted device.
async fn allowed(h: &Harness, c: &wit::LoginContext) -> wit::Allowed {
    match h.begin(c).await {
        Ok(Decision::Allow(a)) => {
            assert_eq!(a.why.rule, "device:trusted");
            a
        }
        other => panic!("expected the trusted device to allow the login, got {other:?}"),
    }
}

/// A trusted login that must rotate the token: returns the browser's new cookie.
async fn trusted_login(h: &Harness, c: &wit::LoginContext, device_id: &str) -> String {
    let a = allowed(h, c).await;
    assert_eq!(a.device_id.as_deref(), Some(device_id));
    let rotated = cookie_value(&a.set_cookie.expect("a trusted login rotates the token"));
    assert_ne!(
        Some(rotated.as_str()),
        c.device.cookie.as_deref(),
        "a new token"
    );
    assert!(rotated.starts_with(&format!("{device_id}.")), "same device");
    rotated
}

/// `begin`, which must ask for a code (never allow, deny or fail); returns the deciding rule.
async fn asked(h: &Harness, c: &wit::LoginContext) -> String {
    match h.begin(c).await {
        Ok(Decision::Challenge(ch)) => ch.why.rule,
        other => panic!("expected a challenge, got {other:?}"),
    }
}

fn me(user: &str) -> wit::Actor {
    actor(user, ORG, &["provider"])
}

/// Audit records of `action`.
fn records(h: &Harness, action: &str) -> Vec<Value> {
    h.audit_records()
        .into_iter()
        .filter(|r| r["action"] == action)
        .collect()
}

fn ids(list: &[wit::DeviceInfo]) -> Vec<String> {
    list.iter().map(|d| d.device_id.clone()).collect()
}

async fn post(h: &Harness, path: &str, body: Value) -> HttpReply {
    h.http_full("POST", path, Some(API_KEY), body.to_string().into_bytes())
        .await
}

fn err_of<T: std::fmt::Debug>(r: Result<T, MfaError>, want: ErrorKind) -> MfaError {
    match r {
        Err(e) if e.kind == want => e,
        other => panic!("expected {want:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn a_trusted_browser_skips_the_code() {
    let h = Harness::new();
    let c = ctx("dr-trust");
    let d = trust(&h, &c).await;
    for part in [
        "__Host-mfa-device=",
        "HttpOnly",
        "Secure",
        "SameSite=Lax",
        "Path=/",
        "Max-Age=2592000",
    ] {
        assert!(d.set_cookie.contains(part), "{} lacks {part}", d.set_cookie);
    }
    assert!(!d.set_cookie.contains("Domain"), "host-only");
    let (id, token) = d.cookie.split_once('.').unwrap();
    assert_eq!((id.len(), token.len()), (32, 64), "id.token in hex");
    assert_eq!(h.emails_sent(), 1);

    h.clock.advance(3600);
    let a = allowed(&h, &with_cookie(&c, &d.cookie)).await;
    assert_eq!(a.device_id.as_deref(), Some(d.device_id.as_str()));
    assert!(
        a.why.message.contains("2026-12-18T11:06:40Z"),
        "{}",
        a.why.message
    );
    assert_eq!(h.emails_sent(), 1, "no email for a trusted browser");
    assert_eq!(h.status(&c).await.unwrap().active_challenge, None);

    assert_eq!(
        h.actions(),
        [
            "challenge_started",
            "code_sent",
            "enrolled",
            "device_trusted",
            "access_allowed"
        ]
    );
    let trusted = &records(&h, "device_trusted")[0];
    assert_eq!(trusted["device_id"], d.device_id.as_str());
    assert_eq!(trusted["reason"], "trusted-until:2026-12-18T11:06:40Z");
    let allowed = &records(&h, "access_allowed")[0];
    assert_eq!(allowed["device_id"], d.device_id.as_str());
    assert_eq!(allowed["reason"], "device:trusted");

    let list = h.devices(&me("dr-trust")).await.unwrap();
    assert_eq!(list.len(), 1);
    let info = &list[0];
    assert_eq!(info.device_id, d.device_id);
    assert_eq!(info.label, "Chrome on Windows");
    assert_eq!(info.first_trusted_at, T0);
    assert_eq!(info.last_used_at, T0 + 3600);
    assert_eq!(info.last_network, "203.0.0.0/16");
    assert_eq!(info.expires_at, T0 + TRUST);
}

#[tokio::test]
async fn a_verify_without_remember_trusts_nothing() {
    let h = Harness::new();
    let c = ctx("dr-forget");
    let id = h.challenge(&c).await;
    h.send_code(&c, &id).await.unwrap();
    let v = h.verify(&c, &id, &h.last_code()).await.unwrap();
    assert_eq!((v.device_id, v.set_cookie), (None, None));
    assert!(h.devices(&me("dr-forget")).await.unwrap().is_empty());
    assert!(!h.actions().contains(&"device_trusted".to_owned()));
}

/// Trusts `c` at `trusted_at`, signs in along the way, and checks that trust ends exactly
/// `30 × 86 400 s` later: allowed at `expires_at`, asked at `expires_at + 1`.
async fn expires_after_exactly_30_days(c: wit::LoginContext, trusted_at: i64, until: &str) {
    let h = Harness::new().starting_at(trusted_at);
    let d = trust(&h, &c).await;
    let expires_at = trusted_at + TRUST;
    assert!(d.set_cookie.contains("Max-Age=2592000"), "{}", d.set_cookie);
    assert_eq!(
        records(&h, "device_trusted")[0]["reason"],
        format!("trusted-until:{until}")
    );
    let actor = me(&c.user_id);
    assert_eq!(h.devices(&actor).await.unwrap()[0].expires_at, expires_at);

    // A login on day 10 rotates the token but never extends the trust.
    h.clock.set(trusted_at + 10 * DAY);
    let a = allowed(&h, &with_cookie(&c, &d.cookie)).await;
    let set_cookie = a.set_cookie.unwrap();
    assert!(
        set_cookie.contains(&format!("Max-Age={}", 20 * DAY)),
        "{set_cookie}"
    );
    let cookie = cookie_value(&set_cookie);
    assert_eq!(h.devices(&actor).await.unwrap()[0].expires_at, expires_at);

    h.clock.set(expires_at);
    let cookie = trusted_login(&h, &with_cookie(&c, &cookie), &d.device_id).await;
    assert_eq!(h.emails_sent(), 1);

    h.clock.set(expires_at + 1);
    assert_eq!(asked(&h, &with_cookie(&c, &cookie)).await, "device:expired");
    let challenged = records(&h, "device_challenged");
    assert_eq!(challenged.len(), 1);
    assert_eq!(challenged[0]["reason"], "device:expired");
    assert_eq!(challenged[0]["device_id"], d.device_id.as_str());
    assert!(
        h.devices(&actor).await.unwrap().is_empty(),
        "an expired device is no longer listed"
    );
}

#[tokio::test]
async fn trust_ends_exactly_30_days_after_the_verify_in_utc() {
    let mut c = ctx("dr-utc");
    c.device.traits.time_zone = Some("UTC".to_owned());
    expires_after_exactly_30_days(c, T0, "2026-12-18T11:06:40Z").await;
}

#[tokio::test]
async fn trust_ends_exactly_30_days_after_the_verify_across_new_york_dst() {
    // Trusted at 10:00 EDT on 2026-10-20; New York falls back to EST on 2026-11-01, so a
    // local-time "same time in 30 days" would end an hour late (15:00Z instead of 14:00Z).
    let mut c = ctx("dr-nyc");
    c.device.traits.time_zone = Some("America/New_York".to_owned());
    let trusted_at = 1_792_504_800; // 2026-10-20T14:00:00Z
    expires_after_exactly_30_days(c, trusted_at, "2026-11-19T14:00:00Z").await;
}

#[tokio::test]
async fn another_browser_asks_again_a_browser_update_does_not() {
    let h = Harness::new();
    let mut chrome_130 = ctx("dr-browser");
    chrome_130.device.traits.user_agent =
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/130.0".to_owned();
    chrome_130.device.traits.browser_major = Some(130);
    let d = trust(&h, &chrome_130).await;
    h.clock.advance(DAY);

    let mut firefox = with_cookie(&chrome_130, &d.cookie);
    firefox.device.traits.user_agent =
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0"
            .to_owned();
    firefox.device.traits.browser_family = Some("Firefox".to_owned());
    firefox.device.traits.browser_major = Some(133);
    let mut mac = with_cookie(&chrome_130, &d.cookie);
    mac.device.traits.platform = Some("macOS".to_owned());
    let mut phone = with_cookie(&chrome_130, &d.cookie);
    phone.device.traits.screen_class = Some("phone".to_owned());
    for other in [&firefox, &mac, &phone] {
        assert_eq!(asked(&h, other).await, "device:new-browser", "{other:?}");
    }
    let challenged = records(&h, "device_challenged");
    assert_eq!(challenged.len(), 3);
    for r in &challenged {
        assert_eq!(r["reason"], "device:new-browser");
        assert_eq!(r["device_id"], d.device_id.as_str());
        assert_eq!(r["outcome"], "denied");
    }

    // The monthly update, in a traveller's language and time zone: still the same browser (and
    // the refusals above did not use up its cookie).
    let mut chrome_131 = with_cookie(&chrome_130, &d.cookie);
    chrome_131.device.traits.user_agent =
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/131.0".to_owned();
    chrome_131.device.traits.browser_major = Some(131);
    chrome_131.device.traits.language = Some("de-DE".to_owned());
    chrome_131.device.traits.time_zone = Some("Europe/Berlin".to_owned());
    trusted_login(&h, &chrome_131, &d.device_id).await;
    assert_eq!(h.emails_sent(), 1);
}

#[tokio::test]
async fn another_network_asks_again_a_nearby_address_does_not() {
    let h = Harness::new();
    let c = ctx("dr-net");
    let actor = me("dr-net");
    let d = trust(&h, &c).await;
    h.clock.advance(3600);

    let jumped = with_ip(&with_cookie(&c, &d.cookie), "203.1.0.9");
    assert_eq!(asked(&h, &jumped).await, "device:new-network");
    let challenged = records(&h, "device_challenged");
    assert_eq!(challenged.len(), 1);
    assert_eq!(challenged[0]["reason"], "device:new-network");
    assert_eq!(challenged[0]["device_id"], d.device_id.as_str());

    let same_16 = with_ip(&with_cookie(&c, &d.cookie), "203.0.200.1");
    let cookie = trusted_login(&h, &same_16, &d.device_id).await;
    let mapped = with_ip(&with_cookie(&c, &cookie), "::ffff:203.0.113.7");
    let cookie = trusted_login(&h, &mapped, &d.device_id).await;
    assert_eq!(
        h.devices(&actor).await.unwrap()[0].last_network,
        "203.0.0.0/16"
    );

    // Passing the code on the new network, remembering again, renews the same device there.
    let id = h
        .challenge(&with_ip(&with_cookie(&c, &cookie), "203.1.0.9"))
        .await;
    h.send_code(&c, &id).await.unwrap();
    let jumped = with_ip(&with_cookie(&c, &cookie), "203.1.0.9");
    let renewed = h
        .verify_remember(&jumped, &id, &h.last_code())
        .await
        .unwrap();
    assert_eq!(renewed.device_id.as_deref(), Some(d.device_id.as_str()));
    let list = h.devices(&actor).await.unwrap();
    assert_eq!(
        ids(&list),
        [d.device_id.as_str()],
        "renewed, not duplicated"
    );
    assert_eq!(list[0].last_network, "203.1.0.0/16");
    let cookie = cookie_value(&renewed.set_cookie.unwrap());
    trusted_login(
        &h,
        &with_ip(&with_cookie(&c, &cookie), "203.1.77.1"),
        &d.device_id,
    )
    .await;

    // IPv6: the same /48 stays trusted, another /48 asks again.
    let v6 = with_ip(&ctx("dr-net6"), "2001:db8:aa:1::7");
    let d6 = trust(&h, &v6).await;
    assert_eq!(
        h.devices(&me("dr-net6")).await.unwrap()[0].last_network,
        "2001:db8:aa::/48"
    );
    let far = with_ip(&with_cookie(&v6, &d6.cookie), "2001:db8:ab:1::7");
    assert_eq!(asked(&h, &far).await, "device:new-network");
    let near = with_ip(&with_cookie(&v6, &d6.cookie), "2001:db8:aa:ffff::1");
    trusted_login(&h, &near, &d6.device_id).await;
}

#[tokio::test]
async fn a_rotated_token_works_60_seconds_then_its_reuse_revokes_the_device() {
    let h = Harness::new();
    let c = ctx("dr-theft");
    let actor = me("dr-theft");
    let a = trust(&h, &c).await;
    h.clock.advance(3600);

    let b = trusted_login(&h, &with_cookie(&c, &a.cookie), &a.device_id).await;

    // A parallel tab that still holds A, within the grace: let in, no second rotation.
    h.clock.advance(59);
    let tab = allowed(&h, &with_cookie(&c, &a.cookie)).await;
    assert_eq!(tab.device_id.as_deref(), Some(a.device_id.as_str()));
    assert_eq!(tab.set_cookie, None, "the other tab holds the new token");

    // After the grace, A can only be a copy someone kept: the device goes.
    h.clock.advance(2);
    assert_eq!(asked(&h, &with_cookie(&c, &a.cookie)).await, NO_DEVICE);
    let reuse = records(&h, "device_token_reuse");
    assert_eq!(reuse.len(), 1);
    assert_eq!(reuse[0]["device_id"], a.device_id.as_str());
    assert_eq!(reuse[0]["outcome"], "denied");
    assert_eq!(reuse[0]["subject"], "dr-theft");

    // The legitimate browser's B is gone with it.
    assert_eq!(asked(&h, &with_cookie(&c, &b)).await, NO_DEVICE);
    assert!(h.devices(&actor).await.unwrap().is_empty());
    assert_eq!(
        h.actions()
            .iter()
            .filter(|a| *a == "access_allowed")
            .count(),
        2,
        "only the rotation and the parallel tab were let in"
    );
}

#[tokio::test]
async fn two_identical_browsers_are_two_devices() {
    let h = Harness::new();
    let c = ctx("dr-twins");
    let actor = me("dr-twins");
    let first = trust(&h, &c).await;
    h.clock.advance(10);
    let second = trust(&h, &c).await;
    assert_ne!(first.device_id, second.device_id);
    let list = h.devices(&actor).await.unwrap();
    assert_eq!(
        ids(&list),
        [second.device_id.as_str(), first.device_id.as_str()]
    );
    assert!(list.iter().all(|d| d.label == "Chrome on Windows"));

    // The token decides which device it is: one device's token does not open the other.
    let crossed = format!("{}.{}", second.device_id, first.token());
    assert_eq!(asked(&h, &with_cookie(&c, &crossed)).await, NO_DEVICE);

    h.revoke(&actor, &first.device_id).await.unwrap();
    assert_eq!(asked(&h, &with_cookie(&c, &first.cookie)).await, NO_DEVICE);
    trusted_login(&h, &with_cookie(&c, &second.cookie), &second.device_id).await;
    assert_eq!(ids(&h.devices(&actor).await.unwrap()), [second.device_id]);
}

#[tokio::test]
async fn only_the_owner_sees_and_revokes_a_device() {
    let h = Harness::new();
    let owner_ctx = ctx("dr-owner");
    let owner = me("dr-owner");
    let colleague_ctx = ctx("dr-colleague");
    let colleague = me("dr-colleague");
    // The same user id in another organization is another person.
    let namesake_ctx = in_org(&ctx("dr-owner"), OTHER_ORG);
    let namesake = actor("dr-owner", OTHER_ORG, &["provider"]);

    let first = trust(&h, &owner_ctx).await;
    h.clock.advance(10);
    let second = trust(&h, &owner_ctx).await;
    let theirs = trust(&h, &colleague_ctx).await;
    let namesakes = trust(&h, &namesake_ctx).await;

    assert_eq!(
        ids(&h.devices(&owner).await.unwrap()),
        [second.device_id.as_str(), first.device_id.as_str()]
    );
    assert_eq!(
        ids(&h.devices(&colleague).await.unwrap()),
        [theirs.device_id.as_str()]
    );
    assert_eq!(
        ids(&h.devices(&namesake).await.unwrap()),
        [namesakes.device_id.as_str()]
    );

    // Someone else's device is refused exactly like one that does not exist.
    let unknown = "0123456789abcdef0123456789abcdef";
    let refusal = err_of(h.revoke(&colleague, unknown).await, ErrorKind::Forbidden);
    for (who, id) in [
        (&colleague, &first.device_id),
        (&namesake, &first.device_id),
        (&owner, &theirs.device_id),
    ] {
        let e = err_of(h.revoke(who, id).await, ErrorKind::Forbidden);
        assert_eq!(e.message, refusal.message);
    }
    // A colleague's revoke-all only reaches the colleague's own device.
    assert_eq!(h.revoke_all(&colleague).await.unwrap(), 1);
    assert!(h.devices(&colleague).await.unwrap().is_empty());
    assert_eq!(h.devices(&owner).await.unwrap().len(), 2);
    // A cookie speaks only for its own user.
    assert_eq!(
        asked(&h, &with_cookie(&colleague_ctx, &first.cookie)).await,
        NO_DEVICE
    );
    let first_cookie = trusted_login(
        &h,
        &with_cookie(&owner_ctx, &first.cookie),
        &first.device_id,
    )
    .await;

    h.revoke(&owner, &first.device_id).await.unwrap();
    err_of(
        h.revoke(&owner, &first.device_id).await,
        ErrorKind::Forbidden,
    );
    assert_eq!(
        asked(&h, &with_cookie(&owner_ctx, &first_cookie)).await,
        NO_DEVICE
    );
    let revoked = records(&h, "device_revoked");
    let by_owner: Vec<&Value> = revoked
        .iter()
        .filter(|r| r["reason"] == "revoked-by-owner")
        .collect();
    assert_eq!(by_owner.len(), 1);
    assert_eq!(by_owner[0]["device_id"], first.device_id.as_str());
    assert_eq!(by_owner[0]["actor"], "dr-owner");

    assert_eq!(h.revoke_all(&owner).await.unwrap(), 1);
    assert_eq!(h.revoke_all(&owner).await.unwrap(), 0);
    assert!(h.devices(&owner).await.unwrap().is_empty());
    assert_eq!(
        asked(&h, &with_cookie(&owner_ctx, &second.cookie)).await,
        NO_DEVICE
    );
    // The namesake in the other organization was never touched.
    trusted_login(
        &h,
        &with_cookie(&namesake_ctx, &namesakes.cookie),
        &namesakes.device_id,
    )
    .await;
}

#[tokio::test]
async fn a_credential_change_revokes_every_device_for_the_user_or_their_org_admin_only() {
    let h = Harness::new();
    let c = ctx("dr-cred");
    let owner = me("dr-cred");
    let first = trust(&h, &c).await;
    let second = trust(&h, &c).await;

    let foreign_admin = actor("it-admin", OTHER_ORG, &["org-admin"]);
    let colleague = me("dr-colleague");
    let self_elsewhere = actor("dr-cred", OTHER_ORG, &["provider"]);
    for (who, change) in [
        (&foreign_admin, CredentialChange::PasswordChanged),
        (&colleague, CredentialChange::MfaReset),
        (&self_elsewhere, CredentialChange::PasswordChanged),
    ] {
        err_of(
            h.credential_changed(who, ORG, "dr-cred", change).await,
            ErrorKind::Forbidden,
        );
    }
    let denied = records(&h, "access_denied");
    assert_eq!(denied.len(), 3, "each refusal is recorded");
    let expect = [
        (
            "it-admin",
            OTHER_ORG,
            "credential-change:password-changed:not-authorized",
        ),
        (
            "dr-colleague",
            ORG,
            "credential-change:mfa-reset:not-authorized",
        ),
        (
            "dr-cred",
            OTHER_ORG,
            "credential-change:password-changed:not-authorized",
        ),
    ];
    for (r, (who, org, reason)) in denied.iter().zip(expect) {
        assert_eq!(
            (
                &r["actor"],
                &r["org"],
                &r["subject"],
                &r["reason"],
                &r["outcome"]
            ),
            (
                &json!(who),
                &json!(org),
                &json!("dr-cred"),
                &json!(reason),
                &json!("denied")
            ),
            "recorded in the actor's own organization"
        );
    }
    assert_eq!(h.devices(&owner).await.unwrap().len(), 2, "nothing revoked");
    assert!(records(&h, "device_revoked").is_empty());

    // The user themself.
    let n = h
        .credential_changed(&owner, ORG, "dr-cred", CredentialChange::PasswordChanged)
        .await
        .unwrap();
    assert_eq!(n, 2);
    assert!(h.devices(&owner).await.unwrap().is_empty());
    for d in [&first, &second] {
        assert_eq!(asked(&h, &with_cookie(&c, &d.cookie)).await, NO_DEVICE);
    }
    let revoked = records(&h, "device_revoked");
    assert_eq!(revoked.len(), 2);
    assert!(revoked.iter().all(|r| r["reason"] == "password-changed"));

    // An org-admin of the same organization.
    h.clock.advance(600);
    let third = trust(&h, &c).await;
    let org_admin = actor("it-admin-acme", ORG, &["org-admin"]);
    let n = h
        .credential_changed(&org_admin, ORG, "dr-cred", CredentialChange::MfaReset)
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(asked(&h, &with_cookie(&c, &third.cookie)).await, NO_DEVICE);
    let by_admin = records(&h, "device_revoked").pop().unwrap();
    assert_eq!(by_admin["reason"], "mfa-reset");
    assert_eq!(by_admin["device_id"], third.device_id.as_str());
    assert_eq!(by_admin["subject"], "dr-cred");
    assert_eq!(by_admin["actor"], "it-admin-acme", "the admin acted");

    // A platform admin, from its own organization, may too (as for every admin call).
    h.clock.advance(600);
    let fourth = trust(&h, &c).await;
    let platform = actor("root", "platform", &["platform-admin"]);
    let n = h
        .credential_changed(&platform, ORG, "dr-cred", CredentialChange::PasswordChanged)
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(asked(&h, &with_cookie(&c, &fourth.cookie)).await, NO_DEVICE);
    assert_eq!(
        records(&h, "device_revoked").pop().unwrap()["actor"],
        "root"
    );
}

#[tokio::test]
async fn an_eleventh_device_pushes_out_the_oldest() {
    let h = Harness::new();
    let c = ctx("dr-many");
    let owner = me("dr-many");
    let mut trusted = Vec::new();
    for _ in 0..11 {
        trusted.push(trust(&h, &c).await);
        // Past the send window (3 emails per 5 minutes).
        h.clock.advance(301);
    }
    let list = h.devices(&owner).await.unwrap();
    let mut newest_first: Vec<String> = trusted[1..].iter().map(|d| d.device_id.clone()).collect();
    newest_first.reverse();
    assert_eq!(
        ids(&list),
        newest_first,
        "the first one trusted is the one gone"
    );

    let limit: Vec<Value> = records(&h, "device_revoked");
    assert_eq!(limit.len(), 1);
    assert_eq!(limit[0]["reason"], "device-limit");
    assert_eq!(limit[0]["device_id"], trusted[0].device_id.as_str());

    assert_eq!(
        asked(&h, &with_cookie(&c, &trusted[0].cookie)).await,
        NO_DEVICE
    );
    trusted_login(
        &h,
        &with_cookie(&c, &trusted[1].cookie),
        &trusted[1].device_id,
    )
    .await;
}

#[tokio::test]
async fn a_malformed_or_oversized_cookie_is_no_device() {
    let h = Harness::new();
    let c = ctx("dr-crumbs");
    let d = trust(&h, &c).await;
    let (id, token) = d.cookie.split_once('.').unwrap();
    let hex64 = "ab".repeat(32);
    let bad = [
        String::new(),
        "garbage".to_owned(),
        ".".to_owned(),
        format!("{id}."),
        format!(".{token}"),
        format!("{id}{token}"),
        format!("{}.{token}", &id[1..]),
        format!("{id}0.{token}"),
        format!("{id}.{}", &token[1..]),
        format!("{id}.{token}0"),
        format!("{id}.{token}.{token}"),
        format!("{}.{token}", "g".repeat(32)),
        format!("{}.{token}", "é".repeat(16)),
        format!("{id}.{}\0\r\n", &token[..61]),
        format!("other-cookie={id}.{token}"),
        "a".repeat(10 * 1024),
        format!("{id}.{}", "a".repeat(10 * 1024)),
        format!("__Host-mfa-device={id}.{}", "0".repeat(10 * 1024)),
        // Well formed, but no device of this user: an unknown id, and the right id with a wrong token.
        format!("0123456789abcdef0123456789abcdef.{hex64}"),
        format!("{id}.{hex64}"),
    ];
    for cookie in &bad {
        assert_eq!(
            asked(&h, &with_cookie(&c, cookie)).await,
            NO_DEVICE,
            "{:?}",
            cookie.get(..80).unwrap_or(cookie)
        );
    }
    // Over REST too: a 10 KB cookie is a challenge, not an error.
    let body = json!({ "context": {
        "user_id": "dr-crumbs", "org_id": ORG, "email": "dr-crumbs@clinic.example",
        "roles": ["provider"],
        "device": { "ip": "203.0.113.7", "cookie": "f".repeat(10 * 1024),
                    "traits": { "user_agent": "Mozilla/5.0" } } } });
    let reply = h
        .http_full(
            "POST",
            "/v1/login/begin",
            Some(API_KEY),
            body.to_string().into_bytes(),
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    assert_eq!(reply.json["outcome"], "challenge");

    // None of it counted as a replay or a changed browser, and the real cookie still works.
    assert!(records(&h, "device_token_reuse").is_empty());
    assert!(records(&h, "device_challenged").is_empty());
    trusted_login(&h, &with_cookie(&c, &d.cookie), &d.device_id).await;
}

#[tokio::test]
async fn remembering_can_be_switched_off() {
    for (name, value) in [("trust_days", "0"), ("allow_remember_device", "false")] {
        let config = Config::new([("hmac_key", HMAC_KEY), ("api_key", API_KEY), (name, value)]);
        let h = Harness::with(http_app(), Arc::new(MemoryStore::new()), config);
        let c = ctx("dr-no-remember");
        let id = h.challenge(&c).await;
        h.send_code(&c, &id).await.unwrap();
        let v = h
            .verify_remember(&c, &id, &h.last_code())
            .await
            .expect("the login itself succeeds");
        assert_eq!(v.amr, ["otp", "mfa"], "{name}={value}");
        assert_eq!((v.device_id, v.set_cookie), (None, None), "{name}={value}");
        assert!(
            !h.actions().contains(&"device_trusted".to_owned()),
            "{name}={value}"
        );
        assert!(h.devices(&me("dr-no-remember")).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn devices_are_managed_over_rest_too() {
    let h = Harness::new();
    let context = |user: &str, cookie: Option<&str>| {
        json!({
            "user_id": user, "org_id": ORG, "email": format!("{user}@clinic.example"),
            "roles": ["provider"],
            "device": { "ip": "203.0.113.7", "cookie": cookie,
                        "traits": { "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/131.0" } }
        })
    };
    let actor_json = |user: &str, org: &str, roles: &[&str]| json!({ "user_id": user, "org_id": org, "roles": roles, "ip": "203.0.113.7", "user_agent": "curl" });
    let owner = actor_json("dr-rest", ORG, &["provider"]);

    // Two remembered browsers, signed in over REST.
    let mut devices = Vec::new();
    for _ in 0..2 {
        let begun = post(
            &h,
            "/v1/login/begin",
            json!({ "context": context("dr-rest", None) }),
        )
        .await;
        let id = begun.json["challenge_id"].as_str().unwrap().to_owned();
        let body = json!({ "context": context("dr-rest", None), "challenge_id": id });
        assert_eq!(post(&h, "/v1/login/send-code", body).await.status, 200);
        let body = json!({ "context": context("dr-rest", None), "challenge_id": id,
                           "code": h.last_code(), "remember_device": true });
        let verified = post(&h, "/v1/login/verify", body).await;
        assert_eq!(verified.status, 200, "{:?}", verified.json);
        let set_cookie = verified.json["set_cookie"].as_str().unwrap();
        assert!(set_cookie.contains("Max-Age=2592000"), "{set_cookie}");
        devices.push((
            verified.json["device_id"].as_str().unwrap().to_owned(),
            cookie_value(set_cookie),
        ));
    }
    let begun = post(
        &h,
        "/v1/login/begin",
        json!({ "context": context("dr-rest", Some(&devices[0].1)) }),
    )
    .await;
    assert_eq!(begun.json["outcome"], "allow", "{:?}", begun.json);
    assert_eq!(begun.json["why"]["rule"], "device:trusted");
    assert_eq!(begun.json["device_id"], devices[0].0.as_str());

    let listed = post(&h, "/v1/devices/list", json!({ "actor": owner })).await;
    assert_eq!(listed.status, 200, "{:?}", listed.json);
    let mut listed_ids: Vec<&str> = listed.json["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_id"].as_str().unwrap())
        .collect();
    listed_ids.sort_unstable();
    let mut expected: Vec<&str> = devices.iter().map(|(id, _)| id.as_str()).collect();
    expected.sort_unstable();
    assert_eq!(listed_ids, expected);
    assert_eq!(listed.json["devices"][0]["expires_at"], T0 + TRUST);

    // Others see none of them and cannot revoke them; unknown and foreign ids get the same answer.
    let colleague = actor_json("dr-peer", ORG, &["provider"]);
    let stranger = actor_json("dr-rest", OTHER_ORG, &["org-admin"]);
    for who in [&colleague, &stranger] {
        let listed = post(&h, "/v1/devices/list", json!({ "actor": who })).await;
        assert_eq!(
            (listed.status, &listed.json),
            (200, &json!({ "devices": [] }))
        );
    }
    let unknown = post(
        &h,
        "/v1/devices/revoke",
        json!({ "actor": colleague, "device_id": "0123456789abcdef0123456789abcdef" }),
    )
    .await;
    assert_eq!((unknown.status, unknown.kind()), (403, Some("forbidden")));
    for who in [&colleague, &stranger] {
        let foreign = post(
            &h,
            "/v1/devices/revoke",
            json!({ "actor": who, "device_id": devices[0].0 }),
        )
        .await;
        assert_eq!(
            (foreign.status, &foreign.json),
            (unknown.status, &unknown.json)
        );
    }
    let nothing = post(&h, "/v1/devices/revoke-all", json!({ "actor": colleague })).await;
    assert_eq!(
        (nothing.status, &nothing.json),
        (200, &json!({ "revoked": 0 }))
    );

    let one = post(
        &h,
        "/v1/devices/revoke",
        json!({ "actor": owner, "device_id": devices[0].0 }),
    )
    .await;
    assert_eq!((one.status, &one.json), (200, &json!({ "revoked": 1 })));
    let all = post(&h, "/v1/devices/revoke-all", json!({ "actor": owner })).await;
    assert_eq!((all.status, &all.json), (200, &json!({ "revoked": 1 })));
    let listed = post(&h, "/v1/devices/list", json!({ "actor": owner })).await;
    assert_eq!(listed.json, json!({ "devices": [] }));
    let begun = post(
        &h,
        "/v1/login/begin",
        json!({ "context": context("dr-rest", Some(&devices[1].1)) }),
    )
    .await;
    assert_eq!(begun.json["outcome"], "challenge");

    // Credential changes: refused for another org's admin and for a colleague, recorded.
    let d = trust(&h, &ctx("dr-rest")).await;
    let change = |who: &Value, kind: &str| json!({ "actor": who, "org_id": ORG, "user_id": "dr-rest", "change": kind });
    for who in [&stranger, &colleague] {
        let refused = post(
            &h,
            "/v1/admin/credential-changed",
            change(who, "password-changed"),
        )
        .await;
        assert_eq!((refused.status, refused.kind()), (403, Some("forbidden")));
    }
    assert_eq!(records(&h, "access_denied").len(), 2);
    let by_admin = post(
        &h,
        "/v1/admin/credential-changed",
        change(&actor_json("it-admin", ORG, &["org-admin"]), "mfa-reset"),
    )
    .await;
    assert_eq!(
        (by_admin.status, &by_admin.json),
        (200, &json!({ "revoked": 1 }))
    );
    assert_eq!(
        asked(&h, &with_cookie(&ctx("dr-rest"), &d.cookie)).await,
        NO_DEVICE
    );
    let by_self = post(
        &h,
        "/v1/admin/credential-changed",
        change(&owner, "password-changed"),
    )
    .await;
    assert_eq!(
        (by_self.status, &by_self.json),
        (200, &json!({ "revoked": 0 }))
    );
    let bad = post(
        &h,
        "/v1/admin/credential-changed",
        change(&owner, "cat-walked-on-keyboard"),
    )
    .await;
    assert_eq!((bad.status, bad.kind()), (400, Some("invalid-input")));
}

#[tokio::test]
async fn no_device_token_ever_reaches_the_audit_trail() {
    let h = Harness::new();
    let c = ctx("dr-secret");
    let actor = me("dr-secret");
    let mut cookies = Vec::new();

    let a = trust(&h, &c).await;
    cookies.push(a.cookie.clone());
    h.clock.advance(60);
    let b = trusted_login(&h, &with_cookie(&c, &a.cookie), &a.device_id).await;
    cookies.push(b.clone());
    allowed(&h, &with_cookie(&c, &a.cookie)).await; // grace
    asked(&h, &with_ip(&with_cookie(&c, &b), "198.51.100.1")).await; // new network
    let mut firefox = with_cookie(&c, &b);
    firefox.device.traits.browser_family = Some("Firefox".to_owned());
    asked(&h, &firefox).await; // new browser
    h.clock.advance(120);
    asked(&h, &with_cookie(&c, &a.cookie)).await; // reuse: revoked

    let d = trust(&h, &c).await;
    cookies.push(d.cookie.clone());
    // Renewed: the code passed on a new network while presenting the device's cookie.
    let e = trust(&h, &with_ip(&with_cookie(&c, &d.cookie), "198.51.100.1")).await;
    assert_eq!(e.device_id, d.device_id);
    cookies.push(e.cookie.clone());
    h.clock.advance(300);
    let f = trust(&h, &c).await;
    cookies.push(f.cookie.clone());
    h.revoke(&actor, &f.device_id).await.unwrap();
    h.credential_changed(&actor, ORG, "dr-secret", CredentialChange::MfaReset)
        .await
        .unwrap();

    let actions = h.actions();
    for expected in [
        "device_trusted",
        "access_allowed",
        "device_challenged",
        "device_token_reuse",
        "device_revoked",
    ] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected}: {actions:?}"
        );
    }
    let lines: Vec<String> = h
        .audit
        .inner()
        .entries()
        .into_iter()
        .map(|e| e.line)
        .collect();
    assert!(
        lines.iter().any(|l| l.contains(&a.device_id)),
        "device ids are recorded, so the search below looks in the right place"
    );
    for cookie in &cookies {
        let token = cookie.split_once('.').unwrap().1;
        assert_eq!(token.len(), 64);
        for line in &lines {
            assert!(
                !line.contains(token) && !line.contains(&token.to_uppercase()),
                "a device token is in the audit trail: {line}"
            );
        }
    }
    assert!(lines.iter().all(|l| !l.contains("__Host-mfa-device")));
}
