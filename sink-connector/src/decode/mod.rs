//! Kafka record bytes → a row to store, or a reason to reject it.
//!
//! Any JSON object with a non-empty string `url` is a valid record. The JSON
//! is parsed once, here; the original bytes go to PostgreSQL as the `jsonb`
//! value, and only the hot fields (`url`, `checked_at`, `ok`, `status_code`,
//! `duration`) are pulled out as typed columns. Fields of the wrong type are
//! stored as NULL columns (the whole record is still in `data`).

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::{Deserializer, IgnoredAny};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::jsonb::{self, Refusal};

mod reason;
pub use reason::Reason;

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A record that will not be stored as a check.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// The kind of problem.
    pub reason: Reason,
    /// What exactly, for the operator reading the rejects table.
    pub detail: String,
}

/// A record to store.
#[derive(Debug, Clone, PartialEq)]
pub struct Good {
    /// The record's `url`.
    pub url: String,
    /// The record's `checked_at` (epoch seconds or RFC 3339), when it has a usable one.
    pub checked_at: Option<SystemTime>,
    /// `ok`, when a boolean.
    pub ok: Option<bool>,
    /// `status_code`, when an integer that fits.
    pub status_code: Option<i32>,
    /// `duration` in seconds, when a number.
    pub duration: Option<f64>,
}

/// The outcome of decoding one record.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// Store it.
    Good(Good),
    /// Reject it.
    Rejected(Rejected),
}

/// Limits applied while decoding.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest record accepted, in bytes.
    pub max_record_bytes: usize,
    /// Longest `url` accepted, in bytes.
    pub max_url_bytes: usize,
}

fn reject(reason: Reason, detail: impl Into<String>) -> Decoded {
    Decoded::Rejected(Rejected {
        reason,
        detail: detail.into(),
    })
}

/// Decodes one Kafka payload (`None` for a record without a value).
pub fn decode(payload: Option<&[u8]>, limits: Limits) -> Decoded {
    let Some(bytes) = payload else {
        return reject(Reason::Empty, "the record has no value");
    };
    if bytes.len() > limits.max_record_bytes {
        return reject(
            Reason::TooLarge,
            format!(
                "{} bytes; max_record_bytes is {}",
                bytes.len(),
                limits.max_record_bytes
            ),
        );
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => return reject(Reason::NotUtf8, format!("not UTF-8: {e}")),
    };
    if text.trim().is_empty() {
        return reject(Reason::Empty, "the record's value is empty");
    }
    if !text.trim_start().starts_with('{') {
        return match serde_json::from_str::<IgnoredAny>(text) {
            Ok(_) => reject(Reason::NotObject, "valid JSON, but not an object"),
            Err(e) => reject(Reason::NotJson, format!("not JSON: {e}")),
        };
    }
    let fields: Fields<'_> = match serde_json::from_str(text) {
        Ok(f) => f,
        Err(e) => return reject(Reason::NotJson, format!("not JSON: {e}")),
    };
    if let Err(refusal) = jsonb::check(bytes) {
        let reason = match refusal {
            Refusal::Nul => Reason::NulInString,
            Refusal::LoneSurrogate => Reason::UnpairedSurrogate,
            Refusal::TooDeep => Reason::TooDeep,
            Refusal::NumberOutOfRange => Reason::NumberOutOfRange,
        };
        return reject(reason, refusal.detail());
    }
    let url = match fields.url {
        None | Some(Loose::Null) => return reject(Reason::NoUrl, "the object has no `url`"),
        Some(Loose::Str(s)) => s,
        Some(_) => return reject(Reason::UrlNotString, "`url` is not a string"),
    };
    if url.trim().is_empty() {
        return reject(Reason::EmptyUrl, "`url` is empty");
    }
    if url.len() > limits.max_url_bytes {
        return reject(
            Reason::UrlTooLong,
            format!(
                "`url` is {} bytes; max_url_bytes is {}",
                url.len(),
                limits.max_url_bytes
            ),
        );
    }
    Decoded::Good(Good {
        url: url.into_owned(),
        checked_at: fields.checked_at.and_then(|v| v.as_time()),
        ok: match fields.ok {
            Some(Loose::Bool(b)) => Some(b),
            _ => None,
        },
        status_code: match fields.status_code {
            Some(Loose::Int(i)) => i32::try_from(i).ok(),
            _ => None,
        },
        duration: fields.duration.and_then(|v| v.as_f64()),
    })
}

