//! The checks of the `[source]` section that its types cannot express
//! (ranges, the section's own names, a `tls_ca` that would be ignored, at
//! least one site), each naming the key of the problem, e.g.
//! `source.sites[3].interval`.
//!
//! Urls, regexes, methods and headers are checked as they are parsed (see the typed
//! values); the same site checks run for a `[[source.sites]]` entry, here,
//! and for a line of `sites_file`, through [`validate_site`].

use std::time::Duration;

use connector_common::config::{Invalid, Validate};
use connector_common::limits::{check_duration, check_number, text_problem, topic_problem};

use super::bounds::{
    MAX_BODY_BYTES, MAX_BUFFERED_RECORDS, MAX_CONCURRENCY, MAX_DELIVERY_TIMEOUT, MAX_INTERVAL,
    MAX_PROBE_BYTES, MAX_REDIRECTS, MAX_REQUEST_BODY_BYTES, MAX_SHUTDOWN_TIMEOUT, MAX_THREADS,
    MAX_TIMEOUT, MIN_INTERVAL,
};
use super::section::SourceConfig;
use super::site::SiteConfig;

impl Validate for SourceConfig {
    fn validate(&self, prefix: &str) -> Vec<Invalid> {
        let mut out = Vec::new();
        let key = |k: &str| format!("{prefix}.{k}");
        self.validate_names(prefix, &mut out);
        self.validate_parallelism(prefix, &mut out);
        self.validate_shutdown_and_buffer(prefix, &mut out);
        if self.tls_ca.is_some() && !self.tls_verify {
            out.push(tls_ca_ignored(key("tls_ca"), &key("tls_verify")));
        }
        let defaults = Overrides {
            interval: Some(self.interval),
            timeout: Some(self.timeout),
            body: self.body.as_deref(),
            expected_status: self.expected_status.as_deref(),
            max_redirects: Some(self.max_redirects),
            max_body_bytes: Some(self.max_body_bytes),
        };
        validate_overrides(&defaults, prefix, &mut out);
        self.validate_discovery(prefix, &mut out);
        if self.sites.is_empty()
            && self.sites_file.is_none()
            && self.sites_topic.is_none()
            && self.http_sd_url.is_none()
        {
            out.push(Invalid::new(
                key("sites"),
                "no sites to check; add [[source.sites]] entries with a url, a sites_file, a sites_topic or an http_sd_url",
            ));
        }
        for (i, site) in self.sites.iter().enumerate() {
            validate_site(site, self, &format!("{prefix}.sites[{i}]"), &mut out);
        }
        out
    }
}

impl SourceConfig {
    /// `topic` and `probe`.
    fn validate_names(&self, prefix: &str, out: &mut Vec<Invalid>) {
        let key = |k: &str| format!("{prefix}.{k}");
        if self.topic.trim().is_empty() {
            out.push(Invalid::new(
                key("topic"),
                "no topic; name the Kafka topic to write to (or set kafka_topic)",
            ));
        } else if let Some(problem) = topic_problem(&self.topic) {
            out.push(Invalid::new(key("topic"), problem));
        }
        if self.probe.trim().is_empty() {
            out.push(Invalid::new(
                key("probe"),
                "empty probe name; name this checker instance, e.g. \"eu-west-1\"",
            ));
        } else if let Some(problem) = text_problem(&self.probe, MAX_PROBE_BYTES) {
            out.push(Invalid::new(key("probe"), problem));
        }
    }

    /// `sites_topic`, `sites_group` and the `http_sd_*` keys.
    fn validate_discovery(&self, prefix: &str, out: &mut Vec<Invalid>) {
        let key = |k: &str| format!("{prefix}.{k}");
        if let Some(topic) = &self.sites_topic {
            if let Some(problem) = topic_problem(topic) {
                out.push(Invalid::new(key("sites_topic"), problem));
            } else if *topic == self.topic {
                out.push(Invalid::new(
                    key("sites_topic"),
                    "is the topic the records are written to; name a topic of its own for the site definitions",
                ));
            }
        }
        match (&self.sites_group, &self.sites_topic) {
            (Some(_), None) => out.push(Invalid::new(
                key("sites_group"),
                "is set without sites_topic; name the topic whose partitions the group splits, or remove it",
            )),
            (Some(group), Some(_)) if group.trim().is_empty() => out.push(Invalid::new(
                key("sites_group"),
                "empty group id; name the group, e.g. \"website-monitor-eu-west-1\" (one per location)",
            )),
            (Some(group), Some(_)) => {
                if let Some(problem) = text_problem(group, MAX_PROBE_BYTES) {
                    out.push(Invalid::new(key("sites_group"), problem));
                }
            }
            (None, _) => {}
        }
        check_duration(
            out,
            key("sites_group_session_timeout"),
            self.sites_group_session_timeout,
            Duration::from_secs(1),
            Duration::from_secs(30 * 60),
            "10s",
        );
        check_duration(
            out,
            key("http_sd_refresh"),
            self.http_sd_refresh,
            Duration::from_secs(1),
            MAX_INTERVAL,
            "60s",
        );
    }

