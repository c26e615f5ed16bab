//! The users screen: the list (seen at login and on the roster, by state, searched, counted), one
//! user's page, and the actions on it (reset that unlocks, revoke one or all trusted browsers),
//! each recorded with the admin as actor; CSRF and the organization's scope hold on every route.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use super::tests::{T0, World, actor, header, html, request};
use super::*;
use crate::kernel::model::{Decision, DevicePresentation, LoginContext};
use crate::roster::RosterUser;
use rand_core::{OsRng, TryRngCore};

fn login(user: &str, org: &str) -> LoginContext {
    LoginContext {
        user_id: user.into(),
        org_id: org.into(),
        email: format!("{user}@clinic.example"),
        roles: vec!["clinician".into()],
        locale: None,
        device: DevicePresentation {
            ip: "203.0.113.7".into(),
            traits: crate::kernel::model::BrowserTraits {
                user_agent: "Mozilla/5.0 (X11; Linux x86_64) Chrome/130.0".into(),
                ..Default::default()
            },
            ..Default::default()
        },
    }
}

impl World {
    /// Enrolls `user` (code verified), remembering the browser if asked; the device id.
    fn enroll(&mut self, user: &str, org: &str, remember: bool, now: Timestamp) -> Option<String> {
        let ctx = login(user, org);
        let e = self.engine();
        let mut rng = OsRng.unwrap_err();
        let Decision::Challenge(view) = e.begin(&ctx, now, &mut rng).unwrap() else {
            panic!("a challenge");
        };
        e.send_code(&ctx, &view.challenge_id, now, &mut rng)
            .unwrap();
        let code = self.mailer.last_code().unwrap();
        let verified = e
            .verify(&ctx, &view.challenge_id, &code, remember, now, &mut rng)
            .unwrap();
        verified.device_id
    }

    /// Locks `user` with wrong codes an hour apart (past every delay); the time it is locked.
    fn lock(&mut self, user: &str, org: &str, now: Timestamp) -> Timestamp {
        let ctx = login(user, org);
        let e = self.engine();
        let mut rng = OsRng.unwrap_err();
        let Decision::Challenge(view) = e.begin(&ctx, now, &mut rng).unwrap() else {
            panic!("a challenge");
        };
        e.send_code(&ctx, &view.challenge_id, now, &mut rng)
            .unwrap();
        let code: u32 = self.mailer.last_code().unwrap().parse().unwrap();
        let wrong = format!("{:06}", (code + 1) % 1_000_000);
        let mut at = now;
        for i in 1..=21 {
            at = now.plus(i * 3601);
            let _ = e.verify(&ctx, &view.challenge_id, &wrong, false, at, &mut rng);
        }
        at
    }

    fn locked(&self, user: &str, org: &str, now: Timestamp) -> bool {
        let e = self.engine();
        let who = crate::engine::record::Who {
            org,
            user,
            ip: String::new(),
            user_agent: "",
        };
        e.is_locked(&who, now).unwrap()
    }

    fn post_user(&mut self, cookie: &str, form: &str, now: Timestamp) -> WebResponse {
        let req = WebRequest {
            form: form.as_bytes(),
            ..request(WebMethod::Post, USER, "", cookie)
        };
        self.page(&req, now)
    }
}

fn csrf(page: &WebResponse) -> String {
    let html = html(page);
    let at = html.find("name=\"csrf\" value=\"").unwrap() + 19;
    html[at..at + html[at..].find('"').unwrap()].to_owned()
}

fn signed_in(w: &mut World, org: &str, now: Timestamp) -> String {
    let link = w.link(&actor(org, &["org-admin"]), org, now).unwrap();
    w.open(&link, now)
}

