//! A record's fields as the history table's typed columns, and what does not
//! fit them as an `extra` JSON object.
//!
//! The rule: a top-level field is stored in typed columns only when the
//! history view (`{table}_check_record`) gives it back as the same JSON value,
//! times at microsecond precision. Anything else — a field the sink does not
//! know, a known field of another type or shape (a `status_code` of `"200"`,
//! a `timings` object with a sixth phase) — is kept, as it was written, in
//! `extra`. `present` has one bit per known field the record had, so the view
//! gives back exactly the fields the record had, nulls included.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// The known top-level fields, in the order of their bit in
/// [`Compact::present`]; the history view uses the same order.
pub const FIELDS: [&str; 16] = [
    "url",
    "checked_at",
    "status_code",
    "duration",
    "re_check",
    "ok",
    "error",
    "timings",
    "http_version",
    "response_bytes",
    "redirects",
    "ip",
    "tls",
    "probe",
    "schema_version",
    "interval",
];

/// A bit of [`Compact::present`] beyond [`FIELDS`]: the history row leaves
/// `cert_days_left` NULL because it equals the days the view derives from
/// `checked_at` and `cert_not_after` (see [`Compact::stored_cert_days`]).
pub const CERT_DAYS_DERIVED: i32 = 1 << 16;

/// The phases of `timings`, in column order.
pub const PHASES: [&str; 5] = ["dns", "connect", "tls", "ttfb", "transfer"];

/// `http_version` texts and their column codes.
const HTTP_VERSIONS: [(&str, i16); 5] = [
    ("HTTP/0.9", 9),
    ("HTTP/1.0", 10),
    ("HTTP/1.1", 11),
    ("HTTP/2", 20),
    ("HTTP/3", 30),
];

/// `tls.version` texts and their column codes.
const TLS_VERSIONS: [(&str, i16); 2] = [("TLSv1.2", 12), ("TLSv1.3", 13)];

/// Longest `probe` name stored as a probe id; a longer one stays in `extra`.
pub const MAX_PROBE_BYTES: usize = 100;

/// One record's history columns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Compact<'a> {
    /// Bit `i` set: the record had field [`FIELDS`]`[i]` and the typed
    /// columns give it back.
    pub present: i32,
    /// `checked_at` as written, when it was epoch seconds in range.
    pub checked_at: Option<SystemTime>,
    /// `status_code`.
    pub status_code: Option<i16>,
    /// `duration`, microseconds.
    pub duration_us: Option<i32>,
    /// `timings`, microseconds, in [`PHASES`] order.
    pub timings_us: [Option<i32>; 5],
    /// `response_bytes`.
    pub response_bytes: Option<i32>,
    /// `redirects`.
    pub redirects: Option<i16>,
    /// `http_version` as a code (11 for `HTTP/1.1`, 20 for `HTTP/2`).
    pub http_version: Option<i16>,
    /// `tls.version` as a code (12, 13).
    pub tls_version: Option<i16>,
    /// `tls.cert_days_left`.
    pub cert_days_left: Option<i16>,
    /// `tls.cert_not_after`, epoch seconds.
    pub cert_not_after: Option<i64>,
    /// `ok`.
    pub ok: Option<bool>,
    /// `re_check`.
    pub re_check: Option<bool>,
    /// `ip`.
    pub ip: Option<IpAddr>,
    /// `error.kind`.
    pub error_kind: Option<Cow<'a, str>>,
    /// `error.message`.
    pub error_message: Option<Cow<'a, str>>,
    /// `probe`.
    pub probe: Option<Cow<'a, str>>,
    /// `schema_version`.
    pub schema_version: Option<i16>,
    /// `interval` (seconds in the record), milliseconds: stored only when
    /// whole milliseconds within an `int4` (else kept in `extra`).
    pub interval_ms: Option<i32>,
    /// The fields kept as written, as a JSON object; `None` when there are none.
    pub extra: Option<String>,
}

impl<'a> Compact<'a> {
    /// Splits a record (a JSON object the sink has already checked, see
    /// [`crate::decode`]) into typed columns and `extra`. Of repeated keys
    /// the last counts, as in `jsonb`.
    pub fn from_json(text: &'a str) -> Result<Self, serde_json::Error> {
        let Entries(mut entries) = serde_json::from_str(text)?;
        last_of_each_key(&mut entries);
        let mut row = Compact::default();
        let mut extra: Vec<(Cow<'a, str>, &'a RawValue)> = Vec::new();
        for (key, value) in entries {
            let bit = FIELDS.iter().position(|f| *f == key);
            let kept = bit.is_some_and(|b| row.set(b, value.get()));
            if kept {
                row.present |= 1 << bit.expect("kept only for a known field");
            } else if key != "url" {
                extra.push((key, value));
            }
        }
        row.extra = (!extra.is_empty()).then(|| object_text(&extra));
        Ok(row)
    }

