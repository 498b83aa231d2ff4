//! A real Dovecot for tests (daemons.md §8): its own temp dir (config, users file, run and
//! state dirs, mail, certificates, log), IMAPS and plain IMAP (STARTTLS) listeners on one
//! loopback address of its own from [`free_addr`]. The master runs in the foreground (`-F`) as a
//! child of the test; dropping the handle stops it by PID (TERM, then KILL).

use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::mail::{self, Starttls};
use super::{ChildGuard, free_addr, require};

/// A running Dovecot.
pub struct Dovecot {
    /// The IMAPS listener (TLS from the first byte).
    pub imaps: SocketAddr,
    /// The IMAP listener (STARTTLS), on the same address.
    pub imap: SocketAddr,
    // Declared before `dir` so the daemon dies before its directory is removed.
    child: ChildGuard,
    dir: tempfile::TempDir,
}

impl Dovecot {
    /// Serves copies of `fullchain` and `key` from `DIR/certs/fullchain.pem` and
    /// `DIR/certs/privkey.pem` (0600), and waits until both listeners serve that leaf.
    pub fn start(fullchain: &Path, key: &Path) -> Dovecot {
        let dovecot = require("dovecot");
        require("doveconf");
        require("doveadm");
        require("openssl");
        let dir = tempfile::Builder::new()
            .prefix("certctl-dovecot-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        // Login and mail processes run as dovenull/dovecot and must traverse this directory.
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        for sub in ["run", "state", "mail", "certs"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let chown = Command::new("chown")
            .arg("dovecot:dovecot")
            .arg(d.join("mail"))
            .status()
            .expect("run chown");
        assert!(chown.success(), "chown dovecot {}/mail", d.display());
        mail::copy_with_mode(fullchain, &d.join("certs/fullchain.pem"), 0o644);
        mail::copy_with_mode(key, &d.join("certs/privkey.pem"), 0o600);
        let (uid, gid) = (id("-u"), id("-g"));
        std::fs::write(
            d.join("users"),
            format!(
                "tester:{{PLAIN}}secret:{uid}:{gid}::{}/mail/tester::\n",
                d.display()
            ),
        )
        .unwrap();

        let imaps = free_addr();
        let imap = {
            let listener = TcpListener::bind((imaps.ip(), 0)).expect("a second port");
            listener.local_addr().unwrap()
        };
        let config = format!(
            "instance_name = certctl-dovecot-{port}\n\
             base_dir = {d}/run\n\
             state_dir = {d}/state\n\
             log_path = {d}/dovecot.log\n\
             listen = {ip}\n\
             protocols = imap\n\
             ssl = required\n\
             ssl_cert = <{d}/certs/fullchain.pem\n\
             ssl_key = <{d}/certs/privkey.pem\n\
             mail_location = maildir:~/Maildir\n\
             first_valid_uid = 100\n\
             passdb {{\n  driver = passwd-file\n  args = {d}/users\n}}\n\
             userdb {{\n  driver = passwd-file\n  args = {d}/users\n}}\n\
             service imap-login {{\n\
             \x20 inet_listener imap {{\n    address = {ip}\n    port = {imap_port}\n  }}\n\
             \x20 inet_listener imaps {{\n    address = {ip}\n    port = {port}\n    ssl = yes\n  }}\n\
             }}\n",
            d = d.display(),
            ip = imaps.ip(),
            port = imaps.port(),
            imap_port = imap.port(),
        );
        std::fs::write(d.join("dovecot.conf"), config).unwrap();

        let child = Command::new(&dovecot)
            .arg("-F")
            .arg("-c")
            .arg(d.join("dovecot.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(mail::log_file(&d.join("stderr.log")))
            .spawn()
            .expect("start dovecot");
        let mut dovecot = Dovecot {
            imaps,
            imap,
            child: ChildGuard(child),
            dir,
        };
        dovecot.wait_listening(Duration::from_secs(20));
        let leaf = super::pki::openssl_fingerprint(fullchain);
        for mode in [Starttls::None, Starttls::Imap] {
            assert!(
                dovecot.wait_until_served(mode, Some(mail::SNI), &leaf, Duration::from_secs(20)),
                "dovecot does not serve {leaf} ({mode:?}):\n{}",
                dovecot.log()
            );
        }
        dovecot
    }

    fn wait_listening(&mut self, timeout: Duration) {
        let what = format!("dovecot on {} and {}", self.imaps, self.imap);
        let log = |d: &Dovecot| {
            let stderr = std::fs::read_to_string(d.dir().join("stderr.log")).unwrap_or_default();
            format!("{stderr}\n{}", d.log())
        };
        let ready = |d: &Dovecot| super::listening(&d.imaps) && super::listening(&d.imap);
        super::wait_ready(self, &what, timeout, |d| &mut d.child.0, ready, log);
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The config file (`-c` / the connector's `config_file`).
    pub fn config_file(&self) -> PathBuf {
        self.dir().join("dovecot.conf")
    }

    /// The file the config names in `ssl_cert = <…`.
    pub fn cert_path(&self) -> PathBuf {
        self.dir().join("certs/fullchain.pem")
    }

    /// The file the config names in `ssl_key = <…`.
    pub fn key_path(&self) -> PathBuf {
        self.dir().join("certs/privkey.pem")
    }

    /// The master's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("dovecot.log")).unwrap_or_default()
    }

    /// How many times the master re-read its configuration (SIGHUP keeps the master's PID).
    pub fn reloads(&self) -> usize {
        self.log()
            .matches("SIGHUP received - reloading configuration")
            .count()
    }

    /// The master's PID (our child), if it is still running.
    pub fn master_pid(&self) -> Option<u32> {
        let pid = self.child.0.id();
        mail::process_running(pid).then_some(pid)
    }

    /// `doveconf -c CONF -x` (expands `<file` values; fails on a missing file).
    pub fn test_config(&self) -> Output {
        Command::new(require("doveconf"))
            .arg("-c")
            .arg(self.config_file())
            .arg("-x")
            .stdin(Stdio::null())
            .output()
            .expect("run doveconf")
    }

    /// The address a probe of `mode` dials: IMAPS for none, IMAP for STARTTLS.
    pub fn addr(&self, mode: Starttls) -> SocketAddr {
        match mode {
            Starttls::Imap => self.imap,
            _ => self.imaps,
        }
    }

    /// Polls (openssl) until `fingerprint` is served 3 times in a row or `timeout` passes.
    pub fn wait_until_served(
        &self,
        mode: Starttls,
        sni: Option<&str>,
        fingerprint: &str,
        timeout: Duration,
    ) -> bool {
        mail::wait_until_served(self.addr(mode), mode, sni, fingerprint, timeout)
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        // TERM: the master stops its children and exits (about a second). A master started
        // by a rollback's `dovecot -c …` instead of ours is named by the pid file.
        let pid_file = self.dir().join("run/master.pid");
        let master = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
            .filter(|pid| mail::process_running(*pid));
        if let Some(pid) = master.filter(|pid| *pid != self.child.0.id()) {
            mail::stop_process_tree(pid, Duration::from_secs(10));
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.0.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !matches!(self.child.0.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // ChildGuard KILLs and reaps the master if it is still there.
    }
}

/// `id -u dovecot` / `id -g dovecot`: the mail user maps to the `dovecot` account.
fn id(flag: &str) -> String {
    let out = Command::new("id")
        .args([flag, "dovecot"])
        .output()
        .expect("run id");
    assert!(out.status.success(), "the `dovecot` user does not exist");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
