//! The SSH transport, and the only module that knows russh: connect with a timeout, strict
//! known_hosts, agent and key-file auth, keepalive, exec with stdout/stderr/exit status, SFTP
//! upload and atomic replace (posix-rename), jump hosts, the OpenSSH client config file and
//! remote-shell quoting.
//!
//! One [`Session`] per target for the whole run; every exec and SFTP request is a channel
//! multiplexed on it. This file holds the public types; each concern has its own file:
//!
//! | file | what it owns |
//! |---|---|
//! | `connect.rs` | [`Session::connect`]: endpoints, the handshake cap ([`HANDSHAKES_PER_HOST`]), retries of a reset handshake, jump hops |
//! | `verifier.rs` | the host-key check at every hop: known_hosts (via [`known_hosts`]) and `@cert-authority` host certificates |
//! | `auth.rs` | authentication: ssh-agent, key files (decrypted once per process, prompted for on a terminal), OpenSSH user certificates, the RSA signature hash |
//! | `exec.rs` | running a command on its own channel and collecting its output and exit status |
//! | `sftp.rs` | the SFTP channel and every file operation over it |
//! | `sudo.rs` | `become: sudo`: commands and file operations through `sudo -n` |
//! | [`jump`], [`config`], [`known_hosts`], [`quote`] | `ProxyJump` syntax and the bastion pool, `~/.ssh/config`, known_hosts matching, shell quoting |
//!
//! Targets behind a bastion share one connection to it ([`JumpPool`]). At most
//! [`HANDSHAKES_PER_HOST`] handshakes run at once against one server (sshd's `MaxStartups`; a
//! server is its known host key, so several addresses of one sshd share the cap), and a reset
//! during the handshake is retried with a jittered backoff. Private key bytes never reach an
//! error message or a log line; neither does the passphrase.
//!
//! `become: sudo` lives here too, so callers need not know about it: a [`Session`] made with
//! [`SshConfig::become_sudo`] checks `sudo -n true` at connect, runs every command and script
//! through `sudo -n`, and does its file operations (upload, rename, read, remove) through sudo,
//! uploads going first to the login user's private staging directory.
//!
//! Not here: choosing between inventory and `~/.ssh/config` values (the caller fills
//! [`SshConfig`] from [`config::HostSettings`]) and what commands mean.

mod auth;
pub mod config;
mod connect;
mod exec;
pub mod jump;
pub mod known_hosts;
mod prompt;
pub mod quote;
mod sftp;
mod sudo;
mod verifier;

pub use auth::unlock_identities;
pub use jump::{JumpHost, JumpPool, JumpSpec};

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use russh::client;
use tokio::sync::{OnceCell, Semaphore};

use crate::secret::Secret;

/// Everything needed to reach one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// Tried after the agent, in order; empty = the agent, then ~/.ssh/id_ed25519, id_ecdsa,
    /// id_rsa. A key file with an OpenSSH certificate beside it (`KEY-cert.pub`) offers the
    /// certificate first.
    pub identity_files: Vec<PathBuf>,
    /// OpenSSH `IdentitiesOnly`: offer only agent keys that match one of `identity_files`.
    pub identities_only: bool,
    /// The known_hosts file that vouches for the target and receives new keys
    /// (`--accept-new-host-keys`).
    pub known_hosts: PathBuf,
    /// Further known_hosts files that are read but never written (the ssh config's later
    /// `UserKnownHostsFile`s, its `GlobalKnownHostsFile`s). A key revoked in any file is
    /// refused; a key listed in any file is trusted.
    pub known_hosts_extra: Vec<PathBuf>,
    /// `become: sudo`: every command and file operation on the target runs through `sudo -n`
    /// (see [`Session`]); checked with `sudo -n true` right after connecting.
    pub become_sudo: bool,
    /// Record the key of a never-seen host (trust on first use); a changed key is still refused.
    pub accept_new_host_keys: bool,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub keepalive_interval: Duration,
    /// Jump hosts (ProxyJump), first hop first; empty = connect directly. Every hop is
    /// checked and authenticated like a target, with this config's timeouts and
    /// `accept_new_host_keys`.
    pub jump: Vec<JumpHost>,
}

