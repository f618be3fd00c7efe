//! A PostgreSQL connection string, shown with its password masked.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::value::MASK;

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
/// - URL form (`postgres://` or `postgresql://`, in any case): the query starts at the
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
        // libpq reads the scheme in any case (`POSTGRES://`).
        if let Some(head) = trimmed
            .get(..prefix.len())
            .filter(|head| head.eq_ignore_ascii_case(prefix))
        {
            return format!("{head}{}", mask_url_rest(&trimmed[prefix.len()..]));
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
    fn postgres_url_passwords_are_masked_even_with_slashes() {
        for (uri, shown) in [
            (
                "postgres://u:secret@h:5432/db?sslmode=require",
                "postgres://u:********@h:5432/db?sslmode=require",
            ),
            ("postgres://u:se/cr:et@h/db", "postgres://u:********@h/db"),
            ("postgresql://u@h/db", "postgresql://u@h/db"),
            ("POSTGRES://u:secret@h/db", "POSTGRES://u:********@h/db"),
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