/// 0001-01-01T00:00:00Z in Unix seconds: the earliest time the sink stores.
const FIRST_SECOND: i64 = -62_135_596_800;
/// 9999-12-31T23:59:59Z in Unix seconds: the latest time the sink stores
/// (well inside PostgreSQL's `timestamptz` range, and what RFC 3339 can write).
const LAST_SECOND: i64 = 253_402_300_799;

/// A Kafka record timestamp (milliseconds since the Unix epoch) as a time the
/// sink can store, or `None` outside years 1970 to 9999 (a negative value is
/// Kafka's "no timestamp"; a larger one cannot be a real time, and PostgreSQL
/// could not hold the largest).
pub fn kafka_time(ms: i64) -> Option<SystemTime> {
    let ms = u64::try_from(ms).ok()?;
    (ms / 1000 <= LAST_SECOND as u64).then(|| UNIX_EPOCH + Duration::from_millis(ms))
}

/// The fields the sink reads; every other key is skipped (but still checked
/// to be valid JSON).
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow, default)]
    url: Option<Loose<'a>>,
    #[serde(borrow, default)]
    checked_at: Option<Loose<'a>>,
    #[serde(borrow, default)]
    ok: Option<Loose<'a>>,
    #[serde(borrow, default)]
    status_code: Option<Loose<'a>>,
    #[serde(borrow, default)]
    duration: Option<Loose<'a>>,
}

/// Any JSON value, keeping only what the sink's columns can use.
enum Loose<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    Float(f64),
    Bool(bool),
    Null,
    Other,
}

impl Loose<'_> {
    fn as_f64(&self) -> Option<f64> {
        match self {
            Loose::Int(i) => Some(*i as f64),
            Loose::Float(f) if f.is_finite() => Some(*f),
            _ => None,
        }
    }

    /// Epoch seconds (years 1 to 9999) or an RFC 3339 string.
    fn as_time(&self) -> Option<SystemTime> {
        match self {
            Loose::Str(s) => humantime::parse_rfc3339_weak(s.trim()).ok(),
            _ => {
                let secs = self.as_f64()?;
                if !(FIRST_SECOND as f64..=LAST_SECOND as f64).contains(&secs) {
                    return None;
                }
                // Rounded to PostgreSQL's microseconds, so the stored time
                // reads back as the nearest number to the one written.
                let d = Duration::from_micros((secs.abs() * 1e6).round() as u64);
                if secs >= 0.0 {
                    UNIX_EPOCH.checked_add(d)
                } else {
                    UNIX_EPOCH.checked_sub(d)
                }
            }
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Loose<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Read as raw text, not as a number serde_json must fit in an f64: a
        // `duration` of 1e400 is valid JSON (jsonb stores it) and becomes a
        // NULL column, not a reason to reject the record.
        let raw: &'a RawValue = Deserialize::deserialize(d)?;
        Ok(Loose::parse(raw.get()))
    }
}

