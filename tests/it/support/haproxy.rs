//! A real haproxy for tests, in master-worker mode: its own temp dir (config, bundle, PID file,
//! log), its own loopback address from [`free_addr`], one TLS frontend serving a bundle
//! (leaf + chain + key in one PEM). The master runs in the foreground (`-W -db`) as a child of
//! the test and writes its PID file; `kill -USR2` on that PID is a reload (the master re-execs
//! itself under the same PID and starts a new worker). Its CLI is open on two sockets in the
//! temp dir: a stats socket at `level admin` ([`Haproxy::stats_socket`]) and the master CLI
//! ([`Haproxy::master_socket`]), for the runtime API (`set ssl cert`). Dropping the handle stops
//! it by PID.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::tls_lab::copy_with_mode;
use super::{ChildGuard, free_addr, require};

/// A running haproxy.
pub struct Haproxy {
    pub addr: SocketAddr,
    // Declared before `dir` so the daemon dies before its directory is removed.
    child: ChildGuard,
    dir: tempfile::TempDir,
}

impl Haproxy {
    /// One frontend binding the lab address with `ssl crt DIR/certs/site.pem`, a copy of
    /// `bundle` (0600).
    pub fn start(bundle: &Path) -> Haproxy {
        Haproxy::start_bundles(&[bundle])
    }

    /// One frontend with one `crt` per bundle on its bind line (haproxy picks by SNI, the
    /// first is the default): `DIR/certs/site.pem`, then `DIR/certs/site-N.pem`
    /// ([`Haproxy::bundle_path`]).
    pub fn start_bundles(bundles: &[&Path]) -> Haproxy {
        let haproxy = require("haproxy");
        require("pkill"); // the tests' reload
        require("pgrep"); // the connector's `alive` check
        let dir = tempfile::Builder::new()
            .prefix("certctl-haproxy-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        std::fs::create_dir_all(d.join("certs")).unwrap();
        let mut crts = String::new();
        for (i, bundle) in bundles.iter().enumerate() {
            let live = bundle_path(d, i);
            copy_with_mode(bundle, &live, 0o600);
            crts.push_str(&format!(" crt {}", live.display()));
        }
        let addr = free_addr();
        let config = format!(
            "global\n  \
               master-worker\n  \
               pidfile {pid}\n  \
               stats socket {stats} mode 600 level admin\n  \
               log stderr format raw local0 notice\n\
             defaults\n  \
               mode http\n  \
               log global\n  \
               timeout connect 5s\n  \
               timeout client 60s\n  \
               timeout server 10s\n\
             frontend fe_tls\n  \
               bind {addr} ssl{crts}\n  \
               http-request return status 200 content-type text/plain string \"ok\"\n",
            pid = d.join("haproxy.pid").display(),
            stats = d.join("admin.sock").display(),
        );
        let cfg = d.join("haproxy.cfg");
        std::fs::write(&cfg, config).unwrap();
        let log = std::fs::File::create(d.join("haproxy.log")).unwrap();
        let child = Command::new(&haproxy)
            .args(["-W", "-db", "-f"])
            .arg(&cfg)
            .arg("-S")
            .arg(d.join("master.sock"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start haproxy");
        let mut haproxy = Haproxy {
            addr,
            child: ChildGuard(child),
            dir,
        };
        haproxy.wait_ready(Duration::from_secs(20));
        haproxy
    }

    /// Listening, and the PID file written (the reload needs it).
    fn wait_ready(&mut self, timeout: Duration) {
        let what = format!("haproxy on {}", self.addr);
        let ready = |h: &Haproxy| {
            super::listening(&h.addr)
                && h.pid_file_pid() == Some(h.master_pid())
                && h.stats_socket().exists()
        };
        super::wait_ready(
            self,
            &what,
            timeout,
            |h| &mut h.child.0,
            ready,
            Haproxy::log,
        );
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn cfg_path(&self) -> PathBuf {
        self.dir().join("haproxy.cfg")
    }

    pub fn pem_path(&self) -> PathBuf {
        bundle_path(self.dir(), 0)
    }

    /// Bundle `i`'s live file of [`Haproxy::start_bundles`].
    pub fn bundle_path(&self, i: usize) -> PathBuf {
        bundle_path(self.dir(), i)
    }

    pub fn pid_file(&self) -> PathBuf {
        self.dir().join("haproxy.pid")
    }

    /// The stats socket (`level admin`): the runtime API of the current worker.
    pub fn stats_socket(&self) -> PathBuf {
        self.dir().join("admin.sock")
    }

    /// The master CLI (`-S`): commands for a worker take a `@1` prefix.
    pub fn master_socket(&self) -> PathBuf {
        self.dir().join("master.sock")
    }

    /// Sends `input` to a CLI socket with socat (as the connector does) and returns the answer.
    pub fn cli(&self, socket: &Path, input: &str) -> String {
        let mut child = Command::new(require("socat"))
            .args(["-t", "10", "-"])
            .arg(format!("UNIX-CONNECT:{}", socket.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run socat");
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    fn pid_file_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The master's log (stderr): reload failures show up here as `[ALERT]` lines.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("haproxy.log")).unwrap_or_default()
    }

    pub fn master_pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Whether the master is still running.
    pub fn master_running(&mut self) -> bool {
        matches!(self.child.0.try_wait(), Ok(None))
    }

    /// The master's children: its current worker, plus old ones still draining.
    pub fn worker_pids(&self) -> Vec<u32> {
        let pid = self.master_pid();
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// The reload the tests use instead of systemd's: USR2 to the master, by PID file.
    pub fn reload_argv(&self) -> Vec<String> {
        vec![
            "pkill".into(),
            "--signal".into(),
            "USR2".into(),
            "--pidfile".into(),
            self.pid_file().display().to_string(),
        ]
    }

    /// The served leaf's fingerprint as openssl sees it (`AB:CD:…`), or `None`.
    pub fn served_fingerprint(&self, sni: &str) -> Option<String> {
        super::nginx::served_fingerprint(&self.addr.to_string(), Some(sni))
    }

    /// `openssl s_client` output (stdout + stderr) for a handshake with `sni`.
    pub fn s_client(&self, sni: &str, extra: &[&str]) -> String {
        let out = super::nginx::s_client(&self.addr.to_string(), Some(sni), extra);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let workers = self.worker_pids();
        // TERM: the master stops its workers, then exits.
        let _ = Command::new("kill")
            .args(["-TERM", &self.master_pid().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && self.master_running() {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
        // A KILLed master leaves its workers (holding the port): end those too, ours only.
        for pid in workers {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&*self.dir().to_string_lossy()) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

fn bundle_path(dir: &Path, i: usize) -> PathBuf {
    match i {
        0 => dir.join("certs/site.pem"),
        _ => dir.join(format!("certs/site-{i}.pem")),
    }
}
