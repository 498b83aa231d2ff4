//! End to end: the binding check (docs/connectors.md#the-binding-check) with the built
//! `certctl` binary against a real OpenSSH sshd and the real daemons on loopback. For each
//! server, a dry-run whose params name a path the live configuration does not load is
//! `would-fail` at inspect, with the server's own directive and `file:line` (found here by
//! reading the daemon's configuration file, not from certctl), and nothing changed: the live
//! files hash the same, the path certctl would have written does not exist, no backup set, no
//! scratch directory, the old certificate still served. With `binding_check: false` the same
//! dry-run passes. Postfix and dovecot live in `binding_mail.rs`.

use crate::support;

use std::fs;
use std::path::{Path, PathBuf};

use support::apache::Apache;
use support::caddy::Caddy;
use support::haproxy::Haproxy;
use support::lab::Output;
use support::nginx::Nginx;
use support::tls_lab::{SNI, TargetSpec, TlsLab, target};

/// The line (1-based) of `file` that contains `needle`, read independently of certctl.
pub(crate) fn line_of(file: &Path, needle: &str) -> usize {
    let text = fs::read_to_string(file).unwrap();
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{} has no line with {needle}:\n{text}", file.display()))
        + 1
}

/// SHA-256 of each file (`None`: absent), by `sha256sum`: what a test compares before and
/// after, independently of certctl.
pub(crate) fn hashes(paths: &[PathBuf]) -> Vec<Option<String>> {
    paths
        .iter()
        .map(|p| {
            let out = std::process::Command::new("sha256sum")
                .arg(p)
                .output()
                .unwrap();
            out.status.success().then(|| {
                String::from_utf8_lossy(&out.stdout)
                    .split(' ')
                    .next()
                    .unwrap()
                    .to_string()
            })
        })
        .collect()
}

