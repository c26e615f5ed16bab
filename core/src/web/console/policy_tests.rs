//! The policy screen from the admin's browser: the view recorded, every field's platform limit
//! shown, a change explained (old → new, tightens or loosens, who is asked after) and never saved
//! by its preview, a save that is `set_policy`'s (recorded, refusing a loosening), bad numbers,
//! CSRF and another organization refused with nothing changed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use super::policy::{PolicyWords, languages};
use super::tests::{T0, World, actor, html, request};
use super::*;
use crate::kernel::ports::Store;
use crate::kernel::settings::Settings;
use crate::policy::{Mandate, OrgPolicy};

/// A session for an org-admin of `org`: its cookie and CSRF token.
fn signed_in(w: &mut World, org: &str) -> (String, String) {
    let link = w.link(&actor(org, &["org-admin"]), org, T0).unwrap();
    let cookie = w.open(&link, T0);
    let page = w.page(&request(WebMethod::Get, POLICY, "", &cookie), T0.plus(1));
    (cookie, csrf_of(html(&page)))
}

fn csrf_of(html: &str) -> String {
    html.split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned()
}

fn get(w: &mut World, query: &str, cookie: &str) -> WebResponse {
    w.page(&request(WebMethod::Get, POLICY, query, cookie), T0.plus(2))
}

fn post(w: &mut World, query: &str, cookie: &str, form: &str) -> WebResponse {
    let mut req = request(WebMethod::Post, POLICY, query, cookie);
    req.form = form.as_bytes();
    w.page(&req, T0.plus(3))
}

/// The form of a policy as a browser sends it, with `step`.
fn form(csrf: &str, step: &str, p: &OrgPolicy) -> String {
    let mandate = match p.mandate {
        Mandate::Inherit => "inherit",
        Mandate::Everyone => "everyone",
        Mandate::ByRole => "by-role",
    };
    let mut f = format!(
        "csrf={csrf}&step={step}&mandate={mandate}&required_roles={}&trust_days={}&ipv4_change_prefix={}&ipv6_change_prefix={}&enrollment_grace_days={}&enrollment_grace_logins={}",
        p.required_roles.join("%2C+"),
        p.trust_days,
        p.ipv4_change_prefix,
        p.ipv6_change_prefix,
        p.enrollment_grace_days,
        p.enrollment_grace_logins
    );
    if p.allow_remember_device {
        f.push_str("&allow_remember_device=on");
    }
    f
}

/// The policy stored for `org`, if any (as bytes: a change of anything shows).
fn stored(w: &World, org: &str) -> Option<Vec<u8>> {
    w.store.get(&crate::kernel::keys::policy(org)).unwrap()
}

fn platform() -> OrgPolicy {
    OrgPolicy::inherit(&Settings::default())
}

/// Users the organization has seen: three providers, a scheduler, a receptionist.
fn users(w: &World, org: &str) {
    let e = w.engine();
    for (user, role) in [
        ("u1", "provider"),
        ("u2", "provider"),
        ("u3", "clinician"),
        ("u4", "scheduler"),
        ("u5", "receptionist"),
    ] {
        e.note_seen(org, user, &[role.to_owned()], T0);
    }
}

/// The text of the element with `id`, tags dropped.
fn text_of(html: &str, id: &str) -> String {
    let start = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id}"));
    let rest = &html[start..];
    let rest = &rest[rest.find('>').unwrap() + 1..];
    let end = rest.find("</p>").or_else(|| rest.find("</ul>")).unwrap();
    let mut out = String::new();
    let mut inside = false;
    for c in rest[..end].chars() {
        match c {
            '<' => inside = true,
            '>' => inside = false,
            c if !inside => out.push(c),
            _ => {}
        }
    }
    unescape(&out)
}

/// HTML text as read: the entities askama writes, back to characters.
pub(super) fn unescape(text: &str) -> String {
    text.replace("&#39;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&#60;", "<")
        .replace("&gt;", ">")
        .replace("&#62;", ">")
        .replace("&#38;", "&")
        .replace("&amp;", "&")
}

