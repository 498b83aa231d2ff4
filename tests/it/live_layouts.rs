//! Real server layouts, against real sshd and nginx: symlinked live files (certbot's `live/` →
//! `archive/`, a chain of two links, a dangling link, `follow_symlinks: "false"`), live files
//! that are missing, truncated or a mismatched pair (a repair), a lock that cannot be written
//! (a full disk), and an unfinished change shown by `status` and the stale-lock message. Each
//! outcome is checked on disk (`readlink`, bytes), with `openssl s_client` and `nginx -t`.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support;
use support::faults::{InventorySpec, LiveSet, Rig, RigOptions, Served, sh};

/// certbot's layout under nginx's directory: the live paths nginx loads become links
/// `../archive/www/NAME1.pem`. Returns the archive files (fullchain, key).
fn certbot_layout(rig: &Rig) -> (PathBuf, PathBuf) {
    let archive = rig.nginx.dir().join("archive/www");
    fs::create_dir_all(&archive).unwrap();
    let mut out = Vec::new();
    for (live, name) in [
        (rig.nginx.cert_path(), "fullchain1.pem"),
        (rig.nginx.key_path(), "privkey1.pem"),
    ] {
        let target = archive.join(name);
        fs::rename(&live, &target).unwrap();
        symlink(format!("../archive/www/{name}"), &live).unwrap();
        out.push(target);
    }
    (out[0].clone(), out[1].clone())
}

fn readlink(path: &Path) -> String {
    fs::read_link(path).unwrap().display().to_string()
}

fn nginx_accepts(rig: &Rig) {
    let t = rig.nginx.test_config();
    assert!(
        t.status.success(),
        "nginx -t: {}",
        String::from_utf8_lossy(&t.stderr)
    );
}

fn files(out: &support::lab::Output) -> Vec<serde_json::Value> {
    out.json()["targets"][0]["files"]
        .as_array()
        .unwrap()
        .clone()
}

fn failing_test() -> InventorySpec {
    InventorySpec {
        commands: vec![("test", vec![sh("echo injected test failure >&2; exit 1")])],
        ..InventorySpec::default()
    }
}

#[test]
fn certbot_links_are_kept_and_the_archive_files_replaced_then_rolled_back() {
    let rig = Rig::start(RigOptions::default());
    let (chain, key) = certbot_layout(&rig);
    let links = (
        readlink(&rig.nginx.cert_path()),
        readlink(&rig.nginx.key_path()),
    );

    let dry = rig.certctl(&["deploy", "--dry-run", "--output", "json"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    let planned = files(&dry);
    assert_eq!(planned[0]["via_symlink"], chain.display().to_string());
    assert_eq!(planned[1]["via_symlink"], key.display().to_string());
    assert_eq!(planned[0]["action"], "replace");

    let out = rig.certctl(&["deploy", "--output", "json"]);
    assert_eq!(
        out.json()["targets"][0]["status"],
        "deployed",
        "{}",
        out.stderr
    );
    assert_eq!(rig.served(), Served::New);
    assert_eq!(rig.live_set(), LiveSet::New, "read through the links");
    assert_eq!(
        fs::read(&chain).unwrap(),
        rig.new.fullchain,
        "the archive file holds the new chain"
    );
    assert_eq!(fs::read(&key).unwrap(), rig.new.key);
    assert_eq!(
        (
            readlink(&rig.nginx.cert_path()),
            readlink(&rig.nginx.key_path())
        ),
        links,
        "the links are exactly as they were"
    );
    nginx_accepts(&rig);

    // `certctl rollback`: the archive files get their old bytes back, the links stay.
    let undo = rig.certctl(&["rollback", "--output", "json"]);
    assert_eq!(
        undo.json()["targets"][0]["status"],
        "rolled-back",
        "{}",
        undo.stderr
    );
    assert_eq!(rig.served(), Served::Old);
    assert_eq!(fs::read(&chain).unwrap(), rig.old.fullchain);
    assert_eq!(fs::read(&key).unwrap(), rig.old.key);
    assert_eq!(
        (
            readlink(&rig.nginx.cert_path()),
            readlink(&rig.nginx.key_path())
        ),
        links
    );
    assert!(rig.leftovers().is_empty(), "{:?}", rig.leftovers());
    nginx_accepts(&rig);
}

#[test]
fn a_failed_deploy_through_certbot_links_restores_the_archive_and_keeps_the_links() {
    let rig = Rig::start(RigOptions::default());
    let (chain, key) = certbot_layout(&rig);
    let links = (
        readlink(&rig.nginx.cert_path()),
        readlink(&rig.nginx.key_path()),
    );
    rig.write_inventory(&failing_test());
    let out = rig.certctl(&["deploy", "--output", "json"]);
    assert_eq!(
        out.json()["targets"][0]["status"],
        "rolled-back",
        "{}",
        out.stderr
    );
    assert_eq!(fs::read(&chain).unwrap(), rig.old.fullchain);
    assert_eq!(fs::read(&key).unwrap(), rig.old.key);
    assert_eq!(
        (
            readlink(&rig.nginx.cert_path()),
            readlink(&rig.nginx.key_path())
        ),
        links
    );
    assert_eq!(rig.served(), Served::Old);
    assert!(rig.leftovers().is_empty(), "{:?}", rig.leftovers());
    assert!(
        !chain.parent().unwrap().read_dir().unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".certctl-")
        }),
        "no temp file is left beside the archive files"
    );
}

