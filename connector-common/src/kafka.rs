//! The `[kafka]` section and its translation into librdkafka settings; what
//! both connectors' librdkafka contexts share ([`events`]).

use std::path::PathBuf;

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

use crate::limits::{text_problem, truncate};
use crate::problem::{Invalid, Validate};
use crate::secret::{KafkaOptionRule, KafkaOptions, MaskRule, Secret};

pub mod events;
pub mod preflight;

pub use events::{forward_log, ClientEvents, KafkaEvent};

/// How the connectors reach Kafka. Shared by both connectors.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers, comma separated (`host:port,host:port`). Env: `kafka_host`.
    #[serde(default = "default_brokers")]
    pub brokers: String,
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`. Default: `ssl` when
    /// `ssl_ca` is set, `sasl_ssl` when `sasl_mechanism` is set, else `plaintext`.
    #[serde(default)]
    pub security_protocol: Option<SecurityProtocol>,
    /// CA certificate (PEM) that signed the brokers' certificates. Env: `kafka_ssl_ca`.
    #[serde(default)]
    pub ssl_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS. Env: `kafka_ssl_cert`.
    #[serde(default)]
    pub ssl_cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS. Env: `kafka_ssl_key`.
    #[serde(default)]
    pub ssl_key: Option<PathBuf>,
    /// SASL mechanism: `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    #[serde(default)]
    pub sasl_mechanism: Option<String>,
    /// SASL user name.
    #[serde(default)]
    pub sasl_username: Option<String>,
    /// SASL password; write `${KAFKA_PASSWORD}` to keep it out of the file.
    /// Never printed (`--check-config` shows `********`).
    #[serde(default)]
    pub sasl_password: Option<Secret<String>>,
    /// Any librdkafka property, passed through as-is (e.g. `"compression.type" = "zstd"`).
    /// These win over everything the connector sets itself. Checked by
    /// librdkafka at load (an unknown name or a bad value is refused); values
    /// of names that hold credentials (`*.pem`, `*password*`, `*secret*`,
    /// `*key*` but not `*.location`) are never printed.
    #[serde(default)]
    pub options: KafkaOptions,
}

fn default_brokers() -> String {
    "127.0.0.1:9092".to_owned()
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: default_brokers(),
            security_protocol: None,
            ssl_ca: None,
            ssl_cert: None,
            ssl_key: None,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            options: KafkaOptions::new(),
        }
    }
}

/// Kafka's `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    /// No TLS, no SASL.
    Plaintext,
    /// TLS (with a client certificate when `ssl_cert`/`ssl_key` are set).
    Ssl,
    /// SASL without TLS.
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    fn as_librdkafka(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }
}

impl KafkaConfig {
    /// The protocol in force, after the defaults described on `security_protocol`.
    pub fn effective_protocol(&self) -> SecurityProtocol {
        match (self.security_protocol, &self.sasl_mechanism, &self.ssl_ca) {
            (Some(p), _, _) => p,
            (None, Some(_), _) => SecurityProtocol::SaslSsl,
            (None, None, Some(_)) => SecurityProtocol::Ssl,
            (None, None, None) => SecurityProtocol::Plaintext,
        }
    }

    /// librdkafka settings for a client of these brokers; callers add their
    /// role's own settings, then [`KafkaConfig::apply_options`].
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        let protocol = self.effective_protocol();
        c.set("security.protocol", protocol.as_librdkafka());
        if matches!(protocol, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl) {
            if let Some(ca) = &self.ssl_ca {
                c.set("ssl.ca.location", ca.display().to_string());
            }
            if let Some(cert) = &self.ssl_cert {
                c.set("ssl.certificate.location", cert.display().to_string());
            }
            if let Some(key) = &self.ssl_key {
                c.set("ssl.key.location", key.display().to_string());
            }
        }
        if matches!(
            protocol,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        ) {
            if let Some(m) = &self.sasl_mechanism {
                c.set("sasl.mechanism", m);
            }
            if let Some(u) = &self.sasl_username {
                c.set("sasl.username", u);
            }
            if let Some(p) = &self.sasl_password {
                c.set("sasl.password", p.expose());
            }
        }
        c
    }

    /// Applies `[kafka.options]` last, so an operator can override anything.
    pub fn apply_options(&self, c: &mut ClientConfig) {
        for (k, v) in self.options.iter() {
            c.set(k, v);
        }
    }
}

