//! rustls pieces both connectors need: the certificate verifiers weaker
//! than rustls' default, and reading PEM files at configuration load.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{VerifierBuilderError, WebPkiServerVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// A server-certificate verifier weaker than rustls' default (chain and
/// name): the [`CertificateRule`] `C` decides what of the certificate is
/// checked, while the handshake signatures are always checked with the
/// crypto provider's algorithms. The one `ServerCertVerifier` of the
/// workspace; its two rules are [`AcceptAnyServerCert`] and [`ChainOnly`].
#[derive(Debug)]
pub struct RelaxedVerifier<C> {
    certificate: C,
    signatures: WebPkiSupportedAlgorithms,
}

/// What a [`RelaxedVerifier`] checks of the server's certificate.
pub trait CertificateRule: fmt::Debug + Send + Sync {
    /// Whether the server's certificate (with its intermediates) is
    /// acceptable for `server_name`; the arguments of
    /// [`ServerCertVerifier::verify_server_cert`].
    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error>;
}

/// Any certificate, for any name.
#[derive(Debug)]
pub struct AnyCertificate;

impl CertificateRule for AnyCertificate {
    fn verify(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
}

/// A chain up to trusted roots (validity dates included), whatever name the
/// certificate is for.
#[derive(Debug)]
pub struct ChainNotName(Arc<WebPkiServerVerifier>);

impl CertificateRule for ChainNotName {
    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
}

/// Accepts any server certificate for any name, but still checks the
/// handshake signatures: the source's `tls_verify = false`, and the sink's
/// `sslmode=require` without a root certificate (libpq's rule). Encrypted,
/// not authenticated.
pub type AcceptAnyServerCert = RelaxedVerifier<AnyCertificate>;

impl AcceptAnyServerCert {
    /// A verifier using `provider`'s signature algorithms.
    pub fn new(provider: Arc<CryptoProvider>) -> Self {
        Self {
            certificate: AnyCertificate,
            signatures: provider.signature_verification_algorithms,
        }
    }
}

/// Checks the chain up to trusted roots but not the host name: the sink's
/// `sslmode=verify-ca` (libpq's rule).
pub type ChainOnly = RelaxedVerifier<ChainNotName>;

impl ChainOnly {
    /// A verifier trusting `roots`, using `provider`'s signature algorithms.
    pub fn new(
        roots: Arc<RootCertStore>,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, VerifierBuilderError> {
        let signatures = provider.signature_verification_algorithms;
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider).build()?;
        Ok(Self {
            certificate: ChainNotName(webpki),
            signatures,
        })
    }
}

impl<C: CertificateRule> ServerCertVerifier for RelaxedVerifier<C> {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.certificate
            .verify(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.signatures)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.signatures)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.supported_schemes()
    }
}

/// The CA certificates of a PEM file, each checked to be a usable trust
/// anchor: read when the configuration is loaded, so a file that is not a
/// CA certificate is refused there, with the key that names it.
pub fn read_ca_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = read_pem_certs(path)?;
    let mut store = rustls::RootCertStore::empty();
    for cert in &certs {
        store.add(cert.clone()).map_err(|e| {
            format!(
                "{}: a certificate cannot be used as a CA: {e}",
                path.display()
            )
        })?;
    }
    Ok(certs)
}

/// Largest PEM file read: a chain of certificates fits many times over.
const MAX_PEM_BYTES: u64 = 4 << 20;

/// The bytes of a PEM file ([`crate::files::read_regular`]).
fn pem_bytes(path: &std::path::Path) -> Result<Vec<u8>, String> {
    crate::files::read_regular(path, MAX_PEM_BYTES).map_err(|e| format!("{}: {e}", path.display()))
}

/// The certificates of a PEM file (at least one).
pub fn read_pem_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let bad = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let bytes = pem_bytes(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&e))?;
    if certs.is_empty() {
        return Err(bad(&"no CERTIFICATE block in the file"));
    }
    Ok(certs)
}

/// Checks that a PEM file holds a private key.
pub fn check_pem_key(path: &std::path::Path) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    let bytes = pem_bytes(path)?;
    rustls::pki_types::PrivateKeyDer::from_pem_slice(&bytes)
        .map(|_| ())
        .map_err(|e| format!("{}: no usable private key ({e})", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pem_path_that_is_a_device_or_holds_no_certificate_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        // Read, /dev/zero would fill the memory.
        let zero = dir.path().join("zero.pem");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let e = read_pem_certs(&zero).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        let e = check_pem_key(&zero).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "hello\n").unwrap();
        let e = read_pem_certs(&empty).unwrap_err();
        assert!(e.contains("no CERTIFICATE block"), "{e}");
        assert!(check_pem_key(&empty)
            .unwrap_err()
            .contains("no usable private key"));
    }
}
