//! The `[source]` section of `connector.toml`.
//!
//! Top-level keys of the section are the source's own settings plus the
//! defaults for every site; each `[[source.sites]]` entry (and each line of
//! `sites_file`) may override any site setting. [`SourceConfig::validate`]
//! refuses what cannot work (bad urls, regexes that do not compile, zero
//! intervals, a bad shard, no sites) with the key path of the problem, e.g.
//! `source.sites[3].regex`. Turning the section into the list of sites to
//! check (reading `sites_file`, applying defaults, sharding) is
//! [`crate::sites`]'s job.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use connector_common::config::{Invalid, StringMap, Validate};
use connector_common::limits::{
    check_duration, check_number, listen_address_problem, text_problem, topic_problem, truncate,
};
use connector_common::secret::Headers;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The largest `concurrency` accepted.
pub const MAX_CONCURRENCY: usize = 1_000_000;

/// The largest `max_buffered_records` accepted (at 2 KiB each, 20 GiB).
pub const MAX_BUFFERED_RECORDS: usize = 10_000_000;

/// The longest `delivery_timeout` accepted (librdkafka's limit is ~24.8 days).
pub const MAX_DELIVERY_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// The largest `threads` accepted.
pub const MAX_THREADS: usize = 1024;

/// The largest `timeout` accepted: a check that takes longer is not a check of
/// a website any more, and shutdown (bounded by `shutdown_timeout`) would cut
/// it anyway.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// The shortest `interval`: ten checks a second of one site is a load test,
/// not monitoring.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// The longest `interval`: a site checked less than daily is not monitored.
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);

/// The longest `shutdown_timeout` and `flush_timeout`.
pub const MAX_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// The longest site url, in bytes (as shown, i.e. in the record): the sink's
/// default `max_url_bytes`, so no configured url is a record the sink rejects.
pub const MAX_URL_BYTES: usize = 2048;

/// The largest `max_body_bytes`: 64 MiB (a body is held in memory when the
/// site has a regex).
pub const MAX_BODY_BYTES: u64 = 64 * 1024 * 1024;

/// The most redirects `max_redirects` may allow (curl's default limit).
pub const MAX_REDIRECTS: u32 = 50;

/// The longest `probe`, in bytes.
pub const MAX_PROBE_BYTES: usize = 255;

/// The most request headers of one site, and the longest value.
pub const MAX_HEADERS: usize = 100;
/// See [`MAX_HEADERS`].
pub const MAX_HEADER_VALUE_BYTES: usize = 8 * 1024;

/// The longest request `body`.
pub const MAX_REQUEST_BODY_BYTES: usize = 1024 * 1024;

/// The longest `regex`.
pub const MAX_REGEX_BYTES: usize = 64 * 1024;