    /// `present` and `cert_days_left` as the history row stores them for a
    /// check at `at`: the days left are left out (NULL, with
    /// [`CERT_DAYS_DERIVED`] set) when they are the whole days from `at` to
    /// `cert_not_after`, rounded down — the source's own formula, which the
    /// history view applies to give them back.
    pub fn stored_cert_days(&self, at: SystemTime) -> (i32, Option<i16>) {
        let derived = self.cert_not_after.and_then(|not_after| {
            let at_us = match at.duration_since(UNIX_EPOCH) {
                Ok(d) => i64::try_from(d.as_micros()).ok()?,
                Err(_) => return None,
            };
            let left_us = not_after.checked_mul(1_000_000)?.checked_sub(at_us)?;
            Some(left_us.div_euclid(86_400_000_000))
        });
        match (self.cert_days_left, derived) {
            (Some(days), Some(d)) if i64::from(days) == d => {
                (self.present | CERT_DAYS_DERIVED, None)
            }
            _ => (self.present, self.cert_days_left),
        }
    }

    /// Fills the columns of field `bit` from its JSON text; `false` when
    /// the columns could not give it back as written.
    fn set(&mut self, bit: usize, text: &'a str) -> bool {
        match FIELDS[bit] {
            "url" => true,
            "checked_at" => number(text)
                .and_then(epoch_time)
                .map(|t| self.checked_at = Some(t))
                .is_some(),
            "status_code" => nullable(
                text,
                |t| int::<i16>(t).filter(|s| *s >= 0),
                &mut self.status_code,
            ),
            "duration" => nullable(text, micros, &mut self.duration_us),
            "re_check" => nullable(text, boolean, &mut self.re_check),
            "ok" => nullable(text, boolean, &mut self.ok),
            "error" => self.set_error(text),
            "timings" => self.set_timings(text),
            "http_version" => nullable(text, |t| code(t, &HTTP_VERSIONS), &mut self.http_version),
            "response_bytes" => nullable(
                text,
                |t| int::<i32>(t).filter(|n| *n >= 0),
                &mut self.response_bytes,
            ),
            "redirects" => nullable(
                text,
                |t| int::<i16>(t).filter(|n| *n >= 0),
                &mut self.redirects,
            ),
            "ip" => nullable(text, ip, &mut self.ip),
            "tls" => self.set_tls(text),
            "probe" => nullable(
                text,
                |t| string(t).filter(move |p| p.len() <= MAX_PROBE_BYTES),
                &mut self.probe,
            ),
            "schema_version" => nullable(text, int::<i16>, &mut self.schema_version),
            "interval" => nullable(text, millis, &mut self.interval_ms),
            _ => false,
        }
    }

    /// `error`: `null`, or exactly `{kind, message}` with two strings.
    fn set_error(&mut self, text: &'a str) -> bool {
        if text == "null" {
            return true;
        }
        let Some(map) = exact_object(text, &["kind", "message"]) else {
            return false;
        };
        match (string(map["kind"]), string(map["message"])) {
            (Some(kind), Some(message)) => {
                self.error_kind = Some(kind);
                self.error_message = Some(message);
                true
            }
            _ => false,
        }
    }

    /// `timings`: exactly the five phases, each a duration or `null`.
    fn set_timings(&mut self, text: &'a str) -> bool {
        let Some(map) = exact_object(text, &PHASES) else {
            return false;
        };
        let mut out = [None; 5];
        for (slot, phase) in out.iter_mut().zip(PHASES) {
            let value = map[phase];
            if value != "null" {
                match micros(value) {
                    Some(us) => *slot = Some(us),
                    None => return false,
                }
            }
        }
        self.timings_us = out;
        true
    }

    /// `tls`: `null`, or exactly `{version, cert_not_after, cert_days_left}`
    /// with at least one of them known (all three `null` would read back as
    /// `tls: null`).
    fn set_tls(&mut self, text: &'a str) -> bool {
        if text == "null" {
            return true;
        }
        let Some(map) = exact_object(text, &["version", "cert_not_after", "cert_days_left"]) else {
            return false;
        };
        let (mut version, mut not_after, mut days) = (None, None, None);
        let all_fit = nullable(map["version"], |t| code(t, &TLS_VERSIONS), &mut version)
            && nullable(
                map["cert_not_after"],
                |t| int::<i64>(t).filter(|s| epoch_time(*s as f64).is_some()),
                &mut not_after,
            )
            && nullable(map["cert_days_left"], int::<i16>, &mut days);
        if !all_fit || (version.is_none() && not_after.is_none() && days.is_none()) {
            return false;
        }
        (self.tls_version, self.cert_not_after, self.cert_days_left) = (version, not_after, days);
        true
    }
}

