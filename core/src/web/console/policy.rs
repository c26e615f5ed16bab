//! The console's policy screen: the organization's policy as a form, each field with the
//! platform's limit beside it, and who is asked for a code today; a change is explained (each
//! field old → new, whether it tightens or loosens, who is asked after) before it is saved.
//!
//! ```text
//! GET  /admin/console/policy ── recorded (console:policy) ──▶ form + limits + who is asked today
//! POST step=preview ── parse ── OrgPolicy::validate ── recorded (console:policy:preview)
//!        │                 (the check set_policy makes)  ──▶ old → new, tightens/loosens, after
//!        │                                                    (nothing saved; the draft rides in
//!        │                                                     hidden fields)
//! POST step=edit  ── recorded (console:policy) ──▶ the form with the draft
//! POST step=save  ── set_policy (authorizes, validates, records policy_changed) ──▶ "Policy saved"
//! ```
//!
//! **One check.** The preview checks a draft with [`OrgPolicy::validate`], the very function
//! `set_policy` refuses with, so the preview never says yes to what saving refuses; the limits
//! shown beside the fields are read from the same settings and constants.
//!
//! **Bad input** (a number that is not one, a role that is not one, a loosening past the
//! platform's limit) shows the form again (400) with the values kept and the error tied to its
//! field; nothing is stored. The saved page records nothing more than `policy_changed`: a view
//! record that failed after the save would turn a done change into a "try again" page.
//!
//! **Counts** come from the roster (`roster_of`): users seen in the last
//! [`KEEP_DAYS`] days or on the identity provider's roster, and the page says so.

use askama::Template;
use rand_core::CryptoRng;
use serde::Deserialize;

use super::super::hosted::{WebRequest, WebResponse, field};
use super::words::fill;
use super::{POLICY, Screen, words};
use crate::engine::Engine;
use crate::kernel::error::{Error, Result};
use crate::kernel::time::Timestamp;
use crate::policy::{
    MAX_GRACE_DAYS, MAX_GRACE_LOGINS, MAX_IPV4_PREFIX, MAX_IPV6_PREFIX, Mandate, OrgPolicy,
};
use crate::roster::{KEEP_DAYS, RosterPage};

/// Most known users whose roles one policy page reads to count who is asked (the page says when
/// it counted only part).
const MAX_COUNTED: usize = 5_000;

/// The screen's words, one JSON file per language.
const LANGUAGES: &[(&str, &str)] = &[
    ("en", include_str!("../../../i18n/console/policy/en.json")),
    ("es", include_str!("../../../i18n/console/policy/es.json")),
];

/// The form's field names: the policy's own (`policy.<name>` in a refusal).
const MANDATE: &str = "mandate";
const ROLES: &str = "required_roles";
const TRUST_DAYS: &str = "trust_days";
const REMEMBER: &str = "allow_remember_device";
const IPV4: &str = "ipv4_change_prefix";
const IPV6: &str = "ipv6_change_prefix";
const GRACE_DAYS: &str = "enrollment_grace_days";
const GRACE_LOGINS: &str = "enrollment_grace_logins";

