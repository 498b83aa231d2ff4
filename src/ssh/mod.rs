//! The SSH transport, and the only module that knows russh: connect with a timeout, strict
//! known_hosts, agent and key-file auth, keepalive, exec with stdout/stderr/exit status, SFTP
//! upload and atomic replace (posix-rename), jump hosts ([`jump`]), the OpenSSH client config
//! file ([`config`]) and remote-shell quoting ([`quote`]).
//!
//! One [`Session`] per target for the whole run; every exec and SFTP request is a channel
//! multiplexed on it. Targets behind a bastion share one connection to it ([`JumpPool`]).
//! Host keys are checked by our own matcher ([`known_hosts`]) at every hop. At most
//! [`HANDSHAKES_PER_HOST`] handshakes run at once against one server (sshd's `MaxStartups`;
//! a server is its known host key, so several addresses of one sshd share the cap), and a reset
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

pub mod config;
pub mod jump;
pub mod known_hosts;
mod prompt;
pub mod quote;

pub use jump::{JumpHost, JumpPool, JumpSpec};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::keys::agent::AgentIdentity;
use russh::keys::agent::client::AgentClient;
use russh::keys::{
    Algorithm, HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate,
};
use russh::{ChannelMsg, ChannelReadHalf, Sig, client};
use russh_sftp::client::RawSftpSession;
use russh_sftp::client::error::Error as SftpClientError;
use russh_sftp::protocol::{FileAttributes, OpenFlags, Packet, StatusCode};
use tokio::sync::{OnceCell, Semaphore};
use tokio::time::{Instant, timeout, timeout_at};
use zeroize::Zeroizing;

use crate::secret::Secret;

use known_hosts::HostKeyProblem;

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

/// Transport failures. Host-key errors carry the offered SHA256 fingerprint.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SshError {
    #[error(
        "{}: known_hosts file {path} does not exist; the server offered {fingerprint}. To trust it, add:\n  {line}\nor run with --accept-new-host-keys", endpoint(.host, *.port))]
    KnownHostsMissing {
        host: String,
        port: u16,
        path: PathBuf,
        fingerprint: String,
        line: String,
    },
    #[error(
        "{}: host is not in {path}; the server offered {fingerprint}. To trust it, add:\n  {line}\nor run with --accept-new-host-keys", endpoint(.host, *.port))]
    UnknownHost {
        host: String,
        port: u16,
        path: PathBuf,
        fingerprint: String,
        line: String,
    },
    /// Only a `@cert-authority` line covers the host, and it offered a plain key, no
    /// certificate.
    #[error(
        "{}: only a @cert-authority line trusts this host, but it presented no host certificate, only the plain key {fingerprint}. To trust that key, add to {path}:\n  {line}\nor run with --accept-new-host-keys", endpoint(.host, *.port))]
    CertAuthorityOnly {
        host: String,
        port: u16,
        path: PathBuf,
        fingerprint: String,
        line: String,
    },
    #[error(
        "{}: HOST KEY CHANGED — {path} line {known_line} has a different key; the server offered {fingerprint}. Someone may be intercepting the connection; if the key change is expected, replace that line", endpoint(.host, *.port))]
    HostKeyChanged {
        host: String,
        port: u16,
        path: PathBuf,
        known_line: usize,
        fingerprint: String,
    },
    #[error("{}: host certificate for key {fingerprint} refused: {message}", endpoint(.host, *.port))]
    HostCertificate {
        host: String,
        port: u16,
        fingerprint: String,
        message: String,
    },
    #[error("{}: host key {fingerprint} is marked @revoked in {path} line {known_line}", endpoint(.host, *.port))]
    HostKeyRevoked {
        host: String,
        port: u16,
        path: PathBuf,
        known_line: usize,
        fingerprint: String,
    },
    #[error("{}: connect timed out after {timeout:?}", endpoint(.host, *.port))]
    ConnectTimeout {
        host: String,
        port: u16,
        timeout: Duration,
    },
    #[error("{}: {message}", endpoint(.host, *.port))]
    Connect {
        host: String,
        port: u16,
        message: String,
    },
    #[error("{}: authentication failed for user `{user}`: {message}", endpoint(.host, *.port))]
    Auth {
        host: String,
        port: u16,
        user: String,
        message: String,
    },
    #[error("{}: command timed out after {timeout:?}: {command}", endpoint(.host, *.port))]
    CommandTimeout {
        host: String,
        port: u16,
        timeout: Duration,
        command: String,
    },
    /// `reason` says what happened instead: a signal, or a channel closed without a status.
    #[error("{}: `{command}` reported no exit status ({reason}); treated as a failure", endpoint(.host, *.port))]
    NoExitStatus {
        host: String,
        port: u16,
        command: String,
        reason: String,
    },
    /// A `become: sudo` step failed: sudo refused (a password is required, no rights), or
    /// the privileged file operation did.
    #[error("{}: become sudo: {message}", endpoint(.host, *.port))]
    Become {
        host: String,
        port: u16,
        message: String,
    },
    #[error("{}: sftp: {message}", endpoint(.host, *.port))]
    Sftp {
        host: String,
        port: u16,
        message: String,
    },
    #[error("{}: {message}", endpoint(.host, *.port))]
    Protocol {
        host: String,
        port: u16,
        message: String,
    },
    /// Hop `hop` (1-based) of `hops` on the way to `host:port` failed; `error` names the hop's
    /// own host and port (a changed host key at the bastion, its auth, its timeout…).
    #[error("{}: via jump host {hop} of {hops}: {error}", endpoint(.host, *.port))]
    Jump {
        host: String,
        port: u16,
        hop: usize,
        hops: usize,
        error: Box<SshError>,
    },
}

