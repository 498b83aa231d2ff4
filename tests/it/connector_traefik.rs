//! End to end: the built `certctl` binary with the built-in `traefik` connector against a real
//! OpenSSH sshd and a real traefik 3 on loopback (the file provider watching a directory, a TLS
//! router on its own entry point), both started by the test support code. traefik has no
//! reload command: its file provider re-reads the directory when the dynamic file is moved
//! into it, and with the certificate files' contents. Served certificates are checked with
//! `openssl s_client`, independently of certctl.

use crate::support;

use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::tls_lab::{
    Material, SNI, TargetSpec, TlsLab, cert_count, contents, deploy_steps, find_step, leftovers,
    snapshot, target, verified,
};
use support::traefik::{Traefik, dynamic_config};

/// How long an independent probe waits for traefik: its provider throttle (2 s) plus margin.
const SETTLE: Duration = Duration::from_secs(10);

/// A lab whose traefik starts on the OLD certificate (or on its own default certificate,
/// when no dynamic file is written yet).
struct TraefikLab {
    lab: TlsLab,
    traefik: Traefik,
}

impl TraefikLab {
    fn start() -> TraefikLab {
        let l = Self::start_with(true);
        assert_eq!(
            l.served().as_deref(),
            Some(l.lab.old.fingerprint.as_str()),
            "traefik starts on the old certificate"
        );
        l
    }

    fn start_with(dynamic: bool) -> TraefikLab {
        let lab = TlsLab::start();
        let traefik = Traefik::start(SNI, &lab.old.fullchain, &lab.old.key, dynamic);
        TraefikLab { lab, traefik }
    }

    /// Writes the inventory for deploying `material`, with per-target command overrides.
    /// More probes than the lab's default: a change traefik receives within 2 s of the
    /// previous one is applied only when its provider throttle (2 s) has passed.
    fn target(&self, material: &Material, commands: &[(&str, Vec<Vec<String>>)]) {
        let t = &self.traefik;
        let path = |p: PathBuf| p.display().to_string();
        let spec = TargetSpec {
            connector: "traefik".into(),
            params: vec![
                ("fullchain_path".into(), path(t.fullchain_path())),
                ("key_path".into(), path(t.key_path())),
                ("dynamic_config_path".into(), path(t.dynamic_path())),
            ],
            commands: commands
                .iter()
                .map(|(s, c)| (s.to_string(), c.clone()))
                .collect(),
            address: t.addr.to_string(),
        };
        self.lab.write_inventory(material, &spec);
        let yaml = fs::read_to_string(&self.lab.inventory).unwrap();
        let yaml = yaml.replacen("attempts: 6,", "attempts: 10,", 1);
        fs::write(&self.lab.inventory, yaml).unwrap();
    }

    fn live_paths(&self) -> [PathBuf; 2] {
        [self.traefik.fullchain_path(), self.traefik.key_path()]
    }

    fn served(&self) -> Option<String> {
        self.traefik.served_fingerprint(SNI)
    }

    /// What traefik serves once `want` is served, or after [`SETTLE`].
    fn served_settled(&self, want: &Material) -> Option<String> {
        self.traefik.wait_served(SNI, &want.fingerprint, SETTLE)
    }

    fn served_chain_len(&self) -> usize {
        cert_count(&self.traefik.s_client(SNI, &["-showcerts"]))
    }

    fn chain_verifies(&self) -> bool {
        let root = self.lab.pki.root_crt().display().to_string();
        verified(
            &self
                .traefik
                .s_client(SNI, &["-CAfile", &root, "-verify_return_error"]),
        )
    }

    fn certs_dir(&self) -> PathBuf {
        self.traefik.dir().join("certs")
    }

    fn dynamic_dir(&self) -> PathBuf {
        self.traefik.dir().join("dynamic")
    }

