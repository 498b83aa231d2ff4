//! A deploy through a jump host given by the inventory's `jump:`: a second real sshd acts as
//! the bastion; every hop's host key is checked against the target's known_hosts.

use crate::support;

use std::fs;

use support::lab::{Lab, TargetOptions};
use support::sshd::Sshd;

/// Adds `jump: root@BASTION` to the lab's inventory and lets the bastion in with the lab's key.
fn via_bastion(lab: &Lab, bastion: &Sshd, trust_bastion: bool) {
    bastion.authorize(&lab.sshd.client_key);
    let inventory = fs::read_to_string(&lab.inventory).unwrap();
    let jump = format!("{}@[{}]:{}", bastion.user, bastion.host(), bastion.port());
    let inventory = inventory.replacen(
        "    certificate: www\n",
        &format!("    certificate: www\n    jump: \"{jump}\"\n"),
        1,
    );
    fs::write(&lab.inventory, inventory).unwrap();
    let known_hosts = inventory_known_hosts(lab);
    let mut text = fs::read_to_string(&known_hosts).unwrap();
    if trust_bastion {
        text.push_str(&format!("{}\n", bastion.known_hosts_line()));
    } else {
        let wrong = lab.path("wrong").join("known_hosts");
        let line = bastion.write_wrong_known_hosts(&wrong);
        text.push_str(&format!("{line}\n"));
    }
    fs::write(&known_hosts, text).unwrap();
}

fn inventory_known_hosts(lab: &Lab) -> std::path::PathBuf {
    let inventory = fs::read_to_string(&lab.inventory).unwrap();
    let line = inventory
        .lines()
        .find(|l| l.trim_start().starts_with("known_hosts:"))
        .unwrap();
    let value = line.split_once(':').unwrap().1.trim();
    serde_json::from_str::<String>(value).unwrap().into()
}

#[test]
fn deploy_through_a_jump_host() {
    let lab = Lab::start(TargetOptions::default());
    let bastion = Sshd::start();
    via_bastion(&lab, &bastion, true);
    let out = lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["targets"][0]["status"], "deployed");
    assert_eq!(lab.served(), lab.new.fingerprint);
    assert_eq!(
        bastion.log().matches("Accepted publickey").count(),
        1,
        "one connection to the bastion"
    );
}

#[test]
fn a_wrong_host_key_at_the_jump_host_is_refused_and_nothing_changes() {
    let lab = Lab::start(TargetOptions::default());
    let bastion = Sshd::start();
    via_bastion(&lab, &bastion, false);
    let before = lab.live_file_contents();
    let out = lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let target = &out.json()["targets"][0];
    assert_eq!(target["status"], "unreachable");
    let error = target["error"].as_str().unwrap();
    assert!(error.contains("HOST KEY CHANGED"), "{error}");
    assert!(error.contains(&bastion.host_key_fingerprint()), "{error}");
    assert_eq!(lab.live_file_contents(), before);
    assert_eq!(lab.sshd_connections(), 0, "the target was never reached");
}
