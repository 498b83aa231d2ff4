//! Running a command: one exec channel per command, standard input written while output is
//! read, stdout and stderr collected (the tail of each, at most [`OUTPUT_CAP`]), and the exit
//! status — a command that ends without one is a failure, never a success.
//!
//! Not here: what the command is (callers quote it with [`super::quote`]) or the `sudo -n`
//! wrapping (`sudo.rs` decides it, this file only runs the line).

use std::sync::atomic::Ordering;

use russh::{ChannelMsg, ChannelReadHalf, Sig};
use tokio::time::{Instant, timeout_at};

use super::{ExecOutput, Session, SshError, SshErrorKind, quote};

/// Exec channels open at once on one connection. OpenSSH's `MaxSessions` defaults to 10 per
/// connection; 8 leaves room for the SFTP channel and a margin, and more callers simply queue.
pub(super) const MAX_EXEC_CHANNELS: usize = 8;
/// Each of stdout and stderr keeps at most this much (the tail) of a command's output.
pub(super) const OUTPUT_CAP: usize = 1 << 20;

impl Session {
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
            let wrapped = super::sudo::wrap(argv.iter().map(String::as_str));
            return self.run(&wrapped, &label, None).await;
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
            let wrapped = super::sudo::wrap(["sh", "-c", script.as_str()]);
            return self.run(&wrapped, &label, stdin).await;
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

    /// The next command's channel opens while the next command runs, so the one after it
    /// starts without the channel-open round trip. For a caller that knows another command
    /// follows (an unused spare costs the target one channel open).
    pub fn prefetch_channel(&self) {
        self.prefetch.store(true, Ordering::Relaxed);
    }

    /// Runs one command line on its own channel. `label` names it in errors.
    pub(super) async fn run(
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
        let prefetch = self.prefetch.swap(false, Ordering::Relaxed);
        let spare = self.spare.lock().expect("spare channel lock").take();
        let channel = match spare {
            Some(channel) => channel,
            None => match timeout_at(deadline, self.handle.channel_open_session()).await {
                Err(_) => return Err(self.command_timeout_error(label)),
                Ok(Err(e)) => return Err(self.channel_error(label, &e)),
                Ok(Ok(channel)) => channel,
            },
        };
        // The next command's channel opens while this one runs (see `prefetch_channel`).
        let next = async {
            if !prefetch {
                return;
            }
            if let Ok(Ok(channel)) = timeout_at(deadline, self.handle.channel_open_session()).await
            {
                *self.spare.lock().expect("spare channel lock") = Some(channel);
            }
        };
        let (result, ()) =
            tokio::join!(self.exec_on(channel, command, label, stdin, deadline), next);
        result
    }

    /// Runs `command` on an open channel until it closes or `deadline` passes.
    async fn exec_on(
        &self,
        channel: russh::Channel<russh::client::Msg>,
        command: &str,
        label: &str,
        stdin: Option<&[u8]>,
        deadline: Instant,
    ) -> Result<ExecOutput, SshError> {
        let (mut reader, writer) = channel.split();
        let work = async {
            writer
                .exec(true, command.as_bytes())
                .await
                .map_err(|e| self.channel_error(label, &e))?;
            Ok::<_, SshError>(
                self.feed_and_collect(&writer, &mut reader, label, stdin)
                    .await,
            )
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
                return Err(self.command_timeout_error(label));
            }
        };
        self.outcome(collected, label)
    }

    /// Writes `stdin` (then EOF) while reading the channel until it closes: output is read
    /// while stdin is written (no deadlock on full windows); once the channel closes, unsent
    /// stdin no longer matters.
    async fn feed_and_collect(
        &self,
        writer: &russh::ChannelWriteHalf<russh::client::Msg>,
        reader: &mut ChannelReadHalf,
        label: &str,
        stdin: Option<&[u8]>,
    ) -> Collected {
        let input = async {
            if let Some(data) = stdin {
                writer.data(data).await?;
            }
            writer.eof().await
        };
        let collect = collect(reader);
        tokio::pin!(input, collect);
        let mut input_done = false;
        loop {
            tokio::select! {
                sent = &mut input, if !input_done => {
                    input_done = true;
                    if let Err(e) = sent {
                        tracing::debug!(host = %self.endpoint.host, command = label, "stdin not fully sent: {e}");
                    }
                }
                collected = &mut collect => break collected,
            }
        }
    }

    /// What the channel delivered, as the command's result: an exit status is required.
    fn outcome(&self, collected: Collected, label: &str) -> Result<ExecOutput, SshError> {
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
                Err(self.error(SshErrorKind::NoExitStatus {
                    command: label.to_owned(),
                    reason,
                }))
            }
        }
    }

    fn command_timeout_error(&self, label: &str) -> SshError {
        self.error(SshErrorKind::CommandTimeout {
            timeout: self.command_timeout,
            command: label.to_owned(),
        })
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

/// The first non-empty line of remote output, without control characters, at most 300
/// characters: remote text goes into an error message.
pub(super) fn first_line(bytes: &[u8]) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
