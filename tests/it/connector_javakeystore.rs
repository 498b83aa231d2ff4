//! End to end: the built `certctl` binary with the built-in `javakeystore` connector, against
//! a real OpenSSH sshd on loopback and the REAL keytool (OpenJDK) and openssl on the target.
//! Keystores are made at test time; what they hold is read back with `keytool -list -v`.

use crate::support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::lab::Output;
use support::pki::{Leaf, Pki, openssl_fingerprint};
use support::sshd::Sshd;

const PASS_VAR: &str = "CERTCTL_TEST_KEYSTORE_PASS";
const PASSWORD: &str = "s3cret-Keystore-pw";

struct Ks {
    sshd: Sshd,
    new: Leaf,
    old: Leaf,
    other: Leaf,
    kind: &'static str,
    keystore: PathBuf,
    inventory: PathBuf,
    dir: tempfile::TempDir,
}

impl Ks {
    /// A keystore of `kind` (PKCS12 or JKS) holding the OLD certificate under `certctl` and an
    /// unrelated entry under `other` (when `existing`), and an inventory deploying the NEW one.
    fn start(kind: &'static str, existing: bool) -> Ks {
        support::require("keytool");
        let dir = tempfile::Builder::new()
            .prefix("certctl-jks-")
            .tempdir()
            .unwrap();
        let pki_dir = dir.path().join("pki");
        for sub in ["pki", "tmp", "store"] {
            fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let pki = Pki::new(&pki_dir);
        let old = pki.leaf("old", &["app.test.example"]);
        let new = pki.leaf("new", &["app.test.example"]);
        let other = pki.leaf("other", &["other.test.example"]);
        let ext = if kind == "JKS" { "jks" } else { "p12" };
        let ks = Ks {
            sshd: Sshd::start(),
            new,
            old,
            other,
            kind,
            keystore: dir.path().join("store").join(format!("app.{ext}")),
            inventory: dir.path().join("certctl.yaml"),
            dir,
        };
        fs::write(ks.pass_file(), PASSWORD).unwrap();
        if existing {
            ks.import(&ks.old.clone(), "certctl");
            ks.import(&ks.other.clone(), "other");
            use std::os::unix::fs::PermissionsExt as _;
            fs::set_permissions(&ks.keystore, fs::Permissions::from_mode(0o640)).unwrap();
        }
        ks.write_inventory(&[]);
        ks
    }

    fn pass_file(&self) -> PathBuf {
        self.dir.path().join("pki").join("storepass")
    }

    /// Imports `leaf` (with its chain) into the keystore under `alias`, as an operator would.
    fn import(&self, leaf: &Leaf, alias: &str) {
        let p12 = self.dir.path().join("pki").join(format!("{alias}.p12"));
        let pass = format!("file:{}", self.pass_file().display());
        support::pki::openssl_ok(&[
            "pkcs12",
            "-export",
            "-in",
            s(&leaf.fullchain),
            "-inkey",
            s(&leaf.key),
            "-name",
            alias,
            "-out",
            s(&p12),
            "-passout",
            &pass,
        ]);
        let pw = self.pass_file();
        let (code, text) = keytool(&[
            "-importkeystore",
            "-noprompt",
            "-srckeystore",
            s(&p12),
            "-srcstoretype",
            "PKCS12",
            "-srcstorepass:file",
            s(&pw),
            "-srcalias",
            alias,
            "-destkeystore",
            s(&self.keystore),
            "-deststoretype",
            self.kind,
            "-deststorepass:file",
            s(&pw),
            "-destkeypass:file",
            s(&pw),
            "-destalias",
            alias,
        ]);
        assert_eq!(code, 0, "{text}");
    }

    fn write_inventory(&self, commands: &[(&str, Vec<Vec<String>>)]) {
        let j = |v: &str| serde_json::to_string(v).unwrap();
        let p = |v: &Path| j(&v.display().to_string());
        let mut yaml = format!(
            "defaults:\n  user: {user}\n  port: {port}\n  identity_file: {key}\n  known_hosts: {kh}\n\
             certificates:\n  app:\n    cert: {cert}\n    chain: {chain}\n    key: {leafkey}\n\
             targets:\n  - name: ks-1\n    host: {host}\n    certificate: app\n    connector: javakeystore\n\
             \x20   params:\n      keystore_path: {ks}\n      keystore_type: {kind}\n      password_env: {var}\n\
             \x20     backup_dir: {backups}\n      tmp_dir: {tmp}\n",
            user = j(&self.sshd.user),
            port = self.sshd.port(),
            key = p(&self.sshd.client_key),
            kh = p(&self.sshd.known_hosts),
            cert = p(&self.new.cert),
            chain = p(&self.new.chain),
            leafkey = p(&self.new.key),
            host = j(&self.sshd.host()),
            ks = p(&self.keystore),
            kind = self.kind,
            var = PASS_VAR,
            backups = p(&self.backup_dir()),
            tmp = p(&self.dir.path().join("tmp")),
        );
        if !commands.is_empty() {
            yaml.push_str("    commands:\n");
            for (section, cmds) in commands {
                yaml.push_str(&format!(
                    "      {section}: {}\n",
                    serde_json::to_string(cmds).unwrap()
                ));
            }
        }
        fs::write(&self.inventory, yaml).unwrap();
    }

    fn backup_dir(&self) -> PathBuf {
        self.dir.path().join("backups")
    }

    /// Runs certctl with the password in its environment (`Some`) or without the variable.
    fn certctl(&self, args: &[&str], password: Option<&str>) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_certctl"));
        cmd.arg(args[0])
            .arg("-i")
            .arg(&self.inventory)
            .args(&args[1..]);
        cmd.env_remove("SSH_AUTH_SOCK")
            .env_remove(PASS_VAR)
            .env("NO_COLOR", "1")
            .env("RUST_BACKTRACE", "0");
        if let Some(pw) = password {
            cmd.env(PASS_VAR, pw);
        }
        let out = cmd.output().expect("run certctl");
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn deploy(&self, extra: &[&str]) -> Output {
        let mut args = vec!["deploy", "--output", "json"];
        args.extend(extra);
        self.certctl(&args, Some(PASSWORD))
    }

    /// `keytool -list -v` of one alias: (exit code, output).
    fn list(&self, alias: &str) -> (i32, String) {
        let pw = self.pass_file();
        keytool(&[
            "-list",
            "-v",
            "-keystore",
            s(&self.keystore),
            "-storepass:file",
            s(&pw),
            "-alias",
            alias,
        ])
    }

    /// The SHA-256 fingerprints keytool lists for `alias`, leaf first, and the chain length.
    fn entry(&self, alias: &str) -> (Vec<String>, usize) {
        let (code, text) = self.list(alias);
        assert_eq!(code, 0, "{text}");
        let fps = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("SHA256: "))
            .map(str::to_string)
            .collect();
        let len = text
            .lines()
            .find_map(|l| l.strip_prefix("Certificate chain length: "))
            .map(|n| n.trim().parse().unwrap())
            .unwrap_or(0);
        (fps, len)
    }