impl Validate for KafkaConfig {
    fn validate(&self, prefix: &str) -> Vec<Invalid> {
        let mut out = Vec::new();
        let key = |k: &str| format!("{prefix}.{k}");
        self.check_brokers(&mut out, key("brokers"));
        self.check_options(&mut out, &key("options"));
        self.check_pem_files(&mut out, &key);
        self.check_protocol_fit(&mut out, &key);
        self.check_sasl(&mut out, &key);
        out
    }
}

impl KafkaConfig {
    /// `brokers`: one or more `host:port`.
    fn check_brokers(&self, out: &mut Vec<Invalid>, key: String) {
        if self.brokers.trim().is_empty() {
            out.push(Invalid::new(
                key,
                "no brokers; write host:port (several comma separated) or set kafka_host",
            ));
        } else if let Some(problem) = text_problem(&self.brokers, 4096) {
            out.push(Invalid::new(key, problem));
        } else if let Some(bad) = self
            .brokers
            .split(',')
            .map(str::trim)
            .find(|b| !broker_is_valid(b))
        {
            out.push(Invalid::new(
                key,
                format!("`{bad}` is not host:port; write host:port, several comma separated (e.g. \"k1:9092,k2:9092\")"),
            ));
        }
    }

    /// `[kafka.options]`: plain text, then librdkafka's own check of every
    /// name and value (without connecting), so a mistake is refused now
    /// rather than at start. `key` is the path of the options table.
    fn check_options(&self, out: &mut Vec<Invalid>, key: &str) {
        let before = out.len();
        for (name, value) in self.options.iter() {
            if let Some(problem) = text_problem(name, 256).or_else(|| text_problem(value, 1 << 20))
            {
                out.push(Invalid::new(
                    key,
                    format!("option `{}`: {problem}", truncate(name, 100)),
                ));
            }
        }
        if out.len() > before {
            return;
        }
        let mut c = ClientConfig::new();
        for (k, v) in self.options.iter() {
            c.set(k, v);
            if let Err(e) = c.create_native_config() {
                // librdkafka's message repeats the value: not for a secret.
                let why = match &e {
                    _ if KafkaOptionRule::is_secret(k) => "(the value is not shown)".to_owned(),
                    rdkafka::error::KafkaError::ClientConfig(_, why, _, _) => why.clone(),
                    other => other.to_string(),
                };
                out.push(Invalid::new(
                    format!("{key}.{k}"),
                    format!("librdkafka refuses option `{k}`: {}", truncate(&why, 300)),
                ));
                break;
            }
        }
    }

    /// `ssl_ca`, `ssl_cert`, `ssl_key`: readable PEM files of the right kind,
    /// the certificate and key both or neither.
    fn check_pem_files(&self, out: &mut Vec<Invalid>, key: &dyn Fn(&str) -> String) {
        for (name, path) in [
            ("ssl_ca", &self.ssl_ca),
            ("ssl_cert", &self.ssl_cert),
            ("ssl_key", &self.ssl_key),
        ] {
            let Some(p) = path else { continue };
            let problem = if !p.is_file() {
                Some(format!(
                    "file {} does not exist or is not a file; give the path of a PEM file",
                    p.display()
                ))
            } else {
                let read = match name {
                    "ssl_ca" => crate::tls::read_ca_certs(p).map(|_| ()),
                    "ssl_cert" => crate::tls::read_pem_certs(p).map(|_| ()),
                    _ => crate::tls::check_pem_key(p),
                };
                read.err().map(|e| format!("{e}; give a PEM file"))
            };
            if let Some(message) = problem {
                out.push(Invalid::new(key(name), message));
            }
        }
        if self.ssl_cert.is_some() != self.ssl_key.is_some() {
            out.push(Invalid::new(
                key("ssl_key"),
                "mutual TLS needs both ssl_cert and ssl_key; set both or neither",
            ));
        }
    }

