//! Every type of the core that holds a code, a seed, a token, a cookie or a key, formatted the ways a
//! log line could format it (`{:?}`, `{:#?}`, and `Display` where it exists), with a marker secret
//! inside: the marker must never come out. A type added with a derived `Debug` over a secret fails
//! here once it is listed; types that hold secrets and have no `Debug` at all (a prompt session, a
//! presented device token, a retired token hash) cannot be formatted, which is the point.
//!
//! It sits above every layer because it names types from all of them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly on purpose"
)]

use std::fmt::{Debug, Display};

use crate::audit::chain::SealKey;
use crate::audit::verify::Verifier;
use crate::devices::StoredDevice;
use crate::devices::trust::DeviceCheck;
use crate::engine::Engine;
use crate::engine::record::Undo;
use crate::engine::state::{Secret, StoredChallenge, StoredCode};
use crate::kernel::error::Error;
use crate::kernel::model::{
    Allowed, BrowserTraits, Decision, DevicePresentation, Explanation, LoginContext, Purpose,
    Verified,
};
use crate::kernel::ports::{Mailer as _, OutgoingMail, Store as _};
use crate::kernel::secret::{HmacKey, OtpCode};
use crate::kernel::settings::Settings;
use crate::kernel::time::Timestamp;
use crate::kernel::{input, keys};
use crate::testing::{MemAudit, MemMailer, MemStore};
use crate::web::console::ConsoleLink;
use crate::web::hosted::{WebMethod, WebRequest, WebResponse};
use crate::web::preview::PreviewLink;
use crate::web::prompt::PromptConfig;

/// A token, cookie, seed or MAC.
const MARKER: &str = "MARKER-SECRET-7f3a";
/// A code (no formatted timestamp or count of these tests contains it).
const CODE: &str = "918273645";
/// A key, in hex: 32 bytes.
fn key_hex() -> String {
    "7f3a".repeat(16)
}

