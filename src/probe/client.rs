//! The rustls client a probe uses: a fresh configuration per probe (no resumption), and a
//! verifier that accepts any certificate but still checks the handshake signature. An
//! [`Offer`] narrows both: the versions and TLS 1.2 cipher suites through the crypto
//! provider, the signature schemes (what the client sends as `signature_algorithms`) through
//! the verifier's `supported_verify_schemes`.

use std::sync::Arc;

use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::version::{TLS12, TLS13};
use rustls::{
    ClientConfig, DigitallySignedStruct, PeerMisbehaved, SignatureAlgorithm, SignatureScheme,
    SupportedCipherSuite, SupportedProtocolVersion,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::{Offer, TlsVersion};
use crate::material::KeyKind;

/// A fresh config per probe, with resumption off: a resumed session carries the certificate
/// of the session it resumes, which after a reload is the OLD one.
pub(super) fn client_config(send_sni: bool, offer: Offer) -> Result<Arc<ClientConfig>, String> {
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(kind) = offer.key {
        provider
            .cipher_suites
            .retain(|suite| suite_signs_with(*suite, kind));
    }
    let algorithms = provider.signature_verification_algorithms;
    let schemes = offered_schemes(&algorithms, offer.key);
    let versions: &[&SupportedProtocolVersion] = match offer.version {
        None => rustls::DEFAULT_VERSIONS,
        Some(TlsVersion::Tls12) => &[&TLS12],
        Some(TlsVersion::Tls13) => &[&TLS13],
    };
    let verifier = AcceptAnyCertificate {
        algorithms,
        schemes,
    };
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.enable_sni = send_sni;
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// The signature schemes the client offers: those it can verify, of one kind of key or all.
fn offered_schemes(
    algorithms: &WebPkiSupportedAlgorithms,
    key: Option<KeyKind>,
) -> Vec<SignatureScheme> {
    let mut schemes = algorithms.supported_schemes();
    if let Some(kind) = key {
        schemes.retain(|scheme| scheme_kind(*scheme) == Some(kind));
    }
    schemes
}

/// Which kind of key signs with `scheme`; `None` for schemes of other kinds (Ed448, ML-DSA…).
fn scheme_kind(scheme: SignatureScheme) -> Option<KeyKind> {
    use SignatureScheme as S;
    match scheme {
        S::RSA_PKCS1_SHA1
        | S::RSA_PKCS1_SHA256
        | S::RSA_PKCS1_SHA384
        | S::RSA_PKCS1_SHA512
        | S::RSA_PSS_SHA256
        | S::RSA_PSS_SHA384
        | S::RSA_PSS_SHA512 => Some(KeyKind::Rsa),
        S::ECDSA_SHA1_Legacy
        | S::ECDSA_NISTP256_SHA256
        | S::ECDSA_NISTP384_SHA384
        | S::ECDSA_NISTP521_SHA512 => Some(KeyKind::Ecdsa),
        S::ED25519 => Some(KeyKind::Ed25519),
        _ => None,
    }
}

/// Whether a server can use `suite` with a certificate whose key is of `kind`: every TLS 1.3
/// suite; in TLS 1.2, `ECDHE_RSA_*` for RSA and `ECDHE_ECDSA_*` for ECDSA and Ed25519.
fn suite_signs_with(suite: SupportedCipherSuite, kind: KeyKind) -> bool {
    suite.usable_for_signature_algorithm(match kind {
        KeyKind::Rsa => SignatureAlgorithm::RSA,
        KeyKind::Ecdsa => SignatureAlgorithm::ECDSA,
        KeyKind::Ed25519 => SignatureAlgorithm::ED25519,
    })
}

/// Accepts any certificate (we compare fingerprints, we do not trust), but still checks the
/// handshake signature, so the server must hold the private key of the certificate it shows.
///
/// `schemes` is what the client offers; a signature with any other scheme is refused, so a
/// restricted [`Offer`] cannot pass on a certificate of another kind.
#[derive(Debug)]
struct AcceptAnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
    schemes: Vec<SignatureScheme>,
}

impl AcceptAnyCertificate {
    /// The handshake signature: made with a scheme the client offered, and valid for `cert`
    /// (ring, or [`crate::large_rsa`] for RSA keys ring does not take).
    fn verify_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
        tls13: bool,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.offered(dss.scheme)?;
        let verified = if tls13 {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
        } else {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
        };
        verified.or_else(|e| large_rsa_signature(message, cert, dss, tls13).ok_or(e))
    }

    fn offered(&self, scheme: SignatureScheme) -> Result<(), rustls::Error> {
        if self.schemes.contains(&scheme) {
            Ok(())
        } else {
            Err(PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme.into())
        }
    }
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
        self.verify_signature(message, cert, dss, false)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_signature(message, cert, dss, true)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
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

#[cfg(test)]
mod tests {
    use rustls::CipherSuite;

    use super::*;

    fn algorithms() -> WebPkiSupportedAlgorithms {
        rustls::crypto::ring::default_provider().signature_verification_algorithms
    }

    #[test]
    fn a_key_kind_offers_only_its_own_signature_schemes() {
        use SignatureScheme as S;
        let all = offered_schemes(&algorithms(), None);
        assert_eq!(all, algorithms().supported_schemes());
        let rsa = offered_schemes(&algorithms(), Some(KeyKind::Rsa));
        assert!(rsa.contains(&S::RSA_PSS_SHA256) && rsa.contains(&S::RSA_PKCS1_SHA256));
        assert!(rsa.iter().all(|s| scheme_kind(*s) == Some(KeyKind::Rsa)));
        let ecdsa = offered_schemes(&algorithms(), Some(KeyKind::Ecdsa));
        assert!(
            ecdsa.contains(&S::ECDSA_NISTP256_SHA256) && ecdsa.contains(&S::ECDSA_NISTP384_SHA384)
        );
        assert!(
            ecdsa
                .iter()
                .all(|s| scheme_kind(*s) == Some(KeyKind::Ecdsa))
        );
        assert_eq!(
            offered_schemes(&algorithms(), Some(KeyKind::Ed25519)),
            [S::ED25519]
        );
        // Together the three kinds cover everything the probe verifies.
        assert_eq!(rsa.len() + ecdsa.len() + 1, all.len());
    }

    fn suites(offer: Offer) -> Vec<CipherSuite> {
        let config = client_config(true, offer).unwrap();
        config
            .crypto_provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect()
    }

    #[test]
    fn a_key_kind_keeps_every_tls13_suite_and_its_own_tls12_suites() {
        let names =
            |offer| -> Vec<String> { suites(offer).iter().map(|s| format!("{s:?}")).collect() };
        let rsa = names(Offer::key(KeyKind::Rsa));
        assert!(
            rsa.iter()
                .all(|s| s.starts_with("TLS13_") || s.starts_with("TLS_ECDHE_RSA_"))
        );
        assert!(rsa.iter().any(|s| s.starts_with("TLS_ECDHE_RSA_")));
        assert_eq!(rsa.iter().filter(|s| s.starts_with("TLS13_")).count(), 3);
        for kind in [KeyKind::Ecdsa, KeyKind::Ed25519] {
            let ecdsa = names(Offer::key(kind));
            assert!(
                ecdsa
                    .iter()
                    .all(|s| s.starts_with("TLS13_") || s.starts_with("TLS_ECDHE_ECDSA_"))
            );
            assert!(ecdsa.iter().any(|s| s.starts_with("TLS_ECDHE_ECDSA_")));
        }
        assert_eq!(
            suites(Offer::default()),
            rustls::crypto::ring::default_provider()
                .cipher_suites
                .iter()
                .map(|s| s.suite())
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_signature_with_a_scheme_not_offered_is_refused() {
        let verifier = AcceptAnyCertificate {
            algorithms: algorithms(),
            schemes: offered_schemes(&algorithms(), Some(KeyKind::Ecdsa)),
        };
        assert!(
            verifier
                .offered(SignatureScheme::ECDSA_NISTP256_SHA256)
                .is_ok()
        );
        assert_eq!(
            verifier
                .offered(SignatureScheme::RSA_PSS_SHA256)
                .unwrap_err(),
            rustls::Error::PeerMisbehaved(PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme)
        );
    }
}
