//! Where one piece of certificate material comes from: a file, an environment variable, or a
//! local command's stdout (no shell, a time limit, stderr quoted on failure, stdout never).
//! `cert`, `chain` and `key` each have one [`Source`]; what the bytes must be is checked by
//! [`crate::material`] the same way whatever the source.

use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use zeroize::Zeroizing;

use crate::localcmd;

/// Certificate, chain and key inputs larger than this are refused (a PEM chain is a few KiB).
pub const MAX_INPUT: usize = 1 << 20;

/// How long a source command may run unless the certificate sets `command_timeout`.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// One input's origin (resolved by the inventory: relative paths are already absolute).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    /// Name of an environment variable holding the PEM.
    Env(String),
    /// argv run locally (no shell); its stdout is the PEM.
    Command(Vec<String>),
    /// Bytes already read from elsewhere (a backup set's copy on a target, checked before it
    /// is restored), and how messages name them.
    Fetched(String, crate::secret::Secret),
}

impl From<PathBuf> for Source {
    fn from(path: PathBuf) -> Self {
        Source::File(path)
    }
}

impl From<&Path> for Source {
    fn from(path: &Path) -> Self {
        Source::File(path.to_path_buf())
    }
}

impl Source {
    /// How messages name this source of `field` (`cert`, `chain`, `key`): the path,
    /// ``cert_env `VAR` ``, or ``cert_command `argv0` ``.
    pub fn describe(&self, field: &str) -> String {
        match self {
            Source::File(path) => path.display().to_string(),
            Source::Env(var) => format!("{field}_env `{var}`"),
            Source::Command(argv) => format!(
                "{field}_command `{}`",
                argv.first().map(String::as_str).unwrap_or("")
            ),
            Source::Fetched(origin, _) => origin.clone(),
        }
    }

    /// The file, for a file source.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Source::File(p) => Some(p),
            _ => None,
        }
    }

    /// The environment variable, for an env source.
    pub fn env_var(&self) -> Option<&str> {
        match self {
            Source::Env(v) => Some(v),
            _ => None,
        }
    }

    /// Reads the bytes. The buffer zeroizes on drop: it may be a key. Messages never quote
    /// the content (nor a command's stdout).
    pub fn read(&self, command_timeout: Duration) -> Result<Zeroizing<Vec<u8>>, String> {
        // The first Ctrl-C ends a run that is still reading its input (and kills a command).
        crate::interrupt::watch_local_phase();
        match self {
            Source::File(path) => read_file(path),
            Source::Env(var) => read_env(var),
            Source::Command(argv) => run_command(argv, command_timeout),
            Source::Fetched(_, bytes) => Ok(Zeroizing::new(bytes.expose().to_vec())),
        }
    }
}

/// Reads a regular file of at most [`MAX_INPUT`] bytes. Anything else (a FIFO, a device, a
/// socket, a directory) is refused before it is opened: opening a FIFO blocks until a writer
/// comes, and a device may never end.
pub fn read_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    regular_file(&meta)?;
    // Non-blocking, should the path turn into a FIFO after that look: the open returns at once
    // and the type is checked again on what was opened. Reads of a regular file never block.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("cannot read: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot read: {e}"))?;
    regular_file(&meta)?;
    if meta.len() > MAX_INPUT as u64 {
        return Err(too_large(meta.len() as usize));
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(meta.len() as usize + 1));
    file.take(MAX_INPUT as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() > MAX_INPUT {
        return Err(too_large(bytes.len()));
    }
    Ok(bytes)
}

/// `Ok` for a regular file; else what it is instead.
fn regular_file(meta: &std::fs::Metadata) -> Result<(), String> {
    let kind = meta.file_type();
    let what = if kind.is_file() {
        return Ok(());
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO (named pipe)"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else {
        "not a regular file"
    };
    Err(format!(
        "is {what}, not a regular file; certctl reads material only from regular files (a pipe or a device can block or never end): use a `*_command` or `*_env` source for anything else"
    ))
}

fn too_large(len: usize) -> String {
    format!(
        "is {len} bytes; certificate and key inputs are at most 1 MiB (is this the right file?)"
    )
}

fn read_env(var: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    let value = std::env::var_os(var).ok_or("the environment variable is not set")?;
    let bytes = Zeroizing::new(value.into_encoded_bytes());
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err("the environment variable is empty".into());
    }
    if bytes.len() > MAX_INPUT {
        return Err(too_large(bytes.len()));
    }
    // CI systems often store a PEM with literal `\n` in a one-line secret.
    if bytes.contains(&b'\n') || !bytes.windows(2).any(|w| w == b"\\n") {
        return Ok(bytes);
    }
    let mut unescaped = Zeroizing::new(Vec::with_capacity(bytes.len()));
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(b"\\n") {
            unescaped.push(b'\n');
            i += 2;
        } else {
            unescaped.push(bytes[i]);
            i += 1;
        }
    }
    Ok(unescaped)
}

/// Runs `argv` without a shell; stdout is the PEM. stdout never appears in a message, even
/// when the command fails: it may hold part of a key.
fn run_command(argv: &[String], timeout: Duration) -> Result<Zeroizing<Vec<u8>>, String> {
    let program = argv.first().map(String::as_str).unwrap_or("");
    let options = localcmd::Options {
        timeout,
        max_stdout: MAX_INPUT + 1,
        ..localcmd::Options::default()
    };
    let done = match localcmd::run(argv, &options) {
        Ok(done) => done,
        Err(localcmd::RunError::TimedOut { after, stderr, .. }) => {
            return Err(format!(
                "`{program}` did not finish within {} and was killed; {}",
                format_duration(after),
                said(&stderr)
            ));
        }
        Err(e) => return Err(e.to_string()),
    };
    if !done.status.success() {
        return Err(format!(
            "`{program}` failed ({}); {}",
            done.status,
            said(&done.stderr)
        ));
    }
    if done.stdout.len() > MAX_INPUT {
        return Err(too_large(done.stdout.len()));
    }
    if done.stdout.iter().all(u8::is_ascii_whitespace) {
        return Err(format!(
            "`{program}` printed nothing on stdout; it must print PEM"
        ));
    }
    Ok(done.stdout)
}

fn said(stderr: &[u8]) -> String {
    let stderr = crate::material::sanitize_one_line(stderr, 500);
    if stderr.is_empty() {
        "no message on stderr".to_string()
    } else {
        format!("stderr: {stderr}")
    }
}

/// The shortest exact spelling of `d` in the inventory's units: `500ms`, `30s`, `2m`, `1h`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0 => "0s".into(),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}
