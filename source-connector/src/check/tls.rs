//! The rustls configuration of a check client, and certificate facts.
//!
//! Each client gets its own `rustls::ClientConfig`, handed to reqwest as a
//! preconfigured backend so that the session store can be the
//! [`TlsStartMarker`] that times the handshake. Certificates are verified like
//! reqwest does by default (the system's roots, through
//! `rustls-platform-verifier`), plus the site's `tls_ca`; on a system without
//! roots the Mozilla roots of `webpki-roots` are used instead. With
//! `tls_verify = false` any certificate is accepted (its handshake signature is
//! still checked).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

use connector_common::tls::AcceptAnyServerCert;

use super::phases::TlsStartMarker;
use super::SetupError;

/// The rustls configuration for clients with these TLS settings.
pub fn client_config(
    tls_ca: Option<&Path>,
    verify: bool,
) -> Result<rustls::ClientConfig, SetupError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| SetupError::Tls(e.to_string()))?;
    let verifier: Arc<dyn ServerCertVerifier> = if verify {
        let extra = match tls_ca {
            Some(path) => read_certs(path)?,
            None => Vec::new(),
        };
        match rustls_platform_verifier::Verifier::new_with_extra_roots(
            extra.clone(),
            Arc::clone(&provider),
        ) {
            Ok(v) => Arc::new(v),
            Err(e) => {
                tracing::warn!(error = %e, "no usable system CA certificates; using the Mozilla roots built in");
                let mut roots = RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                };
                for cert in extra {
                    roots
                        .add(cert)
                        .map_err(|e| SetupError::Tls(e.to_string()))?;
                }
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                    .build()
                    .map_err(|e| SetupError::Tls(e.to_string()))?
            }
        }
    } else {
        Arc::new(AcceptAnyServerCert::new(provider))
    };
    let mut config = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.resumption = Resumption::store(Arc::new(TlsStartMarker));
    Ok(config)
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, SetupError> {
    let bad = |e: &dyn std::fmt::Display| SetupError::TlsCa {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&e))?;
    if certs.is_empty() {
        return Err(bad(&"no CERTIFICATE block in the file"));
    }
    Ok(certs)
}

/// The notAfter of a DER certificate, epoch seconds.
pub fn not_after(der: &[u8]) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// Whole days from `now` (epoch seconds) to `not_after`; negative once expired.
pub fn days_left(not_after: i64, now: f64) -> i64 {
    ((not_after as f64 - now) / 86_400.0).floor() as i64
}

/// `TLSv1.2` / `TLSv1.3` for what reqwest reports.
pub fn version_name(v: reqwest::tls::Version) -> Option<&'static str> {
    use reqwest::tls::Version;
    [
        (Version::TLS_1_3, "TLSv1.3"),
        (Version::TLS_1_2, "TLSv1.2"),
        (Version::TLS_1_1, "TLSv1.1"),
        (Version::TLS_1_0, "TLSv1.0"),
    ]
    .into_iter()
    .find_map(|(known, name)| (known == v).then_some(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_left_floors_and_goes_negative() {
        let now = 1_700_000_000.0;
        assert_eq!(days_left(1_700_000_000 + 86_400 * 30 + 5, now), 30);
        assert_eq!(days_left(1_700_000_000 + 86_399, now), 0);
        assert_eq!(days_left(1_700_000_000 - 1, now), -1);
    }

    #[test]
    fn versions_have_their_usual_names() {
        assert_eq!(
            version_name(reqwest::tls::Version::TLS_1_3),
            Some("TLSv1.3")
        );
        assert_eq!(
            version_name(reqwest::tls::Version::TLS_1_2),
            Some("TLSv1.2")
        );
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert_eq!(not_after(b"not der"), None);
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_a_setup_error() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing here\n").unwrap();
        assert!(client_config(Some(&empty), true).is_err());
        assert!(client_config(Some(&dir.path().join("nope.pem")), true).is_err());
        assert!(client_config(None, false).is_ok());
    }
}
