//! Unknown hosts against a real sshd: the known_hosts line to add is printed once, in one block
//! after the summary, however many targets share the host; `--accept-new-host-keys` prints
//! OpenSSH's "Permanently added" line once per key it records.

use std::fs;

use crate::support;

use support::lab::{KnownHosts, Lab, TargetOptions};

/// The lab's inventory with its one target repeated as `web-2` and `web-3` (same host).
fn three_targets(lab: &Lab) {
    let yaml = fs::read_to_string(&lab.inventory).unwrap();
    let at = yaml.find("  - name: web-1\n").unwrap();
    let target = yaml[at..].to_string();
    let mut out = yaml.clone();
    for name in ["web-2", "web-3"] {
        out.push_str(&target.replace("name: web-1", &format!("name: {name}")));
    }
    fs::write(&lab.inventory, out).unwrap();
}

#[test]
fn the_lines_to_add_are_collected_into_one_block() {
    let lab = Lab::start(TargetOptions {
        known_hosts: KnownHosts::Empty,
        ..TargetOptions::default()
    });
    three_targets(&lab);
    let out = lab.certctl(&["deploy", "--dry-run"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let line = lab.sshd.known_hosts_line();
    let key = line.split_whitespace().last().unwrap();
    assert_eq!(out.stderr.matches(key).count(), 1, "once: {}", out.stderr);
    assert_eq!(
        out.stderr.matches("(line to add: below)").count(),
        3,
        "{}",
        out.stderr
    );
    let block_at = out.stderr.find("Host keys not in ").expect("a block");
    assert!(
        out.stderr[block_at..].contains(line.trim()),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.trim_end().ends_with(line.trim()),
        "the block ends the output: {}",
        out.stderr
    );
    // The JSON keeps each target's full message.
    let out = lab.certctl(&["deploy", "--dry-run", "--output", "json"]);
    for t in out.json()["targets"].as_array().unwrap() {
        assert!(t["error"].as_str().unwrap().contains(key), "{t}");
    }
}

#[test]
fn accept_new_host_keys_says_permanently_added_once_per_key() {
    let lab = Lab::start(TargetOptions {
        known_hosts: KnownHosts::Empty,
        ..TargetOptions::default()
    });
    let out = lab.certctl(&["deploy", "--dry-run", "--accept-new-host-keys"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let host = lab.sshd.host();
    let expected = format!(
        "Warning: Permanently added '[{host}]:{}' (ED25519) to the list of known hosts.",
        lab.sshd.port()
    );
    assert_eq!(out.stderr.matches(&expected).count(), 1, "{}", out.stderr);
    // Recorded: the next run is silent about it.
    let out = lab.certctl(&["deploy", "--dry-run", "--accept-new-host-keys"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stderr.contains("Permanently added"), "{}", out.stderr);
}