#[test]
fn the_view_is_recorded_and_shows_each_platform_limit_and_who_is_asked() {
    let mut w = World::new();
    users(&w, "acme");
    let (cookie, _) = signed_in(&mut w, "acme");
    let page = get(&mut w, "", &cookie);
    assert_eq!(page.status, 200);
    let h = html(&page);
    assert!(h.contains("<h1 id=\"policy\">Policy</h1>"), "{h}");
    // The limits come from the platform's settings (trust 30 days, /16, /48) and the policy's
    // constants (grace 90 days, 20 sign-ins).
    for (id, min, max) in [
        ("trust_days", "0", "30"),
        ("ipv4_change_prefix", "16", "32"),
        ("ipv6_change_prefix", "48", "128"),
        ("enrollment_grace_days", "0", "90"),
        ("enrollment_grace_logins", "0", "20"),
    ] {
        assert!(
            h.contains(&format!(
                " min=\"{min}\" max=\"{max}\" aria-describedby=\"{id}-hint\""
            )),
            "{id}"
        );
        let hint = text_of(h, &format!("{id}-hint"));
        assert!(hint.contains(min) && hint.contains(max), "{id}: {hint}");
    }
    assert_eq!(
        text_of(h, "trust_days-hint"),
        "From 0 to 30 (the platform's limit)."
    );
    assert!(h.contains(
        "id=\"allow_remember_device\" name=\"allow_remember_device\" value=\"on\" checked"
    ));
    // Inherit: the platform's six roles; of the five users, the three providers and clinicians.
    let who = text_of(h, "who-now");
    assert!(who.contains("these 6 roles"), "{who}");
    assert!(who.contains("That is 3 users."), "{who}");
    assert!(h.contains("seen in the last 400 days or on the roster"));
    let viewed: Vec<_> = w
        .records()
        .into_iter()
        .filter(|r| r.1 == "admin_console_viewed" && r.3.as_deref() == Some("console:policy"))
        .collect();
    // One for the sign-in's first page, one for this one; in acme's stream, the admin as actor.
    assert_eq!(viewed.len(), 2);
    assert!(viewed.iter().all(|r| r.0 == "acme" && r.2 == "admin-1"));
}

#[test]
fn a_preview_explains_the_change_and_who_is_asked_after_and_never_saves() {
    let mut w = World::new();
    users(&w, "acme");
    let (cookie, csrf) = signed_in(&mut w, "acme");
    let before = stored(&w, "acme");
    let draft = OrgPolicy {
        mandate: Mandate::ByRole,
        required_roles: vec!["scheduler".into()],
        trust_days: 7,
        enrollment_grace_days: 14,
        ..platform()
    };
    let page = post(&mut w, "", &cookie, &form(&csrf, "preview", &draft));
    assert_eq!(page.status, 200);
    let h = html(&page);
    assert!(h.contains("<h1 id=\"policy-preview\">"));
    let changes = text_of(h, "changes");
    for line in [
        "Days a browser stays trusted: 30 days → 7 days (tightens)",
        "Who must use a code: The platform's roles only → The platform's roles and the extra roles below (tightens)",
        "Extra roles that require a code: none → scheduler (tightens)",
        "Days a user may sign in before enrolling: 0 days → 14 days (loosens)",
    ] {
        assert!(changes.contains(line), "{line} not in {changes}");
    }
    assert!(!changes.contains("IPv4"), "unchanged fields are not listed");
    // Today: 6 roles, 3 users; after: the scheduler too.
    assert!(text_of(h, "who-now").contains("these 6 roles"));
    let after = text_of(h, "who-after");
    assert!(
        after.contains("these 7 roles") && after.contains("That is 4 users."),
        "{after}"
    );
    // The draft rides in hidden fields to Save and Change.
    assert!(h.contains("<input type=\"hidden\" name=\"trust_days\" value=\"7\">"));
    assert!(h.contains("name=\"step\" value=\"save\""));
    assert!(h.contains("name=\"step\" value=\"edit\""));
    // Nothing saved, nothing recorded as a change.
    assert_eq!(stored(&w, "acme"), before);
    assert!(!w.records().iter().any(|r| r.1 == "policy_changed"));
    assert!(
        w.records()
            .iter()
            .any(|r| r.3.as_deref() == Some("console:policy:preview"))
    );
    // "Change" brings the draft back into the form.
    let edit = post(&mut w, "", &cookie, &form(&csrf, "edit", &draft));
    assert_eq!(edit.status, 200);
    assert!(html(&edit).contains("id=\"trust_days\" name=\"trust_days\" value=\"7\""));
    assert!(html(&edit).contains("value=\"by-role\" checked"));
    assert_eq!(stored(&w, "acme"), before);
    // No change: said so, and nothing to save.
    let same = post(&mut w, "", &cookie, &form(&csrf, "preview", &platform()));
    assert_eq!(same.status, 200);
    assert!(html(&same).contains("id=\"no-change\""));
    assert!(!html(&same).contains("value=\"save\""));
}

