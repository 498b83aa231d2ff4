//! RSA keys larger than ring handles: ring loads RSA private keys of 2048 to 4096 bits and
//! verifies RSA signatures of keys up to 8192 bits, while nginx (OpenSSL) serves keys up to
//! [`crate::limits::MAX_RSA_BITS`] (16384). For keys ring refuses, the `rsa` crate (already in
//! the graph for SSH user keys) checks the private key and the handshake signature instead.
//!
//! Owns: loading such a key (the CRT components are validated: `n = p·q`, `d·e ≡ 1`), matching
//! it with a certificate, and verifying one TLS handshake signature made with it. Never signs
//! or decrypts (so the `rsa` crate's timing side channel, RUSTSEC-2023-0071, does not apply).
//! Does not own when these are used: [`crate::material`] and [`crate::probe`] fall back to them
//! only when ring refuses.

use rsa::pkcs1::DecodeRsaPrivateKey as _;
use rsa::pkcs8::DecodePrivateKey as _;
use rsa::sha2::{Digest as _, Sha256, Sha384, Sha512};
use rsa::traits::PublicKeyParts as _;
use rsa::{BoxedUint, Pkcs1v15Sign, Pss, RsaPrivateKey, RsaPublicKey};
use rustls::SignatureScheme;

use crate::limits::{MAX_RSA_BITS, MIN_RSA_BITS};

/// The public half of a private key ring could not load, after the whole key was validated.
#[derive(Clone, PartialEq, Eq)]
pub struct LargeRsaKey {
    /// Big-endian, without leading zeros.
    n: Vec<u8>,
    e: Vec<u8>,
    pub bits: usize,
}

impl std::fmt::Debug for LargeRsaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LargeRsaKey({} bits)", self.bits)
    }
}

/// What a key block is, for a key ring refused.
pub enum Loaded {
    /// Not an RSA key (or not one the `rsa` crate reads): ring's own error stands.
    NotRsa,
    /// An RSA key ring should have loaded (2048 to 4096 bits): ring's own error stands.
    RingSized,
    /// An RSA key outside 2048..=16384 bits: the message says so.
    OutOfRange(String),
    /// A valid RSA key of 4097 to 16384 bits.
    Large(LargeRsaKey),
}

/// Reads a PKCS#8 (`PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`) block ring refused.
pub fn load(label: &str, der: &[u8]) -> Loaded {
    let key = match label {
        "RSA PRIVATE KEY" => RsaPrivateKey::from_pkcs1_der(der),
        "PRIVATE KEY" => RsaPrivateKey::from_pkcs8_der(der).map_err(|_| rsa::pkcs1::Error::Crypto),
        _ => return Loaded::NotRsa,
    };
    let Ok(key) = key else {
        return Loaded::NotRsa;
    };
    let bits = key.n().bit_width() as usize;
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        return Loaded::OutOfRange(format!(
            "the private key is RSA with {bits} bits; certctl supports RSA keys of {MIN_RSA_BITS} to {MAX_RSA_BITS} bits ({})",
            if bits < MIN_RSA_BITS {
                "smaller keys are breakable and refused by current TLS clients"
            } else {
                "OpenSSL refuses larger moduli, so no OpenSSL-based server or client could use it"
            }
        ));
    }
    if bits <= 4096 {
        return Loaded::RingSized;
    }
    Loaded::Large(LargeRsaKey {
        n: key.n_bytes().into_vec(),
        e: key.e_bytes().into_vec(),
        bits,
    })
}

impl LargeRsaKey {
    /// Whether the certificate's public key is this key's public half.
    pub fn matches(&self, cert_der: &[u8]) -> bool {
        cert_rsa_numbers(cert_der).is_some_and(|(n, e)| n == self.n && e == self.e)
    }
}

/// The certificate's RSA modulus and exponent (big-endian, no leading zeros), if RSA.
fn cert_rsa_numbers(cert_der: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    match cert.public_key().parsed().ok()? {
        x509_parser::public_key::PublicKey::RSA(rsa) => Some((
            trimmed(rsa.modulus).to_vec(),
            trimmed(rsa.exponent).to_vec(),
        )),
        _ => None,
    }
}

