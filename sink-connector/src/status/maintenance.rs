//! Maintenance windows: recurring ones from `[[sink.status.maintenance]]`
//! (weekdays and a local start time in an IANA time zone, a duration of
//! elapsed time) and ad-hoc ones (rows of `<table>_maintenance`).
//!
//! Daylight saving time: a recurring window starts at its local time on each
//! of its weekdays. A start inside the hour skipped when clocks go forward is
//! moved forward by the gap (02:30 → 03:30 in Europe/Berlin); a start in the
//! hour repeated when they go back is its first occurrence. The duration is
//! elapsed time, so a "2h" window across a change still lasts two hours.

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, Offset, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use regex::Regex;

use super::policy::{compile, PolicyError};
use super::settings::MaintenanceConfig;

/// Longest recurring window.
pub const MAX_WINDOW: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

/// One recurring window, parsed.
#[derive(Debug, Clone)]
pub struct RecurringWindow {
    name: String,
    urls: Regex,
    /// Empty: every day.
    weekdays: Vec<chrono::Weekday>,
    start: NaiveTime,
    duration: TimeDelta,
    tz: Tz,
}

impl RecurringWindow {
    /// Parses entry `index` of `[[sink.status.maintenance]]`; every problem,
    /// each under its key (`maintenance[0].start`).
    pub fn from_config(
        cfg: &MaintenanceConfig,
        index: usize,
    ) -> Result<RecurringWindow, Vec<PolicyError>> {
        let key = |k: &str| format!("maintenance[{index}].{k}");
        let mut out = Vec::new();
        let urls = compile(&cfg.urls, &key("urls"), &mut out);
        let start = parse_hhmm(&cfg.start)
            .map_err(|why| out.push(PolicyError::new(key("start"), why)))
            .ok();
        let tz = cfg
            .timezone
            .parse::<Tz>()
            .map_err(|_| {
                out.push(PolicyError::new(
                    key("timezone"),
                    format!(
                        "`{}` is not an IANA time zone name; give one like \"Europe/Berlin\" or \"UTC\"",
                        cfg.timezone.escape_debug()
                    ),
                ))
            })
            .ok();
        if cfg.duration.is_zero() || cfg.duration > MAX_WINDOW {
            out.push(PolicyError::new(
                key("duration"),
                format!(
                    "{} is out of range; give more than zero and at most 7 days (e.g. \"30m\")",
                    humantime::format_duration(cfg.duration)
                ),
            ));
        }
        match (urls, start, tz, out.is_empty()) {
            (Some(urls), Some(start), Some(tz), true) => Ok(RecurringWindow {
                name: cfg
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("maintenance[{index}]")),
                urls,
                weekdays: cfg.weekdays.iter().map(|d| d.to_chrono()).collect(),
                start,
                duration: TimeDelta::from_std(cfg.duration).expect("at most 7 days"),
                tz,
            }),
            _ => Err(out),
        }
    }

    /// Whether the window applies to the site at `url`.
    pub fn matches(&self, url: &str) -> bool {
        self.urls.is_match(url)
    }

    /// The window's occurrence starting on local date `day`, if it starts that day.
    fn on(&self, day: NaiveDate) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        if !self.weekdays.is_empty() && !self.weekdays.contains(&day.weekday()) {
            return None;
        }
        let from = local_instant(self.tz, day.and_time(self.start));
        Some((from, from + self.duration))
    }

    /// The occurrences starting on the local dates from `back` days before
    /// `t`'s to `ahead` days after it.
    fn around(
        &self,
        t: DateTime<Utc>,
        back: i64,
        ahead: i64,
    ) -> impl Iterator<Item = (DateTime<Utc>, DateTime<Utc>)> + '_ {
        let today = t.with_timezone(&self.tz).date_naive();
        (-back..=ahead).filter_map(move |d| self.on(today + TimeDelta::days(d)))
    }

    /// The occurrence covering `t` (start ≤ t < end), if any.
    pub fn covering(&self, t: DateTime<Utc>) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        // An occurrence covering t started at most its duration (in whole
        // days, plus one for the time of day) before t's local date.
        self.around(t, self.duration.num_days() + 1, 0)
            .filter(|(from, to)| *from <= t && t < *to)
            .max_by_key(|(_, to)| *to)
    }

    /// The first start or end of an occurrence after `t`.
    pub fn next_boundary(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.around(t, 8, 8)
            .flat_map(|(from, to)| [from, to])
            .filter(|b| *b > t)
            .min()
    }

    /// The window's name (or `maintenance[i]`).
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// `naive`, a local time of `tz`, as an instant: see the module doc for
/// the skipped and the repeated hour.
pub fn local_instant(tz: Tz, naive: chrono::NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&naive) {
        chrono::LocalResult::Single(t) => t.with_timezone(&Utc),
        chrono::LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
        chrono::LocalResult::None => {
            // In the gap: read it with the offset in force before the gap
            // (a day earlier; zones never change twice within a day).
            let before = tz
                .offset_from_utc_datetime(&(naive - TimeDelta::days(1)))
                .fix();
            (naive - TimeDelta::seconds(i64::from(before.local_minus_utc()))).and_utc()
        }
    }
}

