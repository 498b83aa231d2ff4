//! End to end: the built `certctl` binary with the built-in `envoy` connector against a real
//! OpenSSH sshd and a real envoy 1.40 on loopback (one TLS listener whose certificate comes
//! from a file-based SDS secret), both started by the test support code. envoy has no reload
//! command: it watches the SDS file and the files it names. The preview has the same envoy
//! binary validate a bootstrap that loads the staged pair. Served certificates are checked with
//! `openssl s_client`, independently of certctl.

use crate::support;

use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::envoy::{Envoy, sds_config};
use support::tls_lab::{
    Material, SNI, TargetSpec, TlsLab, cert_count, contents, deploy_steps, find_step, leftovers,
    snapshot, target, verified,
};

/// How long an independent probe waits for envoy to act on a rename.
const SETTLE: Duration = Duration::from_secs(10);

/// A lab whose envoy starts on the OLD certificate.
struct EnvoyLab {
    lab: TlsLab,
    envoy: Envoy,
}

impl EnvoyLab {
    fn start() -> EnvoyLab {
        let lab = TlsLab::start();
        let envoy = Envoy::start(&lab.old.fullchain, &lab.old.key);
        EnvoyLab { lab, envoy }
    }

    /// Writes the inventory for deploying `material` (with the `envoy` param: the preview
    /// runs `envoy --mode validate`), with per-target command overrides.
    fn target(&self, material: &Material, commands: &[(&str, Vec<Vec<String>>)]) {
        let e = &self.envoy;
        let path = |p: PathBuf| p.display().to_string();
        let spec = TargetSpec {
            connector: "envoy".into(),
            params: vec![
                ("fullchain_path".into(), path(e.fullchain_path())),
                ("key_path".into(), path(e.key_path())),
                ("sds_path".into(), path(e.sds_path())),
                ("envoy".into(), path(support::envoy::binary())),
            ],
            commands: commands
                .iter()
                .map(|(s, c)| (s.to_string(), c.clone()))
                .collect(),
            address: e.addr.to_string(),
        };
        self.lab.write_inventory(material, &spec);
    }

    fn live_paths(&self) -> [PathBuf; 2] {
        [self.envoy.fullchain_path(), self.envoy.key_path()]
    }

    fn served(&self) -> Option<String> {
        self.envoy.served_fingerprint(SNI)
    }

    fn served_settled(&self, want: &Material) -> Option<String> {
        self.envoy.wait_served(SNI, &want.fingerprint, SETTLE)
    }

    fn chain_verifies(&self) -> bool {
        let root = self.lab.pki.root_crt().display().to_string();
        verified(
            &self
                .envoy
                .s_client(SNI, &["-CAfile", &root, "-verify_return_error"]),
        )
    }

    fn dirs(&self) -> [PathBuf; 2] {
        [self.envoy.dir().join("certs"), self.envoy.dir().join("sds")]
    }

    fn no_leftovers(&self) -> bool {
        self.dirs().iter().all(|d| leftovers(d).is_empty())
    }
}

/// (seconds, nanoseconds) of the last inode change: a rename sets it on the moved file.
fn ctime(path: &Path) -> (i64, i64) {
    let m = fs::metadata(path).unwrap();
    (m.ctime(), m.ctime_nsec())
}

#[test]
fn deploy_serves_new_leaf_and_chain_then_second_run_is_unchanged() {
    let mut l = EnvoyLab::start();
    l.target(&l.lab.new, &[]);
    let pid = l.envoy.pid();

    let out = l.lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let t = target(&out);
    assert_eq!(t["status"], "deployed", "{}", out.stderr);
    assert_eq!(t["old_fingerprint"], l.lab.old.fingerprint.as_str());
    assert_eq!(t["served_fingerprint"], l.lab.new.fingerprint.as_str());
    let (_, preview) = find_step(&t, "preview", 0);
    assert_eq!(
        preview["detail"], "2 command(s) ok",
        "openssl and envoy --mode validate"
    );

    assert_eq!(l.served().as_deref(), Some(l.lab.new.fingerprint.as_str()));
    assert_eq!(
        cert_count(&l.envoy.s_client(SNI, &["-showcerts"])),
        2,
        "leaf + intermediate served"
    );
    assert!(l.chain_verifies(), "the served chain verifies to the root");
    assert_eq!(
        contents(&l.live_paths()),
        contents(&[l.lab.new.fullchain.clone(), l.lab.new.key.clone()])
    );
    let sds = l.envoy.sds_path();
    assert_eq!(
        fs::read_to_string(&sds).unwrap(),
        sds_config(&l.envoy.fullchain_path(), &l.envoy.key_path())
    );
    assert_eq!(support::mode(&sds), 0o644);
    assert_eq!(support::mode(l.envoy.key_path()), 0o600);
    assert!(
        ctime(&sds) >= ctime(&l.envoy.fullchain_path())
            && ctime(&sds) >= ctime(&l.envoy.key_path()),
        "the SDS file is moved into place after the certificate and key"
    );
    assert!(l.envoy.running());
    assert_eq!(l.envoy.pid(), pid, "the same envoy, no restart");
    assert!(l.no_leftovers());
    assert!(l.lab.scratch_dirs().is_empty());

    let out = l.lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(target(&out)["status"], "unchanged", "{}", out.stderr);
}