/// `host:port`, with an IPv6 address in brackets (`[::1]:2222`), as in messages and OpenSSH.
pub fn endpoint(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A configured host without the brackets an IPv6 literal may be written with.
fn bare_host(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
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

/// Exec channels open at once on one connection. OpenSSH's `MaxSessions` defaults to 10 per
/// connection; 8 leaves room for the SFTP channel and a margin, and more callers simply queue.
const MAX_EXEC_CHANNELS: usize = 8;
/// Each of stdout and stderr keeps at most this much (the tail) of a command's output.
const OUTPUT_CAP: usize = 1 << 20;
/// SFTP read/write request size: what OpenSSH's own sftp client uses, well below the
/// server's 256 KiB packet limit.
const SFTP_CHUNK: usize = 32 * 1024;
/// Connection attempts when the server resets the connection before the host key is checked
/// (sshd's `MaxStartups` drops excess concurrent handshakes this way).
const HANDSHAKE_ATTEMPTS: u32 = 3;
/// Handshakes (TCP connect, key exchange and authentication) in flight at once against one
/// host and port, process-wide. sshd's default `MaxStartups 10:30:100` starts dropping
/// unauthenticated connections at 10; more connects simply wait for a slot.
pub const HANDSHAKES_PER_HOST: usize = 8;

/// One authenticated connection to a target, with an SFTP channel opened on first use.
pub struct Session {
    handle: client::Handle<Verifier>,
    host: String,
    port: u16,
    command_timeout: Duration,
    fingerprint: String,
    exec_slots: Semaphore,
    sftp: OnceCell<Sftp>,
    /// `become: sudo`: set when every operation runs through `sudo -n`.
    sudo: Option<Sudo>,
    /// The last jump hop, which carries this connection: kept alive as long as the session.
    _via: Option<Arc<jump::Hop>>,
}

/// State of a `become: sudo` session: the login user's private staging directory (created
/// with `mktemp -d`, so 0700 and owned by the login user) where uploads land before `sudo`
/// installs them, and a counter naming the uploads in it.
struct Sudo {
    stage_dir: OnceCell<String>,
    uploads: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// The SFTP channel and the extensions the server advertised at init.
struct Sftp {
    raw: RawSftpSession,
    extensions: HashMap<String, String>,
}

impl Session {
    /// Connects (through `config.jump`, sharing bastions via [`JumpPool::global`]), checks the
    /// host key strictly, authenticates. Agent and passphrase come from the environment.
    pub async fn connect(config: &SshConfig) -> Result<Session, SshError> {
        Self::connect_with(config, &AuthSources::from_env()).await
    }

    /// [`Session::connect`] with explicit agent socket and passphrase instead of the env.
    pub async fn connect_with(
        config: &SshConfig,
        sources: &AuthSources,
    ) -> Result<Session, SshError> {
        Self::connect_via(config, sources, JumpPool::global()).await
    }

    /// [`Session::connect_with`] with jump-host connections taken from (and left in) `pool`.
    ///
    /// TCP connect, key exchange and authentication count against `connect_timeout`, for
    /// each hop and for the target; waiting for a handshake slot ([`HANDSHAKES_PER_HOST`])
    /// or for another target to finish connecting a shared bastion does not. Identity files
    /// are loaded (and decrypted) before connecting, so a bad key fails without touching the
    /// network twice.
    pub async fn connect_via(
        config: &SshConfig,
        sources: &AuthSources,
        pool: &JumpPool,
    ) -> Result<Session, SshError> {
        let target = Endpoint {
            host: bare_host(&config.host).to_owned(),
            port: config.port,
            known_hosts: config.known_hosts.clone(),
            known_hosts_extra: config.known_hosts_extra.clone(),
        };
        let identities = load_identities_async(config.identity_files.clone(), sources).await;
        let via = if config.jump.is_empty() {
            None
        } else {
            let hop = pool
                .last_hop(config, sources)
                .await
                .map_err(|(index, error)| SshError::Jump {
                    host: target.host.clone(),
                    port: target.port,
                    hop: index + 1,
                    hops: config.jump.len(),
                    error: Box::new(error),
                })?;
            Some(hop)
        };
        let (handle, fingerprint) = connect_endpoint(
            &target,
            &config.user,
            config.identities_only,
            via.clone(),
            config,
            sources,
            &identities,
        )
        .await?;
        tracing::debug!(host = %target.host, port = target.port, %fingerprint, jumps = config.jump.len(), "ssh connected");
        let session = Session {
            handle,
            host: target.host,
            port: config.port,
            command_timeout: config.command_timeout,
            fingerprint,
            exec_slots: Semaphore::new(MAX_EXEC_CHANNELS),
            sftp: OnceCell::new(),
            sudo: config.become_sudo.then(|| Sudo {
                stage_dir: OnceCell::new(),
                uploads: std::sync::atomic::AtomicU64::new(0),
            }),
            _via: via,
        };
        if config.become_sudo {
            session.check_sudo(&config.user).await?;
        }
        Ok(session)
    }

    /// Whether commands and file operations run through `sudo -n` (`become: sudo`).
    pub fn uses_sudo(&self) -> bool {
        self.sudo.is_some()
    }

    /// `sudo -n true`, once, right after connecting: a login that may not use sudo without a
    /// password fails here, with sudo's own words, instead of at the first privileged step.
    async fn check_sudo(&self, user: &str) -> Result<(), SshError> {
        let out = self
            .run(&quote::command_line(&SUDO_CHECK), "sudo -n true", None)
            .await?;
        if out.success() {
            return Ok(());
        }
        let said = match first_line(&out.stderr) {
            s if s.is_empty() => format!("exit status {}", out.status),
            s => s,
        };
        Err(self.become_error(format!(
            "user `{user}` cannot run `sudo -n` here ({said}); give it passwordless (NOPASSWD) sudo rights on this host, or remove `become: sudo`"
        )))
    }

    /// Runs `argv` (quoted here with [`quote::command_line`]) and collects its output.
    ///
    /// With `become: sudo` the command runs as `sudo -n -- ARGV…`; errors still name it as
    /// written.
    ///
    /// An argv made by [`quote::PowerShell::argv`] is sent exactly as the script's
    /// [`quote::PowerShell::command_line`] (see [`quote::powershell_command_line`]), so it
    /// runs the same whatever the login shell (`cmd.exe`, PowerShell or `sh`).
    pub async fn exec(&self, argv: &[String]) -> Result<ExecOutput, SshError> {
        if self.sudo.is_none()
            && let Some(line) = quote::powershell_command_line(argv)
        {
            return self.run(&line, &quote::label(argv), None).await;
        }
        let label = quote::command_line(argv);
        if self.sudo.is_some() {
            let wrapped: Vec<&str> = SUDO
                .iter()
                .copied()
                .chain(argv.iter().map(String::as_str))
                .collect();
            return self.run(&quote::command_line(&wrapped), &label, None).await;
        }
        self.run(&label, &label, None).await
    }

    /// Runs a script already assembled with [`quote::Script`] by `sh -c`-style exec; if
    /// `stdin` is given it is written to the command's standard input, then EOF.
    ///
    /// The script text is the exec request's command string, so the remote user's login shell
    /// runs it (as `ssh host 'script'` would). Standard input always gets EOF, so a command
    /// that reads it never waits forever. With `become: sudo` it runs as
    /// `sudo -n -- sh -c SCRIPT` (stdin passes through sudo).
    pub async fn exec_script(
        &self,
        script: &quote::Script,
        stdin: Option<&[u8]>,
    ) -> Result<ExecOutput, SshError> {
        let label = summarize(script.as_str());
        if self.sudo.is_some() {
            let wrapped: Vec<&str> = SUDO
                .iter()
                .copied()
                .chain(["sh", "-c", script.as_str()])
                .collect();
            return self
                .run(&quote::command_line(&wrapped), &label, stdin)
                .await;
        }
        self.run(script.as_str(), &label, stdin).await
    }

    /// Runs a PowerShell script on a Windows OpenSSH target (see [`quote::PowerShell`]): the
    /// exec request is `powershell … -EncodedCommand …`, so no other shell interprets it.
    pub async fn exec_powershell(
        &self,
        script: &quote::PowerShell,
    ) -> Result<ExecOutput, SshError> {
        let label = script
            .as_str()
            .lines()
            .nth(1)
            .map(summarize)
            .unwrap_or_else(|| "powershell".into());
        self.run(&script.command_line(), &label, None).await
    }

    /// Creates `path` exclusively (O_EXCL) with `mode` from the first byte (set again after
    /// creation to defeat the umask), writes `data`, fsyncs, closes, and sets owner/group
    /// when given (numeric ids).
    ///
    /// Mode and owner are set on the open handle before any content is written, so the
    /// content never exists under a wider mode. A failed upload removes its partial file.
    ///
    /// With `become: sudo` the data goes by SFTP to a 0600 file in the login user's private
    /// staging directory, then `sudo` creates `path` exclusively with `mode` and `owner`
    /// (root's umask 077 before that), appends the content, fsyncs, and removes the staged
    /// copy; the staged copy is removed on failure too.
    pub async fn upload(
        &self,
        path: &str,
        data: &[u8],
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<(), SshError> {
        match &self.sudo {
            Some(sudo) => self.upload_sudo(sudo, path, data, mode, owner).await,
            None => self.upload_direct(path, data, mode, owner).await,
        }
    }

    async fn upload_sudo(
        &self,
        sudo: &Sudo,
        path: &str,
        data: &[u8],
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<(), SshError> {
        let dir = self.stage_dir(sudo).await?;
        let n = sudo
            .uploads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let staged = format!("{dir}/{n}");
        self.upload_direct(&staged, data, 0o600, None).await?;
        let mode_arg = format!("{mode:04o}");
        let owner_arg = owner
            .map(|(uid, gid)| format!("{uid}:{gid}"))
            .unwrap_or_default();
        let argv: Vec<&str> = SUDO
            .iter()
            .copied()
            .chain([
                "sh",
                "-c",
                SUDO_INSTALL,
                "certctl-install",
                &staged,
                path,
                &mode_arg,
                &owner_arg,
            ])
            .collect();
        let label = format!("sudo install {path}");
        let installed = self.run(&quote::command_line(&argv), &label, None).await;
        // Whatever happened (sudo refused, the connection dropped mid-way), the staged copy
        // does not outlive this call.
        let removed = self.remove_direct(&staged).await;
        let out = installed?;
        if !out.success() {
            return Err(self.become_error(sudo_failure(&out, &format!("cannot install {path}"))));
        }
        removed
    }

    /// The private staging directory of a `become: sudo` session, created on first use.
    async fn stage_dir<'a>(&'a self, sudo: &'a Sudo) -> Result<&'a str, SshError> {
        sudo.stage_dir
            .get_or_try_init(|| async {
                let argv = ["mktemp", "-d", "/tmp/certctl-sudo.XXXXXXXXXX"];
                let out = self
                    .run(&quote::command_line(&argv), "mktemp -d", None)
                    .await?;
                let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                if !out.success()
                    || !dir.starts_with("/tmp/certctl-sudo.")
                    || dir.chars().any(char::is_control)
                {
                    return Err(self.become_error(sudo_failure(
                        &out,
                        "cannot create a private staging directory with `mktemp -d`",
                    )));
                }
                Ok(dir)
            })
            .await
            .map(String::as_str)
    }

    async fn upload_direct(
        &self,
        path: &str,
        data: &[u8],
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<(), SshError> {
        let sftp = self.sftp().await?;
        let raw = &sftp.raw;
        let create = FileAttributes {
            permissions: Some(mode),
            ..FileAttributes::empty()
        };
        let handle = raw
            .open(
                path,
                OpenFlags::CREATE | OpenFlags::EXCLUDE | OpenFlags::WRITE,
                create,
            )
            .await
            .map_err(|e| {
                let hint = if is_status(&e, StatusCode::Failure) {
                    " (does it exist already?)"
                } else {
                    ""
                };
                self.sftp_error(format!("cannot create {path}{hint}: {}", describe_sftp(&e)))
            })?
            .handle;
        let written = async {
            if let Some((uid, gid)) = owner {
                let ids = FileAttributes { uid: Some(uid), gid: Some(gid), ..FileAttributes::empty() };
                raw.fsetstat(handle.as_str(), ids).await.map_err(|e| format!("cannot set owner {uid}:{gid}: {}", describe_sftp(&e)))?;
            }
            // After any chown (which may clear set-id bits) and regardless of the umask.
            let perms = FileAttributes { permissions: Some(mode), ..FileAttributes::empty() };
            raw.fsetstat(handle.as_str(), perms).await.map_err(|e| format!("cannot set mode {mode:04o}: {}", describe_sftp(&e)))?;
            // Pipelined writes: every chunk is in flight at once, each at its own offset.
            let writes = data.chunks(SFTP_CHUNK).enumerate().map(|(i, chunk)| raw.write(handle.as_str(), (i * SFTP_CHUNK) as u64, chunk.to_vec()));
            futures::future::try_join_all(writes).await.map_err(|e| format!("write failed: {}", describe_sftp(&e)))?;
            if sftp.extensions.contains_key("fsync@openssh.com") {
                raw.fsync(handle.as_str()).await.map_err(|e| format!("fsync failed: {}", describe_sftp(&e)))?;
            } else {
                tracing::warn!(host = %self.host, %path, "sftp server lacks fsync@openssh.com; file not fsync'd");
            }
            Ok::<(), String>(())
        }
        .await;
        let closed = raw
            .close(handle.as_str())
            .await
            .map_err(|e| format!("close failed: {}", describe_sftp(&e)));
        if let Err(message) = written.and(closed.map(|_| ())) {
            let _ = raw.remove(path).await;
            return Err(self.sftp_error(format!(
                "upload to {path}: {message} (partial file removed)"
            )));
        }
        // A server that ignored the handle-level attributes still gets them by path.
        let perms = FileAttributes {
            permissions: Some(mode),
            ..FileAttributes::empty()
        };
        raw.setstat(path, perms).await.map_err(|e| {
            self.sftp_error(format!(
                "cannot set mode {mode:04o} on {path}: {}",
                describe_sftp(&e)
            ))
        })?;
        Ok(())
    }

    /// Atomically replaces `to` with `from` (SFTP posix-rename@openssh.com; with
    /// `become: sudo`, `mv -f` — a rename(2) within the directory — run by sudo).
    pub async fn rename_over(&self, from: &str, to: &str) -> Result<(), SshError> {
        if self.sudo.is_some() {
            let argv: Vec<&str> = SUDO
                .iter()
                .copied()
                .chain(["sh", "-c", SUDO_RENAME, "certctl-rename", from, to])
                .collect();
            let label = format!("sudo mv {from} {to}");
            let out = self.run(&quote::command_line(&argv), &label, None).await?;
            if !out.success() {
                return Err(self.become_error(sudo_failure(
                    &out,
                    &format!("cannot rename {from} over {to}"),
                )));
            }
            return Ok(());
        }
        const POSIX_RENAME: &str = "posix-rename@openssh.com";
        let sftp = self.sftp().await?;
        if !sftp.extensions.contains_key(POSIX_RENAME) {
            return Err(self.sftp_error(format!(
                "the server does not offer {POSIX_RENAME}, so {to} cannot be replaced atomically (plain SFTP rename refuses to overwrite)"
            )));
        }
        let mut request = Vec::with_capacity(from.len() + to.len() + 8);
        put_ssh_string(&mut request, from);
        put_ssh_string(&mut request, to);
        match sftp.raw.extended(POSIX_RENAME, request).await {
            Ok(Packet::Status(s)) if s.status_code == StatusCode::Ok => Ok(()),
            Ok(Packet::Status(s)) => {
                let e = SftpClientError::Status(s);
                Err(self.sftp_error(format!(
                    "cannot rename {from} over {to}: {}",
                    describe_sftp(&e)
                )))
            }
            Ok(_) => {
                Err(self.sftp_error(format!("cannot rename {from} over {to}: unexpected reply")))
            }
            Err(e) => Err(self.sftp_error(format!(
                "cannot rename {from} over {to}: {}",
                describe_sftp(&e)
            ))),
        }
    }

    /// Reads a whole remote file (for certificates only — never keys).
    ///
    /// A file longer than `limit` bytes is an error rather than a silent truncation. With
    /// `become: sudo` it is `sudo -n -- cat`, and `limit` is at most 1 MiB.
    pub async fn read_file(&self, path: &str, limit: usize) -> Result<Vec<u8>, SshError> {
        if self.sudo.is_some() {
            let argv: Vec<&str> = SUDO.iter().copied().chain(["cat", "--", path]).collect();
            let label = format!("sudo cat {path}");
            let out = self.run(&quote::command_line(&argv), &label, None).await?;
            if !out.success() {
                return Err(self.become_error(sudo_failure(&out, &format!("cannot read {path}"))));
            }
            // Command output keeps at most OUTPUT_CAP bytes (and says what it dropped).
            let limit = limit.min(OUTPUT_CAP);
            if out.stdout.len() > limit {
                return Err(self.become_error(format!("{path} is larger than {limit} bytes")));
            }
            return Ok(out.stdout);
        }
        let sftp = self.sftp().await?;
        let raw = &sftp.raw;
        let handle = raw
            .open(path, OpenFlags::READ, FileAttributes::empty())
            .await
            .map_err(|e| self.sftp_error(format!("cannot open {path}: {}", describe_sftp(&e))))?
            .handle;
        let mut out = Vec::new();
        let result = loop {
            match raw
                .read(handle.as_str(), out.len() as u64, SFTP_CHUNK as u32)
                .await
            {
                Ok(d) if d.data.is_empty() => break Ok(()),
                Ok(d) => {
                    out.extend_from_slice(&d.data);
                    if out.len() > limit {
                        break Err(format!("{path} is larger than {limit} bytes"));
                    }
                }
                Err(e) if is_status(&e, StatusCode::Eof) => break Ok(()),
                Err(e) => break Err(format!("cannot read {path}: {}", describe_sftp(&e))),
            }
        };
        let _ = raw.close(handle.as_str()).await;
        result.map(|()| out).map_err(|m| self.sftp_error(m))
    }

    /// Removes a file; a missing file is not an error.
    pub async fn remove_file(&self, path: &str) -> Result<(), SshError> {
        if self.sudo.is_some() {
            let argv: Vec<&str> = SUDO
                .iter()
                .copied()
                .chain(["rm", "-f", "--", path])
                .collect();
            let label = format!("sudo rm {path}");
            let out = self.run(&quote::command_line(&argv), &label, None).await?;
            if !out.success() {
                return Err(self.become_error(sudo_failure(&out, &format!("cannot remove {path}"))));
            }
            return Ok(());
        }
        self.remove_direct(path).await
    }

    /// Removes a file over SFTP as the login user; a missing file is not an error.
    async fn remove_direct(&self, path: &str) -> Result<(), SshError> {
        let sftp = self.sftp().await?;
        match sftp.raw.remove(path).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, StatusCode::NoSuchFile) => Ok(()),
            Err(e) => Err(self.sftp_error(format!("cannot remove {path}: {}", describe_sftp(&e)))),
        }
    }

    /// Creates the directory `path` over SFTP with `mode`, as the login user: `Ok(true)` when
    /// this call created it, `Ok(false)` when it existed already (SFTP `mkdir` never
    /// replaces anything, so this is an atomic test-and-create, as `mkdir(2)` is). The mode
    /// is set again by path afterwards, to defeat the umask; a server that cannot (Windows
    /// OpenSSH maps modes to ACLs only in part) leaves the directory as its parent's ACL
    /// makes it, which is not an error.
    ///
    /// Not for `become: sudo` sessions (an error): they create directories by command.
    pub async fn make_dir(&self, path: &str, mode: u32) -> Result<bool, SshError> {
        self.no_sudo("mkdir", path)?;
        let sftp = self.sftp().await?;
        let attrs = FileAttributes {
            permissions: Some(mode),
            ..FileAttributes::empty()
        };
        match sftp.raw.mkdir(path, attrs).await {
            Ok(_) => {
                let perms = FileAttributes {
                    permissions: Some(mode),
                    ..FileAttributes::empty()
                };
                if let Err(e) = sftp.raw.setstat(path, perms).await {
                    tracing::debug!(host = %self.host, %path, "mode {mode:04o} not set: {}", describe_sftp(&e));
                }
                Ok(true)
            }
            // OpenSSH answers "failure" for an existing directory: look before saying so.
            Err(e) => match sftp.raw.lstat(path).await {
                Ok(found) if found.attrs.is_dir() => Ok(false),
                _ => Err(self.sftp_error(format!(
                    "cannot create directory {path}: {}",
                    describe_sftp(&e)
                ))),
            },
        }
    }

    /// The entries of the directory `path` over SFTP (without `.` and `..`), each with whether
    /// it is a directory, sorted by name; `Ok(None)` when `path` does not exist. Not for
    /// `become: sudo` sessions (an error).
    pub async fn list_dir(&self, path: &str) -> Result<Option<Vec<(String, bool)>>, SshError> {
        self.no_sudo("list", path)?;
        let sftp = self.sftp().await?;
        let raw = &sftp.raw;
        let handle = match raw.opendir(path).await {
            Ok(h) => h.handle,
            Err(e) if is_status(&e, StatusCode::NoSuchFile) => return Ok(None),
            Err(e) => {
                return Err(self.sftp_error(format!("cannot list {path}: {}", describe_sftp(&e))));
            }
        };
        let mut entries = Vec::new();
        let result = loop {
            match raw.readdir(handle.as_str()).await {
                Ok(name) if name.files.is_empty() => break Ok(()),
                Ok(name) => entries.extend(
                    name.files
                        .into_iter()
                        .filter(|f| f.filename != "." && f.filename != "..")
                        .map(|f| (f.filename, f.attrs.is_dir())),
                ),
                Err(e) if is_status(&e, StatusCode::Eof) => break Ok(()),
                Err(e) => break Err(format!("cannot list {path}: {}", describe_sftp(&e))),
            }
        };
        let _ = raw.close(handle.as_str()).await;
        result.map_err(|m| self.sftp_error(m))?;
        entries.sort();
        Ok(Some(entries))
    }

    /// Removes the empty directory `path` over SFTP; a missing one is not an error. Not for
    /// `become: sudo` sessions (an error).
    pub async fn remove_dir(&self, path: &str) -> Result<(), SshError> {
        self.no_sudo("rmdir", path)?;
        let sftp = self.sftp().await?;
        match sftp.raw.rmdir(path).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, StatusCode::NoSuchFile) => Ok(()),
            Err(e) => Err(self.sftp_error(format!("cannot remove {path}: {}", describe_sftp(&e)))),
        }
    }

    /// Renames `from` to `to` with plain SFTP rename, which refuses to replace an existing
    /// `to` (for replacing, see [`Session::rename_over`]). Not for `become: sudo` sessions.
    pub async fn rename(&self, from: &str, to: &str) -> Result<(), SshError> {
        self.no_sudo("rename", from)?;
        let sftp = self.sftp().await?;
        sftp.raw.rename(from, to).await.map(drop).map_err(|e| {
            self.sftp_error(format!(
                "cannot rename {from} to {to}: {}",
                describe_sftp(&e)
            ))
        })
    }

    fn no_sudo(&self, what: &str, path: &str) -> Result<(), SshError> {
        match self.sudo {
            Some(_) => Err(self.become_error(format!(
                "cannot {what} {path} over SFTP as the login user in a `become: sudo` session"
            ))),
            None => Ok(()),
        }
    }

    /// Closes the connection politely.
    pub async fn close(self) {
        if let Some(dir) = self.sudo.as_ref().and_then(|s| s.stage_dir.get()) {
            // Empty unless an install failed half-way; never holds a key after an upload.
            let argv = ["rm", "-rf", "--", dir.as_str()];
            let _ = self
                .run(&quote::command_line(&argv), "rm -rf staging dir", None)
                .await;
        }
        if let Some(sftp) = self.sftp.get() {
            let _ = sftp.raw.close_session();
        }
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// The server's host key as OpenSSH prints it (`SHA256:…`), as checked at connect.
    pub fn host_key_fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Runs one command on its own channel. `label` names it in errors.
    async fn run(
        &self,
        command: &str,
        label: &str,
        stdin: Option<&[u8]>,
    ) -> Result<ExecOutput, SshError> {
        // Waiting for a free channel slot is not part of the command's time budget.
        let _slot = self
            .exec_slots
            .acquire()
            .await
            .map_err(|_| self.protocol("session is closing".to_owned()))?;
        let deadline = Instant::now() + self.command_timeout;
        let timed_out = || SshError::CommandTimeout {
            host: self.host.clone(),
            port: self.port,
            timeout: self.command_timeout,
            command: label.to_owned(),
        };
        let channel = match timeout_at(deadline, self.handle.channel_open_session()).await {
            Err(_) => return Err(timed_out()),
            Ok(Err(e)) => return Err(self.channel_error(label, &e)),
            Ok(Ok(channel)) => channel,
        };
        let (mut reader, writer) = channel.split();
        let work = async {
            writer
                .exec(true, command.as_bytes())
                .await
                .map_err(|e| self.channel_error(label, &e))?;
            let input = async {
                if let Some(data) = stdin {
                    writer.data(data).await?;
                }
                writer.eof().await
            };
            let collect = collect(&mut reader);
            tokio::pin!(input, collect);
            let mut input_done = false;
            // Output is read while stdin is written (no deadlock on full windows); once the
            // channel closes, unsent stdin no longer matters.
            loop {
                tokio::select! {
                    sent = &mut input, if !input_done => {
                        input_done = true;
                        if let Err(e) = sent {
                            tracing::debug!(host = %self.host, command = label, "stdin not fully sent: {e}");
                        }
                    }
                    collected = &mut collect => break Ok::<_, SshError>(collected),
                }
            }
        };
        let collected = match timeout_at(deadline, work).await {
            Ok(result) => result?,
            Err(_) => {
                // Best effort: ask sshd to kill the command, then free the channel. OpenSSH
                // refuses `signal` in some setups (e.g. root logins: "session signalling
                // requires privilege separation"), and closing a non-pty channel does not
                // kill the process either, so a hung command may keep running remotely.
                let _ = writer.signal(Sig::KILL).await;
                let _ = writer.close().await;
                return Err(timed_out());
            }
        };
        if collected.refused {
            return Err(self.protocol(format!("the server refused to run `{label}`")));
        }
        match collected.status {
            Some(status) => Ok(ExecOutput {
                stdout: collected.stdout.finish(),
                stderr: collected.stderr.finish(),
                status,
            }),
            None => {
                let reason = match collected.signal {
                    Some(signal) => format!("killed by signal {signal}"),
                    None if self.handle.is_closed() => "the connection was lost".to_owned(),
                    None => "the channel closed without one".to_owned(),
                };
                Err(SshError::NoExitStatus {
                    host: self.host.clone(),
                    port: self.port,
                    command: label.to_owned(),
                    reason,
                })
            }
        }
    }

    /// The SFTP channel, opened on first use and shared by every later request.
    async fn sftp(&self) -> Result<&Sftp, SshError> {
        self.sftp
            .get_or_try_init(|| async {
                let open = async {
                    let mut channel = self
                        .handle
                        .channel_open_session()
                        .await
                        .map_err(|e| e.to_string())?;
                    channel
                        .request_subsystem(true, "sftp")
                        .await
                        .map_err(|e| e.to_string())?;
                    loop {
                        match channel.wait().await {
                            Some(ChannelMsg::Success) => break,
                            Some(ChannelMsg::Failure) => {
                                return Err("the server refused the sftp subsystem".to_owned());
                            }
                            None | Some(ChannelMsg::Close) => {
                                return Err("the channel closed before sftp started".to_owned());
                            }
                            Some(_) => {}
                        }
                    }
                    let raw = RawSftpSession::new(channel.into_stream());
                    raw.set_timeout(self.command_timeout.as_secs().max(1));
                    let version = raw.init().await.map_err(|e| describe_sftp(&e))?;
                    Ok(Sftp {
                        raw,
                        extensions: version.extensions,
                    })
                };
                match timeout(self.command_timeout, open).await {
                    Ok(Ok(sftp)) => Ok(sftp),
                    Ok(Err(message)) => Err(self.sftp_error(format!("cannot start: {message}"))),
                    Err(_) => Err(self.sftp_error(format!(
                        "cannot start: no answer within {:?}",
                        self.command_timeout
                    ))),
                }
            })
            .await
    }

    fn sftp_error(&self, message: String) -> SshError {
        SshError::Sftp {
            host: self.host.clone(),
            port: self.port,
            message,
        }
    }

    fn become_error(&self, message: String) -> SshError {
        SshError::Become {
            host: self.host.clone(),
            port: self.port,
            message,
        }
    }

    fn protocol(&self, message: String) -> SshError {
        SshError::Protocol {
            host: self.host.clone(),
            port: self.port,
            message,
        }
    }

    fn channel_error(&self, label: &str, e: &russh::Error) -> SshError {
        let lost = if self.handle.is_closed() {
            " (the connection was lost)"
        } else {
            ""
        };
        self.protocol(format!("cannot run `{label}`: {e}{lost}"))
    }
}

/// What one exec channel delivered.
struct Collected {
    stdout: Tail,
    stderr: Tail,
    status: Option<u32>,
    signal: Option<String>,
    /// The server answered the exec request with a failure.
    refused: bool,
}

/// Reads a channel until it closes: output can arrive after the exit status.
async fn collect(reader: &mut ChannelReadHalf) -> Collected {
    let mut c = Collected {
        stdout: Tail::default(),
        stderr: Tail::default(),
        status: None,
        signal: None,
        refused: false,
    };
    while let Some(msg) = reader.wait().await {
        match msg {
            ChannelMsg::Data { data } => c.stdout.push(&data),
            ChannelMsg::ExtendedData { data, ext: 1 } => c.stderr.push(&data),
            ChannelMsg::ExitStatus { exit_status } => c.status = Some(exit_status),
            ChannelMsg::ExitSignal {
                signal_name,
                core_dumped,
                ..
            } => {
                let name = match signal_name {
                    Sig::Custom(name) => name,
                    other => format!("{other:?}"),
                };
                c.signal = Some(if core_dumped {
                    format!("{name} (core dumped)")
                } else {
                    name
                });
            }
            ChannelMsg::Failure => {
                c.refused = true;
                break;
            }
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    c
}

/// A byte buffer that keeps only the last [`OUTPUT_CAP`] bytes and counts what it dropped.
#[derive(Default)]
struct Tail {
    bytes: Vec<u8>,
    dropped: u64,
}

impl Tail {
    fn push(&mut self, data: &[u8]) {
        self.bytes.extend_from_slice(data);
        // Trim only past twice the cap, so a flood costs amortised O(1) per byte.
        if self.bytes.len() > 2 * OUTPUT_CAP {
            let excess = self.bytes.len() - OUTPUT_CAP;
            self.bytes.drain(..excess);
            self.dropped += excess as u64;
        }
    }

    fn finish(mut self) -> Vec<u8> {
        if self.bytes.len() > OUTPUT_CAP {
            let excess = self.bytes.len() - OUTPUT_CAP;
            self.bytes.drain(..excess);
            self.dropped += excess as u64;
        }
        if self.dropped == 0 {
            return self.bytes;
        }
        let mut out = format!(
            "[certctl: {} earlier bytes of output dropped]\n",
            self.dropped
        )
        .into_bytes();
        out.extend_from_slice(&self.bytes);
        out
    }
}

/// The `sudo` prefix of every privileged command: `-n` never waits for a password (it fails
/// at once with "a password is required"); `--` ends sudo's options.
const SUDO: [&str; 3] = ["sudo", "-n", "--"];
const SUDO_CHECK: [&str; 3] = ["sudo", "-n", "true"];

/// Run by `sudo -n -- sh -c` as root: `$1` the login user's staged copy, `$2` the destination,
/// `$3` the octal mode, `$4` `uid:gid` or empty. The destination is created exclusively
/// (noclobber: O_EXCL) under umask 077, gets its owner and mode, and only then its content.
const SUDO_INSTALL: &str = r#"set -u
src=$1 dst=$2 mode=$3 owner=$4
fail() { rm -f -- "$src"; printf '%s
' "$1" >&2; exit 1; }
undo() { rm -f -- "$dst"; fail "$1"; }
[ -f "$src" ] || fail "the uploaded copy $src is missing"
(umask 077 && set -C && : > "$dst") 2>/dev/null || fail "cannot create $dst (does it exist already?)"
if [ -n "$owner" ]; then chown -- "$owner" "$dst" || undo "cannot set owner $owner on $dst"; fi
chmod -- "$mode" "$dst" || undo "cannot set mode $mode on $dst"
cat -- "$src" >> "$dst" || undo "cannot write $dst"
sync -- "$dst" 2>/dev/null || sync
rm -f -- "$src"
"#;

/// Run by `sudo -n -- sh -c` as root: renames `$1` over `$2` (same directory, so rename(2)
/// is atomic); refuses a directory at `$2`, which `mv` would move into.
const SUDO_RENAME: &str = r#"if [ -d "$2" ] && [ ! -L "$2" ]; then printf '%s is a directory
' "$2" >&2; exit 1; fi
exec mv -f -- "$1" "$2"
"#;

/// `what`, then what the failed privileged command said (first line of stderr, printable).
fn sudo_failure(out: &ExecOutput, what: &str) -> String {
    match first_line(&out.stderr) {
        s if s.is_empty() => format!("{what} (exit status {})", out.status),
        s => format!("{what}: {s}"),
    }
}

/// The first non-empty line of remote output, without control characters, at most 300
/// characters: remote text goes into an error message.
fn first_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    line.chars().filter(|c| !c.is_control()).take(300).collect()
}

/// A script's name in errors: its first meaningful line, shortened.
fn summarize(script: &str) -> String {
    let lines: Vec<&str> = script
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let first = lines.first().copied().unwrap_or("");
    let mut label: String = first.chars().take(80).collect();
    if label.len() < first.len() {
        label.push('…');
    }
    if lines.len() > 1 {
        label.push_str(&format!(" (script, {} lines)", lines.len()));
    }
    label
}

/// SSH wire `string`: u32 big-endian length, then the bytes.
fn put_ssh_string(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u32).to_be_bytes());
    buf.extend_from_slice(s.as_bytes());
}

fn is_status(e: &SftpClientError, code: StatusCode) -> bool {
    matches!(e, SftpClientError::Status(s) if s.status_code == code)
}

fn describe_sftp(e: &SftpClientError) -> String {
    match e {
        SftpClientError::Status(s)
            if s.error_message.is_empty() || s.error_message == s.status_code.to_string() =>
        {
            s.status_code.to_string()
        }
        SftpClientError::Timeout => "no answer from the server (timeout)".to_owned(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Connecting

/// Where one SSH server is and which known_hosts file vouches for it (a target or a hop).
struct Endpoint {
    /// Without IPv6 brackets.
    host: String,
    port: u16,
    known_hosts: PathBuf,
    /// Read-only further known_hosts files ([`SshConfig::known_hosts_extra`]).
    known_hosts_extra: Vec<PathBuf>,
}

impl Endpoint {
    fn known_hosts_files(&self) -> Vec<PathBuf> {
        std::iter::once(self.known_hosts.clone())
            .chain(self.known_hosts_extra.iter().cloned())
            .collect()
    }

    fn connect_error(&self, message: String) -> SshError {
        SshError::Connect {
            host: self.host.clone(),
            port: self.port,
            message,
        }
    }
}

fn client_config(
    host: &str,
    port: u16,
    known_hosts: &[PathBuf],
    keepalive_interval: Duration,
) -> client::Config {
    let mut cfg = client::Config::default();
    if !keepalive_interval.is_zero() {
        // Keepalive shorter than the inactivity timeout, or a quiet command loses its session
        // without any error (rust-stack.md gotcha 10).
        cfg.keepalive_interval = Some(keepalive_interval);
        cfg.keepalive_max = 3;
        cfg.inactivity_timeout = Some(keepalive_interval * 4);
    }
    cfg.nodelay = true;
    // A `@cert-authority` line for this host: ask for a host certificate first (a server
    // without one still presents its plain key).
    if known_hosts
        .iter()
        .any(|f| known_hosts::has_cert_authority(f, host, port))
    {
        use russh::keys::EcdsaCurve;
        cfg.preferred.host_key_certificates = vec![
            Algorithm::Ed25519,
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP256,
            },
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP384,
            },
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP521,
            },
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha512),
            },
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha256),
            },
        ]
        .into();
    }
    // Like OpenSSH: ask first for host key types we already trust for this host, so a server
    // with several host keys presents one we can verify.
    let mut known: Vec<String> = Vec::new();
    for file in known_hosts {
        for key_type in known_hosts::known_key_types(file, host, port) {
            if !known.contains(&key_type) {
                known.push(key_type);
            }
        }
    }
    if !known.is_empty() {
        let mut order: Vec<Algorithm> = cfg.preferred.key.to_vec();
        order.sort_by_key(|alg| {
            if known.iter().any(|k| algorithm_matches(alg, k)) {
                0
            } else {
                1
            }
        });
        cfg.preferred.key = order.into();
    }
    cfg
}

