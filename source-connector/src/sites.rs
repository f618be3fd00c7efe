//! From the `[source]` section to the list of sites this instance checks.
//!
//! [`resolve`] reads `sites_file` (relative to the configuration file), applies
//! the `[source]` defaults to every site, compiles each distinct regex once,
//! checks that `tls_ca` files exist, and keeps only the urls of this
//! instance's `shard`. Every problem is a [`ConfigError`] naming the file, the
//! line and the key, like the loader's own.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use connector_common::config::{locate, ConfigError, Invalid, Loaded, StringMap};
use regex::Regex;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::Method;

use crate::config::{validate_site, SiteConfig, SourceConfig};
use crate::hash::shard_of;

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
    /// It is the record's `url` and the Kafka key.
    pub url: url::Url,
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

/// Where a site was declared, for error messages.
enum Origin {
    /// `[[source.sites]]` entry number `i`.
    Inline(usize),
    /// Line `n` (1-based) of `sites_file`.
    File(usize),
}

/// Resolves the sites of `loaded` for this instance (after sharding).
pub fn resolve(loaded: &Loaded<SourceConfig>) -> Result<Vec<SiteSpec>, ConfigError> {
    let config = &loaded.section;
    let dir = loaded
        .path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut declared: Vec<(Origin, SiteConfig)> = config
        .sites
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, s)| (Origin::Inline(i), s))
        .collect();
    let file = config.sites_file.as_ref().map(|f| dir.join(f));
    if let Some(file) = &file {
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError::Invalid {
            path: loaded.path.clone(),
            key: "source.sites_file".into(),
            line: std::fs::read_to_string(&loaded.path)
                .ok()
                .and_then(|t| locate(&t, "source.sites_file")),
            message: format!(
                "cannot read {}: {e}; the path is relative to the configuration file's directory",
                file.display()
            ),
        })?;
        declared.extend(parse_sites_file(&text, file)?);
        if declared.is_empty() {
            return Err(ConfigError::Invalid {
                path: file.clone(),
                key: "source.sites_file".into(),
                line: None,
                message: "no sites in this file and none in [[source.sites]]; add one url a line"
                    .into(),
            });
        }
    }

    let mut resolver = Resolver::new(config, &dir);
    let mut out = Vec::new();
    for (origin, site) in declared {
        let spec = resolver.site(&site).map_err(|problem| match origin {
            Origin::Inline(i) => {
                let key = if problem.key.starts_with("source.") {
                    problem.key
                } else {
                    format!("source.sites[{i}].{}", problem.key)
                };
                let line = std::fs::read_to_string(&loaded.path)
                    .ok()
                    .and_then(|t| locate(&t, &key));
                ConfigError::Invalid {
                    path: loaded.path.clone(),
                    key,
                    line,
                    message: problem.message,
                }
            }
            Origin::File(line) => ConfigError::Invalid {
                path: file.clone().unwrap_or_default(),
                key: problem.key,
                line: Some(line),
                message: problem.message,
            },
        })?;
        let keep = config
            .shard
            .is_none_or(|s| shard_of(spec.url.as_str(), s.count) == s.index);
        if keep {
            out.push(spec);
        }
    }
    Ok(out)
}

/// Parses `sites_file`: blank lines and `#` comments are skipped; a line
/// starting with `{` is a JSON object with the per-site keys, any other line
/// is a url.
fn parse_sites_file(text: &str, path: &Path) -> Result<Vec<(Origin, SiteConfig)>, ConfigError> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_owned(),
            line: Some(n + 1),
            message,
        };
        let site = if line.starts_with('{') {
            let mut de = serde_json::Deserializer::from_str(line);
            parse_site_json(&mut de).map_err(|(key, m)| invalid(&key, m))?
        } else {
            SiteConfig {
                url: line.to_owned(),
                ..SiteConfig::default()
            }
        };
        let mut problems = Vec::new();
        validate_site(&site, "", &mut problems);
        if let Some(p) = problems.into_iter().next() {
            return Err(invalid(&p.key, p.message));
        }
        out.push((Origin::File(n + 1), site));
    }
    Ok(out)
}

