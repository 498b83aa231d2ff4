//! Certificate sources against the real lab: `cert`, `chain` and `key` each from a file, an
//! environment variable or a command. Material from a command or a variable is checked exactly
//! like a file (the same message for the same bytes); a failing command shows its stderr and
//! never its stdout; a hanging one is killed after `command_timeout`; nothing is touched.

use std::fs;
use std::time::{Duration, Instant};

use crate::support;

use support::edit::{self, argv, q};
use support::lab::{Lab, TargetOptions, run_certctl};

#[test]
fn deploy_from_commands_and_variables() {
    let lab = Lab::start(TargetOptions::default());
    let cert = lab.new.cert.display().to_string();
    let key = lab.new.key.display().to_string();
    edit::set_source(
        &lab.inventory,
        "cert",
        &format!("cert_command: {}", argv(&["cat", &cert])),
    );
    edit::set_source(&lab.inventory, "chain", "chain_env: CERTCTL_TEST_CHAIN");
    edit::set_source(
        &lab.inventory,
        "key",
        &format!(
            "key_command: {}",
            argv(&["sh", "-c", &format!("cat {key}")])
        ),
    );
    let chain = fs::read_to_string(&lab.new.chain).unwrap();
    let env = [("CERTCTL_TEST_CHAIN", chain.as_str())];
    let out = run_certctl(&lab.inventory, &["deploy", "--output", "json"], &env);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["targets"][0]["status"], "deployed");
    assert_eq!(lab.served(), lab.new.fingerprint);
    assert_eq!(
        lab.served_chain_len(),
        2,
        "leaf and the chain from the variable"
    );
    // The one-line form CI secrets often use (`\n` escaped) works for any input.
    let one_line = chain.trim_end().replace('\n', "\\n");
    let out = run_certctl(
        &lab.inventory,
        &["check"],
        &[("CERTCTL_TEST_CHAIN", &one_line)],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn command_and_variable_material_is_checked_like_a_file() {
    let lab = Lab::start(TargetOptions::default());
    // The key where the certificate belongs: the same refusal from a file, a command and a
    // variable, naming the source.
    let key = lab.new.key.display().to_string();
    let key_pem = fs::read_to_string(&lab.new.key).unwrap();
    let message = |out: &support::lab::Output, source: &str| {
        assert_eq!(out.code, 2, "{}", out.stderr);
        let line = out
            .stderr
            .lines()
            .find(|l| l.starts_with("error: ") && l.contains(": certificate `www`: "))
            .unwrap_or_else(|| panic!("{}", out.stderr))
            .to_string();
        assert!(line.contains(source), "{line}");
        line.replace(source, "SOURCE")
    };
    edit::set_source(&lab.inventory, "cert", &format!("cert: {}", q(&key)));
    let from_file = message(&lab.certctl(&["check"]), &key);
    edit::set_source(
        &lab.inventory,
        "cert",
        &format!("cert_command: {}", argv(&["cat", &key])),
    );
    let from_command = message(&lab.certctl(&["check"]), "cert_command `cat`");
    edit::set_source(
        &lab.inventory,
        "cert_command",
        "cert_env: CERTCTL_TEST_CERT",
    );
    let out = run_certctl(
        &lab.inventory,
        &["check"],
        &[("CERTCTL_TEST_CERT", &key_pem)],
    );
    let from_env = message(&out, "cert_env `CERTCTL_TEST_CERT`");
    assert_eq!(from_file, from_command);
    assert_eq!(from_file, from_env);
    let body = key_pem.lines().nth(1).unwrap();
    assert!(!from_file.contains(body), "{from_file}");
}

#[test]
fn a_failing_or_hanging_command_touches_nothing_and_never_shows_its_output() {
    let lab = Lab::start(TargetOptions::default());
    let before = lab.snapshot_live_files();
    let logins = lab.sshd_connections();
    let script = "echo 'vault: permission denied (token expired)' >&2; \
                  echo '-----BEGIN CERTIFICATE----- TOP-SECRET-OUTPUT'; exit 2";
    edit::set_source(
        &lab.inventory,
        "cert",
        &format!("cert_command: {}", argv(&["sh", "-c", script])),
    );
    let out = lab.certctl(&["deploy"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("cert_command `sh`: `sh` failed (exit status: 2); stderr: vault: permission denied (token expired)"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("TOP-SECRET-OUTPUT"), "{}", out.stderr);
    assert!(!out.stdout.contains("TOP-SECRET-OUTPUT"));

    // A command that hangs is killed after command_timeout, with what it said so far.
    edit::set_source(
        &lab.inventory,
        "cert_command",
        &format!(
            "cert_command: {}\n    command_timeout: 1s",
            argv(&["sh", "-c", "echo waiting for the HSM >&2; sleep 60"])
        ),
    );
    let started = Instant::now();
    let out = lab.certctl(&["deploy"]);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("did not finish within 1s and was killed; stderr: waiting for the HSM"),
        "{}",
        out.stderr
    );
    assert_eq!(lab.snapshot_live_files(), before, "nothing was touched");
    assert_eq!(lab.sshd_connections(), logins, "nothing was contacted");
}

#[test]
fn two_sources_for_one_input_are_refused_with_the_place() {
    let lab = Lab::start(TargetOptions::default());
    let chain = lab.new.chain.display().to_string();
    edit::set_source(
        &lab.inventory,
        "chain",
        &format!(
            "chain: {}\n    chain_command: {}",
            q(&chain),
            argv(&["cat", &chain])
        ),
    );
    let out = lab.certctl(&["check"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "certificate `www`: set only one of `chain`, `chain_env` and `chain_command`"
        ),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("certctl.yaml:"), "{}", out.stderr);
}
