//! A real nginx for tests: its own temp dir (config, certs, logs, temp paths, pid), its own
//! loopback address from [`free_addr`], one or more `ssl` server blocks. The master runs in the
//! foreground (`daemon off;`) as a child of the test; dropping the handle stops it by PID
//! (TERM, then KILL) and kills any worker it left behind. Served certificates are read with
//! `openssl s_client`, independently of certctl's probe.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::tls_lab::{copy_also, copy_with_mode};
use super::{ChildGuard, free_addr, require};

/// One `server { … }` block.
#[derive(Debug, Clone)]
pub struct Site {
    pub server_name: String,
    /// Leaf + intermediates to copy into the nginx dir.
    pub fullchain: PathBuf,
    pub key: PathBuf,
    /// `listen … default_server`: what a client without (or with an unknown) SNI gets.
    pub default_server: bool,
    /// More `ssl_certificate` + `ssl_certificate_key` pairs (full chain, key) for the same
    /// names: nginx shows the one that suits the client (an RSA and an ECDSA one, say).
    pub also: Vec<(PathBuf, PathBuf)>,
    /// `ssl_protocols TLSv1.2 TLSv1.3` (nginx 1.22 offers TLS 1.2 only by default).
    pub tls13: bool,
}

impl Site {
    pub fn new(server_name: &str, fullchain: &Path, key: &Path) -> Site {
        Site {
            server_name: server_name.to_string(),
            fullchain: fullchain.to_path_buf(),
            key: key.to_path_buf(),
            default_server: false,
            also: Vec::new(),
            tls13: false,
        }
    }

    /// Another certificate and key for the same names.
    pub fn also(mut self, fullchain: &Path, key: &Path) -> Site {
        self.also.push((fullchain.to_path_buf(), key.to_path_buf()));
        self
    }

    /// Offer TLS 1.3 as well as 1.2.
    pub fn tls13(mut self) -> Site {
        self.tls13 = true;
        self
    }

    pub fn default_server(mut self) -> Site {
        self.default_server = true;
        self
    }
}

/// A running nginx.
pub struct Nginx {
    pub addr: SocketAddr,
    conf: PathBuf,
    error_log: PathBuf,
    // Declared before `dir` so the daemon dies before its directory is removed.
    child: ChildGuard,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// One TLS server block for `server_name`, serving copies of `fullchain` and `key` from
    /// `DIR/certs/fullchain.pem` and `DIR/certs/privkey.pem` (0600).
    pub fn start(server_name: &str, fullchain: &Path, key: &Path) -> Nginx {
        Nginx::start_sites(&[Site::new(server_name, fullchain, key)])
    }

