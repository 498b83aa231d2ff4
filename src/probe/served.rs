//! The certificate chain a handshake saw, read into a [`Served`], and how it differs from the
//! [`Expected`] one.

use rustls_pki_types::CertificateDer;

use super::Served;
use crate::material::{CertInfo, Expected, Fingerprint};

pub(super) fn served_from(certs: &[CertificateDer<'_>]) -> Result<Served, String> {
    let (leaf, chain) = certs
        .split_first()
        .ok_or("the server sent an empty certificate list")?;
    let (subject, not_after, not_before, sans) = match CertInfo::from_der(leaf) {
        Ok(info) => (info.subject, info.not_after, info.not_before, info.sans),
        Err(e) => (format!("(unparseable certificate: {e})"), 0, 0, Vec::new()),
    };
    Ok(Served {
        leaf: Fingerprint::of_der(leaf),
        chain: chain.iter().map(|c| Fingerprint::of_der(c)).collect(),
        subject,
        not_after,
        not_before,
        sans,
    })
}

/// Why `served` is not what we expect, or `None` when leaf and chain both match.
pub(super) fn compare(expected: &Expected, served: &Served) -> Option<String> {
    if served.leaf != expected.leaf {
        return Some(format!(
            "served leaf {} (expected {})",
            served.leaf, expected.leaf
        ));
    }
    if served.chain.len() != expected.chain.len() {
        return Some(format!(
            "chain differs: served {}, expected {}",
            intermediates(served.chain.len()),
            expected.chain.len()
        ));
    }
    let (i, (got, want)) = served
        .chain
        .iter()
        .zip(&expected.chain)
        .enumerate()
        .find(|(_, (got, want))| got != want)?;
    Some(format!(
        "chain differs: certificate {} after the leaf is {got} (expected {want})",
        i + 1
    ))
}

fn intermediates(n: usize) -> String {
    if n == 1 {
        "1 intermediate".into()
    } else {
        format!("{n} intermediates")
    }
}
