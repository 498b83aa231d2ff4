//! A one-target lab for connector end-to-end tests, independent of the server software: a real
//! sshd, a test PKI with an OLD certificate (what the server starts with) and a NEW one, an
//! inventory writer for any connector, and the `certctl` binary runner. Each connector's test
//! file adds its own daemon (tests/it/support/apache.rs, haproxy.rs, caddy.rs) and params.
//! Backups and scratch directories live in the lab's own directory so tests can check that
//! nothing is left behind.

use std::fs;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::SystemTime;

use super::lab::{Output, run_certctl};
use super::pki::{Leaf, Pki, openssl_fingerprint};
use super::sshd::Sshd;

pub const SNI: &str = "www.test.example";

/// The certificate files an inventory's `certificates.www` points at.
#[derive(Debug, Clone)]
pub struct Material {
    pub cert: PathBuf,
    pub chain: PathBuf,
    pub key: PathBuf,
    /// Leaf + chain, and leaf + chain + key: what the daemons are started with.
    pub fullchain: PathBuf,
    pub bundle: PathBuf,
    /// `openssl x509 -fingerprint -sha256` of the leaf.
    pub fingerprint: String,
}

impl Material {
    fn from_leaf(dir: &Path, leaf: &Leaf) -> Material {
        let bundle = dir.join(format!("{}.bundle.pem", leaf.name));
        let mut pem = fs::read(&leaf.fullchain).unwrap();
        pem.extend(fs::read(&leaf.key).unwrap());
        write_private(&bundle, &pem);
        Material {
            cert: leaf.cert.clone(),
            chain: leaf.chain.clone(),
            key: leaf.key.clone(),
            fullchain: leaf.fullchain.clone(),
            bundle,
            fingerprint: openssl_fingerprint(&leaf.cert),
        }
    }
}

/// One target of one connector.
#[derive(Debug, Clone, Default)]
pub struct TargetSpec {
    pub connector: String,
    pub params: Vec<(String, String)>,
    pub commands: Vec<(String, Vec<Vec<String>>)>,
    /// `verify.address`: where the daemon listens.
    pub address: String,
}

/// The targets' `tmp_dir`: a space, `;`, `#` and a quote, which the connectors' preview
/// configs (haproxy, Caddyfile, apache's check script) must carry as literal path characters.
const TMP_DIR: &str = "tmp dir; #'q'";

pub struct TlsLab {
    pub pki: Pki,
    pub old: Material,
    pub new: Material,
    pub sshd: Sshd,
    pub inventory: PathBuf,
    dir: tempfile::TempDir,
}

impl TlsLab {
    pub fn start() -> TlsLab {
        let dir = tempfile::Builder::new()
            .prefix("certctl-tlslab-")
            .tempdir()
            .unwrap();
        let pki_dir = dir.path().join("pki");
        let pki = Pki::new(&pki_dir);
        let old = Material::from_leaf(&pki_dir, &pki.leaf("old", &[SNI]));
        let new = Material::from_leaf(&pki_dir, &pki.leaf("new", &[SNI]));
        fs::create_dir_all(dir.path().join(TMP_DIR)).unwrap();
        TlsLab {
            inventory: dir.path().join("certctl.yaml"),
            sshd: Sshd::start(),
            pki,
            old,
            new,
            dir,
        }
    }

