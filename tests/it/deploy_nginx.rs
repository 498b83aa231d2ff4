//! End to end: the built `certctl` binary against a real OpenSSH sshd and a real nginx on
//! loopback, both started by the test support code.

use crate::support;

use std::fs;
use std::path::Path;

use support::lab::{Lab, TargetOptions};

/// Files under `dir` whose names show they were left by certctl.
fn leftovers(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".certctl-"))
        .collect()
}

#[test]
fn deploy_serves_new_leaf_and_chain_then_second_run_is_unchanged() {
    let lab = Lab::start(TargetOptions::default());
    let old_cert = fs::read(lab.nginx.cert_path()).unwrap();
    assert_eq!(
        lab.served(),
        lab.old.fingerprint,
        "nginx starts on the old certificate"
    );

    let out = lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report = out.json();
    let target = &report["targets"][0];
    assert_eq!(target["status"], "deployed", "{}", out.stderr);
    assert_eq!(target["new_fingerprint"], lab.new.fingerprint.as_str());
    assert_eq!(target["old_fingerprint"], lab.old.fingerprint.as_str());
    assert_eq!(target["served_fingerprint"], lab.new.fingerprint.as_str());
    assert_eq!(report["summary"]["deployed"], 1);

    // An independent handshake (openssl s_client) sees the new leaf AND the intermediate.
    assert_eq!(lab.served(), lab.new.fingerprint);
    assert_eq!(lab.served_chain_len(), 2, "leaf + intermediate served");
    assert_eq!(
        fs::read(lab.nginx.cert_path()).unwrap(),
        lab.new.fullchain_pem()
    );
    assert_eq!(
        fs::read(lab.nginx.key_path()).unwrap(),
        fs::read(&lab.new.key).unwrap()
    );
    assert_ne!(fs::read(lab.nginx.cert_path()).unwrap(), old_cert);
    // Replaced files keep their modes; the key is never readable by others.
    assert_eq!(support::mode(lab.nginx.cert_path()), 0o644);
    assert_eq!(support::mode(lab.nginx.key_path()), 0o600);
    // The backup holds the previous pair, privately.
    let backup_sets = lab.backup_sets();
    assert_eq!(backup_sets.len(), 1);
    assert_eq!(support::mode(lab.backup_dir()), 0o700);
    assert!(leftovers(lab.nginx.cert_path().parent().unwrap()).is_empty());

    // Second run: nothing to do, and nginx is not reloaded.
    let pids = lab.nginx_pids();
    let out = lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["targets"][0]["status"], "unchanged");
    assert_eq!(
        lab.nginx_pids(),
        pids,
        "an unchanged target is not reloaded"
    );
    assert_eq!(
        lab.backup_sets().len(),
        1,
        "an unchanged target takes no backup"
    );
}

