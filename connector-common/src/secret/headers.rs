//! Request headers: every value is a credential but those of a short list of
//! well-known harmless names.

use super::map::{MaskRule, SecretMap};

/// Request headers (`[source] headers`, a site's `headers`).
pub type Headers = SecretMap<HeaderRule>;

/// Request headers whose values may carry credentials: every header but a
/// short list of well-known ones that never do (`accept*`, `user-agent`,
/// `content-type`, `cache-control`, …). Credential headers have too many
/// names (`x-jwt`, `x-sas`, `x-goog-iap-jwt-assertion`, …) to list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeaderRule;

impl MaskRule for HeaderRule {
    fn is_secret(name: &str) -> bool {
        const HARMLESS: [&str; 20] = [
            "accept",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "cache-control",
            "connection",
            "content-encoding",
            "content-language",
            "content-length",
            "content-type",
            "dnt",
            "host",
            "if-modified-since",
            "if-none-match",
            "origin",
            "pragma",
            "range",
            "referer",
            "user-agent",
            "x-requested-with",
        ];
        let n = name.to_ascii_lowercase();
        !HARMLESS.contains(&n.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_header_but_well_known_harmless_ones_is_masked() {
        for secret in [
            "authorization",
            "x-jwt",
            "x-sas",
            "X-Credentials",
            "x-goog-iap-jwt-assertion",
            "x-pwd",
        ] {
            assert!(HeaderRule::is_secret(secret), "{secret}");
        }
        for shown in ["accept", "User-Agent", "content-type", "cache-control"] {
            assert!(!HeaderRule::is_secret(shown), "{shown}");
        }
    }

    #[test]
    fn credential_headers_are_masked_by_meaning() {
        let mut h = Headers::new();
        for (k, v) in [
            ("Authorization", "Bearer abc"),
            ("proxy-authorization", "Basic xyz"),
            ("cookie", "sid=1"),
            ("X-API-Key", "k1"),
            ("x-auth-token", "t1"),
            ("x-client-secret", "s1"),
            ("accept", "text/html"),
            ("user-agent", "probe"),
        ] {
            h.insert(k, v);
        }
        let shown = format!("{h:?} {}", serde_json::to_string(&h).unwrap());
        for secret in ["Bearer abc", "Basic xyz", "sid=1", "k1", "t1", "s1"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(
            shown.contains("text/html") && shown.contains("probe"),
            "{shown}"
        );
        assert_eq!(h.get("X-API-Key").map(String::as_str), Some("k1"));
    }
}
