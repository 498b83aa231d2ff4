//! `certctl report merge`: the shards' JSON reports (each written by the binary) become one
//! schema-valid document with the exit code one run over all targets would have had.

use std::fs;

use crate::support;

use support::offline::{Offline, certctl_env};

#[test]
fn merging_shard_reports_gives_one_document_and_one_exit_code() {
    let fleet = Offline::new(5);
    let mut files = Vec::new();
    let mut total = 0;
    for shard in ["1/2", "2/2"] {
        let out = fleet.certctl(&["verify", "--shard", shard, "--output", "json"]);
        assert_eq!(out.code, 4, "{}", out.stderr);
        total += out.json()["targets"].as_array().unwrap().len();
        let path = fleet.path(&format!("shard-{}.json", &shard[..1]));
        fs::write(&path, &out.stdout).unwrap();
        files.push(path.display().to_string());
    }
    assert_eq!(total, 5);
    let mut args = vec!["report", "merge"];
    args.extend(files.iter().map(String::as_str));
    let out = certctl_env(fleet.dir.path(), &args, &[], &[]);
    assert_eq!(
        out.code, 4,
        "verify's code over every target: {}",
        out.stderr
    );
    let merged: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    certctl::report::validate_report(&merged).unwrap();
    assert_eq!(merged["command"], "verify");
    assert_eq!(merged["summary"]["total"], 5);
    assert_eq!(merged["summary"]["unreachable"], 5);
    assert!(
        out.stderr
            .starts_with("2 report(s), 5 target(s): 5 unreachable\n"),
        "{}",
        out.stderr
    );
    // A merged report merges again, and retries with --limit @REPORT.json.
    fs::write(fleet.path("all.json"), &out.stdout).unwrap();
    let again = certctl_env(
        fleet.dir.path(),
        &["report", "merge", fleet.path("all.json").to_str().unwrap()],
        &[],
        &[],
    );
    assert_eq!(again.code, 4);

    // For CI: a step-summary table and a JUnit report of the same shards, exit 0.
    let mut args = vec!["report", "markdown"];
    args.extend(files.iter().map(String::as_str));
    let out = certctl_env(fleet.dir.path(), &args, &[], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .starts_with("### certctl verify: 5 target(s): 5 unreachable\n")
    );
    assert_eq!(
        out.stdout.matches("| ❌ | web-").count(),
        5,
        "{}",
        out.stdout
    );
    args[1] = "junit";
    let out = certctl_env(fleet.dir.path(), &args, &[], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("tests=\"5\" failures=\"5\""),
        "{}",
        out.stdout
    );
    assert_eq!(out.stdout.matches("<testcase ").count(), 5);

    // The same shard twice overlaps: refused, exit 2.
    let out = certctl_env(
        fleet.dir.path(),
        &["report", "merge", &files[0], &files[0]],
        &[],
        &[],
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("the shards overlap"), "{}", out.stderr);
    let out = certctl_env(fleet.dir.path(), &["report", "merge"], &[], &[]);
    assert_eq!(out.code, 2, "at least one report");
}
