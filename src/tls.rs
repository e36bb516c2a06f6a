//! rustls configurations: the client trusts webpki-roots plus `--ca-file` (and
//! `SSL_CERT_FILE`, as stock `cloudflared` does); the edge serves a cert/key pair.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or held nothing usable.
    #[error("{path}: {what}")]
    File {
        /// The file.
        path: PathBuf,
        /// What was wrong, and what to do.
        what: String,
    },
    /// rustls refused the material.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Read every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_err = |what: String| TlsError::File {
        path: path.to_path_buf(),
        what,
    };
    let data = std::fs::read(path).map_err(|e| file_err(format!("cannot read: {e}")))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(file_err(
            "holds no PEM certificate (expected BEGIN CERTIFICATE)".into(),
        ));
    }
    Ok(certs)
}

/// Client config: webpki roots, `SSL_CERT_FILE` when set, and `ca_file` when given.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let env_file = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    for path in env_file.as_deref().into_iter().chain(ca_file) {
        for cert in load_certs(path)? {
            roots.add(cert).map_err(|e| TlsError::File {
                path: path.to_path_buf(),
                what: format!("certificate not usable as a trust anchor: {e}"),
            })?;
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // HTTP/1.1 only: the WebSocket handshake is an HTTP/1.1 upgrade.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Server config from a PEM certificate chain and a PEM private key.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = load_certs(cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::File {
        path: key.to_path_buf(),
        what: format!("no usable PEM private key: {e}"),
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Stateless resumption tickets, so any number of clients reconnect with an
    // abbreviated handshake (the default session cache holds only 256).
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok(Arc::new(config))
}
