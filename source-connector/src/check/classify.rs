//! Turning a failed request into an `error.kind` and a message.
//!
//! The kind comes from the actual error chain, not from message text: our
//! resolver's [`DnsError`] means `dns`; a `rustls::Error` anywhere (tokio-rustls
//! wraps it in an `io::Error`) means `tls`; a timed-out I/O or reqwest timeout
//! means `timeout`; any other failure to connect means `connect`; a failure
//! while reading the body means `body`; the rest is `http`.

use std::error::Error as StdError;
use std::io;

use super::phases::DnsError;
use crate::record::ErrorKind;

/// The kind of a failed request.
pub fn classify(err: &(dyn StdError + 'static)) -> ErrorKind {
    let mut connect = false;
    let mut body = false;
    let mut timeout = false;
    for e in chain(err) {
        for e in io_payloads(e) {
            if e.is::<DnsError>() {
                return ErrorKind::Dns;
            }
            if e.is::<rustls::Error>() {
                return ErrorKind::Tls;
            }
            if let Some(io) = e.downcast_ref::<io::Error>() {
                timeout |= io.kind() == io::ErrorKind::TimedOut;
            }
        }
        if let Some(r) = e.downcast_ref::<reqwest::Error>() {
            timeout |= r.is_timeout();
            connect |= r.is_connect();
            body |= r.is_body() || r.is_decode();
        }
    }
    if timeout {
        ErrorKind::Timeout
    } else if connect {
        ErrorKind::Connect
    } else if body {
        ErrorKind::Body
    } else {
        ErrorKind::Http
    }
}

/// The messages of the chain, joined with `: `, without repeating a message
/// that the one before already shows.
pub fn describe(err: &(dyn StdError + 'static)) -> String {
    let mut out = String::new();
    for e in chain(err) {
        let text = e.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// `e`, and when it is an `io::Error`, what it carries, and so on: connectors
/// nest `io::Error`s, and `io::Error::source()` skips the payload.
fn io_payloads<'a>(
    e: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(e), |e: &&'a (dyn StdError + 'static)| {
        let inner: &'a (dyn StdError + Send + Sync + 'static) =
            e.downcast_ref::<io::Error>()?.get_ref()?;
        Some(inner as &'a (dyn StdError + 'static))
    })
}

fn chain<'a>(
    err: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(err), |e: &&'a (dyn StdError + 'static)| (*e).source())
}

#[cfg(test)]
mod tests {
    use std::fmt;

    use super::*;

    /// An error with a cause, like hyper-util's `ConnectError`.
    #[derive(Debug)]
    struct Wrap(&'static str, Box<dyn StdError + Send + Sync>);

    impl fmt::Display for Wrap {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl StdError for Wrap {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&*self.1)
        }
    }

    #[test]
    fn resolver_failure_is_dns() {
        let e = Wrap(
            "dns error",
            Box::new(DnsError {
                host: "x.invalid".into(),
                reason: "not known".into(),
            }),
        );
        assert_eq!(
            classify(&Wrap("client error (Connect)", Box::new(e))),
            ErrorKind::Dns
        );
    }

    #[test]
    fn rustls_error_inside_io_error_is_tls() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = io::Error::new(io::ErrorKind::InvalidData, tls);
        let e = Wrap("client error (Connect)", Box::new(io));
        assert_eq!(classify(&e), ErrorKind::Tls);
        assert!(describe(&e).contains("UnknownIssuer"), "{}", describe(&e));
    }

    #[test]
    fn rustls_error_in_nested_io_errors_is_tls() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = io::Error::other(io::Error::new(io::ErrorKind::InvalidData, tls));
        assert_eq!(
            classify(&Wrap("client error (Connect)", Box::new(io))),
            ErrorKind::Tls
        );
    }

    #[test]
    fn timed_out_io_is_timeout() {
        let timed_out = io::Error::from(io::ErrorKind::TimedOut);
        assert_eq!(
            classify(&Wrap("read", Box::new(timed_out))),
            ErrorKind::Timeout
        );
    }

    #[test]
    fn describe_skips_repeats() {
        let e = Wrap(
            "outer",
            Box::new(Wrap("outer", Box::new(io::Error::other("inner")))),
        );
        assert_eq!(describe(&e), "outer: inner");
    }
}
