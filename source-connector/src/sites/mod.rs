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
use connector_common::secret::{HeaderRule, MaskRule};
use regex::Regex;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::Method;

use crate::config::{validate_site, SiteConfig, SiteUrl, SourceConfig};
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

/// Where a site was declared, for error messages.
#[derive(Debug, Clone, Copy)]
enum Origin {
    /// `[[source.sites]]` entry number `i`.
    Inline(usize),
    /// Line `n` (1-based) of `sites_file`.
    File(usize),
}

/// Largest `sites_file` read: a million sites of a few hundred bytes each fit
/// well below it; `/dev/zero` or a runaway file does not fill the memory.
const MAX_SITES_FILE_BYTES: u64 = 1 << 30;

/// Reads `sites_file`: a regular file of at most [`MAX_SITES_FILE_BYTES`].
fn read_sites_file(file: &Path) -> std::io::Result<String> {
    use std::io::{Error, ErrorKind, Read};
    let f = std::fs::File::open(file)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(Error::new(ErrorKind::InvalidInput, "not a regular file"));
    }
    let mut text = String::new();
    f.take(MAX_SITES_FILE_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_SITES_FILE_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!("larger than {MAX_SITES_FILE_BYTES} bytes; split the sites over several instances (`shard`)"),
        ));
    }
    Ok(text)
}

/// Resolves the sites of `loaded` for this instance (after sharding).
pub fn resolve(loaded: &Loaded<SourceConfig>) -> Result<Vec<SiteSpec>, ConfigError> {
    let config = &loaded.section;
    let dir = loaded
        .path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let file = config.sites_file.as_ref().map(|f| dir.join(f));
    let text = match &file {
        Some(file) => Some(read_sites_file(file).map_err(|e| {
            ConfigError::Invalid {
                path: loaded.path.clone(),
                key: "source.sites_file".into(),
                line: std::fs::read_to_string(&loaded.path)
                    .ok()
                    .and_then(|t| locate(&t, "source.sites_file")),
                message: format!(
                "cannot read {}: {e}; the path is relative to the configuration file's directory",
                file.display()
            ),
            }
        })?),
        None => None,
    };
    // Each site is resolved as it is read, so only the resolved sites stay
    // in memory (100,000 lines held as parsed entries first doubled the
    // start-up peak).
    let declared = config.sites.len()
        + text
            .as_deref()
            .map_or(0, |t| t.bytes().filter(|b| *b == b'\n').count() + 1);
    let mut resolving = Resolving {
        loaded,
        resolver: Resolver::new(config, &dir),
        config_text: std::cell::OnceCell::new(),
        sites_file: file.clone().unwrap_or_default(),
        first_seen: HashMap::with_capacity(declared),
        // A shard's share, with 10 % slack: a shard a little over its share
        // must not double the vector.
        out: Vec::with_capacity({
            let share = declared / config.shard.map_or(1, |s| s.count as usize).max(1);
            share + share / 10 + 1
        }),
    };
    for (i, site) in config.sites.iter().enumerate() {
        resolving.add(Origin::Inline(i), site)?;
    }
    if let (Some(file), Some(text)) = (&file, &text) {
        let found = for_each_site_line(text, file, |origin, site| resolving.add(origin, &site))?;
        if found == 0 && config.sites.is_empty() {
            return Err(ConfigError::Invalid {
                path: file.clone(),
                key: "source.sites_file".into(),
                line: None,
                message: "no sites in this file and none in [[source.sites]]; add one url a line"
                    .into(),
            });
        }
    }
    let mut out = resolving.out;
    out.shrink_to_fit();
    Ok(out)
}

/// The state of [`resolve`] while sites are added one by one.
struct Resolving<'a> {
    /// The configuration (for its path, and the shard).
    loaded: &'a Loaded<SourceConfig>,
    /// Defaults, shared headers and compiled regexes.
    resolver: Resolver<'a>,
    /// The configuration file's text, read on the first error that needs a line.
    config_text: std::cell::OnceCell<Option<String>>,
    /// `sites_file`'s path, for errors.
    sites_file: PathBuf,
    /// Where each url was first declared: one url twice would be two checks
    /// of one site in flight and two records per interval.
    first_seen: HashMap<Box<str>, Origin>,
    /// The sites of this instance (after sharding).
    out: Vec<SiteSpec>,
}

