//! `Accept-Language`, as the hosted pages negotiate it when the request names no language
//! (`Engine::hosted_page`, through any page; here the page of an unknown path, which has no
//! session): any header gives a page in a supported language, and a browser's header (entries in
//! descending preference, the first without a weight) picks the first entry whose primary subtag
//! the pages speak (`es-MX` is `es`, `EN_gb` is `en`), else the default, English. How weights are
//! read is `found.rs`'s.

use proptest::prelude::*;

use mfa_step_core::email::i18n;
use mfa_step_core::web::hosted::{WebMethod, WebResponse};

use crate::world::{T0, World, browser, check, garbage};

/// The language of a page (its `<html lang>`).
pub fn lang_of(r: &WebResponse) -> String {
    let h = r.html.as_deref().unwrap_or_default();
    let at = h.find("<html lang=\"").unwrap() + 12;
    h[at..].split('"').next().unwrap().to_owned()
}

pub fn page_for(accept_language: &str) -> WebResponse {
    let w = World::new();
    let mut req = browser(WebMethod::Get, "/nowhere", "", b"", "");
    req.accept_language = accept_language;
    w.page(&req, T0, 1)
}

#[test]
fn any_accept_language_gives_a_page_in_a_supported_language() {
    let supported = i18n::supported();
    check(1024, garbage(), |header| {
        let r = page_for(&header);
        prop_assert_eq!(r.status, 404);
        prop_assert!(supported.contains(&lang_of(&r).as_str()));
        Ok(())
    });
}

/// One entry of an `Accept-Language` header.
fn tag() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec![
            "en", "es", "EN", "Es", "fr", "de", "pt", "zh", "x", "xx", "enx", "e", "*", "i", "",
            " en", "en ",
        ]),
        prop::option::of(prop_oneof![
            "-[A-Za-z]{2}",
            "_[A-Z]{2}",
            "-[0-9]{3}",
            "-[a-z]{4}-[A-Z]{2}"
        ]),
    )
        .prop_map(|(primary, region)| format!("{primary}{}", region.unwrap_or_default()))
}

/// The tag the pages should pick from entries in a browser's (descending) preference order.
fn expected(tags: &[String]) -> &'static str {
    tags.iter()
        .map(|t| t.trim())
        .find_map(|t| {
            let primary = t
                .split(['-', '_'])
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            i18n::supported().into_iter().find(|s| *s == primary)
        })
        .unwrap_or("en")
}

#[test]
fn accept_language_picks_the_first_supported_language_in_preference_order() {
    let header = prop::collection::vec(tag(), 0..6).prop_flat_map(|tags| {
        let n = tags.len();
        // Browsers list entries in descending preference, the first without a weight.
        (
            Just(tags),
            prop::collection::vec(1u32..=1000, n),
            any::<bool>(),
        )
    });
    check(1024, header, |(tags, mut weights, spaced)| {
        weights.sort_unstable_by(|a, b| b.cmp(a));
        let sep = if spaced { ", " } else { "," };
        let value = tags
            .iter()
            .zip(&weights)
            .enumerate()
            .map(|(i, (t, w))| {
                if i == 0 {
                    t.clone()
                } else {
                    format!("{t};q={}.{:03}", w / 1000, w % 1000)
                }
            })
            .collect::<Vec<_>>()
            .join(sep);
        let r = page_for(&value);
        prop_assert_eq!(lang_of(&r), expected(&tags), "{}", value);
        Ok(())
    });
}
