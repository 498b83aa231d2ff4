//! envoy's connector tested against an EMULATED file watcher (tests/it/support/watcher.rs): a
//! real sshd, the real files, and a real nginx serving the same certificate files that an
//! emulated watcher reloads when the SDS file is replaced. This proves the files, modes,
//! rendered contents and the order of the moves; it does not prove envoy's own watcher.
//! (traefik runs for real: tests/it/connector_traefik.rs.)

use crate::support;

use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use support::lab::{Lab, TargetOptions};
use support::watcher::Watcher;

/// (seconds, nanoseconds) of the last inode change: a rename sets it on the moved file.
fn ctime(path: &Path) -> (i64, i64) {
    let m = fs::metadata(path).unwrap();
    (m.ctime(), m.ctime_nsec())
}

fn reload_action(lab: &Lab) -> impl Fn() + Send + 'static {
    let conf = lab.nginx.conf_path().to_path_buf();
    move || {
        let status = std::process::Command::new("nginx")
            .arg("-s")
            .arg("reload")
            .arg("-c")
            .arg(&conf)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

fn watched_lab(connector: &'static str, param: &'static str, file: &str) -> (Lab, PathBuf) {
    let lab = Lab::start(TargetOptions {
        connector: Some((connector, vec![(param, format!("@LAB@/watched/{file}"))])),
        ..TargetOptions::default()
    });
    let watched = lab.path("watched").join(file);
    (lab, watched)
}

#[test]
fn envoy_emulated_sds_file_moved_last_and_new_cert_served() {
    let (lab, sds) = watched_lab("envoy", "sds_path", "sds.yaml");
    let watcher = Watcher::start(sds.clone(), reload_action(&lab));

    let out = lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.json()["targets"][0]["status"],
        "deployed",
        "{}",
        out.stderr
    );
    assert_eq!(lab.served(), lab.new.fingerprint);
    assert!(watcher.fired() >= 1);
    let text = fs::read_to_string(&sds).unwrap();
    assert!(text.contains("name: \"server_cert\""), "{text}");
    assert!(
        text.contains(&format!(
            "filename: \"{}\"",
            lab.nginx.cert_path().display()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("filename: \"{}\"", lab.nginx.key_path().display())),
        "{text}"
    );
    assert!(ctime(&sds) >= ctime(&lab.nginx.cert_path()));
    assert!(ctime(&sds) >= ctime(&lab.nginx.key_path()));
}

#[test]
fn envoy_emulated_without_watcher_rolls_back_to_the_old_certificate() {
    // No watcher: envoy never picks the files up, the probe sees the old certificate, and
    // certctl restores the previous files (the SDS file did not exist before: it is removed).
    let (lab, sds) = watched_lab("envoy", "sds_path", "sds.yaml");
    let before = lab.live_file_contents();
    let out = lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let target = &out.json()["targets"][0];
    assert_eq!(target["status"], "rolled-back", "{}", out.stderr);
    assert_eq!(lab.live_file_contents(), before);
    assert!(
        !sds.exists(),
        "a file created by the failed deploy is removed"
    );
    assert_eq!(lab.served(), lab.old.fingerprint);
}
