//! Fault injection at each step of a real deploy (real sshd, real nginx, the built binary):
//! a remote command that fails, a directory that turns read-only, a full disk, the server
//! dying, the SSH connection dropping. After each fault the target serves the old or the new
//! certificate and the report says which; the live files are one complete pair; the exit code
//! matches the report; and a following clean run leaves no temp file behind.
//!
//! The matrix runs every cell (each on its own rig, a few at a time) and writes the outcome
//! table to `target/reliability-table.md`. A cell where the engine misbehaves is marked with
//! `bug` (none is today): the matrix then pins the observed behaviour, and an `#[ignore]`d
//! test below states the behaviour the engine should have. The tests below pin the engine
//! bugs the matrix found and that are fixed.

use crate::support;

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Mutex;

use support::faults::{
    Action, InventorySpec, LiveSet, Rig, RigOptions, Served, TcpProxy, kill_sshd_sessions,
    nginx_preview, sh, stop_process,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    CommandFails,
    ReadOnly,
    DiskFull,
    ServerDies,
    SshDrop,
}

impl Fault {
    fn label(self) -> &'static str {
        match self {
            Fault::CommandFails => "remote command fails",
            Fault::ReadOnly => "read-only",
            Fault::DiskFull => "disk full",
            Fault::ServerDies => "server dies",
            Fault::SshDrop => "SSH connection drops",
        }
    }
}

/// What a cell's fault run must end in.
#[derive(Debug, Clone)]
struct Expect {
    status: &'static str,
    code: i32,
    served: Served,
    files: LiveSet,
    /// Text the report's error (or, for a success, a failed step's detail) must contain.
    says: &'static str,
}

/// What arming a fault produced: the inventory to run with, and a proxy to keep alive.
#[derive(Default)]
struct Armed {
    spec: InventorySpec,
    proxy: Option<TcpProxy>,
}

struct Cell {
    step: &'static str,
    fault: Fault,
    how: &'static str,
    rig: RigOptions,
    dry_run: bool,
    arm: fn(&Rig) -> Armed,
    /// What the run must end in (decides the row's first six columns, see [`row_head`]).
    expect: Expect,
    /// An engine bug or gap this cell shows, as the table says it (the expectation pins
    /// today's behaviour; an ignored test below states the right one).
    bug: Option<&'static str>,
}

fn expect(
    status: &'static str,
    code: i32,
    served: Served,
    files: LiveSet,
    says: &'static str,
) -> Expect {
    Expect {
        status,
        code,
        served,
        files,
        says,
    }
}

/// Untouched: the old pair, the old certificate, exit 1.
fn untouched(says: &'static str) -> Expect {
    expect("failed", 1, Served::Old, LiveSet::Old, says)
}

/// Swapped and restored: the old pair, the old certificate, exit 1.
fn rolled_back(says: &'static str) -> Expect {
    expect("rolled-back", 1, Served::Old, LiveSet::Old, says)
}

/// Swapped, restore impossible: the new pair on disk, not reloaded, so the old one served.
fn stuck_on_new_files(says: &'static str) -> Expect {
    expect("rollback-failed", 3, Served::Old, LiveSet::New, says)
}

