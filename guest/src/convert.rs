//! The one place where WIT types and core types meet. Field for field, no decisions.

use mfa_step_core as core;

use crate::bindings::mfa_step::plugin::types as wit;

pub(crate) fn login_context(c: wit::LoginContext) -> core::LoginContext {
    let t = c.device.traits;
    core::LoginContext {
        user_id: c.user_id,
        org_id: c.org_id,
        email: c.email,
        roles: c.roles,
        locale: c.locale,
        device: core::DevicePresentation {
            cookie: c.device.cookie,
            traits: core::BrowserTraits {
                user_agent: t.user_agent,
                browser_family: t.browser_family,
                browser_major: t.browser_major,
                platform: t.platform,
                language: t.language,
                time_zone: t.time_zone,
                screen_class: t.screen_class,
            },
            ip: c.device.ip,
        },
    }
}

fn explanation(e: core::Explanation) -> wit::Explanation {
    wit::Explanation {
        rule: e.rule,
        message: e.message,
    }
}

fn purpose(p: core::Purpose) -> wit::ChallengePurpose {
    match p {
        core::Purpose::Login => wit::ChallengePurpose::Login,
        core::Purpose::Enrollment => wit::ChallengePurpose::Enrollment,
        core::Purpose::EmailChange => wit::ChallengePurpose::EmailChange,
    }
}

pub(crate) fn challenge(c: core::ChallengeView) -> wit::Challenge {
    wit::Challenge {
        challenge_id: c.challenge_id,
        purpose: purpose(c.purpose),
        masked_email: c.masked_email,
        expires_at: c.expires_at.0,
        why: explanation(c.why),
    }
}

pub(crate) fn decision(d: core::Decision) -> wit::Decision {
    match d {
        core::Decision::Allow(a) => wit::Decision::Allow(wit::Allowed {
            why: explanation(a.why),
            amr: a.amr,
            second_factor_at: a.second_factor_at.map(|t| t.0),
            device_id: a.device_id,
            set_cookie: a.set_cookie,
        }),
        core::Decision::Challenge(c) => wit::Decision::Challenge(challenge(c)),
        core::Decision::Deny(d) => wit::Decision::Deny(wit::Denied {
            why: explanation(d.why),
        }),
    }
}

pub(crate) fn code_sent(s: core::CodeSent) -> wit::CodeSent {
    wit::CodeSent {
        resent: s.resent,
        code_expires_at: s.code_expires_at.0,
        sends_left: s.sends_left,
    }
}

pub(crate) fn verified(v: core::Verified) -> wit::Verified {
    wit::Verified {
        amr: v.amr,
        second_factor_at: v.second_factor_at.0,
        device_id: v.device_id,
        set_cookie: v.set_cookie,
        step_up: v.step_up,
    }
}

pub(crate) fn user_status(s: core::UserStatus) -> wit::UserStatus {
    wit::UserStatus {
        enrolled: s.enrolled,
        locked: s.locked,
        consecutive_failures: s.consecutive_failures,
        verify_blocked_until: s.verify_blocked_until.map(|t| t.0),
        active_challenge: s.active_challenge,
        code_expires_at: s.code_expires_at.map(|t| t.0),
        sends_left: s.sends_left,
        next_send_at: s.next_send_at.map(|t| t.0),
    }
}

/// The WIT error for a core error. The message is the core's `Display`, which never holds a secret.
pub(crate) fn error(e: core::Error) -> wit::MfaError {
    let (kind, field, retry_after_seconds) = match &e {
        core::Error::InvalidInput { field, .. } => (
            wit::ErrorKind::InvalidInput,
            Some((*field).to_owned()),
            None,
        ),
        core::Error::Rejected => (wit::ErrorKind::Rejected, None, None),
        core::Error::Throttled { retry_after } => {
            (wit::ErrorKind::Throttled, None, Some(*retry_after))
        }
        core::Error::Locked => (wit::ErrorKind::Locked, None, None),
        core::Error::Forbidden(_) => (wit::ErrorKind::Forbidden, None, None),
        core::Error::Store(_) | core::Error::Mail(_) | core::Error::Audit(_) => {
            (wit::ErrorKind::Unavailable, None, None)
        }
        core::Error::Misconfigured(_) => (wit::ErrorKind::Misconfigured, None, None),
        core::Error::NotImplemented(_) => (wit::ErrorKind::NotImplemented, None, None),
    };
    wit::MfaError {
        kind,
        message: e.to_string(),
        field,
        retry_after_seconds,
    }
}

