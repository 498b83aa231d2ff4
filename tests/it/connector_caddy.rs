//! End to end: the built `certctl` binary with the built-in `caddy` connector against a real
//! OpenSSH sshd and a real caddy on loopback, both started by the test support code. Served
//! certificates are checked with `openssl s_client`, independently of certctl.

use crate::support;

use std::fs;

use support::caddy::Caddy;
use support::tls_lab::{
    Material, SNI, TargetSpec, TlsLab, cert_count, contents, deploy_steps, find_step, leftovers,
    snapshot, target, verified,
};

/// A lab whose caddy starts on the OLD certificate.
struct CaddyLab {
    lab: TlsLab,
    caddy: Caddy,
}

impl CaddyLab {
    fn start() -> CaddyLab {
        let lab = TlsLab::start();
        let caddy = Caddy::start(SNI, &lab.old.fullchain, &lab.old.key);
        assert_eq!(
            caddy.served_fingerprint(SNI).as_deref(),
            Some(lab.old.fingerprint.as_str()),
            "caddy starts on the old certificate"
        );
        CaddyLab { lab, caddy }
    }

    /// Writes the inventory for deploying `material`, with per-target command overrides.
    fn target(&self, material: &Material, commands: &[(&str, Vec<Vec<String>>)]) {
        let c = &self.caddy;
        let path = |p: std::path::PathBuf| p.display().to_string();
        let spec = TargetSpec {
            connector: "caddy".into(),
            params: vec![
                ("fullchain_path".into(), path(c.fullchain_path())),
                ("key_path".into(), path(c.key_path())),
                ("caddyfile".into(), path(c.caddyfile())),
                ("admin_address".into(), c.admin.to_string()),
            ],
            commands: commands
                .iter()
                .map(|(s, c)| (s.to_string(), c.clone()))
                .collect(),
            address: c.addr.to_string(),
        };
        self.lab.write_inventory(material, &spec);
    }

    fn live_paths(&self) -> [std::path::PathBuf; 2] {
        [self.caddy.fullchain_path(), self.caddy.key_path()]
    }

    /// Configurations caddy has loaded (`load complete` in its log).
    fn loads(&self) -> usize {
        self.caddy
            .log()
            .matches("\"msg\":\"load complete\"")
            .count()
    }

    fn served(&self) -> Option<String> {
        self.caddy.served_fingerprint(SNI)
    }

    fn served_chain_len(&self) -> usize {
        cert_count(&self.caddy.s_client(SNI, &["-showcerts"]))
    }

    fn chain_verifies(&self) -> bool {
        let root = self.lab.pki.root_crt().display().to_string();
        verified(
            &self
                .caddy
                .s_client(SNI, &["-CAfile", &root, "-verify_return_error"]),
        )
    }

    fn certs_dir(&self) -> std::path::PathBuf {
        self.caddy.dir().join("certs")
    }
}

/// `caddy reload` as an operator might write it: everything but `--force`.
fn reload_without_force() -> Vec<Vec<String>> {
    vec![
        [
            "{caddy}",
            "reload",
            "--adapter",
            "caddyfile",
            "--config",
            "{caddyfile}",
            "--address",
            "{admin_address}",
        ]
        .map(String::from)
        .to_vec(),
    ]
}

#[test]
fn deploy_serves_new_leaf_and_chain_then_second_run_is_unchanged() {
    let l = CaddyLab::start();
    l.target(&l.lab.new, &[]);
    let loads = l.loads();

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

    assert_eq!(l.served().as_deref(), Some(l.lab.new.fingerprint.as_str()));
    assert_eq!(l.served_chain_len(), 2, "leaf + intermediate served");
    assert!(l.chain_verifies(), "the served chain verifies to the root");
    assert_eq!(
        contents(&l.live_paths()),
        contents(&[l.lab.new.fullchain.clone(), l.lab.new.key.clone()])
    );
    assert_eq!(support::mode(l.caddy.fullchain_path()), 0o644);
    assert_eq!(
        support::mode(l.caddy.key_path()),
        0o600,
        "a replaced key keeps its mode"
    );
    assert_eq!(l.loads(), loads + 1, "one reload through the admin API");
    assert_eq!(l.lab.backup_sets().len(), 1);
    assert!(leftovers(&l.certs_dir()).is_empty());
    assert!(l.lab.scratch_dirs().is_empty(), "no scratch directory left");

    let out = l.lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(target(&out)["status"], "unchanged");
    assert_eq!(l.loads(), loads + 1, "an unchanged target is not reloaded");
}