/// Whether negotiating `alg` yields a host key of known_hosts type `key_type`.
fn algorithm_matches(alg: &Algorithm, key_type: &str) -> bool {
    match alg {
        Algorithm::Rsa { .. } => key_type == "ssh-rsa",
        other => other.as_str() == key_type,
    }
}

/// A slot among the [`HANDSHAKES_PER_HOST`] handshakes allowed at once against one server.
async fn handshake_slot(host: &str, port: u16) -> Option<tokio::sync::OwnedSemaphorePermit> {
    handshake_slot_for(format!("{}:{port}", host.to_lowercase())).await
}

/// The handshake slot of one server, named by the host key known_hosts trusts for `target`:
/// one sshd reached under several names or addresses is one server to `MaxStartups`, and the
/// cap must hold across them. An unknown host is capped by its name and port. (Servers cloned
/// with the same host key share one cap too: their handshakes wait, none is dropped.)
async fn server_handshake_slot(target: &Endpoint) -> Option<tokio::sync::OwnedSemaphorePermit> {
    match known_hosts::known_key(&target.known_hosts, &target.host, target.port) {
        Some(blob) => handshake_slot_for(format!("key {blob}")).await,
        None => handshake_slot(&target.host, target.port).await,
    }
}

async fn handshake_slot_for(server: String) -> Option<tokio::sync::OwnedSemaphorePermit> {
    type Slots = HashMap<String, Arc<Semaphore>>;
    static SLOTS: std::sync::LazyLock<Mutex<Slots>> = std::sync::LazyLock::new(Mutex::default);
    let semaphore = SLOTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .entry(server)
        .or_insert_with(|| Arc::new(Semaphore::new(HANDSHAKES_PER_HOST)))
        .clone();
    // The semaphores are never closed, so this only fails in theory (and then: no cap).
    semaphore.acquire_owned().await.ok()
}

