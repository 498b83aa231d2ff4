//! Fault injection for the reliability tests: a one-target rig (real sshd, real nginx, test PKI,
//! an inventory) whose target can be made to fail the way real systems fail, at a chosen step.
//!
//! - **Shims.** The rig's sshd puts a directory of ours first on the remote `PATH` (sshd's
//!   `SetEnv`), so the plain tools certctl's remote scripts call (`sha256sum`, `cp`, `rm`, …) can
//!   be replaced, one at a time, by a script that fails, or that drops the SSH connection by
//!   killing the sshd processes serving the session — exactly when that tool is called.
//! - **SFTP.** The sftp subsystem is a wrapper of ours around OpenSSH's `sftp-server`.
//! - **Disk full**: a 64 KiB tmpfs mounted over a directory and filled; **read-only**:
//!   `chattr +i`, or a read-only bind mount where the filesystem has no immutable flag.
//! - **A TCP proxy** that runs a hook when its N-th connection arrives, so a test acts exactly
//!   when certctl's verify probe starts.
//!
//! Everything is undone when the [`Rig`] drops (thaw, unmount, stop a server certctl started),
//! before the daemons stop and the directories are removed.

use std::fs;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use certctl::ssh::quote::quote;

use super::lab::{Output, run_certctl};
use super::nginx::Nginx;
use super::pki::{Leaf, Pki};
use super::require;
use super::sshd::Sshd;

pub const SNI: &str = "www.test.example";

/// One certificate pair of the rig: what nginx would load.
pub struct Pair {
    pub leaf: Leaf,
    pub fingerprint: String,
    pub fullchain: Vec<u8>,
    pub key: Vec<u8>,
}

impl Pair {
    fn new(leaf: Leaf) -> Pair {
        Pair {
            fingerprint: super::pki::openssl_fingerprint(&leaf.cert),
            fullchain: fs::read(&leaf.fullchain).unwrap(),
            key: fs::read(&leaf.key).unwrap(),
            leaf,
        }
    }
}

/// Which directories live on a small tmpfs (so they can be filled: disk full).
#[derive(Debug, Clone, Copy, Default)]
pub struct RigOptions {
    /// nginx's certificate directory (the live files and the staged ones beside them).
    pub cert_dir_tmpfs: bool,
    /// The backup directory (and the target's lock, which lives in it).
    pub backup_tmpfs: bool,
    /// `tmp_dir`, where the scratch directory (preview templates) is made.
    pub scratch_tmpfs: bool,
    /// Every command the target runs goes through a `ForceCommand` wrapper that appends it,
    /// and the session's environment, to [`Rig::command_log`] before running it.
    pub log_commands: bool,
}

/// The inventory's knobs a test turns.
#[derive(Debug, Clone, Default)]
pub struct InventorySpec {
    /// Per-target command overrides (`preview`, `test`, `reload`, `alive`, `start`).
    pub commands: Vec<(&'static str, Vec<Vec<String>>)>,
    /// `verify.address`; default nginx's address.
    pub verify_address: Option<String>,
    /// The `verify:` flow mapping in `defaults`; default quick probes, `consecutive: 2`.
    pub verify: Option<String>,
    /// Read the key from this environment variable (`key_env`) instead of the key file.
    pub key_env: Option<String>,
    /// Target params (name, value), replacing the rig's own of the same name.
    pub params: Vec<(String, String)>,
    /// Point the target at this address instead of the rig's sshd (a fake server).
    pub ssh_address: Option<SocketAddr>,
}

/// What is served, as `openssl s_client` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Served {
    Old,
    New,
    Nothing,
    Other(String),
}

impl std::fmt::Display for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Served::Old => f.write_str("old"),
            Served::New => f.write_str("new"),
            Served::Nothing => f.write_str("nothing"),
            Served::Other(fp) => write!(f, "other ({fp})"),
        }
    }
}

/// What the live files on disk are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveSet {
    Old,
    New,
    /// Not one complete pair: says which file is what.
    Mixed(String),
}

