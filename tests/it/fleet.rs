//! Fleet runs against many real targets on loopback: one real sshd, twenty targets each with its
//! own directory (the generic `ssh` connector), and one real nginx that already serves the new
//! certificate, so every target's probe can pass and only the injected failures fail.

use crate::support;

use std::fs;
use std::path::{Path, PathBuf};

use support::nginx::Nginx;
use support::pki::Pki;
use support::sshd::Sshd;

const SNI: &str = "fleet.test.example";

struct Fleet {
    dir: tempfile::TempDir,
    sshd: Sshd,
    _nginx: Nginx,
    inventory: PathBuf,
}

impl Fleet {
    /// `count` targets `t01`…; targets named in `failing` get a live test that always fails.
    fn start(count: usize, failing: &[&str]) -> Fleet {
        let dir = tempfile::Builder::new()
            .prefix("certctl-fleet-")
            .tempdir()
            .unwrap();
        fs::create_dir_all(dir.path().join("pki")).unwrap();
        let pki = Pki::new(&dir.path().join("pki"));
        let leaf = pki.leaf("www", &[SNI]);
        let nginx = Nginx::start(SNI, &leaf.fullchain, &leaf.key);
        let sshd = Sshd::start();
        let j = |s: &str| serde_json::to_string(s).unwrap();
        let mut yaml = format!(
            "defaults:\n  user: {}\n  port: {}\n  identity_file: {}\n  known_hosts: {}\n  connector: ssh\n  certificate: www\n  \
             verify: {{ address: {}, sni: {SNI}, attempts: 3, backoff: 100ms, max_backoff: 200ms, shared: true }}\n\
             certificates:\n  www: {{ cert: {}, chain: {}, key: {} }}\ngroups:\n  canary: {{}}\ntargets:\n",
            j(&sshd.user),
            sshd.port(),
            j(&sshd.client_key.display().to_string()),
            j(&sshd.known_hosts.display().to_string()),
            j(&nginx.addr.to_string()),
            j(&leaf.cert.display().to_string()),
            j(&leaf.chain.display().to_string()),
            j(&leaf.key.display().to_string()),
        );
        for i in 1..=count {
            let name = format!("t{i:02}");
            let tdir = dir.path().join(&name);
            fs::create_dir_all(&tdir).unwrap();
            yaml.push_str(&format!(
                "  - name: {name}\n    host: {host}\n    params: {{ fullchain_path: {fc}, key_path: {key}, backup_dir: {bk}, tmp_dir: {tmp} }}\n",
                host = j(&sshd.host()),
                fc = j(&tdir.join("fullchain.pem").display().to_string()),
                key = j(&tdir.join("key.pem").display().to_string()),
                bk = j(&tdir.join("backups").display().to_string()),
                tmp = j(&tdir.display().to_string()),
            ));
            if failing.contains(&name.as_str()) {
                yaml.push_str(
                    "    commands: { test: [sh, -c, 'echo injected failure >&2; exit 1'] }\n",
                );
            }
        }
        let inventory = dir.path().join("certctl.yaml");
        fs::write(&inventory, yaml).unwrap();
        Fleet {
            dir,
            sshd,
            _nginx: nginx,
            inventory,
        }
    }

    fn certctl(&self, args: &[&str]) -> (i32, serde_json::Value, String) {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_certctl"))
            .arg(args[0])
            .arg("-i")
            .arg(&self.inventory)
            .args(&args[1..])
            .args(["--output", "json"])
            .env_remove("SSH_AUTH_SOCK")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let json: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
        certctl::report::validate_report(&json).unwrap_or_else(|e| panic!("schema: {e}"));
        (out.status.code().unwrap(), json, stderr)
    }

    fn target_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn touched(&self, name: &str) -> bool {
        self.target_dir(name).join("fullchain.pem").exists()
            || self.target_dir(name).join("backups").exists()
    }
}

