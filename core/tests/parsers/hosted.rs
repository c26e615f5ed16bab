//! The hosted pages' inputs (`Engine::hosted_page`): the method and path, the query
//! (`request=<jwt>`), the form bodies (`application/x-www-form-urlencoded`: `csrf`, `code`,
//! `remember`, `device_id`) and the `Cookie` header (the session, `__Host-mfa-prompt`);
//! `Accept-Language` is `language.rs`'s. Every refusal here is a page, never a panic, and changes
//! nothing: a form without the session's CSRF token, a session cookie that is not a session, a
//! code that cannot be a code (refused before it counts as a guess), a device id that is not the
//! user's. The one trace a refusal leaves is a request that is not a signed request: noted once
//! for the host's log, as `prompt.rs` describes.

use proptest::prelude::*;

use mfa_step_core::web::hosted::{SESSION_COOKIE, WebMethod, WebRequest, WebResponse};

use crate::prompt::UNSIGNED;
use crate::world::{
    AGENT, Hosted, IP, RETURN, T0, World, browser, check, garbage, hosted_at_code_page, noted, of,
    text, unchanged,
};

/// The characters of a cookie's name (an RFC 9110 token).
const TOKEN: &str = "!#$%&'*+.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-";

/// Every path the pages answer, and a few near them.
const PATHS: [&str; 13] = [
    "/prompt",
    "/prompt/step",
    "/prompt/verify",
    "/prompt/resend",
    "/prompt/cancel",
    "/prompt/devices",
    "/prompt/devices/revoke",
    "/prompt/devices/revoke-all",
    "/prompt/done",
    "/prompt/",
    "/PROMPT",
    "/prompt/step/",
    "/prompt%2fstep",
];

/// The form posts.
const FORMS: [&str; 6] = [
    "/prompt/verify",
    "/prompt/resend",
    "/prompt/cancel",
    "/prompt/devices/revoke",
    "/prompt/devices/revoke-all",
    "/prompt/done",
];

fn method() -> impl Strategy<Value = WebMethod> {
    prop_oneof![
        Just(WebMethod::Get),
        Just(WebMethod::Post),
        Just(WebMethod::Other)
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(PATHS.to_vec()).prop_map(str::to_owned),
        garbage(),
    ]
}

/// A form or query: arbitrary bytes, or `name=value` pairs with odd names, odd values, empty
/// pairs, stray `=` and `&`, bad percent escapes and `+`.
fn urlencoded() -> impl Strategy<Value = Vec<u8>> {
    let name = prop_oneof![
        prop::sample::select(vec!["csrf", "code", "remember", "device_id", "request", ""])
            .prop_map(str::to_owned),
        text(0..8),
    ];
    let value = prop_oneof![
        text(0..40),
        of("%+=&0123456789abcdefABCDEFzZ", 0..12),
        garbage()
    ];
    prop_oneof![
        any::<Vec<u8>>(),
        prop::collection::vec(
            (name, value, prop::sample::select(vec!["&", "&&", ";", ""])),
            0..6
        )
        .prop_map(|pairs| {
            pairs
                .iter()
                .map(|(k, v, sep)| format!("{k}={v}{sep}"))
                .collect::<String>()
                .into_bytes()
        }),
    ]
}

/// A `Cookie` header of arbitrary pairs (no session among them).
fn cookies() -> impl Strategy<Value = String> {
    prop_oneof![
        garbage(),
        prop::collection::vec((of(TOKEN, 0..20), text(0..40)), 0..5).prop_map(|pairs| {
            pairs
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        }),
    ]
}

/// The first value of `name` in a form, as the pages decode it.
fn first(form: &[u8], name: &str) -> Option<String> {
    form_urlencoded::parse(form)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The first cookie of `name` in a `Cookie` header (the first one sent is the one that counts).
fn first_cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim())
}

fn html(r: &WebResponse) -> &str {
    r.html.as_deref().unwrap_or_default()
}

#[derive(Debug, Clone)]
struct Request {
    method: WebMethod,
    path: String,
    query: String,
    form: Vec<u8>,
    cookies: String,
    user_agent: String,
    client_ip: String,
    accept_language: String,
}

impl Request {
    fn web(&self) -> WebRequest<'_> {
        WebRequest {
            method: self.method,
            path: &self.path,
            query: &self.query,
            form: &self.form,
            cookies: &self.cookies,
            user_agent: &self.user_agent,
            client_ip: &self.client_ip,
            accept_language: &self.accept_language,
        }
    }
}

fn request() -> impl Strategy<Value = Request> {
    (
        method(),
        path(),
        urlencoded().prop_map(|q| String::from_utf8_lossy(&q).into_owned()),
        urlencoded(),
        cookies(),
        prop_oneof![Just(AGENT.to_owned()), garbage()],
        prop_oneof![Just(IP.to_owned()), garbage()],
        garbage(),
    )
        .prop_map(
            |(method, path, query, form, cookies, user_agent, client_ip, accept_language)| {
                Request {
                    method,
                    path,
                    query,
                    form,
                    cookies,
                    user_agent,
                    client_ip,
                    accept_language,
                }
            },
        )
}

