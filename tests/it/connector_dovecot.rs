//! End to end: the built `certctl` binary with the built-in `dovecot` connector, against a real
//! OpenSSH sshd and a real Dovecot (IMAPS + IMAP with STARTTLS) on loopback
//! (tests/it/support/dovecot.rs). What is served is checked independently with
//! `openssl s_client`, on IMAPS and with `-starttls imap`.

use crate::support;

use std::fs;
use std::path::PathBuf;

use support::dovecot::Dovecot;
use support::mail::{self, MailLab, Starttls, TargetSpec};

struct Lab {
    mail: MailLab,
    dovecot: Dovecot,
}

/// Which listener certctl's probe uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// IMAPS; `verify.starttls` left to the connector (none).
    Imaps,
    /// The IMAP port with `verify.starttls: imap`.
    StartTlsImap,
}

impl Lab {
    /// Dovecot serving the OLD certificate; the inventory deploys the NEW one.
    fn start(probe: Probe) -> Lab {
        let mail = MailLab::new();
        let dovecot = Dovecot::start(&mail.old.fullchain, &mail.old.key);
        let lab = Lab { mail, dovecot };
        lab.mail.write_inventory(&lab.target(probe));
        lab
    }

    fn target(&self, probe: Probe) -> TargetSpec {
        let (address, starttls) = match probe {
            Probe::Imaps => (self.dovecot.imaps, None),
            Probe::StartTlsImap => (self.dovecot.imap, Some("imap".to_string())),
        };
        TargetSpec {
            connector: "dovecot".into(),
            params: vec![
                param("fullchain_path", self.dovecot.cert_path()),
                param("key_path", self.dovecot.key_path()),
                param("config_file", self.dovecot.config_file()),
            ],
            address: address.to_string(),
            starttls,
            ..TargetSpec::default()
        }
    }

    fn live_files(&self) -> Vec<PathBuf> {
        vec![self.dovecot.cert_path(), self.dovecot.key_path()]
    }

    /// The stable answer of `openssl s_client` on IMAPS or with `-starttls imap`.
    fn served(&self, mode: Starttls) -> String {
        mail::stable_fingerprint(self.dovecot.addr(mode), mode)
    }

    fn deploy(&self, args: &[&str]) -> support::lab::Output {
        let mut argv = vec!["deploy", "--output", "json"];
        argv.extend(args);
        self.mail.certctl(&argv)
    }

    /// Both listeners serve `fingerprint` with the intermediate, verifiable up to the root.
    fn assert_served_everywhere(&self, fingerprint: &str) {
        for mode in [Starttls::None, Starttls::Imap] {
            assert_eq!(self.served(mode), fingerprint, "{mode:?}");
            let addr = self.dovecot.addr(mode);
            assert_eq!(
                mail::served_chain_len(addr, mode),
                2,
                "{mode:?}: leaf + intermediate"
            );
            assert!(
                mail::chain_verifies(addr, mode, &self.mail.pki.root_crt()),
                "{mode:?}: chain verifies"
            );
        }
    }
}

fn param(name: &str, path: PathBuf) -> (String, String) {
    (name.to_string(), path.display().to_string())
}

