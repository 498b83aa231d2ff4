//! The operator's own SSH setup, used by `certctl deploy` end to end against a real sshd and
//! nginx: an ssh config file (`-F`) with Host patterns, negation and an alias supplying
//! HostName, Port, User, IdentityFile, IdentitiesOnly and several UserKnownHostsFile; an
//! encrypted key unlocked with `CERTCTL_SSH_PASSPHRASE`; a real `ssh-agent`; trust on first
//! use only with `--accept-new-host-keys`, strict afterwards, and `@revoked` refused.

use crate::support;

use std::fs;
use std::path::Path;
use std::process::Command;

use support::lab::{Lab, Output, TargetOptions};
use support::sshd::{self, Agent};

/// The lab's inventory without any SSH setting, its target named by the alias `host`.
fn inventory_without_ssh_settings(lab: &Lab, host: &str) {
    let yaml = fs::read_to_string(&lab.inventory).unwrap();
    let mut out = String::new();
    for line in yaml.lines() {
        let ssh_setting = ["  user:", "  port:", "  identity_file:", "  known_hosts:"]
            .iter()
            .any(|k| line.starts_with(k));
        if ssh_setting {
            continue;
        }
        if line.starts_with("    host: ") {
            out.push_str(&format!("    host: {host}\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(
        !out.contains("identity_file") && !out.contains(&lab.sshd.host()),
        "{out}"
    );
    fs::write(&lab.inventory, out).unwrap();
}

fn certctl(lab: &Lab, args: &[&str], env: &[(&str, &Path)], passphrase: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_certctl"));
    cmd.arg(args[0])
        .arg("-i")
        .arg(&lab.inventory)
        .args(&args[1..]);
    cmd.env_remove("SSH_AUTH_SOCK")
        .env_remove("CERTCTL_SSH_PASSPHRASE")
        .env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(p) = passphrase {
        cmd.env("CERTCTL_SSH_PASSPHRASE", p);
    }
    let out = cmd.output().unwrap();
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn an_ssh_config_alias_with_an_encrypted_key_deploys() {
    let lab = Lab::start(TargetOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id_deploy");
    sshd::keygen(&key, "ed25519", "correct horse");
    lab.sshd.authorize(&key);
    let config = dir.path().join("ssh_config");
    fs::write(
        &config,
        format!(
            "# the operator's config\n\
             Host web-* !web-canary\n\
             \x20 HostName {ip}\n\
             \x20 Port {port}\n\
             \x20 IdentityFile {key}\n\
             \x20 IdentitiesOnly yes\n\
             \x20 UserKnownHostsFile {missing} {known}\n\
             Host web-canary\n\
             \x20 HostName 192.0.2.1\n\
             Host *\n\
             \x20 User {user}\n\
             \x20 ConnectTimeout 20\n\
             \x20 ServerAliveInterval 5\n\
             \x20 ControlMaster auto\n",
            ip = lab.sshd.host(),
            port = lab.sshd.port(),
            key = key.display(),
            missing = dir.path().join("absent_known_hosts").display(),
            known = lab.sshd.known_hosts.display(),
            user = lab.sshd.user,
        ),
    )
    .unwrap();
    inventory_without_ssh_settings(&lab, "web-blue");
    let config_arg = config.to_str().unwrap();

    // Without the passphrase the key is unusable and the run says how to fix it.
    let out = certctl(
        &lab,
        &["deploy", "-F", config_arg, "--output", "json"],
        &[],
        None,
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    let error = out.json()["targets"][0]["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(error.contains("CERTCTL_SSH_PASSPHRASE"), "{error}");

    let out = certctl(
        &lab,
        &["deploy", "-F", config_arg, "--output", "json"],
        &[],
        Some("correct horse"),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.json()["targets"][0]["status"],
        "deployed",
        "{}",
        out.stderr
    );
    assert_eq!(lab.served(), lab.new.fingerprint);
    // The key from the config, not the lab's own, opened the session.
    let fp = sshd::fingerprint(&sshd::pub_path(&key));
    assert!(lab.sshd.log().contains(&fp), "{}", lab.sshd.log());
    // What the config says that certctl does not follow is shown, with file and line.
    assert!(
        out.stderr.contains(&format!(
            "warning: {}:14: ControlMaster is not supported",
            config.display()
        )),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("correct horse"),
        "the passphrase never appears"
    );
}

#[test]
fn a_real_ssh_agent_authenticates_the_deploy() {
    let lab = Lab::start(TargetOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("agent_key");
    sshd::keygen(&key, "ed25519", "");
    lab.sshd.authorize(&key);
    let agent = Agent::start(dir.path());
    agent.add(&key);
    // Only the agent holds the key: the private key file is gone.
    fs::remove_file(&key).unwrap();
    let config = dir.path().join("ssh_config");
    fs::write(
        &config,
        format!(
            "Host lab\n  HostName {}\n  Port {}\n  User {}\n  UserKnownHostsFile {}\n",
            lab.sshd.host(),
            lab.sshd.port(),
            lab.sshd.user,
            lab.sshd.known_hosts.display()
        ),
    )
    .unwrap();
    inventory_without_ssh_settings(&lab, "lab");
    let out = certctl(
        &lab,
        &["deploy", "-F", config.to_str().unwrap(), "--output", "json"],
        &[("SSH_AUTH_SOCK", &agent.socket), ("HOME", dir.path())],
        None,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["targets"][0]["status"], "deployed");
    let fp = sshd::fingerprint(&sshd::pub_path(&key));
    assert!(lab.sshd.log().contains(&fp), "{}", lab.sshd.log());
}

#[test]
fn accept_new_host_keys_records_the_key_then_runs_are_strict_and_revoked_keys_refused() {
    let lab = Lab::start(TargetOptions {
        known_hosts: support::lab::KnownHosts::Empty,
        ..TargetOptions::default()
    });
    let yaml = fs::read_to_string(&lab.inventory).unwrap();
    let known_hosts: String = yaml
        .lines()
        .find_map(|l| l.strip_prefix("  known_hosts: "))
        .map(|v| serde_json::from_str(v).unwrap())
        .unwrap();
    let known_hosts = Path::new(&known_hosts);
    let before = lab.snapshot_live_files();

    let out = certctl(&lab, &["deploy", "--output", "json"], &[], None);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(out.json()["targets"][0]["status"], "unreachable");
    assert_eq!(
        fs::read_to_string(known_hosts).unwrap(),
        "",
        "nothing recorded"
    );
    assert_eq!(lab.snapshot_live_files(), before);

    let out = certctl(
        &lab,
        &["deploy", "--accept-new-host-keys", "--output", "json"],
        &[],
        None,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["targets"][0]["status"], "deployed");
    assert_eq!(
        fs::read_to_string(known_hosts).unwrap(),
        format!("{}\n", lab.sshd.known_hosts_line())
    );
    // Strict from now on: the recorded key is enough without the flag…
    let out = certctl(&lab, &["verify", "--output", "json"], &[], None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = certctl(&lab, &["status", "--output", "json"], &[], None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // …and another key for the host is refused even with the flag, and not recorded.
    let wrong = lab.sshd.write_wrong_known_hosts(known_hosts);
    let out = certctl(&lab, &["rollback", "--accept-new-host-keys"], &[], None);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("HOST KEY CHANGED"), "{}", out.stderr);
    assert_eq!(
        fs::read_to_string(known_hosts).unwrap(),
        format!("{wrong}\n")
    );
    assert_eq!(lab.served(), lab.new.fingerprint, "nothing rolled back");

    // The right key, but revoked in the same file: refused.
    fs::write(
        known_hosts,
        format!(
            "{}\n@revoked * {}\n",
            lab.sshd.known_hosts_line(),
            lab.sshd.host_key_pub
        ),
    )
    .unwrap();
    let out = certctl(&lab, &["rollback", "--accept-new-host-keys"], &[], None);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("is marked @revoked"), "{}", out.stderr);
    assert_eq!(lab.served(), lab.new.fingerprint, "nothing rolled back");
}
