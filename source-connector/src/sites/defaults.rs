//! From one declared site to a [`SiteSpec`]: the `[source]` defaults applied,
//! what many sites have in common shared (the default headers, each distinct
//! compiled regex, each `tls_ca` file read once). The site's values were checked
//! when the configuration was read; nothing here parses them again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use connector_common::config::Invalid;
use regex::Regex;
use reqwest::header::HeaderMap;

use super::spec::{CaFile, ClientKey, Settings, SiteSpec};
use crate::config::{SiteConfig, SourceConfig};

/// Applies the defaults of one `[source]` section to its sites.
pub struct Resolver<'a> {
    config: &'a SourceConfig,
    /// The configuration file's directory: `tls_ca` is relative to it.
    dir: &'a Path,
    default_headers: Arc<HeaderMap>,
    /// One compiled regex per distinct pattern text.
    regexes: HashMap<String, Arc<Regex>>,
    /// Each `tls_ca` file read so far (by resolved path), read once.
    cas: HashMap<PathBuf, CaFile>,
    expected: Option<Arc<[u16]>>,
    /// The settings of the last site: the next one shares them when it
    /// agrees (sites of one file mostly do).
    last: Option<Arc<Settings>>,
}

impl<'a> Resolver<'a> {
    /// A resolver for the sites of `config`, read from a file in `dir`.
    pub fn new(config: &'a SourceConfig, dir: &'a Path) -> Self {
        let mut regexes = HashMap::new();
        if let Some(default) = &config.regex {
            regexes.insert(default.as_str().to_owned(), Arc::clone(default.regex()));
        }
        Resolver {
            config,
            dir,
            default_headers: Arc::new(config.headers.map().clone()),
            regexes,
            cas: HashMap::new(),
            expected: config.expected_status.as_deref().map(Arc::from),
            last: None,
        }
    }

    /// The site with every setting resolved; refuses a `tls_ca` file that
    /// does not exist or holds no usable certificate (the key is the site's
    /// own `tls_ca`, or `source.tls_ca` when inherited).
    pub fn site(&mut self, site: &SiteConfig) -> Result<SiteSpec, Invalid> {
        let c = self.config;
        let headers = match &site.headers {
            Some(own) if !own.is_empty() => Arc::new(c.headers.merged(own)),
            _ => Arc::clone(&self.default_headers),
        };
        let settings = Settings {
            timeout: site.timeout.unwrap_or(c.timeout),
            method: site.method.as_ref().unwrap_or(&c.method).get().clone(),
            headers,
            body: site
                .body
                .as_ref()
                .or(c.body.as_ref())
                .map(|b| Bytes::from(b.clone())),
            regex: self.regex(site),
            expected_status: match &site.expected_status {
                Some(own) => Some(Arc::from(own.as_slice())),
                None => self.expected.clone(),
            },
            follow_redirects: site.follow_redirects.unwrap_or(c.follow_redirects),
            max_redirects: site.max_redirects.unwrap_or(c.max_redirects),
            max_body_bytes: site.max_body_bytes.unwrap_or(c.max_body_bytes),
            client: self.client(site)?,
        };
        let settings = match &self.last {
            Some(last) if last.same(&settings) => Arc::clone(last),
            _ => Arc::new(settings),
        };
        self.last = Some(Arc::clone(&settings));
        Ok(SiteSpec {
            url: site.url.clone(),
            interval: site.interval.unwrap_or(c.interval),
            settings,
        })
    }

    /// The site's regex (or the default), shared with every site that has
    /// the same pattern.
    fn regex(&mut self, site: &SiteConfig) -> Option<Arc<Regex>> {
        let pattern = site.regex.as_ref().or(self.config.regex.as_ref())?;
        if let Some(shared) = self.regexes.get(pattern.as_str()) {
            return Some(Arc::clone(shared));
        }
        let compiled = Arc::clone(pattern.regex());
        self.regexes
            .insert(pattern.as_str().to_owned(), Arc::clone(&compiled));
        Some(compiled)
    }

    /// The client settings of the site, its `tls_ca` file checked.
    fn client(&mut self, site: &SiteConfig) -> Result<ClientKey, Invalid> {
        let c = self.config;
        let tls_verify = site.tls_verify.unwrap_or(c.tls_verify);
        // Without verification a CA inherited from [source] plays no part:
        // leave it out so such sites share one client. (A site's own
        // `tls_ca` with verification off was refused when the configuration
        // was read.)
        let inherited_ca = if tls_verify { c.tls_ca.as_ref() } else { None };
        let tls_ca = match site.tls_ca.as_ref().or(inherited_ca) {
            None => None,
            Some(p) => {
                let key = if site.tls_ca.is_some() {
                    "tls_ca"
                } else {
                    "source.tls_ca"
                };
                Some(self.ca_file(p, key)?)
            }
        };
        Ok(ClientKey {
            keep_alive: site.keep_alive.unwrap_or(c.keep_alive),
            tls_ca,
            tls_verify,
        })
    }

    /// `tls_ca` resolved against the configuration's directory and read
    /// (once per file), refused (under `key`) unless it is a PEM file with CA
    /// certificates.
    fn ca_file(&mut self, file: &Path, key: &str) -> Result<CaFile, Invalid> {
        let path = self.dir.join(file);
        if let Some(read) = self.cas.get(&path) {
            return Ok(read.clone());
        }
        if !path.is_file() {
            return Err(Invalid::new(
                key,
                format!("file {} does not exist; give the path of a PEM file, relative to the configuration file", path.display()),
            ));
        }
        let certs = connector_common::tls::read_ca_certs(&path).map_err(|e| {
            Invalid::new(
                key,
                format!("{e}; give a PEM file with the CA certificate(s)"),
            )
        })?;
        let read = CaFile {
            path: path.clone(),
            certs: certs.into(),
        };
        self.cas.insert(path, read.clone());
        Ok(read)
    }
}
