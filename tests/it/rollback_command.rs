//! `certctl rollback` against a real sshd + nginx: restores the newest backup set, reloads,
//! verifies the restored certificate is served; a second rollback has no set left.

use crate::support;

use support::lab::{Lab, TargetOptions};

#[test]
fn rollback_restores_the_previous_deploy_and_verifies_it() {
    let lab = Lab::start(TargetOptions::default());
    let before = lab.live_file_contents();
    let out = lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(lab.served(), lab.new.fingerprint);

    let out = lab.certctl(&["rollback", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let target = &out.json()["targets"][0];
    assert_eq!(target["status"], "rolled-back", "{}", out.stderr);
    assert_eq!(target["served_fingerprint"], lab.old.fingerprint.as_str());
    assert_eq!(
        lab.live_file_contents(),
        before,
        "the previous files, byte for byte"
    );
    assert_eq!(lab.served(), lab.old.fingerprint);
    assert_eq!(support::mode(lab.nginx.key_path()), 0o600);

    // The set is marked restored; there is nothing older to go back to.
    let out = lab.certctl(&["rollback", "--output", "json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let error = out.json()["targets"][0]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.contains("no backup set"), "{error}");
    assert_eq!(lab.live_file_contents(), before);
}

#[test]
fn status_reports_files_served_certificate_and_facts_without_changing_anything() {
    let lab = Lab::start(TargetOptions::default());
    let before = lab.snapshot_live_files();
    let out = lab.certctl(&["status", "--output", "json"]);
    assert_eq!(out.code, 4, "a mismatch exits 4, as verify: {}", out.stderr);
    let target = &out.json()["targets"][0];
    assert_eq!(target["status"], "mismatch");
    assert_eq!(target["served_fingerprint"], lab.old.fingerprint.as_str());
    assert_eq!(
        target["old_fingerprint"],
        lab.old.fingerprint.as_str(),
        "the leaf on disk"
    );
    let files = target["files"].as_array().unwrap();
    assert_eq!(files[0]["action"], "differs");
    assert_eq!(files[1]["mode"], "0600");
    assert!(files[0]["not_after"].as_str().is_some());
    let facts = target["steps"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|s| s["step"] == "inspect")
        .unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(facts.contains("Linux"), "{facts}");
    assert!(facts.contains("nginx version: nginx/"), "{facts}");
    assert!(facts.contains("day(s)"), "{facts}");
    assert_eq!(lab.snapshot_live_files(), before, "status writes nothing");
    assert!(
        !lab.backup_dir().join(".lock").exists(),
        "status takes no lock"
    );

    assert_eq!(lab.certctl(&["deploy"]).code, 0);
    let out = lab.certctl(&["status"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("current"), "{}", out.stderr);
    assert!(out.stderr.contains("nginx version"), "{}", out.stderr);
}
