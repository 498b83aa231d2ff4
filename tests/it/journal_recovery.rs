//! The engine's guarantee under a killed controller, against real sshd and nginx: SIGKILL of
//! certctl at each step boundary and between two renames — of a deploy, of the rollback after
//! a failure, and of `certctl rollback` — leaves a target that the next plain `certctl deploy
//! --break-lock` brings to the NEW pair, served and verified, with nginx's own config test
//! passing; and a mixed pair is never left on disk.
//!
//! Each instant is made deterministic by a shim on the test sshd's PATH that pauses the tool
//! the step runs at its N-th matching call ([`Rig::arm_pause`]); certctl is killed while it
//! waits, then the shim is released, so the remote script the controller left behind runs on
//! exactly as it would after a real kill. Every outcome is checked independently of certctl's
//! report: `openssl s_client` on the live port, the live files' bytes, `nginx -t`, the journal
//! and lock on disk.

use std::time::{Duration, Instant};

use crate::support;
use support::faults::{InventorySpec, LiveSet, Pause, Rig, RigOptions, Served, TcpProxy, sh};

/// Where to kill: the tool to pause, the argument it must name, and which such call.
struct At {
    name: &'static str,
    tool: &'static str,
    pattern: &'static str,
    nth: usize,
}

const fn at(name: &'static str, tool: &'static str, pattern: &'static str, nth: usize) -> At {
    At {
        name,
        tool,
        pattern,
        nth,
    }
}

/// A deploy, killed at each of its steps (nginx.conf: preview's live test is its 1st call
/// naming it, the post-swap test the 2nd, the reload the 3rd).
const DEPLOY: &[At] = &[
    at("lock: taking the lock", "mkdir", ".lock", 1),
    at(
        "inspect: hashing the live files",
        "sha256sum",
        "fullchain.pem",
        1,
    ),
    at(
        "preview: nginx loads the staged pair",
        "nginx",
        "preview.conf",
        1,
    ),
    at(
        "preview: the live configuration test",
        "nginx",
        "nginx.conf",
        1,
    ),
    at("backup: copying the live key", "cp", "privkey.pem", 1),
    at(
        "backup: the journal about to be renamed in",
        "mv",
        "journal.tmp",
        1,
    ),
    at("swap: before the first rename", "mv", "fullchain.pem", 1),
    at("swap: between the two renames", "mv", "privkey.pem", 1),
    at("test: nginx -t after the swap", "nginx", "nginx.conf", 2),
    at("reload: nginx -s reload", "nginx", "nginx.conf", 3),
    at(
        "cleanup: removing temp files and the lock",
        "rm",
        ".lock",
        1,
    ),
];

/// The rollback after a failed post-swap test (a `test` override that fails).
const ROLLBACK: &[At] = &[
    at(
        "rollback: copying a backup beside its live file",
        "cp",
        ".restore",
        1,
    ),
    at(
        "rollback: between the two restore renames",
        "mv",
        ".restore",
        2,
    ),
    at(
        "rollback: the reload after restoring",
        "nginx",
        "nginx.conf",
        2,
    ),
];

/// `certctl rollback` after a successful deploy.
const UNDO: &[At] = &[
    at("certctl rollback: copying a backup", "cp", ".restore", 1),
    at(
        "certctl rollback: between the two restore renames",
        "mv",
        ".restore",
        2,
    ),
    at("certctl rollback: the reload", "nginx", "nginx.conf", 1),
];

fn failing_test() -> InventorySpec {
    InventorySpec {
        commands: vec![("test", vec![sh("echo injected test failure >&2; exit 1")])],
        ..InventorySpec::default()
    }
}

/// Runs `args`, kills certctl when the shim pauses, releases the shim, and waits until the
/// remote script the killed controller left behind has finished.
fn kill_at(rig: &Rig, args: &[&str], at: &At) {
    let pause: Pause = rig.arm_pause(at.tool, at.pattern, at.nth);
    let mut child = rig.spawn_certctl(args);
    let reached = pause.wait(Duration::from_secs(60));
    let _ = child.kill();
    let _ = child.wait();
    pause.release();
    let (_, stderr) = rig.spawned_output();
    assert!(
        reached,
        "{}: certctl never reached {}:\n{stderr}",
        at.name,
        pause.what()
    );
    // The remote script the killed controller left behind runs on: wait until it is done.
    assert!(
        rig.wait_remote_idle(),
        "{}: the remote script never finished",
        at.name
    );
    rig.disarm();
    // Never a mixed pair, whatever instant the controller died at.
    let files = rig.live_set();
    assert!(
        matches!(files, LiveSet::Old | LiveSet::New),
        "{}: a killed controller left {files}",
        at.name
    );
}

