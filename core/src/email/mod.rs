//! What an organization's users read, and in whose look and language: [`branding`] (the organization's
//! name, logo and colors, checked when set), [`i18n`] (the languages, whose sentences the decisions'
//! explanations and the hosted pages use too) and, here, the code email: subject, HTML part,
//! plain-text part, in the organization's look and the user's language.
//!
//! Rendered with askama: the template is compiled into the component and type-checked, escapes HTML
//! by default, and costs no template parsing at run time (minijinja would parse templates inside the
//! component on every start). Every value from outside lands escaped for its context: text and
//! attributes through askama's HTML escaper (which escapes `& < > " '`); the logo URL and the colors
//! are also validated when stored ([`branding`]), so a URL is `https://` without quotes and a
//! color is `#rrggbb` before it reaches a `src` or `style` attribute.
//!
//! What the email never holds: the code in the subject (subjects show on lock screens and in shared
//! inbox lists), a link that signs anyone in or that a link scanner could consume (there is no link),
//! patient data of any kind, scripts or web fonts. The code is one unbroken run of digits, large and in
//! a monospace font, so it copies cleanly.

pub mod branding;
pub mod i18n;
mod tz;

use askama::Template;

use self::branding::Branding;
use self::i18n::Messages;
use crate::kernel::ports::OutgoingMail;
use crate::kernel::secret::OtpCode;
use crate::kernel::time::Timestamp;

#[derive(Template)]
#[template(path = "email/code_email.html")]
struct Html<'a> {
    lang: &'a str,
    subject: &'a str,
    org: &'a str,
    logo_url: Option<&'a str>,
    primary: &'a str,
    accent: &'a str,
    intro: &'a str,
    code: &'a str,
    validity: &'a str,
    not_you: &'a str,
    support: Option<&'a str>,
    footer: Option<&'a str>,
}

/// Everything the email says, in one language, before it is put into HTML or text.
struct Words {
    subject: String,
    intro: String,
    validity: String,
    not_you: String,
    support: Option<String>,
}

fn one_line(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).collect()
}

fn words(m: &Messages, branding: &Branding, ttl_seconds: i64, until: &str) -> Words {
    let org = one_line(&branding.display_name);
    let fill = |t: &str| {
        t.replace("{org}", &org)
            .replace("{minutes}", &((ttl_seconds + 59) / 60).to_string())
            .replace("{until}", until)
            .replace("{support}", &one_line(&branding.support_contact))
    };
    Words {
        subject: fill(&m.subject),
        intro: fill(&m.intro),
        validity: fill(&m.validity),
        not_you: fill(&m.not_you),
        support: (!branding.support_contact.is_empty()).then(|| fill(&m.support)),
    }
}

/// Where and how to write: the address, the organization's look, the language and time zone.
pub struct Audience<'a> {
    /// Recipient.
    pub to: &'a str,
    /// The organization's branding.
    pub branding: &'a Branding,
    /// A supported language tag (see [`i18n::choose`]).
    pub language: &'a str,
    /// The user's IANA time zone, if known.
    pub time_zone: Option<&'a str>,
}

/// Renders the code email.
#[must_use]
pub fn code_email(
    audience: &Audience<'_>,
    code: &OtpCode,
    expires_at: Timestamp,
    ttl_seconds: i64,
) -> OutgoingMail {
    let m = i18n::messages(audience.language);
    let until = i18n::clock(expires_at, audience.time_zone, &m.utc);
    let w = words(&m, audience.branding, ttl_seconds, &until);
    let b = audience.branding;
    let footer = one_line(&b.footer_text);
    let html = Html {
        lang: audience.language,
        subject: &w.subject,
        org: &one_line(&b.display_name),
        logo_url: b.logo_url.as_deref(),
        primary: &b.primary_color,
        accent: &b.accent_color,
        intro: &w.intro,
        code: code.expose(),
        validity: &w.validity,
        not_you: &w.not_you,
        support: w.support.as_deref(),
        footer: (!footer.is_empty()).then_some(footer.as_str()),
    }
    .render()
    // The template only interpolates strings; rendering cannot fail. Should it ever, the text part
    // still carries the code and the HTML part says where to look.
    .unwrap_or_else(|_| {
        "<!DOCTYPE html><html><body><p>See the plain-text part of this email.</p></body></html>"
            .to_owned()
    });
    let mut text = format!(
        "{}\n\n    {}\n\n{}\n\n{}\n",
        w.intro,
        code.expose(),
        w.validity,
        w.not_you
    );
    if let Some(support) = &w.support {
        text.push_str(&format!("\n{support}\n"));
    }
    if !footer.is_empty() {
        text.push_str(&format!("\n--\n{footer}\n"));
    }
    OutgoingMail {
        to: audience.to.to_owned(),
        sender_name: Some(one_line(&b.sender_name)),
        subject: one_line(&w.subject),
        html,
        text,
    }
}

