//! Test support: real daemons on loopback (sshd, nginx), test-time PKI, and helpers to run the
//! built binary. Every daemon gets its own 127.x.y.z address and a free port, runs as a child of
//! the test process, and is stopped by PID when its handle drops.

pub mod apache;
pub mod caddy;
pub mod dovecot;
pub mod edit;
pub mod emulated;
pub mod envoy;
pub mod faults;
pub mod haproxy;
pub mod lab;
pub mod mail;
pub mod mountns;
pub mod nginx;
pub mod offline;
pub mod pki;
pub mod postfix;
pub mod prom;
pub mod sshd;
pub mod tls_lab;
pub mod traefik;
pub mod users;
pub mod winlab;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A loopback address of this test's own (127.A.B.C, never 127.0.0.x) and a port free on it.
pub fn free_addr() -> SocketAddr {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // Mix the PID in so parallel test processes (nextest, several test binaries) spread out.
    let seed = std::process::id()
        .wrapping_mul(2_654_435_761)
        .wrapping_add(n.wrapping_mul(40_503));
    let ip = Ipv4Addr::new(
        127,
        10 + (seed % 200) as u8,
        ((seed >> 8) % 250) as u8 + 1,
        ((seed >> 16) % 250) as u8 + 2,
    );
    let listener = TcpListener::bind((ip, 0)).expect("bind a loopback address");
    listener.local_addr().unwrap()
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "nothing listens on {addr} after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether something accepts TCP connections on `addr` now.
pub fn listening(addr: &SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(addr, Duration::from_millis(200)).is_ok()
}

/// Polls a daemon the tests started until `ready` holds: panics with its log when its process
/// (`child`) exits first, or when `timeout` passes. One loop for every daemon runner.
pub fn wait_ready<D>(
    daemon: &mut D,
    what: &str,
    timeout: Duration,
    child: impl Fn(&mut D) -> &mut std::process::Child,
    ready: impl Fn(&D) -> bool,
    log: impl Fn(&D) -> String,
) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child(daemon).try_wait().unwrap() {
            panic!(
                "{what}: exited ({status}) before it was ready:\n{}",
                log(daemon)
            );
        }
        if ready(daemon) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not ready after {timeout:?}:\n{}",
            log(daemon)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Fails loudly when a program the tests need is missing: CI must never skip silently.
pub fn require(program: &str) -> std::path::PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/bin"] {
        let p = std::path::Path::new(dir).join(program);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "`{program}` is not installed; run `bash .ci/run` (or the README's test command) which installs it"
    );
}

/// A child process killed (by PID) and reaped on drop.
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Permission bits of a file.
pub fn mode(path: impl AsRef<std::path::Path>) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path.as_ref())
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}