    /// Several server blocks on one address. Site 0 uses `certs/fullchain.pem` and
    /// `certs/privkey.pem`; site N > 0 uses `certs/site-N/…`.
    pub fn start_sites(sites: &[Site]) -> Nginx {
        let nginx = require("nginx");
        assert!(!sites.is_empty(), "nginx needs at least one site");
        let dir = tempfile::Builder::new()
            .prefix("certctl-nginx-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        for sub in ["logs", "tmp", "certs"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let addr = free_addr();
        let error_log = d.join("logs/error.log");
        let conf = d.join("nginx.conf");

        let servers: String = sites
            .iter()
            .enumerate()
            .map(|(i, site)| server_block(d, i, site, addr))
            .collect();
        let t = d.join("tmp");
        let config = format!(
            "worker_processes 1;\n\
             pid {pid};\n\
             error_log {error_log};\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log {access_log};\n  \
             client_body_temp_path {t}/body;\n  proxy_temp_path {t}/proxy;\n  fastcgi_temp_path {t}/fastcgi;\n  \
             uwsgi_temp_path {t}/uwsgi;\n  scgi_temp_path {t}/scgi;\n{servers}}}\n",
            pid = d.join("nginx.pid").display(),
            error_log = error_log.display(),
            access_log = d.join("logs/access.log").display(),
            t = t.display(),
        );
        std::fs::write(&conf, config).unwrap();

        let child = Command::new(&nginx)
            .arg("-g")
            .arg("daemon off;")
            .arg("-p")
            .arg(format!("{}/", d.display()))
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(&error_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let mut nginx = Nginx {
            addr,
            conf,
            error_log,
            child: ChildGuard(child),
            dir,
        };
        nginx.wait_listening(Duration::from_secs(20));
        nginx
    }

    fn wait_listening(&mut self, timeout: Duration) {
        let what = format!("nginx on {}", self.addr);
        super::wait_ready(
            self,
            &what,
            timeout,
            |n| &mut n.child.0,
            |n| super::listening(&n.addr),
            Nginx::error_log,
        );
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn conf_path(&self) -> &Path {
        &self.conf
    }

    /// The full chain site 0 serves: `DIR/certs/fullchain.pem`.
    pub fn cert_path(&self) -> PathBuf {
        site_paths(self.dir(), 0).0
    }

    /// The key site 0 uses: `DIR/certs/privkey.pem`.
    pub fn key_path(&self) -> PathBuf {
        site_paths(self.dir(), 0).1
    }

    /// Site `i`'s full chain and key of [`Nginx::start_sites`].
    pub fn site_paths(&self, i: usize) -> (PathBuf, PathBuf) {
        site_paths(self.dir(), i)
    }

    /// The arguments every nginx command for this instance needs:
    /// `-p DIR/ -c CONF -e ERRLOG`.
    pub fn instance_args(&self) -> Vec<String> {
        vec![
            "-p".into(),
            format!("{}/", self.dir().display()),
            "-c".into(),
            self.conf.display().to_string(),
            "-e".into(),
            self.error_log.display().to_string(),
        ]
    }

    pub fn master_pid(&self) -> u32 {
        self.child.0.id()
    }

    /// The master's children (its workers), from `/proc/PID/task/PID/children`.
    pub fn worker_pids(&self) -> Vec<u32> {
        let pid = self.master_pid();
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        children
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// `nginx -s reload`: nginx parses the config (and loads the certs) before it signals the
    /// master, so a bad cert fails here and the old one stays.
    /// nginx's own test of its live configuration (`nginx -t`): loads the live files.
    pub fn test_config(&self) -> Output {
        self.nginx_command(&["-t"])
    }

    pub fn reload(&self) -> Output {
        self.nginx_command(&["-s", "reload"])
    }

    fn nginx_command(&self, args: &[&str]) -> Output {
        Command::new(require("nginx"))
            .args(args)
            .args(self.instance_args())
            .stdin(Stdio::null())
            .output()
            .expect("run nginx")
    }

    /// Replaces site 0's files (atomically, by rename) with copies of `fullchain` and `key`.
    pub fn replace_certs(&self, fullchain: &Path, key: &Path) {
        let (cert_path, key_path) = site_paths(self.dir(), 0);
        for (src, dst, mode) in [(fullchain, &cert_path, 0o644), (key, &key_path, 0o600)] {
            let tmp = dst.with_extension("tmp");
            copy_with_mode(src, &tmp, mode);
            std::fs::rename(&tmp, dst).unwrap();
        }
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(&self.error_log).unwrap_or_default()
    }

    /// `openssl s_client` output (stdout + stderr) for a handshake with `sni` (`None` sends no
    /// SNI) and any extra arguments.
    pub fn s_client(&self, sni: Option<&str>, extra: &[&str]) -> String {
        let out = s_client(&self.addr.to_string(), sni, extra);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// The served leaf's fingerprint (`AB:CD:…`) as openssl sees it, or `None` when the
    /// handshake fails.
    pub fn served_fingerprint(&self, sni: Option<&str>) -> Option<String> {
        served_fingerprint(&self.addr.to_string(), sni)
    }

    /// Whether the served chain verifies up to `root` (only if nginx sends the intermediates).
    pub fn chain_verifies(&self, sni: Option<&str>, root: &Path) -> bool {
        let root = root.to_str().unwrap();
        self.s_client(sni, &["-CAfile", root, "-verify_return_error"])
            .contains("Verify return code: 0 (ok)")
    }

    /// Polls (openssl) until `fingerprint` is served 3 times in a row or `timeout` passes.
    pub fn wait_until_served(
        &self,
        sni: Option<&str>,
        fingerprint: &str,
        timeout: Duration,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        let mut streak = 0;
        while Instant::now() < deadline {
            if self.served_fingerprint(sni).as_deref() == Some(fingerprint) {
                streak += 1;
                if streak == 3 {
                    return true;
                }
            } else {
                streak = 0;
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        false
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let workers = self.worker_pids();
        let master = self.master_pid().to_string();
        // TERM: nginx's fast shutdown; the master waits for its workers, then exits.
        let _ = Command::new("kill")
            .args(["-TERM", &master])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !matches!(self.child.0.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // ChildGuard KILLs and reaps the master if it is still there; a KILLed master leaves its
        // workers running (holding the port), so end those too: ours only, by PID.
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
        for pid in workers {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if cmdline.starts_with(b"nginx: worker") {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// Site `i`'s `server { … }` block, its certificate and key files copied into `d`.
fn server_block(d: &Path, i: usize, site: &Site, addr: SocketAddr) -> String {
    let (cert, key) = site_paths(d, i);
    let certs = cert.parent().unwrap();
    std::fs::create_dir_all(certs).unwrap();
    copy_with_mode(&site.fullchain, &cert, 0o644);
    copy_with_mode(&site.key, &key, 0o600);
    let also = site.also.iter().map(|(c, k)| (c.as_path(), k.as_path()));
    let mut tls = String::new();
    for (cert, key) in std::iter::once((cert.clone(), key)).chain(copy_also(certs, also)) {
        tls.push_str(&format!(
            "    ssl_certificate {};\n    ssl_certificate_key {};\n",
            cert.display(),
            key.display()
        ));
    }
    if site.tls13 {
        tls.push_str("    ssl_protocols TLSv1.2 TLSv1.3;\n");
    }
    format!(
        "  server {{\n    listen {addr} ssl{default};\n    server_name {name};\n{tls}    location / {{ return 200 \"ok\\n\"; }}\n  }}\n",
        default = if site.default_server {
            " default_server"
        } else {
            ""
        },
        name = site.server_name,
    )
}

fn site_paths(dir: &Path, i: usize) -> (PathBuf, PathBuf) {
    let certs = if i == 0 {
        dir.join("certs")
    } else {
        dir.join(format!("certs/site-{i}"))
    };
    (certs.join("fullchain.pem"), certs.join("privkey.pem"))
}

/// `openssl s_client -connect ADDRESS` with `-servername SNI` (or `-noservername`), stdin closed.
pub fn s_client(address: &str, sni: Option<&str>, extra: &[&str]) -> Output {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", address]);
    match sni {
        Some(name) => cmd.args(["-servername", name]),
        None => cmd.arg("-noservername"),
    };
    cmd.args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl s_client")
}

/// The leaf fingerprint served at `address` as openssl reports it, or `None`.
pub fn served_fingerprint(address: &str, sni: Option<&str>) -> Option<String> {
    served_fingerprint_with(address, sni, &[])
}

/// [`served_fingerprint`] with more `openssl s_client` arguments (`-tls1_2`, `-sigalgs`, …).
pub fn served_fingerprint_with(address: &str, sni: Option<&str>, extra: &[&str]) -> Option<String> {
    let out = s_client(address, sni, extra);
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run openssl x509");
    // openssl x509 may exit early on garbage; the exit status says so.
    let _ = std::io::Write::write_all(x509.stdin.as_mut().unwrap(), &out.stdout);
    let result = x509.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&result.stdout);
    let fp = text.trim().rsplit('=').next()?.to_string();
    (result.status.success() && !fp.is_empty()).then_some(fp)
}
