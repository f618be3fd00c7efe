//! One site as declared: a `[[source.sites]]` entry or a line of
//! `sites_file` — its url and the `[source]` defaults it overrides — and the
//! `shard` setting.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::{Method, Pattern, RequestHeaders, SiteUrl};

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
    /// HTTP method (at most 32 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<Method>,
    /// Extra request headers, added to the default ones (a site's value
    /// wins for the same name); the limits of `[source]` `headers` apply to
    /// this table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<RequestHeaders>,
    /// Request body; at most 1 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Regex searched in the body (at most 64 KiB; as for `[source]` `regex`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<Pattern>,
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
