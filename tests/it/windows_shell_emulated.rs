//! iis and wincertstore on an EMULATED Windows OpenSSH host whose login shell is not `sh`:
//! a real sshd, a login user whose shell is the emulated `cmd.exe` (tests/emulators/cmd: it
//! runs only plain `powershell …` command lines, refuses anything else with exit 1, and logs
//! every command line), SFTP by sshd's `internal-sftp` (no shell, as Windows OpenSSH runs
//! sftp-server.exe), and the emulated PowerShell behind it.
//!
//! What this proves: certctl needs no POSIX shell on such a target — deploy, `--dry-run`,
//! rollback after an injected failure, `certctl rollback`, `certctl status`, a held lock (refused,
//! then `--break-lock`) and the sweep of a killed run's scratch directory all work, and every
//! command line the shell received is `powershell -NoLogo -NoProfile -NonInteractive
//! -EncodedCommand BASE64`; the housekeeping (lock, scratch and backup directories, snapshots,
//! cleanup) went over SFTP. What it does not prove: real cmd.exe, Windows OpenSSH's
//! sftp-server (drive paths `/C:/…`, ACLs instead of modes) or Windows PowerShell.

use crate::support;

use std::fs;
use std::path::Path;

use support::emulated::SNI;
use support::winlab::{SITE, WindowsShellLab};

fn iis_params() -> Vec<(&'static str, &'static str)> {
    vec![("site", SITE), ("hostname", SNI)]
}

