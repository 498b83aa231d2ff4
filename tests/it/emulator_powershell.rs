//! The emulated PowerShell (tests/emulators/powershell) that stands in for Windows hosts in the
//! iis and wincertstore tests: its grammar, cmdlets, errors, fault injection and logs, run with
//! python3 directly; PFX files come from certctl's own writer (src/pkcs12/) and are checked
//! by the emulator with the real `openssl pkcs12`. One test reaches it through a real sshd and
//! serves the bound certificate with a real `openssl s_server` that certctl's probe reads.
//! Emulated: this proves certctl's scripts against the emulator's rules, not Windows itself.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use base64::Engine as _;
use certctl::material::{Fingerprint, KeySource, Material, MaterialSpec, parse_certs};
use certctl::pkcs12;
use certctl::ssh::quote::quote_powershell as q;
use serde_json::Value;
use support::pki::{Leaf, Pki};

const EMULATOR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/emulators/powershell");
const SITE: &str = "Default Web Site";

struct Emu {
    dir: tempfile::TempDir,
}

impl Emu {
    /// A fresh state with one IIS site and no certificates.
    fn new() -> Emu {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("state")).unwrap();
        std::fs::write(
            dir.path().join("state/state.json"),
            format!(r#"{{"sites": {{"{SITE}": []}}}}"#),
        )
        .unwrap();
        Emu { dir }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new("python3");
        cmd.arg(EMULATOR).env("CERTCTL_EMU_STATE", self.state());
        cmd.env_remove("CERTCTL_EMU_FAIL")
            .env_remove("CERTCTL_EMU_LOG");
        cmd
    }

    /// `powershell -NoProfile -NonInteractive -Command -` with `script` on stdin.
    fn stdin(&self, script: &str) -> Output {
        use std::io::Write as _;
        let mut child = self
            .command()
            .args(["-NoProfile", "-NonInteractive", "-Command", "-"])
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
        child.wait_with_output().unwrap()
    }

    /// `powershell -NoProfile -NonInteractive -EncodedCommand BASE64(UTF-16LE)`.
    fn encoded(&self, script: &str) -> Output {
        self.command()
            .args([
                "-NoProfile",
                "-NonInteractive",
                "-EncodedCommand",
                &encode(script),
            ])
            .output()
            .unwrap()
    }

    fn log(&self) -> Vec<Value> {
        std::fs::read_to_string(self.state().join("powershell.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.state().join("powershell.log")).unwrap_or_default()
    }

    /// The statements the emulator ran, in order, as certctl sent them.
    fn statements(&self) -> Vec<String> {
        self.log()
            .iter()
            .filter_map(|e| e.get("stmt").and_then(Value::as_str).map(str::to_owned))
            .collect()
    }

    fn state_json(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.state().join("state.json")).unwrap()).unwrap()
    }

    /// A PFX of `leaf` (with its chain) and its password file (no trailing newline).
    fn pfx(&self, leaf: &Leaf, name: &str) -> (PathBuf, PathBuf, String) {
        let material = Material::load(&MaterialSpec::new(
            leaf.name.clone(),
            leaf.cert.clone(),
            Some(leaf.chain.clone().into()),
            KeySource::File(leaf.key.clone()),
        ))
        .unwrap();
        let password = pkcs12::random_password().unwrap();
        let pfx = pkcs12::from_material(&material, &password, Some(name)).unwrap();
        let pfx_path = self.dir.path().join(format!("{name}.pfx"));
        let pw_path = self.dir.path().join(format!("{name}.pw"));
        std::fs::write(&pfx_path, pfx.expose()).unwrap();
        std::fs::write(&pw_path, password.expose()).unwrap();
        let password = String::from_utf8(password.expose().to_vec()).unwrap();
        (pfx_path, pw_path, password)
    }
}

fn encode(script: &str) -> String {
    let utf16: Vec<u8> = script.encode_utf16().flat_map(u16::to_le_bytes).collect();
    base64::engine::general_purpose::STANDARD.encode(utf16)
}