/// Handshake and authentication with one server, directly or through `via`, within
/// `config.connect_timeout`. Returns the connection and the host key's fingerprint.
async fn connect_endpoint(
    target: &Endpoint,
    user: &str,
    identities_only: bool,
    via: Option<Arc<jump::Hop>>,
    config: &SshConfig,
    sources: &AuthSources,
    identities: &[Identity],
) -> Result<(client::Handle<Verifier>, String), SshError> {
    let _slot = server_handshake_slot(target).await;
    let fingerprint = Arc::new(Mutex::new(String::new()));
    let client_config = Arc::new(client_config(
        &target.host,
        target.port,
        &target.known_hosts_files(),
        config.keepalive_interval,
    ));
    let connect = async {
        let mut handle = handshake_with_retries(
            target,
            via.as_deref(),
            config.accept_new_host_keys,
            client_config,
            &fingerprint,
        )
        .await?;
        authenticate(
            &mut handle,
            target,
            user,
            sources,
            identities,
            identities_only,
        )
        .await?;
        Ok::<_, SshError>(handle)
    };
    let handle = match timeout(config.connect_timeout, connect).await {
        Ok(result) => result?,
        Err(_) => {
            return Err(SshError::ConnectTimeout {
                host: target.host.clone(),
                port: target.port,
                timeout: config.connect_timeout,
            });
        }
    };
    let fingerprint = fingerprint.lock().map(|f| f.clone()).unwrap_or_default();
    Ok((handle, fingerprint))
}

