//! f5 against an EMULATED tmsh (tests/emulators/tmsh) over a real sshd: no BIG-IP can run
//! here. The emulator keeps the running and saved config in JSON files, loads every PEM with
//! the real openssl, refuses a key that does not match its certificate at the profile update,
//! refuses deleting objects in use, and logs every argv it receives.
//!
//! What this proves: the exact tmsh command sequence (install under run-id names, the profile
//! update inside a cli transaction, save), that preview leaves the config as it was, that a
//! failure at each step points the profile back at the previous objects (running and saved
//! config), that old objects are pruned beyond keep_backups, and that no key reaches an argv.
//! What it does not prove: real tmsh's parser and `load sys config merge` semantics, or a
//! virtual server serving the new certificate (verify here probes a real nginx serving the
//! old one, to inject a verify failure).

use crate::support;

use std::fs;

use serde_json::{Value, json};
use support::emulated::{EmuLab, SNI, assert_no_secret_in_argv};
use support::nginx::Nginx;

const PROFILE: &str = "/Common/clientssl-web";

fn lab_in(bin: &str) -> EmuLab {
    let lab = EmuLab::start("tmsh", "tmsh", bin);
    let pem = |p: &std::path::Path| fs::read_to_string(p).unwrap();
    let state = json!({
        "partitions": ["Common"],
        "certs": {
            "/Common/web-2025": pem(&lab.old.cert),
            "/Common/web-2025-chain": pem(&lab.old.chain),
        },
        "keys": { "/Common/web-2025": pem(&lab.old.key) },
        "profiles": {
            PROFILE: { "cert-key-chain": { "default": {
                "cert": "/Common/web-2025", "key": "/Common/web-2025", "chain": "/Common/web-2025-chain",
            } } },
        },
    });
    fs::write(lab.home.join("state.json"), state.to_string()).unwrap();
    fs::write(lab.home.join("saved.json"), state.to_string()).unwrap();
    lab
}

fn lab() -> EmuLab {
    lab_in("bin")
}

fn state(lab: &EmuLab) -> Value {
    serde_json::from_str(&fs::read_to_string(lab.home.join("state.json")).unwrap()).unwrap()
}

fn saved(lab: &EmuLab) -> Value {
    serde_json::from_str(&fs::read_to_string(lab.home.join("saved.json")).unwrap()).unwrap()
}

fn chain_of(v: &Value) -> Value {
    v["profiles"][PROFILE]["cert-key-chain"].clone()
}

fn v(words: &[&str]) -> Vec<String> {
    words.iter().map(|s| s.to_string()).collect()
}

/// The run id, from the first preview object name in the log.
fn run_id(argvs: &[Vec<String>]) -> String {
    argvs
        .iter()
        .flatten()
        .find_map(|a| {
            a.strip_prefix("/Common/certctl-")
                .and_then(|r| r.strip_suffix("-preview"))
        })
        .expect("a preview object name")
        .to_string()
}

/// The argvs with the run id written `RUN` and the scratch directory `<scratch>`.
fn normalised(lab: &EmuLab, argvs: &[Vec<String>]) -> Vec<Vec<String>> {
    let run = run_id(argvs);
    let tmp = format!("{}/certctl-", lab.tmp_dir().display());
    argvs
        .iter()
        .map(|argv| {
            argv.iter()
                .map(|a| match a.strip_prefix(&tmp) {
                    Some(rest) => format!("<scratch>{}", &rest[rest.find('/').unwrap()..]),
                    None => a.replace(&run, "RUN"),
                })
                .collect()
        })
        .collect()
}

fn key_secrets(lab: &EmuLab) -> Vec<String> {
    vec![fs::read_to_string(&lab.new.key).unwrap()]
}

fn params<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut p = vec![("profile", "clientssl-web")];
    p.extend_from_slice(extra);
    p
}

fn preview() -> Vec<Vec<String>> {
    vec![
        v(&[
            "install",
            "sys",
            "crypto",
            "cert",
            "/Common/certctl-RUN-preview",
            "from-local-file",
            "<scratch>/cert.pem",
        ]),
        v(&[
            "install",
            "sys",
            "crypto",
            "key",
            "/Common/certctl-RUN-preview",
            "from-local-file",
            "<scratch>/key.pem",
        ]),
        v(&[
            "install",
            "sys",
            "crypto",
            "cert",
            "/Common/certctl-RUN-preview-chain",
            "from-local-file",
            "<scratch>/chain.pem",
        ]),
        v(&[
            "list",
            "sys",
            "crypto",
            "cert",
            "/Common/certctl-RUN-preview",
        ]),
        v(&[
            "list",
            "sys",
            "crypto",
            "key",
            "/Common/certctl-RUN-preview",
        ]),
        v(&[
            "delete",
            "sys",
            "crypto",
            "cert",
            "/Common/certctl-RUN-preview",
        ]),
        v(&[
            "delete",
            "sys",
            "crypto",
            "key",
            "/Common/certctl-RUN-preview",
        ]),
        v(&[
            "delete",
            "sys",
            "crypto",
            "cert",
            "/Common/certctl-RUN-preview-chain",
        ]),
    ]
}

