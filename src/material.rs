//! Certificate material: PEM parsing (certs; PKCS#8, PKCS#1 and SEC1 keys; RSA, ECDSA,
//! Ed25519), the key/leaf match, chain order, validity window, names, fingerprints, and the
//! byte layouts each file role needs. Runs before anything connects.
//!
//! Owns: reading the cert/chain/key inputs (files, an environment variable, a local command),
//! every check of DESIGN §9, and the canonical PEM we write to targets. Does not own where the
//! inputs are named (that is [`crate::inventory`]) or what is served (that is [`crate::probe`]).
//!
//! PEM is scanned by a small line scanner of our own so that every failure gets a precise
//! message (truncated, DER instead of PEM, encrypted, a key where a certificate belongs…); the
//! decoded DER then goes to x509-parser (certificates) and rustls-pki-types + rustls' ring
//! provider (keys). Outputs are re-encoded from DER, so what we upload is canonical whatever
//! the input looked like (comments, CRLF, `Bag Attributes`, odd line widths).

use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rustls::crypto::ring as ring_provider;
use rustls::sign::{CertifiedKey, SigningKey};
use rustls::{InconsistentKeys, SignatureAlgorithm, SignatureScheme};
use rustls_pki_types::pem::{PemObject as _, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use x509_parser::asn1_rs::BitString;
use x509_parser::certificate::X509Certificate;
use x509_parser::error::X509Error;
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry;
use x509_parser::x509::AlgorithmIdentifier;
use zeroize::Zeroizing;

use crate::secret::Secret;
use crate::source::Source;

/// A leaf that expires sooner than this is deployed with a warning.
const EXPIRY_WARNING_SECS: i64 = 14 * 86_400;

/// A SHA-256 certificate fingerprint; displays as `AB:CD:…` like `openssl x509 -fingerprint -sha256`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// SHA-256 over DER bytes.
    pub fn of_der(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }

    /// Parses `AB:CD:…` (any case, colons optional), as printed by `openssl x509 -fingerprint`
    /// after its `sha256 Fingerprint=` prefix.
    pub fn parse(text: &str) -> Option<Self> {
        let hex: Vec<u8> = text.trim().bytes().filter(|b| *b != b':').collect();
        if hex.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(hex.chunks(2)) {
            let pair = std::str::from_utf8(pair).ok()?;
            *byte = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(Self(out))
    }
}

impl std::fmt::Display for Fingerprint {
    /// `AB:CD:…` (upper-case hex, colon-separated).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // sha2 0.11 digests no longer implement `UpperHex` (rust-stack gotcha 24).
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
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

/// The certificate a probe should see: the leaf, then the chain in the order served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub leaf: Fingerprint,
    pub chain: Vec<Fingerprint>,
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

impl CertInfo {
    /// Parses one DER certificate.
    pub fn from_der(der: &[u8]) -> Result<CertInfo, String> {
        let cert = parse_x509(der)?;
        let mut sans = Vec::new();
        match cert.subject_alternative_name() {
            Ok(Some(ext)) => {
                for name in &ext.value.general_names {
                    match name {
                        GeneralName::DNSName(dns) => sans.push((*dns).to_string()),
                        GeneralName::IPAddress(bytes) => {
                            if let Some(ip) = ip_from_bytes(bytes) {
                                sans.push(ip.to_string());
                            }
                        }
                        _ => {}
                    }
                }
            }
            Ok(None) => {}
            Err(e) => return Err(format!("unreadable subjectAltName extension: {e}")),
        }
        Ok(CertInfo {
            der: der.to_vec(),
            fingerprint: Fingerprint::of_der(der),
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            sans,
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
        })
    }

    /// The subject for messages: the CN when there is one, else the whole subject.
    fn display_name(&self) -> String {
        let cn = parse_x509(&self.der).ok().and_then(|c| common_name(&c));
        cn.unwrap_or_else(|| self.subject.clone())
    }
}

/// Which kind of private key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    Rsa,
    Ecdsa,
    Ed25519,
}

impl std::fmt::Display for KeyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyKind::Rsa => "RSA",
            KeyKind::Ecdsa => "ECDSA",
            KeyKind::Ed25519 => "Ed25519",
        })
    }
}

/// Where the key comes from: the same three shapes as the certificate and chain.
pub type KeySource = crate::source::Source;

/// What the inventory says about one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaterialSpec {
    pub name: String,
    pub cert: Source,
    pub chain: Option<Source>,
    pub key: Source,
    /// Time limit of each `*_command` source.
    pub command_timeout: std::time::Duration,
    /// Where the certificate is declared in the inventory, for messages.
    pub location: Option<crate::inventory::Location>,
}

