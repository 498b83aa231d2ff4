//! `become: sudo` against a real OpenSSH sshd: a non-root login user, created by the test
//! support code, with (or without) passwordless sudo through a sudoers.d file the test writes
//! and removes. The transport level (every operation runs as root, uploads pass through a
//! private staging directory that is gone afterwards) and the built binary end to end (deploy
//! to root-owned nginx files, preview, rollback; a user without sudo rights fails fast).

use crate::support;

use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use certctl::ssh::{AuthSources, Session, SshConfig, SshErrorKind};
use support::lab::{Lab, TargetOptions};
use support::sshd::Sshd;
use support::users::LoginUser;

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

fn as_user(server: &Sshd, user: &LoginUser) -> SshConfig {
    SshConfig {
        user: user.name.clone(),
        become_sudo: true,
        ..server.ssh_config()
    }
}

fn owner(path: &Path) -> (u32, u32, u32) {
    let m = fs::metadata(path).unwrap();
    (m.uid(), m.gid(), m.mode() & 0o7777)
}

#[tokio::test]
async fn become_sudo_runs_every_operation_as_root_through_a_private_staging_dir() {
    let server = Sshd::start();
    server.allow_other_logins();
    let user = LoginUser::create(true);
    let session = Session::connect_with(&as_user(&server, &user), &AuthSources::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(session.uses_sudo());
    assert!(
        server
            .log()
            .contains(&format!("Accepted publickey for {}", user.name)),
        "logged in as the non-root user"
    );

    // Commands and scripts run as root.
    let out = session.exec(&argv(&["id", "-u"])).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");
    let mut script = certctl::ssh::quote::Script::new();
    script.cmd(&["id", "-un"]);
    script.cmd(&["cat"]);
    let out = session
        .exec_script(&script, Some(b"stdin passes"))
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "root\nstdin passes");

    // A root-only directory the login user cannot even enter.
    let dir = tempfile::Builder::new()
        .prefix("certctl-become-")
        .tempdir()
        .unwrap();
    fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let live = dir.path().join("www.key");
    let staged = dir.path().join(".www.key.tmp");
    fs::write(&live, "old").unwrap();
    let daemon_gid = 1;
    session
        .upload(
            staged.to_str().unwrap(),
            b"secret key bytes",
            0o640,
            Some((0, daemon_gid)),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(owner(&staged), (0, daemon_gid, 0o640));
    assert_eq!(fs::read(&staged).unwrap(), b"secret key bytes");
    // The staging directory: the login user's own, 0700, and empty after the install.
    let stages = user.tmp_dirs("certctl-sudo.");
    assert_eq!(stages.len(), 1, "{stages:?}");
    assert_eq!(owner(&stages[0]), (user.uid, owner(&stages[0]).1, 0o700));
    assert_eq!(fs::read_dir(&stages[0]).unwrap().count(), 0);

    // Exclusive create, as without sudo: an existing file is not overwritten.
    let err = session
        .upload(staged.to_str().unwrap(), b"again", 0o600, None)
        .await
        .unwrap_err();
    assert!(matches!(err.kind, SshErrorKind::Become { .. }), "{err:?}");
    assert!(err.to_string().contains("exist already"), "{err}");
    assert_eq!(fs::read(&staged).unwrap(), b"secret key bytes");
    assert_eq!(
        fs::read_dir(&stages[0]).unwrap().count(),
        0,
        "the staged copy is removed on failure too"
    );

    let inode = fs::metadata(&staged).unwrap().ino();
    session
        .rename_over(staged.to_str().unwrap(), live.to_str().unwrap())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        fs::metadata(&live).unwrap().ino(),
        inode,
        "renamed, not copied"
    );
    assert!(!staged.exists());
    assert_eq!(
        session
            .read_file(live.to_str().unwrap(), 1024)
            .await
            .unwrap(),
        b"secret key bytes"
    );
    let err = session
        .read_file(live.to_str().unwrap(), 4)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("larger than 4 bytes"), "{err}");
    session.remove_file(live.to_str().unwrap()).await.unwrap();
    assert!(!live.exists());
    session
        .remove_file(live.to_str().unwrap())
        .await
        .expect("a missing file is not an error");

    session.close().await;
    assert!(
        user.tmp_dirs("certctl-sudo.").is_empty(),
        "the staging directory is removed at close"
    );
}

