//! A real Postfix for tests (daemons.md §7): its own temp dir holding the config directory
//! (`etc/main.cf`, `etc/master.cf`), queue, data dir, certificates and `maillog`; smtpd with
//! STARTTLS on its own loopback address from [`free_addr`]. Started with `postfix start-fg`, so
//! the master runs as a grandchild of the test (postfix-script waits for it); dropping the
//! handle stops the master by the PID in its pid file (TERM: it passes the signal on to its
//! children), then reaps the script.
//!
//! Postfix writes nothing to stderr without a TTY: everything, including why a command failed,
//! goes to `maillog` ([`Postfix::maillog`]), which the assertion messages quote.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::mail::{self, Starttls};
use super::{ChildGuard, free_addr, require};

/// The services of Debian's stock master.cf that a test instance needs, chroot off, plus
/// postlogd so `maillog_file` works. The smtpd line is added in front.
const MASTER_CF_SERVICES: &str = "\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
";

/// A running Postfix.
pub struct Postfix {
    /// Where smtpd listens (plain SMTP; STARTTLS offered).
    pub addr: SocketAddr,
    /// `postfix start-fg` (postfix-script, the parent of the master). Declared before `dir`
    /// so the daemon dies before its directory is removed.
    child: ChildGuard,
    dir: tempfile::TempDir,
}

impl Postfix {
    /// Serves copies of `fullchain` and `key` from `DIR/certs/fullchain.pem` and
    /// `DIR/certs/privkey.pem` (0600), and waits until STARTTLS serves that leaf.
    pub fn start(fullchain: &Path, key: &Path) -> Postfix {
        let postfix = require("postfix");
        require("openssl");
        let dir = tempfile::Builder::new()
            .prefix("certctl-postfix-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        // Postfix's daemons run as `postfix` and must reach the queue below this directory.
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        for sub in ["etc", "spool", "data", "certs"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let chown = Command::new("chown")
            .arg("postfix")
            .arg(d.join("data"))
            .status()
            .expect("run chown");
        assert!(chown.success(), "chown postfix {}/data", d.display());
        mail::copy_with_mode(fullchain, &d.join("certs/fullchain.pem"), 0o644);
        mail::copy_with_mode(key, &d.join("certs/privkey.pem"), 0o600);

        // smtpd binds the address master.cf names; inet_interfaces must list addresses an
        // interface really has (127.0.0.1 on lo), or postfix refuses to start.
        let addr = free_addr();
        let main_cf = format!(
            "compatibility_level = 3.6\n\
             queue_directory = {d}/spool\n\
             data_directory = {d}/data\n\
             maillog_file = {d}/maillog\n\
             maillog_file_prefixes = {d}\n\
             myhostname = mx.test.example\n\
             mydestination =\n\
             alias_maps =\n\
             alias_database =\n\
             inet_interfaces = 127.0.0.1\n\
             inet_protocols = ipv4\n\
             smtpd_tls_security_level = may\n\
             smtpd_tls_cert_file = {d}/certs/fullchain.pem\n\
             smtpd_tls_key_file = {d}/certs/privkey.pem\n",
            d = d.display(),
        );
        std::fs::write(d.join("etc/main.cf"), main_cf).unwrap();
        std::fs::write(
            d.join("etc/master.cf"),
            format!("{addr} inet n - n - - smtpd\n{MASTER_CF_SERVICES}"),
        )
        .unwrap();

        let child = Command::new(&postfix)
            .arg("-c")
            .arg(d.join("etc"))
            .arg("start-fg")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(mail::log_file(&d.join("stderr.log")))
            .spawn()
            .expect("start postfix");
        let mut postfix = Postfix {
            addr,
            child: ChildGuard(child),
            dir,
        };
        // The first start creates the queue directories: seconds on a busy machine.
        postfix.wait_listening(Duration::from_secs(60));
        let leaf = super::pki::openssl_fingerprint(fullchain);
        assert!(
            postfix.wait_until_served(Some(mail::SNI), &leaf, Duration::from_secs(20)),
            "postfix does not serve {leaf} over STARTTLS:\n{}",
            postfix.maillog()
        );
        postfix
    }

    fn wait_listening(&mut self, timeout: Duration) {
        let what = format!("postfix start-fg on {}", self.addr);
        let log = |p: &Postfix| {
            let stderr = std::fs::read_to_string(p.dir().join("stderr.log")).unwrap_or_default();
            format!("{stderr}\n{}", p.maillog())
        };
        let ready = |p: &Postfix| super::listening(&p.addr);
        super::wait_ready(self, &what, timeout, |p| &mut p.child.0, ready, log);
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The config directory (`postfix -c` / the connector's `config_dir`).
    pub fn config_dir(&self) -> PathBuf {
        self.dir().join("etc")
    }

    pub fn main_cf(&self) -> PathBuf {
        self.config_dir().join("main.cf")
    }

    pub fn master_cf(&self) -> PathBuf {
        self.config_dir().join("master.cf")
    }

    /// The file main.cf names in `smtpd_tls_cert_file`.
    pub fn cert_path(&self) -> PathBuf {
        self.dir().join("certs/fullchain.pem")
    }

    /// The file main.cf names in `smtpd_tls_key_file`.
    pub fn key_path(&self) -> PathBuf {
        self.dir().join("certs/privkey.pem")
    }

    /// Everything postfix logged so far (its only error channel without a TTY).
    pub fn maillog(&self) -> String {
        std::fs::read_to_string(self.dir().join("maillog")).unwrap_or_default()
    }

    /// How many times the master re-read its configuration (`postfix reload` = SIGHUP; the
    /// master keeps its PID, so only its log tells).
    pub fn reloads(&self) -> usize {
        self.maillog().matches(": reload -- version").count()
    }

    /// The master's PID from its (space-padded) pid file, if it is running.
    pub fn master_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.dir().join("spool/pid/master.pid")).ok()?;
        let pid: u32 = text.trim().parse().ok()?;
        mail::process_running(pid).then_some(pid)
    }

    /// `postfix -c DIR check`.
    pub fn check(&self) -> Output {
        Command::new(require("postfix"))
            .arg("-c")
            .arg(self.config_dir())
            .arg("check")
            .stdin(Stdio::null())
            .output()
            .expect("run postfix check")
    }

    /// Polls (openssl) until `fingerprint` is served 3 times in a row or `timeout` passes.
    pub fn wait_until_served(
        &self,
        sni: Option<&str>,
        fingerprint: &str,
        timeout: Duration,
    ) -> bool {
        mail::wait_until_served(self.addr, Starttls::Smtp, sni, fingerprint, timeout)
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        // The master may have been started by someone else than our start-fg (a rollback's
        // `postfix start`): the pid file names whoever runs now.
        if let Some(master) = self.master_pid() {
            mail::stop_process_tree(master, Duration::from_secs(10));
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !matches!(self.child.0.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // ChildGuard kills and reaps postfix-script if it is somehow still there.
    }
}
