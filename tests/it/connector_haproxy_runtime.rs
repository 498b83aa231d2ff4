//! End to end: the `haproxy` connector with `update: runtime` against a real haproxy 2.6
//! (master-worker) and a real sshd on loopback. The new bundle reaches the running worker
//! through haproxy's CLI socket in the test's directory (`set ssl cert` + `commit ssl cert`,
//! carried by socat): no reload, so the master and its one worker keep their PIDs, haproxy
//! loads no new configuration, and an idle keep-alive connection opened before the deploy still
//! answers after it. Served certificates are checked with `openssl s_client` and haproxy's own
//! `show ssl cert`, independently of certctl.

use crate::connector_haproxy::HaproxyLab;
use crate::support;

use std::fs;
use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::tls_lab::{Material, SNI, deploy_steps, find_step, leftovers, snapshot, target};

/// Which of haproxy's CLI sockets the target names.
#[derive(Clone, Copy)]
enum Cli {
    /// `stats socket … level admin`: commands as they are.
    Stats,
    /// The master CLI (`-S`): every command prefixed with `@1` (the current worker).
    Master,
}

/// The master's PID and its workers' PIDs: what a reload would change.
type Processes = (u32, Vec<u32>);

impl HaproxyLab {
    /// Writes the inventory for a runtime update of `material` through `cli`, with the
    /// connector's own reload command (the update) and per-target overrides of others.
    fn runtime_target(
        &self,
        material: &Material,
        cli: Cli,
        params: &[(&str, String)],
        commands: &[(&str, Vec<Vec<String>>)],
    ) {
        let h = &self.haproxy;
        let (socket, prefix) = match cli {
            Cli::Stats => (h.stats_socket(), ""),
            Cli::Master => (h.master_socket(), "@1"),
        };
        let mut all = vec![
            ("update", "runtime".to_string()),
            ("socket", socket.display().to_string()),
            ("cli_prefix", prefix.to_string()),
        ];
        for (k, v) in params {
            all.retain(|(name, _)| name != k);
            all.push((k, v.clone()));
        }
        let mut commands = commands.to_vec();
        commands.push(("reload", vec![]));
        self.target_with(material, &all, &commands);
    }

    fn processes(&self) -> Processes {
        (self.haproxy.master_pid(), self.haproxy.worker_pids())
    }

    /// haproxy's own view, through the stats socket: the SHA-1 of the certificate it holds
    /// under the bundle's name, and whether a runtime transaction is open.
    fn loaded_sha1(&self) -> String {
        let h = &self.haproxy;
        let name = h.pem_path().display().to_string();
        let said = h.cli(&h.stats_socket(), &format!("show ssl cert {name}\n"));
        said.lines()
            .find_map(|l| l.strip_prefix("SHA1 FingerPrint: "))
            .unwrap_or_else(|| panic!("no fingerprint in `show ssl cert {name}`: {said}"))
            .trim()
            .to_string()
    }

    fn transaction_open(&self) -> bool {
        let h = &self.haproxy;
        h.cli(&h.stats_socket(), "show ssl cert\n")
            .lines()
            .any(|l| l.starts_with('*'))
    }
}

/// The SHA-1 of a certificate file as haproxy prints it (upper-case hex, no colons).
fn sha1(cert: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha1", "-in"])
        .arg(cert)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().rsplit('=').next().unwrap().replace(':', "")
}

/// An HTTP/1.1 keep-alive connection over TLS (`openssl s_client`), kept open between
/// requests: proof that an update did not drop established connections.
struct KeepAlive {
    child: support::ChildGuard,
    received: mpsc::Receiver<Vec<u8>>,
    seen: Vec<u8>,
}

impl KeepAlive {
    fn open(addr: &str) -> KeepAlive {
        let mut child = Command::new("openssl")
            .args(["s_client", "-quiet", "-connect", addr, "-servername", SNI])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run openssl s_client");
        let mut stdout = child.stdout.take().unwrap();
        let (tx, received) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        KeepAlive {
            child: support::ChildGuard(child),
            received,
            seen: Vec::new(),
        }
    }

