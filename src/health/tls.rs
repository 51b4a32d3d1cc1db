//! TLS for `http: { tls: true }` probes, through rustls (ring).
//!
//! The backend's certificate is not verified: a probe asks whether the backend answers, and
//! the backends are addressed by IP, which their certificates rarely name. The handshake's
//! signatures are still checked, so the peer holds the key of the certificate it shows.

use std::sync::{Arc, OnceLock};

use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{self, CryptoProvider};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{ClientConfig, DigitallySignedStruct, Error, SignatureScheme};

use super::Target;
use crate::backend::Address;

#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The one connector all probes share (its session cache included).
fn connector() -> Result<&'static TlsConnector, String> {
    static CONNECTOR: OnceLock<Result<TlsConnector, String>> = OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            let provider = Arc::new(crypto::ring::default_provider());
            let config = ClientConfig::builder_with_provider(Arc::clone(&provider))
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS is not available: {e}"))?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth();
            Ok(TlsConnector::from(Arc::new(config)))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Opens a TLS connection to `target`; `host` (a `Host` header value) names the server (SNI)
/// when it is a DNS name, else the backend's address does (no SNI for an IP).
pub async fn connect(
    target: &Target,
    host: Option<&str>,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let connector = connector()?;
    let from_host = host
        .map(|h| h.rsplit_once(':').map_or(h, |(name, _)| name))
        .and_then(|h| ServerName::try_from(h.to_string()).ok());
    let name = match (from_host, &target.address) {
        (Some(name), _) => name,
        (None, Address::Ip(ip)) => ServerName::IpAddress((*ip).into()),
        (None, Address::Host(h)) => ServerName::try_from(h.clone())
            .map_err(|_| format!("`{h}` is not a name TLS can use"))?,
    };
    let stream = target
        .connect()
        .await
        .map_err(|e| format!("connect failed: {e}"))?;
    connector
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS handshake failed: {e}"))
}
