//! The record: one JSON object per check, the contract with the sink and with
//! every stage chained after the source.
//!
//! Every field is always present; what could not be known is `null`. Times
//! are seconds as floats, instants are epoch seconds, as in the seed; both
//! are written to the microsecond (as PostgreSQL keeps them, so a stored
//! record reads back as it was sent). The
//! record is serialised once, by [`Record::to_json`], and those bytes are the
//! Kafka value.

use serde::{Deserialize, Serialize};

/// The version of this layout; changes only with a documented migration.
/// Version 2 added `interval`.
pub const SCHEMA_VERSION: u32 = 2;

/// [`SCHEMA_VERSION`] as the `schema-version` Kafka header writes it.
pub const SCHEMA_VERSION_TEXT: &str = "2";

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The url checked (as configured, normalised); also the Kafka key.
    pub url: String,
    /// When the check started, epoch seconds; also the Kafka timestamp (in ms).
    #[serde(serialize_with = "micros")]
    pub checked_at: f64,
    /// Status of the last response; `null` when no response came.
    pub status_code: Option<u16>,
    /// Wall time of the whole check, seconds (redirects and body included).
    #[serde(serialize_with = "micros")]
    pub duration: f64,
    /// Whether `regex` matched the body; `null` when the site has no regex
    /// or no body was read.
    pub re_check: Option<bool>,
    /// `true` when the check found nothing wrong (`error` is `null`).
    pub ok: bool,
    /// What went wrong; `null` when `ok`.
    pub error: Option<CheckError>,
    /// Phase timings, seconds; `null` for a phase that did not happen or
    /// cannot be measured.
    pub timings: Timings,
    /// `HTTP/1.1`, `HTTP/2`...; `null` when no response came.
    pub http_version: Option<String>,
    /// Body bytes received (never much past `max_body_bytes`); `null` when no response came.
    pub response_bytes: Option<u64>,
    /// Redirects followed.
    pub redirects: u32,
    /// The address connected to for the last response; `null` when unknown.
    pub ip: Option<String>,
    /// TLS facts of the last response; `null` for http.
    pub tls: Option<TlsFacts>,
    /// Name of the probe that made the check (`source.probe`).
    pub probe: String,
    /// The site's check interval, seconds (`interval`, per site or of
    /// `[source]`): when the next check of this url by this probe is due.
    #[serde(serialize_with = "micros")]
    pub interval: f64,
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
}

/// `error` of a failed check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// What happened, for a human.
    pub message: String,
}

/// The kinds of failure, as written in `error.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorKind {
    /// The host name could not be resolved.
    Dns,
    /// No TCP connection (refused, unreachable, reset while connecting).
    Connect,
    /// The TLS handshake failed (unknown CA, bad certificate, protocol).
    Tls,
    /// The check did not finish within its timeout.
    Timeout,
    /// The HTTP exchange failed (bad response, too many redirects, bad Location).
    Http,
    /// The response status is not an expected one.
    Status,
    /// The regex did not match the body.
    Regex,
    /// The body could not be read, or is larger than `max_body_bytes`.
    Body,
}

impl ErrorKind {
    /// The name written in records and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Dns => "dns",
            ErrorKind::Connect => "connect",
            ErrorKind::Tls => "tls",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Http => "http",
            ErrorKind::Status => "status",
            ErrorKind::Regex => "regex",
            ErrorKind::Body => "body",
        }
    }
}

/// Phase timings in seconds. Across redirects each phase is the sum over the
/// requests made, so the phases add up to about `duration`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Name resolution; `null` for an IP address in the url or a reused connection.
    #[serde(serialize_with = "micros_opt")]
    pub dns: Option<f64>,
    /// TCP connect; `null` for a reused connection.
    #[serde(serialize_with = "micros_opt")]
    pub connect: Option<f64>,
    /// TLS handshake; `null` for http or a reused connection.
    #[serde(serialize_with = "micros_opt")]
    pub tls: Option<f64>,
    /// From the connection being ready (or the request start, on a reused
    /// connection) to the response headers.
    #[serde(serialize_with = "micros_opt")]
    pub ttfb: Option<f64>,
    /// From the response headers to the end of the body read.
    #[serde(serialize_with = "micros_opt")]
    pub transfer: Option<f64>,
}

/// TLS facts of an https response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsFacts {
    /// `TLSv1.2` or `TLSv1.3`; `null` if the TLS library does not say.
    pub version: Option<String>,
    /// The peer certificate's notAfter, epoch seconds.
    pub cert_not_after: Option<i64>,
    /// Whole days from the check to `cert_not_after` (negative once expired).
    pub cert_days_left: Option<i64>,
}

impl Record {
    /// A failed check that learnt nothing (no response, no phase), of a
    /// site checked every `interval` seconds.
    pub fn failure(
        url: String,
        checked_at: f64,
        duration: f64,
        error: CheckError,
        probe: String,
        interval: f64,
    ) -> Record {
        Record {
            url,
            checked_at,
            status_code: None,
            duration,
            re_check: None,
            ok: false,
            error: Some(error),
            timings: Timings::default(),
            http_version: None,
            response_bytes: None,
            redirects: 0,
            ip: None,
            tls: None,
            probe,
            interval,
            schema_version: SCHEMA_VERSION,
        }
    }

    /// The Kafka value: the record as compact JSON.
    pub fn to_json(&self) -> Vec<u8> {
        // A record is about 400 bytes: one allocation, no regrowth.
        let mut out = Vec::with_capacity(512);
        serde_json::to_writer(&mut out, self).expect("a record always serialises");
        out
    }
}

/// Seconds rounded to the microsecond.
fn round_micros(secs: f64) -> f64 {
    (secs * 1e6).round() / 1e6
}

fn micros<S: serde::Serializer>(secs: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(round_micros(*secs))
}

fn micros_opt<S: serde::Serializer>(secs: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match secs {
        Some(v) => s.serialize_some(&round_micros(*v)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_version_header_names_the_schema_version() {
        assert_eq!(SCHEMA_VERSION_TEXT, SCHEMA_VERSION.to_string());
    }

    fn sample() -> Record {
        Record::failure(
            "https://example.com/".into(),
            1_764_264_000.123,
            0.5,
            CheckError {
                kind: ErrorKind::Dns,
                message: "no such host".into(),
            },
            "local".into(),
            30.0,
        )
    }

    #[test]
    fn times_are_written_to_the_microsecond() {
        let mut r = sample();
        r.checked_at = 1_795_907_667.123_456_7;
        r.duration = 0.123_456_7;
        r.timings.dns = Some(0.000_000_4);
        let json: serde_json::Value = serde_json::from_slice(&r.to_json()).unwrap();
        assert_eq!(json["checked_at"].as_f64(), Some(1_795_907_667.123_457));
        assert_eq!(json["duration"].as_f64(), Some(0.123_457));
        assert_eq!(json["timings"]["dns"].as_f64(), Some(0.0));
    }

    #[test]
    fn every_field_is_present_even_when_null() {
        let v: serde_json::Value = serde_json::from_slice(&sample().to_json()).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        for k in [
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
            "interval",
            "schema_version",
        ] {
            assert!(keys.contains(&k), "{k} missing from {v}");
        }
        for k in ["dns", "connect", "tls", "ttfb", "transfer"] {
            assert!(v["timings"].get(k).is_some(), "timings.{k} missing");
        }
        assert_eq!(v["error"]["kind"], "dns");
        assert!(v["status_code"].is_null());
    }

    #[test]
    fn round_trips() {
        let r = sample();
        assert_eq!(serde_json::from_slice::<Record>(&r.to_json()).unwrap(), r);
    }
}