#[test]
fn the_list_shows_seen_and_rostered_users_by_state_and_only_the_organizations() {
    let mut w = World::new();
    w.enroll("dr.ada", "acme", false, T0);
    let locked_at = w.lock("dr.bo", "acme", T0);
    // Seen at login, not enrolled: begin only.
    let e = w.engine();
    e.begin(&login("nurse.cy", "acme"), T0, &mut OsRng.unwrap_err())
        .unwrap();
    e.sync_roster(
        &actor("acme", &["org-admin"]),
        "acme",
        &[RosterUser {
            user_id: "coach.di".into(),
            roles: vec!["coach".into()],
        }],
        &[],
        T0,
        &mut OsRng.unwrap_err(),
    )
    .unwrap();
    w.enroll("dr.eve", "other", false, T0);
    let now = locked_at.plus(60);
    let cookie = signed_in(&mut w, "acme", now);
    let page = w.page(&request(WebMethod::Get, USERS, "", &cookie), now);
    assert_eq!(page.status, 200, "{}", html(&page));
    assert_eq!(
        html(&page).matches("data-user=").count(),
        4,
        "{}",
        html(&page)
    );
    assert!(html(&page).contains("data-user=\"dr.ada\" data-state=\"enrolled\""));
    assert!(html(&page).contains("data-user=\"dr.bo\" data-state=\"locked\""));
    assert!(html(&page).contains("data-user=\"nurse.cy\" data-state=\"not-enrolled\""));
    assert!(html(&page).contains("data-user=\"coach.di\" data-state=\"not-enrolled\""));
    assert!(
        !html(&page).contains("dr.eve"),
        "another organization's user"
    );
    assert!(
        html(&page).contains(
            "4 users: 1 locked, 1 enrolled, 0 in their grace period, 2 not enrolled yet."
        ),
        "{}",
        html(&page)
    );
    // Filtered and searched.
    let page = w.page(
        &request(WebMethod::Get, USERS, "status=locked", &cookie),
        now,
    );
    assert!(html(&page).contains("data-user=\"dr.bo\""));
    assert!(!html(&page).contains("data-user=\"dr.ada\""));
    let page = w.page(&request(WebMethod::Get, USERS, "q=DR.", &cookie), now);
    assert!(html(&page).contains("data-user=\"dr.ada\""));
    assert!(!html(&page).contains("data-user=\"coach.di\""));
    let page = w.page(
        &request(WebMethod::Get, USERS, "status=nobody", &cookie),
        now,
    );
    assert_eq!(page.status, 400);
    // Every view recorded in the organization's stream, the admin as actor.
    let views: Vec<_> = w
        .records()
        .into_iter()
        .filter(|r| r.1 == "admin_console_viewed")
        .collect();
    assert_eq!(views.len(), 3, "{views:?}");
    assert!(views.iter().all(|r| r.0 == "acme" && r.2 == "admin-1"));
    assert_eq!(
        views[1].3.as_deref(),
        Some("console:users:status=locked:q=-")
    );
    // Another organization's list, asked for by name, is refused and the refusal recorded.
    let page = w.page(&request(WebMethod::Get, USERS, "org=other", &cookie), now);
    assert_eq!(page.status, 403);
    assert!(!html(&page).contains("dr.eve"));
}