impl MaterialSpec {
    /// A spec with the default command timeout and no location.
    pub fn new(
        name: impl Into<String>,
        cert: impl Into<Source>,
        chain: Option<Source>,
        key: impl Into<Source>,
    ) -> Self {
        Self {
            name: name.into(),
            cert: cert.into(),
            chain,
            key: key.into(),
            command_timeout: crate::source::DEFAULT_COMMAND_TIMEOUT,
            location: None,
        }
    }

    /// The environment variables this certificate is read from (kept out of the
    /// environment of notifiers).
    pub fn env_vars(&self) -> impl Iterator<Item = &str> {
        [Some(&self.cert), self.chain.as_ref(), Some(&self.key)]
            .into_iter()
            .flatten()
            .filter_map(Source::env_var)
    }
}

/// A loaded, parsed certificate with its chain and key.
#[derive(Debug, Clone)]
pub struct Material {
    pub name: String,
    pub leaf: CertInfo,
    /// Intermediates in order (each signs the one before; the leaf is signed by `chain[0]`).
    pub chain: Vec<CertInfo>,
    pub key_kind: KeyKind,
    /// The private key as canonical PEM: the one key block that was read, in the format it was
    /// read in (PKCS#8, PKCS#1 or SEC1), re-encoded from DER without comments or parameters.
    key_pem: Secret,
    /// How messages name the inputs.
    cert_source: String,
    /// Where each chain entry came from, e.g. `certs/www.crt (certificate 2)`.
    chain_origins: Vec<String>,
    key_source: String,
    /// The certificate's entry in the inventory, for messages.
    location: Option<crate::inventory::Location>,
}

/// Why material was rejected. The message names the certificate and file; the location (the
/// certificate's entry in the inventory), when known, comes first as `FILE:LINE:COL: `.
#[derive(Debug, thiserror::Error)]
pub struct MaterialError {
    pub name: String,
    pub message: String,
    pub location: Option<crate::inventory::Location>,
}

impl std::fmt::Display for MaterialError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(l) = &self.location {
            write!(f, "{l}: ")?;
        }
        write!(f, "certificate `{}`: {}", self.name, self.message)
    }
}

impl Material {
    /// Reads and parses the files/env/command named by `spec`; checks only that each parses.
    pub fn load(spec: &MaterialSpec) -> Result<Material, MaterialError> {
        let fail = |message: String| MaterialError {
            name: spec.name.clone(),
            message,
            location: spec.location.clone(),
        };

        let timeout = spec.command_timeout;
        let cert_source = spec.cert.describe("cert");
        let bytes = spec
            .cert
            .read(timeout)
            .map_err(|m| fail(format!("{cert_source}: {m}")))?;
        let mut certs =
            parse_cert_input(&bytes).map_err(|m| fail(format!("{cert_source}: {m}")))?;
        let leaf = certs.remove(0);
        let mut chain_origins: Vec<String> = (0..certs.len())
            .map(|i| format!("{cert_source} (certificate {})", i + 2))
            .collect();
        let mut chain = certs;

        if let Some(chain_spec) = &spec.chain {
            let chain_source = chain_spec.describe("chain");
            let bytes = chain_spec
                .read(timeout)
                .map_err(|m| fail(format!("{chain_source}: {m}")))?;
            let from_file =
                parse_cert_input(&bytes).map_err(|m| fail(format!("{chain_source}: {m}")))?;
            if chain.is_empty() {
                chain_origins = (0..from_file.len())
                    .map(|i| format!("{chain_source} (certificate {})", i + 1))
                    .collect();
                chain = from_file;
            } else if chain != from_file {
                // A full-chain `cert` plus the same `chain` (certbot's layout) is fine; two
                // different chains is a mistake we must not guess about.
                return Err(fail(format!(
                    "{cert_source} already holds {} after the leaf, and `chain` ({chain_source}) holds different certificates: give the intermediates in one place",
                    plural(chain.len(), "certificate")
                )));
            }
        }

        let key_source = spec.key.describe("key");
        let key_bytes = spec
            .key
            .read(timeout)
            .map_err(|m| fail(format!("{key_source}: {m}")))?;
        let key = parse_key(&key_bytes).map_err(|m| fail(format!("{key_source}: {m}")))?;

        Ok(Material {
            name: spec.name.clone(),
            leaf,
            chain,
            key_kind: key.kind,
            key_pem: key.pem,
            cert_source,
            chain_origins,
            key_source,
            location: spec.location.clone(),
        })
    }

