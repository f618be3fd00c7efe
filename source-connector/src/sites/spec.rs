//! A site with every setting resolved: what the scheduler and the checks use.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use regex::Regex;
use reqwest::header::HeaderMap;
use reqwest::Method;
use rustls::pki_types::CertificateDer;

use crate::config::SiteUrl;

/// Settings that need a reqwest `Client` of their own; sites that agree on
/// them share one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientKey {
    /// Reuse connections between checks.
    pub keep_alive: bool,
    /// Extra CA file, read when the sites were resolved.
    pub tls_ca: Option<CaFile>,
    /// Verify certificates.
    pub tls_verify: bool,
}

/// A `tls_ca` file, read once when the sites are resolved (and checked to
/// hold CA certificates): the clients trust its certificates as read. Its
/// path identifies it.
#[derive(Debug, Clone)]
pub struct CaFile {
    /// The path, resolved against the configuration's directory.
    pub path: PathBuf,
    /// Its CA certificates.
    pub certs: Arc<[CertificateDer<'static>]>,
}

impl PartialEq for CaFile {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path
    }
}

impl Eq for CaFile {}

impl Hash for CaFile {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.path.hash(state);
    }
}

/// One site with every setting resolved: its url and interval, and the
/// rest of its settings ([`Settings`], read through `Deref`), shared with
/// the sites that agree on all of them — a million sites from one
/// `sites_file` hold one copy of the defaults, not a million.
#[derive(Debug, Clone)]
pub struct SiteSpec {
    /// The url, normalised (`https://Example.com` → `https://example.com/`).
    /// Its shown form (password masked) is the record's `url` and the Kafka
    /// key; requests go to [`SiteUrl::request`].
    pub url: SiteUrl,
    /// Time between two checks.
    pub interval: Duration,
    /// Everything else, shared.
    pub settings: Arc<Settings>,
}

/// The settings of a site besides its url and interval.
#[derive(Debug, Clone)]
pub struct Settings {
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

impl Settings {
    /// Whether `other` says the same (a regex by its pattern).
    pub fn same(&self, other: &Settings) -> bool {
        fn regex(s: &Settings) -> Option<&str> {
            s.regex.as_ref().map(|r| r.as_str())
        }
        self.timeout == other.timeout
            && self.method == other.method
            && self.headers == other.headers
            && self.body == other.body
            && regex(self) == regex(other)
            && self.expected_status == other.expected_status
            && self.follow_redirects == other.follow_redirects
            && self.max_redirects == other.max_redirects
            && self.max_body_bytes == other.max_body_bytes
            && self.client == other.client
    }
}

impl std::ops::Deref for SiteSpec {
    type Target = Settings;

    fn deref(&self) -> &Settings {
        &self.settings
    }
}

/// Changing a setting of one site copies the shared settings first.
impl std::ops::DerefMut for SiteSpec {
    fn deref_mut(&mut self) -> &mut Settings {
        Arc::make_mut(&mut self.settings)
    }
}

impl SiteSpec {
    /// A plain GET of `url` for unit tests: every `interval`, a `timeout`,
    /// redirects followed, 1 KiB of body, fresh connections.
    #[cfg(test)]
    pub(crate) fn for_test(url: &str, interval: Duration, timeout: Duration) -> SiteSpec {
        SiteSpec {
            url: url.parse().expect("a test url"),
            interval,
            settings: Arc::new(Settings {
                timeout,
                method: reqwest::Method::GET,
                headers: Arc::default(),
                body: None,
                regex: None,
                expected_status: None,
                follow_redirects: true,
                max_redirects: 5,
                max_body_bytes: 1024,
                client: ClientKey {
                    keep_alive: false,
                    tls_ca: None,
                    tls_verify: true,
                },
            }),
        }
    }

    /// Whether `other` checks the same url with the same settings: a reload
    /// that finds a site unchanged keeps it as it runs (its schedule and
    /// its client); any difference makes it a changed site. The url is
    /// compared as requested, so a changed password is a change.
    pub fn same_settings(&self, other: &SiteSpec) -> bool {
        self.url == other.url
            && self.interval == other.interval
            && (Arc::ptr_eq(&self.settings, &other.settings) || self.settings.same(&other.settings))
    }
}
