//! The remote shell scripts (files in `src/deploy/scripts/`, loaded with `include_str!`) and
//! the pure functions that read what they print. Every runtime value reaches a script as a
//! quoted argument ([`crate::ssh::quote::Script::cmd`]); the script text itself is fixed.
//!
//! Output conventions, shared by all scripts:
//! - `\x1eT NAME SECONDS`: the remote clock ([`clock_marks`]), so steps that share one
//!   command still get their own durations;
//! - `\x1eC PHASE INDEX` (stdout and stderr) before a connector command, and `\x1eX PHASE
//!   INDEX STATUS` when it failed ([`failed_command`], [`command_output`]);
//! - framed values (`TAG FIELDS… TEXT\x1e\n`) where TEXT may hold newlines ([`records`]).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::ssh::ExecOutput;

/// Started by every housekeeping script (never before a connector's own commands, which run
/// as they would on their own): unset variables are errors, new files private.
pub(super) const STRICT: &str = "set -u\numask 077\nfail=0\n";
/// Ignores hang-ups, interrupts and broken pipes: a change under way finishes even when the
/// controller is killed or the connection drops.
pub(super) const NO_HANGUP: &str = "trap '' HUP INT TERM PIPE\n";

/// A script file as sent: its comment lines and blank lines dropped (they document the file
/// here; on the wire they only cost bytes and show up in the target's process listings).
/// Several files make one script when they always travel together.
macro_rules! script_file {
    ($name:ident, $($file:literal),+) => {
        pub(super) static $name: std::sync::LazyLock<&'static str> =
            std::sync::LazyLock::new(|| strip_comments(concat!($(include_str!($file)),+)));
    };
}

script_file!(CLOCK, "scripts/clock.sh");
script_file!(LOCK, "scripts/lock.sh", "scripts/ids.sh");
// A bind-mounted live file is found by inspect, written in place by the swap and a restore.
script_file!(INSPECT, "scripts/inspect.sh", "scripts/mounts.sh");
script_file!(JOURNAL, "scripts/journal.sh");
script_file!(BACKUP, "scripts/backup.sh");
script_file!(SWAP, "scripts/swap.sh", "scripts/inplace.sh");
script_file!(STAGE, "scripts/stage.sh", "scripts/ids.sh");
script_file!(RESTORE, "scripts/restore.sh", "scripts/inplace.sh");
script_file!(CLEANUP, "scripts/cleanup.sh");
script_file!(UNDO, "scripts/undo.sh");
script_file!(FACTS, "scripts/facts.sh");
script_file!(SNAPSHOT, "scripts/snapshot.sh");
script_file!(BINDING, "scripts/binding.sh");

/// `text` without its comment lines (`#` first on the line) and blank lines; leaked once per
/// script, so the result lives as long as the program, as `include_str!` text does.
fn strip_comments(text: &'static str) -> &'static str {
    let kept: String = text
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            !t.is_empty() && !t.starts_with('#')
        })
        .map(|l| format!("{l}\n"))
        .collect();
    Box::leak(kept.into_boxed_str())
}

/// The prefix of a clock line.
const CLOCK_MARK: &str = "\u{1e}T ";

/// The remote clock marks (`T NAME SECONDS`) in a script's output, by name (the last of a
/// name wins).
pub(super) fn clock_marks(stdout: &str) -> BTreeMap<String, f64> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix(CLOCK_MARK))
        .filter_map(|l| {
            let (name, t) = l.split_once(' ')?;
            let t: f64 = t.trim().replace(',', ".").parse().ok()?;
            Some((name.to_string(), t))
        })
        .collect()
}

/// `text` without its clock lines.
pub(super) fn without_clock(text: &str) -> String {
    text.split_inclusive('\n')
        .filter(|l| !l.starts_with(CLOCK_MARK))
        .collect()
}

/// How long the remote part between marks `from` and `to` took, when both were printed.
pub(super) fn remote_span(marks: &BTreeMap<String, f64>, from: &str, to: &str) -> Option<Duration> {
    let span = marks.get(to)? - marks.get(from)?;
    (span.is_finite() && span >= 0.0).then(|| Duration::from_secs_f64(span))
}

/// The first connector command that failed (`\x1eX PHASE INDEX STATUS`): phase, index, status.
pub(super) fn failed_command(stdout: &str) -> Option<(String, usize, u32)> {
    stdout.lines().find_map(|l| {
        let mut f = l.strip_prefix("\u{1e}X ")?.split(' ');
        let phase = f.next()?.to_string();
        let idx = f.next()?.parse().ok()?;
        let status = f.next().and_then(|s| s.parse().ok()).unwrap_or(1);
        Some((phase, idx, status))
    })
}