#[test]
fn dry_run_changes_nothing_and_reports_would_change() {
    let lab = Lab::start(TargetOptions::default());
    let before = lab.snapshot_live_files();
    let pids = lab.nginx_pids();

    let out = lab.certctl(&["deploy", "--dry-run", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report = out.json();
    assert_eq!(report["dry_run"], true);
    let target = &report["targets"][0];
    assert_eq!(target["status"], "would-change");
    let files = target["files"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    assert!(files.iter().all(|f| f["action"] == "replace"));
    assert_eq!(files[0]["new_fingerprint"], lab.new.fingerprint.as_str());
    assert_eq!(files[0]["old_fingerprint"], lab.old.fingerprint.as_str());
    assert_eq!(files[0]["chain_length"], 1);
    // The preview really ran nginx against the staged files.
    let steps: Vec<&str> = target["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        ["connect", "lock", "inspect", "stage", "preview", "cleanup"]
    );

    assert_eq!(
        lab.snapshot_live_files(),
        before,
        "live files byte-identical, same mtime"
    );
    assert_eq!(lab.nginx_pids(), pids, "nginx not reloaded");
    assert_eq!(lab.served(), lab.old.fingerprint);
    assert!(
        leftovers(lab.nginx.cert_path().parent().unwrap()).is_empty(),
        "no staged file left"
    );
    assert!(lab.scratch_dirs().is_empty(), "no scratch directory left");
    assert!(lab.backup_sets().is_empty(), "a dry run takes no backup");
}

#[test]
fn dry_run_with_broken_live_config_reports_would_fail_with_nginx_message() {
    let lab = Lab::start(TargetOptions::default());
    // Break the live config after nginx started: the running server is fine, `nginx -t` is not.
    let conf = fs::read_to_string(lab.nginx.conf_path()).unwrap();
    fs::write(
        lab.nginx.conf_path(),
        conf.replacen("events {", "events { bogus_directive on;", 1),
    )
    .unwrap();
    let before = lab.snapshot_live_files();
    let pids = lab.nginx_pids();

    let out = lab.certctl(&["deploy", "--dry-run", "--output", "json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let target = &out.json()["targets"][0];
    assert_eq!(target["status"], "would-fail");
    let error = target["error"].as_str().unwrap();
    assert!(
        error.contains("unknown directive \"bogus_directive\""),
        "{error}"
    );
    assert!(
        out.stderr.contains("bogus_directive"),
        "stderr shows nginx's message: {}",
        out.stderr
    );
    assert_eq!(lab.snapshot_live_files(), before);
    assert_eq!(lab.nginx_pids(), pids);
    assert!(leftovers(lab.nginx.cert_path().parent().unwrap()).is_empty());
}

#[test]
fn bad_material_exits_2_without_connecting() {
    for (case, material) in [
        ("mismatched key", support::lab::BadMaterial::WrongKey),
        (
            "truncated certificate",
            support::lab::BadMaterial::TruncatedCert,
        ),
        ("expired certificate", support::lab::BadMaterial::Expired),
    ] {
        let lab = Lab::start(TargetOptions {
            bad_material: Some(material),
            ..TargetOptions::default()
        });
        let connections_before = lab.sshd_connections();
        let out = lab.certctl(&["deploy"]);
        assert_eq!(out.code, 2, "{case}: {}", out.stderr);
        assert!(
            out.stderr.contains("certificate `www`"),
            "{case}: {}",
            out.stderr
        );
        assert_eq!(
            lab.sshd_connections(),
            connections_before,
            "{case}: no connection made"
        );
        assert_eq!(lab.served(), lab.old.fingerprint, "{case}");
    }
}

#[test]
fn failing_live_test_after_swap_rolls_back() {
    // The test passes on the old files (preview) and fails once the new fullchain is live.
    let lab = Lab::start(TargetOptions::default());
    let cert = lab.nginx.cert_path().display().to_string();
    let new_fullchain = lab.new.fullchain.display().to_string();
    lab.set_commands(&[(
        "test",
        vec![vec!["sh".into(), "-c".into(), format!("! cmp -s '{cert}' '{new_fullchain}' || {{{{ echo 'injected: new certificate rejected' >&2; exit 1; }}}}")]],
    )]);
    assert_rolled_back(&lab, "test");
}

#[test]
fn failing_reload_rolls_back() {
    let lab = Lab::start(TargetOptions::default());
    let cert = lab.nginx.cert_path().display().to_string();
    let new_fullchain = lab.new.fullchain.display().to_string();
    let conf = lab.nginx.conf_path().display().to_string();
    // Fails while the new files are live; reloads normally once they are restored.
    lab.set_commands(&[(
        "reload",
        vec![vec![
            "sh".into(),
            "-c".into(),
            format!("if cmp -s '{cert}' '{new_fullchain}'; then echo 'injected: reload refused' >&2; exit 1; fi; nginx -s reload -c '{conf}'"),
        ]],
    )]);
    assert_rolled_back(&lab, "reload");
}

#[test]
fn reload_that_does_nothing_is_caught_by_the_probe_and_rolled_back() {
    let lab = Lab::start(TargetOptions::default());
    lab.set_commands(&[("reload", vec![vec!["true".into()]])]);
    let out = assert_rolled_back(&lab, "verify");
    let target = &out.json()["targets"][0];
    let probes = target["probes"].as_array().unwrap();
    assert!(
        probes.len() >= 2,
        "the verify probed on its schedule: {probes:?}"
    );
}

/// Deploys, expects `rolled-back` after a failure in `step`, with the old files and the old
/// certificate back.
fn assert_rolled_back(lab: &Lab, step: &str) -> support::lab::Output {
    let before = lab.live_file_contents();
    let out = lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let target = &out.json()["targets"][0];
    assert_eq!(target["status"], "rolled-back", "{}", out.stderr);
    let error = target["error"].as_str().unwrap();
    assert!(error.starts_with(&format!("{step} failed")), "{error}");
    assert!(error.contains("restored"), "{error}");
    let steps: Vec<&str> = target["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert!(steps.contains(&"rollback"), "{steps:?}");
    assert_eq!(
        lab.live_file_contents(),
        before,
        "previous files restored byte-for-byte"
    );
    assert_eq!(
        lab.served(),
        lab.old.fingerprint,
        "the old certificate is served"
    );
    assert!(leftovers(lab.nginx.cert_path().parent().unwrap()).is_empty());
    out
}

#[test]
fn unknown_host_key_is_refused_with_fingerprint() {
    let lab = Lab::start(TargetOptions {
        known_hosts: support::lab::KnownHosts::Empty,
        ..TargetOptions::default()
    });
    let before = lab.snapshot_live_files();
    let out = lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let target = &out.json()["targets"][0];
    assert_eq!(target["status"], "unreachable");
    let error = target["error"].as_str().unwrap();
    assert!(error.contains("is not in"), "{error}");
    assert!(
        error.contains(&lab.sshd.host_key_fingerprint()),
        "offered fingerprint shown: {error}"
    );
    assert_eq!(lab.snapshot_live_files(), before);
}

#[test]
fn changed_host_key_is_refused_loudly() {
    let lab = Lab::start(TargetOptions {
        known_hosts: support::lab::KnownHosts::Wrong,
        ..TargetOptions::default()
    });
    let before = lab.snapshot_live_files();
    let out = lab.certctl(&["deploy"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("HOST KEY CHANGED"), "{}", out.stderr);
    assert!(
        out.stderr.contains(&lab.sshd.host_key_fingerprint()),
        "{}",
        out.stderr
    );
    assert_eq!(lab.snapshot_live_files(), before);
    assert_eq!(lab.served(), lab.old.fingerprint);
}

#[test]
fn generic_ssh_connector_deploys_a_user_layout_with_its_own_commands() {
    let lab = Lab::start(TargetOptions {
        generic: true,
        ..TargetOptions::default()
    });
    let out = lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let target = &out.json()["targets"][0];
    assert_eq!(target["status"], "deployed", "{}", out.stderr);
    assert_eq!(lab.served(), lab.new.fingerprint);
    // The extra files of the user layout: leaf alone, chain alone, and a bundle (secret).
    let extra = lab.generic_dir();
    assert_eq!(
        fs::read(extra.join("leaf.pem")).unwrap(),
        fs::read(&lab.new.cert).unwrap()
    );
    assert_eq!(
        fs::read(extra.join("chain.pem")).unwrap(),
        fs::read(&lab.new.chain).unwrap()
    );
    // New files get the role's default mode: certificates 0644, secrets 0600.
    assert_eq!(support::mode(extra.join("leaf.pem")), 0o644);
    assert_eq!(support::mode(extra.join("bundle.pem")), 0o600);
    let steps: Vec<&str> = target["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "connect", "lock", "inspect", "stage", "preview", "backup", "swap", "test", "reload",
            "verify", "cleanup"
        ]
    );
}

#[test]
fn files_already_right_but_old_certificate_served_is_reloaded_not_rewritten() {
    let lab = Lab::start(TargetOptions::default());
    // Someone copied the new pair into place by hand and forgot to reload.
    lab.nginx.replace_certs(&lab.new.fullchain, &lab.new.key);
    assert_eq!(lab.served(), lab.old.fingerprint);
    let before = lab.snapshot_live_files();

    let out = lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let target = &out.json()["targets"][0];
    assert_eq!(target["status"], "reloaded", "{}", out.stderr);
    let steps: Vec<&str> = target["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        ["connect", "lock", "inspect", "reload", "verify", "cleanup"]
    );
    assert_eq!(lab.snapshot_live_files(), before, "not rewritten");
    assert_eq!(lab.served(), lab.new.fingerprint);
    assert!(
        lab.backup_sets().is_empty(),
        "nothing replaced, nothing backed up"
    );
}

#[test]
fn backups_keep_the_last_n_sets_privately() {
    let lab = Lab::start(TargetOptions::default());
    // Alternate old and new so every run really deploys; keep_backups defaults to 3.
    for round in 0..5 {
        let out = lab.certctl(&["deploy", "--force", "--output", "json"]);
        assert_eq!(out.code, 0, "round {round}: {}", out.stderr);
        assert_eq!(out.json()["targets"][0]["status"], "deployed");
    }
    let sets = lab.backup_sets();
    let sets: Vec<_> = sets.iter().filter(|p| !p.ends_with(".lock")).collect();
    assert_eq!(sets.len(), 3, "{sets:?}");
    for set in sets {
        assert_eq!(support::mode(set), 0o700);
        for entry in fs::read_dir(set).unwrap() {
            let path = entry.unwrap().path();
            assert_eq!(
                support::mode(&path) & 0o077 & !0o044,
                0,
                "{}: no write for others",
                path.display()
            );
            if path.extension().is_some_and(|e| e == "key") {
                assert_eq!(
                    support::mode(&path) & 0o077,
                    0,
                    "{}: key backups are private",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn human_output_of_a_dry_run_snapshot() {
    let lab = Lab::start(TargetOptions::default());
    let out = lab.certctl(&["deploy", "--dry-run"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.is_empty(), "human output goes to stderr only");
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"[0-9A-F]{2}(:[0-9A-F]{2}){3,31}…?", "[FP]");
    settings.add_filter(r"\d+\.\d+s", "[T]");
    settings.add_filter(r" +\[T\]", " [T]");
    settings.add_filter(r"/tmp/certctl-[A-Za-z0-9-]+", "[TMP]");
    settings.add_filter(r"\(nginx, [0-9.]+\)", "(nginx, [HOST])");
    settings.add_filter(r"until \d{4}-\d\d-\d\d", "until [DATE]");
    settings.bind(|| insta::assert_snapshot!("dry_run_human", out.stderr));
}
