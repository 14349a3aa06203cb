//! Wall-clock helpers. A plugin has no clock of its own: it reads `request.now_unix_ms` (UTC)
//! and turns it into local date and time with a fixed UTC offset. Time zones are offsets only
//! (`UTC`, `+02:00`, `UTC-5`): there is no zone database, so daylight saving is the
//! configuration's business.

use std::fmt;

/// A fixed offset from UTC, in whole minutes (−23:59 … +23:59).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct UtcOffset {
    minutes: i32,
}

impl UtcOffset {
    /// UTC itself.
    pub const UTC: UtcOffset = UtcOffset { minutes: 0 };

    /// An offset of `minutes` east of UTC; `None` beyond ±23:59.
    pub fn from_minutes(minutes: i32) -> Option<UtcOffset> {
        (minutes.abs() < 24 * 60).then_some(UtcOffset { minutes })
    }

    /// Minutes east of UTC.
    pub fn minutes(self) -> i32 {
        self.minutes
    }

    /// Parses `UTC`, `GMT`, `Z`, or an offset with an optional `UTC`/`GMT` prefix:
    /// `+02:00`, `-0530`, `+2`, `UTC+2`, `GMT-03:30`.
    pub fn parse(s: &str) -> Result<UtcOffset, TimeError> {
        let err = || {
            TimeError(format!(
                "`{s}` is not a UTC offset like UTC, +02:00 or UTC-5"
            ))
        };
        let t = s.trim();
        let t = t
            .strip_prefix("UTC")
            .or_else(|| t.strip_prefix("GMT"))
            .unwrap_or(t);
        if t.is_empty() || t == "Z" {
            return Ok(UtcOffset::UTC);
        }
        let (sign, rest) = match t.as_bytes()[0] {
            b'+' => (1, &t[1..]),
            b'-' => (-1, &t[1..]),
            _ => return Err(err()),
        };
        let (h, m) = match rest.split_once(':') {
            Some((h, m)) => (h, m),
            None if rest.len() == 4 => rest.split_at(2),
            None => (rest, "0"),
        };
        let h = parse_small(h, 2).filter(|h| *h < 24).ok_or_else(err)?;
        let m = parse_small(m, 2).filter(|m| *m < 60).ok_or_else(err)?;
        UtcOffset::from_minutes(sign * (h as i32 * 60 + m as i32)).ok_or_else(err)
    }
}

/// A clock time within a day, to the minute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeOfDay {
    /// 0–23.
    pub hour: u8,
    /// 0–59.
    pub minute: u8,
}

impl TimeOfDay {
    /// Parses `HH:MM` (`8:00`, `08:00`, `23:59`); `24:00` means the end of the day.
    pub fn parse(s: &str) -> Result<TimeOfDay, TimeError> {
        let err = || TimeError(format!("`{s}` is not a time of day like 08:00"));
        let (h, m) = s.trim().split_once(':').ok_or_else(err)?;
        let (hour, minute) = (
            parse_small(h, 2).ok_or_else(err)?,
            parse_small(m, 2).ok_or_else(err)?,
        );
        if m.len() != 2 || minute > 59 || hour > 24 || (hour == 24 && minute != 0) {
            return Err(err());
        }
        Ok(TimeOfDay { hour, minute })
    }

    /// Minutes since midnight (0–1440).
    pub fn minutes(self) -> u32 {
        self.hour as u32 * 60 + self.minute as u32
    }

    /// True if `self` is in the window from `open` (inclusive) to `close` (exclusive). A
    /// window with `close` before `open` runs over midnight; `open == close` is empty.
    pub fn is_within(self, open: TimeOfDay, close: TimeOfDay) -> bool {
        let (t, o, c) = (self.minutes(), open.minutes(), close.minutes());
        if o <= c {
            o <= t && t < c
        } else {
            t >= o || t < c
        }
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.hour, self.minute)
    }
}

/// A day of the week.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Weekday {
    /// Monday.
    Monday,
    /// Tuesday.
    Tuesday,
    /// Wednesday.
    Wednesday,
    /// Thursday.
    Thursday,
    /// Friday.
    Friday,
    /// Saturday.
    Saturday,
    /// Sunday.
    Sunday,
}

impl Weekday {
    const ALL: [Weekday; 7] = [
        Weekday::Monday,
        Weekday::Tuesday,
        Weekday::Wednesday,
        Weekday::Thursday,
        Weekday::Friday,
        Weekday::Saturday,
        Weekday::Sunday,
    ];

    /// Parses an English day name or its first three letters, in any case (`mon`, `Friday`).
    pub fn parse(s: &str) -> Option<Weekday> {
        let s = s.trim().to_ascii_lowercase();
        const NAMES: [&str; 7] = [
            "monday",
            "tuesday",
            "wednesday",
            "thursday",
            "friday",
            "saturday",
            "sunday",
        ];
        let i = NAMES
            .iter()
            .position(|n| s == *n || (s.len() == 3 && n.starts_with(&s)))?;
        Some(Weekday::ALL[i])
    }

