//! TLS on the listener (rustls with the ring provider): PEM certificate chain and key files,
//! HTTP/2 or HTTP/1.1 chosen by ALPN, optional client certificates (mTLS) checked against a CA
//! bundle, and a reload of all three files without dropping a connection.
//!
//! The rustls configuration in force sits behind a lock; every new connection takes the
//! current one, so a reload ([`Tls::reload`], SIGHUP in `facegate serve`) changes what new
//! handshakes see while established connections keep their sessions. A reload that fails
//! (a missing file, a key that does not match) keeps the configuration in force.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;
use crate::{Error, Result};

/// The TLS state of a listener: where the files are, and the configuration built from them.
#[derive(Debug)]
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    current: RwLock<Arc<ServerConfig>>,
}

/// Reads a file for TLS, naming it in the error.
fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| Error::InvalidArgument(format!("TLS {what} {}: {e}", path.display())))
}

/// The certificates of a PEM file (at least one).
fn certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let pem = read(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::InvalidArgument(format!("TLS {what} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "TLS {what} {}: no CERTIFICATE block",
            path.display()
        )));
    }
    Ok(certs)
}

/// Builds the rustls configuration from the files (TLS 1.3 and 1.2, ALPN h2 then http/1.1).
fn build(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<ServerConfig> {
    let chain = certs(cert, "certificate")?;
    let key_pem = read(key, "key")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| Error::InvalidArgument(format!("TLS key {}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::InvalidArgument(format!("TLS: {e}")))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in certs(ca, "client CA bundle")? {
                roots.add(c).map_err(|e| {
                    Error::InvalidArgument(format!("TLS client CA bundle {}: {e}", ca.display()))
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| Error::InvalidArgument(format!("TLS client CA bundle: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut cfg = builder.with_single_cert(chain, key).map_err(|e| {
        Error::InvalidArgument(format!("TLS certificate {} and key: {e}", cert.display()))
    })?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

impl Tls {
    /// Loads the files of `cfg`; `None` when TLS is off. Fails naming the file that is
    /// missing or unusable.
    pub fn from_config(cfg: &TlsConfig) -> Result<Option<Arc<Tls>>> {
        cfg.validate()?;
        let (Some(cert), Some(key)) = (&cfg.cert, &cfg.key) else {
            return Ok(None);
        };
        let built = build(cert, key, cfg.client_ca.as_deref())?;
        Ok(Some(Arc::new(Tls {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: cfg.client_ca.clone(),
            current: RwLock::new(Arc::new(built)),
        })))
    }

    /// The acceptor for a new connection, with the configuration in force now.
    pub fn acceptor(&self) -> TlsAcceptor {
        let cfg = match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        TlsAcceptor::from(cfg)
    }

    /// Reads the certificate, key and CA files again and puts them in force for new
    /// connections; on failure the configuration in force stays, and the error says why.
    pub fn reload(&self) -> Result<()> {
        let built = build(&self.cert, &self.key, self.client_ca.as_deref())?;
        match self.current.write() {
            Ok(mut c) => *c = Arc::new(built),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(built),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_and_key_go_together_and_files_are_named() {
        let p = |s: &str| Some(PathBuf::from(s));
        assert!(TlsConfig::default().validate().is_ok());
        assert!(!TlsConfig::default().enabled());
        let e = TlsConfig {
            cert: p("a.pem"),
            ..TlsConfig::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("cert and key go together"), "{e}");
        let e = TlsConfig {
            client_ca: p("ca.pem"),
            ..TlsConfig::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("client_ca needs cert and key"), "{e}");
        let e = Tls::from_config(&TlsConfig {
            cert: p("/nonexistent/cert.pem"),
            key: p("/nonexistent/key.pem"),
            client_ca: None,
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("/nonexistent/cert.pem"), "{e}");
    }
}
