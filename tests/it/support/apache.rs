//! A real apache2 (mod_ssl) for tests: its own temp dir (config, envvars, certs, logs, run
//! dir), its own loopback address from [`free_addr`], one TLS virtual host serving a leaf, a
//! chain and a key from three files.
//!
//! The master runs in the foreground (`-D FOREGROUND`) as a child of the test, and a thread
//! waits for it: a master that exits (apache does, on a graceful restart with certificates it
//! cannot load) is reaped at once, as systemd would, instead of lingering as a zombie whose PID
//! `apache2 -k start` would still take for a running server. When a rollback starts apache
//! again (`apachectl start`, daemonized), that master is found through the PID file and
//! stopped by PID on drop too.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::tls_lab::{copy_also, copy_with_mode};
use super::{free_addr, require};

/// A running apache.
pub struct Apache {
    pub addr: SocketAddr,
    // Declared before `dir` so the daemon dies before its directory is removed.
    master: Reaped,
    dir: tempfile::TempDir,
}

impl Apache {
    /// One `<VirtualHost>` for `server_name`, serving copies of `cert`, `chain` and `key` from
    /// `DIR/certs/cert.pem`, `DIR/certs/chain.pem` and `DIR/certs/privkey.pem` (0644, 0644,
    /// 0600).
    pub fn start(server_name: &str, cert: &Path, chain: &Path, key: &Path) -> Apache {
        Apache::start_sites(&[[server_name, &p(cert), &p(chain), &p(key)]])
    }

    /// One name-based `<VirtualHost>` per site (`[server_name, cert, chain, key]`) on one
    /// address, chosen by SNI (the first is the default). Site 0's files are `DIR/certs/…`
    /// as for [`Apache::start`], site N > 0's `DIR/certs/site-N/…` ([`Apache::site_paths`]).
    pub fn start_sites(sites: &[[&str; 4]]) -> Apache {
        Apache::launch(sites, &[])
    }

    /// [`Apache::start`] with more certificate + key pairs (leaf, key) for the same names, as
    /// `DIR/certs/also-N.pem` and `also-N.key`: apache shows the one that suits the client (an
    /// RSA and an ECDSA one, say). They share `chain`.
    pub fn start_with(
        server_name: &str,
        cert: &Path,
        chain: &Path,
        key: &Path,
        also: &[(&Path, &Path)],
    ) -> Apache {
        Apache::launch(&[[server_name, &p(cert), &p(chain), &p(key)]], also)
    }

