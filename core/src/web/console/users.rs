//! The console's users screen: who the organization's users are (`crate::roster`: seen at login
//! in the last 400 days, or on the roster the identity provider syncs), each one's MFA state
//! (locked, enrolled, in grace, not enrolled), and one user's page: their state, their trusted
//! browsers (revoke one or all), a reset that unlocks them, and a link to their audit history.
//!
//! ```text
//!  GET  /admin/console/users?status=…&q=…   list, filtered; counts by state   console:users:…
//!  GET  /admin/console/user?id=…            one user                          console:user:<id>
//!  POST /admin/console/user  step=reset | revoke (device=…) | revoke-all     the engine's admin
//!                                           calls, each recorded as they always are
//! ```
//!
//! The list reads each user's state when the page is asked for (a few reads per user, never the
//! trail), for at most [`MAX_STATES`] users a view (the search by id narrows the listing first;
//! the page says when it read only part); it shows at most [`MAX_ROWS`] rows and says how many
//! more matched.

use askama::Template;
use rand_core::CryptoRng;
use serde::Deserialize;

use super::super::hosted::{WebRequest, WebResponse, field};
use super::words::load;
use super::{Screen, USER};
use crate::engine::Engine;
use crate::engine::record::Who;
use crate::kernel::error::{Error, Result};
use crate::kernel::input;
use crate::kernel::model::DeviceInfo;
use crate::kernel::time::Timestamp;
use crate::roster::RosterEntry;

/// Most users one page lists.
pub const MAX_ROWS: usize = 200;
/// Most users whose state one view reads (the rest are counted, and the page says so).
pub const MAX_STATES: usize = 1000;

/// The users screen's words, per language.
const LANGUAGES: &[(&str, &str)] = &[
    ("en", include_str!("../../../i18n/console/users/en.json")),
    ("es", include_str!("../../../i18n/console/users/es.json")),
];

/// The users screen's words. Placeholders: `{total}`, `{enrolled}`, `{grace}`, `{not_enrolled}`,
/// `{locked}`, `{shown}`, `{matched}`, `{user}`, `{count}`, `{days}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(
    missing_docs,
    reason = "each field is the text of the page element it is named after"
)]
pub struct UsersText {
    pub heading: String,
    pub scope_note: String,
    pub summary: String,
    pub filter_label: String,
    pub search_label: String,
    pub search_hint: String,
    pub filter_submit: String,
    pub all: String,
    pub locked: String,
    pub enrolled: String,
    pub grace: String,
    pub not_enrolled: String,
    pub caption: String,
    pub col_user: String,
    pub col_state: String,
    pub col_roles: String,
    pub col_last_seen: String,
    pub col_roster: String,
    pub yes: String,
    pub no: String,
    pub never: String,
    pub none: String,
    pub truncated: String,
    pub partial: String,
    pub no_match: String,
    pub user_heading: String,
    pub back: String,
    pub state_heading: String,
    pub address: String,
    pub failures: String,
    pub blocked_until: String,
    pub challenge: String,
    pub code_expires: String,
    pub sends_left: String,
    pub devices_heading: String,
    pub devices_caption: String,
    pub col_device: String,
    pub col_first: String,
    pub col_used: String,
    pub col_network: String,
    pub col_expires: String,
    pub col_action: String,
    pub revoke: String,
    pub revoke_label: String,
    pub revoke_all: String,
    pub no_devices: String,
    pub reset_heading: String,
    pub reset_explain: String,
    pub reset: String,
    pub history: String,
    pub done_reset: String,
    pub done_revoked: String,
    pub unknown_user: String,
    pub unknown_device: String,
    pub bad_status: String,
}

/// A user's state in the list: the first of these that holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Too many wrong codes: only a reset (or the window's end) lets them in.
    Locked,
    /// A confirmed address: codes go there.
    Enrolled,
    /// Not enrolled, but the organization's grace still lets them in without a code.
    Grace,
    /// Not enrolled: asked to enroll at the next login a rule requires MFA for.
    NotEnrolled,
}

impl State {
    const ALL: [Self; 4] = [Self::Locked, Self::Enrolled, Self::Grace, Self::NotEnrolled];

    fn key(self) -> &'static str {
        match self {
            Self::Locked => "locked",
            Self::Enrolled => "enrolled",
            Self::Grace => "grace",
            Self::NotEnrolled => "not-enrolled",
        }
    }

    fn name(self, t: &UsersText) -> &str {
        match self {
            Self::Locked => &t.locked,
            Self::Enrolled => &t.enrolled,
            Self::Grace => &t.grace,
            Self::NotEnrolled => &t.not_enrolled,
        }
    }
}

