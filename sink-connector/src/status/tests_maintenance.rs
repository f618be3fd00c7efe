//! Maintenance windows: weekdays, local times, time zones and DST, ad-hoc rows.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use super::maintenance::{parse_hhmm, AdHocError, AdHocWindow, RecurringWindow, Windows};
use super::settings::{DayOfWeek, MaintenanceConfig};

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
}

pub(super) fn window(days: &[DayOfWeek], start: &str, minutes: u64, tz: &str) -> MaintenanceConfig {
    MaintenanceConfig {
        name: Some("nightly".to_owned()),
        urls: "^https://shop\\.".to_owned(),
        weekdays: days.to_vec(),
        start: start.to_owned(),
        duration: Duration::from_secs(minutes * 60),
        timezone: tz.to_owned(),
    }
}

fn parsed(days: &[DayOfWeek], start: &str, minutes: u64, tz: &str) -> RecurringWindow {
    RecurringWindow::from_config(&window(days, start, minutes, tz), 0).unwrap()
}

#[test]
fn hh_mm_is_strict() {
    assert_eq!(parse_hhmm("02:00").unwrap().to_string(), "02:00:00");
    assert_eq!(parse_hhmm("23:59").unwrap().to_string(), "23:59:00");
    for bad in [
        "2:00", "24:00", "12:60", "12-00", "12:00:00", "", "ab:cd", "+1:00",
    ] {
        assert!(parse_hhmm(bad).is_err(), "{bad}");
    }
}

#[test]
fn weekday_and_local_time_in_winter_and_summer() {
    let w = parsed(&[DayOfWeek::Mon], "02:00", 30, "Europe/Berlin");
    // Monday 2027-01-18: 02:00 CET is 01:00 UTC.
    assert_eq!(w.covering(utc(2027, 1, 18, 0, 59)), None);
    let occurrence = Some((utc(2027, 1, 18, 1, 0), utc(2027, 1, 18, 1, 30)));
    assert_eq!(w.covering(utc(2027, 1, 18, 1, 0)), occurrence);
    assert_eq!(w.covering(utc(2027, 1, 18, 1, 29)), occurrence);
    assert_eq!(w.covering(utc(2027, 1, 18, 1, 30)), None);
    // Tuesday: not a day of the window.
    assert_eq!(w.covering(utc(2027, 1, 19, 1, 10)), None);
    // Monday 2027-07-19: 02:00 CEST is 00:00 UTC.
    assert!(w.covering(utc(2027, 7, 19, 0, 10)).is_some());
    assert!(w.covering(utc(2027, 7, 19, 1, 10)).is_none());
}

#[test]
fn a_start_in_the_skipped_hour_moves_forward_by_the_gap() {
    // Sunday 2026-03-29, Europe/Berlin: 02:00 CET → 03:00 CEST (01:00 UTC).
    let w = parsed(&[DayOfWeek::Sun], "02:30", 30, "Europe/Berlin");
    // 02:30 does not exist; the window starts at 03:30 CEST = 01:30 UTC.
    assert_eq!(w.covering(utc(2026, 3, 29, 1, 29)), None);
    let occurrence = Some((utc(2026, 3, 29, 1, 30), utc(2026, 3, 29, 2, 0)));
    assert_eq!(w.covering(utc(2026, 3, 29, 1, 30)), occurrence);
    assert_eq!(w.covering(utc(2026, 3, 29, 2, 0)), None);
    // The Sunday before (CET) and after (CEST) keep their local 02:30.
    assert!(w.covering(utc(2026, 3, 22, 1, 35)).is_some());
    assert!(w.covering(utc(2026, 4, 5, 0, 35)).is_some());
}

#[test]
fn a_start_in_the_repeated_hour_is_its_first_occurrence() {
    // Sunday 2026-10-25, Europe/Berlin: 03:00 CEST → 02:00 CET (01:00 UTC).
    let w = parsed(&[DayOfWeek::Sun], "02:30", 30, "Europe/Berlin");
    let first = Some((utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 0)));
    assert_eq!(w.covering(utc(2026, 10, 25, 0, 45)), first);
    // 02:30 CET (the second 02:30) is not covered: the duration is elapsed time.
    assert_eq!(w.covering(utc(2026, 10, 25, 1, 45)), None);
}

#[test]
fn elapsed_duration_across_a_dst_change() {
    // Daily 01:00 for 3 hours, on the spring-forward day: 00:00 to 03:00 UTC
    // (01:00 CET to 05:00 CEST local).
    let w = parsed(&[], "01:00", 180, "Europe/Berlin");
    assert_eq!(
        w.covering(utc(2026, 3, 29, 2, 59)),
        Some((utc(2026, 3, 29, 0, 0), utc(2026, 3, 29, 3, 0)))
    );
}

