//! Audit records: who did what, when (UTC), where (IP, user agent, device), with what outcome and why.
//!
//! Schema `v: 1`, one JSON object per line, keys in exactly this order and no insignificant
//! whitespace (the canonical form the hash chain of the audit issue will hash):
//!
//! | key | meaning |
//! |---|---|
//! | `v` | schema version, `1` |
//! | `id` | random event id (128 bits, hex) |
//! | `seq` | position in the organization's stream, from 1 |
//! | `at` | UTC time, RFC 3339 with `Z` |
//! | `org` | organization id |
//! | `actor` | who acted (the user for login steps, the admin for admin calls) |
//! | `subject` | whose MFA it is about |
//! | `action` | see [`Action`] |
//! | `outcome` | `success`, `failure` or `denied` |
//! | `reason` | the deciding rule or failure reason, or `null` |
//! | `ip` | client IP, or `null` |
//! | `user_agent` | the client's user agent, cut to 200 characters, or `null` |
//! | `device_id` | trusted device involved, or `null` |
//! | `challenge_id` | challenge involved, or `null` |
//!
//! Never present: a code, a seed, a device token, a cookie, a key, or an email address (the subject's
//! id identifies the person; addresses change and are personal data the trail does not need).

use serde::Serialize;

use crate::time::Timestamp;

/// Every action the trail knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A login was judged to need a code; a challenge opened.
    ChallengeStarted,
    /// A login was let through without a code.
    AccessAllowed,
    /// A login was refused (e.g. locked user).
    AccessDenied,
    /// A fresh code was handed to the mailer.
    CodeSent,
    /// The same live code was handed to the mailer again.
    CodeResent,
    /// The mailer refused a code email.
    CodeDeliveryFailed,
    /// A code was accepted.
    CodeVerified,
    /// A code was refused (wrong, expired, used, unknown challenge, or user locked).
    CodeRejected,
    /// A send was refused by the send window.
    SendThrottled,
    /// A verify was refused by the wrong-guess delay.
    VerifyThrottled,
    /// The user just became locked.
    UserLocked,
    /// A browser was remembered (or its trust renewed).
    DeviceTrusted,
    /// A remembered browser was asked for a code anyway (reason: new browser, new network, expired).
    DeviceChallenged,
    /// A remembered browser was forgotten (by its owner, an admin, a credential change, the limit).
    DeviceRevoked,
    /// A token that had been rotated away was presented: the device was revoked.
    DeviceTokenReuse,
    /// An organization's policy was changed.
    PolicyChanged,
    /// An admin reset a user's MFA (lock, counters, challenge, devices).
    MfaReset,
    /// An organization's email branding was changed.
    BrandingChanged,
}

impl Action {
    /// The action's name in records.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ChallengeStarted => "challenge_started",
            Self::AccessAllowed => "access_allowed",
            Self::AccessDenied => "access_denied",
            Self::CodeSent => "code_sent",
            Self::CodeResent => "code_resent",
            Self::CodeDeliveryFailed => "code_delivery_failed",
            Self::CodeVerified => "code_verified",
            Self::CodeRejected => "code_rejected",
            Self::SendThrottled => "send_throttled",
            Self::VerifyThrottled => "verify_throttled",
            Self::UserLocked => "user_locked",
            Self::DeviceTrusted => "device_trusted",
            Self::DeviceChallenged => "device_challenged",
            Self::DeviceRevoked => "device_revoked",
            Self::DeviceTokenReuse => "device_token_reuse",
            Self::PolicyChanged => "policy_changed",
            Self::MfaReset => "mfa_reset",
            Self::BrandingChanged => "branding_changed",
        }
    }
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It took effect.
    Success,
    /// It was attempted and failed.
    Failure,
    /// It was refused by a rule.
    Denied,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Denied => "denied",
        }
    }
}

/// An event before it gets its id and sequence number.
#[derive(Debug, Clone)]
pub struct Event {
    /// Organization.
    pub org: String,
    /// Who acted.
    pub actor: String,
    /// About whom.
    pub subject: String,
    /// What.
    pub action: Action,
    /// How it ended.
    pub outcome: Outcome,
    /// Why.
    pub reason: Option<String>,
    /// Where from.
    pub ip: Option<String>,
    /// With what.
    pub user_agent: Option<String>,
    /// Device involved.
    pub device_id: Option<String>,
    /// Challenge involved.
    pub challenge_id: Option<String>,
}

#[derive(Serialize)]
struct Line<'a> {
    v: u8,
    id: &'a str,
    seq: u64,
    at: String,
    org: &'a str,
    actor: &'a str,
    subject: &'a str,
    action: &'a str,
    outcome: &'a str,
    reason: Option<&'a str>,
    ip: Option<&'a str>,
    user_agent: Option<String>,
    device_id: Option<&'a str>,
    challenge_id: Option<&'a str>,
}

impl Event {
    /// The canonical JSON line for this event.
    #[must_use]
    pub fn line(&self, id: &str, seq: u64, at: Timestamp) -> String {
        let line = Line {
            v: 1,
            id,
            seq,
            at: at.rfc3339(),
            org: &self.org,
            actor: &self.actor,
            subject: &self.subject,
            action: self.action.as_str(),
            outcome: self.outcome.as_str(),
            reason: self.reason.as_deref(),
            ip: self.ip.as_deref(),
            user_agent: self
                .user_agent
                .as_ref()
                .map(|ua| ua.chars().take(200).collect()),
            device_id: self.device_id.as_deref(),
            challenge_id: self.challenge_id.as_deref(),
        };
        // Serializing a struct of strings and integers cannot fail.
        serde_json::to_string(&line).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_line_has_fixed_key_order_and_no_whitespace() {
        let ev = Event {
            org: "acme".into(),
            actor: "u1".into(),
            subject: "u1".into(),
            action: Action::CodeSent,
            outcome: Outcome::Success,
            reason: None,
            ip: Some("203.0.113.9".into()),
            user_agent: Some("x".repeat(300)),
            device_id: None,
            challenge_id: Some("c1".into()),
        };
        let line = ev.line("e1", 7, Timestamp(0));
        assert!(line.starts_with(
            r#"{"v":1,"id":"e1","seq":7,"at":"1970-01-01T00:00:00Z","org":"acme","actor":"u1","subject":"u1","action":"code_sent","outcome":"success","reason":null,"ip":"203.0.113.9","user_agent":"xxx"#
        ), "{line}");
        assert!(
            line.ends_with(r#","device_id":null,"challenge_id":"c1"}"#),
            "{line}"
        );
        assert!(!line.contains(&"x".repeat(201)));
    }
}