#[tokio::test]
async fn a_login_without_passwordless_sudo_fails_at_connect_naming_the_host() {
    let server = Sshd::start();
    server.allow_other_logins();
    let user = LoginUser::create(false);
    let err = Session::connect_with(&as_user(&server, &user), &AuthSources::default())
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err.kind, SshErrorKind::Become { .. }), "{err:?}");
    assert!(
        message.starts_with(&format!("{}:{}: ", server.host(), server.port())),
        "{message}"
    );
    assert!(
        message.contains(&format!("user `{}` cannot run `sudo -n`", user.name))
            && message.contains("password is required")
            && message.contains("NOPASSWD"),
        "{message}"
    );
}

/// The lab's inventory, rewritten to log in as `user` with `become: sudo`.
fn log_in_as(lab: &Lab, user: &LoginUser) {
    lab.sshd.allow_other_logins();
    let yaml = fs::read_to_string(&lab.inventory).unwrap();
    let root = format!(
        "  user: {}\n",
        serde_json::to_string(&lab.sshd.user).unwrap()
    );
    assert!(yaml.contains(&root), "{yaml}");
    let yaml = yaml.replacen(
        &root,
        &format!("  user: {}\n  become: sudo\n", user.name),
        1,
    );
    fs::write(&lab.inventory, yaml).unwrap();
}

#[test]
fn a_non_root_login_with_sudo_deploys_to_root_owned_files_previews_and_rolls_back() {
    let lab = Lab::start(TargetOptions::default());
    let user = LoginUser::create(true);
    log_in_as(&lab, &user);
    // Root-owned files the login user cannot read or write; the key group-readable by `daemon`.
    let (cert, key) = (lab.nginx.cert_path(), lab.nginx.key_path());
    std::os::unix::fs::chown(&key, Some(0), Some(1)).unwrap();
    fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    let before = lab.snapshot_live_files();
    let (cert_meta, key_meta) = (owner(&cert), owner(&key));
    assert_eq!(key_meta, (0, 1, 0o640));

    // Preview: staged files loaded by nginx (through sudo), nothing live touched.
    let out = lab.certctl(&["deploy", "--dry-run", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.json()["targets"][0]["status"],
        "would-change",
        "{}",
        out.stderr
    );
    assert_eq!(lab.snapshot_live_files(), before);
    assert_eq!(lab.served(), lab.old.fingerprint);

    let key_inode = fs::metadata(&key).unwrap().ino();
    let out = lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let target = &out.json()["targets"][0];
    assert_eq!(target["status"], "deployed", "{}", out.stderr);
    assert_eq!(lab.served(), lab.new.fingerprint);
    assert_eq!(fs::read(&cert).unwrap(), lab.new.fullchain_pem());
    assert_eq!(fs::read(&key).unwrap(), fs::read(&lab.new.key).unwrap());
    // Owner, group and mode kept; replaced by a rename (a new inode), nothing left beside.
    assert_eq!(owner(&cert), cert_meta);
    assert_eq!(owner(&key), key_meta);
    assert_ne!(fs::metadata(&key).unwrap().ino(), key_inode);
    let leftovers: Vec<_> = fs::read_dir(key.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".certctl-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(
        user.tmp_dirs("certctl-sudo.").is_empty(),
        "staging dir removed"
    );
    assert!(
        lab.sshd
            .log()
            .contains(&format!("Accepted publickey for {}", user.name))
    );

    let out = lab.certctl(&["rollback", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.json()["targets"][0]["status"],
        "rolled-back",
        "{}",
        out.stderr
    );
    assert_eq!(lab.served(), lab.old.fingerprint);
    assert_eq!(owner(&key), key_meta);
    assert_eq!(
        lab.live_file_contents(),
        before.iter().map(|(c, _)| c.clone()).collect::<Vec<_>>()
    );
}

#[test]
fn a_non_root_login_without_sudo_rights_fails_fast_and_changes_nothing() {
    let lab = Lab::start(TargetOptions::default());
    let user = LoginUser::create(false);
    log_in_as(&lab, &user);
    let before = lab.snapshot_live_files();
    let out = lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let target = &out.json()["targets"][0];
    // The login worked: a refused sudo is a failure of the target, not an unreachable host.
    assert_eq!(target["status"], "failed", "{}", out.stderr);
    let error = target["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("{}:{}", lab.sshd.host(), lab.sshd.port()))
            && error.contains(&format!("user `{}` cannot run `sudo -n`", user.name))
            && error.contains("password is required")
            && error.contains("nothing was changed"),
        "{error}"
    );
    assert_eq!(lab.snapshot_live_files(), before);
    assert_eq!(lab.served(), lab.old.fingerprint);
}
