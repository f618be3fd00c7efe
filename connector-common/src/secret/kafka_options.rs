//! `[kafka.options]`: the librdkafka properties whose values are credentials.

use super::map::{MaskRule, SecretMap};

/// `[kafka.options]`.
pub type KafkaOptions = SecretMap<KafkaOptionRule>;

/// `[kafka.options]` entries that carry credentials: any name containing
/// `.pem`, `password`, `secret`, `key`, `token` or `jaas` (e.g.
/// `ssl.key.pem`, `ssl.key.password`, `sasl.oauthbearer.client.secret`),
/// except a `*.location` (a path, not a secret) and a few well-known
/// non-secret settings whose names merely contain `key`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KafkaOptionRule;

impl MaskRule for KafkaOptionRule {
    fn is_secret(name: &str) -> bool {
        let n = name.to_ascii_lowercase();
        if n.ends_with(".location") {
            return false;
        }
        // Names with `key` in them that hold no secret.
        if matches!(
            n.as_str(),
            "ssl.keystore.location" | "ssl.key.type" | "ssl_engine_id" | "message.key"
        ) {
            return false;
        }
        [
            ".pem",
            "password",
            "secret",
            "key",
            "token",
            "jaas",
            "credential",
            "oauthbearer",
            "bearer",
            "jwt",
            "pass",
            "pwd",
            "signature",
        ]
        .iter()
        .any(|w| n.contains(w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_options_with_keys_and_passwords_are_masked_but_locations_are_not() {
        for name in [
            "ssl.key.pem",
            "ssl.certificate.pem",
            "ssl.key.password",
            "ssl.keystore.password",
            "sasl.password",
            "sasl.oauthbearer.client.secret",
            "sasl.jaas.config",
        ] {
            assert!(KafkaOptionRule::is_secret(name), "{name}");
        }
        for name in [
            "ssl.key.location",
            "ssl.ca.location",
            "compression.type",
            "linger.ms",
        ] {
            assert!(!KafkaOptionRule::is_secret(name), "{name}");
        }
        assert!(KafkaOptionRule::is_secret("sasl.oauthbearer.config"));
        assert!(!KafkaOptionRule::is_secret("ssl.ca.location"));
    }
}
