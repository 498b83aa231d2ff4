//! End to end: the built `certctl` binary with the built-in `haproxy` connector against a real
//! OpenSSH sshd and a real haproxy (master-worker) on loopback, both started by the test
//! support code. There is no systemd here, so the targets override `reload` (USR2 to the
//! master, by PID file), as the connector's docs say to. Served certificates are
//! checked with `openssl s_client`, independently of certctl.

use crate::support;

use std::fs;

use support::haproxy::Haproxy;
use support::tls_lab::{
    Material, SNI, TargetSpec, TlsLab, cert_count, deploy_steps, find_step, leftovers, snapshot,
    target, verified,
};

/// A lab whose haproxy starts on the OLD certificate (also used by the runtime-update tests).
pub(crate) struct HaproxyLab {
    pub lab: TlsLab,
    pub haproxy: Haproxy,
}

impl HaproxyLab {
    pub fn start() -> HaproxyLab {
        let lab = TlsLab::start();
        let haproxy = Haproxy::start(&lab.old.bundle);
        assert_eq!(
            haproxy.served_fingerprint(SNI).as_deref(),
            Some(lab.old.fingerprint.as_str()),
            "haproxy starts on the old certificate"
        );
        HaproxyLab { lab, haproxy }
    }

    /// Writes the inventory for deploying `material`, with per-target command overrides on
    /// top of the no-systemd `reload`.
    fn target(&self, material: &Material, commands: &[(&str, Vec<Vec<String>>)]) {
        self.target_with(material, &[], commands);
    }

    /// [`HaproxyLab::target`] with extra params. A `reload` in `commands` replaces the
    /// no-systemd one; an empty `reload` list keeps the connector's own (`update: runtime`).
    pub fn target_with(
        &self,
        material: &Material,
        extra: &[(&str, String)],
        commands: &[(&str, Vec<Vec<String>>)],
    ) {
        let h = &self.haproxy;
        let path = |p: std::path::PathBuf| p.display().to_string();
        let mut all: Vec<(String, Vec<Vec<String>>)> =
            vec![("reload".into(), vec![h.reload_argv()])];
        for (section, cmds) in commands {
            all.retain(|(s, _)| s != section);
            if !(*section == "reload" && cmds.is_empty()) {
                all.push((section.to_string(), cmds.clone()));
            }
        }
        let mut params = vec![
            ("pem_path".into(), path(h.pem_path())),
            ("haproxy_cfg".into(), path(h.cfg_path())),
            ("pid_file".into(), path(h.pid_file())),
        ];
        params.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let spec = TargetSpec {
            connector: "haproxy".into(),
            params,
            commands: all,
            address: h.addr.to_string(),
        };
        self.lab.write_inventory(material, &spec);
    }

    /// Configurations the master has loaded: 1 at start, one more per successful reload.
    pub fn loads(&self) -> usize {
        self.haproxy.log().matches("Loading success.").count()
    }

    pub fn served(&self) -> Option<String> {
        self.haproxy.served_fingerprint(SNI)
    }

    /// The served leaf once it is stable: haproxy's old worker may answer a probe or two
    /// right after a reload.
    pub fn served_stable(&self) -> Option<String> {
        let mut last = self.served();
        let mut streak = 1;
        for _ in 0..100 {
            if streak == 3 {
                break;
            }
            let now = self.served();
            if now == last {
                streak += 1;
            } else {
                last = now;
                streak = 1;
            }
        }
        last
    }

    pub fn served_chain_len(&self) -> usize {
        cert_count(&self.haproxy.s_client(SNI, &["-showcerts"]))
    }

    pub fn chain_verifies(&self) -> bool {
        let root = self.lab.pki.root_crt().display().to_string();
        verified(
            &self
                .haproxy
                .s_client(SNI, &["-CAfile", &root, "-verify_return_error"]),
        )
    }

    pub fn certs_dir(&self) -> std::path::PathBuf {
        self.haproxy.dir().join("certs")
    }
}

#[test]
fn deploy_serves_new_leaf_and_chain_then_second_run_is_unchanged() {
    let mut l = HaproxyLab::start();
    l.target(&l.lab.new, &[]);
    let master = l.haproxy.master_pid();

    let out = l.lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let t = target(&out);
    assert_eq!(t["status"], "deployed", "{}", out.stderr);
    assert_eq!(t["old_fingerprint"], l.lab.old.fingerprint.as_str());
    assert_eq!(t["served_fingerprint"], l.lab.new.fingerprint.as_str());
    assert_eq!(t["files"][0]["role"], "bundle");
    assert_eq!(t["files"][0]["chain_length"], 1);

    assert_eq!(
        l.served_stable().as_deref(),
        Some(l.lab.new.fingerprint.as_str())
    );
    assert_eq!(l.served_chain_len(), 2, "leaf + intermediate served");
    assert!(l.chain_verifies(), "the served chain verifies to the root");
    // One file: leaf, intermediate, key — byte for byte; mode kept.
    assert_eq!(
        fs::read(l.haproxy.pem_path()).unwrap(),
        fs::read(&l.lab.new.bundle).unwrap()
    );
    assert_eq!(support::mode(l.haproxy.pem_path()), 0o600);
    // A reload through the master: same master, one more configuration loaded.
    assert_eq!(l.loads(), 2, "{}", l.haproxy.log());
    assert!(l.haproxy.master_running());
    assert_eq!(l.haproxy.master_pid(), master);
    assert_eq!(l.lab.backup_sets().len(), 1);
    assert!(leftovers(&l.certs_dir()).is_empty());
    assert!(l.lab.scratch_dirs().is_empty(), "no scratch directory left");

    let out = l.lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(target(&out)["status"], "unchanged");
    assert_eq!(l.loads(), 2, "an unchanged target is not reloaded");
}

