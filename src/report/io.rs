//! The process's streams: the JSON report and text on stdout, text on stderr above a live
//! view when one is drawing, and a writer for log lines. The only functions in the crate that
//! write to stdout and stderr (the progress printers aside).

use std::io::Write;
use std::sync::Mutex;

use indicatif::MultiProgress;

use super::RunReport;

/// Writes the report as pretty JSON plus a newline. A closed pipe (`certctl … | head`) is not
/// an error: the reader has gone away on purpose.
pub fn write_json(report: &RunReport, out: &mut impl Write) -> std::io::Result<()> {
    let mut json = serde_json::to_vec_pretty(report).map_err(std::io::Error::other)?;
    json.push(b'\n');
    ignore_broken_pipe(out.write_all(&json).and_then(|()| out.flush()))
}

fn ignore_broken_pipe(result: std::io::Result<()>) -> std::io::Result<()> {
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// The live view currently drawing on stderr, if any: [`print_stderr`] prints above it.
static LIVE_VIEW: Mutex<Option<MultiProgress>> = Mutex::new(None);

pub(super) fn set_live_view(view: Option<MultiProgress>) {
    *LIVE_VIEW
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = view;
}

pub(super) fn with_newline(text: &str) -> std::borrow::Cow<'_, str> {
    if text.ends_with('\n') {
        text.into()
    } else {
        format!("{text}\n").into()
    }
}

/// Prints `text` to stderr, adding a newline unless it ends with one. While a live view is
/// drawing, the text goes above the bars. Errors (a closed stderr) are ignored: there is
/// nowhere left to report them.
pub fn print_stderr(text: &str) {
    let live = LIVE_VIEW
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    match live {
        Some(view) if !view.is_hidden() => {
            let _ = view.println(text.strip_suffix('\n').unwrap_or(text));
        }
        _ => {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(with_newline(text).as_bytes());
            let _ = err.flush();
        }
    }
}

/// Prints `text` to stdout, adding a newline unless it ends with one. A closed pipe counts as
/// success; other errors (a full disk behind a redirect) are returned.
pub fn print_stdout(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    ignore_broken_pipe(
        out.write_all(with_newline(text).as_bytes())
            .and_then(|()| out.flush()),
    )
}

/// A `tracing_subscriber` writer (`.with_writer(report::stderr_writer)`) so log lines go
/// through [`print_stderr`] and do not tear the live view.
pub fn stderr_writer() -> StderrWriter {
    StderrWriter
}

/// See [`stderr_writer`].
#[derive(Debug, Clone, Copy, Default)]
pub struct StderrWriter;

impl Write for StderrWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        print_stderr(&String::from_utf8_lossy(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
