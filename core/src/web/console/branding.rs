//! The console's branding screen: the organization's branding as a form, with its code email
//! beside it as users would get it (a sample code, 123456, never a real one; nothing is sent).
//!
//! ```text
//! GET  /admin/console/branding ── recorded (console:branding) ──▶ form │ the saved look's email
//! POST step=preview ── Branding::validate ── recorded (console:branding:preview)
//!                                         ──▶ form │ the draft's email (nothing saved)
//! POST step=save    ── set_branding (authorizes, validates, records branding_changed)
//!                                         ──▶ "Branding saved" + form │ the new email
//! GET  /admin/console/branding/email?<draft fields>&lang=…  (the frame's document)
//!      session + org scope ── Branding::validate ──▶ the email's HTML, or a plain 400
//! ```
//!
//! **One check.** Drafts are checked with [`Branding::validate`], the function `set_branding`
//! refuses with, so a preview never shows what saving refuses. To mark every bad field at once,
//! each field is also checked alone on a valid base by that same function.
//!
//! **The frame.** The email's HTML has inline styles. A `srcdoc` frame inherits the console
//! page's policy (styles only by nonce), which would strip them, so the frame loads the email
//! from its own route, whose answer carries its own policy: inline styles, `https:` images,
//! `sandbox` (no script, an opaque origin), `frame-ancestors 'self'`. The `sandbox` attribute on
//! the frame says the same from the parent's side. The console page's policy gains
//! `frame-src 'self'` on this screen only. The frame's route shows only what the draft in its
//! query says (nothing stored), so it records no view of its own; it still needs the session and
//! the organization scope.

use askama::Template;
use rand_core::CryptoRng;
use serde::Deserialize;

use super::super::hosted::{WebRequest, WebResponse, field};
use super::words::fill;
use super::{BRANDING, BRANDING_EMAIL, Screen, words};
use crate::email::branding::{
    Branding, FOOTER_MAX_CHARS, LOGO_URL_MAX, NAME_MAX_CHARS, NAME_MIN_CHARS,
    SUPPORT_CONTACT_MAX_CHARS,
};
use crate::email::{self, i18n};
use crate::engine::Engine;
use crate::kernel::error::{Error, Result};
use crate::kernel::time::Timestamp;

/// The screen's words, one JSON file per language.
const LANGUAGES: &[(&str, &str)] = &[
    ("en", include_str!("../../../i18n/console/branding/en.json")),
    ("es", include_str!("../../../i18n/console/branding/es.json")),
];

/// The email frame's own policy: the email's inline styles and `https:` images, nothing else;
/// sandboxed; framed only by the console.
pub(super) const EMAIL_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src https:; sandbox; frame-ancestors 'self'; base-uri 'none'; form-action 'none'";
/// The frame route's refusal of a draft: nothing to style, sandboxed, framed only by the console.
const REFUSED_CSP: &str =
    "default-src 'none'; sandbox; frame-ancestors 'self'; base-uri 'none'; form-action 'none'";

/// The form's field names: the branding's own (`branding.<name>` in a refusal).
const NAME: &str = "display_name";
const LOGO: &str = "logo_url";
const PRIMARY: &str = "primary_color";
const ACCENT: &str = "accent_color";
const SENDER: &str = "sender_name";
const SUPPORT: &str = "support_contact";
const FOOTER: &str = "footer_text";
const LANGUAGE: &str = "default_language";

/// The branding screen's words. Placeholders: `{min}`, `{max}`, `{hex}`, `{language}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BrandingWords {
    pub(super) heading: String,
    pub(super) intro: String,
    pub(super) form_heading: String,
    pub(super) display_name_label: String,
    pub(super) display_name_hint: String,
    pub(super) logo_url_label: String,
    pub(super) logo_url_hint: String,
    pub(super) primary_color_label: String,
    pub(super) accent_color_label: String,
    pub(super) color_hint: String,
    pub(super) sender_name_label: String,
    pub(super) sender_name_hint: String,
    pub(super) support_contact_label: String,
    pub(super) support_contact_hint: String,
    pub(super) footer_text_label: String,
    pub(super) footer_text_hint: String,
    pub(super) default_language_label: String,
    pub(super) default_language_hint: String,
    pub(super) preview_button: String,
    pub(super) save_button: String,
    pub(super) email_heading: String,
    pub(super) draft_note: String,
    pub(super) sample_note: String,
    pub(super) subject_label: String,
    pub(super) html_heading: String,
    pub(super) text_heading: String,
    pub(super) frame_title: String,
    pub(super) saved_heading: String,
    pub(super) saved_body: String,
    pub(super) errors_heading: String,
    pub(super) err_line: String,
    pub(super) err_logo: String,
    pub(super) err_color: String,
    pub(super) err_language: String,
    pub(super) err_other: String,
    pub(super) invalid_draft: String,
}

