//! Input limits through the built binary against the real lab (sshd + nginx): file modes,
//! material that is not a regular file, an interrupt while material is still being read,
//! unbounded verify settings, a CA certificate as the leaf — each refused with exit 2 and its
//! place in the inventory before anything connects — and RSA keys above 4096 bits deployed
//! to real nginx with the probe checking the handshake signature.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support;

use support::edit::{self, argv, q};
use support::lab::{Lab, Output, TargetOptions};
use support::pki::{KeyType, LeafOpts};

/// Replaces `from` (which must occur) with `to` in the lab's inventory.
fn replace(lab: &Lab, from: &str, to: &str) {
    let text = fs::read_to_string(&lab.inventory).unwrap();
    assert!(text.contains(from), "{from:?} in:\n{text}");
    fs::write(&lab.inventory, text.replacen(from, to, 1)).unwrap();
}

/// `FILE:LINE:` of the first inventory line containing `needle`.
fn place(lab: &Lab, needle: &str) -> String {
    let text = fs::read_to_string(&lab.inventory).unwrap();
    let line = text
        .lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} in:\n{text}"));
    format!("{}:{}:", lab.inventory.display(), line + 1)
}

/// Runs `certctl ARGS -i INVENTORY` and kills it if it has not exited within `limit` (that is
/// a failure: input must never hang a run).
fn run_within(lab: &Lab, args: &[&str], limit: Duration) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = certctl(lab, args)
        .stdout(fs::File::create(&out_path).unwrap())
        .stderr(fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`certctl {}` still running after {limit:?}: {}",
                args.join(" "),
                fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        code: status.code().unwrap_or(-1),
        stdout: fs::read_to_string(&out_path).unwrap(),
        stderr: fs::read_to_string(&err_path).unwrap(),
    }
}

fn certctl(lab: &Lab, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_certctl"));
    command
        .arg(args[0])
        .arg("-i")
        .arg(&lab.inventory)
        .args(&args[1..])
        .env_remove("SSH_AUTH_SOCK")
        .env("NO_COLOR", "1")
        .env("CERTCTL_HISTORY", "off")
        .stdin(Stdio::null());
    command
}

/// `check` and `deploy` both exit 2 within seconds saying every one of `says`; no SSH login,
/// the live files untouched.
fn refused(lab: &Lab, says: &[&str]) {
    let logins = lab.sshd_connections();
    let before = lab.snapshot_live_files();
    for command in ["check", "deploy"] {
        let out = run_within(lab, &[command], Duration::from_secs(20));
        assert_eq!(out.code, 2, "`certctl {command}`: {}", out.stderr);
        for s in says {
            assert!(
                out.stderr.contains(s),
                "`certctl {command}` says {s:?}:\n{}",
                out.stderr
            );
        }
    }
    assert_eq!(lab.sshd_connections(), logins, "no SSH login");
    assert_eq!(lab.snapshot_live_files(), before, "nothing touched");
}

