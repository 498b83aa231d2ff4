//! The rustls client a probe uses: a fresh configuration per probe (no resumption), and a
//! verifier that accepts any certificate but still checks the handshake signature.

use std::sync::Arc;

use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// A fresh config per probe, with resumption off: a resumed session carries the certificate
/// of the session it resumes, which after a reload is the OLD one.
pub(super) fn client_config(send_sni: bool) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate { algorithms }))
        .with_no_client_auth();
    config.enable_sni = send_sni;
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// Accepts any certificate (we compare fingerprints, we do not trust), but still checks the
/// handshake signature, so the server must hold the private key of the certificate it shows.
#[derive(Debug)]
struct AcceptAnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
            .or_else(|e| large_rsa_signature(message, cert, dss, false).ok_or(e))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
            .or_else(|e| large_rsa_signature(message, cert, dss, true).ok_or(e))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// ring verifies RSA signatures of keys up to 8192 bits; a server's key of 8193 to 16384 bits
/// is verified by [`crate::large_rsa`] instead. `None` (ring's error stands) otherwise.
fn large_rsa_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    tls13: bool,
) -> Option<HandshakeSignatureValid> {
    crate::large_rsa::verify_handshake(dss.scheme, message, cert, dss.signature(), tls13)
        .ok()
        .map(|()| HandshakeSignatureValid::assertion())
}