    /// The dynamic file as the connector renders it for this lab.
    fn expected_dynamic(&self) -> String {
        dynamic_config(&self.traefik.fullchain_path(), &self.traefik.key_path())
    }
}

/// (seconds, nanoseconds) of the last inode change: a rename sets it on the moved file.
fn ctime(path: &Path) -> (i64, i64) {
    let m = fs::metadata(path).unwrap();
    (m.ctime(), m.ctime_nsec())
}

#[test]
fn deploy_serves_new_leaf_and_chain_then_second_run_is_unchanged() {
    let mut l = TraefikLab::start();
    l.target(&l.lab.new, &[]);
    let pid = l.traefik.pid();

    let out = l.lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let t = target(&out);
    assert_eq!(t["status"], "deployed", "{}", out.stderr);
    assert_eq!(t["old_fingerprint"], l.lab.old.fingerprint.as_str());
    assert_eq!(t["served_fingerprint"], l.lab.new.fingerprint.as_str());
    let roles: Vec<&str> = t["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["fullchain", "key", "rendered"]);

    assert_eq!(l.served().as_deref(), Some(l.lab.new.fingerprint.as_str()));
    assert_eq!(l.served_chain_len(), 2, "leaf + intermediate served");
    assert!(l.chain_verifies(), "the served chain verifies to the root");
    assert_eq!(
        contents(&l.live_paths()),
        contents(&[l.lab.new.fullchain.clone(), l.lab.new.key.clone()])
    );
    let dynamic = l.traefik.dynamic_path();
    assert_eq!(fs::read_to_string(&dynamic).unwrap(), l.expected_dynamic());
    assert_eq!(support::mode(&dynamic), 0o644);
    assert_eq!(support::mode(l.traefik.key_path()), 0o600);
    assert!(
        ctime(&dynamic) >= ctime(&l.traefik.fullchain_path())
            && ctime(&dynamic) >= ctime(&l.traefik.key_path()),
        "the dynamic file is moved into place after the certificate and key"
    );
    // traefik itself, not a stand-in: the same process, its file provider read the new pair.
    assert!(l.traefik.running());
    assert_eq!(l.traefik.pid(), pid);
    assert_eq!(l.lab.backup_sets().len(), 1);
    assert!(leftovers(&l.certs_dir()).is_empty());
    assert!(leftovers(&l.dynamic_dir()).is_empty());
    assert!(l.lab.scratch_dirs().is_empty(), "no scratch directory left");

    let out = l.lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(target(&out)["status"], "unchanged", "{}", out.stderr);
}

/// A first deploy: traefik serves its own default certificate for the name (no dynamic file
/// names one yet); certctl writes the pair and the dynamic file, and traefik picks them up.
#[test]
fn first_deploy_creates_the_dynamic_file_and_traefik_serves_it() {
    let l = TraefikLab::start_with(false);
    let default = l.served();
    assert!(
        default.is_some(),
        "traefik answers with its default certificate"
    );
    assert_ne!(default.as_deref(), Some(l.lab.old.fingerprint.as_str()));
    l.target(&l.lab.new, &[]);

    let out = l.lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let t = target(&out);
    assert_eq!(t["status"], "deployed", "{}", out.stderr);
    assert_eq!(l.served().as_deref(), Some(l.lab.new.fingerprint.as_str()));
    assert!(l.chain_verifies());
    assert_eq!(
        fs::read_to_string(l.traefik.dynamic_path()).unwrap(),
        l.expected_dynamic()
    );
}

#[test]
fn dry_run_changes_nothing_and_reports_would_change() {
    let l = TraefikLab::start();
    l.target(&l.lab.new, &[]);
    let dynamic = l.traefik.dynamic_path();
    let before = snapshot(&[
        l.traefik.fullchain_path(),
        l.traefik.key_path(),
        dynamic.clone(),
    ]);
    let applied = l.traefik.applied();

    let out = l.lab.certctl(&["deploy", "--dry-run", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["dry_run"], true);
    let t = target(&out);
    assert_eq!(t["status"], "would-change", "{}", out.stderr);
    let files = t["files"].as_array().unwrap();
    assert_eq!(files[0]["new_fingerprint"], l.lab.new.fingerprint.as_str());
    assert_eq!(files[0]["old_fingerprint"], l.lab.old.fingerprint.as_str());
    assert_eq!(deploy_steps(&t), ["stage", "preview"]);

    assert_eq!(
        snapshot(&[
            l.traefik.fullchain_path(),
            l.traefik.key_path(),
            dynamic.clone()
        ]),
        before,
        "live files byte-identical, same mtime"
    );
    // Give traefik the time to act on anything it saw: it still serves the old pair.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(l.served().as_deref(), Some(l.lab.old.fingerprint.as_str()));
    assert_eq!(
        l.traefik.applied(),
        applied,
        "no new certificate store: {}",
        l.traefik.log()
    );
    assert!(leftovers(&l.certs_dir()).is_empty());
    assert!(leftovers(&l.dynamic_dir()).is_empty());
    assert!(l.lab.scratch_dirs().is_empty());
    assert!(l.lab.backup_sets().is_empty(), "a dry run takes no backup");
}

/// The live test fails after the swap (the override stands in for any failure between the
/// swap and the verify), when traefik has already picked up the new pair. certctl restores
/// the old files; the dynamic file's content is the same as before, and traefik only re-reads
/// the certificates when it is moved into the watched directory again — which the rollback's
/// reload does. traefik then serves the old certificate again (after its 2 s throttle).
#[test]
fn failure_after_the_swap_is_rolled_back_and_traefik_serves_the_old_certificate() {
    let l = TraefikLab::start();
    l.target(&l.lab.new, &[("test", vec![vec!["false".into()]])]);
    let before = contents(&l.live_paths());
    let dynamic_before = fs::read(l.traefik.dynamic_path()).unwrap();

    let out = l.lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let t = target(&out);
    assert_eq!(t["status"], "rolled-back", "{}", out.stderr);
    let error = t["error"].as_str().unwrap();
    assert!(error.starts_with("test failed"), "{error}");
    assert!(error.contains("restored"), "{error}");
    let (i, _) = find_step(&t, "rollback", 0);
    let (_, reload) = find_step(&t, "reload", i);
    assert_eq!(reload["status"], "ok", "{reload}");

    assert_eq!(contents(&l.live_paths()), before, "restored byte-for-byte");
    assert_eq!(fs::read(l.traefik.dynamic_path()).unwrap(), dynamic_before);
    assert_eq!(
        l.served_settled(&l.lab.old).as_deref(),
        Some(l.lab.old.fingerprint.as_str())
    );
    assert!(l.chain_verifies());
    assert!(leftovers(&l.certs_dir()).is_empty());
    assert!(leftovers(&l.dynamic_dir()).is_empty());
    assert!(l.lab.scratch_dirs().is_empty());
}

/// `certctl rollback` after a verified deploy: the previous pair is restored and traefik
/// re-reads it (the dynamic file moved into the watched directory again), checked by probe.
#[test]
fn certctl_rollback_restores_the_old_certificate() {
    let l = TraefikLab::start();
    l.target(&l.lab.new, &[]);
    let out = l.lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(l.served().as_deref(), Some(l.lab.new.fingerprint.as_str()));

    let out = l.lab.certctl(&["rollback", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let t = target(&out);
    assert_eq!(t["status"], "rolled-back", "{}", out.stderr);
    assert_eq!(
        contents(&l.live_paths()),
        contents(&[l.lab.old.fullchain.clone(), l.lab.old.key.clone()])
    );
    assert_eq!(
        l.served_settled(&l.lab.old).as_deref(),
        Some(l.lab.old.fingerprint.as_str())
    );
    assert!(l.chain_verifies());
    assert!(leftovers(&l.dynamic_dir()).is_empty());
}
