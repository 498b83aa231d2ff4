//! The local history against the real lab: a deploy and a rollback that changed something each
//! append one hash-chained JSON line (an unchanged run and a dry run do not); `certctl history`
//! prints them; `certctl history --check` passes, then names the line after an edit, an
//! insertion or a removal; the default place follows XDG_STATE_HOME, created 0700/0600.

use std::fs;

use crate::support;

use support::lab::{Lab, TargetOptions, run_certctl};

#[test]
fn runs_that_change_something_are_chained_and_tampering_is_found() {
    let lab = Lab::start(TargetOptions::default());
    let file = lab.path("state").join("history.jsonl");
    let f = file.display().to_string();
    let env = [("CERTCTL_HISTORY", f.as_str()), ("USER", "alice")];
    let run = |args: &[&str]| run_certctl(&lab.inventory, args, &env);

    assert_eq!(run(&["deploy", "--dry-run"]).code, 0);
    assert!(!file.exists(), "a dry run changes nothing");
    assert_eq!(run(&["deploy"]).code, 0);
    assert_eq!(run(&["deploy"]).code, 0, "unchanged");
    let out = run(&["rollback"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(support::mode(&file), 0o600);

    let lines: Vec<serde_json::Value> = fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "deploy and rollback, not the unchanged run");
    assert_eq!(lines[0]["seq"], 1);
    assert_eq!(lines[0]["command"], "deploy");
    assert_eq!(lines[0]["user"], "alice");
    assert_eq!(lines[0]["prev"], "0".repeat(64));
    let t = &lines[0]["targets"][0];
    assert_eq!(t["name"], "web-1");
    assert_eq!(t["status"], "deployed");
    assert_eq!(t["old"], lab.old.fingerprint.as_str());
    assert_eq!(t["new"], lab.new.fingerprint.as_str());
    assert_eq!(lines[1]["command"], "rollback");
    assert_eq!(lines[1]["targets"][0]["status"], "rolled-back");

    let out = run(&["history"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("#1 ") && out.stdout.contains("deploy by alice"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("web-1 (") && out.stdout.contains("rolled-back"),
        "{}",
        out.stdout
    );
    let out = run(&["history", "--limit", "1", "--output", "json"]);
    assert_eq!(out.stdout.lines().count(), 1, "{}", out.stdout);
    assert!(out.stdout.contains("\"rollback\""));
    let out = run(&["history", "--check"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("2 entries, the chain is intact"),
        "{}",
        out.stderr
    );

    // An edited first line breaks the link from line 2.
    let original = fs::read_to_string(&file).unwrap();
    fs::write(&file, original.replacen("\"deployed\"", "\"unchanged\"", 1)).unwrap();
    let out = run(&["history", "--check"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("line 2 does not link to line 1"),
        "{}",
        out.stderr
    );
    // A removed first line.
    let second = original.lines().nth(1).unwrap();
    fs::write(&file, format!("{second}\n")).unwrap();
    let out = run(&["history", "--check"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("line 1 does not start the chain"),
        "{}",
        out.stderr
    );
    // A line inserted in between.
    let first = original.lines().next().unwrap();
    fs::write(&file, format!("{first}\n{first}\n{second}\n")).unwrap();
    let out = run(&["history", "--check"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("line 2 does not link to line 1"),
        "{}",
        out.stderr
    );
}

#[test]
fn the_default_place_follows_xdg_state_home_and_history_off_writes_nothing() {
    let lab = Lab::start(TargetOptions::default());
    let state = lab.path("xdg-state");
    let s = state.display().to_string();
    // CERTCTL_HISTORY empty = not set: the default place.
    let env = [("CERTCTL_HISTORY", ""), ("XDG_STATE_HOME", s.as_str())];
    let out = run_certctl(&lab.inventory, &["deploy"], &env);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let file = state.join("certctl/history.jsonl");
    assert_eq!(fs::read_to_string(&file).unwrap().lines().count(), 1);
    assert_eq!(support::mode(state.join("certctl")), 0o700);
    assert_eq!(support::mode(&file), 0o600);
    let out = run_certctl(&lab.inventory, &["history", "--check"], &env);
    assert_eq!(out.code, 0, "{}", out.stderr);

    // `history: off` in the inventory.
    let text = fs::read_to_string(&lab.inventory).unwrap();
    fs::write(&lab.inventory, format!("history: off\n{text}")).unwrap();
    let out = run_certctl(&lab.inventory, &["rollback"], &env);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(fs::read_to_string(&file).unwrap().lines().count(), 1);
}
