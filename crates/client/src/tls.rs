//! Where a client connects: [`Endpoint`] (`HOST:PORT` over TCP, or
//! `tls://HOST:PORT`), and which certificate authorities a TLS connection
//! trusts ([`TlsClientOptions`]).

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::ClientError;

/// The certificate authorities a TLS connection trusts.
#[derive(Debug, Clone)]
pub struct TlsClientOptions {
    config: Arc<ClientConfig>,
}

impl TlsClientOptions {
    /// The operating system's certificate authorities (`rustls-native-certs`;
    /// on Debian, the `ca-certificates` package): what a `tls://` address
    /// trusts without `--ca`. A system with none readable falls back to the
    /// public web's authorities built into sigil (Mozilla's set, `webpki-roots`).
    pub fn public_roots() -> Result<Self, ClientError> {
        let mut roots = RootCertStore::empty();
        // Unreadable or malformed system certificates are skipped, as browsers do.
        let system = rustls_native_certs::load_native_certs();
        let (added, _ignored) = roots.add_parsable_certificates(system.certs);
        if added == 0 {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        Self::from_roots(roots)
    }

    /// Trusts only the authorities in the PEM file `path` (a private CA).
    pub fn with_ca_file(path: &Path) -> Result<Self, ClientError> {
        let pem = std::fs::read(path)
            .map_err(|e| ClientError::Tls(format!("cannot read CA file {}: {e}", path.display())))?;
        Self::with_ca_pem(&pem).map_err(|e| ClientError::Tls(format!("CA file {}: {e}", path.display())))
    }

    /// Trusts only the authorities in `pem` (one or more `CERTIFICATE` sections).
    pub fn with_ca_pem(pem: &[u8]) -> Result<Self, ClientError> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ClientError::Tls(format!("not valid PEM: {e}")))?;
        if certs.is_empty() {
            return Err(ClientError::Tls("no CERTIFICATE section found".into()));
        }
        let mut roots = RootCertStore::empty();
        for cert in certs {
            roots.add(cert).map_err(|e| ClientError::Tls(format!("not a usable CA certificate: {e}")))?;
        }
        Self::from_roots(roots)
    }

    /// A configuration that trusts `roots`, with the `ring` provider.
    fn from_roots(roots: RootCertStore) -> Result<Self, ClientError> {
        let config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self { config: Arc::new(config) })
    }

    /// The rustls configuration.
    pub fn config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }
}

/// Where to connect.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// Plain TCP to `HOST:PORT`.
    Tcp(String),
    /// TLS to `addr` (`HOST:PORT`), checking the certificate against `server_name`.
    Tls {
        /// `HOST:PORT` to connect to.
        addr: String,
        /// The name (or IP address) the server's certificate must be for.
        server_name: ServerName<'static>,
        /// The authorities trusted.
        options: TlsClientOptions,
    },
}

impl Endpoint {
    /// Parses `HOST:PORT` or `tls://HOST:PORT` (`tcp://HOST:PORT` is plain
    /// TCP too; an IPv6 host is written in brackets). `ca`, for a `tls://`
    /// address only, is a PEM file of the authorities to trust instead of
    /// the public web's.
    pub fn parse(addr: &str, ca: Option<&Path>) -> Result<Endpoint, ClientError> {
        let bad = |why: &str| ClientError::Address(format!("{addr:?}: {why}"));
        let (scheme, rest) = match addr.split_once("://") {
            Some((scheme, rest)) => (Some(scheme), rest),
            None => (None, addr),
        };
        let (host, port) = rest.rsplit_once(':').ok_or_else(|| bad("expected HOST:PORT"))?;
        if port.parse::<u16>().is_err() {
            return Err(bad("the port is not a number from 0 to 65535"));
        }
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        if host.is_empty() {
            return Err(bad("the host is missing"));
        }
        match scheme {
            None | Some("tcp") => match ca {
                None => Ok(Endpoint::Tcp(rest.to_owned())),
                Some(_) => Err(bad("a CA file is only for tls:// addresses")),
            },
            Some("tls") => {
                let server_name = ServerName::try_from(host.to_owned())
                    .map_err(|_| bad("the host is not a valid DNS name or IP address"))?;
                let options = match ca {
                    Some(path) => TlsClientOptions::with_ca_file(path)?,
                    None => TlsClientOptions::public_roots()?,
                };
                Ok(Endpoint::Tls { addr: rest.to_owned(), server_name, options })
            }
            Some(other) => Err(bad(&format!("unknown scheme {other}://: use tls:// or HOST:PORT"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse() {
        assert!(matches!(Endpoint::parse("127.0.0.1:7070", None), Ok(Endpoint::Tcp(a)) if a == "127.0.0.1:7070"));
        assert!(matches!(Endpoint::parse("tcp://h:1", None), Ok(Endpoint::Tcp(a)) if a == "h:1"));
        match Endpoint::parse("tls://localhost:7443", None) {
            Ok(Endpoint::Tls { addr, server_name, .. }) => {
                assert_eq!(addr, "localhost:7443");
                assert_eq!(server_name.to_str(), "localhost");
            }
            other => panic!("{other:?}"),
        }
        match Endpoint::parse("tls://[::1]:7443", None) {
            Ok(Endpoint::Tls { addr, server_name, .. }) => {
                assert_eq!(addr, "[::1]:7443");
                assert!(matches!(server_name, ServerName::IpAddress(_)));
            }
            other => panic!("{other:?}"),
        }
        for bad in ["tls://localhost", "tls://:7443", "tls://h:99999", "http://h:1", "h"] {
            let e = Endpoint::parse(bad, None).expect_err(bad);
            assert!(e.to_string().contains(bad), "{e}");
        }
        let e = Endpoint::parse("h:1", Some(Path::new("ca.pem"))).expect_err("--ca without tls");
        assert!(e.to_string().contains("tls://"), "{e}");
    }

    #[test]
    fn a_bad_ca_file_is_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("nope.pem");
        let e = Endpoint::parse("tls://h:1", Some(&missing)).expect_err("missing CA");
        assert!(e.to_string().contains("nope.pem"), "{e}");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "hello").expect("write");
        let e = Endpoint::parse("tls://h:1", Some(&garbage)).expect_err("no PEM");
        assert!(e.to_string().contains("garbage.pem") && e.to_string().contains("no CERTIFICATE"), "{e}");
    }
}