#[test]
fn a_chain_of_two_links_is_followed_to_the_file() {
    let rig = Rig::start(RigOptions::default());
    let (chain, _) = certbot_layout(&rig);
    // certs/fullchain.pem -> ../mid/fullchain.pem -> ../archive/www/fullchain1.pem
    let mid = rig.nginx.dir().join("mid");
    fs::create_dir_all(&mid).unwrap();
    symlink("../archive/www/fullchain1.pem", mid.join("fullchain.pem")).unwrap();
    fs::remove_file(rig.nginx.cert_path()).unwrap();
    symlink("../mid/fullchain.pem", rig.nginx.cert_path()).unwrap();
    let out = rig.certctl(&["deploy", "--output", "json"]);
    assert_eq!(
        out.json()["targets"][0]["status"],
        "deployed",
        "{}",
        out.stderr
    );
    assert_eq!(files(&out)[0]["via_symlink"], chain.display().to_string());
    assert_eq!(fs::read(&chain).unwrap(), rig.new.fullchain);
    assert_eq!(readlink(&rig.nginx.cert_path()), "../mid/fullchain.pem");
    assert_eq!(
        readlink(&mid.join("fullchain.pem")),
        "../archive/www/fullchain1.pem"
    );
    assert_eq!(rig.served(), Served::New);
    nginx_accepts(&rig);
}

#[test]
fn follow_symlinks_false_replaces_the_link_and_rollback_puts_it_back() {
    let rig = Rig::start(RigOptions::default());
    let (chain, _) = certbot_layout(&rig);
    let link = readlink(&rig.nginx.cert_path());
    rig.write_inventory(&InventorySpec {
        params: vec![("follow_symlinks".into(), "false".into())],
        ..InventorySpec::default()
    });
    let out = rig.certctl(&["deploy", "--output", "json"]);
    assert_eq!(
        out.json()["targets"][0]["status"],
        "deployed",
        "{}",
        out.stderr
    );
    let live = fs::symlink_metadata(rig.nginx.cert_path()).unwrap();
    assert!(
        live.file_type().is_file(),
        "the link itself was replaced by a file"
    );
    assert_eq!(
        fs::read(&chain).unwrap(),
        rig.old.fullchain,
        "the archive is untouched"
    );
    assert_eq!(rig.served(), Served::New);
    let undo = rig.certctl(&["rollback", "--output", "json"]);
    assert_eq!(
        undo.json()["targets"][0]["status"],
        "rolled-back",
        "{}",
        undo.stderr
    );
    assert_eq!(readlink(&rig.nginx.cert_path()), link, "the link is back");
    assert_eq!(rig.served(), Served::Old);
    nginx_accepts(&rig);
}

#[test]
fn a_dangling_link_is_a_missing_file_written_where_it_points() {
    let rig = Rig::start(RigOptions::default());
    let (_, key) = certbot_layout(&rig);
    fs::remove_file(&key).unwrap();
    let dry = rig.certctl(&["deploy", "--dry-run", "--output", "json"]);
    assert_eq!(
        dry.json()["targets"][0]["status"],
        "would-change",
        "{}",
        dry.stderr
    );
    let planned = files(&dry);
    assert_eq!(planned[1]["action"], "repair");
    assert!(
        planned[1]["repair"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{planned:?}"
    );
    let out = rig.certctl(&["deploy", "--output", "json"]);
    assert_eq!(
        out.json()["targets"][0]["status"],
        "deployed",
        "{}",
        out.stderr
    );
    assert_eq!(
        fs::read(&key).unwrap(),
        rig.new.key,
        "written at the link's target"
    );
    assert_eq!(
        readlink(&rig.nginx.key_path()),
        "../archive/www/privkey1.pem"
    );
    assert_eq!(rig.served(), Served::New);
    nginx_accepts(&rig);
}

/// A repair: the dry-run says what it found and would-change; the preview's live test fails
/// on the broken live files and is attributed to them; the deploy leaves nginx -t passing.
fn repairs(break_it: impl Fn(&Rig), says: &str) {
    let rig = Rig::start(RigOptions::default());
    break_it(&rig);
    assert!(
        !rig.nginx.test_config().status.success(),
        "the live files are broken"
    );
    let dry = rig.certctl(&["deploy", "--dry-run", "--output", "json"]);
    let report = &dry.json()["targets"][0];
    assert_eq!(report["status"], "would-change", "{}", dry.stderr);
    let inspect = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "inspect")
        .unwrap();
    assert!(
        inspect["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("repairs: {says}")),
        "{inspect}"
    );
    let out = rig.certctl(&["deploy", "--output", "json"]);
    let report = &out.json()["targets"][0];
    assert_eq!(report["status"], "deployed", "{}", out.stderr);
    let preview = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "preview")
        .unwrap();
    assert!(
        preview["detail"]
            .as_str()
            .unwrap()
            .contains("fails on the live files being repaired"),
        "{preview}"
    );
    assert_eq!(rig.served(), Served::New);
    assert_eq!(rig.live_set(), LiveSet::New);
    nginx_accepts(&rig);
}