/// The policy screen's words. Placeholders: `{users}`, `{count}`, `{roles}`, `{days}`, `{max}`,
/// `{min}`, `{setting}`, `{old}`, `{new}`, `{n}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PolicyWords {
    pub(super) heading: String,
    pub(super) intro: String,
    pub(super) who_heading: String,
    pub(super) today_label: String,
    pub(super) after_label: String,
    pub(super) who_everyone: String,
    pub(super) who_roles: String,
    pub(super) count_note: String,
    pub(super) count_partial: String,
    pub(super) form_heading: String,
    pub(super) mandate_legend: String,
    pub(super) mandate_inherit: String,
    pub(super) mandate_everyone: String,
    pub(super) mandate_by_role: String,
    pub(super) roles_label: String,
    pub(super) roles_hint: String,
    pub(super) trust_days_label: String,
    pub(super) trust_days_hint: String,
    pub(super) remember_label: String,
    pub(super) remember_allowed_hint: String,
    pub(super) remember_denied_hint: String,
    pub(super) ipv4_label: String,
    pub(super) ipv4_hint: String,
    pub(super) ipv6_label: String,
    pub(super) ipv6_hint: String,
    pub(super) grace_days_label: String,
    pub(super) grace_days_hint: String,
    pub(super) grace_logins_label: String,
    pub(super) grace_logins_hint: String,
    pub(super) preview_button: String,
    pub(super) save_button: String,
    pub(super) change_button: String,
    pub(super) preview_heading: String,
    pub(super) preview_intro: String,
    pub(super) changes_heading: String,
    pub(super) change_line: String,
    pub(super) no_change: String,
    pub(super) tightens: String,
    pub(super) loosens: String,
    pub(super) mixed: String,
    pub(super) saved_heading: String,
    pub(super) saved_body: String,
    pub(super) errors_heading: String,
    pub(super) err_number: String,
    pub(super) err_roles: String,
    pub(super) err_roles_mandate: String,
    pub(super) err_remember: String,
    pub(super) err_mandate: String,
    pub(super) err_other: String,
    pub(super) yes: String,
    pub(super) no: String,
    pub(super) none: String,
    pub(super) days_value: String,
    pub(super) logins_value: String,
}

/// The words of `lang`.
pub(super) fn policy_words(lang: &str) -> PolicyWords {
    words::load(LANGUAGES, lang)
}

#[cfg(test)]
pub(super) fn languages() -> &'static [(&'static str, &'static str)] {
    LANGUAGES
}

fn mandate_key(m: Mandate) -> &'static str {
    match m {
        Mandate::Inherit => "inherit",
        Mandate::Everyone => "everyone",
        Mandate::ByRole => "by-role",
    }
}

/// How strict a mandate is: more people asked is stricter.
fn mandate_rank(m: Mandate) -> u8 {
    match m {
        Mandate::Inherit => 0,
        Mandate::ByRole => 1,
        Mandate::Everyone => 2,
    }
}

/// A policy as the form holds it: what was typed, kept as typed so that a refused form shows it
/// again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Draft {
    mandate: String,
    roles: String,
    trust_days: String,
    remember: bool,
    ipv4: String,
    ipv6: String,
    grace_days: String,
    grace_logins: String,
}

impl Draft {
    fn of(p: &OrgPolicy) -> Self {
        Self {
            mandate: mandate_key(p.mandate).to_owned(),
            roles: p.required_roles.join(", "),
            trust_days: p.trust_days.to_string(),
            remember: p.allow_remember_device,
            ipv4: p.ipv4_change_prefix.to_string(),
            ipv6: p.ipv6_change_prefix.to_string(),
            grace_days: p.enrollment_grace_days.to_string(),
            grace_logins: p.enrollment_grace_logins.to_string(),
        }
    }

    fn from_form(form: &[u8]) -> Self {
        let get = |name: &str| field(form, name).unwrap_or_default();
        Self {
            mandate: get(MANDATE),
            roles: get(ROLES),
            trust_days: get(TRUST_DAYS),
            remember: get(REMEMBER) == "on",
            ipv4: get(IPV4),
            ipv6: get(IPV6),
            grace_days: get(GRACE_DAYS),
            grace_logins: get(GRACE_LOGINS),
        }
    }

    /// The draft as hidden fields (an unchecked box is an absent field, as a browser sends it).
    fn hidden(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            (MANDATE, self.mandate.clone()),
            (ROLES, self.roles.clone()),
            (TRUST_DAYS, self.trust_days.clone()),
            (IPV4, self.ipv4.clone()),
            (IPV6, self.ipv6.clone()),
            (GRACE_DAYS, self.grace_days.clone()),
            (GRACE_LOGINS, self.grace_logins.clone()),
        ];
        if self.remember {
            fields.push((REMEMBER, "on".to_owned()));
        }
        fields
    }
}

