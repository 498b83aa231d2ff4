//! A container without a container engine: a real nginx in a mount namespace of its own
//! (`unshare --mount --propagation private`), reading its certificate and key through bind
//! mounts of two single host files — exactly what `docker run -v HOSTFILE:/path` sets up, and
//! what makes a file renamed over HOSTFILE invisible inside (moby#22627).
//!
//! The mounts exist only in that namespace, which lives as long as nginx does: dropping the
//! handle stops nginx by PID (TERM, then KILL, and its workers), which unmounts them (nothing is
//! mounted in the test's own namespace). Commands run inside it with `nsenter`, as `docker
//! exec` would ([`NsNginx::nginx_argv`]).

use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{ChildGuard, free_addr, require};

/// nginx in its own mount namespace, serving two bind-mounted host files.
pub struct NsNginx {
    pub addr: SocketAddr,
    conf: PathBuf,
    error_log: PathBuf,
    /// Where the host files are mounted inside the namespace: (certificate, key).
    points: (PathBuf, PathBuf),
    // Declared before `dir`: the namespace ends before its directory is removed.
    child: ChildGuard,
    dir: tempfile::TempDir,
}

impl NsNginx {
    /// Bind-mounts `host_cert` and `host_key` (which must exist) at `DIR/ctr/certs/…` in a new
    /// mount namespace and runs nginx there (foreground, a child of the test), serving
    /// `server_name` on an address of its own.
    pub fn start(server_name: &str, host_cert: &Path, host_key: &Path) -> NsNginx {
        let dir = tempfile::Builder::new()
            .prefix("certctl-nsnginx-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        for sub in ["logs", "tmp", "ctr/certs"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        // The mount points: empty placeholders on the host (what the host itself sees there).
        let points = (
            d.join("ctr/certs/fullchain.pem"),
            d.join("ctr/certs/privkey.pem"),
        );
        for p in [&points.0, &points.1] {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(p)
                .unwrap();
        }
        let addr = free_addr();
        let (conf, error_log) = (d.join("nginx.conf"), d.join("logs/error.log"));
        let t = d.join("tmp").display().to_string();
        std::fs::write(
            &conf,
            format!(
                "worker_processes 1;\npid {pid};\nerror_log {err};\nevents {{ worker_connections 64; }}\n\
                 http {{\n  access_log off;\n  client_body_temp_path {t}/body;\n  proxy_temp_path {t}/proxy;\n  \
                 fastcgi_temp_path {t}/fastcgi;\n  uwsgi_temp_path {t}/uwsgi;\n  scgi_temp_path {t}/scgi;\n  \
                 server {{\n    listen {addr} ssl;\n    server_name {server_name};\n    \
                 ssl_certificate {cert};\n    ssl_certificate_key {key};\n    location / {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n",
                pid = d.join("nginx.pid").display(),
                err = error_log.display(),
                cert = points.0.display(),
                key = points.1.display(),
            ),
        )
        .unwrap();
        // unshare execs sh in the new namespace, sh execs nginx: the child IS the master.
        let child = Command::new(require("unshare"))
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(
                "mount --bind \"$1\" \"$3\" && mount --bind \"$2\" \"$4\" && \
                 exec \"$5\" -g 'daemon off;' -p \"$6\" -c \"$7\" -e \"$8\"",
            )
            .arg("sh")
            .args([host_cert, host_key, &points.0, &points.1])
            .arg(require("nginx"))
            .arg(format!("{}/", d.display()))
            .args([&conf, &error_log])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start nginx in a mount namespace");
        let mut nginx = NsNginx {
            addr,
            conf,
            error_log,
            points,
            child: ChildGuard(child),
            dir,
        };
        nginx.wait_listening(Duration::from_secs(20));
        nginx
    }

    fn wait_listening(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.0.try_wait().unwrap() {
                let mut err = String::new();
                if let Some(mut e) = self.child.0.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                panic!(
                    "nginx in its namespace exited ({status}): {err}\n{}",
                    self.error_log()
                );
            }
            if std::net::TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nginx does not listen on {}",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The master's PID: its `/proc/PID/mountinfo` shows the two bind mounts.
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    pub fn conf_path(&self) -> &Path {
        &self.conf
    }

    /// Where the certificate and the key are mounted inside the namespace.
    pub fn mount_points(&self) -> (&Path, &Path) {
        (&self.points.0, &self.points.1)
    }

    /// What nginx reads at its certificate and key paths, seen from inside its namespace
    /// (through `/proc/PID/root`).
    pub fn sees(&self) -> (Vec<u8>, Vec<u8>) {
        let inside = |p: &Path| {
            let path = format!("/proc/{}/root{}", self.pid(), p.display());
            std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
        };
        (inside(&self.points.0), inside(&self.points.1))
    }

    /// `nsenter -t PID -m -- nginx ARGS… -p DIR/ -c CONF -e ERRLOG`: an nginx command run
    /// inside the namespace (as `docker exec` would), for the inventory's command overrides.
    pub fn nginx_argv(&self, args: &[&str]) -> Vec<String> {
        let mut argv = vec![
            require("nsenter").display().to_string(),
            "-t".into(),
            self.pid().to_string(),
            "-m".into(),
            "--".into(),
            require("nginx").display().to_string(),
        ];
        argv.extend(args.iter().map(|a| a.to_string()));
        argv.extend([
            "-p".into(),
            format!("{}/", self.dir.path().display()),
            "-c".into(),
            self.conf.display().to_string(),
            "-e".into(),
            self.error_log.display().to_string(),
        ]);
        argv
    }

    /// `nginx -t` of the live configuration, inside the namespace.
    pub fn test_config(&self) -> std::process::Output {
        let argv = self.nginx_argv(&["-t", "-q"]);
        Command::new(&argv[0]).args(&argv[1..]).output().unwrap()
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(&self.error_log).unwrap_or_default()
    }

    /// The leaf served (openssl), once stable: the same answer three times in a row.
    pub fn served(&self, sni: &str) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let (mut last, mut streak) = (None, 0);
        while streak < 3 && Instant::now() < deadline {
            let now = super::nginx::served_fingerprint(&self.addr.to_string(), Some(sni));
            if now == last {
                streak += 1;
            } else {
                (last, streak) = (now, 1);
            }
        }
        last
    }
}

impl Drop for NsNginx {
    fn drop(&mut self) {
        let pid = self.pid();
        let workers =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.0.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        // ChildGuard KILLs and reaps a master still there; its workers are ended by PID.
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
        for w in workers.split_whitespace() {
            let cmdline = std::fs::read(format!("/proc/{w}/cmdline")).unwrap_or_default();
            if cmdline.starts_with(b"nginx: worker") {
                let _ = Command::new("kill")
                    .args(["-KILL", w])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}
