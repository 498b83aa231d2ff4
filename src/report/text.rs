//! The words and lines both progress printers use, so the live view and the plain CI log say
//! the same thing: cargo-style right-aligned verbs, short fingerprints, durations.
//!
//! Pure functions returning `String`s; nothing here writes anywhere.

use std::fmt::Write as _;

use super::sanitize::{sanitize, sanitize_line};
use super::{Status, Step, StepReport, StepStatus, TargetReport};
use crate::material::Fingerprint;

/// Width of the right-aligned verb column (cargo uses 12).
pub(crate) const VERB_WIDTH: usize = 12;

/// Continuation lines start under the text after the verb.
const INDENT: &str = "             ";

/// Whether to colour status words; decided once per printer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Paint {
    Plain,
    Colour,
}

impl Paint {
    /// Colour exactly when [`super::term::configure`] allowed it (`--color`, `NO_COLOR`,
    /// `CLICOLOR_FORCE`, a terminal that is not `dumb`).
    pub(crate) fn from_settings() -> Self {
        if super::term::settings().colour {
            Paint::Colour
        } else {
            Paint::Plain
        }
    }

    /// `word` right-aligned in the verb column; coloured by `status` when painting.
    fn verb(self, word: &str, status: Option<Status>) -> String {
        let padded = format!("{word:>VERB_WIDTH$}");
        match (self, status) {
            (Paint::Colour, Some(status)) => {
                let code = colour_code(status);
                // Colour the word only, not the padding.
                let pad = padded.len() - word.len();
                format!("{}\x1b[{code}m{word}\x1b[0m", &padded[..pad])
            }
            _ => padded,
        }
    }
}

/// SGR code for a status: green for success, yellow for "look at this", bold red for failure.
fn colour_code(status: Status) -> &'static str {
    match status {
        Status::Deployed
        | Status::Unchanged
        | Status::Reloaded
        | Status::Ok
        | Status::WouldChange => "32",
        Status::RolledBack | Status::Skipped => "33",
        Status::WouldFail | Status::Failed | Status::Unreachable | Status::Mismatch => "1;31",
        Status::Expiring => "1;33",
        Status::RollbackFailed => "1;7;31",
    }
}

/// `AB:CD:EF:01…` — enough to tell certificates apart at a glance; the JSON has the full value.
pub(crate) fn short_fingerprint(fp: &Fingerprint) -> String {
    let mut out = String::with_capacity(12);
    for (i, byte) in fp.0.iter().take(4).enumerate() {
        if i > 0 {
            out.push(':');
        }
        let _ = write!(out, "{byte:02X}");
    }
    out.push('…');
    out
}

pub(crate) fn short_or_dash(fp: Option<&Fingerprint>) -> String {
    fp.map_or_else(|| "-".to_string(), short_fingerprint)
}

/// `0.21s`, `12.3s`, `2m05s`.
pub(crate) fn duration(ms: u64) -> String {
    match ms {
        0..10_000 => format!("{}.{:02}s", ms / 1000, ms % 1000 / 10),
        10_000..60_000 => format!("{}.{}s", ms / 1000, ms % 1000 / 100),
        _ => format!("{}m{:02}s", ms / 60_000, ms % 60_000 / 1000),
    }
}

/// Text lines after the first, indented under the text column.
fn push_continuation(out: &mut String, lines: std::str::Lines<'_>) {
    for line in lines {
        out.push('\n');
        if !line.is_empty() {
            out.push_str(INDENT);
            out.push_str(line);
        }
    }
}

/// Splits sanitised text into its first line and the rest.
fn first_and_rest(text: &str) -> (&str, std::str::Lines<'_>) {
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("");
    (first, lines)
}

/// `     connect web-1` (verbose only).
pub(crate) fn step_started(target: &str, step: Step) -> String {
    format!(
        "{:>VERB_WIDTH$} {}: started",
        step.as_str(),
        sanitize_line(target)
    )
}

/// One finished step. Failures: `      failed web-1 reload: <first line> (0.05s)`, fingerprints
/// short; the whole text is the summary's footer (`-v` adds it here too). Successes show their
/// detail only when `verbose`.
pub(crate) fn step_finished(
    target: &str,
    step: &StepReport,
    verbose: bool,
    paint: Paint,
) -> String {
    let target = sanitize_line(target);
    let name = step.step.as_str();
    let took = duration(step.duration_ms);
    let detail = step
        .detail
        .as_deref()
        .map(|d| human(d, verbose))
        .unwrap_or_default();
    let (first, rest) = first_and_rest(&detail);
    let mut out = match step.status {
        StepStatus::Failed => {
            let verb = paint.verb("failed", Some(Status::Failed));
            if first.is_empty() {
                format!("{verb} {target} {name} ({took})")
            } else {
                format!("{verb} {target} {name}: {} ({took})", clip(first))
            }
        }
        StepStatus::Skipped if !first.is_empty() => {
            format!("{name:>VERB_WIDTH$} {target}: skipped: {first}")
        }
        StepStatus::Skipped => format!("{name:>VERB_WIDTH$} {target}: skipped"),
        StepStatus::Ok => format!("{name:>VERB_WIDTH$} {target}: ok ({took})"),
    };
    match step.status {
        StepStatus::Skipped => push_continuation(&mut out, rest),
        StepStatus::Failed if verbose => push_continuation(&mut out, rest),
        StepStatus::Ok if verbose => push_continuation(&mut out, detail.lines()),
        StepStatus::Failed | StepStatus::Ok => {}
    }
    out
}