/// The next plain deploy (with --break-lock: the holder is dead) brings the target to the
/// NEW pair, served and verified; checked without trusting certctl's report.
fn next_deploy_repairs(rig: &Rig, case: &str) {
    rig.write_inventory(&InventorySpec::default());
    let journal = rig.journal();
    let out = rig.certctl(&["deploy", "--break-lock", "--output", "json"]);
    assert_eq!(out.code, 0, "{case}: {}", out.stderr);
    let report = &out.json()["targets"][0];
    // `unchanged` only when the killed run had got as far as its cleanup (verified).
    assert!(
        report["status"] == "deployed" || report["status"] == "unchanged",
        "{case}: {}",
        out.stdout
    );
    let recovered = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["step"] == "recover" && s["status"] == "ok");
    assert_eq!(
        recovered,
        journal.is_some(),
        "{case}: a recover step exactly when a journal was left ({journal:?}): {}",
        out.stdout
    );
    assert_eq!(
        rig.served(),
        Served::New,
        "{case}: openssl sees the new leaf"
    );
    assert_eq!(
        rig.live_set(),
        LiveSet::New,
        "{case}: the live files are the new pair"
    );
    let test = rig.nginx.test_config();
    assert!(
        test.status.success(),
        "{case}: nginx -t: {}",
        String::from_utf8_lossy(&test.stderr)
    );
    assert_eq!(rig.journal(), None, "{case}: the journal was closed");
    assert!(rig.leftovers().is_empty(), "{case}: {:?}", rig.leftovers());
    let again = rig.certctl(&["deploy", "--output", "json"]);
    assert_eq!(again.json()["targets"][0]["status"], "unchanged", "{case}");
}

fn run_cases(cases: &[At], prepare: impl Fn(&Rig) -> Vec<&'static str>) {
    for at in cases {
        let rig = Rig::start(RigOptions::default());
        let args = prepare(&rig);
        kill_at(&rig, &args, at);
        next_deploy_repairs(&rig, at.name);
    }
}

#[test]
fn a_deploy_killed_at_lock_inspect_or_preview_is_finished_by_the_next_run() {
    run_cases(&DEPLOY[..4], |_| vec!["deploy"]);
}

#[test]
fn a_deploy_killed_at_backup_or_swap_is_rolled_back_then_redone_by_the_next_run() {
    run_cases(&DEPLOY[4..8], |_| vec!["deploy"]);
}

#[test]
fn a_deploy_killed_at_test_reload_or_cleanup_is_repaired_by_the_next_run() {
    run_cases(&DEPLOY[8..], |_| vec!["deploy"]);
}

#[test]
fn a_rollback_killed_half_way_is_finished_by_the_next_run() {
    run_cases(ROLLBACK, |rig| {
        rig.write_inventory(&failing_test());
        vec!["deploy"]
    });
}

#[test]
fn certctl_rollback_killed_half_way_is_finished_by_the_next_run() {
    run_cases(UNDO, |rig| {
        let out = rig.certctl(&["deploy"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        vec!["rollback"]
    });
}

#[test]
fn a_deploy_killed_while_it_verifies_is_repaired_by_the_next_run() {
    let rig = Rig::start(RigOptions::default());
    let pid = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let killer = pid.clone();
    // Connection 1 is the downgrade gate's probe (inspect takes what it saw), 2 the first of
    // verify's: kill the controller there.
    let proxy = TcpProxy::start(rig.nginx.addr, move |n| {
        if n == 2 {
            let p = killer.load(std::sync::atomic::Ordering::SeqCst);
            let _ = std::process::Command::new("kill")
                .args(["-9", &p.to_string()])
                .status();
        }
    });
    rig.write_inventory(&InventorySpec {
        verify_address: Some(proxy.addr.to_string()),
        ..InventorySpec::default()
    });
    let mut child = rig.spawn_certctl(&["deploy"]);
    pid.store(child.id(), std::sync::atomic::Ordering::SeqCst);
    let status = child.wait().unwrap();
    assert!(!status.success(), "certctl was killed while it verified");
    assert!(
        rig.journal().is_some(),
        "the change was under way: its journal stays"
    );
    next_deploy_repairs(&rig, "verify");
}

#[test]
fn a_second_interrupt_still_writes_the_json_report_and_the_next_run_recovers() {
    let rig = Rig::start(RigOptions::default());
    let pause = rig.arm_pause("mv", "privkey.pem", 1);
    let child = rig.spawn_certctl(&["deploy", "--output", "json"]);
    assert!(
        pause.wait(Duration::from_secs(60)),
        "{:?}",
        rig.spawned_output()
    );
    let interrupt = || {
        let ok = std::process::Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    };
    interrupt();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !rig.spawned_output().1.contains("starting no new targets") {
        assert!(Instant::now() < deadline, "{:?}", rig.spawned_output());
        std::thread::sleep(Duration::from_millis(10));
    }
    interrupt();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    pause.release();
    let (stdout, stderr) = rig.spawned_output();
    let doc: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("one JSON document on stdout ({e}): {stdout:?}\n{stderr}"));
    let target = &doc["targets"][0];
    assert_eq!(target["status"], "failed", "{stdout}");
    let error = target["error"].as_str().unwrap();
    assert!(
        error.contains("interrupted during swap") && error.contains("next run will recover it"),
        "{error}"
    );
    assert_eq!(doc["summary"]["failed"], 1);
    assert!(
        stderr.contains("web-1: interrupted during swap"),
        "{stderr}"
    );
    assert!(rig.wait_remote_idle());
    rig.disarm();
    next_deploy_repairs(&rig, "second interrupt during the swap");
}