impl std::fmt::Display for LiveSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LiveSet::Old => f.write_str("old pair"),
            LiveSet::New => f.write_str("new pair"),
            LiveSet::Mixed(what) => write!(f, "MIXED: {what}"),
        }
    }
}

/// What a shimmed tool does when its pattern matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Prints `injected fault: TOOL failed` on stderr and exits 1.
    Fail,
    /// Kills the processes above it up to the sshd listener: the connection drops.
    Drop,
}

/// A tool paused at its N-th matching call ([`Rig::arm_pause`]), for a test to act at that
/// exact instant (kill the controller), then let it go on.
pub struct Pause {
    paused: PathBuf,
    release: PathBuf,
    what: String,
}

impl Pause {
    /// Waits (up to `timeout`) until the tool reached its pause; false if it never did.
    pub fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.paused.exists() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// Lets the paused tool go on (it runs the real tool).
    pub fn release(&self) {
        fs::write(&self.release, "").unwrap();
    }

    pub fn what(&self) -> &str {
        &self.what
    }
}

pub struct Rig {
    pub old: Pair,
    pub new: Pair,
    pub pki: Pki,
    pub nginx: Nginx,
    pub sshd: Sshd,
    pub inventory: PathBuf,
    shim: PathBuf,
    /// Paths a fault may freeze, thawed on disarm and drop.
    frozen: Mutex<Vec<PathBuf>>,
    /// tmpfs mounts, unmounted on drop.
    mounts: Vec<PathBuf>,
    dir: tempfile::TempDir,
}