#[test]
fn arbitrary_requests_without_a_session_never_panic_and_change_nothing() {
    let h = hosted_at_code_page(None);
    let before = h.world.state();
    check(512, request(), |req| {
        let w = h.world.fork();
        let r = w.page(&req.web(), T0 + 210, 1);
        prop_assert!(
            [403, 404, 405, 410].contains(&r.status),
            "status {} for {req:?}",
            r.status
        );
        prop_assert!(r.headers.iter().all(|(k, _)| *k != "location"));
        let after = w.state();
        if r.status == 403 && req.method == WebMethod::Get && req.path == "/prompt" {
            // A request that is no signed request: noted for the host's log, naming no one.
            noted(&before, &after, &UNSIGNED, &[None])
        } else {
            unchanged(&before, &after)
        }
    });
}

/// A form whose first `csrf` is not the session's: the right token cut, extended, one character
/// changed, in another case, wrapped in spaces, after a wrong one, or absent.
fn forged_form(right: &str) -> impl Strategy<Value = Vec<u8>> {
    let right = right.to_owned();
    let csrf = {
        let r = right.clone();
        prop_oneof![
            (0usize..32).prop_map({
                let r = r.clone();
                move |n| r[..n].to_owned()
            }),
            "\\PC{1,4}".prop_map({
                let r = r.clone();
                move |s| format!("{r}{s}")
            }),
            (0usize..32, "[0-9a-f]").prop_map({
                let r = r.clone();
                move |(i, c)| format!("{}{c}{}", &r[..i], &r[i + 1..])
            }),
            Just(r.to_ascii_uppercase()),
            Just(format!(" {r}")),
            Just(format!("{r}\0")),
            Just(format!("{r}%00")),
            garbage(),
        ]
    };
    (
        csrf,
        any::<bool>(),
        urlencoded(),
        prop::sample::select(vec!["before", "after", "none"]),
    )
        .prop_map(move |(csrf, duplicate, rest, place)| {
            let mut body = form_urlencoded::Serializer::new(String::new());
            body.append_pair("csrf", &csrf);
            if duplicate {
                // Duplicated: the right one second; the first is the one read.
                body.append_pair("csrf", &right);
            }
            let mut out = body.finish().into_bytes();
            match place {
                "before" => {
                    let mut b = rest.clone();
                    b.push(b'&');
                    b.extend(out);
                    out = b;
                }
                "after" => {
                    out.push(b'&');
                    out.extend(rest);
                }
                _ => {}
            }
            out
        })
}

#[test]
fn forms_without_the_sessions_csrf_token_are_refused_and_change_nothing() {
    for purpose in [None, Some("devices")] {
        let h = hosted_at_code_page(purpose);
        let strategy = (prop::sample::select(FORMS.to_vec()), forged_form(&h.csrf));
        check(256, strategy, |(path, form)| {
            // A `csrf` that decodes to the right token is the right token (equivalent spellings).
            prop_assume!(first(&form, "csrf").as_deref() != Some(h.csrf.as_str()));
            let w = h.world.fork();
            let before = w.state();
            let r = w.page(
                &browser(WebMethod::Post, path, "", &form, &h.cookies),
                T0 + 210,
                1,
            );
            prop_assert_eq!(r.status, 403, "{}", html(&r));
            unchanged(&before, &w.state())
        });
    }
}

/// A code field that cannot be a code: what is left after spaces and dashes is not six ASCII
/// digits (five or seven, another script's digits, letters, or too long).
fn not_a_code() -> impl Strategy<Value = String> {
    prop_oneof![
        garbage(),
        "[0-9]{0,5}",
        "[0-9]{7,40}",
        "[0-9 -]{0,3}[٠-٩０-９a-zA-Z.,_+*/][0-9 -]{0,8}",
        "[0-9]{6}[\\x00-\\x08\\x0e-\\x1f\\x7f]",
        "\\PC{0,12}",
    ]
    .prop_filter("cannot be a code", |s| {
        let left: String = s
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .collect();
        !(left.len() == 6 && left.bytes().all(|b| b.is_ascii_digit()))
    })
}