/// The backup sets in the lab's backup directory (the lock excluded).
fn sets(backups: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(backups)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

#[test]
fn iis_emulated_on_a_cmd_shell_deploys_reports_status_and_rolls_back_with_only_powershell() {
    let l = WindowsShellLab::start(true);
    let w = &l.w;
    w.lab.write_inventory("iis", &iis_params(), None);
    let t = w.run(&["deploy"], "deployed");
    assert_eq!(w.bound(), w.new_thumb);
    // One command line per script the emulated PowerShell ran, and nothing else.
    let lines = l.assert_only_powershell("deploy");
    assert_eq!(lines, w.take_scripts().len());
    w.assert_no_secret_logged(&w.log_text());
    assert!(
        w.lab.scratch_dirs().is_empty(),
        "the scratch dir is removed"
    );
    let backups = w.lab.backup_dir();
    assert!(!backups.join(".lock").exists(), "the lock is released");
    // The backup set, made over SFTP: 0700, the snapshot 0600 with the old thumbprint.
    let names = sets(&backups);
    assert_eq!(names.len(), 1, "{names:?}");
    let set = backups.join(&names[0]);
    assert_eq!(support::mode(&set), 0o700);
    let snapshot = set.join("binding.txt");
    assert_eq!(support::mode(&snapshot), 0o600);
    assert!(
        fs::read_to_string(&snapshot)
            .unwrap()
            .contains(&w.old_thumb)
    );
    let steps: Vec<String> = t["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap().to_string())
        .collect();
    for step in [
        "lock", "inspect", "stage", "preview", "backup", "swap", "test", "reload",
    ] {
        assert!(steps.iter().any(|s| s == step), "{step}: {steps:?}");
    }

    // Status without a TLS endpoint reads nothing on the target: no command at all.
    w.run(&["status"], "mismatch");
    assert!(l.take_command_lines().is_empty());

    // `certctl rollback` finds the set over SFTP, rebinds the old certificate, marks the set.
    w.run(&["rollback"], "rolled-back");
    assert_eq!(w.bound(), w.old_thumb);
    l.assert_only_powershell("rollback");
    assert_eq!(sets(&backups), [format!("{}.restored", names[0])]);
    assert!(!backups.join(".lock").exists());

    // A second rollback has no set left to restore, and says so.
    let t = w.run(&["rollback"], "failed");
    let error = t["error"].to_string();
    assert!(error.contains("no backup set"), "{error}");
}

#[test]
fn iis_emulated_on_a_cmd_shell_dry_run_and_injected_failure() {
    let l = WindowsShellLab::start(true);
    let w = &l.w;
    w.lab.write_inventory("iis", &iis_params(), None);
    let before = w.state_json();
    w.run(&["deploy", "--dry-run"], "would-change");
    assert_eq!(l.assert_only_powershell("dry run"), 2, "the two previews");
    let mut after = w.state_json();
    after["calls"] = before["calls"].clone();
    assert_eq!(after, before);
    assert!(sets(&w.lab.backup_dir()).is_empty(), "no backup set");
    assert!(w.lab.scratch_dirs().is_empty());

    // The swap (netsh's first call) fails: the restore script swaps the old one back.
    w.fail(&["netsh@1"]);
    let t = w.run(&["deploy"], "rolled-back");
    assert!(t["error"].to_string().contains("Injected failure"), "{t}");
    assert_eq!(w.bound(), w.old_thumb);
    l.assert_only_powershell("rollback after a failure");
    assert!(w.lab.scratch_dirs().is_empty());
    assert!(!w.lab.backup_dir().join(".lock").exists());
}

#[test]
fn wincertstore_emulated_on_a_cmd_shell_deploys_and_rolls_back() {
    let l = WindowsShellLab::start(false);
    let w = &l.w;
    w.lab
        .write_inventory("wincertstore", &[("friendly_name", "www")], None);

    // A failure at the test step: the new certificate leaves the store again.
    w.fail(&["Get-Item@1"]);
    w.run(&["deploy"], "rolled-back");
    assert!(!w.my_store().contains(&w.new_thumb));
    assert!(w.my_store().contains(&w.old_thumb));
    l.assert_only_powershell("rollback after a failure");

    w.fail(&[]);
    w.run(&["deploy"], "deployed");
    assert!(w.my_store().contains(&w.new_thumb));
    l.assert_only_powershell("deploy");

    w.run(&["rollback"], "rolled-back");
    assert!(!w.my_store().contains(&w.new_thumb));
    assert!(w.my_store().contains(&w.old_thumb));
    l.assert_only_powershell("certctl rollback");
    assert!(w.lab.scratch_dirs().is_empty());
}

#[test]
fn wincertstore_emulated_on_a_cmd_shell_held_lock_is_refused_then_broken() {
    let l = WindowsShellLab::start(false);
    let w = &l.w;
    w.lab.write_inventory("wincertstore", &[], None);
    let backups = w.lab.backup_dir();
    // Another machine's run holds the lock; a killed run of this target left a scratch dir.
    fs::create_dir(backups.join(".lock")).unwrap();
    fs::write(
        backups.join(".lock/holder"),
        "pid=4242 host=elsewhere user=ops started=2026-01-01T00:00:00Z run=1-ab\n",
    )
    .unwrap();
    let stale = w.lab.tmp_dir().join("certctl-1-ab-0");
    fs::create_dir(&stale).unwrap();
    fs::write(
        stale.join(".certctl-lock"),
        format!("{}/.lock\n", backups.display()),
    )
    .unwrap();
    fs::write(stale.join("new.pfx"), "left behind").unwrap();
    l.user.own(w.lab.root());

    let t = w.run(&["deploy"], "failed");
    let error = t["error"].to_string();
    assert!(
        error.contains("another certctl run holds")
            && error.contains("pid 4242 on elsewhere")
            && error.contains("--break-lock"),
        "{error}"
    );
    assert!(l.take_command_lines().is_empty(), "nothing ran");
    assert!(!w.my_store().contains(&w.new_thumb));
    assert!(
        backups.join(".lock/holder").exists(),
        "another run's lock stays"
    );
    assert!(stale.exists(), "not swept without the lock");

    let t = w.run(&["deploy", "--break-lock"], "deployed");
    let lock = t["steps"][1]["detail"].to_string();
    assert!(lock.contains("certctl-1-ab-0"), "{}", t["steps"]);
    assert!(!stale.exists(), "the killed run's scratch dir is swept");
    assert!(w.my_store().contains(&w.new_thumb));
    assert!(!backups.join(".lock").exists());
    l.assert_only_powershell("deploy --break-lock");
}

/// The emulated cmd.exe itself: runs a plain `powershell …` line (the `powershell` first on
/// PATH, with the line's words), refuses everything else with exit 1, logs every line.
#[test]
fn cmd_emulator_runs_only_plain_powershell_lines() {
    let dir = tempfile::tempdir().unwrap();
    let cmd = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/emulators/cmd");
    let ps = dir.path().join("powershell");
    fs::write(&ps, "#!/bin/sh\necho \"ran: $*\"\nexit 3\n").unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(&ps, fs::Permissions::from_mode(0o755)).unwrap();
    let log = dir.path().join("cmd.log");
    let run = |args: &[&str]| {
        std::process::Command::new("python3")
            .arg(&cmd)
            .args(args)
            .env("PATH", format!("{}:/usr/bin:/bin", dir.path().display()))
            .env("CERTCTL_EMU_CMD_LOG", &log)
            .output()
            .unwrap()
    };
    let out = run(&["-c", "powershell -NoLogo -EncodedCommand QQB=="]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ran: -NoLogo -EncodedCommand QQB==\n"
    );
    for (line, says) in [
        ("sh -c 'true'", "'sh' is not recognized"),
        ("mkdir -p /tmp/x", "'mkdir' is not recognized"),
        ("powershell -c a & del x", "'&'"),
        ("powershell -c \"a\"", "'\"'"),
        ("powershell -c %PATH%", "'%'"),
        ("powershell -c a\nsh", "'\\n'"),
        ("", "empty command line"),
    ] {
        let out = run(&["-c", line]);
        assert_eq!(out.status.code(), Some(1), "{line:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{line:?}: {err}");
        assert!(out.stdout.is_empty(), "{line:?}");
    }
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(1), "no interactive session");
    let logged = fs::read_to_string(&log).unwrap();
    assert_eq!(logged.lines().count(), 8, "{logged}");
    assert!(logged.contains("sh -c 'true'"), "{logged}");
}

/// The journal on a Windows target (written and closed over SFTP): a deploy whose rollback
/// fails too (netsh refuses to bind the old certificate back) leaves it; `certctl status`
/// names it; the next deploy restores the snapshot first (`recover`, only PowerShell lines),
/// then deploys.
#[test]
fn iis_emulated_on_a_cmd_shell_a_failed_rollback_is_recovered_by_the_next_run() {
    let l = WindowsShellLab::start(true);
    let w = &l.w;
    w.lab.write_inventory("iis", &iis_params(), None);
    w.fail(&["Get-Item@2", "netsh@2"]);
    let t = w.run(&["deploy"], "rollback-failed");
    assert!(t["error"].to_string().contains("ROLLBACK FAILED"), "{t}");
    assert_eq!(
        w.bound(),
        w.new_thumb,
        "the failed restore left the new binding"
    );
    assert!(
        w.lab.backup_dir().join("journal").exists(),
        "the journal stays"
    );
    let t = w.run(&["status"], "mismatch");
    assert!(
        t["error"].to_string().contains("an unfinished change"),
        "{t}"
    );

    w.fail(&[]);
    l.take_command_lines();
    let t = w.run(&["deploy", "--force"], "deployed");
    let steps: Vec<&str> = t["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(&steps[..3], ["connect", "lock", "recover"], "{t}");
    assert!(!w.lab.backup_dir().join("journal").exists(), "closed");
    assert_eq!(w.bound(), w.new_thumb);
    l.assert_only_powershell("recover, then deploy");
}
