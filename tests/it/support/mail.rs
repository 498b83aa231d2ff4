//! Shared pieces of the postfix and dovecot end-to-end tests: `openssl s_client` with STARTTLS
//! (independent of certctl's probe), stopping a daemon's process tree by PID, and [`MailLab`]:
//! a test PKI with an OLD and a NEW certificate, a real sshd, and an inventory writer for one
//! target. The daemon itself comes from [`super::postfix`] or [`super::dovecot`].

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;

use super::lab::{Cert, Output, run_certctl};
use super::pki::{KeyType, Leaf, LeafOpts, Pki, openssl_fingerprint, openssl_ok};
use super::sshd::Sshd;

/// The name on the lab's certificates, sent as SNI.
pub const SNI: &str = "mail.test.example";

/// How `openssl s_client` reaches TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Starttls {
    /// TLS from the first byte (IMAPS).
    None,
    Smtp,
    Imap,
}

/// Copies `src` to `dst` (replacing it), created with `mode` from the first byte.
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

/// A file to send a daemon's stdout/stderr to (instead of a pipe nobody drains).
pub fn log_file(path: &Path) -> Stdio {
    Stdio::from(fs::File::create(path).expect("create a log file"))
}

/// Whether `pid` exists and is not a zombie (PID 1 here reaps orphans only every ~2 s).
pub fn process_running(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

/// The process group of `pid`.
fn process_group(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// Stops a daemon's master: TERM (it stops its children), then, after `timeout`, KILL to its
/// own process group if it leads one (postfix's and dovecot's masters do), else to it alone.
pub fn stop_process_tree(pid: u32, timeout: Duration) {
    let kill = |signal: &str, target: String| {
        let _ = Command::new("kill")
            .args([signal, "--", &target])
            .stderr(Stdio::null())
            .status();
    };
    kill("-TERM", pid.to_string());
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !process_running(pid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if process_group(pid) == Some(pid) {
        kill("-KILL", format!("-{pid}"));
    } else {
        kill("-KILL", pid.to_string());
    }
}

/// `openssl s_client` (stdout + stderr) against `addr`, with STARTTLS as `mode` says.
pub fn s_client(addr: SocketAddr, mode: Starttls, sni: Option<&str>, extra: &[&str]) -> String {
    let mut args: Vec<&str> = Vec::new();
    match mode {
        Starttls::None => {}
        Starttls::Smtp => args.extend(["-starttls", "smtp"]),
        Starttls::Imap => args.extend(["-starttls", "imap"]),
    }
    args.extend(extra);
    let out = super::nginx::s_client(&addr.to_string(), sni, &args);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The served leaf's fingerprint (`AB:CD:…`) as openssl sees it, or `None`.
pub fn served_fingerprint(addr: SocketAddr, mode: Starttls, sni: Option<&str>) -> Option<String> {
    let transcript = s_client(addr, mode, sni, &[]);
    let begin = transcript.find("-----BEGIN CERTIFICATE-----")?;
    let end = transcript[begin..].find("-----END CERTIFICATE-----")? + begin;
    let pem = &transcript[begin..end + "-----END CERTIFICATE-----".len()];
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run openssl x509");
    let _ = std::io::Write::write_all(x509.stdin.as_mut().unwrap(), pem.as_bytes());
    let result = x509.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&result.stdout);
    let fp = text.trim().rsplit('=').next()?.to_string();
    (result.status.success() && !fp.is_empty()).then_some(fp)
}

/// Polls until `fingerprint` is served 3 times in a row, or `timeout` passes.
pub fn wait_until_served(
    addr: SocketAddr,
    mode: Starttls,
    sni: Option<&str>,
    fingerprint: &str,
    timeout: Duration,
) -> bool {
    let deadline = Instant::now() + timeout;
    let mut streak = 0;
    while Instant::now() < deadline {
        if served_fingerprint(addr, mode, sni).as_deref() == Some(fingerprint) {
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

/// What is served once it is stable: the same answer 3 times in a row (or the last answer
/// after 10 s). An empty string means no certificate (handshake or STARTTLS failed).
pub fn stable_fingerprint(addr: SocketAddr, mode: Starttls) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = String::new();
    let mut streak = 0;
    loop {
        let now = served_fingerprint(addr, mode, Some(SNI)).unwrap_or_default();
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

/// How many certificates the server sends (leaf + intermediates).
pub fn served_chain_len(addr: SocketAddr, mode: Starttls) -> usize {
    s_client(addr, mode, Some(SNI), &["-showcerts"])
        .matches("-----BEGIN CERTIFICATE-----")
        .count()
}

/// Whether the served chain verifies up to `root` (only if the intermediate is sent).
pub fn chain_verifies(addr: SocketAddr, mode: Starttls, root: &Path) -> bool {
    s_client(
        addr,
        mode,
        Some(SNI),
        &["-CAfile", root.to_str().unwrap(), "-verify_return_error"],
    )
    .contains("Verify return code: 0 (ok)")
}

/// Contents and mtimes of `paths`.
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

/// Contents of `paths`.
pub fn contents(paths: &[PathBuf]) -> Vec<Vec<u8>> {
    paths.iter().map(|p| fs::read(p).unwrap()).collect()
}

/// Names in `dir` that show they were left by certctl (staged or restore temp files).
pub fn leftovers(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".certctl-"))
        .collect()
}

/// The `step` names of a target in a JSON report.
pub fn steps(target: &serde_json::Value) -> Vec<String> {
    target["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap().to_string())
        .collect()
}

/// One target of the lab's inventory.
#[derive(Debug, Clone, Default)]
pub struct TargetSpec {
    pub connector: String,
    pub params: Vec<(String, String)>,
    /// Per-section command overrides (`commands:`).
    pub commands: Vec<(String, Vec<Vec<String>>)>,
    /// `verify.address`.
    pub address: String,
    /// `verify.starttls`; `None` leaves the connector's default.
    pub starttls: Option<String>,
    /// Material other than the lab's NEW certificate: `(cert, key)`.
    pub material: Option<(PathBuf, PathBuf)>,
}

/// Test PKI, OLD and NEW certificates, a real sshd, a private directory for backups and
/// scratch dirs, and the inventory that points certctl at one target.
pub struct MailLab {
    pub pki: Pki,
    pub old: Cert,
    pub new: Cert,
    pub sshd: Sshd,
    pub inventory: PathBuf,
    dir: tempfile::TempDir,
}

impl MailLab {
    pub fn new() -> MailLab {
        let dir = tempfile::Builder::new()
            .prefix("certctl-mail-lab-")
            .tempdir()
            .unwrap();
        let pki = Pki::new(&dir.path().join("pki"));
        let old = cert(pki.leaf("old", &[SNI]));
        let new = cert(pki.leaf("new", &[SNI]));
        for sub in ["tmp", "backups"] {
            fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        MailLab {
            pki,
            old,
            new,
            sshd: Sshd::start(),
            inventory: dir.path().join("certctl.yaml"),
            dir,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The target's `backup_dir`.
    pub fn backup_dir(&self) -> PathBuf {
        self.dir().join("backups/mail-1")
    }

    /// The target's `tmp_dir` (scratch directories are made inside).
    pub fn tmp_dir(&self) -> PathBuf {
        self.dir().join("tmp")
    }

    /// Backup sets taken so far.
    pub fn backup_sets(&self) -> Vec<PathBuf> {
        match fs::read_dir(self.backup_dir()) {
            Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Scratch directories left in the tmp_dir.
    pub fn scratch_dirs(&self) -> Vec<PathBuf> {
        fs::read_dir(self.tmp_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }

    /// (Re)writes the inventory: one target `mail-1` on the lab's sshd, short verify settings.
    pub fn write_inventory(&self, spec: &TargetSpec) {
        let j = |s: &str| serde_json::to_string(s).unwrap();
        let p = |p: &Path| j(&p.display().to_string());
        let (cert, key) = spec
            .material
            .clone()
            .unwrap_or_else(|| (self.new.cert.clone(), self.new.key.clone()));
        let mut yaml = format!(
            "defaults:\n  user: {user}\n  port: {port}\n  identity_file: {client_key}\n  known_hosts: {kh}\n  \
             verify: {{ attempts: 6, backoff: 100ms, max_backoff: 1s, timeout: 5s, consecutive: 2 }}\n\
             certificates:\n  mail:\n    cert: {cert}\n    chain: {chain}\n    key: {key}\n\
             targets:\n  - name: mail-1\n    host: {host}\n    certificate: mail\n    connector: {connector}\n",
            user = j(&self.sshd.user),
            port = self.sshd.port(),
            client_key = p(&self.sshd.client_key),
            kh = p(&self.sshd.known_hosts),
            cert = p(&cert),
            chain = p(&self.new.chain),
            key = p(&key),
            host = j(&self.sshd.host()),
            connector = j(&spec.connector),
        );
        yaml.push_str("    params:\n");
        let engine = [
            ("backup_dir", self.backup_dir()),
            ("tmp_dir", self.tmp_dir()),
        ];
        for (k, v) in engine
            .iter()
            .map(|(k, v)| (k.to_string(), v.display().to_string()))
            .chain(spec.params.iter().cloned())
        {
            yaml.push_str(&format!("      {k}: {}\n", j(&v)));
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
        if let Some(mode) = &spec.starttls {
            yaml.push_str(&format!("      starttls: {}\n", j(mode)));
        }
        fs::write(&self.inventory, yaml).unwrap();
    }

    /// Runs `certctl SUBCOMMAND -i INVENTORY REST...`.
    pub fn certctl(&self, args: &[&str]) -> Output {
        run_certctl(&self.inventory, args, &[])
    }

    /// An Ed25519 leaf whose key is written the way ring (and so rcgen and rustls-based tools)
    /// writes Ed25519 keys: PKCS#8 v2, the public key included. ring, and so certctl's local
    /// material check, reads it; OpenSSL 3.0 says "unsupported". Returns `(cert, key)`.
    pub fn ed25519_key_openssl_cannot_read(&self) -> (PathBuf, PathBuf) {
        let leaf = self
            .pki
            .issue("ed25519", LeafOpts::new(&[SNI]).key(KeyType::Ed25519));
        let v1 = pem_body(&leaf.key_pem);
        let seed = &v1[v1.len() - 32..];
        let public = openssl_ok(&[
            "pkey",
            "-in",
            leaf.key.to_str().unwrap(),
            "-pubout",
            "-outform",
            "DER",
        ]);
        let public = &public[public.len() - 32..];
        let mut v2 = Vec::new();
        v2.extend_from_slice(&RING_ED25519_V2_PREFIX);
        v2.extend_from_slice(seed);
        v2.extend_from_slice(&RING_ED25519_V2_MIDDLE);
        v2.extend_from_slice(public);
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(&v2)
        );
        let key = self.pki.write_file("ed25519.v2.key", pem.as_bytes());
        (leaf.cert, key)
    }
}

/// ring's Ed25519 PKCS#8 v2 template (RFC 5958 OneAsymmetricKey): SEQUENCE, version 1,
/// id-Ed25519, the 32-byte seed …
pub const RING_ED25519_V2_PREFIX: [u8; 16] = [
    0x30, 0x51, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// … then `[1] IMPLICIT BIT STRING`: the 32-byte public key.
pub const RING_ED25519_V2_MIDDLE: [u8; 3] = [0x81, 0x21, 0x00];

/// Fails unless a key ring writes today (through rcgen) has the layout the fixture copies.
pub fn assert_fixture_is_rings_ed25519_layout() {
    let der = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
        .unwrap()
        .serialize_der();
    assert_eq!(der.len(), 83, "ring's Ed25519 PKCS#8 v2 is 83 bytes");
    assert_eq!(der[..16], RING_ED25519_V2_PREFIX);
    assert_eq!(der[48..51], RING_ED25519_V2_MIDDLE);
}

/// The DER inside a one-block PEM.
pub fn pem_body(pem: &str) -> Vec<u8> {
    let b64: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("PEM base64")
}

fn cert(leaf: Leaf) -> Cert {
    Cert {
        fingerprint: openssl_fingerprint(&leaf.cert),
        cert: leaf.cert.clone(),
        chain: leaf.chain.clone(),
        fullchain: leaf.fullchain.clone(),
        key: leaf.key.clone(),
    }
}
