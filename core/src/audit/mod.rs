//! Audit records: who did what, when (UTC), where (IP, user agent, device), with what outcome and why.
//! This module holds the events; [`chain`] links and seals them into one tamper-evident stream per
//! organization, and [`verify`] checks a stored log against that chain.
//!
//! Schema `v: 2`, one JSON object per line, keys in exactly this order and no insignificant
//! whitespace (the canonical form the hash chain hashes; see [`chain`]):
//!
//! | key | meaning |
//! |---|---|
//! | `v` | schema version, `2` (1 had no chain fields) |
//! | `id` | random event id (128 bits, hex) |
//! | `seq` | position in the organization's stream: 1, 2, 3, … with no gaps |
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
//! | `prev` | `hash` of the organization's previous record (64 zeros for its first) |
//! | `hash` | SHA-256 of the line before `,"hash"` |
//! | `seal` | HMAC of `hash` under the seal key, or `null` when unsealed |
//!
//! Never present: a code, a seed, a device token, a cookie, a key, or an email address (the subject's
//! id identifies the person; addresses change and are personal data the trail does not need).

pub mod chain;
pub mod verify;

use self::chain::{Record, SealKey};
use crate::kernel::time::Timestamp;

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
    /// A code was refused (wrong, used, unknown challenge, guesses exhausted).
    CodeRejected,
    /// A code was entered after its code or challenge had expired.
    CodeExpired,
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
    /// A user confirmed their MFA address with a code.
    Enrolled,
    /// A user moved MFA to a new, confirmed address.
    EmailChanged,
    /// An admin opened a page of the admin console (reason: the page and its range).
    AdminConsoleViewed,
    /// The identity provider put users on the organization's roster or took them off (reason: how
    /// many).
    RosterSynced,
}

impl Action {
    /// Every action, in the order records' documentation lists them.
    pub const ALL: [Self; 23] = [
        Self::ChallengeStarted,
        Self::AccessAllowed,
        Self::AccessDenied,
        Self::CodeSent,
        Self::CodeResent,
        Self::CodeDeliveryFailed,
        Self::CodeVerified,
        Self::CodeRejected,
        Self::CodeExpired,
        Self::SendThrottled,
        Self::VerifyThrottled,
        Self::UserLocked,
        Self::DeviceTrusted,
        Self::DeviceChallenged,
        Self::DeviceRevoked,
        Self::DeviceTokenReuse,
        Self::PolicyChanged,
        Self::MfaReset,
        Self::BrandingChanged,
        Self::Enrolled,
        Self::EmailChanged,
        Self::AdminConsoleViewed,
        Self::RosterSynced,
    ];

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
            Self::CodeExpired => "code_expired",
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
            Self::Enrolled => "enrolled",
            Self::EmailChanged => "email_changed",
            Self::AdminConsoleViewed => "admin_console_viewed",
            Self::RosterSynced => "roster_synced",
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

impl Event {
    /// The record for this event at `seq` after `prev`, as its canonical line and its hash.
    #[must_use]
    pub fn seal(
        &self,
        id: &str,
        seq: u64,
        at: Timestamp,
        prev: &str,
        key: Option<&SealKey>,
    ) -> (String, String) {
        let record = Record {
            v: SCHEMA_VERSION,
            id: id.to_owned(),
            seq,
            at: at.rfc3339(),
            org: self.org.clone(),
            actor: self.actor.clone(),
            subject: self.subject.clone(),
            action: self.action.as_str().to_owned(),
            outcome: self.outcome.as_str().to_owned(),
            reason: self.reason.clone(),
            ip: self.ip.clone(),
            user_agent: self
                .user_agent
                .as_ref()
                .map(|ua| ua.chars().take(200).collect()),
            device_id: self.device_id.clone(),
            challenge_id: self.challenge_id.clone(),
            prev: prev.to_owned(),
            hash: String::new(),
            seal: None,
        };
        chain::seal_line(&record.prefix_json(), key)
    }
}

/// The schema version records carry.
pub const SCHEMA_VERSION: u8 = 2;

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
        let (line, hash) = ev.seal("e1", 7, Timestamp(0), crate::kernel::ports::GENESIS, None);
        assert!(line.starts_with(
            r#"{"v":2,"id":"e1","seq":7,"at":"1970-01-01T00:00:00Z","org":"acme","actor":"u1","subject":"u1","action":"code_sent","outcome":"success","reason":null,"ip":"203.0.113.9","user_agent":"xxx"#
        ), "{line}");
        let tail = format!(
            r#","device_id":null,"challenge_id":"c1","prev":"{}","hash":"{hash}","seal":null}}"#,
            crate::kernel::ports::GENESIS
        );
        assert!(line.ends_with(&tail), "{line}");
        assert!(!line.contains(&"x".repeat(201)));
    }

    #[test]
    fn all_lists_every_action_once_in_order() {
        for (i, action) in Action::ALL.iter().enumerate() {
            // Exhaustive: a new action does not compile here until it has its place in ALL.
            let at = match action {
                Action::ChallengeStarted => 0,
                Action::AccessAllowed => 1,
                Action::AccessDenied => 2,
                Action::CodeSent => 3,
                Action::CodeResent => 4,
                Action::CodeDeliveryFailed => 5,
                Action::CodeVerified => 6,
                Action::CodeRejected => 7,
                Action::CodeExpired => 8,
                Action::SendThrottled => 9,
                Action::VerifyThrottled => 10,
                Action::UserLocked => 11,
                Action::DeviceTrusted => 12,
                Action::DeviceChallenged => 13,
                Action::DeviceRevoked => 14,
                Action::DeviceTokenReuse => 15,
                Action::PolicyChanged => 16,
                Action::MfaReset => 17,
                Action::BrandingChanged => 18,
                Action::Enrolled => 19,
                Action::EmailChanged => 20,
                Action::AdminConsoleViewed => 21,
                Action::RosterSynced => 22,
            };
            assert_eq!(at, i, "{action:?}");
        }
    }
}