fn commands(list: Vec<(&'static str, Vec<Vec<String>>)>) -> InventorySpec {
    InventorySpec {
        commands: list,
        ..InventorySpec::default()
    }
}

/// `test` that always fails (it only runs after the swap): the way to reach the rollback.
fn failing_test() -> Vec<Vec<String>> {
    vec![sh(
        "echo 'injected fault: live config test failed' >&2; exit 1",
    )]
}

fn then_failing(mut first: Vec<Vec<String>>) -> Vec<Vec<String>> {
    first.extend(failing_test());
    first
}

fn with_preview(extra: Vec<String>) -> Vec<Vec<String>> {
    let mut list = nginx_preview();
    list.push(extra);
    list
}

/// Every live file written into its own inode (as for a bind-mounted file), not renamed over.
fn in_place_always() -> Armed {
    Armed {
        spec: InventorySpec {
            params: vec![("in_place".into(), "always".into())],
            ..InventorySpec::default()
        },
        proxy: None,
    }
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

fn cells() -> Vec<Cell> {
    use Fault::*;
    let plain = RigOptions::default();
    vec![
        // -- a remote command fails ----------------------------------------------------------
        Cell {
            step: "inspect",
            fault: CommandFails,
            how: "`sha256sum` fails in the inspect script",
            rig: plain,
            dry_run: false,
            arm: |rig| {
                rig.arm_tool("sha256sum", None, Action::Fail, false);
                Armed::default()
            },
            expect: untouched("could not be hashed"),
            bug: None,
        },
        Cell {
            step: "stage",
            fault: CommandFails,
            how: "`chown` fails as the stage gives the first file its owner (a live file owned by \
                  another user)",
            rig: plain,
            dry_run: false,
            arm: |rig| {
                // The shell writes a PEM file itself; `chown` runs only for another owner.
                owned_by_nobody(rig);
                rig.arm_tool("chown", None, Action::Fail, false);
                Armed::default()
            },
            expect: untouched("stage failed"),
            bug: None,
        },
        Cell {
            step: "preview",
            fault: CommandFails,
            how: "`commands.preview` exits 1",
            rig: plain,
            dry_run: false,
            arm: |_| Armed {
                spec: commands(vec![(
                    "preview",
                    vec![sh(
                        "echo 'injected fault: preview rejected the staged pair' >&2; exit 1",
                    )],
                )]),
                proxy: None,
            },
            expect: untouched("preview failed"),
            bug: None,
        },
        Cell {
            step: "backup",
            fault: CommandFails,
            how: "`cp` into the backup set fails",
            rig: plain,
            dry_run: false,
            arm: |rig| {
                rig.arm_tool(
                    "cp",
                    Some(&path_str(&rig.backup_dir())),
                    Action::Fail,
                    false,
                );
                Armed::default()
            },
            expect: untouched("backup failed"),
            bug: None,
        },
        Cell {
            step: "swap",
            fault: CommandFails,
            how: "the second rename (`mv` of the key) fails",
            rig: plain,
            dry_run: false,
            arm: |rig| {
                rig.arm_tool("mv", Some("privkey.pem"), Action::Fail, false);
                Armed::default()
            },
            expect: rolled_back("swap failed"),
            bug: None,
        },
        Cell {
            step: "swap",
            fault: CommandFails,
            how: "`in_place: always`: the in-place write of the key is cut short (`truncate` fails after the new bytes went in)",
            rig: plain,
            dry_run: false,
            arm: |rig| {
                rig.arm_tool("truncate", Some("privkey.pem"), Action::Fail, false);
                in_place_always()
            },
            expect: rolled_back("swap failed"),
            bug: None,
        },
        Cell {
            step: "test",
            fault: CommandFails,
            how: "`commands.test` exits 1",
            rig: plain,
            dry_run: false,
            arm: |_| Armed {
                spec: commands(vec![("test", failing_test())]),
                proxy: None,
            },
            expect: rolled_back("test failed"),
            bug: None,
        },
        Cell {
            step: "reload",
            fault: CommandFails,
            how: "`commands.reload` exits 1 while the new files are live",
            rig: plain,
            dry_run: false,
            arm: |rig| {
                let script = format!(
                    "if cmp -s {cert} {new}; then echo 'injected fault: reload refused' >&2; exit 1; fi; nginx -s reload -c {conf}",
                    cert = path_str(&rig.nginx.cert_path()),
                    new = path_str(&rig.new.leaf.fullchain),
                    conf = path_str(rig.nginx.conf_path()),
                );
                Armed {
                    spec: commands(vec![("reload", vec![sh(&script)])]),
                    proxy: None,
                }
            },
            expect: rolled_back("reload failed"),
            bug: None,
        },
        Cell {
            step: "verify",
            fault: CommandFails,
            how: "reload exits 0 but does nothing: the old certificate stays served",
            rig: plain,
            dry_run: false,
            arm: |_| Armed {
                spec: commands(vec![("reload", vec![vec!["true".into()]])]),
                proxy: None,
            },
            expect: rolled_back("verify failed"),
            bug: None,
        },
        Cell {
            step: "rollback",
            fault: CommandFails,
            how: "after `test` failed, every `cp` of the restore fails",
            rig: plain,
            dry_run: false,
            arm: |rig| {
                rig.arm_tool("cp", Some(".restore"), Action::Fail, true);
                Armed {
                    spec: commands(vec![("test", failing_test())]),
                    proxy: None,
                }
            },
            expect: stuck_on_new_files("ROLLBACK FAILED"),
            bug: None,
        },
        Cell {
            step: "rollback",
            fault: CommandFails,
            how: "after `test` failed, the restore's first `cp` fails (once)",
            rig: plain,
            dry_run: false,
            arm: |rig| {
                rig.arm_tool("cp", Some(".restore"), Action::Fail, false);
                Armed {
                    spec: commands(vec![("test", failing_test())]),
                    proxy: None,
                }
            },
            expect: stuck_on_new_files("nothing restored: a copy failed"),
            bug: None,
        },
        Cell {
            step: "cleanup",
            fault: CommandFails,
            how: "`rm` of the lock fails",
            rig: plain,
            dry_run: false,
            arm: |rig| {
                rig.arm_tool("rm", Some(".lock"), Action::Fail, true);
                Armed::default()
            },
            expect: expect("deployed", 0, Served::New, LiveSet::New, "cleanup"),
            bug: None,
        },
        // -- read-only -----------------------------------------------------------------------
        Cell {
            step: "inspect",
            fault: ReadOnly,
            how: "`tmp_dir` immutable: the scratch directory cannot be made",
            rig: plain,
            dry_run: false,
            arm: |rig| {
                rig.freeze(&rig.tmp_dir());
                Armed::default()
            },
            expect: untouched("inspect failed"),
            bug: None,
        },
        Cell {
            step: "stage",
            fault: ReadOnly,
            how: "the certificate directory immutable",
            rig: plain,
            dry_run: false,
            arm: |rig| {
                rig.freeze(&rig.cert_dir());
                Armed::default()
            },
            expect: untouched("stage failed"),
            bug: None,
        },
        Cell {
            step: "backup",
            fault: ReadOnly,
            how: "the backup directory turns immutable during preview",
            rig: plain,
            dry_run: false,
            arm: |rig| Armed {
                spec: commands(vec![(
                    "preview",
                    with_preview(rig.freeze_argv(&rig.backup_dir())),
                )]),
                proxy: None,
            },
            expect: untouched("backup failed"),
            bug: None,
        },
        Cell {
            step: "swap",
            fault: ReadOnly,
            how: "the live key file turns immutable during preview: the 2nd rename fails",
            rig: plain,
            dry_run: false,
            arm: |rig| Armed {
                spec: commands(vec![(
                    "preview",
                    with_preview(rig.freeze_argv(&rig.nginx.key_path())),
                )]),
                proxy: None,
            },
            expect: rolled_back("swap failed"),
            bug: None,
        },
        Cell {
            step: "rollback",
            fault: ReadOnly,
            how: "after the swap the certificate directory turns immutable, then `test` fails",
            rig: plain,
            dry_run: false,
            arm: |rig| Armed {
                spec: commands(vec![(
                    "test",
                    then_failing(vec![rig.freeze_argv(&rig.cert_dir())]),
                )]),
                proxy: None,
            },
            expect: stuck_on_new_files("ROLLBACK FAILED"),
            bug: None,
        },
        Cell {
            step: "cleanup",
            fault: ReadOnly,
            how: "dry run; the certificate directory turns immutable during preview",
            rig: plain,
            dry_run: true,
            arm: |rig| Armed {
                spec: commands(vec![(
                    "preview",
                    with_preview(rig.freeze_argv(&rig.cert_dir())),
                )]),
                proxy: None,
            },
            expect: expect(
                "would-change",
                0,
                Served::Old,
                LiveSet::Old,
                "could not remove",
            ),
            bug: None,
        },
        // -- disk full -----------------------------------------------------------------------
        Cell {
            step: "stage",
            fault: DiskFull,
            how: "the certificate directory's filesystem is full",
            rig: RigOptions {
                cert_dir_tmpfs: true,
                ..plain
            },
            dry_run: false,
            arm: |rig| {
                rig.fill(&rig.cert_dir());
                Armed::default()
            },
            expect: untouched("stage failed"),
            bug: None,
        },
        Cell {
            // The preview's config template is written by the stage (on its stdin).
            step: "stage",
            fault: DiskFull,
            how: "`tmp_dir`'s filesystem is full: the preview's config template cannot be written",
            rig: RigOptions {
                scratch_tmpfs: true,
                ..plain
            },
            dry_run: false,
            arm: |rig| {
                rig.fill(&rig.tmp_dir());
                Armed::default()
            },
            expect: untouched("stage failed"),
            bug: None,
        },
        Cell {
            step: "backup",
            fault: DiskFull,
            how: "the backup filesystem fills up during preview",
            rig: RigOptions {
                backup_tmpfs: true,
                ..plain
            },
            dry_run: false,
            arm: |rig| Armed {
                spec: commands(vec![(
                    "preview",
                    with_preview(rig.fill_argv(&rig.backup_dir())),
                )]),
                proxy: None,
            },
            expect: untouched("backup failed"),
            bug: None,
        },
        Cell {
            step: "rollback",
            fault: DiskFull,
            how: "after the swap the certificate filesystem fills up, then `test` fails",
            rig: RigOptions {
                cert_dir_tmpfs: true,
                ..plain
            },
            dry_run: false,
            arm: |rig| Armed {
                spec: commands(vec![(
                    "test",
                    then_failing(vec![rig.fill_argv(&rig.cert_dir())]),
                )]),
                proxy: None,
            },
            expect: stuck_on_new_files("ROLLBACK FAILED"),
            bug: None,
        },
        // -- the server dies -----------------------------------------------------------------
        Cell {
            step: "reload",
            fault: ServerDies,
            how: "nginx stops as the reload starts; no `start` command",
            rig: plain,
            dry_run: false,
            arm: |rig| {
                let reload = rig.kill_nginx_then_argv(&format!(
                    "exec nginx -s reload -c {}",
                    path_str(rig.nginx.conf_path())
                ));
                Armed {
                    spec: commands(vec![("reload", vec![reload])]),
                    proxy: None,
                }
            },
            expect: expect(
                "rollback-failed",
                3,
                Served::Nothing,
                LiveSet::Old,
                "old certificate is NOT served",
            ),
            bug: None,
        },
        Cell {
            step: "verify",
            fault: ServerDies,
            how: "nginx stops as the first verify probe arrives; `alive`/`start` given",
            rig: plain,
            dry_run: false,
            arm: |rig| {
                let master = rig.nginx.master_pid();
                // Connection 1 is the policy gate's downgrade probe (inspect takes what it
                // saw), 2 the first of verify's.
                let proxy = TcpProxy::start(rig.nginx.addr, move |n| {
                    if n == 2 {
                        stop_process(master);
                    }
                });
                let mut spec = commands(rig.alive_and_start());
                spec.verify_address = Some(proxy.addr.to_string());
                Armed {
                    spec,
                    proxy: Some(proxy),
                }
            },
            expect: rolled_back("verify failed"),
            bug: None,
        },
        // -- the SSH connection drops --------------------------------------------------------
        Cell {
            step: "inspect",
            fault: SshDrop,
            how: "sshd session killed from `sha256sum`",
            rig: plain,
            dry_run: false,
            arm: |rig| {
                rig.arm_tool("sha256sum", None, Action::Drop, false);
                Armed::default()
            },
            // Lock and inspect are one remote command: a lost connection names both.
            expect: untouched("lock and inspect failed"),
            bug: None,
        },
        Cell {
            step: "stage",
            fault: SshDrop,
            how: "sshd session killed as the stage gives the first file its owner (`chown`)",
            rig: plain,
            dry_run: false,
            arm: |rig| {
                owned_by_nobody(rig);
                rig.arm_tool("chown", None, Action::Drop, false);
                Armed::default()
            },
            expect: untouched("stage, preview and backup failed"),
            bug: None,
        },
        Cell {
            step: "preview",
            fault: SshDrop,
            how: "sshd session killed by `commands.preview`",
            rig: plain,
            dry_run: false,
            arm: |rig| Armed {
                spec: commands(vec![("preview", vec![rig.drop_argv()])]),
                proxy: None,
            },
            // Preview and backup are one remote command: a lost connection names both.
            expect: untouched("stage, preview and backup failed"),
            bug: None,
        },
        Cell {
            step: "backup",
            fault: SshDrop,
            how: "sshd session killed from `cp` into the backup set",
            rig: plain,
            dry_run: false,
            arm: |rig| {
                rig.arm_tool(
                    "cp",
                    Some(&path_str(&rig.backup_dir())),
                    Action::Drop,
                    false,
                );
                Armed::default()
            },
            expect: untouched("stage, preview and backup failed"),
            bug: None,
        },
        Cell {
            step: "swap",
            fault: SshDrop,
            how: "sshd session and the swap's shell killed between the two renames",
            rig: plain,
            dry_run: false,
            arm: |rig| {
                rig.arm_tool("mv", Some("privkey.pem"), Action::Drop, false);
                Armed::default()
            },
            expect: rolled_back("rollback ran over a new one"),
            bug: None,
        },
        Cell {
            step: "swap",
            fault: SshDrop,
            how: "`in_place: always`: sshd session and the swap's shell killed as the key is written in place (`cat`), the certificate already written",
            rig: plain,
            dry_run: false,
            arm: |rig| {
                rig.arm_tool("cat", Some("privkey.pem"), Action::Drop, false);
                in_place_always()
            },
            expect: rolled_back("rollback ran over a new one"),
            bug: None,
        },
        Cell {
            step: "test",
            fault: SshDrop,
            how: "sshd session killed by `commands.test`",
            rig: plain,
            dry_run: false,
            arm: |rig| Armed {
                spec: commands(vec![("test", vec![rig.drop_argv()])]),
                proxy: None,
            },
            expect: rolled_back("rollback ran over a new one"),
            bug: None,
        },
        Cell {
            step: "reload",
            fault: SshDrop,
            how: "sshd session killed by `commands.reload`",
            rig: plain,
            dry_run: false,
            arm: |rig| Armed {
                spec: commands(vec![("reload", vec![rig.drop_argv()])]),
                proxy: None,
            },
            expect: rolled_back("rollback ran over a new one"),
            bug: None,
        },
        Cell {
            step: "verify",
            fault: SshDrop,
            how: "sshd sessions killed as the first verify probe arrives",
            rig: plain,
            dry_run: false,
            arm: |rig| {
                let listener = rig.sshd.pid();
                // 1: the policy gate's probe (inspect takes what it saw), 2: verify's first.
                let proxy = TcpProxy::start(rig.nginx.addr, move |n| {
                    if n == 2 {
                        kill_sshd_sessions(listener);
                    }
                });
                Armed {
                    spec: InventorySpec {
                        verify_address: Some(proxy.addr.to_string()),
                        ..InventorySpec::default()
                    },
                    proxy: Some(proxy),
                }
            },
            expect: expect("deployed", 0, Served::New, LiveSet::New, "cleanup"),
            bug: None,
        },
        Cell {
            step: "rollback",
            fault: SshDrop,
            how: "after `test` failed, sshd session killed from the restore's `cp`",
            rig: plain,
            dry_run: false,
            arm: |rig| {
                rig.arm_tool("cp", Some(".restore"), Action::Drop, false);
                Armed {
                    spec: commands(vec![("test", failing_test())]),
                    proxy: None,
                }
            },
            expect: rolled_back("the restore, which was run again over a new one"),
            bug: None,
        },
        Cell {
            step: "cleanup",
            fault: SshDrop,
            how: "sshd session killed from cleanup's `rm`",
            rig: plain,
            dry_run: false,
            arm: |rig| {
                rig.arm_tool("rm", Some(".certctl-"), Action::Drop, false);
                Armed::default()
            },
            expect: expect("deployed", 0, Served::New, LiveSet::New, "cleanup"),
            bug: None,
        },
    ]
}

/// What one cell did, for the table and the verdict.
struct Outcome {
    row: String,
    problems: Vec<String>,
}

const STEPS: [&str; 10] = [
    "inspect", "stage", "preview", "backup", "swap", "test", "reload", "verify", "rollback",
    "cleanup",
];

fn exit_code_for(status: &str) -> i32 {
    match status {
        "deployed" | "unchanged" | "reloaded" | "would-change" => 0,
        "rollback-failed" => 3,
        _ => 1,
    }
}

fn run_cell(cell: &Cell) -> Outcome {
    let mut problems = Vec::new();
    let rig = Rig::start(cell.rig);
    let armed = (cell.arm)(&rig);
    rig.write_inventory(&armed.spec);
    let mut args = vec!["deploy", "--output", "json"];
    if cell.dry_run {
        args.push("--dry-run");
    }
    let out = rig.certctl(&args);
    let report = out.json();
    let target = &report["targets"][0];
    let status = target["status"].as_str().unwrap_or("?").to_string();
    let error = target["error"].as_str().unwrap_or("").to_string();
    let failed_steps: Vec<String> = target["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["status"] == "failed")
        .map(|s| {
            format!(
                "{}: {}",
                s["step"].as_str().unwrap_or("?"),
                s["detail"].as_str().unwrap_or("")
            )
        })
        .collect();
    drop(armed.proxy);
    let served = rig.served();
    let files = rig.live_set();
    let want = cell.expect.clone();
    let context = format!("exit {}; error: {error}\nstderr:\n{}", out.code, out.stderr);

    if out.code != exit_code_for(&status) {
        problems.push(format!(
            "exit {} does not match status {status}: {context}",
            out.code
        ));
    }
    if status != want.status || out.code != want.code {
        problems.push(format!(
            "status {status} (exit {}), expected {} (exit {}): {context}",
            out.code, want.status, want.code
        ));
    }
    if served != want.served {
        problems.push(format!("serves {served}, expected {}", want.served));
    }
    if files != want.files {
        problems.push(format!("live files: {files}, expected {}", want.files));
    }
    if cell.bug.is_none() && matches!(files, LiveSet::Mixed(_)) {
        problems.push(format!("the live files are not one complete pair: {files}"));
    }
    // The report's served fingerprint says which certificate is served, where it knows.
    let reported = target["served_fingerprint"].as_str().unwrap_or("");
    let fingerprint = match &served {
        Served::Old => rig.old.fingerprint.as_str(),
        Served::New => rig.new.fingerprint.as_str(),
        _ => "",
    };
    if matches!(status.as_str(), "deployed" | "rolled-back") && reported != fingerprint {
        problems.push(format!(
            "the report says {reported} is served, openssl sees {served}"
        ));
    }
    let said = if status == "deployed" || status == "would-change" {
        failed_steps.join("; ")
    } else {
        error.clone()
    };
    if !said.contains(want.says) {
        problems.push(format!("the report does not say `{}`: {said:?}", want.says));
    }
    let after_fault = rig.leftovers();

    // A following clean run: faults removed, the server up, the connector's own commands.
    rig.disarm();
    if rig.served() == Served::Nothing {
        restart_nginx(&rig);
    }
    rig.write_inventory(&InventorySpec::default());
    let mut clean = rig.certctl(&["deploy", "--output", "json"]);
    let mut next = String::new();
    if clean.code != 0 && clean.stdout.contains("--break-lock") {
        next.push_str("stale lock reported → `--break-lock`: ");
        clean = rig.certctl(&["deploy", "--break-lock", "--output", "json"]);
    }
    if clean.code != 0 && matches!(rig.live_set(), LiveSet::Mixed(_)) {
        // The live config no longer loads, so a deploy's preview refuses: a person restores
        // the backup set first.
        let undo = rig.certctl(&["rollback", "--break-lock", "--output", "json"]);
        let undone = undo.json()["targets"][0]["status"]
            .as_str()
            .unwrap_or("?")
            .to_string();
        next.push_str(&format!(
            "refused (mixed pair fails the live config test) → `certctl rollback`: {undone} → deploy: "
        ));
        clean = rig.certctl(&["deploy", "--output", "json"]);
    }
    let clean_status = clean.json()["targets"][0]["status"]
        .as_str()
        .unwrap_or("?")
        .to_string();
    next.push_str(&clean_status);
    if clean.code != 0 || !matches!(clean_status.as_str(), "deployed" | "unchanged" | "reloaded") {
        problems.push(format!(
            "the clean run after the fault ended {clean_status} (exit {}): {}",
            clean.code, clean.stderr
        ));
    }
    if rig.served() != Served::New || rig.live_set() != LiveSet::New {
        problems.push("after the clean run the new pair is not live and served".into());
    }
    let left = rig.leftovers();
    if !left.is_empty() {
        next.push_str(&format!("; left: {}", left.join(", ")));
        problems.push(format!("left behind after the clean run: {left:?}"));
    }

    let left_by_fault = if after_fault.is_empty() {
        "—".to_string()
    } else {
        after_fault.join(", ")
    };
    let head = row_head(cell, &status, out.code, &served, &files);
    let row = format!("{head} {left_by_fault} | {next} |");
    Outcome { row, problems }
}

/// Gives the live certificate file to `nobody` (65534): its staged replacement is then given
/// that owner with `chown` (the one process the stage of a PEM file runs).
fn owned_by_nobody(rig: &Rig) {
    std::os::unix::fs::chown(
        rig.cert_dir().join("fullchain.pem"),
        Some(65534),
        Some(65534),
    )
    .unwrap();
}

/// A row's first six columns: the cell (step, fault, how it is injected) and what its run
/// ended in (result, served after, files on disk after). The matrix writes them from the run;
/// [`the_reliability_doc_lists_every_cell`] from the cell's [`Expect`], without running it.
/// The two agree: a run that ends otherwise fails the matrix. The last two columns (what the
/// faulty run left, what the next clean run did) only a run can tell.
fn row_head(cell: &Cell, status: &str, code: i32, served: &Served, files: &LiveSet) -> String {
    let mut result = format!("`{status}`, exit {code}");
    if let Some(bug) = cell.bug {
        result.push_str(&format!(" — {bug}"));
    }
    format!(
        "| {step} | {fault} | {how} | {result} | {served} | {files} |",
        step = cell.step,
        fault = cell.fault.label(),
        how = cell.how,
    )
}

/// Where a cell's row goes in the table: by step (in the engine's order), then fault, then
/// the cell's place in [`cells`].
fn table_order(cell: &Cell, index: usize) -> (usize, u8, usize) {
    (
        STEPS.iter().position(|s| *s == cell.step).unwrap_or(99),
        cell.fault as u8,
        index,
    )
}

/// The reliability table as `docs/reliability.md` holds it between its markers.
fn table_text<'a>(rows: impl IntoIterator<Item = &'a str>) -> String {
    let mut table = String::from(
        "| step | fault | injected by | result | served after | files on disk after | left on the target | next clean run |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        table.push_str(row);
        table.push('\n');
    }
    table.push_str(
        "\n\"left on the target\" is what the faulty run left; \"next clean run\" is a plain \
         `certctl deploy` with the fault removed (and what a person had to add).\n",
    );
    table
}

/// The document that holds the generated table, and its section's name.
const RELIABILITY_DOC: &str = "docs/reliability.md";
const RELIABILITY_SECTION: &str = "fault-matrix";
const RELIABILITY_UPDATE: &str = "CERTCTL_UPDATE_DOCS=1 cargo test --test it faults::fault_matrix";

/// A person restarts the server a fault killed (the harness's nginx config, as a daemon; the
/// rig stops it by its pid file).
fn restart_nginx(rig: &Rig) {
    let out = std::process::Command::new("nginx")
        .arg("-e")
        .arg(rig.nginx.dir().join("logs/error.log"))
        .arg("-c")
        .arg(rig.nginx.conf_path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "restart nginx: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(rig.served(), Served::Old, "nginx restarted on the old pair");
}

/// Every fault at every step where a real system can produce it; writes the outcome table.
/// `CERTCTL_FAULT_CELLS=step` (or `step:fault-label`) runs a subset, tabled in
/// `target/reliability-table.partial.md`.
#[test]
fn fault_matrix() {
    let filter = std::env::var("CERTCTL_FAULT_CELLS").ok();
    let all = cells();
    let selected: Vec<&Cell> = all
        .iter()
        .filter(|c| {
            filter.as_deref().is_none_or(|f| {
                f.split(',').any(|f| {
                    let (step, fault) = f.split_once(':').unwrap_or((f, ""));
                    c.step == step && (fault.is_empty() || c.fault.label().starts_with(fault))
                })
            })
        })
        .collect();
    assert!(!selected.is_empty(), "no cell matches {filter:?}");
    let next = Mutex::new(0usize);
    let results: Mutex<Vec<(usize, Outcome)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                loop {
                    let i = {
                        let mut n = next.lock().unwrap();
                        let i = *n;
                        *n += 1;
                        i
                    };
                    let Some(cell) = selected.get(i) else { break };
                    let outcome = run_cell(cell);
                    results.lock().unwrap().push((i, outcome));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(i, _)| table_order(selected[*i], *i));

    let table = table_text(results.iter().map(|(_, o)| o.row.as_str()));
    let mut problems = String::new();
    for (i, outcome) in &results {
        for p in &outcome.problems {
            let c = selected[*i];
            let _ = writeln!(problems, "- {} × {}: {p}", c.step, c.fault.label());
        }
    }
    {
        // A subset goes to its own file, so the full table is only ever a whole run's.
        let name = if filter.is_none() {
            "reliability-table.md"
        } else {
            "reliability-table.partial.md"
        };
        let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .unwrap()
            .join(name);
        let text = format!(
            "<!-- Written by tests/it/faults.rs (fault_matrix); do not edit by hand. -->\n{table}"
        );
        std::fs::write(&path, text).unwrap();
    }
    assert!(problems.is_empty(), "{problems}\n{table}");
    // The whole matrix ran and every cell ended as expected: the doc must hold this table.
    if filter.is_none() {
        crate::docs::check_section(
            RELIABILITY_DOC,
            RELIABILITY_SECTION,
            &table,
            RELIABILITY_UPDATE,
        );
    }
}

/// Cheap, without running the matrix: `docs/reliability.md` has one row per cell, in table
/// order, each starting with what the cell is and what it must end in. (The full table,
/// the last two columns too, is checked by [`fault_matrix`] at its end.)
#[test]
fn the_reliability_doc_lists_every_cell() {
    let section = crate::docs::section(RELIABILITY_DOC, RELIABILITY_SECTION);
    let doc_rows: Vec<&str> = section
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| step |"))
        .collect();
    let all = cells();
    let mut order: Vec<usize> = (0..all.len()).collect();
    order.sort_by_key(|&i| table_order(&all[i], i));
    let mut stale = Vec::new();
    for (k, &i) in order.iter().enumerate() {
        let (cell, want) = (&all[i], &all[i].expect);
        let head = row_head(cell, want.status, want.code, &want.served, &want.files);
        match doc_rows.get(k) {
            Some(row) if row.starts_with(&format!("{head} ")) => {}
            Some(row) => stale.push(format!(
                "row {}: the doc has\n  {row}\nthe cell is\n  {head} …",
                k + 1
            )),
            None => stale.push(format!("row {}: missing from the doc:\n  {head} …", k + 1)),
        }
    }
    for (k, row) in doc_rows.iter().enumerate().skip(order.len()) {
        stale.push(format!("row {}: no cell defines it:\n  {row}", k + 1));
    }
    assert!(
        stale.is_empty(),
        "{RELIABILITY_DOC} is stale: its table does not match the fault matrix's cells \
         (tests/it/faults.rs). Rewrite it by running the matrix: `{RELIABILITY_UPDATE}`\n{}",
        stale.join("\n")
    );
}

// -- engine behaviour the matrix found wrong once, pinned ---------------------------------------

fn deploy(rig: &Rig) -> (support::lab::Output, serde_json::Value) {
    let out = rig.certctl(&["deploy", "--output", "json"]);
    let target = out.json()["targets"][0].clone();
    (out, target)
}

#[test]
fn a_failed_hash_in_inspect_stops_the_deploy() {
    let rig = Rig::start(RigOptions::default());
    rig.arm_tool("sha256sum", None, Action::Fail, false);
    let (out, target) = deploy(&rig);
    assert_eq!(target["status"], "failed", "{}", out.stderr);
    assert_eq!(out.code, 1);
    assert!(
        target["error"]
            .as_str()
            .unwrap()
            .starts_with("inspect failed"),
        "{target}"
    );
    assert_eq!(rig.live_set(), LiveSet::Old);
    assert_eq!(rig.served(), Served::Old);
}

#[test]
fn a_failed_restore_never_leaves_a_mixed_pair() {
    let rig = Rig::start(RigOptions::default());
    rig.arm_tool("cp", Some(".restore"), Action::Fail, false);
    rig.write_inventory(&commands(vec![("test", failing_test())]));
    let (out, target) = deploy(&rig);
    assert_eq!(target["status"], "rollback-failed", "{}", out.stderr);
    assert_eq!(out.code, 3);
    let files = rig.live_set();
    assert!(
        files == LiveSet::Old || files == LiveSet::New,
        "the live files are {files}"
    );
}

#[test]
fn a_cleanup_that_leaves_staged_files_says_so() {
    let rig = Rig::start(RigOptions::default());
    let freeze = rig.freeze_argv(&rig.cert_dir());
    rig.write_inventory(&commands(vec![("preview", with_preview(freeze))]));
    let out = rig.certctl(&["deploy", "--dry-run", "--output", "json"]);
    let target = out.json()["targets"][0].clone();
    assert!(
        rig.leftovers()
            .iter()
            .any(|l| l.contains(".privkey.pem.certctl-")),
        "the staged key copy is still there: {:?}",
        rig.leftovers()
    );
    let cleanup = target["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "cleanup")
        .cloned()
        .unwrap();
    assert_eq!(cleanup["status"], "failed", "{target}");
    assert!(
        cleanup["detail"]
            .as_str()
            .unwrap_or("")
            .contains("privkey.pem"),
        "{cleanup}"
    );
}

#[test]
fn a_connection_lost_after_the_swap_is_rolled_back_over_a_new_one() {
    let rig = Rig::start(RigOptions::default());
    rig.write_inventory(&commands(vec![("test", vec![rig.drop_argv()])]));
    let (out, target) = deploy(&rig);
    assert_eq!(target["status"], "rolled-back", "{}", out.stderr);
    assert_eq!(out.code, 1);
    assert_eq!(rig.live_set(), LiveSet::Old);
    assert_eq!(rig.served(), Served::Old);
}

#[test]
fn the_next_run_removes_a_killed_runs_scratch_directory() {
    let rig = Rig::start(RigOptions::default());
    rig.write_inventory(&commands(vec![("preview", vec![rig.drop_argv()])]));
    let (out, _) = deploy(&rig);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        rig.leftovers().iter().any(|l| l.starts_with("tmp_dir/")),
        "the killed run left its scratch directory: {:?}",
        rig.leftovers()
    );
    rig.write_inventory(&InventorySpec::default());
    let out = rig.certctl(&["deploy", "--break-lock", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(rig.leftovers(), Vec::<String>::new());
}

#[test]
fn a_failed_stat_in_inspect_stops_the_deploy() {
    let rig = Rig::start(RigOptions::default());
    // Inspect's `stat` prints nothing: no file has its mode and owner. (The lock's trust check
    // of the backup directory stats directories, not the live files.)
    rig.arm_tool("stat", Some("fullchain.pem"), Action::Fail, false);
    let (out, target) = deploy(&rig);
    assert_eq!(target["status"], "failed", "{}", out.stderr);
    assert_eq!(out.code, 1);
    let error = target["error"].as_str().unwrap();
    let about = format!(
        "inspect failed: `stat` of {}",
        rig.nginx.cert_path().display()
    );
    assert!(error.starts_with(&about), "{error}");
    assert_eq!(rig.live_set(), LiveSet::Old);
    assert_eq!(rig.served(), Served::Old);
    assert_eq!(rig.leftovers(), Vec::<String>::new());
}

#[test]
fn a_lock_step_that_loses_the_connection_releases_the_lock_it_took() {
    let rig = Rig::start(RigOptions::default());
    // The lock script removes a killed run's temp file once the lock is taken: its `rm`
    // drops the connection.
    let cert = rig.nginx.cert_path();
    let name = cert.file_name().unwrap().to_str().unwrap();
    let stale = cert.with_file_name(format!(".{name}.certctl-1700000000-0123456789ab.tmp"));
    std::fs::write(&stale, "left by a killed run").unwrap();
    rig.arm_tool("rm", Some(".certctl-1700000000-"), Action::Drop, false);
    let (out, target) = deploy(&rig);
    assert_eq!(target["status"], "failed", "{}", out.stderr);
    assert_eq!(out.code, 1);
    let error = target["error"].as_str().unwrap();
    // The lock and inspect scripts are one remote command: a lost connection names both.
    assert!(error.starts_with("lock and inspect failed: "), "{error}");
    assert!(
        error.ends_with("nothing live was changed; the lock this run had taken was released"),
        "{error}"
    );
    // Only the killed run's file the dropped `rm` did not get to: no lock, no scratch dir.
    assert_eq!(rig.leftovers(), vec![format!(".{name}.certctl-<run>.tmp")]);
    assert_eq!(rig.live_set(), LiveSet::Old);
    // No --break-lock needed.
    let (out, target) = deploy(&rig);
    assert_eq!(target["status"], "deployed", "{}", out.stderr);
    assert_eq!(rig.served(), Served::New);
    assert_eq!(rig.leftovers(), Vec::<String>::new());
}

#[test]
fn the_lock_step_keeps_scratch_directories_it_cannot_prove_stale() {
    let rig = Rig::start(RigOptions::default());
    let tmp = rig.tmp_dir();
    // Another target's scratch directory (tagged with its lock), and an untagged one.
    let other = tmp.join("certctl-1700000000-0123456789abcdef-3");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join(".certctl-lock"), "/var/lib/other/.lock\n").unwrap();
    let untagged = tmp.join("certctl-1700000000-fedcba9876543210-0");
    std::fs::create_dir(&untagged).unwrap();
    let (out, target) = deploy(&rig);
    assert_eq!(target["status"], "deployed", "{}", out.stderr);
    assert!(other.join(".certctl-lock").exists());
    assert!(untagged.exists());
}
