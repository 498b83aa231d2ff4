//! Private keys and public keys: the `key` input (exactly one unencrypted PKCS#8, PKCS#1 or
//! SEC1 block, kept as canonical PEM in a [`Secret`]), whether it belongs to the leaf (rustls'
//! SPKI comparison, else a proof of possession), and the public-key forms the engine compares
//! with what a target holds.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rustls::crypto::ring as ring_provider;
use rustls::sign::{CertifiedKey, SigningKey};
use rustls::{InconsistentKeys, SignatureAlgorithm, SignatureScheme};
use rustls_pki_types::pem::{PemObject as _, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::asn1_rs::BitString;
use x509_parser::oid_registry;
use x509_parser::x509::AlgorithmIdentifier;

use super::cert::parse_x509;
use super::pem::{PemBlock, encode_pem, is_key_label, scan_pem};
use super::{KeyKind, Material};
use crate::secret::Secret;

/// A parsed private key.
pub(super) struct ParsedKey {
    pub(super) kind: KeyKind,
    /// Canonical PEM of the key block.
    pub(super) pem: Secret,
    pub(super) signing: KeyCheck,
}

/// How a key is matched with its certificate.
pub(super) enum KeyCheck {
    /// Loaded by rustls' ring provider.
    Ring(Arc<dyn SigningKey>),
    /// An RSA key above ring's 4096 bits, validated by [`crate::large_rsa`].
    LargeRsa(crate::large_rsa::LargeRsaKey),
}

const ENCRYPTED_KEY: &str = "the private key is encrypted; certctl needs an unencrypted key: decrypt it (`openssl pkey -in KEY -out KEY.plain`) or name a `key_command` that prints the decrypted key";

/// A key input: exactly one private key block (OpenSSL's `EC PARAMETERS` block is tolerated).
pub(super) fn parse_key(bytes: &[u8]) -> Result<ParsedKey, String> {
    let blocks = scan_pem(bytes).map_err(|e| {
        if e.starts_with("is binary DER") {
            format!("{e}: convert it with `openssl pkey -inform der -in KEY -out KEY.pem`")
        } else {
            e
        }
    })?;
    let (index, block) = the_key_block(bytes, &blocks)?;
    let der = block.decode(index + 1)?;
    let section = SectionKind::try_from(block.label.as_bytes())
        .map_err(|()| "unknown PEM label".to_string())?;
    let key_der = PrivateKeyDer::from_pem(section, der.to_vec())
        .ok_or_else(|| format!("`-----BEGIN {}-----` is not a private key", block.label))?;
    let (kind, signing) = load_key(key_der, block, &der)?;
    let mut pem = Vec::new();
    encode_pem(&block.label, &der, &mut pem);
    Ok(ParsedKey {
        kind,
        pem: Secret::new(pem),
        signing,
    })
}

/// Loads a key with ring, else (an RSA key ring refuses for its size) with
/// [`crate::large_rsa`]. Errors name the block.
fn load_key(
    key_der: PrivateKeyDer<'static>,
    block: &PemBlock,
    der: &[u8],
) -> Result<(KeyKind, KeyCheck), String> {
    let signing = match ring_provider::default_provider()
        .key_provider
        .load_private_key(key_der)
    {
        Ok(signing) => signing,
        Err(e) => {
            let at = format!("`-----BEGIN {}-----` at line {}", block.label, block.line);
            return match crate::large_rsa::load(&block.label, der) {
                crate::large_rsa::Loaded::Large(key) => Ok((KeyKind::Rsa, KeyCheck::LargeRsa(key))),
                crate::large_rsa::Loaded::OutOfRange(why) => Err(format!("{why} ({at})")),
                _ => Err(format!(
                    "the private key ({at}) cannot be loaded ({e}); certctl supports RSA (2048 to {} bits), ECDSA (P-256, P-384) and Ed25519",
                    crate::limits::MAX_RSA_BITS
                )),
            };
        }
    };
    let kind = match signing.algorithm() {
        SignatureAlgorithm::RSA => KeyKind::Rsa,
        SignatureAlgorithm::ECDSA => KeyKind::Ecdsa,
        SignatureAlgorithm::ED25519 => KeyKind::Ed25519,
        other => return Err(format!("unsupported private key algorithm {other:?}")),
    };
    Ok((kind, KeyCheck::Ring(signing)))
}

/// The one private key block of a key input (with its 1-based position), or why there is
/// not exactly one usable: encrypted, OpenSSH's format, an unsupported type, a certificate or
/// anything else beside it.
fn the_key_block<'a>(
    bytes: &[u8],
    blocks: &'a [PemBlock],
) -> Result<(usize, &'a PemBlock), String> {
    let mut keys = Vec::new();
    let mut certificates = 0;
    for (i, block) in blocks.iter().enumerate() {
        let at = format!("`-----BEGIN {}-----` at line {}", block.label, block.line);
        match block.label.as_str() {
            "ENCRYPTED PRIVATE KEY" => return Err(format!("{ENCRYPTED_KEY} ({at})")),
            "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY" if block.encrypted => {
                return Err(format!("{ENCRYPTED_KEY} ({at}, Proc-Type ENCRYPTED)"));
            }
            "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY" => keys.push((i, block)),
            "CERTIFICATE" => certificates += 1,
            "EC PARAMETERS" => {}
            "OPENSSH PRIVATE KEY" => {
                return Err(format!(
                    "holds an OpenSSH private key ({at}), not a TLS private key"
                ));
            }
            label if is_key_label(label) => {
                return Err(format!(
                    "holds an unsupported private key type ({at}); certctl supports RSA, ECDSA (P-256, P-384) and Ed25519"
                ));
            }
            _ => {
                return Err(format!(
                    "holds a `{}` PEM block at line {}; expected only a private key",
                    block.label, block.line
                ));
            }
        }
    }
    if certificates > 0 {
        return Err(if keys.is_empty() {
            "holds a certificate, not a private key".to_string()
        } else {
            "holds a certificate as well as the private key; give the key alone (certificates go in `cert` and `chain`)"
                .to_string()
        });
    }
    match keys.as_slice() {
        [] if blocks.is_empty() && bytes.iter().all(u8::is_ascii_whitespace) => {
            Err("is empty; expected a PEM private key".into())
        }
        [] => Err("no PEM private key found (expected `-----BEGIN PRIVATE KEY-----`)".into()),
        [one] => Ok(*one),
        more => Err(format!(
            "holds {} private keys; expected exactly one",
            more.len()
        )),
    }
}

