//! `certctl check`: everything that can be known without connecting — the inventory, the
//! material, the connectors and plans, and the SSH setup on this machine (a missing
//! `identity_file`, a missing known_hosts file, a host in no known_hosts file). Human output
//! on stderr; `--show` (or `-v`, or naming targets) prints each target's resolved connection
//! on stdout as `ssh -G` does; `--output json` writes one document on stdout.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{CheckArgs, Invalid, Output, prepare};
use crate::inventory::Inventory;
use crate::plan::{RunSettings, TargetPlan};
use crate::report::{self, Problem};

/// The version of the `check --output json` document ([`report::CHECK_JSON_SCHEMA`]).
pub const CHECK_VERSION: u32 = 1;

#[derive(Serialize)]
struct CheckDoc<'a> {
    version: u32,
    command: &'static str,
    ok: bool,
    targets: Vec<CheckTarget>,
    problems: &'a [Problem],
    warnings: &'a [Problem],
}

#[derive(Serialize)]
struct CheckTarget {
    name: String,
    connector: String,
    certificate: String,
    connection: Connection,
    files: Vec<CheckFile>,
    /// The first certificate's (all of them in `certificates`).
    leaf: Leaf,
    verify: Option<VerifyView>,
    certificates: Vec<CheckCertificate>,
}

/// One certificate of a target.
#[derive(Serialize, Clone)]
struct CheckCertificate {
    certificate: String,
    leaf: Leaf,
    verify: Option<VerifyView>,
}

/// What `ssh -G` would say, and what certctl adds (`become`).
#[derive(Serialize)]
struct Connection {
    address: String,
    port: u16,
    user: String,
    /// Key files offered after the agent; empty: the agent, then ~/.ssh/id_ed25519, id_ecdsa,
    /// id_rsa.
    identity_files: Vec<String>,
    identities_only: bool,
    /// The first vouches and records new keys; the rest are read too.
    known_hosts: Vec<String>,
    /// `user@host:port` per hop, first hop first.
    jump: Vec<String>,
    #[serde(rename = "become")]
    become_method: Option<&'static str>,
}

#[derive(Serialize)]
struct CheckFile {
    role: String,
    path: String,
    /// The `mode` param, if set; else a replaced file keeps its mode and a new one gets
    /// `default_mode`.
    mode: Option<String>,
    default_mode: String,
}

#[derive(Serialize, Clone)]
struct Leaf {
    fingerprint: String,
    subject: String,
    not_after: String,
}

#[derive(Serialize, Clone)]
struct VerifyView {
    address: String,
    sni: String,
    starttls: crate::probe::StartTls,
}

pub(super) fn run(args: CheckArgs, verbose: u8) -> Result<u8, Invalid> {
    let settings = RunSettings::new(false);
    let prepared = prepare(&args.inventory, &settings)?;
    let policy =
        crate::lifecycle::policy_problems(&prepared.inventory, &prepared.plans, settings.now);
    if !policy.is_empty() {
        return Err(Invalid::messages(policy));
    }
    let (problems, warnings) = offline_ssh_checks(&prepared.plans, &prepared.inventory);
    let json = args.output == Output::Json;
    for w in &warnings {
        report::print_warning(&report::problems::render(w));
    }
    for p in &problems {
        report::print_stderr(&format!("error: {}", report::problems::render(p)));
    }
    let shown: Vec<&TargetPlan> = prepared
        .plans
        .iter()
        .filter(|p| args.targets.is_empty() || args.targets.contains(&p.name))
        .collect();
    if let Some(unknown) = args
        .targets
        .iter()
        .find(|t| !prepared.plans.iter().any(|p| &p.name == *t))
    {
        return Err(Invalid(vec![Problem::run(format!(
            "check: `{unknown}` is not a selected target"
        ))]));
    }
    if json {
        write(&CheckDoc {
            version: CHECK_VERSION,
            command: "check",
            ok: problems.is_empty(),
            targets: shown.iter().map(|p| check_target(p)).collect(),
            problems: &problems,
            warnings: &warnings,
        });
    } else {
        if problems.is_empty() {
            summary(&args, &prepared);
        }
        if args.show || verbose > 0 || !args.targets.is_empty() {
            super::print_stdout(&shown.iter().map(|p| ssh_g(p)).collect::<String>());
        }
    }
    Ok(if problems.is_empty() {
        report::EXIT_OK
    } else {
        report::EXIT_USAGE
    })
}