    /// Writes the inventory: one target `web-1` deploying `material` with `spec`, short verify
    /// settings, and the lab's own backup and scratch directories.
    pub fn write_inventory(&self, material: &Material, spec: &TargetSpec) {
        let j = |s: &str| serde_json::to_string(s).unwrap();
        let p = |p: &Path| j(&p.display().to_string());
        let mut yaml = format!(
            "defaults:\n  user: {user}\n  port: {port}\n  identity_file: {client_key}\n  known_hosts: {kh}\n  \
             verify: {{ attempts: 6, backoff: 100ms, max_backoff: 1s, timeout: 5s, consecutive: 2 }}\n\
             certificates:\n  www:\n    cert: {cert}\n    chain: {chain}\n    key: {key}\n\
             targets:\n  - name: web-1\n    host: {host}\n    certificate: www\n    connector: {connector}\n",
            user = j(&self.sshd.user),
            port = self.sshd.port(),
            client_key = p(&self.sshd.client_key),
            kh = p(&self.sshd.known_hosts),
            cert = p(&material.cert),
            chain = p(&material.chain),
            key = p(&material.key),
            host = j(&self.sshd.host()),
            connector = j(&spec.connector),
        );
        yaml.push_str("    params:\n");
        let engine = [
            ("backup_dir", self.backup_dir()),
            ("tmp_dir", self.tmp_dir()),
        ];
        for (k, v) in engine.iter().map(|(k, v)| (*k, v.display().to_string())) {
            yaml.push_str(&format!("      {k}: {}\n", j(&v)));
        }
        for (k, v) in &spec.params {
            yaml.push_str(&format!("      {k}: {}\n", j(v)));
        }
        if !spec.commands.is_empty() {
            yaml.push_str("    commands:\n");
            for (section, cmds) in &spec.commands {
                yaml.push_str(&format!(
                    "      {section}: {}\n",
                    serde_json::to_string(cmds).unwrap()
                ));
            }
        }
        yaml.push_str(&format!(
            "    verify:\n      address: {}\n      sni: {}\n",
            j(&spec.address),
            j(SNI)
        ));
        fs::write(&self.inventory, yaml).unwrap();
    }