#[test]
fn dry_run_changes_nothing_and_reports_would_change() {
    let l = CaddyLab::start();
    l.target(&l.lab.new, &[]);
    let before = snapshot(&l.live_paths());
    let loads = l.loads();

    let out = l.lab.certctl(&["deploy", "--dry-run", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["dry_run"], true);
    let t = target(&out);
    assert_eq!(t["status"], "would-change", "{}", out.stderr);
    let files = t["files"].as_array().unwrap();
    let roles: Vec<&str> = files.iter().map(|f| f["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["fullchain", "key"]);
    assert!(files.iter().all(|f| f["action"] == "replace"), "{files:?}");
    assert_eq!(files[0]["new_fingerprint"], l.lab.new.fingerprint.as_str());
    assert_eq!(files[0]["old_fingerprint"], l.lab.old.fingerprint.as_str());
    assert_eq!(files[0]["chain_length"], 1);
    assert_eq!(
        deploy_steps(&t),
        ["stage", "preview"],
        "a dry run stops after the preview"
    );

    assert_eq!(
        snapshot(&l.live_paths()),
        before,
        "live files byte-identical, same mtime"
    );
    assert_eq!(l.loads(), loads, "caddy not reloaded");
    assert_eq!(l.served().as_deref(), Some(l.lab.old.fingerprint.as_str()));
    assert!(leftovers(&l.certs_dir()).is_empty());
    assert!(l.lab.scratch_dirs().is_empty());
    assert!(l.lab.backup_sets().is_empty(), "a dry run takes no backup");
}

#[test]
fn dry_run_with_broken_live_caddyfile_is_would_fail_with_caddy_message() {
    let l = CaddyLab::start();
    l.target(&l.lab.new, &[]);
    // The running server is fine; its Caddyfile on disk no longer is.
    let caddyfile = fs::read_to_string(l.caddy.caddyfile()).unwrap();
    fs::write(
        l.caddy.caddyfile(),
        caddyfile.replacen(
            "\trespond \"ok\"",
            "\trespond \"ok\"\n\tbogus_directive on",
            1,
        ),
    )
    .unwrap();
    let before = snapshot(&l.live_paths());
    let loads = l.loads();

    let out = l.lab.certctl(&["deploy", "--dry-run", "--output", "json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let t = target(&out);
    assert_eq!(t["status"], "would-fail", "{}", out.stderr);
    let error = t["error"].as_str().unwrap();
    assert!(error.starts_with("preview failed"), "{error}");
    assert!(error.contains("bogus_directive"), "{error}");
    assert_eq!(snapshot(&l.live_paths()), before);
    assert_eq!(l.loads(), loads);
    assert_eq!(l.served().as_deref(), Some(l.lab.old.fingerprint.as_str()));
    assert!(leftovers(&l.certs_dir()).is_empty());
}

/// Without `--force`, `caddy reload` sees an unchanged Caddyfile, returns 0 and keeps the old
/// certificates loaded. The probe catches it; the rollback leaves caddy on the old files.
#[test]
fn reload_without_force_is_a_silent_no_op_caught_by_the_probe_and_rolled_back() {
    let l = CaddyLab::start();
    l.target(&l.lab.new, &[("reload", reload_without_force())]);
    let before = contents(&l.live_paths());

    let out = l.lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let t = target(&out);
    assert_eq!(t["status"], "rolled-back", "{}", out.stderr);
    let error = t["error"].as_str().unwrap();
    assert!(error.starts_with("verify failed"), "{error}");
    assert!(error.contains("restored"), "{error}");
    let (i, reload) = find_step(&t, "reload", 0);
    assert_eq!(reload["status"], "ok", "caddy returned 0");
    let (i, verify) = find_step(&t, "verify", i);
    assert_eq!(verify["status"], "failed");
    find_step(&t, "rollback", i);
    assert!(
        l.caddy.log().contains("config is unchanged"),
        "{}",
        l.caddy.log()
    );

    assert_eq!(contents(&l.live_paths()), before, "restored byte-for-byte");
    assert_eq!(l.served().as_deref(), Some(l.lab.old.fingerprint.as_str()));
    assert!(l.chain_verifies());
    assert!(leftovers(&l.certs_dir()).is_empty());
    assert!(l.lab.scratch_dirs().is_empty());
}

/// The live key is damaged after the swap (another process writes a different key over it,
/// which the `test` override stands in for): `caddy reload --force` fails with caddy's HTTP 400
/// and caddy keeps its old configuration. certctl restores the files, reloads again, and the
/// old certificate is served.
#[test]
fn failing_reload_is_rolled_back_with_caddy_message() {
    let l = CaddyLab::start();
    let wrong_key = l.lab.pki.wrong_key().display().to_string();
    l.target(
        &l.lab.new,
        &[(
            "test",
            vec![vec!["cp".into(), wrong_key, "{live.key}".into()]],
        )],
    );
    let before = contents(&l.live_paths());
    let loads = l.loads();

    let out = l.lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let t = target(&out);
    assert_eq!(t["status"], "rolled-back", "{}", out.stderr);
    let error = t["error"].as_str().unwrap();
    assert!(error.starts_with("reload failed"), "{error}");
    assert!(
        error.contains("private key does not match public key"),
        "caddy's reason is shown: {error}"
    );
    assert!(error.contains("restored"), "{error}");

    assert_eq!(contents(&l.live_paths()), before, "restored byte-for-byte");
    assert_eq!(l.loads(), loads + 1, "only the rollback's reload loaded");
    assert_eq!(l.served().as_deref(), Some(l.lab.old.fingerprint.as_str()));
    assert!(l.chain_verifies());
    assert!(leftovers(&l.certs_dir()).is_empty());
    assert!(l.lab.scratch_dirs().is_empty());
}