    /// The checks of DESIGN §9 at time `now` (Unix seconds): key matches leaf, chain in order
    /// with no leaf repeated, leaf valid now, every name in `names` covered by the leaf.
    /// Returns warnings (e.g. expires within 14 days).
    ///
    /// Every failing check is reported (joined by `; `), so one fix does not reveal the next.
    pub fn check(&self, names: &[String], now: i64) -> Result<Vec<String>, MaterialError> {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        if let Err(e) = self.check_key() {
            errors.push(e);
        }
        if let Err(e) = self.check_end_entity() {
            errors.push(e);
        }
        self.check_chain(&mut errors, &mut warnings);
        self.check_validity(now, &mut errors, &mut warnings);
        if let Err(e) = self.check_names(names) {
            errors.push(e);
        }
        if errors.is_empty() {
            Ok(warnings)
        } else {
            Err(MaterialError {
                name: self.name.clone(),
                message: errors.join("; "),
                location: self.location.clone(),
            })
        }
    }

    /// What a backup set must pass before it is restored: the key matches the leaf and the
    /// chain is in order — the pair checks of [`Material::check`], without validity dates or
    /// names (an old certificate being put back may have expired).
    pub fn check_pair(&self) -> Result<(), MaterialError> {
        let mut errors = Vec::new();
        if let Err(e) = self.check_key() {
            errors.push(e);
        }
        self.check_chain(&mut errors, &mut Vec::new());
        if errors.is_empty() {
            Ok(())
        } else {
            Err(MaterialError {
                name: self.name.clone(),
                message: errors.join("; "),
                location: self.location.clone(),
            })
        }
    }

    /// Leaf PEM alone.
    pub fn cert_pem(&self) -> Vec<u8> {
        let mut out = Vec::new();
        encode_pem("CERTIFICATE", &self.leaf.der, &mut out);
        out
    }

    /// Intermediates PEM (possibly empty).
    pub fn chain_pem(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for cert in &self.chain {
            encode_pem("CERTIFICATE", &cert.der, &mut out);
        }
        out
    }

    /// Leaf then intermediates.
    pub fn fullchain_pem(&self) -> Vec<u8> {
        let mut out = self.cert_pem();
        out.extend_from_slice(&self.chain_pem());
        out
    }

    pub fn key_pem(&self) -> &Secret {
        &self.key_pem
    }

    /// Leaf + intermediates + key (HAProxy's bundle).
    pub fn bundle_pem(&self) -> Secret {
        let certs = self.fullchain_pem();
        let key = self.key_pem.expose();
        // One allocation of the final size, so no partial copy of the key is left behind in
        // a freed buffer.
        let mut out = Vec::with_capacity(certs.len() + key.len());
        out.extend_from_slice(&certs);
        out.extend_from_slice(key);
        Secret::new(out)
    }

    /// The leaf's first DNS name, else its first SAN, else its CN — the default SNI.
    ///
    /// Wildcard names are skipped: `*.example.com` is not a name a client can send.
    pub fn default_sni(&self) -> Option<String> {
        let usable = |n: &&String| !n.starts_with("*.");
        let dns = self
            .leaf
            .sans
            .iter()
            .filter(usable)
            .find(|n| n.parse::<IpAddr>().is_err());
        if let Some(name) = dns.or_else(|| self.leaf.sans.iter().find(usable)) {
            return Some(name.clone());
        }
        let cert = parse_x509(&self.leaf.der).ok()?;
        common_name(&cert).filter(|cn| !cn.starts_with("*.") && !cn.is_empty())
    }

    /// Fingerprints the probe should see.
    pub fn expected(&self) -> Expected {
        Expected {
            leaf: self.leaf.fingerprint,
            chain: self.chain.iter().map(|c| c.fingerprint).collect(),
        }
    }

    fn leaf_label(&self) -> String {
        format!("`{}` in {}", self.leaf.display_name(), self.cert_source)
    }

