//! The data the engine takes and returns. These mirror `wit/types.wit` one to one (same names, in
//! snake case), and are also the JSON bodies of the REST API.
//!
//! Some carry a bearer secret on its way to or from a browser (a device cookie presented, a
//! `Set-Cookie` with a fresh device token): those have a hand-written `Debug` that shows whether
//! the secret is there, never what it is, so no log line built from these types can sign anyone in.

use serde::{Deserialize, Serialize};

use crate::kernel::time::Timestamp;

/// Observable traits of a browser. See `browser-traits` in the WIT.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrowserTraits {
    /// Raw user agent.
    pub user_agent: String,
    /// Browser family, e.g. `Chrome`.
    pub browser_family: Option<String>,
    /// Browser major version.
    pub browser_major: Option<u32>,
    /// Operating system.
    pub platform: Option<String>,
    /// Preferred language tag.
    pub language: Option<String>,
    /// IANA time zone.
    pub time_zone: Option<String>,
    /// Coarse screen class.
    pub screen_class: Option<String>,
}

/// What the browser presented. See `device-presentation` in the WIT.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DevicePresentation {
    /// The trusted-device cookie value, if any. A bearer secret: redacted in `Debug`.
    pub cookie: Option<String>,
    /// Browser traits.
    pub traits: BrowserTraits,
    /// Client IP.
    pub ip: String,
}

impl std::fmt::Debug for DevicePresentation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevicePresentation")
            .field("cookie", &self.cookie.as_ref().map(|_| "<redacted>"))
            .field("traits", &self.traits)
            .field("ip", &self.ip)
            .finish()
    }
}

/// The IdP's context for one login. See `login-context` in the WIT.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginContext {
    /// User id.
    pub user_id: String,
    /// Organization id.
    pub org_id: String,
    /// Address codes go to.
    pub email: String,
    /// IdP roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Preferred language.
    #[serde(default)]
    pub locale: Option<String>,
    /// Browser and network.
    #[serde(default)]
    pub device: DevicePresentation,
}

/// Who acts in a management call. See `actor` in the WIT.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    /// Acting user.
    pub user_id: String,
    /// Acting user's org.
    pub org_id: String,
    /// Acting user's roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Client IP.
    #[serde(default)]
    pub ip: String,
    /// Client user agent.
    #[serde(default)]
    pub user_agent: String,
}

/// Why a decision was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    /// Stable rule id, e.g. `platform:mfa-required`.
    pub rule: String,
    /// Plain-language sentence.
    pub message: String,
}

/// What a challenge is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Purpose {
    /// Second factor for a login.
    Login,
    /// Confirming the address while enrolling.
    Enrollment,
    /// Confirming a changed address.
    EmailChange,
}

/// A pending step, as the caller sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeView {
    /// Opaque id.
    pub challenge_id: String,
    /// What it is for.
    pub purpose: Purpose,
    /// Masked destination.
    pub masked_email: String,
    /// When the challenge lapses.
    pub expires_at: Timestamp,
    /// Why a code is asked for.
    pub why: Explanation,
}

/// The login may proceed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allowed {
    /// Why.
    pub why: Explanation,
    /// RFC 8176 methods this step vouches for: `["mfa"]` when a trusted device (a browser that
    /// passed a code) stands in for the code, empty when no second factor was asked.
    pub amr: Vec<String>,
    /// When the second factor was last passed: for a trusted device, when its code was entered.
    pub second_factor_at: Option<Timestamp>,
    /// Trusted device that allowed it.
    pub device_id: Option<String>,
    /// Cookie to set (rotated token). A bearer secret: redacted in `Debug`.
    pub set_cookie: Option<String>,
}

impl std::fmt::Debug for Allowed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Allowed")
            .field("why", &self.why)
            .field("amr", &self.amr)
            .field("second_factor_at", &self.second_factor_at)
            .field("device_id", &self.device_id)
            .field(
                "set_cookie",
                &self.set_cookie.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// The login must not proceed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Denied {
    /// Why.
    pub why: Explanation,
}

/// The answer to `begin`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Decision {
    /// Let it through.
    Allow(Allowed),
    /// Ask for a code.
    Challenge(ChallengeView),
    /// Refuse.
    Deny(Denied),
}

/// The answer to `send-code`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeSent {
    /// Same code sent again.
    pub resent: bool,
    /// Code expiry.
    pub code_expires_at: Timestamp,
    /// Emails left in the window.
    pub sends_left: u32,
}

/// The answer to a successful `verify`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verified {
    /// RFC 8176 methods.
    pub amr: Vec<String>,
    /// When the code was accepted (the call's time).
    pub second_factor_at: Timestamp,
    /// Trusted device created.
    pub device_id: Option<String>,
    /// Cookie to set (a new device's token). A bearer secret: redacted in `Debug`.
    pub set_cookie: Option<String>,
    /// The step-up token of this sign-in: `change-email` needs it within
    /// [`crate::policy::enrollment::FRESH_VERIFICATION_SECONDS`]. A bearer secret: redacted in
    /// `Debug`.
    pub step_up: Option<String>,
}

impl std::fmt::Debug for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verified")
            .field("amr", &self.amr)
            .field("second_factor_at", &self.second_factor_at)
            .field("device_id", &self.device_id)
            .field(
                "set_cookie",
                &self.set_cookie.as_ref().map(|_| "<redacted>"),
            )
            .field("step_up", &self.step_up.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A user's MFA state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserStatus {
    /// Confirmed MFA email.
    pub enrolled: bool,
    /// Locked by wrong guesses.
    pub locked: bool,
    /// Consecutive wrong codes.
    pub consecutive_failures: u32,
    /// Verify refused until then.
    pub verify_blocked_until: Option<Timestamp>,
    /// Active challenge id.
    pub active_challenge: Option<String>,
    /// Active code expiry.
    pub code_expires_at: Option<Timestamp>,
    /// Sends left in the window.
    pub sends_left: u32,
    /// When the window next allows a send, if it refuses now.
    pub next_send_at: Option<Timestamp>,
}

/// One trusted device, as its owner sees it. See `device-info` in the WIT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// Identifier, to revoke it.
    pub device_id: String,
    /// e.g. "Chrome on Windows".
    pub label: String,
    /// First trusted.
    pub first_trusted_at: Timestamp,
    /// Last let a login through.
    pub last_used_at: Timestamp,
    /// Coarse network last seen.
    pub last_network: String,
    /// Trust ends.
    pub expires_at: Timestamp,
}

/// A credential change the IdP reports. See `credential-change` in the WIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CredentialChange {
    /// The password changed.
    PasswordChanged,
    /// MFA was reset.
    MfaReset,
}
