//! A one-target lab for end-to-end tests of the `certctl` binary: a real sshd, a real nginx
//! serving an OLD certificate, a NEW certificate from the same test CA, and an inventory that
//! points certctl at them. Backups and scratch directories live in the lab's own directory so
//! the tests can check that nothing is left behind.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::nginx::Nginx;
use super::pki::{Leaf, LeafOpts, Pki};
use super::sshd::Sshd;

pub const SNI: &str = "www.test.example";

/// Material made wrong on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadMaterial {
    WrongKey,
    TruncatedCert,
    Expired,
}

/// What the inventory's known_hosts says about the sshd.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KnownHosts {
    #[default]
    Correct,
    /// The file exists but does not list the host.
    Empty,
    /// The host is listed with another key.
    Wrong,
}

#[derive(Debug, Clone, Default)]
pub struct TargetOptions {
    pub bad_material: Option<BadMaterial>,
    pub known_hosts: KnownHosts,
    /// Use the generic `ssh` connector with a user layout instead of `nginx`.
    pub generic: bool,
    /// The new certificate expires this many days from now (default: 90).
    pub new_expires_in_days: Option<i64>,
    /// Use this connector (with nginx's fullchain/key paths) and these extra params instead.
    pub connector: Option<(&'static str, Vec<(&'static str, String)>)>,
}

/// A certificate of the lab and its openssl fingerprint.
pub struct Cert {
    pub fingerprint: String,
    pub cert: PathBuf,
    pub chain: PathBuf,
    pub fullchain: PathBuf,
    pub key: PathBuf,
}

impl Cert {
    fn new(leaf: Leaf) -> Cert {
        Cert {
            fingerprint: super::pki::openssl_fingerprint(&leaf.cert),
            cert: leaf.cert.clone(),
            chain: leaf.chain.clone(),
            fullchain: leaf.fullchain.clone(),
            key: leaf.key.clone(),
        }
    }

    pub fn fullchain_pem(&self) -> Vec<u8> {
        fs::read(&self.fullchain).unwrap()
    }
}

/// What one run of the binary did.
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the built binary as `certctl SUBCOMMAND -i INVENTORY REST...` with `env` added: no
/// ssh-agent, no colour, no backtraces, no local history (unless `env` sets
/// `CERTCTL_HISTORY`), stdin closed.
pub fn run_certctl(inventory: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_certctl"))
        .arg(args[0])
        .arg("-i")
        .arg(inventory)
        .args(&args[1..])
        .env_remove("SSH_AUTH_SOCK")
        .env("NO_COLOR", "1")
        .env("RUST_BACKTRACE", "0")
        .env("CERTCTL_HISTORY", "off")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run certctl");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl Output {
    /// The JSON report, checked against the documented schema (so every run a test makes
    /// proves the schema).
    pub fn json(&self) -> serde_json::Value {
        let value: serde_json::Value = serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        });
        if let Err(e) = certctl::report::validate_report(&value) {
            panic!(
                "the JSON report does not match the documented schema: {e}\n{}",
                self.stdout
            );
        }
        value
    }
}

pub struct Lab {
    pub old: Cert,
    pub new: Cert,
    pub pki: Pki,
    pub nginx: Nginx,
    pub sshd: Sshd,
    pub inventory: PathBuf,
    options: TargetOptions,
    known_hosts: PathBuf,
    dir: tempfile::TempDir,
}

