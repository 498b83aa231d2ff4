//! Everything certctl prints: live view / plain step lines on stderr, the summary table, the
//! JSON report on stdout, sanitising of remote text, and the exit code.
//!
//! The engine never prints; it sends [`Event`]s to a [`Reporter`].

use std::collections::BTreeMap;

use serde::Serialize;

use crate::material::Fingerprint;
use crate::probe::Attempt;

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
}

impl Status {
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
        }
    }
}

/// The steps of the per-target state machine (DESIGN §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    Connect,
    Lock,
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
    /// `create`, `replace` or `unchanged`.
    pub action: String,
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

/// Counts per status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub total: usize,
    #[serde(flatten)]
    pub by_status: BTreeMap<&'static str, usize>,
}

/// The whole run (`--output json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunReport {
    pub version: u32,
    pub command: String,
    pub dry_run: bool,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub duration_ms: u64,
    pub summary: Summary,
    pub targets: Vec<TargetReport>,
}

/// What the engine tells the printer while it runs.
#[derive(Debug, Clone)]
pub enum Event {
    StepStarted { target: String, step: Step },
    StepFinished { target: String, step: StepReport },
    TargetFinished { report: TargetReport },
    /// A warning not tied to a step (e.g. certificate expires soon).
    Warning { target: Option<String>, message: String },
}

/// Receives engine events. Implementations must be cheap: they are called from target tasks.
pub trait Reporter: Send + Sync {
    fn event(&self, event: Event);
}
