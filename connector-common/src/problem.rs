//! A problem with one setting, before the file and line are attached: what
//! every section's check returns, and what [`crate::config`] turns into a
//! `file:line: key` message. A leaf: it imports nothing of this crate, so
//! every other module can use it.

use std::fmt;

/// A problem found by a section's [`Validate`] check, before the file and
/// line are attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// Dotted key path relative to the file's top level, e.g. `source.sites[0].url`.
    pub key: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl Invalid {
    /// A problem with `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key `{}`: {}", self.key, self.message)
    }
}

/// Checks a section cannot express through types alone (urls, regexes,
/// ranges). `prefix` is the section's name, to build key paths.
pub trait Validate {
    /// Returns every problem found; empty when the section is usable.
    fn validate(&self, prefix: &str) -> Vec<Invalid>;
}

/// Adds a problem to `out` when the duration at `key` is zero; `example` is a
/// value to suggest (e.g. `"30s"`). Shared by both sections' checks.
pub fn require_positive(
    out: &mut Vec<Invalid>,
    key: String,
    value: std::time::Duration,
    example: &str,
) {
    if value.is_zero() {
        out.push(Invalid::new(
            key,
            format!("must be more than zero, e.g. \"{example}\""),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_duration_is_refused_with_an_example() {
        let mut out = Vec::new();
        require_positive(&mut out, "s.a".into(), std::time::Duration::ZERO, "5s");
        require_positive(
            &mut out,
            "s.b".into(),
            std::time::Duration::from_millis(1),
            "5s",
        );
        assert_eq!(
            out,
            [Invalid::new("s.a", "must be more than zero, e.g. \"5s\"")]
        );
    }
}
