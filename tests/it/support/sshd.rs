//! A real OpenSSH sshd for tests: its own temp dir, host key, client key, authorized_keys and
//! loopback address; runs in the foreground as a child of the test and is killed (by PID) when
//! the [`Sshd`] drops. Only key material generated at test time is used.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use certctl::ssh::{JumpHost, SshConfig};

use super::{ChildGuard, free_addr, require};

/// A running sshd. Fields are public so tests can build any config they need.
pub struct Sshd {
    pub addr: SocketAddr,
    /// Private key authorised for [`Sshd::user`] (ed25519, no passphrase).
    pub client_key: PathBuf,
    /// A known_hosts file that trusts this server's host key.
    pub known_hosts: PathBuf,
    /// The host key's public line, `ssh-ed25519 AAAA…` (no comment).
    pub host_key_pub: String,
    /// The login user: whoever runs the tests (root in CI).
    pub user: String,
    pub authorized_keys: PathBuf,
    pub log_path: PathBuf,
    // Declared before `dir` so the daemon dies before its directory is removed.
    child: ChildGuard,
    dir: tempfile::TempDir,
}

/// How to start an [`Sshd`] beyond the standard test config.
#[derive(Debug, Clone)]
pub struct SshdOptions {
    /// Where to listen; default: a fresh 127.x.y.z address from [`free_addr`].
    pub addr: Option<SocketAddr>,
    /// `LogLevel`: `VERBOSE` names accepted keys; `DEBUG1` also logs each forwarded
    /// (`direct-tcpip`) connection.
    pub log_level: &'static str,
    /// `MaxStartups`; `None` leaves sshd's default (`10:30:100`).
    pub max_startups: Option<&'static str>,
    /// Lines appended to the config (see [`Sshd::start_with`]).
    pub extra: Vec<String>,
}

impl Default for SshdOptions {
    fn default() -> Self {
        SshdOptions {
            addr: None,
            log_level: "VERBOSE",
            max_startups: Some("100:30:200"),
            extra: Vec::new(),
        }
    }
}

/// A free port on the IPv6 loopback `[::1]`. Panics (never skips) when IPv6 is unavailable.
pub fn free_addr_v6() -> SocketAddr {
    let listener = std::net::TcpListener::bind("[::1]:0").unwrap_or_else(|e| {
        panic!("cannot bind [::1]:0 — IPv6 loopback is unavailable in this environment: {e}")
    });
    listener.local_addr().unwrap()
}

impl Sshd {
    /// Starts an sshd with the standard test config.
    pub fn start() -> Sshd {
        Self::start_with(&[])
    }

    /// Starts an sshd with `extra_config` lines appended to the standard test config (sshd
    /// takes the FIRST value of a repeated keyword, so these can only add keywords, except a
    /// `Subsystem sftp …` line, which replaces the default `internal-sftp`).
    pub fn start_with(extra_config: &[&str]) -> Sshd {
        Self::start_opts(SshdOptions {
            extra: extra_config.iter().map(|l| l.to_string()).collect(),
            ..SshdOptions::default()
        })
    }

