//! One secret value in a type that cannot print it.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a masked value is shown as.
pub const MASK: &str = "********";

/// One secret value; it cannot be printed, only [exposed](Secret::expose).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps `value`.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The value itself: only for handing it to the library that needs it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl<T> Serialize for Secret<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(MASK)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Secret<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(Secret)
    }
}

impl From<String> for Secret<String> {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl From<&str> for Secret<String> {
    fn from(s: &str) -> Self {
        Secret(s.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints() {
        let s = Secret::from("hunter2");
        assert_eq!(format!("{s} {s:?}"), format!("{MASK} {MASK}"));
        assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{MASK}\""));
        assert_eq!(s.expose(), "hunter2");
    }
}
