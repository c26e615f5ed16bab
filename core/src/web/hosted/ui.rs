//! What the pages look like and say: one template (`core/templates/web/prompt.html`) filled from typed
//! views, in the user's language and the organization's look.
//!
//! Every page of a response shares a [`Ui`]: its language, its words, the organization's branding,
//! a fresh style nonce and the content security policy built from it. Pages run no script at all:
//! the CSP has no `script-src`, styles need the response's nonce, `form-action` allows only this
//! origin and the IdP's return origins, and nothing may frame a page. Askama escapes every value
//! for where it lands; the header's text is black or white, whichever contrasts more with the
//! organization's color (one of them always reaches WCAG AA).

use askama::Template;
use rand_core::CryptoRng;

use super::session::session_cookie;
use super::{WebRequest, WebResponse};
use crate::email::branding::Branding;
use crate::email::i18n::{self, PageText};
use crate::engine::Engine;
use crate::kernel::random;
use crate::kernel::time::Timestamp;
use crate::web::prompt::{PromptConfig, PromptRequest};

/// `scheme://host[:port]` of an absolute URL.
pub(super) fn origin(url: &str) -> &str {
    let start = url.find("://").map_or(0, |i| i + 3);
    url[start..]
        .find('/')
        .map_or(url, |slash| &url[..start + slash])
}

/// The first language of an `Accept-Language` header that the pages speak.
pub(in crate::web) fn accepted_language(header: &str) -> Option<&'static str> {
    // RFC 9110 §12.5.4: the supported tag of highest weight, the first written on a tie; `q=0`
    // is "not acceptable", and an entry whose weight does not parse is skipped.
    let mut best: Option<(u16, &str)> = None;
    for part in header.split(',') {
        let mut pieces = part.split(';');
        let tag = pieces.next().unwrap_or_default().trim();
        let weight = pieces
            .map(str::trim)
            .find_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")))
            .map_or(Some(1000), weight_millis);
        let Some(weight) = weight.filter(|w| *w > 0) else {
            continue;
        };
        if i18n::is_supported(tag) && best.is_none_or(|(w, _)| weight > w) {
            best = Some((weight, tag));
        }
    }
    best.map(|(_, tag)| i18n::choose(Some(tag), "en"))
}