    /// Sends one request on the open connection; whether its `200` came back on it.
    fn request(&mut self) -> bool {
        let want = self.responses() + 1;
        let request = format!("GET / HTTP/1.1\r\nHost: {SNI}\r\n\r\n");
        let stdin = self.child.0.stdin.as_mut().unwrap();
        if stdin.write_all(request.as_bytes()).is_err() || stdin.flush().is_err() {
            return false;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.responses() < want {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.received.recv_timeout(left) {
                Ok(bytes) => self.seen.extend(bytes),
                Err(_) => return false,
            }
        }
        true
    }

    fn responses(&self) -> usize {
        String::from_utf8_lossy(&self.seen)
            .matches("HTTP/1.1 200")
            .count()
    }
}

/// The deploy's steps: swap, the live test, the reload step (which is the runtime update),
/// the verify. No new process, no configuration loaded, the idle connection still answers,
/// haproxy holds the new certificate, no transaction left open; the next run is `unchanged`.
#[test]
fn runtime_update_serves_the_new_certificate_with_no_new_process() {
    let l = HaproxyLab::start();
    l.runtime_target(&l.lab.new, Cli::Stats, &[], &[]);
    let before = l.processes();
    assert_eq!(before.1.len(), 1, "one worker");
    let mut idle = KeepAlive::open(&l.haproxy.addr.to_string());
    assert!(
        idle.request(),
        "the keep-alive connection answers before the deploy"
    );

    let out = l.lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let t = target(&out);
    assert_eq!(t["status"], "deployed", "{}", out.stderr);
    assert_eq!(t["served_fingerprint"], l.lab.new.fingerprint.as_str());
    assert_eq!(
        deploy_steps(&t),
        [
            "stage", "preview", "backup", "swap", "test", "reload", "verify"
        ]
    );
    let (_, reload) = find_step(&t, "reload", 0);
    assert_eq!(reload["status"], "ok", "{reload}");

    // Served at once, by the same processes, with no configuration loaded.
    assert_eq!(l.served().as_deref(), Some(l.lab.new.fingerprint.as_str()));
    assert!(l.chain_verifies(), "leaf + intermediate served");
    assert_eq!(l.processes(), before, "same master, same single worker");
    assert_eq!(l.loads(), 1, "no reload: {}", l.haproxy.log());
    assert!(idle.request(), "the idle connection was not dropped");
    assert_eq!(l.loaded_sha1(), sha1(&l.lab.new.cert));
    assert!(!l.transaction_open());
    // The file on disk is the new bundle too, so a later reload loads the same certificate.
    assert_eq!(
        fs::read(l.haproxy.pem_path()).unwrap(),
        fs::read(&l.lab.new.bundle).unwrap()
    );
    assert_eq!(support::mode(l.haproxy.pem_path()), 0o600);
    assert!(leftovers(&l.certs_dir()).is_empty());
    assert!(l.lab.scratch_dirs().is_empty());

    let out = l.lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(target(&out)["status"], "unchanged");
    assert_eq!(l.processes(), before);
}

/// The contrast that motivates `update: runtime`: with the default update (a reload), the old
/// worker stops and closes the idle keep-alive connection that the runtime update keeps.
#[test]
fn reload_update_closes_an_idle_keep_alive_connection() {
    let l = HaproxyLab::start();
    l.target_with(&l.lab.new, &[], &[]);
    let before = l.processes();
    let mut idle = KeepAlive::open(&l.haproxy.addr.to_string());
    assert!(idle.request());

    let out = l.lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(l.served().as_deref(), Some(l.lab.new.fingerprint.as_str()));
    assert_ne!(l.processes().1, before.1, "a new worker");
    assert!(!idle.request(), "the old worker closed the idle connection");
}

/// The preview checks that the update can reach haproxy; a dry run changes nothing, neither
/// on disk nor in the running haproxy.
#[test]
fn runtime_dry_run_changes_nothing() {
    let l = HaproxyLab::start();
    l.runtime_target(&l.lab.new, Cli::Stats, &[], &[]);
    let before = l.processes();
    let files = snapshot(&[l.haproxy.pem_path()]);

    let out = l.lab.certctl(&["deploy", "--dry-run", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let t = target(&out);
    assert_eq!(t["status"], "would-change", "{}", out.stderr);
    assert_eq!(deploy_steps(&t), ["stage", "preview"]);

    assert_eq!(snapshot(&[l.haproxy.pem_path()]), files);
    assert_eq!(l.served().as_deref(), Some(l.lab.old.fingerprint.as_str()));
    assert_eq!(l.loaded_sha1(), sha1(&l.lab.old.cert));
    assert!(!l.transaction_open());
    assert_eq!(l.processes(), before);
    assert_eq!(l.loads(), 1);
    assert!(leftovers(&l.certs_dir()).is_empty());
    assert!(l.lab.scratch_dirs().is_empty());
    assert!(l.lab.backup_sets().is_empty());
}

/// What the preview refuses, each a `would-fail` naming the cause: no socat, a path that is
/// no socket, and a runtime transaction someone else left open (which it must not commit).
#[test]
fn runtime_dry_run_fails_without_socat_socket_or_with_an_open_transaction() {
    let l = HaproxyLab::start();
    let missing = l.lab.dir().join("no-such.sock").display().to_string();
    let cases: [(&str, String, &str); 2] = [
        (
            "socat",
            "/nonexistent/socat".into(),
            "/nonexistent/socat is not installed on the target",
        ),
        (
            "socket",
            missing.clone(),
            &format!("{missing} is not a socket"),
        ),
    ];
    for (param, value, says) in cases {
        l.runtime_target(&l.lab.new, Cli::Stats, &[(param, value)], &[]);
        let out = l.lab.certctl(&["deploy", "--dry-run", "--output", "json"]);
        assert_eq!(out.code, 1, "{}", out.stderr);
        let t = target(&out);
        assert_eq!(t["status"], "would-fail", "{}", out.stderr);
        let error = t["error"].as_str().unwrap();
        assert!(error.starts_with("preview failed"), "{error}");
        assert!(error.contains(says), "{error}");
    }

    // Someone's `set ssl cert` without a commit.
    let h = &l.haproxy;
    let name = h.pem_path().display().to_string();
    let pem = fs::read_to_string(&l.lab.old.bundle).unwrap();
    let said = h.cli(
        &h.stats_socket(),
        &format!("set ssl cert {name} <<\n{pem}\n"),
    );
    assert!(said.contains("Transaction created"), "{said}");
    l.runtime_target(&l.lab.new, Cli::Stats, &[], &[]);
    let out = l.lab.certctl(&["deploy", "--dry-run", "--output", "json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let error = target(&out)["error"].as_str().unwrap().to_string();
    assert!(
        error.contains(&format!("a runtime transaction on {name} is in progress")),
        "{error}"
    );
    assert!(
        l.transaction_open(),
        "someone else's transaction is left alone"
    );
    assert_eq!(l.served().as_deref(), Some(l.lab.old.fingerprint.as_str()));
}

/// After the swap, another bundle lands on the live path (the `test` override stands in for
/// another process writing it): the runtime update pushes THAT certificate, haproxy serves
/// it, and the probe sees the wrong leaf. certctl restores the old bundle and pushes it
/// through the socket the same way: the old certificate is served again, by the same processes.
#[test]
fn runtime_failed_verify_pushes_the_old_bundle_back_through_the_socket() {
    let l = HaproxyLab::start();
    let other = l.lab.material("other");
    l.runtime_target(
        &l.lab.new,
        Cli::Stats,
        &[],
        &[(
            "test",
            vec![vec![
                "cp".into(),
                other.bundle.display().to_string(),
                "{live.bundle}".into(),
            ]],
        )],
    );
    let before = l.processes();

    let out = l.lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let t = target(&out);
    assert_eq!(t["status"], "rolled-back", "{}", out.stderr);
    let error = t["error"].as_str().unwrap();
    assert!(error.starts_with("verify failed"), "{error}");
    assert!(error.contains("restored"), "{error}");
    let (i, reload) = find_step(&t, "reload", 0);
    assert_eq!(reload["status"], "ok");
    let (i, verify) = find_step(&t, "verify", i);
    assert_eq!(verify["status"], "failed");
    let (i, _) = find_step(&t, "rollback", i);
    let (_, again) = find_step(&t, "reload", i);
    assert_eq!(again["status"], "ok", "the old bundle went back: {again}");
    // The update really went through: the verify's probes saw the other leaf.
    let served: Vec<&str> = t["probes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["served"].as_str())
        .collect();
    assert!(served.contains(&other.fingerprint.as_str()), "{served:?}");

    assert_eq!(l.served().as_deref(), Some(l.lab.old.fingerprint.as_str()));
    assert!(l.chain_verifies());
    assert_eq!(l.loaded_sha1(), sha1(&l.lab.old.cert));
    assert!(!l.transaction_open());
    assert_eq!(
        fs::read(l.haproxy.pem_path()).unwrap(),
        fs::read(&l.lab.old.bundle).unwrap()
    );
    assert_eq!(l.processes(), before, "no reload on the way there or back");
    assert_eq!(l.loads(), 1);
    assert!(leftovers(&l.certs_dir()).is_empty());
    assert!(l.lab.scratch_dirs().is_empty());
}

/// A bundle the running haproxy refuses (a SHA-1 leaf at OpenSSL's security level 2; the
/// operator's commands skip the preview of the staged bundle and the test): `commit ssl cert`
/// says `Failed!`, the update fails with haproxy's reason, no transaction is left open, and
/// the old bundle is restored on disk and pushed again.
#[test]
fn runtime_commit_refused_is_reported_and_rolled_back() {
    let l = HaproxyLab::start();
    let sha1_signed = l.lab.sha1_signed();
    l.runtime_target(
        &sha1_signed,
        Cli::Stats,
        &[],
        &[
            (
                "preview",
                vec![
                    ["{haproxy}", "-c", "-f", "{haproxy_cfg}"]
                        .map(String::from)
                        .to_vec(),
                ],
            ),
            ("test", vec![]),
        ],
    );
    let before = l.processes();

    let out = l.lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let t = target(&out);
    assert_eq!(t["status"], "rolled-back", "{}", out.stderr);
    let error = t["error"].as_str().unwrap();
    assert!(error.starts_with("reload failed"), "{error}");
    assert!(
        error.contains("haproxy refused commit ssl cert"),
        "haproxy's answer is shown: {error}"
    );
    assert!(
        error.contains("unable to load SSL certificate into SSL Context"),
        "{error}"
    );
    assert!(!l.transaction_open());
    assert_eq!(l.served().as_deref(), Some(l.lab.old.fingerprint.as_str()));
    assert_eq!(l.loaded_sha1(), sha1(&l.lab.old.cert));
    assert_eq!(
        fs::read(l.haproxy.pem_path()).unwrap(),
        fs::read(&l.lab.old.bundle).unwrap()
    );
    assert_eq!(l.processes(), before);
}

/// Through the master CLI (`@1` prefix): the same update, checked by probe, same processes.
#[test]
fn runtime_update_through_the_master_cli() {
    let l = HaproxyLab::start();
    l.runtime_target(&l.lab.new, Cli::Master, &[], &[]);
    let before = l.processes();

    let out = l.lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(target(&out)["status"], "deployed", "{}", out.stderr);
    assert_eq!(l.served().as_deref(), Some(l.lab.new.fingerprint.as_str()));
    assert_eq!(l.loaded_sha1(), sha1(&l.lab.new.cert));
    assert!(!l.transaction_open());
    assert_eq!(l.processes(), before);
    assert_eq!(l.loads(), 1);
}

/// `certctl rollback` after a runtime deploy restores the previous bundle and pushes it the
/// same way: checked by probe, same processes.
#[test]
fn runtime_certctl_rollback_pushes_the_old_bundle_back() {
    let l = HaproxyLab::start();
    l.runtime_target(&l.lab.new, Cli::Stats, &[], &[]);
    let before = l.processes();
    let out = l.lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(l.served().as_deref(), Some(l.lab.new.fingerprint.as_str()));

    let out = l.lab.certctl(&["rollback", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let t = target(&out);
    assert_eq!(t["status"], "rolled-back", "{}", out.stderr);
    let (_, reload) = find_step(&t, "reload", 0);
    assert_eq!(reload["status"], "ok", "{reload}");
    assert_eq!(l.served().as_deref(), Some(l.lab.old.fingerprint.as_str()));
    assert!(l.chain_verifies());
    assert_eq!(l.loaded_sha1(), sha1(&l.lab.old.cert));
    assert_eq!(
        fs::read(l.haproxy.pem_path()).unwrap(),
        fs::read(&l.lab.old.bundle).unwrap()
    );
    assert!(!l.transaction_open());
    assert_eq!(
        l.processes(),
        before,
        "no reload for the deploy or the rollback"
    );
    assert_eq!(l.loads(), 1);
}

/// `certctl connectors show haproxy` documents the runtime update's params and defaults.
#[test]
fn connectors_show_haproxy_documents_the_runtime_params() {
    let out = Command::new(env!("CARGO_BIN_EXE_certctl"))
        .args(["connectors", "show", "haproxy"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for (param, default) in [
        ("update", "reload"),
        ("socket", "/run/haproxy/admin.sock"),
        ("cli_prefix", "\"\""),
        ("socat", "socat"),
    ] {
        assert!(
            text.contains(&format!(
                "  {param}:\n    default: {default}\n    description:"
            )),
            "`{param}` (default {default}) is documented:\n{text}"
        );
    }
    for words in ["set ssl cert", "commit ssl cert", "level admin", "@1"] {
        assert!(text.contains(words), "{words}:\n{text}");
    }
}