#[test]
fn a_save_changes_the_policy_and_records_it_with_the_admin_as_actor() {
    let mut w = World::new();
    let (cookie, csrf) = signed_in(&mut w, "acme");
    let draft = OrgPolicy {
        mandate: Mandate::Everyone,
        trust_days: 7,
        allow_remember_device: false,
        ipv4_change_prefix: 24,
        ..platform()
    };
    let page = post(&mut w, "", &cookie, &form(&csrf, "save", &draft));
    assert_eq!(page.status, 200, "{}", html(&page));
    assert!(html(&page).contains("<h1 id=\"policy-saved\">Policy saved</h1>"));
    assert!(html(&page).contains("id=\"trust_days\" name=\"trust_days\" value=\"7\""));
    let saved: OrgPolicy = serde_json::from_slice(&stored(&w, "acme").unwrap()).unwrap();
    assert_eq!(saved, draft);
    let changed: Vec<_> = w
        .records()
        .into_iter()
        .filter(|r| r.1 == "policy_changed")
        .collect();
    assert_eq!(changed.len(), 1);
    assert_eq!(
        (changed[0].0.as_str(), changed[0].2.as_str()),
        ("acme", "admin-1")
    );
    // The form now shows the saved policy.
    let again = get(&mut w, "", &cookie);
    assert!(html(&again).contains("value=\"everyone\" checked"));
    assert!(text_of(html(&again), "who-now").starts_with("Today: everyone"));
}

#[test]
fn a_loosening_past_the_platform_limit_is_refused_naming_the_field_and_nothing_changes() {
    let mut w = World::new();
    let (cookie, csrf) = signed_in(&mut w, "acme");
    let cases = [
        (
            OrgPolicy {
                trust_days: 31,
                ..platform()
            },
            "trust_days",
            "Enter a whole number from 0 to 30.",
        ),
        (
            OrgPolicy {
                ipv4_change_prefix: 8,
                ..platform()
            },
            "ipv4_change_prefix",
            "Enter a whole number from 16 to 32.",
        ),
        (
            OrgPolicy {
                enrollment_grace_logins: 21,
                ..platform()
            },
            "enrollment_grace_logins",
            "Enter a whole number from 0 to 20.",
        ),
        (
            OrgPolicy {
                required_roles: vec!["scheduler".into()],
                ..platform()
            },
            "required_roles",
            "Only the choice of extra roles lists roles: clear them, or choose extra roles.",
        ),
    ];
    for (draft, field, message) in cases {
        for step in ["preview", "save"] {
            let page = post(&mut w, "", &cookie, &form(&csrf, step, &draft));
            assert_eq!(page.status, 400, "{field} {step}");
            let h = html(&page);
            assert!(h.contains("id=\"form-errors\""));
            assert!(
                h.contains(&format!(
                    "aria-describedby=\"{field}-hint {field}-error\" aria-invalid=\"true\""
                )),
                "{field} {step}"
            );
            assert_eq!(text_of(h, &format!("{field}-error")), message);
            assert_eq!(stored(&w, "acme"), None, "{field} {step}");
        }
    }
    assert!(!w.records().iter().any(|r| r.1 == "policy_changed"));
}

