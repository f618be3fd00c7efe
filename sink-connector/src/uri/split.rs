//! Taking a `postgres_uri` apart: the URL form's query parameters or the
//! `key=value` form's pairs, decoded, each with the text to hand on to
//! tokio-postgres; and which keys tokio-postgres is handed.

use connector_common::secret::percent_decoded;

use super::error::{Key, UriError};

/// The parameters handed on to tokio-postgres: those it understands.
pub(super) const TOKIO_POSTGRES_KEYS: &[&str] = &[
    "user",
    "password",
    "dbname",
    "options",
    "application_name",
    "sslnegotiation",
    "host",
    "hostaddr",
    "port",
    "connect_timeout",
    "tcp_user_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "target_session_attrs",
    "channel_binding",
    "load_balance_hosts",
];

/// `postgres://` or `postgresql://` at the start of `s`, in any case (as
/// libpq reads it): the length of the scheme.
pub(super) fn url_scheme_len(s: &str) -> Option<usize> {
    ["postgres://", "postgresql://"].into_iter().find_map(|p| {
        s.get(..p.len())
            .filter(|head| head.eq_ignore_ascii_case(p))
            .map(|_| p.len())
    })
}

pub(super) type Params = Vec<(String, String, String)>;

/// Splits `postgres://...?a=b&c=d` into the part before `?` and its decoded
/// parameters (key, value, original text).
pub(super) fn split_url(uri: &str) -> Result<(String, Params), UriError> {
    let Some((base, query)) = uri.split_once('?') else {
        return Ok((uri.to_owned(), Vec::new()));
    };
    let mut params = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| UriError::UrlNoEquals(Key::of(&percent_decoded(pair))))?;
        params.push((percent_decoded(k), percent_decoded(v), pair.to_owned()));
    }
    Ok((base.to_owned(), params))
}

/// Splits `host=h port=5432 dbname='my db'` into decoded pairs; the original
/// text of each is re-quoted so the rest can be handed to tokio-postgres.
pub(super) fn split_key_values(s: &str) -> Result<(String, Params), UriError> {
    let mut params = Vec::new();
    let mut chars = s.char_indices().peekable();
    loop {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        if key.is_empty() {
            return Err(UriError::NoKey);
        }
        if chars.next_if(|(_, c)| *c == '=').is_none() {
            return Err(UriError::NoEquals(Key::of(&key)));
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if(|(_, c)| *c == '\'').is_some() {
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            value.push(n);
                        }
                    }
                    '\'' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(UriError::UnclosedQuote(Key::of(&key)));
            }
        } else {
            while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace()) {
                value.push(c);
            }
        }
        let quoted = format!(
            "{key}='{}'",
            value.replace('\\', "\\\\").replace('\'', "\\'")
        );
        params.push((key, value, quoted));
    }
    Ok((String::new(), params))
}
