//! Everything certctl prints: live view / plain step lines on stderr, the summary table, the
//! JSON report on stdout, sanitising of remote text, and the exit code.
//!
//! The engine never prints; it sends [`Event`]s to a [`Reporter`]. The command code builds a
//! [`RunReport`] at the end and hands it to [`summary_table`], [`write_json`] and
//! [`exit_code`]. [`print_stderr`] and [`print_stdout`] are the only functions in the crate
//! that write to the process's streams (the progress printers aside).
//!
//! - [`sanitize`](mod@sanitize): untrusted text made terminal-safe;
//! - `text`: the lines both printers share;
//! - [`PlainReporter`] (CI logs) and [`LiveReporter`] (a terminal), chosen by [`reporter`];
//! - `table`: the end-of-run summary;
//! - [`JSON_SCHEMA`]: the documented, versioned JSON output.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use indicatif::MultiProgress;
use serde::Serialize;

use crate::material::Fingerprint;
use crate::probe::Attempt;

mod extra;
pub mod formats;
mod live;
pub mod merge;
mod plain;
pub mod plan;
pub mod problems;
pub mod sanitize;
mod schema;
mod table;
pub mod term;
mod text;
mod tidy;
mod trust;

pub use extra::{Facts, TargetExtra};
pub use live::LiveReporter;
pub use plain::PlainReporter;
pub use plan::dry_run_plan;
pub use problems::Problem;
pub use sanitize::{sanitize, sanitize_line};
pub use schema::{CHECK_JSON_SCHEMA, JSON_SCHEMA, validate_check, validate_report};
pub use table::{summary_short, summary_table};
pub use tidy::{short_fingerprints, tidy};

/// Every target deployed, unchanged, reloaded, or (dry run / verify) fine.
pub const EXIT_OK: u8 = 0;
/// One or more targets failed and were rolled back, or were never touched.
pub const EXIT_FAILED: u8 = 1;
/// Usage error or invalid input; nothing was touched (decided by the caller).
pub const EXIT_USAGE: u8 = 2;
/// A rollback failed: a person must look.
pub const EXIT_ROLLBACK_FAILED: u8 = 3;
/// `verify` found a target serving the wrong certificate, or none.
pub const EXIT_VERIFY_MISMATCH: u8 = 4;
/// Interrupted (decided by the caller).
pub const EXIT_INTERRUPTED: u8 = 130;

/// Version of the JSON report schema; bump on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// A target's final state (DESIGN §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Deployed,
    Unchanged,
    Reloaded,
    WouldChange,
    WouldFail,
    Failed,
    RolledBack,
    RollbackFailed,
    Skipped,
    Unreachable,
    /// `verify` only: the expected certificate is served.
    Ok,
    /// `verify` only: something else (or nothing) is served.
    Mismatch,
    /// `verify` only: the expected certificate is served but expires within `--warn-days`.
    Expiring,
}

impl Status {
    /// Every status, in the order tables and totals list them.
    pub const ALL: [Status; 13] = [
        Status::Deployed,
        Status::Unchanged,
        Status::Reloaded,
        Status::WouldChange,
        Status::WouldFail,
        Status::Failed,
        Status::RolledBack,
        Status::RollbackFailed,
        Status::Skipped,
        Status::Unreachable,
        Status::Ok,
        Status::Mismatch,
        Status::Expiring,
    ];

    /// Whether this outcome makes the run exit non-zero.
    pub fn is_failure(self) -> bool {
        !matches!(
            self,
            Status::Deployed
                | Status::Unchanged
                | Status::Reloaded
                | Status::WouldChange
                | Status::Ok
        )
    }

    /// The status named `text` (as [`Status::as_str`] writes it).
    pub fn parse(text: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Deployed => "deployed",
            Status::Unchanged => "unchanged",
            Status::Reloaded => "reloaded",
            Status::WouldChange => "would-change",
            Status::WouldFail => "would-fail",
            Status::Failed => "failed",
            Status::RolledBack => "rolled-back",
            Status::RollbackFailed => "rollback-failed",
            Status::Skipped => "skipped",
            Status::Unreachable => "unreachable",
            Status::Ok => "ok",
            Status::Mismatch => "mismatch",
            Status::Expiring => "expiring",
        }
    }
}

