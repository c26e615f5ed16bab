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
        // Plain arithmetic rather than a date library: the component's size (BENCHMARKS.md).
        let (days, second) = (self.0.div_euclid(86_400), self.0.rem_euclid(86_400));
        let (year, month, day) = civil_from_days(days);
        if !(0..=9999).contains(&year) {
            return format!("@{}", self.0);
        }
        format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
            second / 3600,
            second % 3600 / 60,
            second % 60
        )
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
        let second = self.0.rem_euclid(86_400);
        format!("{:02}:{:02} UTC", second / 3600, second % 3600 / 60)
    }
}

/// The proleptic Gregorian date `(year, month, day)` of a count of days since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
#[must_use]
pub(crate) fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (year_of_era + era * 400 + i64::from(month <= 2), month, day)
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
    fn formats_every_era_as_a_date_library_does() {
        // Years 0 to 9999, every 999,983 seconds (a prime: every time of day and day of the year).
        for second in (-62_167_219_200..=253_402_300_799_i64).step_by(999_983) {
            let expected = jiff::Timestamp::from_second(second)
                .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
                .unwrap_or_default();
            assert_eq!(Timestamp(second).rfc3339(), expected, "{second}");
        }
        assert_eq!(Timestamp(-62_167_219_201).rfc3339(), "@-62167219201");
        assert_eq!(Timestamp(i64::MAX).rfc3339(), format!("@{}", i64::MAX));
        assert_eq!(Timestamp(-1).clock_utc(), "23:59 UTC");
    }

    #[test]
    fn seconds_until_never_negative() {
        assert_eq!(Timestamp(10).seconds_until(Timestamp(5)), 0);
        assert_eq!(Timestamp(5).seconds_until(Timestamp(10)), 5);
    }
}