    /// Starts an sshd with explicit options.
    pub fn start_opts(options: SshdOptions) -> Sshd {
        let extra_config = &options.extra;
        let sshd = require("sshd");
        require("ssh-keygen");
        let dir = tempfile::Builder::new()
            .prefix("certctl-sshd-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        std::fs::create_dir_all("/run/sshd").expect("create /run/sshd (privilege separation dir)");

        let host_key = d.join("host_ed25519");
        keygen(&host_key, "ed25519", "");
        let client_key = d.join("client_ed25519");
        keygen(&client_key, "ed25519", "");
        let authorized_keys = d.join("authorized_keys");
        std::fs::copy(pub_path(&client_key), &authorized_keys).expect("write authorized_keys");

        let addr = options.addr.unwrap_or_else(free_addr);
        let log_path = d.join("sshd.log");
        let mut config = format!(
            "ListenAddress {addr}\n\
             HostKey {host_key}\n\
             PidFile {pid}\n\
             AuthorizedKeysFile {authorized_keys}\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             UsePAM no\n\
             StrictModes no\n\
             PermitRootLogin prohibit-password\n\
             LogLevel {log_level}\n",
            host_key = host_key.display(),
            pid = d.join("sshd.pid").display(),
            authorized_keys = authorized_keys.display(),
            log_level = options.log_level,
        );
        if let Some(startups) = options.max_startups {
            config.push_str(&format!("MaxStartups {startups}\n"));
        }
        for line in extra_config {
            config.push_str(line);
            config.push('\n');
        }
        // sshd refuses a second `Subsystem sftp`, so an extra one replaces the default.
        if !extra_config
            .iter()
            .any(|l| l.trim_start().starts_with("Subsystem"))
        {
            config.push_str("Subsystem sftp internal-sftp\n");
        }
        let config_path = d.join("sshd_config");
        std::fs::write(&config_path, config).expect("write sshd_config");

        let child = Command::new(&sshd)
            .arg("-D")
            .arg("-f")
            .arg(&config_path)
            .arg("-E")
            .arg(&log_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sshd");
        let mut child = ChildGuard(child);
        wait_listening(&mut child, addr, &log_path);

        let host_key_pub = public_line(&host_key);
        let known_hosts = d.join("known_hosts");
        std::fs::write(
            &known_hosts,
            format!("{} {host_key_pub}\n", host_pattern(addr)),
        )
        .expect("write known_hosts");
        let user = current_user();
        Sshd {
            addr,
            client_key,
            known_hosts,
            host_key_pub,
            user,
            authorized_keys,
            log_path,
            child,
            dir,
        }
    }

    pub fn host(&self) -> String {
        self.addr.ip().to_string()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// The daemon's log so far (VERBOSE: logins name the accepted key's fingerprint).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// How many times `needle` occurs in the log so far.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }

    /// This daemon as a jump host: its user, client key and known_hosts.
    pub fn as_jump(&self) -> JumpHost {
        JumpHost {
            host: self.host(),
            port: self.port(),
            user: self.user.clone(),
            identity_files: vec![self.client_key.clone()],
            known_hosts: self.known_hosts.clone(),
        }
    }

    /// A path inside this daemon's private temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The known_hosts line trusting this server: `[127.x.y.z]:port ssh-ed25519 AAAA…`.
    pub fn known_hosts_line(&self) -> String {
        format!("{} {}", host_pattern(self.addr), self.host_key_pub)
    }

    /// The host key's `SHA256:…` fingerprint, as `ssh-keygen -l` prints it.
    pub fn host_key_fingerprint(&self) -> String {
        fingerprint(&self.path("host_ed25519.pub"))
    }

    /// Lets any local user log in with [`Sshd::client_key`]: sshd reads authorized_keys as
    /// the logging-in user, so the daemon's directory becomes traversable (0711; the private
    /// keys in it stay 0600) and authorized_keys readable (0644, public keys only).
    pub fn allow_other_logins(&self) {
        use std::os::unix::fs::PermissionsExt as _;
        let set = |p: &Path, mode: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        set(self.dir.path(), 0o711);
        set(&self.authorized_keys, 0o644);
    }

    /// Adds a public key to authorized_keys.
    pub fn authorize(&self, private_key: &Path) {
        let line = std::fs::read_to_string(pub_path(private_key)).expect("read public key");
        let mut keys =
            std::fs::read_to_string(&self.authorized_keys).expect("read authorized_keys");
        keys.push_str(&line);
        std::fs::write(&self.authorized_keys, keys).expect("write authorized_keys");
    }

    /// Writes, at `path`, a known_hosts that lists this host with ANOTHER ed25519 key (a
    /// freshly generated one), for key-mismatch tests. Returns that line.
    pub fn write_wrong_known_hosts(&self, path: &Path) -> String {
        let other = self.path(&format!("other_host_key_{}", unique()));
        keygen(&other, "ed25519", "");
        let line = format!("{} {}", host_pattern(self.addr), public_line(&other));
        std::fs::write(path, format!("{line}\n")).expect("write known_hosts");
        line
    }

    /// A client config for this daemon: its client key and known_hosts, strict host keys,
    /// generous timeouts (the machine is shared and slow).
    pub fn ssh_config(&self) -> SshConfig {
        SshConfig {
            host: self.host(),
            port: self.port(),
            user: self.user.clone(),
            identity_files: vec![self.client_key.clone()],
            identities_only: false,
            known_hosts: self.known_hosts.clone(),
            known_hosts_extra: Vec::new(),
            become_sudo: false,
            accept_new_host_keys: false,
            connect_timeout: Duration::from_secs(20),
            command_timeout: Duration::from_secs(60),
            keepalive_interval: Duration::from_secs(15),
            jump: Vec::new(),
        }
    }
}

/// An ssh-agent in the foreground (`-D`) on its own socket, killed by PID on drop.
pub struct Agent {
    pub socket: PathBuf,
    _child: ChildGuard,
}

impl Agent {
    pub fn start(dir: &Path) -> Agent {
        require("ssh-agent");
        let socket = dir.join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn ssh-agent");
        let mut child = ChildGuard(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(child.0.try_wait().unwrap().is_none(), "ssh-agent exited");
            assert!(Instant::now() < deadline, "ssh-agent socket never appeared");
            std::thread::sleep(Duration::from_millis(10));
        }
        Agent {
            socket,
            _child: child,
        }
    }

    pub fn add(&self, key: &Path) {
        let out = Command::new("ssh-add")
            .arg(key)
            .env("SSH_AUTH_SOCK", &self.socket)
            .output()
            .expect("run ssh-add");
        assert!(
            out.status.success(),
            "ssh-add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Generates a key pair at `path` (+ `.pub`) with `ssh-keygen`.
pub fn keygen(path: &Path, kind: &str, passphrase: &str) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", passphrase, "-C", "", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("run ssh-keygen");
    assert!(
        out.status.success(),
        "ssh-keygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ssh-keygen -l -E sha256` of a key file: `SHA256:…`.
pub fn fingerprint(key_file: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .args(["-l", "-E", "sha256", "-f"])
        .arg(key_file)
        .output()
        .expect("run ssh-keygen -l");
    assert!(
        out.status.success(),
        "ssh-keygen -l failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .expect("fingerprint field")
        .to_owned()
}

/// `type base64` of a key pair's public half (comment dropped).
pub fn public_line(private_key: &Path) -> String {
    let text = std::fs::read_to_string(pub_path(private_key)).expect("read public key");
    text.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn pub_path(private_key: &Path) -> PathBuf {
    let mut p = private_key.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

fn host_pattern(addr: SocketAddr) -> String {
    if addr.port() == 22 {
        addr.ip().to_string()
    } else {
        format!("[{}]:{}", addr.ip(), addr.port())
    }
}

fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().expect("run id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Waits until sshd accepts connections; fails with its log if it exits or never listens.
fn wait_listening(child: &mut ChildGuard, addr: SocketAddr, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.0.try_wait().expect("poll sshd") {
            panic!(
                "sshd exited ({status}) before listening on {addr}:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "sshd not listening on {addr} after 20 s:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