/// The email an organization's users would get, with a sample code, for the admin's preview.
#[must_use]
pub fn preview(
    branding: &Branding,
    language: &str,
    time_zone: Option<&str>,
    now: Timestamp,
) -> OutgoingMail {
    let audience = Audience {
        to: "user@example.invalid",
        branding,
        language,
        time_zone,
    };
    code_email(
        &audience,
        &OtpCode::new("123456".to_owned()),
        now.plus(600),
        600,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audience<'a>(b: &'a Branding, lang: &'a str) -> Audience<'a> {
        Audience {
            to: "a@b.co",
            branding: b,
            language: lang,
            time_zone: None,
        }
    }

    #[test]
    fn hostile_names_render_as_text_and_the_code_stays_out_of_the_subject() {
        let b = Branding {
            display_name: "<script>alert(1)</script>\"><img src=x onerror=alert(2)>".into(),
            support_contact: "help@acme.example <b>".into(),
            footer_text: "Acme & Co '".into(),
            ..Branding::default_for("acme")
        };
        let mail = code_email(
            &audience(&b, "en"),
            &OtpCode::new("042042".into()),
            Timestamp(600),
            600,
        );
        assert!(
            !mail.html.contains("<script>") && !mail.html.contains("<img src=x"),
            "{}",
            mail.html
        );
        // askama writes numeric entities: &#60; for <, &#62; for >, &#34; for ", &#38; for &.
        assert!(
            mail.html.contains("&#60;script&#62;alert(1)&#60;/script&#62;&#34;&#62;&#60;img src=x onerror=alert(2)&#62;"),
            "{}",
            mail.html
        );
        assert!(mail.html.contains("Acme &#38; Co &#39;"), "{}", mail.html);
        assert!(!mail.subject.contains("042042"));
        assert!(mail.text.contains("\n    042042\n") && mail.html.contains(">042042<"));
        assert!(
            mail.text.contains("10 minutes (until 00:10 UTC)"),
            "{}",
            mail.text
        );
        assert!(!mail.html.contains("href") && !mail.html.contains("<a "));
    }

    #[test]
    fn spanish_and_english_say_how_long_in_their_own_words() {
        let b = Branding::default_for("clinica");
        let es = code_email(
            &audience(&b, "es"),
            &OtpCode::new("111111".into()),
            Timestamp(600),
            600,
        );
        assert!(
            es.text.contains("durante 10 minutos (hasta las 00:10 UTC)"),
            "{}",
            es.text
        );
        assert!(es.subject.starts_with("Tu código"), "{}", es.subject);
        assert!(es.html.starts_with("<!DOCTYPE html>\n<html lang=\"es\">"));
        let en = code_email(
            &audience(&b, "en"),
            &OtpCode::new("111111".into()),
            Timestamp(600),
            600,
        );
        assert!(
            en.text.contains("for 10 minutes (until 00:10 UTC)"),
            "{}",
            en.text
        );
    }

    #[test]
    fn the_users_time_zone_is_named() {
        let b = Branding::default_for("acme");
        let a = Audience {
            to: "a@b.co",
            branding: &b,
            language: "en",
            time_zone: Some("America/Chicago"),
        };
        let mail = code_email(
            &a,
            &OtpCode::new("111111".into()),
            Timestamp(1_795_000_000),
            600,
        );
        assert!(
            mail.text.contains("until 05:06 (America/Chicago)"),
            "{}",
            mail.text
        );
    }

    #[test]
    fn branding_shows() {
        let b = Branding {
            display_name: "Sunrise Clinic".into(),
            logo_url: Some("https://cdn.sunrise.example/logo.png".into()),
            primary_color: "#aa3300".into(),
            support_contact: "+1 555 0100".into(),
            footer_text: "Sunrise Clinic, 1 Main St".into(),
            ..Branding::default_for("sunrise")
        };
        let mail = code_email(
            &audience(&b, "en"),
            &OtpCode::new("111111".into()),
            Timestamp(0),
            600,
        );
        assert!(
            mail.html
                .contains("src=\"https://cdn.sunrise.example/logo.png\" alt=\"Sunrise Clinic\""),
            "{}",
            mail.html
        );
        assert!(mail.html.contains("background-color:#aa3300"));
        assert!(
            mail.text.contains("Questions? Contact +1 555 0100.")
                && mail.text.contains("Sunrise Clinic, 1 Main St")
        );
        assert_eq!(mail.sender_name.as_deref(), Some("sunrise"));
    }
}