fn summary(args: &CheckArgs, prepared: &super::Prepared) {
    let mut out = format!(
        "ok: {} — {} target(s), {} certificate(s), {} user-defined connector(s); nothing was contacted\n",
        args.inventory.inventory.display(),
        prepared.plans.len(),
        prepared.certificates,
        prepared.inventory.connectors.len()
    );
    if !report::term::settings().quiet {
        for plan in &prepared.plans {
            let certs: Vec<String> = plan
                .certs
                .iter()
                .map(|c| {
                    format!(
                        "certificate `{}` {}, expires {}",
                        c.certificate,
                        report::short_fingerprints(&c.material.leaf.fingerprint.to_string()),
                        report::format_unix(c.material.leaf.not_after)
                    )
                })
                .collect();
            out.push_str(&format!(
                "  {}: {} via {} -> {} ({})\n",
                plan.name,
                plan.ssh.host,
                plan.connector,
                plan.files
                    .iter()
                    .map(|f| f.path.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                certs.join("; "),
            ));
        }
    }
    report::print_stderr(&out);
}

/// `check --output json` when the input is invalid: the same document, no targets.
pub(super) fn write_invalid(problems: &[Problem]) {
    write(&CheckDoc {
        version: CHECK_VERSION,
        command: "check",
        ok: false,
        targets: Vec::new(),
        problems,
        warnings: &[],
    });
}

fn write(doc: &CheckDoc<'_>) {
    match serde_json::to_string_pretty(doc) {
        Ok(text) => super::print_stdout(&text),
        Err(e) => report::print_stderr(&format!("error: writing the JSON document: {e}")),
    }
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

fn connection(plan: &TargetPlan) -> Connection {
    let ssh = &plan.ssh;
    Connection {
        address: ssh.host.clone(),
        port: ssh.port,
        user: ssh.user.clone(),
        identity_files: ssh.identity_files.iter().map(|p| display(p)).collect(),
        identities_only: ssh.identities_only,
        known_hosts: std::iter::once(&ssh.known_hosts)
            .chain(&ssh.known_hosts_extra)
            .map(|p| display(p))
            .collect(),
        jump: ssh.jump.iter().map(|j| j.label()).collect(),
        become_method: plan.become_method.map(|_| "sudo"),
    }
}

fn check_certificate(c: &crate::plan::CertPlan) -> CheckCertificate {
    let leaf = &c.material.leaf;
    CheckCertificate {
        certificate: c.certificate.clone(),
        leaf: Leaf {
            fingerprint: leaf.fingerprint.to_string(),
            subject: leaf.subject.clone(),
            not_after: report::format_unix(leaf.not_after),
        },
        verify: c.has_probe.then(|| VerifyView {
            address: c.probe.address.clone(),
            sni: c.probe.sni.clone(),
            starttls: c.probe.starttls,
        }),
    }
}

fn check_target(plan: &TargetPlan) -> CheckTarget {
    let certificates: Vec<CheckCertificate> = plan.certs.iter().map(check_certificate).collect();
    let first = certificates[0].clone();
    CheckTarget {
        name: plan.name.clone(),
        connector: plan.connector.clone(),
        certificate: first.certificate,
        connection: connection(plan),
        files: plan
            .files
            .iter()
            .map(|f| CheckFile {
                role: f.role.to_string(),
                path: f.path.clone(),
                mode: f.explicit_mode.map(|m| format!("{m:04o}")),
                default_mode: format!("{:04o}", f.default_mode),
            })
            .collect(),
        leaf: first.leaf,
        verify: first.verify,
        certificates,
    }
}

/// One target's resolved connection, `ssh -G` style: lower-case keyword, value.
fn ssh_g(plan: &TargetPlan) -> String {
    let c = connection(plan);
    let mut out = format!("# {}\n", plan.name);
    out.push_str(&format!(
        "hostname {}\nport {}\nuser {}\n",
        c.address, c.port, c.user
    ));
    if c.identity_files.is_empty() {
        out.push_str(
            "identityfile (agent, then ~/.ssh/id_ed25519, ~/.ssh/id_ecdsa, ~/.ssh/id_rsa)\n",
        );
    }
    for f in &c.identity_files {
        out.push_str(&format!("identityfile {f}\n"));
    }
    out.push_str(&format!(
        "identitiesonly {}\n",
        if c.identities_only { "yes" } else { "no" }
    ));
    out.push_str(&format!("userknownhostsfile {}\n", c.known_hosts.join(" ")));
    out.push_str("stricthostkeychecking yes\n");
    if !c.jump.is_empty() {
        out.push_str(&format!("proxyjump {}\n", c.jump.join(",")));
    }
    out.push_str(&format!("become {}\n", c.become_method.unwrap_or("no")));
    out.push_str(&format!("connector {}\n", plan.connector));
    for c in plan.certs.iter().filter(|c| c.has_probe) {
        out.push_str(&format!("verify {} sni {}\n", c.probe.address, c.probe.sni));
    }
    out.push('\n');
    out
}

/// What can be checked of the SSH setup without connecting. Errors: an inventory
/// `identity_file` or `known_hosts` that does not exist (the inventory names only that file).
/// Warnings: such files that come from the ssh config or the defaults, and a host that no
/// known_hosts file lists (deploy refuses it unless --accept-new-host-keys).
fn offline_ssh_checks(plans: &[TargetPlan], inventory: &Inventory) -> (Vec<Problem>, Vec<Problem>) {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    for plan in plans {
        let target = inventory.targets.iter().find(|t| t.name == plan.name);
        let said = |field: fn(&crate::inventory::Target) -> Option<&PathBuf>| {
            target.and_then(field).is_some()
        };
        let item = |message: String| Problem {
            message,
            targets: vec![plan.name.clone()],
        };
        for key in &plan.ssh.identity_files {
            if !key.exists() {
                let message = format!("identity file {} does not exist", key.display());
                if said(|t| t.identity_file.as_ref()) {
                    errors.push(item(message));
                } else {
                    warnings.push(item(message));
                }
            }
        }
        let files: Vec<&Path> = std::iter::once(plan.ssh.known_hosts.as_path())
            .chain(plan.ssh.known_hosts_extra.iter().map(PathBuf::as_path))
            .collect();
        if !files[0].exists() {
            let message = format!(
                "known_hosts file {} does not exist: deploy refuses every host unless \
                 --accept-new-host-keys",
                files[0].display()
            );
            if said(|t| t.known_hosts.as_ref()) {
                errors.push(item(message));
            } else {
                warnings.push(item(message));
            }
            continue;
        }
        let (host, port) = (&plan.ssh.host, plan.ssh.port);
        let listed = files.iter().any(|f| {
            !crate::ssh::known_hosts::known_key_types(f, host, port).is_empty()
                || crate::ssh::known_hosts::has_cert_authority(f, host, port)
        });
        if !listed {
            warnings.push(item(format!(
                "{} is in no known_hosts file ({}); deploy will refuse it unless \
                 --accept-new-host-keys (`ssh-keyscan -p {port} {host}` shows its keys; check \
                 them before adding)",
                crate::ssh::endpoint(host, port),
                files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            )));
        }
    }
    (
        report::problems::group(errors),
        report::problems::group(warnings),
    )
}
