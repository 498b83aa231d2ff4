//! `--limit` as Ansible users write it, through the binary: `-l`, `:` separators, `all`,
//! `&group` intersections, `@FILE`, `@REPORT.json` retries, `--list-targets`, `-f`.

use std::fs;

use crate::support;

use support::offline::Offline;

/// `--list-targets` with these extra arguments: (exit code, names).
fn listed(fleet: &Offline, args: &[&str]) -> (i32, Vec<String>, String) {
    let mut all = vec!["deploy", "--list-targets"];
    all.extend_from_slice(args);
    let out = fleet.certctl(&all);
    (
        out.code,
        out.stdout.lines().map(str::to_string).collect(),
        out.stderr,
    )
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn ansible_limit_forms_select_what_ansible_would() {
    // web-1..6: odd ones in group `web`, even ones in group `db`.
    let fleet = Offline::new(6);
    let all = names(&["web-1", "web-2", "web-3", "web-4", "web-5", "web-6"]);
    assert_eq!(listed(&fleet, &[]).1, all, "no limit: every target");
    for (limit, expected) in [
        ("web-1:web-2", names(&["web-1", "web-2"])),
        ("all", all.clone()),
        ("all:!db", names(&["web-1", "web-3", "web-5"])),
        ("web:&web-[1-3]", names(&["web-1", "web-3"])),
        ("db:&web-[4-9]:!web-6", names(&["web-4"])),
        ("web-2,web-3:web-4", names(&["web-2", "web-3", "web-4"])),
    ] {
        let (code, got, stderr) = listed(&fleet, &["-l", limit]);
        assert_eq!(code, 0, "{limit}: {stderr}");
        assert_eq!(got, expected, "--limit {limit}");
    }
    let (code, got, stderr) = listed(&fleet, &["--limit", "web:&db"]);
    assert_eq!(code, 2);
    assert!(got.is_empty());
    assert!(
        stderr.contains("selects no target: no included target matches every `&` term"),
        "{stderr}"
    );
    let (code, _, stderr) = listed(&fleet, &["-l", "web:&dbb"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("(did you mean `&db`?)"), "{stderr}");
}

#[test]
fn limit_from_a_file_and_retry_from_a_report() {
    let fleet = Offline::new(6);
    let file = fleet.path("hosts.txt");
    fs::write(&file, "web-1   # the canary\n\nweb-4:web-5\n").unwrap();
    let at = format!("@{}", file.display());
    let (code, got, stderr) = listed(&fleet, &["-l", &at]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(got, names(&["web-1", "web-4", "web-5"]));

    let report = fleet.path("last.json");
    fs::write(
        &report,
        r#"{"version": 1, "command": "deploy", "targets": [
            {"name": "web-1", "status": "deployed"}, {"name": "web-2", "status": "rolled-back"},
            {"name": "web-3", "status": "skipped"}, {"name": "web-4", "status": "unchanged"},
            {"name": "web-5", "status": "unreachable"}]}"#,
    )
    .unwrap();
    let at = format!("@{}", report.display());
    let (code, got, stderr) = listed(&fleet, &["-l", &at]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        got,
        names(&["web-2", "web-3", "web-5"]),
        "the failures only"
    );
    // Combined with a pattern, as Ansible allows.
    let (_, got, _) = listed(&fleet, &["-l", &format!("{at}:!web-3")]);
    assert_eq!(got, names(&["web-2", "web-5"]));

    // A real report of this binary: every verify of this fleet is unreachable.
    let out = fleet.certctl(&["verify", "--output", "json", "-l", "web-1:web-2", "-f", "2"]);
    assert_eq!(out.code, 4, "{}", out.stderr);
    fs::write(&report, &out.stdout).unwrap();
    let (_, got, _) = listed(&fleet, &["-l", &at]);
    assert_eq!(got, names(&["web-1", "web-2"]));

    fs::write(
        &report,
        r#"{"command": "deploy", "targets": [{"name": "web-1", "status": "deployed"}]}"#,
    )
    .unwrap();
    let (code, _, stderr) = listed(&fleet, &["-l", &at]);
    assert_eq!(code, 2);
    assert!(stderr.contains("nothing to retry"), "{stderr}");
    let (code, _, stderr) = listed(&fleet, &["-l", "@/nonexistent/file"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("--limit @/nonexistent/file: cannot read"),
        "{stderr}"
    );
}