/// Sanitised and tidied text for a human line: short fingerprints unless `-v`.
pub(crate) fn human(text: &str, verbose: bool) -> String {
    let clean = super::tidy::tidy(&sanitize(text.as_bytes()));
    if verbose {
        clean
    } else {
        super::tidy::short_fingerprints(&clean)
    }
}

/// A progress line's message, at most [`CLIP`] characters: the full text is in the footer.
fn clip(line: &str) -> std::borrow::Cow<'_, str> {
    if line.chars().count() <= CLIP {
        line.into()
    } else {
        let cut: String = line.chars().take(CLIP - 1).collect();
        format!("{}…", cut.trim_end()).into()
    }
}

/// Longest message on a progress line.
const CLIP: usize = 100;

/// One finished target: `    deployed web-1: now serving AB:CD:EF:01… (1.20s)`. A failure
/// says what happened in a few words; its error is printed once, whole, in the summary's
/// footer.
pub(crate) fn target_finished(report: &TargetReport, paint: Paint) -> String {
    let verb = paint.verb(report.status.as_str(), Some(report.status));
    let name = sanitize_line(&report.name);
    let what = outcome(report);
    if report.duration_ms > 0 {
        format!("{verb} {name}: {what} ({})", duration(report.duration_ms))
    } else {
        format!("{verb} {name}: {what}")
    }
}

/// The step that failed first, if any.
fn failed_step(report: &TargetReport) -> Option<&'static str> {
    report
        .steps
        .iter()
        .find(|s| s.status == StepStatus::Failed)
        .map(|s| s.step.as_str())
}

/// What a target's status means, when there is no error message to show instead.
fn outcome(report: &TargetReport) -> String {
    let new = short_or_dash(report.new_fingerprint.as_ref());
    let served = short_or_dash(
        report
            .served_fingerprint
            .as_ref()
            .or(report.new_fingerprint.as_ref()),
    );
    match report.status {
        Status::Deployed => format!("now serving {served}"),
        Status::Unchanged => format!("already serving {served}"),
        Status::Reloaded => format!("files were current; reloaded, now serving {served}"),
        Status::WouldChange => {
            let changed = report
                .files
                .iter()
                .filter(|f| f.action != "unchanged")
                .count();
            let s = if changed == 1 { "" } else { "s" };
            format!("would change {changed} file{s}, then serve {new}")
        }
        Status::Ok => format!("serving {served}"),
        Status::Expiring => format!("serving {served}, which expires soon"),
        Status::Mismatch => match &report.served_fingerprint {
            Some(fp) => format!("serving {}, expected {new}", short_fingerprint(fp)),
            None => format!("serving nothing, expected {new}"),
        },
        Status::WouldFail => match failed_step(report) {
            Some(step) => format!("{step} failed; nothing was changed (see below)"),
            None => "would fail; nothing was changed (see below)".to_string(),
        },
        Status::Failed => match failed_step(report) {
            Some(step) => format!("{step} failed (see below)"),
            None => "failed (see below)".to_string(),
        },
        Status::RolledBack => match failed_step(report) {
            Some(step) => format!("{step} failed; rolled back to the previous files"),
            None => "rolled back to the previous files".to_string(),
        },
        Status::RollbackFailed => {
            "ROLLBACK FAILED: a person must look at this target (see below)".to_string()
        }
        Status::Skipped => "not started (see below)".to_string(),
        Status::Unreachable => "could not connect; nothing was changed (see below)".to_string(),
    }
}

/// `warning: web-1: certificate expires in 3 days`.
pub(crate) fn warning(target: Option<&str>, message: &str) -> String {
    let message = sanitize(message.as_bytes());
    let (first, rest) = first_and_rest(&message);
    let mut out = match target {
        Some(target) => format!("warning: {}: {first}", sanitize_line(target)),
        None => format!("warning: {first}"),
    };
    for line in rest {
        out.push_str("\n         ");
        out.push_str(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(0), "0.00s");
        assert_eq!(duration(210), "0.21s");
        assert_eq!(duration(9_999), "9.99s");
        assert_eq!(duration(12_345), "12.3s");
        assert_eq!(duration(125_000), "2m05s");
    }

    #[test]
    fn short_fingerprint_is_four_bytes() {
        let fp = Fingerprint([0xAB; 32]);
        assert_eq!(short_fingerprint(&fp), "AB:AB:AB:AB…");
        assert_eq!(short_or_dash(None), "-");
    }

    #[test]
    fn verbs_are_right_aligned_and_only_the_word_is_coloured() {
        assert_eq!(
            Paint::Plain.verb("deployed", Some(Status::Deployed)),
            "    deployed"
        );
        assert_eq!(
            Paint::Colour.verb("deployed", Some(Status::Deployed)),
            "    \x1b[32mdeployed\x1b[0m"
        );
        assert_eq!(Paint::Colour.verb("reload", None), "      reload");
    }
}
