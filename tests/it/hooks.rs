//! `certctl deploy --hook` as certbot, acme.sh and lego call it after a renewal, with their
//! variables exactly as each documents them (no ACME server needed: the renewal is files on
//! disk in each client's own layout). Only the certificate that IS the renewed one is deployed,
//! to the targets that use it; another target (here one that cannot even be reached) is left
//! alone; a renewal the inventory does not deploy is a no-op; an inventory entry named like the
//! renewal that reads other files is refused.

use std::fs;
use std::path::{Path, PathBuf};

use crate::support;

use support::edit::{self, q};
use support::lab::{Lab, SNI, TargetOptions, run_certctl};

/// The lab's new certificate laid out as `client` keeps it; returns (cert, chain, key, dir).
fn layout(lab: &Lab, client: &str) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    let copy = |from: &Path, to: &Path| {
        fs::copy(from, to).unwrap();
    };
    match client {
        // /etc/letsencrypt/live/NAME/{cert,chain,fullchain,privkey}.pem
        "certbot" => {
            let dir = lab.path(&format!("letsencrypt/live/{SNI}"));
            copy(&lab.new.cert, &dir.join("cert.pem"));
            copy(&lab.new.chain, &dir.join("chain.pem"));
            copy(&lab.new.fullchain, &dir.join("fullchain.pem"));
            copy(&lab.new.key, &dir.join("privkey.pem"));
            (
                dir.join("cert.pem"),
                dir.join("chain.pem"),
                dir.join("privkey.pem"),
                dir,
            )
        }
        // ~/.acme.sh/NAME_ecc/{NAME.cer, NAME.key, ca.cer, fullchain.cer}
        "acme.sh" => {
            let dir = lab.path(&format!("acme.sh/{SNI}_ecc"));
            copy(&lab.new.cert, &dir.join(format!("{SNI}.cer")));
            copy(&lab.new.chain, &dir.join("ca.cer"));
            copy(&lab.new.fullchain, &dir.join("fullchain.cer"));
            copy(&lab.new.key, &dir.join(format!("{SNI}.key")));
            (
                dir.join(format!("{SNI}.cer")),
                dir.join("ca.cer"),
                dir.join(format!("{SNI}.key")),
                dir,
            )
        }
        // .lego/certificates/NAME.{crt (leaf + issuer), issuer.crt, key}
        _ => {
            let dir = lab.path(".lego/certificates");
            copy(&lab.new.fullchain, &dir.join(format!("{SNI}.crt")));
            copy(&lab.new.chain, &dir.join(format!("{SNI}.issuer.crt")));
            copy(&lab.new.key, &dir.join(format!("{SNI}.key")));
            (
                dir.join(format!("{SNI}.crt")),
                dir.join(format!("{SNI}.issuer.crt")),
                dir.join(format!("{SNI}.key")),
                dir,
            )
        }
    }
}

/// The lab's inventory reading `client`'s files, plus `web-other` with another certificate on
/// an endpoint where nothing listens (deploying it would fail the run).
fn inventory_for(lab: &Lab, client: &str) -> Vec<(String, String)> {
    let (cert, chain, key, dir) = layout(lab, client);
    let text = fs::read_to_string(&lab.inventory).unwrap();
    let text = text
        .replace(
            &q(lab.new.cert.display().to_string()),
            &q(cert.display().to_string()),
        )
        .replace(
            &q(lab.new.chain.display().to_string()),
            &q(chain.display().to_string()),
        )
        .replace(
            &q(lab.new.key.display().to_string()),
            &q(key.display().to_string()),
        );
    let other = lab.pki.leaf("other", &["other.test.example"]);
    let text = text.replace(
        "targets:\n",
        &format!(
            "  other:\n    cert: {}\n    key: {}\n    chain: {}\ntargets:\n",
            q(other.cert.display().to_string()),
            q(other.key.display().to_string()),
            q(other.chain.display().to_string())
        ),
    );
    fs::write(&lab.inventory, text).unwrap();
    let nowhere = support::free_addr().to_string();
    edit::copy_target(
        &lab.inventory,
        "web-other",
        &[
            ("certificate: www", "certificate: other"),
            (&lab.nginx.addr.to_string(), &nowhere),
            (&format!("sni: {}", q(SNI)), "sni: \"other.test.example\""),
        ],
    );
    let s = |p: PathBuf| p.display().to_string();
    match client {
        "certbot" => vec![
            ("RENEWED_LINEAGE".into(), s(dir)),
            ("RENEWED_DOMAINS".into(), SNI.into()),
        ],
        "acme.sh" => vec![
            ("CERT_PATH".into(), s(cert)),
            ("CERT_KEY_PATH".into(), s(key)),
            ("CA_CERT_PATH".into(), s(chain)),
            ("CERT_FULLCHAIN_PATH".into(), s(dir.join("fullchain.cer"))),
        ],
        _ => vec![
            ("LEGO_CERT_PATH".into(), s(cert)),
            ("LEGO_CERT_KEY_PATH".into(), s(key)),
            ("LEGO_CERT_DOMAIN".into(), SNI.into()),
        ],
    }
}

