//! End to end: the built `certctl` binary with the built-in `postfix` connector, against a real
//! OpenSSH sshd and a real Postfix offering STARTTLS on loopback (tests/it/support/postfix.rs).
//! What is served is checked independently with `openssl s_client -starttls smtp`.

use crate::support;

use std::fs;
use std::path::PathBuf;

use support::mail::{self, MailLab, Starttls, TargetSpec};
use support::postfix::Postfix;

struct Lab {
    mail: MailLab,
    postfix: Postfix,
}

impl Lab {
    /// Postfix serving the OLD certificate; the inventory deploys the NEW one.
    fn start() -> Lab {
        let mail = MailLab::new();
        let postfix = Postfix::start(&mail.old.fullchain, &mail.old.key);
        let lab = Lab { mail, postfix };
        lab.mail.write_inventory(&lab.target());
        lab
    }

    /// The target as an operator would write it: the connector's paths and config dir set,
    /// the probe address set (the port is random), STARTTLS left to the connector (smtp).
    fn target(&self) -> TargetSpec {
        TargetSpec {
            connector: "postfix".into(),
            params: vec![
                param("fullchain_path", self.postfix.cert_path()),
                param("key_path", self.postfix.key_path()),
                param("config_dir", self.postfix.config_dir()),
            ],
            address: self.postfix.addr.to_string(),
            ..TargetSpec::default()
        }
    }

    fn live_files(&self) -> Vec<PathBuf> {
        vec![self.postfix.cert_path(), self.postfix.key_path()]
    }

    fn config_files(&self) -> Vec<PathBuf> {
        vec![self.postfix.main_cf(), self.postfix.master_cf()]
    }

    /// The stable answer of `openssl s_client -starttls smtp` ("" = no certificate).
    fn served(&self) -> String {
        mail::stable_fingerprint(self.postfix.addr, Starttls::Smtp)
    }

    fn deploy(&self, args: &[&str]) -> support::lab::Output {
        let mut argv = vec!["deploy", "--output", "json"];
        argv.extend(args);
        self.mail.certctl(&argv)
    }
}

fn param(name: &str, path: PathBuf) -> (String, String) {
    (name.to_string(), path.display().to_string())
}