/// The `[source]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Kafka topic the records are written to. Env: `kafka_topic`.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// Name of this checker instance (a region, a host); copied into every record.
    #[serde(default = "default_probe")]
    pub probe: String,
    /// Default time between two checks of one site.
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Default limit on a whole check (connect, redirects and body); past it
    /// the check is an error of kind `timeout`.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// At most this many checks run at once, across all sites; split evenly
    /// over the check `threads`, each using only its own share.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Threads that run the checks, each with its own share of the sites, of
    /// `concurrency`, its own scheduler and HTTP clients (a check never hops
    /// threads); default: one per CPU core. Never more than `concurrency` or
    /// the number of sites.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    /// `host:port` of `/metrics`, `/healthz` and `/readyz`; port 0 picks a free one.
    #[serde(default = "default_metrics_address")]
    pub metrics_address: String,
    /// Whether to export the per-url gauges (up, duration, cert days left);
    /// turn off for very large site lists.
    #[serde(default = "default_true")]
    pub per_site_metrics: bool,
    /// `"K/N"`: keep only the urls whose stable hash falls in shard K of N
    /// (1-based), so N probes split one list with no coordinator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
    /// More sites, one url a line or one JSON object a line with the per-site
    /// keys; relative to the configuration file's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sites_file: Option<PathBuf>,
    /// On shutdown, wait at most this long for the checks in flight to finish;
    /// those still running then are cancelled, each giving a record with error
    /// kind `timeout` ("cancelled at shutdown").
    #[serde(default = "default_shutdown_timeout", with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// On shutdown, wait at most this long for Kafka to acknowledge what was sent.
    #[serde(default = "default_flush_timeout", with = "humantime_serde")]
    pub flush_timeout: Duration,
    /// The memory bound of a broker outage: at most this many records wait
    /// for Kafka (librdkafka's `queue.buffering.max.messages`, and
    /// `queue.buffering.max.kbytes` = 2 KiB per record, at least 1 MiB); past it new records
    /// are dropped, counted in `website_monitor_records_dropped_total` with
    /// reason `buffer_full`, and logged once a second.
    #[serde(default = "default_max_buffered_records")]
    pub max_buffered_records: usize,
    /// How long a record may wait for Kafka before it is dropped (reason
    /// `delivery_timeout`): librdkafka's `message.timeout.ms`.
    #[serde(default = "default_delivery_timeout", with = "humantime_serde")]
    pub delivery_timeout: Duration,
    /// Default HTTP method.
    #[serde(default = "default_method")]
    pub method: String,
    /// Default extra request headers; a site's own headers are added to these
    /// (a site's value wins for the same name). Values of credential-bearing
    /// headers are never printed; all of them are dropped when a redirect
    /// leaves the site's origin.
    #[serde(default, skip_serializing_if = "StringMap::is_empty")]
    pub headers: Headers,
    /// Default request body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Default regex searched in the body; the result is the record's `re_check`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// Statuses that count as up; default any 2xx or 3xx (after redirects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_status: Option<Vec<u16>>,
    /// Whether to follow 3xx responses with a `Location`.
    #[serde(default = "default_true")]
    pub follow_redirects: bool,
    /// At most this many redirects are followed; one more is an error of kind `http`.
    #[serde(default = "default_max_redirects")]
    pub max_redirects: u32,
    /// Never read more of a body than this; a longer body is an error of kind `body`.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// `false` (default): a fresh connection per check, so DNS, connect and
    /// TLS timings are real; `true`: reuse connections between checks.
    #[serde(default)]
    pub keep_alive: bool,
    /// Extra CA certificate(s) (PEM) trusted for https sites, beside the
    /// system's; relative to the configuration file's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    /// `false` accepts any certificate (the record still shows its expiry);
    /// refused together with `tls_ca`, which would then be ignored.
    #[serde(default = "default_true")]
    pub tls_verify: bool,
    /// The sites, each with optional overrides of the defaults above.
    #[serde(default)]
    pub sites: Vec<SiteConfig>,
}

/// One `[[source.sites]]` entry (or one JSON line of `sites_file`): a url and
/// optional overrides of the `[source]` defaults.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// The page to check; `http` or `https`. Its shown form (password
    /// masked) is the record's `url` and its Kafka key.
    pub url: SiteUrl,
    /// Time between two checks of this site.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub interval: Option<Duration>,
    /// Limit on the whole check.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// HTTP method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Extra request headers, added to the default ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
    /// Request body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Regex searched in the body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// Statuses that count as up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_status: Option<Vec<u16>>,
    /// Whether to follow redirects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_redirects: Option<bool>,
    /// Redirect limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_redirects: Option<u32>,
    /// Body size cap in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// Reuse connections between checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<bool>,
    /// Extra CA certificate(s) (PEM) for this site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    /// Whether to verify the certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_verify: Option<bool>,
}

/// `shard = "K/N"`: shard K (1-based) of N.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Shard {
    /// This instance's shard, `1..=count`.
    pub index: u32,
    /// How many shards the list is split into.
    pub count: u32,
}