impl Resolving<'_> {
    fn config_line(&self, key: &str) -> Option<usize> {
        self.config_text
            .get_or_init(|| std::fs::read_to_string(&self.loaded.path).ok())
            .as_deref()
            .and_then(|t| locate(t, key))
    }

    fn refuse(&self, origin: Origin, problem: Invalid) -> ConfigError {
        match origin {
            Origin::Inline(i) => {
                let key = if problem.key.starts_with("source.") {
                    problem.key
                } else {
                    format!("source.sites[{i}].{}", problem.key)
                };
                ConfigError::Invalid {
                    path: self.loaded.path.clone(),
                    line: self.config_line(&key),
                    key,
                    message: problem.message,
                }
            }
            Origin::File(line) => ConfigError::Invalid {
                path: self.sites_file.clone(),
                key: problem.key,
                line: Some(line),
                message: problem.message,
            },
        }
    }

    /// Resolves one declared site; keeps it when this instance's shard has it.
    fn add(&mut self, origin: Origin, site: &SiteConfig) -> Result<(), ConfigError> {
        let spec = match self.resolver.site(site) {
            Ok(spec) => spec,
            Err(problem) => return Err(self.refuse(origin, problem)),
        };
        if let Some(first) = self.first_seen.insert(spec.url.as_str().into(), origin) {
            let place = match first {
                Origin::Inline(i) => {
                    let key = format!("source.sites[{i}].url");
                    let line = self
                        .config_line(&key)
                        .map(|l| format!(":{l}"))
                        .unwrap_or_default();
                    format!("{}{line} (key `{key}`)", self.loaded.path.display())
                }
                Origin::File(line) => format!("{}:{line}", self.sites_file.display()),
            };
            let problem = Invalid::new(
                "url",
                format!(
                    "`{}` is listed twice, also at {place} (after normalisation); \
                     list each url once: two entries would check the site twice per interval",
                    spec.url
                ),
            );
            return Err(self.refuse(origin, problem));
        }
        let keep = self
            .loaded
            .section
            .shard
            .is_none_or(|s| shard_of(spec.url.as_str(), s.count) == s.index);
        if keep {
            self.out.push(spec);
        }
        Ok(())
    }
}

/// Reads `sites_file`, handing each site to `add` as it is parsed: blank
/// lines and `#` comments are skipped; a line starting with `{` is a JSON
/// object with the per-site keys, any other line is a url. Returns how many
/// sites the file declared.
fn for_each_site_line(
    text: &str,
    path: &Path,
    mut add: impl FnMut(Origin, SiteConfig) -> Result<(), ConfigError>,
) -> Result<usize, ConfigError> {
    let mut found = 0;
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
            parse_site_json(line).map_err(|(key, m)| invalid(&key, m))?
        } else {
            SiteConfig::new(SiteUrl::parse(line).map_err(|m| invalid("url", m))?)
        };
        let mut problems = Vec::new();
        validate_site(&site, "", &mut problems);
        if let Some(p) = problems.into_iter().next() {
            return Err(invalid(&p.key, p.message));
        }
        add(Origin::File(n + 1), site)?;
        found += 1;
    }
    Ok(found)
}

