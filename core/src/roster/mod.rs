//! Who an organization's users are, for its admins: every user mfa-step has seen at login, and the
//! roster an identity provider tells it (`sync_roster`), so that "not enrolled yet" can be true of
//! users who never reached the step. The admin console's users and policy screens read it; nothing
//! decides a login from it.
//!
//! ```text
//!  begin (any outcome) ─▶ get v1:user-seen:<org>:<user> ─▶ same day, same roles: nothing
//!                                                      └─▶ else set "<day> <r|-> <roles>"
//!  sync-roster (admin) ─▶ set / clear the roster mark of each listed user, one record
//!  console ─▶ list-keys v1:user-seen:<org>: ─▶ one entry per user
//! ```
//!
//! **One read per login, one write per user and day.** A `begin` reads the user's entry and writes
//! it only when the day or the roles changed, so a busy organization's logins do not all write. Two
//! logins racing on a new day both write the same thing.
//!
//! **A listing, not a record.** Like the day counts (`engine::stats`), an entry that cannot be read
//! or written changes nothing about the login: `begin` commits its decision first and the entry
//! after it, on a commit of its own; the failure goes to the host's log
//! (`roster:not-noted`) and the user is missing from the list until their next login. An entry
//! that does not parse is written again.
//!
//! **Kept for good**, like the user's enrollment (an id, roles and a day), and listed while the
//! user was seen in the last [`KEEP_DAYS`] or is on the roster; an entry only the roster made goes
//! when the roster removes the user. No expiry, because a host that indexes expiries (Spin's
//! adapter) would file one on every first sight of a user: on Spin that doubled the cost of a new
//! user's first `begin` (BENCHMARKS.md, "Spin").
//!
//! The value is one line of text, not JSON, to keep the login path's code small (the plugin's
//! size budget): `<last day seen, or -> <r if on the roster, or -> <roles, comma-separated>`.
//! Roles never hold a space or a comma (`kernel::input::roles`).

use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};

use crate::audit::{Action, Event, Outcome};
use crate::engine::Engine;
use crate::engine::record::{EventExt, Undo};
use crate::engine::stats::day_of;
use crate::kernel::error::{Error, Result};
use crate::kernel::model::Actor;
use crate::kernel::ports::RefusalNote;
use crate::kernel::time::Timestamp;
use crate::kernel::{input, keys};

/// Days after their last login that a user not on the roster is still listed.
pub const KEEP_DAYS: i64 = 400;
/// Most users one `sync_roster` call adds and removes together.
pub const MAX_SYNC: usize = 1000;

/// One known user of an organization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RosterEntry {
    /// The user's id.
    pub user: String,
    /// Their roles, as of their last login or the roster, whichever came last.
    pub roles: Vec<String>,
    /// The UTC day (days since 1970-01-01) of their last login, if they ever reached the step.
    pub last_seen_day: Option<i64>,
    /// Whether the identity provider put them on the roster.
    pub on_roster: bool,
}

/// A user the identity provider lists, with their roles.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RosterUser {
    /// The user's id.
    pub user_id: String,
    /// Their roles at the identity provider.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// What a `sync_roster` call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RosterSync {
    /// Users put on the roster (or whose roles it updated).
    pub added: usize,
    /// Users taken off it.
    pub removed: usize,
}

/// An entry's stored form: `(last day seen, on the roster, roles)`; `None` when it does not parse.
fn parse(value: &[u8]) -> Option<(Option<i64>, bool, Vec<String>)> {
    let text = std::str::from_utf8(value).ok()?;
    let mut parts = text.splitn(3, ' ');
    let day = match parts.next()? {
        "-" => None,
        d => Some(d.parse().ok()?),
    };
    let on_roster = match parts.next()? {
        "r" => true,
        "-" => false,
        _ => return None,
    };
    let roles = parts
        .next()?
        .split(',')
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect();
    Some((day, on_roster, roles))
}