impl Rig {
    pub fn start(options: RigOptions) -> Rig {
        let dir = tempfile::Builder::new()
            .prefix("certctl-rig-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let pki_dir = d.join("pki");
        fs::create_dir_all(&pki_dir).unwrap();
        let pki = Pki::new(&pki_dir);
        let old = Pair::new(pki.leaf("old", &[SNI]));
        let new = Pair::new(pki.leaf("new", &[SNI]));
        let nginx = Nginx::start(SNI, &old.leaf.fullchain, &old.leaf.key);
        assert!(nginx.wait_until_served(Some(SNI), &old.fingerprint, Duration::from_secs(20)));

        let shim = d.join("shim");
        for sub in ["shim", "tmp", "backups"] {
            fs::create_dir_all(d.join(sub)).unwrap();
        }
        fs::set_permissions(d.join("backups"), fs::Permissions::from_mode(0o700)).unwrap();
        let path = format!(
            "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            shim.display()
        );
        // SHLVL=1: bash then skips ~/.bashrc (it sources it for sshd sessions at level 1 only),
        // so the remote side is a plain shell whatever the test machine's root profile does.
        let mut config = vec![
            format!("SetEnv PATH={path} SHLVL=1"),
            format!("Subsystem sftp {}/sftp-subsystem", shim.display()),
        ];
        if options.log_commands {
            let wrapper = shim.join("force-command");
            let sftp = shim.join("sftp-subsystem").display().to_string();
            let log = quote(&d.join("commands.log").display().to_string());
            let script = [
                "#!/bin/sh".to_string(),
                "# Logs each command and its environment, then runs it as sshd would have."
                    .to_string(),
                format!(
                    "[ \"${{SSH_ORIGINAL_COMMAND-}}\" = {sftp} ] && exec {sftp}",
                    sftp = quote(&sftp)
                ),
                format!(
                    "{{ printf '%s\\n--- env:\\n' \"$SSH_ORIGINAL_COMMAND\"; env; printf -- '--- end\\n'; }} >> {log}"
                ),
                "exec /bin/bash -c \"$SSH_ORIGINAL_COMMAND\"".to_string(),
            ];
            write_executable(&wrapper, &(script.join("\n") + "\n"));
            config.push(format!("ForceCommand {}", wrapper.display()));
        }
        let config: Vec<&str> = config.iter().map(String::as_str).collect();
        let sshd = Sshd::start_with(&config);

        let mut mounts = Vec::new();
        if options.cert_dir_tmpfs {
            let certs = nginx.cert_path().parent().unwrap().to_path_buf();
            mount_tmpfs_keeping(&certs, "0755");
            mounts.push(certs);
        }
        if options.backup_tmpfs {
            mount_tmpfs_keeping(&d.join("backups"), "0700");
            mounts.push(d.join("backups"));
        }
        if options.scratch_tmpfs {
            mount_tmpfs_keeping(&d.join("tmp"), "0755");
            mounts.push(d.join("tmp"));
        }
        let rig = Rig {
            inventory: d.join("certctl.yaml"),
            old,
            new,
            pki,
            nginx,
            sshd,
            shim,
            frozen: Mutex::new(Vec::new()),
            mounts,
            dir,
        };
        rig.write_shim_library();
        rig.write_sftp_subsystem();
        rig.write_inventory(&InventorySpec::default());
        rig
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What the `ForceCommand` wrapper logged ([`RigOptions::log_commands`]).
    pub fn command_log(&self) -> String {
        fs::read_to_string(self.dir().join("commands.log")).unwrap_or_default()
    }

    pub fn cert_dir(&self) -> PathBuf {
        self.nginx.cert_path().parent().unwrap().to_path_buf()
    }

    pub fn backup_dir(&self) -> PathBuf {
        self.dir().join("backups")
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.dir().join("tmp")
    }

    /// nginx's pid file (written by the master; removed when it exits).
    pub fn nginx_pid_file(&self) -> PathBuf {
        self.nginx.dir().join("nginx.pid")
    }

    /// Writes the inventory: one nginx target on the rig, with `spec`'s knobs.
    pub fn write_inventory(&self, spec: &InventorySpec) {
        let j = |s: &str| serde_json::to_string(s).unwrap();
        let p = |p: &Path| j(&p.display().to_string());
        let key_line = match &spec.key_env {
            Some(var) => format!("key_env: {}", j(var)),
            None => format!("key: {}", p(&self.new.leaf.key)),
        };
        let verify = spec.verify.clone().unwrap_or_else(|| {
            "{ attempts: 6, backoff: 100ms, max_backoff: 1s, timeout: 5s, consecutive: 2 }".into()
        });
        let mut yaml = format!(
            "defaults:\n  user: {user}\n  port: {port}\n  identity_file: {client_key}\n  known_hosts: {kh}\n  \
             verify: {verify}\n\
             certificates:\n  www:\n    cert: {cert}\n    chain: {chain}\n    {key_line}\n\
             targets:\n  - name: web-1\n    host: {host}\n    certificate: www\n    connector: nginx\n    params:\n",
            user = j(&self.sshd.user),
            port = spec.ssh_address.map_or(self.sshd.port(), |a| a.port()),
            client_key = p(&self.sshd.client_key),
            kh = p(&self.sshd.known_hosts),
            cert = p(&self.new.leaf.cert),
            chain = p(&self.new.leaf.chain),
            host = j(&spec
                .ssh_address
                .map_or(self.sshd.host(), |a| a.ip().to_string())),
        );
        let mut params = vec![
            (
                "fullchain_path".to_string(),
                self.nginx.cert_path().display().to_string(),
            ),
            (
                "key_path".to_string(),
                self.nginx.key_path().display().to_string(),
            ),
            (
                "nginx_conf".to_string(),
                self.nginx.conf_path().display().to_string(),
            ),
            (
                "backup_dir".to_string(),
                self.backup_dir().display().to_string(),
            ),
            ("tmp_dir".to_string(), self.tmp_dir().display().to_string()),
        ];
        for (k, v) in &spec.params {
            params.retain(|(name, _)| name != k);
            params.push((k.clone(), v.clone()));
        }
        for (k, v) in params {
            yaml.push_str(&format!("      {k}: {}\n", j(&v)));
        }
        if !spec.commands.is_empty() {
            yaml.push_str("    commands:\n");
            for (section, cmds) in &spec.commands {
                yaml.push_str(&format!(
                    "      {section}: {}\n",
                    serde_json::to_string(cmds).unwrap()
                ));
            }
        }
        let address = spec
            .verify_address
            .clone()
            .unwrap_or_else(|| self.nginx.addr.to_string());
        yaml.push_str(&format!(
            "    verify:\n      address: {}\n      sni: {}\n",
            j(&address),
            j(SNI)
        ));
        fs::write(&self.inventory, yaml).unwrap();
    }

    /// Runs `certctl SUBCOMMAND -i INVENTORY REST...` with `env` added (and HOME in the
    /// rig's directory).
    pub fn certctl_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let home = self.dir().display().to_string();
        let mut all = vec![("HOME", home.as_str())];
        all.extend_from_slice(env);
        run_certctl(&self.inventory, args, &all)
    }

    pub fn certctl(&self, args: &[&str]) -> Output {
        self.certctl_env(args, &[])
    }

    /// The leaf nginx serves, once stable (the same answer three times in a row).
    pub fn served(&self) -> Served {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = String::new();
        let mut streak = 0;
        loop {
            let now = self.nginx.served_fingerprint(Some(SNI)).unwrap_or_default();
            if now == last {
                streak += 1;
            } else {
                last = now;
                streak = 1;
            }
            if streak == 3 || Instant::now() > deadline {
                break;
            }
        }
        if last.is_empty() {
            Served::Nothing
        } else if last == self.old.fingerprint {
            Served::Old
        } else if last == self.new.fingerprint {
            Served::New
        } else {
            Served::Other(last)
        }
    }

    /// Whether the live files are one complete pair, and which.
    pub fn live_set(&self) -> LiveSet {
        let cert = fs::read(self.nginx.cert_path()).unwrap_or_default();
        let key = fs::read(self.nginx.key_path()).unwrap_or_default();
        let name = |bytes: &[u8], old: &[u8], new: &[u8]| {
            if bytes == old {
                "old"
            } else if bytes == new {
                "new"
            } else if bytes.is_empty() {
                "missing"
            } else {
                "other"
            }
        };
        let c = name(&cert, &self.old.fullchain, &self.new.fullchain);
        let k = name(&key, &self.old.key, &self.new.key);
        match (c, k) {
            ("old", "old") => LiveSet::Old,
            ("new", "new") => LiveSet::New,
            (c, k) => LiveSet::Mixed(format!("{c} certificate + {k} key")),
        }
    }

    /// What certctl left behind, run ids masked (`<run>`): `.certctl-` files beside the live
    /// ones, anything in `tmp_dir` (scratch directories), and the lock and an active journal in
    /// the backup directory.
    /// Sorted, so it reads the same on every run.
    pub fn leftovers(&self) -> Vec<String> {
        let mut out = Vec::new();
        for entry in fs::read_dir(self.cert_dir()).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if name.contains(".certctl-") {
                out.push(mask_run_id(&name));
            }
        }
        for entry in fs::read_dir(self.tmp_dir()).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if name != "filler" {
                out.push(format!("tmp_dir/{}", mask_run_id(&name)));
            }
        }
        if self.backup_dir().join(".lock").exists() {
            out.push("lock".into());
        }
        if self.backup_dir().join("journal").exists() {
            out.push("journal".into());
        }
        out.sort();
        out
    }

    /// SSH logins sshd has accepted so far.
    pub fn logins(&self) -> usize {
        self.sshd.log_count("Accepted publickey")
    }

    // -- faults ---------------------------------------------------------------------------

    /// Replaces `tool` on the remote PATH by a shim that does `action` once, the first time it
    /// is called with an argument containing `pattern` (any call when `None`). With
    /// `every_time`, it does it on every matching call instead.
    pub fn arm_tool(&self, tool: &str, pattern: Option<&str>, action: Action, every_time: bool) {
        let real = require(tool);
        let fired = self.shim.join(format!("fired-{tool}"));
        let matches = match pattern {
            None => "hit=1\n".to_string(),
            Some(p) => {
                assert!(
                    p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c)),
                    "shim patterns are plain text: {p}"
                );
                format!("hit=0\nfor a in \"$@\"; do case $a in *{p}*) hit=1;; esac; done\n")
            }
        };
        let once = if every_time {
            String::new()
        } else {
            format!(
                " && mkdir {} 2>/dev/null",
                quote(&fired.display().to_string())
            )
        };
        let act = match action {
            Action::Fail => format!(
                "printf 'injected fault: %s failed\\n' {} >&2\n  exit 1",
                quote(tool)
            ),
            Action::Drop => format!(
                ". {}\n  certctl_fault_drop\n  exit 1",
                quote(&self.shim.join("lib.sh").display().to_string())
            ),
        };
        let script = format!(
            "#!/bin/sh\n# certctl fault shim for {tool}\n{matches}if [ \"$hit\" = 1 ]{once}; then\n  {act}\nfi\nexec {real} \"$@\"\n",
            real = quote(&real.display().to_string()),
        );
        write_executable(&self.shim.join(tool), &script);
    }

    /// Replaces `tool` on the remote PATH by a shim that, at its `nth` call with an argument
    /// containing `pattern`, marks that it paused and waits (up to 60 s) to be released, then
    /// runs the real tool. Other calls run the real tool at once.
    pub fn arm_pause(&self, tool: &str, pattern: &str, nth: usize) -> Pause {
        assert!(
            pattern
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c)),
            "shim patterns are plain text: {pattern}"
        );
        let real = require(tool);
        let q = |p: &Path| quote(&p.display().to_string());
        let (count, paused, release) = (
            self.shim.join(format!("count-{tool}")),
            self.shim.join(format!("paused-{tool}")),
            self.shim.join(format!("release-{tool}")),
        );
        let _ = fs::remove_file(&paused);
        let _ = fs::remove_file(&release);
        let script = format!(
            "#!/bin/sh\n# certctl pause shim for {tool}\nhit=0\nfor a in \"$@\"; do case $a in *{pattern}*) hit=1;; esac; done\n\
             if [ \"$hit\" = 1 ]; then\n  n=$(cat {count} 2>/dev/null || echo 0); n=$((n + 1)); echo \"$n\" > {count}\n\
             \x20 if [ \"$n\" = {nth} ]; then\n    : > {paused}\n    i=0\n    while [ ! -e {release} ] && [ $i -lt 3000 ]; do sleep 0.02; i=$((i + 1)); done\n  fi\nfi\n\
             exec {real} \"$@\"\n",
            count = q(&count),
            paused = q(&paused),
            release = q(&release),
            real = q(&real),
        );
        let _ = fs::remove_file(&count);
        write_executable(&self.shim.join(tool), &script);
        Pause {
            paused,
            release,
            what: format!("{tool} (call {nth} naming {pattern})"),
        }
    }

    /// Starts `certctl SUBCOMMAND -i INVENTORY REST...` without waiting for it; its stdout and
    /// stderr go to files in the rig's directory (read by [`Rig::spawned_output`]).
    pub fn spawn_certctl(&self, args: &[&str]) -> std::process::Child {
        let out = fs::File::create(self.dir().join("spawned.stdout")).unwrap();
        let err = fs::File::create(self.dir().join("spawned.stderr")).unwrap();
        Command::new(env!("CARGO_BIN_EXE_certctl"))
            .arg(args[0])
            .arg("-i")
            .arg(&self.inventory)
            .args(&args[1..])
            .env_remove("SSH_AUTH_SOCK")
            .env("NO_COLOR", "1")
            .env("HOME", self.dir())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap()
    }

    /// What the last spawned certctl printed: (stdout, stderr).
    pub fn spawned_output(&self) -> (String, String) {
        let read = |n: &str| fs::read_to_string(self.dir().join(n)).unwrap_or_default();
        (read("spawned.stdout"), read("spawned.stderr"))
    }

    /// Waits (up to 60 s) until no process on this machine runs a script naming the rig's
    /// backup directory — every remote script certctl sends names it — so a script a killed
    /// controller left behind has finished. False if one is still running.
    pub fn wait_remote_idle(&self) -> bool {
        let pattern = self.backup_dir().display().to_string();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let running = Command::new("pgrep")
                .args(["-f", "--", &pattern])
                .output()
                .map(|o| !o.stdout.is_empty())
                .unwrap_or(false);
            if !running {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The target's active journal, if there is one.
    pub fn journal(&self) -> Option<String> {
        fs::read_to_string(self.backup_dir().join("journal")).ok()
    }

    /// The sftp subsystem: OpenSSH's `sftp-server`, through a wrapper of the rig's (so the
    /// `ForceCommand` logger can tell it apart). A deploy stages through its preview command's
    /// stdin; SFTP is left to reading backup copies (`certctl rollback`).
    fn write_sftp_subsystem(&self) {
        let server = "/usr/lib/openssh/sftp-server";
        assert!(
            Path::new(server).exists(),
            "{server} is missing (package openssh-sftp-server)"
        );
        write_executable(
            &self.shim.join("sftp-subsystem"),
            &format!("#!/bin/sh\nexec {server}\n"),
        );
    }

    /// argv that kills this session's sshd processes (the connection drops), for a command
    /// override. Braces are escaped for certctl's placeholder rendering.
    pub fn drop_argv(&self) -> Vec<String> {
        sh(&format!(
            ". {}; certctl_fault_drop; exit 1",
            quote(&self.shim.join("lib.sh").display().to_string())
        ))
    }

    /// argv that makes `path` read-only for root too (registered: thawed on disarm/drop).
    pub fn freeze_argv(&self, path: &Path) -> Vec<String> {
        self.frozen.lock().unwrap().push(path.to_path_buf());
        let p = quote(&path.display().to_string());
        if immutable_flag_works() {
            sh(&format!("chattr +i {p}"))
        } else {
            sh(&format!(
                "mount --bind {p} {p} && mount -o remount,bind,ro {p}"
            ))
        }
    }

    /// Makes `path` read-only now (see [`Rig::freeze_argv`]).
    pub fn freeze(&self, path: &Path) {
        let argv = self.freeze_argv(path);
        let script = argv[2].replace("{{", "{").replace("}}", "}");
        let ok = Command::new("sh")
            .args(["-c", &script])
            .status()
            .unwrap()
            .success();
        assert!(ok, "cannot freeze {}", path.display());
    }

    /// argv that fills the filesystem holding `dir` (a rig tmpfs) to the last byte.
    pub fn fill_argv(&self, dir: &Path) -> Vec<String> {
        let filler = quote(&dir.join("filler").display().to_string());
        sh(&format!(
            "dd if=/dev/zero of={filler} bs=4096 2>/dev/null; true"
        ))
    }

    /// Fills the tmpfs at `dir` now.
    pub fn fill(&self, dir: &Path) {
        let mut file = fs::File::create(dir.join("filler")).unwrap();
        let block = [0u8; 4096];
        while file.write_all(&block).is_ok() {}
    }

    /// argv that stops nginx (once: the first call only), waits until it is gone, then runs
    /// `then` (e.g. the real reload, which then fails: nothing to signal).
    pub fn kill_nginx_then_argv(&self, then: &str) -> Vec<String> {
        let mark = quote(&self.shim.join("fired-nginx-kill").display().to_string());
        let pid_file = quote(&self.nginx_pid_file().display().to_string());
        sh(&format!(
            "if mkdir {mark} 2>/dev/null; then kill -TERM {pid}; i=0; while [ -e {pid_file} ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done; fi; {then}",
            pid = self.nginx.master_pid(),
        ))
    }

    /// `alive` and `start` overrides that let certctl see nginx died and start it again.
    pub fn alive_and_start(&self) -> Vec<(&'static str, Vec<Vec<String>>)> {
        let pid_file = quote(&self.nginx_pid_file().display().to_string());
        let start = vec![
            "nginx".to_string(),
            "-e".into(),
            self.nginx
                .dir()
                .join("logs/error.log")
                .display()
                .to_string(),
            "-c".into(),
            self.nginx.conf_path().display().to_string(),
        ];
        vec![
            (
                "alive",
                vec![sh(&format!(
                    "[ -s {pid_file} ] && kill -0 \"$(cat {pid_file})\""
                ))],
            ),
            ("start", vec![start]),
        ]
    }

    /// Undoes every fault: shims removed, sftp plain again, frozen paths thawed, fillers
    /// removed. A server certctl started stays (it is the target's server now).
    pub fn disarm(&self) {
        for entry in fs::read_dir(&self.shim).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name != "lib.sh" && name != "sftp-subsystem" {
                let _ = fs::remove_file(&path).or_else(|_| fs::remove_dir(&path));
            }
        }
        self.write_sftp_subsystem();
        self.thaw();
        for dir in [self.cert_dir(), self.backup_dir(), self.tmp_dir()] {
            let _ = fs::remove_file(dir.join("filler"));
        }
    }

    fn thaw(&self) {
        let frozen = std::mem::take(&mut *self.frozen.lock().unwrap());
        for path in frozen.iter().rev() {
            let _ = Command::new("chattr")
                .arg("-i")
                .arg(path)
                .stderr(Stdio::null())
                .status();
            if !immutable_flag_works() {
                let _ = Command::new("umount")
                    .arg(path)
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }

    fn write_shim_library(&self) {
        let lib = format!(
            "# Kills every process above this one up to the sshd listener (the script that called\n\
             # us, the shell, the sshd session processes): the connection drops, and nothing of the\n\
             # remote script runs on after it (so the outcome does not race the shell's SIGPIPE).\n\
             # The whole chain is read first: a killed process may be reaped at once.\n\
             certctl_fault_drop() {{\n\
             \x20 p=$$ chain=\n\
             \x20 while :; do\n\
             \x20   p=$(sed 's/.*) //' \"/proc/$p/stat\" 2>/dev/null | cut -d' ' -f2)\n\
             \x20   case $p in ''|0|1|{listener}) break;; esac\n\
             \x20   chain=\"$chain $p\"\n\
             \x20 done\n\
             \x20 [ -n \"$chain\" ] && kill -9 $chain\n\
             }}\n",
            listener = self.sshd.pid()
        );
        fs::write(self.shim.join("lib.sh"), lib).unwrap();
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.thaw();
        // A server certctl started (the `start` command) is not the harness's child: stop it.
        if let Some(pid) = fs::read_to_string(self.nginx_pid_file())
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .filter(|pid| *pid != self.nginx.master_pid())
        {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while process_running(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        for mount in self.mounts.iter().rev() {
            unmount(mount);
        }
    }
}

/// `["sh", "-c", script]` with braces escaped for certctl's `{placeholder}` rendering.
pub fn sh(script: &str) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        script.replace('{', "{{").replace('}', "}}"),
    ]
}

/// The nginx connector's own preview commands, for overrides that add a fault after them.
pub fn nginx_preview() -> Vec<Vec<String>> {
    let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        v(&[
            "{nginx}",
            "-t",
            "-q",
            "-e",
            "{tmpdir}/error.log",
            "-c",
            "{template.preview.conf}",
        ]),
        v(&["{nginx}", "-t", "-q", "-c", "{nginx_conf}"]),
    ]
}

/// Whether `chattr +i` stops root on this machine's temp filesystem (checked once).
pub fn immutable_flag_works() -> bool {
    static WORKS: OnceLock<bool> = OnceLock::new();
    *WORKS.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("certctl-chattr-")
            .tempdir()
            .unwrap();
        let frozen = Command::new("chattr")
            .arg("+i")
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let works = frozen && fs::write(dir.path().join("probe"), b"x").is_err();
        let _ = Command::new("chattr")
            .arg("-i")
            .arg(dir.path())
            .stderr(Stdio::null())
            .status();
        works
    })
}

