//! `server.tls`: the certificate chain and key, read from PEM files at start and on SIGHUP, as a
//! rustls acceptor (ring provider, TLS 1.2 and 1.3, HTTP/1.1 by ALPN).

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use super::{ServerError, TlsConfig};

/// A PEM file bigger than this is a mistake (a chain is a few KB).
const MAX_PEM_FILE: u64 = 1024 * 1024;

impl TlsConfig {
    /// Reads both files and builds the acceptor; the error names the file at fault.
    pub fn load(&self) -> Result<TlsAcceptor, ServerError> {
        let cert_pem = read_pem(&self.cert_file)?;
        let key_pem = read_pem(&self.key_file)?;
        let fail = |path: &Path, reason: String| ServerError::Tls {
            path: path.to_path_buf(),
            reason,
        };
        let certs = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail(&self.cert_file, pem_reason(e, "certificate")))?;
        if certs.is_empty() {
            return Err(fail(
                &self.cert_file,
                "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| fail(&self.key_file, pem_reason(e, "private key")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| fail(&self.cert_file, e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| {
                fail(
                    &self.key_file,
                    format!(
                        "cannot be used with the certificate in {}: {e}",
                        self.cert_file.display()
                    ),
                )
            })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

fn read_pem(path: &Path) -> Result<Vec<u8>, ServerError> {
    let fail = |reason: String| ServerError::Tls {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| fail(format!("cannot be read: {e}")))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_FILE)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot be read: {e}")))?;
    Ok(bytes)
}

fn pem_reason(e: pem::Error, what: &str) -> String {
    match e {
        pem::Error::NoItemsFound => format!("holds no PEM {what}"),
        e => format!("is not a valid PEM {what}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> TlsConfig {
        TlsConfig {
            cert_file: dir.join("cert.pem"),
            key_file: dir.join("key.pem"),
        }
    }

    #[test]
    fn each_bad_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path());
        let e = c.load().err().unwrap().to_string();
        assert!(
            e.contains("cert.pem") && e.contains("cannot be read"),
            "{e}"
        );
        std::fs::write(&c.cert_file, "not pem").unwrap();
        std::fs::write(&c.key_file, "").unwrap();
        let e = c.load().err().unwrap().to_string();
        assert!(
            e.contains("cert.pem") && e.contains("no PEM certificate"),
            "{e}"
        );
    }

    #[test]
    fn a_certificate_loads_with_its_own_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path());
        let one = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(&c.cert_file, one.cert.pem()).unwrap();
        std::fs::write(&c.key_file, one.signing_key.serialize_pem()).unwrap();
        assert!(c.load().is_ok());
        std::fs::write(&c.key_file, other.signing_key.serialize_pem()).unwrap();
        let e = c.load().err().unwrap().to_string();
        assert!(
            e.contains("key.pem") && e.contains("cannot be used with"),
            "{e}"
        );
    }
}
