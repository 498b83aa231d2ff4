//! Certificate material: PEM parsing (certs; PKCS#8, PKCS#1 and SEC1 keys; RSA, ECDSA,
//! Ed25519), the key/leaf match, chain order, validity window, names, fingerprints, and the
//! byte layouts each file role needs. Runs before anything connects.

use serde::Serialize;

use crate::secret::Secret;

/// A SHA-256 certificate fingerprint; displays as `AB:CD:…` like `openssl x509 -fingerprint -sha256`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// SHA-256 over DER bytes.
    pub fn of_der(der: &[u8]) -> Self {
        todo!("{}", der.len())
    }
}

impl std::fmt::Display for Fingerprint {
    /// `AB:CD:…` (upper-case hex, colon-separated).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        todo!("{f:p}")
    }
}

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One parsed certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertInfo {
    #[serde(skip)]
    pub der: Vec<u8>,
    pub fingerprint: Fingerprint,
    pub subject: String,
    pub issuer: String,
    /// DNS names and IP addresses from subjectAltName (IPs as text).
    pub sans: Vec<String>,
    /// Seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
}

/// Which kind of private key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    Rsa,
    Ecdsa,
    Ed25519,
}

/// Where the key comes from (resolved by the inventory; relative paths already absolute).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    File(std::path::PathBuf),
    /// Name of an environment variable holding the PEM.
    Env(String),
    /// argv run locally (no shell); its stdout is the PEM.
    Command(Vec<String>),
}

/// What the inventory says about one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaterialSpec {
    pub name: String,
    pub cert: std::path::PathBuf,
    pub chain: Option<std::path::PathBuf>,
    pub key: KeySource,
}

/// A loaded, parsed certificate with its chain and key.
#[derive(Debug, Clone)]
pub struct Material {
    pub name: String,
    pub leaf: CertInfo,
    /// Intermediates in order (each signs the one before; the leaf is signed by `chain[0]`).
    pub chain: Vec<CertInfo>,
    pub key_kind: KeyKind,
    /// The private key as PEM, exactly as read.
    key_pem: Secret,
}

/// Why material was rejected. The message names the certificate and file.
#[derive(Debug, thiserror::Error)]
#[error("certificate `{name}`: {message}")]
pub struct MaterialError {
    pub name: String,
    pub message: String,
}

impl Material {
    /// Reads and parses the files/env/command named by `spec`; checks only that each parses.
    pub fn load(spec: &MaterialSpec) -> Result<Material, MaterialError> {
        todo!("{spec:?}")
    }

    /// The checks of DESIGN §9 at time `now` (Unix seconds): key matches leaf, chain in order
    /// with no leaf repeated, leaf valid now, every name in `names` covered by the leaf.
    /// Returns warnings (e.g. expires within 14 days).
    pub fn check(&self, names: &[String], now: i64) -> Result<Vec<String>, MaterialError> {
        todo!("{names:?}{now}")
    }

    /// Leaf PEM alone.
    pub fn cert_pem(&self) -> Vec<u8> {
        todo!()
    }

    /// Intermediates PEM (possibly empty).
    pub fn chain_pem(&self) -> Vec<u8> {
        todo!()
    }

    /// Leaf then intermediates.
    pub fn fullchain_pem(&self) -> Vec<u8> {
        todo!()
    }

    pub fn key_pem(&self) -> &Secret {
        &self.key_pem
    }

    /// Leaf + intermediates + key (HAProxy's bundle).
    pub fn bundle_pem(&self) -> Secret {
        todo!()
    }

    /// The leaf's first DNS name, else its first SAN, else its CN — the default SNI.
    pub fn default_sni(&self) -> Option<String> {
        todo!()
    }

    /// Fingerprints the probe should see.
    pub fn expected(&self) -> crate::probe::Expected {
        crate::probe::Expected {
            leaf: self.leaf.fingerprint,
            chain: self.chain.iter().map(|c| c.fingerprint).collect(),
        }
    }
}

/// Parses every certificate in a PEM buffer (used on files read back from targets).
pub fn parse_certs(pem: &[u8]) -> Result<Vec<CertInfo>, String> {
    todo!("{}", pem.len())
}
