//! Bounds on settings and on text that comes from outside.
//!
//! Every duration and number of the configuration is checked at load against
//! a range that makes sense for it (a value past it would overflow a clock
//! or a buffer at run time, or flood a site); the helpers here add the
//! problem to a section's list with the key's path, so it is reported as
//! `file:line: key ...` and the binaries exit 2.

use std::fmt::Display;
use std::time::Duration;

use crate::problem::Invalid;

/// Longest text kept from something a remote peer sent (an error message
/// built from a response): 1 KiB.
pub const MAX_FOREIGN_TEXT_BYTES: usize = 1024;

/// Longest Kafka topic name Kafka accepts.
pub const MAX_TOPIC_NAME_BYTES: usize = 249;

/// `text`, cut to at most `max` bytes (on a character boundary) with
/// `…(truncated, N bytes)` appended when it was longer, N being its full length.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…(truncated, {} bytes)", &text[..end], text.len())
}

/// A duration as an operator writes it: whole days as `400d` (not
/// humantime's months and years of 30.44 and 365.25 days), else humantime's form.
pub fn show_duration(d: Duration) -> String {
    const DAY: u64 = 86_400;
    if d.subsec_nanos() == 0 && d.as_secs() >= DAY && d.as_secs() % DAY == 0 {
        format!("{}d", d.as_secs() / DAY)
    } else {
        humantime::format_duration(d).to_string()
    }
}

/// Adds a problem when `value` is outside `min..=max`; `example` is a value
/// to suggest (e.g. `"30s"`).
pub fn check_duration(
    out: &mut Vec<Invalid>,
    key: String,
    value: Duration,
    min: Duration,
    max: Duration,
    example: &str,
) {
    if value < min || value > max {
        let f = show_duration;
        let what = if value.is_zero() {
            "must be more than zero".to_owned()
        } else {
            format!("{} is out of range", f(value))
        };
        out.push(Invalid::new(
            key,
            format!(
                "{what}; give a duration from {} to {}, e.g. \"{example}\"",
                f(min),
                f(max)
            ),
        ));
    }
}

/// Adds a problem when `value` is outside `min..=max`; `unit` names what is
/// counted (e.g. `"bytes"`), `why` says what the value is for.
pub fn check_number<T: PartialOrd + Display>(
    out: &mut Vec<Invalid>,
    key: String,
    value: T,
    min: T,
    max: T,
    unit: &str,
) {
    if value < min || value > max {
        out.push(Invalid::new(
            key,
            format!("{value} is out of range; give {min} to {max} {unit}"),
        ));
    }
}

/// Why `name` is not a Kafka topic name, if it is not: Kafka accepts 1 to
/// 249 characters of `a-z A-Z 0-9 . _ -`, but not `.` or `..`.
pub fn topic_problem(name: &str) -> Option<String> {
    let rule = "a Kafka topic name is 1 to 249 characters of a-z, A-Z, 0-9, `.`, `_` and `-`, and not `.` or `..`";
    if name.is_empty() {
        return Some(format!("empty; {rule}"));
    }
    if name.len() > MAX_TOPIC_NAME_BYTES {
        return Some(format!("{} bytes long; {rule}", name.len()));
    }
    if name == "." || name == ".." {
        return Some(format!("`{name}` is not allowed; {rule}"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Some(format!("`{}` contains {c:?}; {rule}", truncate(name, 100)));
    }
    None
}

/// Why `value` is no plain one-line text of at most `max` bytes, if it is
/// not (control characters, NUL included, are refused).
pub fn text_problem(value: &str, max: usize) -> Option<String> {
    if value.len() > max {
        return Some(format!(
            "{} bytes long; at most {max} are allowed",
            value.len()
        ));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Some(format!(
            "contains the control character {c:?}; use printable characters only"
        ));
    }
    None
}

/// Why `addr` is not a `host:port` to listen on, if it is not: an IP address
/// and port (`127.0.0.1:9464`, `[::1]:9464`) or a host name and port
/// (`localhost:9464`); port 0 picks a free one.
pub fn listen_address_problem(addr: &str) -> Option<String> {
    let explain = |why: &str| {
        Some(format!(
            "`{}` {why}; write host:port, e.g. \"127.0.0.1:9464\" (port 0 picks a free one)",
            truncate(addr, 100)
        ))
    };
    if addr.parse::<std::net::SocketAddr>().is_ok() {
        return None;
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return explain("has no port");
    };
    if port.parse::<u16>().is_err() {
        return explain("has no port number (0 to 65535)");
    }
    let name_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !name_ok {
        return explain("is not an IP address or host name with a port");
    }
    // `256.1.1.1` is no IPv4 address (it did not parse as one above), and no
    // host name either: the resolver would refuse it only at bind time.
    if host.contains('.') && host.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return explain("is not a valid IPv4 address (each of its four parts is 0 to 255)");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_and_says_how_long_it_was() {
        assert_eq!(truncate("short", 10), "short");
        let long = "é".repeat(1000);
        let cut = truncate(&long, 11);
        assert_eq!(cut, format!("{}…(truncated, 2000 bytes)", "é".repeat(5)));
    }

    #[test]
    fn kafka_topic_names_follow_kafkas_rule() {
        for ok in ["site-status", "a.b_c-1", &"x".repeat(249)] {
            assert_eq!(topic_problem(ok), None, "{ok}");
        }
        for bad in ["", ".", "..", "has space", "ü", "a/b", &"x".repeat(250)] {
            assert!(topic_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn listen_addresses_need_a_host_and_a_port() {
        for ok in ["127.0.0.1:9464", "[::1]:0", "localhost:9465", "0.0.0.0:1"] {
            assert_eq!(listen_address_problem(ok), None, "{ok}");
        }
        for bad in [
            "nope",
            ":9464",
            "127.0.0.1",
            "host:99999",
            "a b:1",
            "127.0.0.1:x",
            "256.1.1.1:0",
            "1.2.3:80",
            "1.2.3.4.5:80",
        ] {
            assert!(listen_address_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn durations_and_numbers_out_of_range_are_named() {
        let mut out = Vec::new();
        let s = Duration::from_secs;
        check_duration(&mut out, "a".into(), s(0), s(1), s(9), "2s");
        check_duration(&mut out, "b".into(), s(10), s(1), s(9), "2s");
        check_duration(&mut out, "c".into(), s(5), s(1), s(9), "2s");
        check_number(&mut out, "d".into(), 0u64, 1, 5, "bytes");
        let keys: Vec<&str> = out.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["a", "b", "d"]);
        assert!(
            out[1].message.contains("from 1s to 9s"),
            "{}",
            out[1].message
        );
    }
}