/// The steps of the per-target state machine (DESIGN §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    Connect,
    Lock,
    /// A previous run's unfinished change, found in the target's journal and repaired.
    Recover,
    Inspect,
    Stage,
    Preview,
    Backup,
    Swap,
    Test,
    Reload,
    Verify,
    Rollback,
    Cleanup,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Connect => "connect",
            Step::Lock => "lock",
            Step::Recover => "recover",
            Step::Inspect => "inspect",
            Step::Stage => "stage",
            Step::Preview => "preview",
            Step::Backup => "backup",
            Step::Swap => "swap",
            Step::Test => "test",
            Step::Reload => "reload",
            Step::Verify => "verify",
            Step::Rollback => "rollback",
            Step::Cleanup => "cleanup",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepStatus {
    Ok,
    Failed,
    Skipped,
}

/// One step as it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepReport {
    pub step: Step,
    pub status: StepStatus,
    pub duration_ms: u64,
    /// Sanitised detail: the remote command's stderr on failure, what changed, etc.
    pub detail: Option<String>,
}

/// What happens (or would happen) to one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileReport {
    pub role: String,
    pub path: String,
    /// `create`, `replace`, `repair` or `unchanged` (for `status`: `missing`, `current`,
    /// `differs`).
    pub action: String,
    /// When the live path is a symlink that is followed: the file it resolves to, which is
    /// the one written (the link itself stays as it is).
    pub via_symlink: Option<String>,
    /// `repair`: what is wrong with the live file now (`missing`, `not a loadable
    /// certificate`, `does not match the key`, …).
    pub repair: Option<String>,
    pub old_sha256: Option<String>,
    pub new_sha256: String,
    pub mode: String,
    pub owner: Option<String>,
    pub group: Option<String>,
    /// Certificate roles: leaf fingerprints, subject, SANs, not-after, chain length.
    pub old_fingerprint: Option<Fingerprint>,
    pub new_fingerprint: Option<Fingerprint>,
    pub subject: Option<String>,
    pub sans: Vec<String>,
    pub not_after: Option<String>,
    pub chain_length: Option<usize>,
}

/// One target's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetReport {
    pub name: String,
    pub host: String,
    pub connector: String,
    pub status: Status,
    pub old_fingerprint: Option<Fingerprint>,
    pub new_fingerprint: Option<Fingerprint>,
    pub served_fingerprint: Option<Fingerprint>,
    pub files: Vec<FileReport>,
    pub steps: Vec<StepReport>,
    /// Probes of the final verification (and of the rollback's, after it).
    pub probes: Vec<Attempt>,
    pub duration_ms: u64,
    /// What went wrong, and the state the target was left in.
    pub error: Option<String>,
}

/// Counts per status: `total`, then one key per [`Status`] (kebab-case), zeros included so
/// consumers can read `summary.failed` without a default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub total: usize,
    #[serde(flatten)]
    pub by_status: BTreeMap<&'static str, usize>,
}

/// The whole run: what `--output json` writes to stdout, schema version [`SCHEMA_VERSION`]
/// (formally: [`JSON_SCHEMA`]). Every field is always present; absent values are `null`.
///
/// - `version` (integer): [`SCHEMA_VERSION`].
/// - `command` (string): `deploy`, `verify`, `rollback`, …
/// - `dry_run` (bool): `deploy --dry-run`; nothing live was changed.
/// - `started_at` (string): RFC 3339, UTC, whole seconds.
/// - `duration_ms` (integer): wall time of the run.
/// - `summary` (object): `total` and a count for every status, zeros included.
/// - `targets` (array), each:
///   - `name`, `host`, `connector` (strings);
///   - `status`: one of `deployed`, `unchanged`, `reloaded`, `would-change`, `would-fail`,
///     `failed`, `rolled-back`, `rollback-failed`, `skipped`, `unreachable`, and for `verify`
///     `ok`, `mismatch`;
///   - `old_fingerprint`, `new_fingerprint`, `served_fingerprint`: SHA-256 of the leaf's DER as
///     `AB:CD:…` (32 upper-case hex pairs) or `null`;
///   - `files` (array): `role`, `path`, `action` (`create` | `replace` | `unchanged`),
///     `old_sha256` (hex or `null`), `new_sha256`, `mode` (`"0640"`), `owner`, `group` (numeric
///     ids as strings, or `null`), `old_fingerprint`, `new_fingerprint`, `subject`, `sans`
///     (array of strings), `not_after` (RFC 3339), `chain_length` — the certificate fields are
///     `null` (or empty) for files without a leaf;
///   - `steps` (array): `step` (`connect`, `lock`, `inspect`, `stage`, `preview`, `backup`,
///     `swap`, `test`, `reload`, `verify`, `rollback`, `cleanup`), `status` (`ok` | `failed` |
///     `skipped`), `duration_ms`, `detail` (sanitised text or `null`);
///   - `probes` (array): `at_ms` (since the verification started), `duration_ms`, `served`
///     (fingerprint or `null`), `matched` (bool), `detail` (string or `null`);
///   - `duration_ms` (integer);
///   - `error` (string or `null`): what went wrong and the state the target was left in.
///
/// Each target object also has the fields of its [`TargetExtra`] (`served_not_after`,
/// `served_days_left`, `facts`), and the document has `problems` (array of `{message,
/// targets}`): the invalid input a run that exits 2 stopped at, empty otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    pub version: u32,
    pub command: String,
    pub dry_run: bool,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub duration_ms: u64,
    pub summary: Summary,
    pub targets: Vec<TargetReport>,
    /// Per target, in the same order (missing entries are all-`null`).
    pub extras: Vec<TargetExtra>,
    /// Exit 2: what was wrong with the input (no target was touched).
    pub problems: Vec<Problem>,
}