#[test]
fn a_bad_number_shows_the_form_again_with_the_field_error_and_the_values_kept() {
    let mut w = World::new();
    let (cookie, csrf) = signed_in(&mut w, "acme");
    let form = format!(
        "csrf={csrf}&step=preview&mandate=inherit&required_roles=&trust_days=seven&ipv4_change_prefix=16&ipv6_change_prefix=48&enrollment_grace_days=-1&enrollment_grace_logins=999999999999&allow_remember_device=on"
    );
    let page = post(&mut w, "", &cookie, &form);
    assert_eq!(page.status, 400);
    let h = html(&page);
    assert!(h.contains("id=\"trust_days\" name=\"trust_days\" value=\"seven\""));
    assert_eq!(
        text_of(h, "trust_days-error"),
        "Enter a whole number from 0 to 30."
    );
    assert_eq!(
        text_of(h, "enrollment_grace_days-error"),
        "Enter a whole number from 0 to 90."
    );
    assert_eq!(
        text_of(h, "enrollment_grace_logins-error"),
        "Enter a whole number from 0 to 20."
    );
    assert!(!h.contains("ipv4_change_prefix-error"));
    // A missing mandate, an unknown step.
    let page = post(
        &mut w,
        "",
        &cookie,
        &format!("csrf={csrf}&step=preview&trust_days=7"),
    );
    assert_eq!(page.status, 400);
    assert!(html(&page).contains("<fieldset aria-describedby=\"mandate-error\">"));
    assert_eq!(
        post(&mut w, "", &cookie, &format!("csrf={csrf}&step=drop")).status,
        400
    );
    assert_eq!(stored(&w, "acme"), None);
}

#[test]
fn a_post_without_the_sessions_csrf_token_is_refused_and_changes_nothing() {
    let mut w = World::new();
    let (cookie, csrf) = signed_in(&mut w, "acme");
    let draft = OrgPolicy {
        trust_days: 7,
        ..platform()
    };
    let good = form(&csrf, "save", &draft);
    for bad in [
        good.replace(&format!("csrf={csrf}&"), ""),
        good.replace(&csrf, &"0".repeat(32)),
    ] {
        let page = post(&mut w, "", &cookie, &bad);
        assert_eq!(page.status, 403);
        assert_eq!(stored(&w, "acme"), None);
    }
    // Without a session at all.
    assert_eq!(post(&mut w, "", "", &good).status, 401);
    assert_eq!(stored(&w, "acme"), None);
    assert_eq!(
        post(&mut w, "", &cookie, &good).status,
        200,
        "the token works"
    );
}

#[test]
fn another_organizations_admin_can_neither_read_nor_change_this_policy() {
    let mut w = World::new();
    users(&w, "acme");
    let acme_before = stored(&w, "acme");
    let (cookie, csrf) = signed_in(&mut w, "globex");
    // Asking for acme with globex's session: refused, and the refusal recorded in globex's stream.
    let page = get(&mut w, "org=acme", &cookie);
    assert_eq!(page.status, 403);
    assert!(!html(&page).contains("who-now"));
    assert!(w.records().iter().any(|r| r.0 == "globex"
        && r.1 == "access_denied"
        && r.3.as_deref() == Some("console:not-authorized:target-org:acme")));
    let draft = OrgPolicy {
        mandate: Mandate::Everyone,
        ..platform()
    };
    let page = post(&mut w, "org=acme", &cookie, &form(&csrf, "save", &draft));
    assert_eq!(page.status, 403);
    assert_eq!(stored(&w, "acme"), acme_before);
    // Globex's session saving changes globex only; acme's counts never show on its page.
    let page = post(&mut w, "", &cookie, &form(&csrf, "save", &draft));
    assert_eq!(page.status, 200);
    assert!(text_of(html(&page), "who-now").contains("0 users"));
    assert!(stored(&w, "globex").is_some());
    assert_eq!(stored(&w, "acme"), acme_before);
    assert!(!w.records().iter().any(|r| r.0 == "acme"));
}

