//! A fleet inventory that needs no daemon: real certificate material from the test PKI, N
//! nginx targets on addresses nothing answers on (or a silent TCP listener), for the commands
//! and output that are decided before or without an SSH connection (check, --list-targets,
//! verify's progress, colour, the pty).

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::lab::Output;
use super::pki::Pki;

pub struct Offline {
    pub dir: tempfile::TempDir,
    pub inventory: PathBuf,
    /// Kept for the lifetime of the fleet (its files are the inventory's material).
    _pki: Pki,
    /// Accepts TCP connections (the kernel's backlog) and never speaks: a probe waits for its
    /// timeout there.
    pub silent: TcpListener,
}

impl Offline {
    /// `targets` nginx targets `web-1`…, in group `web` (odd) or `db` (even), probing the
    /// silent listener with one attempt and a 1 s timeout.
    pub fn new(targets: usize) -> Offline {
        let dir = tempfile::Builder::new()
            .prefix("certctl-offline-")
            .tempdir()
            .unwrap();
        let pki = Pki::new(&dir.path().join("pki"));
        let leaf = pki.leaf("www", &["www.test.example"]);
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let known_hosts = dir.path().join("known_hosts");
        fs::write(&known_hosts, "").unwrap();
        let key = dir.path().join("id_ed25519");
        fs::write(&key, "not read offline\n").unwrap();
        let inventory = dir.path().join("certctl.yaml");
        let offline = Offline {
            inventory,
            _pki: pki,
            silent,
            dir,
        };
        let mut yaml = format!(
            "defaults:\n  user: deploy\n  identity_file: {key}\n  known_hosts: {kh}\n  \
             verify: {{ attempts: 1, timeout: 1s }}\n\
             certificates:\n  www:\n    cert: {cert}\n    chain: {chain}\n    key: {leaf_key}\n\
             groups:\n  web: {{ connector: nginx }}\n  db: {{ connector: nginx }}\n\
             targets:\n",
            key = key.display(),
            kh = known_hosts.display(),
            cert = leaf.cert.display(),
            chain = leaf.chain.display(),
            leaf_key = leaf.key.display(),
        );
        let addr = offline.silent_addr();
        for i in 1..=targets {
            let group = if i % 2 == 1 { "web" } else { "db" };
            yaml.push_str(&format!(
                "  - name: web-{i}\n    host: 127.0.0.1\n    port: 1\n    groups: [{group}]\n    \
                 certificate: www\n    params: {{ fullchain_path: /etc/nginx/tls/www.crt, \
                 key_path: /etc/nginx/tls/www.key }}\n    verify: {{ address: \"{addr}\", \
                 sni: www.test.example }}\n"
            ));
        }
        fs::write(&offline.inventory, yaml).unwrap();
        offline
    }

    pub fn silent_addr(&self) -> SocketAddr {
        self.silent.local_addr().unwrap()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `certctl ARGS…` with `-i` added after the subcommand, as [`super::lab::run_certctl`].
    pub fn certctl(&self, args: &[&str]) -> Output {
        super::lab::run_certctl(&self.inventory, args, &[])
    }
}

/// Runs the binary with exactly `args`, in `cwd`, with `env` set and `unset` removed (no
/// `NO_COLOR` default: the colour tests decide), stdin closed, stdout and stderr piped.
pub fn certctl_env(cwd: &Path, args: &[&str], env: &[(&str, &str)], unset: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_certctl"));
    cmd.current_dir(cwd)
        .args(args)
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("CERTCTL_INVENTORY")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null());
    for name in unset {
        cmd.env_remove(name);
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().expect("run certctl");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs the binary inside a real pseudo-terminal (util-linux `script`), with `TERM=term` and
/// no colour-related variables; returns everything the terminal received (stdout and stderr
/// together, `\r\n` line ends) and certctl's exit code.
pub fn certctl_in_pty(cwd: &Path, args: &[&str], term: &str) -> (i32, String) {
    super::require("script");
    let quoted: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_certctl"))
        .chain(args.iter().copied())
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect();
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &quoted.join(" "), "/dev/null"])
        .current_dir(cwd)
        .env("TERM", term)
        .env("COLUMNS", "100")
        .env("LINES", "30")
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE")
        .env_remove("CLICOLOR")
        .env_remove("SSH_AUTH_SOCK")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .output()
        .expect("run script");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}
