//! Secrets in the configuration, in types that cannot print them.
//!
//! - [`Secret`] holds one secret value (a SASL password). Its `Debug`,
//!   `Display` and `Serialize` all give [`MASK`]; only [`Secret::expose`]
//!   gives the value, for the one place that hands it to a client library.
//! - [`SecretMap`] is a string map (request headers, `[kafka.options]`) whose
//!   entries are secret *by meaning*: a [`MaskRule`] decides from the name
//!   which values are credentials ([`HeaderRule`], [`KafkaOptionRule`]). Its
//!   `Debug` and `Serialize` mask those values; reading the map (it derefs to
//!   a `BTreeMap`) gives the real ones.
//! - [`ConnectionString`] is a PostgreSQL connection string (URL or
//!   `key=value` form); `Debug`, `Display` and `Serialize` show it with the
//!   password masked ([`mask_connection_string`], which parses the string
//!   the way tokio-postgres does rather than slicing it).
//!
//! `--check-config` renders the configuration through `Serialize`, so what
//! these types mask is masked there too, with no second list of names.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a masked value is shown as.
pub const MASK: &str = "********";

/// One secret value; it cannot be printed, only [exposed](Secret::expose).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps `value`.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The value itself: only for handing it to the library that needs it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl<T> Serialize for Secret<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(MASK)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Secret<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(Secret)
    }
}

impl From<String> for Secret<String> {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl From<&str> for Secret<String> {
    fn from(s: &str) -> Self {
        Secret(s.to_owned())
    }
}

/// Decides from an entry's name whether its value is a credential.
pub trait MaskRule {
    /// Whether the value of `name` must never be shown.
    fn is_secret(name: &str) -> bool;
}

/// Request headers whose values may carry credentials: every header but a
/// short list of well-known ones that never do (`accept*`, `user-agent`,
/// `content-type`, `cache-control`, …). Credential headers have too many
/// names (`x-jwt`, `x-sas`, `x-goog-iap-jwt-assertion`, …) to list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeaderRule;

impl MaskRule for HeaderRule {
    fn is_secret(name: &str) -> bool {
        const HARMLESS: [&str; 20] = [
            "accept",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "cache-control",
            "connection",
            "content-encoding",
            "content-language",
            "content-length",
            "content-type",
            "dnt",
            "host",
            "if-modified-since",
            "if-none-match",
            "origin",
            "pragma",
            "range",
            "referer",
            "user-agent",
            "x-requested-with",
        ];
        let n = name.to_ascii_lowercase();
        !HARMLESS.contains(&n.as_str())
    }
}

/// `[kafka.options]` entries that carry credentials: any name containing
/// `.pem`, `password`, `secret`, `key`, `token` or `jaas` (e.g.
/// `ssl.key.pem`, `ssl.key.password`, `sasl.oauthbearer.client.secret`),
/// except a `*.location` (a path, not a secret) and a few well-known
/// non-secret settings whose names merely contain `key`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KafkaOptionRule;

impl MaskRule for KafkaOptionRule {
    fn is_secret(name: &str) -> bool {
        let n = name.to_ascii_lowercase();
        if n.ends_with(".location") {
            return false;
        }
        // Names with `key` in them that hold no secret.
        if matches!(
            n.as_str(),
            "ssl.keystore.location" | "ssl.key.type" | "ssl_engine_id" | "message.key"
        ) {
            return false;
        }
        [
            ".pem",
            "password",
            "secret",
            "key",
            "token",
            "jaas",
            "credential",
            "oauthbearer",
            "bearer",
            "jwt",
            "pass",
            "pwd",
            "signature",
        ]
        .iter()
        .any(|w| n.contains(w))
    }
}

/// A string map whose credential entries (by `R`) never print.
pub struct SecretMap<R> {
    map: BTreeMap<String, String>,
    rule: PhantomData<R>,
}

/// Request headers (`[source] headers`, a site's `headers`).
pub type Headers = SecretMap<HeaderRule>;

/// `[kafka.options]`.
pub type KafkaOptions = SecretMap<KafkaOptionRule>;

impl<R> SecretMap<R> {
    /// An empty map.
    pub fn new() -> Self {
        Self {
            map: BTreeMap::new(),
            rule: PhantomData,
        }
    }

    /// Sets `name` to `value`.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.map.insert(name.into(), value.into());
    }
}

impl<R: MaskRule> SecretMap<R> {
    /// The entries as shown: credential values replaced by [`MASK`].
    pub fn shown(&self) -> BTreeMap<&str, &str> {
        self.map
            .iter()
            .map(|(k, v)| {
                let shown = if R::is_secret(k) && !v.is_empty() {
                    MASK
                } else {
                    v.as_str()
                };
                (k.as_str(), shown)
            })
            .collect()
    }
}