/// The words of `lang`.
pub(super) fn branding_words(lang: &str) -> BrandingWords {
    words::load(LANGUAGES, lang)
}

#[cfg(test)]
pub(super) fn languages() -> &'static [(&'static str, &'static str)] {
    LANGUAGES
}

/// A draft from a form or a query, as typed (an empty logo address is none).
pub(super) fn draft_of(fields: &[u8]) -> Branding {
    let get = |name: &str| field(fields, name).unwrap_or_default();
    let logo = get(LOGO);
    Branding {
        display_name: get(NAME),
        logo_url: (!logo.is_empty()).then_some(logo),
        primary_color: get(PRIMARY),
        accent_color: get(ACCENT),
        sender_name: get(SENDER),
        support_contact: get(SUPPORT),
        footer_text: get(FOOTER),
        default_language: get(LANGUAGE),
    }
}

/// A field's error: (field name, message).
type FieldError = (&'static str, String);

/// The form's error for a refusal naming `branding.<field>`, in the admin's words.
fn branding_error(refused: &str, t: &BrandingWords) -> FieldError {
    let line = |min: usize, max: usize| {
        fill(
            &t.err_line,
            &[("min", &min.to_string()), ("max", &max.to_string())],
        )
    };
    match refused.strip_prefix("branding.").unwrap_or(refused) {
        NAME => (NAME, line(NAME_MIN_CHARS, NAME_MAX_CHARS)),
        SENDER => (SENDER, line(NAME_MIN_CHARS, NAME_MAX_CHARS)),
        SUPPORT => (SUPPORT, line(0, SUPPORT_CONTACT_MAX_CHARS)),
        FOOTER => (FOOTER, line(0, FOOTER_MAX_CHARS)),
        LOGO => (
            LOGO,
            fill(&t.err_logo, &[("max", &LOGO_URL_MAX.to_string())]),
        ),
        PRIMARY => (PRIMARY, t.err_color.clone()),
        ACCENT => (ACCENT, t.err_color.clone()),
        LANGUAGE => (LANGUAGE, t.err_language.clone()),
        _ => ("", t.err_other.clone()),
    }
}

/// Every bad field of `draft` (none: it would be saved), each checked by [`Branding::validate`].
fn errors_of(draft: &Branding, t: &BrandingWords) -> Vec<FieldError> {
    let first = match draft.validate() {
        Ok(()) => return Vec::new(),
        Err(Error::InvalidInput { field, .. }) => field,
        Err(_) => return vec![("", t.err_other.clone())],
    };
    // Each field alone on a valid base: the one check, every bad field marked at once.
    let base = Branding::default_for("org");
    let probes = [
        Branding {
            display_name: draft.display_name.clone(),
            ..base.clone()
        },
        Branding {
            logo_url: draft.logo_url.clone(),
            ..base.clone()
        },
        Branding {
            primary_color: draft.primary_color.clone(),
            ..base.clone()
        },
        Branding {
            accent_color: draft.accent_color.clone(),
            ..base.clone()
        },
        Branding {
            sender_name: draft.sender_name.clone(),
            ..base.clone()
        },
        Branding {
            support_contact: draft.support_contact.clone(),
            ..base.clone()
        },
        Branding {
            footer_text: draft.footer_text.clone(),
            ..base.clone()
        },
        Branding {
            default_language: draft.default_language.clone(),
            ..base
        },
    ];
    let mut refused: Vec<&'static str> = vec![first];
    for probe in &probes {
        if let Err(Error::InvalidInput { field, .. }) = probe.validate()
            && !refused.contains(&field)
        {
            refused.push(field);
        }
    }
    refused.iter().map(|f| branding_error(f, t)).collect()
}

/// One input of the form (every field but the language's select).
struct Input {
    name: &'static str,
    label: String,
    kind: &'static str,
    value: String,
    hint: String,
    error: Option<String>,
}

/// One language of the select.
struct Choice {
    tag: &'static str,
    name: String,
    selected: bool,
}

/// The email beside the form.
struct EmailView {
    /// The frame's address: the email route with the draft in its query.
    src: String,
    subject: String,
    text: String,
    note: String,
}

#[derive(Template)]
#[template(path = "web/console/branding.html")]
struct Body<'a> {
    t: &'a BrandingWords,
    action: String,
    csrf: &'a str,
    heading: String,
    heading_id: &'static str,
    saved: bool,
    /// The email shown is a draft's, not the saved look's.
    draft: bool,
    has_errors: bool,
    other_errors: Vec<String>,
    inputs: Vec<Input>,
    languages: Vec<Choice>,
    language_error: Option<String>,
    email: Option<EmailView>,
}