impl Material {
    /// The key belongs to the leaf: rustls compares the SubjectPublicKeyInfo the key derives with
    /// the certificate's. When the provider cannot derive one (`Unknown`), we prove possession
    /// instead: sign with the key, verify with the certificate's public key.
    pub(super) fn check_key(&self) -> Result<(), String> {
        let key = match parse_key(self.key_pem.expose())
            .map_err(|e| format!("{}: {e}", self.key_source))?
            .signing
        {
            KeyCheck::Ring(key) => key,
            KeyCheck::LargeRsa(key) if key.matches(&self.leaf.der) => return Ok(()),
            KeyCheck::LargeRsa(_) => return Err(self.key_mismatch()),
        };
        let certified = CertifiedKey::new(
            vec![CertificateDer::from(self.leaf.der.clone())],
            key.clone(),
        );
        let matches = match certified.keys_match() {
            Ok(()) => true,
            Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => false,
            Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {
                key_signs_for(key.as_ref(), &self.leaf.der).map_err(|e| {
                    format!(
                        "{}: could not compare the key with {}: {e}",
                        self.key_source,
                        self.leaf_label()
                    )
                })?
            }
            Err(e) => {
                return Err(format!(
                    "{}: could not compare the key with {}: {e}",
                    self.key_source,
                    self.leaf_label()
                ));
            }
        };
        if matches {
            return Ok(());
        }
        Err(self.key_mismatch())
    }

    /// The key does not belong to the leaf: say which kinds differ, or that it is another key.
    fn key_mismatch(&self) -> String {
        match spki_kind(&self.leaf.der) {
            Some(cert_kind) if cert_kind != self.key_kind => format!(
                "{}: the private key is {} but the certificate {} has an {cert_kind} public key",
                self.key_source,
                self.key_kind,
                self.leaf_label()
            ),
            _ => format!(
                "{}: the private key does not belong to the certificate {} (SHA256 {})",
                self.key_source,
                self.leaf_label(),
                self.leaf.fingerprint
            ),
        }
    }
}

/// The kind of public key in a certificate.
fn spki_kind(der: &[u8]) -> Option<KeyKind> {
    let cert = parse_x509(der).ok()?;
    let oid = &cert.public_key().algorithm.algorithm;
    if *oid == oid_registry::OID_PKCS1_RSAENCRYPTION {
        Some(KeyKind::Rsa)
    } else if *oid == oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY {
        Some(KeyKind::Ecdsa)
    } else if *oid == oid_registry::OID_SIG_ED25519 {
        Some(KeyKind::Ed25519)
    } else {
        None
    }
}