    /// Settings the chosen protocol would silently ignore are refused.
    fn check_protocol_fit(&self, out: &mut Vec<Invalid>, key: &dyn Fn(&str) -> String) {
        let protocol = self.effective_protocol();
        let tls = matches!(protocol, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl);
        let sasl = matches!(
            protocol,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        );
        if !tls {
            for (name, set) in [
                ("ssl_ca", self.ssl_ca.is_some()),
                ("ssl_cert", self.ssl_cert.is_some()),
                ("ssl_key", self.ssl_key.is_some()),
            ] {
                if set {
                    out.push(Invalid::new(
                        key(name),
                        format!(
                            "is set but security_protocol is {:?}, which does not use TLS; use \"ssl\" or \"sasl_ssl\", or remove {name} (also check the kafka_{name} environment variable)",
                            protocol.as_librdkafka()
                        ),
                    ));
                }
            }
        }
        if !sasl && (self.sasl_username.is_some() || self.sasl_password.is_some()) {
            out.push(Invalid::new(
                key("sasl_username"),
                format!(
                    "SASL credentials are set but security_protocol is {:?}; set sasl_mechanism and use \"sasl_ssl\" or \"sasl_plaintext\", or remove them",
                    protocol.as_librdkafka()
                ),
            ));
        }
    }

    /// The SASL credentials: plain text (never repeated in the message), a
    /// known mechanism, and both a user name and a password with it.
    fn check_sasl(&self, out: &mut Vec<Invalid>, key: &dyn Fn(&str) -> String) {
        for (name, value) in [
            ("sasl_username", self.sasl_username.as_deref()),
            (
                "sasl_password",
                self.sasl_password.as_ref().map(|p| p.expose().as_str()),
            ),
        ] {
            if let Some(problem) = value.and_then(|v| text_problem(v, 1024)) {
                out.push(Invalid::new(key(name), problem));
            }
        }
        if let Some(m) = &self.sasl_mechanism {
            if !matches!(m.as_str(), "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512") {
                out.push(Invalid::new(
                    key("sasl_mechanism"),
                    format!("`{m}` is not supported; use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"),
                ));
            }
            if self.sasl_username.is_none() || self.sasl_password.is_none() {
                out.push(Invalid::new(
                    key("sasl_username"),
                    "SASL needs sasl_username and sasl_password",
                ));
            }
        }
    }
}

/// `host:port` with an optional `scheme://` in front (librdkafka accepts both).
fn broker_is_valid(b: &str) -> bool {
    let b = b.split_once("://").map_or(b, |(_, rest)| rest);
    b.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !host.contains(char::is_whitespace) && port.parse::<u16>().is_ok()
    })
}