#[test]
fn every_language_has_every_policy_word_and_the_page_speaks_spanish() {
    super::words::check_languages::<PolicyWords>(languages(), |t| {
        vec![
            (t.who_everyone.clone(), vec!["{users}"]),
            (t.who_roles.clone(), vec!["{count}", "{roles}", "{users}"]),
            (t.count_note.clone(), vec!["{days}"]),
            (t.count_partial.clone(), vec!["{read}", "{matched}"]),
            (t.roles_hint.clone(), vec!["{roles}"]),
            (t.trust_days_hint.clone(), vec!["{max}"]),
            (t.ipv4_hint.clone(), vec!["{min}", "{max}"]),
            (t.ipv6_hint.clone(), vec!["{min}", "{max}"]),
            (t.grace_days_hint.clone(), vec!["{max}"]),
            (t.grace_logins_hint.clone(), vec!["{max}"]),
            (t.change_line.clone(), vec!["{setting}", "{old}", "{new}"]),
            (t.err_number.clone(), vec!["{min}", "{max}"]),
            (t.days_value.clone(), vec!["{n}"]),
            (t.logins_value.clone(), vec!["{n}"]),
        ]
    });
    let mut w = World::new();
    let (cookie, _) = signed_in(&mut w, "acme");
    let page = get(&mut w, "lang=es", &cookie);
    assert_eq!(page.status, 200);
    let h = html(&page);
    assert!(
        h.starts_with("<!DOCTYPE html>\n<html lang=\"es\">") || h.contains("<html lang=\"es\">")
    );
    assert!(h.contains("<h1 id=\"policy\">Política</h1>"));
    assert!(h.contains("action=\"/admin/console/policy?lang=es\""));
    assert_eq!(
        text_of(h, "trust_days-hint"),
        "De 0 a 30 (el límite de la plataforma)."
    );
}

#[test]
fn each_change_says_whether_it_tightens_or_loosens() {
    let mut w = World::new();
    let (cookie, csrf) = signed_in(&mut w, "acme");
    let saved = OrgPolicy {
        mandate: Mandate::ByRole,
        required_roles: vec!["scheduler".into()],
        trust_days: 7,
        allow_remember_device: false,
        ipv4_change_prefix: 24,
        enrollment_grace_logins: 5,
        ..platform()
    };
    assert_eq!(
        post(&mut w, "", &cookie, &form(&csrf, "save", &saved)).status,
        200
    );
    let draft = OrgPolicy {
        required_roles: vec!["triage".into()],
        trust_days: 14,
        allow_remember_device: true,
        ipv4_change_prefix: 16,
        ipv6_change_prefix: 64,
        enrollment_grace_logins: 2,
        ..saved.clone()
    };
    let page = post(&mut w, "", &cookie, &form(&csrf, "preview", &draft));
    assert_eq!(page.status, 200);
    let effects: Vec<String> = html(&page)
        .split("<li data-field=\"")
        .skip(1)
        .map(|li| {
            let field = li.split('"').next().unwrap();
            let effect = li.split("data-effect=\"").nth(1).unwrap();
            format!("{field}:{}", effect.split('"').next().unwrap())
        })
        .collect();
    assert_eq!(
        effects,
        [
            "required_roles:mixed",
            "trust_days:loosens",
            "allow_remember_device:loosens",
            "ipv4_change_prefix:loosens",
            "ipv6_change_prefix:tightens",
            "enrollment_grace_logins:tightens",
        ]
    );
    let changes = text_of(html(&page), "changes");
    assert!(
        changes
            .contains("Extra roles that require a code: scheduler → triage (tightens and loosens)"),
        "{changes}"
    );
    assert!(
        changes
            .contains("IPv4 network change that asks again (prefix length): /24 → /16 (loosens)")
    );
    assert!(changes.contains("Users may ask to be remembered on a browser: no → yes (loosens)"));
    // Loosening within the platform's limits is the organization's right: it saves.
    assert_eq!(
        post(&mut w, "", &cookie, &form(&csrf, "save", &draft)).status,
        200
    );
    let stored: OrgPolicy = serde_json::from_slice(&stored(&w, "acme").unwrap()).unwrap();
    assert_eq!(stored, draft);
}