    /// `concurrency` and `threads`.
    fn validate_parallelism(&self, prefix: &str, out: &mut Vec<Invalid>) {
        let key = |k: &str| format!("{prefix}.{k}");
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            out.push(Invalid::new(
                key("concurrency"),
                format!("must be between 1 and {MAX_CONCURRENCY}"),
            ));
        }
        if self
            .threads
            .is_some_and(|t| !(1..=MAX_THREADS).contains(&t))
        {
            out.push(Invalid::new(
                key("threads"),
                format!("must be between 1 and {MAX_THREADS}; leave it out for one per CPU core"),
            ));
        }
    }

    /// The shutdown timeouts and the producer buffer.
    fn validate_shutdown_and_buffer(&self, prefix: &str, out: &mut Vec<Invalid>) {
        let key = |k: &str| format!("{prefix}.{k}");
        let ms = Duration::from_millis;
        check_duration(
            out,
            key("flush_timeout"),
            self.flush_timeout,
            ms(1),
            MAX_SHUTDOWN_TIMEOUT,
            "30s",
        );
        check_duration(
            out,
            key("shutdown_timeout"),
            self.shutdown_timeout,
            ms(1),
            MAX_SHUTDOWN_TIMEOUT,
            "10s",
        );
        if let Some(every) = self.reload_watch {
            check_duration(
                out,
                key("reload_watch"),
                every,
                MIN_INTERVAL,
                MAX_SHUTDOWN_TIMEOUT,
                "5s",
            );
        }
        if !(1..=MAX_BUFFERED_RECORDS).contains(&self.max_buffered_records) {
            out.push(Invalid::new(
                key("max_buffered_records"),
                format!("must be between 1 and {MAX_BUFFERED_RECORDS}: the records that may wait for Kafka during an outage (default 100000)"),
            ));
        }
        if !(Duration::from_secs(1)..=MAX_DELIVERY_TIMEOUT).contains(&self.delivery_timeout) {
            out.push(Invalid::new(
                key("delivery_timeout"),
                "must be between 1s and 24h: how long a record may wait for Kafka (default 5m)",
            ));
        }
    }
}

/// Checks one site's overrides against `defaults` (its url, regex and method
/// were checked when they were parsed); `prefix` is the key path of the site
/// (`source.sites[3]`), or empty for a line of `sites_file`.
pub fn validate_site(
    site: &SiteConfig,
    defaults: &SourceConfig,
    prefix: &str,
    out: &mut Vec<Invalid>,
) {
    let overrides = Overrides {
        interval: site.interval,
        timeout: site.timeout,
        body: site.body.as_deref(),
        expected_status: site.expected_status.as_deref(),
        max_redirects: site.max_redirects,
        max_body_bytes: site.max_body_bytes,
    };
    validate_overrides(&overrides, prefix, out);
    if site.tls_ca.is_some() {
        // The site's own `tls_verify` is named as it is written on the
        // site; an inherited one by its key in `[source]`.
        let verify_key = match site.tls_verify {
            Some(false) => Some("tls_verify"),
            None if !defaults.tls_verify => Some("source.tls_verify"),
            _ => None,
        };
        if let Some(verify_key) = verify_key {
            out.push(tls_ca_ignored(join(prefix, "tls_ca"), verify_key));
        }
    }
}

/// `tls_ca` set where `verify_key` turns verification off.
fn tls_ca_ignored(key: String, verify_key: &str) -> Invalid {
    Invalid::new(
        key,
        format!("is ignored with {verify_key} = false (no certificate is verified then); remove one of the two"),
    )
}

/// The settings a site may override that are checked here, as `[source]` or
/// a site gives them.
struct Overrides<'a> {
    interval: Option<Duration>,
    timeout: Option<Duration>,
    body: Option<&'a str>,
    expected_status: Option<&'a [u16]>,
    max_redirects: Option<u32>,
    max_body_bytes: Option<u64>,
}

fn validate_overrides(site: &Overrides<'_>, prefix: &str, out: &mut Vec<Invalid>) {
    let key = |k: &str| join(prefix, k);
    if let Some(d) = site.interval {
        check_duration(out, key("interval"), d, MIN_INTERVAL, MAX_INTERVAL, "1s");
    }
    if let Some(t) = site.timeout {
        check_timeout(out, key("timeout"), t);
    }
    if let Some(body) = site.body {
        if body.len() > MAX_REQUEST_BODY_BYTES {
            out.push(Invalid::new(
                key("body"),
                format!(
                    "{} bytes; at most {MAX_REQUEST_BODY_BYTES} are allowed",
                    body.len()
                ),
            ));
        }
    }
    if let Some(codes) = site.expected_status {
        check_expected_status(out, key("expected_status"), codes);
    }
    if let Some(n) = site.max_redirects {
        check_number(out, key("max_redirects"), n, 0, MAX_REDIRECTS, "redirects");
    }
    if let Some(n) = site.max_body_bytes {
        check_number(
            out,
            key("max_body_bytes"),
            n,
            0,
            MAX_BODY_BYTES,
            "bytes (64 MiB)",
        );
    }
}

fn check_timeout(out: &mut Vec<Invalid>, key: String, t: Duration) {
    if t > MAX_TIMEOUT {
        out.push(Invalid::new(
            key,
            format!(
                "{} is more than the limit of {}; a check must finish within minutes",
                humantime::format_duration(t),
                humantime::format_duration(MAX_TIMEOUT)
            ),
        ));
    } else {
        check_duration(out, key, t, Duration::from_millis(1), MAX_TIMEOUT, "5s");
    }
}

fn check_expected_status(out: &mut Vec<Invalid>, key: String, codes: &[u16]) {
    if codes.is_empty() {
        out.push(Invalid::new(
            key.clone(),
            "empty list; leave it out to accept any 2xx or 3xx",
        ));
    }
    if let Some(c) = codes.iter().find(|c| !(100..=599).contains(*c)) {
        out.push(Invalid::new(
            key,
            format!("{c} is not an HTTP status (100 to 599)"),
        ));
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}