#[test]
fn a_missing_key_is_repaired() {
    repairs(
        |rig| fs::remove_file(rig.nginx.key_path()).unwrap(),
        "key missing",
    );
}

#[test]
fn a_truncated_certificate_is_repaired() {
    repairs(
        |rig| fs::write(rig.nginx.cert_path(), &rig.old.fullchain[..100]).unwrap(),
        "fullchain not a loadable certificate",
    );
}

#[test]
fn a_mixed_pair_is_repaired() {
    repairs(
        |rig| fs::write(rig.nginx.cert_path(), &rig.new.fullchain).unwrap(),
        "key does not match the certificate",
    );
}

#[test]
fn a_failed_repair_rolls_back_to_exactly_what_was_there() {
    let rig = Rig::start(RigOptions::default());
    fs::remove_file(rig.nginx.key_path()).unwrap();
    rig.write_inventory(&failing_test());
    let out = rig.certctl(&["deploy", "--output", "json"]);
    assert_eq!(
        out.json()["targets"][0]["status"],
        "rolled-back",
        "{}",
        out.stderr
    );
    assert!(!rig.nginx.key_path().exists(), "missing stays missing");
    assert_eq!(fs::read(rig.nginx.cert_path()).unwrap(), rig.old.fullchain);
    assert!(rig.leftovers().is_empty(), "{:?}", rig.leftovers());
}

#[test]
fn a_lock_that_cannot_be_written_is_given_back_and_said_so() {
    let rig = Rig::start(RigOptions {
        backup_tmpfs: true,
        ..RigOptions::default()
    });
    rig.fill(&rig.backup_dir());
    let out = rig.certctl(&["deploy", "--output", "json"]);
    let report = &out.json()["targets"][0];
    assert_eq!(report["status"], "failed", "{}", out.stderr);
    let error = report["error"].as_str().unwrap();
    assert!(error.starts_with("lock failed: could not"), "{error}");
    assert!(error.contains("No space left on device"), "{error}");
    assert!(!error.contains("exited 0"), "{error}");
    assert!(
        !rig.backup_dir().join(".lock").exists(),
        "no lock is left behind"
    );
    assert_eq!(rig.served(), Served::Old);
    fs::remove_file(rig.backup_dir().join("filler")).unwrap();
    let again = rig.certctl(&["deploy", "--output", "json"]);
    assert_eq!(
        again.json()["targets"][0]["status"],
        "deployed",
        "{}",
        again.stderr
    );
}

#[test]
fn an_unfinished_change_is_shown_by_status_and_by_the_stale_lock_message() {
    let rig = Rig::start(RigOptions::default());
    let pause = rig.arm_pause("mv", "privkey.pem", 1);
    let mut child = rig.spawn_certctl(&["deploy"]);
    assert!(
        pause.wait(Duration::from_secs(60)),
        "{:?}",
        rig.spawned_output()
    );
    child.kill().unwrap();
    child.wait().unwrap();
    pause.release();
    assert!(rig.wait_remote_idle());
    rig.disarm();
    assert!(rig.journal().is_some());

    let status = rig.certctl(&["status", "--output", "json"]);
    let report = &status.json()["targets"][0];
    assert_eq!(report["status"], "mismatch", "{}", status.stderr);
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains("an unfinished change") && error.contains("interrupted after"),
        "{error}"
    );

    let held = rig.certctl(&["deploy", "--output", "json"]);
    let error = held.json()["targets"][0]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.contains("no longer running"), "{error}");
    assert!(
        error.contains("It left a change unfinished") && error.contains("rolls it back"),
        "{error}"
    );
    let fixed = rig.certctl(&["deploy", "--break-lock", "--output", "json"]);
    assert_eq!(
        fixed.json()["targets"][0]["status"],
        "deployed",
        "{}",
        fixed.stderr
    );
    assert_eq!(rig.served(), Served::New);
}