/// Every form the secrets could leak in: the text, and the bytes as `Debug` prints a `Vec<u8>`.
fn forms() -> Vec<String> {
    let bytes = |s: &str| {
        s.bytes()
            .take(8)
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    vec![
        MARKER.to_owned(),
        CODE.to_owned(),
        key_hex()[..16].to_owned(),
        bytes(MARKER),
        bytes(CODE),
        bytes(&key_hex()),
        // The key's own bytes, 0x7f 0x3a …, as a byte slice prints them.
        "127, 58, 127, 58".to_owned(),
    ]
}

fn assert_hidden(what: &str, rendered: &str) {
    for form in forms() {
        assert!(
            !rendered.contains(&form),
            "{what} shows a secret ({form}):\n{rendered}"
        );
    }
}

/// `{:?}` and `{:#?}`.
fn debug(what: &str, value: &impl Debug) {
    assert_hidden(what, &format!("{value:?}"));
    assert_hidden(what, &format!("{value:#?}"));
}

/// `{:?}`, `{:#?}` and `{}`.
fn debug_and_display(what: &str, value: &(impl Debug + Display)) {
    debug(what, value);
    assert_hidden(what, &value.to_string());
}

fn key() -> HmacKey {
    HmacKey::from_hex(&key_hex()).unwrap()
}

#[test]
fn the_checks_see_a_secret_when_there_is_one() {
    // The check itself: a derived `Debug` over a marker is caught, in each form.
    #[derive(Debug)]
    #[allow(dead_code, reason = "only formatted")]
    struct Leaky {
        token: String,
        bytes: Vec<u8>,
    }
    let leaky = Leaky {
        token: MARKER.to_owned(),
        bytes: MARKER.as_bytes().to_vec(),
    };
    let caught = std::panic::catch_unwind(|| debug("Leaky", &leaky));
    assert!(caught.is_err());
    let bytes_only = format!("{:?}", MARKER.as_bytes());
    let caught = std::panic::catch_unwind(|| assert_hidden("bytes", &bytes_only));
    assert!(caught.is_err());
}

#[test]
fn kernel_secrets_and_model_types_never_show_theirs() {
    debug("HmacKey", &key());
    debug("OtpCode", &OtpCode::new(CODE.to_owned()));
    let presented = DevicePresentation {
        cookie: Some(format!("__Host-mfa-device={MARKER}")),
        traits: BrowserTraits::default(),
        ip: "203.0.113.7".to_owned(),
    };
    debug("DevicePresentation", &presented);
    debug(
        "LoginContext",
        &LoginContext {
            user_id: "dr-a".to_owned(),
            org_id: "acme".to_owned(),
            email: "dr-a@clinic.example".to_owned(),
            device: presented,
            ..LoginContext::default()
        },
    );
    let why = Explanation {
        rule: "device:trusted".to_owned(),
        message: "trusted".to_owned(),
    };
    let allowed = Allowed {
        why,
        amr: vec!["mfa".to_owned()],
        second_factor_at: Some(Timestamp(1_700_000_000)),
        device_id: Some("d1".to_owned()),
        set_cookie: Some(format!("__Host-mfa-device={MARKER}; HttpOnly")),
    };
    debug("Allowed", &allowed);
    debug("Decision::Allow", &Decision::Allow(allowed));
    debug(
        "Verified",
        &Verified {
            amr: vec!["otp".to_owned(), "mfa".to_owned()],
            second_factor_at: Timestamp(1_700_000_000),
            device_id: Some("d1".to_owned()),
            set_cookie: Some(format!("__Host-mfa-device={MARKER}; HttpOnly")),
            step_up: Some(MARKER.to_owned()),
        },
    );
    debug(
        "OutgoingMail",
        &OutgoingMail {
            to: "dr-a@clinic.example".to_owned(),
            sender_name: None,
            subject: "Your code".to_owned(),
            html: format!("<p>{CODE}</p>"),
            text: CODE.to_owned(),
        },
    );
}

#[test]
fn errors_never_echo_the_secret_they_refuse() {
    let short_key = HmacKey::from_hex(&key_hex()[..16]).err().unwrap();
    debug_and_display("Error (short key)", &short_key);
    let not_hex = HmacKey::from_hex(MARKER).err().unwrap();
    debug_and_display("Error (key not hex)", &not_hex);
    let code = input::code(&format!("{CODE}{CODE}{CODE}{CODE}"), 6)
        .err()
        .unwrap();
    debug_and_display("Error (code too long)", &code);
    let code = input::code(CODE, 6).err().unwrap();
    debug_and_display("Error (code of the wrong length)", &code);
    let prompt = PromptConfig::from_lookup(|name| match name {
        "prompt_key" => Some(key_hex()[..16].to_owned()),
        _ => None,
    })
    .err()
    .unwrap();
    debug_and_display("Error (short prompt key)", &prompt);
    let error: Error = Error::Rejected;
    debug_and_display("Error::Rejected", &error);
}

#[test]
fn audit_keys_never_show() {
    let seal = SealKey::derive(&key());
    debug("SealKey", &seal);
    debug("Verifier", &Verifier::new(Some(seal)));
}

#[test]
fn stored_state_never_shows_seeds_tokens_or_what_an_undo_would_put_back() {
    let code = StoredCode {
        generation: 1,
        seed: MARKER.to_owned(),
        issued_at: Timestamp(0),
        expires_at: Timestamp(600),
    };
    debug("StoredCode", &code);
    debug(
        "StoredChallenge",
        &StoredChallenge {
            v: 1,
            id: "c1".to_owned(),
            purpose: Purpose::Login,
            email: "dr-a@clinic.example".to_owned(),
            created_at: Timestamp(0),
            expires_at: Timestamp(1800),
            code: Some(code),
            opt_in: false,
            seed: Some(Secret(MARKER.to_owned())),
            opener: Some("ab".repeat(32)),
        },
    );
    debug(
        "StoredDevice",
        &StoredDevice {
            v: 1,
            id: "d1".to_owned(),
            token_mac: MARKER.to_owned(),
            generation: 0,
            retired: Vec::new(),
            fingerprint: "f".to_owned(),
            label: "Chrome on Linux".to_owned(),
            first_trusted_at: Timestamp(0),
            last_used_at: Timestamp(0),
            last_network: "203.0.0.0/16".to_owned(),
            expires_at: Timestamp(86_400),
            verified_at: Some(Timestamp(0)),
            epoch: 0,
        },
    );
    debug(
        "DeviceCheck::Trusted",
        &DeviceCheck::Trusted {
            device_id: "d1".to_owned(),
            expires_at: Timestamp(86_400),
            verified_at: Timestamp(0),
            set_cookie: Some(format!("__Host-mfa-device={MARKER}")),
        },
    );

    let (store, mailer, audit, key) = (
        MemStore::default(),
        MemMailer::default(),
        MemAudit::default(),
        key(),
    );
    let challenge_key = keys::challenge("acme", "dr-a");
    store
        .set(
            &challenge_key,
            format!(r#"{{"seed":"{MARKER}"}}"#).as_bytes(),
            None,
        )
        .unwrap();
    let engine = Engine {
        store: &store,
        mailer: &mailer,
        audit: &audit,
        settings: Settings::default(),
        key: &key,
    };
    let mut undo = Undo::default();
    engine
        .remember_value(&mut undo, &challenge_key, None)
        .unwrap();
    debug("Undo", &undo);
    debug("MemStore", &store);
    mailer
        .send(&OutgoingMail {
            to: "dr-a@clinic.example".to_owned(),
            sender_name: None,
            subject: "Your code".to_owned(),
            html: CODE.to_owned(),
            text: CODE.to_owned(),
        })
        .unwrap();
    debug("MemMailer", &mailer);
}

#[test]
fn web_requests_responses_links_and_settings_never_show_theirs() {
    debug(
        "PromptConfig",
        &PromptConfig::new(key(), "idp-1", &["https://idp.example/"]),
    );
    let cookies = format!("__Host-mfa-prompt={MARKER}; __Host-mfa-device={MARKER}");
    let form = format!("csrf={MARKER}&code={CODE}");
    let query = format!("request={MARKER}");
    debug(
        "WebRequest",
        &WebRequest {
            method: WebMethod::Post,
            path: "/prompt/verify",
            query: &query,
            form: form.as_bytes(),
            cookies: &cookies,
            user_agent: "Mozilla/5.0",
            client_ip: "203.0.113.7",
            accept_language: "en",
        },
    );
    debug(
        "WebResponse",
        &WebResponse {
            status: 303,
            html: Some(format!("<input name=\"csrf\" value=\"{MARKER}\">")),
            headers: vec![
                (
                    "location",
                    format!("https://idp.example/return?result={MARKER}"),
                ),
                ("set-cookie", format!("__Host-mfa-prompt={MARKER}")),
                ("set-cookie", format!("__Host-mfa-device={MARKER}")),
            ],
        },
    );
    debug(
        "PreviewLink",
        &PreviewLink {
            url: format!("/admin/branding/preview?token={MARKER}"),
            expires_at: Timestamp(300),
        },
    );
    debug(
        "ConsoleLink",
        &ConsoleLink {
            url: format!("/admin/console?token={MARKER}"),
            expires_at: Timestamp(300),
        },
    );
}
