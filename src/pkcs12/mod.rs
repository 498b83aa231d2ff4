//! PKCS#12 (PFX) writer for Windows targets (`Import-PfxCertificate`): leaf, chain and private
//! key in one password-protected file, built locally, in pure Rust.
//!
//! Owns: the PFX byte layout (RFC 7292) and the random import password. Does not own reading
//! or checking the material (that is [`crate::material`]; callers pass checked material, so the
//! key is known to match the leaf) nor uploading it (that is [`crate::deploy`]).
//!
//! # Profile
//!
//! The "modern" profile that OpenSSL 3 writes by default and Windows 10 1709+ / Server 2019+
//! import:
//! - the key in a `pkcs8ShroudedKeyBag`: PBES2 with PBKDF2-HMAC-SHA256 and AES-256-CBC;
//! - the certificates (leaf first, then the chain in order) in `certBag`s inside an
//!   `encryptedData` content with the same PBES2 scheme;
//! - a SHA-256 HMAC over the contents, its key derived with the PKCS#12 KDF (RFC 7292 B.2);
//! - on the leaf and the key bags, `localKeyId` (the SHA-1 thumbprint of the leaf, which is how
//!   Windows names certificates) and, when given, `friendlyName`.
//!
//! Older Windows (Server 2016 and earlier) only reads the legacy 3DES/SHA-1 profile, which is
//! not written here. Windows' certificate store has no Ed25519 support (CNG cannot import the
//! key, Schannel cannot serve it), so an Ed25519 PFX is readable by OpenSSL but of no use to
//! IIS; RSA and ECDSA P-256/P-384 are what Windows accepts.
//!
//! DER is written by the few helpers in `der.rs`: the structures are fixed and small, and a
//! hand-written encoder keeps every byte that holds key material in a zeroizing buffer sized up
//! front (no reallocation leaves a copy behind). This file assembles the PFX from them: `build`
//! calls one function per part (key, certificates, MAC, the outer PFX).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use cbc::cipher::{BlockModeEncrypt as _, KeyIvInit as _, block_padding::Pkcs7};
use hmac::{KeyInit as _, Mac as _};
use sha1::Sha1;
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::material::Material;
use crate::secret::Secret;

mod der;

use der::{
    BMP_STRING, EXPLICIT_0, IMPLICIT_0_PRIMITIVE, INTEGER, OCTET_STRING, OID, SEQUENCE, SET,
    algorithm_identifier, header_len, integer, push_len, read_tlv, tlv,
};

/// PBKDF2 and MAC iteration count: OpenSSL 3's default. The import password is random (see
/// [`random_password`], about 190 bits), so a higher count would add time and no strength.
pub const ITERATIONS: u32 = 2048;

/// Length of [`random_password`] in characters.
pub const PASSWORD_LEN: usize = 32;

const SALT_LEN: usize = 16;

// Object identifiers, as DER content bytes (without tag and length).
const OID_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
const OID_ENCRYPTED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x06];
const OID_SHROUDED_KEY_BAG: &[u8] = &[
    0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x02,
];
const OID_CERT_BAG: &[u8] = &[
    0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x03,
];
const OID_X509_CERT: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x16, 0x01];
const OID_FRIENDLY_NAME: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x14];
const OID_LOCAL_KEY_ID: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x15];
const OID_PBES2: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0d];
const OID_PBKDF2: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0c];
const OID_HMAC_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x09];
const OID_AES256_CBC: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a];
const OID_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];

/// Why a PFX could not be built. Messages never contain key bytes or the password.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Pkcs12Error {
    #[error(
        "the private key is not a PEM `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` block"
    )]
    KeyPem,
    #[error("the leaf certificate is not DER that can be read: {0}")]
    Certificate(String),
    #[error("the PFX password must be UTF-8 text without NUL and with no character beyond U+FFFF")]
    Password,
    #[error("the friendly name must have no character beyond U+FFFF")]
    FriendlyName,
    #[error("the system random number generator failed: {0}")]
    Random(String),
}

/// Builds the PFX for checked `material` (leaf, then `material.chain` in order, and the key).
pub fn from_material(
    material: &Material,
    password: &Secret,
    friendly_name: Option<&str>,
) -> Result<Secret, Pkcs12Error> {
    let chain: Vec<&[u8]> = material.chain.iter().map(|c| c.der.as_slice()).collect();
    build(
        &material.leaf.der,
        &chain,
        material.key_pem(),
        password,
        friendly_name,
    )
}

