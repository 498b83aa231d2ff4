//! The SSH transport, and the only module that knows russh: connect with a timeout, strict
//! known_hosts, agent and key-file auth, keepalive, exec with stdout/stderr/exit status, SFTP
//! upload and atomic replace (posix-rename), and remote-shell quoting (in [`quote`]).
//!
//! One [`Session`] per target for the whole run; every exec and SFTP request is a channel
//! multiplexed on it.

pub mod known_hosts;
pub mod quote;

use std::path::PathBuf;
use std::time::Duration;

/// Everything needed to reach one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// Tried after the agent; none = the agent, then ~/.ssh/id_ed25519, id_ecdsa, id_rsa.
    pub identity_file: Option<PathBuf>,
    pub known_hosts: PathBuf,
    /// Record the key of a never-seen host (trust on first use); a changed key is still refused.
    pub accept_new_host_keys: bool,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub keepalive_interval: Duration,
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
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("{host}:{port}: known_hosts file {path} does not exist; the server offered {fingerprint}. To trust it, add:\n  {line}\nor run with --accept-new-host-keys")]
    KnownHostsMissing { host: String, port: u16, path: PathBuf, fingerprint: String, line: String },
    #[error("{host}:{port}: host is not in {path}; the server offered {fingerprint}. To trust it, add:\n  {line}\nor run with --accept-new-host-keys")]
    UnknownHost { host: String, port: u16, path: PathBuf, fingerprint: String, line: String },
    #[error("{host}:{port}: HOST KEY CHANGED — {path} line {known_line} has a different key; the server offered {fingerprint}. Someone may be intercepting the connection; if the key change is expected, replace that line")]
    HostKeyChanged { host: String, port: u16, path: PathBuf, known_line: usize, fingerprint: String },
    #[error("{host}:{port}: host key {fingerprint} is marked @revoked in {path} line {known_line}")]
    HostKeyRevoked { host: String, port: u16, path: PathBuf, known_line: usize, fingerprint: String },
    #[error("{host}:{port}: connect timed out after {timeout:?}")]
    ConnectTimeout { host: String, port: u16, timeout: Duration },
    #[error("{host}:{port}: {message}")]
    Connect { host: String, port: u16, message: String },
    #[error("{host}:{port}: authentication failed for user `{user}`: {message}")]
    Auth { host: String, port: u16, user: String, message: String },
    #[error("{host}:{port}: command timed out after {timeout:?}: {command}")]
    CommandTimeout { host: String, port: u16, timeout: Duration, command: String },
    #[error("{host}:{port}: the connection closed before `{command}` reported an exit status")]
    NoExitStatus { host: String, port: u16, command: String },
    #[error("{host}:{port}: sftp: {message}")]
    Sftp { host: String, port: u16, message: String },
    #[error("{host}:{port}: {message}")]
    Protocol { host: String, port: u16, message: String },
}

/// One authenticated connection to a target, with an SFTP channel opened on first use.
pub struct Session {
    // implementation-defined
}

impl Session {
    /// Connects, checks the host key strictly, authenticates.
    pub async fn connect(config: &SshConfig) -> Result<Session, SshError> {
        todo!("{config:?}")
    }

    /// Runs `argv` (quoted here with [`quote::command_line`]) and collects its output.
    pub async fn exec(&self, argv: &[String]) -> Result<ExecOutput, SshError> {
        todo!("{argv:?}")
    }

    /// Runs a script already assembled with [`quote::Script`] by `sh -c`-style exec; if
    /// `stdin` is given it is written to the command's standard input, then EOF.
    pub async fn exec_script(&self, script: &quote::Script, stdin: Option<&[u8]>) -> Result<ExecOutput, SshError> {
        todo!("{script:?}{stdin:?}")
    }

    /// Creates `path` exclusively (O_EXCL) with `mode` from the first byte (set again after
    /// creation to defeat the umask), writes `data`, fsyncs, closes, and sets owner/group
    /// when given (numeric ids).
    pub async fn upload(&self, path: &str, data: &[u8], mode: u32, owner: Option<(u32, u32)>) -> Result<(), SshError> {
        todo!("{path}{}{mode}{owner:?}", data.len())
    }

    /// Atomically replaces `to` with `from` (SFTP posix-rename@openssh.com).
    pub async fn rename_over(&self, from: &str, to: &str) -> Result<(), SshError> {
        todo!("{from}{to}")
    }

    /// Reads a whole remote file (for certificates only — never keys).
    pub async fn read_file(&self, path: &str, limit: usize) -> Result<Vec<u8>, SshError> {
        todo!("{path}{limit}")
    }

    /// Removes a file; a missing file is not an error.
    pub async fn remove_file(&self, path: &str) -> Result<(), SshError> {
        todo!("{path}")
    }

    /// Closes the connection politely.
    pub async fn close(self) {}

    pub fn host(&self) -> &str {
        todo!()
    }
}