/// `"HH:MM"`, 24-hour clock.
pub fn parse_hhmm(text: &str) -> Result<NaiveTime, String> {
    let bad = || {
        format!(
            "`{}` is not a time of day; write \"HH:MM\" on the 24-hour clock, e.g. \"02:00\"",
            text.escape_debug()
        )
    };
    let b = text.as_bytes();
    if b.len() != 5
        || b[2] != b':'
        || !b
            .iter()
            .enumerate()
            .all(|(i, c)| i == 2 || c.is_ascii_digit())
    {
        return Err(bad());
    }
    let h = u32::from(b[0] - b'0') * 10 + u32::from(b[1] - b'0');
    let m = u32::from(b[3] - b'0') * 10 + u32::from(b[4] - b'0');
    NaiveTime::from_hms_opt(h, m, 0).ok_or_else(bad)
}

/// What an ad-hoc window applies to.
#[derive(Debug, Clone)]
enum Target {
    /// One site, by id.
    Site(i64),
    /// The sites whose url matches.
    Urls(Regex),
}

/// Why a row of `<table>_maintenance` cannot be used (the writer logs it
/// and skips the row).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdHocError {
    /// Neither `site_id` nor `url_pattern` is set.
    #[error("maintenance window {0}: neither site_id nor url_pattern is set")]
    NoTarget(i64),
    /// `url_pattern` does not compile.
    #[error("maintenance window {id}: url_pattern {why}")]
    BadPattern {
        /// The row's id.
        id: i64,
        /// The compiler's message.
        why: String,
    },
    /// `ends_at` is not after `starts_at`.
    #[error("maintenance window {0}: ends_at is not after starts_at")]
    Empty(i64),
}

/// One ad-hoc window: a row of `<table>_maintenance`.
#[derive(Debug, Clone)]
pub struct AdHocWindow {
    /// The row's id.
    pub id: i64,
    target: Target,
    /// Start (inclusive).
    pub from: DateTime<Utc>,
    /// End (exclusive).
    pub to: DateTime<Utc>,
    /// The operator's reason, shown in the transitions' reasons.
    pub reason: Option<String>,
}

impl AdHocWindow {
    /// A window from a row: `site_id` wins over `url_pattern` (a regex, as
    /// `urls` in the configuration) when both are set.
    pub fn new(
        id: i64,
        site_id: Option<i64>,
        url_pattern: Option<&str>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        reason: Option<String>,
    ) -> Result<AdHocWindow, AdHocError> {
        if to <= from {
            return Err(AdHocError::Empty(id));
        }
        let target = match (site_id, url_pattern) {
            (Some(site), _) => Target::Site(site),
            (None, Some(p)) => {
                let mut out = Vec::new();
                match compile(p, "url_pattern", &mut out) {
                    Some(re) => Target::Urls(re),
                    None => {
                        let why = out.pop().map(|e| e.message).unwrap_or_default();
                        return Err(AdHocError::BadPattern { id, why });
                    }
                }
            }
            (None, None) => return Err(AdHocError::NoTarget(id)),
        };
        Ok(AdHocWindow {
            id,
            target,
            from,
            to,
            reason,
        })
    }

    /// Whether the window is for site `site_id` at `url`.
    pub fn applies(&self, site_id: i64, url: &str) -> bool {
        match &self.target {
            Target::Site(id) => *id == site_id,
            Target::Urls(re) => re.is_match(url),
        }
    }
}

/// A window covering a site at some time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Covering {
    /// The window's name, or the ad-hoc row's `reason` (or id).
    pub name: String,
    /// When this occurrence started.
    pub from: DateTime<Utc>,
    /// When it ends.
    pub to: DateTime<Utc>,
}

/// The windows that apply to one site (its url matched once).
#[derive(Debug, Clone, Default)]
pub struct Windows<'a> {
    recurring: Vec<&'a RecurringWindow>,
    adhoc: Vec<&'a AdHocWindow>,
}

impl<'a> Windows<'a> {
    /// The windows of `recurring` (the policy's) and `adhoc` (the table's
    /// rows) that apply to site `site_id` at `url`.
    pub fn for_site(
        recurring: &'a [RecurringWindow],
        adhoc: &'a [AdHocWindow],
        site_id: i64,
        url: &str,
    ) -> Windows<'a> {
        Windows {
            recurring: recurring.iter().filter(|w| w.matches(url)).collect(),
            adhoc: adhoc.iter().filter(|w| w.applies(site_id, url)).collect(),
        }
    }

    /// The window covering `t` that ends last, if any.
    pub fn covering(&self, t: DateTime<Utc>) -> Option<Covering> {
        let recurring = self.recurring.iter().filter_map(|w| {
            w.covering(t).map(|(from, to)| Covering {
                name: w.name().to_owned(),
                from,
                to,
            })
        });
        let adhoc = self
            .adhoc
            .iter()
            .filter(|w| w.from <= t && t < w.to)
            .map(|w| Covering {
                name: w
                    .reason
                    .clone()
                    .unwrap_or_else(|| format!("maintenance window {}", w.id)),
                from: w.from,
                to: w.to,
            });
        recurring.chain(adhoc).max_by_key(|c| c.to)
    }

    /// The first start or end of any of the windows after `t`: when a sweep
    /// must look at the site again even if no record comes.
    pub fn next_boundary(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let recurring = self.recurring.iter().filter_map(|w| w.next_boundary(t));
        let adhoc = self
            .adhoc
            .iter()
            .flat_map(|w| [w.from, w.to])
            .filter(|b| *b > t);
        recurring.chain(adhoc).min()
    }
}