    /// True for Saturday and Sunday.
    pub fn is_weekend(self) -> bool {
        matches!(self, Weekday::Saturday | Weekday::Sunday)
    }
}

/// A moment as read on a local clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalTime {
    /// The year, e.g. 2026.
    pub year: i32,
    /// 1–12.
    pub month: u8,
    /// 1–31.
    pub day: u8,
    /// The day of the week.
    pub weekday: Weekday,
    /// Hour and minute.
    pub time: TimeOfDay,
    /// 0–59.
    pub second: u8,
}

/// The local date and time at `now_unix_ms` (from the request) in `offset`.
pub fn local_time(now_unix_ms: u64, offset: UtcOffset) -> LocalTime {
    let secs = (now_unix_ms / 1000) as i64 + offset.minutes as i64 * 60;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    LocalTime {
        year,
        month,
        day,
        // 1970-01-01 was a Thursday.
        weekday: Weekday::ALL[(days + 3).rem_euclid(7) as usize],
        time: TimeOfDay {
            hour: (rem / 3600) as u8,
            minute: (rem % 3600 / 60) as u8,
        },
        second: (rem % 60) as u8,
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
    (year, month, day)
}

fn parse_small(s: &str, max_len: usize) -> Option<u8> {
    let ok = !s.is_empty() && s.len() <= max_len && s.bytes().all(|b| b.is_ascii_digit());
    if ok { s.parse().ok() } else { None }
}

/// Text that is not a time, offset or day; the message says what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeError(pub String);

impl fmt::Display for TimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TimeError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn tod(s: &str) -> TimeOfDay {
        TimeOfDay::parse(s).unwrap()
    }

    #[test]
    fn offsets_parse() {
        for (s, m) in [
            ("UTC", 0),
            ("Z", 0),
            ("GMT", 0),
            ("+02:00", 120),
            ("-0530", -330),
            ("UTC+2", 120),
            ("GMT-03:30", -210),
            ("+23:59", 1439),
        ] {
            assert_eq!(UtcOffset::parse(s).map(UtcOffset::minutes), Ok(m), "{s}");
        }
        for bad in [
            "CET",
            "+24:00",
            "+2:60",
            "UTC+",
            "+123",
            "02:00",
            "Europe/Berlin",
        ] {
            assert!(UtcOffset::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(UtcOffset::parse(""), Ok(UtcOffset::UTC));
    }

    #[test]
    fn local_time_of_known_instants() {
        // 2026-11-23T15:43:20.500Z, a Monday.
        let t = local_time(1_795_448_600_500, UtcOffset::UTC);
        assert_eq!(
            (t.year, t.month, t.day, t.weekday),
            (2026, 11, 23, Weekday::Monday)
        );
        assert_eq!((t.time, t.second), (tod("15:43"), 20));
        // The same instant at -16:00 is the previous day.
        let t = local_time(
            1_795_448_600_500,
            UtcOffset::from_minutes(-16 * 60).unwrap(),
        );
        assert_eq!(
            (t.day, t.weekday, t.time),
            (22, Weekday::Sunday, tod("23:43"))
        );
        let epoch = local_time(0, UtcOffset::UTC);
        assert_eq!(
            (epoch.year, epoch.month, epoch.day, epoch.weekday),
            (1970, 1, 1, Weekday::Thursday)
        );
        // Leap day 2024-02-29T23:59:59Z.
        let t = local_time(1_709_251_199_000, UtcOffset::UTC);
        assert_eq!(
            (t.year, t.month, t.day, t.time, t.second),
            (2024, 2, 29, tod("23:59"), 59)
        );
    }

    #[test]
    fn windows_including_overnight() {
        assert!(tod("08:00").is_within(tod("08:00"), tod("18:00")));
        assert!(!tod("18:00").is_within(tod("08:00"), tod("18:00")));
        assert!(tod("23:30").is_within(tod("22:00"), tod("06:00")));
        assert!(tod("05:59").is_within(tod("22:00"), tod("06:00")));
        assert!(!tod("12:00").is_within(tod("22:00"), tod("06:00")));
        assert!(!tod("12:00").is_within(tod("09:00"), tod("09:00")));
        assert!(tod("23:59").is_within(tod("00:00"), tod("24:00")));
        for bad in ["8", "8:0", "25:00", "24:01", "12:60", "ab:cd", "-1:00"] {
            assert!(TimeOfDay::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn weekdays_parse() {
        assert_eq!(Weekday::parse("mon"), Some(Weekday::Monday));
        assert_eq!(Weekday::parse("Sunday"), Some(Weekday::Sunday));
        assert_eq!(Weekday::parse("sun."), None);
        assert!(Weekday::Saturday.is_weekend() && !Weekday::Friday.is_weekend());
    }
}
