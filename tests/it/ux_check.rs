//! `certctl check` and invalid input, from the binary: problems said once with the targets
//! they affect, no `(os error N)`, the missing-inventory pointer, the YAML indentation hint,
//! exit 2 with `--output json` still one JSON document, `check --output json` against its
//! schema, `--show` as `ssh -G`, and the offline SSH checks.

use std::fs;

use crate::support;

use support::offline::{Offline, certctl_env};

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not one JSON document ({e}): {stdout}"))
}

#[test]
fn a_problem_shared_by_many_targets_is_reported_once() {
    let fleet = Offline::new(30);
    let yaml = fs::read_to_string(&fleet.inventory).unwrap();
    let missing = fleet.path("gone/www.crt");
    let cert = yaml
        .lines()
        .find_map(|l| l.trim().strip_prefix("cert: "))
        .unwrap()
        .to_string();
    fs::write(
        &fleet.inventory,
        yaml.replace(&cert, missing.to_str().unwrap()),
    )
    .unwrap();

    let out = fleet.certctl(&["deploy"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(out.stderr.matches("error:").count(), 1, "{}", out.stderr);
    assert!(!out.stderr.contains("os error"), "{}", out.stderr);
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"/tmp/certctl-offline-[A-Za-z0-9]+", "[DIR]");
    settings.bind(|| insta::assert_snapshot!("problem_once", out.stderr));

    // The same as JSON: one document, one problem with 30 targets.
    let out = fleet.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 2);
    let doc = out.json();
    assert_eq!(doc["targets"].as_array().unwrap().len(), 0);
    assert_eq!(doc["problems"].as_array().unwrap().len(), 1);
    assert_eq!(doc["problems"][0]["targets"].as_array().unwrap().len(), 30);
}

#[test]
fn exit_2_with_json_output_still_writes_one_document() {
    let fleet = Offline::new(1);
    let inventory = fleet.inventory.to_str().unwrap();
    for (args, says) in [
        (
            vec!["verify", "-i", "nowhere.yaml", "--output", "json"],
            "no inventory at nowhere.yaml",
        ),
        (
            vec!["deploy", "-i", inventory, "--output=json", "--forks", "0"],
            "--forks",
        ),
        (
            vec![
                "status", "-i", inventory, "--output", "json", "--limit", "nope",
            ],
            "`nope` matches no target",
        ),
    ] {
        let out = certctl_env(fleet.dir.path(), &args, &[], &[]);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        let doc = json(&out.stdout);
        certctl::report::validate_report(&doc).unwrap();
        assert_eq!(doc["command"], args[0]);
        let message = doc["problems"][0]["message"].as_str().unwrap();
        assert!(message.contains(says), "{args:?}: {message}");
        assert!(out.stderr.contains(says), "stderr too: {}", out.stderr);
    }
    let out = certctl_env(
        fleet.dir.path(),
        &["check", "-i", "nowhere.yaml", "--output", "json"],
        &[],
        &[],
    );
    assert_eq!(out.code, 2);
    let doc = json(&out.stdout);
    certctl::report::validate_check(&doc).unwrap();
    assert_eq!(doc["ok"], false);
}

#[test]
fn no_inventory_points_at_i_the_variable_and_init() {
    let dir = tempfile::tempdir().unwrap();
    let out = certctl_env(dir.path(), &["check"], &[], &[]);
    assert_eq!(out.code, 2);
    assert_eq!(
        out.stderr,
        "error: no inventory at certctl.yaml: pass one with -i FILE, set CERTCTL_INVENTORY, or \
         write a starter with `certctl init` (then `certctl check`)\n"
    );
}

#[test]
fn yaml_indentation_errors_get_a_plain_hint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("certctl.yaml");
    for yaml in [
        "targets:\n  - name: a\n    host: b\n   certificate: c\n",
        "defaults:\n  user: x\n port: 22\n",
        "targets:\n  - name: a\n      host: b\n",
    ] {
        fs::write(&path, yaml).unwrap();
        let out = certctl_env(dir.path(), &["check"], &[], &[]);
        assert_eq!(out.code, 2);
        assert!(
            out.stderr
                .contains("(check the indentation of this line and of the line above)"),
            "{yaml}: {}",
            out.stderr
        );
    }
}

#[test]
fn check_json_lists_targets_with_their_resolved_connection() {
    let fleet = Offline::new(2);
    fs::write(fleet.path("known_hosts"), "[127.0.0.1]:1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n").unwrap();
    let out = fleet.certctl(&["check", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let doc = json(&out.stdout);
    certctl::report::validate_check(&doc).unwrap();
    assert_eq!(doc["ok"], true);
    let t = &doc["targets"][1];
    assert_eq!(t["name"], "web-2");
    assert_eq!(t["connection"]["address"], "127.0.0.1");
    assert_eq!(t["connection"]["port"], 1);
    assert_eq!(t["connection"]["user"], "deploy");
    assert_eq!(
        t["connection"]["known_hosts"][0],
        fleet.path("known_hosts").to_str().unwrap()
    );
    assert_eq!(t["files"][1]["role"], "key");
    assert_eq!(t["files"][1]["default_mode"], "0600");
    assert_eq!(t["verify"]["sni"], "www.test.example");
    assert_eq!(doc["warnings"].as_array().unwrap().len(), 0, "{doc}");
}

#[test]
fn check_show_prints_the_resolved_connection_like_ssh_g() {
    let fleet = Offline::new(2);
    let out = fleet.certctl(&["check", "web-2"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"/tmp/certctl-offline-[A-Za-z0-9]+", "[DIR]");
    settings.add_filter(r"127\.0\.0\.1:\d+", "127.0.0.1:[PORT]");
    settings.bind(|| insta::assert_snapshot!("check_show", out.stdout));
    // `--show` and `-v` show every target.
    let out = fleet.certctl(&["check", "--show"]);
    assert_eq!(out.stdout.matches("hostname 127.0.0.1").count(), 2);
    let out = fleet.certctl(&["check", "-v"]);
    assert_eq!(out.stdout.matches("# web-").count(), 2);
    let out = fleet.certctl(&["check", "web-9"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
}

#[test]
fn check_catches_missing_ssh_files_offline() {
    let fleet = Offline::new(2);
    // The host is in no known_hosts file: a warning, once, naming both targets.
    let out = fleet.certctl(&["check"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stderr.matches("warning:").count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("127.0.0.1:1 is in no known_hosts file")
            && out.stderr.contains("affects 2 targets: web-1, web-2"),
        "{}",
        out.stderr
    );
    // The inventory's own identity_file and known_hosts must exist: errors, exit 2.
    fs::remove_file(fleet.path("id_ed25519")).unwrap();
    fs::remove_file(fleet.path("known_hosts")).unwrap();
    let out = fleet.certctl(&["check", "--output", "json"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let doc = json(&out.stdout);
    certctl::report::validate_check(&doc).unwrap();
    let problems: Vec<&str> = doc["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["message"].as_str().unwrap())
        .collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].starts_with("identity file ") && problems[0].ends_with("does not exist"));
    assert!(problems[1].starts_with("known_hosts file "), "{problems:?}");
    assert_eq!(doc["problems"][0]["targets"].as_array().unwrap().len(), 2);
}
