//! A lab for the Windows connectors (iis, wincertstore): an [`EmuLab`] whose sessions find
//! the EMULATED PowerShell (tests/emulators/powershell) as `powershell` (a wrapper that points
//! it at this lab's state), seeded with the OLD certificate in `Cert:\LocalMachine\My` and,
//! for iis, bound to an https binding of a site with a hostile name.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use certctl::material::{KeySource, Material, MaterialSpec};
use certctl::pkcs12;
use certctl::ssh::quote::quote_powershell as q;
use serde_json::Value;

use super::emulated::{EmuLab, SNI};
use super::pki::Leaf;
use super::users::LoginUser;

/// A site name hostile to every naive quoting: spaces, quotes, `$`, backticks, `;`.
pub const SITE: &str = "Default 'Web' $x `y`; z";

/// The statement that reads the PFX password from its 0600 file into a SecureString.
pub const READ_PASSWORD: &str = "$pw = ConvertTo-SecureString -String (Get-Content -Raw -LiteralPath '<scratch>/new.pfx.password') -AsPlainText -Force";

/// An expected script as [`WinLab::take_scripts`] returns it: certctl's fixed first
/// statement, then `statements`.
pub fn script(statements: &[&str]) -> Vec<String> {
    let mut out = vec!["$ErrorActionPreference = 'Stop'".to_string()];
    out.extend(statements.iter().map(|x| x.to_string()));
    out
}

/// The preview script both connectors start with: the PFX decrypts with its password.
pub fn pfx_preview() -> Vec<String> {
    script(&[
        READ_PASSWORD,
        "$d = Get-PfxData -FilePath '<scratch>/new.pfx' -Password $pw",
        "$d.EndEntityCertificates[0].Thumbprint",
    ])
}

/// The test script of both connectors: the new certificate is in the store, with its key.
pub fn test_script() -> Vec<String> {
    script(&[
        "$c = Get-Item -LiteralPath 'Cert:\\LocalMachine\\My\\NEW'",
        "$c.HasPrivateKey",
    ])
}

pub struct WinLab {
    pub lab: EmuLab,
    pub state: PathBuf,
    pub old_thumb: String,
    pub new_thumb: String,
}

pub fn thumbprint(leaf: &Leaf) -> String {
    pkcs12::thumbprint(&material(leaf).leaf.der)
}

fn material(leaf: &Leaf) -> Material {
    Material::load(&MaterialSpec::new(
        leaf.name.clone(),
        leaf.cert.clone(),
        Some(leaf.chain.clone().into()),
        KeySource::File(leaf.key.clone()),
    ))
    .unwrap()
}

