//! Why the HTTP clients of the checks cannot be built: [`SetupError`].

use std::path::PathBuf;

/// A client that cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The TLS configuration could not be made.
    #[error("cannot set up TLS for site checks: {0}")]
    Tls(String),
    /// A `tls_ca` file is unusable.
    #[error("tls_ca {}: {message}; give a PEM file with the CA certificate(s)", .path.display())]
    TlsCa {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// reqwest refused the settings.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}
