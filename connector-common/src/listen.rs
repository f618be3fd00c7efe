//! A `host:port` to listen on, checked once at load: what `metrics_address`
//! holds in both connectors and what [`crate::telemetry::serve`] binds.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::limits::listen_address_problem;

/// An address to listen on: an IP address and port (`127.0.0.1:9464`,
/// `[::1]:9464`) or a host name and port (`localhost:9464`); port 0 picks a
/// free one. It can only be made from text that passed
/// [`listen_address_problem`], and serialises back to that text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListenAddress(String);

impl ListenAddress {
    /// The address as written, e.g. `127.0.0.1:9464`: what to bind.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ListenAddress {
    type Err = String;

    /// `text` as an address, or why it is not one (the message names the
    /// text and gives an example).
    fn from_str(text: &str) -> Result<Self, String> {
        match listen_address_problem(text) {
            Some(problem) => Err(problem),
            None => Ok(Self(text.to_owned())),
        }
    }
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for ListenAddress {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for ListenAddress {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl Serialize for ListenAddress {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ListenAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_read_once_and_written_back_as_it_was() {
        let a: ListenAddress = "localhost:9465".parse().unwrap();
        assert_eq!(a, "localhost:9465");
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"localhost:9465\"");
        let b: ListenAddress = serde_json::from_str("\"[::1]:0\"").unwrap();
        assert_eq!(b.as_str(), "[::1]:0");
    }

    #[test]
    fn a_bad_address_says_what_to_write() {
        let e = serde_json::from_str::<ListenAddress>("\"nope\"").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("`nope` has no port; write host:port, e.g. \"127.0.0.1:9464\""),
            "{e}"
        );
    }

    #[test]
    fn a_dotted_number_that_is_no_ipv4_address_is_refused() {
        let e = "256.1.1.1:0".parse::<ListenAddress>().unwrap_err();
        assert!(e.contains("not a valid IPv4 address"), "{e}");
        assert!("255.1.1.1:0".parse::<ListenAddress>().is_ok());
        assert!("host1.example:0".parse::<ListenAddress>().is_ok());
    }
}
