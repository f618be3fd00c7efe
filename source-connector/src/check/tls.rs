//! The rustls configuration of a check client, and certificate facts.
//!
//! Each client gets its own `rustls::ClientConfig`, handed to reqwest as a
//! preconfigured backend so that the session store can be the
//! [`TlsStartMarker`] that times the handshake. Certificates are verified with
//! webpki against the system's roots (read by `rustls-native-certs`, as
//! `rustls-platform-verifier` does on Linux), plus the site's `tls_ca`; on a
//! system without roots the Mozilla roots of `webpki-roots` are used instead.
//! With `tls_verify = false` any certificate is accepted (its handshake
//! signature is still checked).
//!
//! What is done once per process is done in [`TlsBase::load`], before any
//! check is timed, and shared by every client: reading the system's roots,
//! and seeding the crypto provider's random number generator. AWS-LC seeds
//! its process-wide generator from CPU jitter entropy on the first random
//! bytes anyone asks for (~100 ms of CPU measured in a debug build; issue 17
//! saw ~65 ms with a release build); left to the first handshake (its
//! ClientHello random and key share), that time was in the first check's
//! `timings.tls`. Measurements: docs/timings.md.

use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::RootCertStore;

use connector_common::tls::AcceptAnyServerCert;

use super::error::SetupError;
use super::phases::TlsStartMarker;
use crate::sites::CaFile;

/// What every check client's TLS shares, made once per process (see the
/// module documentation): the crypto provider, its random number generator
/// seeded, and the roots trusted besides a site's `tls_ca`.
#[derive(Debug, Clone)]
pub struct TlsBase {
    provider: Arc<CryptoProvider>,
    /// The system's roots, or the Mozilla roots when the system has none.
    roots: Arc<RootCertStore>,
}

impl TlsBase {
    /// Makes the provider, seeds its random number generator and reads the
    /// system's roots: the one-time work of TLS, done here so that no check's
    /// handshake carries it.
    pub fn load() -> Result<Self, SetupError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        // The first random bytes of the process seed AWS-LC's generator (CPU
        // jitter entropy, tens of ms); every handshake draws from it.
        provider
            .secure_random
            .fill(&mut [0u8; 32])
            .map_err(|_| SetupError::Tls("the random number generator failed".to_owned()))?;
        Ok(TlsBase {
            provider,
            roots: Arc::new(system_roots()),
        })
    }

    /// How many roots are trusted besides a site's `tls_ca`.
    pub fn root_count(&self) -> usize {
        self.roots.len()
    }

    /// The rustls configuration for clients with these TLS settings.
    pub fn client_config(
        &self,
        tls_ca: Option<&CaFile>,
        verify: bool,
    ) -> Result<rustls::ClientConfig, SetupError> {
        let provider = &self.provider;
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| SetupError::Tls(e.to_string()))?;
        let verifier: Arc<dyn ServerCertVerifier> = if verify {
            let roots = match tls_ca {
                None => Arc::clone(&self.roots),
                Some(ca) => {
                    let mut roots = RootCertStore::clone(&self.roots);
                    for cert in ca.certs.iter() {
                        roots.add(cert.clone()).map_err(|e| SetupError::TlsCa {
                            path: ca.path.clone(),
                            message: e.to_string(),
                        })?;
                    }
                    Arc::new(roots)
                }
            };
            WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(provider))
                .build()
                .map_err(|e| SetupError::Tls(e.to_string()))?
        } else {
            Arc::new(AcceptAnyServerCert::new(Arc::clone(provider)))
        };
        let mut config = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config.resumption = Resumption::store(Arc::new(TlsStartMarker));
        Ok(config)
    }
}

/// The system's roots (`SSL_CERT_FILE`/`SSL_CERT_DIR` or the usual places);
/// the Mozilla roots of `webpki-roots` when none is usable.
fn system_roots() -> RootCertStore {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    for error in &found.errors {
        tracing::debug!(%error, "a system CA certificate could not be read");
    }
    if added == 0 {
        tracing::warn!(
            ignored,
            errors = found.errors.len(),
            "no usable system CA certificates; using the Mozilla roots built in"
        );
        return RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
    }
    tracing::debug!(added, ignored, "system CA certificates loaded");
    roots
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
    use rustls::pki_types::CertificateDer;

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
    fn a_ca_file_is_trusted_as_read_and_a_certificate_it_cannot_use_is_a_setup_error() {
        // The file was read (and its certificates checked) when the sites
        // were resolved: the client trusts what was read, without reading
        // the file again.
        let base = TlsBase::load().unwrap();
        let ca = crate::sites::CaFile {
            path: "/nonexistent/ca.pem".into(),
            certs: vec![CertificateDer::from(b"not der".to_vec())].into(),
        };
        let e = base.client_config(Some(&ca), true).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
        assert!(base.client_config(Some(&ca), false).is_ok());
        assert!(base.client_config(None, false).is_ok());
        assert!(base.client_config(None, true).is_ok());
        assert!(base.root_count() > 0);
    }
}