/// Connects and authenticates one jump host, through `upstream` unless it is the first.
async fn connect_hop(
    hop: &JumpHost,
    upstream: Option<Arc<jump::Hop>>,
    config: &SshConfig,
    sources: &AuthSources,
) -> Result<jump::Hop, SshError> {
    let endpoint = Endpoint {
        host: bare_host(&hop.host).to_owned(),
        port: hop.port,
        known_hosts: hop.known_hosts.clone(),
        known_hosts_extra: Vec::new(),
    };
    let identities = load_identities_async(hop.identity_files.clone(), sources).await;
    let (handle, _) = connect_endpoint(
        &endpoint,
        &hop.user,
        false,
        upstream.clone(),
        config,
        sources,
        &identities,
    )
    .await?;
    Ok(jump::Hop::new(handle, hop.label(), upstream))
}

/// Failures of one connection attempt, before authentication.
#[derive(Debug)]
enum HandshakeError {
    /// The server dropped the connection before the host key was checked: worth retrying.
    Reset(SshError),
    Fatal(SshError),
}

async fn handshake_with_retries(
    target: &Endpoint,
    via: Option<&jump::Hop>,
    accept_new: bool,
    client_config: Arc<client::Config>,
    fingerprint: &Arc<Mutex<String>>,
) -> Result<client::Handle<Verifier>, SshError> {
    let mut backoff = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        match handshake(target, via, accept_new, client_config.clone(), fingerprint).await {
            Ok(handle) => return Ok(handle),
            Err(HandshakeError::Fatal(e)) => return Err(e),
            Err(HandshakeError::Reset(SshError::Connect {
                host,
                port,
                message,
            })) if attempt >= HANDSHAKE_ATTEMPTS => {
                let message = format!("{message} ({attempt} attempts)");
                return Err(SshError::Connect {
                    host,
                    port,
                    message,
                });
            }
            Err(HandshakeError::Reset(e)) if attempt >= HANDSHAKE_ATTEMPTS => return Err(e),
            Err(HandshakeError::Reset(e)) => {
                // Jitter (50–150 %): connections dropped together must not retry together.
                let mut byte = [0u8; 1];
                let _ = getrandom::fill(&mut byte);
                let wait = backoff.mul_f64(0.5 + f64::from(byte[0]) / 255.0);
                tracing::debug!(
                    "{e}; retrying in {wait:?} (attempt {attempt} of {HANDSHAKE_ATTEMPTS})"
                );
                tokio::time::sleep(wait).await;
                backoff *= 2;
                attempt += 1;
            }
        }
    }
}

async fn handshake(
    target: &Endpoint,
    via: Option<&jump::Hop>,
    accept_new: bool,
    client_config: Arc<client::Config>,
    fingerprint: &Arc<Mutex<String>>,
) -> Result<client::Handle<Verifier>, HandshakeError> {
    let verifier = Verifier {
        host: target.host.clone(),
        port: target.port,
        known_hosts: target.known_hosts.clone(),
        known_hosts_extra: target.known_hosts_extra.clone(),
        accept_new,
        fingerprint: fingerprint.clone(),
    };
    let connected = match via {
        None => {
            let tcp = tcp_connect(target).await.map_err(HandshakeError::Fatal)?;
            client::connect_stream(client_config, tcp, verifier).await
        }
        Some(hop) => {
            // The hop resolves and dials the target, as `ssh -J` does.
            let channel = hop
                .handle
                .channel_open_direct_tcpip(
                    target.host.as_str(),
                    u32::from(target.port),
                    "127.0.0.1",
                    0,
                )
                .await
                .map_err(|e| HandshakeError::Fatal(tunnel_error(target, hop, &e)))?;
            client::connect_stream(client_config, channel.into_stream(), verifier).await
        }
    };
    match connected {
        Ok(handle) => Ok(handle),
        Err(HandlerError::Refused(e)) => Err(HandshakeError::Fatal(*e)),
        Err(HandlerError::Russh(e)) => {
            if is_reset(&e) {
                let message =
                    format!("the server closed the connection during the SSH handshake: {e}");
                Err(HandshakeError::Reset(target.connect_error(message)))
            } else {
                Err(HandshakeError::Fatal(
                    target.connect_error(format!("SSH handshake failed: {e}")),
                ))
            }
        }
    }
}

