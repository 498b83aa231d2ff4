//! Several certificates on one target become one change: each certificate is planned on its
//! own (its params, its probe, its own `{tmpdir}` inside the target's scratch directory), then
//! the parts are merged here into one plan — one lock, one backup set, one stage and preview,
//! one swap, each distinct test and reload command once, then every certificate's probe.

use crate::connector::Command;

use super::{CertPlan, TargetPlan};

/// The parts (one per certificate, in order) as one plan.
pub(super) fn merge(parts: Vec<TargetPlan>) -> Result<TargetPlan, String> {
    let mut parts = parts.into_iter();
    let mut plan = parts.next().expect("a target has at least one certificate");
    for part in parts {
        let (first, this) = (&plan.certs[0].certificate, &part.certs[0].certificate);
        if plan.commands.is_some() || plan.shell == crate::connector::Shell::Powershell {
            return Err(format!(
                "connector `{}` deploys one certificate per target (it changes the target \
                 through its own commands): list certificate `{this}` on a target of its own",
                plan.connector
            ));
        }
        if part.backup_dir != plan.backup_dir || part.keep_backups != plan.keep_backups {
            return Err(format!(
                "certificates `{first}` and `{this}` set different `backup_dir` or \
                 `keep_backups` params: a target has one backup directory; set them on the \
                 target, not on a certificate"
            ));
        }
        let clash = part
            .files
            .iter()
            .find_map(|f| plan.files.iter().find(|p| p.path == f.path));
        if let Some(p) = clash {
            return Err(format!(
                "certificates `{}` and `{this}` both write `{}`: give each its own paths \
                 (params under its `certificates:` entry)",
                plan.certs[p.cert].certificate, p.path
            ));
        }
        plan.files.extend(part.files);
        plan.scratch_subdirs.push(part.scratch_dir);
        plan.templates.extend(part.templates);
        plan.inputs.extend(part.inputs);
        for (mine, theirs) in [
            (&mut plan.preview, part.preview),
            (&mut plan.test, part.test),
            (&mut plan.reload, part.reload),
            (&mut plan.alive, part.alive),
            (&mut plan.start, part.start),
        ] {
            add_distinct(mine, theirs);
        }
        plan.certs.extend(part.certs);
        plan.bindings.extend(part.bindings);
    }
    offer_by_key(&mut plan.certs)?;
    Ok(plan)
}

/// Certificates probed at the same endpoint (address, SNI, STARTTLS) are told apart by their
/// key: a server holding an RSA and an ECDSA certificate for the same names picks by what the
/// client offers, so each one's probe offers only its key's signature schemes (and TLS 1.2
/// suites). Two of the same kind there cannot be told apart: refused.
fn offer_by_key(certs: &mut [CertPlan]) -> Result<(), String> {
    let endpoint = |c: &CertPlan| {
        (
            c.probe.address.clone(),
            c.probe.sni.clone(),
            c.probe.starttls,
        )
    };
    for i in 0..certs.len() {
        for j in i + 1..certs.len() {
            let (a, b) = (&certs[i], &certs[j]);
            if !a.has_probe || !b.has_probe || endpoint(a) != endpoint(b) {
                continue;
            }
            let (ka, kb) = (a.material.key_kind, b.material.key_kind);
            if ka == kb {
                return Err(format!(
                    "certificates `{}` and `{}` are both {ka} and probed at the same address and \
                     SNI ({} {}): the probe cannot tell them apart; give each its own `verify.sni` \
                     or `verify.address`",
                    a.certificate, b.certificate, a.probe.address, a.probe.sni
                ));
            }
            certs[i].probe.offer.key = Some(ka);
            certs[j].probe.offer.key = Some(kb);
        }
    }
    Ok(())
}

/// Appends the commands `to` does not already hold (the same `nginx -t` or reload for every
/// certificate runs once), in order.
fn add_distinct(to: &mut Vec<Command>, commands: Vec<Command>) {
    for c in commands {
        if !to.contains(&c) {
            to.push(c);
        }
    }
}
