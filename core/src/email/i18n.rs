//! The languages: the email's words, the decisions' explanations and the hosted pages' text. Each
//! language is one JSON file in `core/i18n/`, embedded at build time (a test checks that every file
//! has every message and placeholder, so a missing translation fails the build's tests, not a user).
//! The language is the user's preference if supported (`es-MX` → `es`), else the organization's
//! default, else English.

use crate::kernel::time::Timestamp;

include!(concat!(env!("OUT_DIR"), "/languages.rs"));

/// The messages of one language. Placeholders: `{org}`, `{minutes}`, `{until}`, `{support}`.
#[derive(Debug, Clone, Default)]
#[cfg_attr(test, derive(serde::Deserialize), serde(deny_unknown_fields))]
pub struct Messages {
    /// The language's own name.
    pub language: String,
    /// Subject line.
    pub subject: String,
    /// Line before the code.
    pub intro: String,
    /// How long the code works.
    pub validity: String,
    /// What to do if you did not ask.
    pub not_you: String,
    /// How to reach support.
    pub support: String,
    /// The word for UTC.
    pub utc: String,
    /// Why a login is asked for a code, or not (see [`Explain`]).
    pub explain: Explain,
    /// The hosted pages' words (see [`PageText`]).
    pub page: PageText,
}

/// The plain-language half of every decision's explanation. Placeholders: `{role}`, `{until}`,
/// `{count}`, `{reason}`.
#[derive(Debug, Clone, Default)]
#[cfg_attr(test, derive(serde::Deserialize), serde(deny_unknown_fields))]
#[allow(
    missing_docs,
    reason = "each field is the sentence for the rule it is named after"
)]
pub struct Explain {
    pub mandate: String,
    pub org_role: String,
    pub role: String,
    pub opted_in: String,
    pub not_required: String,
    pub locked: String,
    pub trusted: String,
    pub grace_until: String,
    pub grace_logins: String,
    pub enroll: String,
    pub email_change: String,
    pub new_browser: String,
    pub new_network: String,
    pub device_expired: String,
    pub device_not_allowed: String,
    pub device_trust_shortened: String,
}

/// The hosted pages' words. Placeholders: `{org}`, `{email}`, `{digits}`, `{days}`, `{until}`,
/// `{minutes}`, `{when}`, `{network}`, `{label}`, `{support}`.
#[derive(Debug, Clone, Default)]
#[cfg_attr(test, derive(serde::Deserialize), serde(deny_unknown_fields))]
#[allow(
    missing_docs,
    reason = "each field is the text of the page element it is named after"
)]
pub struct PageText {
    pub code_heading: String,
    pub enroll_heading: String,
    pub sent_to: String,
    pub code_label: String,
    pub code_hint: String,
    pub remember: String,
    pub remember_hint: String,
    pub verify: String,
    pub resend: String,
    pub resend_wait: String,
    pub resent_same: String,
    pub sent_new: String,
    pub cancel: String,
    pub why_label: String,
    pub wrong_code: String,
    pub bad_format: String,
    pub slow_down: String,
    pub locked_heading: String,
    pub back: String,
    pub throttled_heading: String,
    pub throttled_body: String,
    pub try_again: String,
    pub expired_heading: String,
    pub expired_body: String,
    pub form_stale: String,
    pub refused_heading: String,
    pub refused_invalid: String,
    pub refused_audience: String,
    pub refused_expired: String,
    pub refused_replayed: String,
    pub refused_return: String,
    pub unavailable_heading: String,
    pub unavailable_body: String,
    pub off_heading: String,
    pub off_body: String,
    pub devices_heading: String,
    pub devices_intro: String,
    pub devices_none: String,
    pub device_current: String,
    pub device_until: String,
    pub device_used: String,
    pub revoke: String,
    pub revoke_label: String,
    pub revoke_all: String,
    pub revoked: String,
    pub done: String,
    pub support: String,
    pub error_title: String,
}

/// Supported language tags, sorted.
#[must_use]
pub fn supported() -> Vec<&'static str> {
    TAGS.to_vec()
}

fn find(tag: &str) -> Option<&'static str> {
    let primary = tag.split(['-', '_']).next()?.to_ascii_lowercase();
    TAGS.iter().find(|t| **t == primary).copied()
}

/// Whether a tag (or its primary subtag) is supported.
#[must_use]
pub fn is_supported(tag: &str) -> bool {
    find(tag).is_some()
}

/// The language to write in.
#[must_use]
pub fn choose(user: Option<&str>, org_default: &str) -> &'static str {
    user.and_then(find)
        .or_else(|| find(org_default))
        .unwrap_or("en")
}

/// The messages of a supported language (English for anything else), built from its file at
/// compile time (`core/build.rs`).
#[must_use]
pub fn messages(tag: &str) -> Messages {
    messages_of(tag)
}