impl TryFrom<String> for Shard {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        let bad = || {
            format!("`{s}` is not a shard; write \"K/N\" with 1 <= K <= N, e.g. \"2/4\" for the second of four probes")
        };
        let (k, n) = s.trim().split_once('/').ok_or_else(bad)?;
        let index: u32 = k.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl From<Shard> for String {
    fn from(s: Shard) -> String {
        s.to_string()
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl SiteConfig {
    /// A site with this url and no overrides.
    pub fn new(url: SiteUrl) -> Self {
        SiteConfig {
            url,
            interval: None,
            timeout: None,
            method: None,
            headers: None,
            body: None,
            regex: None,
            expected_status: None,
            follow_redirects: None,
            max_redirects: None,
            max_body_bytes: None,
            keep_alive: None,
            tls_ca: None,
            tls_verify: None,
        }
    }
}

/// A site url, parsed once when the configuration is read: the url requests
/// go to (with its credentials) and the form every output shows.
///
/// A url with a password (`http://alice:secret@host/`) is shown with the
/// password replaced by `***` (`http://alice:***@host/`), and one with a
/// user name alone (often a token: `https://TOKEN@host/`) with the user name
/// replaced (`https://***@host/`): in the record's
/// `url`, the Kafka key, the metric labels, log lines and `--check-config`.
/// The request still sends the real credentials (as `Authorization: Basic`).
/// The shown form is also what identifies the site (duplicates, shards, the
/// sink's latest-state row), so it is stable across restarts and password
/// changes. `Debug` and `Display` print the shown form; only
/// [`SiteUrl::request`] gives the real url.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SiteUrl {
    request: url::Url,
    shown: url::Url,
}

impl SiteUrl {
    /// Parses a site url: absolute, `http` or `https`, with a host, at most
    /// [`MAX_URL_BYTES`] long.
    pub fn parse(text: &str) -> Result<Self, String> {
        // The url itself is not repeated in the message when it may hold a
        // password; the key and line say which it is.
        let named = if text.contains('@') {
            "the url (not repeated: it may hold a password)".to_owned()
        } else {
            format!("`{}`", truncate(text, 200))
        };
        if text.len() > MAX_URL_BYTES {
            return Err(format!(
                "the url is {} bytes; at most {MAX_URL_BYTES} are allowed (the sink rejects longer urls)",
                text.len()
            ));
        }
        let request = url::Url::parse(text.trim()).map_err(|e| {
            format!("{named} is not a url ({e}); write e.g. \"https://example.com/\"")
        })?;
        if !matches!(request.scheme(), "http" | "https") {
            return Err(format!(
                "{named} has scheme `{}`; only http and https urls can be checked",
                request.scheme()
            ));
        }
        if request.host_str().is_none_or(str::is_empty) {
            return Err(format!("{named} has no host"));
        }
        let mut shown = request.clone();
        if shown.password().is_some() {
            let _ = shown.set_password(Some("***"));
        } else if !shown.username().is_empty() {
            // A user name alone is often the secret itself (an API token
            // given as `https://TOKEN@host/`, or `KEY:` with an empty password).
            let _ = shown.set_username("***");
        }
        if shown.as_str().len() > MAX_URL_BYTES {
            return Err(format!(
                "the url is {} bytes once normalised; at most {MAX_URL_BYTES} are allowed (the sink rejects longer urls)",
                shown.as_str().len()
            ));
        }
        Ok(SiteUrl { request, shown })
    }

    /// The url the request goes to, credentials included: only for sending it.
    pub fn request(&self) -> &url::Url {
        &self.request
    }

    /// The url as every output shows it (password masked).
    pub fn shown(&self) -> &url::Url {
        &self.shown
    }

    /// [`SiteUrl::shown`] as text.
    pub fn as_str(&self) -> &str {
        self.shown.as_str()
    }
}

impl fmt::Display for SiteUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for SiteUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::str::FromStr for SiteUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        SiteUrl::parse(s)
    }
}

impl Serialize for SiteUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SiteUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        SiteUrl::parse(&text).map_err(serde::de::Error::custom)
    }
}

fn default_topic() -> String {
    "site-status".to_owned()
}
fn default_probe() -> String {
    "local".to_owned()
}
fn default_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_concurrency() -> usize {
    1024
}
fn default_metrics_address() -> String {
    "127.0.0.1:9464".to_owned()
}
fn default_true() -> bool {
    true
}
fn default_flush_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_buffered_records() -> usize {
    100_000
}
fn default_delivery_timeout() -> Duration {
    Duration::from_secs(5 * 60)
}
fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_method() -> String {
    "GET".to_owned()
}
fn default_max_redirects() -> u32 {
    5
}
fn default_max_body_bytes() -> u64 {
    1024 * 1024
}