/// Resolves the host and connects to its first address that answers, as OpenSSH does.
async fn tcp_connect(target: &Endpoint) -> Result<tokio::net::TcpStream, SshError> {
    let literal = target.host.parse::<std::net::IpAddr>().is_ok();
    let addrs: Vec<std::net::SocketAddr> =
        match tokio::net::lookup_host((target.host.as_str(), target.port)).await {
            Ok(addrs) => addrs.collect(),
            Err(e) => {
                return Err(target.connect_error(format!(
                    "cannot resolve the host name `{}`: {e}",
                    target.host
                )));
            }
        };
    let mut last = None;
    for addr in &addrs {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(tcp) => {
                let _ = tcp.set_nodelay(true);
                return Ok(tcp);
            }
            Err(e) => last = Some((addr, e)),
        }
    }
    Err(match last {
        Some((addr, e)) => {
            let hint = match e.kind() {
                std::io::ErrorKind::ConnectionRefused => " (is sshd listening on that port?)",
                _ => "",
            };
            let to = if literal {
                String::new()
            } else {
                format!(" to {addr}")
            };
            target.connect_error(format!("cannot connect{to}: {e}{hint}"))
        }
        None => target.connect_error(format!(
            "the host name `{}` resolves to no address",
            target.host
        )),
    })
}

/// Why a jump host could not open the tunnel to `target`.
fn tunnel_error(target: &Endpoint, hop: &jump::Hop, e: &russh::Error) -> SshError {
    use russh::ChannelOpenFailure as F;
    let message = match e {
        russh::Error::ChannelOpenFailure(F::ConnectFailed) => format!(
            "the jump host {} cannot connect to it (refused, unreachable, or a name it cannot resolve)",
            hop.label
        ),
        russh::Error::ChannelOpenFailure(F::AdministrativelyProhibited) => format!(
            "the jump host {} refuses to forward connections (AllowTcpForwarding?)",
            hop.label
        ),
        _ if hop.handle.is_closed() => {
            format!("the connection to the jump host {} was lost", hop.label)
        }
        other => format!(
            "the jump host {} could not open a tunnel to it: {other}",
            hop.label
        ),
    };
    target.connect_error(message)
}

fn is_reset(e: &russh::Error) -> bool {
    use std::io::ErrorKind;
    match e {
        russh::Error::Disconnect | russh::Error::HUP => true,
        russh::Error::IO(io) => matches!(
            io.kind(),
            ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof | ErrorKind::BrokenPipe
        ),
        _ => false,
    }
}

/// The handler's error: russh's own, or our precise refusal of the host key.
#[derive(Debug)]
enum HandlerError {
    Russh(russh::Error),
    Refused(Box<SshError>),
}

impl From<russh::Error> for HandlerError {
    fn from(e: russh::Error) -> Self {
        Self::Russh(e)
    }
}

/// Checks the server's host key against known_hosts (see [`known_hosts`]).
struct Verifier {
    host: String,
    port: u16,
    known_hosts: PathBuf,
    known_hosts_extra: Vec<PathBuf>,
    accept_new: bool,
    /// The offered key's fingerprint, for the session to report.
    fingerprint: Arc<Mutex<String>>,
}

impl client::Handler for Verifier {
    type Error = HandlerError;

    async fn check_server_key(
        &mut self,
        offered: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = match offered {
            PublicKeyOrCertificate::PublicKey { key, .. } => key,
            PublicKeyOrCertificate::Certificate(cert) => return self.check_certificate(cert),
        };
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        if let Ok(mut slot) = self.fingerprint.lock() {
            slot.clone_from(&fingerprint);
        }
        let files: Vec<&Path> = std::iter::once(self.known_hosts.as_path())
            .chain(self.known_hosts_extra.iter().map(PathBuf::as_path))
            .collect();
        let (file, problem) = match known_hosts::check_files(&files, &self.host, self.port, key) {
            Ok(()) => return Ok(true),
            Err(found) => found,
        };
        let (host, port, path) = (self.host.clone(), self.port, files[file].to_path_buf());
        let error = match problem {
            HostKeyProblem::FileMissing | HostKeyProblem::Unknown if self.accept_new => {
                return match known_hosts::append(&self.known_hosts, &self.host, self.port, key) {
                    Ok(()) => {
                        tracing::warn!(%host, port, %fingerprint, path = %path.display(), "trusted a new host key on first use and recorded it");
                        if let Some(notify) = known_hosts::ON_RECORDED.get() {
                            notify(&known_hosts::permanently_added(&host, port, key));
                        }
                        Ok(true)
                    }
                    Err(e) => Err(self.refuse(SshError::Connect {
                        host,
                        port,
                        message: format!(
                            "cannot record the new host key {fingerprint} in {}: {e}",
                            path.display()
                        ),
                    })),
                };
            }
            HostKeyProblem::FileMissing => {
                let line = known_hosts::entry_line(&self.host, self.port, key);
                SshError::KnownHostsMissing {
                    host,
                    port,
                    path,
                    fingerprint,
                    line,
                }
            }
            HostKeyProblem::Unknown
                if files
                    .iter()
                    .any(|f| known_hosts::has_cert_authority(f, &self.host, self.port)) =>
            {
                let line = known_hosts::entry_line(&self.host, self.port, key);
                SshError::CertAuthorityOnly {
                    host,
                    port,
                    path,
                    fingerprint,
                    line,
                }
            }
            HostKeyProblem::Unknown => {
                let line = known_hosts::entry_line(&self.host, self.port, key);
                SshError::UnknownHost {
                    host,
                    port,
                    path,
                    fingerprint,
                    line,
                }
            }
            HostKeyProblem::Changed { line } => SshError::HostKeyChanged {
                host,
                port,
                path,
                known_line: line,
                fingerprint,
            },
            HostKeyProblem::Revoked { line } => SshError::HostKeyRevoked {
                host,
                port,
                path,
                known_line: line,
                fingerprint,
            },
            HostKeyProblem::Unreadable { message } => SshError::Connect {
                host,
                port,
                message: format!("cannot read known_hosts {}: {message}", path.display()),
            },
        };
        Err(self.refuse(error))
    }
}

impl Verifier {
    fn refuse(&self, e: SshError) -> HandlerError {
        HandlerError::Refused(Box::new(e))
    }

    fn files(&self) -> Vec<&Path> {
        std::iter::once(self.known_hosts.as_path())
            .chain(self.known_hosts_extra.iter().map(PathBuf::as_path))
            .collect()
    }

    /// An OpenSSH host certificate (offered only when a `@cert-authority` line applies to
    /// the host, see [`client_config`]), checked as OpenSSH does: a host certificate, signed
    /// by one of those CAs, within its validity period, naming this host among its
    /// principals, with no critical option; neither its key nor the CA `@revoked`.
    fn check_certificate(&self, cert: &russh::keys::Certificate) -> Result<bool, HandlerError> {
        let key = PublicKey::from(cert.public_key().clone());
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        if let Ok(mut slot) = self.fingerprint.lock() {
            slot.clone_from(&fingerprint);
        }
        let refuse = |message: String| {
            self.refuse(SshError::HostCertificate {
                host: self.host.clone(),
                port: self.port,
                fingerprint: fingerprint.clone(),
                message,
            })
        };
        let ca_key = PublicKey::from(cert.signature_key().clone());
        for file in self.files() {
            for revoked in [&key, &ca_key] {
                if let Some(line) = known_hosts::revoked_line(file, &self.host, self.port, revoked)
                {
                    return Err(self.refuse(SshError::HostKeyRevoked {
                        host: self.host.clone(),
                        port: self.port,
                        path: file.to_path_buf(),
                        known_line: line,
                        fingerprint: revoked.fingerprint(HashAlg::Sha256).to_string(),
                    }));
                }
            }
        }
        let cas: Vec<russh::keys::ssh_key::Fingerprint> = self
            .files()
            .into_iter()
            .flat_map(|f| known_hosts::cert_authorities(f, &self.host, self.port))
            .map(|(ca, _)| ca.fingerprint(HashAlg::Sha256))
            .collect();
        let ca_fp = ca_key.fingerprint(HashAlg::Sha256);
        if cert.cert_type() != russh::keys::ssh_key::certificate::CertType::Host {
            return Err(refuse(
                "it is a user certificate, not a host certificate".into(),
            ));
        }
        if !cas.contains(&ca_fp) {
            return Err(refuse(format!(
                "it is signed by {ca_fp}, which no @cert-authority line for this host names"
            )));
        }
        if cert.validate(&cas).is_err() {
            return Err(refuse(format!(
                "its signature by {ca_fp} does not verify, or it is outside its validity period"
            )));
        }
        if !cert
            .valid_principals()
            .iter()
            .any(|p| p.eq_ignore_ascii_case(&self.host))
        {
            return Err(refuse(format!(
                "it is not valid for `{}` (principals: {})",
                self.host,
                cert.valid_principals().join(", ")
            )));
        }
        if !cert.critical_options().is_empty() {
            return Err(refuse(
                "it carries critical options certctl does not know".into(),
            ));
        }
        Ok(true)
    }
}

// ---------------------------------------------------------------------------------------------
// Authentication

/// Loads (decrypts, prompting if `sources.prompt`) the given key files — or the default ones
/// when `files` is empty — into the process's key cache, so later connects reuse them. Call it
/// before a live progress view starts, so a passphrase prompt does not fight the view for the
/// terminal. Returns one `path: reason` line per file that cannot be used.
pub async fn unlock_identities(files: &[PathBuf], sources: &AuthSources) -> Vec<String> {
    load_identities_async(files.to_vec(), sources)
        .await
        .into_iter()
        .filter_map(|id| {
            id.key
                .err()
                .map(|reason| format!("{}: {reason}", id.path.display()))
        })
        .collect()
}

