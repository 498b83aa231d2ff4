//! End to end: the built `certctl` binary with the built-in `apache` connector against a real
//! OpenSSH sshd and a real apache2 (mod_ssl) on loopback, both started by the test support
//! code. Served certificates are checked with `openssl s_client`, independently of certctl.

use crate::support;

use std::fs;

use support::apache::Apache;
use support::tls_lab::{
    Material, SNI, TargetSpec, TlsLab, cert_count, contents, deploy_steps, find_step, leftovers,
    snapshot, target, verified,
};

/// A lab whose apache starts on the OLD certificate.
struct ApacheLab {
    lab: TlsLab,
    apache: Apache,
}

impl ApacheLab {
    fn start() -> ApacheLab {
        let lab = TlsLab::start();
        let apache = Apache::start(SNI, &lab.old.cert, &lab.old.chain, &lab.old.key);
        assert_eq!(
            apache.served_fingerprint(SNI).as_deref(),
            Some(lab.old.fingerprint.as_str()),
            "apache starts on the old certificate"
        );
        ApacheLab { lab, apache }
    }

    /// Writes the inventory for deploying `material`, with per-target command overrides.
    fn target(&self, material: &Material, commands: &[(&str, Vec<Vec<String>>)]) {
        let a = &self.apache;
        let path = |p: std::path::PathBuf| p.display().to_string();
        let spec = TargetSpec {
            connector: "apache".into(),
            params: vec![
                ("cert_path".into(), path(a.cert_path())),
                ("chain_path".into(), path(a.chain_path())),
                ("key_path".into(), path(a.key_path())),
                ("apache_confdir".into(), path(a.dir().to_path_buf())),
                ("pid_file".into(), path(a.pid_file())),
            ],
            commands: commands
                .iter()
                .map(|(s, c)| (s.to_string(), c.clone()))
                .collect(),
            address: a.addr.to_string(),
        };
        self.lab.write_inventory(material, &spec);
    }

    /// Graceful restarts apache has logged so far (`AH00493: SIGUSR1 received`).
    fn graceful_restarts(&self) -> usize {
        self.apache.error_log().matches("AH00493").count()
    }

    fn served(&self) -> Option<String> {
        self.apache.served_fingerprint(SNI)
    }

    fn served_chain_len(&self) -> usize {
        cert_count(&self.apache.s_client(SNI, &["-showcerts"]))
    }

    fn chain_verifies(&self) -> bool {
        let root = self.lab.pki.root_crt().display().to_string();
        verified(
            &self
                .apache
                .s_client(SNI, &["-CAfile", &root, "-verify_return_error"]),
        )
    }
}

#[test]
fn deploy_serves_new_leaf_and_chain_then_second_run_is_unchanged() {
    let l = ApacheLab::start();
    l.target(&l.lab.new, &[]);
    let master = l.apache.running_master();
    assert!(master.is_some(), "apache runs");

    let out = l.lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let t = target(&out);
    assert_eq!(t["status"], "deployed", "{}", out.stderr);
    assert_eq!(t["old_fingerprint"], l.lab.old.fingerprint.as_str());
    assert_eq!(t["served_fingerprint"], l.lab.new.fingerprint.as_str());
    assert_eq!(
        deploy_steps(&t),
        [
            "stage", "preview", "backup", "swap", "test", "reload", "verify"
        ]
    );

    // openssl sees the new leaf, and the intermediate from the chain file: 2 certificates,
    // and the chain verifies up to the test root.
    assert_eq!(l.served().as_deref(), Some(l.lab.new.fingerprint.as_str()));
    assert_eq!(l.served_chain_len(), 2, "leaf + intermediate served");
    assert!(l.chain_verifies(), "the served chain verifies to the root");
    // Three separate files, byte for byte; modes kept (the key never readable by others).
    assert_eq!(
        contents(&l.apache.live_paths()),
        contents(&[
            l.lab.new.cert.clone(),
            l.lab.new.chain.clone(),
            l.lab.new.key.clone()
        ])
    );
    let modes: Vec<u32> = l.apache.live_paths().iter().map(support::mode).collect();
    assert_eq!(modes, [0o644, 0o644, 0o600]);
    // A graceful restart: same master, one more generation.
    assert_eq!(l.graceful_restarts(), 1);
    assert_eq!(l.apache.running_master(), master, "the master survived");
    assert_eq!(l.lab.backup_sets().len(), 1);
    assert!(leftovers(&l.apache.dir().join("certs")).is_empty());
    assert!(l.lab.scratch_dirs().is_empty(), "no scratch directory left");

    // Second run: nothing to do, no graceful.
    let out = l.lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(target(&out)["status"], "unchanged");
    assert_eq!(
        l.graceful_restarts(),
        1,
        "an unchanged target is not reloaded"
    );
}