/// Mounts a 64 KiB tmpfs over `dir`, keeping the files that were in it (content and mode).
fn mount_tmpfs_keeping(dir: &Path, mode: &str) {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let perm = fs::metadata(&path).unwrap().permissions().mode();
            files.push((
                path.file_name().unwrap().to_owned(),
                fs::read(&path).unwrap(),
                perm,
            ));
        }
    }
    let ok = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size=64k,mode={mode}"),
            "tmpfs",
        ])
        .arg(dir)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mount a tmpfs on {} (root needed)", dir.display());
    for (name, content, perm) in files {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(perm & 0o7777)
            .open(dir.join(name))
            .unwrap();
        f.write_all(&content).unwrap();
    }
}

fn unmount(dir: &Path) {
    let _ = Command::new("chattr")
        .arg("-i")
        .arg(dir)
        .stderr(Stdio::null())
        .status();
    let plain = Command::new("umount")
        .arg(dir)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !plain {
        let _ = Command::new("umount").arg("-l").arg(dir).status();
    }
}

fn write_executable(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o755)
        .open(&tmp)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
    drop(f);
    fs::rename(&tmp, path).unwrap();
}

/// `text` with every run id (`1795744879-7856466bd773`: digits, a dash, hex) replaced by
/// `<run>`.
pub fn mask_run_id(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        let digits = bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
        if digits >= 6 && bytes.get(i + digits) == Some(&b'-') {
            let hex = bytes[i + digits + 1..]
                .iter()
                .take_while(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                .count();
            if hex >= 6 {
                out.push_str("<run>");
                i += digits + 1 + hex;
                continue;
            }
        }
        out.push(bytes[i] as char);
        i += 1;
    }
    out
}