/// Builds a PFX from parts: the leaf's DER, the intermediates' DER in order, the private key as
/// one PEM block (PKCS#8, PKCS#1 or SEC1 — the forms [`Material`] keeps), the password and an
/// optional friendly name. The result is secret (it holds the encrypted key): callers write it
/// to a private file and drop it.
pub fn build(
    leaf_der: &[u8],
    chain_der: &[&[u8]],
    key_pem: &Secret,
    password: &Secret,
    friendly_name: Option<&str>,
) -> Result<Secret, Pkcs12Error> {
    let password_text =
        std::str::from_utf8(password.expose()).map_err(|_| Pkcs12Error::Password)?;
    if password_text.contains('\0') {
        return Err(Pkcs12Error::Password);
    }
    let bmp_password = bmp_password(password_text)?;
    let friendly = match friendly_name {
        Some(name) => Some(bmp(name).ok_or(Pkcs12Error::FriendlyName)?),
        None => None,
    };

    let pkcs8 = pkcs8_from_pem(key_pem.expose(), leaf_der)?;
    let thumbprint: [u8; 20] = Sha1::digest(leaf_der).into();
    let attributes = bag_attributes(&thumbprint, friendly.as_deref());

    let key_info = key_content(&pkcs8, &attributes, password)?;
    let cert_info = cert_content(leaf_der, chain_der, &attributes, password)?;
    // AuthenticatedSafe, then the MAC over its DER.
    let auth_safe = tlv(SEQUENCE, &[cert_info, key_info].concat());
    let mac_data = mac_data(&auth_safe, &bmp_password)?;
    Ok(Secret::new(pfx(&auth_safe, mac_data)))
}

/// The key's ContentInfo: SafeContents { pkcs8ShroudedKeyBag }, in a plain `data` content.
fn key_content(pkcs8: &[u8], attributes: &[u8], password: &Secret) -> Result<Vec<u8>, Pkcs12Error> {
    let shrouded = encrypt_pbes2(pkcs8, password.expose())?;
    let key_bag = tlv(
        SEQUENCE,
        &[
            tlv(OID, OID_SHROUDED_KEY_BAG),
            tlv(EXPLICIT_0, &shrouded),
            attributes.to_vec(),
        ]
        .concat(),
    );
    let key_contents = tlv(SEQUENCE, &key_bag);
    Ok(tlv(
        SEQUENCE,
        &[
            tlv(OID, OID_DATA),
            tlv(EXPLICIT_0, &tlv(OCTET_STRING, &key_contents)),
        ]
        .concat(),
    ))
}

/// The certificates' ContentInfo: SafeContents { certBag… } (the leaf with `attributes`, then
/// the chain), encrypted, in an `encryptedData` content.
fn cert_content(
    leaf_der: &[u8],
    chain_der: &[&[u8]],
    attributes: &[u8],
    password: &Secret,
) -> Result<Vec<u8>, Pkcs12Error> {
    let mut cert_bags = cert_bag(leaf_der, Some(attributes));
    for der in chain_der {
        cert_bags.extend(cert_bag(der, None));
    }
    let cert_contents = tlv(SEQUENCE, &cert_bags);
    let (algorithm, ciphertext) = encrypt_pbes2_parts(&cert_contents, password.expose())?;
    let encrypted_data = tlv(
        SEQUENCE,
        &[
            tlv(INTEGER, &[0]),
            tlv(
                SEQUENCE,
                &[
                    tlv(OID, OID_DATA),
                    algorithm,
                    tlv(IMPLICIT_0_PRIMITIVE, &ciphertext),
                ]
                .concat(),
            ),
        ]
        .concat(),
    );
    Ok(tlv(
        SEQUENCE,
        &[
            tlv(OID, OID_ENCRYPTED_DATA),
            tlv(EXPLICIT_0, &encrypted_data),
        ]
        .concat(),
    ))
}