/// What a remote command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub status: u32,
}

impl ExecOutput {
    pub fn success(&self) -> bool {
        self.status == 0
    }
}

/// One SSH server as messages name it: `host:port`, an IPv6 address in brackets
/// (`[::1]:2222`), as OpenSSH writes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Without IPv6 brackets.
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    pub fn new(host: impl Into<String>, port: u16) -> Endpoint {
        Endpoint {
            host: host.into(),
            port,
        }
    }

    /// An error at this server.
    pub fn error(&self, kind: SshErrorKind) -> SshError {
        SshError {
            endpoint: self.clone(),
            kind,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&endpoint(&self.host, self.port))
    }
}

/// `host:port`, with an IPv6 address in brackets (`[::1]:2222`), as in messages and OpenSSH.
pub fn endpoint(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A transport failure: the server it happened at, once, and what happened there (the shape
/// of ripgrep's `globset::Error { glob, kind }`). Displays as `host:port: what happened`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{endpoint}: {kind}")]
pub struct SshError {
    pub endpoint: Endpoint,
    pub kind: SshErrorKind,
}

/// What went wrong. Host-key kinds carry the offered SHA256 fingerprint.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SshErrorKind {
    #[error(
        "known_hosts file {path} does not exist; the server offered {fingerprint}. To trust it, add:\n  {line}\nor run with --accept-new-host-keys"
    )]
    KnownHostsMissing {
        path: PathBuf,
        fingerprint: String,
        line: String,
    },
    #[error(
        "host is not in {path}; the server offered {fingerprint}. To trust it, add:\n  {line}\nor run with --accept-new-host-keys"
    )]
    UnknownHost {
        path: PathBuf,
        fingerprint: String,
        line: String,
    },
    /// Only a `@cert-authority` line covers the host, and it offered a plain key, no
    /// certificate.
    #[error(
        "only a @cert-authority line trusts this host, but it presented no host certificate, only the plain key {fingerprint}. To trust that key, add to {path}:\n  {line}\nor run with --accept-new-host-keys"
    )]
    CertAuthorityOnly {
        path: PathBuf,
        fingerprint: String,
        line: String,
    },
    #[error(
        "HOST KEY CHANGED — {path} line {known_line} has a different key; the server offered {fingerprint}. Someone may be intercepting the connection; if the key change is expected, replace that line"
    )]
    HostKeyChanged {
        path: PathBuf,
        known_line: usize,
        fingerprint: String,
    },
    #[error("host certificate for key {fingerprint} refused: {message}")]
    HostCertificate {
        fingerprint: String,
        message: String,
    },
    #[error("host key {fingerprint} is marked @revoked in {path} line {known_line}")]
    HostKeyRevoked {
        path: PathBuf,
        known_line: usize,
        fingerprint: String,
    },
    #[error("connect timed out after {timeout:?}")]
    ConnectTimeout { timeout: Duration },
    #[error("{message}")]
    Connect { message: String },
    #[error("authentication failed for user `{user}`: {message}")]
    Auth { user: String, message: String },
    #[error("command timed out after {timeout:?}: {command}")]
    CommandTimeout { timeout: Duration, command: String },
    /// `reason` says what happened instead: a signal, or a channel closed without a status.
    #[error("`{command}` reported no exit status ({reason}); treated as a failure")]
    NoExitStatus { command: String, reason: String },
    /// A `become: sudo` step failed: sudo refused (a password is required, no rights), or
    /// the privileged file operation did.
    #[error("become sudo: {message}")]
    Become { message: String },
    #[error("sftp: {message}")]
    Sftp { message: String },
    #[error("{message}")]
    Protocol { message: String },
    /// Hop `hop` (1-based) of `hops` on the way to the target failed; `error` names the hop's
    /// own host and port (a changed host key at the bastion, its auth, its timeout…).
    #[error("via jump host {hop} of {hops}: {error}")]
    Jump {
        hop: usize,
        hops: usize,
        error: Box<SshError>,
    },
}

