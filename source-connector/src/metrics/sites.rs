//! The per-url gauges (`per_site_metrics`): kept by the source itself, not
//! in the `metrics` registry, so that a site removed by a reload takes its
//! series off `/metrics` (the registry cannot forget a series: a removed
//! dead site would keep `website_monitor_site_up 0` — and its `WebsiteDown`
//! alert — until a restart, and every url ever run would stay listed).
//!
//! Each site has its values ([`SiteGauges`], atomics set by each check);
//! [`SiteSeries`] lists the sites that run and were checked at least once,
//! and renders them after the registry's series.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use connector_common::telemetry::escape_label;

use super::{SITE_CERT_DAYS_LEFT, SITE_DURATION_SECONDS, SITE_UP};
use crate::record::Record;

/// The last values of one site's gauges; shared by the settings a site
/// had before and after a reload changed them (same url, same series).
#[derive(Clone)]
pub struct SiteGauges(Arc<Values>);

struct Values {
    url: String,
    up: AtomicU64,
    duration: AtomicU64,
    /// `f64::NAN` until an https check saw a certificate.
    cert_days_left: AtomicU64,
    /// Listed in [`SiteSeries`] (set on the first check, under its lock).
    listed: AtomicBool,
    /// Removed by a reload: never listed again.
    removed: AtomicBool,
}

impl SiteGauges {
    /// The gauges of the site `url` (its shown form), not listed until its
    /// first check.
    pub fn new(url: &str) -> Self {
        SiteGauges(Arc::new(Values {
            url: url.to_owned(),
            up: AtomicU64::new(0),
            duration: AtomicU64::new(0),
            cert_days_left: AtomicU64::new(f64::NAN.to_bits()),
            listed: AtomicBool::new(false),
            removed: AtomicBool::new(false),
        }))
    }

    /// Sets the values from `record`; lists the site in `series` on its
    /// first check (unless it was removed meanwhile).
    pub fn record(&self, record: &Record, series: &SiteSeries) {
        let v = &self.0;
        v.up.store(f64::from(u8::from(record.ok)).to_bits(), Ordering::Relaxed);
        v.duration
            .store(record.duration.to_bits(), Ordering::Relaxed);
        if let Some(days) = record.tls.as_ref().and_then(|t| t.cert_days_left) {
            v.cert_days_left
                .store((days as f64).to_bits(), Ordering::Relaxed);
        }
        if !v.listed.load(Ordering::Acquire) {
            series.list(self);
        }
    }

    fn key(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }
}

/// The sites whose gauges `/metrics` shows.
#[derive(Default)]
pub struct SiteSeries {
    listed: Mutex<HashMap<usize, SiteGauges>>,
}

impl SiteSeries {
    fn list(&self, site: &SiteGauges) {
        let mut listed = self.listed.lock().unwrap_or_else(|e| e.into_inner());
        if !site.0.removed.load(Ordering::Acquire) {
            site.0.listed.store(true, Ordering::Release);
            listed.insert(site.key(), site.clone());
        }
    }

    /// Takes the site's series off `/metrics` for good: a reload removed it
    /// (a check of it still in flight sets its values, but lists nothing).
    pub fn remove(&self, site: &SiteGauges) {
        let mut listed = self.listed.lock().unwrap_or_else(|e| e.into_inner());
        site.0.removed.store(true, Ordering::Release);
        listed.remove(&site.key());
    }

    /// How many sites are listed.
    pub fn len(&self) -> usize {
        self.listed.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no site is listed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the series in the Prometheus text format to `out`.
    pub fn render(&self, out: &mut String) {
        let listed = self.listed.lock().unwrap_or_else(|e| e.into_inner());
        if listed.is_empty() {
            return;
        }
        let families: [(&str, Field); 3] = [
            (SITE_UP, |v| &v.up),
            (SITE_DURATION_SECONDS, |v| &v.duration),
            (SITE_CERT_DAYS_LEFT, |v| &v.cert_days_left),
        ];
        for (name, field) in families {
            let _ = writeln!(out, "# TYPE {name} gauge");
            for site in listed.values() {
                let value = f64::from_bits(field(&site.0).load(Ordering::Relaxed));
                if value.is_nan() {
                    continue;
                }
                let _ = writeln!(
                    out,
                    "{name}{{url=\"{}\"}} {value}",
                    escape_label(&site.0.url)
                );
            }
            out.push('\n');
        }
    }
}

/// One gauge's value among a site's.
type Field = fn(&Values) -> &AtomicU64;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{CheckError, ErrorKind, TlsFacts};

    fn record(url: &str, ok: bool, days: Option<i64>) -> Record {
        let mut r = Record::failure(
            url.into(),
            1.0,
            0.25,
            CheckError {
                kind: ErrorKind::Status,
                message: String::new(),
            },
            "p".into(),
            1.0,
        );
        r.ok = ok;
        r.tls = days.map(|d| TlsFacts {
            version: None,
            cert_not_after: None,
            cert_days_left: Some(d),
        });
        r
    }

    fn render(series: &SiteSeries) -> String {
        let mut out = String::new();
        series.render(&mut out);
        out
    }

    #[test]
    fn a_site_is_listed_from_its_first_check_with_its_last_values() {
        let series = SiteSeries::default();
        let (a, b) = (
            SiteGauges::new("https://a.example/"),
            SiteGauges::new("http://b.example/"),
        );
        assert_eq!(render(&series), "", "nothing before a first check");
        a.record(&record("https://a.example/", false, None), &series);
        a.record(&record("https://a.example/", true, Some(29)), &series);
        b.record(&record("http://b.example/", false, None), &series);
        let text = render(&series);
        assert!(text.contains("website_monitor_site_up{url=\"https://a.example/\"} 1\n"));
        assert!(text.contains("website_monitor_site_up{url=\"http://b.example/\"} 0\n"));
        assert!(text
            .contains("website_monitor_site_duration_seconds{url=\"https://a.example/\"} 0.25\n"));
        assert!(
            text.contains("website_monitor_site_cert_days_left{url=\"https://a.example/\"} 29\n")
        );
        assert!(!text.contains("cert_days_left{url=\"http://b"), "{text}");
        assert_eq!(
            text.matches("# TYPE website_monitor_site_up gauge").count(),
            1
        );
    }

    #[test]
    fn a_removed_site_leaves_and_a_check_in_flight_does_not_bring_it_back() {
        let series = SiteSeries::default();
        let a = SiteGauges::new("http://a.example/");
        a.record(&record("http://a.example/", false, None), &series);
        series.remove(&a);
        assert!(series.is_empty());
        a.record(&record("http://a.example/", false, None), &series);
        assert_eq!(render(&series), "");
        // Added again: new gauges, listed from their first check.
        let again = SiteGauges::new("http://a.example/");
        again.record(&record("http://a.example/", true, None), &series);
        assert!(render(&series).contains("site_up{url=\"http://a.example/\"} 1"));
    }
}