/// One row of the list.
struct Row {
    user: String,
    href: String,
    state_key: &'static str,
    state: String,
    roles: String,
    last_seen: String,
    on_roster: String,
}

#[derive(Template)]
#[template(path = "web/console/users.html")]
struct UsersBody<'a> {
    t: &'a UsersText,
    lang: &'a str,
    scope_note: String,
    summary: String,
    /// (value, label, selected) of the state filter.
    choices: Vec<(&'static str, String, bool)>,
    q: String,
    rows: Vec<Row>,
    truncated: Option<String>,
    partial: Option<String>,
}

/// One trusted browser on the user's page.
struct DeviceRow {
    id: String,
    label: String,
    first: String,
    used: String,
    network: String,
    expires: String,
    revoke_label: String,
}

#[derive(Template)]
#[template(path = "web/console/user.html")]
struct UserBody<'a> {
    t: &'a UsersText,
    lang: &'a str,
    csrf: &'a str,
    user: &'a str,
    heading: String,
    done: Option<String>,
    /// (label, value) of the state's facts.
    facts: Vec<(String, String)>,
    devices: Vec<DeviceRow>,
    history: String,
}

fn date_time(at: Timestamp) -> String {
    let text = at.rfc3339();
    // `2026-11-18T11:06:40Z` → `2026-11-18 11:06 UTC`.
    match (text.get(..10), text.get(11..16)) {
        (Some(date), Some(time)) => format!("{date} {time} UTC"),
        _ => text,
    }
}

fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