#[test]
fn dry_run_changes_nothing_and_reports_would_change() {
    let l = ApacheLab::start();
    l.target(&l.lab.new, &[]);
    let before = snapshot(&l.apache.live_paths());

    let out = l.lab.certctl(&["deploy", "--dry-run", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report = out.json();
    assert_eq!(report["dry_run"], true);
    let t = target(&out);
    assert_eq!(t["status"], "would-change", "{}", out.stderr);
    let files = t["files"].as_array().unwrap();
    let roles: Vec<&str> = files.iter().map(|f| f["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["cert", "chain", "key"]);
    // Old and new leaves come from the same intermediate: the chain file stays as it is.
    let actions: Vec<&str> = files
        .iter()
        .map(|f| f["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["replace", "unchanged", "replace"]);
    assert_eq!(files[0]["new_fingerprint"], l.lab.new.fingerprint.as_str());
    assert_eq!(files[0]["old_fingerprint"], l.lab.old.fingerprint.as_str());
    assert_eq!(
        deploy_steps(&t),
        ["stage", "preview"],
        "a dry run stops after the preview"
    );

    assert_eq!(
        snapshot(&l.apache.live_paths()),
        before,
        "live files byte-identical, same mtime"
    );
    assert_eq!(l.graceful_restarts(), 0, "apache not reloaded");
    assert_eq!(l.served().as_deref(), Some(l.lab.old.fingerprint.as_str()));
    assert!(leftovers(&l.apache.dir().join("certs")).is_empty());
    assert!(l.lab.scratch_dirs().is_empty());
    assert!(l.lab.backup_sets().is_empty(), "a dry run takes no backup");
}

/// A leaf signed with SHA-1 passes certctl's local checks and `apachectl configtest`, but
/// apache's OpenSSL (security level 2) refuses to load it. The preview's openssl check on the
/// target sees it in the STAGED files.
#[test]
fn dry_run_of_a_leaf_apache_cannot_load_is_would_fail_from_the_target_openssl() {
    let l = ApacheLab::start();
    let sha1 = l.lab.sha1_signed();
    l.target(&sha1, &[]);
    let before = snapshot(&l.apache.live_paths());

    let out = l.lab.certctl(&["deploy", "--dry-run", "--output", "json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let t = target(&out);
    assert_eq!(t["status"], "would-fail", "{}", out.stderr);
    let error = t["error"].as_str().unwrap();
    assert!(error.starts_with("preview failed"), "{error}");
    assert!(
        error.contains("CA signature digest algorithm too weak"),
        "openssl's reason is shown: {error}"
    );
    assert!(
        error.contains("does not pass OpenSSL security level 2"),
        "{error}"
    );

    assert_eq!(snapshot(&l.apache.live_paths()), before);
    assert_eq!(l.graceful_restarts(), 0);
    assert_eq!(l.served().as_deref(), Some(l.lab.old.fingerprint.as_str()));
    assert!(leftovers(&l.apache.dir().join("certs")).is_empty());
    assert!(l.lab.scratch_dirs().is_empty());
}

#[test]
fn dry_run_with_broken_live_config_is_would_fail_with_apache_message() {
    let l = ApacheLab::start();
    l.target(&l.lab.new, &[]);
    // The running server is fine; its config on disk no longer is.
    let conf = fs::read_to_string(l.apache.conf_path()).unwrap();
    fs::write(l.apache.conf_path(), format!("{conf}BogusDirective on\n")).unwrap();
    let before = snapshot(&l.apache.live_paths());

    let out = l.lab.certctl(&["deploy", "--dry-run", "--output", "json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let t = target(&out);
    assert_eq!(t["status"], "would-fail");
    let error = t["error"].as_str().unwrap();
    assert!(
        error.contains("Invalid command 'BogusDirective'"),
        "{error}"
    );
    assert_eq!(snapshot(&l.apache.live_paths()), before);
    assert_eq!(l.graceful_restarts(), 0);
    assert_eq!(l.served().as_deref(), Some(l.lab.old.fingerprint.as_str()));
}

/// The operator's preview only runs `apachectl configtest` (what playbooks do), so the SHA-1
/// leaf reaches the live files; configtest passes, `apachectl graceful` returns 0, and apache
/// exits. certctl must notice, restore the old files, get apache running again and prove the
/// old certificate is served. `rollback_reload` is the detail the rollback's reload step must
/// report: which way apache came back.
fn dead_after_graceful_is_restarted_on_the_old_files(
    reload: Option<Vec<Vec<String>>>,
    rollback_reload: &str,
) {
    let l = ApacheLab::start();
    let sha1 = l.lab.sha1_signed();
    let mut commands = vec![("preview", vec![l.apache.apachectl_argv(&["configtest"])])];
    if let Some(reload) = reload {
        commands.push(("reload", reload));
    }
    l.target(&sha1, &commands);
    let before = contents(&l.apache.live_paths());

    let out = l.lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let t = target(&out);
    assert_eq!(t["status"], "rolled-back", "{}", out.stderr);
    let error = t["error"].as_str().unwrap();
    // Caught by the `alive` check right after the reload, or by the probe once apache is gone.
    assert!(
        error.starts_with("reload failed: the server is not running after the reload")
            || error.starts_with("verify failed"),
        "{error}"
    );
    assert!(error.contains("restored"), "{error}");
    let (rollback, _) = find_step(&t, "rollback", 0);
    let (_, restart) = find_step(&t, "reload", rollback);
    assert_eq!(restart["status"], "ok", "{restart}");
    assert_eq!(restart["detail"], rollback_reload, "{restart}");

    // apache really died on the new files…
    assert!(
        l.apache.foreground_exit().is_some(),
        "the original master exited"
    );
    let log = l.apache.error_log();
    assert!(log.contains("ca md too weak"), "{log}");
    assert!(log.contains("AH00020: Configuration Failed"), "{log}");
    // …and runs again, on the previous files, serving the old leaf and chain.
    assert_eq!(
        contents(&l.apache.live_paths()),
        before,
        "restored byte-for-byte"
    );
    let master = l.apache.running_master();
    assert!(master.is_some(), "apache runs again");
    assert_ne!(master, Some(l.apache.foreground_pid()));
    assert_eq!(l.served().as_deref(), Some(l.lab.old.fingerprint.as_str()));
    assert!(l.chain_verifies());
    assert!(leftovers(&l.apache.dir().join("certs")).is_empty());
    assert!(l.lab.scratch_dirs().is_empty());
}

#[test]
fn apache_that_dies_on_graceful_is_restarted_on_the_old_files_and_rolled_back() {
    // The connector's reload: `apachectl graceful`, which also starts a stopped server.
    dead_after_graceful_is_restarted_on_the_old_files(None, "reloaded; the server is running");
}

#[test]
fn apache_that_dies_on_a_signal_reload_is_started_by_the_rollback() {
    // A reload that only signals the master (USR1 = graceful) cannot revive a dead apache:
    // the rollback's `alive` check fails and the connector's `start` runs.
    let reload = vec![vec![
        "pkill".into(),
        "--signal".into(),
        "USR1".into(),
        "--pidfile".into(),
        "{pid_file}".into(),
    ]];
    dead_after_graceful_is_restarted_on_the_old_files(
        Some(reload),
        "the server had stopped; started it again on the previous files",
    );
}