    /// The key belongs to the leaf: rustls compares the SubjectPublicKeyInfo the key derives with
    /// the certificate's. When the provider cannot derive one (`Unknown`), we prove possession
    /// instead: sign with the key, verify with the certificate's public key.
    fn check_key(&self) -> Result<(), String> {
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

    /// The leaf is a server's certificate, not a CA's: TLS clients that check it (rustls,
    /// webpki: `CaUsedAsEndEntity`) refuse a CA certificate as the server's. A full chain given
    /// in the wrong order is left to [`Material::check_chain`], which says so.
    fn check_end_entity(&self) -> Result<(), String> {
        let cert = parse_x509(&self.leaf.der)?;
        let is_ca = cert.is_ca();
        let signs_certs = matches!(cert.key_usage(), Ok(Some(ku)) if ku.value.key_cert_sign());
        if !is_ca && !signs_certs {
            return Ok(());
        }
        let issued_one = self.chain.iter().any(|c| {
            parse_x509(&c.der).is_ok_and(|c| c.issuer().as_raw() == cert.subject().as_raw())
        });
        if is_ca && issued_one {
            return Ok(());
        }
        let why = match (is_ca, signs_certs) {
            (true, true) => {
                "basicConstraints CA:TRUE and keyUsage keyCertSign: TLS clients such as rustls refuse a CA certificate as the server's"
            }
            (true, false) => {
                "basicConstraints CA:TRUE: TLS clients such as rustls refuse a CA certificate as the server's"
            }
            _ => "keyUsage keyCertSign, which RFC 5280 allows only in CA certificates",
        };
        Err(format!(
            "{} is a CA certificate ({why}). Give the certificate issued for the server's names as `cert` (leaf first); a self-signed one made with `openssl req -x509` needs `-addext basicConstraints=critical,CA:FALSE`",
            self.leaf_label()
        ))
    }

    /// Each certificate is issued (names) and signed (signature) by the next one; the leaf is
    /// not repeated; no certificate appears twice.
    fn check_chain(&self, errors: &mut Vec<String>, warnings: &mut Vec<String>) {
        if self.chain.is_empty() {
            if self.leaf.issuer != self.leaf.subject {
                warnings.push(format!(
                    "{} is issued by `{}` but no intermediate certificate is given; clients that do not already hold that issuer will reject it",
                    self.leaf_label(),
                    self.leaf.issuer
                ));
            }
            return;
        }
        let mut duplicates = false;
        for (i, cert) in self.chain.iter().enumerate() {
            if cert.fingerprint == self.leaf.fingerprint {
                duplicates = true;
                errors.push(format!(
                    "the leaf certificate {} appears again in the chain at {}; remove it from the chain",
                    self.leaf_label(),
                    self.chain_origins[i]
                ));
            } else if let Some(j) = self.chain[..i]
                .iter()
                .position(|c| c.fingerprint == cert.fingerprint)
            {
                duplicates = true;
                errors.push(format!(
                    "`{}` appears twice in the chain ({} and {})",
                    cert.display_name(),
                    self.chain_origins[j],
                    self.chain_origins[i]
                ));
            }
        }
        if duplicates {
            // The order check would only repeat the same problem in other words.
            return;
        }

        let all: Vec<&CertInfo> = std::iter::once(&self.leaf).chain(&self.chain).collect();
        let parsed: Vec<X509Certificate<'_>> =
            match all.iter().map(|c| parse_x509(&c.der)).collect() {
                Ok(parsed) => parsed,
                Err(e) => {
                    errors.push(format!("a certificate no longer parses: {e}"));
                    return;
                }
            };
        let origin = |i: usize| {
            if i == 0 {
                self.cert_source.clone()
            } else {
                self.chain_origins[i - 1].clone()
            }
        };

        // A full-chain file with the intermediate first: the "leaf" is a CA that issued one of
        // the chain certificates.
        if parsed[0].is_ca()
            && parsed[1..]
                .iter()
                .any(|c| c.issuer().as_raw() == parsed[0].subject().as_raw())
        {
            errors.push(format!(
                "{} starts with the CA certificate `{}`: the leaf must come first, then the intermediates",
                self.cert_source,
                all[0].display_name()
            ));
            return;
        }

        for i in 0..parsed.len() - 1 {
            let (child, issuer) = (&parsed[i], &parsed[i + 1]);
            if child.issuer().as_raw() != issuer.subject().as_raw() {
                let elsewhere = parsed.iter().enumerate().position(|(j, c)| {
                    j != i && j != i + 1 && c.subject().as_raw() == child.issuer().as_raw()
                });
                errors.push(match elsewhere {
                    Some(j) => format!(
                        "the chain is out of order: `{}` ({}) is issued by `{}`, which is {}, but the next certificate is `{}` ({}); list the intermediates from the one that issued the leaf upwards",
                        all[i].display_name(),
                        origin(i),
                        all[j].display_name(),
                        origin(j),
                        all[i + 1].display_name(),
                        origin(i + 1)
                    ),
                    None => format!(
                        "the chain does not belong to this certificate: `{}` ({}) is issued by `{}`, but the next certificate is `{}` ({})",
                        all[i].display_name(),
                        origin(i),
                        child.issuer(),
                        all[i + 1].display_name(),
                        origin(i + 1)
                    ),
                });
                return;
            }
            match child.verify_signature(Some(issuer.public_key())) {
                Ok(()) => {}
                Err(X509Error::SignatureUnsupportedAlgorithm) => warnings.push(format!(
                    "could not check the signature on `{}` ({}): its algorithm is not supported here; checked the issuer name only",
                    all[i].display_name(),
                    origin(i)
                )),
                Err(_) => {
                    errors.push(format!(
                        "`{}` ({}) names `{}` as its issuer but is not signed by the key of the certificate at {}: that is a different certificate with the same name",
                        all[i].display_name(),
                        origin(i),
                        all[i + 1].display_name(),
                        origin(i + 1)
                    ));
                    return;
                }
            }
        }
    }

    /// The leaf is inside its validity window. An expired intermediate is only a warning: some
    /// CAs deliberately serve an expired cross-signed certificate for old clients.
    fn check_validity(&self, now: i64, errors: &mut Vec<String>, warnings: &mut Vec<String>) {
        let leaf = &self.leaf;
        if now < leaf.not_before {
            errors.push(format!(
                "{} is not valid yet: valid from {} (in {})",
                self.leaf_label(),
                format_time(leaf.not_before),
                format_span(leaf.not_before - now)
            ));
        } else if now >= leaf.not_after {
            errors.push(format!(
                "{} expired on {}",
                self.leaf_label(),
                format_time(leaf.not_after)
            ));
        } else if leaf.not_after - now < EXPIRY_WARNING_SECS {
            warnings.push(format!(
                "{} expires in {} ({})",
                self.leaf_label(),
                format_span(leaf.not_after - now),
                format_time(leaf.not_after)
            ));
        }
        for (cert, origin) in self.chain.iter().zip(&self.chain_origins) {
            if now >= cert.not_after {
                warnings.push(format!(
                    "chain certificate `{}` ({origin}) expired on {}",
                    cert.display_name(),
                    format_time(cert.not_after)
                ));
            }
        }
    }

    /// Every name is covered by a SAN (or, only when there is no SAN at all, by the CN).
    fn check_names(&self, names: &[String]) -> Result<(), String> {
        let cn = parse_x509(&self.leaf.der)
            .ok()
            .and_then(|c| common_name(&c));
        let presented: Vec<String> = if self.leaf.sans.is_empty() {
            cn.into_iter().collect()
        } else {
            self.leaf.sans.clone()
        };
        let missing: Vec<&str> = names
            .iter()
            .map(|n| n.trim())
            .filter(|n| !n.is_empty())
            .filter(|n| !presented.iter().any(|p| name_matches(p, n)))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let covered = if presented.is_empty() {
            "no names at all".to_string()
        } else {
            presented.join(", ")
        };
        Err(format!(
            "{} does not cover {} (it covers: {covered})",
            self.leaf_label(),
            missing
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

/// Parses every certificate in a PEM buffer (used on files read back from targets).
///
/// Blocks that are not certificates (a key in a HAProxy bundle) are skipped without being
/// decoded; a malformed or truncated block is an error.
pub fn parse_certs(pem: &[u8]) -> Result<Vec<CertInfo>, String> {
    let blocks = scan_pem(pem)?;
    let mut out = Vec::new();
    for (i, block) in blocks
        .iter()
        .enumerate()
        .filter(|(_, b)| b.label == "CERTIFICATE")
    {
        let der = block.decode(i + 1)?;
        out.push(
            CertInfo::from_der(&der)
                .map_err(|e| format!("certificate at line {}: {e}", block.line))?,
        );
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Inputs

/// Printable text on one line, at most `max` characters: for quoting what a program said.
pub(crate) fn sanitize_one_line(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::new();
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(word.chars().map(|c| if c.is_control() { '?' } else { c }));
    }
    if out.chars().count() > max {
        out = out.chars().take(max).collect::<String>() + "…";
    }
    out
}

// ---------------------------------------------------------------------------------------------
// PEM

/// One `-----BEGIN X-----` … `-----END X-----` block.
struct PemBlock {
    label: String,
    /// 1-based line of the BEGIN line.
    line: usize,
    /// RFC 1421 `Proc-Type: 4,ENCRYPTED` header (OpenSSL's traditional encrypted keys).
    encrypted: bool,
    /// The base64 text, whitespace removed. Zeroized: it may be a key.
    body: Zeroizing<String>,
}

impl PemBlock {
    /// The DER bytes; `index` is the block's 1-based position, for messages.
    fn decode(&self, index: usize) -> Result<Zeroizing<Vec<u8>>, String> {
        let der = BASE64.decode(self.body.as_bytes()).map_err(|e| {
            format!(
                "PEM block {index} (`-----BEGIN {}-----` at line {}) is corrupt: invalid base64 ({e})",
                self.label, self.line
            )
        })?;
        Ok(Zeroizing::new(der))
    }
}

/// Splits PEM text into blocks. Text outside blocks (comments, `Bag Attributes`) is ignored.
/// An empty result means "no PEM here"; callers say what they expected.
fn scan_pem(bytes: &[u8]) -> Result<Vec<PemBlock>, String> {
    if looks_binary(bytes) {
        return Err(if bytes.first() == Some(&0x30) {
            "is binary DER, not PEM".to_string()
        } else {
            "is binary, not a PEM text file".to_string()
        });
    }
    let mut blocks = Vec::new();
    let mut open: Option<PemBlock> = None;
    for (n, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let line_no = n + 1;
        let line = raw.trim_ascii();
        if let Some(rest) = line.strip_prefix(b"-----BEGIN ") {
            let label = rest
                .strip_suffix(b"-----")
                .ok_or_else(|| format!("line {line_no}: malformed PEM BEGIN line"))?;
            let label = String::from_utf8_lossy(label).into_owned();
            if let Some(previous) = &open {
                return Err(format!(
                    "truncated PEM: `-----BEGIN {}-----` at line {} has no END line before the next BEGIN at line {line_no}",
                    previous.label, previous.line
                ));
            }
            open = Some(PemBlock {
                label,
                line: line_no,
                encrypted: false,
                body: Zeroizing::new(String::new()),
            });
        } else if let Some(rest) = line.strip_prefix(b"-----END ") {
            let label = rest.strip_suffix(b"-----").unwrap_or(rest);
            let block = open
                .take()
                .ok_or_else(|| format!("line {line_no}: PEM END line without a BEGIN line"))?;
            if label != block.label.as_bytes() {
                return Err(format!(
                    "line {line_no}: `-----END {}-----` does not close `-----BEGIN {}-----` (line {})",
                    String::from_utf8_lossy(label),
                    block.label,
                    block.line
                ));
            }
            blocks.push(block);
        } else if let Some(block) = open.as_mut() {
            if line.contains(&b':') {
                // RFC 1421 headers: `Proc-Type: 4,ENCRYPTED`, `DEK-Info: …`.
                if line.starts_with(b"Proc-Type:") && line.windows(9).any(|w| w == b"ENCRYPTED") {
                    block.encrypted = true;
                }
                continue;
            }
            let text = std::str::from_utf8(line).map_err(|_| {
                format!(
                    "line {line_no}: PEM block `{}` holds non-text bytes",
                    block.label
                )
            })?;
            block
                .body
                .extend(text.chars().filter(|c| !c.is_ascii_whitespace()));
        }
    }
    if let Some(block) = open {
        return Err(format!(
            "truncated PEM: `-----BEGIN {}-----` at line {} has no `-----END {}-----` line",
            block.label, block.line, block.label
        ));
    }
    Ok(blocks)
}

/// NUL or control bytes other than whitespace: DER, PKCS#12, or some other binary file.
fn looks_binary(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .take(4096)
        .any(|b| *b == 0 || (*b < 0x20 && !b.is_ascii_whitespace()) || *b == 0x7f)
}

/// Writes `der` as PEM: 64-column base64, `\n` line ends, a trailing newline.
fn encode_pem(label: &str, der: &[u8], out: &mut Vec<u8>) {
    let b64 = Zeroizing::new(BASE64.encode(der));
    let lines = b64.len().div_ceil(64);
    out.reserve(b64.len() + lines + 2 * (label.len() + 17));
    out.extend_from_slice(b"-----BEGIN ");
    out.extend_from_slice(label.as_bytes());
    out.extend_from_slice(b"-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.extend_from_slice(chunk);
        out.push(b'\n');
    }
    out.extend_from_slice(b"-----END ");
    out.extend_from_slice(label.as_bytes());
    out.extend_from_slice(b"-----\n");
}

fn is_key_label(label: &str) -> bool {
    label.ends_with("PRIVATE KEY")
}

/// A certificate or chain input: one or more CERTIFICATE blocks and nothing else.
fn parse_cert_input(bytes: &[u8]) -> Result<Vec<CertInfo>, String> {
    let blocks = scan_pem(bytes).map_err(|e| {
        if e.starts_with("is binary DER") {
            format!("{e}: convert it with `openssl x509 -inform der -in FILE -out FILE.pem`")
        } else {
            e
        }
    })?;
    if blocks.is_empty() {
        return Err(if bytes.iter().all(u8::is_ascii_whitespace) {
            "is empty; expected a PEM certificate".into()
        } else {
            "no PEM certificate found (expected `-----BEGIN CERTIFICATE-----`)".into()
        });
    }
    let mut certs = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        let at = format!("`-----BEGIN {}-----` at line {}", block.label, block.line);
        match block.label.as_str() {
            "CERTIFICATE" => {
                let der = block.decode(i + 1)?;
                certs
                    .push(CertInfo::from_der(&der).map_err(|e| {
                        format!("certificate {} (line {}): {e}", i + 1, block.line)
                    })?);
            }
            label if is_key_label(label) => {
                return Err(format!(
                    "holds a private key ({at}); certificate files must hold only certificates: name the key with `key`"
                ));
            }
            "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST" => {
                return Err(format!(
                    "holds a certificate signing request ({at}), not a certificate"
                ));
            }
            _ => {
                return Err(format!(
                    "holds a non-certificate PEM block ({at}); only CERTIFICATE blocks are allowed"
                ));
            }
        }
    }
    Ok(certs)
}

/// A parsed private key.
struct ParsedKey {
    kind: KeyKind,
    /// Canonical PEM of the key block.
    pem: Secret,
    signing: KeyCheck,
}

/// How a key is matched with its certificate.
enum KeyCheck {
    /// Loaded by rustls' ring provider.
    Ring(Arc<dyn SigningKey>),
    /// An RSA key above ring's 4096 bits, validated by [`crate::large_rsa`].
    LargeRsa(crate::large_rsa::LargeRsaKey),
}

const ENCRYPTED_KEY: &str = "the private key is encrypted; certctl needs an unencrypted key: decrypt it (`openssl pkey -in KEY -out KEY.plain`) or name a `key_command` that prints the decrypted key";

/// A key input: exactly one private key block (OpenSSL's `EC PARAMETERS` block is tolerated).
fn parse_key(bytes: &[u8]) -> Result<ParsedKey, String> {
    let blocks = scan_pem(bytes).map_err(|e| {
        if e.starts_with("is binary DER") {
            format!("{e}: convert it with `openssl pkey -inform der -in KEY -out KEY.pem`")
        } else {
            e
        }
    })?;
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
    let (index, block) = match keys.as_slice() {
        [] if blocks.is_empty() && bytes.iter().all(u8::is_ascii_whitespace) => {
            return Err("is empty; expected a PEM private key".into());
        }
        [] => {
            return Err("no PEM private key found (expected `-----BEGIN PRIVATE KEY-----`)".into());
        }
        [one] => *one,
        more => {
            return Err(format!(
                "holds {} private keys; expected exactly one",
                more.len()
            ));
        }
    };
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

// ---------------------------------------------------------------------------------------------
// Certificates

fn parse_x509(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], cert)) => Ok(cert),
        Ok((rest, _)) => Err(format!(
            "{} unexpected bytes after the certificate",
            rest.len()
        )),
        Err(e) => Err(format!("not a valid X.509 certificate ({e})")),
    }
}

fn common_name(cert: &X509Certificate<'_>) -> Option<String> {
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string)
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
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

/// Does a certificate name (SAN or CN) cover `wanted`? DNS names compare case-insensitively
/// without a trailing dot; `*.example.com` covers exactly one more label; IPs compare as IPs.
fn name_matches(presented: &str, wanted: &str) -> bool {
    let wanted_ip = wanted
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>();
    if let Ok(wanted_ip) = wanted_ip {
        return presented.parse::<IpAddr>().is_ok_and(|p| p == wanted_ip);
    }
    if presented.parse::<IpAddr>().is_ok() {
        return false;
    }
    let presented = presented.trim_end_matches('.').to_ascii_lowercase();
    let wanted = wanted.trim_end_matches('.').to_ascii_lowercase();
    if presented == wanted {
        return true;
    }
    match (presented.strip_prefix("*."), wanted.split_once('.')) {
        (Some(suffix), Some((label, rest))) => {
            !label.is_empty() && !suffix.is_empty() && rest == suffix
        }
        _ => false,
    }
}

fn format_time(unix: i64) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| format!("@{unix}"))
}