/// Deploys and checks everything a successful deploy must leave behind.
fn assert_deploys(lab: &Lab) {
    assert_eq!(lab.served(Starttls::None), lab.mail.old.fingerprint);
    let master = lab.dovecot.master_pid().expect("dovecot runs");
    let reloads = lab.dovecot.reloads();

    let out = lab.deploy(&[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stderr, lab.dovecot.log());
    let report = out.json();
    let target = &report["targets"][0];
    assert_eq!(target["status"], "deployed", "{}", out.stderr);
    assert_eq!(target["connector"], "dovecot");
    assert_eq!(target["old_fingerprint"], lab.mail.old.fingerprint.as_str());
    assert_eq!(
        target["served_fingerprint"],
        lab.mail.new.fingerprint.as_str()
    );
    assert_eq!(
        mail::steps(target),
        [
            "connect", "lock", "inspect", "stage", "preview", "backup", "swap", "test", "reload",
            "verify", "cleanup"
        ]
    );
    assert!(!target["probes"].as_array().unwrap().is_empty());

    lab.assert_served_everywhere(&lab.mail.new.fingerprint);
    assert_eq!(
        mail::contents(&lab.live_files()),
        [
            lab.mail.new.fullchain_pem(),
            fs::read(&lab.mail.new.key).unwrap()
        ]
    );
    assert_eq!(support::mode(lab.dovecot.cert_path()), 0o644);
    assert_eq!(support::mode(lab.dovecot.key_path()), 0o600);
    // One `doveadm reload` (SIGHUP: same master), one private backup set, nothing left over.
    assert_eq!(lab.dovecot.reloads(), reloads + 1, "{}", lab.dovecot.log());
    assert_eq!(lab.dovecot.master_pid(), Some(master));
    assert_eq!(lab.mail.backup_sets().len(), 1);
    assert_eq!(support::mode(lab.mail.backup_dir()), 0o700);
    assert!(mail::leftovers(&lab.dovecot.dir().join("certs")).is_empty());
    assert!(lab.mail.scratch_dirs().is_empty());

    // Second run: the probe (IMAPS or STARTTLS, whichever the target uses) already sees the
    // new certificate and chain: unchanged, no reload, no backup.
    let out = lab.deploy(&[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["targets"][0]["status"], "unchanged");
    assert_eq!(lab.dovecot.reloads(), reloads + 1);
    assert_eq!(lab.mail.backup_sets().len(), 1);
}

#[test]
fn deploy_verified_over_imaps_serves_new_leaf_and_chain_on_both_listeners() {
    assert_deploys(&Lab::start(Probe::Imaps));
}

#[test]
fn deploy_verified_over_starttls_imap_serves_new_leaf_and_chain_on_both_listeners() {
    assert_deploys(&Lab::start(Probe::StartTlsImap));
}

#[test]
fn dry_run_changes_nothing_and_reports_would_change() {
    let lab = Lab::start(Probe::Imaps);
    let files = mail::snapshot(&lab.live_files());
    let config = mail::snapshot(&[lab.dovecot.config_file()]);
    let master = lab.dovecot.master_pid().expect("dovecot runs");
    let reloads = lab.dovecot.reloads();

    let out = lab.deploy(&["--dry-run"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stderr, lab.dovecot.log());
    let report = out.json();
    assert_eq!(report["dry_run"], true);
    let target = &report["targets"][0];
    assert_eq!(target["status"], "would-change", "{}", out.stderr);
    let reported = target["files"].as_array().unwrap();
    assert_eq!(reported.len(), 2);
    assert!(reported.iter().all(|f| f["action"] == "replace"));
    assert_eq!(
        reported[0]["old_fingerprint"],
        lab.mail.old.fingerprint.as_str()
    );
    assert_eq!(
        reported[0]["new_fingerprint"],
        lab.mail.new.fingerprint.as_str()
    );
    assert_eq!(
        mail::steps(target),
        ["connect", "lock", "inspect", "stage", "preview", "cleanup"]
    );

    assert_eq!(
        mail::snapshot(&lab.live_files()),
        files,
        "live files byte-identical, same mtime"
    );
    assert_eq!(
        mail::snapshot(&[lab.dovecot.config_file()]),
        config,
        "config unchanged"
    );
    assert_eq!(lab.dovecot.master_pid(), Some(master), "same master");
    assert_eq!(lab.dovecot.reloads(), reloads, "dovecot not reloaded");
    assert_eq!(lab.served(Starttls::None), lab.mail.old.fingerprint);
    assert_eq!(lab.served(Starttls::Imap), lab.mail.old.fingerprint);
    assert!(mail::leftovers(&lab.dovecot.dir().join("certs")).is_empty());
    assert!(lab.mail.scratch_dirs().is_empty());
    assert!(lab.mail.backup_sets().is_empty());
}

#[test]
fn key_only_the_targets_openssl_rejects_is_would_fail_in_dry_run_and_never_swapped() {
    // A key certctl's own (ring) check reads but OpenSSL 3.0 — and so dovecot — cannot: every
    // handshake would fail after a reload that returns 0.
    support::mail::assert_fixture_is_rings_ed25519_layout();
    let lab = Lab::start(Probe::Imaps);
    let mut target = lab.target(Probe::Imaps);
    target.material = Some(lab.mail.ed25519_key_openssl_cannot_read());
    lab.mail.write_inventory(&target);
    let files = mail::snapshot(&lab.live_files());
    let reloads = lab.dovecot.reloads();

    let out = lab.deploy(&["--dry-run"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let target = &out.json()["targets"][0];
    assert_eq!(target["status"], "would-fail", "{}", out.stderr);
    let error = target["error"].as_str().unwrap();
    assert!(error.starts_with("preview failed"), "{error}");
    assert!(
        error.contains("the target's openssl cannot read the staged private key"),
        "{error}"
    );
    assert!(!error.contains("PRIVATE KEY"), "no key material: {error}");

    assert_eq!(mail::snapshot(&lab.live_files()), files);
    assert_eq!(lab.dovecot.reloads(), reloads);
    assert_eq!(lab.served(Starttls::None), lab.mail.old.fingerprint);
    assert!(mail::leftovers(&lab.dovecot.dir().join("certs")).is_empty());
    assert!(lab.mail.scratch_dirs().is_empty());
}

#[test]
fn dry_run_with_broken_live_config_is_would_fail_with_doveconfs_message() {
    let lab = Lab::start(Probe::Imaps);
    // Break the config after dovecot started: the running server is fine, its config is not
    // (a DH parameter file that was never created: dovecot could not start again).
    let conf = fs::read_to_string(lab.dovecot.config_file()).unwrap();
    let dh = lab.dovecot.dir().join("dh.pem");
    fs::write(
        lab.dovecot.config_file(),
        format!("{conf}ssl_dh = <{}\n", dh.display()),
    )
    .unwrap();
    assert!(
        !lab.dovecot.test_config().status.success(),
        "doveconf -x fails too"
    );
    let files = mail::snapshot(&lab.live_files());
    let reloads = lab.dovecot.reloads();

    let out = lab.deploy(&["--dry-run"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let target = &out.json()["targets"][0];
    assert_eq!(target["status"], "would-fail", "{}", out.stderr);
    let error = target["error"].as_str().unwrap();
    assert!(error.starts_with("preview failed"), "{error}");
    assert!(
        error.contains(&format!("ssl_dh: Can't open file {}", dh.display())),
        "doveconf's reason is shown: {error}"
    );
    assert!(out.stderr.contains("ssl_dh"), "{}", out.stderr);
    assert_eq!(mail::snapshot(&lab.live_files()), files);
    assert_eq!(lab.dovecot.reloads(), reloads);
    assert_eq!(lab.served(Starttls::None), lab.mail.old.fingerprint);
    assert!(mail::leftovers(&lab.dovecot.dir().join("certs")).is_empty());
}

#[test]
fn reload_that_breaks_tls_is_caught_by_the_starttls_probe_and_rolled_back() {
    // A realistic slip: the inventory's key_path is not the file dovecot.conf loads. Every
    // check passes (the staged pair matches, doveconf -x, doveadm reload exit 0), but dovecot
    // now pairs the new certificate with the old key and every handshake fails. Only the
    // probe — here over STARTTLS on the IMAP port — notices.
    let lab = Lab::start(Probe::StartTlsImap);
    let stray_key = lab.dovecot.dir().join("certs/stray.key");
    let mut target = lab.target(Probe::StartTlsImap);
    target.params[1] = param("key_path", stray_key.clone());
    // The binding check would refuse this at inspect, before anything is touched
    // (tests/it/binding_mail.rs); off, to prove the probe still catches what dovecot.conf loads.
    target.params.push(("binding_check".into(), "false".into()));
    lab.mail.write_inventory(&target);
    let files = mail::contents(&lab.live_files());
    let master = lab.dovecot.master_pid().expect("dovecot runs");
    let reloads = lab.dovecot.reloads();

    let out = lab.deploy(&[]);
    assert_eq!(out.code, 1, "{}\n{}", out.stderr, lab.dovecot.log());
    let report = out.json();
    let target = &report["targets"][0];
    assert_eq!(target["status"], "rolled-back", "{}", out.stderr);
    let error = target["error"].as_str().unwrap();
    assert!(error.starts_with("verify failed"), "{error}");
    assert!(error.contains("restored"), "{error}");
    assert!(
        lab.dovecot
            .log()
            .contains("Key is for a different cert than ssl_cert"),
        "dovecot broke TLS while its reload returned 0:\n{}",
        lab.dovecot.log()
    );
    let steps = mail::steps(target);
    assert!(steps.contains(&"rollback".to_string()), "{steps:?}");
    // Reloaded once for the deploy and once after restoring.
    assert_eq!(lab.dovecot.reloads(), reloads + 2, "{}", lab.dovecot.log());

    // Previous files back byte-for-byte, the created file gone, the old certificate and chain
    // served again on both listeners by the same running master.
    assert_eq!(mail::contents(&lab.live_files()), files);
    assert!(!stray_key.exists(), "the created key file is removed");
    lab.assert_served_everywhere(&lab.mail.old.fingerprint);
    assert_eq!(lab.dovecot.master_pid(), Some(master));
    assert!(mail::leftovers(&lab.dovecot.dir().join("certs")).is_empty());
    assert!(lab.mail.scratch_dirs().is_empty());
}
