//! The policy gate: what a certificate must be before certctl deploys it.
//!
//! - Offline ([`check`]), from the inventory's optional `policy:` (top level, and per
//!   certificate, which wins field by field): minimum key size, allowed key types, maximum
//!   lifetime, required issuer (by subject or by the SHA-256 of the issuer's public key) and a
//!   CA bundle the chain must validate against (full path validation with rustls-webpki, for
//!   server authentication, at the current time).
//! - Online ([`downgrade_gate`], before the engine runs): one probe per target; refuses a
//!   certificate that expires sooner than, or was issued before, the certificate served now
//!   for the same names. `--force` overrides it; `refuse_downgrade: false` turns it off.
//!
//! Every refusal is exit 2 with the certificate's place in the inventory; nothing is touched.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::material::{CertInfo, KeyKind, Material};

/// `policy:` as written (top level or under a certificate).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub min_key_bits: Option<MinKeyBits>,
    pub key_types: Option<Vec<KeyType>>,
    pub max_lifetime: Option<String>,
    pub issuers: Option<Vec<IssuerRule>>,
    pub ca_bundle: Option<String>,
    pub refuse_downgrade: Option<bool>,
}

/// `min_key_bits: { rsa: 3072, ecdsa: 256 }`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinKeyBits {
    pub rsa: Option<u32>,
    pub ecdsa: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    Rsa,
    Ecdsa,
    Ed25519,
}

impl KeyType {
    fn of(kind: KeyKind) -> Self {
        match kind {
            KeyKind::Rsa => KeyType::Rsa,
            KeyKind::Ecdsa => KeyType::Ecdsa,
            KeyKind::Ed25519 => KeyType::Ed25519,
        }
    }

    fn name(self) -> &'static str {
        match self {
            KeyType::Rsa => "rsa",
            KeyType::Ecdsa => "ecdsa",
            KeyType::Ed25519 => "ed25519",
        }
    }
}

/// One acceptable issuer: `{ subject: "C=US, O=Example, CN=Issuing CA" }` or
/// `{ spki_sha256: "…" }` (hex, or base64 as in `pin-sha256`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerRule {
    pub subject: Option<String>,
    pub spki_sha256: Option<String>,
}

/// The policy of one certificate after merging (paths absolute, durations parsed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub min_key_bits: MinKeyBits,
    pub key_types: Option<Vec<KeyType>>,
    pub max_lifetime: Option<Duration>,
    pub issuers: Vec<IssuerRule>,
    pub ca_bundle: Option<PathBuf>,
    pub refuse_downgrade: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            min_key_bits: MinKeyBits::default(),
            key_types: None,
            max_lifetime: None,
            issuers: Vec::new(),
            ca_bundle: None,
            refuse_downgrade: true,
        }
    }
}

/// Checks a `policy:` block on its own (where it is written); returns the problem.
pub fn check_raw(raw: &RawPolicy) -> Result<(), String> {
    if let Some(l) = &raw.max_lifetime {
        parse_lifetime(l)?;
    }
    for rule in raw.issuers.iter().flatten() {
        match (&rule.subject, &rule.spki_sha256) {
            (Some(s), None) if !subject_attributes(s).is_empty() => {}
            (Some(s), None) => return Err(format!("issuer subject `{s}` has no `KEY=value`")),
            (None, Some(h)) => {
                parse_spki_hash(h)?;
            }
            _ => {
                return Err(
                    "each entry of `issuers` is `{ subject: … }` or `{ spki_sha256: … }`".into(),
                );
            }
        }
    }
    if raw.key_types.as_ref().is_some_and(Vec::is_empty) {
        return Err("`key_types` is empty: no key could pass".into());
    }
    if raw.ca_bundle.as_ref().is_some_and(|b| b.trim().is_empty()) {
        return Err("`ca_bundle` is empty".into());
    }
    Ok(())
}

