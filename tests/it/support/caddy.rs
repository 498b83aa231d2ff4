//! A real caddy for tests: its own temp dir (Caddyfile, certs, storage, autosave, log), its
//! own loopback address from [`free_addr`] for the site and another for the admin API, one
//! `https://NAME:PORT` site with `tls CERT KEY`. HOME and the XDG directories point into the
//! temp dir, so nothing lands in the real home. `caddy run` stays in the foreground as a child
//! of the test; dropping the handle stops it by PID.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::tls_lab::copy_with_mode;
use super::{ChildGuard, free_addr, require};

/// A running caddy.
pub struct Caddy {
    pub addr: SocketAddr,
    /// The admin API (`caddy reload --address`).
    pub admin: SocketAddr,
    // Declared before `dir` so the daemon dies before its directory is removed.
    child: ChildGuard,
    dir: tempfile::TempDir,
}

impl Caddy {
    /// One site for `server_name` serving copies of `fullchain` and `key` from
    /// `DIR/certs/fullchain.pem` (0644) and `DIR/certs/privkey.pem` (0600).
    pub fn start(server_name: &str, fullchain: &Path, key: &Path) -> Caddy {
        let caddy = require("caddy");
        let dir = tempfile::Builder::new()
            .prefix("certctl-caddy-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        for sub in ["certs", "logs", "data", "config"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        copy_with_mode(fullchain, &d.join("certs/fullchain.pem"), 0o644);
        copy_with_mode(key, &d.join("certs/privkey.pem"), 0o600);
        let addr = free_addr();
        let admin = free_addr();
        let config = format!(
            "{{\n\
             \tadmin {admin}\n\
             \tauto_https disable_redirects\n\
             \tskip_install_trust\n\
             \tstorage file_system {data}\n\
             \tlog {{\n\t\toutput file {log}\n\t}}\n\
             }}\n\
             https://{server_name}:{port} {{\n\
             \tbind {ip}\n\
             \ttls {cert} {key}\n\
             \trespond \"ok\"\n\
             }}\n",
            data = d.join("data").display(),
            log = d.join("logs/caddy.log").display(),
            port = addr.port(),
            ip = addr.ip(),
            cert = d.join("certs/fullchain.pem").display(),
            key = d.join("certs/privkey.pem").display(),
        );
        let caddyfile = d.join("Caddyfile");
        std::fs::write(&caddyfile, config).unwrap();
        let out = std::fs::File::create(d.join("logs/stderr.log")).unwrap();
        let mut cmd = Command::new(&caddy);
        cmd.args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&caddyfile);
        isolate(&mut cmd, d);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start caddy");
        let mut caddy = Caddy {
            addr,
            admin,
            child: ChildGuard(child),
            dir,
        };
        caddy.wait_listening(Duration::from_secs(20));
        caddy
    }

    fn wait_listening(&mut self, timeout: Duration) {
        let what = format!("caddy on {} (admin {})", self.addr, self.admin);
        let ready = |c: &Caddy| super::listening(&c.addr) && super::listening(&c.admin);
        super::wait_ready(self, &what, timeout, |c| &mut c.child.0, ready, Caddy::log);
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn caddyfile(&self) -> PathBuf {
        self.dir().join("Caddyfile")
    }

    pub fn fullchain_path(&self) -> PathBuf {
        self.dir().join("certs/fullchain.pem")
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir().join("certs/privkey.pem")
    }

    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// caddy's own log (JSON lines) and what it wrote to stderr.
    pub fn log(&self) -> String {
        let read = |p: &str| std::fs::read_to_string(self.dir().join(p)).unwrap_or_default();
        format!("{}{}", read("logs/stderr.log"), read("logs/caddy.log"))
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

impl Drop for Caddy {
    fn drop(&mut self) {
        // TERM: caddy shuts down gracefully and exits; ChildGuard KILLs it if it does not.
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.child.0.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Points HOME and the XDG directories into `dir`.
fn isolate(cmd: &mut Command, dir: &Path) {
    cmd.env("HOME", dir)
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("XDG_CONFIG_HOME", dir.join("config"));
}