/// MacData: HMAC-SHA256 over the AuthenticatedSafe's DER, keyed by the PKCS#12 KDF of the
/// BMP password with a fresh salt.
fn mac_data(auth_safe: &[u8], bmp_password: &[u8]) -> Result<Vec<u8>, Pkcs12Error> {
    let mac_salt = random_bytes::<SALT_LEN>()?;
    let mac_key = pkcs12_kdf_sha256(bmp_password, &mac_salt, 3, ITERATIONS);
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(mac_key.as_ref())
        .expect("HMAC accepts any key length");
    mac.update(auth_safe);
    let digest = mac.finalize().into_bytes();
    Ok(tlv(
        SEQUENCE,
        &[
            tlv(
                SEQUENCE,
                &[
                    algorithm_identifier(OID_SHA256, true),
                    tlv(OCTET_STRING, &digest),
                ]
                .concat(),
            ),
            tlv(OCTET_STRING, &mac_salt),
            integer(ITERATIONS),
        ]
        .concat(),
    ))
}

/// The PFX itself: version 3, the AuthenticatedSafe in a `data` content, the MacData.
fn pfx(auth_safe: &[u8], mac_data: Vec<u8>) -> Vec<u8> {
    tlv(
        SEQUENCE,
        &[
            tlv(INTEGER, &[3]),
            tlv(
                SEQUENCE,
                &[
                    tlv(OID, OID_DATA),
                    tlv(EXPLICIT_0, &tlv(OCTET_STRING, auth_safe)),
                ]
                .concat(),
            ),
            mac_data,
        ]
        .concat(),
    )
}

/// A random import password: [`PASSWORD_LEN`] characters from `A-Z a-z 0-9` (about 190 bits),
/// so it survives any quoting, file or environment variable unchanged. Never log it.
pub fn random_password() -> Result<Secret, Pkcs12Error> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = Vec::with_capacity(PASSWORD_LEN);
    let mut pool = Zeroizing::new([0u8; 64]);
    while out.len() < PASSWORD_LEN {
        getrandom::fill(pool.as_mut()).map_err(|e| Pkcs12Error::Random(e.to_string()))?;
        // 248 = 4 * 62: rejecting bytes at or above it keeps every character equally likely.
        for b in pool.iter().filter(|b| **b < 248) {
            if out.len() == PASSWORD_LEN {
                break;
            }
            out.push(ALPHABET[usize::from(*b) % ALPHABET.len()]);
        }
    }
    Ok(Secret::new(out))
}

/// The Windows thumbprint of a certificate: SHA-1 over its DER, upper-case hex without
/// separators, as `Get-ChildItem Cert:\…` prints `Thumbprint`.
pub fn thumbprint(der: &[u8]) -> String {
    Sha1::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}

/// `localKeyId` and (optionally) `friendlyName`, as a DER SET sorted as DER requires.
fn bag_attributes(local_key_id: &[u8], friendly_bmp: Option<&[u8]>) -> Vec<u8> {
    let mut attrs = vec![tlv(
        SEQUENCE,
        &[
            tlv(OID, OID_LOCAL_KEY_ID),
            tlv(SET, &tlv(OCTET_STRING, local_key_id)),
        ]
        .concat(),
    )];
    if let Some(name) = friendly_bmp {
        attrs.push(tlv(
            SEQUENCE,
            &[
                tlv(OID, OID_FRIENDLY_NAME),
                tlv(SET, &tlv(BMP_STRING, name)),
            ]
            .concat(),
        ));
    }
    attrs.sort();
    tlv(SET, &attrs.concat())
}

fn cert_bag(der: &[u8], attributes: Option<&[u8]>) -> Vec<u8> {
    let cert = tlv(
        SEQUENCE,
        &[
            tlv(OID, OID_X509_CERT),
            tlv(EXPLICIT_0, &tlv(OCTET_STRING, der)),
        ]
        .concat(),
    );
    let mut bag = [tlv(OID, OID_CERT_BAG), tlv(EXPLICIT_0, &cert)].concat();
    if let Some(attributes) = attributes {
        bag.extend_from_slice(attributes);
    }
    tlv(SEQUENCE, &bag)
}

/// EncryptedPrivateKeyInfo (PKCS#8) of `plaintext`.
fn encrypt_pbes2(plaintext: &[u8], password: &[u8]) -> Result<Vec<u8>, Pkcs12Error> {
    let (algorithm, ciphertext) = encrypt_pbes2_parts(plaintext, password)?;
    Ok(tlv(
        SEQUENCE,
        &[algorithm, tlv(OCTET_STRING, &ciphertext)].concat(),
    ))
}

/// PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC) with a fresh salt and IV: the AlgorithmIdentifier
/// and the ciphertext.
fn encrypt_pbes2_parts(
    plaintext: &[u8],
    password: &[u8],
) -> Result<(Vec<u8>, Vec<u8>), Pkcs12Error> {
    let salt = random_bytes::<SALT_LEN>()?;
    let iv = random_bytes::<16>()?;
    let mut key = Zeroizing::new([0u8; 32]);
    pbkdf2::pbkdf2_hmac::<Sha256>(password, &salt, ITERATIONS, key.as_mut());

    // Encrypt in place: the buffer holds the plaintext only until it is overwritten.
    let padded_len = (plaintext.len() / 16 + 1) * 16;
    let mut buf = Zeroizing::new(vec![0u8; padded_len]);
    buf[..plaintext.len()].copy_from_slice(plaintext);
    let encryptor = cbc::Encryptor::<aes::Aes256>::new_from_slices(key.as_ref(), &iv)
        .expect("AES-256 key and IV lengths are fixed");
    let ciphertext = encryptor
        .encrypt_padded::<Pkcs7>(&mut buf, plaintext.len())
        .expect("buffer sized for PKCS#7 padding")
        .to_vec();

    let kdf_params = tlv(
        SEQUENCE,
        &[
            tlv(OCTET_STRING, &salt),
            integer(ITERATIONS),
            algorithm_identifier(OID_HMAC_SHA256, true),
        ]
        .concat(),
    );
    let pbes2_params = tlv(
        SEQUENCE,
        &[
            tlv(SEQUENCE, &[tlv(OID, OID_PBKDF2), kdf_params].concat()),
            tlv(
                SEQUENCE,
                &[tlv(OID, OID_AES256_CBC), tlv(OCTET_STRING, &iv)].concat(),
            ),
        ]
        .concat(),
    );
    let algorithm = tlv(SEQUENCE, &[tlv(OID, OID_PBES2), pbes2_params].concat());
    Ok((algorithm, ciphertext))
}

/// RFC 7292 appendix B.2 with SHA-256 (u = 32, v = 64), for one 32-byte output: the MAC key
/// (`id` 3). `password` is already a BMPString with its two-byte terminator.
fn pkcs12_kdf_sha256(password: &[u8], salt: &[u8], id: u8, iterations: u32) -> Zeroizing<[u8; 32]> {
    const V: usize = 64;
    let stretch = |input: &[u8]| -> Zeroizing<Vec<u8>> {
        let len = input.len().div_ceil(V) * V;
        Zeroizing::new(input.iter().copied().cycle().take(len).collect())
    };
    let s = stretch(salt);
    let p = stretch(password);
    let mut hasher = Sha256::new();
    hasher.update([id; V]);
    hasher.update(s.as_slice());
    hasher.update(p.as_slice());
    let mut a = Zeroizing::new(<[u8; 32]>::from(hasher.finalize()));
    for _ in 1..iterations {
        let next: [u8; 32] = Sha256::digest(a.as_ref()).into();
        *a = next;
    }
    a
}

/// The password as PKCS#12 wants it for the MAC: BMPString (UTF-16BE) plus two zero bytes.
/// (PBES2 takes the UTF-8 bytes instead, as OpenSSL and Windows both do.)
fn bmp_password(password: &str) -> Result<Zeroizing<Vec<u8>>, Pkcs12Error> {
    let mut out = Zeroizing::new(Vec::with_capacity(password.len() * 2 + 2));
    for c in password.chars() {
        let unit = u16::try_from(u32::from(c)).map_err(|_| Pkcs12Error::Password)?;
        out.extend_from_slice(&unit.to_be_bytes());
    }
    out.extend_from_slice(&[0, 0]);
    Ok(out)
}

fn bmp(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 2);
    for c in text.chars() {
        let unit = u16::try_from(u32::from(c)).ok()?;
        out.extend_from_slice(&unit.to_be_bytes());
    }
    Some(out)
}