impl<R> Default for SecretMap<R> {
    fn default() -> Self {
        Self::new()
    }
}

impl<R> Clone for SecretMap<R> {
    fn clone(&self) -> Self {
        Self {
            map: self.map.clone(),
            rule: PhantomData,
        }
    }
}

impl<R> PartialEq for SecretMap<R> {
    fn eq(&self, other: &Self) -> bool {
        self.map == other.map
    }
}

impl<R> Deref for SecretMap<R> {
    type Target = BTreeMap<String, String>;

    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl<R> From<BTreeMap<String, String>> for SecretMap<R> {
    fn from(map: BTreeMap<String, String>) -> Self {
        Self {
            map,
            rule: PhantomData,
        }
    }
}

impl<R: MaskRule> fmt::Debug for SecretMap<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.shown()).finish()
    }
}

impl<R: MaskRule> Serialize for SecretMap<R> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.shown().serialize(s)
    }
}

impl<'de, R> Deserialize<'de> for SecretMap<R> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BTreeMap::deserialize(d).map(Self::from)
    }
}

/// A PostgreSQL connection string; shown with its password masked.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionString(String);

impl ConnectionString {
    /// Wraps `s`.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The string itself, password included: only for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The string with its password masked.
    pub fn shown(&self) -> String {
        mask_connection_string(&self.0)
    }
}

impl fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.shown(), f)
    }
}

impl fmt::Display for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown())
    }
}

impl Serialize for ConnectionString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.shown())
    }
}

impl<'de> Deserialize<'de> for ConnectionString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self)
    }
}

/// Parameter names whose value is a password.
fn is_password_param(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.contains("password") || n == "passfile"
}

/// A PostgreSQL connection string with every password replaced by [`MASK`].
///
/// Parsed as tokio-postgres (and libpq) read it, not sliced:
/// - URL form (`postgres://` or `postgresql://`): the query starts at the
///   first `?`; before it, the credentials run up to the first `@` (so a
///   password may contain `/` or `:`), the password after the first `:` of
///   them; in the query, the value of any `*password*` parameter;
/// - `key=value` form: values may be quoted (`'...'`) and hold `\`
///   escapes; the value of any `*password*` keyword is masked.
///
/// Text that cannot be parsed is masked from the first point of doubt on,
/// never shown.
pub fn mask_connection_string(s: &str) -> String {
    let trimmed = s.trim_start();
    for prefix in ["postgres://", "postgresql://"] {
        if let Some(rest) = trimmed.strip_prefix(prefix) {
            return format!("{prefix}{}", mask_url_rest(rest));
        }
    }
    mask_key_values(s)
}