/// What the engine tells the printer while it runs.
#[expect(
    clippy::large_enum_variant,
    reason = "TargetFinished is sent once per target and moved, not stored; boxing it would change the agreed API for no measurable gain"
)]
#[derive(Debug, Clone)]
pub enum Event {
    StepStarted {
        target: String,
        step: Step,
    },
    StepFinished {
        target: String,
        step: StepReport,
    },
    TargetFinished {
        report: TargetReport,
    },
    /// A warning not tied to a step (e.g. certificate expires soon).
    Warning {
        target: Option<String>,
        message: String,
    },
}

/// Receives engine events. Implementations must be cheap: they are called from target tasks.
pub trait Reporter: Send + Sync {
    fn event(&self, event: Event);

    /// Called once after the last event, before the summary is printed: a live view clears its
    /// bars here (it also does so on drop, and when the last target finishes).
    fn finish(&self) {}
}

/// The progress printer for this process: a live view when stderr is a terminal that can
/// redraw (not `TERM=dumb`), plain lines otherwise (CI, `TERM=dumb`), nothing with `--quiet`.
/// Progress goes to stderr in every output mode, JSON included.
pub fn reporter(total_targets: usize, verbose: u8) -> Box<dyn Reporter> {
    let settings = term::settings();
    if settings.quiet {
        Box::new(QuietReporter)
    } else if settings.live {
        Box::new(LiveReporter::new(total_targets, verbose))
    } else {
        Box::new(PlainReporter::stderr(verbose))
    }
}

/// `--quiet`: no progress at all; the errors are in the summary's footer.
struct QuietReporter;

impl Reporter for QuietReporter {
    fn event(&self, _: Event) {}
}

/// Prints a warning (`warning: …`) on stderr unless `--quiet`.
pub fn print_warning(text: &str) {
    if !term::settings().quiet {
        print_stderr(&format!("warning: {text}"));
    }
}

impl RunReport {
    /// Assembles the report: counts the summary and sanitises every error, step detail and
    /// probe detail (they may carry remote output).
    pub fn new(
        command: impl Into<String>,
        dry_run: bool,
        started_at: SystemTime,
        duration: Duration,
        mut targets: Vec<TargetReport>,
    ) -> Self {
        for target in &mut targets {
            sanitize_in_place(&mut target.error);
            for step in &mut target.steps {
                sanitize_in_place(&mut step.detail);
            }
            for probe in &mut target.probes {
                sanitize_in_place(&mut probe.detail);
            }
            // Certificate subjects and SANs may come from files on the target.
            for file in &mut target.files {
                if let Some(subject) = &mut file.subject {
                    *subject = sanitize_line(subject);
                }
                for san in &mut file.sans {
                    *san = sanitize_line(san);
                }
            }
        }
        RunReport {
            version: SCHEMA_VERSION,
            command: command.into(),
            dry_run,
            started_at: rfc3339_seconds(started_at),
            duration_ms: millis(duration),
            summary: Summary::of(&targets),
            targets,
            extras: Vec::new(),
            problems: Vec::new(),
        }
    }
}

