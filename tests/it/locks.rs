//! Target locks against a real sshd + nginx: two runs never interleave on one target; a lock
//! and temp files left by a killed run are reported, then cleared with --break-lock.

use crate::support;

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::lab::{Lab, TargetOptions};

fn spawn_deploy(lab: &Lab) -> Child {
    Command::new(env!("CARGO_BIN_EXE_certctl"))
        .args(["deploy", "-i"])
        .arg(&lab.inventory)
        .args(["--output", "json"])
        .env_remove("SSH_AUTH_SOCK")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Whether a run is still inside the gated preview (its `sh` loop runs).
fn first_still_running(lab: &Lab) -> bool {
    Command::new("pgrep")
        .args([
            "-f",
            "--",
            &lab.path("gate").join("hold").display().to_string(),
        ])
        .output()
        .is_ok_and(|o| !o.stdout.is_empty())
}

/// Waits (bounded) until `what` holds; a condition, not a sleep.
fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn staged_files(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".certctl-"))
        .collect()
}

/// A preview that marks that the run reached it (so it holds the lock: the preview runs only
/// under it) and waits until the test removes a gate file, so a run can be held mid-deploy.
/// Returns the gate and the marker.
fn gated_preview(lab: &Lab) -> (std::path::PathBuf, std::path::PathBuf) {
    let gate = lab.path("gate").join("hold");
    let reached = lab.path("gate").join("reached");
    fs::write(&gate, "").unwrap();
    let _ = fs::remove_file(&reached);
    lab.set_commands(&[(
        "preview",
        vec![vec![
            "sh".into(),
            "-c".into(),
            ": > \"$1\"; while [ -e \"$0\" ]; do sleep 0.05; done".into(),
            gate.display().to_string(),
            reached.display().to_string(),
        ]],
    )]);
    (gate, reached)
}

#[test]
fn a_second_run_fails_clearly_while_the_first_holds_the_lock() {
    let lab = Lab::start(TargetOptions::default());
    let (gate, reached) = gated_preview(&lab);
    let first = spawn_deploy(&lab);
    let lock = lab.backup_dir().join(".lock");
    // The first run is inside its preview, under the lock, until the gate opens: the second
    // run meets the lock whatever the timing.
    wait_until(
        "the first run is held in its preview",
        Duration::from_secs(30),
        || reached.exists(),
    );
    let holder = fs::read_to_string(lock.join("holder")).unwrap();
    assert!(holder.contains(&format!("pid={}", first.id())), "{holder}");

    let second = lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(second.code, 1, "{}", second.stderr);
    let target = &second.json()["targets"][0];
    assert_eq!(target["status"], "failed");
    let error = target["error"].as_str().unwrap();
    assert!(error.contains("another certctl run holds"), "{error}");
    assert!(
        error.contains(&format!("pid {}", first.id())),
        "names the holder: {error}"
    );
    assert!(error.contains("nothing live was changed"), "{error}");
    assert!(
        !error.contains("released"),
        "another run's lock is kept: {error}"
    );
    assert_eq!(
        fs::read_to_string(lock.join("holder")).unwrap(),
        holder,
        "the first run still holds the lock, untouched by the second"
    );
    assert!(
        gate.exists() && first_still_running(&lab),
        "the first run was still held"
    );

    fs::remove_file(&gate).unwrap();
    let out = first.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!lock.exists(), "the lock is released");
    assert_eq!(lab.served(), lab.new.fingerprint);
}

#[test]
fn a_killed_run_leaves_a_lock_that_is_reported_then_broken_and_cleaned() {
    let lab = Lab::start(TargetOptions::default());
    let (gate, reached) = gated_preview(&lab);
    let cert_dir = lab.nginx.cert_path().parent().unwrap().to_path_buf();
    let mut first = spawn_deploy(&lab);
    wait_until(
        "the first run is held in its preview",
        Duration::from_secs(30),
        || reached.exists(),
    );
    assert_eq!(staged_files(&cert_dir).len(), 2, "it staged its files");
    first.kill().unwrap(); // SIGKILL: no cleanup runs
    first.wait().unwrap();
    fs::remove_file(&gate).unwrap();
    lab.set_commands(&[]);
    let live_before = lab.live_file_contents();

    let out = lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let error = out.json()["targets"][0]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.contains("no longer running"), "{error}");
    assert!(error.contains("--break-lock"), "{error}");
    assert_eq!(
        lab.live_file_contents(),
        live_before,
        "nothing changed while locked"
    );
    assert_eq!(
        staged_files(&cert_dir).len(),
        2,
        "the killed run's temp files are still there"
    );

    let out = lab.certctl(&["deploy", "--break-lock", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let target = &out.json()["targets"][0];
    assert_eq!(target["status"], "deployed");
    let lock_detail = target["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "lock")
        .and_then(|s| s["detail"].as_str())
        .unwrap()
        .to_string();
    assert!(
        lock_detail.contains("removed 2 temp file(s) left by an interrupted run"),
        "{lock_detail}"
    );
    assert!(
        lock_detail.contains("removed 1 scratch directory(ies) left by an interrupted run"),
        "{lock_detail}"
    );
    assert!(staged_files(&cert_dir).is_empty());
    assert_eq!(lab.scratch_dirs(), Vec::<std::path::PathBuf>::new());
    assert!(!lab.backup_dir().join(".lock").exists());
    assert_eq!(lab.served(), lab.new.fingerprint);
}