fn mask_url_rest(rest: &str) -> String {
    let (base, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let mut out = String::with_capacity(rest.len());
    match base.split_once('@') {
        Some((creds, host)) => {
            match creds.split_once(':') {
                Some((user, _password)) => {
                    out.push_str(user);
                    out.push(':');
                    out.push_str(MASK);
                }
                None => out.push_str(creds),
            }
            out.push('@');
            out.push_str(host);
        }
        None => out.push_str(base),
    }
    if let Some(q) = query {
        out.push('?');
        let pairs: Vec<String> = q
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if is_password_param(&percent_decoded(k)) => format!("{k}={MASK}"),
                Some(_) => pair.to_owned(),
                // A pair without `=` might be anything: do not show it.
                None if pair.is_empty() => String::new(),
                None => MASK.to_owned(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
    }
    out
}

/// `s` with its `%XX` escapes decoded (invalid UTF-8 replaced), as
/// PostgreSQL connection strings and URLs write them.
pub fn percent_decoded(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// `key=value` form, tokenised like tokio-postgres' parser; masks password
/// values by replacing their text (quotes included) in place.
fn mask_key_values(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.char_indices().peekable();
    let mut copied = 0;
    loop {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(key_start, _)) = chars.peek() else {
            break;
        };
        while chars
            .next_if(|(_, c)| !c.is_whitespace() && *c != '=')
            .is_some()
        {}
        let key_end = chars.peek().map_or(s.len(), |(i, _)| *i);
        let key = &s[key_start..key_end];
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        if chars.next_if(|(_, c)| *c == '=').is_none() {
            // Not `key=value`: hide everything from here.
            out.push_str(&s[copied..key_start]);
            out.push_str(MASK);
            return out;
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let value_start = chars.peek().map_or(s.len(), |(i, _)| *i);
        let quoted = chars.next_if(|(_, c)| *c == '\'').is_some();
        let mut closed = !quoted;
        while let Some((_, c)) = chars.next() {
            if c == '\\' {
                chars.next();
            } else if quoted && c == '\'' {
                closed = true;
                break;
            } else if !quoted && c.is_whitespace() {
                break;
            }
        }
        let value_end = chars.peek().map_or(s.len(), |(i, _)| *i);
        if !closed {
            out.push_str(&s[copied..value_start]);
            out.push_str(MASK);
            return out;
        }
        if is_password_param(key) {
            out.push_str(&s[copied..value_start]);
            out.push_str(MASK);
            // Keep the whitespace that ended an unquoted value.
            let value_text = &s[value_start..value_end];
            let trailing = value_text.len() - value_text.trim_end().len();
            copied = value_end - trailing;
        }
    }
    out.push_str(&s[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_header_but_well_known_harmless_ones_is_masked() {
        for secret in [
            "authorization",
            "x-jwt",
            "x-sas",
            "X-Credentials",
            "x-goog-iap-jwt-assertion",
            "x-pwd",
        ] {
            assert!(HeaderRule::is_secret(secret), "{secret}");
        }
        for shown in ["accept", "User-Agent", "content-type", "cache-control"] {
            assert!(!HeaderRule::is_secret(shown), "{shown}");
        }
        assert!(KafkaOptionRule::is_secret("sasl.oauthbearer.config"));
        assert!(!KafkaOptionRule::is_secret("ssl.ca.location"));
    }

    #[test]
    fn a_secret_never_prints() {
        let s = Secret::from("hunter2");
        assert_eq!(format!("{s} {s:?}"), format!("{MASK} {MASK}"));
        assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{MASK}\""));
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn credential_headers_are_masked_by_meaning() {
        let mut h = Headers::new();
        for (k, v) in [
            ("Authorization", "Bearer abc"),
            ("proxy-authorization", "Basic xyz"),
            ("cookie", "sid=1"),
            ("X-API-Key", "k1"),
            ("x-auth-token", "t1"),
            ("x-client-secret", "s1"),
            ("accept", "text/html"),
            ("user-agent", "probe"),
        ] {
            h.insert(k, v);
        }
        let shown = format!("{h:?} {}", serde_json::to_string(&h).unwrap());
        for secret in ["Bearer abc", "Basic xyz", "sid=1", "k1", "t1", "s1"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(
            shown.contains("text/html") && shown.contains("probe"),
            "{shown}"
        );
        assert_eq!(h.get("X-API-Key").map(String::as_str), Some("k1"));
    }

    #[test]
    fn kafka_options_with_keys_and_passwords_are_masked_but_locations_are_not() {
        for name in [
            "ssl.key.pem",
            "ssl.certificate.pem",
            "ssl.key.password",
            "ssl.keystore.password",
            "sasl.password",
            "sasl.oauthbearer.client.secret",
            "sasl.jaas.config",
        ] {
            assert!(KafkaOptionRule::is_secret(name), "{name}");
        }
        for name in [
            "ssl.key.location",
            "ssl.ca.location",
            "compression.type",
            "linger.ms",
        ] {
            assert!(!KafkaOptionRule::is_secret(name), "{name}");
        }
    }

    #[test]
    fn postgres_url_passwords_are_masked_even_with_slashes() {
        for (uri, shown) in [
            (
                "postgres://u:secret@h:5432/db?sslmode=require",
                "postgres://u:********@h:5432/db?sslmode=require",
            ),
            ("postgres://u:se/cr:et@h/db", "postgres://u:********@h/db"),
            ("postgresql://u@h/db", "postgresql://u@h/db"),
            (
                "postgres://h/db?user=u&password=p/q&sslmode=disable",
                "postgres://h/db?user=u&password=********&sslmode=disable",
            ),
            (
                "postgres://h/db?pass%77ord=x",
                "postgres://h/db?pass%77ord=********",
            ),
        ] {
            assert_eq!(mask_connection_string(uri), shown, "{uri}");
        }
    }

    #[test]
    fn key_value_passwords_are_masked_quoted_or_not() {
        for (s, shown) in [
            (
                "host=h password=se/cret user=u",
                "host=h password=******** user=u",
            ),
            (
                "host=h password = 'a b\\' c' dbname=d",
                "host=h password = ******** dbname=d",
            ),
            ("host=h password='unterminated", "host=h password=********"),
            ("host=h user=u", "host=h user=u"),
            ("host=h garbage", "host=h ********"),
        ] {
            let masked = mask_connection_string(s);
            assert_eq!(masked, shown, "{s}");
            let c = ConnectionString::new(s);
            assert_eq!(format!("{c}"), shown);
            assert_eq!(c.expose(), s);
        }
    }
}