impl Validate for SourceConfig {
    fn validate(&self, prefix: &str) -> Vec<Invalid> {
        let mut out = Vec::new();
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
        if let Some(problem) = listen_address_problem(&self.metrics_address) {
            out.push(Invalid::new(key("metrics_address"), problem));
        }
        let ms = Duration::from_millis;
        check_duration(
            &mut out,
            key("flush_timeout"),
            self.flush_timeout,
            ms(1),
            MAX_SHUTDOWN_TIMEOUT,
            "30s",
        );
        check_duration(
            &mut out,
            key("shutdown_timeout"),
            self.shutdown_timeout,
            ms(1),
            MAX_SHUTDOWN_TIMEOUT,
            "10s",
        );
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
        if self.tls_ca.is_some() && !self.tls_verify {
            out.push(Invalid::new(
                key("tls_ca"),
                format!("is ignored with {} = false (no certificate is verified then); remove one of the two", key("tls_verify")),
            ));
        }
        let defaults = Overrides {
            interval: Some(self.interval),
            timeout: Some(self.timeout),
            method: Some(&self.method),
            headers: Some(&self.headers),
            body: self.body.as_deref(),
            regex: self.regex.as_deref(),
            expected_status: self.expected_status.as_deref(),
            max_redirects: Some(self.max_redirects),
            max_body_bytes: Some(self.max_body_bytes),
        };
        validate_overrides(&defaults, prefix, &mut out);
        if self.sites.is_empty() && self.sites_file.is_none() {
            out.push(Invalid::new(
                key("sites"),
                "no sites to check; add [[source.sites]] entries with a url, or a sites_file",
            ));
        }
        for (i, site) in self.sites.iter().enumerate() {
            validate_site(site, &format!("{prefix}.sites[{i}]"), &mut out);
        }
        out
    }
}

/// Checks one site's overrides (its url was checked when it was parsed);
/// `prefix` is the key path of the site (`source.sites[3]`), or empty for a
/// line of `sites_file`.
pub fn validate_site(site: &SiteConfig, prefix: &str, out: &mut Vec<Invalid>) {
    let overrides = Overrides {
        interval: site.interval,
        timeout: site.timeout,
        method: site.method.as_deref(),
        headers: site.headers.as_ref(),
        body: site.body.as_deref(),
        regex: site.regex.as_deref(),
        expected_status: site.expected_status.as_deref(),
        max_redirects: site.max_redirects,
        max_body_bytes: site.max_body_bytes,
    };
    validate_overrides(&overrides, prefix, out);
}

/// Parses a site url: absolute, `http` or `https`, with a host. See [`SiteUrl`].
pub fn parse_url(url: &str) -> Result<SiteUrl, String> {
    SiteUrl::parse(url)
}