/// Parses `text` with `parse` into `slot` (`null` leaves it `None`); `false`
/// when the value does not fit.
fn nullable<'t, T>(
    text: &'t str,
    parse: impl FnOnce(&'t str) -> Option<T>,
    slot: &mut Option<T>,
) -> bool {
    if text == "null" {
        *slot = None;
        return true;
    }
    match parse(text) {
        Some(v) => {
            *slot = Some(v);
            true
        }
        None => false,
    }
}

/// A JSON integer that fits `T` (written without a fraction or exponent, so
/// that it reads back the same).
fn int<T: TryFrom<i64>>(text: &str) -> Option<T> {
    text.parse::<i64>().ok().and_then(|i| T::try_from(i).ok())
}

/// A finite JSON number.
fn number(text: &str) -> Option<f64> {
    match text.as_bytes().first() {
        Some(b'-' | b'0'..=b'9') => text.parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    }
}

/// Seconds → whole microseconds, when non-negative and within an `int4`.
fn micros(text: &str) -> Option<i32> {
    let us = (number(text)? * 1e6).round();
    (0.0..=i32::MAX as f64).contains(&us).then_some(us as i32)
}

/// Seconds as whole milliseconds, when the JSON number is exactly that
/// (so the view's `interval_ms / 1e3` gives the same value back).
fn millis(text: &str) -> Option<i32> {
    let secs = number(text)?;
    let ms = (secs * 1e3).round();
    ((0.0..=f64::from(i32::MAX)).contains(&ms) && ms / 1e3 == secs).then_some(ms as i32)
}

/// Epoch seconds within the years 1970 to 9999 as a time.
fn epoch_time(secs: f64) -> Option<SystemTime> {
    (0.0..=253_402_300_799.0)
        .contains(&secs)
        .then(|| UNIX_EPOCH + Duration::from_micros((secs * 1e6).round() as u64))
}

/// `true` / `false`.
fn boolean(text: &str) -> Option<bool> {
    match text {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// A JSON string's value.
fn string(text: &str) -> Option<Cow<'_, str>> {
    if !text.starts_with('"') {
        return None;
    }
    if !text.contains('\\') {
        return Some(Cow::Borrowed(&text[1..text.len() - 1]));
    }
    serde_json::from_str::<String>(text).ok().map(Cow::Owned)
}

/// The code of a string from `table`.
fn code(text: &str, table: &[(&str, i16)]) -> Option<i16> {
    let s = string(text)?;
    table.iter().find(|(name, _)| *name == s).map(|(_, c)| *c)
}

/// An IP address written in its canonical form (so it reads back the same).
fn ip(text: &str) -> Option<IpAddr> {
    let s = string(text)?;
    let addr: IpAddr = s.parse().ok()?;
    // PostgreSQL prints an IPv6 address whose first 80 bits are zero with an
    // IPv4 tail (`::1.2.3.4`) where Rust does not: kept as written instead.
    let pg_prints_otherwise = matches!(addr, IpAddr::V6(v6)
        if v6.segments()[..5] == [0; 5] && !v6.is_unspecified() && !v6.is_loopback());
    (addr.to_string() == s && !pg_prints_otherwise).then_some(addr)
}

/// The members of a JSON object whose keys are exactly `keys`, once each.
fn exact_object<'t>(
    text: &'t str,
    keys: &[&'static str],
) -> Option<BTreeMap<&'static str, &'t str>> {
    if !text.starts_with('{') {
        return None;
    }
    let Entries(entries) = serde_json::from_str(text).ok()?;
    let mut map = BTreeMap::new();
    for (key, value) in entries {
        let known = keys.iter().find(|k| **k == key)?;
        // A repeated key: jsonb would keep the last, the columns cannot say which.
        if map.insert(*known, value.get()).is_some() {
            return None;
        }
    }
    (map.len() == keys.len()).then_some(map)
}

/// Keeps only the last member of each key, in order, as `jsonb` does.
fn last_of_each_key(entries: &mut Vec<(Cow<'_, str>, &RawValue)>) {
    let mut last = std::collections::HashMap::with_capacity(entries.len());
    for (i, (key, _)) in entries.iter().enumerate() {
        last.insert(key.clone(), i);
    }
    if last.len() == entries.len() {
        return;
    }
    let mut i = 0;
    entries.retain(|(key, _)| {
        let keep = last[key] == i;
        i += 1;
        keep
    });
}

/// A JSON object's text from its members.
fn object_text(members: &[(Cow<'_, str>, &RawValue)]) -> String {
    let mut out = String::from("{");
    for (i, (key, value)) in members.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(key).expect("a string serialises"));
        out.push(':');
        out.push_str(value.get());
    }
    out.push('}');
    out
}

/// A JSON object's members in order, values as raw text.
struct Entries<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

/// An object key, borrowed from the text unless it has escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl<'de> Visitor<'de> for Text {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(Text)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Entries<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = Entries<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut out = Vec::new();
                while let Some((Key(key), value)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    out.push((key, value));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(Members)
    }
}

#[cfg(test)]
#[path = "row_tests.rs"]
mod tests;