#[test]
fn an_admin_finds_a_locked_user_and_unlocks_them_with_a_recorded_reset() {
    let mut w = World::new();
    w.enroll("dr.bo", "acme", false, T0);
    let now = w.lock("dr.bo", "acme", T0.plus(60)).plus(60);
    assert!(w.locked("dr.bo", "acme", now));
    let cookie = signed_in(&mut w, "acme", now);
    let page = w.page(&request(WebMethod::Get, USER, "id=dr.bo", &cookie), now);
    assert_eq!(page.status, 200, "{}", html(&page));
    assert!(
        html(&page).contains(
            "<th scope=\"row\" class=\"text\">MFA state</th><td class=\"text\">Locked</td>"
        ),
        "{}",
        html(&page)
    );
    assert!(html(&page).contains("/admin/console/audit?user=dr.bo"));
    let token = csrf(&page);
    // Without the session's token: refused, nothing changed.
    let refused = w.post_user(&cookie, "csrf=nope&id=dr.bo&step=reset", now);
    assert_eq!(refused.status, 403);
    assert!(w.locked("dr.bo", "acme", now));
    let done = w.post_user(&cookie, &format!("csrf={token}&id=dr.bo&step=reset"), now);
    assert_eq!(done.status, 200, "{}", html(&done));
    assert!(html(&done).contains("MFA was reset"));
    assert!(!w.locked("dr.bo", "acme", now));
    let reset: Vec<_> = w
        .records()
        .into_iter()
        .filter(|r| r.1 == "mfa_reset")
        .collect();
    assert_eq!(reset.len(), 1);
    assert_eq!(
        (reset[0].0.as_str(), reset[0].2.as_str()),
        ("acme", "admin-1")
    );
    // A bad user id is a clear page, nothing else.
    let bad = w.post_user(
        &cookie,
        &format!("csrf={token}&id=no%20such&step=reset"),
        now,
    );
    assert_eq!(bad.status, 404);
}

#[test]
fn an_admin_revokes_one_trusted_browser_or_all_of_them() {
    let mut w = World::new();
    let first = w.enroll("dr.ada", "acme", true, T0).unwrap();
    // A second browser on the same account: a new challenge verified with remember.
    let mut ctx = login("dr.ada", "acme");
    ctx.device.traits.user_agent = "Mozilla/5.0 (Macintosh) Firefox/131.0".into();
    let e = w.engine();
    let mut rng = OsRng.unwrap_err();
    let Decision::Challenge(view) = e.begin(&ctx, T0.plus(600), &mut rng).unwrap() else {
        panic!("a challenge for a new browser");
    };
    e.send_code(&ctx, &view.challenge_id, T0.plus(600), &mut rng)
        .unwrap();
    let code = w.mailer.last_code().unwrap();
    let second = e
        .verify(
            &ctx,
            &view.challenge_id,
            &code,
            true,
            T0.plus(600),
            &mut rng,
        )
        .unwrap()
        .device_id
        .unwrap();
    let now = T0.plus(3600);
    let cookie = signed_in(&mut w, "acme", now);
    let page = w.page(&request(WebMethod::Get, USER, "id=dr.ada", &cookie), now);
    assert_eq!(
        html(&page).matches("data-device=").count(),
        2,
        "{}",
        html(&page)
    );
    let token = csrf(&page);
    let done = w.post_user(
        &cookie,
        &format!("csrf={token}&id=dr.ada&step=revoke&device={first}"),
        now,
    );
    assert_eq!(done.status, 200, "{}", html(&done));
    assert!(html(&done).contains("Trusted browsers revoked: 1."));
    assert!(!html(&done).contains(&format!("data-device=\"{first}\"")));
    assert!(html(&done).contains(&format!("data-device=\"{second}\"")));
    // Not an id at all: the same answer as another user's browser.
    let odd = w.post_user(
        &cookie,
        &format!("csrf={token}&id=dr.ada&step=revoke&device=no%20such"),
        now,
    );
    assert_eq!(odd.status, 404);
    assert!(
        html(&odd).contains("not one of this user&#39;s trusted browsers"),
        "{}",
        html(&odd)
    );
    // The same id again: not one of the user's now; nothing else changes.
    let again = w.post_user(
        &cookie,
        &format!("csrf={token}&id=dr.ada&step=revoke&device={first}"),
        now,
    );
    assert_eq!(again.status, 404);
    let all = w.post_user(
        &cookie,
        &format!("csrf={token}&id=dr.ada&step=revoke-all"),
        now,
    );
    assert!(html(&all).contains("Trusted browsers revoked: 1."));
    assert!(html(&all).contains("id=\"no-devices\""));
    let revoked: Vec<_> = w
        .records()
        .into_iter()
        .filter(|r| r.1 == "device_revoked")
        .collect();
    assert_eq!(revoked.len(), 2);
    assert!(revoked.iter().all(|r| r.2 == "admin-1"), "{revoked:?}");
    assert_eq!(revoked[0].3.as_deref(), Some("revoked-by-admin"));
    assert_eq!(revoked[1].3.as_deref(), Some("revoked-all-by-admin"));
}