#[test]
fn dry_run_changes_nothing_and_reports_would_change() {
    let l = HaproxyLab::start();
    l.target(&l.lab.new, &[]);
    let before = snapshot(&[l.haproxy.pem_path()]);
    let workers = l.haproxy.worker_pids();

    let out = l.lab.certctl(&["deploy", "--dry-run", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["dry_run"], true);
    let t = target(&out);
    assert_eq!(t["status"], "would-change", "{}", out.stderr);
    let files = t["files"].as_array().unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0]["action"], "replace");
    assert_eq!(files[0]["new_fingerprint"], l.lab.new.fingerprint.as_str());
    assert_eq!(files[0]["old_fingerprint"], l.lab.old.fingerprint.as_str());
    assert_eq!(
        deploy_steps(&t),
        ["stage", "preview"],
        "a dry run stops after the preview"
    );

    assert_eq!(
        snapshot(&[l.haproxy.pem_path()]),
        before,
        "live bundle byte-identical, same mtime"
    );
    assert_eq!(l.loads(), 1, "haproxy not reloaded");
    assert_eq!(l.haproxy.worker_pids(), workers);
    assert_eq!(l.served().as_deref(), Some(l.lab.old.fingerprint.as_str()));
    assert!(leftovers(&l.certs_dir()).is_empty());
    assert!(l.lab.scratch_dirs().is_empty());
    assert!(l.lab.backup_sets().is_empty(), "a dry run takes no backup");
}

/// A leaf signed with SHA-1 passes certctl's local checks, but haproxy's OpenSSL (security
/// level 2) refuses to load it: `haproxy -c` on the preview config that binds the STAGED
/// bundle says so.
#[test]
fn dry_run_of_a_bundle_haproxy_cannot_load_is_would_fail() {
    let l = HaproxyLab::start();
    let sha1 = l.lab.sha1_signed();
    l.target(&sha1, &[]);
    let before = snapshot(&[l.haproxy.pem_path()]);

    let out = l.lab.certctl(&["deploy", "--dry-run", "--output", "json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let t = target(&out);
    assert_eq!(t["status"], "would-fail", "{}", out.stderr);
    let error = t["error"].as_str().unwrap();
    assert!(error.starts_with("preview failed"), "{error}");
    // The temporary config (not the live one) failed, on the staged file.
    assert!(error.contains("preview.cfg"), "{error}");
    assert!(
        error.contains("unable to load SSL certificate into SSL Context"),
        "{error}"
    );
    assert!(error.contains(".site.pem.certctl-"), "{error}");

    assert_eq!(snapshot(&[l.haproxy.pem_path()]), before);
    assert_eq!(l.loads(), 1);
    assert_eq!(l.served().as_deref(), Some(l.lab.old.fingerprint.as_str()));
    assert!(leftovers(&l.certs_dir()).is_empty());
    assert!(l.lab.scratch_dirs().is_empty());
}

/// The operator's commands skip every check (no preview of the staged bundle, no test), so
/// the SHA-1 bundle goes live. USR2 returns 0, the master fails to load the new configuration
/// and the old worker keeps serving the old certificate: only the probe can tell. certctl
/// restores the old bundle, reloads, and proves the old certificate is served.
#[test]
fn failed_reload_that_returns_0_is_caught_by_the_probe_and_rolled_back() {
    let mut l = HaproxyLab::start();
    let sha1 = l.lab.sha1_signed();
    l.target(
        &sha1,
        &[
            (
                "preview",
                vec![
                    ["{haproxy}", "-c", "-f", "{haproxy_cfg}"]
                        .map(String::from)
                        .to_vec(),
                ],
            ),
            ("test", vec![]),
        ],
    );
    let before = fs::read(l.haproxy.pem_path()).unwrap();
    let master = l.haproxy.master_pid();

    let out = l.lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let t = target(&out);
    assert_eq!(t["status"], "rolled-back", "{}", out.stderr);
    let error = t["error"].as_str().unwrap();
    assert!(error.starts_with("verify failed"), "{error}");
    assert!(error.contains("restored"), "{error}");
    // The reload "succeeded" (a signal always does); the probe ran its whole schedule.
    let (i, reload) = find_step(&t, "reload", 0);
    assert_eq!(reload["status"], "ok");
    let (i, verify) = find_step(&t, "verify", i);
    assert_eq!(verify["status"], "failed");
    find_step(&t, "rollback", i);
    let probes = t["probes"].as_array().unwrap();
    assert!(
        probes.len() >= 6,
        "the verify probed on its schedule: {probes:?}"
    );

    // haproxy really refused the new bundle, and its master never went away…
    let log = l.haproxy.log();
    assert!(log.contains("Loading failure!"), "{log}");
    assert!(log.contains("unable to load SSL certificate"), "{log}");
    assert!(l.haproxy.master_running());
    assert_eq!(l.haproxy.master_pid(), master);
    // …and after the rollback it runs on the old bundle again.
    assert_eq!(fs::read(l.haproxy.pem_path()).unwrap(), before);
    assert_eq!(
        l.served_stable().as_deref(),
        Some(l.lab.old.fingerprint.as_str())
    );
    assert!(l.chain_verifies());
    assert!(leftovers(&l.certs_dir()).is_empty());
    assert!(l.lab.scratch_dirs().is_empty());
}
