//! Settings the host supplies (see `wit/config.wit`), parsed and bounded here so that every host gets
//! the same safe limits. A value outside its bounds is refused, never clamped: a typo in a deployment
//! must not silently weaken MFA.

use crate::kernel::error::{Error, Result};

/// Tunable limits, each within a safe range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// How long a code works after it is first sent: 60 to 600 s (NIST and the brief: at most 10 min).
    pub code_ttl_seconds: i64,
    /// Digits per code: 6 to 9.
    pub code_digits: u8,
    /// Emails per user per send window: 1 to 3.
    pub sends_per_window: u32,
    /// The send window: 300 to 3600 s.
    pub send_window_seconds: i64,
    /// How long a challenge (one login attempt) lives: 300 to 3600 s.
    pub challenge_ttl_seconds: i64,
    /// Days a remembered browser stays trusted: 0 (never remember) to 30.
    pub trust_days: u8,
    /// Whether users may ask to be remembered at all.
    pub allow_remember_device: bool,
    /// IPv4 prefix length whose change re-asks a trusted device: 8 to 32.
    pub ipv4_change_prefix: u8,
    /// IPv6 prefix length whose change re-asks a trusted device: 16 to 128.
    pub ipv6_change_prefix: u8,
    /// Roles that require MFA everywhere on the platform (organizations can add, never remove).
    pub required_roles: Vec<String>,
    /// Whether organization ids, user ids and roles are folded to lower case before anything else
    /// (`id_case = fold`), for an IdP whose ids are case-insensitive. Off (`exact`) by default: ids
    /// are the IdP's immutable, canonical ids, compared byte for byte.
    pub fold_ids: bool,
}

/// The platform's default privileged roles: administrators, clinicians and coaches with patient access.
pub const DEFAULT_REQUIRED_ROLES: [&str; 6] = [
    "platform-admin",
    "org-admin",
    "admin",
    "provider",
    "clinician",
    "coach-with-patients",
];

impl Default for Settings {
    fn default() -> Self {
        Self {
            code_ttl_seconds: 600,
            code_digits: 6,
            sends_per_window: 3,
            send_window_seconds: 300,
            challenge_ttl_seconds: 1800,
            trust_days: 30,
            allow_remember_device: true,
            ipv4_change_prefix: 16,
            ipv6_change_prefix: 48,
            required_roles: DEFAULT_REQUIRED_ROLES
                .iter()
                .map(|r| (*r).to_owned())
                .collect(),
            fold_ids: false,
        }
    }
}

fn bounded(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: i64,
    min: i64,
    max: i64,
) -> Result<i64> {
    let Some(raw) = lookup(name) else {
        return Ok(default);
    };
    match raw.trim().parse::<i64>() {
        Ok(v) if (min..=max).contains(&v) => Ok(v),
        _ => Err(Error::Misconfigured(format!(
            "{name} must be a whole number from {min} to {max}"
        ))),
    }
}

impl Settings {
    /// Reads every setting through `lookup` (a config getter), applying defaults for absent ones.
    ///
    /// # Errors
    /// [`Error::Misconfigured`] naming the first setting out of bounds.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let d = Self::default();
        let digits = bounded(&lookup, "code_digits", d.code_digits.into(), 6, 9)?;
        let sends = bounded(&lookup, "sends_per_window", d.sends_per_window.into(), 1, 3)?;
        let small = |name: &str, default: u8, min: i64, max: i64| -> Result<u8> {
            bounded(&lookup, name, default.into(), min, max)
                .map(|v| u8::try_from(v).unwrap_or(default))
        };
        let trust_days = small("trust_days", d.trust_days, 0, 30)?;
        let ipv4_change_prefix = small("ipv4_change_prefix", d.ipv4_change_prefix, 8, 32)?;
        let ipv6_change_prefix = small("ipv6_change_prefix", d.ipv6_change_prefix, 16, 128)?;
        let allow_remember_device = match lookup("allow_remember_device").as_deref().map(str::trim)
        {
            None => d.allow_remember_device,
            Some("true") => true,
            Some("false") => false,
            Some(_) => {
                return Err(Error::Misconfigured(
                    "allow_remember_device must be true or false".to_owned(),
                ));
            }
        };
        let fold_ids = match lookup("id_case").as_deref().map(str::trim) {
            None | Some("exact") => false,
            Some("fold") => true,
            Some(_) => {
                return Err(Error::Misconfigured(
                    "id_case must be exact or fold".to_owned(),
                ));
            }
        };
        let required_roles = match lookup("required_roles") {
            None => d.required_roles.clone(),
            Some(list) => {
                let roles: Vec<String> = list
                    .split(',')
                    .map(str::trim)
                    .filter(|r| !r.is_empty())
                    .map(str::to_owned)
                    .collect();
                crate::kernel::input::roles(&roles).map_err(|_| {
                    Error::Misconfigured(
                        "required_roles must be a comma-separated list of roles".to_owned(),
                    )
                })?;
                roles
            }
        };
        Ok(Self {
            code_ttl_seconds: bounded(&lookup, "code_ttl_seconds", d.code_ttl_seconds, 60, 600)?,
            code_digits: u8::try_from(digits).unwrap_or(d.code_digits),
            sends_per_window: u32::try_from(sends).unwrap_or(d.sends_per_window),
            send_window_seconds: bounded(
                &lookup,
                "send_window_seconds",
                d.send_window_seconds,
                300,
                3600,
            )?,
            challenge_ttl_seconds: bounded(
                &lookup,
                "challenge_ttl_seconds",
                d.challenge_ttl_seconds,
                300,
                3600,
            )?,
            trust_days,
            allow_remember_device,
            ipv4_change_prefix,
            ipv6_change_prefix,
            required_roles,
            fold_ids,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_exact_unless_folding_is_asked_for() {
        let with = |v: &str| {
            let v = v.to_owned();
            Settings::from_lookup(move |n| (n == "id_case").then(|| v.clone()))
        };
        assert_eq!(with("exact").map(|s| s.fold_ids), Ok(false));
        assert_eq!(with("fold").map(|s| s.fold_ids), Ok(true));
        assert!(matches!(with("Fold"), Err(Error::Misconfigured(_))));
    }

    #[test]
    fn defaults_when_absent() {
        assert_eq!(Settings::from_lookup(|_| None), Ok(Settings::default()));
    }

    #[test]
    fn out_of_bounds_is_refused_not_clamped() {
        let err = Settings::from_lookup(|n| (n == "code_ttl_seconds").then(|| "3600".into()));
        assert!(matches!(err, Err(Error::Misconfigured(m)) if m.contains("code_ttl_seconds")));
        let err = Settings::from_lookup(|n| (n == "sends_per_window").then(|| "10".into()));
        assert!(matches!(err, Err(Error::Misconfigured(m)) if m.contains("sends_per_window")));
        let ok = Settings::from_lookup(|n| (n == "code_digits").then(|| "8".into()));
        assert_eq!(ok.map(|s| s.code_digits), Ok(8));
    }
}
