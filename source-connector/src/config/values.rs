//! The typed values a site's settings are parsed into as the configuration
//! is read — [`SiteUrl`], [`Pattern`], [`Method`], [`RequestHeaders`] — each refusing what
//! cannot be used with the message the operator reads, so the rest of the
//! source uses them as they are and never checks them again.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use connector_common::limits::truncate;
use connector_common::secret::{HeaderRule, Headers, MaskRule};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::bounds::{MAX_HEADERS, MAX_HEADER_VALUE_BYTES, MAX_REGEX_BYTES, MAX_URL_BYTES};

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
    /// `None` when it is the request url (no credentials): one copy, not
    /// two, for the common case (a million sites hold a million urls).
    shown: Option<Box<url::Url>>,
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
        let masked = if shown.password().is_some() {
            let _ = shown.set_password(Some("***"));
            true
        } else if !shown.username().is_empty() {
            // A user name alone is often the secret itself (an API token
            // given as `https://TOKEN@host/`, or `KEY:` with an empty password).
            let _ = shown.set_username("***");
            true
        } else {
            false
        };
        if shown.as_str().len() > MAX_URL_BYTES {
            return Err(format!(
                "the url is {} bytes once normalised; at most {MAX_URL_BYTES} are allowed (the sink rejects longer urls)",
                shown.as_str().len()
            ));
        }
        let shown = masked.then(|| Box::new(shown));
        Ok(SiteUrl { request, shown })
    }

    /// The url the request goes to, credentials included: only for sending it.
    pub fn request(&self) -> &url::Url {
        &self.request
    }

    /// The url as every output shows it (password masked).
    pub fn shown(&self) -> &url::Url {
        self.shown.as_deref().unwrap_or(&self.request)
    }

    /// [`SiteUrl::shown`] as text.
    pub fn as_str(&self) -> &str {
        self.shown().as_str()
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

/// A `regex` searched in a response body, compiled when the configuration is
/// read: at most [`MAX_REGEX_BYTES`] of text, within the regex crate's
/// compiled-size limit. Serialises back to its text. Cloning shares the
/// compiled regex.
#[derive(Clone)]
pub struct Pattern(Arc<regex::Regex>);

impl Pattern {
    /// Compiles `text`; the error says why it cannot be used.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() > MAX_REGEX_BYTES {
            return Err(format!(
                "{} bytes; at most {MAX_REGEX_BYTES} are allowed",
                text.len()
            ));
        }
        regex::Regex::new(text)
            .map(|r| Pattern(Arc::new(r)))
            .map_err(|e| format!("does not compile: {}", truncate(&e.to_string(), 1024)))
    }

    /// The compiled regex, shared.
    pub fn regex(&self) -> &Arc<regex::Regex> {
        &self.0
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Pattern {}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Pattern::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The longest `method` accepted, in bytes.
const MAX_METHOD_BYTES: usize = 32;

/// An HTTP `method`, checked when the configuration is read: a token of at
/// most 32 bytes (`GET`, `HEAD`, `POST`, or an extension such as `PURGE`).
/// Serialises back to its text; the default is `GET`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Method(reqwest::Method);

impl Method {
    /// Parses `text`; the error says why it is not a method.
    pub fn parse(text: &str) -> Result<Self, String> {
        match reqwest::Method::from_bytes(text.as_bytes()) {
            Ok(m) if !text.is_empty() && text.len() <= MAX_METHOD_BYTES => Ok(Method(m)),
            _ => Err(format!(
                "`{}` is not an HTTP method; write e.g. \"GET\" or \"HEAD\"",
                truncate(text, 40)
            )),
        }
    }

    /// The method requests are sent with.
    pub fn get(&self) -> &reqwest::Method {
        &self.0
    }

    /// The method's name.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Debug for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Method {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Method {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Method::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Request `headers`, checked when the configuration is read: at most
/// [`MAX_HEADERS`], each name a valid header name and each value printable
/// text of at most [`MAX_HEADER_VALUE_BYTES`]. Held as written (for showing)
/// and as the [`HeaderMap`] requests send, credential values (by
/// [`HeaderRule`]) marked sensitive. `Debug`, `Display` and `Serialize` show
/// the headers as written with credential values masked.
#[derive(Clone, Default, PartialEq)]
pub struct RequestHeaders {
    /// As written, for showing (it masks credential values).
    written: Headers,
    /// The same headers, for requests.
    map: HeaderMap,
}

impl RequestHeaders {
    /// Checks `written`; the error names every header that cannot be sent.
    pub fn parse(written: BTreeMap<String, String>) -> Result<Self, String> {
        let mut problems = Vec::new();
        if written.len() > MAX_HEADERS {
            problems.push(format!(
                "{} headers; at most {MAX_HEADERS} are allowed",
                written.len()
            ));
        }
        let mut map = HeaderMap::with_capacity(written.len());
        for (name, value) in &written {
            let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
                problems.push(format!(
                    "`{}` is not a valid header name",
                    truncate(name, 100)
                ));
                continue;
            };
            match HeaderValue::from_str(value) {
                Ok(mut v) if value.len() <= MAX_HEADER_VALUE_BYTES => {
                    v.set_sensitive(HeaderRule::is_secret(name));
                    map.insert(header, v);
                }
                _ => problems.push(format!("the value of `{name}` is not a valid header value (printable text of at most {MAX_HEADER_VALUE_BYTES} bytes)")),
            }
        }
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        Ok(RequestHeaders {
            written: Headers::from(written),
            map,
        })
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.written.is_empty()
    }

    /// The headers requests send.
    pub fn map(&self) -> &HeaderMap {
        &self.map
    }

    /// These headers, then `own` (whose value wins for the same name).
    pub fn merged(&self, own: &RequestHeaders) -> HeaderMap {
        let mut map = self.map.clone();
        for (name, value) in &own.map {
            map.insert(name.clone(), value.clone());
        }
        map
    }
}

impl fmt::Debug for RequestHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.written, f)
    }
}

impl fmt::Display for RequestHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.written, f)
    }
}

impl Serialize for RequestHeaders {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.written.serialize(s)
    }
}

impl<'de> Deserialize<'de> for RequestHeaders {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let written = BTreeMap::deserialize(d)?;
        RequestHeaders::parse(written).map_err(serde::de::Error::custom)
    }
}
