//! Example authorize plugin: access only during business hours, and never past closing time.
//!
//! Configuration (the `config` table of its `[[plugins]]` entry):
//! `open = "08:00"`, `close = "18:00"`, `timezone = "UTC"` (a fixed offset: `+02:00`,
//! `UTC-5`), and optionally `days = "mon,tue,wed,thu,fri"` (default: every day). A window
//! with `close` before `open` runs over midnight and belongs to the day it opens. Inside
//! the window the grant caps the lifetime at the time left until closing.

use sallyport_plugin::time::{self, TimeOfDay, UtcOffset, Weekday};
use sallyport_plugin::{Authorize, Decision, Grant, Request};

/// The business-hours policy.
pub struct BusinessHours;

struct Hours {
    open: TimeOfDay,
    close: TimeOfDay,
    offset: UtcOffset,
    days: Vec<Weekday>,
}

fn read_config() -> Result<Hours, String> {
    let get = |key: &str| {
        sallyport_plugin::config(key).ok_or(format!("business-hours: `{key}` is not configured"))
    };
    let days = match sallyport_plugin::config("days") {
        None => Vec::new(),
        Some(list) => list
            .split(',')
            .map(|d| {
                Weekday::parse(d).ok_or(format!("business-hours: `{}` is not a day", d.trim()))
            })
            .collect::<Result<_, _>>()?,
    };
    Ok(Hours {
        open: TimeOfDay::parse(&get("open")?).map_err(|e| format!("business-hours: {e}"))?,
        close: TimeOfDay::parse(&get("close")?).map_err(|e| format!("business-hours: {e}"))?,
        offset: UtcOffset::parse(&get("timezone")?).map_err(|e| format!("business-hours: {e}"))?,
        days,
    })
}

impl Authorize for BusinessHours {
    fn authorize(r: &Request) -> Decision {
        let h = match read_config() {
            Ok(h) => h,
            Err(e) => return Decision::deny(e),
        };
        let now = time::local_time(r.now_unix_ms, h.offset);
        let (t, open, close) = (now.time.minutes(), h.open.minutes(), h.close.minutes());
        // The day the current window opened: yesterday if we are past midnight in an overnight one.
        let opened_yesterday = open > close && t < close;
        let day = if opened_yesterday {
            time::local_time(r.now_unix_ms.saturating_sub(86_400_000), h.offset).weekday
        } else {
            now.weekday
        };
        if !now.time.is_within(h.open, h.close) || !(h.days.is_empty() || h.days.contains(&day)) {
            return Decision::deny(format!("outside business hours ({}–{})", h.open, h.close));
        }
        let minutes_left = if t < close {
            close - t
        } else {
            close + 24 * 60 - t
        };
        let seconds_left = minutes_left * 60 - u32::from(now.second);
        Decision::allow_with(Grant::new().with_max_ttl_seconds(seconds_left))
    }
}

sallyport_plugin::export_authorize!(BusinessHours);

#[cfg(test)]
mod tests {
    use super::*;
    use sallyport_plugin::testing;

    // 2026-11-23 (a Monday) 00:00:00 UTC.
    const MONDAY: u64 = 1_795_392_000_000;
    const HOUR: u64 = 3_600_000;

    fn at(ms: u64) -> Decision {
        BusinessHours::authorize(&Request::builder().now_unix_ms(ms).build())
    }

    fn configure(open: &str, close: &str, tz: &str, days: Option<&str>) {
        testing::set_config("open", open);
        testing::set_config("close", close);
        testing::set_config("timezone", tz);
        match days {
            Some(d) => testing::set_config("days", d),
            None => testing::remove_config("days"),
        }
    }

    #[test]
    fn inside_hours_the_grant_ends_at_closing() {
        configure("08:00", "18:00", "UTC", None);
        assert_eq!(
            at(MONDAY + 17 * HOUR + 30 * 60_000),
            Decision::allow_with(Grant::new().with_max_ttl_seconds(1800))
        );
        assert_eq!(
            at(MONDAY + 8 * HOUR),
            Decision::allow_with(Grant::new().with_max_ttl_seconds(36_000))
        );
        assert_eq!(
            at(MONDAY + 18 * HOUR),
            Decision::deny("outside business hours (08:00–18:00)")
        );
        assert!(at(MONDAY + 7 * HOUR).is_deny());
    }

    #[test]
    fn the_offset_moves_the_window() {
        configure("08:00", "18:00", "+02:00", None);
        // 06:30 UTC is 08:30 at +02:00.
        assert!(at(MONDAY + 6 * HOUR + 30 * 60_000).is_allow());
        assert!(at(MONDAY + 16 * HOUR + 30 * 60_000).is_deny());
    }

    #[test]
    fn days_restrict_and_overnight_windows_belong_to_their_opening_day() {
        configure("22:00", "06:00", "UTC", Some("mon, tue, wed, thu, fri"));
        assert!(at(MONDAY + 23 * HOUR).is_allow());
        // Monday 02:00 belongs to Sunday night's window: closed.
        assert!(at(MONDAY + 2 * HOUR).is_deny());
        // Saturday 02:00 belongs to Friday night's window: open, 4 hours left.
        assert_eq!(
            at(MONDAY + 5 * 24 * HOUR + 2 * HOUR),
            Decision::allow_with(Grant::new().with_max_ttl_seconds(4 * 3600))
        );
    }

    #[test]
    fn missing_or_bad_configuration_denies() {
        testing::reset();
        assert_eq!(
            at(MONDAY),
            Decision::deny("business-hours: `open` is not configured")
        );
        configure("8am", "18:00", "UTC", None);
        assert_eq!(
            at(MONDAY),
            Decision::deny("business-hours: `8am` is not a time of day like 08:00")
        );
        configure("08:00", "18:00", "Europe/Berlin", None);
        assert!(
            at(MONDAY)
                .reason()
                .is_some_and(|r| r.contains("not a UTC offset"))
        );
        configure("08:00", "18:00", "UTC", Some("mon,funday"));
        assert_eq!(
            at(MONDAY),
            Decision::deny("business-hours: `funday` is not a day")
        );
    }
}
