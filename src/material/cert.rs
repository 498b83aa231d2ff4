//! Certificates: the `cert` and `chain` inputs (CERTIFICATE blocks and nothing else), the
//! fields certctl reads from X.509 (names, validity, fingerprint), and how a certificate name
//! covers a name a client asks for.

use std::net::IpAddr;

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use super::pem::{is_key_label, scan_pem};
use super::{CertInfo, Fingerprint};

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
    pub(super) fn display_name(&self) -> String {
        let cn = parse_x509(&self.der).ok().and_then(|c| common_name(&c));
        cn.unwrap_or_else(|| self.subject.clone())
    }
}

/// A certificate or chain input: one or more CERTIFICATE blocks and nothing else.
pub(super) fn parse_cert_input(bytes: &[u8]) -> Result<Vec<CertInfo>, String> {
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

pub(super) fn parse_x509(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], cert)) => Ok(cert),
        Ok((rest, _)) => Err(format!(
            "{} unexpected bytes after the certificate",
            rest.len()
        )),
        Err(e) => Err(format!("not a valid X.509 certificate ({e})")),
    }
}

pub(super) fn common_name(cert: &X509Certificate<'_>) -> Option<String> {
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string)
}

pub(super) fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}

/// Does a certificate name (SAN or CN) cover `wanted`? DNS names compare case-insensitively
/// without a trailing dot; `*.example.com` covers exactly one more label; IPs compare as IPs.
pub(super) fn name_matches(presented: &str, wanted: &str) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn parse_certs_skips_keys_without_decoding_them() {
        let (der, key) = super::super::key::tests::self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
        let mut bundle = Vec::new();
        super::super::pem::encode_pem("CERTIFICATE", &der, &mut bundle);
        bundle.extend_from_slice(key.serialize_pem().as_bytes());
        bundle.extend_from_slice(
            b"-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n",
        );
        let certs = super::super::parse_certs(&bundle).unwrap();
        assert_eq!(certs.len(), 1);
        assert_eq!(certs[0].fingerprint, Fingerprint::of_der(&der));
        assert_eq!(certs[0].sans, vec!["a.test".to_string()]);
    }
}