fn p(path: &Path) -> String {
    q(path.to_str().unwrap())
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "emulator failed ({:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn failed(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "expected a failure, got stdout {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// The import preamble certctl sends: strict errors, password from a file, preview, import.
fn import_script(pfx: &Path, pw: &Path, store: &str) -> String {
    format!(
        "$ErrorActionPreference = 'Stop'\n\
         $pw = ConvertTo-SecureString -String (Get-Content -Raw -LiteralPath {pw}) -AsPlainText -Force\n\
         Remove-Item -LiteralPath {pw}\n\
         $cert = Import-PfxCertificate -FilePath {pfx} -CertStoreLocation {store} -Password $pw\n\
         Remove-Item -LiteralPath {pfx}\n\
         $cert.Thumbprint\n",
        pw = p(pw),
        pfx = p(pfx),
        store = q(store),
    )
}

fn binding_script(thumbprint: &str, host: &str, rebind: bool) -> String {
    let get = format!(
        "$b = Get-WebBinding -Name {site} -Protocol 'https' -Port 443 -HostHeader {host}",
        site = q(SITE),
        host = q(host)
    );
    let remove = if rebind {
        "$b.RemoveSslCertificate()\n"
    } else {
        ""
    };
    format!(
        "$ErrorActionPreference = 'Stop'\nImport-Module WebAdministration\n{get}\n{remove}$b.AddSslCertificate({t}, 'My')\n",
        t = q(thumbprint)
    )
}

#[test]
fn iis_snapshot_import_bind_and_rollback_rebind_emulated() {
    let emu = Emu::new();
    let pki = Pki::new(&emu.dir.path().join("pki"));
    let old = pki.leaf("old", &["www.example.test"]);
    let new = pki.leaf("new", &["www.example.test"]);
    let host = "www.example.test";

    // Existing state: the old certificate bound with SNI.
    let (pfx, pw, _) = emu.pfx(&old, "old");
    let old_thumb = ok(&emu.stdin(&import_script(&pfx, &pw, "Cert:\\LocalMachine\\My")));
    assert_eq!(old_thumb.trim(), pkcs12::thumbprint(&old.der));
    ok(&emu.stdin(&format!(
        "$ErrorActionPreference = 'Stop'\nNew-WebBinding -Name {} -Protocol 'https' -Port 443 -HostHeader {} -SslFlags 1\n{}",
        q(SITE),
        q(host),
        binding_script(old_thumb.trim(), host, false).trim_start_matches("$ErrorActionPreference = 'Stop'\n")
    )));

    // Snapshot the current thumbprint.
    let snapshot = format!(
        "$ErrorActionPreference = 'Stop'\n(Get-WebBinding -Name {} -Protocol 'https' -Port 443 -HostHeader {}).certificateHash\n",
        q(SITE),
        q(host)
    );
    assert_eq!(ok(&emu.encoded(&snapshot)).trim(), old_thumb.trim());

    // Preview (Get-PfxData) leaves the store alone; then import and rebind in one script.
    let (pfx, pw, password) = emu.pfx(&new, "new");
    let before = emu.state_json();
    let preview = ok(&emu.encoded(&format!(
        "$ErrorActionPreference = 'Stop'\n$pw = ConvertTo-SecureString -String (Get-Content -Raw -LiteralPath {}) -AsPlainText -Force\n$d = Get-PfxData -FilePath {} -Password $pw\n$d.EndEntityCertificates[0].Thumbprint\n$d.OtherCertificates.Thumbprint\n",
        p(&pw),
        p(&pfx)
    )));
    let want_chain: Vec<String> = pki
        .chain_ders()
        .iter()
        .map(|d| pkcs12::thumbprint(d))
        .collect();
    assert_eq!(
        preview.lines().collect::<Vec<_>>(),
        [vec![pkcs12::thumbprint(&new.der)], want_chain.clone()].concat()
    );
    assert_eq!(
        emu.state_json()["stores"],
        before["stores"],
        "preview changed the store"
    );

    let log_start = emu.statements().len();
    let new_thumb = ok(&emu.encoded(&import_script(&pfx, &pw, "Cert:\\LocalMachine\\My")));
    let new_thumb = new_thumb.trim();
    ok(&emu.encoded(&binding_script(new_thumb, host, true)));
    assert_eq!(
        emu.statements()[log_start..],
        [
            "$ErrorActionPreference = 'Stop'".to_string(),
            format!(
                "$pw = ConvertTo-SecureString -String (Get-Content -Raw -LiteralPath {}) -AsPlainText -Force",
                p(&pw)
            ),
            format!("Remove-Item -LiteralPath {}", p(&pw)),
            format!(
                "$cert = Import-PfxCertificate -FilePath {} -CertStoreLocation 'Cert:\\LocalMachine\\My' -Password $pw",
                p(&pfx)
            ),
            format!("Remove-Item -LiteralPath {}", p(&pfx)),
            "$cert.Thumbprint".to_string(),
            "$ErrorActionPreference = 'Stop'".to_string(),
            "Import-Module WebAdministration".to_string(),
            format!(
                "$b = Get-WebBinding -Name {} -Protocol 'https' -Port 443 -HostHeader {}",
                q(SITE),
                q(host)
            ),
            "$b.RemoveSslCertificate()".to_string(),
            format!("$b.AddSslCertificate({}, 'My')", q(new_thumb)),
        ]
    );
    assert!(
        !pw.exists() && !pfx.exists(),
        "password and PFX files removed"
    );

    // The served files now hold the new leaf and its chain; the key file is private.
    let served = emu
        .state()
        .join("served/Default_Web_Site_443_www.example.test.pem");
    let certs = parse_certs(&std::fs::read(&served).unwrap()).unwrap();
    assert_eq!(certs[0].fingerprint, Fingerprint::of_der(&new.der));
    assert_eq!(certs.len(), 1 + pki.chain_ders().len());
    assert_eq!(support::mode(served.with_extension("key")), 0o600);

    // Rollback: rebind the snapshot thumbprint.
    ok(&emu.encoded(&binding_script(old_thumb.trim(), host, true)));
    let certs = parse_certs(&std::fs::read(&served).unwrap()).unwrap();
    assert_eq!(certs[0].fingerprint, Fingerprint::of_der(&old.der));
    assert_eq!(
        emu.state_json()["sites"][SITE][0]["certificateHash"],
        old_thumb.trim()
    );
    // Each rebind happened inside one script: no binding was left without a certificate.
    assert!(!emu.log_text().contains("unbound_after_script"));

    // No secret reached any argv or statement.
    let log = emu.log_text();
    assert!(!log.contains(&password), "PFX password in the emulator log");
    assert!(!log.contains("PRIVATE KEY"));
}

#[test]
fn a_binding_left_without_certificate_is_recorded_emulated() {
    let emu = Emu::new();
    let pki = Pki::new(&emu.dir.path().join("pki"));
    let leaf = pki.leaf("w", &["w.example.test"]);
    let (pfx, pw, _) = emu.pfx(&leaf, "w");
    let thumb = ok(&emu.stdin(&import_script(&pfx, &pw, "Cert:\\LocalMachine\\My")));
    let bind = format!(
        "New-WebBinding -Name {} -Protocol 'https' -Port 443 -HostHeader 'w.example.test' -SslFlags 1\n{}",
        q(SITE),
        binding_script(thumb.trim(), "w.example.test", false)
    );
    let hook = format!("touch {}", emu.dir.path().join("hook-ran").display());
    let out = emu
        .command()
        .env("CERTCTL_EMU_ON_BIND", hook)
        .args(["-EncodedCommand", &encode(&bind)])
        .output()
        .unwrap();
    ok(&out);
    // The bind hook ran after the binding changed (tests use it to reload a TLS server).
    assert!(emu.dir.path().join("hook-ran").exists());
    // A second AddSslCertificate on a bound binding fails, as IIS does (0x800700B7).
    let err = failed(&emu.stdin(&binding_script(thumb.trim(), "w.example.test", false)));
    assert!(err.contains("0x800700B7"), "{err}");
    // Unbinding in one script and binding in the next leaves a window, which is logged.
    ok(&emu.stdin(&format!(
        "$b = Get-WebBinding -Name {} -Protocol 'https' -Port 443 -HostHeader 'w.example.test'\n$b.RemoveSslCertificate()\n",
        q(SITE)
    )));
    assert!(emu.log_text().contains("unbound_after_script"));
    assert!(
        !emu.state()
            .join("served/Default_Web_Site_443_w.example.test.pem")
            .exists()
    );
}

#[test]
fn wincertstore_import_friendly_name_list_and_remove_emulated() {
    let emu = Emu::new();
    let pki = Pki::new(&emu.dir.path().join("pki"));
    let leaf = pki.leaf("store", &["store.example.test"]);
    let (pfx, pw, _) = emu.pfx(&leaf, "store");
    let thumb = pkcs12::thumbprint(&leaf.der);
    let friendly = "certctl 'prod' $(x) `y`; z";
    let script = format!(
        "{}$cert.FriendlyName = {}\nGet-ChildItem -Path 'Cert:\\LocalMachine\\My' | ConvertTo-Json -Compress\n",
        import_script(&pfx, &pw, "Cert:\\LocalMachine\\My"),
        q(friendly)
    );
    let out = ok(&emu.encoded(&script));
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some(thumb.as_str()));
    let listed: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(listed["Thumbprint"], thumb);
    assert_eq!(listed["FriendlyName"], friendly);
    assert_eq!(listed["Subject"], "CN=store.example.test");
    assert!(listed["NotAfter"].as_str().unwrap().starts_with("/Date("));
    assert_eq!(listed["HasPrivateKey"], true);
    // The chain went to the intermediate store.
    let state = emu.state_json();
    for der in pki.chain_ders() {
        assert!(state["stores"]["LocalMachine\\CA"][pkcs12::thumbprint(&der)].is_object());
    }

    let path = format!("Cert:\\LocalMachine\\My\\{thumb}");
    let out = ok(&emu.stdin(&format!(
        "$ErrorActionPreference = 'Stop'\nTest-Path -LiteralPath {path}\n(Get-Item -LiteralPath {path}).FriendlyName\nRemove-Item -LiteralPath {path}\nTest-Path -LiteralPath {path}\n",
        path = q(&path)
    )));
    assert_eq!(out, format!("True\n{friendly}\nFalse\n"));
    let err = failed(&emu.stdin(&format!(
        "$ErrorActionPreference = 'Stop'\nRemove-Item -LiteralPath {}\n",
        q(&path)
    )));
    assert!(err.contains("because it does not exist"), "{err}");
}

#[test]
fn hostile_strings_round_trip_through_quote_powershell_emulated() {
    let emu = Emu::new();
    let hostile = [
        "",
        " ",
        "two words",
        "it's",
        "'",
        "''",
        "\"double\"",
        "$(Remove-Item -Recurse C:\\)",
        "$env:PATH",
        "`n`t",
        "a;b",
        "a | b",
        "#not a comment",
        "'; Remove-Item -Recurse C:\\ #",
        "-Force",
        "@(1,2)",
        "{ script }",
        "line1\nline2",
        "\u{2018}curly\u{2019} \u{201A}low\u{201B}",
        "'\u{2019}",
        "héllo wörld ✓ 证书",
    ];
    for s in hostile {
        let script = format!("$x = {}\nWrite-Output $x\n", q(s));
        for out in [emu.stdin(&script), emu.encoded(&script)] {
            assert_eq!(ok(&out), format!("{s}\n"), "{s:?} via {}", q(s));
        }
    }
}

#[test]
fn errors_are_errors_with_powershell_messages_emulated() {
    let emu = Emu::new();
    let pki = Pki::new(&emu.dir.path().join("pki"));
    let leaf = pki.leaf("e", &["e.example.test"]);
    let (pfx, _pw, _) = emu.pfx(&leaf, "e");
    let wrong = emu.dir.path().join("wrong.pw");
    std::fs::write(&wrong, "not-it").unwrap();
    let junk = emu.dir.path().join("junk.pfx");
    std::fs::write(&junk, b"\x30\x03\x02\x01\x03 not a pfx").unwrap();
    let import = |pfx: &Path, pw: &Path| {
        format!(
            "$ErrorActionPreference = 'Stop'\n$pw = ConvertTo-SecureString -String (Get-Content -Raw -LiteralPath {}) -AsPlainText -Force\nImport-PfxCertificate -FilePath {} -CertStoreLocation 'Cert:\\LocalMachine\\My' -Password $pw\n",
            p(pw),
            p(pfx)
        )
    };
    let cases: Vec<(String, &str)> = vec![
        ("Get-Foo".into(), "The term 'Get-Foo' is not recognized"),
        (
            "Get-ChildItem -Bogus 'x'".into(),
            "A parameter cannot be found that matches parameter name 'Bogus'",
        ),
        ("Write-Output 'open".into(), "missing the terminator"),
        ("Write-Output \"x\"".into(), "Double-quoted strings are not supported"),
        ("Write-Output `x".into(), "Backtick"),
        ("Get-ChildItem | ForEach-Object { $_ }".into(), "Script blocks"),
        (import(&pfx, &wrong), "The specified network password is not correct"),
        (import(&junk, &wrong), "The data is invalid"),
        (
            "$pw = ConvertTo-SecureString -String 'x' -AsPlainText".into(),
            "specifying the Force parameter",
        ),
        (
            "Import-PfxCertificate -FilePath '/nonexistent.pfx' -CertStoreLocation 'Cert:\\LocalMachine\\My' -Password 'plain'".into(),
            "Cannot convert the value of type \"System.String\" to type \"System.Security.SecureString\"",
        ),
        ("$b = $null\n$b.RemoveSslCertificate()".into(), "null-valued expression"),
        (
            "New-WebBinding -Name 'No Such Site' -Protocol 'https' -Port 443 -HostHeader 'h' -SslFlags 1".into(),
            "Cannot find site 'No Such Site'",
        ),
        (
            "New-WebBinding -Name 'Default Web Site' -Protocol 'https' -Port 443 -SslFlags 1".into(),
            "SNI (SslFlags 1) requires a host header",
        ),
    ];
    for (script, message) in &cases {
        let err = failed(&emu.stdin(script));
        assert!(err.contains(message), "{script:?}: stderr {err:?}");
    }
    // A password file with a trailing newline is a different password, as on Windows.
    let (pfx2, pw2, password) = emu.pfx(&leaf, "nl");
    std::fs::write(&pw2, format!("{password}\n")).unwrap();
    let err = failed(&emu.stdin(&import(&pfx2, &pw2)));
    assert!(err.contains("network password is not correct"), "{err}");

    // A parse error runs nothing: the binding in line 1 is not created.
    let err = failed(&emu.stdin(
        "New-WebBinding -Name 'Default Web Site' -Protocol 'https' -Port 443 -HostHeader 'h' -SslFlags 1\nWrite-Output 'open",
    ));
    assert!(err.contains("missing the terminator"), "{err}");
    assert_eq!(emu.state_json()["sites"][SITE], serde_json::json!([]));

    // Without 'Stop', a failed command does not stop the script (PowerShell's default); the
    // exit code is that of the last statement. With 'Stop', nothing after it runs.
    let out = emu.stdin("Get-Foo\nWrite-Output 'after'\n");
    assert_eq!(ok(&out), "after\n");
    let out = emu.stdin("$ErrorActionPreference = 'Stop'\nGet-Foo\nWrite-Output 'after'\n");
    failed(&out);
    assert!(out.stdout.is_empty());

    // `exit N` ends the script with that code.
    let out = emu.stdin("Write-Output 'a'; exit 3; Write-Output 'b'");
    assert_eq!(
        (out.status.code(), out.stdout.as_slice()),
        (Some(3), &b"a\n"[..])
    );

    // Bad invocations.
    let out = emu.command().args(["-File", "x.ps1"]).output().unwrap();
    assert!(failed(&out).contains("-File"));
    let out = emu
        .command()
        .args(["-EncodedCommand", "%%%"])
        .output()
        .unwrap();
    assert!(failed(&out).contains("not properly encoded"));
    let out = emu
        .command()
        .args(["-Command", "Get-Date"])
        .output()
        .unwrap();
    assert!(failed(&out).contains("-Command -"));
}

#[test]
fn fault_injection_fails_the_named_cmdlet_or_method_emulated() {
    let emu = Emu::new();
    let pki = Pki::new(&emu.dir.path().join("pki"));
    let leaf = pki.leaf("f", &["f.example.test"]);
    let (pfx, pw, _) = emu.pfx(&leaf, "f");
    std::fs::write(emu.state().join("fail"), "Import-PfxCertificate@1\n").unwrap();
    let script = format!(
        "$ErrorActionPreference = 'Stop'\n$pw = ConvertTo-SecureString -String (Get-Content -Raw -LiteralPath {}) -AsPlainText -Force\n$cert = Import-PfxCertificate -FilePath {} -CertStoreLocation 'Cert:\\LocalMachine\\My' -Password $pw\n$cert.Thumbprint\n",
        p(&pw),
        p(&pfx)
    );
    let err = failed(&emu.stdin(&script));
    assert!(
        err.starts_with("Import-PfxCertificate : Injected failure"),
        "{err}"
    );
    assert_eq!(emu.state_json()["stores"]["LocalMachine\\My"], Value::Null);
    // Only the first call was set to fail.
    let thumb = ok(&emu.stdin(&script));
    assert_eq!(thumb.trim(), pkcs12::thumbprint(&leaf.der));

    // A method, through the environment variable.
    ok(&emu.stdin(&format!(
        "New-WebBinding -Name {} -Protocol 'https' -Port 443 -HostHeader 'f.example.test' -SslFlags 1",
        q(SITE)
    )));
    let out = emu
        .command()
        .env("CERTCTL_EMU_FAIL", "AddSslCertificate")
        .args([
            "-EncodedCommand",
            &encode(&binding_script(thumb.trim(), "f.example.test", false)),
        ])
        .output()
        .unwrap();
    assert!(failed(&out).contains("AddSslCertificate : Injected failure"));
    assert_eq!(
        emu.state_json()["sites"][SITE][0]["certificateHash"],
        "",
        "the failed bind changed nothing"
    );
    assert!(emu.log_text().contains(r#""fault": "AddSslCertificate""#));
}

#[test]
fn through_real_sshd_the_bound_certificate_is_served_and_probed_emulated() {
    let emu = Emu::new();
    let bin = emu.dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(EMULATOR, bin.join("powershell")).unwrap();
    let sshd = support::sshd::Sshd::start_with(&[&format!(
        "SetEnv PATH={}:/usr/bin:/bin CERTCTL_EMU_STATE={}",
        bin.display(),
        emu.state().display()
    )]);
    let pki = Pki::new(&emu.dir.path().join("pki"));
    let leaf = pki.leaf("web", &["web.example.test"]);
    let (pfx, pw, password) = emu.pfx(&leaf, "web");
    let script = format!(
        "{}New-WebBinding -Name {site} -Protocol 'https' -Port 443 -HostHeader 'web.example.test' -SslFlags 1\n{}",
        import_script(&pfx, &pw, "Cert:\\LocalMachine\\My"),
        binding_script(&pkcs12::thumbprint(&leaf.der), "web.example.test", false)
            .replace("$ErrorActionPreference = 'Stop'\n", ""),
        site = q(SITE),
    );
    let out = Command::new("ssh")
        .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", sshd.known_hosts.display()))
        .arg("-i")
        .arg(&sshd.client_key)
        .args(["-p", &sshd.port().to_string()])
        .arg(format!("{}@{}", sshd.user, sshd.host()))
        .args([
            "powershell",
            "-NoProfile",
            "-NonInteractive",
            "-EncodedCommand",
            &encode(&script),
        ])
        .output()
        .unwrap();
    assert_eq!(ok(&out).trim(), pkcs12::thumbprint(&leaf.der));
    assert!(!emu.log_text().contains(&password));

    // Serve what IIS would serve, with a real TLS server, and probe it with certctl's probe.
    let served = emu
        .state()
        .join("served/Default_Web_Site_443_web.example.test.pem");
    let certs = parse_certs(&std::fs::read(&served).unwrap()).unwrap();
    let chain = emu.dir.path().join("served-chain.pem");
    let chain_pem: Vec<u8> = std::fs::read_to_string(&served)
        .unwrap()
        .split_inclusive("-----END CERTIFICATE-----\n")
        .skip(1)
        .collect::<String>()
        .into_bytes();
    std::fs::write(&chain, chain_pem).unwrap();
    let addr = support::free_addr();
    let server = Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept"])
        .arg(addr.to_string())
        .arg("-cert")
        .arg(&served)
        .arg("-key")
        .arg(served.with_extension("key"))
        .arg("-cert_chain")
        .arg(&chain)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _server = support::ChildGuard(server);
    support::wait_for_port(addr, Duration::from_secs(20));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let seen = rt
        .block_on(certctl::probe::probe_once(
            &addr.to_string(),
            "web.example.test",
            certctl::probe::StartTls::None,
            Duration::from_secs(20),
        ))
        .unwrap();
    assert_eq!(seen.leaf, certs[0].fingerprint);
    assert_eq!(seen.leaf, Fingerprint::of_der(&leaf.der));
    assert_eq!(
        seen.chain,
        pki.chain_ders()
            .iter()
            .map(|d| Fingerprint::of_der(d))
            .collect::<Vec<_>>()
    );
}

/// `Get-Date`, `Where-Object` in its comparison form (one operator; strings compared without
/// case, DateTimes, `$null`), and `Remove-Item` taking certificates from the pipeline: what
/// wincertstore's `remove_expired` sends. Anything else is an error.
#[test]
fn where_object_filters_and_remove_item_takes_piped_certificates_emulated() {
    use support::pki::LeafOpts;
    let emu = Emu::new();
    let pki = Pki::new(&emu.dir.path().join("pki"));
    let name = "store.example.test";
    let expired = pki.issue(
        "expired",
        LeafOpts::new(&[name]).valid_secs(-200_000, -100_000),
    );
    let valid = pki.leaf("valid", &[name]);
    let other = pki.issue(
        "other",
        LeafOpts::new(&["other.example.test"]).valid_secs(-200_000, -100_000),
    );
    let mut thumbs = Vec::new();
    for (leaf, n) in [(&expired, "expired"), (&valid, "valid"), (&other, "other")] {
        let (pfx, pw, _) = emu.pfx(leaf, n);
        ok(&emu.encoded(&import_script(&pfx, &pw, "Cert:\\LocalMachine\\My")));
        thumbs.push(pkcs12::thumbprint(&leaf.der));
    }
    let store = |emu: &Emu| -> Vec<String> {
        let s = emu.state_json();
        let mut t: Vec<String> = s["stores"]["LocalMachine\\My"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        t.sort();
        t
    };
    let list = "Get-ChildItem -Path 'Cert:\\LocalMachine\\My'";
    // Filtering only: the expired certificate with the subject (case ignored), not the valid one.
    let out = ok(&emu.stdin(&format!(
        "$ErrorActionPreference = 'Stop'\n$now = Get-Date\n\
         ({list} | Where-Object -Property Subject -EQ -Value 'cn=STORE.example.test' | Where-Object NotAfter $now -LT).Thumbprint\n\
         ({list} | Where-Object -Property Thumbprint -NE -Value {t0}).Thumbprint\n\
         ({list} | Where-Object -Property Nothing -EQ -Value $null).Thumbprint\n",
        t0 = q(&thumbs[0])
    )));
    let mut rest = [thumbs[1].clone(), thumbs[2].clone()];
    rest.sort();
    let mut all = thumbs.clone();
    all.sort();
    // A missing property is $null: every certificate passes `-EQ -Value $null`.
    assert_eq!(
        out,
        format!("{}\n{}\n{}\n", thumbs[0], rest.join("\n"), all.join("\n"))
    );
    assert_eq!(store(&emu).len(), 3, "filtering removes nothing");

    // Piped into Remove-Item: exactly the expired one with the subject goes; nothing piped
    // removes nothing.
    ok(&emu.encoded(&format!(
        "$ErrorActionPreference = 'Stop'\n$now = Get-Date\n\
         {list} | Where-Object -Property Subject -EQ -Value 'CN=store.example.test' | Where-Object -Property NotAfter -LT -Value $now | Remove-Item\n\
         {list} | Where-Object -Property Subject -EQ -Value 'CN=nothing' | Remove-Item\n"
    )));
    let mut want = vec![thumbs[1].clone(), thumbs[2].clone()];
    want.sort();
    assert_eq!(store(&emu), want);
    assert!(emu.log_text().contains("\"remove_cert\""));

    for (script, says) in [
        (
            format!("{list} | Where-Object -Property Subject -Value 'x'"),
            "exactly one of",
        ),
        (
            format!("{list} | Where-Object -Property Subject -Value 'x' -EQ -NE"),
            "exactly one of",
        ),
        (
            format!("{list} | Where-Object -Property Subject -EQ"),
            "-Value is required",
        ),
        (
            format!("{list} | Where-Object -Property NotAfter -LT -Value 'soon'"),
            "Cannot compare",
        ),
        (
            format!("{list} | Where-Object -FilterScript x -EQ -Value 1"),
            "FilterScript",
        ),
        (
            "Where-Object -Property Subject -EQ -Value 'x'".to_string(),
            "pipeline input",
        ),
        (
            format!("{list} | Remove-Item -LiteralPath 'Cert:\\LocalMachine\\My'"),
            "one or the other",
        ),
        (
            "Get-Date | Remove-Item".to_string(),
            "certificates from a store only",
        ),
        ("Get-Date -Format 'o'".to_string(), "Format"),
    ] {
        let err = failed(&emu.stdin(&format!("$ErrorActionPreference = 'Stop'\n{script}\n")));
        assert!(err.contains(says), "{script}: {err}");
    }
    assert_eq!(store(&emu), want, "no failed script removed anything");
}

/// What iis's first deploy sends: `Get-Item 'IIS:\Sites\NAME'` (the IIS: drive needs
/// WebAdministration), `'text'.Length.CompareTo(0)`, `New-WebBinding -SslFlags`, and
/// `Get-WebBinding … | Remove-WebBinding` (nothing piped: nothing removed). Strictly.
#[test]
fn site_check_sni_flag_and_piped_binding_removal_emulated() {
    let emu = Emu::new();
    let site = q(SITE);
    let get =
        format!("Get-WebBinding -Name {site} -Protocol 'https' -Port 443 -HostHeader 'a.test'");
    let out = ok(&emu.stdin(&format!(
        "$ErrorActionPreference = 'Stop'\nImport-Module WebAdministration\n\
         (Get-Item -LiteralPath 'IIS:\\Sites\\{SITE}').Name\n\
         $sni = 'a.test'.Length.CompareTo(0)\n$none = ''.Length.CompareTo(0)\n$sni\n$none\n\
         New-WebBinding -Name {site} -Protocol 'https' -Port 443 -HostHeader 'a.test' -SslFlags $sni\n\
         ({get}).sslFlags\n"
    )));
    assert_eq!(out, format!("{SITE}\n1\n0\n1\n"));
    assert_eq!(
        emu.state_json()["sites"][SITE][0]["bindingInformation"],
        "*:443:a.test"
    );
    ok(&emu.stdin(&format!(
        "$ErrorActionPreference = 'Stop'\nImport-Module WebAdministration\n{get} | Remove-WebBinding\n{get} | Remove-WebBinding\n"
    )));
    assert_eq!(emu.state_json()["sites"][SITE], serde_json::json!([]));
    assert!(emu.log_text().contains("\"remove_binding\""));

    for (script, says) in [
        (
            format!("(Get-Item -LiteralPath 'IIS:\\Sites\\{SITE}').Name"),
            "A drive with the name 'IIS' does not exist",
        ),
        (
            "Import-Module WebAdministration\nGet-Item -LiteralPath 'IIS:\\Sites\\nope'"
                .to_string(),
            "Cannot find path 'IIS:\\Sites\\nope'",
        ),
        (
            "'a'.Length.CompareTo('b')".to_string(),
            "does not contain a method named 'CompareTo'",
        ),
        (
            format!("Get-WebBinding -Name {site} | Remove-WebBinding -Name {site}"),
            "not both",
        ),
        ("Get-Date | Remove-WebBinding".to_string(), "bindings only"),
    ] {
        let err = failed(&emu.stdin(&format!("$ErrorActionPreference = 'Stop'\n{script}\n")));
        assert!(err.contains(says), "{script}: {err}");
    }
}

/// `netsh http update sslcert` as certctl's iis sends it: the certificate of an existing SNI
/// (`hostnameport=`) or IP (`ipport=`) binding replaced in place, one state change, never a
/// moment without one; strict parameters; PowerShell 5.1's native-command failure semantics.
#[test]
fn netsh_http_update_sslcert_swaps_in_place_strictly_emulated() {
    let emu = Emu::new();
    let pki = Pki::new(&emu.dir.path().join("pki"));
    let host = "n.example.test";
    let mut thumbs = Vec::new();
    for name in ["old", "new"] {
        let leaf = pki.leaf(name, &[host]);
        let (pfx, pw, _) = emu.pfx(&leaf, name);
        let t = ok(&emu.stdin(&import_script(&pfx, &pw, "Cert:\\LocalMachine\\My")));
        thumbs.push(t.trim().to_string());
    }
    let (old, new) = (&thumbs[0], &thumbs[1]);
    ok(&emu.stdin(&format!(
        "New-WebBinding -Name {site} -Protocol 'https' -Port 443 -HostHeader {h} -SslFlags 1\n\
         New-WebBinding -Name {site} -Protocol 'https' -Port 8443 -HostHeader 'ip.example.test'\n{}",
        binding_script(old, host, false),
        site = q(SITE),
        h = q(host),
    )));
    let appid = "'appid={4dc3e181-e14b-4a21-b022-59fc669b0914}'";
    let netsh = |endpoint: &str, hash: &str| {
        format!("netsh http update sslcert {endpoint} {hash} 'certstorename=My' {appid}")
    };
    let sni = format!("'hostnameport={host}:443'");
    let hash_of = |emu: &Emu| {
        emu.state_json()["sites"][SITE][0]["certificateHash"]
            .as_str()
            .unwrap()
            .to_string()
    };

    // The swap: one update, logged with its arguments; served/ follows.
    let out = emu.encoded(&format!(
        "$ErrorActionPreference = 'Stop'\n{}\n",
        netsh(&sni, &q(&format!("certhash={new}")))
    ));
    assert!(ok(&out).contains("SSL Certificate successfully updated"));
    assert_eq!(&hash_of(&emu), new);
    let log = emu.log_text();
    assert!(
        log.contains(
            r#"{"native": ["netsh", "http", "update", "sslcert", "hostnameport=n.example.test:443""#
        ),
        "{log}"
    );
    assert!(log.contains(r#""event": "update_sslcert""#), "{log}");
    assert!(!log.contains(r#""event": "unbind""#), "{log}");
    assert_eq!(emu.state_json()["unbound"], Value::Null, "never unbound");
    let served = emu
        .state()
        .join("served/Default_Web_Site_443_n.example.test.pem");
    let certs = parse_certs(&std::fs::read(&served).unwrap()).unwrap();
    assert_eq!(pkcs12::thumbprint(&certs[0].der), *new);

    // Back, with the thumbprint from a file as a variable argument (as certctl's restore).
    std::fs::write(emu.dir.path().join("saved.txt"), format!("{old}\r\n")).unwrap();
    ok(&emu.encoded(&format!(
        "$ErrorActionPreference = 'Stop'\n$old = (Get-Content -Raw -LiteralPath {}).Trim()\n\
         $hash = 'certhash=OLD'.Replace('OLD', $old)\n{}\n",
        p(&emu.dir.path().join("saved.txt")),
        netsh(&sni, "$hash")
    )));
    assert_eq!(&hash_of(&emu), old);

    // Failures: exit 1 with netsh's text on stdout, nothing changed.
    let before = emu.state_json();
    let missing = "F".repeat(40);
    for (script, text) in [
        (
            netsh(&sni, &q(&format!("certhash={missing}"))),
            "Error: 1312",
        ),
        // The binding on 8443 has no certificate yet: there is nothing to update.
        (
            netsh("'ipport=0.0.0.0:8443'", &q(&format!("certhash={new}"))),
            "Error: 2",
        ),
        // No binding without SNI on 0.0.0.0:443.
        (
            netsh("'ipport=0.0.0.0:443'", &q(&format!("certhash={new}"))),
            "Error: 2",
        ),
        (
            format!("netsh http update sslcert {sni} 'certhash={new}' 'certstorename=My'"),
            "The parameter is incorrect.",
        ),
        (
            format!(
                "{} 'verifyclientcertrevocation=enable'",
                netsh(&sni, &q(&format!("certhash={new}")))
            ),
            "The parameter is incorrect.",
        ),
        (
            format!(
                "{} 'certhash={new}'",
                netsh(&sni, &q(&format!("certhash={new}")))
            ),
            "The parameter is incorrect.",
        ),
        (
            netsh(
                &format!("{sni} 'ipport=0.0.0.0:443'"),
                &q(&format!("certhash={new}")),
            ),
            "The parameter is incorrect.",
        ),
        (
            netsh(&sni, &q(&format!("certhash={new}"))).replace("{4dc3", "{zzzz"),
            "The parameter is incorrect.",
        ),
        (
            format!("netsh http show sslcert {sni}"),
            "The following command was not found",
        ),
    ] {
        let out = emu.encoded(&format!("$ErrorActionPreference = 'Stop'\n{script}\n"));
        assert_eq!(out.status.code(), Some(1), "{script}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains(text), "{script}: {stdout}");
        let mut after = emu.state_json();
        after["calls"] = before["calls"].clone();
        assert_eq!(after, before, "{script}");
    }

    // As in Windows PowerShell 5.1: a failing native command does not throw, even under
    // 'Stop'; it sets $LASTEXITCODE, and fails the script only as its last statement.
    let out = emu.encoded(&format!(
        "$ErrorActionPreference = 'Stop'\n{}\n$LASTEXITCODE\n'after'\n",
        netsh(&sni, &q(&format!("certhash={missing}")))
    ));
    let stdout = ok(&out);
    assert!(stdout.ends_with("1\nafter\n"), "{stdout}");

    // A native command is a whole statement in the emulator: not assigned, not piped.
    for script in [
        format!("$x = {}", netsh(&sni, "'certhash=x'")),
        format!("{} | Out-Null", netsh(&sni, "'certhash=x'")),
    ] {
        let err = failed(&emu.stdin(&script));
        assert!(err.contains("netsh"), "{err}");
    }

    // Fault injection fails netsh like a native failure (exit 1, no change).
    std::fs::write(emu.state().join("fail"), "netsh").unwrap();
    let out = emu.encoded(&netsh(&sni, &q(&format!("certhash={new}"))));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Injected failure"));
    assert_eq!(&hash_of(&emu), old);
    std::fs::remove_file(emu.state().join("fail")).unwrap();

    // RemoveSslCertificate, by contrast, leaves a moment without a certificate: counted.
    ok(&emu.stdin(&format!(
        "$b = Get-WebBinding -Name {} -Protocol 'https' -Port 443 -HostHeader {}\n\
         $b.RemoveSslCertificate()\n$b.AddSslCertificate({}, 'My')\n",
        q(SITE),
        q(host),
        q(old)
    )));
    assert_eq!(emu.state_json()["unbound"], 1);
}

/// `Write-Error` with its message from the pipeline (iis's preview refusal): a command that
/// outputs nothing pipes nothing, and nothing is written; a value piped is an error; `$null`
/// from an expression IS piped, as in PowerShell, and is an error too; no pipeline is an
/// emulator error.
#[test]
fn write_error_takes_its_message_from_the_pipeline_emulated() {
    let emu = Emu::new();
    ok(&emu.stdin(&format!(
        "$ErrorActionPreference = 'Stop'\nGet-WebBinding -Name {} -Protocol 'https' -Port 1 | Select-Object -ExpandProperty bindingInformation | Write-Error\n'done'\n",
        q(SITE)
    )));
    let err = failed(&emu.stdin(&format!(
        "$ErrorActionPreference = 'Stop'\n(Get-WebBinding -Name {} -Protocol 'https' -Port 1).bindingInformation | Write-Error\n'not reached'\n",
        q(SITE)
    )));
    assert!(err.contains("because it is null"), "{err}");
    let err =
        failed(&emu.stdin(
            "$ErrorActionPreference = 'Stop'\n'10.1.2.3:443:' | Write-Error\n'not reached'\n",
        ));
    assert!(err.starts_with("Write-Error : 10.1.2.3:443:"), "{err}");
    let err = failed(&emu.stdin("Write-Error"));
    assert!(err.contains("pipeline"), "{err}");
}