/// An operator-facing explanation when a Kafka client error means the broker
/// refused who we are (SASL credentials or the TLS handshake), for `/readyz`
/// and the log; `None` for every other error. Retrying cannot fix these, so
/// they say which settings to check.
pub fn auth_problem(error: &rdkafka::error::KafkaError, reason: &str) -> Option<String> {
    use rdkafka::types::RDKafkaErrorCode as C;
    let code = error.rdkafka_error_code();
    let sasl = matches!(code, Some(C::Authentication | C::SaslAuthenticationFailed))
        || reason.contains("SASL authentication error");
    // A connection dropped mid-handshake ("SSL handshake failed: Disconnected",
    // e.g. a broker restarting) is a transport error that a retry fixes.
    let tls = !sasl && reason.contains("SSL handshake failed") && !reason.contains("Disconnected");
    if sasl {
        Some(format!(
            "Kafka refused the SASL credentials ({reason}); check [kafka] sasl_mechanism, sasl_username and sasl_password"
        ))
    } else if tls {
        Some(format!(
            "the TLS handshake with Kafka failed ({reason}); check [kafka] ssl_ca (the brokers' CA) and, for mutual TLS, ssl_cert and ssl_key"
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssl_ca_alone_means_ssl_like_the_seed() {
        let k = KafkaConfig {
            ssl_ca: Some("ca.pem".into()),
            ..Default::default()
        };
        assert_eq!(k.effective_protocol(), SecurityProtocol::Ssl);
        assert_eq!(k.client_config().get("ssl.ca.location"), Some("ca.pem"));
    }

    #[test]
    fn sasl_defaults_to_sasl_ssl_and_sets_credentials() {
        let k = KafkaConfig {
            sasl_mechanism: Some("SCRAM-SHA-256".into()),
            sasl_username: Some("u".into()),
            sasl_password: Some("p".into()),
            ..Default::default()
        };
        let c = k.client_config();
        assert_eq!(c.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(c.get("sasl.username"), Some("u"));
    }

    #[test]
    fn options_override_connector_settings() {
        let mut k = KafkaConfig::default();
        k.options.insert("bootstrap.servers", "x:1");
        let mut c = k.client_config();
        k.apply_options(&mut c);
        assert_eq!(c.get("bootstrap.servers"), Some("x:1"));
    }

    #[test]
    fn tls_files_with_a_plaintext_protocol_are_refused_not_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "x").unwrap();
        let k = KafkaConfig {
            security_protocol: Some(SecurityProtocol::Plaintext),
            ssl_ca: Some(ca),
            ..Default::default()
        };
        // (The file is no CA certificate either: refused on its own line.)
        let problems = k.validate("kafka");
        assert!(
            problems
                .iter()
                .any(|p| p.key == "kafka.ssl_ca" && p.message.contains("plaintext")),
            "{problems:?}"
        );
    }

    #[test]
    fn sasl_credentials_without_sasl_are_refused() {
        let k = KafkaConfig {
            sasl_username: Some("u".into()),
            sasl_password: Some("p".into()),
            ..Default::default()
        };
        assert_eq!(k.validate("kafka")[0].key, "kafka.sasl_username");
    }

    #[test]
    fn a_control_character_in_sasl_credentials_is_refused_without_showing_them() {
        let k = KafkaConfig {
            sasl_mechanism: Some("PLAIN".into()),
            sasl_username: Some("u".into()),
            sasl_password: Some("hunter\u{0}2".into()),
            ..Default::default()
        };
        let problems = k.validate("kafka");
        assert_eq!(problems[0].key, "kafka.sasl_password");
        assert!(
            !problems[0].message.contains("hunter"),
            "{}",
            problems[0].message
        );
    }

    #[test]
    fn missing_pem_file_is_invalid() {
        let k = KafkaConfig {
            ssl_ca: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        let problems = k.validate("kafka");
        assert_eq!(problems[0].key, "kafka.ssl_ca");
    }

    #[test]
    fn refused_sasl_credentials_name_the_settings_to_check() {
        use rdkafka::error::KafkaError;
        use rdkafka::types::RDKafkaErrorCode;
        let e = KafkaError::Global(RDKafkaErrorCode::Authentication);
        let p = auth_problem(&e, "SASL authentication error: Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-256").unwrap();
        assert!(
            p.contains("sasl_password") && p.contains("invalid credentials"),
            "{p}"
        );
        let e = KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure);
        let p = auth_problem(
            &e,
            "127.0.0.1:9094/bootstrap: SSL handshake failed: certificate verify failed",
        )
        .unwrap();
        assert!(p.contains("ssl_ca"), "{p}");
        assert_eq!(
            auth_problem(&e, "Connect to ipv4#127.0.0.1:9 failed: Connection refused"),
            None
        );
        assert_eq!(
            auth_problem(&e, "127.0.0.1:9094/1: SSL handshake failed: Disconnected: connecting to a PLAINTEXT broker listener?"),
            None,
            "a dropped connection is retried, not reported as a setup error"
        );
    }
}