/// Proof of possession: does a signature made by `key` verify with the certificate's public key?
fn key_signs_for(key: &dyn SigningKey, cert_der: &[u8]) -> Result<bool, String> {
    let offered = [
        SignatureScheme::ED25519,
        SignatureScheme::ECDSA_NISTP256_SHA256,
        SignatureScheme::ECDSA_NISTP384_SHA384,
        SignatureScheme::RSA_PKCS1_SHA256,
    ];
    let signer = key
        .choose_scheme(&offered)
        .ok_or("the key cannot sign with RSA, ECDSA or Ed25519")?;
    let algorithm = match signer.scheme() {
        SignatureScheme::ED25519 => oid_registry::OID_SIG_ED25519,
        SignatureScheme::ECDSA_NISTP256_SHA256 => oid_registry::OID_SIG_ECDSA_WITH_SHA256,
        SignatureScheme::ECDSA_NISTP384_SHA384 => oid_registry::OID_SIG_ECDSA_WITH_SHA384,
        _ => oid_registry::OID_PKCS1_SHA256WITHRSA,
    };
    let message = b"certctl: does this key belong to this certificate?";
    let signature = signer
        .sign(message)
        .map_err(|e| format!("signing failed: {e}"))?;
    let cert = parse_x509(cert_der)?;
    let verified = x509_parser::verify::verify_signature(
        cert.public_key(),
        &AlgorithmIdentifier::new(algorithm, None),
        &BitString::new(0, &signature),
        message,
    );
    Ok(verified.is_ok())
}

/// The DER SubjectPublicKeyInfo of a certificate (what a matching private key's public half
/// is), or `None` when `der` is not a certificate.
pub fn spki_der(der: &[u8]) -> Option<Vec<u8>> {
    parse_x509(der)
        .ok()
        .map(|c| c.tbs_certificate.subject_pki.raw.to_vec())
}

/// The DER of a `-----BEGIN PUBLIC KEY-----` PEM block (as `openssl pkey -pubout` prints it),
/// or `None` when `pem` is not one.
pub fn public_key_der(pem: &str) -> Option<Vec<u8>> {
    let body = pem
        .trim()
        .strip_prefix("-----BEGIN PUBLIC KEY-----")?
        .strip_suffix("-----END PUBLIC KEY-----")?;
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    BASE64.decode(b64).ok()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    fn ring_key(key: &ParsedKey) -> &dyn SigningKey {
        match &key.signing {
            KeyCheck::Ring(signing) => signing.as_ref(),
            KeyCheck::LargeRsa(_) => panic!("a key ring loads"),
        }
    }

    pub(in crate::material) fn self_signed(
        alg: &'static rcgen::SignatureAlgorithm,
    ) -> (Vec<u8>, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.test".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.der().to_vec(), key)
    }

    /// The proof-of-possession fallback (used when rustls cannot derive a public key) agrees
    /// with the SPKI comparison, including across key types.
    #[test]
    fn possession_proof_matches_and_rejects() {
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ED25519,
        ] {
            let (der, key) = self_signed(alg);
            let (other_der, _) = self_signed(alg);
            let pem = key.serialize_pem();
            let parsed = parse_key(pem.as_bytes()).unwrap();
            assert!(key_signs_for(ring_key(&parsed), &der).unwrap());
            assert!(!key_signs_for(ring_key(&parsed), &other_der).unwrap());
        }
        let (ec_der, _) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
        let ed = parse_key(
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
                .unwrap()
                .serialize_pem()
                .as_bytes(),
        )
        .unwrap();
        assert!(!key_signs_for(ring_key(&ed), &ec_der).unwrap());
    }

    #[test]
    fn key_input_rejections() {
        let err = parse_key(
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .err()
        .unwrap();
        assert!(
            err.contains("encrypted") && err.contains("key_command"),
            "{err}"
        );
        let err = parse_key(b"hello\n").err().unwrap();
        assert!(err.contains("no PEM private key"), "{err}");
        let err = parse_key(b"").err().unwrap();
        assert!(err.contains("empty"), "{err}");
        let (der, _) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
        let mut pem = Vec::new();
        encode_pem("CERTIFICATE", &der, &mut pem);
        let err = parse_key(&pem).err().unwrap();
        assert!(
            err.contains("holds a certificate, not a private key"),
            "{err}"
        );
        let err = super::super::cert::parse_cert_input(
            b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
        )
        .err()
        .unwrap();
        assert!(err.contains("non-certificate"), "{err}");
    }
}
