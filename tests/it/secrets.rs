//! Secrets hygiene seen from the outside, during a real deploy at `-vvv` (sshd at LogLevel
//! VERBOSE): the private key's PEM body appears in no process's command line, in no remote
//! process's environment, in no command the target ran (every one is logged by a
//! `ForceCommand` wrapper), not in the sshd log and not in certctl's stdout, stderr or JSON;
//! and no file holding the new key or the old one (staged, backed up, live) is ever readable by
//! group or others while a poller watches the target's directories. With `key_env`, the variable (name and value) never reaches the
//! remote side.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::faults::{InventorySpec, Rig, RigOptions, Served, descendants, nginx_preview, sh};

/// Byte strings that identify the private key: its random base64 lines (as in the PEM, as the
/// engine re-encodes it), a shorter piece of one, and the private scalar in hex and as a
/// Rust byte-list.
fn needles(key_pem: &str) -> Vec<String> {
    let lines: Vec<&str> = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    // PKCS#8 P-256: line 1 starts with a fixed header; line 2 is all key material.
    assert!(lines.len() >= 3, "a PKCS#8 EC key PEM: {key_pem}");
    let mut out = vec![lines[1].to_string(), lines[1][20..44].to_string()];
    let der = base64_decode(&lines.concat());
    let at = der
        .windows(5)
        .position(|w| w == [0x02, 0x01, 0x01, 0x04, 0x20])
        .expect("ECPrivateKey version 1 and a 32-byte scalar");
    let scalar = &der[at + 5..at + 37];
    out.push(scalar.iter().map(|b| format!("{b:02x}")).collect());
    out.push(scalar.iter().map(|b| format!("{b:02X}")).collect());
    out.push(
        scalar[..8]
            .iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    );
    out
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

fn find_any<'a>(haystack: &[u8], needles: &'a [String]) -> Option<&'a str> {
    needles
        .iter()
        .find(|n| haystack.windows(n.len()).any(|w| w == n.as_bytes()))
        .map(String::as_str)
}

/// What the poller saw.
#[derive(Default)]
struct Seen {
    samples: usize,
    /// Processes whose command line held a needle: `pid comm: needle`.
    cmdline_hits: Vec<String>,
    /// Remote processes (below sshd) whose environment held a needle.
    environ_hits: Vec<String>,
    /// Files holding the key: kind → modes observed.
    key_files: BTreeMap<String, BTreeSet<u32>>,
    /// Files holding the key that group or others could read.
    exposed: Vec<String>,
}

