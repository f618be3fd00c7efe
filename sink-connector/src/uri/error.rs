//! What is wrong with a `postgres_uri`, told without quoting any of it: the
//! errors, and the libpq keys an error may name.

use std::fmt;

/// A connection string that cannot be used.
///
/// No variant holds any of the text of the connection string: a password
/// can sit anywhere a parser gives up (an unclosed quote, a `?` or `&` in a
/// URL password, a space in an unquoted value), so the errors name the key
/// (only when it is one libpq knows) and the kind of problem, never the text.
#[derive(Debug, thiserror::Error)]
pub enum UriError {
    /// `sslmode` has a value libpq does not know.
    #[error("the value of `sslmode` is not one libpq knows{0}; use disable, allow, prefer, require, verify-ca or verify-full")]
    SslMode(SslModeHint),
    /// Client certificates are not supported.
    #[error("`{0}` (a client certificate for PostgreSQL) is not supported; authenticate with a password")]
    Unsupported(&'static str),
    /// A quoted value has no closing quote.
    #[error("an unclosed quote in the value of {0}; close it with `'` (write `\\'` for a quote inside it)")]
    UnclosedQuote(Key),
    /// A key with no `=` after it.
    #[error("a key without `=`: {0}; write key=value pairs separated by spaces (a value with spaces in quotes: key='a b'), or postgres://user@host:port/db?sslmode=require")]
    NoEquals(Key),
    /// A URL parameter with no `=` in it.
    #[error("a parameter without `=` after `?` in the URL: {0}; write ?key=value&key=value (a `?`, `&` or `@` in the password must be percent-encoded: %3F, %26, %40)")]
    UrlNoEquals(Key),
    /// A `=` with no key before it.
    #[error("a `=` without a key before it; write key=value pairs separated by spaces")]
    NoKey,
    /// A key that is no connection parameter tokio-postgres understands.
    #[error("{0} is not a connection parameter this sink understands; use host, hostaddr, port, dbname, user, password, sslmode, sslrootcert, application_name, options, connect_timeout, tcp_user_timeout, keepalives*, target_session_attrs, channel_binding, load_balance_hosts")]
    UnknownKey(Key),
    /// tokio-postgres refused the rest of the string.
    #[error("not a usable PostgreSQL connection string: {0}")]
    Parse(String),
}

/// A key of a connection string as an error names it: by name when libpq
/// knows it (so no password can be shown), else only by its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// A libpq connection parameter.
    Known(&'static str),
    /// Anything else: its length in characters.
    Other(usize),
}

impl Key {
    pub(super) fn of(key: &str) -> Self {
        LIBPQ_KEYS
            .iter()
            .find(|k| **k == key)
            .map_or_else(|| Self::Other(key.chars().count()), |k| Self::Known(k))
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Known(k) => write!(f, "`{k}`"),
            Self::Other(n) => write!(
                f,
                "a key of {n} character{} (not shown: it is no libpq parameter and may be part of a password)",
                if *n == 1 { "" } else { "s" }
            ),
        }
    }
}

/// What is wrong with an `sslmode` value, told without quoting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslModeHint {
    /// No closer guess.
    None,
    /// A known mode in the wrong case (`Require`).
    Case,
    /// A known mode with `_` for `-` (`verify_full`).
    Underscore,
    /// Empty.
    Empty,
}

impl fmt::Display for SslModeHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "",
            Self::Case => " (write it in lower case)",
            Self::Underscore => " (write verify-ca and verify-full with `-`, not `_`)",
            Self::Empty => " (it is empty)",
        })
    }
}

const SSLMODES: [&str; 6] = [
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

impl SslModeHint {
    pub(super) fn of(value: &str) -> Self {
        let lower = value.to_ascii_lowercase();
        if value.is_empty() {
            Self::Empty
        } else if SSLMODES.contains(&lower.as_str()) {
            Self::Case
        } else if SSLMODES.contains(&lower.replace('_', "-").as_str()) {
            Self::Underscore
        } else {
            Self::None
        }
    }
}

/// The connection parameters libpq knows (PostgreSQL 17): an error may name
/// these, never anything else a connection string holds.
const LIBPQ_KEYS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "passfile",
    "require_auth",
    "channel_binding",
    "connect_timeout",
    "client_encoding",
    "options",
    "application_name",
    "fallback_application_name",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "replication",
    "gssencmode",
    "sslmode",
    "sslnegotiation",
    "sslcompression",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcertmode",
    "sslrootcert",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "requirepeer",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "krbsrvname",
    "gsslib",
    "gssdelegation",
    "service",
    "target_session_attrs",
    "load_balance_hosts",
    // tokio-postgres' name for libpq's keepalives_count.
    "keepalives_retries",
];

/// tokio-postgres' error, shown without any of the text it was given. With
/// the keys checked first its messages name an option (`invalid value for
/// option `port``); the one that quotes a character is cut before it.
pub(super) fn parse_error(e: &tokio_postgres::Error) -> UriError {
    let mut message = e.to_string();
    if let Some(cause) = std::error::Error::source(e) {
        message = format!("{message}: {cause}");
    }
    if let Some(at) = message.find(": expected `") {
        message.truncate(at);
    }
    UriError::Parse(message)
}