pub(crate) fn actor(a: wit::Actor) -> core::Actor {
    core::Actor {
        user_id: a.user_id,
        org_id: a.org_id,
        roles: a.roles,
        ip: a.ip,
        user_agent: a.user_agent,
    }
}

pub(crate) fn device_info(d: core::DeviceInfo) -> wit::DeviceInfo {
    wit::DeviceInfo {
        device_id: d.device_id,
        label: d.label,
        first_trusted_at: d.first_trusted_at.0,
        last_used_at: d.last_used_at.0,
        last_network: d.last_network,
        expires_at: d.expires_at.0,
    }
}

pub(crate) fn credential_change(c: wit::CredentialChange) -> core::CredentialChange {
    match c {
        wit::CredentialChange::PasswordChanged => core::CredentialChange::PasswordChanged,
        wit::CredentialChange::MfaReset => core::CredentialChange::MfaReset,
    }
}

pub(crate) fn org_policy(p: core::policy::OrgPolicy) -> wit::OrgPolicy {
    wit::OrgPolicy {
        mandate: match p.mandate {
            core::policy::Mandate::Inherit => wit::Mandate::Inherit,
            core::policy::Mandate::Everyone => wit::Mandate::Everyone,
            core::policy::Mandate::ByRole => wit::Mandate::ByRole,
        },
        required_roles: p.required_roles,
        trust_days: p.trust_days,
        allow_remember_device: p.allow_remember_device,
        ipv4_change_prefix: p.ipv4_change_prefix,
        ipv6_change_prefix: p.ipv6_change_prefix,
        enrollment_grace_days: p.enrollment_grace_days,
        enrollment_grace_logins: p.enrollment_grace_logins,
    }
}

pub(crate) fn org_policy_in(p: wit::OrgPolicy) -> core::policy::OrgPolicy {
    core::policy::OrgPolicy {
        mandate: match p.mandate {
            wit::Mandate::Inherit => core::policy::Mandate::Inherit,
            wit::Mandate::Everyone => core::policy::Mandate::Everyone,
            wit::Mandate::ByRole => core::policy::Mandate::ByRole,
        },
        required_roles: p.required_roles,
        trust_days: p.trust_days,
        allow_remember_device: p.allow_remember_device,
        ipv4_change_prefix: p.ipv4_change_prefix,
        ipv6_change_prefix: p.ipv6_change_prefix,
        enrollment_grace_days: p.enrollment_grace_days,
        enrollment_grace_logins: p.enrollment_grace_logins,
    }
}

pub(crate) fn branding(b: core::email::branding::Branding) -> wit::Branding {
    wit::Branding {
        display_name: b.display_name,
        logo_url: b.logo_url,
        primary_color: b.primary_color,
        accent_color: b.accent_color,
        sender_name: b.sender_name,
        support_contact: b.support_contact,
        footer_text: b.footer_text,
        default_language: b.default_language,
    }
}

pub(crate) fn branding_in(b: wit::Branding) -> core::email::branding::Branding {
    core::email::branding::Branding {
        display_name: b.display_name,
        logo_url: b.logo_url,
        primary_color: b.primary_color,
        accent_color: b.accent_color,
        sender_name: b.sender_name,
        support_contact: b.support_contact,
        footer_text: b.footer_text,
        default_language: b.default_language,
    }
}

pub(crate) fn email_preview(m: core::OutgoingMail) -> wit::EmailPreview {
    wit::EmailPreview {
        subject: m.subject,
        html: m.html,
        text: m.text,
    }
}