/// Merges the certificate's `policy:` over the top-level one, field by field.
/// `resolve_path` turns `ca_bundle` into an absolute path (relative to the inventory).
pub fn merge(
    top: Option<&RawPolicy>,
    own: Option<&RawPolicy>,
    resolve_path: impl Fn(&str) -> PathBuf,
) -> Policy {
    let pick = |f: fn(&RawPolicy) -> bool| own.filter(|p| f(p)).or(top.filter(|p| f(p)));
    let d = Policy::default();
    Policy {
        min_key_bits: MinKeyBits {
            rsa: own
                .and_then(|p| p.min_key_bits.and_then(|m| m.rsa))
                .or(top.and_then(|p| p.min_key_bits.and_then(|m| m.rsa))),
            ecdsa: own
                .and_then(|p| p.min_key_bits.and_then(|m| m.ecdsa))
                .or(top.and_then(|p| p.min_key_bits.and_then(|m| m.ecdsa))),
        },
        key_types: pick(|p| p.key_types.is_some()).and_then(|p| p.key_types.clone()),
        max_lifetime: pick(|p| p.max_lifetime.is_some())
            .and_then(|p| p.max_lifetime.as_deref())
            .and_then(|l| parse_lifetime(l).ok()),
        issuers: pick(|p| p.issuers.is_some())
            .and_then(|p| p.issuers.clone())
            .unwrap_or_default(),
        ca_bundle: pick(|p| p.ca_bundle.is_some())
            .and_then(|p| p.ca_bundle.as_deref())
            .map(resolve_path),
        refuse_downgrade: pick(|p| p.refuse_downgrade.is_some())
            .and_then(|p| p.refuse_downgrade)
            .unwrap_or(d.refuse_downgrade),
    }
}

/// `398d`, `90d`, `2160h`, `30m`: a whole number and a unit.
pub fn parse_lifetime(s: &str) -> Result<Duration, String> {
    if let Some(days) = s.strip_suffix('d') {
        let n: u64 = days.parse().map_err(|_| {
            format!("max_lifetime `{s}`: write a whole number of days (`398d`) or hours (`2160h`)")
        })?;
        return Ok(Duration::from_secs(n.saturating_mul(86_400)));
    }
    crate::inventory::parse_duration(s).map_err(|e| format!("max_lifetime: {e}; days are `398d`"))
}