fn format(day: Option<i64>, on_roster: bool, roles: &[String]) -> String {
    let day = day.map_or_else(|| "-".to_owned(), |d| d.to_string());
    let mark = if on_roster { "r" } else { "-" };
    format!("{day} {mark} {}", roles.join(","))
}

impl Engine<'_> {
    /// Notes that `user` of `org` reached the step today with `roles` (best effort: see the
    /// module's "A listing, not a record").
    pub(crate) fn note_seen(&self, org: &str, user: &str, roles: &[String], now: Timestamp) {
        let key = keys::user_seen(org, user);
        let today = day_of(now);
        // Compared as bytes, not parsed: the login path stays small (the plugin's size budget).
        let line = format(Some(today), false, roles);
        let noted = self.store.get(&key).and_then(|value| {
            let value = value.unwrap_or_default();
            let on_roster = value.split(|b| *b == b' ').nth(1) == Some(b"r");
            let line = if on_roster {
                format(Some(today), true, roles)
            } else {
                line
            };
            if value == line.as_bytes() {
                return Ok(());
            }
            // Committed alone: a host that holds writes until a commit (`wit/store.wit`, "Unit of
            // work") would otherwise fail the call's last commit with it.
            self.store.set(&key, line.as_bytes(), None)?;
            self.store.commit()
        });
        if noted.is_err() {
            self.audit.note_refusal(&RefusalNote {
                rule: "roster:not-noted".to_owned(),
                claimed_org: Some(org.to_owned()),
                ip: None,
                user_agent: None,
            });
        }
    }

    /// Puts users on `org`'s roster (or updates their roles) and takes others off it: the identity
    /// provider telling mfa-step who its users are, in batches of at most [`MAX_SYNC`]. Taking a user
    /// off keeps them listed as seen if they ever logged in. One record (`roster_synced`) per call.
    ///
    /// # Errors
    /// [`Error::Forbidden`] (recorded); [`Error::InvalidInput`] naming the first bad user or role,
    /// with nothing changed; [`Error::Store`]; [`Error::Audit`] (nothing changed).
    pub fn sync_roster<R: CryptoRng + ?Sized>(
        &self,
        actor: &Actor,
        org: &str,
        add: &[RosterUser],
        remove: &[String],
        now: Timestamp,
        rng: &mut R,
    ) -> Result<RosterSync> {
        let actor = self.canonical_actor(actor);
        let actor = actor.as_ref();
        let org = self.canonical_id(org);
        let org = org.as_ref();
        self.authorize(actor, org, org, "sync-roster", now, rng)?;
        if add.len() + remove.len() > MAX_SYNC {
            return Err(Error::invalid(
                "users",
                format!("at most {MAX_SYNC} users added and removed per call"),
            ));
        }
        let add: Vec<RosterUser> = add
            .iter()
            .map(|u| RosterUser {
                user_id: self.canonical_id(&u.user_id).into_owned(),
                roles: u.roles.clone(),
            })
            .collect();
        let remove: Vec<String> = remove
            .iter()
            .map(|u| self.canonical_id(u).into_owned())
            .collect();
        let mut named = std::collections::BTreeSet::new();
        for u in &add {
            input::id("add.user_id", &u.user_id)?;
            input::roles(&u.roles)?;
            if !named.insert(u.user_id.as_str()) {
                return Err(Error::invalid(
                    "add.user_id",
                    "each user at most once per call",
                ));
            }
        }
        for u in &remove {
            input::id("remove", u)?;
            if !named.insert(u.as_str()) {
                return Err(Error::invalid("remove", "each user at most once per call"));
            }
        }
        let mut undo = Undo::default();
        let outcome = (|| {
            for u in &add {
                let key = keys::user_seen(org, &u.user_id);
                let last = self.seen_day(&key)?;
                self.remember_value(&mut undo, &key, None)?;
                let value = format(last, true, &u.roles);
                self.store
                    .set(&key, value.as_bytes(), None)
                    .map_err(Error::store)?;
            }
            let mut removed = 0;
            for user in &remove {
                let key = keys::user_seen(org, user);
                let Some(value) = self.store.get(&key).map_err(Error::store)? else {
                    continue;
                };
                let Some((last, true, roles)) = parse(&value) else {
                    continue;
                };
                self.remember_value(&mut undo, &key, None)?;
                removed += 1;
                match last {
                    // Seen at login: still a user, no longer on the roster.
                    Some(day) => {
                        self.store
                            .set(&key, format(Some(day), false, &roles).as_bytes(), None)
                    }
                    None => self.store.delete(&key),
                }
                .map_err(Error::store)?;
            }
            let event = Event {
                org: org.to_owned(),
                actor: actor.user_id.clone(),
                subject: org.to_owned(),
                action: Action::RosterSynced,
                outcome: Outcome::Success,
                reason: None,
                ip: (!actor.ip.is_empty()).then(|| actor.ip.clone()),
                user_agent: (!actor.user_agent.is_empty()).then(|| actor.user_agent.clone()),
                device_id: None,
                challenge_id: None,
            }
            .reason(&format!("roster:added={}:removed={removed}", add.len()));
            self.append(event, now, rng)?;
            Ok(RosterSync {
                added: add.len(),
                removed,
            })
        })();
        outcome.inspect_err(|_| self.undo(undo))
    }

    /// The day a user was last seen at login, from their entry (none for a new or unreadable one).
    fn seen_day(&self, key: &str) -> Result<Option<i64>> {
        let value = self.store.get(key).map_err(Error::store)?;
        Ok(value.as_deref().and_then(parse).and_then(|(day, _, _)| day))
    }

    /// Known users of `org` (seen at login within [`KEEP_DAYS`], or on the roster) whose id holds
    /// `needle` in any case (empty: all), sorted by id: the first `limit` of them read, and how many
    /// ids matched in all. One listing and at most `limit` reads, however large the organization:
    /// a page view must not cost a read of every user.
    ///
    /// # Errors
    /// [`Error::Store`] when the store fails. An entry that does not parse is listed with no roles
    /// and no day (its user is known; its details are not).
    pub fn roster_of(
        &self,
        org: &str,
        needle: &str,
        limit: usize,
        now: Timestamp,
    ) -> Result<RosterPage> {
        let prefix = keys::users_seen(org);
        let needle = needle.to_lowercase();
        let mut ids: Vec<String> = self
            .store
            .list_keys(&prefix)
            .map_err(Error::store)?
            .into_iter()
            .filter_map(|key| key.strip_prefix(&prefix).map(str::to_owned))
            .filter(|user| needle.is_empty() || user.to_lowercase().contains(&needle))
            .collect();
        ids.sort();
        ids.dedup();
        let matched = ids.len();
        let oldest = day_of(now) - KEEP_DAYS;
        let mut users = Vec::new();
        for user in ids.into_iter().take(limit) {
            let Some(value) = self
                .store
                .get(&keys::user_seen(org, &user))
                .map_err(Error::store)?
            else {
                continue;
            };
            let (day, on_roster, roles) = parse(&value).unwrap_or((None, false, Vec::new()));
            // A host that sweeps late still lists only the kept days.
            if !on_roster && day.is_some_and(|d| d < oldest) {
                continue;
            }
            users.push(RosterEntry {
                user,
                roles,
                last_seen_day: day,
                on_roster,
            });
        }
        Ok(RosterPage { users, matched })
    }
}

/// Part of an organization's known users (see [`Engine::roster_of`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterPage {
    /// The users read, sorted by id.
    pub users: Vec<RosterEntry>,
    /// How many ids matched, read or not (an entry gone or past its days since the listing is
    /// among them).
    pub matched: usize,
}

impl RosterPage {
    /// Whether every matching user was read.
    #[must_use]
    pub fn complete(&self) -> bool {
        self.users.len() >= self.matched
    }
}

#[cfg(test)]
mod tests;
