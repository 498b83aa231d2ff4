//! End to end: the binding check (docs/connectors.md#the-binding-check) against a real
//! postfix and a real dovecot (each server's own view: `postconf`, `doveconf -n`), and the
//! traefik connector, whose configuration is the dynamic file certctl writes. As in
//! `binding.rs`: the dry-run is refused at inspect with the server's own setting and where it
//! is set, nothing changes (hashes read independently), and `binding_check: false` passes.

use crate::support;

use std::path::{Path, PathBuf};

use support::dovecot::Dovecot;
use support::mail::{MailLab, TargetSpec};
use support::postfix::Postfix;
use support::tls_lab::{self, SNI, TlsLab};
use support::traefik::Traefik;

use crate::binding::{assert_passes, assert_refused_at_inspect, hashes, line_of};

fn param(name: &str, path: PathBuf) -> (String, String) {
    (name.to_string(), path.display().to_string())
}

/// The dry-run refuses `spec` with `param: elsewhere` saying `said`, changes nothing, and
/// passes with the check off.
fn refuses_then_off(
    mail: &MailLab,
    spec: &TargetSpec,
    param_name: &str,
    elsewhere: &Path,
    live: &[PathBuf],
    said: &str,
) {
    let dry_run = || mail.certctl(&["deploy", "--dry-run", "--output", "json"]);
    let before = hashes(live);
    let mut spec = spec.clone();
    spec.params.retain(|(k, _)| k != param_name);
    spec.params.push(param(param_name, elsewhere.to_path_buf()));
    mail.write_inventory(&spec);
    assert_refused_at_inspect(&dry_run(), said);
    assert_eq!(hashes(live), before, "the live files are untouched");
    assert!(
        !elsewhere.exists(),
        "nothing written where the params point"
    );
    assert!(mail.backup_sets().is_empty());
    assert!(mail.scratch_dirs().is_empty());

    spec.params.push(("binding_check".into(), "false".into()));
    mail.write_inventory(&spec);
    assert_passes(&dry_run(), "binding not checked (binding_check: false)");
    assert_eq!(hashes(live), before);
}

#[test]
fn postfix_refuses_a_certificate_smtpd_does_not_load() {
    let mail = MailLab::new();
    let postfix = Postfix::start(&mail.old.fullchain, &mail.old.key);
    let spec = TargetSpec {
        connector: "postfix".into(),
        params: vec![
            param("fullchain_path", postfix.cert_path()),
            param("key_path", postfix.key_path()),
            param("config_dir", postfix.config_dir()),
        ],
        address: postfix.addr.to_string(),
        ..TargetSpec::default()
    };
    let line = line_of(&postfix.main_cf(), "smtpd_tls_cert_file =");
    mail.write_inventory(&spec);
    assert_passes(
        &mail.certctl(&["deploy", "--dry-run", "--output", "json"]),
        &format!(
            "binding: postfix loads them (smtpd_tls_cert_file main.cf:{line}; smtpd_tls_key_file main.cf:{})",
            line + 1
        ),
    );
    let elsewhere = postfix.dir().join("certs/other.pem");
    let said = format!(
        "postfix loads smtpd_tls_cert_file {} (main.cf:{line}), not {}",
        postfix.cert_path().display(),
        elsewhere.display()
    );
    let live = vec![postfix.cert_path(), postfix.key_path()];
    refuses_then_off(&mail, &spec, "fullchain_path", &elsewhere, &live, &said);
}

#[test]
fn dovecot_refuses_a_key_dovecot_does_not_load() {
    let mail = MailLab::new();
    let dovecot = Dovecot::start(&mail.old.fullchain, &mail.old.key);
    let spec = TargetSpec {
        connector: "dovecot".into(),
        params: vec![
            param("fullchain_path", dovecot.cert_path()),
            param("key_path", dovecot.key_path()),
            param("config_file", dovecot.config_file()),
        ],
        address: dovecot.imaps.to_string(),
        ..TargetSpec::default()
    };
    mail.write_inventory(&spec);
    assert_passes(
        &mail.certctl(&["deploy", "--dry-run", "--output", "json"]),
        "binding: dovecot loads them (ssl_cert doveconf -n; ssl_key doveconf -n)",
    );
    let elsewhere = dovecot.dir().join("certs/stray.key");
    let said = format!(
        "dovecot loads ssl_key {} (doveconf -n), not {}",
        dovecot.key_path().display(),
        elsewhere.display()
    );
    let live = vec![dovecot.cert_path(), dovecot.key_path()];
    refuses_then_off(&mail, &spec, "key_path", &elsewhere, &live, &said);
}

#[test]
fn traefik_checks_the_dynamic_file_certctl_writes_and_warns_without_one() {
    let lab = TlsLab::start();
    let traefik = Traefik::start(SNI, &lab.old.fullchain, &lab.old.key, true);
    let path = |p: PathBuf| p.display().to_string();
    let mut spec = tls_lab::TargetSpec {
        connector: "traefik".into(),
        params: vec![
            ("fullchain_path".into(), path(traefik.fullchain_path())),
            ("key_path".into(), path(traefik.key_path())),
            ("dynamic_config_path".into(), path(traefik.dynamic_path())),
        ],
        address: traefik.addr.to_string(),
        ..tls_lab::TargetSpec::default()
    };
    lab.write_inventory(&lab.new, &spec);
    let dry_run = || lab.certctl(&["deploy", "--dry-run", "--output", "json"]);
    let dynamic = traefik.dynamic_path().display().to_string();
    let out = dry_run();
    assert_passes(
        &out,
        &format!("binding: the file certctl writes names them ({dynamic}:4; {dynamic}:5)"),
    );
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);

    // No dynamic file: nothing names the paths, and nothing can be checked: a warning, shown
    // without -v, not a failure.
    spec.params.retain(|(k, _)| k != "dynamic_config_path");
    spec.params
        .push(("dynamic_config_path".into(), String::new()));
    lab.write_inventory(&lab.new, &spec);
    let out = dry_run();
    assert_passes(
        &out,
        "binding not checked: certctl writes no file naming them",
    );
    let warning = out
        .stderr
        .lines()
        .find(|l| l.contains("binding check could not tell"))
        .unwrap_or_else(|| panic!("a warning on stderr:\n{}", out.stderr));
    assert!(warning.contains("web-1"), "{warning}");
}
