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
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::material::Fingerprint;
use crate::probe::Attempt;

mod extra;
pub mod formats;
mod io;
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
pub use io::{StderrWriter, print_stderr, print_stdout, stderr_writer, write_json};
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
pub const SCHEMA_VERSION: u32 = 2;

/// A target's final state (docs/output.md#the-run-report---output-json).
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

/// The steps of the per-target state machine (docs/deploy.md).
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
    /// Written into the live file's own inode instead of renamed over it, and why: `bind-mounted
    /// into PATH (PID N, NAME)` (a container sees only that inode), or `in_place: always`.
    pub in_place: Option<String>,
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
    /// The first certificate's (see [`TargetReport::certificates`]).
    pub old_fingerprint: Option<Fingerprint>,
    pub new_fingerprint: Option<Fingerprint>,
    pub served_fingerprint: Option<Fingerprint>,
    pub files: Vec<FileReport>,
    pub steps: Vec<StepReport>,
    /// The first certificate's probes: of the final verification (and of the rollback's).
    pub probes: Vec<Attempt>,
    /// Every certificate of the target, in the inventory's order (one for `certificate:`).
    pub certificates: Vec<CertificateReport>,
    pub duration_ms: u64,
    /// What went wrong, and the state the target was left in.
    pub error: Option<String>,
}

/// One certificate of a target: what its files held, what its endpoint served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertificateReport {
    /// Its name in the inventory's `certificates:`.
    pub certificate: String,
    /// Where it is probed (`host:port`) and with which SNI; `null` without a TLS endpoint.
    pub address: Option<String>,
    pub sni: Option<String>,
    pub old_fingerprint: Option<Fingerprint>,
    pub new_fingerprint: Option<Fingerprint>,
    pub served_fingerprint: Option<Fingerprint>,
    /// Probes of the final verification (and of the rollback's, after it).
    pub probes: Vec<Attempt>,
}

impl TargetReport {
    /// The target-level fingerprints and probes as the first certificate's.
    pub fn sync_first(&mut self) {
        if let Some(first) = self.certificates.first() {
            self.old_fingerprint = first.old_fingerprint;
            self.new_fingerprint = first.new_fingerprint;
            self.served_fingerprint = first.served_fingerprint;
            self.probes = first.probes.clone();
        }
    }
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
///   - `certificates` (array, since version 2): each certificate of the target in the
///     inventory's order (one for `certificate:`, several for `certificates:`), each with
///     `certificate` (its name), `address` and `sni` (the probe's, or `null` without a TLS
///     endpoint), `old_fingerprint`, `new_fingerprint`, `served_fingerprint` and `probes`; the
///     target's own fingerprints and `probes` are the first certificate's;
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

/// The process exit code for a finished run (README.md#exit-codes). `2` (usage) and `130`
/// (interrupt) are decided by the caller before or instead of this.
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

#[cfg(test)]
pub(crate) mod tests;