/// Sends TERM to `pid` and waits (up to 20 s) until it has exited.
pub fn stop_process(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while process_running(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills (KILL) every sshd process below the `listener`: each session's connection drops.
pub fn kill_sshd_sessions(listener: u32) {
    for pid in descendants(listener) {
        if fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sshd") {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

/// Running and not a zombie.
pub fn process_running(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Every descendant of `pid` (children first, breadth-first).
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut queue = vec![pid];
    while let Some(p) = queue.pop() {
        let children =
            fs::read_to_string(format!("/proc/{p}/task/{p}/children")).unwrap_or_default();
        for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
            out.push(c);
            queue.push(c);
        }
    }
    out
}

/// A TCP proxy to `upstream` that calls a hook with each connection's number (1-based)
/// before it forwards that connection. Stopped (and every connection cut) on drop.
pub struct TcpProxy {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<JoinHandle<()>>,
}

impl TcpProxy {
    pub fn start(upstream: SocketAddr, hook: impl Fn(usize) + Send + 'static) -> TcpProxy {
        let listener = TcpListener::bind(super::free_addr()).unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = AtomicUsize::new(0);
        let stop = Arc::new(AtomicBool::new(false));
        let streams: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let thread = {
            let (stop, streams) = (stop.clone(), streams.clone());
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let n = accepted.fetch_add(1, Ordering::SeqCst) + 1;
                    hook(n);
                    let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(5))
                    else {
                        continue; // nothing upstream: the client sees the connection close
                    };
                    {
                        let mut all = streams.lock().unwrap();
                        all.push(client.try_clone().unwrap());
                        all.push(server.try_clone().unwrap());
                    }
                    pump(client.try_clone().unwrap(), server.try_clone().unwrap());
                    pump(server, client);
                }
            })
        };
        TcpProxy {
            addr,
            stop,
            streams,
            thread: Some(thread),
        }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for s in self.streams.lock().unwrap().iter() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}
