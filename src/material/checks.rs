//! The material checks (docs/inventory.md#material-checks) beyond the key match: the chain in
//! order (each certificate issued and signed by the next, nothing twice), the leaf inside its
//! validity window (a warning within 14 days of expiry), and the names a client will ask for
//! covered by the leaf.

use x509_parser::certificate::X509Certificate;
use x509_parser::error::X509Error;

use super::cert::{common_name, name_matches, parse_x509};
use super::{CertInfo, Material};

/// A leaf that expires sooner than this is deployed with a warning.
const EXPIRY_WARNING_SECS: i64 = 14 * 86_400;

impl Material {
    /// The leaf is a server's certificate, not a CA's: TLS clients that check it (rustls,
    /// webpki: `CaUsedAsEndEntity`) refuse a CA certificate as the server's. A full chain given
    /// in the wrong order is left to [`Material::check_chain`], which says so.
    pub(super) fn check_end_entity(&self) -> Result<(), String> {
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
    pub(super) fn check_chain(&self, errors: &mut Vec<String>, warnings: &mut Vec<String>) {
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
        // After a duplicate, the order check would only repeat the same problem in other words.
        if !self.check_duplicates(errors) {
            self.check_order(errors, warnings);
        }
    }

    /// The leaf again in the chain, or one intermediate twice: `true` when there is one.
    fn check_duplicates(&self, errors: &mut Vec<String>) -> bool {
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
        duplicates
    }

    /// Leaf first, then each certificate issued and signed by the next; stops at the first
    /// break (what follows it says nothing new).
    fn check_order(&self, errors: &mut Vec<String>, warnings: &mut Vec<String>) {
        let all: Vec<&CertInfo> = std::iter::once(&self.leaf).chain(&self.chain).collect();
        let parsed: Vec<X509Certificate<'_>> =
            match all.iter().map(|c| parse_x509(&c.der)).collect() {
                Ok(parsed) => parsed,
                Err(e) => {
                    errors.push(format!("a certificate no longer parses: {e}"));
                    return;
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
        let named = |i: usize| format!("`{}` ({})", all[i].display_name(), self.origin(i));
        for i in 0..parsed.len() - 1 {
            let (child, issuer) = (&parsed[i], &parsed[i + 1]);
            if child.issuer().as_raw() != issuer.subject().as_raw() {
                errors.push(self.misordered(&all, &parsed, i));
                return;
            }
            match child.verify_signature(Some(issuer.public_key())) {
                Ok(()) => {}
                Err(X509Error::SignatureUnsupportedAlgorithm) => warnings.push(format!(
                    "could not check the signature on {}: its algorithm is not supported here; checked the issuer name only",
                    named(i)
                )),
                Err(_) => {
                    errors.push(format!(
                        "{} names `{}` as its issuer but is not signed by the key of the certificate at {}: that is a different certificate with the same name",
                        named(i),
                        all[i + 1].display_name(),
                        self.origin(i + 1)
                    ));
                    return;
                }
            }
        }
    }

    /// Certificate `i` is not issued by certificate `i + 1`: out of order when its issuer is
    /// elsewhere in the chain, else a chain that does not belong to the leaf.
    fn misordered(&self, all: &[&CertInfo], parsed: &[X509Certificate<'_>], i: usize) -> String {
        let child = &parsed[i];
        let elsewhere = parsed.iter().enumerate().position(|(j, c)| {
            j != i && j != i + 1 && c.subject().as_raw() == child.issuer().as_raw()
        });
        match elsewhere {
            Some(j) => format!(
                "the chain is out of order: `{}` ({}) is issued by `{}`, which is {}, but the next certificate is `{}` ({}); list the intermediates from the one that issued the leaf upwards",
                all[i].display_name(),
                self.origin(i),
                all[j].display_name(),
                self.origin(j),
                all[i + 1].display_name(),
                self.origin(i + 1)
            ),
            None => format!(
                "the chain does not belong to this certificate: `{}` ({}) is issued by `{}`, but the next certificate is `{}` ({})",
                all[i].display_name(),
                self.origin(i),
                child.issuer(),
                all[i + 1].display_name(),
                self.origin(i + 1)
            ),
        }
    }

    /// Where certificate `i` of leaf + chain came from.
    fn origin(&self, i: usize) -> String {
        if i == 0 {
            self.cert_source.clone()
        } else {
            self.chain_origins[i - 1].clone()
        }
    }

    /// The leaf is inside its validity window. An expired intermediate is only a warning: some
    /// CAs deliberately serve an expired cross-signed certificate for old clients.
    pub(super) fn check_validity(
        &self,
        now: i64,
        errors: &mut Vec<String>,
        warnings: &mut Vec<String>,
    ) {
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
    pub(super) fn check_names(&self, names: &[String]) -> Result<(), String> {
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

pub(super) fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_and_times_read_well() {
        assert_eq!(format_span(5 * 86_400 + 10), "5 days");
        assert_eq!(format_span(30 * 3_600), "30 hours");
        assert_eq!(format_span(59), "1 minute");
        assert_eq!(format_time(0), "1970-01-01 00:00:00 UTC");
    }
}