fn hook(lab: &Lab, env: &[(String, String)], extra: &[&str]) -> support::lab::Output {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut args = vec!["deploy", "--hook", "--output", "json"];
    args.extend_from_slice(extra);
    run_certctl(&lab.inventory, &args, &env)
}

#[test]
fn certbot_deploy_hook_deploys_only_the_renewed_certificate() {
    let lab = Lab::start(TargetOptions::default());
    let env = inventory_for(&lab, "certbot");
    let out = hook(&lab, &env, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report = out.json();
    let names: Vec<&str> = report["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web-1"], "web-other must not be touched");
    assert_eq!(report["targets"][0]["status"], "deployed");
    assert_eq!(lab.served(), lab.new.fingerprint);
    assert!(
        out.stderr
            .contains("hook (certbot): RENEWED_LINEAGE renewed")
            && out.stderr.contains("deploying certificate(s) `www`"),
        "{}",
        out.stderr
    );
    // Without --hook the same variables only earn a hint, and every target is deployed.
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = run_certctl(
        &lab.inventory,
        &["deploy", "--dry-run", "--output", "json"],
        &env,
    );
    assert!(
        out.stderr
            .contains("note: RENEWED_LINEAGE is set: run `certctl deploy --hook`"),
        "{}",
        out.stderr
    );
    assert_eq!(
        out.json()["targets"].as_array().unwrap().len(),
        2,
        "{}",
        out.stdout
    );
}

#[test]
fn acme_sh_and_lego_hooks_select_the_renewed_certificate() {
    for client in ["acme.sh", "lego"] {
        let lab = Lab::start(TargetOptions::default());
        let env = inventory_for(&lab, client);
        let out = hook(&lab, &env, &["--dry-run"]);
        assert_eq!(out.code, 0, "{client}: {}", out.stderr);
        let targets = out.json()["targets"].as_array().unwrap().clone();
        assert_eq!(targets.len(), 1, "{client}: {}", out.stdout);
        assert_eq!(targets[0]["name"], "web-1");
        assert_eq!(targets[0]["status"], "would-change");
        assert!(
            out.stderr.contains(&format!("hook ({client}):")),
            "{}",
            out.stderr
        );
        // The client named explicitly works the same.
        let out = run_certctl(
            &lab.inventory,
            &["deploy", "--hook", client, "--dry-run"],
            &env.iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect::<Vec<_>>(),
        );
        assert_eq!(out.code, 0, "{client}: {}", out.stderr);
    }
}

#[test]
fn a_renewal_the_inventory_does_not_deploy_is_a_no_op_and_a_stale_entry_is_refused() {
    let lab = Lab::start(TargetOptions::default());
    let mut env = inventory_for(&lab, "certbot");
    let logins = lab.sshd_connections();
    // certbot renewed a lineage certctl does not deploy.
    let unrelated = lab.path("letsencrypt/live/unrelated.example");
    let leaf = lab.pki.leaf("unrelated", &["unrelated.example"]);
    fs::copy(&leaf.cert, unrelated.join("cert.pem")).unwrap();
    env[0].1 = unrelated.display().to_string();
    env[1].1 = "unrelated.example".into();
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = run_certctl(&lab.inventory, &["deploy", "--hook"], &env_ref);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("nothing to deploy"), "{}", out.stderr);
    assert_eq!(lab.sshd_connections(), logins, "no target was contacted");

    // An inventory certificate named like the lineage that reads other (older) files.
    let text = fs::read_to_string(&lab.inventory).unwrap();
    let text = text.replace(
        "targets:\n",
        &format!(
            "  unrelated.example:\n    cert: {}\n    key: {}\ntargets:\n",
            q(lab.old.cert.display().to_string()),
            q(lab.old.key.display().to_string())
        ),
    );
    fs::write(&lab.inventory, text).unwrap();
    let out = run_certctl(&lab.inventory, &["deploy", "--hook"], &env_ref);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("certificate `unrelated.example` is named like the renewal, but its `cert`")
            && out
                .stderr
                .contains("point `cert`, `chain` and `key` at the renewed files"),
        "{}",
        out.stderr
    );

    // --hook without any client's variables is a usage error.
    let out = lab.certctl(&["deploy", "--hook"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("none of RENEWED_LINEAGE"),
        "{}",
        out.stderr
    );
}