fn statuses(report: &serde_json::Value) -> Vec<(String, String)> {
    report["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn count(report: &serde_json::Value, status: &str) -> usize {
    statuses(report).iter().filter(|(_, s)| s == status).count()
}

#[test]
fn canary_failure_stops_the_rollout_and_skips_the_rest() {
    let fleet = Fleet::start(20, &["t01"]);
    let (code, report, stderr) = fleet.certctl(&["deploy", "--serial", "1,50%"]);
    assert_eq!(code, 1, "{stderr}");
    let st = statuses(&report);
    assert_eq!(
        st[0],
        ("t01".to_string(), "rolled-back".to_string()),
        "{stderr}"
    );
    assert_eq!(count(&report, "skipped"), 19, "{st:?}");
    for (name, _) in &st[1..] {
        assert!(!fleet.touched(name), "{name} must not be touched");
    }
    let skipped = &report["targets"][1];
    assert!(
        skipped["error"].as_str().unwrap().contains("--max-fail"),
        "{skipped}"
    );
}

#[test]
fn failure_in_second_batch_within_budget_continues_then_stops() {
    // Batches [1, 10, 9]. Two failures in batch 2 exceed --max-fail 1: batch 3 is skipped.
    let fleet = Fleet::start(20, &["t03", "t04"]);
    let (code, report, stderr) = fleet.certctl(&["deploy", "--serial", "1,50%", "--max-fail", "1"]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(count(&report, "deployed"), 9, "{:?}", statuses(&report));
    assert_eq!(count(&report, "rolled-back"), 2);
    assert_eq!(count(&report, "skipped"), 9);
    for (name, status) in statuses(&report) {
        assert_eq!(fleet.touched(&name), status != "skipped", "{name} {status}");
    }

    // One failure in the second batch is within --max-fail 1: every batch runs.
    let fleet = Fleet::start(20, &["t05"]);
    let (code, report, _) = fleet.certctl(&["deploy", "--serial", "1,50%", "--max-fail", "1"]);
    assert_eq!(code, 1);
    assert_eq!(count(&report, "deployed"), 19);
    assert_eq!(count(&report, "rolled-back"), 1);
    assert_eq!(count(&report, "skipped"), 0);
}

#[test]
fn shards_cover_every_target_exactly_once() {
    let fleet = Fleet::start(12, &[]);
    let mut seen: Vec<String> = Vec::new();
    for shard in ["1/3", "2/3", "3/3"] {
        let (code, report, stderr) = fleet.certctl(&["deploy", "--dry-run", "--shard", shard]);
        assert_eq!(code, 0, "{stderr}");
        seen.extend(statuses(&report).into_iter().map(|(n, _)| n));
    }
    seen.sort();
    let all: Vec<String> = (1..=12).map(|i| format!("t{i:02}")).collect();
    assert_eq!(seen, all);
}

#[test]
fn limit_that_matches_nothing_is_an_error_and_touches_nothing() {
    let fleet = Fleet::start(3, &[]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_certctl"))
        .args(["deploy", "-i"])
        .arg(&fleet.inventory)
        .args(["--limit", "t0*,web-*"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("web-*"));
    assert!(!fleet.touched("t01"));
    assert_eq!(fleet.sshd.log().matches("Accepted publickey").count(), 0);
}

/// `--forks` beyond what the open-file limit allows: certctl raises its soft limit to the hard
/// one, and when even that is too low it runs fewer targets at once (and says so) instead of
/// failing targets with "Too many open files".
#[test]
fn forks_are_bounded_by_the_open_file_limit_after_raising_it() {
    let prlimit = support::require("prlimit");
    let fleet = Fleet::start(12, &[]);
    let run = |nofile: &str| {
        let out = std::process::Command::new(&prlimit)
            .arg(format!("--nofile={nofile}"))
            .arg(env!("CARGO_BIN_EXE_certctl"))
            .args([
                "deploy",
                "--dry-run",
                "--forks",
                "100",
                "--output",
                "json",
                "-i",
            ])
            .arg(&fleet.inventory)
            .env_remove("SSH_AUTH_SOCK")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let json: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
        (out.status.code(), json, stderr)
    };
    // Soft 100, hard 300: raised to 300, which allows (300 - 64) / 4 = 59 in flight.
    // Soft = hard = 80: nothing to raise; 4 in flight, every target still runs.
    for (limits, forks, limit) in [("100:300", 59, 300), ("80:80", 4, 80)] {
        let (code, report, stderr) = run(limits);
        assert_eq!(code, Some(0), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "--forks 100 lowered to {forks}: the open-file limit is {limit}"
            )),
            "{stderr}"
        );
        assert_eq!(count(&report, "would-change"), 12, "{stderr}");
    }
}

#[test]
fn a_failing_target_never_affects_the_others() {
    let fleet = Fleet::start(6, &["t02", "t05"]);
    let (code, report, stderr) = fleet.certctl(&["deploy", "--forks", "3"]);
    assert_eq!(code, 1, "{stderr}");
    for (name, status) in statuses(&report) {
        let expected = if name == "t02" || name == "t05" {
            "rolled-back"
        } else {
            "deployed"
        };
        assert_eq!(status, expected, "{name}: {report}");
        let deployed = fs::read(fleet.target_dir(&name).join("fullchain.pem")).ok();
        assert_eq!(
            deployed.is_some(),
            expected == "deployed",
            "{name}: a rolled-back new file is removed"
        );
    }
    assert!(Path::new(&fleet.target_dir("t01")).join("key.pem").exists());
}

/// A deploy with `--forks 1` whose first target waits in its preview until the gate file is
/// removed; stderr is collected line by line while it runs.
struct Held {
    child: std::process::Child,
    gate: PathBuf,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    reader: std::thread::JoinHandle<()>,
}

impl Held {
    fn start(fleet: &Fleet) -> Held {
        let gate = fleet.dir.path().join("gate");
        fs::write(&gate, "").unwrap();
        let inventory = fs::read_to_string(&fleet.inventory).unwrap();
        let marker = "  - name: t02\n";
        let reached = fleet.dir.path().join("reached");
        let hold = format!(
            "    commands: {{ preview: [sh, -c, ': > \"$1\"; while [ -e \"$0\" ]; do sleep 0.05; done', {}, {}] }}\n",
            serde_json::to_string(&gate.display().to_string()).unwrap(),
            serde_json::to_string(&reached.display().to_string()).unwrap()
        );
        fs::write(
            &fleet.inventory,
            inventory.replacen(marker, &format!("{hold}{marker}"), 1),
        )
        .unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_certctl"))
            .args(["deploy", "--forks", "1", "--output", "json", "-i"])
            .arg(&fleet.inventory)
            .env_remove("SSH_AUTH_SOCK")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pipe = child.stderr.take().unwrap();
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let reader = {
            let stderr = stderr.clone();
            std::thread::spawn(move || {
                use std::io::BufRead as _;
                for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut s = stderr.lock().unwrap();
                    s.push_str(&line);
                    s.push('\n');
                }
            })
        };
        // t01 is inside its preview (held by the gate) once the held command has started.
        wait_for(|| reached.exists(), "t01 reaches its preview");
        Held {
            child,
            gate,
            stderr,
            reader,
        }
    }

    fn interrupt(&self, expect: &str) {
        let status = std::process::Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        wait_for(|| self.stderr.lock().unwrap().contains(expect), expect);
    }

    fn finish(self) -> (Option<i32>, Vec<u8>, String) {
        let _ = fs::remove_file(&self.gate);
        let out = self.child.wait_with_output().unwrap();
        self.reader.join().unwrap();
        let stderr = self.stderr.lock().unwrap().clone();
        (out.status.code(), out.stdout, stderr)
    }
}

/// Polls a condition (bounded); never a fixed sleep.
fn wait_for(mut cond: impl FnMut() -> bool, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn first_interrupt_lets_the_running_target_finish_and_starts_no_other() {
    let fleet = Fleet::start(3, &[]);
    let held = Held::start(&fleet);
    held.interrupt("interrupt: starting no new targets");
    let (code, stdout, stderr) = held.finish();
    assert_eq!(code, Some(130), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
    let st = statuses(&report);
    assert_eq!(st[0].1, "deployed", "the running target finished: {st:?}");
    assert_eq!(st[1].1, "skipped");
    assert_eq!(st[2].1, "skipped");
    assert!(!fleet.touched("t02") && !fleet.touched("t03"));
}

#[test]
fn second_interrupt_aborts_and_names_the_targets_between_states() {
    let fleet = Fleet::start(3, &[]);
    let held = Held::start(&fleet);
    held.interrupt("interrupt: starting no new targets");
    held.interrupt("interrupt: aborting");
    let (code, _, stderr) = held.finish();
    assert_eq!(code, Some(130), "{stderr}");
    assert!(
        // Stage, preview and backup are one remote script; the step in flight is its first.
        stderr.contains("t01: interrupted during stage"),
        "{stderr}"
    );
    assert!(!stderr.contains("  t02: interrupted during"), "{stderr}");
    assert!(!fleet.touched("t02"));
}