/// What the page shows of the branding in its form.
enum Shown {
    /// The saved look.
    Stored,
    /// A draft, not saved.
    Draft,
    /// The look just saved.
    Saved,
}

/// The console page lets its own origin into frames (the email's route), on this screen only.
fn framing_self(mut page: WebResponse) -> WebResponse {
    for (name, value) in &mut page.headers {
        if *name == "content-security-policy" {
            *value = value.replace(
                "frame-ancestors 'none'",
                "frame-src 'self'; frame-ancestors 'none'",
            );
        }
    }
    page
}

impl Engine<'_> {
    /// `GET /admin/console/branding`: the branding as a form with its email, recorded.
    pub(super) fn branding_page<R: CryptoRng + ?Sized>(
        &self,
        req: &WebRequest<'_>,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<WebResponse> {
        let screen = match self.screen(req, now, rng)? {
            Ok(screen) => screen,
            Err(page) => return Ok(page),
        };
        self.viewed(&screen, "branding", now, rng)?;
        let branding = self.branding_of(screen.org())?;
        branding_form(&screen, 200, &branding, &[], Shown::Stored, now)
    }

    /// `POST /admin/console/branding`: `step=preview` shows a draft's email, `step=save` saves
    /// the draft.
    pub(super) fn branding_post<R: CryptoRng + ?Sized>(
        &self,
        req: &WebRequest<'_>,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<WebResponse> {
        let screen = match self.screen(req, now, rng)? {
            Ok(screen) => screen,
            Err(page) => return Ok(page),
        };
        let t = branding_words(screen.look.lang);
        let draft = draft_of(req.form);
        let errors = errors_of(&draft, &t);
        let step = field(req.form, "step").unwrap_or_default();
        match step.as_str() {
            "preview" => {
                self.viewed(&screen, "branding:preview", now, rng)?;
                let status = if errors.is_empty() { 200 } else { 400 };
                branding_form(&screen, status, &draft, &errors, Shown::Draft, now)
            }
            "save" if !errors.is_empty() => {
                self.viewed(&screen, "branding", now, rng)?;
                branding_form(&screen, 400, &draft, &errors, Shown::Draft, now)
            }
            "save" => match self.set_branding(&screen.actor, screen.org(), &draft, now, rng) {
                Ok(()) => {
                    // The saved page already wears the new look.
                    let mut screen = screen;
                    screen.look.branding = draft.clone();
                    branding_form(&screen, 200, &draft, &[], Shown::Saved, now)
                }
                Err(Error::InvalidInput { field, .. }) => {
                    self.viewed(&screen, "branding", now, rng)?;
                    let errors = [branding_error(field, &t)];
                    branding_form(&screen, 400, &draft, &errors, Shown::Draft, now)
                }
                Err(Error::Forbidden(_)) => {
                    let shell = &screen.look.t;
                    Ok(screen.message(403, "refused", &shell.denied_heading, &shell.denied_org))
                }
                Err(e) => Err(e),
            },
            _ => {
                let shell = &screen.look.t;
                Ok(screen.message(400, "refused", &shell.denied_heading, &shell.form_stale))
            }
        }
    }

    /// `GET /admin/console/branding/email?<draft>&lang=…`: the draft's code email as HTML, for
    /// the branding page's frame; a draft `set_branding` would refuse is a plain 400.
    pub(super) fn branding_email<R: CryptoRng + ?Sized>(
        &self,
        req: &WebRequest<'_>,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<WebResponse> {
        let screen = match self.screen(req, now, rng)? {
            Ok(screen) => screen,
            Err(page) => return Ok(page),
        };
        let draft = draft_of(req.query.as_bytes());
        if draft.validate().is_err() {
            let t = branding_words(screen.look.lang);
            let lang = screen.look.lang;
            return Ok(WebResponse {
                status: 400,
                html: Some(format!(
                    "<!DOCTYPE html><html lang=\"{lang}\"><meta charset=\"utf-8\"><title>{title}</title><p id=\"invalid-draft\">{body}</p></html>",
                    title = escape_html(&t.heading),
                    body = escape_html(&t.invalid_draft),
                )),
                headers: vec![("content-security-policy", REFUSED_CSP.to_owned())],
            });
        }
        let lang = field(req.query.as_bytes(), "lang");
        let lang = i18n::choose(lang.as_deref(), &draft.default_language);
        let mail = email::preview(&draft, lang, None, now);
        Ok(WebResponse {
            status: 200,
            html: Some(mail.html),
            headers: vec![("content-security-policy", EMAIL_CSP.to_owned())],
        })
    }
}