impl Lab {
    pub fn start(options: TargetOptions) -> Lab {
        let dir = tempfile::Builder::new()
            .prefix("certctl-lab-")
            .tempdir()
            .unwrap();
        let pki = Pki::new(&dir.path().join("pki").tap_create());
        let old = Cert::new(pki.leaf("old", &[SNI]));
        let new = match options.new_expires_in_days {
            Some(days) => Cert::new(pki.issue(
                "new",
                LeafOpts::new(&[SNI]).valid_secs(-86_400, days * 86_400),
            )),
            None => Cert::new(pki.leaf("new", &[SNI])),
        };
        let nginx = Nginx::start(SNI, &old.fullchain, &old.key);
        assert!(nginx.wait_until_served(Some(SNI), &old.fingerprint, Duration::from_secs(10)));
        let sshd = Sshd::start();
        for sub in ["tmp", "app"] {
            fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let known_hosts = dir.path().join("known_hosts");
        match options.known_hosts {
            KnownHosts::Correct => {
                fs::copy(&sshd.known_hosts, &known_hosts).unwrap();
            }
            KnownHosts::Empty => fs::write(&known_hosts, "").unwrap(),
            KnownHosts::Wrong => {
                sshd.write_wrong_known_hosts(&known_hosts);
            }
        }
        let lab = Lab {
            inventory: dir.path().join("certctl.yaml"),
            old,
            new,
            pki,
            nginx,
            sshd,
            options,
            known_hosts,
            dir,
        };
        lab.set_commands(&[]);
        lab
    }

    /// Rewrites the inventory with these per-target command overrides.
    pub fn set_commands(&self, commands: &[(&str, Vec<Vec<String>>)]) {
        let j = |s: &str| serde_json::to_string(s).unwrap();
        let p = |p: &Path| j(&p.display().to_string());
        let (cert, key) = match self.options.bad_material {
            None => (self.new.cert.clone(), self.new.key.clone()),
            Some(BadMaterial::WrongKey) => (self.new.cert.clone(), self.pki.wrong_key()),
            Some(BadMaterial::TruncatedCert) => (
                self.pki.truncated(&self.new.cert, 300),
                self.new.key.clone(),
            ),
            Some(BadMaterial::Expired) => {
                let leaf = self.pki.issue(
                    "expired",
                    LeafOpts::new(&[SNI]).valid_secs(-10 * 86_400, -86_400),
                );
                (leaf.cert, leaf.key)
            }
        };
        let mut yaml = format!(
            "defaults:\n  user: {user}\n  port: {port}\n  identity_file: {client_key}\n  known_hosts: {kh}\n  \
             verify: {{ attempts: 6, backoff: 100ms, max_backoff: 1s, timeout: 5s, consecutive: 2 }}\n\
             certificates:\n  www:\n    cert: {cert}\n    chain: {chain}\n    key: {key}\n\
             targets:\n  - name: web-1\n    host: {host}\n    certificate: www\n",
            user = j(&self.sshd.user),
            port = self.sshd.port(),
            client_key = p(&self.sshd.client_key),
            kh = p(&self.known_hosts),
            cert = p(&cert),
            chain = p(&self.new.chain),
            key = p(&key),
            host = j(&self.sshd.host()),
        );
        let conf = self.nginx.conf_path().display().to_string();
        let mut params = vec![
            (
                "fullchain_path",
                self.nginx.cert_path().display().to_string(),
            ),
            ("key_path", self.nginx.key_path().display().to_string()),
            ("backup_dir", self.backup_dir().display().to_string()),
            ("tmp_dir", self.dir.path().join("tmp").display().to_string()),
        ];
        let mut commands: Vec<(&str, Vec<Vec<String>>)> = commands.to_vec();
        if self.options.generic {
            yaml.push_str("    connector: ssh\n");
            let app = self.generic_dir();
            params.push(("cert_path", app.join("leaf.pem").display().to_string()));
            params.push(("chain_path", app.join("chain.pem").display().to_string()));
            params.push(("bundle_path", app.join("bundle.pem").display().to_string()));
            let nginx = |args: &[&str]| -> Vec<String> {
                let mut v = vec!["nginx".to_string()];
                v.extend(args.iter().map(|s| s.to_string()));
                v.extend(["-c".to_string(), conf.clone()]);
                v
            };
            for (section, argv) in [
                ("preview", nginx(&["-t", "-q"])),
                ("test", nginx(&["-t", "-q"])),
                ("reload", nginx(&["-s", "reload"])),
            ] {
                if !commands.iter().any(|(s, _)| *s == section) {
                    commands.push((section, vec![argv]));
                }
            }
        } else if let Some((name, extra)) = &self.options.connector {
            yaml.push_str(&format!("    connector: {name}\n"));
            // `@LAB@` in a value is the lab's directory; parents of such paths are created.
            let lab = self.dir.path().display().to_string();
            for (k, v) in extra {
                let v = v.replace("@LAB@", &lab);
                if let Some(parent) = Path::new(&v).parent() {
                    fs::create_dir_all(parent).unwrap();
                }
                params.push((k, v));
            }
        } else {
            yaml.push_str("    connector: nginx\n");
            params.push(("nginx_conf", conf.clone()));
        }
        yaml.push_str("    params:\n");
        for (k, v) in params {
            yaml.push_str(&format!("      {k}: {}\n", j(&v)));
        }
        if !commands.is_empty() {
            yaml.push_str("    commands:\n");
            for (section, cmds) in commands {
                yaml.push_str(&format!(
                    "      {section}: {}\n",
                    serde_json::to_string(&cmds).unwrap()
                ));
            }
        }
        yaml.push_str(&format!(
            "    verify:\n      address: {}\n      sni: {}\n",
            j(&self.nginx.addr.to_string()),
            j(SNI)
        ));
        fs::write(&self.inventory, yaml).unwrap();
    }

    /// Runs `certctl SUBCOMMAND -i INVENTORY REST...`.
    pub fn certctl(&self, args: &[&str]) -> Output {
        run_certctl(&self.inventory, args, &[])
    }

    /// The leaf nginx serves for the lab's SNI, as openssl sees it, once it is stable (the same
    /// answer three times in a row: nginx may flap for a moment right after a reload).
    pub fn served(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = String::new();
        let mut streak = 0;
        loop {
            let now = self.nginx.served_fingerprint(Some(SNI)).unwrap_or_default();
            if now == last {
                streak += 1;
            } else {
                last = now;
                streak = 1;
            }
            if streak == 3 || Instant::now() > deadline {
                return last;
            }
        }
    }

    /// How many certificates nginx sends (leaf + intermediates).
    pub fn served_chain_len(&self) -> usize {
        self.nginx
            .s_client(Some(SNI), &["-showcerts"])
            .matches("-----BEGIN CERTIFICATE-----")
            .count()
    }

    /// Contents and mtimes of the live files.
    pub fn snapshot_live_files(&self) -> Vec<(Vec<u8>, SystemTime)> {
        [self.nginx.cert_path(), self.nginx.key_path()]
            .iter()
            .map(|p| {
                (
                    fs::read(p).unwrap(),
                    fs::metadata(p).unwrap().modified().unwrap(),
                )
            })
            .collect()
    }

    pub fn live_file_contents(&self) -> Vec<Vec<u8>> {
        [self.nginx.cert_path(), self.nginx.key_path()]
            .iter()
            .map(|p| fs::read(p).unwrap())
            .collect()
    }

    pub fn backup_dir(&self) -> PathBuf {
        self.dir.path().join("backups")
    }

    /// Backup sets taken so far.
    pub fn backup_sets(&self) -> Vec<PathBuf> {
        match fs::read_dir(self.backup_dir()) {
            Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Scratch directories left in the lab's tmp_dir.
    pub fn scratch_dirs(&self) -> Vec<PathBuf> {
        fs::read_dir(self.dir.path().join("tmp"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }

    /// Where the generic connector writes its extra files.
    pub fn generic_dir(&self) -> PathBuf {
        self.dir.path().join("app")
    }

    /// nginx's master and worker PIDs: they change only when nginx reloads.
    pub fn nginx_pids(&self) -> (u32, Vec<u32>) {
        (self.nginx.master_pid(), self.nginx.worker_pids())
    }

    /// A directory of the lab's own, created on first use.
    pub fn path(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        fs::create_dir_all(&p).unwrap();
        p
    }

    /// SSH logins the sshd has accepted so far (the harness's own port check is a bare TCP
    /// connect and logs no login).
    pub fn sshd_connections(&self) -> usize {
        self.sshd.log().matches("Accepted publickey").count()
    }

    /// Remote commands the sshd has started so far (each exec logs `Starting session:`).
    pub fn sshd_commands(&self) -> usize {
        self.sshd.log().matches("Starting session:").count()
    }
}

trait TapCreate {
    fn tap_create(self) -> Self;
}

impl TapCreate for PathBuf {
    fn tap_create(self) -> Self {
        fs::create_dir_all(&self).unwrap();
        self
    }
}