/// Where authentication material comes from besides [`SshConfig`]. [`Session::connect`] takes
/// it from the environment (`SSH_AUTH_SOCK`, `CERTCTL_SSH_PASSPHRASE`); tests and embedders
/// pass it explicitly to [`Session::connect_with`] instead of mutating process-global env.
#[derive(Debug, Clone, Default)]
pub struct AuthSources {
    /// ssh-agent socket, tried first.
    pub agent_socket: Option<PathBuf>,
    /// Passphrase for encrypted identity files.
    pub passphrase: Option<Secret>,
    /// With no `passphrase`: ask for an encrypted key's passphrase on the terminal
    /// (`/dev/tty`, echo off), once per key per process.
    pub prompt: bool,
}

impl AuthSources {
    /// `SSH_AUTH_SOCK` and `CERTCTL_SSH_PASSPHRASE`; empty values count as unset. Without
    /// the passphrase variable, a terminal on stdin enables the prompt. The passphrase is never
    /// taken from the command line.
    pub fn from_env() -> Self {
        let agent_socket = std::env::var_os("SSH_AUTH_SOCK")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        let passphrase = std::env::var("CERTCTL_SSH_PASSPHRASE")
            .ok()
            .filter(|v| !v.is_empty())
            .map(|v| Secret::new(v.into_bytes()));
        let prompt = passphrase.is_none() && std::io::IsTerminal::is_terminal(&std::io::stdin());
        Self {
            agent_socket,
            passphrase,
            prompt,
        }
    }
}

/// Handshakes (TCP connect, key exchange and authentication) in flight at once against one
/// host and port, process-wide. sshd's default `MaxStartups 10:30:100` starts dropping
/// unauthenticated connections at 10; more connects simply wait for a slot.
pub const HANDSHAKES_PER_HOST: usize = 8;

/// One authenticated connection to a target, with an SFTP channel opened on first use.
///
/// Made by [`Session::connect`] (`connect.rs`); commands run with [`Session::exec`] and its
/// siblings (`exec.rs`), files move with [`Session::upload`] and its siblings (`sftp.rs`),
/// both through sudo when [`Session::uses_sudo`] (`sudo.rs`).
pub struct Session {
    handle: client::Handle<verifier::Verifier>,
    endpoint: Endpoint,
    command_timeout: Duration,
    fingerprint: String,
    exec_slots: Semaphore,
    /// Set by [`Session::prefetch_channel`]: the next command also opens the spare channel.
    prefetch: std::sync::atomic::AtomicBool,
    /// A channel opened ahead of the command that will use it.
    spare: std::sync::Mutex<Option<russh::Channel<client::Msg>>>,
    sftp: OnceCell<sftp::Sftp>,
    /// `become: sudo`: set when every operation runs through `sudo -n`.
    sudo: Option<sudo::Sudo>,
    /// The last jump hop, which carries this connection: kept alive as long as the session.
    _via: Option<Arc<jump::Hop>>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("host", &self.endpoint.host)
            .field("port", &self.endpoint.port)
            .finish_non_exhaustive()
    }
}

impl Session {
    pub fn host(&self) -> &str {
        &self.endpoint.host
    }

    /// The server's host key as OpenSSH prints it (`SHA256:…`), as checked at connect.
    pub fn host_key_fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Whether commands and file operations run through `sudo -n` (`become: sudo`).
    pub fn uses_sudo(&self) -> bool {
        self.sudo.is_some()
    }

    /// Closes the connection politely.
    pub async fn close(self) {
        self.remove_stage_dir().await;
        if let Some(sftp) = self.sftp.get() {
            let _ = sftp.raw.close_session();
        }
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }

    /// An error at this session's server.
    fn error(&self, kind: SshErrorKind) -> SshError {
        self.endpoint.error(kind)
    }

    fn sftp_error(&self, message: String) -> SshError {
        self.error(SshErrorKind::Sftp { message })
    }

    fn become_error(&self, message: String) -> SshError {
        self.error(SshErrorKind::Become { message })
    }