/// Deserialises one JSON line, naming the key of a problem (the path to the
/// value that could not be used, e.g. `interval` or `expected_status[1]`).
fn parse_site_json(line: &str) -> Result<SiteConfig, (String, String)> {
    let explain = |message: &dyn std::fmt::Display| {
        format!("not a site: {message}; write {{\"url\": \"https://...\", ...}} with the keys of [[source.sites]]")
    };
    let mut de = serde_json::Deserializer::from_str(line);
    let site: SiteConfig = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let message = connector_common::config::friendly(&e.into_inner().to_string());
        let named = |prefix: &str| {
            message
                .strip_prefix(prefix)
                .and_then(|r| r.split('`').next())
                .map(str::to_owned)
        };
        let key = named("unknown field `")
            .or_else(|| (path != ".").then(|| path.clone()))
            .or_else(|| named("missing field `"))
            .unwrap_or_else(|| "url".to_owned());
        (key, explain(&message))
    })?;
    de.end().map_err(|e| ("url".to_owned(), explain(&e)))?;
    Ok(site)
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
        let url = site.url.clone();
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
        let tls_verify = site.tls_verify.unwrap_or(c.tls_verify);
        if site.tls_ca.is_some() && !tls_verify {
            let verify_key = if site.tls_verify.is_some() {
                "tls_verify"
            } else {
                "source.tls_verify"
            };
            return Err(Invalid::new(
                "tls_ca",
                format!("is ignored with {verify_key} = false (no certificate is verified then); remove one of the two"),
            ));
        }
        // Without verification a CA inherited from [source] plays no part:
        // leave it out so such sites share one client.
        let inherited_ca = if tls_verify { c.tls_ca.as_ref() } else { None };
        let tls_ca = match site.tls_ca.as_ref().or(inherited_ca) {
            None => None,
            Some(p) => {
                let path = self.dir.join(p);
                let key = if site.tls_ca.is_some() {
                    "tls_ca"
                } else {
                    "source.tls_ca"
                };
                if !path.is_file() {
                    return Err(Invalid::new(
                        key,
                        format!("file {} does not exist; give the path of a PEM file, relative to the configuration file", path.display()),
                    ));
                }
                if let Err(e) = connector_common::tls::read_ca_certs(&path) {
                    return Err(Invalid::new(
                        key,
                        format!("{e}; give a PEM file with the CA certificate(s)"),
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
                tls_verify,
            },
            url,
        })
    }
}