/// The cleanup's check for preview leftovers (none after a complete preview).
fn discard() -> Vec<Vec<String>> {
    vec![
        v(&["list", "sys", "crypto", "cert"]),
        v(&["list", "sys", "crypto", "key"]),
    ]
}

#[test]
fn f5_emulated_deploy_runs_exact_tmsh_sequence_and_no_key_on_argv() {
    let lab = lab();
    lab.write_inventory("f5", &params(&[]), None);
    let out = lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(
        out.json()["targets"][0]["status"],
        "deployed",
        "{}",
        out.stdout
    );
    let argvs = lab.take_argv();
    assert_no_secret_in_argv(&argvs, &key_secrets(&lab));
    let mut expected = preview();
    expected.extend([
        v(&["list", "ltm", "profile", "client-ssl", PROFILE, "cert-key-chain"]),
        v(&["install", "sys", "crypto", "cert", "/Common/certctl-RUN", "from-local-file", "<scratch>/cert.pem"]),
        v(&["install", "sys", "crypto", "key", "/Common/certctl-RUN", "from-local-file", "<scratch>/key.pem"]),
        v(&["install", "sys", "crypto", "cert", "/Common/certctl-RUN-chain", "from-local-file", "<scratch>/chain.pem"]),
        v(&["-c", "create cli transaction; modify ltm profile client-ssl /Common/clientssl-web cert-key-chain replace-all-with { default { cert /Common/certctl-RUN key /Common/certctl-RUN chain /Common/certctl-RUN-chain } }; submit cli transaction"]),
        v(&["save", "sys", "config"]),
        v(&["list", "ltm", "profile", "client-ssl", PROFILE, "cert-key-chain"]),
    ]);
    expected.extend(discard());
    // prune: the listings (nothing old enough to remove yet)
    expected.extend([
        v(&["list", "sys", "crypto", "cert"]),
        v(&["list", "sys", "crypto", "key"]),
    ]);
    assert_eq!(normalised(&lab, &argvs), expected);

    let run = run_id(&argvs);
    let now = state(&lab);
    let new_name = format!("/Common/certctl-{run}");
    assert_eq!(
        chain_of(&now),
        json!({ "default": { "cert": new_name, "key": new_name, "chain": format!("{new_name}-chain") } })
    );
    assert_eq!(now, saved(&lab), "the running config was saved");
    assert_eq!(
        now["certs"][&new_name].as_str().unwrap(),
        fs::read_to_string(&lab.new.cert).unwrap()
    );
    // Preview objects are gone; the previous objects stay (for `certctl rollback`).
    let certs: Vec<&String> = now["certs"].as_object().unwrap().keys().collect();
    assert!(certs.iter().all(|c| !c.contains("preview")), "{certs:?}");
    assert!(now["certs"]["/Common/web-2025"].is_string());
    assert!(lab.scratch_dirs().is_empty());

    // `certctl rollback` points the profile back at the previous objects.
    let out = lab.certctl(&["rollback", "--output", "json"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.json()["targets"][0]["status"], "rolled-back");
    assert_eq!(
        chain_of(&state(&lab))["default"]["cert"],
        "/Common/web-2025"
    );
    assert_eq!(
        chain_of(&saved(&lab))["default"]["cert"],
        "/Common/web-2025"
    );
}

#[test]
fn f5_emulated_dry_run_installs_preview_objects_then_removes_them() {
    let lab = lab();
    lab.write_inventory("f5", &params(&[]), None);
    let before = state(&lab);
    let out = lab.certctl(&["deploy", "--dry-run", "--output", "json"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.json()["targets"][0]["status"], "would-change");
    let argvs = lab.take_argv();
    let mut expected = preview();
    expected.extend(discard());
    assert_eq!(normalised(&lab, &argvs), expected);
    assert_eq!(state(&lab), before);
    assert_eq!(saved(&lab), before);
}

/// A failure injected at each step: before the swap nothing changes (preview objects are
/// removed); from the swap on, the profile points at the previous objects again, in the
/// running and the saved config. (f5 has no reload command: the profile change is live.)
#[test]
fn f5_emulated_failure_at_each_step_points_the_profile_back() {
    let lab = lab();
    let vip = Nginx::start(SNI, &lab.old.fullchain, &lab.old.key);
    let addr = vip.addr.to_string();
    lab.write_inventory("f5", &params(&[]), Some(&addr));
    let before = state(&lab);
    let cases: &[(&str, &str, &str)] = &[
        ("preview", "install-key#1", "failed"),
        ("preview", "list-cert#1", "failed"),
        ("backup", "list-profile#1", "failed"),
        ("swap", "install-key#2", "rolled-back"),
        ("swap", "transaction", "rolled-back"),
        ("swap", "save#1", "rolled-back"),
        ("test", "list-profile#2", "rolled-back"),
        ("verify", "", "rolled-back"),
    ];
    for (step, op, status) in cases {
        lab.fail(&[op]);
        lab.take_argv();
        let out = lab.certctl(&["deploy", "--output", "json"]);
        let what = format!("failure at {step} ({op}): {}", out.stdout);
        assert_eq!(out.code, 1, "{what}");
        let report = &out.json()["targets"][0];
        assert_eq!(report["status"], *status, "{what}");
        let failed = report["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["status"] == "failed")
            .unwrap();
        assert_eq!(failed["step"], *step, "{what}");
        let now = state(&lab);
        assert_eq!(chain_of(&now), chain_of(&before), "{what}");
        assert_eq!(chain_of(&saved(&lab)), chain_of(&before), "{what}");
        let names: Vec<&String> = now["certs"].as_object().unwrap().keys().collect();
        assert!(
            names.iter().all(|c| !c.contains("preview")),
            "{what}: {names:?}"
        );
        if *status == "failed" {
            assert_eq!(now, before, "{what}: nothing changed");
        }
        assert_no_secret_in_argv(&lab.take_argv(), &key_secrets(&lab));
        assert!(lab.scratch_dirs().is_empty(), "{what}");
    }
}

/// Old objects beyond keep_backups versions are deleted after a verified deploy; the
/// operator's own objects (other names) are never touched.
#[test]
fn f5_emulated_prunes_objects_beyond_keep_backups() {
    let lab = lab();
    lab.write_inventory("f5", &params(&[("keep_backups", "2")]), None);
    let mut runs = Vec::new();
    for _ in 0..4 {
        let out = lab.certctl(&["deploy", "--output", "json"]);
        assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
        runs.push(run_id(&lab.take_argv()));
        // Run ids start with the time in seconds: keep them apart.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let now = state(&lab);
    let mut certs: Vec<String> = now["certs"].as_object().unwrap().keys().cloned().collect();
    certs.sort();
    let mut want = vec![
        "/Common/web-2025".to_string(),
        "/Common/web-2025-chain".to_string(),
    ];
    for run in &runs[2..] {
        want.push(format!("/Common/certctl-{run}"));
        want.push(format!("/Common/certctl-{run}-chain"));
    }
    want.sort();
    assert_eq!(certs, want);
    let keys: Vec<&String> = now["keys"].as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 3, "{keys:?}");
}

/// A tmsh path and scratch directory with hostile characters reach tmsh intact; an object
/// name tmsh would misparse is refused before anything connects.
#[test]
fn f5_emulated_hostile_paths_are_quoted_and_bad_names_refused() {
    let lab = lab_in("bin $x 'q' \"d\" `y`; z");
    let tmsh = lab.home.join("tmsh").display().to_string();
    lab.write_inventory("f5", &params(&[("tmsh", &tmsh)]), None);
    let out = lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.json()["targets"][0]["status"], "deployed");
    assert!(!lab.take_argv().is_empty());

    for bad in [
        "web; delete sys crypto cert all",
        "web profile",
        "a}b",
        "$x",
        "`id`",
        "'q'",
    ] {
        lab.write_inventory("f5", &params(&[("prefix", bad)]), None);
        let out = lab.certctl(&["deploy"]);
        assert_eq!(out.code, 2, "{bad}: {}\n{}", out.stdout, out.stderr);
        assert!(out.stderr.contains("edge-1"), "{}", out.stderr);
        assert!(out.stderr.contains("param `prefix`"), "{}", out.stderr);
        assert!(lab.take_argv().is_empty(), "{bad}: nothing ran");
    }
}