/// The target is `would-fail` at inspect (nothing staged) and its error says `said`.
pub(crate) fn assert_refused_at_inspect(out: &Output, said: &str) {
    assert_eq!(out.code, 1, "{}", out.stderr);
    let report = out.json();
    let t = &report["targets"][0];
    assert_eq!(t["status"], "would-fail", "{}", out.stderr);
    let error = t["error"].as_str().unwrap();
    assert!(error.starts_with("inspect failed: "), "{error}");
    assert!(
        error.contains(said),
        "the error names the directive and file:line\n  want: {said}\n  got: {error}"
    );
    assert!(error.contains("binding_check: false"), "{error}");
    assert!(error.ends_with("nothing live was changed"), "{error}");
    let steps: Vec<&str> = t["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert!(!steps.contains(&"stage"), "nothing staged: {steps:?}");
}

/// `would-change`, and the inspect step's detail says what the check found.
pub(crate) fn assert_passes(out: &Output, detail: &str) {
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report = out.json();
    let t = &report["targets"][0];
    assert_eq!(t["status"], "would-change", "{}", out.stderr);
    let inspect = t["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "inspect")
        .unwrap();
    let got = inspect["detail"].as_str().unwrap_or("");
    assert!(
        got.contains(detail),
        "want {detail:?} in the inspect detail: {got}"
    );
}

/// A TLS lab, a daemon on the OLD certificate, and the spec the connector's own tests use.
struct Case {
    lab: TlsLab,
    spec: TargetSpec,
}

impl Case {
    fn write(&self, params: &[(&str, String)]) {
        let mut spec = self.spec.clone();
        for (k, v) in params {
            spec.params.retain(|(name, _)| name != k);
            spec.params.push((k.to_string(), v.clone()));
        }
        self.lab.write_inventory(&self.lab.new, &spec);
    }

    fn dry_run(&self) -> Output {
        self.lab
            .certctl(&["deploy", "--dry-run", "--output", "json"])
    }

    /// The dry-run refuses `param: elsewhere` saying `said`, changes nothing, and passes with
    /// the check off.
    fn refuses_then_off(&self, param: &str, elsewhere: &Path, live: &[PathBuf], said: &str) {
        let before = hashes(live);
        self.write(&[(param, elsewhere.display().to_string())]);
        let out = self.dry_run();
        assert_refused_at_inspect(&out, said);
        assert_eq!(hashes(live), before, "the live files are untouched");
        assert!(
            !elsewhere.exists(),
            "nothing written where the params point"
        );
        assert!(self.lab.backup_sets().is_empty());
        assert!(
            self.lab.scratch_dirs().is_empty(),
            "no scratch directory left"
        );

        self.write(&[
            (param, elsewhere.display().to_string()),
            ("binding_check", "false".into()),
        ]);
        let out = self.dry_run();
        assert_passes(&out, "binding not checked (binding_check: false)");
        assert_eq!(hashes(live), before);
    }
}

fn path(p: PathBuf) -> String {
    p.display().to_string()
}

#[test]
fn nginx_refuses_a_path_it_does_not_load_and_a_deploy_touches_nothing() {
    let lab = TlsLab::start();
    let nginx = Nginx::start(SNI, &lab.old.fullchain, &lab.old.key);
    let spec = TargetSpec {
        connector: "nginx".into(),
        params: vec![
            ("fullchain_path".into(), path(nginx.cert_path())),
            ("key_path".into(), path(nginx.key_path())),
            ("nginx_conf".into(), path(nginx.conf_path().to_path_buf())),
        ],
        address: nginx.addr.to_string(),
        ..TargetSpec::default()
    };
    let case = Case { lab, spec };
    // The configuration as it is: the check passes and says where ...
    let sessions = || case.lab.sshd.log_count("Starting session: command");
    case.write(&[]);
    let conf = nginx.conf_path();
    let cert_line = line_of(
        conf,
        &format!("ssl_certificate {};", nginx.cert_path().display()),
    );
    let before = sessions();
    assert_passes(
        &case.dry_run(),
        &format!(
            "binding: nginx loads them (ssl_certificate nginx.conf:{cert_line}; ssl_certificate_key nginx.conf:{})",
            cert_line + 1
        ),
    );
    let with_check = sessions() - before;
    // ... in the remote commands a dry-run runs anyway: as many as with the check off.
    case.write(&[("binding_check", "false".into())]);
    let before = sessions();
    assert_passes(
        &case.dry_run(),
        "binding not checked (binding_check: false)",
    );
    assert!(
        with_check > 0,
        "sshd logs each command:\n{}",
        case.lab.sshd.log()
    );
    assert_eq!(
        with_check,
        sessions() - before,
        "no remote command of its own"
    );

    let elsewhere = nginx.dir().join("certs/b.crt");
    let live = vec![nginx.cert_path(), nginx.key_path()];
    let said = format!(
        "nginx loads ssl_certificate {} (nginx.conf:{cert_line}), not {}",
        nginx.cert_path().display(),
        elsewhere.display()
    );
    case.refuses_then_off("fullchain_path", &elsewhere, &live, &said);

    // A real deploy fails the same way before anything is touched: no backup, no probe wait.
    let before = hashes(&live);
    case.write(&[("fullchain_path", path(elsewhere.clone()))]);
    let out = case.lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let t = target(&out);
    assert_eq!(t["status"], "failed");
    assert!(t["error"].as_str().unwrap().contains(&said), "{t}");
    assert_eq!(hashes(&live), before);
    assert!(!elsewhere.exists());
    assert!(case.lab.backup_sets().is_empty(), "no backup set");
    assert_eq!(
        nginx.served_fingerprint(Some(SNI)).as_deref(),
        Some(case.lab.old.fingerprint.as_str()),
        "the old certificate is still served"
    );
}

#[test]
fn nginx_loading_the_path_through_a_symlink_deploys() {
    // nginx.conf names certs/fullchain.pem, a link to real/fullchain.pem; the params name the
    // file the link resolves to. Only the target can tell they are one file: certctl asks once
    // more, then deploys, and nginx serves the new certificate through its link.
    let lab = TlsLab::start();
    let nginx = Nginx::start(SNI, &lab.old.fullchain, &lab.old.key);
    let real = nginx.dir().join("real dir/fullchain.pem");
    fs::create_dir_all(real.parent().unwrap()).unwrap();
    fs::rename(nginx.cert_path(), &real).unwrap();
    std::os::unix::fs::symlink(&real, nginx.cert_path()).unwrap();
    let spec = TargetSpec {
        connector: "nginx".into(),
        params: vec![
            ("fullchain_path".into(), path(real.clone())),
            ("key_path".into(), path(nginx.key_path())),
            ("nginx_conf".into(), path(nginx.conf_path().to_path_buf())),
        ],
        address: nginx.addr.to_string(),
        ..TargetSpec::default()
    };
    lab.write_inventory(&lab.new, &spec);
    let out = lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(target(&out)["status"], "deployed", "{}", out.stderr);
    assert_eq!(
        nginx.served_fingerprint(Some(SNI)).as_deref(),
        Some(lab.new.fingerprint.as_str())
    );
    assert!(
        fs::symlink_metadata(nginx.cert_path())
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn apache_refuses_a_certificate_file_it_does_not_load() {
    let lab = TlsLab::start();
    let apache = Apache::start(SNI, &lab.old.cert, &lab.old.chain, &lab.old.key);
    let spec = TargetSpec {
        connector: "apache".into(),
        params: vec![
            ("cert_path".into(), path(apache.cert_path())),
            ("chain_path".into(), path(apache.chain_path())),
            ("key_path".into(), path(apache.key_path())),
            ("apache_confdir".into(), path(apache.dir().to_path_buf())),
            ("pid_file".into(), path(apache.pid_file())),
        ],
        address: apache.addr.to_string(),
        ..TargetSpec::default()
    };
    let case = Case { lab, spec };
    let conf = apache.conf_path();
    let line = line_of(
        &conf,
        &format!("SSLCertificateFile {}", apache.cert_path().display()),
    );
    case.write(&[]);
    assert_passes(
        &case.dry_run(),
        &format!("binding: apache loads them (SSLCertificateFile apache2.conf:{line}"),
    );
    let elsewhere = apache.dir().join("certs/other.pem");
    let said = format!(
        "apache loads SSLCertificateFile {} (apache2.conf:{line}), not {}",
        apache.cert_path().display(),
        elsewhere.display()
    );
    case.refuses_then_off("cert_path", &elsewhere, &apache.live_paths(), &said);
}

#[test]
fn haproxy_refuses_a_bundle_no_bind_line_loads() {
    let lab = TlsLab::start();
    let haproxy = Haproxy::start(&lab.old.bundle);
    let spec = TargetSpec {
        connector: "haproxy".into(),
        params: vec![
            ("pem_path".into(), path(haproxy.pem_path())),
            ("haproxy_cfg".into(), path(haproxy.cfg_path())),
            ("pid_file".into(), path(haproxy.pid_file())),
        ],
        commands: vec![("reload".into(), vec![haproxy.reload_argv()])],
        address: haproxy.addr.to_string(),
    };
    let case = Case { lab, spec };
    let line = line_of(
        &haproxy.cfg_path(),
        &format!("crt {}", haproxy.pem_path().display()),
    );
    case.write(&[]);
    assert_passes(
        &case.dry_run(),
        &format!("binding: haproxy loads them (bind … crt haproxy.cfg:{line})"),
    );
    let elsewhere = haproxy.dir().join("other.pem");
    let said = format!(
        "haproxy loads bind … crt {} (haproxy.cfg:{line}), not {}",
        haproxy.pem_path().display(),
        elsewhere.display()
    );
    case.refuses_then_off("pem_path", &elsewhere, &[haproxy.pem_path()], &said);
}

#[test]
fn caddy_refuses_a_key_no_tls_directive_loads() {
    let lab = TlsLab::start();
    let caddy = Caddy::start(SNI, &lab.old.fullchain, &lab.old.key);
    let spec = TargetSpec {
        connector: "caddy".into(),
        params: vec![
            ("fullchain_path".into(), path(caddy.fullchain_path())),
            ("key_path".into(), path(caddy.key_path())),
            ("caddyfile".into(), path(caddy.caddyfile())),
            ("admin_address".into(), caddy.admin.to_string()),
        ],
        address: caddy.addr.to_string(),
        ..TargetSpec::default()
    };
    let case = Case { lab, spec };
    let line = line_of(
        &caddy.caddyfile(),
        &format!("tls {}", caddy.fullchain_path().display()),
    );
    case.write(&[]);
    assert_passes(
        &case.dry_run(),
        &format!(
            "binding: caddy loads them (tls certificate Caddyfile:{line}; tls key Caddyfile:{line})"
        ),
    );
    let elsewhere = caddy.dir().join("certs/other.key");
    let said = format!(
        "caddy loads tls key {} (Caddyfile:{line}), not {}",
        caddy.key_path().display(),
        elsewhere.display()
    );
    let live = vec![caddy.fullchain_path(), caddy.key_path()];
    case.refuses_then_off("key_path", &elsewhere, &live, &said);
}

/// `certctl connectors show` documents the param and what each check reads; `ssh` has none.
#[test]
fn connectors_show_says_what_the_binding_check_reads() {
    let show = |name: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_certctl"))
            .args(["connectors", "show", name])
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for (name, reads) in [
        ("nginx", "`nginx -T`"),
        ("apache", "DUMP_INCLUDES"),
        ("haproxy", "crt-list"),
        ("postfix", "postconf"),
        ("dovecot", "doveconf"),
        ("caddy", "caddy adapt"),
        ("traefik", "the file certctl writes"),
        ("envoy", "the file certctl writes"),
    ] {
        let text = show(name);
        assert!(
            text.contains("  binding_check:\n    default: \"true\"\n    description:"),
            "{name} documents binding_check:\n{text}"
        );
        let line = text
            .lines()
            .find(|l| l.starts_with("# Binding check (with inspect"))
            .unwrap_or_else(|| panic!("{name}: no binding line:\n{text}"));
        assert!(
            line.contains(reads) && line.contains("`binding_check: \"false\"` turns it off"),
            "{line}"
        );
    }
    let ssh = show("ssh");
    assert!(ssh.contains("# Binding check: none."), "{ssh}");
    assert!(!ssh.contains("binding_check"), "{ssh}");
}
