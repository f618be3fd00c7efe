//! `postgres_uri`, parsed once at load ([`PostgresUri`]): where PostgreSQL
//! is, and the TLS to reach it with, as libpq understands `sslmode`.
//!
//! `tokio-postgres` parses only `sslmode=disable|prefer|require` and knows no
//! `sslrootcert`, so [`PgTarget::parse`] takes those two out of the connection
//! string and the TLS side is built here with rustls:
//!
//! | `sslmode`     | encrypted            | server certificate checked           |
//! |---------------|----------------------|--------------------------------------|
//! | `disable`     | no                   | —                                    |
//! | `prefer`      | if the server can    | no                                   |
//! | `require`     | yes                  | no (but see below)                   |
//! | `verify-ca`   | yes                  | chain up to `sslrootcert`            |
//! | `verify-full` | yes                  | chain, and host name or IP in the certificate |
//!
//! As in libpq, `require` with an explicit `sslrootcert` behaves as `verify-ca`.
//! `sslrootcert=system` trusts the public web roots (for managed services
//! signed by a public CA).
//!
//! Taking the string apart is `split`'s; what can be wrong with it, told
//! without quoting it, is `error`'s.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::RootCertStore;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use connector_common::limits::text_problem;
use connector_common::secret::ConnectionString;
use connector_common::tls::{AcceptAnyServerCert, ChainOnly};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

mod error;
mod split;

use error::parse_error;
pub use error::{Key, SslModeHint, UriError};
use split::{split_key_values, split_url, url_scheme_len, TOKIO_POSTGRES_KEYS};

/// TLS failures found before connecting (unreadable certificate files).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The `sslrootcert` file cannot be read or holds no certificate.
    #[error("sslrootcert {path}: {message}; give the PEM file of the CA that signed the PostgreSQL server's certificate")]
    RootCert {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// `verify-ca`/`verify-full` without any CA to verify against.
    #[error("sslmode={0} needs sslrootcert=<CA PEM file> (or sslrootcert=system); none was given and ~/.postgresql/root.crt does not exist")]
    NoRootCert(&'static str),
    /// rustls refused the configuration.
    #[error("cannot set up TLS for PostgreSQL: {0}")]
    Rustls(String),
}

/// How the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Not at all (`prefer`, `require`): encrypted against eavesdroppers only.
    None,
    /// The chain up to the root certificate (`verify-ca`).
    Ca,
    /// The chain and the host name (`verify-full`).
    Full,
}

/// A parsed `postgres_uri`: tokio-postgres settings plus the TLS choices.
#[derive(Debug, Clone)]
pub struct PgTarget {
    /// Everything tokio-postgres understands (with `ssl_mode` already set).
    pub config: tokio_postgres::Config,
    /// The `sslmode` as written (default `prefer`).
    pub sslmode: String,
    /// How the certificate is verified.
    pub verify: Verify,
    /// `sslrootcert`, when given.
    pub root_cert: Option<String>,
}