#[test]
fn codes_that_cannot_be_codes_are_refused_before_they_count() {
    let h = hosted_at_code_page(None);
    let strategy = (not_a_code(), any::<bool>(), urlencoded(), "\\PC{0,8}");
    check(256, strategy, |(code, duplicate, rest, remember)| {
        let w = h.world.fork();
        let before = w.state();
        let mut body = form_urlencoded::Serializer::new(String::new());
        body.append_pair("csrf", &h.csrf);
        body.append_pair("code", &code);
        if duplicate {
            // The right code second: the first `code` is the one read.
            body.append_pair("code", &h.code);
        }
        body.append_pair("remember", &remember);
        let mut form = body.finish().into_bytes();
        if first(&rest, "csrf").is_none() && first(&rest, "code").is_none() {
            form.push(b'&');
            form.extend(rest);
        }
        let r = w.page(
            &browser(WebMethod::Post, "/prompt/verify", "", &form, &h.cookies),
            T0 + 210,
            1,
        );
        prop_assert_eq!(r.status, 200);
        prop_assert!(html(&r).contains("Enter the 6-digit code"), "{}", html(&r));
        unchanged(&before, &w.state())
    });
}

#[test]
fn the_right_code_is_accepted_however_it_is_spaced() {
    let h = hosted_at_code_page(None);
    let seps = prop::collection::vec(
        prop::sample::select(vec!["", "", " ", "-", "\t", "\u{a0}", "  ", "\u{2009}"]),
        7,
    );
    check(32, seps, |seps| {
        let w = h.world.fork();
        let spaced: String = seps
            .iter()
            .zip(h.code.chars().map(Some).chain([None]))
            .map(|(s, c)| format!("{s}{}", c.map(String::from).unwrap_or_default()))
            .collect();
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("csrf", &h.csrf)
            .append_pair("code", &spaced)
            .finish();
        let r = w.page(
            &browser(
                WebMethod::Post,
                "/prompt/verify",
                "",
                form.as_bytes(),
                &h.cookies,
            ),
            T0 + 210,
            1,
        );
        prop_assert_eq!(r.status, 303, "{}", html(&r));
        let location = r
            .headers
            .iter()
            .find(|(k, _)| *k == "location")
            .map(|(_, v)| v.as_str());
        prop_assert!(
            location.is_some_and(|l| l.starts_with(&format!("{RETURN}?state=s1&result="))),
            "{location:?}"
        );
        Ok(())
    });
}

/// A session id that is not the session's: the right one cut, extended, changed, or another
/// cookie of that name first.
#[test]
fn a_cookie_that_is_not_the_session_is_the_expired_page_and_changes_nothing() {
    let h = hosted_at_code_page(None);
    let id = h.cookies.split_once('=').unwrap().1.to_owned();
    let forged = prop_oneof![
        (0usize..32).prop_map({
            let id = id.clone();
            move |n| format!("{SESSION_COOKIE}={}", &id[..n])
        }),
        (0usize..32, "[0-9a-f]").prop_map({
            let id = id.clone();
            move |(i, c)| format!("{SESSION_COOKIE}={}{c}{}", &id[..i], &id[i + 1..])
        }),
        "[0-9a-zA-Z=.é\\x00]{1,4}".prop_map({
            let id = id.clone();
            move |s| format!("{SESSION_COOKIE}={id}{s}")
        }),
        // Duplicated: a wrong one first.
        "[0-9a-f]{0,32}".prop_map({
            let id = id.clone();
            move |other| format!("{SESSION_COOKIE}={other}; {SESSION_COOKIE}={id}")
        }),
        Just(format!("{}={id}", SESSION_COOKIE.to_ascii_lowercase())),
        Just(format!("__Host-mfa-device={id}")),
    ]
    .prop_filter("not the session", {
        let id = id.clone();
        move |c| first_cookie(c, SESSION_COOKIE) != Some(id.as_str())
    });
    check(
        256,
        (forged, prop::sample::select(PATHS[1..9].to_vec())),
        |(cookies, path)| {
            let method = if FORMS.contains(&path) {
                WebMethod::Post
            } else {
                WebMethod::Get
            };
            let form = format!("csrf={}", h.csrf);
            let w = h.world.fork();
            let before = w.state();
            let r = w.page(
                &browser(method, path, "", form.as_bytes(), &cookies),
                T0 + 210,
                1,
            );
            prop_assert_eq!(r.status, 410, "{}", html(&r));
            unchanged(&before, &w.state())
        },
    );
}

#[test]
fn the_session_is_found_among_any_other_cookies() {
    let h = hosted_at_code_page(None);
    let others = prop::collection::vec(
        (
            of(TOKEN, 1..20),
            text(0..40).prop_map(|v| v.replace(';', "")),
        ),
        0..5,
    )
    .prop_filter("no session among them", |pairs| {
        pairs.iter().all(|(k, _)| k != SESSION_COOKIE)
    });
    check(
        128,
        (others, any::<prop::sample::Index>()),
        |(pairs, at)| {
            let mut jar: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            jar.insert(at.index(jar.len() + 1), format!(" {} ", h.cookies));
            let cookies = jar.join(";");
            let w = h.world.fork();
            let before = w.state();
            let r = w.page(
                &browser(WebMethod::Get, "/prompt/step", "", b"", &cookies),
                T0 + 210,
                1,
            );
            prop_assert_eq!(r.status, 200, "{}", html(&r));
            prop_assert!(html(&r).contains(&h.csrf));
            // Showing the code page again reads only.
            unchanged(&before, &w.state())
        },
    );
}