/// A key file, loaded (or not) before connecting.
struct Identity {
    path: PathBuf,
    key: Result<Arc<PrivateKey>, String>,
    /// An OpenSSH user certificate beside the key (`KEY-cert.pub`), offered before the key.
    cert: Option<russh::keys::Certificate>,
}

impl Identity {
    /// The public half: from the loaded key, else from `KEY.pub` (an encrypted key nobody
    /// unlocked still identifies its agent copy, for `IdentitiesOnly`).
    fn public_key(&self) -> Option<PublicKey> {
        match &self.key {
            Ok(key) => Some(key.public_key().clone()),
            Err(_) => {
                let mut pub_path = self.path.clone().into_os_string();
                pub_path.push(".pub");
                PublicKey::read_openssh_file(Path::new(&pub_path)).ok()
            }
        }
    }
}

/// `KEY-cert.pub` beside `path`, when it exists and parses as a certificate for that key.
fn load_certificate(path: &Path, key: &PrivateKey) -> Option<russh::keys::Certificate> {
    let mut cert_path = path.to_path_buf().into_os_string();
    cert_path.push("-cert.pub");
    let cert_path = PathBuf::from(cert_path);
    if !cert_path.exists() {
        return None;
    }
    match russh::keys::Certificate::read_file(&cert_path) {
        Ok(cert) if cert.public_key() == key.public_key().key_data() => Some(cert),
        Ok(_) => {
            tracing::warn!(path = %cert_path.display(), "certificate is for another key; not used");
            None
        }
        Err(e) => {
            tracing::warn!(path = %cert_path.display(), "cannot parse the certificate: {e}; not used");
            None
        }
    }
}

/// [`load_identities`] on a blocking thread: decrypting a key (bcrypt) is CPU work, and the
/// passphrase prompt waits for a person.
async fn load_identities_async(files: Vec<PathBuf>, sources: &AuthSources) -> Vec<Identity> {
    let (passphrase, prompt) = (sources.passphrase.clone(), sources.prompt);
    tokio::task::spawn_blocking(move || load_identities(files, passphrase.as_ref(), prompt))
        .await
        .unwrap_or_default()
}

/// The configured identity files if any, else the default key files that exist.
fn load_identities(
    files: Vec<PathBuf>,
    passphrase: Option<&Secret>,
    prompt: bool,
) -> Vec<Identity> {
    let paths: Vec<PathBuf> = if !files.is_empty() {
        files
    } else {
        match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            Some(home) => ["id_ed25519", "id_ecdsa", "id_rsa"]
                .iter()
                .map(|name| Path::new(&home).join(".ssh").join(name))
                .filter(|p| p.exists())
                .collect(),
            None => Vec::new(),
        }
    };
    paths
        .into_iter()
        .map(|path| {
            let key = load_key_cached(&path, passphrase, prompt);
            if let Err(message) = &key {
                tracing::debug!(path = %path.display(), "identity not usable: {message}");
            }
            let cert = key
                .as_ref()
                .ok()
                .and_then(|key| load_certificate(&path, key));
            Identity { path, key, cert }
        })
        .collect()
}

/// How a cached key was decrypted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Unlock {
    Plain,
    /// With this passphrase (its SHA-256).
    Given(Vec<u8>),
    /// With a passphrase typed at the prompt.
    Prompted,
}

/// Which key file, unlocked how, as of which modification.
type KeyCacheKey = (PathBuf, Unlock, Option<std::time::SystemTime>, u64);

/// Keys decrypted once per process: a fleet run connects to every target with the same key,
/// and an encrypted key costs ~90 ms of bcrypt per load (and a prompt costs a person's
/// time). Only successes are cached; the lock is held while loading so concurrent connects
/// wait for one decryption (or one prompt), not N.
fn load_key_cached(
    path: &Path,
    passphrase: Option<&Secret>,
    prompt: bool,
) -> Result<Arc<PrivateKey>, String> {
    use sha2::Digest as _;
    static CACHE: std::sync::LazyLock<Mutex<HashMap<KeyCacheKey, Arc<PrivateKey>>>> =
        std::sync::LazyLock::new(Mutex::default);
    let meta = std::fs::metadata(path).ok();
    let cache_key = |unlock: Unlock| {
        (
            path.to_path_buf(),
            unlock,
            meta.as_ref().and_then(|m| m.modified().ok()),
            meta.as_ref().map_or(0, |m| m.len()),
        )
    };
    let unlock = match passphrase {
        Some(p) => Unlock::Given(sha2::Sha256::digest(p.expose()).to_vec()),
        None => Unlock::Plain,
    };
    let may_prompt = prompt && passphrase.is_none();
    let mut cache = CACHE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(key) = cache.get(&cache_key(unlock.clone())) {
        return Ok(key.clone());
    }
    if may_prompt && let Some(key) = cache.get(&cache_key(Unlock::Prompted)) {
        return Ok(key.clone());
    }
    match decode_key(path, passphrase) {
        Ok(key) => {
            let key = Arc::new(key);
            cache.insert(cache_key(unlock), key.clone());
            Ok(key)
        }
        Err(KeyError::Encrypted) if may_prompt => {
            let key = Arc::new(prompt_and_decode(path)?);
            cache.insert(cache_key(Unlock::Prompted), key.clone());
            Ok(key)
        }
        Err(e) => Err(e.message()),
    }
}

/// Asks for the passphrase on the terminal, three tries as OpenSSH allows.
fn prompt_and_decode(path: &Path) -> Result<PrivateKey, String> {
    let mut question = format!("Enter passphrase for key '{}': ", path.display());
    for _ in 0..3 {
        let passphrase = prompt::passphrase(&question)
            .map_err(|e| format!("the key is encrypted and the passphrase prompt failed: {e}"))?;
        if passphrase.is_empty() {
            return Err("the key is encrypted and no passphrase was entered".to_owned());
        }
        match decode_key(path, Some(&passphrase)) {
            Ok(key) => return Ok(key),
            Err(KeyError::BadPassphrase) => {
                question = format!("Bad passphrase, try again for '{}': ", path.display());
            }
            Err(e) => return Err(e.message()),
        }
    }
    Err("the key is encrypted and the passphrase entered was wrong 3 times".to_owned())
}

/// Why a key file could not be loaded.
enum KeyError {
    Encrypted,
    BadPassphrase,
    Other(String),
}

impl KeyError {
    fn message(self) -> String {
        match self {
            KeyError::Encrypted => "the key is encrypted; set CERTCTL_SSH_PASSPHRASE, load it into ssh-agent, or run certctl from a terminal to be asked".to_owned(),
            KeyError::BadPassphrase => {
                "cannot decrypt or parse the key (wrong CERTCTL_SSH_PASSPHRASE?)".to_owned()
            }
            KeyError::Other(message) => message,
        }
    }
}

/// Loads a private key; the error text never contains key material.
#[cfg(test)]
fn load_key(path: &Path, passphrase: Option<&Secret>) -> Result<PrivateKey, String> {
    decode_key(path, passphrase).map_err(KeyError::message)
}

fn decode_key(path: &Path, passphrase: Option<&Secret>) -> Result<PrivateKey, KeyError> {
    let bytes = Zeroizing::new(
        std::fs::read(path).map_err(|e| KeyError::Other(format!("cannot read: {e}")))?,
    );
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| KeyError::Other("not a text (PEM/OpenSSH) key file".to_owned()))?;
    let passphrase = match passphrase {
        Some(p) => Some(
            std::str::from_utf8(p.expose())
                .map_err(|_| KeyError::Other("the passphrase is not valid UTF-8".to_owned()))?,
        ),
        None => None,
    };
    russh::keys::decode_secret_key(text, passphrase).map_err(|e| match (e, passphrase) {
        (russh::keys::Error::KeyIsEncrypted, _) => KeyError::Encrypted,
        (_, Some(_)) => KeyError::BadPassphrase,
        (e, None) => KeyError::Other(format!("cannot parse the key: {e}")),
    })
}

/// Agent identities first, then key files; the first one the server accepts wins.
async fn authenticate(
    handle: &mut client::Handle<Verifier>,
    target: &Endpoint,
    user: &str,
    sources: &AuthSources,
    identities: &[Identity],
    identities_only: bool,
) -> Result<(), SshError> {
    let auth_error = |message: String| SshError::Auth {
        host: target.host.clone(),
        port: target.port,
        user: user.to_owned(),
        message,
    };
    let mut tried: Vec<String> = Vec::new();
    let mut rsa_hash: Option<Option<HashAlg>> = None;

    if let Some(socket) = &sources.agent_socket {
        match AgentClient::connect_uds(socket).await {
            Err(e) => tried.push(format!(
                "ssh-agent at {}: unreachable ({e})",
                socket.display()
            )),
            Ok(mut agent) => {
                match agent.request_identities().await {
                    Err(e) => tried.push(format!("ssh-agent at {}: {e}", socket.display())),
                    Ok(ids) => {
                        let mut keys: Vec<PublicKey> = ids
                            .into_iter()
                            .filter_map(|id| match id {
                                AgentIdentity::PublicKey { key, .. } => Some(key),
                                AgentIdentity::Certificate { .. } => None,
                            })
                            .collect();
                        if keys.is_empty() {
                            tried.push("ssh-agent: no keys".to_owned());
                        } else if identities_only {
                            // OpenSSH `IdentitiesOnly`: only agent copies of the identity files.
                            let allowed: Vec<PublicKey> =
                                identities.iter().filter_map(Identity::public_key).collect();
                            keys.retain(|k| allowed.iter().any(|a| a.key_data() == k.key_data()));
                            if keys.is_empty() {
                                tried.push("ssh-agent: no key matching the identity files (IdentitiesOnly)".to_owned());
                            }
                        }
                        for key in keys {
                            let fp = key.fingerprint(HashAlg::Sha256);
                            let hash = rsa_hash_for(handle, key.algorithm(), &mut rsa_hash).await;
                            match handle
                                .authenticate_publickey_with(user, key, hash, &mut agent)
                                .await
                            {
                                Ok(r) if r.success() => return Ok(()),
                                Ok(_) => tried.push(format!("ssh-agent key {fp}: rejected")),
                                Err(e) => tried.push(format!("ssh-agent key {fp}: {e}")),
                            }
                            if handle.is_closed() {
                                return Err(auth_error(format!(
                                    "the server closed the connection; tried {}",
                                    tried.join("; ")
                                )));
                            }
                        }
                    }
                }
            }
        }
    }

    for identity in identities {
        let path = identity.path.display();
        let key = match &identity.key {
            Ok(key) => key.clone(),
            Err(message) => {
                tried.push(format!("{path}: {message}"));
                continue;
            }
        };
        let fp = key.public_key().fingerprint(HashAlg::Sha256);
        if let Some(cert) = &identity.cert {
            match handle
                .authenticate_openssh_cert(user, key.clone(), cert.clone())
                .await
            {
                Ok(r) if r.success() => return Ok(()),
                Ok(_) => tried.push(format!("{path}-cert.pub ({fp}): certificate rejected")),
                Err(e) => {
                    tried.push(format!("{path}-cert.pub ({fp}): {e}"));
                    return Err(auth_error(format!(
                        "the connection failed during authentication; tried {}",
                        tried.join("; ")
                    )));
                }
            }
        }
        let hash = rsa_hash_for(handle, key.algorithm(), &mut rsa_hash).await;
        match handle
            .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key, hash))
            .await
        {
            Ok(r) if r.success() => return Ok(()),
            Ok(_) => tried.push(format!("{path} ({fp}): rejected")),
            Err(e) => {
                tried.push(format!("{path} ({fp}): {e}"));
                return Err(auth_error(format!(
                    "the connection failed during authentication; tried {}",
                    tried.join("; ")
                )));
            }
        }
    }

    if tried.is_empty() {
        // Configured files always show up in `tried` (if only as unreadable): these are the
        // defaults.
        return Err(auth_error(
            "no key to offer: SSH_AUTH_SOCK is not set and no identity file exists (~/.ssh/id_ed25519, id_ecdsa, id_rsa)"
                .to_owned(),
        ));
    }
    Err(auth_error(format!("tried {}", tried.join("; "))))
}