    fn protocol(&self, message: String) -> SshError {
        self.error(SshErrorKind::Protocol { message })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn session_is_send_and_sync() {
        assert_send_sync::<Session>();
    }

    #[test]
    fn endpoints_bracket_ipv6_and_errors_use_them() {
        assert_eq!(endpoint("::1", 2222), "[::1]:2222");
        assert_eq!(endpoint("web-1", 22), "web-1:22");
        let e = Endpoint::new("fe80::1", 22).error(SshErrorKind::ConnectTimeout {
            timeout: Duration::from_secs(1),
        });
        assert_eq!(e.to_string(), "[fe80::1]:22: connect timed out after 1s");
        let jump = Endpoint::new("web-1", 22).error(SshErrorKind::Jump {
            hop: 2,
            hops: 2,
            error: Box::new(e),
        });
        assert_eq!(
            jump.to_string(),
            "web-1:22: via jump host 2 of 2: [fe80::1]:22: connect timed out after 1s"
        );
    }

    /// Every kind's text as it was when each variant repeated `host, port` (tests and
    /// operators' scripts read these).
    #[test]
    fn every_kind_displays_after_the_endpoint() {
        let at = Endpoint::new("web-1", 2222);
        let path = PathBuf::from("/k/known_hosts");
        let fp = "SHA256:abc".to_owned();
        let cases = [
            (
                SshErrorKind::KnownHostsMissing {
                    path: path.clone(),
                    fingerprint: fp.clone(),
                    line: "L".into(),
                },
                "web-1:2222: known_hosts file /k/known_hosts does not exist; the server offered SHA256:abc. To trust it, add:\n  L\nor run with --accept-new-host-keys",
            ),
            (
                SshErrorKind::UnknownHost {
                    path: path.clone(),
                    fingerprint: fp.clone(),
                    line: "L".into(),
                },
                "web-1:2222: host is not in /k/known_hosts; the server offered SHA256:abc. To trust it, add:\n  L\nor run with --accept-new-host-keys",
            ),
            (
                SshErrorKind::CertAuthorityOnly {
                    path: path.clone(),
                    fingerprint: fp.clone(),
                    line: "L".into(),
                },
                "web-1:2222: only a @cert-authority line trusts this host, but it presented no host certificate, only the plain key SHA256:abc. To trust that key, add to /k/known_hosts:\n  L\nor run with --accept-new-host-keys",
            ),
            (
                SshErrorKind::HostKeyChanged {
                    path: path.clone(),
                    known_line: 3,
                    fingerprint: fp.clone(),
                },
                "web-1:2222: HOST KEY CHANGED — /k/known_hosts line 3 has a different key; the server offered SHA256:abc. Someone may be intercepting the connection; if the key change is expected, replace that line",
            ),
            (
                SshErrorKind::HostCertificate {
                    fingerprint: fp.clone(),
                    message: "M".into(),
                },
                "web-1:2222: host certificate for key SHA256:abc refused: M",
            ),
            (
                SshErrorKind::HostKeyRevoked {
                    path,
                    known_line: 4,
                    fingerprint: fp,
                },
                "web-1:2222: host key SHA256:abc is marked @revoked in /k/known_hosts line 4",
            ),
            (
                SshErrorKind::Connect {
                    message: "M".into(),
                },
                "web-1:2222: M",
            ),
            (
                SshErrorKind::Auth {
                    user: "u".into(),
                    message: "M".into(),
                },
                "web-1:2222: authentication failed for user `u`: M",
            ),
            (
                SshErrorKind::CommandTimeout {
                    timeout: Duration::from_millis(1500),
                    command: "C".into(),
                },
                "web-1:2222: command timed out after 1.5s: C",
            ),
            (
                SshErrorKind::NoExitStatus {
                    command: "C".into(),
                    reason: "R".into(),
                },
                "web-1:2222: `C` reported no exit status (R); treated as a failure",
            ),
            (
                SshErrorKind::Become {
                    message: "M".into(),
                },
                "web-1:2222: become sudo: M",
            ),
            (
                SshErrorKind::Sftp {
                    message: "M".into(),
                },
                "web-1:2222: sftp: M",
            ),
            (
                SshErrorKind::Protocol {
                    message: "M".into(),
                },
                "web-1:2222: M",
            ),
        ];
        for (kind, text) in cases {
            assert_eq!(at.error(kind).to_string(), text);
        }
    }
}