/// Every way `material` breaks `policy` (empty: it passes). `now` in Unix seconds.
pub fn check(material: &Material, policy: &Policy, now: i64) -> Vec<String> {
    let mut problems = Vec::new();
    let leaf = &material.leaf;
    let kind = KeyType::of(material.key_kind);
    if let Some(allowed) = &policy.key_types
        && !allowed.contains(&kind)
    {
        problems.push(format!(
            "the key is {}, and the policy allows only {}",
            material.key_kind,
            allowed
                .iter()
                .map(|k| k.name())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let bits = key_bits(&leaf.der);
    let minimum = match kind {
        KeyType::Rsa => policy.min_key_bits.rsa,
        KeyType::Ecdsa => policy.min_key_bits.ecdsa,
        KeyType::Ed25519 => None,
    };
    if let (Some(min), Some(bits)) = (minimum, bits)
        && bits < min
    {
        problems.push(format!(
            "the {} key has {bits} bits; the policy requires at least {min} (min_key_bits.{})",
            material.key_kind,
            kind.name()
        ));
    }
    if let Some(max) = policy.max_lifetime {
        let lifetime = leaf.not_after.saturating_sub(leaf.not_before);
        if lifetime > i64::try_from(max.as_secs()).unwrap_or(i64::MAX) {
            problems.push(format!(
                "the certificate is valid for {} days ({} to {}); the policy allows at most {} days (max_lifetime)",
                lifetime / 86_400,
                crate::report::format_unix(leaf.not_before),
                crate::report::format_unix(leaf.not_after),
                max.as_secs() / 86_400
            ));
        }
    }
    if !policy.issuers.is_empty()
        && let Err(e) = check_issuer(material, &policy.issuers)
    {
        problems.push(e);
    }
    if let Some(bundle) = &policy.ca_bundle
        && let Err(e) = check_ca_bundle(material, bundle, now)
    {
        problems.push(e);
    }
    problems
}

/// Bits of the leaf's public key (RSA modulus, EC field); `None` when unknown.
fn key_bits(der: &[u8]) -> Option<u32> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    match cert.public_key().parsed().ok()? {
        x509_parser::public_key::PublicKey::RSA(rsa) => {
            let modulus: &[u8] = rsa.modulus;
            let start = modulus.iter().position(|b| *b != 0)?;
            let bytes = &modulus[start..];
            Some(8 * bytes.len() as u32 - bytes[0].leading_zeros())
        }
        x509_parser::public_key::PublicKey::EC(point) => u32::try_from(point.key_size()).ok(),
        _ => None,
    }
}

fn check_issuer(material: &Material, rules: &[IssuerRule]) -> Result<(), String> {
    let issuer_attrs = name_attributes(&material.leaf.der).unwrap_or_default();
    let issuer_spki = material.chain.first().and_then(|c| spki_sha256(&c.der));
    for rule in rules {
        if let Some(s) = &rule.subject
            && subject_attributes(s) == issuer_attrs
        {
            return Ok(());
        }
        if let (Some(h), Some(actual)) = (&rule.spki_sha256, issuer_spki)
            && parse_spki_hash(h).is_ok_and(|wanted| wanted == actual)
        {
            return Ok(());
        }
    }
    let spki = match issuer_spki {
        Some(h) => format!("issuer key SHA-256 {}", hex(&h)),
        None => "no issuer certificate in the chain to compare a key hash with".into(),
    };
    Err(format!(
        "the certificate is issued by `{}` ({spki}); the policy's `issuers` lists none of them",
        material.leaf.issuer
    ))
}

/// Full path validation of leaf + chain to the bundle's anchors, for TLS server auth, now.
fn check_ca_bundle(material: &Material, bundle: &std::path::Path, now: i64) -> Result<(), String> {
    let at = bundle.display();
    let bytes = crate::source::read_file(bundle).map_err(|e| format!("ca_bundle {at}: {e}"))?;
    let roots = crate::material::parse_certs(&bytes).map_err(|e| format!("ca_bundle {at}: {e}"))?;
    if roots.is_empty() {
        return Err(format!("ca_bundle {at} holds no certificate"));
    }
    let roots_der: Vec<rustls_pki_types::CertificateDer<'_>> =
        roots.iter().map(|c| c.der.as_slice().into()).collect();
    let anchors = roots_der
        .iter()
        .map(|c| webpki::anchor_from_trusted_cert(c).map(|a| a.to_owned()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("ca_bundle {at}: a certificate cannot be a trust anchor: {e}"))?;
    let leaf_der = rustls_pki_types::CertificateDer::from(material.leaf.der.as_slice());
    let intermediates: Vec<rustls_pki_types::CertificateDer<'_>> = material
        .chain
        .iter()
        .map(|c| c.der.as_slice().into())
        .collect();
    let leaf = webpki::EndEntityCert::try_from(&leaf_der)
        .map_err(|e| format!("the certificate cannot be validated: {e}"))?;
    let time = rustls_pki_types::UnixTime::since_unix_epoch(Duration::from_secs(
        u64::try_from(now).unwrap_or(0),
    ));
    leaf.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &intermediates,
        time,
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map(|_| ())
    .map_err(|e| {
        let why = match e {
            webpki::Error::UnknownIssuer => format!(
                "no path from the certificate through its chain ({} intermediate(s)) to a CA in the bundle",
                material.chain.len()
            ),
            webpki::Error::CertExpired { .. } => "a certificate on the path has expired".into(),
            webpki::Error::CertNotValidYet { .. } => "a certificate on the path is not valid yet".into(),
            webpki::Error::RequiredEkuNotFoundContext(_) => {
                "the certificate is not for TLS server authentication (extended key usage)".into()
            }
            other => format!("{other}"),
        };
        format!("does not validate against ca_bundle {at}: {why}")
    })
}

fn spki_sha256(der: &[u8]) -> Option<[u8; 32]> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(Sha256::digest(cert.public_key().raw).into())
}

/// 64 hex digits (colons allowed) or 44 characters of base64, optionally `sha256/`-prefixed.
fn parse_spki_hash(text: &str) -> Result<[u8; 32], String> {
    let t = text.trim().trim_start_matches("sha256/");
    if let Some(fp) = crate::material::Fingerprint::parse(t) {
        return Ok(fp.0);
    }
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(t)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| {
            format!("spki_sha256 `{text}` is neither 64 hex digits nor 44 characters of base64")
        })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The leaf's issuer as sorted (ATTRIBUTE, value) pairs.
fn name_attributes(der: &[u8]) -> Option<Vec<(String, String)>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let registry = x509_parser::objects::oid_registry();
    let mut out = Vec::new();
    for attr in cert.issuer().iter_attributes() {
        let key = x509_parser::objects::oid2abbrev(attr.attr_type(), registry)
            .map(str::to_string)
            .unwrap_or_else(|_| attr.attr_type().to_id_string());
        out.push((key.to_ascii_uppercase(), attr.as_str().ok()?.to_string()));
    }
    out.sort();
    Some(out)
}

/// `C=US, O=Example, CN=CA` (certctl, RFC 4514, `openssl -nameopt oneline`'s spaced form)
/// or `/C=US/O=Example/CN=CA` as sorted (ATTRIBUTE, value) pairs.
fn subject_attributes(text: &str) -> Vec<(String, String)> {
    let parts: Vec<String> = if let Some(rest) = text.trim().strip_prefix('/') {
        rest.split('/').map(str::to_string).collect()
    } else {
        split_unescaped(text, ',')
    };
    let mut out: Vec<(String, String)> = parts
        .iter()
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.trim().to_ascii_uppercase(), v.trim().to_string()))
        .collect();
    out.sort();
    out
}

