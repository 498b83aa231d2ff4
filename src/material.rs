//! Certificate material: PEM parsing (certs; PKCS#8, PKCS#1 and SEC1 keys; RSA, ECDSA,
//! Ed25519), the key/leaf match, chain order, validity window, names, fingerprints, and the
//! byte layouts each file role needs. Runs before anything connects.
//!
//! Owns: reading the cert/chain/key inputs (files, an environment variable, a local command),
//! every check of docs/inventory.md#material-checks, and the canonical PEM we write to targets.
//! Does not own where the inputs are named (that is [`crate::inventory`]) or what is served
//! (that is [`crate::probe`]).
//!
//! PEM is scanned by a small line scanner of our own so that every failure gets a precise
//! message (truncated, DER instead of PEM, encrypted, a key where a certificate belongs…); the
//! decoded DER then goes to x509-parser (certificates) and rustls-pki-types + rustls' ring
//! provider (keys). Outputs are re-encoded from DER, so what we upload is canonical whatever
//! the input looked like (comments, CRLF, `Bag Attributes`, odd line widths).
//!
//! This file holds the public types, loading and the list of checks; each concern has its own
//! file: `material/pem.rs` (the PEM scanner and writer), `material/cert.rs` (certificate
//! inputs, X.509 fields, name matching), `material/key.rs` (key inputs, the key/leaf match,
//! public keys), `material/checks.rs` (chain order, validity window, names) and
//! `material/output.rs` (the byte layouts each file role needs).

mod cert;
mod checks;
mod key;
mod output;
mod pem;

use std::net::IpAddr;

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::secret::Secret;
use crate::source::Source;
use cert::{common_name, parse_cert_input, parse_x509};
use checks::plural;
use key::parse_key;
use pem::scan_pem;

pub use key::{public_key_der, spki_der};

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

    /// The checks of docs/inventory.md#material-checks at time `now` (Unix seconds): key matches
    /// leaf, chain in order with no leaf repeated, leaf valid now, every name in `names` covered
    /// by the leaf.
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
}

impl Material {
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
    fn sanitize_removes_controls_and_truncates() {
        assert_eq!(sanitize_one_line(b"a\x1b[31mb\n  c\r\n", 100), "a?[31mb c");
        assert_eq!(sanitize_one_line(b"abcdef", 3), "abc…");
    }
}
