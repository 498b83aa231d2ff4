//! Transport faults a real server cannot produce on demand, from in-process fakes (every test
//! here that uses one says "fake" in its name): an SSH port that accepts and never speaks,
//! one that sends its banner and stalls, one that trickles it, one that closes during the key
//! exchange; a TLS endpoint that hangs after the ClientHello, and one that serves a different
//! certificate on each connection. Each is bounded by a small timeout and reported clearly.
//!
//! The SSH connect timeout is 10 s unless the OpenSSH client config says otherwise, so these
//! tests pass `-F` with `ConnectTimeout 2`.

use crate::support;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use support::faults::{InventorySpec, LiveSet, Rig, RigOptions, Served};

/// An in-process fake server: a listener on its own loopback address whose accepted
/// connections are each handed to `serve` (with their 1-based number) on a thread.
struct Fake {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Fake {
    fn start(serve: impl Fn(TcpStream, usize) + Send + Sync + 'static) -> Fake {
        let listener = TcpListener::bind(support::free_addr()).unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let serve = Arc::new(serve);
        let thread = {
            let (accepted, stop) = (accepted.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let n = accepted.fetch_add(1, Ordering::SeqCst) + 1;
                    let serve = serve.clone();
                    std::thread::spawn(move || serve(stream, n));
                }
            })
        };
        Fake {
            addr,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads (and drops) whatever the client sends until it hangs up; never writes.
fn hold(mut stream: TcpStream) {
    let _ = std::io::copy(&mut stream, &mut std::io::sink());
}

const BANNER: &[u8] = b"SSH-2.0-OpenSSH_9.2p1 certctl-fake\r\n";

/// An OpenSSH client config that makes the SSH connect timeout 2 s.
fn quick_connect_config(rig: &Rig) -> String {
    let path = rig.dir().join("ssh_config");
    std::fs::write(&path, "Host *\n  ConnectTimeout 2\n").unwrap();
    path.display().to_string()
}

/// Deploys to a fake SSH server at `addr`; returns the report's target and the exit code.
fn deploy_to_fake_ssh(rig: &Rig, addr: SocketAddr) -> (i32, serde_json::Value, String) {
    rig.write_inventory(&InventorySpec {
        ssh_address: Some(addr),
        ..InventorySpec::default()
    });
    let config = quick_connect_config(rig);
    let out = rig.certctl(&["deploy", "-F", &config, "--output", "json"]);
    let target = out.json()["targets"][0].clone();
    (out.code, target, out.stderr)
}

/// Nothing was touched: no login at the real sshd, the old pair live and served.
fn assert_untouched(rig: &Rig) {
    assert_eq!(rig.logins(), 0, "no SSH login anywhere");
    assert_eq!(rig.live_set(), LiveSet::Old);
    assert_eq!(rig.served(), Served::Old);
}

fn assert_unreachable(code: i32, target: &serde_json::Value, stderr: &str, says: &str) {
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(target["status"], "unreachable", "{target}");
    let error = target["error"].as_str().unwrap();
    assert!(error.contains(says), "{error}");
    assert!(error.ends_with("nothing was changed"), "{error}");
    assert!(
        stderr.contains(says),
        "the human output says it too: {stderr}"
    );
}

#[test]
fn fake_ssh_server_that_never_speaks_is_unreachable_after_the_connect_timeout() {
    let rig = Rig::start(RigOptions::default());
    let fake = Fake::start(|s, _| hold(s));
    let (code, target, stderr) = deploy_to_fake_ssh(&rig, fake.addr);
    assert_unreachable(
        code,
        &target,
        &stderr,
        &format!("{}: connect timed out after 2s", fake.addr),
    );
    assert_untouched(&rig);
}

#[test]
fn fake_ssh_server_that_stalls_after_its_banner_is_unreachable_after_the_connect_timeout() {
    let rig = Rig::start(RigOptions::default());
    let fake = Fake::start(|mut s, _| {
        let _ = s.write_all(BANNER);
        hold(s);
    });
    let (code, target, stderr) = deploy_to_fake_ssh(&rig, fake.addr);
    assert_unreachable(code, &target, &stderr, "connect timed out after 2s");
    assert_untouched(&rig);
}

#[test]
fn fake_ssh_server_that_trickles_its_banner_is_unreachable_after_the_connect_timeout() {
    let rig = Rig::start(RigOptions::default());
    // One byte every 300 ms: the banner alone would take about 11 s.
    let fake = Fake::start(|mut s, _| {
        for b in BANNER {
            if s.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        hold(s);
    });
    let (code, target, stderr) = deploy_to_fake_ssh(&rig, fake.addr);
    assert_unreachable(code, &target, &stderr, "connect timed out after 2s");
    assert_untouched(&rig);
}

#[test]
fn fake_ssh_server_that_closes_mid_key_exchange_is_retried_then_unreachable() {
    let rig = Rig::start(RigOptions::default());
    // Banner, then read the client's banner and the start of its KEXINIT, then hang up.
    let fake = Fake::start(|mut s, _| {
        let _ = s.write_all(BANNER);
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        while !seen.windows(2).any(|w| w == b"\r\n") || seen.len() < 64 {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        assert!(
            seen.starts_with(b"SSH-2.0-"),
            "the client speaks SSH first: {:?}",
            String::from_utf8_lossy(&seen)
        );
    });
    let (code, target, stderr) = deploy_to_fake_ssh(&rig, fake.addr);
    assert_unreachable(code, &target, &stderr, "(3 attempts)");
    assert_eq!(
        fake.connections(),
        3,
        "a reset during the handshake is retried, 3 attempts in all"
    );
    assert_untouched(&rig);
}

/// A deploy whose verify probes go to `address` (a fake), quick probe settings.
fn deploy_probing(rig: &Rig, address: SocketAddr, verify: &str) -> support::lab::Output {
    rig.write_inventory(&InventorySpec {
        verify_address: Some(address.to_string()),
        verify: Some(verify.to_string()),
        ..InventorySpec::default()
    });
    rig.certctl(&["deploy", "--output", "json"])
}

#[test]
fn fake_tls_endpoint_that_hangs_after_client_hello_fails_the_verify_within_its_timeout() {
    let rig = Rig::start(RigOptions::default());
    let fake = Fake::start(|mut s, _| {
        let mut hello = [0u8; 5];
        if s.read_exact(&mut hello).is_ok() {
            assert_eq!(hello[0], 0x16, "a TLS handshake record (ClientHello)");
        }
        hold(s);
    });
    let out = deploy_probing(
        &rig,
        fake.addr,
        "{ attempts: 2, backoff: 100ms, max_backoff: 100ms, timeout: 500ms, consecutive: 1 }",
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    let target = &out.json()["targets"][0];
    assert_eq!(target["status"], "rolled-back", "{}", out.stderr);
    let error = target["error"].as_str().unwrap();
    assert!(error.starts_with("verify failed"), "{error}");
    assert!(
        error.contains("connected, but the TLS handshake timed out after 500ms"),
        "{error}"
    );
    // The inspect probe saw nothing either, so there is no old certificate to wait for.
    assert!(
        error.contains("nothing was served before the deploy"),
        "{error}"
    );
    let probes = target["probes"].as_array().unwrap();
    assert_eq!(probes.len(), 2, "verify.attempts probes: {probes:?}");
    assert!(probes.iter().all(|p| p["served"].is_null()));
    // The policy gate's downgrade probe, inspect's probe and two verify probes.
    assert_eq!(fake.connections(), 4);
    assert_eq!(rig.live_set(), LiveSet::Old, "restored");
    assert_eq!(rig.served(), Served::Old);
}

#[test]
fn fake_tls_endpoint_that_never_speaks_makes_verify_exit_4() {
    let rig = Rig::start(RigOptions::default());
    let fake = Fake::start(|s, _| hold(s));
    rig.write_inventory(&InventorySpec {
        verify_address: Some(fake.addr.to_string()),
        verify: Some(
            "{ attempts: 1, backoff: 100ms, max_backoff: 100ms, timeout: 500ms, consecutive: 1 }"
                .into(),
        ),
        ..InventorySpec::default()
    });
    let out = rig.certctl(&["verify", "--output", "json"]);
    assert_eq!(out.code, 4, "{}", out.stderr);
    let target = &out.json()["targets"][0];
    assert_eq!(target["status"], "unreachable", "{target}");
    let error = target["error"].as_str().unwrap();
    assert!(
        error.contains("TLS handshake timed out after 500ms"),
        "{error}"
    );
    assert_eq!(rig.logins(), 0, "verify never logs in");
}

/// A rustls server config serving `fullchain` with `key`.
fn tls_config(fullchain: &Path, key: &Path) -> Arc<rustls::ServerConfig> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(fullchain)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
    )
}

/// Completes one TLS handshake with `config`, then closes.
fn handshake(config: Arc<rustls::ServerConfig>, mut tcp: TcpStream) {
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
    let mut conn = rustls::ServerConnection::new(config).unwrap();
    while conn.is_handshaking() {
        if conn.complete_io(&mut tcp).is_err() {
            return;
        }
    }
    conn.send_close_notify();
    let _ = conn.complete_io(&mut tcp);
}

/// A load balancer with one backend updated and one not: while the new files are live it
/// serves the new and the old certificate on alternate connections; otherwise the old one.
fn flapping_fake(rig: &Rig) -> Fake {
    let old = tls_config(&rig.old.leaf.fullchain, &rig.old.leaf.key);
    let new = tls_config(&rig.new.leaf.fullchain, &rig.new.leaf.key);
    let live = rig.nginx.cert_path();
    let new_bytes = rig.new.fullchain.clone();
    // Alternation counts only the connections while the new files are live, so it does not
    // depend on how many probes (policy gate, inspect) ran before the swap.
    let while_live = std::sync::atomic::AtomicUsize::new(0);
    Fake::start(move |s, _| {
        let new_live = std::fs::read(&live).is_ok_and(|b| b == new_bytes);
        let n = if new_live {
            while_live.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        } else {
            1
        };
        let config = if new_live && n % 2 == 0 { &new } else { &old };
        handshake(config.clone(), s);
    })
}

#[test]
fn fake_tls_endpoint_serving_a_different_certificate_each_time_is_caught_by_consecutive() {
    let rig = Rig::start(RigOptions::default());
    let fake = flapping_fake(&rig);
    let out = deploy_probing(
        &rig,
        fake.addr,
        "{ attempts: 6, backoff: 50ms, max_backoff: 100ms, timeout: 5s, consecutive: 2 }",
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    let target = &out.json()["targets"][0];
    assert_eq!(target["status"], "rolled-back", "{}", out.stderr);
    let error = target["error"].as_str().unwrap();
    assert!(error.starts_with("verify failed"), "{error}");
    // Six scheduled probes, each match confirmed by one more (free) probe.
    assert!(error.contains("after 12 probe(s)"), "{error}");
    assert!(
        error.contains(&format!("serves {} again", rig.old.fingerprint)),
        "{error}"
    );
    // The new certificate WAS served, just never twice in a row.
    let probes = target["probes"].as_array().unwrap();
    let served: Vec<&str> = probes
        .iter()
        .take(12)
        .map(|p| p["served"].as_str().unwrap_or(""))
        .collect();
    assert!(served.contains(&rig.new.fingerprint.as_str()), "{served:?}");
    assert!(served.contains(&rig.old.fingerprint.as_str()), "{served:?}");
    assert_eq!(rig.live_set(), LiveSet::Old);
    assert_eq!(rig.served(), Served::Old);
}

#[test]
fn fake_tls_endpoint_serving_a_different_certificate_each_time_fools_a_single_match() {
    // The same flapping endpoint with `consecutive: 1`: one lucky probe passes — which is why
    // load-balanced targets want `consecutive` above 1.
    let rig = Rig::start(RigOptions::default());
    let fake = flapping_fake(&rig);
    let out = deploy_probing(
        &rig,
        fake.addr,
        "{ attempts: 6, backoff: 50ms, max_backoff: 100ms, timeout: 5s, consecutive: 1 }",
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["targets"][0]["status"], "deployed");
}
