//! The printer for a stderr that is not a terminal (CI logs, `2> file`): one line per finished
//! step and per finished target, nothing redrawn, no escape code unless colour was asked for.

use std::io::Write;
use std::sync::Mutex;

use super::text::{self, Paint};
use super::{Event, Reporter};

/// Writes one plain line (plus indented detail) per event to any writer.
///
/// Each event is formatted first and written with a single `write_all` under the lock, so lines
/// from concurrent targets never interleave.
pub struct PlainReporter {
    out: Mutex<Box<dyn Write + Send>>,
    verbose: u8,
    paint: Paint,
}

impl PlainReporter {
    /// A printer writing to `out` (tests pass a shared buffer). `verbose` ≥ 1 adds step-start
    /// lines and the detail of successful steps.
    pub fn new(out: Box<dyn Write + Send>, verbose: u8) -> Self {
        PlainReporter {
            out: Mutex::new(out),
            verbose,
            paint: Paint::Plain,
        }
    }

    /// A printer writing to stderr; status words coloured only when [`super::term`] allows it
    /// (`--color always`, `CLICOLOR_FORCE`), never by default into a pipe.
    pub fn stderr(verbose: u8) -> Self {
        let mut plain = Self::new(Box::new(std::io::stderr()), verbose);
        plain.paint = Paint::from_settings();
        plain
    }

    fn line(&self, mut text: String) {
        text.push('\n');
        // A poisoned lock only means another thread panicked mid-write; keep printing.
        let mut out = self
            .out
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Progress is best effort: a closed stderr must not fail the deploy.
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }
}

impl Reporter for PlainReporter {
    fn event(&self, event: Event) {
        let verbose = self.verbose > 0;
        match event {
            Event::StepStarted { target, step } => {
                if verbose {
                    self.line(text::step_started(&target, step));
                }
            }
            Event::StepFinished { target, step } => {
                self.line(text::step_finished(&target, &step, verbose, self.paint));
            }
            Event::TargetFinished { report } => {
                self.line(text::target_finished(&report, self.paint))
            }
            Event::Warning { target, message } => {
                self.line(text::warning(target.as_deref(), &message))
            }
        }
    }
}
