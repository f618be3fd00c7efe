//! A site with every setting resolved: what the scheduler and the checks use.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use regex::Regex;
use reqwest::header::HeaderMap;
use reqwest::Method;

use crate::config::SiteUrl;

/// Settings that need a reqwest `Client` of their own; sites that agree on
/// them share one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientKey {
    /// Reuse connections between checks.
    pub keep_alive: bool,
    /// Extra CA file (resolved path).
    pub tls_ca: Option<PathBuf>,
    /// Verify certificates.
    pub tls_verify: bool,
}

/// One site with every setting resolved.
#[derive(Debug, Clone)]
pub struct SiteSpec {
    /// The url, normalised (`https://Example.com` → `https://example.com/`).
    /// Its shown form (password masked) is the record's `url` and the Kafka
    /// key; requests go to [`SiteUrl::request`].
    pub url: SiteUrl,
    /// Time between two checks.
    pub interval: Duration,
    /// Limit on the whole check.
    pub timeout: Duration,
    /// HTTP method.
    pub method: Method,
    /// Request headers (defaults merged with the site's own).
    pub headers: Arc<HeaderMap>,
    /// Request body.
    pub body: Option<Bytes>,
    /// Regex searched in the body.
    pub regex: Option<Arc<Regex>>,
    /// Statuses that count as up; `None` means any 2xx or 3xx.
    pub expected_status: Option<Arc<[u16]>>,
    /// Whether to follow redirects.
    pub follow_redirects: bool,
    /// Redirect limit.
    pub max_redirects: u32,
    /// Body size cap.
    pub max_body_bytes: u64,
    /// Which client the site uses.
    pub client: ClientKey,
}