/// The key as PKCS#8 DER. PKCS#8 input is used as is; PKCS#1 (RSA) and SEC1 (EC) keys are
/// wrapped in a PrivateKeyInfo whose algorithm is the leaf certificate's public-key algorithm
/// (`rsaEncryption`, or `id-ecPublicKey` with the curve), which is the key's own algorithm
/// because the material check proved that the key matches the leaf.
fn pkcs8_from_pem(pem: &[u8], leaf_der: &[u8]) -> Result<Zeroizing<Vec<u8>>, Pkcs12Error> {
    let text = std::str::from_utf8(pem).map_err(|_| Pkcs12Error::KeyPem)?;
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let begin = lines.next().ok_or(Pkcs12Error::KeyPem)?;
    let label = begin
        .strip_prefix("-----BEGIN ")
        .and_then(|l| l.strip_suffix("-----"))
        .ok_or(Pkcs12Error::KeyPem)?;
    let end = format!("-----END {label}-----");
    let mut body = Zeroizing::new(String::with_capacity(pem.len()));
    let mut ended = false;
    for line in lines {
        if line == end {
            ended = true;
            break;
        }
        body.push_str(line);
    }
    if !ended {
        return Err(Pkcs12Error::KeyPem);
    }
    let mut der = Zeroizing::new(Vec::with_capacity(body.len()));
    BASE64
        .decode_vec(body.as_bytes(), &mut der)
        .map_err(|_| Pkcs12Error::KeyPem)?;
    match label {
        "PRIVATE KEY" => Ok(der),
        "RSA PRIVATE KEY" | "EC PRIVATE KEY" => {
            let algorithm = spki_algorithm(leaf_der)?;
            // PrivateKeyInfo ::= SEQUENCE { version 0, algorithm, privateKey OCTET STRING }
            let inner_len = 3 + algorithm.len() + header_len(der.len()) + der.len();
            let mut out = Zeroizing::new(Vec::with_capacity(header_len(inner_len) + inner_len));
            out.push(SEQUENCE);
            push_len(&mut out, inner_len);
            out.extend_from_slice(&[INTEGER, 1, 0]);
            out.extend_from_slice(algorithm);
            out.push(OCTET_STRING);
            push_len(&mut out, der.len());
            out.extend_from_slice(&der);
            debug_assert_eq!(out.len(), out.capacity());
            Ok(out)
        }
        _ => Err(Pkcs12Error::KeyPem),
    }
}

/// The raw AlgorithmIdentifier of a certificate's SubjectPublicKeyInfo.
fn spki_algorithm(cert_der: &[u8]) -> Result<&[u8], Pkcs12Error> {
    let bad = |what: &str| Pkcs12Error::Certificate(what.to_owned());
    let (_, cert, _) = read_tlv(cert_der).ok_or_else(|| bad("no outer SEQUENCE"))?;
    let (_, mut tbs, _) = read_tlv(cert).ok_or_else(|| bad("no tbsCertificate"))?;
    // version [0] (optional), serialNumber, signature, issuer, validity, subject, then the SPKI.
    let mut skip = 5;
    if tbs.first() == Some(&EXPLICIT_0) {
        skip += 1;
    }
    for _ in 0..skip {
        let (_, _, rest) = read_tlv(tbs).ok_or_else(|| bad("truncated tbsCertificate"))?;
        tbs = rest;
    }
    let (_, spki, _) = read_tlv(tbs).ok_or_else(|| bad("no subjectPublicKeyInfo"))?;
    let (tag, _, rest) = read_tlv(spki).ok_or_else(|| bad("no public-key algorithm"))?;
    if tag != SEQUENCE {
        return Err(bad("public-key algorithm is not a SEQUENCE"));
    }
    Ok(&spki[..spki.len() - rest.len()])
}

fn random_bytes<const N: usize>() -> Result<[u8; N], Pkcs12Error> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(|e| Pkcs12Error::Random(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_passwords_are_long_alphanumeric_and_differ() {
        let a = random_password().unwrap();
        let b = random_password().unwrap();
        assert_eq!(a.len(), PASSWORD_LEN);
        assert!(a.expose().iter().all(u8::is_ascii_alphanumeric));
        assert_ne!(a, b);
        assert_eq!(format!("{a:?}"), "(redacted)");
    }

    #[test]
    fn bmp_password_has_terminator_and_rejects_astral_characters() {
        assert_eq!(
            bmp_password("aé").unwrap().as_slice(),
            &[0, b'a', 0, 0xe9, 0, 0]
        );
        assert_eq!(bmp_password("🔐").unwrap_err(), Pkcs12Error::Password);
    }

    #[test]
    fn thumbprint_is_upper_hex_sha1() {
        assert_eq!(
            thumbprint(b"abc"),
            "A9993E364706816ABA3E25717850C26C9CD0D89D"
        );
    }
}