#[test]
fn deploy_serves_new_leaf_and_chain_over_starttls_then_second_run_is_unchanged() {
    let lab = Lab::start();
    assert_eq!(
        lab.served(),
        lab.mail.old.fingerprint,
        "starts on the old cert"
    );
    let master = lab.postfix.master_pid().expect("postfix runs");
    let reloads = lab.postfix.reloads();

    let out = lab.deploy(&[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stderr, lab.postfix.maillog());
    let report = out.json();
    let target = &report["targets"][0];
    assert_eq!(target["status"], "deployed", "{}", out.stderr);
    assert_eq!(target["connector"], "postfix");
    assert_eq!(target["old_fingerprint"], lab.mail.old.fingerprint.as_str());
    assert_eq!(target["new_fingerprint"], lab.mail.new.fingerprint.as_str());
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

    // openssl, independently: STARTTLS serves the new leaf AND the intermediate.
    assert_eq!(lab.served(), lab.mail.new.fingerprint);
    assert_eq!(
        mail::served_chain_len(lab.postfix.addr, Starttls::Smtp),
        2,
        "leaf + intermediate"
    );
    assert!(mail::chain_verifies(
        lab.postfix.addr,
        Starttls::Smtp,
        &lab.mail.pki.root_crt()
    ));
    assert_eq!(
        mail::contents(&lab.live_files()),
        [
            lab.mail.new.fullchain_pem(),
            fs::read(&lab.mail.new.key).unwrap()
        ]
    );
    assert_eq!(support::mode(lab.postfix.cert_path()), 0o644);
    assert_eq!(support::mode(lab.postfix.key_path()), 0o600);
    // One `postfix reload` (SIGHUP: the master keeps its PID), one private backup set.
    assert_eq!(
        lab.postfix.reloads(),
        reloads + 1,
        "{}",
        lab.postfix.maillog()
    );
    assert_eq!(lab.postfix.master_pid(), Some(master));
    assert_eq!(lab.mail.backup_sets().len(), 1);
    assert_eq!(support::mode(lab.mail.backup_dir()), 0o700);
    assert!(mail::leftovers(&lab.postfix.dir().join("certs")).is_empty());
    assert!(lab.mail.scratch_dirs().is_empty());

    // Second run: the STARTTLS probe already sees the new certificate; nothing is reloaded.
    let out = lab.deploy(&[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["targets"][0]["status"], "unchanged");
    assert_eq!(lab.postfix.reloads(), reloads + 1);
    assert_eq!(lab.mail.backup_sets().len(), 1);
}

#[test]
fn dry_run_changes_nothing_and_reports_would_change() {
    let lab = Lab::start();
    let files = mail::snapshot(&lab.live_files());
    let config = mail::snapshot(&lab.config_files());
    let master = lab.postfix.master_pid().expect("postfix runs");
    let reloads = lab.postfix.reloads();

    let out = lab.deploy(&["--dry-run"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stderr, lab.postfix.maillog());
    let report = out.json();
    assert_eq!(report["dry_run"], true);
    let target = &report["targets"][0];
    assert_eq!(target["status"], "would-change", "{}", out.stderr);
    let reported = target["files"].as_array().unwrap();
    assert_eq!(reported.len(), 2);
    assert!(reported.iter().all(|f| f["action"] == "replace"));
    assert_eq!(reported[0]["role"], "fullchain");
    assert_eq!(
        reported[0]["old_fingerprint"],
        lab.mail.old.fingerprint.as_str()
    );
    assert_eq!(
        reported[0]["new_fingerprint"],
        lab.mail.new.fingerprint.as_str()
    );
    assert_eq!(reported[0]["chain_length"], 1);
    // The preview ran (openssl on the staged pair, postconf, postfix check), nothing after it.
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
        mail::snapshot(&lab.config_files()),
        config,
        "config unchanged"
    );
    assert_eq!(lab.postfix.master_pid(), Some(master), "same master");
    assert_eq!(lab.postfix.reloads(), reloads, "postfix not reloaded");
    assert_eq!(lab.served(), lab.mail.old.fingerprint);
    assert!(mail::leftovers(&lab.postfix.dir().join("certs")).is_empty());
    assert!(lab.mail.scratch_dirs().is_empty());
    assert!(lab.mail.backup_sets().is_empty());
}

#[test]
fn key_only_the_targets_openssl_rejects_is_would_fail_in_dry_run_and_never_swapped() {
    // A key certctl's own (ring) check reads but OpenSSL 3.0 — and so postfix — cannot: smtpd
    // would silently stop offering STARTTLS. The fixture is byte-for-byte what ring writes.
    support::mail::assert_fixture_is_rings_ed25519_layout();
    let lab = Lab::start();
    let mut target = lab.target();
    target.material = Some(lab.mail.ed25519_key_openssl_cannot_read());
    lab.mail.write_inventory(&target);
    let files = mail::snapshot(&lab.live_files());
    let reloads = lab.postfix.reloads();

    let out = lab.deploy(&["--dry-run"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let report = out.json();
    let target = &report["targets"][0];
    assert_eq!(target["status"], "would-fail", "{}", out.stderr);
    let error = target["error"].as_str().unwrap();
    assert!(error.starts_with("preview failed"), "{error}");
    assert!(
        error.contains("the target's openssl cannot read the staged private key"),
        "{error}"
    );
    assert!(error.contains("nothing live was changed"), "{error}");
    assert!(!error.contains("PRIVATE KEY"), "no key material: {error}");

    // A real run stops at the same place: failed, nothing swapped, nothing reloaded.
    let out = lab.deploy(&[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let target = &out.json()["targets"][0];
    assert_eq!(target["status"], "failed", "{}", out.stderr);
    assert!(!mail::steps(target).contains(&"swap".to_string()));

    assert_eq!(mail::snapshot(&lab.live_files()), files);
    assert_eq!(lab.postfix.reloads(), reloads);
    assert_eq!(lab.served(), lab.mail.old.fingerprint);
    assert!(mail::leftovers(&lab.postfix.dir().join("certs")).is_empty());
    assert!(lab.mail.scratch_dirs().is_empty());
}

#[test]
fn dry_run_with_broken_main_cf_is_would_fail_with_postconfs_message() {
    let lab = Lab::start();
    // Break main.cf after postfix started: the running server is fine, its config is not.
    // `postfix check` alone would exit 1 without a word (no TTY, and it cannot read
    // maillog_file from a main.cf it cannot parse); postconf says why on stderr.
    let main_cf = fs::read_to_string(lab.postfix.main_cf()).unwrap();
    fs::write(
        lab.postfix.main_cf(),
        format!("{main_cf}smtpd_tls_cert_file /forgot/the/equals.pem\n"),
    )
    .unwrap();
    assert!(
        !lab.postfix.check().status.success(),
        "postfix check fails too"
    );
    let files = mail::snapshot(&lab.live_files());
    let reloads = lab.postfix.reloads();

    let out = lab.deploy(&["--dry-run"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let target = &out.json()["targets"][0];
    assert_eq!(target["status"], "would-fail", "{}", out.stderr);
    let error = target["error"].as_str().unwrap();
    assert!(error.starts_with("preview failed"), "{error}");
    assert!(
        error.contains("missing '=' after attribute name"),
        "postconf's reason is shown: {error}"
    );
    assert!(out.stderr.contains("missing '='"), "{}", out.stderr);
    assert_eq!(mail::snapshot(&lab.live_files()), files);
    assert_eq!(lab.postfix.reloads(), reloads);
    assert_eq!(lab.served(), lab.mail.old.fingerprint);
    assert!(mail::leftovers(&lab.postfix.dir().join("certs")).is_empty());
}

#[test]
fn reload_that_silently_drops_starttls_is_caught_by_the_probe_and_rolled_back() {
    // A realistic slip: the inventory's key_path is not the file main.cf loads. Every check
    // passes (the staged pair matches, postfix check, reload exit 0), but smtpd now pairs the
    // new certificate with the old key, logs "disabling TLS support" and refuses STARTTLS.
    // Only the probe notices.
    let lab = Lab::start();
    let stray_key = lab.postfix.dir().join("certs/stray.key");
    let mut target = lab.target();
    target.params[1] = param("key_path", stray_key.clone());
    // The binding check would refuse this at inspect, before anything is touched
    // (tests/it/binding_mail.rs); off, to prove the probe still catches what main.cf loads.
    target.params.push(("binding_check".into(), "false".into()));
    lab.mail.write_inventory(&target);
    let files = mail::contents(&lab.live_files());
    let master = lab.postfix.master_pid().expect("postfix runs");

    let out = lab.deploy(&[]);
    assert_eq!(out.code, 1, "{}\n{}", out.stderr, lab.postfix.maillog());
    let report = out.json();
    let target = &report["targets"][0];
    assert_eq!(target["status"], "rolled-back", "{}", out.stderr);
    let error = target["error"].as_str().unwrap();
    assert!(error.starts_with("verify failed"), "{error}");
    // smtpd either stops offering STARTTLS or answers it with "454 4.7.0 TLS not available
    // due to local problem"; the probe reports which.
    assert!(error.contains("STARTTLS"), "the probe says why: {error}");
    assert!(error.contains("restored"), "{error}");
    assert!(
        lab.postfix.maillog().contains("disabling TLS support"),
        "postfix broke TLS while its reload returned 0:\n{}",
        lab.postfix.maillog()
    );
    let steps = mail::steps(target);
    assert!(steps.contains(&"rollback".to_string()), "{steps:?}");

    // Previous files back byte-for-byte, the file that did not exist is gone, the old
    // certificate and chain served again, by the same running master.
    assert_eq!(mail::contents(&lab.live_files()), files);
    assert!(!stray_key.exists(), "the created key file is removed");
    assert_eq!(lab.served(), lab.mail.old.fingerprint);
    assert!(mail::chain_verifies(
        lab.postfix.addr,
        Starttls::Smtp,
        &lab.mail.pki.root_crt()
    ));
    assert_eq!(lab.postfix.master_pid(), Some(master));
    assert!(mail::leftovers(&lab.postfix.dir().join("certs")).is_empty());
    assert!(lab.mail.scratch_dirs().is_empty());
}