    /// Runs `certctl SUBCOMMAND -i INVENTORY REST...`.
    pub fn certctl(&self, args: &[&str]) -> Output {
        run_certctl(&self.inventory, args, &[])
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn backup_dir(&self) -> PathBuf {
        self.dir().join("backups")
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.dir().join(TMP_DIR)
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
        fs::read_dir(self.tmp_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }

    /// Another leaf for [`SNI`] from the lab's PKI, neither the old nor the new one.
    pub fn material(&self, name: &str) -> Material {
        let pki_dir = self.dir().join("pki");
        Material::from_leaf(&pki_dir, &self.pki.leaf(name, &[SNI]))
    }

    /// A leaf for [`SNI`] that certctl's own checks accept but OpenSSL 3 at security level 2
    /// refuses to load: signed with SHA-1 (by an RSA intermediate under its own root). Made
    /// with the openssl CLI, as a legacy in-house CA would; rcgen cannot sign with SHA-1. Valid for
    /// a year, so it outlives the served certificate (the policy gate's downgrade check passes).
    pub fn sha1_signed(&self) -> Material {
        let d = self.dir().join("sha1");
        fs::create_dir_all(&d).unwrap();
        fs::write(
            d.join("ca.ext"),
            "basicConstraints=critical,CA:true\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\n",
        )
        .unwrap();
        fs::write(
            d.join("leaf.ext"),
            format!(
                "subjectAltName=DNS:{SNI}\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
            ),
        )
        .unwrap();
        write_private(&d.join("int.key"), super::pki::rsa_key_pem().as_bytes());
        // Run in `d`, so every file name is relative (and none has a space).
        let leaf_subject = format!("/CN={SNI}");
        let ec_key = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
        for args in [
            format!("req -x509 {ec_key} -keyout root.key -out root.crt -subj /CN=legacy-root -days 365"),
            "req -new -key int.key -subj /CN=legacy-intermediate -out int.csr".to_string(),
            "x509 -req -in int.csr -CA root.crt -CAkey root.key -set_serial 1 -days 365 -extfile ca.ext -out int.crt".to_string(),
            format!("req -new {ec_key} -keyout leaf.key -subj {leaf_subject} -out leaf.csr"),
            // The point of it all: a SHA-1 signature on the leaf.
            "x509 -req -sha1 -in leaf.csr -CA int.crt -CAkey int.key -set_serial 2 -days 365 -extfile leaf.ext -out leaf.crt".to_string(),
        ] {
            let out = Command::new("openssl")
                .args(args.split_whitespace())
                .current_dir(&d)
                .stdin(Stdio::null())
                .output()
                .expect("run openssl");
            assert!(
                out.status.success(),
                "openssl {args}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let read = |name: &str| fs::read(d.join(name)).unwrap();
        let mut fullchain = read("leaf.crt");
        fullchain.extend(read("int.crt"));
        fs::write(d.join("fullchain.pem"), &fullchain).unwrap();
        let mut bundle = fullchain.clone();
        bundle.extend(read("leaf.key"));
        write_private(&d.join("bundle.pem"), &bundle);
        Material {
            cert: d.join("leaf.crt"),
            chain: d.join("int.crt"),
            key: d.join("leaf.key"),
            fullchain: d.join("fullchain.pem"),
            bundle: d.join("bundle.pem"),
            fingerprint: openssl_fingerprint(&d.join("leaf.crt")),
        }
    }
}

/// The target's report in a `--output json` run (there is one target).
pub fn target(out: &Output) -> serde_json::Value {
    out.json()["targets"][0].clone()
}

/// The names of the steps a target's report lists, in order.
pub fn steps(target: &serde_json::Value) -> Vec<String> {
    target["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap().to_string())
        .collect()
}

/// The steps that touch certificates or the server (stage … verify, rollback), in order:
/// what a connector test asserts, leaving connection bookkeeping (connect, lock, cleanup…) to
/// the engine's own tests.
pub fn deploy_steps(target: &serde_json::Value) -> Vec<String> {
    const DEPLOY: [&str; 8] = [
        "stage", "preview", "backup", "swap", "test", "reload", "verify", "rollback",
    ];
    steps(target)
        .into_iter()
        .filter(|s| DEPLOY.contains(&s.as_str()))
        .collect()
}

/// The first step named `name` at or after index `from` in a target's report: its index and
/// its JSON (`step`, `status`, `detail`, `duration_ms`).
pub fn find_step(
    target: &serde_json::Value,
    name: &str,
    from: usize,
) -> (usize, serde_json::Value) {
    let all = target["steps"].as_array().unwrap();
    all.iter()
        .enumerate()
        .skip(from)
        .find(|(_, s)| s["step"] == name)
        .map(|(i, s)| (i, s.clone()))
        .unwrap_or_else(|| panic!("no `{name}` step from index {from} in {all:?}"))
}

/// Files in `dir` whose names show they were left by certctl (staged or restore temps).
pub fn leftovers(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".certctl-"))
        .collect()
}

/// Contents and mtimes of files.
pub fn snapshot(paths: &[PathBuf]) -> Vec<(Vec<u8>, SystemTime)> {
    paths
        .iter()
        .map(|p| {
            (
                fs::read(p).unwrap(),
                fs::metadata(p).unwrap().modified().unwrap(),
            )
        })
        .collect()
}

/// Contents of files.
pub fn contents(paths: &[PathBuf]) -> Vec<Vec<u8>> {
    paths.iter().map(|p| fs::read(p).unwrap()).collect()
}

/// How many certificates a `s_client -showcerts` transcript holds.
pub fn cert_count(transcript: &str) -> usize {
    transcript.matches("-----BEGIN CERTIFICATE-----").count()
}

/// Whether a `s_client -CAfile ROOT -verify_return_error` transcript verified.
pub fn verified(transcript: &str) -> bool {
    transcript.contains("Verify return code: 0 (ok)")
}

/// Copies `src` to `dst`, created with `mode` from the first byte.
pub fn copy_with_mode(src: &Path, dst: &Path, mode: u32) {
    let data = fs::read(src).unwrap_or_else(|e| panic!("read {}: {e}", src.display()));
    let _ = fs::remove_file(dst);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(dst)
        .unwrap();
    std::io::Write::write_all(&mut file, &data).unwrap();
}

/// Copies more certificate + key pairs into `dir` as `also-N.pem` (0644) and `also-N.key`
/// (0600), for a server that holds several certificates for one name; the copies' paths.
pub fn copy_also<'a>(
    dir: &Path,
    pairs: impl IntoIterator<Item = (&'a Path, &'a Path)>,
) -> Vec<(PathBuf, PathBuf)> {
    let mut copies = Vec::new();
    for (n, (cert, key)) in pairs.into_iter().enumerate() {
        let copy = (
            dir.join(format!("also-{n}.pem")),
            dir.join(format!("also-{n}.key")),
        );
        copy_with_mode(cert, &copy.0, 0o644);
        copy_with_mode(key, &copy.1, 0o600);
        copies.push(copy);
    }
    copies
}

fn write_private(path: &Path, data: &[u8]) {
    let _ = fs::remove_file(path);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    std::io::Write::write_all(&mut file, data).unwrap();
}