fn check_ok(lab: &Lab) {
    let out = lab.certctl(&["check"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn file_modes_with_special_bits_or_wider_than_0640_for_keys_are_refused() {
    let lab = Lab::start(TargetOptions::default());
    replace(&lab, "    params:\n", "    params:\n      mode: \"4755\"\n");
    let at = place(&lab, "mode: \"4755\"");
    refused(
        &lab,
        &[&format!(
            "{at}13: param `mode` \"4755\": mode 4755 sets the setuid and execute bits; \
             certificate and key files are data"
        )],
    );
    for (mode, bits) in [
        ("2640", "sets the setgid bit;"),
        ("1644", "sets the sticky bit;"),
        ("0750", "sets the execute bit;"),
    ] {
        replace(&lab, "mode: \"", &format!("mode: \"{mode}\" #"));
        let out = lab.certctl(&["check"]);
        assert_eq!(out.code, 2, "{mode}: {}", out.stderr);
        assert!(out.stderr.contains(bits), "{mode}: {}", out.stderr);
    }
    // The param applies to every file of the target, so also to the key: at most 0640.
    replace(&lab, "mode: \"", "mode: \"0644\" #");
    let target = place(&lab, "- name: web-1");
    refused(
        &lab,
        &[&format!(
            "{target}5: target `web-1`: param `mode` applies to every file of the target, \
             including the `key` file `{}`: mode 0644 is wider than 0640",
            lab.nginx.key_path().display()
        )],
    );
    replace(&lab, "mode: \"", "mode: \"0640\" #");
    check_ok(&lab);
    let out = lab.certctl(&["deploy"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(support::mode(lab.nginx.key_path()), 0o640);
    assert_eq!(support::mode(lab.nginx.cert_path()), 0o640);
}

#[test]
fn material_that_is_not_a_regular_file_is_refused_before_it_is_opened() {
    let lab = Lab::start(TargetOptions::default());
    let dir = lab.path("special");
    let fifo = dir.join("material.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let fifo_text = fifo.display().to_string();
    let original = fs::read_to_string(&lab.inventory).unwrap();
    let cases: [(&str, &str, &str); 4] = [
        (
            "cert",
            &fifo_text,
            "is a FIFO (named pipe), not a regular file",
        ),
        (
            "chain",
            "/dev/zero",
            "is a character device, not a regular file",
        ),
        (
            "key",
            &fifo_text,
            "is a FIFO (named pipe), not a regular file",
        ),
        ("key", "/tmp", "is a directory, not a regular file"),
    ];
    for (field, path, says) in cases {
        fs::write(&lab.inventory, &original).unwrap();
        edit::set_source(&lab.inventory, field, &format!("{field}: {}", q(path)));
        let at = place(&lab, "  www:");
        refused(
            &lab,
            &[&format!("{at}3: certificate `www`: {path}: {says}")],
        );
    }
}

/// The state of process `pid` (`/proc/PID/stat`'s third field), or `None` once it is gone.
fn process_state(pid: &str) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(") ").next()?.chars().next()
}

#[test]
fn the_first_interrupt_ends_a_run_still_reading_its_material_and_its_command() {
    let lab = Lab::start(TargetOptions::default());
    let pid_file = lab.path("cmd").join("pid");
    let script = format!("echo $$ > {}; exec sleep 300", pid_file.display());
    edit::set_source(
        &lab.inventory,
        "key",
        &format!(
            "key_command: {}\n    command_timeout: 10m",
            argv(&["sh", "-c", &script])
        ),
    );
    let logins = lab.sshd_connections();
    let mut child = certctl(&lab, &["deploy"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let command_pid = loop {
        match fs::read_to_string(&pid_file) {
            Ok(pid) if pid.ends_with('\n') => break pid.trim().to_string(),
            _ if started.elapsed() > Duration::from_secs(20) => panic!("key_command never ran"),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let interrupted = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if interrupted.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("certctl did not stop within 10 s of the interrupt");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(130), "{status:?}: {stderr}");
    assert!(
        stderr.contains("interrupt: stopped before any target was started; nothing was touched"),
        "{stderr}"
    );
    // The command's process group was killed with it (a zombie is dead: only its parent, now
    // gone, would have reaped it).
    let deadline = Instant::now() + Duration::from_secs(5);
    while matches!(process_state(&command_pid), Some(s) if s != 'Z') {
        assert!(Instant::now() < deadline, "key_command still running");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(lab.sshd_connections(), logins, "no SSH login");
}

#[test]
fn verify_settings_beyond_their_limits_are_refused_naming_the_limit() {
    let lab = Lab::start(TargetOptions::default());
    let line =
        "  verify: { attempts: 6, backoff: 100ms, max_backoff: 1s, timeout: 5s, consecutive: 2 }";
    let cases = [
        (
            "attempts: 1000000, backoff: 100ms, max_backoff: 1s, timeout: 5s",
            "attempts: 1000000",
            "target `web-1`: verify.attempts is 1000000; the limit is 100 probes",
        ),
        (
            "attempts: 6, backoff: 100ms, max_backoff: 1s, timeout: 100000000h",
            "timeout: 100000000h",
            "target `web-1`: verify.timeout is 100000000h; the limit is 2m per probe",
        ),
        (
            "attempts: 6, backoff: 100ms, max_backoff: 1h, timeout: 5s",
            "max_backoff: 1h",
            "target `web-1`: verify.max_backoff is 1h; the limit is 10m between two probes",
        ),
        (
            "attempts: 60, backoff: 1s, max_backoff: 1m, timeout: 1m",
            "attempts: 60",
            "target `web-1`: verify could take 1h 55m 3s (60 probes and a quick recheck of up \
             to 1m each, plus the waits between them); one target's verify is limited to 30m",
        ),
    ];
    let mut current = line.to_string();
    for (settings, value, says) in cases {
        let next = format!("  verify: {{ {settings}, consecutive: 2 }}");
        replace(&lab, &current, &next);
        current = next;
        let text = fs::read_to_string(&lab.inventory).unwrap();
        let (row, col) = text
            .lines()
            .enumerate()
            .find_map(|(i, l)| {
                l.find(value)
                    .map(|c| (i + 1, c + 1 + value.find(' ').unwrap() + 1))
            })
            .unwrap();
        refused(
            &lab,
            &[&format!("{}:{row}:{col}: {says}", lab.inventory.display())],
        );
    }
    // At the limits: accepted.
    replace(
        &lab,
        &current,
        "  verify: { attempts: 100, backoff: 100ms, max_backoff: 10s, timeout: 2s, consecutive: 2 }",
    );
    check_ok(&lab);
}

#[test]
fn a_ca_certificate_as_the_leaf_is_refused() {
    let lab = Lab::start(TargetOptions::default());
    let ca = lab
        .pki
        .issue("ca-leaf", LeafOpts::new(&[support::lab::SNI]).ca());
    edit::set_source(
        &lab.inventory,
        "cert",
        &format!("cert: {}", q(ca.cert.display().to_string())),
    );
    edit::set_source(
        &lab.inventory,
        "key",
        &format!("key: {}", q(ca.key.display().to_string())),
    );
    let at = place(&lab, "  www:");
    refused(
        &lab,
        &[&format!(
            "{at}3: certificate `www`: `{}` in {} is a CA certificate (basicConstraints CA:TRUE \
             and keyUsage keyCertSign: TLS clients such as rustls refuse a CA certificate as the \
             server's)",
            support::lab::SNI,
            ca.cert.display()
        )],
    );
}

/// Deploys a leaf with an RSA key of `bits` to the lab's nginx: the material check passes,
/// nginx loads the staged pair, the probe verifies the handshake signature and sees the leaf.
fn deploy_rsa(bits: u32) {
    let lab = Lab::start(TargetOptions::default());
    let leaf = lab.pki.issue(
        &format!("rsa{bits}"),
        LeafOpts::new(&[support::lab::SNI]).key(KeyType::Rsa(bits)),
    );
    let bits_seen = support::pki::openssl_ok(&["x509", "-in", path(&leaf.cert), "-noout", "-text"]);
    assert!(
        String::from_utf8_lossy(&bits_seen).contains(&format!("({bits} bit)")),
        "an RSA-{bits} leaf"
    );
    edit::set_source(
        &lab.inventory,
        "cert",
        &format!("cert: {}", q(path(&leaf.cert))),
    );
    edit::set_source(
        &lab.inventory,
        "key",
        &format!("key: {}", q(path(&leaf.key))),
    );
    let out = lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report = out.json();
    let target = &report["targets"][0];
    assert_eq!(target["status"], "deployed", "{}", out.stderr);
    let fingerprint = leaf.openssl_fingerprint();
    assert_eq!(target["served_fingerprint"], fingerprint.as_str());
    let probes = target["probes"].as_array().unwrap();
    assert_eq!(probes.last().unwrap()["matched"], true, "{probes:?}");
    assert_eq!(
        lab.served(),
        fingerprint,
        "openssl sees the RSA-{bits} leaf"
    );
    assert!(
        lab.nginx
            .chain_verifies(Some(support::lab::SNI), &lab.pki.root_crt())
    );
    let out = lab.certctl(&["verify"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn an_rsa_8192_certificate_deploys_to_nginx_and_the_probe_verifies_it() {
    deploy_rsa(8192);
}

/// ring verifies RSA signatures up to 8192 bits; above that the probe uses the `rsa` crate.
/// Generating a 16384-bit key takes minutes of CPU: run it by hand with `--ignored`.
#[test]
#[ignore = "generates an RSA-16384 key: minutes of CPU"]
fn an_rsa_16384_certificate_deploys_to_nginx_and_the_probe_verifies_it() {
    deploy_rsa(16384);
}