#[test]
fn a_session_for_one_organization_never_reads_or_changes_anothers_users() {
    let mut w = World::new();
    w.enroll("dr.eve", "other", true, T0);
    let now = w.lock("dr.eve", "other", T0.plus(60)).plus(60);
    let cookie = signed_in(&mut w, "acme", now);
    // The user id names no organization: the session's is used, so another's user is unknown
    // here (not enrolled, no browsers) and its state is never shown.
    let page = w.page(&request(WebMethod::Get, USER, "id=dr.eve", &cookie), now);
    assert_eq!(page.status, 200);
    assert!(!html(&page).contains("dr.eve@clinic.example"));
    assert!(html(&page).contains("id=\"no-devices\""));
    let token = csrf(&page);
    let reset = w.post_user(&cookie, &format!("csrf={token}&id=dr.eve&step=reset"), now);
    assert_eq!(reset.status, 200);
    assert!(
        w.locked("dr.eve", "other", now),
        "the other organization's user is untouched"
    );
    // Asked for by name: refused and recorded in the admin's own stream.
    let refused = w.page(
        &request(WebMethod::Get, USER, "id=dr.eve&org=other", &cookie),
        now,
    );
    assert_eq!(refused.status, 403);
    let refused = w.post_user(
        &cookie,
        &format!("csrf={token}&id=dr.eve&step=revoke-all"),
        now,
    );
    assert_eq!(refused.status, 200);
    let other: Vec<_> = w.records().into_iter().filter(|r| r.0 == "other").collect();
    assert!(
        other.iter().all(|r| r.2 != "admin-1"),
        "nothing written to the other organization's stream by this admin: {other:?}"
    );
    // No session: nothing.
    let page = w.page(&request(WebMethod::Get, USERS, "", ""), now);
    assert_eq!(page.status, 401);
    assert!(header(&page, "set-cookie").unwrap().contains("Max-Age=0"));
}

#[test]
fn a_view_reads_the_states_of_at_most_max_states_users_and_says_so() {
    let mut w = World::new();
    let e = w.engine();
    let mut rng = OsRng.unwrap_err();
    let many = users::MAX_STATES + 5;
    let ids: Vec<String> = (0..many).map(|i| format!("u{i:05}")).collect();
    for batch in ids.chunks(crate::roster::MAX_SYNC) {
        let add: Vec<RosterUser> = batch
            .iter()
            .map(|u| RosterUser {
                user_id: u.clone(),
                roles: Vec::new(),
            })
            .collect();
        e.sync_roster(
            &actor("acme", &["org-admin"]),
            "acme",
            &add,
            &[],
            T0,
            &mut rng,
        )
        .unwrap();
    }
    let cookie = signed_in(&mut w, "acme", T0);
    let page = w.page(&request(WebMethod::Get, USERS, "", &cookie), T0);
    assert_eq!(page.status, 200);
    assert!(
        html(&page).contains(&format!(
            "the first {} of {many} users whose id matches",
            users::MAX_STATES
        )),
        "{}",
        html(&page)
    );
    assert!(html(&page).contains(&format!("{} users: 0 locked", users::MAX_STATES)));
    assert_eq!(html(&page).matches("data-user=").count(), users::MAX_ROWS);
    // A search narrows the listing first: then every match is read.
    let page = w.page(&request(WebMethod::Get, USERS, "q=u0100", &cookie), T0);
    assert!(!html(&page).contains("id=\"partial\""));
    assert!(html(&page).contains("5 users: 0 locked"), "{}", html(&page));
}