mod any_form {
    use proptest::prelude::*;

    use super::*;

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "inherit", "everyone", "by-role", "save", "preview", "edit", "on", "", "31", "255",
                "256", "-1", "7", "24", "x, y", "a b,,c",
            ])
            .prop_map(str::to_owned),
            "-?[0-9]{1,22}",
            ".{0,24}",
        ]
    }

    fn fields() -> impl Strategy<Value = Vec<(&'static str, String)>> {
        let name = prop::sample::select(vec![
            "step",
            "mandate",
            "required_roles",
            "trust_days",
            "allow_remember_device",
            "ipv4_change_prefix",
            "ipv6_change_prefix",
            "enrollment_grace_days",
            "enrollment_grace_logins",
            "org",
            "csrf",
        ]);
        prop::collection::vec((name, value()), 0..12)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Whatever a browser posts is a page (never a panic), and the only policy ever stored is
        /// one the platform's limits allow.
        #[test]
        fn is_a_page_and_only_a_valid_policy_is_ever_stored(
            fields in fields(),
            tail in prop::collection::vec(any::<u8>(), 0..40),
        ) {
            let mut w = World::new();
            let (cookie, csrf) = signed_in(&mut w, "acme");
            let mut body = form_urlencoded::Serializer::new(String::new());
            body.append_pair("csrf", &csrf);
            for (name, value) in &fields {
                body.append_pair(name, value);
            }
            let mut body = body.finish().into_bytes();
            body.push(b'&');
            body.extend_from_slice(&tail);
            let mut req = request(WebMethod::Post, POLICY, "", &cookie);
            req.form = &body;
            let page = w.page(&req, T0.plus(3));
            prop_assert!(matches!(page.status, 200 | 400 | 403), "{}", page.status);
            if let Some(bytes) = stored(&w, "acme") {
                let policy: OrgPolicy = serde_json::from_slice(&bytes).unwrap();
                prop_assert!(policy.validate(&Settings::default()).is_ok());
                prop_assert_eq!(page.status, 200);
            }
        }
    }
}

#[test]
fn a_store_or_audit_failure_shows_try_again_and_changes_nothing() {
    let mut w = World::new();
    let (cookie, csrf) = signed_in(&mut w, "acme");
    let draft = OrgPolicy {
        trust_days: 7,
        ..platform()
    };
    // The view cannot be recorded: not shown.
    w.audit.fail.set(true);
    let page = get(&mut w, "", &cookie);
    assert_eq!(page.status, 503);
    assert!(!html(&page).contains("who-now"));
    // The change cannot be recorded: not saved.
    let page = post(&mut w, "", &cookie, &form(&csrf, "save", &draft));
    assert_eq!(page.status, 503);
    assert!(!html(&page).contains("policy-saved"));
    w.audit.fail.set(false);
    assert_eq!(stored(&w, "acme"), None);
    assert!(!w.records().iter().any(|r| r.1 == "policy_changed"));
    assert_eq!(
        post(&mut w, "", &cookie, &form(&csrf, "save", &draft)).status,
        200
    );
}