/// Deserialises one JSON line, naming the key of a problem.
fn parse_site_json(
    de: &mut serde_json::Deserializer<serde_json::de::StrRead<'_>>,
) -> Result<SiteConfig, (String, String)> {
    use serde::Deserialize;
    SiteConfig::deserialize(&mut *de).map_err(|e| {
        let message = e.to_string();
        let key = message
            .strip_prefix("unknown field `")
            .and_then(|r| r.split('`').next())
            .unwrap_or("url")
            .to_owned();
        (key, format!("not a site: {message}; write {{\"url\": \"https://...\", ...}} with the keys of [[source.sites]]"))
    })
}

/// Applies defaults, sharing what many sites have in common (the default
/// headers, each distinct regex).
struct Resolver<'a> {
    config: &'a SourceConfig,
    dir: &'a Path,
    default_headers: Arc<HeaderMap>,
    regexes: HashMap<String, Arc<Regex>>,
    expected: Option<Arc<[u16]>>,
}

impl<'a> Resolver<'a> {
    fn new(config: &'a SourceConfig, dir: &'a Path) -> Self {
        Resolver {
            config,
            dir,
            default_headers: Arc::new(header_map(&config.headers, &StringMap::new())),
            regexes: HashMap::new(),
            expected: config.expected_status.as_deref().map(Arc::from),
        }
    }

    fn site(&mut self, site: &SiteConfig) -> Result<SiteSpec, Invalid> {
        let c = self.config;
        let url = crate::config::parse_url(&site.url).map_err(|m| Invalid::new("url", m))?;
        let method = site.method.as_deref().unwrap_or(&c.method);
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| Invalid::new("method", format!("`{method}` is not an HTTP method")))?;
        let headers = match &site.headers {
            Some(own) if !own.is_empty() => Arc::new(header_map(&c.headers, own)),
            _ => Arc::clone(&self.default_headers),
        };
        let regex = match site.regex.as_ref().or(c.regex.as_ref()) {
            None => None,
            Some(pattern) => Some(match self.regexes.get(pattern) {
                Some(r) => Arc::clone(r),
                None => {
                    let r =
                        Arc::new(Regex::new(pattern).map_err(|e| {
                            Invalid::new("regex", format!("does not compile: {e}"))
                        })?);
                    self.regexes.insert(pattern.clone(), Arc::clone(&r));
                    r
                }
            }),
        };
        let tls_ca = match site.tls_ca.as_ref().or(c.tls_ca.as_ref()) {
            None => None,
            Some(p) => {
                let path = self.dir.join(p);
                if !path.is_file() {
                    let key = if site.tls_ca.is_some() {
                        "tls_ca"
                    } else {
                        "source.tls_ca"
                    };
                    return Err(Invalid::new(
                        key,
                        format!("file {} does not exist; give the path of a PEM file, relative to the configuration file", path.display()),
                    ));
                }
                Some(path)
            }
        };
        Ok(SiteSpec {
            interval: site.interval.unwrap_or(c.interval),
            timeout: site.timeout.unwrap_or(c.timeout),
            method,
            headers,
            body: site
                .body
                .as_ref()
                .or(c.body.as_ref())
                .map(|b| Bytes::from(b.clone())),
            regex,
            expected_status: match &site.expected_status {
                Some(own) => Some(Arc::from(own.as_slice())),
                None => self.expected.clone(),
            },
            follow_redirects: site.follow_redirects.unwrap_or(c.follow_redirects),
            max_redirects: site.max_redirects.unwrap_or(c.max_redirects),
            max_body_bytes: site.max_body_bytes.unwrap_or(c.max_body_bytes),
            client: ClientKey {
                keep_alive: site.keep_alive.unwrap_or(c.keep_alive),
                tls_ca,
                tls_verify: site.tls_verify.unwrap_or(c.tls_verify),
            },
            url,
        })
    }
}