#[test]
fn dry_run_changes_nothing_and_reports_would_change() {
    let l = EnvoyLab::start();
    l.target(&l.lab.new, &[]);
    let all = [
        l.envoy.fullchain_path(),
        l.envoy.key_path(),
        l.envoy.sds_path(),
    ];
    let before = snapshot(&all);

    let out = l.lab.certctl(&["deploy", "--dry-run", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let t = target(&out);
    assert_eq!(t["status"], "would-change", "{}", out.stderr);
    assert_eq!(deploy_steps(&t), ["stage", "preview"]);

    assert_eq!(
        snapshot(&all),
        before,
        "live files byte-identical, same mtime"
    );
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(l.served().as_deref(), Some(l.lab.old.fingerprint.as_str()));
    assert!(l.no_leftovers());
    assert!(l.lab.scratch_dirs().is_empty());
    assert!(l.lab.backup_sets().is_empty());
}

/// The staged key is replaced by another one after certctl's local checks (the first preview
/// command, overridden, stands in for whatever damaged it): the target's envoy refuses to load
/// the staged pair in `--mode validate`, and nothing live is touched.
#[test]
fn dry_run_of_a_pair_envoy_refuses_is_would_fail_with_envoy_message() {
    let l = EnvoyLab::start();
    let wrong_key = l.lab.pki.wrong_key().display().to_string();
    l.target(
        &l.lab.new,
        &[(
            "preview",
            vec![
                vec!["cp".into(), wrong_key, "{staged.key}".into()],
                [
                    "{words.envoy}",
                    "--mode",
                    "validate",
                    "-c",
                    "{template.preview.yaml}",
                ]
                .map(String::from)
                .to_vec(),
            ],
        )],
    );
    let before = snapshot(&l.live_paths());

    let out = l.lab.certctl(&["deploy", "--dry-run", "--output", "json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let t = target(&out);
    assert_eq!(t["status"], "would-fail", "{}", out.stderr);
    let error = t["error"].as_str().unwrap();
    assert!(error.starts_with("preview failed"), "{error}");
    assert!(
        error.contains("KEY_VALUES_MISMATCH"),
        "envoy's reason: {error}"
    );
    assert_eq!(snapshot(&l.live_paths()), before);
    assert_eq!(l.served().as_deref(), Some(l.lab.old.fingerprint.as_str()));
    assert!(l.no_leftovers());
}

/// The live test fails after the swap (the override stands in for any failure between the
/// swap and the verify), when envoy may already serve the new pair: certctl restores the old
/// files by rename, envoy re-reads them, and the old certificate is served again.
#[test]
fn failure_after_the_swap_is_rolled_back_and_envoy_serves_the_old_certificate() {
    let l = EnvoyLab::start();
    l.target(&l.lab.new, &[("test", vec![vec!["false".into()]])]);
    let before = contents(&l.live_paths());

    let out = l.lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let t = target(&out);
    assert_eq!(t["status"], "rolled-back", "{}", out.stderr);
    let error = t["error"].as_str().unwrap();
    assert!(error.starts_with("test failed"), "{error}");
    assert!(error.contains("restored"), "{error}");
    assert_eq!(contents(&l.live_paths()), before, "restored byte-for-byte");
    assert_eq!(
        l.served_settled(&l.lab.old).as_deref(),
        Some(l.lab.old.fingerprint.as_str())
    );
    assert!(l.chain_verifies());
    assert!(l.no_leftovers());
    assert!(l.lab.scratch_dirs().is_empty());
}

/// `certctl rollback` after a verified deploy: the previous pair is restored and envoy serves
/// it again, checked by probe.
#[test]
fn certctl_rollback_restores_the_old_certificate() {
    let l = EnvoyLab::start();
    l.target(&l.lab.new, &[]);
    let out = l.lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(l.served().as_deref(), Some(l.lab.new.fingerprint.as_str()));

    let out = l.lab.certctl(&["rollback", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(target(&out)["status"], "rolled-back", "{}", out.stderr);
    assert_eq!(
        contents(&l.live_paths()),
        contents(&[l.lab.old.fullchain.clone(), l.lab.old.key.clone()])
    );
    assert_eq!(
        l.served_settled(&l.lab.old).as_deref(),
        Some(l.lab.old.fingerprint.as_str())
    );
    assert!(l.chain_verifies());
    assert!(l.no_leftovers());
}