/// Live-configuration tests whose failure was attributed to broken live files (`\x1eA PHASE
/// INDEX STATUS`): (index, status) of the phase's commands.
pub(super) fn tolerated(stdout: &str, phase: &str) -> Vec<(usize, u32)> {
    let prefix = format!("\u{1e}A {phase} ");
    stdout
        .lines()
        .filter_map(|l| {
            let mut f = l.strip_prefix(&prefix)?.split(' ');
            Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
        })
        .collect()
}

/// One command's own output, cut from a combined script's output by its `\x1eC` marks, with
/// `status` (its own exit status, from its `\x1eX` or `\x1eA` line).
pub(super) fn command_output(out: &ExecOutput, phase: &str, idx: usize, status: u32) -> ExecOutput {
    let mark = format!("\u{1e}C {phase} {idx}\n");
    let after = |bytes: &[u8]| -> Vec<u8> {
        let text = String::from_utf8_lossy(bytes);
        let from = text.rfind(&mark).map(|i| i + mark.len()).unwrap_or(0);
        let rest = &text[from..];
        // Up to the next command's mark: what that one printed is its own.
        let rest = rest.split("\u{1e}C ").next().unwrap_or(rest);
        rest.lines()
            .filter(|l| !l.starts_with('\u{1e}'))
            .flat_map(|l| format!("{l}\n").into_bytes())
            .collect()
    };
    ExecOutput {
        stdout: after(&out.stdout),
        stderr: after(&out.stderr),
        status,
    }
}

/// What a combined script wrote after `mark` (a line of its own), without clock marks: the
/// part of its output that belongs to the second of two steps.
pub(super) fn after_mark(bytes: &[u8], mark: &str) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(bytes);
    let at = text.find(mark)?;
    Some(
        text[at + mark.len()..]
            .lines()
            .filter(|l| !l.starts_with(CLOCK_MARK))
            .flat_map(|l| format!("{l}\n").into_bytes())
            .collect(),
    )
}

/// `` `WHAT` exited N: OUTPUT `` for a command that exited non-zero; a script that exited 0
/// but did not do its job says `` `WHAT` failed: OUTPUT `` (never "exited 0"). Sanitised.
pub(super) fn command_failure(what: &str, out: &ExecOutput) -> String {
    let has_text = |b: &[u8]| b.iter().any(|b| !b.is_ascii_whitespace());
    // Some tools (keytool) report progress on stderr and the error on stdout: keep both.
    let text = match (has_text(&out.stderr), has_text(&out.stdout)) {
        (true, true) => format!(
            "{} {}",
            crate::report::sanitize(&out.stderr).trim(),
            crate::report::sanitize(&out.stdout).trim()
        ),
        (true, false) => crate::report::sanitize(&out.stderr),
        (false, _) => crate::report::sanitize(&out.stdout),
    };
    let text = text.trim();
    let how = if out.status == 0 {
        "failed".to_string()
    } else {
        format!("exited {}", out.status)
    };
    if text.is_empty() {
        format!("`{what}` {how} (no output)")
    } else {
        format!("`{what}` {how}: {text}")
    }
}

/// `; stderr: …` when a script wrote to stderr (sanitised), else nothing.
pub(super) fn stderr_note(out: &ExecOutput) -> String {
    let text = crate::report::sanitize(&out.stderr);
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!("; stderr: {text}")
    }
}

/// What the `R`/`B` lines of a restore, backup or cleanup script say went wrong, sanitised.
pub(super) fn tagged_failures(stdout: &str, tag: &str) -> String {
    let prefix = format!("{tag} ");
    let lines: Vec<String> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .filter(|l| !l.ends_with(" same"))
        .map(crate::report::sanitize_line)
        .collect();
    if lines.is_empty() {
        "no file named".into()
    } else {
        lines.join("; ")
    }
}

/// One record of a script's output: its tag, its fields, and the framed text if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Record<'t> {
    pub tag: &'t str,
    pub fields: Vec<&'t str>,
    pub text: Option<&'t str>,
}

