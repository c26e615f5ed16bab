//! The console's words, one JSON file per language in `core/i18n/console/`. They are kept apart
//! from the email's and the prompt's (`core/i18n/<tag>.json`): those are in every build of the
//! component, and these only where the console is (the REST app), so the plugin does not carry
//! them. A test checks every language has every message and placeholder.

use serde::Deserialize;

/// Every console language: (tag, JSON words). The tags are the email's (`email::i18n`).
const LANGUAGES: &[(&str, &str)] = &[
    ("en", include_str!("../../../i18n/console/en.json")),
    ("es", include_str!("../../../i18n/console/es.json")),
];

/// The console's words. Placeholders: `{days}`, `{from}`, `{to}`, `{reached}`, `{required}`,
/// `{sent}`, `{verified}`, `{enrolled}`, `{login}`, `{enrollment}`, `{chart}`, `{refused}`,
/// `{locked}`, `{throttled}`, `{trusted}`, `{share}`, `{count}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(
    missing_docs,
    reason = "each field is the text of the page element it is named after"
)]
pub struct ConsoleText {
    pub title: String,
    pub health_heading: String,
    pub period: String,
    pub range_label: String,
    pub range_submit: String,
    pub language_label: String,
    pub funnel_heading: String,
    pub funnel_desc: String,
    pub required_split: String,
    pub stage_reached: String,
    pub stage_required: String,
    pub stage_sent: String,
    pub stage_verified: String,
    pub stage_enrolled: String,
    pub col_stage: String,
    pub col_count: String,
    pub col_day: String,
    pub table_caption: String,
    pub codes_heading: String,
    pub codes_desc: String,
    pub series_sent: String,
    pub series_verified: String,
    pub series_refused: String,
    pub security_heading: String,
    pub security_desc: String,
    pub series_locked: String,
    pub series_throttled: String,
    pub trusted_heading: String,
    pub trusted_desc: String,
    pub col_trusted: String,
    pub col_logins: String,
    pub col_share: String,
    pub no_logins: String,
    pub bounces_note: String,
    pub counts_note: String,
    pub lost_note: String,
    pub sign_out: String,
    pub signed_out_heading: String,
    pub signed_out_body: String,
    pub opening_heading: String,
    pub opening_body: String,
    pub opening_link: String,
    pub denied_heading: String,
    pub denied_link: String,
    pub denied_org: String,
    pub expired_body: String,
    pub form_stale: String,
    pub not_found: String,
    pub unavailable_body: String,
    pub bad_days: String,
    pub nav_label: String,
    pub nav_health: String,
    pub nav_policy: String,
    pub nav_branding: String,
    pub nav_users: String,
    pub nav_audit: String,
}

/// The words of `tag` (a supported tag: see `email::i18n::choose`), English for anything else.
#[must_use]
pub fn words(tag: &str) -> ConsoleText {
    load(LANGUAGES, tag)
}

/// Fills `{name}` placeholders in a message. The values are numbers, dates, ids, roles and the
/// words themselves: none holds a brace, so no value is filled twice.
pub(super) fn fill(text: &str, values: &[(&str, &str)]) -> String {
    values.iter().fold(text.to_owned(), |t, (name, value)| {
        t.replace(&format!("{{{name}}}"), value)
    })
}

/// A screen's words of `tag` from its own files (`languages`: (tag, JSON)), English for anything
/// else. Every file is checked to parse by its screen's test, so the empty default is never what
/// an admin sees.
pub(super) fn load<T: serde::de::DeserializeOwned + Default>(
    languages: &[(&str, &str)],
    tag: &str,
) -> T {
    let json = languages
        .iter()
        .find(|(t, _)| *t == tag)
        .or_else(|| languages.iter().find(|(t, _)| *t == "en"));
    json.and_then(|(_, j)| serde_json::from_str(j).ok())
        .unwrap_or_default()
}

/// For a screen's test: every language the console speaks has a file that parses as `T`, no
/// message is empty, and each text in `needs(words)` has its placeholders.
#[cfg(test)]
#[allow(clippy::panic, reason = "tests")]
pub(super) fn check_languages<T: serde::de::DeserializeOwned>(
    languages: &[(&str, &str)],
    needs: impl Fn(&T) -> Vec<(String, Vec<&'static str>)>,
) {
    let tags: Vec<&str> = languages.iter().map(|(t, _)| *t).collect();
    assert_eq!(tags, crate::email::i18n::supported());
    for (tag, json) in languages {
        let t: T = serde_json::from_str(json)
            .unwrap_or_else(|e| panic!("{tag}: the words do not parse: {e}"));
        let all: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(json).unwrap_or_default();
        for (name, text) in &all {
            let text = text.as_str().unwrap_or_default();
            assert!(!text.trim().is_empty(), "{tag}: {name} is empty");
        }
        for (text, placeholders) in needs(&t) {
            for placeholder in placeholders {
                assert!(
                    text.contains(placeholder),
                    "{tag}: {text:?} lacks {placeholder}"
                );
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::panic, reason = "tests")]
mod tests {
    use super::*;
    use crate::email::i18n;

    #[test]
    fn every_console_language_has_every_message_and_placeholder() {
        // The console speaks exactly the languages the rest of the pages speak.
        let tags: Vec<&str> = LANGUAGES.iter().map(|(t, _)| *t).collect();
        assert_eq!(tags, i18n::supported());
        for (tag, json) in LANGUAGES {
            let t: ConsoleText = serde_json::from_str(json)
                .unwrap_or_else(|e| panic!("console/{tag}.json does not parse: {e}"));
            let all: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(json).unwrap_or_default();
            for (name, text) in &all {
                let text = text.as_str().unwrap_or_default();
                assert!(!text.trim().is_empty(), "{tag}: {name} is empty");
            }
            for (text, needs) in [
                (&t.period, &["{days}", "{from}", "{to}"][..]),
                (
                    &t.funnel_desc,
                    &[
                        "{days}",
                        "{reached}",
                        "{required}",
                        "{sent}",
                        "{verified}",
                        "{enrolled}",
                    ][..],
                ),
                (&t.required_split, &["{login}", "{enrollment}"][..]),
                (&t.table_caption, &["{chart}"][..]),
                (&t.codes_desc, &["{sent}", "{verified}", "{refused}"][..]),
                (&t.security_desc, &["{locked}", "{throttled}"][..]),
                (&t.trusted_desc, &["{trusted}", "{reached}", "{share}"][..]),
                (&t.lost_note, &["{count}"][..]),
            ] {
                for placeholder in needs {
                    assert!(
                        text.contains(placeholder),
                        "{tag}: {text:?} lacks {placeholder}"
                    );
                }
            }
        }
    }
}