fn trimmed(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// Verifies a TLS handshake signature made with the private key of `cert_der`, for an RSA key
/// of 8193 to 16384 bits (ring verifies up to 8192). TLS 1.3 allows only RSA-PSS; TLS 1.2 also
/// PKCS#1 v1.5. `Err` for anything else, so ring's verdict stands.
pub fn verify_handshake(
    scheme: SignatureScheme,
    message: &[u8],
    cert_der: &[u8],
    signature: &[u8],
    tls13: bool,
) -> Result<(), String> {
    let (n, e) = cert_rsa_numbers(cert_der).ok_or("not an RSA certificate")?;
    let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
    if bits <= 8192 || bits > MAX_RSA_BITS {
        return Err(format!("an RSA key of {bits} bits is not verified here"));
    }
    verify_rsa(&n, &e, scheme, message, signature, tls13)
}

/// Verifies `signature` over `message` with the RSA public key (`n`, `e`, big-endian).
fn verify_rsa(
    n: &[u8],
    e: &[u8],
    scheme: SignatureScheme,
    message: &[u8],
    signature: &[u8],
    tls13: bool,
) -> Result<(), String> {
    let uint = |bytes: &[u8]| {
        let precision = u32::try_from(bytes.len() * 8).map_err(|e| e.to_string())?;
        BoxedUint::from_be_slice(bytes, precision).map_err(|e| format!("{e:?}"))
    };
    let key = RsaPublicKey::new_with_max_size(uint(n)?, uint(e)?, MAX_RSA_BITS)
        .map_err(|e| e.to_string())?;
    let verified = match scheme {
        SignatureScheme::RSA_PSS_SHA256 => {
            key.verify(Pss::<Sha256>::new(), &Sha256::digest(message), signature)
        }
        SignatureScheme::RSA_PSS_SHA384 => {
            key.verify(Pss::<Sha384>::new(), &Sha384::digest(message), signature)
        }
        SignatureScheme::RSA_PSS_SHA512 => {
            key.verify(Pss::<Sha512>::new(), &Sha512::digest(message), signature)
        }
        SignatureScheme::RSA_PKCS1_SHA256 if !tls13 => key.verify(
            Pkcs1v15Sign::new::<Sha256>(),
            &Sha256::digest(message),
            signature,
        ),
        SignatureScheme::RSA_PKCS1_SHA384 if !tls13 => key.verify(
            Pkcs1v15Sign::new::<Sha384>(),
            &Sha384::digest(message),
            signature,
        ),
        SignatureScheme::RSA_PKCS1_SHA512 if !tls13 => key.verify(
            Pkcs1v15Sign::new::<Sha512>(),
            &Sha512::digest(message),
            signature,
        ),
        other => {
            return Err(format!(
                "{other:?} is not an RSA scheme for this TLS version"
            ));
        }
    };
    verified.map_err(|e| format!("bad signature: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    use rustls::crypto::ring as ring_provider;
    use rustls_pki_types::PrivateKeyDer;
    use rustls_pki_types::pem::PemObject as _;

    /// A key of `bits` from the openssl CLI (ring cannot generate RSA keys), as PKCS#8 DER.
    fn rsa(bits: u32) -> Vec<u8> {
        let out = std::process::Command::new("openssl")
            .args(["genpkey", "-algorithm", "RSA", "-pkeyopt"])
            .arg(format!("rsa_keygen_bits:{bits}"))
            .output()
            .expect("run openssl");
        assert!(out.status.success());
        match PrivateKeyDer::from_pem_slice(&out.stdout).unwrap() {
            PrivateKeyDer::Pkcs8(der) => der.secret_pkcs8_der().to_vec(),
            _ => panic!("openssl genpkey writes PKCS#8"),
        }
    }

    #[test]
    fn handshake_signatures_verify_as_tls_allows() {
        let der = rsa(2048);
        let key = RsaPrivateKey::from_pkcs8_der(&der).unwrap();
        let (n, e) = (key.n_bytes(), key.e_bytes());
        let signer = ring_provider::default_provider()
            .key_provider
            .load_private_key(PrivateKeyDer::try_from(der.clone()).unwrap())
            .unwrap();
        let message = b"TLS 1.3, server CertificateVerify";
        for scheme in [
            SignatureScheme::RSA_PSS_SHA256,
            SignatureScheme::RSA_PSS_SHA384,
            SignatureScheme::RSA_PSS_SHA512,
            SignatureScheme::RSA_PKCS1_SHA256,
            SignatureScheme::RSA_PKCS1_SHA384,
            SignatureScheme::RSA_PKCS1_SHA512,
        ] {
            let sig = signer
                .choose_scheme(&[scheme])
                .unwrap()
                .sign(message)
                .unwrap();
            let pss = format!("{scheme:?}").contains("PSS");
            assert!(
                verify_rsa(&n, &e, scheme, message, &sig, false).is_ok(),
                "{scheme:?}"
            );
            // TLS 1.3 allows only RSA-PSS.
            assert_eq!(verify_rsa(&n, &e, scheme, message, &sig, true).is_ok(), pss);
            assert!(verify_rsa(&n, &e, scheme, b"another message", &sig, false).is_err());
        }
        // Keys ring handles are never verified here (ring's verdict stands).
        let err = verify_handshake(
            SignatureScheme::RSA_PSS_SHA256,
            b"",
            b"not a cert",
            b"",
            true,
        );
        assert!(err.is_err());
    }

    #[test]
    fn keys_ring_loads_are_left_to_ring_and_small_ones_are_refused() {
        assert!(matches!(load("PRIVATE KEY", &rsa(2048)), Loaded::RingSized));
        assert!(matches!(load("EC PRIVATE KEY", b""), Loaded::NotRsa));
        assert!(matches!(load("PRIVATE KEY", b"junk"), Loaded::NotRsa));
        match load("PRIVATE KEY", &rsa(1024)) {
            Loaded::OutOfRange(m) => assert!(
                m.starts_with("the private key is RSA with 1024 bits; certctl supports RSA keys of 2048 to 16384 bits"),
                "{m}"
            ),
            _ => panic!("a 1024-bit key is out of range"),
        }
    }
}