/// RSA keys sign with the best hash the server accepts (`rsa-sha2-512/256`); OpenSSH ≥ 8.8
/// refuses the SHA-1 default. Asked once per connection (it waits for the server's ext-info).
async fn rsa_hash_for(
    handle: &client::Handle<Verifier>,
    alg: Algorithm,
    cache: &mut Option<Option<HashAlg>>,
) -> Option<HashAlg> {
    if !alg.is_rsa() {
        return None;
    }
    if cache.is_none() {
        *cache = Some(
            handle
                .best_supported_rsa_hash()
                .await
                .ok()
                .flatten()
                .flatten(),
        );
    }
    cache.flatten()
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
    fn tail_keeps_the_last_bytes_and_says_how_many_were_dropped() {
        let mut t = Tail::default();
        t.push(b"hello");
        assert_eq!(t.finish(), b"hello");

        let mut t = Tail::default();
        let chunk = vec![b'a'; 64 * 1024];
        for _ in 0..40 {
            t.push(&chunk);
        }
        t.push(b"END");
        let out = t.finish();
        let header = format!(
            "[certctl: {} earlier bytes of output dropped]\n",
            40 * 64 * 1024 + 3 - OUTPUT_CAP
        );
        assert!(
            out.starts_with(header.as_bytes()),
            "{}",
            String::from_utf8_lossy(&out[..80])
        );
        assert_eq!(out.len(), header.len() + OUTPUT_CAP);
        assert!(out.ends_with(b"aaaEND"));
    }

    #[test]
    fn script_labels_are_short() {
        assert_eq!(summarize("nginx -t\n"), "nginx -t");
        assert_eq!(
            summarize("\nset -eu\nnginx -t\n"),
            "set -eu (script, 2 lines)"
        );
        let long = "x".repeat(200);
        assert_eq!(summarize(&long).chars().count(), 81);
    }

    #[test]
    fn ssh_string_encoding() {
        let mut buf = Vec::new();
        put_ssh_string(&mut buf, "ab");
        put_ssh_string(&mut buf, "");
        assert_eq!(buf, [0, 0, 0, 2, b'a', b'b', 0, 0, 0, 0]);
    }

    #[test]
    fn known_host_key_types_are_preferred() {
        let dir = tempfile::tempdir().unwrap();
        let known_hosts = dir.path().join("known_hosts");
        std::fs::write(
            &known_hosts,
            "[h]:2222 ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBHUAPS0UQzXyLyNNA+tsHhfXq/pjOWJJaUvqtRIUKPAjR72vZkFcDx4/h/J7C/r0LcTEfHEQrTVY5ZN1t5UqlEI=\n",
        )
        .unwrap();
        let keepalive = Duration::from_secs(15);
        let cfg = client_config("h", 2222, std::slice::from_ref(&known_hosts), keepalive);
        assert_eq!(cfg.preferred.key[0].as_str(), "ecdsa-sha2-nistp256");
        assert_eq!(cfg.keepalive_interval, Some(Duration::from_secs(15)));
        assert_eq!(cfg.inactivity_timeout, Some(Duration::from_secs(60)));
        assert!(cfg.nodelay);
        // Unknown host: russh's default order.
        assert_eq!(
            client_config("other", 2222, &[known_hosts], keepalive)
                .preferred
                .key[0]
                .as_str(),
            "ssh-ed25519"
        );
    }

    #[tokio::test]
    async fn handshake_slots_cap_each_host_separately() {
        use futures::FutureExt as _;
        let host = "slot-test.example";
        let mut held = Vec::new();
        for _ in 0..HANDSHAKES_PER_HOST {
            held.push(handshake_slot(host, 1).await.unwrap());
        }
        assert!(
            handshake_slot(host, 1).now_or_never().is_none(),
            "the cap holds"
        );
        assert!(
            handshake_slot("SLOT-TEST.example", 1)
                .now_or_never()
                .is_none(),
            "host names are compared case-insensitively"
        );
        assert!(
            handshake_slot(host, 2).now_or_never().is_some(),
            "another port"
        );
        assert!(
            handshake_slot("other.example", 1).now_or_never().is_some(),
            "another host"
        );
        let waiting = handshake_slot(host, 1);
        tokio::pin!(waiting);
        assert!(futures::poll!(&mut waiting).is_pending());
        held.pop();
        assert!(waiting.await.is_some(), "a freed slot goes to the waiter");
    }

    #[tokio::test]
    async fn one_server_under_several_addresses_shares_one_handshake_cap() {
        use base64::Engine as _;
        use futures::FutureExt as _;
        let dir = tempfile::tempdir().unwrap();
        let known_hosts = dir.path().join("known_hosts");
        let key = |name: &str| {
            let mut blob = Vec::new();
            put_ssh_string(&mut blob, "ssh-ed25519");
            put_ssh_string(&mut blob, name);
            base64::engine::general_purpose::STANDARD.encode(blob)
        };
        std::fs::write(
            &known_hosts,
            format!(
                "127.77.0.1,127.77.0.2 ssh-ed25519 {one}\n127.77.0.3 ssh-ed25519 {other}\n",
                one = key("same-server-key-0123456789abcdef"),
                other = key("other-server-key-0123456789abcde"),
            ),
        )
        .unwrap();
        let at = |host: &str| Endpoint {
            host: host.into(),
            port: 22,
            known_hosts: known_hosts.clone(),
            known_hosts_extra: Vec::new(),
        };
        let mut held = Vec::new();
        for _ in 0..HANDSHAKES_PER_HOST {
            held.push(server_handshake_slot(&at("127.77.0.1")).await.unwrap());
        }
        assert!(
            server_handshake_slot(&at("127.77.0.2"))
                .now_or_never()
                .is_none(),
            "the second address of the same server waits"
        );
        assert!(
            server_handshake_slot(&at("127.77.0.3"))
                .now_or_never()
                .is_some(),
            "another server's key has its own cap"
        );
        assert!(
            server_handshake_slot(&at("127.77.0.4"))
                .now_or_never()
                .is_some(),
            "a host not in known_hosts is capped by its address"
        );
    }

    #[test]
    fn endpoints_bracket_ipv6_and_errors_use_them() {
        assert_eq!(endpoint("::1", 2222), "[::1]:2222");
        assert_eq!(endpoint("web-1", 22), "web-1:22");
        assert_eq!(bare_host("[::1]"), "::1");
        assert_eq!(bare_host("::1"), "::1");
        let e = SshError::ConnectTimeout {
            host: "fe80::1".into(),
            port: 22,
            timeout: Duration::from_secs(1),
        };
        assert_eq!(e.to_string(), "[fe80::1]:22: connect timed out after 1s");
        let jump = SshError::Jump {
            host: "web-1".into(),
            port: 22,
            hop: 2,
            hops: 2,
            error: Box::new(e),
        };
        assert_eq!(
            jump.to_string(),
            "web-1:22: via jump host 2 of 2: [fe80::1]:22: connect timed out after 1s"
        );
    }

    #[test]
    fn encrypted_key_errors_name_the_fix_and_never_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id");
        let status = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "s3cret", "-C", "", "-f"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
        let no_pass = load_key(&path, None).unwrap_err();
        assert!(no_pass.contains("CERTCTL_SSH_PASSPHRASE"), "{no_pass}");
        let wrong = load_key(&path, Some(&Secret::new(b"nope".to_vec()))).unwrap_err();
        assert!(wrong.contains("wrong CERTCTL_SSH_PASSPHRASE"), "{wrong}");
        let key = load_key(&path, Some(&Secret::new(b"s3cret".to_vec()))).unwrap();
        assert_eq!(key.algorithm(), Algorithm::Ed25519);
        let pass = Secret::new(b"s3cret".to_vec());
        let first = load_key_cached(&path, Some(&pass), false).unwrap();
        let again = load_key_cached(&path, Some(&pass), false).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "decrypted once per process");
        // The cache never lets a wrong (or missing) passphrase through.
        assert!(load_key_cached(&path, None, false).is_err());
        assert!(load_key_cached(&path, Some(&Secret::new(b"x".to_vec())), false).is_err());
        let missing = load_key(&dir.path().join("absent"), None).unwrap_err();
        assert!(missing.starts_with("cannot read"), "{missing}");
    }
}