/// Headers from the defaults, then the site's own (validated before).
/// Credential-bearing values are marked sensitive, so not even a `Debug` of
/// the map shows them.
fn header_map(defaults: &StringMap, own: &StringMap) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in defaults.iter().chain(own) {
        if let (Ok(name), Ok(mut value)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            value.set_sensitive(HeaderRule::is_secret(k));
            map.insert(name, value);
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use connector_common::config::{load, Section};

    use super::*;

    /// A self-signed CA certificate (P-256, made with openssl for these
    /// tests; no key is needed to read it as a trust anchor).
    const TEST_CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBmjCCAUGgAwIBAgIUH8L7DQflsEw/4GcklpL7dD8bhNswCgYIKoZIzj0EAwIw\nIjEgMB4GA1UEAwwXd2Vic2l0ZS1tb25pdG9yIHRlc3QgQ0EwIBcNMjYxMTI4MjAz\nMzU1WhgPMjEyNjExMDQyMDMzNTVaMCIxIDAeBgNVBAMMF3dlYnNpdGUtbW9uaXRv\nciB0ZXN0IENBMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEYMdcS0xrZUg6uY0X\nvBnMV2tQ3bH3PhOlMK2ZJgkifWku+VeUpGU5i5FC4Y3fbYRkq8iJnG/qamaaHL7t\nBumwGaNTMFEwHQYDVR0OBBYEFMwMTS9ekg/kU00LOPB2hv9N/VwbMB8GA1UdIwQY\nMBaAFMwMTS9ekg/kU00LOPB2hv9N/VwbMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZI\nzj0EAwIDRwAwRAIgLQ7w0hEARWwVR7lSKvby4FcUb2CmoYKNNdp5klLdFfcCIB58\ndgrJraFrgDjwRSkntnZPFVxRX2fzehZgXcq8jubY\n-----END CERTIFICATE-----\n";

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
    fn a_bad_value_on_a_json_line_is_blamed_on_its_key() {
        let dir = tempfile::tempdir().unwrap();
        for (line, key) in [
            (
                "{\"url\": \"https://a.example/\", \"interval\": \"soon\"}",
                "interval",
            ),
            (
                "{\"url\": \"https://a.example/\", \"expected_status\": [200, \"x\"]}",
                "expected_status[1]",
            ),
            (
                "{\"url\": \"https://a.example/\", \"keep_alive\": \"yes\"}",
                "keep_alive",
            ),
            ("{\"interval\": \"1s\"}", "url"),
        ] {
            write(
                dir.path(),
                "s.txt",
                &format!("https://z.example/\n{line}\n"),
            );
            let e = resolve_in(dir.path(), "[source]\nsites_file = \"s.txt\"\n")
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("s.txt:2: key `{key}`: not a site")),
                "{line}: {e}"
            );
        }
    }

    #[test]
    fn a_sites_file_line_of_the_wrong_type_does_not_repeat_its_value() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "s.txt",
            "{\"url\": \"https://a.example/\", \"headers\": \"Authorization: Bearer SEKRIT\"}\n",
        );
        let e = resolve_in(dir.path(), "[source]\nsites_file = \"s.txt\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("s.txt:1: key `headers`"), "{e}");
        assert!(!e.contains("SEKRIT"), "{e}");
    }

    #[test]
    fn a_url_listed_twice_is_refused_naming_both_places() {
        let dir = tempfile::tempdir().unwrap();
        // Inline and in sites_file, spelled differently but the same after normalisation.
        write(
            dir.path(),
            "s.txt",
            "# list\nhttps://b.example/\nHTTPS://A.example:443\n",
        );
        let e = resolve_in(
            dir.path(),
            "[source]\nsites_file = \"s.txt\"\n[[source.sites]]\nurl = \"https://a.example/\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("s.txt:3: key `url`"), "{e}");
        assert!(
            e.contains("`https://a.example/` is listed twice")
                && e.contains("connector.toml:4 (key `source.sites[0].url`)"),
            "{e}"
        );
        // Twice in the file.
        write(
            dir.path(),
            "s.txt",
            "https://b.example/\n{\"url\": \"https://b.example\"}\n",
        );
        let e = resolve_in(dir.path(), "[source]\nsites_file = \"s.txt\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("s.txt:2: key `url`") && e.contains("also at "),
            "{e}"
        );
        assert!(e.contains("s.txt:1 "), "{e}");
        // Twice inline.
        let e = resolve_in(
            dir.path(),
            "[[source.sites]]\nurl = \"http://c.example\"\n[[source.sites]]\nurl = \"http://c.example/\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(":4: key `source.sites[1].url`")
                && e.contains("connector.toml:2 (key `source.sites[0].url`)"),
            "{e}"
        );
        // Differing only in the path or query is fine.
        assert!(resolve_in(
            dir.path(),
            "[[source.sites]]\nurl = \"http://c.example/\"\n[[source.sites]]\nurl = \"http://c.example/?x\"\n",
        )
        .is_ok());
    }

    #[test]
    fn tls_ca_with_tls_verify_false_on_a_site_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "ca.pem", TEST_CA_PEM);
        let e = resolve_in(
            dir.path(),
            "[[source.sites]]\nurl = \"https://a.example/\"\ntls_ca = \"ca.pem\"\ntls_verify = false\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(":3: key `source.sites[0].tls_ca`") && e.contains("tls_verify = false"),
            "{e}"
        );
        write(
            dir.path(),
            "s.txt",
            "{\"url\": \"https://b.example/\", \"tls_ca\": \"ca.pem\"}\n",
        );
        let e = resolve_in(
            dir.path(),
            "[source]\ntls_verify = false\nsites_file = \"s.txt\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("s.txt:1: key `tls_ca`") && e.contains("source.tls_verify = false"),
            "{e}"
        );
        // A site that turns verification off does not inherit the CA of [source].
        let sites = resolve_in(
            dir.path(),
            "[source]\ntls_ca = \"ca.pem\"\n[[source.sites]]\nurl = \"https://a.example/\"\ntls_verify = false\n[[source.sites]]\nurl = \"https://b.example/\"\n",
        )
        .unwrap();
        assert_eq!(sites[0].client.tls_ca, None);
        assert!(!sites[0].client.tls_verify);
        assert_eq!(sites[1].client.tls_ca, Some(dir.path().join("ca.pem")));
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
