//! The JSON a script reads, against a real sshd + nginx: verify's served expiry, status's facts
//! as fields and its exit code (4 on a mismatch, as verify), deploy's served expiry; and the
//! per-subcommand exit-code tables of `--help`.

use crate::support;

use support::lab::{Lab, TargetOptions};

fn days_left(target: &serde_json::Value) -> i64 {
    target["served_days_left"]
        .as_i64()
        .unwrap_or_else(|| panic!("served_days_left: {target}"))
}

#[test]
fn verify_deploy_and_status_carry_expiry_and_facts_as_fields() {
    let lab = Lab::start(TargetOptions {
        new_expires_in_days: Some(40),
        ..TargetOptions::default()
    });
    // Before: the old certificate is served (a mismatch), with its own expiry.
    let out = lab.certctl(&["verify", "--output", "json"]);
    assert_eq!(out.code, 4, "{}", out.stderr);
    let target = &out.json()["targets"][0];
    assert_eq!(target["status"], "mismatch");
    assert!(target["served_not_after"].is_string(), "{target}");
    assert!(days_left(target) > 40, "the old leaf's expiry: {target}");

    let out = lab.certctl(&["status", "--output", "json"]);
    assert_eq!(
        out.code, 4,
        "status: a mismatch exits 4, as verify: {}",
        out.stderr
    );
    let target = &out.json()["targets"][0];
    let facts = &target["facts"];
    let uname = |flag: &str| {
        let out = std::process::Command::new("uname")
            .arg(flag)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    assert_eq!(facts["arch"], uname("-m").as_str(), "{facts}");
    assert_eq!(
        facts["os"],
        format!("{} {}", uname("-s"), uname("-r")).as_str(),
        "{facts}"
    );
    assert!(
        facts["hostname"].as_str().is_some_and(|h| !h.is_empty()),
        "{facts}"
    );
    assert!(
        facts["server_version"]
            .as_str()
            .is_some_and(|v| v.contains("nginx")),
        "{facts}"
    );
    assert!(days_left(target) > 40);

    // A 40-day certificate over a 90-day one: the policy gate wants --force.
    let out = lab.certctl(&["deploy", "--force", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let target = &out.json()["targets"][0];
    assert!((39..=40).contains(&days_left(target)), "{target}");
    assert!(target["facts"].is_null());

    let out = lab.certctl(&["verify", "--output", "json", "--warn-days", "0"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let target = &out.json()["targets"][0];
    assert!((39..=40).contains(&days_left(target)), "{target}");

    let out = lab.certctl(&["status", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!((39..=40).contains(&days_left(&out.json()["targets"][0])));
}

fn help(command: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_certctl"))
        .args([command, "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    text[text.find("Exit codes:").expect("an exit-code table")..].to_string()
}

/// The codes listed in a table: the first word of each line that starts with two spaces.
fn codes(table: &str) -> Vec<String> {
    table
        .lines()
        .filter_map(|l| l.strip_prefix("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.chars().all(|c| c.is_ascii_digit()))
        .map(str::to_string)
        .collect()
}

#[test]
fn each_subcommand_lists_only_its_exit_codes() {
    assert_eq!(codes(&help("deploy")), ["0", "1", "2", "3", "130"]);
    assert_eq!(codes(&help("verify")), ["0", "2", "4", "130"]);
    assert_eq!(codes(&help("check")), ["0", "2"]);
    assert_eq!(codes(&help("rollback")), ["0", "1", "2", "3", "130"]);
    assert_eq!(codes(&help("status")), ["0", "1", "2", "4", "130"]);
    assert!(help("status").contains("(as verify)"));
}
