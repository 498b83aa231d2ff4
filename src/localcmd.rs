//! Local commands on the controller: certificate sources (`cert_command`, `key_command`, …)
//! and notifiers. No shell: an argv is run as given, in its own process group, with a time
//! limit; on timeout the whole group is killed. Output is captured up to a bound; stdout is
//! kept in a buffer that zeroizes on drop (it may be a private key).
//!
//! Owns nothing else: what the output means is the caller's business, and so is what may be
//! shown of it (never stdout of a source command).

use std::io::Write as _;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

/// What a finished command left.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Zeroizing<Vec<u8>>,
    pub stderr: Vec<u8>,
    /// stdout was longer than the bound; only the bound was kept.
    pub stdout_truncated: bool,
    pub duration: Duration,
}

/// Why a command did not finish.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the command is empty")]
    Empty,
    #[error("could not run `{program}`: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    /// Killed (with its whole process group) after `after`; `stderr` is what it said so far.
    #[error("`{program}` did not finish within {after:?} and was killed")]
    TimedOut {
        program: String,
        after: Duration,
        stderr: Vec<u8>,
    },
    #[error("waiting for `{program}`: {source}")]
    Wait {
        program: String,
        source: std::io::Error,
    },
}

/// How to run one command.
#[derive(Debug, Clone, Default)]
pub struct Options<'a> {
    /// Written to the command's stdin, which is then closed; `None`: stdin is /dev/null.
    pub stdin: Option<&'a [u8]>,
    /// Added to (or replacing in) the inherited environment.
    pub env: Vec<(String, String)>,
    /// Removed from the inherited environment (secrets certctl itself was given).
    pub env_remove: Vec<String>,
    pub timeout: Duration,
    /// At most this many bytes of stdout are kept (and of stderr: 64 KiB).
    pub max_stdout: usize,
}

const MAX_STDERR: usize = 64 * 1024;
/// After the command exits, how long its output pipes may stay open (a background child
/// that inherited them) before we stop reading.
const DRAIN: Duration = Duration::from_millis(500);

/// Runs `argv` to completion or until `options.timeout`.
pub fn run(argv: &[String], options: &Options<'_>) -> Result<Finished, RunError> {
    use std::os::unix::process::CommandExt as _;
    let (program, args) = argv.split_first().ok_or(RunError::Empty)?;
    let started = Instant::now();
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(if options.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills `sh -c 'a | b'` and all it started.
        .process_group(0);
    for var in &options.env_remove {
        command.env_remove(var);
    }
    command.envs(options.env.iter().map(|(k, v)| (k, v)));
    let mut child = command.spawn().map_err(|source| RunError::Spawn {
        program: program.clone(),
        source,
    })?;
    let _registered = Registered::new(&child);

    if let (Some(mut pipe), Some(input)) = (child.stdin.take(), options.stdin) {
        let input = input.to_vec();
        // A command that does not read its stdin closes the pipe: that is not an error.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let stdout = reader(child.stdout.take(), options.max_stdout);
    let stderr = reader(child.stderr.take(), MAX_STDERR);

    let deadline = started + options.timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let pid = rustix::process::Pid::from_child(&child);
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                let _ = child.kill();
                let _ = child.wait();
                let (stderr, _) = stderr.recv_timeout(DRAIN).unwrap_or_default();
                return Err(RunError::TimedOut {
                    program: program.clone(),
                    after: options.timeout,
                    stderr,
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(source) => {
                return Err(RunError::Wait {
                    program: program.clone(),
                    source,
                });
            }
        }
    };
    let (out, stdout_truncated) = stdout.recv_timeout(DRAIN).unwrap_or_default();
    let (err, _) = stderr.recv_timeout(DRAIN).unwrap_or_default();
    Ok(Finished {
        status,
        stdout: Zeroizing::new(out),
        stderr: err,
        stdout_truncated,
        duration: started.elapsed(),
    })
}

/// A running command's process group, known to [`crate::interrupt`] (which kills it when
/// an interrupt ends the run before anything is touched) until the command is reaped.
struct Registered(Option<i32>);

impl Registered {
    fn new(child: &std::process::Child) -> Self {
        let pid = i32::try_from(child.id()).ok();
        if let Some(pid) = pid {
            crate::interrupt::command_started(pid);
        }
        Self(pid)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            crate::interrupt::command_ended(pid);
        }
    }
}

/// Reads a pipe to its end on a thread, keeping at most `max` bytes; sends (bytes, truncated).
/// The buffer that held the bytes is zeroized when it is replaced.
fn reader(
    pipe: Option<impl std::io::Read + Send + 'static>,
    max: usize,
) -> mpsc::Receiver<(Vec<u8>, bool)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut truncated = false;
        if let Some(mut pipe) = pipe {
            let mut chunk = Zeroizing::new([0u8; 8192]);
            loop {
                match pipe.read(&mut chunk[..]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let room = max.saturating_sub(kept.len());
                        if n > room {
                            truncated = true;
                        }
                        extend_zeroizing(&mut kept, &chunk[..n.min(room)]);
                    }
                }
            }
        }
        let _ = tx.send((kept, truncated));
    });
    rx
}

/// Appends without leaving a copy of the old contents in a freed buffer.
fn extend_zeroizing(buf: &mut Vec<u8>, more: &[u8]) {
    if buf.len() + more.len() > buf.capacity() {
        let mut grown = Vec::with_capacity((buf.len() + more.len()).max(buf.capacity() * 2));
        grown.extend_from_slice(buf);
        let old = std::mem::replace(buf, grown);
        drop(Zeroizing::new(old));
    }
    buf.extend_from_slice(more);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    fn options(timeout_ms: u64) -> Options<'static> {
        Options {
            timeout: Duration::from_millis(timeout_ms),
            max_stdout: 1024,
            ..Options::default()
        }
    }

    #[test]
    fn captures_stdout_stderr_and_status() {
        let done = run(
            &argv(&["sh", "-c", "echo out; echo err >&2; exit 3"]),
            &options(5_000),
        )
        .unwrap();
        assert_eq!(&done.stdout[..], b"out\n");
        assert_eq!(done.stderr, b"err\n");
        assert_eq!(done.status.code(), Some(3));
    }

    #[test]
    fn stdin_and_environment_reach_the_command() {
        let mut o = options(5_000);
        o.stdin = Some(b"hello");
        o.env = vec![("CERTCTL_T".into(), "v".into())];
        o.env_remove = vec!["HOME".into()];
        let done = run(
            &argv(&["sh", "-c", "cat; echo \" $CERTCTL_T ${HOME:-unset}\""]),
            &o,
        )
        .unwrap();
        assert_eq!(&done.stdout[..], b"hello v unset\n");
    }

    #[test]
    fn a_timeout_kills_the_whole_group() {
        let started = Instant::now();
        let err = run(
            &argv(&["sh", "-c", "echo said >&2; sleep 30 | cat"]),
            &options(300),
        )
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        match err {
            RunError::TimedOut { stderr, .. } => assert_eq!(stderr, b"said\n"),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn output_is_bounded_and_a_missing_program_is_named() {
        let mut o = options(5_000);
        o.max_stdout = 10;
        let done = run(&argv(&["sh", "-c", "yes | head -c 100000"]), &o).unwrap();
        assert_eq!(done.stdout.len(), 10);
        assert!(done.stdout_truncated);
        let err = run(&argv(&["/nonexistent/prog"]), &o).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/prog"), "{err}");
        assert!(matches!(run(&[], &o), Err(RunError::Empty)));
    }
}