impl Summary {
    /// `total` and a count for every [`Status`], zeros included.
    pub fn of(targets: &[TargetReport]) -> Self {
        let mut by_status: BTreeMap<&'static str, usize> =
            Status::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        for target in targets {
            *by_status.entry(target.status.as_str()).or_default() += 1;
        }
        Summary {
            total: targets.len(),
            by_status,
        }
    }
}

/// Sanitised, then without shell noise and `(os error N)` ([`tidy::tidy`]).
fn sanitize_in_place(text: &mut Option<String>) {
    if let Some(t) = text {
        *t = tidy::tidy(&sanitize(t.as_bytes()));
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Seconds since the Unix epoch as RFC 3339 UTC (`2026-11-27T00:00:00Z`).
pub fn format_unix(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

/// `2026-11-05T10:11:12Z`.
fn rfc3339_seconds(at: SystemTime) -> String {
    let at = time::OffsetDateTime::from(at);
    let at = at.replace_nanosecond(0).unwrap_or(at);
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

/// The process exit code for a finished run (DESIGN §2). `2` (usage) and `130` (interrupt) are
/// decided by the caller before or instead of this.
///
/// `3` when any rollback failed (it outranks everything: a person must look); for `verify`,
/// `4` when any target serves the wrong certificate or cannot be reached; for `status`, `4`
/// when any target's files or served certificate are not the inventory's (`mismatch`); `1` when any target
/// failed, was rolled back, would fail, was skipped or is unreachable; else `0`.
pub fn exit_code(report: &RunReport) -> u8 {
    exit_code_of(&report.command, report.targets.iter().map(|t| t.status))
}

/// [`exit_code`] for a command and its targets' statuses (also used by `report merge`).
pub fn exit_code_of(command: &str, statuses: impl IntoIterator<Item = Status>) -> u8 {
    let statuses: Vec<Status> = statuses.into_iter().collect();
    let any = |pred: fn(Status) -> bool| statuses.iter().any(|&s| pred(s));
    if any(|s| s == Status::RollbackFailed) {
        EXIT_ROLLBACK_FAILED
    } else if command == "verify"
        && any(|s| matches!(s, Status::Mismatch | Status::Unreachable | Status::Expiring))
    {
        EXIT_VERIFY_MISMATCH
    } else if command == "status" && any(|s| matches!(s, Status::Mismatch | Status::Expiring)) {
        // As verify: the files or the served certificate are not the inventory's.
        EXIT_VERIFY_MISMATCH
    } else if command == "verify" {
        // Targets with nothing to probe (a keystore without an endpoint) are `skipped`; that
        // is not a failure of the check.
        if any(|s| s.is_failure() && s != Status::Skipped) {
            EXIT_FAILED
        } else {
            EXIT_OK
        }
    } else if command == "rollback" {
        // For `certctl rollback`, `rolled-back` is the success.
        if any(|s| s.is_failure() && s != Status::RolledBack) {
            EXIT_FAILED
        } else {
            EXIT_OK
        }
    } else if any(Status::is_failure) {
        EXIT_FAILED
    } else {
        EXIT_OK
    }
}

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

fn set_live_view(view: Option<MultiProgress>) {
    *LIVE_VIEW
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = view;
}

fn with_newline(text: &str) -> std::borrow::Cow<'_, str> {
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

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use serde_json::Value;

    use super::*;
    use crate::material::Fingerprint;

    pub(crate) fn fp(first: [u8; 4]) -> Fingerprint {
        let mut bytes = [0x5A; 32];
        bytes[..4].copy_from_slice(&first);
        Fingerprint(bytes)
    }

    pub(crate) const OLD: [u8; 4] = [0x11, 0x22, 0x33, 0x44];
    pub(crate) const NEW: [u8; 4] = [0xAB, 0xCD, 0xEF, 0x01];

    pub(crate) fn step(step: Step, status: StepStatus, duration_ms: u64) -> StepReport {
        StepReport {
            step,
            status,
            duration_ms,
            detail: None,
        }
    }

    /// A plausible target report for `status`: served and error fields follow the status.
    pub(crate) fn sample_target(name: &str, status: Status) -> TargetReport {
        let served = match status {
            Status::Deployed | Status::Unchanged | Status::Reloaded | Status::Ok => Some(fp(NEW)),
            Status::RolledBack | Status::Mismatch | Status::WouldChange => Some(fp(OLD)),
            _ => None,
        };
        let error = match status {
            Status::RolledBack => Some("reload failed; restored the previous files".to_string()),
            Status::RollbackFailed => {
                Some("verify failed: old certificate still served\nrestore failed: /etc/nginx/tls/www.crt: Permission denied".to_string())
            }
            Status::Unreachable => Some("connect: connection refused; nothing was changed".to_string()),
            Status::Skipped => Some("not started: interrupted".to_string()),
            Status::Mismatch => Some("serving 11:22:33:44…, expected AB:CD:EF:01…".to_string()),
            Status::Failed | Status::WouldFail => Some("preview: nginx -t exited 1".to_string()),
            _ => None,
        };
        TargetReport {
            name: name.to_string(),
            host: format!("{name}.example.test"),
            connector: "nginx".to_string(),
            status,
            old_fingerprint: Some(fp(OLD)),
            new_fingerprint: Some(fp(NEW)),
            served_fingerprint: served,
            files: Vec::new(),
            steps: Vec::new(),
            probes: Vec::new(),
            duration_ms: 1_234,
            error,
        }
    }

    fn run(command: &str, statuses: &[Status]) -> RunReport {
        let targets = statuses
            .iter()
            .enumerate()
            .map(|(i, &s)| sample_target(&format!("web-{}", i + 1), s))
            .collect();
        RunReport::new(
            command,
            false,
            SystemTime::UNIX_EPOCH,
            Duration::from_millis(5),
            targets,
        )
    }

    /// A full deploy target: files, steps with remote output, probes.
    fn detailed_target() -> TargetReport {
        let mut target = sample_target("web-1", Status::RolledBack);
        target.files = vec![
            FileReport {
                role: "fullchain".into(),
                path: "/etc/nginx/tls/www.crt".into(),
                action: "replace".into(),
                via_symlink: None,
                repair: None,
                old_sha256: Some("aa".repeat(32)),
                new_sha256: "bb".repeat(32),
                mode: "0644".into(),
                owner: Some("0".into()),
                group: Some("0".into()),
                old_fingerprint: Some(fp(OLD)),
                new_fingerprint: Some(fp(NEW)),
                subject: Some("CN=www.example.test".into()),
                sans: vec!["www.example.test".into()],
                not_after: Some("2027-01-01T00:00:00Z".into()),
                chain_length: Some(1),
            },
            FileReport {
                role: "key".into(),
                path: "/etc/nginx/tls/www.key".into(),
                action: "create".into(),
                via_symlink: None,
                repair: None,
                old_sha256: None,
                new_sha256: "cc".repeat(32),
                mode: "0600".into(),
                owner: None,
                group: None,
                old_fingerprint: None,
                new_fingerprint: None,
                subject: None,
                sans: Vec::new(),
                not_after: None,
                chain_length: None,
            },
        ];
        let mut reload = step(Step::Reload, StepStatus::Failed, 80);
        reload.detail =
            Some("systemctl exited 1: \x1b[31mJob failed\x1b[0m\r\nsee journalctl".into());
        target.steps = vec![
            step(Step::Connect, StepStatus::Ok, 40),
            reload,
            step(Step::Rollback, StepStatus::Ok, 30),
        ];
        target.probes = vec![crate::probe::Attempt {
            at_ms: 0,
            duration_ms: 12,
            served: Some(fp(OLD)),
            matched: true,
            detail: None,
        }];
        target
    }

    #[test]
    fn exit_codes_follow_the_design() {
        let ok = [
            Status::Deployed,
            Status::Unchanged,
            Status::Reloaded,
            Status::WouldChange,
        ];
        assert_eq!(exit_code(&run("deploy", &ok)), EXIT_OK);
        assert_eq!(exit_code(&run("deploy", &[])), EXIT_OK);
        for bad in [
            Status::Failed,
            Status::RolledBack,
            Status::WouldFail,
            Status::Skipped,
            Status::Unreachable,
        ] {
            assert_eq!(
                exit_code(&run("deploy", &[Status::Deployed, bad])),
                EXIT_FAILED,
                "{bad:?}"
            );
        }
        let worst = [Status::Failed, Status::RollbackFailed, Status::Unreachable];
        assert_eq!(exit_code(&run("deploy", &worst)), EXIT_ROLLBACK_FAILED);

        assert_eq!(
            exit_code(&run("verify", &[Status::Ok, Status::Ok])),
            EXIT_OK
        );
        assert_eq!(
            exit_code(&run("verify", &[Status::Ok, Status::Mismatch])),
            EXIT_VERIFY_MISMATCH
        );
        assert_eq!(
            exit_code(&run("verify", &[Status::Unreachable])),
            EXIT_VERIFY_MISMATCH
        );
        assert_eq!(
            exit_code(&run(
                "status",
                &[Status::Ok, Status::Mismatch, Status::Failed]
            )),
            EXIT_VERIFY_MISMATCH,
            "status: a mismatch is verify's 4"
        );
        assert_eq!(
            exit_code(&run("status", &[Status::Ok, Status::Unreachable])),
            EXIT_FAILED
        );
        // Unreachable outside verify is an ordinary failure.
        assert_eq!(
            exit_code(&run("rollback", &[Status::Unreachable])),
            EXIT_FAILED
        );
    }

    #[test]
    fn every_status_is_classified() {
        let failures: Vec<&str> = Status::ALL
            .iter()
            .filter(|s| s.is_failure())
            .map(|s| s.as_str())
            .collect();
        assert_eq!(
            failures,
            [
                "would-fail",
                "failed",
                "rolled-back",
                "rollback-failed",
                "skipped",
                "unreachable",
                "mismatch",
                "expiring"
            ]
        );
        // ALL is complete and in sync with serde's names.
        for status in Status::ALL {
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                Value::from(status.as_str())
            );
        }
        let unique: std::collections::BTreeSet<_> = Status::ALL.iter().collect();
        assert_eq!(unique.len(), Status::ALL.len());
    }

    #[test]
    fn run_report_counts_every_status_and_sanitises_remote_text() {
        let mut targets = vec![detailed_target(), sample_target("web-2", Status::Deployed)];
        targets[1].error = Some("\x1b]0;title\x07oops  \n".into());
        let started = SystemTime::UNIX_EPOCH + Duration::from_millis(1_780_000_000_999);
        let report = RunReport::new(
            "deploy",
            true,
            started,
            Duration::from_millis(2_500),
            targets,
        );

        assert_eq!(report.version, SCHEMA_VERSION);
        assert_eq!(report.started_at, "2026-05-28T20:26:40Z");
        assert_eq!(report.duration_ms, 2_500);
        assert_eq!(report.summary.total, 2);
        assert_eq!(report.summary.by_status.len(), Status::ALL.len());
        assert_eq!(report.summary.by_status["rolled-back"], 1);
        assert_eq!(report.summary.by_status["deployed"], 1);
        assert_eq!(report.summary.by_status["failed"], 0);
        assert_eq!(
            report.targets[0].steps[1].detail.as_deref(),
            Some("systemctl exited 1: Job failed\nsee journalctl")
        );
        assert_eq!(report.targets[1].error.as_deref(), Some("oops"));
    }

    fn snapshot_settings() -> insta::Settings {
        let mut settings = insta::Settings::clone_current();
        settings.set_snapshot_path("../../tests/snapshots");
        settings.set_prepend_module_to_snapshot(false);
        settings.set_omit_expression(true);
        settings
    }

    #[test]
    fn summary_table_of_a_mixed_run() {
        let report = run(
            "deploy",
            &[
                Status::Deployed,
                Status::Unchanged,
                Status::RolledBack,
                Status::RollbackFailed,
                Status::Unreachable,
                Status::Skipped,
            ],
        );
        let table = summary_table(&report);
        assert!(!table.contains('\u{1b}'));
        snapshot_settings().bind(|| insta::assert_snapshot!("report__summary_table_mixed", table));
    }

    #[test]
    fn summary_table_with_no_targets() {
        let report = RunReport::new(
            "verify",
            false,
            SystemTime::UNIX_EPOCH,
            Duration::ZERO,
            Vec::new(),
        );
        assert_eq!(summary_table(&report), "0 targets\n");
    }

    #[test]
    fn summary_table_sizes_columns_to_long_names_and_escapes_them() {
        let mut long = sample_target(&"very-long-target-name-".repeat(4), Status::WouldChange);
        long.old_fingerprint = None;
        long.duration_ms = 125_000;
        let mut hostile = sample_target("evil\x1b[2J\nname", Status::Ok);
        hostile.served_fingerprint = None;
        let mut report = RunReport::new(
            "deploy",
            true,
            SystemTime::UNIX_EPOCH,
            Duration::ZERO,
            vec![long, hostile],
        );
        report.dry_run = true;
        let table = summary_table(&report);
        let lines: Vec<&str> = table.lines().collect();
        // Every row's STATUS column starts at the same offset, after the longest name.
        let column = lines[0].find("STATUS").unwrap();
        assert_eq!(column, 88 + 2);
        assert_eq!(lines[1].find("would-change"), Some(column));
        assert_eq!(lines[2].find("ok "), Some(column), "{table}");
        assert!(lines[2].starts_with("evil\\nname "), "{table}");
        assert!(lines[1].contains("- → AB:CD:EF:01…"));
        assert!(lines[1].ends_with("2m05s"));
        assert!(
            lines[2].ends_with("1.23s"),
            "durations right-aligned: {table}"
        );
        assert_eq!(lines[4], "2 targets (dry run): 1 would-change, 1 ok");
        assert!(!table.contains('\u{1b}'));
    }

    /// A writer the tests can read back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn plain_events() -> Vec<Event> {
        let target = detailed_target();
        let mut events = Vec::new();
        for s in &target.steps {
            events.push(Event::StepStarted {
                target: "web-1".into(),
                step: s.step,
            });
            events.push(Event::StepFinished {
                target: "web-1".into(),
                step: s.clone(),
            });
        }
        let mut skipped = step(Step::Reload, StepStatus::Skipped, 0);
        skipped.detail = Some("file-watching server".into());
        events.push(Event::StepFinished {
            target: "web-2".into(),
            step: skipped,
        });
        events.push(Event::Warning {
            target: Some("web-2".into()),
            message: "certificate expires in 3 days".into(),
        });
        events.push(Event::Warning {
            target: None,
            message: "2 targets share host 10.0.0.1".into(),
        });
        events.push(Event::TargetFinished { report: target });
        events.push(Event::TargetFinished {
            report: sample_target("web-2", Status::Deployed),
        });
        events.push(Event::TargetFinished {
            report: sample_target("web-3", Status::RollbackFailed),
        });
        events
    }

    #[test]
    fn plain_reporter_prints_one_line_per_step_and_target() {
        let out = Captured::default();
        let plain = PlainReporter::new(Box::new(out.clone()), 0);
        for event in plain_events() {
            plain.event(event);
        }
        let text = out.text();
        assert!(!text.contains('\u{1b}'), "no escape codes in plain output");
        snapshot_settings().bind(|| insta::assert_snapshot!("report__plain_reporter", text));
    }

    #[test]
    fn plain_reporter_verbose_shows_starts_and_details() {
        let out = Captured::default();
        let plain = PlainReporter::new(Box::new(out.clone()), 1);
        let mut ok = step(Step::Inspect, StepStatus::Ok, 15);
        ok.detail = Some("2 files to replace".into());
        plain.event(Event::StepStarted {
            target: "web-1".into(),
            step: Step::Inspect,
        });
        plain.event(Event::StepFinished {
            target: "web-1".into(),
            step: ok,
        });
        assert_eq!(
            out.text(),
            "     inspect web-1: started\n     inspect web-1: ok (0.01s)\n             2 files to replace\n"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reporters_take_events_from_many_tasks_without_tearing_lines() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<PlainReporter>();
        assert_send_sync::<LiveReporter>();

        let out = Captured::default();
        let plain: Arc<dyn Reporter> = Arc::new(PlainReporter::new(Box::new(out.clone()), 0));
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let plain = Arc::clone(&plain);
                tokio::spawn(async move {
                    for s in [Step::Connect, Step::Lock, Step::Inspect] {
                        plain.event(Event::StepFinished {
                            target: format!("t{i}"),
                            step: step(s, StepStatus::Ok, 1),
                        });
                        tokio::task::yield_now().await;
                    }
                    plain.event(Event::TargetFinished {
                        report: sample_target(&format!("t{i}"), Status::Unchanged),
                    });
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let text = out.text();
        assert_eq!(text.lines().count(), 32 * 4);
        for line in text.lines() {
            let ok = line.ends_with(": ok (0.00s)")
                || line.ends_with(": already serving AB:CD:EF:01… (1.23s)");
            assert!(ok, "torn line: {line:?}");
        }
    }

    #[test]
    fn json_report_matches_snapshot() {
        let report = RunReport::new(
            "deploy",
            false,
            SystemTime::now(),
            Duration::from_millis(1_234),
            vec![detailed_target()],
        );
        let mut out = Vec::new();
        write_json(&report, &mut out).unwrap();
        let json = String::from_utf8(out).unwrap();
        assert!(json.ends_with("}\n"));
        let mut settings = snapshot_settings();
        settings.add_filter(
            r#""started_at": "[^"]+""#,
            r#""started_at": "[STARTED_AT]""#,
        );
        settings.add_filter(r#""duration_ms": \d+"#, r#""duration_ms": "[MS]""#);
        settings.bind(|| insta::assert_snapshot!("report__json", json));
    }

    fn schema() -> Value {
        serde_json::from_str(JSON_SCHEMA).expect("JSON_SCHEMA is valid JSON")
    }

    #[test]
    fn json_report_validates_against_the_schema() {
        let schema = schema();
        let mut targets: Vec<TargetReport> = Status::ALL
            .iter()
            .map(|&s| sample_target(s.as_str(), s))
            .collect();
        targets.push(detailed_target());
        let report = RunReport::new(
            "deploy",
            true,
            SystemTime::now(),
            Duration::from_secs(3),
            targets,
        );
        let value = serde_json::to_value(&report).unwrap();
        schema::check::validate(&schema, &schema, &value, "$").unwrap();
        assert_eq!(
            schema["properties"]["version"]["enum"][0],
            Value::from(SCHEMA_VERSION)
        );
    }

    #[test]
    fn schema_check_catches_drift() {
        let schema = schema();
        let mut value = serde_json::to_value(run("deploy", &[Status::Deployed])).unwrap();
        value["targets"][0]["surprise"] = Value::from(1);
        let err = schema::check::validate(&schema, &schema, &value, "$").unwrap_err();
        assert!(err.contains("surprise is not in the schema"), "{err}");

        let mut value = serde_json::to_value(run("deploy", &[Status::Deployed])).unwrap();
        value["targets"][0]["status"] = Value::from("exploded");
        assert!(schema::check::validate(&schema, &schema, &value, "$").is_err());

        let mut value = serde_json::to_value(run("deploy", &[Status::Deployed])).unwrap();
        value["summary"].as_object_mut().unwrap().remove("failed");
        assert!(schema::check::validate(&schema, &schema, &value, "$").is_err());
    }

    #[test]
    fn schema_enums_list_every_variant() {
        let schema = schema();
        let enum_of = |def: &Value| -> Vec<String> {
            def["enum"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect()
        };
        let statuses = enum_of(&schema["$defs"]["status"]);
        let expected: Vec<String> = Status::ALL.iter().map(|s| s.as_str().to_string()).collect();
        assert_eq!(statuses, expected);
        let steps = enum_of(&schema["$defs"]["step"]["properties"]["step"]);
        let all_steps = [
            Step::Connect,
            Step::Lock,
            Step::Recover,
            Step::Inspect,
            Step::Stage,
            Step::Preview,
            Step::Backup,
            Step::Swap,
            Step::Test,
            Step::Reload,
            Step::Verify,
            Step::Rollback,
            Step::Cleanup,
        ];
        assert_eq!(steps, all_steps.map(|s| s.as_str().to_string()));
        let summary_required =
            enum_of(&serde_json::json!({ "enum": schema["$defs"]["summary"]["required"] }));
        assert_eq!(summary_required[0], "total");
        assert_eq!(summary_required[1..], expected[..]);
    }

    struct Failing(std::io::ErrorKind);

    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(self.0.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn write_json_treats_a_closed_pipe_as_success() {
        let report = run("deploy", &[Status::Deployed]);
        assert!(write_json(&report, &mut Failing(std::io::ErrorKind::BrokenPipe)).is_ok());
        let err = write_json(&report, &mut Failing(std::io::ErrorKind::StorageFull)).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::StorageFull);
    }

    #[test]
    fn with_newline_adds_exactly_one() {
        assert_eq!(with_newline("a"), "a\n");
        assert_eq!(with_newline("a\n"), "a\n");
    }
}