#[test]
fn a_duplicated_request_parameter_is_read_first_come() {
    let strategy = ("[a-z0-9]{1,20}", "[A-Za-z0-9_.-]{0,80}", any::<bool>());
    check(128, strategy, |(jti, garbage, valid_first)| {
        let token = crate::world::prompt_token(&jti, None);
        let query = if valid_first {
            format!("request={token}&request={garbage}")
        } else {
            format!("request={garbage}&request={token}")
        };
        let w = World::new();
        let before = w.state();
        let r = w.page(&browser(WebMethod::Get, "/prompt", &query, b"", ""), T0, 1);
        if valid_first {
            prop_assert_eq!(r.status, 303);
        } else {
            prop_assert_eq!(r.status, 403);
            noted(&before, &w.state(), &UNSIGNED, &[None])?;
        }
        Ok(())
    });
}

/// A `devices` session past its code (the user's device from enrollment still trusted), and that
/// device's id.
fn passed_devices_session() -> (Hosted, String) {
    let h = hosted_at_code_page(Some("devices"));
    let form = format!("csrf={}&code={}", h.csrf, h.code);
    let r = h.world.page(
        &browser(
            WebMethod::Post,
            "/prompt/verify",
            "",
            form.as_bytes(),
            &h.cookies,
        ),
        T0 + 210,
        12,
    );
    assert_eq!(r.status, 303);
    let devices = mfa_step_core::kernel::keys::devices_of(crate::world::ORG, crate::world::USER);
    let key = h
        .world
        .store
        .snapshot()
        .0
        .into_iter()
        .map(|(k, _)| k)
        .find(|k| k.starts_with(&devices))
        .unwrap();
    let id = key[devices.len()..].to_owned();
    (h, id)
}

#[test]
fn revoking_a_device_id_that_is_not_the_users_changes_nothing() {
    let (h, mine) = passed_devices_session();
    let strategy = prop_oneof![
        garbage(),
        "[0-9a-f]{32}",
        Just(mine.to_ascii_uppercase()),
        Just(format!("{mine} ")),
        Just(format!("{mine}%00")),
        Just(mine[..31].to_owned()),
        Just(format!("../{mine}")),
        Just(format!("{mine}:x")),
    ];
    check(128, strategy, |device_id| {
        prop_assume!(device_id != mine);
        let w = h.world.fork();
        let before = w.state();
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("csrf", &h.csrf)
            .append_pair("device_id", &device_id)
            .finish();
        let r = w.page(
            &browser(
                WebMethod::Post,
                "/prompt/devices/revoke",
                "",
                form.as_bytes(),
                &h.cookies,
            ),
            T0 + 220,
            1,
        );
        prop_assert_eq!(r.status, 303);
        unchanged(&before, &w.state())
    });
    // And the user's own id does revoke it (the property above is not vacuous).
    let w = h.world.fork();
    let form = format!("csrf={}&device_id={mine}", h.csrf);
    let r = w.page(
        &browser(
            WebMethod::Post,
            "/prompt/devices/revoke",
            "",
            form.as_bytes(),
            &h.cookies,
        ),
        T0 + 220,
        1,
    );
    assert_eq!(r.status, 303);
    assert!(w.state().audit.len() > h.world.state().audit.len());
}

#[test]
fn a_refused_request_leaves_the_browsers_session_alone() {
    let h = hosted_at_code_page(None);
    let before = h.world.state();
    let token = crate::world::prompt_token("req-2", None);
    let refused = prop_oneof![
        garbage(),
        (any::<prop::sample::Index>(), any::<char>()).prop_map(move |(i, c)| {
            let mut chars: Vec<char> = token.chars().collect();
            chars.insert(i.index(chars.len() + 1), c);
            chars.into_iter().collect()
        }),
    ];
    check(128, refused, |t| {
        let w = h.world.fork();
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("request", &t)
            .finish();
        let r = w.page(
            &browser(WebMethod::Get, "/prompt", &query, b"", &h.cookies),
            T0 + 210,
            1,
        );
        prop_assert_eq!(r.status, 403);
        noted(
            &before,
            &w.state(),
            &UNSIGNED,
            &[None, Some(crate::world::ORG)],
        )?;
        // The session the browser holds still shows its code page.
        let r = w.page(
            &browser(WebMethod::Get, "/prompt/step", "", b"", &h.cookies),
            T0 + 211,
            2,
        );
        prop_assert_eq!(r.status, 200);
        Ok(())
    });
}