fn split_unescaped(text: &str, sep: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(next), Some(p)) = (chars.next(), parts.last_mut()) {
                    p.push(next);
                }
            }
            c if c == sep => parts.push(String::new()),
            c => {
                if let Some(p) = parts.last_mut() {
                    p.push(c);
                }
            }
        }
    }
    parts
}

/// Why deploying `new` over what is served now would be a downgrade, if it would: the served
/// certificate is another one for some of the same names that expires later or was issued later.
pub fn downgrade(new: &CertInfo, served: &crate::probe::Served) -> Option<String> {
    if served.leaf == new.fingerprint {
        return None;
    }
    let lower = |v: &[String]| v.iter().map(|n| n.to_ascii_lowercase()).collect::<Vec<_>>();
    let served_names = lower(&served.sans);
    let shared: Vec<String> = lower(&new.sans)
        .into_iter()
        .filter(|n| served_names.contains(n))
        .collect();
    if shared.is_empty() {
        return None;
    }
    let when = crate::report::format_unix;
    if served.not_after > new.not_after {
        Some(format!(
            "it expires {} but the certificate served now for {} ({}) expires later, {}",
            when(new.not_after),
            shared.join(", "),
            served.leaf,
            when(served.not_after)
        ))
    } else if served.not_before > new.not_before {
        Some(format!(
            "it was issued {} but the certificate served now for {} ({}) is newer, issued {}",
            when(new.not_before),
            shared.join(", "),
            served.leaf,
            when(served.not_before)
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_compare_in_every_common_spelling() {
        let want = subject_attributes("C=US, O=Let's Encrypt, CN=R11");
        assert_eq!(
            subject_attributes("CN = R11, O = Let's Encrypt, C = US"),
            want
        );
        assert_eq!(subject_attributes("CN=R11,O=Let's Encrypt,C=US"), want);
        assert_eq!(subject_attributes("/C=US/O=Let's Encrypt/CN=R11"), want);
        assert_ne!(subject_attributes("C=US, O=Let's Encrypt, CN=R10"), want);
        assert_eq!(
            subject_attributes(r"O=A\, Inc., CN=x"),
            vec![("CN".into(), "x".into()), ("O".into(), "A, Inc.".into())]
        );
    }

    #[test]
    fn spki_hashes_take_hex_and_base64() {
        let raw = [7u8; 32];
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        assert_eq!(parse_spki_hash(&b64).unwrap(), raw);
        assert_eq!(parse_spki_hash(&format!("sha256/{b64}")).unwrap(), raw);
        assert_eq!(parse_spki_hash(&hex(&raw)).unwrap(), raw);
        assert!(parse_spki_hash("abc").is_err());
    }

    #[test]
    fn lifetimes_take_days_and_hours() {
        assert_eq!(
            parse_lifetime("398d").unwrap(),
            Duration::from_secs(398 * 86_400)
        );
        assert_eq!(
            parse_lifetime("48h").unwrap(),
            Duration::from_secs(2 * 86_400)
        );
        assert!(parse_lifetime("a year").is_err());
    }

    #[test]
    fn the_certificate_policy_wins_field_by_field() {
        let top = RawPolicy {
            min_key_bits: Some(MinKeyBits {
                rsa: Some(3072),
                ecdsa: Some(256),
            }),
            key_types: Some(vec![KeyType::Ecdsa]),
            ..RawPolicy::default()
        };
        let own = RawPolicy {
            min_key_bits: Some(MinKeyBits {
                rsa: Some(4096),
                ecdsa: None,
            }),
            refuse_downgrade: Some(false),
            ..RawPolicy::default()
        };
        let p = merge(Some(&top), Some(&own), |p: &str| PathBuf::from(p));
        assert_eq!(
            p.min_key_bits,
            MinKeyBits {
                rsa: Some(4096),
                ecdsa: Some(256)
            }
        );
        assert_eq!(p.key_types, Some(vec![KeyType::Ecdsa]));
        assert!(!p.refuse_downgrade);
        assert!(merge(None, None, |p: &str| PathBuf::from(p)).refuse_downgrade);
    }
}
