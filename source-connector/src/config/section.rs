//! The `[source]` section: the source's own settings and the defaults of
//! every site, each field documented with its key.

use std::path::PathBuf;
use std::time::Duration;

use connector_common::listen::ListenAddress;
use serde::{Deserialize, Serialize};

use super::site::{Shard, SiteConfig};
use super::values::{Method, Pattern, RequestHeaders, SiteUrl};

/// A per-site setting a definition from outside may set only when
/// `outside_settings` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutsideSetting {
    /// `method`: what the probe asks the site to do.
    Method,
    /// `body`: what the probe sends.
    Body,
    /// `headers`: what the probe sends (often a credential).
    Headers,
    /// `tls_ca`: a file read from this host's disk, trusted for TLS.
    TlsCa,
    /// `tls_verify`: whether the certificate is verified.
    TlsVerify,
    /// A user or password in the url, sent to the site.
    UrlCredentials,
}

impl OutsideSetting {
    /// Its name in `outside_settings` (and the site key it allows).
    pub fn as_str(self) -> &'static str {
        match self {
            OutsideSetting::Method => "method",
            OutsideSetting::Body => "body",
            OutsideSetting::Headers => "headers",
            OutsideSetting::TlsCa => "tls_ca",
            OutsideSetting::TlsVerify => "tls_verify",
            OutsideSetting::UrlCredentials => "url_credentials",
        }
    }

    /// The guarded settings `site` sets.
    pub fn set_by(site: &SiteConfig) -> Vec<OutsideSetting> {
        let url = site.url.request();
        [
            (OutsideSetting::Method, site.method.is_some()),
            (OutsideSetting::Body, site.body.is_some()),
            (OutsideSetting::Headers, site.headers.is_some()),
            (OutsideSetting::TlsCa, site.tls_ca.is_some()),
            (OutsideSetting::TlsVerify, site.tls_verify.is_some()),
            (
                OutsideSetting::UrlCredentials,
                !url.username().is_empty() || url.password().is_some(),
            ),
        ]
        .into_iter()
        .filter_map(|(s, set)| set.then_some(s))
        .collect()
    }
}

/// The `[source]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Kafka topic the records are written to. Env: `kafka_topic`.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// Name of this checker instance (a region, a host); copied into every
    /// record. 1 to 255 bytes, not blank, no control characters.
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
    /// `host:port` of `/metrics`, `/healthz` and `/readyz`; port 0 picks a
    /// free one. With `--once`, an address that cannot be bound (already
    /// taken, say) is only a warning: that run serves no `/metrics`.
    #[serde(default = "default_metrics_address")]
    pub metrics_address: ListenAddress,
    /// Whether to export the per-url gauges (up, duration, cert days left);
    /// turn off for very large site lists.
    #[serde(default = "default_true")]
    pub per_site_metrics: bool,
    /// `"K/N"`: keep only the urls whose stable hash falls in shard K of N
    /// (1-based), so N probes split one list with no coordinator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
    /// More sites, one url a line or one JSON object a line with the per-site
    /// keys; relative to the configuration file's directory. A regular file
    /// of at most 1 GiB, UTF-8, lines of at most 1 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sites_file: Option<PathBuf>,
    /// A compacted Kafka topic of site definitions (on the `[kafka]`
    /// brokers): key = the url, value = the JSON object a `sites_file` line
    /// holds, an empty value (tombstone) removes the site. Read from its
    /// beginning at start (the source is ready once it has caught up) and
    /// followed live; a record that cannot be used is logged and counted,
    /// the others run. A url also defined in the configuration or
    /// `sites_file` runs with that definition. See docs/discovery.md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sites_topic: Option<String>,
    /// A Kafka consumer group id: the instances with the same `sites_group`
    /// split the partitions of `sites_topic` and each checks only the sites
    /// of its partitions, taking over a departed instance's at the next
    /// rebalance (no offset is ever committed). One group per location; off
    /// (every instance reads every partition) when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sites_group: Option<String>,
    /// How long the `sites_group` waits for a silent instance (a crash, a
    /// network split) before its partitions go to the others: librdkafka's
    /// `session.timeout.ms`, within the broker's
    /// `group.min.session.timeout.ms` (6s by default) and
    /// `group.max.session.timeout.ms` (30m). A killed instance's sites are
    /// checked again within this plus one interval.
    #[serde(default = "default_group_session_timeout", with = "humantime_serde")]
    pub sites_group_session_timeout: Duration,
    /// An HTTP(S) url serving targets in Prometheus `http_sd` format
    /// (`[{"targets": ["https://..."], "labels": {"interval": "30s"}}]`),
    /// fetched at start and every `http_sd_refresh`; labels that name a
    /// per-site setting set it (docs/discovery.md). On an error (HTTP
    /// status, timeout, not that JSON) the last good list keeps running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_sd_url: Option<SiteUrl>,
    /// How often `http_sd_url` is fetched again; each fetch may take at most
    /// this long (and at most 30s).
    #[serde(default = "default_http_sd_refresh", with = "humantime_serde")]
    pub http_sd_refresh: Duration,
    /// The per-site settings that change what is sent, trusted or read from
    /// disk, which a definition from outside (`sites_topic`, `http_sd_url`)
    /// may set only when listed here: `method`, `body`, `headers`,
    /// `tls_ca`, `tls_verify`, `url_credentials` (a user or password in the
    /// url). The others (`interval`, `timeout`, `regex`, `expected_status`,
    /// `follow_redirects`, `max_redirects`, `max_body_bytes`, `keep_alive`)
    /// are always allowed. A definition setting one not listed is refused,
    /// naming the setting. See docs/discovery.md.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outside_settings: Vec<OutsideSetting>,
    /// Reload the configuration when this file or `sites_file` changes on
    /// disk, looking this often (modification time, size and, up to 4 MiB,
    /// content); off when left out. A reload (also on SIGHUP and on
    /// `POST /-/reload`) applies the difference in sites; see docs/reload.md.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub reload_watch: Option<Duration>,
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
    /// Default HTTP method: a method name (a token) of at most 32 bytes,
    /// e.g. `GET`, `HEAD`, `POST` or an extension such as `PURGE`.
    #[serde(default = "default_method")]
    pub method: Method,
    /// Default extra request headers; a site's own headers are added to these
    /// (a site's value wins for the same name). Values of credential-bearing
    /// headers are never printed; all of them are dropped when a redirect
    /// leaves the site's origin. At most 100 headers, each a valid header
    /// name with printable text of at most 8 KiB as its value.
    #[serde(default, skip_serializing_if = "RequestHeaders::is_empty")]
    pub headers: RequestHeaders,
    /// Default request body; at most 1 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Default regex searched in the body; the result is the record's
    /// `re_check`. At most 64 KiB of pattern; searched in the first
    /// `max_body_bytes` of the body, with invalid UTF-8 replaced (U+FFFD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<Pattern>,
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
fn default_metrics_address() -> ListenAddress {
    "127.0.0.1:9464".parse().expect("a valid address")
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
fn default_group_session_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_http_sd_refresh() -> Duration {
    Duration::from_secs(60)
}
fn default_method() -> Method {
    Method::default()
}
fn default_max_redirects() -> u32 {
    5
}
fn default_max_body_bytes() -> u64 {
    1024 * 1024
}