/// `HH:MM` in the user's IANA time zone with the zone named, or `HH:MM UTC` when the zone is unknown.
/// The zone's offset comes from the compact table in `tz.rs`, exact from 2026 on (the times shown
/// are a code's expiry: the present and the next minutes).
#[must_use]
pub fn clock(at: Timestamp, time_zone: Option<&str>, utc_word: &str) -> String {
    let zoned = time_zone.and_then(|name| {
        let offset = super::tz::Zone::get(name)?.offset(at.0);
        let local = at.0.checked_add(i64::from(offset))?;
        Some(format!("{} ({name})", hours_minutes(local)))
    });
    zoned.unwrap_or_else(|| format!("{} {utc_word}", hours_minutes(at.0)))
}

/// `HH:MM` of a count of seconds since a midnight (the Unix epoch, on some clock).
fn hours_minutes(seconds: i64) -> String {
    let of_day = seconds.rem_euclid(86_400);
    format!("{:02}:{:02}", of_day / 3600, of_day % 3600 / 60)
}

#[cfg(test)]
#[allow(clippy::panic, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn every_language_file_has_every_message_and_placeholder() {
        assert!(supported().contains(&"en") && supported().contains(&"es"));
        for (tag, json) in LANGUAGES {
            let m: Messages = serde_json::from_str(json)
                .unwrap_or_else(|e| panic!("{tag}.json does not parse: {e}"));
            for (text, needs) in [
                (&m.subject, &["{org}"][..]),
                (&m.intro, &["{org}"][..]),
                (&m.validity, &["{minutes}", "{until}"][..]),
                (&m.not_you, &["{org}"][..]),
                (&m.support, &["{support}"][..]),
                (&m.explain.org_role, &["{role}"][..]),
                (&m.explain.role, &["{role}"][..]),
                (&m.explain.trusted, &["{until}"][..]),
                (&m.explain.grace_until, &["{until}"][..]),
                (&m.explain.grace_logins, &["{count}"][..]),
                (&m.explain.enroll, &["{reason}"][..]),
                (&m.explain.mandate, &[][..]),
                (&m.explain.opted_in, &[][..]),
                (&m.explain.not_required, &[][..]),
                (&m.explain.locked, &[][..]),
                (&m.explain.email_change, &[][..]),
                (&m.explain.new_browser, &[][..]),
                (&m.explain.new_network, &[][..]),
                (&m.explain.device_expired, &[][..]),
                (&m.explain.device_not_allowed, &[][..]),
                (&m.explain.device_trust_shortened, &[][..]),
                (&m.page.sent_to, &["{digits}", "{email}"][..]),
                (&m.page.code_hint, &["{digits}"][..]),
                (&m.page.remember, &["{days}"][..]),
                (&m.page.resend_wait, &["{until}", "{minutes}"][..]),
                (&m.page.wrong_code, &["{org}"][..]),
                (&m.page.bad_format, &["{digits}"][..]),
                (&m.page.slow_down, &["{until}"][..]),
                (&m.page.back, &["{org}"][..]),
                (&m.page.throttled_body, &["{until}", "{minutes}"][..]),
                (&m.page.device_until, &["{until}"][..]),
                (&m.page.device_used, &["{when}", "{network}"][..]),
                (&m.page.revoke_label, &["{label}", "{until}"][..]),
                (&m.page.support, &["{support}"][..]),
            ] {
                assert!(!text.trim().is_empty(), "{tag}: an empty message");
                for placeholder in needs {
                    assert!(
                        text.contains(placeholder),
                        "{tag}: {text:?} lacks {placeholder}"
                    );
                }
            }
        }
    }

    #[test]
    fn language_choice() {
        assert_eq!(choose(Some("es-MX"), "en"), "es");
        assert_eq!(choose(Some("fr"), "es"), "es");
        assert_eq!(choose(None, "xx"), "en");
        assert_eq!(choose(Some("EN_gb"), "es"), "en");
    }

    #[test]
    fn times_in_the_users_zone_across_dst() {
        // 2026-11-18T11:06:40Z is 05:06 in Chicago (CST, after the DST change) and 11:06 UTC.
        let t = Timestamp(1_795_000_000);
        assert_eq!(
            clock(t, Some("America/Chicago"), "UTC"),
            "05:06 (America/Chicago)"
        );
        assert_eq!(clock(t, None, "UTC"), "11:06 UTC");
        assert_eq!(clock(t, Some("Not/AZone"), "UTC"), "11:06 UTC");
        // 2026-10-20T14:00:00Z is 10:00 in New York (EDT, before the change).
        assert_eq!(
            clock(Timestamp(1_792_504_800), Some("America/New_York"), "UTC"),
            "10:00 (America/New_York)"
        );
    }
}