/// Headers from the defaults, then the site's own (validated before).
fn header_map(defaults: &StringMap, own: &StringMap) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in defaults.iter().chain(own) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            map.insert(name, value);
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use connector_common::config::{load, Section};

    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn resolve_in(dir: &Path, toml: &str) -> Result<Vec<SiteSpec>, ConfigError> {
        let path = write(dir, "connector.toml", toml);
        let loaded = load::<SourceConfig>(&path, Section::Source, &|_| None)?;
        resolve(&loaded)
    }

    #[test]
    fn sites_file_is_relative_to_the_config_and_takes_both_forms() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "sites.txt",
            "# comment\nhttps://a.example\n\n{\"url\": \"https://b.example/x\", \"regex\": \"B\", \"interval\": \"30s\"}\n",
        );
        let sites = resolve_in(
            dir.path(),
            "[source]\nsites_file = \"sites.txt\"\nregex = \"A\"\n[[source.sites]]\nurl = \"http://c.example/\"\nmethod = \"HEAD\"\n",
        )
        .unwrap();
        let urls: Vec<&str> = sites.iter().map(|s| s.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "http://c.example/",
                "https://a.example/",
                "https://b.example/x"
            ]
        );
        assert_eq!(sites[0].method, Method::HEAD);
        assert_eq!(sites[1].regex.as_ref().unwrap().as_str(), "A");
        assert_eq!(sites[2].regex.as_ref().unwrap().as_str(), "B");
        assert_eq!(sites[2].interval, Duration::from_secs(30));
        assert_eq!(sites[1].interval, Duration::from_secs(1));
        // One compiled regex shared by the sites that use the default.
        assert!(Arc::ptr_eq(
            sites[0].regex.as_ref().unwrap(),
            sites[1].regex.as_ref().unwrap()
        ));
    }

    #[test]
    fn bad_line_in_sites_file_names_file_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "s.txt",
            "https://a.example/\nftp://b.example/\n",
        );
        let e = resolve_in(dir.path(), "[source]\nsites_file = \"s.txt\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("s.txt:2: key `url`") && e.contains("only http and https"),
            "{e}"
        );
        write(
            dir.path(),
            "s.txt",
            "{\"url\": \"https://a.example/\", \"regex\": \"(\"}\n",
        );
        let e = resolve_in(dir.path(), "[source]\nsites_file = \"s.txt\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("s.txt:1: key `regex`"), "{e}");
        write(
            dir.path(),
            "s.txt",
            "{\"url\": \"https://a.example/\", \"colour\": 1}\n",
        );
        let e = resolve_in(dir.path(), "[source]\nsites_file = \"s.txt\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("s.txt:1: key `colour`"), "{e}");
    }

    #[test]
    fn missing_sites_file_and_tls_ca_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let e = resolve_in(dir.path(), "[source]\nsites_file = \"nope.txt\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(":2: key `source.sites_file`: cannot read") && e.contains("nope.txt"),
            "{e}"
        );
        let e = resolve_in(
            dir.path(),
            "[[source.sites]]\nurl = \"https://a.example/\"\ntls_ca = \"ca.pem\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains(":3: key `source.sites[0].tls_ca`"), "{e}");
    }

    #[test]
    fn shards_split_the_list_without_overlap() {
        let dir = tempfile::tempdir().unwrap();
        let list: String = (0..200)
            .map(|n| format!("https://s{n}.example/\n"))
            .collect();
        write(dir.path(), "s.txt", &list);
        let mut seen = Vec::new();
        for k in 1..=3 {
            let sites = resolve_in(
                dir.path(),
                &format!("[source]\nsites_file = \"s.txt\"\nshard = \"{k}/3\"\n"),
            )
            .unwrap();
            assert!(!sites.is_empty());
            seen.extend(sites.into_iter().map(|s| s.url.to_string()));
        }
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 200);
    }

    #[test]
    fn headers_merge_with_site_winning() {
        let dir = tempfile::tempdir().unwrap();
        let sites = resolve_in(
            dir.path(),
            "[source]\nheaders = { a = \"1\", b = \"2\" }\n[[source.sites]]\nurl = \"https://a.example/\"\nheaders = { b = \"3\" }\n[[source.sites]]\nurl = \"https://b.example/\"\n",
        )
        .unwrap();
        assert_eq!(sites[0].headers.get("a").unwrap(), "1");
        assert_eq!(sites[0].headers.get("b").unwrap(), "3");
        assert_eq!(sites[1].headers.get("b").unwrap(), "2");
    }
}