    /// [`Apache::start_sites`], site 0 also holding the `also` pairs.
    fn launch(sites: &[[&str; 4]], also: &[(&Path, &Path)]) -> Apache {
        let apache2 = require("apache2");
        require("apachectl");
        require("pgrep"); // the connector's `alive` check
        let dir = tempfile::Builder::new()
            .prefix("certctl-apache-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        for sub in ["logs", "run", "htdocs", "certs"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let addr = free_addr();
        let vhosts: String = sites
            .iter()
            .enumerate()
            .map(|(i, site)| vhost(d, addr, i, site, if i == 0 { also } else { &[] }))
            .collect();
        let config = apache2_conf(d, addr, &vhosts);
        let p = |rel: &str| d.join(rel).display().to_string();
        std::fs::write(d.join("apache2.conf"), config).unwrap();
        // Sourced by apachectl when APACHE_CONFDIR=DIR: keeps its run/lock dirs in DIR.
        std::fs::write(
            d.join("envvars"),
            format!(
                "export APACHE_RUN_USER=www-data APACHE_RUN_GROUP=www-data\n\
                 export APACHE_RUN_DIR={run} APACHE_LOCK_DIR={run} APACHE_LOG_DIR={logs} APACHE_PID_FILE={pid}\n",
                run = p("run"),
                logs = p("logs"),
                pid = p("run/httpd.pid"),
            ),
        )
        .unwrap();

        let mut cmd = Command::new(&apache2);
        cmd.arg("-d")
            .arg(d)
            .args(["-D", "FOREGROUND"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let master = Reaped::spawn(cmd);
        let apache = Apache { addr, master, dir };
        apache.wait_listening(Duration::from_secs(20));
        apache
    }

    fn wait_listening(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.master.exited() {
                panic!(
                    "apache exited ({status}) before listening on {}:\n{}",
                    self.addr,
                    self.error_log()
                );
            }
            if std::net::TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "apache does not listen on {} after {timeout:?}:\n{}",
                self.addr,
                self.error_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The directory holding `apache2.conf` and `envvars`: APACHE_CONFDIR for apachectl.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn conf_path(&self) -> PathBuf {
        self.dir().join("apache2.conf")
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir().join("certs/cert.pem")
    }

    pub fn chain_path(&self) -> PathBuf {
        self.dir().join("certs/chain.pem")
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir().join("certs/privkey.pem")
    }

    /// Site `i`'s live files (cert, chain, key) of [`Apache::start_sites`].
    pub fn site_paths(&self, i: usize) -> [PathBuf; 3] {
        site_paths(self.dir(), i)
    }

    /// The live files, in the connector's order: cert, chain, key.
    pub fn live_paths(&self) -> [PathBuf; 3] {
        [self.cert_path(), self.chain_path(), self.key_path()]
    }

    pub fn pid_file(&self) -> PathBuf {
        self.dir().join("run/httpd.pid")
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir().join("logs/error.log")).unwrap_or_default()
    }

    /// `env APACHE_CONFDIR=DIR apachectl ARGS…` as an argv (for inventories and by hand).
    pub fn apachectl_argv(&self, args: &[&str]) -> Vec<String> {
        let mut argv = vec![
            "env".to_string(),
            format!("APACHE_CONFDIR={}", self.dir().display()),
            "apachectl".to_string(),
        ];
        argv.extend(args.iter().map(|a| a.to_string()));
        argv
    }

    /// The PID of the master serving now: the one in the PID file, if that process exists and
    /// is not a zombie. The foreground master started by [`Apache::start`], or one a rollback
    /// started with `apachectl start`.
    pub fn running_master(&self) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let running = if pid == self.master.pid {
            self.master.exited().is_none()
        } else {
            is_live(pid)
        };
        running.then_some(pid)
    }

    /// The PID of the master this harness started in the foreground.
    pub fn foreground_pid(&self) -> u32 {
        self.master.pid
    }

    /// Whether the foreground master has exited (and how).
    pub fn foreground_exit(&self) -> Option<ExitStatus> {
        self.master.exited()
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

impl Drop for Apache {
    fn drop(&mut self) {
        // A master started by `apachectl start` during a rollback is not our child: stop it by
        // the PID in the PID file, after checking that it is an apache of this directory.
        if let Some(pid) = self.running_master().filter(|p| *p != self.master.pid) {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let ours = String::from_utf8_lossy(&cmdline).contains(&*self.dir().to_string_lossy());
            if ours {
                signal(pid, "TERM");
                let deadline = Instant::now() + Duration::from_secs(10);
                while is_live(pid) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if is_live(pid) {
                    signal(pid, "KILL");
                }
            }
        }
        self.master.stop();
    }
}

/// A child process that a thread waits for, so it is reaped the moment it exits.
struct Reaped {
    pid: u32,
    status: Arc<Mutex<Option<ExitStatus>>>,
    waiter: Option<std::thread::JoinHandle<()>>,
}

impl Reaped {
    fn spawn(mut cmd: Command) -> Reaped {
        let mut child = cmd.spawn().expect("spawn daemon");
        let pid = child.id();
        let status = Arc::new(Mutex::new(None));
        let slot = status.clone();
        let waiter = std::thread::spawn(move || {
            let exit = child.wait().expect("wait for daemon");
            *slot.lock().unwrap() = Some(exit);
        });
        Reaped {
            pid,
            status,
            waiter: Some(waiter),
        }
    }

    fn exited(&self) -> Option<ExitStatus> {
        *self.status.lock().unwrap()
    }

    /// TERM (apache's fast stop: the master ends its children, then itself), KILL after 10 s.
    fn stop(&mut self) {
        if self.exited().is_none() {
            signal(self.pid, "TERM");
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.exited().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if self.exited().is_none() {
                signal(self.pid, "KILL");
            }
        }
        if let Some(waiter) = self.waiter.take() {
            let _ = waiter.join();
        }
    }
}

/// Whether `pid` exists and is neither a zombie nor dead (state after the last `)` of stat).
pub fn is_live(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, None | Some('Z') | Some('X') | Some('x'))
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Site `i`'s `<VirtualHost>`, its files (and `also`'s) copied into `d`.
fn vhost(
    d: &Path,
    addr: SocketAddr,
    i: usize,
    site: &[&str; 4],
    also: &[(&Path, &Path)],
) -> String {
    let [name, cert, chain, key] = site;
    let live = site_paths(d, i);
    let certs = live[0].parent().unwrap();
    std::fs::create_dir_all(certs).unwrap();
    for ((src, dst), mode) in [cert, chain, key]
        .iter()
        .zip(&live)
        .zip([0o644, 0o644, 0o600])
    {
        copy_with_mode(Path::new(src), dst, mode);
    }
    let mut more = String::new();
    for (cert, key) in copy_also(certs, also.iter().copied()) {
        more.push_str(&format!(
            "  SSLCertificateFile {}\n  SSLCertificateKeyFile {}\n",
            cert.display(),
            key.display()
        ));
    }
    format!(
        "<VirtualHost {addr}>\n  ServerName {name}\n  DocumentRoot {htdocs}\n  \
         SSLEngine on\n  SSLCertificateFile {}\n  SSLCertificateChainFile {}\n  \
         SSLCertificateKeyFile {}\n{more}  <Location />\n    Require all granted\n  \
         </Location>\n</VirtualHost>\n",
        live[0].display(),
        live[1].display(),
        live[2].display(),
        htdocs = d.join("htdocs").display(),
    )
}

/// `DIR/apache2.conf`: the server on `addr`, then `vhosts`.
fn apache2_conf(d: &Path, addr: SocketAddr, vhosts: &str) -> String {
    let p = |rel: &str| d.join(rel).display().to_string();
    // No ServerRoot and no APACHE_* variables: `apache2 -d DIR` and
    // `APACHE_CONFDIR=DIR apachectl` both find DIR/apache2.conf.
    format!(
        "ServerName localhost\n\
         PidFile {pid}\n\
         DefaultRuntimeDir {run}\n\
         Mutex file:{run}\n\
         ErrorLog {error_log}\n\
         LogLevel warn\n\
         LoadModule mpm_event_module     /usr/lib/apache2/modules/mod_mpm_event.so\n\
         LoadModule authz_core_module    /usr/lib/apache2/modules/mod_authz_core.so\n\
         LoadModule socache_shmcb_module /usr/lib/apache2/modules/mod_socache_shmcb.so\n\
         LoadModule ssl_module           /usr/lib/apache2/modules/mod_ssl.so\n\
         StartServers 1\n\
         ServerLimit 2\n\
         ThreadsPerChild 16\n\
         MinSpareThreads 1\n\
         MaxSpareThreads 32\n\
         MaxRequestWorkers 16\n\
         User www-data\n\
         Group www-data\n\
         Listen {addr} https\n\
         SSLSessionCache shmcb:{run}/ssl_scache(512000)\n\
         {vhosts}",
        pid = p("run/httpd.pid"),
        run = p("run"),
        error_log = p("logs/error.log"),
    )
}

/// Site `i`'s cert, chain and key: `DIR/certs/…` for site 0, `DIR/certs/site-N/…` after it.
fn site_paths(dir: &Path, i: usize) -> [PathBuf; 3] {
    let certs = match i {
        0 => dir.join("certs"),
        _ => dir.join(format!("certs/site-{i}")),
    };
    ["cert.pem", "chain.pem", "privkey.pem"].map(|f| certs.join(f))
}

fn p(path: &Path) -> String {
    path.display().to_string()
}