/// The settings a site may override, as `[source]` or a site gives them.
struct Overrides<'a> {
    interval: Option<Duration>,
    timeout: Option<Duration>,
    method: Option<&'a str>,
    headers: Option<&'a Headers>,
    body: Option<&'a str>,
    regex: Option<&'a str>,
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
        if t > MAX_TIMEOUT {
            out.push(Invalid::new(
                key("timeout"),
                format!(
                    "{} is more than the limit of {}; a check must finish within minutes",
                    humantime::format_duration(t),
                    humantime::format_duration(MAX_TIMEOUT)
                ),
            ));
        } else {
            check_duration(
                out,
                key("timeout"),
                t,
                Duration::from_millis(1),
                MAX_TIMEOUT,
                "5s",
            );
        }
    }
    if let Some(m) = site.method {
        if m.is_empty() || m.len() > 32 || reqwest::Method::from_bytes(m.as_bytes()).is_err() {
            out.push(Invalid::new(
                key("method"),
                format!(
                    "`{}` is not an HTTP method; write e.g. \"GET\" or \"HEAD\"",
                    truncate(m, 40)
                ),
            ));
        }
    }
    if let Some(headers) = site.headers {
        if headers.len() > MAX_HEADERS {
            out.push(Invalid::new(
                key("headers"),
                format!(
                    "{} headers; at most {MAX_HEADERS} are allowed",
                    headers.len()
                ),
            ));
        }
        for (name, value) in headers.iter() {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                out.push(Invalid::new(
                    key("headers"),
                    format!("`{}` is not a valid header name", truncate(name, 100)),
                ));
            } else if value.len() > MAX_HEADER_VALUE_BYTES
                || reqwest::header::HeaderValue::from_str(value).is_err()
            {
                out.push(Invalid::new(
                    key("headers"),
                    format!("the value of `{name}` is not a valid header value (printable text of at most {MAX_HEADER_VALUE_BYTES} bytes)"),
                ));
            }
        }
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
    if let Some(re) = site.regex {
        if re.len() > MAX_REGEX_BYTES {
            out.push(Invalid::new(
                key("regex"),
                format!("{} bytes; at most {MAX_REGEX_BYTES} are allowed", re.len()),
            ));
        } else if let Err(e) = regex::Regex::new(re) {
            out.push(Invalid::new(
                key("regex"),
                format!("does not compile: {}", truncate(&e.to_string(), 1024)),
            ));
        }
    }
    if let Some(codes) = site.expected_status {
        if codes.is_empty() {
            out.push(Invalid::new(
                key("expected_status"),
                "empty list; leave it out to accept any 2xx or 3xx",
            ));
        }
        if let Some(c) = codes.iter().find(|c| !(100..=599).contains(*c)) {
            out.push(Invalid::new(
                key("expected_status"),
                format!("{c} is not an HTTP status (100 to 599)"),
            ));
        }
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

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use connector_common::config::{load_str, ConfigError, Loaded, Section};

    use super::*;

    fn load(text: &str) -> Result<Loaded<SourceConfig>, ConfigError> {
        load_str(text, Path::new("c.toml"), Section::Source, &|_| None)
    }

    fn err(text: &str) -> String {
        load(text).expect_err("should be refused").to_string()
    }

    #[test]
    fn defaults_apply() {
        let c = load("[[source.sites]]\nurl = \"https://example.com/\"\n")
            .unwrap()
            .section;
        assert_eq!(c.topic, "site-status");
        assert_eq!(c.probe, "local");
        assert_eq!(c.interval, Duration::from_secs(1));
        assert_eq!(c.timeout, Duration::from_secs(5));
        assert_eq!(c.metrics_address, "127.0.0.1:9464");
        assert!(c.per_site_metrics && c.follow_redirects && c.tls_verify && !c.keep_alive);
        assert_eq!(c.max_body_bytes, 1 << 20);
        assert_eq!(c.method, "GET");
    }

    #[test]
    fn bad_url_names_the_site_key() {
        let m = err("[source]\n[[source.sites]]\nurl = \"https://a.example/\"\n[[source.sites]]\nurl = \"ftp://x/\"\n");
        assert!(m.starts_with("c.toml:5: key `source.sites[1].url`"), "{m}");
        assert!(m.contains("only http and https"), "{m}");
        let m = err("[[source.sites]]\nurl = \"not a url\"\n");
        assert!(m.contains("source.sites[0].url"), "{m}");
    }

    #[test]
    fn regex_that_does_not_compile_is_refused() {
        let m = err("[[source.sites]]\nurl = \"https://a.example/\"\nregex = \"(\"\n");
        assert!(
            m.starts_with("c.toml:3: key `source.sites[0].regex`: does not compile"),
            "{m}"
        );
        let m =
            err("[source]\nregex = \"[z-a]\"\n[[source.sites]]\nurl = \"https://a.example/\"\n");
        assert!(m.contains("key `source.regex`"), "{m}");
    }

    #[test]
    fn empty_site_list_is_refused() {
        let m = err("[source]\ntopic = \"t\"\n");
        assert!(
            m.contains("key `source.sites`") && m.contains("no sites"),
            "{m}"
        );
    }

    #[test]
    fn zero_interval_and_timeout_are_refused() {
        let m =
            err("[source]\ninterval = \"0s\"\n[[source.sites]]\nurl = \"https://a.example/\"\n");
        assert!(m.contains("key `source.interval`"), "{m}");
        let m = err("[[source.sites]]\nurl = \"https://a.example/\"\ntimeout = \"0ms\"\n");
        assert!(m.contains("key `source.sites[0].timeout`"), "{m}");
    }

    #[test]
    fn shard_is_parsed_and_checked() {
        let ok = "[source]\nshard = \"2/4\"\n[[source.sites]]\nurl = \"https://a.example/\"\n";
        assert_eq!(
            load(ok).unwrap().section.shard,
            Some(Shard { index: 2, count: 4 })
        );
        for bad in ["0/4", "5/4", "1/0", "x", "1-4"] {
            let m = err(&format!(
                "[source]\nshard = \"{bad}\"\n[[source.sites]]\nurl = \"https://a.example/\"\n"
            ));
            assert!(
                m.contains("key `source.shard`") && m.contains("not a shard"),
                "{bad}: {m}"
            );
        }
    }

    #[test]
    fn other_bad_values_name_their_key() {
        let site = "[[source.sites]]\nurl = \"https://a.example/\"\n";
        for (section, key) in [
            ("concurrency = 0", "source.concurrency"),
            ("threads = 0", "source.threads"),
            ("threads = 5000", "source.threads"),
            ("max_buffered_records = 0", "source.max_buffered_records"),
            (
                "max_buffered_records = 10000001",
                "source.max_buffered_records",
            ),
            ("delivery_timeout = \"10ms\"", "source.delivery_timeout"),
            ("delivery_timeout = \"2d\"", "source.delivery_timeout"),
            ("metrics_address = \"nope\"", "source.metrics_address"),
            ("method = \"GE T\"", "source.method"),
            ("expected_status = [200, 999]", "source.expected_status"),
            ("expected_status = []", "source.expected_status"),
            ("headers = { \"bad name\" = \"x\" }", "source.headers"),
            ("intervl = \"1s\"", "source.intervl"),
            ("interval = \"soon\"", "source.interval"),
            ("timeout = \"11m\"", "source.timeout"),
            ("shutdown_timeout = \"0s\"", "source.shutdown_timeout"),
        ] {
            let m = err(&format!("[source]\n{section}\n{site}"));
            assert!(m.contains(&format!("key `{key}`")), "{section}: {m}");
        }
    }

    #[test]
    fn site_overrides_and_unknown_site_keys() {
        let c = load("[[source.sites]]\nurl = \"https://a.example/\"\ninterval = \"250ms\"\nkeep_alive = true\n").unwrap();
        assert_eq!(
            c.section.sites[0].interval,
            Some(Duration::from_millis(250))
        );
        let m = err("[[source.sites]]\nurl = \"https://a.example/\"\nregexp = \"x\"\n");
        assert!(m.contains("key `source.sites[0].regexp`"), "{m}");
    }

    #[test]
    fn timeout_has_an_upper_bound() {
        let site = "[[source.sites]]\nurl = \"https://a.example/\"\n";
        assert!(load(&format!("[source]\ntimeout = \"10m\"\n{site}")).is_ok());
        let m = err(&format!("[source]\ntimeout = \"1h\"\n{site}"));
        assert!(
            m.contains("key `source.timeout`") && m.contains("more than the limit of 10m"),
            "{m}"
        );
        let m = err(&format!("{site}timeout = \"601s\"\n"));
        assert!(m.contains("key `source.sites[0].timeout`"), "{m}");
    }

    #[test]
    fn shutdown_timeout_defaults_to_ten_seconds() {
        let c = load("[[source.sites]]\nurl = \"https://a.example/\"\n")
            .unwrap()
            .section;
        assert_eq!(c.shutdown_timeout, Duration::from_secs(10));
    }

    #[test]
    fn tls_ca_with_tls_verify_false_is_refused() {
        let m = err("[source]\ntls_ca = \"ca.pem\"\ntls_verify = false\n[[source.sites]]\nurl = \"https://a.example/\"\n");
        assert!(
            m.contains("key `source.tls_ca`") && m.contains("source.tls_verify = false"),
            "{m}"
        );
    }

    #[test]
    fn a_url_password_is_shown_masked_everywhere_but_kept_for_the_request() {
        let u = SiteUrl::parse("http://alice:s3cret@Example.com/x").unwrap();
        assert_eq!(u.as_str(), "http://alice:***@example.com/x");
        let token = SiteUrl::parse("https://ghp_SEKRIT@example.com/").unwrap();
        assert_eq!(token.as_str(), "https://***@example.com/");
        assert_eq!(token.request().username(), "ghp_SEKRIT");
        let key_colon = SiteUrl::parse("https://sk_live_x:@example.com/").unwrap();
        assert_eq!(key_colon.as_str(), "https://***@example.com/");
        assert_eq!(u.to_string(), u.as_str());
        assert_eq!(format!("{u:?}"), "\"http://alice:***@example.com/x\"");
        assert_eq!(u.request().password(), Some("s3cret"));
        // Stable: another password shows the same.
        let v = SiteUrl::parse("http://alice:other@example.com/x").unwrap();
        assert_eq!(u.as_str(), v.as_str());
        // A user name alone may be the secret: masked.
        let w = SiteUrl::parse("http://alice@example.com/").unwrap();
        assert_eq!(w.as_str(), "http://***@example.com/");
        let c = load("[[source.sites]]\nurl = \"http://alice:s3cret@example.com/\"\n").unwrap();
        let shown = connector_common::config::render_masked(&c, Section::Source);
        assert!(
            !shown.contains("s3cret") && shown.contains("alice:***@"),
            "{shown}"
        );
        assert!(!format!("{c:?}").contains("s3cret"));
        let m = err("[[source.sites]]\nurl = \"ftp://alice:s3cret@example.com/\"\n");
        assert!(
            !m.contains("s3cret") && m.contains("source.sites[0].url"),
            "{m}"
        );
    }

    #[test]
    fn a_site_url_over_2048_bytes_is_refused_at_load() {
        let long = format!("https://a.example/{}", "x".repeat(2048));
        let m = err(&format!("[[source.sites]]\nurl = \"{long}\"\n"));
        assert!(
            m.starts_with("c.toml:2: key `source.sites[0].url`") && m.contains("at most 2048"),
            "{}",
            &m[..m.len().min(300)]
        );
        assert!(m.len() < 400, "the url is not repeated: {} bytes", m.len());
        let ok = format!("https://a.example/{}", "x".repeat(2000));
        assert!(load(&format!("[[source.sites]]\nurl = \"{ok}\"\n")).is_ok());
    }

    #[test]
    fn every_duration_and_number_has_bounds() {
        let site = "[[source.sites]]\nurl = \"https://a.example/\"\n";
        for (line, key) in [
            ("interval = \"1ns\"", "source.interval"),
            ("interval = \"99ms\"", "source.interval"),
            ("interval = \"25h\"", "source.interval"),
            ("interval = \"500000000000y\"", "source.interval"),
            (
                "shutdown_timeout = \"500000000000y\"",
                "source.shutdown_timeout",
            ),
            ("flush_timeout = \"500000000000y\"", "source.flush_timeout"),
            ("flush_timeout = \"0s\"", "source.flush_timeout"),
            ("timeout = \"500000000000y\"", "source.timeout"),
            ("max_redirects = 51", "source.max_redirects"),
            ("max_body_bytes = 67108865", "source.max_body_bytes"),
            ("concurrency = 1000001", "source.concurrency"),
            ("topic = \"a b\"", "source.topic"),
            ("topic = \"..\"", "source.topic"),
            ("probe = \"a\\u0000b\"", "source.probe"),
            ("probe = \"a\\tb\"", "source.probe"),
            ("metrics_address = \"127.0.0.1\"", "source.metrics_address"),
            (
                "method = \"GETGETGETGETGETGETGETGETGETGETGETGET\"",
                "source.method",
            ),
        ] {
            let m = err(&format!("[source]\n{line}\n{site}"));
            assert!(
                m.starts_with(&format!("c.toml:2: key `{key}`")),
                "{line}: {m}"
            );
        }
        let m = err(&format!("{site}interval = \"50ms\"\n"));
        assert!(
            m.starts_with("c.toml:3: key `source.sites[0].interval`"),
            "{m}"
        );
        for line in [
            "interval = \"100ms\"",
            "interval = \"24h\"",
            "max_redirects = 50",
            "max_body_bytes = 67108864",
            "max_body_bytes = 0",
            "metrics_address = \"localhost:0\"",
        ] {
            assert!(load(&format!("[source]\n{line}\n{site}")).is_ok(), "{line}");
        }
    }

    #[test]
    fn renders_for_check_config() {
        let c = load("[source]\nshard = \"1/2\"\n[[source.sites]]\nurl = \"https://a.example/\"\ninterval = \"2s\"\n").unwrap();
        let shown = connector_common::config::render_masked(&c, Section::Source);
        assert!(
            shown.contains("shard = \"1/2\"") && shown.contains("interval = \"2s\""),
            "{shown}"
        );
    }
}
