//! Asking a person for a key's passphrase on the controlling terminal, without echo.
//!
//! The crate forbids `unsafe`, so the terminal is not switched with termios calls: `stty`
//! (run with the terminal as its stdin) saves the settings, turns echo off, and restores them
//! afterwards, also when reading fails. Echo is off BEFORE the prompt is written, so nothing
//! typed after the prompt appears can be echoed. Known limit: a signal that kills the process
//! while it waits (Ctrl-C with no handler installed) leaves echo off, as with any program that
//! dies mid-prompt; `stty sane` fixes the terminal.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::process::{Command, Stdio};

use zeroize::Zeroizing;

use crate::secret::Secret;

/// Writes `question` to `/dev/tty` and reads one line from it with echo off. The line ending
/// is not part of the answer.
pub(super) fn passphrase(question: &str) -> std::io::Result<Secret> {
    let mut tty = OpenOptions::new().read(true).write(true).open("/dev/tty")?;
    let saved = stty(&tty, &["-g"])?;
    let restore = Restore {
        tty: tty.try_clone()?,
        saved: saved.trim().to_owned(),
    };
    stty(&tty, &["-echo"])?;
    tty.write_all(question.as_bytes())?;
    tty.flush()?;
    // Byte by byte: nothing past the newline is consumed, and no buffer keeps a copy.
    let mut line = Zeroizing::new(Vec::with_capacity(256));
    let mut byte = [0u8; 1];
    loop {
        match tty.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    drop(restore);
    // The Enter the person typed was not echoed.
    let _ = tty.write_all(b"\n");
    Ok(Secret::new(std::mem::take(&mut *line)))
}

/// Runs `stty ARGS` on the terminal; returns its stdout.
fn stty(tty: &File, args: &[&str]) -> std::io::Result<String> {
    let out = Command::new("stty")
        .args(args)
        .stdin(tty.try_clone()?)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "stty {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Puts the terminal settings back when dropped.
struct Restore {
    tty: File,
    saved: String,
}

impl Drop for Restore {
    fn drop(&mut self) {
        let restored = if self.saved.is_empty() {
            stty(&self.tty, &["echo"])
        } else {
            stty(&self.tty, &[self.saved.as_str()])
        };
        if let Err(e) = restored {
            tracing::warn!("could not restore the terminal settings: {e}; run `stty sane`");
        }
    }
}
