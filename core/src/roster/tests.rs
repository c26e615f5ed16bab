//! The user index: a login notes its user once a day (one read otherwise), the roster adds and
//! removes users with one record and nothing changed when that record fails, only an org's admins
//! sync it, and a failing store never changes a login's answer.
#![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

use rand_core::{OsRng, TryRngCore, UnwrapErr};

use super::*;
use crate::kernel::model::{Decision, DevicePresentation, LoginContext};
use crate::kernel::ports::{PortError, PortResult, Store};
use crate::kernel::secret::HmacKey;
use crate::kernel::settings::Settings;
use crate::testing::{MemAudit, MemMailer, MemStore};

/// 2026-11-18T11:06:40Z.
const T0: Timestamp = Timestamp(1_795_000_000);
const DAY: i64 = crate::engine::stats::DAY_SECONDS;

/// A store that counts writes to user entries and can fail them.
#[derive(Default)]
struct Watched {
    inner: MemStore,
    entry_writes: std::cell::Cell<usize>,
    broken: bool,
}

impl Store for Watched {
    fn get(&self, key: &str) -> PortResult<Option<Vec<u8>>> {
        if self.broken && key.starts_with("v1:user-seen:") {
            return Err(PortError("injected".into()));
        }
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: &[u8], expires_at: Option<i64>) -> PortResult<()> {
        if key.starts_with("v1:user-seen:") {
            if self.broken {
                return Err(PortError("injected".into()));
            }
            self.entry_writes.set(self.entry_writes.get() + 1);
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

struct World {
    store: Watched,
    mailer: MemMailer,
    audit: MemAudit,
    key: HmacKey,
    rng: UnwrapErr<OsRng>,
}

impl World {
    fn new(broken: bool) -> Self {
        Self {
            store: Watched {
                broken,
                ..Watched::default()
            },
            mailer: MemMailer::default(),
            audit: MemAudit::default(),
            key: HmacKey::from_bytes(&[5; 32]).unwrap(),
            rng: OsRng.unwrap_err(),
        }
    }

    fn engine(&self) -> Engine<'_> {
        Engine {
            store: &self.store,
            mailer: &self.mailer,
            audit: &self.audit,
            settings: Settings::default(),
            key: &self.key,
        }
    }

    fn begin(&mut self, user: &str, roles: &[&str], now: Timestamp) -> String {
        let ctx = LoginContext {
            user_id: user.into(),
            org_id: "acme".into(),
            email: format!("{user}@clinic.example"),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            locale: None,
            device: DevicePresentation {
                ip: "203.0.113.7".into(),
                ..Default::default()
            },
        };
        let e = Engine {
            store: &self.store,
            mailer: &self.mailer,
            audit: &self.audit,
            settings: Settings::default(),
            key: &self.key,
        };
        match e.begin(&ctx, now, &mut self.rng) {
            Ok(Decision::Allow(_)) => "allow".to_owned(),
            Ok(Decision::Challenge(_)) => "challenge".to_owned(),
            Ok(Decision::Deny(_)) => "deny".to_owned(),
            Err(e) => format!("{e}"),
        }
    }

    fn sync(
        &mut self,
        actor: &Actor,
        add: &[(&str, &[&str])],
        remove: &[&str],
        now: Timestamp,
    ) -> Result<RosterSync> {
        let add: Vec<RosterUser> = add
            .iter()
            .map(|(u, roles)| RosterUser {
                user_id: (*u).to_owned(),
                roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            })
            .collect();
        let remove: Vec<String> = remove.iter().map(|u| (*u).to_owned()).collect();
        let e = Engine {
            store: &self.store,
            mailer: &self.mailer,
            audit: &self.audit,
            settings: Settings::default(),
            key: &self.key,
        };
        e.sync_roster(actor, "acme", &add, &remove, now, &mut self.rng)
    }
}

fn admin(org: &str) -> Actor {
    Actor {
        user_id: "it-1".into(),
        org_id: org.into(),
        roles: vec!["org-admin".into()],
        ip: "198.51.100.9".into(),
        user_agent: "idp-sync".into(),
    }
}

fn entry(user: &str, roles: &[&str], day: Option<i64>, on_roster: bool) -> RosterEntry {
    RosterEntry {
        user: user.into(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        last_seen_day: day,
        on_roster,
    }
}

#[test]
fn a_login_notes_its_user_once_a_day_and_again_when_the_roles_change() {
    let mut w = World::new(false);
    let today = day_of(T0);
    w.begin("dr.ada", &["provider"], T0);
    w.begin("dr.ada", &["provider"], T0.plus(60));
    w.begin("nurse.bo", &[], T0.plus(90));
    assert_eq!(w.store.entry_writes.get(), 2, "one write per user and day");
    assert_eq!(
        w.engine()
            .roster_of("acme", "", usize::MAX, T0.plus(100))
            .unwrap()
            .users,
        vec![
            entry("dr.ada", &["provider"], Some(today), false),
            entry("nurse.bo", &[], Some(today), false),
        ]
    );
    w.begin("dr.ada", &["provider", "org-admin"], T0.plus(120));
    w.begin("dr.ada", &["provider", "org-admin"], T0.plus(DAY));
    assert_eq!(w.store.entry_writes.get(), 4);
    let users = w
        .engine()
        .roster_of("acme", "", usize::MAX, T0.plus(DAY))
        .unwrap()
        .users;
    assert_eq!(
        users[0],
        entry("dr.ada", &["provider", "org-admin"], Some(today + 1), false)
    );
    // Another organization's users are not listed.
    assert!(
        w.engine()
            .roster_of("other", "", usize::MAX, T0)
            .unwrap()
            .users
            .is_empty()
    );
    // Kept for good (like the enrollment), listed only while seen in the last KEEP_DAYS.
    let expiry = w.store.inner.expiry(&keys::user_seen("acme", "nurse.bo"));
    assert_eq!(expiry, None);
    let later = T0.plus((KEEP_DAYS + 1) * DAY);
    let users = w
        .engine()
        .roster_of("acme", "", usize::MAX, later)
        .unwrap()
        .users;
    assert_eq!(users.len(), 1, "{users:?}");
}

#[test]
fn a_store_that_fails_the_index_changes_no_login_and_is_noted() {
    let mut quiet = World::new(false);
    let mut broken = World::new(true);
    for (user, at) in [("dr.ada", 0), ("dr.ada", 30), ("nurse.bo", 60)] {
        assert_eq!(
            quiet.begin(user, &["provider"], T0.plus(at)),
            broken.begin(user, &["provider"], T0.plus(at)),
        );
    }
    assert_eq!(quiet.audit.actions(), broken.audit.actions());
    let notes = broken.audit.notes.borrow();
    assert!(
        notes.iter().any(|n| n.rule == "roster:not-noted"),
        "{notes:?}"
    );
}

#[test]
fn the_roster_adds_and_removes_users_with_one_record() {
    let mut w = World::new(false);
    let today = day_of(T0);
    w.begin("dr.ada", &["provider"], T0);
    let done = w
        .sync(
            &admin("acme"),
            &[
                ("dr.ada", &["provider"]),
                ("dr.cy", &["clinician"]),
                ("coach.di", &[]),
            ],
            &[],
            T0.plus(10),
        )
        .unwrap();
    assert_eq!(
        done,
        RosterSync {
            added: 3,
            removed: 0
        }
    );
    assert_eq!(
        w.engine()
            .roster_of("acme", "", usize::MAX, T0.plus(20))
            .unwrap()
            .users,
        vec![
            entry("coach.di", &[], None, true),
            entry("dr.ada", &["provider"], Some(today), true),
            entry("dr.cy", &["clinician"], None, true),
        ]
    );
    // A login keeps the roster mark.
    w.begin("dr.cy", &["clinician"], T0.plus(30));
    // Taken off: never seen → gone; seen → still listed, off the roster; not on it → not counted.
    let done = w
        .sync(
            &admin("acme"),
            &[],
            &["coach.di", "dr.ada", "nobody"],
            T0.plus(40),
        )
        .unwrap();
    assert_eq!(
        done,
        RosterSync {
            added: 0,
            removed: 2
        }
    );
    assert_eq!(
        w.engine()
            .roster_of("acme", "", usize::MAX, T0.plus(50))
            .unwrap()
            .users,
        vec![
            entry("dr.ada", &["provider"], Some(today), false),
            entry("dr.cy", &["clinician"], Some(today), true),
        ]
    );
    let synced: Vec<_> = w
        .audit
        .entries
        .borrow()
        .iter()
        .filter(|e| e.action == "roster_synced")
        .map(|e| e.line.clone())
        .collect();
    assert_eq!(synced.len(), 2);
    assert!(
        synced[0].contains("roster:added=3:removed=0"),
        "{}",
        synced[0]
    );
    assert!(synced[1].contains("\"actor\":\"it-1\""), "{}", synced[1]);
}

#[test]
fn a_roster_sync_whose_record_fails_changes_nothing() {
    let mut w = World::new(false);
    w.begin("dr.ada", &["provider"], T0);
    w.sync(&admin("acme"), &[("dr.cy", &[])], &[], T0.plus(5))
        .unwrap();
    let before = w.store.inner.snapshot();
    w.audit.fail.set(true);
    let failed = w.sync(
        &admin("acme"),
        &[("dr.ada", &["org-admin"]), ("dr.eve", &[])],
        &["dr.cy"],
        T0.plus(10),
    );
    assert!(matches!(failed, Err(Error::Audit(_))), "{failed:?}");
    assert_eq!(w.store.inner.snapshot(), before);
}

#[test]
fn only_the_organizations_admins_sync_its_roster_and_bad_input_changes_nothing() {
    let mut w = World::new(false);
    let before = w.store.inner.snapshot();
    let refused = w.sync(&admin("other"), &[("dr.cy", &[])], &[], T0);
    assert!(matches!(refused, Err(Error::Forbidden(_))), "{refused:?}");
    let mut clinician = admin("acme");
    clinician.roles = vec!["clinician".into()];
    let refused = w.sync(&clinician, &[("dr.cy", &[])], &[], T0);
    assert!(matches!(refused, Err(Error::Forbidden(_))), "{refused:?}");
    for (add, remove) in [
        (vec![("dr cy", &[][..])], vec![]),
        (vec![("dr.cy", &["bad role"][..])], vec![]),
        (vec![("dr.cy", &[][..])], vec!["bad:id"]),
    ] {
        let bad = w.sync(&admin("acme"), &add, &remove, T0);
        assert!(matches!(bad, Err(Error::InvalidInput { .. })), "{bad:?}");
    }
    // A user named twice in one call, in `add` or in both lists.
    let twice = w.sync(
        &admin("acme"),
        &[("dr.zed", &["a"]), ("dr.zed", &["b"])],
        &[],
        T0,
    );
    assert!(
        matches!(twice, Err(Error::InvalidInput { .. })),
        "{twice:?}"
    );
    let twice = w.sync(&admin("acme"), &[("dr.zed", &["a"])], &["dr.zed"], T0);
    assert!(
        matches!(twice, Err(Error::InvalidInput { .. })),
        "{twice:?}"
    );
    let many: Vec<(String, &[&str])> = (0..=MAX_SYNC).map(|i| (format!("u{i}"), &[][..])).collect();
    let many: Vec<(&str, &[&str])> = many.iter().map(|(u, r)| (u.as_str(), *r)).collect();
    let bad = w.sync(&admin("acme"), &many, &[], T0);
    assert!(matches!(bad, Err(Error::InvalidInput { .. })), "{bad:?}");
    let after = w.store.inner.snapshot();
    // Only the refusals' records were written, in the refused actors' own streams.
    assert!(
        w.engine()
            .roster_of("acme", "", usize::MAX, T0)
            .unwrap()
            .users
            .is_empty()
    );
    let entries = |s: &crate::testing::Snapshot| -> Vec<(String, Vec<u8>)> {
        s.0.iter()
            .filter(|(k, _)| k.starts_with("v1:user-seen:"))
            .cloned()
            .collect()
    };
    assert_eq!(entries(&before), entries(&after));
}

#[test]
fn an_unreadable_entry_is_listed_bare_and_written_again_at_the_next_login() {
    let mut w = World::new(false);
    w.store
        .inner
        .set(&keys::user_seen("acme", "dr.ada"), b"garbage", None)
        .unwrap();
    assert_eq!(
        w.engine()
            .roster_of("acme", "", usize::MAX, T0)
            .unwrap()
            .users,
        vec![entry("dr.ada", &[], None, false)]
    );
    w.begin("dr.ada", &["provider"], T0);
    assert_eq!(
        w.engine()
            .roster_of("acme", "", usize::MAX, T0)
            .unwrap()
            .users,
        vec![entry("dr.ada", &["provider"], Some(day_of(T0)), false)]
    );
}

#[test]
fn a_page_reads_at_most_its_limit_of_users_and_counts_every_match() {
    let mut w = World::new(false);
    let add: Vec<(String, &[&str])> = (0..30).map(|i| (format!("u{i:02}"), &[][..])).collect();
    let add: Vec<(&str, &[&str])> = add.iter().map(|(u, r)| (u.as_str(), *r)).collect();
    w.sync(&admin("acme"), &add, &[], T0).unwrap();
    w.begin("Dr.Ada", &["provider"], T0);
    let page = w.engine().roster_of("acme", "", 10, T0).unwrap();
    assert_eq!(
        (page.users.len(), page.matched, page.complete()),
        (10, 31, false)
    );
    // Sorted by id: the first ten.
    assert_eq!(page.users[0].user, "Dr.Ada");
    assert_eq!(page.users[9].user, "u08");
    // Searched by part of the id, in any case, before anything is read.
    let page = w.engine().roster_of("acme", "dr.", 10, T0).unwrap();
    assert_eq!(
        (page.users.len(), page.matched, page.complete()),
        (1, 1, true)
    );
    let page = w.engine().roster_of("acme", "U2", 10, T0).unwrap();
    assert_eq!(page.matched, 10);
}
