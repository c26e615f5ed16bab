//! Time as a value. The core is handed `now`; it never asks for it.

use serde::{Deserialize, Serialize};

/// An instant: whole seconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// This instant plus `secs` seconds (saturating).
    #[must_use]
    pub fn plus(self, secs: i64) -> Self {
        Self(self.0.saturating_add(secs))
    }

    /// Seconds from `self` until `later`, zero if `later` is not later.
    #[must_use]
    pub fn seconds_until(self, later: Self) -> u32 {
        u32::try_from(later.0.saturating_sub(self.0).max(0)).unwrap_or(u32::MAX)
    }

    /// RFC 3339 in UTC with a `Z`, e.g. `2026-11-24T17:42:00Z`. Out-of-range instants print as
    /// their raw seconds, which never happens for clocks this side of year 9999.
    #[must_use]
    pub fn rfc3339(self) -> String {
        let format =
            time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
        time::OffsetDateTime::from_unix_timestamp(self.0)
            .ok()
            .and_then(|t| t.format(&format).ok())
            .unwrap_or_else(|| format!("@{}", self.0))
    }

    /// The UTC date, `YYYY-MM-DD`, e.g. for a trusted browser's end of trust.
    #[must_use]
    pub fn date(self) -> String {
        self.rfc3339()
            .split('T')
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    /// `HH:MM UTC`, for the code email.
    #[must_use]
    pub fn clock_utc(self) -> String {
        let format = time::macros::format_description!("[hour]:[minute] UTC");
        time::OffsetDateTime::from_unix_timestamp(self.0)
            .ok()
            .and_then(|t| t.format(&format).ok())
            .unwrap_or_else(|| format!("@{}", self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc() {
        assert_eq!(Timestamp(0).rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(Timestamp(1_795_000_000).rfc3339(), "2026-11-18T11:06:40Z");
        assert_eq!(Timestamp(1_795_000_000).clock_utc(), "11:06 UTC");
    }

    #[test]
    fn seconds_until_never_negative() {
        assert_eq!(Timestamp(10).seconds_until(Timestamp(5)), 0);
        assert_eq!(Timestamp(5).seconds_until(Timestamp(10)), 5);
    }
}