/// A `q` value (`0`, `0.5`, `1.000`, at most three decimals) in thousandths.
fn weight_millis(q: &str) -> Option<u16> {
    let (whole, fraction) = q.split_once('.').unwrap_or((q, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = format!("{fraction:0<3}").parse::<u16>().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// Relative luminance of `#rrggbb` (WCAG 2.2).
pub(super) fn luminance(hex: &str) -> f64 {
    let channel = |i: usize| {
        let v = hex
            .get(i..i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .map_or(0.0, |b| f64::from(b) / 255.0);
        if v <= 0.040_45 {
            v / 12.92
        } else {
            ((v + 0.055) / 1.055).powf(2.4)
        }
    };
    0.2126 * channel(1) + 0.7152 * channel(3) + 0.0722 * channel(5)
}

/// Black or white text, whichever contrasts more with `background` (one of them always reaches
/// 4.5:1, WCAG AA for text).
pub(in crate::web) fn text_color_on(background: &str) -> &'static str {
    let l = luminance(background);
    let on_white = 1.05 / (l + 0.05);
    let on_black = (l + 0.05) / 0.05;
    if on_white >= on_black {
        "#ffffff"
    } else {
        "#000000"
    }
}

/// Fills `{name}` placeholders.
pub(super) fn fill(text: &str, values: &[(&str, &str)]) -> String {
    values.iter().fold(text.to_owned(), |t, (name, value)| {
        t.replace(&format!("{{{name}}}"), value)
    })
}

/// A page with its `Retry-After` (seconds).
pub(super) fn with_retry_after(mut page: WebResponse, seconds: u32) -> WebResponse {
    page.headers.push(("retry-after", seconds.to_string()));
    page
}

/// Minutes from `now` until `at`, rounded up.
pub(super) fn minutes_until(now: Timestamp, at: Timestamp) -> String {
    ((at.0 - now.0).max(0) + 59).div_euclid(60).to_string()
}

#[derive(Template)]
#[template(path = "web/prompt.html")]
pub(super) struct Page<'a> {
    pub(super) lang: &'static str,
    pub(super) title: String,
    pub(super) org: &'a str,
    pub(super) logo: Option<&'a str>,
    pub(super) header_bg: &'a str,
    pub(super) header_fg: &'static str,
    pub(super) nonce: &'a str,
    pub(super) support: Option<String>,
    pub(super) code: Option<CodeView>,
    pub(super) status: Option<StatusView>,
    pub(super) devices: Option<DevicesView>,
}

pub(super) struct CodeView {
    pub(super) heading: String,
    pub(super) sent_to: String,
    pub(super) why_label: String,
    pub(super) why: String,
    pub(super) label: String,
    pub(super) hint: String,
    pub(super) digits: u8,
    pub(super) error: Option<String>,
    pub(super) notice: Option<String>,
    pub(super) csrf: String,
    pub(super) remember: Option<String>,
    pub(super) remember_hint: String,
    pub(super) verify: String,
    pub(super) resend: String,
    pub(super) resend_wait: Option<String>,
    pub(super) cancel: String,
}

pub(super) struct StatusView {
    pub(super) id: &'static str,
    pub(super) heading: String,
    pub(super) body: String,
    /// A button back to the IdP (the session's cancel form), with its label.
    pub(super) back: Option<(String, String)>,
    /// A link that tries the step again, with its label.
    pub(super) retry: Option<String>,
}

pub(super) struct DevicesView {
    pub(super) heading: String,
    pub(super) intro: String,
    pub(super) none: String,
    pub(super) notice: Option<String>,
    pub(super) csrf: String,
    pub(super) rows: Vec<DeviceRow>,
    pub(super) current_label: String,
    pub(super) revoke: String,
    pub(super) revoke_all: String,
    pub(super) done: String,
}

pub(super) struct DeviceRow {
    pub(super) id: String,
    pub(super) label: String,
    pub(super) current: bool,
    pub(super) until: String,
    pub(super) used: String,
    pub(super) revoke_label: String,
}

/// What every page of one response shares: language, look, nonce, the CSP.
pub(super) struct Ui {
    pub(super) lang: &'static str,
    pub(super) t: PageText,
    pub(super) utc: String,
    pub(super) branding: Branding,
    pub(super) nonce: String,
    pub(super) form_action: String,
}

impl Ui {
    pub(super) fn page(
        &self,
        status: u16,
        title: &str,
        fill_in: impl FnOnce(&mut Page<'_>),
    ) -> WebResponse {
        let header_fg = text_color_on(&self.branding.primary_color);
        let mut page = Page {
            lang: self.lang,
            title: format!("{title} · {}", self.branding.display_name),
            org: &self.branding.display_name,
            logo: self.branding.logo_url.as_deref(),
            header_bg: &self.branding.primary_color,
            header_fg,
            nonce: &self.nonce,
            support: (!self.branding.support_contact.is_empty()).then(|| {
                fill(
                    &self.t.support,
                    &[("support", &self.branding.support_contact)],
                )
            }),
            code: None,
            status: None,
            devices: None,
        };
        fill_in(&mut page);
        // Askama renders only what these types hold; a failure is a bug, answered as a bare 500.
        let (status, html) = page.render().map_or_else(
            |_| (500, "<!DOCTYPE html><title>Error</title>".to_owned()),
            |html| (status, html),
        );
        WebResponse {
            status,
            html: Some(html),
            headers: vec![(
                "content-security-policy",
                format!(
                    "default-src 'none'; style-src 'nonce-{}'; img-src https:; form-action 'self'{}; frame-ancestors 'none'; base-uri 'none'",
                    self.nonce, self.form_action
                ),
            )],
        }
    }

    pub(super) fn status(
        &self,
        status: u16,
        id: &'static str,
        heading: &str,
        body: &str,
        back: Option<&str>,
        retry: bool,
    ) -> WebResponse {
        let view = StatusView {
            id,
            heading: heading.to_owned(),
            body: body.to_owned(),
            back: back.map(|csrf| {
                (
                    csrf.to_owned(),
                    fill(&self.t.back, &[("org", &self.branding.display_name)]),
                )
            }),
            retry: retry.then(|| self.t.try_again.clone()),
        };
        self.page(status, heading, |p| p.status = Some(view))
    }

    pub(super) fn expired(&self) -> WebResponse {
        self.status(
            410,
            "expired",
            &self.t.expired_heading,
            &self.t.expired_body,
            None,
            false,
        )
        .with_cookie(Some(session_cookie("", 0)))
    }

    pub(super) fn unavailable(&self) -> WebResponse {
        self.status(
            503,
            "unavailable",
            &self.t.unavailable_heading,
            &self.t.unavailable_body,
            None,
            false,
        )
    }

    /// `text` with `{until}` (a clock time) and `{minutes}` (from `now`) filled in.
    pub(super) fn when(&self, text: &str, now: Timestamp, until: Timestamp) -> String {
        fill(
            text,
            &[
                ("until", &self.clock(until)),
                ("minutes", &minutes_until(now, until)),
            ],
        )
    }

    pub(super) fn clock(&self, at: Timestamp) -> String {
        i18n::clock(at, None, &self.utc)
    }
}

impl Engine<'_> {
    /// The language and look for a page: the session's user and organization when there is one.
    pub(super) fn ui<R: CryptoRng + ?Sized>(
        &self,
        config: Option<&PromptConfig>,
        request: Option<&PromptRequest>,
        req: &WebRequest<'_>,
        rng: &mut R,
    ) -> Ui {
        // A store failure here only costs the organization's look; the page still works.
        let branding = request
            .and_then(|r| self.branding_of(&r.org_id).ok())
            .unwrap_or_else(|| Branding::default_for("mfa-step"));
        let lang = request
            .and_then(|r| r.locale.as_deref())
            .filter(|tag| i18n::is_supported(tag))
            .map(|tag| i18n::choose(Some(tag), "en"))
            .or_else(|| accepted_language(req.accept_language))
            .unwrap_or_else(|| i18n::choose(None, &branding.default_language));
        let messages = i18n::messages(lang);
        let form_action = config.map_or_else(String::new, |c| {
            let mut origins: Vec<&str> = c.return_urls.iter().map(|u| origin(u)).collect();
            origins.sort_unstable();
            origins.dedup();
            origins.iter().map(|o| format!(" {o}")).collect()
        });
        Ui {
            lang,
            t: messages.page,
            utc: messages.utc,
            branding,
            nonce: random::new_id(rng),
            form_action,
        }
    }
}
