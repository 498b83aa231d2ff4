//! A lab for connectors whose product cannot run here (Kubernetes, BIG-IP): a real sshd whose
//! sessions find an EMULATOR from tests/emulators/ first on their PATH (`SetEnv PATH=…`), the
//! emulator's state in files, and an inventory with one target using the connector. The
//! emulators log every argv they receive (`argv.log`), so tests assert exact command sequences
//! and that no secret reached any command line.

use std::fs;
use std::path::{Path, PathBuf};

use super::lab::{Output, run_certctl};
use super::pki::{Leaf, Pki};
use super::sshd::Sshd;

pub const SNI: &str = "www.test.example";

pub struct EmuLab {
    pub sshd: Sshd,
    pub pki: Pki,
    pub old: Leaf,
    pub new: Leaf,
    /// The emulator's home: its copy of the script, `state/`, `argv.log`, `fail`.
    pub home: PathBuf,
    pub inventory: PathBuf,
    dir: tempfile::TempDir,
}

impl EmuLab {
    /// Starts an sshd whose PATH has `emulator` (a file name under tests/emulators/) first,
    /// installed as `installed_as` in a bin directory named `bin_name` (hostile names allowed).
    pub fn start(emulator: &str, installed_as: &str, bin_name: &str) -> EmuLab {
        super::require("python3");
        let dir = tempfile::Builder::new()
            .prefix("certctl-emu-")
            .tempdir()
            .unwrap();
        let home = dir.path().join(bin_name);
        fs::create_dir_all(home.join("state")).unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/emulators")
            .join(emulator);
        let dst = home.join(installed_as);
        fs::copy(&src, &dst).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(&dst, fs::Permissions::from_mode(0o755)).unwrap();
        // sshd's SetEnv takes whitespace-separated words: quote the value.
        let path_line = format!(
            "SetEnv \"PATH={}:/usr/local/bin:/usr/bin:/bin\"",
            home.display()
        );
        let sshd = Sshd::start_with(&[&path_line]);
        let pki = Pki::new(&dir.path().join("pki"));
        let old = pki.leaf("old", &[SNI]);
        let new = pki.leaf("new", &[SNI]);
        for sub in ["tmp", "backups"] {
            fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        EmuLab {
            inventory: dir.path().join("certctl.yaml"),
            sshd,
            pki,
            old,
            new,
            home,
            dir,
        }
    }

    /// The lab's private directory (inventory, PKI, tmp, backups, the emulator's home).
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.path("tmp")
    }

    pub fn backup_dir(&self) -> PathBuf {
        self.path("backups")
    }

    /// Writes the inventory: one target `edge-1` with `connector`, these params (plus
    /// tmp_dir and backup_dir in the lab) and, if given, a verify address.
    pub fn write_inventory(&self, connector: &str, params: &[(&str, &str)], verify: Option<&str>) {
        let j = |s: &str| serde_json::to_string(s).unwrap();
        let p = |p: &Path| j(&p.display().to_string());
        let mut yaml = format!(
            "defaults:\n  user: {user}\n  port: {port}\n  identity_file: {key}\n  known_hosts: {kh}\n  \
             verify: {{ attempts: 3, backoff: 100ms, max_backoff: 300ms, timeout: 5s, consecutive: 1 }}\n\
             certificates:\n  www:\n    cert: {cert}\n    chain: {chain}\n    key: {nkey}\n\
             targets:\n  - name: edge-1\n    host: {host}\n    certificate: www\n    connector: {connector}\n    params:\n",
            user = j(&self.sshd.user),
            port = self.sshd.port(),
            key = p(&self.sshd.client_key),
            kh = p(&self.sshd.known_hosts),
            cert = p(&self.new.cert),
            chain = p(&self.new.chain),
            nkey = p(&self.new.key),
            host = j(&self.sshd.host()),
        );
        let tmp = self.tmp_dir().display().to_string();
        let backups = self.backup_dir().display().to_string();
        let mut all: Vec<(&str, &str)> = vec![("tmp_dir", &tmp), ("backup_dir", &backups)];
        all.extend_from_slice(params);
        for (k, v) in all {
            yaml.push_str(&format!("      {k}: {}\n", j(v)));
        }
        if let Some(addr) = verify {
            yaml.push_str(&format!(
                "    verify:\n      address: {}\n      sni: {}\n",
                j(addr),
                j(SNI)
            ));
        }
        fs::write(&self.inventory, yaml).unwrap();
    }

    pub fn certctl(&self, args: &[&str]) -> Output {
        run_certctl(&self.inventory, args, &[])
    }

    /// Every argv the emulator received, in order; the log is then emptied.
    pub fn take_argv(&self) -> Vec<Vec<String>> {
        let log = self.home.join("argv.log");
        let text = fs::read_to_string(&log).unwrap_or_default();
        let _ = fs::remove_file(&log);
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Makes the emulator fail these operations (empty: none); resets call counters (`OP#N`).
    pub fn fail(&self, ops: &[&str]) {
        for e in fs::read_dir(&self.home).unwrap() {
            let p = e.unwrap().path();
            if p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("count.")
            {
                fs::remove_file(p).unwrap();
            }
        }
        fs::write(self.home.join("fail"), ops.join("\n")).unwrap();
    }

    /// Scratch directories left behind (there must be none after a run).
    pub fn scratch_dirs(&self) -> Vec<PathBuf> {
        fs::read_dir(self.tmp_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }
}

/// Asserts that no argv contains any 32-character piece of these secrets (PEM bodies, their
/// base64 forms), nor a PEM private-key header.
pub fn assert_no_secret_in_argv(argvs: &[Vec<String>], secrets: &[String]) {
    for argv in argvs {
        for arg in argv {
            for s in secrets {
                let flat: String = s.chars().filter(|c| !c.is_whitespace()).collect();
                let pieces = (0..flat.len().saturating_sub(32)).step_by(8);
                for i in pieces {
                    let piece = &flat[i..i + 32];
                    assert!(!arg.contains(piece), "a secret reached an argv: {argv:?}");
                }
            }
            assert!(
                !arg.contains("PRIVATE KEY"),
                "a key reached an argv: {argv:?}"
            );
        }
    }
}
