//! TLS for the frame listener (and, later, any listener that wants the same
//! certificates): the certificate and key files, loaded into a rustls
//! `ServerConfig` that [`TlsReloader::reload`] replaces without touching the
//! sessions already running.
//!
//! This module reads PEM files and performs handshakes; it must not apply
//! connection limits or know anything about sessions. `lib.rs` admits a
//! connection first and then hands its TCP stream to [`TlsReloader::accept`],
//! inside the connection's own task.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
pub use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Why a certificate or key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read TLS {what} file {}: {source}", path.display())]
    Read {
        /// "certificate" or "key".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file is not PEM, or holds nothing usable.
    #[error("TLS {what} file {}: {reason}", path.display())]
    Pem {
        /// "certificate" or "key".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the pair (a key that does not match the certificate, an
    /// unsupported key type).
    #[error("TLS certificate {} with key {}: {source}", cert.display(), key.display())]
    Config {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why.
        source: rustls::Error,
    },
}

/// The certificate chain and key files, and the rustls configuration made
/// from them. Cheap to clone: clones share the configuration, so a
/// [`TlsReloader::reload`] on one is seen by every clone, and every handshake
/// after it uses the new certificate (sessions already running keep theirs).
#[derive(Clone)]
pub struct TlsReloader {
    inner: Arc<Inner>,
}

struct Inner {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<ServerConfig>>,
}

impl std::fmt::Debug for TlsReloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsReloader").field("cert", &self.inner.cert).field("key", &self.inner.key).finish()
    }
}

impl TlsReloader {
    /// Loads `cert` (a PEM chain, leaf first) and `key` (a PEM private key:
    /// PKCS#8, PKCS#1 or SEC1).
    pub fn load(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Result<Self, TlsError> {
        let (cert, key) = (cert.into(), key.into());
        let config = server_config(&cert, &key)?;
        Ok(Self { inner: Arc::new(Inner { cert, key, current: RwLock::new(Arc::new(config)) }) })
    }

    /// Reads the files again. On success new handshakes use the new
    /// certificate; on failure the old one stays in use and the error says why.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = Arc::new(server_config(&self.inner.cert, &self.inner.key)?);
        *self.inner.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = config;
        Ok(())
    }

    /// The configuration new handshakes use now. A listener that needs
    /// something of its own (ALPN for HTTPS, say) clones it and changes that.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.inner.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// An acceptor with the current configuration.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config())
    }

    /// The certificate file.
    pub fn cert_path(&self) -> &Path {
        &self.inner.cert
    }

    /// The key file.
    pub fn key_path(&self) -> &Path {
        &self.inner.key
    }

    /// Performs the server side of a handshake on `stream` with the current
    /// configuration, failing with `TimedOut` after `timeout`: a peer that
    /// says nothing cannot hold a connection slot for longer.
    pub async fn accept<IO>(&self, stream: IO, timeout: Duration) -> io::Result<TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        match tokio::time::timeout(timeout, self.acceptor().accept(stream)).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake took too long")),
        }
    }
}

/// The rustls provider: `ring` (built without cmake), named explicitly so a
/// second provider enabled elsewhere in a build cannot make this ambiguous.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration from a PEM chain and key, with no client
/// authentication (the protocol authenticates accounts itself, with `CNN`).
fn server_config(cert_path: &Path, key_path: &Path) -> Result<ServerConfig, TlsError> {
    let chain = read_chain(cert_path)?;
    let key = read_key(key_path)?;
    let config_error = |source| TlsError::Config { cert: cert_path.to_owned(), key: key_path.to_owned(), source };
    ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(config_error)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(config_error)
}

fn read_pem(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { what, path: path.to_owned(), source })
}

fn pem_error(what: &'static str, path: &Path, reason: impl Into<String>) -> TlsError {
    TlsError::Pem { what, path: path.to_owned(), reason: reason.into() }
}

/// Every `CERTIFICATE` section of the file, in order.
fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_pem("certificate", path)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, pem::Error>>()
        .map_err(|e| pem_error("certificate", path, format!("not valid PEM: {e}")))?;
    if chain.is_empty() {
        return Err(pem_error("certificate", path, "no CERTIFICATE section found"));
    }
    Ok(chain)
}

/// The first private key section of the file.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_pem("key", path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => pem_error("key", path, "no PRIVATE KEY section found"),
        e => pem_error("key", path, format!("not valid PEM: {e}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, content).expect("write test file");
        path
    }

    #[test]
    fn bad_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("missing.pem");
        let garbage = write(dir.path(), "garbage.pem", "hello\n");
        let broken = write(dir.path(), "broken.pem", "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n");

        let e = TlsReloader::load(&missing, &missing).expect_err("missing file");
        assert!(matches!(e, TlsError::Read { what: "certificate", .. }), "{e}");
        assert!(e.to_string().contains("missing.pem"), "{e}");

        let e = TlsReloader::load(&garbage, &missing).expect_err("no PEM");
        assert!(e.to_string().contains("garbage.pem") && e.to_string().contains("no CERTIFICATE"), "{e}");

        let e = TlsReloader::load(&broken, &missing).expect_err("bad base64");
        assert!(e.to_string().contains("broken.pem") && e.to_string().contains("not valid PEM"), "{e}");
    }
}