/// A field's error: (field name, message).
type FieldError = (&'static str, String);

/// One input of the form (every field but the mandate's radio buttons).
struct Input {
    name: &'static str,
    label: String,
    kind: &'static str,
    value: String,
    checked: bool,
    min: Option<i64>,
    max: Option<i64>,
    hint: String,
    error: Option<String>,
}

/// One mandate choice.
struct Choice {
    value: &'static str,
    label: String,
    checked: bool,
}

/// The form.
struct FormView {
    choices: Vec<Choice>,
    mandate_error: Option<String>,
    inputs: Vec<Input>,
}

/// One changed field: its name, the sentence, and its effect (key for tests, words).
struct Change {
    field: &'static str,
    text: String,
    effect_key: &'static str,
    effect: String,
}

/// The change explained before it is saved.
struct PreviewView {
    changes: Vec<Change>,
    who_after: String,
    hidden: Vec<(&'static str, String)>,
}

#[derive(Template)]
#[template(path = "web/console/policy.html")]
struct Body<'a> {
    t: &'a PolicyWords,
    action: String,
    csrf: &'a str,
    /// The page's `<h1>` and its id.
    heading: String,
    heading_id: &'static str,
    saved: bool,
    /// Errors shown in the summary (any field error, and those of no field of the form).
    has_errors: bool,
    other_errors: Vec<String>,
    who_now: String,
    count_note: String,
    form: Option<FormView>,
    preview: Option<PreviewView>,
}

/// What `policy_post` shows, besides the form.
enum Shown {
    Form,
    Saved,
}

impl Engine<'_> {
    /// `GET /admin/console/policy`: the policy in force as a form, recorded.
    pub(super) fn policy_page<R: CryptoRng + ?Sized>(
        &self,
        req: &WebRequest<'_>,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<WebResponse> {
        let screen = match self.screen(req, now, rng)? {
            Ok(screen) => screen,
            Err(page) => return Ok(page),
        };
        self.viewed(&screen, "policy", now, rng)?;
        let current = self.policy_in_force(screen.org())?;
        self.policy_form(&screen, 200, &Draft::of(&current), &[], Shown::Form, now)
    }

    /// `POST /admin/console/policy`: `step=preview` explains a draft, `step=edit` shows it in the
    /// form again, `step=save` saves it.
    pub(super) fn policy_post<R: CryptoRng + ?Sized>(
        &self,
        req: &WebRequest<'_>,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<WebResponse> {
        let screen = match self.screen(req, now, rng)? {
            Ok(screen) => screen,
            Err(page) => return Ok(page),
        };
        let t = policy_words(screen.look.lang);
        let draft = Draft::from_form(req.form);
        let step = field(req.form, "step").unwrap_or_default();
        match step.as_str() {
            "edit" => {
                self.viewed(&screen, "policy", now, rng)?;
                self.policy_form(&screen, 200, &draft, &[], Shown::Form, now)
            }
            "preview" => match self.parse_policy(&draft, &t) {
                Err(errors) => {
                    self.viewed(&screen, "policy", now, rng)?;
                    self.policy_form(&screen, 400, &draft, &errors, Shown::Form, now)
                }
                Ok(policy) => {
                    self.viewed(&screen, "policy:preview", now, rng)?;
                    self.policy_preview(&screen, &t, &policy, now)
                }
            },
            "save" => {
                let policy = match self.parse_policy(&draft, &t) {
                    Ok(policy) => policy,
                    Err(errors) => {
                        self.viewed(&screen, "policy", now, rng)?;
                        return self.policy_form(&screen, 400, &draft, &errors, Shown::Form, now);
                    }
                };
                match self.set_policy(&screen.actor, screen.org(), &policy, now, rng) {
                    // Saved: a failure to read what the page shows around it (the roster, the
                    // platform's roles) must not say otherwise.
                    Ok(()) => {
                        self.policy_form(&screen, 200, &Draft::of(&policy), &[], Shown::Saved, now)
                            .or_else(|_| {
                                Ok(screen.message(
                                    200,
                                    "policy-saved",
                                    &t.saved_heading,
                                    &t.saved_body,
                                ))
                            })
                    }
                    Err(Error::InvalidInput { field, .. }) => {
                        let errors = [self.policy_error(field, &policy, &t)];
                        self.viewed(&screen, "policy", now, rng)?;
                        self.policy_form(&screen, 400, &draft, &errors, Shown::Form, now)
                    }
                    Err(Error::Forbidden(_)) => {
                        let shell = &screen.look.t;
                        Ok(
                            screen.message(
                                403,
                                "refused",
                                &shell.denied_heading,
                                &shell.denied_org,
                            ),
                        )
                    }
                    Err(e) => Err(e),
                }
            }
            _ => {
                let shell = &screen.look.t;
                Ok(screen.message(400, "refused", &shell.denied_heading, &shell.form_stale))
            }
        }
    }

    /// The organization's policy as it applies today: as stored, with any limit the platform has
    /// since tightened past clamped as the logins clamp it (`OrgPolicy::effective`).
    fn policy_in_force(&self, org: &str) -> Result<OrgPolicy> {
        let stored = self.org_policy(org)?;
        let applied = stored.effective(&self.settings);
        Ok(OrgPolicy {
            trust_days: applied.trust_days,
            allow_remember_device: applied.allow_remember_device,
            ipv4_change_prefix: applied.ipv4_change_prefix,
            ipv6_change_prefix: applied.ipv6_change_prefix,
            ..stored
        })
    }

    /// The draft as a policy, checked as `set_policy` checks it; else every field's error.
    fn parse_policy(
        &self,
        d: &Draft,
        t: &PolicyWords,
    ) -> std::result::Result<OrgPolicy, Vec<FieldError>> {
        let s = &self.settings;
        let mut errors = Vec::new();
        let mandate = match d.mandate.as_str() {
            "inherit" => Some(Mandate::Inherit),
            "everyone" => Some(Mandate::Everyone),
            "by-role" => Some(Mandate::ByRole),
            _ => {
                errors.push((MANDATE, t.err_mandate.clone()));
                None
            }
        };
        let mut roles: Vec<String> = Vec::new();
        for role in d.roles.split([',', ' ', '\t', '\r', '\n']) {
            if !role.is_empty() && !roles.iter().any(|r| r == role) {
                roles.push(role.to_owned());
            }
        }
        let trust_days = number(&mut errors, t, TRUST_DAYS, &d.trust_days, 0, s.trust_days);
        let ipv4 = number(
            &mut errors,
            t,
            IPV4,
            &d.ipv4,
            s.ipv4_change_prefix,
            MAX_IPV4_PREFIX,
        );
        let ipv6 = number(
            &mut errors,
            t,
            IPV6,
            &d.ipv6,
            s.ipv6_change_prefix,
            MAX_IPV6_PREFIX,
        );
        let grace_days = number(&mut errors, t, GRACE_DAYS, &d.grace_days, 0, MAX_GRACE_DAYS);
        let grace_logins = number(
            &mut errors,
            t,
            GRACE_LOGINS,
            &d.grace_logins,
            0,
            MAX_GRACE_LOGINS,
        );
        let (
            Some(mandate),
            Some(trust_days),
            Some(ipv4_change_prefix),
            Some(ipv6_change_prefix),
            Some(enrollment_grace_days),
            Some(enrollment_grace_logins),
        ) = (mandate, trust_days, ipv4, ipv6, grace_days, grace_logins)
        else {
            return Err(errors);
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let policy = OrgPolicy {
            mandate,
            required_roles: roles,
            trust_days,
            allow_remember_device: d.remember,
            ipv4_change_prefix,
            ipv6_change_prefix,
            enrollment_grace_days,
            enrollment_grace_logins,
        };
        match policy.validate(&self.settings) {
            Ok(()) => Ok(policy),
            Err(Error::InvalidInput { field, .. }) => {
                Err(vec![self.policy_error(field, &policy, t)])
            }
            Err(_) => Err(vec![("", t.err_other.clone())]),
        }
    }

    /// The form's error for a refusal naming `policy.<field>`, in the admin's words.
    fn policy_error(&self, refused: &str, policy: &OrgPolicy, t: &PolicyWords) -> FieldError {
        let s = &self.settings;
        match refused.strip_prefix("policy.").unwrap_or(refused) {
            ROLES if policy.mandate != Mandate::ByRole && !policy.required_roles.is_empty() => {
                (ROLES, t.err_roles_mandate.clone())
            }
            ROLES => (ROLES, t.err_roles.clone()),
            TRUST_DAYS => (TRUST_DAYS, err_number(t, 0, s.trust_days.into())),
            REMEMBER => (REMEMBER, t.err_remember.clone()),
            IPV4 => (
                IPV4,
                err_number(t, s.ipv4_change_prefix.into(), MAX_IPV4_PREFIX.into()),
            ),
            IPV6 => (
                IPV6,
                err_number(t, s.ipv6_change_prefix.into(), MAX_IPV6_PREFIX.into()),
            ),
            GRACE_DAYS => (GRACE_DAYS, err_number(t, 0, MAX_GRACE_DAYS.into())),
            GRACE_LOGINS => (GRACE_LOGINS, err_number(t, 0, MAX_GRACE_LOGINS.into())),
            _ => ("", t.err_other.clone()),
        }
    }

    /// Who a policy asks for a code, in words, with the count of known users it asks.
    fn who_is_asked(
        &self,
        policy: &OrgPolicy,
        platform_roles: &[String],
        known: &RosterPage,
        t: &PolicyWords,
    ) -> String {
        if policy.mandate == Mandate::Everyone {
            // Every known user: the listing's count, nothing to read.
            return fill(&t.who_everyone, &[("users", &known.matched.to_string())]);
        }
        // Matched as `requirement_of` matches them: folded under `id_case = fold`.
        let fold = self.settings.fold_ids;
        let norm = |r: &str| {
            if fold {
                r.to_ascii_lowercase()
            } else {
                r.to_owned()
            }
        };
        let mut roles: Vec<String> = Vec::new();
        let extra = if policy.mandate == Mandate::ByRole {
            policy.required_roles.as_slice()
        } else {
            &[]
        };
        for role in platform_roles.iter().chain(extra) {
            let role = norm(role);
            if !roles.contains(&role) {
                roles.push(role);
            }
        }
        let users = known
            .users
            .iter()
            .filter(|u| u.roles.iter().any(|r| roles.contains(&norm(r))))
            .count();
        let said = fill(
            &t.who_roles,
            &[
                ("count", &roles.len().to_string()),
                ("roles", &roles.join(", ")),
                ("users", &users.to_string()),
            ],
        );
        if known.complete() {
            return said;
        }
        let part = fill(
            &t.count_partial,
            &[
                ("read", &known.users.len().to_string()),
                ("matched", &known.matched.to_string()),
            ],
        );
        format!("{said} {part}")
    }

    /// The form page: `draft`'s values, each field's limit and error, who is asked today.
    fn policy_form(
        &self,
        screen: &Screen,
        status: u16,
        draft: &Draft,
        errors: &[FieldError],
        shown: Shown,
        now: Timestamp,
    ) -> Result<WebResponse> {
        let t = policy_words(screen.look.lang);
        let s = &self.settings;
        let current = self.policy_in_force(screen.org())?;
        let platform_roles = self.platform_roles()?;
        let known = self.roster_of(screen.org(), "", MAX_COUNTED, now)?;
        let error_of = |name: &str| {
            errors
                .iter()
                .find(|(f, _)| *f == name)
                .map(|(_, e)| e.clone())
        };
        let number = |name, label: &str, value: &str, min: i64, max: i64, hint: &str| Input {
            name,
            label: label.to_owned(),
            kind: "number",
            value: value.to_owned(),
            checked: false,
            min: Some(min),
            max: Some(max),
            hint: fill(
                hint,
                &[("min", &min.to_string()), ("max", &max.to_string())],
            ),
            error: error_of(name),
        };
        let inputs = vec![
            Input {
                name: ROLES,
                label: t.roles_label.clone(),
                kind: "text",
                value: draft.roles.clone(),
                checked: false,
                min: None,
                max: None,
                hint: fill(&t.roles_hint, &[("roles", &platform_roles.join(", "))]),
                error: error_of(ROLES),
            },
            number(
                TRUST_DAYS,
                &t.trust_days_label,
                &draft.trust_days,
                0,
                s.trust_days.into(),
                &t.trust_days_hint,
            ),
            Input {
                name: REMEMBER,
                label: t.remember_label.clone(),
                kind: "checkbox",
                value: "on".to_owned(),
                checked: draft.remember,
                min: None,
                max: None,
                hint: if s.allow_remember_device {
                    t.remember_allowed_hint.clone()
                } else {
                    t.remember_denied_hint.clone()
                },
                error: error_of(REMEMBER),
            },
            number(
                IPV4,
                &t.ipv4_label,
                &draft.ipv4,
                s.ipv4_change_prefix.into(),
                MAX_IPV4_PREFIX.into(),
                &t.ipv4_hint,
            ),
            number(
                IPV6,
                &t.ipv6_label,
                &draft.ipv6,
                s.ipv6_change_prefix.into(),
                MAX_IPV6_PREFIX.into(),
                &t.ipv6_hint,
            ),
            number(
                GRACE_DAYS,
                &t.grace_days_label,
                &draft.grace_days,
                0,
                MAX_GRACE_DAYS.into(),
                &t.grace_days_hint,
            ),
            number(
                GRACE_LOGINS,
                &t.grace_logins_label,
                &draft.grace_logins,
                0,
                MAX_GRACE_LOGINS.into(),
                &t.grace_logins_hint,
            ),
        ];
        let choices = [
            (Mandate::Inherit, &t.mandate_inherit),
            (Mandate::ByRole, &t.mandate_by_role),
            (Mandate::Everyone, &t.mandate_everyone),
        ]
        .into_iter()
        .map(|(m, label)| Choice {
            value: mandate_key(m),
            label: label.clone(),
            checked: draft.mandate == mandate_key(m),
        })
        .collect();
        let saved = matches!(shown, Shown::Saved);
        let (heading, heading_id) = if saved {
            (t.saved_heading.clone(), "policy-saved")
        } else {
            (t.heading.clone(), "policy")
        };
        let body = Body {
            t: &t,
            action: format!("{POLICY}?lang={}", screen.look.lang),
            csrf: &screen.session.csrf,
            heading: heading.clone(),
            heading_id,
            saved,
            has_errors: !errors.is_empty(),
            other_errors: errors
                .iter()
                .filter(|(f, _)| f.is_empty())
                .map(|(_, e)| e.clone())
                .collect(),
            who_now: self.who_is_asked(&current, &platform_roles, &known, &t),
            count_note: fill(&t.count_note, &[("days", &KEEP_DAYS.to_string())]),
            form: Some(FormView {
                choices,
                mandate_error: error_of(MANDATE),
                inputs,
            }),
            preview: None,
        };
        let html = body
            .render()
            .map_err(|e| Error::Misconfigured(e.to_string()))?;
        Ok(screen.page(status, &heading, "policy", html))
    }

    /// The change explained: each field old → new, its effect, who is asked after.
    fn policy_preview(
        &self,
        screen: &Screen,
        t: &PolicyWords,
        policy: &OrgPolicy,
        now: Timestamp,
    ) -> Result<WebResponse> {
        let current = self.policy_in_force(screen.org())?;
        let platform_roles = self.platform_roles()?;
        let known = self.roster_of(screen.org(), "", MAX_COUNTED, now)?;
        let body = Body {
            t,
            action: format!("{POLICY}?lang={}", screen.look.lang),
            csrf: &screen.session.csrf,
            heading: t.preview_heading.clone(),
            heading_id: "policy-preview",
            saved: false,
            has_errors: false,
            other_errors: Vec::new(),
            who_now: self.who_is_asked(&current, &platform_roles, &known, t),
            count_note: fill(&t.count_note, &[("days", &KEEP_DAYS.to_string())]),
            form: None,
            preview: Some(PreviewView {
                changes: changes(&current, policy, t),
                who_after: self.who_is_asked(policy, &platform_roles, &known, t),
                // The draft as parsed, so that what is saved is what was explained.
                hidden: Draft::of(policy).hidden(),
            }),
        };
        let html = body
            .render()
            .map_err(|e| Error::Misconfigured(e.to_string()))?;
        Ok(screen.page(200, &t.preview_heading, "policy", html))
    }
}

/// A whole number of the field's type from what was typed; else the field's error, which says
/// its range (a number too large for the type is out of range like any other).
fn number<T: std::str::FromStr + Into<i64> + Copy>(
    errors: &mut Vec<FieldError>,
    t: &PolicyWords,
    name: &'static str,
    raw: &str,
    min: T,
    max: T,
) -> Option<T> {
    let n = raw.trim().parse::<T>().ok();
    if n.is_none() {
        errors.push((name, err_number(t, min.into(), max.into())));
    }
    n
}

fn err_number(t: &PolicyWords, min: i64, max: i64) -> String {
    fill(
        &t.err_number,
        &[("min", &min.to_string()), ("max", &max.to_string())],
    )
}

/// Whether a change tightens (`true`), loosens (`false`) or both (`None`).
fn effect(t: &PolicyWords, tighter: Option<bool>) -> (&'static str, String) {
    match tighter {
        Some(true) => ("tightens", t.tightens.clone()),
        Some(false) => ("loosens", t.loosens.clone()),
        None => ("mixed", t.mixed.clone()),
    }
}

/// Every field `new` changes from `old`, in plain words.
fn changes(old: &OrgPolicy, new: &OrgPolicy, t: &PolicyWords) -> Vec<Change> {
    let mut out = Vec::new();
    let mut push = |field, setting: &str, from: String, to: String, tighter: Option<bool>| {
        let (effect_key, effect) = effect(t, tighter);
        out.push(Change {
            field,
            text: fill(
                &t.change_line,
                &[("setting", setting), ("old", &from), ("new", &to)],
            ),
            effect_key,
            effect,
        });
    };
    let mandate = |m: Mandate| match m {
        Mandate::Inherit => t.mandate_inherit.clone(),
        Mandate::Everyone => t.mandate_everyone.clone(),
        Mandate::ByRole => t.mandate_by_role.clone(),
    };
    if old.mandate != new.mandate {
        push(
            MANDATE,
            &t.mandate_legend,
            mandate(old.mandate),
            mandate(new.mandate),
            Some(mandate_rank(new.mandate) > mandate_rank(old.mandate)),
        );
    }
    let added = new
        .required_roles
        .iter()
        .any(|r| !old.required_roles.contains(r));
    let removed = old
        .required_roles
        .iter()
        .any(|r| !new.required_roles.contains(r));
    if added || removed {
        let list = |roles: &[String]| {
            if roles.is_empty() {
                t.none.clone()
            } else {
                roles.join(", ")
            }
        };
        push(
            ROLES,
            &t.roles_label,
            list(&old.required_roles),
            list(&new.required_roles),
            (added != removed).then_some(added),
        );
    }
    let days = |n: u32| fill(&t.days_value, &[("n", &n.to_string())]);
    if old.trust_days != new.trust_days {
        push(
            TRUST_DAYS,
            &t.trust_days_label,
            days(old.trust_days.into()),
            days(new.trust_days.into()),
            Some(new.trust_days < old.trust_days),
        );
    }
    if old.allow_remember_device != new.allow_remember_device {
        let yes_no = |b: bool| if b { t.yes.clone() } else { t.no.clone() };
        push(
            REMEMBER,
            &t.remember_label,
            yes_no(old.allow_remember_device),
            yes_no(new.allow_remember_device),
            Some(!new.allow_remember_device),
        );
    }
    // A longer prefix asks again after a smaller move: stricter.
    for (field, label, from, to) in [
        (
            IPV4,
            &t.ipv4_label,
            old.ipv4_change_prefix,
            new.ipv4_change_prefix,
        ),
        (
            IPV6,
            &t.ipv6_label,
            old.ipv6_change_prefix,
            new.ipv6_change_prefix,
        ),
    ] {
        if from != to {
            push(
                field,
                label,
                format!("/{from}"),
                format!("/{to}"),
                Some(to > from),
            );
        }
    }
    if old.enrollment_grace_days != new.enrollment_grace_days {
        push(
            GRACE_DAYS,
            &t.grace_days_label,
            days(old.enrollment_grace_days),
            days(new.enrollment_grace_days),
            Some(new.enrollment_grace_days < old.enrollment_grace_days),
        );
    }
    if old.enrollment_grace_logins != new.enrollment_grace_logins {
        let logins = |n: u32| fill(&t.logins_value, &[("n", &n.to_string())]);
        push(
            GRACE_LOGINS,
            &t.grace_logins_label,
            logins(old.enrollment_grace_logins),
            logins(new.enrollment_grace_logins),
            Some(new.enrollment_grace_logins < old.enrollment_grace_logins),
        );
    }
    out
}