    /// Files certctl left: staged names beside the keystore, scratch directories.
    fn leftovers(&self) -> Vec<String> {
        let staged = fs::read_dir(self.keystore.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".certctl-"));
        let scratch = fs::read_dir(self.dir.path().join("tmp"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned());
        staged.chain(scratch).collect()
    }

    fn backup_sets(&self) -> usize {
        fs::read_dir(self.backup_dir())
            .map(|d| {
                d.filter(|e| {
                    let name = e.as_ref().unwrap().file_name();
                    !name.to_string_lossy().starts_with('.')
                })
                .count()
            })
            .unwrap_or(0)
    }

    /// The private key's base64 body lines, to look for in certctl's output.
    fn key_lines(&self) -> Vec<String> {
        fs::read_to_string(&self.new.key)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() > 16)
            .map(str::to_string)
            .collect()
    }

    /// Neither the password nor any line of the key appears in certctl's output.
    fn assert_no_secrets(&self, out: &Output) {
        for text in [&out.stdout, &out.stderr] {
            assert!(!text.contains(PASSWORD), "the password leaked:\n{text}");
            for line in self.key_lines() {
                assert!(!text.contains(&line), "the private key leaked:\n{text}");
            }
        }
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn keytool(args: &[&str]) -> (i32, String) {
    let out = Command::new("keytool")
        .args(args)
        .output()
        .expect("run keytool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn steps(target: &serde_json::Value) -> Vec<(String, String)> {
    target["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn fp(leaf: &Leaf) -> String {
    openssl_fingerprint(&leaf.cert)
}

/// Deploys into an existing keystore of `kind`: the alias gets the new leaf and chain, the
/// other entry and the file's mode survive, a backup is taken, nothing is left behind.
fn deploys_into_existing(kind: &'static str) {
    let ks = Ks::start(kind, true);
    let (before, _) = ks.entry("certctl");
    assert_eq!(before[0], fp(&ks.old));
    let other_before = ks.entry("other");

    let out = ks.deploy(&[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    ks.assert_no_secrets(&out);
    let report = out.json();
    let target = &report["targets"][0];
    assert_eq!(target["status"], "deployed", "{}", out.stdout);
    assert_eq!(target["new_fingerprint"], fp(&ks.new).as_str());
    let files = target["files"].as_array().unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0]["role"], "keystore");
    assert_eq!(files[0]["action"], "replace");
    assert_eq!(files[0]["mode"], "0640");
    // No TLS endpoint: the verify step is recorded as skipped.
    let steps = steps(target);
    assert!(
        steps.contains(&("verify".into(), "skipped".into())),
        "{steps:?}"
    );

    let (fps, chain_len) = ks.entry("certctl");
    assert_eq!(fps[0], fp(&ks.new), "the alias holds the NEW leaf");
    assert_eq!(chain_len, 2, "leaf + intermediate");
    assert_eq!(
        ks.entry("other"),
        other_before,
        "the unrelated entry survives"
    );
    assert_eq!(support::mode(&ks.keystore), 0o640, "the mode is kept");
    assert_eq!(ks.backup_sets(), 1);
    assert!(ks.leftovers().is_empty(), "{:?}", ks.leftovers());
    // Still of its type: a JKS file starts with the magic 0xFEEDFEED, a PKCS12 one is DER.
    let bytes = fs::read(&ks.keystore).unwrap();
    assert_eq!(bytes.starts_with(&[0xfe, 0xed, 0xfe, 0xed]), kind == "JKS");

    // A keystore cannot be compared by hash: the next run re-imports (and stays correct).
    let out = ks.deploy(&[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["targets"][0]["status"], "deployed");
    assert_eq!(ks.entry("certctl").0[0], fp(&ks.new));
    assert_eq!(ks.entry("other"), other_before);
}

#[test]
fn deploy_into_existing_pkcs12_keystore() {
    deploys_into_existing("PKCS12");
}

#[test]
fn deploy_into_existing_jks_keystore() {
    deploys_into_existing("JKS");
}

#[test]
fn deploy_creates_a_new_private_keystore() {
    let ks = Ks::start("PKCS12", false);
    assert!(!ks.keystore.exists());
    let out = ks.deploy(&[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let target = &out.json()["targets"][0];
    assert_eq!(target["status"], "deployed");
    assert_eq!(target["files"][0]["action"], "create");
    assert_eq!(support::mode(&ks.keystore), 0o600);
    let (fps, chain_len) = ks.entry("certctl");
    assert_eq!(fps[0], fp(&ks.new));
    assert_eq!(chain_len, 2);
    assert!(ks.leftovers().is_empty(), "{:?}", ks.leftovers());

    // Nothing to probe: `verify` reports the target skipped, and that is not a failure.
    let out = ks.certctl(&["verify", "--output", "json"], Some(PASSWORD));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let target = &out.json()["targets"][0];
    assert_eq!(target["status"], "skipped");
    assert!(
        target["error"].as_str().unwrap().contains("verify.address"),
        "{target}"
    );
}

#[test]
fn dry_run_changes_nothing_and_reports_would_change() {
    let ks = Ks::start("PKCS12", true);
    let before = fs::read(&ks.keystore).unwrap();
    let out = ks.deploy(&["--dry-run"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    ks.assert_no_secrets(&out);
    let target = &out.json()["targets"][0];
    assert_eq!(target["status"], "would-change");
    let names: Vec<String> = steps(target).into_iter().map(|(s, _)| s).collect();
    assert_eq!(
        names,
        ["connect", "lock", "inspect", "stage", "preview", "cleanup"]
    );
    assert_eq!(fs::read(&ks.keystore).unwrap(), before, "byte-identical");
    assert!(ks.leftovers().is_empty(), "{:?}", ks.leftovers());
    assert_eq!(ks.backup_sets(), 0);
}

#[test]
fn wrong_password_is_would_fail_with_keytools_message() {
    let ks = Ks::start("PKCS12", true);
    let before = fs::read(&ks.keystore).unwrap();
    let out = ks.certctl(
        &["deploy", "--dry-run", "--output", "json"],
        Some("not-the-password"),
    );
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(!out.stdout.contains("not-the-password"));
    assert!(!out.stderr.contains("not-the-password"));
    let target = &out.json()["targets"][0];
    assert_eq!(target["status"], "would-fail");
    let error = target["error"].as_str().unwrap();
    assert!(error.starts_with("preview failed"), "{error}");
    assert!(error.contains("password was incorrect"), "{error}");
    assert_eq!(fs::read(&ks.keystore).unwrap(), before);
    assert!(ks.leftovers().is_empty(), "{:?}", ks.leftovers());

    // Without --dry-run: `failed`, and still nothing changed.
    let out = ks.certctl(&["deploy", "--output", "json"], Some("not-the-password"));
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(out.json()["targets"][0]["status"], "failed");
    assert_eq!(fs::read(&ks.keystore).unwrap(), before);
    assert_eq!(ks.backup_sets(), 0);
}

#[test]
fn failure_after_the_swap_restores_the_keystore_byte_for_byte() {
    let ks = Ks::start("JKS", true);
    let before = fs::read(&ks.keystore).unwrap();
    let original = ks.dir.path().join("pki").join("original");
    fs::write(&original, &before).unwrap();
    // The live test passes on the original keystore only: it fails once the new one is live.
    let script = format!(
        "cmp -s '{}' '{}' || {{{{ echo 'injected: new keystore rejected' >&2; exit 1; }}}}",
        ks.keystore.display(),
        original.display()
    );
    ks.write_inventory(&[("test", vec![vec!["sh".into(), "-c".into(), script]])]);
    let out = ks.deploy(&[]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    ks.assert_no_secrets(&out);
    let target = &out.json()["targets"][0];
    assert_eq!(target["status"], "rolled-back", "{}", out.stdout);
    let error = target["error"].as_str().unwrap();
    assert!(error.contains("injected: new keystore rejected"), "{error}");
    assert!(error.contains("checked by SHA-256"), "{error}");
    assert_eq!(
        fs::read(&ks.keystore).unwrap(),
        before,
        "restored byte-for-byte"
    );
    assert_eq!(support::mode(&ks.keystore), 0o640);
    assert_eq!(ks.entry("certctl").0[0], fp(&ks.old));
    assert!(ks.leftovers().is_empty(), "{:?}", ks.leftovers());
}

#[test]
fn the_password_variable_is_required() {
    let ks = Ks::start("PKCS12", true);
    let before = fs::read(&ks.keystore).unwrap();
    for password in [None, Some("")] {
        let out = ks.certctl(&["deploy", "--output", "json"], password);
        assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
        let all = format!("{}{}", out.stdout, out.stderr);
        assert!(all.contains(PASS_VAR), "{all}");
        assert!(all.contains("ks-1"), "{all}");
    }
    assert_eq!(fs::read(&ks.keystore).unwrap(), before);
    assert_eq!(ks.sshd.log().matches("Accepted publickey").count(), 0);
}