#[test]
fn windows_cross_midnight_from_their_start_day() {
    // Fridays 22:00 UTC for 4 hours: Saturday 01:00 is covered, a
    // Saturday-night 01:00 that follows no Friday is not.
    let w = parsed(&[DayOfWeek::Fri], "22:00", 240, "UTC");
    assert!(w.covering(utc(2027, 1, 16, 1, 0)).is_some()); // Saturday
    assert!(w.covering(utc(2027, 1, 17, 1, 0)).is_none()); // Sunday
                                                           // Every day (empty weekdays), a window of 7 days covers always.
    let always = parsed(&[], "00:00", 7 * 24 * 60, "Asia/Kolkata");
    for h in 0..200 {
        assert!(always
            .covering(utc(2027, 1, 1, 0, 0) + chrono::TimeDelta::hours(h))
            .is_some());
    }
}

#[test]
fn next_boundary_is_the_next_start_or_end() {
    let w = parsed(&[DayOfWeek::Mon], "02:00", 30, "Europe/Berlin");
    // Friday 2027-01-15: next is Monday's start.
    assert_eq!(
        w.next_boundary(utc(2027, 1, 15, 8, 0)),
        Some(utc(2027, 1, 18, 1, 0))
    );
    assert_eq!(
        w.next_boundary(utc(2027, 1, 18, 1, 0)),
        Some(utc(2027, 1, 18, 1, 30))
    );
}

#[test]
fn bad_entries_are_refused_under_their_keys() {
    let mut cfg = window(&[], "25:00", 0, "Mars/Olympus");
    cfg.urls = "(".to_owned();
    let keys: Vec<String> = RecurringWindow::from_config(&cfg, 2)
        .unwrap_err()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(
        keys,
        [
            "maintenance[2].urls",
            "maintenance[2].start",
            "maintenance[2].timezone",
            "maintenance[2].duration"
        ]
    );
    let long = window(&[], "02:00", 7 * 24 * 60 + 1, "UTC");
    assert!(RecurringWindow::from_config(&long, 0).is_err());
}

#[test]
fn adhoc_windows_by_site_or_pattern() {
    let (from, to) = (utc(2027, 1, 15, 8, 0), utc(2027, 1, 15, 9, 0));
    let by_site = AdHocWindow::new(1, Some(7), Some("never"), from, to, None).unwrap();
    let by_url = AdHocWindow::new(
        2,
        None,
        Some("^https://api\\."),
        from,
        to,
        Some("db upgrade".into()),
    )
    .unwrap();
    assert_eq!(
        AdHocWindow::new(3, None, None, from, to, None).unwrap_err(),
        AdHocError::NoTarget(3)
    );
    assert_eq!(
        AdHocWindow::new(4, Some(1), None, to, from, None).unwrap_err(),
        AdHocError::Empty(4)
    );
    assert!(matches!(
        AdHocWindow::new(5, None, Some("("), from, to, None),
        Err(AdHocError::BadPattern { id: 5, .. })
    ));
    let adhoc = [by_site, by_url];
    let site7 = Windows::for_site(&[], &adhoc, 7, "https://www.example/");
    assert_eq!(site7.covering(from).unwrap().name, "maintenance window 1");
    assert_eq!(site7.covering(to), None);
    let api = Windows::for_site(&[], &adhoc, 8, "https://api.example/");
    assert_eq!(
        api.covering(utc(2027, 1, 15, 8, 30)).unwrap().name,
        "db upgrade"
    );
    assert_eq!(api.next_boundary(utc(2027, 1, 15, 7, 0)), Some(from));
    let other = Windows::for_site(&[], &adhoc, 9, "https://www.example/");
    assert_eq!(other.covering(from), None);
    assert_eq!(other.next_boundary(from), None);
}

#[test]
fn the_window_ending_last_is_the_one_shown() {
    let recurring = [parsed(&[], "08:00", 30, "UTC")];
    let (from, to) = (utc(2027, 1, 15, 7, 0), utc(2027, 1, 15, 12, 0));
    let adhoc = [AdHocWindow::new(1, Some(1), None, from, to, Some("migration".into())).unwrap()];
    let w = Windows::for_site(&recurring, &adhoc, 1, "https://shop.example/");
    let c = w.covering(utc(2027, 1, 15, 8, 10)).unwrap();
    assert_eq!((c.name.as_str(), c.to), ("migration", to));
    // The recurring window does not apply to a url it does not match.
    let w = Windows::for_site(&recurring, &[], 2, "https://www.example/");
    assert_eq!(w.covering(utc(2027, 1, 15, 8, 10)), None);
}