impl Engine<'_> {
    /// A user's state for the list.
    fn state_of(
        &self,
        org: &str,
        user: &str,
        policy: &crate::policy::OrgPolicy,
        now: Timestamp,
    ) -> Result<State> {
        let who = Who {
            org,
            user,
            ip: String::new(),
            user_agent: "",
        };
        if self.is_locked(&who, now)? {
            return Ok(State::Locked);
        }
        if self.enrollment_of(org, user)?.is_some() {
            return Ok(State::Enrolled);
        }
        if self.in_grace(org, user, policy, now)? {
            return Ok(State::Grace);
        }
        Ok(State::NotEnrolled)
    }

    /// `GET /admin/console/users?status=…&q=…&lang=…`: the list.
    pub(super) fn users_page<R: CryptoRng + ?Sized>(
        &self,
        req: &WebRequest<'_>,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<WebResponse> {
        let screen = match self.screen(req, now, rng)? {
            Ok(screen) => screen,
            Err(page) => return Ok(page),
        };
        let t: UsersText = load(LANGUAGES, screen.look.lang);
        let query = req.query.as_bytes();
        let wanted = match field(query, "status").filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => match State::ALL.iter().find(|st| st.key() == s) {
                Some(state) => Some(*state),
                None if s == "all" => None,
                None => {
                    let heading = t.heading.clone();
                    return Ok(screen.message(400, "bad-status", &heading, &t.bad_status));
                }
            },
        };
        // Searched by id, as typed (at most an id's length; matched without case).
        let q: String = field(query, "q")
            .unwrap_or_default()
            .trim()
            .chars()
            .take(128)
            .collect();
        let what = format!(
            "users:status={}:q={}",
            wanted.map_or("all", State::key),
            if q.is_empty() { "-" } else { "set" }
        );
        self.viewed(&screen, &what, now, rng)?;
        let org = screen.org();
        let policy = self.org_policy(org)?;
        // The search narrows the listing before anything is read; at most MAX_STATES users'
        // states are read per view (a few reads each), whatever the organization's size.
        let page = self.roster_of(org, &q, MAX_STATES, now)?;
        let partial = (!page.complete()).then(|| {
            t.partial
                .replace("{read}", &page.users.len().to_string())
                .replace("{matched}", &page.matched.to_string())
        });
        let mut counts = [0usize; 4];
        let mut matched: Vec<(RosterEntry, State)> = Vec::new();
        for entry in page.users {
            let state = self.state_of(org, &entry.user, &policy, now)?;
            counts[State::ALL.iter().position(|s| *s == state).unwrap_or(3)] += 1;
            if wanted.is_none_or(|w| w == state) {
                matched.push((entry, state));
            }
        }
        let total: usize = counts.iter().sum();
        let summary = t
            .summary
            .replace("{total}", &total.to_string())
            .replace("{locked}", &counts[0].to_string())
            .replace("{enrolled}", &counts[1].to_string())
            .replace("{grace}", &counts[2].to_string())
            .replace("{not_enrolled}", &counts[3].to_string());
        let truncated = (matched.len() > MAX_ROWS).then(|| {
            t.truncated
                .replace("{shown}", &MAX_ROWS.to_string())
                .replace("{matched}", &matched.len().to_string())
        });
        let lang = screen.look.lang;
        let rows = matched
            .into_iter()
            .take(MAX_ROWS)
            .map(|(entry, state)| Row {
                href: format!("{USER}?id={}&lang={lang}", encode(&entry.user)),
                state_key: state.key(),
                state: state.name(&t).to_owned(),
                roles: if entry.roles.is_empty() {
                    t.none.clone()
                } else {
                    entry.roles.join(", ")
                },
                last_seen: entry
                    .last_seen_day
                    .map_or_else(|| t.never.clone(), super::health::date_of),
                on_roster: if entry.on_roster {
                    t.yes.clone()
                } else {
                    t.no.clone()
                },
                user: entry.user,
            })
            .collect();
        let mut choices = vec![("all", t.all.clone(), wanted.is_none())];
        choices.extend(
            State::ALL
                .iter()
                .map(|s| (s.key(), s.name(&t).to_owned(), wanted == Some(*s))),
        );
        let body = UsersBody {
            t: &t,
            lang,
            scope_note: t
                .scope_note
                .replace("{days}", &crate::roster::KEEP_DAYS.to_string()),
            summary,
            choices,
            q,
            rows,
            truncated,
            partial,
        };
        Ok(render(&screen, &t.heading, "users", &body))
    }

    /// `GET /admin/console/user?id=…`: one user's state, browsers and actions.
    pub(super) fn user_page<R: CryptoRng + ?Sized>(
        &self,
        req: &WebRequest<'_>,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<WebResponse> {
        let screen = match self.screen(req, now, rng)? {
            Ok(screen) => screen,
            Err(page) => return Ok(page),
        };
        let user = field(req.query.as_bytes(), "id").unwrap_or_default();
        self.user_view(&screen, &user, None, 200, now, rng)
    }

    /// The user's page, with `done` said at its top.
    fn user_view<R: CryptoRng + ?Sized>(
        &self,
        screen: &Screen,
        user: &str,
        done: Option<String>,
        status: u16,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<WebResponse> {
        let t: UsersText = load(LANGUAGES, screen.look.lang);
        let user = self.canonical_id(user).into_owned();
        if input::id("user_id", &user).is_err() {
            let heading = t.user_heading.replace("{user}", "");
            return Ok(screen.message(404, "unknown-user", &heading, &t.unknown_user));
        }
        let org = screen.org();
        self.viewed(screen, &format!("user:{user}"), now, rng)?;
        let status_now = self.user_status_for(&screen.actor, org, &user, now, rng)?;
        let address = self
            .enrollment_of(org, &user)?
            .map(|e| e.email)
            .unwrap_or_else(|| t.not_enrolled.clone());
        let policy = self.org_policy(org)?;
        let state = self.state_of(org, &user, &policy, now)?;
        let yes_no = |b: bool| if b { t.yes.clone() } else { t.no.clone() };
        let mut facts = vec![
            (t.col_state.clone(), state.name(&t).to_owned()),
            (t.address.clone(), address),
            (
                t.failures.clone(),
                status_now.consecutive_failures.to_string(),
            ),
        ];
        if let Some(until) = status_now.verify_blocked_until {
            facts.push((t.blocked_until.clone(), date_time(until)));
        }
        facts.push((
            t.challenge.clone(),
            yes_no(status_now.active_challenge.is_some()),
        ));
        if let Some(at) = status_now.code_expires_at {
            facts.push((t.code_expires.clone(), date_time(at)));
        }
        facts.push((t.sends_left.clone(), status_now.sends_left.to_string()));
        let devices: Vec<DeviceInfo> =
            self.user_devices_for(&screen.actor, org, &user, now, rng)?;
        let devices = devices
            .into_iter()
            .map(|d| DeviceRow {
                revoke_label: t.revoke_label.replace("{device}", &d.label),
                id: d.device_id,
                label: d.label,
                first: date_time(d.first_trusted_at),
                used: date_time(d.last_used_at),
                network: d.last_network,
                expires: date_time(d.expires_at),
            })
            .collect();
        let lang = screen.look.lang;
        let body = UserBody {
            t: &t,
            lang,
            csrf: &screen.session.csrf,
            user: &user,
            heading: t.user_heading.replace("{user}", &user),
            done,
            facts,
            devices,
            history: format!("{}?user={}&lang={lang}", super::AUDIT, encode(&user)),
        };
        let mut page = render(screen, &body.heading.clone(), "users", &body);
        page.status = status;
        Ok(page)
    }

    /// `POST /admin/console/user`: `step=reset`, `step=revoke` with `device=…`, or `step=revoke-all`,
    /// for the user `id`; each through the engine's admin call, recorded as it always is.
    pub(super) fn user_post<R: CryptoRng + ?Sized>(
        &self,
        req: &WebRequest<'_>,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<WebResponse> {
        let screen = match self.screen(req, now, rng)? {
            Ok(screen) => screen,
            Err(page) => return Ok(page),
        };
        let t: UsersText = load(LANGUAGES, screen.look.lang);
        let user = field(req.form, "id").unwrap_or_default();
        let org = screen.org().to_owned();
        let step = field(req.form, "step").unwrap_or_default();
        let done = match step.as_str() {
            "reset" => self
                .reset_user(&screen.actor, &org, &user, now, rng)
                .map(|()| t.done_reset.clone()),
            "revoke" => {
                let device = field(req.form, "device").unwrap_or_default();
                self.revoke_user_devices(&screen.actor, &org, &user, Some(&device), now, rng)
                    .map(|n| t.done_revoked.replace("{count}", &n.to_string()))
            }
            "revoke-all" => self
                .revoke_user_devices(&screen.actor, &org, &user, None, now, rng)
                .map(|n| t.done_revoked.replace("{count}", &n.to_string())),
            _ => {
                let t_shell = &screen.look.t;
                return Ok(screen.message(
                    400,
                    "refused",
                    &t_shell.denied_heading,
                    &t_shell.form_stale,
                ));
            }
        };
        match done {
            // Done: a failure to read the page around it must not say otherwise.
            Ok(done) => self
                .user_view(&screen, &user, Some(done.clone()), 200, now, rng)
                .or_else(|_| {
                    let heading = t.user_heading.replace("{user}", &user);
                    Ok(screen.message(200, "done", &heading, &done))
                }),
            Err(Error::InvalidInput {
                field: "device_id", ..
            }) => self.user_view(
                &screen,
                &user,
                Some(t.unknown_device.clone()),
                404,
                now,
                rng,
            ),
            Err(Error::InvalidInput { .. }) => {
                let heading = t.user_heading.replace("{user}", "");
                Ok(screen.message(404, "unknown-user", &heading, &t.unknown_user))
            }
            Err(Error::Forbidden(_)) if step == "revoke" => self.user_view(
                &screen,
                &user,
                Some(t.unknown_device.clone()),
                404,
                now,
                rng,
            ),
            Err(e) => Err(e),
        }
    }
}

/// The screen's page around a body its own template renders.
fn render(screen: &Screen, heading: &str, current: &str, body: &impl Template) -> WebResponse {
    match body.render() {
        Ok(html) => screen.page(200, heading, current, html),
        // Askama renders only what these types hold; a failure is a bug, answered as a bare 500.
        Err(_) => screen.message(500, "unavailable", heading, &screen.look.t.unavailable_body),
    }
}

#[cfg(test)]
mod words_tests {
    use super::*;

    #[test]
    fn every_language_has_every_users_message_and_placeholder() {
        super::super::words::check_languages::<UsersText>(LANGUAGES, |t| {
            vec![
                (
                    t.summary.clone(),
                    vec![
                        "{total}",
                        "{locked}",
                        "{enrolled}",
                        "{grace}",
                        "{not_enrolled}",
                    ],
                ),
                (t.truncated.clone(), vec!["{shown}", "{matched}"]),
                (t.partial.clone(), vec!["{read}", "{matched}"]),
                (t.user_heading.clone(), vec!["{user}"]),
                (t.done_revoked.clone(), vec!["{count}"]),
                (t.revoke_label.clone(), vec!["{device}"]),
                (t.scope_note.clone(), vec!["{days}"]),
            ]
        });
    }
}