impl PgTarget {
    /// Parses a URL (`postgres://...`) or `key=value` connection string.
    pub fn parse(uri: &str) -> Result<Self, UriError> {
        let trimmed = uri.trim();
        let scheme = url_scheme_len(trimmed);
        let is_url = scheme.is_some();
        let (rest, params) = if let Some(len) = scheme {
            // tokio-postgres knows the scheme in lower case only.
            let url = format!("{}{}", trimmed[..len].to_ascii_lowercase(), &trimmed[len..]);
            split_url(&url)?
        } else {
            split_key_values(trimmed)?
        };
        let mut sslmode = "prefer".to_owned();
        let mut root_cert = None;
        let mut kept = Vec::new();
        for (k, v, original) in params {
            match k.as_str() {
                "sslmode" => sslmode = v,
                "sslrootcert" => root_cert = Some(v),
                "sslcert" => return Err(UriError::Unsupported("sslcert")),
                "sslkey" => return Err(UriError::Unsupported("sslkey")),
                "sslpassword" => return Err(UriError::Unsupported("sslpassword")),
                key if TOKIO_POSTGRES_KEYS.contains(&key) => kept.push(original),
                key => return Err(UriError::UnknownKey(Key::of(key))),
            }
        }
        let (mode, verify) = match sslmode.as_str() {
            "disable" => (SslMode::Disable, Verify::None),
            "allow" | "prefer" => (SslMode::Prefer, Verify::None),
            "require" if root_cert.is_some() => (SslMode::Require, Verify::Ca),
            "require" => (SslMode::Require, Verify::None),
            "verify-ca" => (SslMode::Require, Verify::Ca),
            "verify-full" => (SslMode::Require, Verify::Full),
            other => return Err(UriError::SslMode(SslModeHint::of(other))),
        };
        let rebuilt = if is_url {
            if kept.is_empty() {
                rest
            } else {
                format!("{rest}?{}", kept.join("&"))
            }
        } else {
            kept.join(" ")
        };
        let mut config: tokio_postgres::Config = rebuilt
            .parse()
            .map_err(|e: tokio_postgres::Error| parse_error(&e))?;
        config.ssl_mode(mode);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(10));
        }
        // A half-open connection (peer gone without a FIN/RST) must not hang
        // for the kernel's defaults (2 h of idle before keepalives, ~15 min
        // of retransmits): probe after 30 s idle, give up on unacknowledged
        // data after 60 s. Values in the connection string win.
        if config.get_keepalives() {
            if config.get_keepalives_idle() == std::time::Duration::from_secs(2 * 60 * 60) {
                config.keepalives_idle(std::time::Duration::from_secs(30));
            }
            if config.get_keepalives_interval().is_none() {
                config.keepalives_interval(std::time::Duration::from_secs(10));
            }
            if config.get_keepalives_retries().is_none() {
                config.keepalives_retries(3);
            }
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(std::time::Duration::from_secs(60));
        }
        if config.get_application_name().is_none() {
            config.application_name("website-monitor-sink");
        }
        Ok(Self {
            config,
            sslmode,
            verify,
            root_cert,
        })
    }

    /// The rustls connector for this target. Reads the root certificate file.
    pub fn tls(&self) -> Result<MakeRustlsConnect, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        let config = match self.verify {
            Verify::None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert::new(provider)))
                .with_no_client_auth(),
            Verify::Ca => {
                let roots = Arc::new(self.roots()?);
                let chain_only =
                    ChainOnly::new(roots, provider).map_err(|e| TlsError::Rustls(e.to_string()))?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(chain_only))
                    .with_no_client_auth()
            }
            Verify::Full => {
                let roots = Arc::new(self.roots()?);
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| TlsError::Rustls(e.to_string()))?;
                builder.with_webpki_verifier(webpki).with_no_client_auth()
            }
        };
        Ok(MakeRustlsConnect::new(config))
    }

    fn roots(&self) -> Result<RootCertStore, TlsError> {
        let mut store = RootCertStore::empty();
        let path = match self.root_cert.as_deref() {
            Some("system") => {
                store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                return Ok(store);
            }
            Some(p) => PathBuf::from(p),
            None => {
                let default = std::env::var_os("HOME")
                    .map(|h| Path::new(&h).join(".postgresql/root.crt"))
                    .filter(|p| p.is_file());
                match default {
                    Some(p) => p,
                    None => {
                        return Err(TlsError::NoRootCert(if self.verify == Verify::Full {
                            "verify-full"
                        } else {
                            "verify-ca"
                        }))
                    }
                }
            }
        };
        let shown = path.display().to_string();
        let root_err = |message: String| TlsError::RootCert {
            path: shown.clone(),
            message,
        };
        let pem = std::fs::read(&path).map_err(|e| root_err(e.to_string()))?;
        let mut reader = std::io::Cursor::new(pem);
        for cert in rustls_pemfile::certs(&mut reader) {
            let cert = cert.map_err(|e| root_err(format!("not a PEM certificate: {e}")))?;
            store
                .add(cert)
                .map_err(|e| root_err(format!("certificate refused: {e}")))?;
        }
        if store.is_empty() {
            return Err(root_err("holds no certificate".to_owned()));
        }
        Ok(store)
    }

    /// `host:port/db` for log lines (no credentials).
    pub fn describe(&self) -> String {
        let host = self
            .config
            .get_hosts()
            .first()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(s) => s.clone(),
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .unwrap_or_else(|| "localhost".to_owned());
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        let db = self.config.get_dbname().unwrap_or("");
        format!("{host}:{port}/{db} (sslmode={})", self.sslmode)
    }
}

/// `postgres_uri` as the configuration holds it: parsed once, at load, into
/// the [`PgTarget`] every connection is made from, next to the text it came
/// from. `Debug`, `Display` and `Serialize` show the text with its password
/// masked ([`ConnectionString`]); nothing prints the password.
#[derive(Clone)]
pub struct PostgresUri {
    text: ConnectionString,
    target: PgTarget,
}

impl PostgresUri {
    /// Longest connection string accepted.
    pub const MAX_BYTES: usize = 8192;

    /// The parsed target: what to connect to, and how TLS is checked.
    pub fn target(&self) -> &PgTarget {
        &self.target
    }

    /// The string itself, password included: only for tests and tools that
    /// must hand it on.
    pub fn expose(&self) -> &str {
        self.text.expose()
    }
}

impl FromStr for PostgresUri {
    type Err = String;

    /// Checks `text` is plain one-line text, then parses it ([`PgTarget::parse`]);
    /// the error is the message for `sink.postgres_uri`.
    fn from_str(text: &str) -> Result<Self, String> {
        if let Some(problem) = text_problem(text, Self::MAX_BYTES) {
            return Err(problem);
        }
        let target = PgTarget::parse(text).map_err(|e| e.to_string())?;
        Ok(Self {
            text: ConnectionString::new(text),
            target,
        })
    }
}

impl fmt::Debug for PostgresUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.text, f)
    }
}

impl fmt::Display for PostgresUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.text, f)
    }
}

impl Serialize for PostgresUri {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.text.serialize(s)
    }
}

impl<'de> Deserialize<'de> for PostgresUri {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