impl WinLab {
    /// `bind`: the OLD certificate bound to SITE:443:SNI (iis); else only in the store.
    pub fn start(bind: bool) -> WinLab {
        let lab = EmuLab::start("powershell", "powershell.py", "bin");
        let state = lab.home.join("state");
        let wrapper = format!(
            "#!/bin/sh\nCERTCTL_EMU_STATE='{}' exec '{}' \"$@\"\n",
            state.display(),
            lab.home.join("powershell.py").display()
        );
        fs::write(lab.home.join("powershell"), wrapper).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(
            lab.home.join("powershell"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let site = serde_json::to_string(SITE).unwrap();
        fs::write(
            state.join("state.json"),
            format!(r#"{{"sites": {{{site}: []}}}}"#),
        )
        .unwrap();
        let old_thumb = thumbprint(&lab.old);
        let new_thumb = thumbprint(&lab.new);
        let w = WinLab {
            lab,
            state,
            old_thumb,
            new_thumb,
        };
        let old = w.lab.old.clone();
        w.import(&old, "old");
        if bind {
            w.run_local(&format!(
                "$ErrorActionPreference = 'Stop'\nImport-Module WebAdministration\n\
                 New-WebBinding -Name {site} -Protocol 'https' -Port 443 -HostHeader {sni} -SslFlags 1\n\
                 $b = Get-WebBinding -Name {site} -Protocol 'https' -Port 443 -HostHeader {sni}\n\
                 $b.AddSslCertificate({t}, 'My')\n",
                site = q(SITE),
                sni = q(SNI),
                t = q(&w.old_thumb)
            ));
        }
        w.reset_log();
        w
    }

    /// Runs `hook` (an executable, no arguments) after every script that changed a binding
    /// (CERTCTL_EMU_ON_BIND), e.g. to copy served/ into a TLS server and reload it.
    pub fn on_bind(&self, hook: &std::path::Path) {
        let wrapper = format!(
            "#!/bin/sh\nCERTCTL_EMU_STATE='{}' CERTCTL_EMU_ON_BIND='{}' exec '{}' \"$@\"\n",
            self.state.display(),
            hook.display(),
            self.lab.home.join("powershell.py").display()
        );
        fs::write(self.lab.home.join("powershell"), wrapper).unwrap();
    }

    /// The served certificate and key of SITE:443:SNI (what IIS would serve).
    pub fn served(&self) -> (PathBuf, PathBuf) {
        let name: String = format!("{SITE}_443_{SNI}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let dir = self.state.join("served");
        (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        )
    }

    /// Imports `leaf` into LocalMachine\My directly (not through certctl).
    pub fn import(&self, leaf: &Leaf, name: &str) {
        let password = pkcs12::random_password().unwrap();
        let pfx = pkcs12::from_material(&material(leaf), &password, None).unwrap();
        let pfx_path = self.lab.path(&format!("{name}.pfx"));
        let pw_path = self.lab.path(&format!("{name}.pw"));
        fs::write(&pfx_path, pfx.expose()).unwrap();
        fs::write(&pw_path, password.expose()).unwrap();
        self.run_local(&format!(
            "$ErrorActionPreference = 'Stop'\n\
             $pw = ConvertTo-SecureString -String (Get-Content -Raw -LiteralPath {pw}) -AsPlainText -Force\n\
             $c = Import-PfxCertificate -FilePath {pfx} -CertStoreLocation 'Cert:\\LocalMachine\\My' -Password $pw\n",
            pw = q(pw_path.to_str().unwrap()),
            pfx = q(pfx_path.to_str().unwrap()),
        ));
        self.reset_log();
    }

    fn run_local(&self, script: &str) {
        use std::io::Write as _;
        let mut child = Command::new("python3")
            .arg(self.lab.home.join("powershell.py"))
            .args(["-NoProfile", "-NonInteractive", "-Command", "-"])
            .env("CERTCTL_EMU_STATE", &self.state)
            .env_remove("CERTCTL_EMU_FAIL")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "seeding failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `certctl ARGS --output json` and asserts the one target ended with `status`
    /// (exit 0 for `deployed`, `rolled-back` by `certctl rollback`, `would-change`); returns
    /// the target's report.
    pub fn run(&self, args: &[&str], status: &str) -> Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let out = self.lab.certctl(&all);
        let t = out.json()["targets"][0].clone();
        assert_eq!(t["status"], status, "{}\n{}", out.stdout, out.stderr);
        let clean = matches!(status, "deployed" | "would-change")
            || (status == "rolled-back" && args[0] == "rollback");
        if clean {
            assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
        } else {
            assert_ne!(out.code, 0, "{}", out.stdout);
        }
        t
    }

    pub fn reset_log(&self) {
        let _ = fs::remove_file(self.state.join("powershell.log"));
    }

    pub fn log(&self) -> Vec<Value> {
        fs::read_to_string(self.state.join("powershell.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(self.state.join("powershell.log")).unwrap_or_default()
    }

    /// The statements the emulator ran, each script's as one list, with the scratch
    /// directory written `<scratch>`, the backup directory `<backups>`, the run id `RUN`, and
    /// the thumbprints `OLD`/`NEW`; then the log is emptied.
    pub fn take_scripts(&self) -> Vec<Vec<String>> {
        let tmp = format!("{}/certctl-", self.lab.tmp_dir().display());
        let backups = self.lab.backup_dir().display().to_string();
        let mut scripts: Vec<Vec<String>> = Vec::new();
        for e in self.log() {
            if e.get("argv").is_some() {
                scripts.push(Vec::new());
            }
            if let Some(s) = e.get("stmt").and_then(Value::as_str) {
                let mut s = s
                    .replace(&self.old_thumb, "OLD")
                    .replace(&self.new_thumb, "NEW");
                while let Some(i) = s.find(&tmp) {
                    let rest = &s[i + tmp.len()..];
                    let end = rest.find('/').unwrap();
                    s = format!("{}<scratch>{}", &s[..i], &rest[end..]);
                }
                s = s.replace(&backups, "<backups>");
                if let Some(i) = s.find("<backups>/") {
                    let rest = &s[i + "<backups>/".len()..];
                    let end = rest.find('/').unwrap();
                    s = format!("{}<backups>/RUN{}", &s[..i], &rest[end..]);
                }
                scripts.last_mut().unwrap().push(s);
            }
        }
        self.reset_log();
        scripts
    }

    pub fn state_json(&self) -> Value {
        serde_json::from_slice(&fs::read(self.state.join("state.json")).unwrap()).unwrap()
    }

    /// The thumbprint bound to SITE:443:SNI ("" when none).
    pub fn bound(&self) -> String {
        let s = self.state_json();
        s["sites"][SITE][0]["certificateHash"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// How often a binding that had a certificate lost it (RemoveSslCertificate): a moment
    /// in which IIS served none on it, counted by the emulator across scripts.
    pub fn unbound(&self) -> u64 {
        self.state_json()["unbound"].as_u64().unwrap_or(0)
    }

    /// The thumbprints in LocalMachine\My.
    pub fn my_store(&self) -> Vec<String> {
        let s = self.state_json();
        s["stores"]["LocalMachine\\My"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Faults for the next calls (`Name@N` counts every call since the lab started).
    pub fn fail(&self, faults: &[&str]) {
        fs::write(self.state.join("fail"), faults.join("\n")).unwrap();
    }

    /// Asserts no statement or argv the emulator logged holds a piece of the new key or the
    /// words "PRIVATE KEY", and no PFX password (any 32-character alphanumeric word).
    pub fn assert_no_secret_logged(&self, log: &str) {
        let key = fs::read_to_string(&self.lab.new.key).unwrap();
        let flat: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
        for i in (0..flat.len().saturating_sub(24)).step_by(8) {
            assert!(!log.contains(&flat[i..i + 24]), "a key piece was logged");
        }
        assert!(!log.contains("PRIVATE KEY"));
        // pkcs12::random_password: exactly 32 letters and digits.
        let words = log.split(|c: char| !c.is_ascii_alphanumeric());
        assert!(
            words.into_iter().all(|w| w.len() != 32),
            "a 32-character word (a PFX password?) was logged"
        );
    }
}

/// A [`WinLab`] whose sshd login user has NO POSIX shell: its login shell is the emulated
/// `cmd.exe` (tests/emulators/cmd), which runs only `powershell …` command lines and logs every
/// command line it receives. SFTP goes to sshd's `internal-sftp`, as Windows OpenSSH runs
/// sftp-server.exe without a shell.
pub struct WindowsShellLab {
    // Declared first: the lab (and its sshd) goes before the user is removed.
    pub w: WinLab,
    pub user: LoginUser,
}

impl WindowsShellLab {
    pub fn start(bind: bool) -> WindowsShellLab {
        let user = LoginUser::create(false);
        let mut w = WinLab::start(bind);
        let shell = w.lab.home.join("cmd");
        fs::copy(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/emulators/cmd"),
            &shell,
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(&shell, fs::Permissions::from_mode(0o755)).unwrap();
        user.set_shell(&shell);
        w.lab.sshd.allow_other_logins();
        w.lab.sshd.user = user.name.clone();
        user.own(w.lab.root());
        WindowsShellLab { w, user }
    }

    /// Every command line the login shell received, in order; the log is then emptied.
    pub fn take_command_lines(&self) -> Vec<String> {
        let log = self.w.lab.home.join("cmd.log");
        let text = fs::read_to_string(&log).unwrap_or_default();
        let _ = fs::remove_file(&log);
        text.lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                v["line"].as_str().unwrap().to_string()
            })
            .collect()
    }

    /// Asserts that the shell received `count` command lines (at least one) and that each
    /// is a plain `powershell … -EncodedCommand BASE64` line: nothing for `sh`, nothing
    /// cmd.exe would interpret. Empties the log.
    pub fn assert_only_powershell(&self, what: &str) -> usize {
        let lines = self.take_command_lines();
        assert!(!lines.is_empty(), "{what}: no command reached the shell");
        for line in &lines {
            let b64 = line
                .strip_prefix("powershell -NoLogo -NoProfile -NonInteractive -EncodedCommand ")
                .unwrap_or_else(|| panic!("{what}: not a powershell line: {line:?}"));
            assert!(
                !b64.is_empty()
                    && b64
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)),
                "{what}: {line:?}"
            );
        }
        lines.len()
    }
}