/// Polls processes and the target's directories until stopped. When it first sees the staged
/// key, it creates `release` (the preview waits for it, so the staged file is always seen).
struct Poller {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Poller {
    fn start(
        needles: Vec<String>,
        env_needles: Vec<String>,
        sshd: u32,
        dirs: Vec<(&'static str, PathBuf)>,
        release: PathBuf,
    ) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let thread = {
            let (stop, seen) = (stop.clone(), seen.clone());
            let me = std::process::id();
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let mut s = seen.lock().unwrap();
                    s.samples += 1;
                    let remote: BTreeSet<u32> = descendants(sshd).into_iter().collect();
                    for pid in all_pids() {
                        if pid == me {
                            continue;
                        }
                        let comm =
                            fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                        if let Some(n) = find_any(&cmdline, &needles) {
                            s.cmdline_hits.push(format!("{pid} {}: {n}", comm.trim()));
                        }
                        if remote.contains(&pid) {
                            let environ =
                                fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
                            if let Some(n) = find_any(&environ, &env_needles) {
                                s.environ_hits.push(format!("{pid} {}: {n}", comm.trim()));
                            }
                        }
                    }
                    for (kind, dir) in &dirs {
                        for file in walk(dir) {
                            let Ok(meta) = fs::metadata(&file) else {
                                continue;
                            };
                            let Ok(content) = fs::read(&file) else {
                                continue;
                            };
                            if find_any(&content, &needles).is_none() {
                                continue;
                            }
                            let name = file.file_name().unwrap().to_string_lossy().into_owned();
                            let kind = if name.contains(".certctl-") {
                                format!("{kind} (staged)")
                            } else {
                                kind.to_string()
                            };
                            let mode = meta.permissions().mode() & 0o7777;
                            if mode & 0o077 != 0 {
                                s.exposed.push(format!("{} {mode:04o}", file.display()));
                            }
                            if kind.ends_with("(staged)") && !release.exists() {
                                fs::write(&release, b"").unwrap();
                            }
                            s.key_files.entry(kind).or_default().insert(mode);
                        }
                    }
                    drop(s);
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        };
        Poller {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Seen {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

fn all_pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Regular files below `dir`, recursively.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    out
}

/// Deploys at `-vvv` with JSON output while the poller watches; checks everything after.
fn deploy_and_watch(
    rig: &Rig,
    mut spec: InventorySpec,
    env: &[(&str, &str)],
    env_needles: &[String],
) {
    // The new key, and the old one (the backup holds it; it must stay as private).
    let mut needles = needles(&fs::read_to_string(&rig.new.leaf.key).unwrap());
    needles.extend(self::needles(
        &fs::read_to_string(&rig.old.leaf.key).unwrap(),
    ));
    let release = rig.dir().join("release");
    // The preview holds the run (at most 20 s) until the poller has seen the staged key.
    let wait = sh(&format!(
        "i=0; while [ ! -e '{r}' ] && [ $i -lt 1000 ]; do sleep 0.02; i=$((i+1)); done; [ -e '{r}' ] || {{ echo 'the poller never saw the staged key' >&2; exit 1; }}",
        r = release.display()
    ));
    let mut preview = nginx_preview();
    preview.push(wait);
    spec.commands.push(("preview", preview));
    rig.write_inventory(&spec);

    let mut all_env_needles = needles.clone();
    all_env_needles.extend(env_needles.iter().cloned());
    let poller = Poller::start(
        needles.clone(),
        all_env_needles.clone(),
        rig.sshd.pid(),
        vec![
            ("live directory", rig.cert_dir()),
            ("scratch", rig.tmp_dir()),
            ("backup", rig.backup_dir()),
        ],
        release,
    );
    let out = rig.certctl_env(&["deploy", "-vvv", "--output", "json"], env);
    let seen = poller.finish();

    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["targets"][0]["status"], "deployed");
    assert_eq!(rig.served(), Served::New);
    assert!(
        out.stderr.contains("TRACE") || out.stderr.contains("DEBUG"),
        "-vvv is verbose: {}",
        out.stderr
    );

    for (what, text) in [
        ("certctl's stdout (JSON)", out.stdout.as_bytes()),
        ("certctl's stderr at -vvv", out.stderr.as_bytes()),
        ("the sshd log", rig.sshd.log().as_bytes()),
    ] {
        assert_eq!(
            find_any(text, &all_env_needles),
            None,
            "the key is in {what}"
        );
    }
    let commands = rig.command_log();
    assert!(
        commands.contains("certctl_files") && commands.contains("nginx"),
        "the wrapper logged the target's commands: {commands}"
    );
    assert_eq!(
        find_any(commands.as_bytes(), &all_env_needles),
        None,
        "a remote command line or environment holds the key:\n{commands}"
    );
    assert!(seen.samples > 1, "the poller ran");
    assert!(seen.cmdline_hits.is_empty(), "{:?}", seen.cmdline_hits);
    assert!(seen.environ_hits.is_empty(), "{:?}", seen.environ_hits);
    assert!(
        seen.exposed.is_empty(),
        "files holding the key readable by group/others: {:?}",
        seen.exposed
    );
    // The poller did see the keys where they live: staged beside the live file, the old one
    // backed up, the live one.
    for kind in ["live directory (staged)", "backup", "live directory"] {
        assert!(
            seen.key_files.contains_key(kind),
            "the key was seen as {kind}: {:?}",
            seen.key_files
        );
    }
    for (kind, modes) in &seen.key_files {
        assert!(
            modes.iter().all(|m| m & 0o077 == 0),
            "{kind}: modes seen {modes:?}"
        );
    }
}

#[test]
fn the_private_key_stays_out_of_processes_logs_reports_and_readable_files() {
    let rig = Rig::start(RigOptions {
        log_commands: true,
        ..RigOptions::default()
    });
    deploy_and_watch(&rig, InventorySpec::default(), &[], &[]);
}

#[test]
fn a_key_from_key_env_never_reaches_the_remote_side() {
    let rig = Rig::start(RigOptions {
        log_commands: true,
        ..RigOptions::default()
    });
    let var = "CERTCTL_SECRETS_TEST_KEY";
    let key_pem = fs::read_to_string(&rig.new.leaf.key).unwrap();
    deploy_and_watch(
        &rig,
        InventorySpec {
            key_env: Some(var.into()),
            ..InventorySpec::default()
        },
        &[(var, key_pem.as_str())],
        // Neither the value nor the variable's name reaches the remote environment.
        &[var.to_string()],
    );
    // Checked against a log that really holds the remote environment.
    assert!(rig.command_log().contains("SSH_CONNECTION="));
}