/// Splits a script's output into records. A line is `TAG FIELD…`; a tag listed in `framed`
/// with its field count `n` is `TAG F1…Fn TEXT\x1e\n`, where TEXT may hold newlines. Lines
/// that start with `\x1e` (section marks) come back with that tag.
pub(super) fn records<'t>(
    text: &'t str,
    framed: &[(&str, usize)],
) -> Result<Vec<Record<'t>>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let line_end = rest.find('\n').unwrap_or(rest.len());
        let line = &rest[..line_end];
        let tag = line.split(' ').next().unwrap_or("");
        if let Some((_, n)) = framed.iter().find(|(t, _)| *t == tag) {
            // TAG, n fields, then the text up to the record separator.
            let mut at = tag.len();
            let mut fields = Vec::with_capacity(*n);
            for _ in 0..*n {
                let start = at + 1;
                let end = rest[start..]
                    .find([' ', '\u{1e}', '\n'])
                    .map(|i| start + i)
                    .ok_or_else(|| format!("a `{tag}` record is cut short"))?;
                fields.push(&rest[start..end]);
                at = end;
            }
            let start = (at + 1).min(rest.len());
            let end = rest[at..]
                .find("\u{1e}\n")
                .map(|i| at + i)
                .ok_or_else(|| format!("a `{tag}` record has no end"))?;
            out.push(Record {
                tag,
                fields,
                text: Some(&rest[start.min(end)..end]),
            });
            rest = &rest[end + 2..];
            continue;
        }
        if !line.trim().is_empty() {
            let mut words = line.split(' ');
            let tag = words.next().unwrap_or("");
            out.push(Record {
                tag,
                fields: words.collect(),
                text: None,
            });
        }
        rest = rest.get(line_end + 1..).unwrap_or("");
    }
    Ok(out)
}

/// The lines between `\x1e{name}` and `\x1eEND` (exclusive), if the section is there.
pub(super) fn section<'t>(text: &'t str, name: &str) -> Option<&'t str> {
    let start = format!("\u{1e}{name}\n");
    let at = text.find(&start)? + start.len();
    let end = text[at..].find("\u{1e}END\n").map(|i| at + i)?;
    Some(&text[at..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framed_records_keep_newlines_and_spaces() {
        let text =
            "F 0 file\nL 0 ../a b\nc.pem\u{1e}\nW 0 /x/a b\nc.pem\u{1e}\nP 1 key -\u{1e}\nD 2\n";
        let r = records(text, &[("L", 1), ("W", 1), ("P", 2)]).unwrap();
        assert_eq!(r.len(), 5);
        assert_eq!(r[1].text, Some("../a b\nc.pem"));
        assert_eq!(r[2].fields, ["0"]);
        assert_eq!(r[3].fields, ["1", "key"]);
        assert_eq!(r[3].text, Some("-"));
        assert_eq!(r[4].tag, "D");
        assert!(records("L 0 no end", &[("L", 1)]).is_err());
    }

    #[test]
    fn a_script_that_exited_zero_is_never_said_to_have_exited_0() {
        let out = ExecOutput {
            stdout: b"FAILED could not write".to_vec(),
            stderr: Vec::new(),
            status: 0,
        };
        assert_eq!(
            command_failure("lock script", &out),
            "`lock script` failed: FAILED could not write"
        );
    }

    #[test]
    fn shared_commands_give_each_step_its_own_time_and_output() {
        let stdout = "\u{1e}T start 100.250000\nLOCKED\n\u{1e}C test 0\nok\n\u{1e}T test 100,500000\n\
                      \u{1e}C reload 0\nT not-a-mark 1\n\u{1e}T failed 101.000000\n\u{1e}X reload 0 3\n";
        let marks = clock_marks(stdout);
        assert_eq!(marks.len(), 3, "{marks:?}");
        assert_eq!(
            remote_span(&marks, "start", "test"),
            Some(Duration::from_millis(250)),
            "a decimal comma (locale) is read too"
        );
        assert_eq!(
            remote_span(&marks, "failed", "start"),
            None,
            "never negative"
        );
        assert_eq!(failed_command(stdout), Some(("reload".into(), 0, 3)));
        let out = ExecOutput {
            stdout: stdout.as_bytes().to_vec(),
            stderr: b"\x1eC test 0\nsyntax ok\n\x1eC reload 0\nreload: bad pid\n".to_vec(),
            status: 3,
        };
        let reload = command_output(&out, "reload", 0, 3);
        assert_eq!(String::from_utf8_lossy(&reload.stderr), "reload: bad pid\n");
        assert_eq!(String::from_utf8_lossy(&reload.stdout), "T not-a-mark 1\n");
        let test = command_output(&out, "test", 0, 0);
        assert_eq!(
            String::from_utf8_lossy(&test.stderr),
            "syntax ok\n",
            "a command's output ends where the next command's starts"
        );
    }
}
