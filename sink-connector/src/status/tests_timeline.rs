//! The example timeline of `docs/status.md`, step by step.

use chrono::{DateTime, TimeZone, Utc};

use super::maintenance::{RecurringWindow, Windows};
use super::settings::DayOfWeek;
use super::site::Site;
use super::tests_machine::{at, thresholds};
use super::tests_maintenance::window;
use super::tests_site::Run;
use super::State::{Down, Maintenance, Unknown, Up};

/// Saturday 2027-01-16 at `h:m:s` UTC (hours past 24 run into Sunday).
fn sat(h: i64, m: i64, s: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2027, 1, 16, 0, 0, 0).unwrap()
        + chrono::TimeDelta::seconds(h * 3600 + m * 60 + s)
}

#[test]
fn the_documented_timeline() {
    let mut cfg = window(&[DayOfWeek::Sun], "02:30", 60, "Europe/Berlin");
    cfg.name = Some("nightly backup".to_owned());
    let recurring = [RecurringWindow::from_config(&cfg, 0).unwrap()];
    let windows = Windows::for_site(&recurring, &[], 42, "https://shop.example.com/");
    let mut t = thresholds();
    t.min_probes_down = 2;
    let mut r = Run::new(t, windows);
    r.site = Site::new(42, sat(14, 0, 0));
    let secs = |d: DateTime<Utc>| (d - at(0)).num_seconds();
    // Minutes since Saturday 14:00; Sunday 01:35-02:25 UTC is 695-745.
    let backup = 695..=745;
    for minute in 0..=760 {
        for (i, probe) in ["ap", "eu", "us"].into_iter().enumerate() {
            let ok = match probe {
                "ap" if minute > 30 => continue,
                "eu" => !(5..=19).contains(&minute) && !backup.contains(&minute),
                "us" => !(10..=24).contains(&minute) && !backup.contains(&minute),
                _ => true,
            };
            r.check(probe, secs(sat(14, minute, i as i64)), ok);
        }
        if minute == 33 {
            assert_eq!(r.site.probes["ap"].health, Unknown, "ap silent at 14:33");
            assert_eq!(r.site.status.state, Up);
        }
    }
    let got: Vec<_> = r
        .seen
        .iter()
        .map(|t| (t.id(), t.from, t.to, t.at))
        .collect();
    assert_eq!(
        got,
        [
            ("42-1".to_owned(), Unknown, Up, sat(14, 1, 0)),
            ("42-2".to_owned(), Up, Down, sat(14, 12, 2)),
            ("42-3".to_owned(), Down, Up, sat(14, 21, 1)),
            ("42-4".to_owned(), Up, Maintenance, sat(25, 30, 1)),
            ("42-5".to_owned(), Maintenance, Up, sat(26, 30, 1)),
        ]
    );
    assert_eq!(
        r.seen[1].reason,
        "2 of 3 voting probes down (eu: 8 consecutive failures, timeout; us: 3 consecutive failures, timeout)"
    );
    assert_eq!(
        r.seen[3].reason,
        "maintenance: nightly backup from 2027-01-17 01:30:00 UTC until 2027-01-17 02:30:00 UTC"
    );
    let views: Vec<_> = r.seen[4].probes.values().copied().collect();
    assert_eq!(views, [Unknown, Up, Up]);
}
