//! `notify:` against the real lab: after verify and deploy the chosen notifiers run on the
//! controller with the JSON report on stdin and the outcome in `CERTCTL_*` variables; a failing
//! or hanging notifier is reported and bounded but never changes the exit code; the variable
//! the key came from (`key_env`) never reaches a notifier.

use std::fs;
use std::time::{Duration, Instant};

use crate::support;

use support::edit::{self, argv};
use support::lab::{Lab, TargetOptions, run_certctl};

const KEY_VAR: &str = "CERTCTL_NOTIFY_TEST_KEY";

fn env_of(path: &std::path::Path) -> std::collections::BTreeMap<String, String> {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn notifiers_get_the_report_and_outcome_and_never_change_the_exit_code() {
    let lab = Lab::start(TargetOptions::default());
    let out_dir = lab.path("notify");
    let o = |name: &str| out_dir.join(name).display().to_string();
    // Records stdin and its whole environment (to prove what is NOT in it).
    let record = |tag: &str| {
        format!(
            "cat > {}; env > {}",
            o(&format!("{tag}.json")),
            o(&format!("{tag}.env"))
        )
    };
    edit::prepend(
        &lab.inventory,
        &format!(
            "notify:\n\
             \x20 - {{ name: on-mismatch, on: [mismatch], command: {} }}\n\
             \x20 - {{ name: on-deployed, on: [deployed], command: {} }}\n\
             \x20 - {{ name: broken, on: [deployed], command: {} }}\n\
             \x20 - {{ name: slow, on: [deployed], timeout: 1s, command: {} }}\n\
             \x20 - {{ name: on-failed, on: [failed, rollback-failed], command: {} }}\n",
            argv(&["sh", "-c", &record("mismatch")]),
            argv(&["sh", "-c", &record("deployed")]),
            argv(&[
                "sh",
                "-c",
                "echo 'webhook: 503 Service Unavailable' >&2; exit 7"
            ]),
            argv(&["sh", "-c", "sleep 30 | cat"]),
            argv(&["sh", "-c", &record("failed")]),
        ),
    );
    // The key comes from the environment: the notifiers must not inherit it.
    let key_pem = fs::read_to_string(&lab.new.key).unwrap();
    edit::set_source(&lab.inventory, "key", &format!("key_env: {KEY_VAR}"));
    let env = [(KEY_VAR, key_pem.as_str())];

    let out = run_certctl(&lab.inventory, &["verify"], &env);
    assert_eq!(out.code, 4, "{}", out.stderr);
    let vars = env_of(&out_dir.join("mismatch.env"));
    assert_eq!(vars["CERTCTL_STATUS"], "mismatch");
    assert_eq!(vars["CERTCTL_COMMAND"], "verify");
    assert_eq!(vars["CERTCTL_EXIT_CODE"], "4");
    assert_eq!(vars["CERTCTL_MISMATCH"], "1");
    assert_eq!(vars["CERTCTL_TOTAL"], "1");
    assert_eq!(vars["CERTCTL_NOTIFIER"], "on-mismatch");
    assert_eq!(
        vars["CERTCTL_SUMMARY"],
        "certctl verify: 1 mismatch (web-1)"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&fs::read(out_dir.join("mismatch.json")).unwrap()).unwrap();
    assert_eq!(report["command"], "verify");
    assert_eq!(report["targets"][0]["status"], "mismatch");
    assert!(
        !out_dir.join("deployed.json").exists(),
        "on: [deployed] ran"
    );

    let started = Instant::now();
    let out = run_certctl(&lab.inventory, &["deploy"], &env);
    let took = started.elapsed();
    assert_eq!(
        out.code, 0,
        "a failing notifier changed the exit code: {}",
        out.stderr
    );
    assert_eq!(lab.served(), lab.new.fingerprint);
    assert!(
        out.stderr.contains(
            "warning: notify `broken` failed: exit status: 7; stderr: webhook: 503 Service Unavailable"
        ),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("warning: notify `slow` failed: killed after 1s"),
        "{}",
        out.stderr
    );
    assert!(
        took < Duration::from_secs(20),
        "the slow notifier was not bounded: {took:?}"
    );
    let vars = env_of(&out_dir.join("deployed.env"));
    assert_eq!(vars["CERTCTL_STATUS"], "deployed");
    assert_eq!(vars["CERTCTL_DEPLOYED"], "1");
    assert_eq!(vars["CERTCTL_FAILED"], "0");
    assert_eq!(vars["CERTCTL_DRY_RUN"], "0");
    assert!(!vars["CERTCTL_RUN_ID"].is_empty());
    let report: serde_json::Value =
        serde_json::from_slice(&fs::read(out_dir.join("deployed.json")).unwrap()).unwrap();
    assert_eq!(report["targets"][0]["status"], "deployed");
    assert_eq!(
        report["targets"][0]["new_fingerprint"],
        lab.new.fingerprint.as_str()
    );
    assert!(!out_dir.join("failed.json").exists(), "on: [failed] ran");

    // No notifier saw the key, nor the variable it came from.
    let key_body: String = key_pem.lines().nth(1).unwrap().to_string();
    for entry in fs::read_dir(&out_dir).unwrap() {
        let text = fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(!text.contains(KEY_VAR), "{text}");
        assert!(!text.contains(&key_body) && !text.contains("PRIVATE KEY"));
    }

    // --no-notify and --dry-run run none.
    fs::remove_file(out_dir.join("deployed.json")).unwrap();
    let out = run_certctl(&lab.inventory, &["deploy", "--dry-run", "--force"], &env);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = run_certctl(&lab.inventory, &["verify", "--no-notify"], &env);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out_dir.join("deployed.json").exists());
    assert!(!out.stderr.contains("notify"), "{}", out.stderr);
}

#[test]
fn a_bad_notify_entry_is_refused_with_its_place() {
    let lab = Lab::start(TargetOptions::default());
    edit::prepend(
        &lab.inventory,
        "notify:\n  - { command: [mail, ops@example.com], on: [failes] }\n",
    );
    let out = lab.certctl(&["check"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("certctl.yaml:2:") && out.stderr.contains("did you mean `failed`"),
        "{}",
        out.stderr
    );
}