impl<'a> Loose<'a> {
    /// The value of valid JSON text.
    fn parse(text: &'a str) -> Self {
        match text.as_bytes().first() {
            Some(b'"') if !text.contains('\\') => {
                Loose::Str(Cow::Borrowed(&text[1..text.len() - 1]))
            }
            Some(b'"') => serde_json::from_str::<String>(text)
                .map_or(Loose::Other, |s| Loose::Str(Cow::Owned(s))),
            Some(b't') => Loose::Bool(true),
            Some(b'f') => Loose::Bool(false),
            Some(b'n') => Loose::Null,
            Some(b'[' | b'{') | None => Loose::Other,
            Some(_) => match text.parse::<i64>() {
                Ok(i) => Loose::Int(i),
                Err(_) => text.parse::<f64>().map_or(Loose::Other, Loose::Float),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_record_bytes: 1000,
        max_url_bytes: 50,
    };

    fn d(s: &[u8]) -> Decoded {
        decode(Some(s), LIMITS)
    }

    fn reason(s: &[u8]) -> Reason {
        match d(s) {
            Decoded::Rejected(r) => r.reason,
            Decoded::Good(g) => panic!("expected a reject, got {g:?}"),
        }
    }

    fn good(s: &[u8]) -> Good {
        match d(s) {
            Decoded::Good(g) => g,
            Decoded::Rejected(r) => panic!("expected good, got {r:?}"),
        }
    }

    #[test]
    fn seed_record_is_good() {
        let g = good(br#"{"url": "http://foo.bar", "key": "valuefoo"}"#);
        assert_eq!(g.url, "http://foo.bar");
        assert_eq!(g.checked_at, None);
        assert_eq!((g.ok, g.status_code, g.duration), (None, None, None));
    }

    #[test]
    fn source_record_fills_columns() {
        let g = good(
            br#"{"url":"https://example.com/","checked_at":1764264000.5,"status_code":200,"duration":0.1841,"ok":true,"error":null,"timings":{"dns":0.002},"tls":{"version":"TLSv1.3"},"schema_version":1}"#,
        );
        assert_eq!(
            g.checked_at,
            Some(UNIX_EPOCH + Duration::from_millis(1_764_264_000_500))
        );
        assert_eq!(g.ok, Some(true));
        assert_eq!(g.status_code, Some(200));
        assert_eq!(g.duration, Some(0.1841));
    }

    #[test]
    fn a_check_time_is_rounded_to_the_nearest_microsecond_not_truncated() {
        // 1795907667.17078 is 1795907667.170779943… as an f64.
        let g = good(br#"{"url":"u","checked_at":1795907667.17078}"#);
        assert_eq!(
            g.checked_at,
            Some(UNIX_EPOCH + Duration::from_micros(1_795_907_667_170_780))
        );
    }

    #[test]
    fn failure_record_has_null_status() {
        let g = good(br#"{"url":"https://x/","checked_at":1,"status_code":null,"ok":false,"error":{"kind":"dns","message":"nx"}}"#);
        assert_eq!(g.status_code, None);
        assert_eq!(g.ok, Some(false));
        assert_eq!(g.checked_at, Some(UNIX_EPOCH + Duration::from_secs(1)));
    }

    #[test]
    fn rfc3339_checked_at_and_escaped_url() {
        let g = good(br#"{"url":"http://a/\u00e9","checked_at":"2024-01-02T03:04:05Z"}"#);
        assert_eq!(g.url, "http://a/\u{e9}");
        assert_eq!(
            g.checked_at,
            Some(UNIX_EPOCH + Duration::from_secs(1_704_164_645))
        );
    }

    #[test]
    fn wrong_typed_fields_become_null_columns() {
        let g = good(br#"{"url":"u","checked_at":"yesterday","ok":"yes","status_code":99999999999,"duration":"fast"}"#);
        assert_eq!(
            (g.checked_at, g.ok, g.status_code, g.duration),
            (None, None, None, None)
        );
        let g = good(br#"{"url":"u","checked_at":1e300}"#);
        assert_eq!(
            g.checked_at, None,
            "out of timestamptz range falls back to the Kafka time"
        );
    }

    #[test]
    fn every_bad_kind_has_its_reason() {
        assert_eq!(
            decode(None, LIMITS),
            reject(Reason::Empty, "the record has no value")
        );
        assert_eq!(reason(b""), Reason::Empty);
        assert_eq!(reason(&[b'{', 0xff, 0xfe, b'}']), Reason::NotUtf8);
        assert_eq!(reason(b"{\"url\": "), Reason::NotJson);
        assert_eq!(reason(b"not json"), Reason::NotJson);
        assert_eq!(reason(b"{\"url\":\"a\"} trailing"), Reason::NotJson);
        assert_eq!(reason(b"[\"http://a\"]"), Reason::NotObject);
        assert_eq!(reason(b"\"http://a\""), Reason::NotObject);
        assert_eq!(reason(b"42"), Reason::NotObject);
        assert_eq!(reason(b"{\"key\": 1}"), Reason::NoUrl);
        assert_eq!(reason(b"{\"url\": null}"), Reason::NoUrl);
        assert_eq!(reason(b"{\"url\": 5}"), Reason::UrlNotString);
        assert_eq!(reason(b"{\"url\": {\"a\":1}}"), Reason::UrlNotString);
        assert_eq!(reason(b"{\"url\": \"\"}"), Reason::EmptyUrl);
        assert_eq!(reason(b"{\"url\": \"  \"}"), Reason::EmptyUrl);
        let long = format!("{{\"url\": \"{}\"}}", "x".repeat(51));
        assert_eq!(reason(long.as_bytes()), Reason::UrlTooLong);
        let big = format!("{{\"url\": \"u\", \"pad\": \"{}\"}}", "x".repeat(1000));
        assert_eq!(reason(big.as_bytes()), Reason::TooLarge);
        assert_eq!(
            reason(br#"{"url":"u","e":"a\u0000b"}"#),
            Reason::NulInString
        );
        assert_eq!(
            reason(br#"{"url":"u","n":{"k\u0000":1}}"#),
            Reason::NulInString
        );
    }

    #[test]
    fn numbers_past_f64_in_the_read_fields_become_null_columns() {
        let g = good(br#"{"url":"u","duration":1e400,"checked_at":1e400,"status_code":-1e400}"#);
        assert_eq!(
            (g.duration, g.checked_at, g.status_code),
            (None, None, None)
        );
        let g = good(br#"{"url":"u\u00e9","duration":2.5,"status_code":204,"ok":false}"#);
        assert_eq!(g.url, "u\u{e9}");
        assert_eq!(
            (g.duration, g.status_code, g.ok),
            (Some(2.5), Some(204), Some(false))
        );
    }

    #[test]
    fn kafka_timestamps_outside_years_1970_to_9999_are_no_timestamp() {
        assert_eq!(kafka_time(-1), None);
        assert_eq!(kafka_time(0), Some(UNIX_EPOCH));
        assert_eq!(
            kafka_time(253_402_300_799_999),
            Some(UNIX_EPOCH + Duration::from_millis(253_402_300_799_999))
        );
        assert_eq!(kafka_time(253_402_300_800_000), None);
        assert_eq!(kafka_time(i64::MAX), None);
    }

    #[test]
    fn text_jsonb_would_refuse_is_rejected_with_its_reason() {
        assert_eq!(
            reason(br#"{"url":"u","s":"\ud800"}"#),
            Reason::UnpairedSurrogate
        );
        let deep = format!(
            "{{\"url\":\"u\",\"d\":{}{}}}",
            "[".repeat(300),
            "]".repeat(300)
        );
        assert_eq!(reason(deep.as_bytes()), Reason::TooDeep);
        assert_eq!(
            reason(br#"{"url":"u","n":1e999999}"#),
            Reason::NumberOutOfRange
        );
    }

    #[test]
    fn escaped_backslash_before_u0000_is_not_a_nul() {
        let g = good(br#"{"url":"u","e":"a\\u0000b"}"#);
        assert_eq!(g.url, "u");
    }

    #[test]
    fn reject_detail_says_what() {
        match d(b"{\"url\": ") {
            Decoded::Rejected(r) => assert!(r.detail.starts_with("not JSON: "), "{}", r.detail),
            Decoded::Good(_) => panic!(),
        }
    }
}
