//! `examples/lab.sh` with `CERTCTL=PATH`: the lab runs a given binary (here the one cargo built
//! for these tests) instead of building one, through dry-run, deploy and verify against a real
//! sshd and nginx, and fails when the new certificate is not served at the end.

use std::process::Command;

fn lab(certctl: &str) -> (Option<i32>, String, String) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/lab.sh");
    let out = Command::new("bash")
        .arg(script)
        .env("CERTCTL", certctl)
        .env_remove("CERTCTL_LAB_KEEP")
        .env("NO_COLOR", "1")
        .env("RUST_BACKTRACE", "0")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run examples/lab.sh");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn lab_runs_the_given_binary_through_dry_run_deploy_and_verify() {
    let binary = env!("CARGO_BIN_EXE_certctl");
    let (code, stdout, stderr) = lab(binary);
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "==> certctl: {binary} (certctl {})\n",
            env!("CARGO_PKG_VERSION")
        )),
        "{stdout}"
    );
    assert!(!stdout.contains("==> building"), "{stdout}");
    for step in [
        "==> certctl deploy --dry-run",
        "==> certctl deploy\n",
        "==> certctl verify",
    ] {
        assert!(stdout.contains(step), "{step:?} in\n{stdout}");
    }
    assert!(stderr.contains("1 would-change"), "{stderr}");
    assert!(stderr.contains("1 deployed"), "{stderr}");
    assert!(stderr.contains("1 ok"), "{stderr}");
    assert!(
        stdout.contains("lab: ok: the new certificate is served"),
        "{stdout}"
    );
}

#[test]
fn lab_refuses_a_binary_that_is_not_there() {
    let (code, _, stderr) = lab("/nonexistent/certctl");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("lab: CERTCTL=/nonexistent/certctl is not an executable file"),
        "{stderr}"
    );
}