/// Text for HTML, for the one page not rendered by a template.
fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The form page: `branding`'s values with each field's limit and error, and its email beside
/// (none while a draft has errors: a refused draft is never rendered as an email).
fn branding_form(
    screen: &Screen,
    status: u16,
    branding: &Branding,
    errors: &[FieldError],
    shown: Shown,
    now: Timestamp,
) -> Result<WebResponse> {
    let t = branding_words(screen.look.lang);
    let error_of = |name: &str| {
        errors
            .iter()
            .find(|(f, _)| *f == name)
            .map(|(_, e)| e.clone())
    };
    let limits = |hint: &str, min: usize, max: usize| {
        fill(
            hint,
            &[("min", &min.to_string()), ("max", &max.to_string())],
        )
    };
    let input = |name, label: &str, kind, value: &str, hint: String| Input {
        name,
        label: label.to_owned(),
        kind,
        value: value.to_owned(),
        hint,
        error: error_of(name),
    };
    let color_hint = |hex: &str| fill(&t.color_hint, &[("hex", hex)]);
    let inputs = vec![
        input(
            NAME,
            &t.display_name_label,
            "text",
            &branding.display_name,
            limits(&t.display_name_hint, NAME_MIN_CHARS, NAME_MAX_CHARS),
        ),
        input(
            LOGO,
            &t.logo_url_label,
            "url",
            branding.logo_url.as_deref().unwrap_or_default(),
            t.logo_url_hint.clone(),
        ),
        input(
            PRIMARY,
            &t.primary_color_label,
            "color",
            &branding.primary_color,
            color_hint(&branding.primary_color),
        ),
        input(
            ACCENT,
            &t.accent_color_label,
            "color",
            &branding.accent_color,
            color_hint(&branding.accent_color),
        ),
        input(
            SENDER,
            &t.sender_name_label,
            "text",
            &branding.sender_name,
            limits(&t.sender_name_hint, NAME_MIN_CHARS, NAME_MAX_CHARS),
        ),
        input(
            SUPPORT,
            &t.support_contact_label,
            "text",
            &branding.support_contact,
            limits(&t.support_contact_hint, 0, SUPPORT_CONTACT_MAX_CHARS),
        ),
        input(
            FOOTER,
            &t.footer_text_label,
            "text",
            &branding.footer_text,
            limits(&t.footer_text_hint, 0, FOOTER_MAX_CHARS),
        ),
    ];
    let languages = i18n::supported()
        .into_iter()
        .map(|tag| Choice {
            tag,
            name: i18n::messages(tag).language,
            selected: tag == branding.default_language,
        })
        .collect();
    let email = errors.is_empty().then(|| {
        let lang = i18n::choose(None, &branding.default_language);
        let mail = email::preview(branding, lang, None, now);
        let mut query = form_urlencoded::Serializer::new(String::new());
        query
            .append_pair(NAME, &branding.display_name)
            .append_pair(LOGO, branding.logo_url.as_deref().unwrap_or_default())
            .append_pair(PRIMARY, &branding.primary_color)
            .append_pair(ACCENT, &branding.accent_color)
            .append_pair(SENDER, &branding.sender_name)
            .append_pair(SUPPORT, &branding.support_contact)
            .append_pair(FOOTER, &branding.footer_text)
            .append_pair(LANGUAGE, &branding.default_language)
            .append_pair("lang", lang);
        EmailView {
            src: format!("{BRANDING_EMAIL}?{}", query.finish()),
            subject: mail.subject,
            text: mail.text,
            note: fill(
                &t.sample_note,
                &[("language", &i18n::messages(lang).language)],
            ),
        }
    });
    let (heading, heading_id) = match shown {
        Shown::Saved => (t.saved_heading.clone(), "branding-saved"),
        Shown::Stored | Shown::Draft => (t.heading.clone(), "branding"),
    };
    let body = Body {
        t: &t,
        action: format!("{BRANDING}?lang={}", screen.look.lang),
        csrf: &screen.session.csrf,
        heading: heading.clone(),
        heading_id,
        saved: matches!(shown, Shown::Saved),
        draft: matches!(shown, Shown::Draft),
        has_errors: !errors.is_empty(),
        other_errors: errors
            .iter()
            .filter(|(f, _)| f.is_empty())
            .map(|(_, e)| e.clone())
            .collect(),
        inputs,
        languages,
        language_error: error_of(LANGUAGE),
        email,
    };
    let html = body
        .render()
        .map_err(|e| Error::Misconfigured(e.to_string()))?;
    Ok(framing_self(
        screen.page(status, &heading, "branding", html),
    ))
}