/// `3 days`, `5 hours`, `12 minutes`.
fn format_span(secs: i64) -> String {
    if secs >= 2 * 86_400 {
        plural((secs / 86_400) as usize, "day")
    } else if secs >= 2 * 3_600 {
        plural((secs / 3_600) as usize, "hour")
    } else {
        plural((secs / 60).max(1) as usize, "minute")
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
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
mod tests {
    use super::*;

    #[test]
    fn fingerprint_formats_like_openssl_and_parses_back() {
        let fp = Fingerprint::of_der(b"abc");
        // sha256("abc"), well known.
        let text = fp.to_string();
        assert!(
            text.starts_with("BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23"),
            "{text}"
        );
        assert_eq!(text.len(), 32 * 3 - 1);
        assert_eq!(Fingerprint::parse(&text), Some(fp));
        assert_eq!(
            Fingerprint::parse(&text.replace(':', "").to_lowercase()),
            Some(fp)
        );
        assert_eq!(Fingerprint::parse("AB:CD"), None);
        assert_eq!(format!("{fp:?}"), text);
        assert_eq!(serde_json::to_string(&fp).unwrap(), format!("\"{text}\""));
    }

    #[test]
    fn pem_encoding_is_canonical() {
        let der: Vec<u8> = (0..=255u8).collect();
        let mut out = Vec::new();
        encode_pem("CERTIFICATE", &der, &mut out);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(text.ends_with("-----END CERTIFICATE-----\n"));
        let body: Vec<&str> = text
            .lines()
            .skip(1)
            .take_while(|l| !l.starts_with("-----"))
            .collect();
        assert!(body[..body.len() - 1].iter().all(|l| l.len() == 64));
        assert!(body.last().unwrap().len() <= 64);
        let blocks = scan_pem(&out).unwrap();
        assert_eq!(&*blocks[0].decode(1).unwrap(), &der);
    }

    #[test]
    fn scanner_reports_truncation_binary_and_headers() {
        let err = scan_pem(b"-----BEGIN CERTIFICATE-----\nMIIB\n")
            .err()
            .unwrap();
        assert!(
            err.contains("truncated PEM") && err.contains("line 1"),
            "{err}"
        );
        let err = scan_pem(b"-----BEGIN PRIVATE KEY-----\nAA\n-----BEGIN CERTIFICATE-----\n")
            .err()
            .unwrap();
        assert!(
            err.contains("truncated PEM") && err.contains("line 3"),
            "{err}"
        );
        let err = scan_pem(&[0x30, 0x82, 0x01, 0x0a, 0x02]).err().unwrap();
        assert!(err.contains("binary DER"), "{err}");
        let err = scan_pem(b"-----BEGIN CERTIFICATE-----\nAA==\n-----END PRIVATE KEY-----\n")
            .err()
            .unwrap();
        assert!(err.contains("does not close"), "{err}");
        let blocks = scan_pem(
            b"junk\r\n-----BEGIN RSA PRIVATE KEY-----\r\nProc-Type: 4,ENCRYPTED\r\nDEK-Info: AES-128-CBC,00\r\n\r\nAAAA\r\n-----END RSA PRIVATE KEY-----\r\n",
        )
        .unwrap();
        assert_eq!(blocks.len(), 1);
        assert!(blocks[0].encrypted);
        assert_eq!(blocks[0].body.as_str(), "AAAA");
        let err = scan_pem(b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n")
            .unwrap()[0]
            .decode(1)
            .err()
            .unwrap();
        assert!(err.contains("invalid base64"), "{err}");
    }

    #[test]
    fn names_match_like_tls_clients() {
        assert!(name_matches("www.example.com", "WWW.example.com."));
        assert!(name_matches("*.example.com", "www.example.com"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(!name_matches("*.example.com", "a.b.example.com"));
        assert!(!name_matches("*.example.com", ".example.com"));
        assert!(name_matches("::1", "0:0:0:0:0:0:0:1"));
        assert!(name_matches("::1", "[::1]"));
        assert!(name_matches("127.0.0.1", "127.0.0.1"));
        assert!(!name_matches("127.0.0.1", "127.0.0.2"));
        assert!(!name_matches("*.0.0.1", "127.0.0.1"));
        assert!(!name_matches("127.0.0.1", "localhost"));
    }

    #[test]
    fn spans_and_times_read_well() {
        assert_eq!(format_span(5 * 86_400 + 10), "5 days");
        assert_eq!(format_span(30 * 3_600), "30 hours");
        assert_eq!(format_span(59), "1 minute");
        assert_eq!(format_time(0), "1970-01-01 00:00:00 UTC");
    }

    #[test]
    fn sanitize_removes_controls_and_truncates() {
        assert_eq!(sanitize_one_line(b"a\x1b[31mb\n  c\r\n", 100), "a?[31mb c");
        assert_eq!(sanitize_one_line(b"abcdef", 3), "abc…");
    }

    fn self_signed(alg: &'static rcgen::SignatureAlgorithm) -> (Vec<u8>, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.test".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.der().to_vec(), key)
    }

    fn ring(key: &ParsedKey) -> &dyn SigningKey {
        match &key.signing {
            KeyCheck::Ring(signing) => signing.as_ref(),
            KeyCheck::LargeRsa(_) => panic!("a key ring loads"),
        }
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
            assert!(key_signs_for(ring(&parsed), &der).unwrap());
            assert!(!key_signs_for(ring(&parsed), &other_der).unwrap());
        }
        let (ec_der, _) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
        let ed = parse_key(
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
                .unwrap()
                .serialize_pem()
                .as_bytes(),
        )
        .unwrap();
        assert!(!key_signs_for(ring(&ed), &ec_der).unwrap());
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
        let err = parse_cert_input(b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n")
            .err()
            .unwrap();
        assert!(err.contains("non-certificate"), "{err}");
    }

    #[test]
    fn parse_certs_skips_keys_without_decoding_them() {
        let (der, key) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
        let mut bundle = Vec::new();
        encode_pem("CERTIFICATE", &der, &mut bundle);
        bundle.extend_from_slice(key.serialize_pem().as_bytes());
        bundle.extend_from_slice(
            b"-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n",
        );
        let certs = parse_certs(&bundle).unwrap();
        assert_eq!(certs.len(), 1);
        assert_eq!(certs[0].fingerprint, Fingerprint::of_der(&der));
        assert_eq!(certs[0].sans, vec!["a.test".to_string()]);
    }
}
