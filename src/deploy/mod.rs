//! The per-target engine (docs/deploy.md, docs/design.md#the-engine): one state machine over
//! one SSH connection per target. `--dry-run` is the same code path with every mutating step
//! after the preview guarded.
//!
//! What one target's run does, in order (`driver` reads like this list):
//!
//! 1. **connect** — strict host key, authentication ([`crate::ssh`]).
//! 2. **lock** — `{backup_dir}/.lock`, taken atomically; what a killed run left beside the live
//!    files is swept; the target's active journal is read in the same command (`lock.rs`).
//! 3. **recover** — a journal left by an interrupted run is an unfinished change: it is rolled
//!    back from its backup set, checked by hash, the server reloaded and probed (`recover.rs`).
//! 4. **inspect** — each live file: a file, a symlink and what it resolves to, or missing; hash,
//!    mode, owner; a key that does not match its certificate; what is served (`inspect.rs`).
//! 5. **stage** — the new files beside the live ones, final mode and owner from the first
//!    byte, fsync'd (`files.rs`); `swap: commands` stages inputs only (`commands.rs`).
//! 6. **preview** — the server's own software loads the STAGED files, then the live
//!    configuration test (`preview.rs`); a dry-run stops here.
//! 7. **backup** — the live files copied into a private backup set, then the journal written
//!    (the intent: every path with its old and new hash, what it was) — before any live change.
//! 8. **swap, test, reload** — every rename in ONE remote process that ignores hang-ups, then
//!    the live test and the reload, in the same command (`apply.rs`).
//! 9. **verify** — probes until the new certificate is served (`verify.rs`).
//! 10. **rollback** — after any failure from the swap on: the backup set restored, checked,
//!     reloaded, the old certificate probed (`rollback.rs`).
//! 11. **cleanup** — temp files, scratch directory, the journal closed into its set, the lock
//!     released (`cleanup.rs`).
//!
//! Modules below the steps, leaves first: `names` (where things live on the target),
//! `content` (what files contain), `journal`, `script` (the shell files and the parsers
//! of what they print), `holder` (who holds a lock), `mounts` (live files bind-mounted into
//! containers, written in place), `windows` (SFTP housekeeping),
//! `connection` (reconnecting), `sets` (backup sets), `restore`, `tidy` (a commands
//! connector's discard and prune). No module imports one that imports it back.
//!
//! Two axes are closed enums matched in one place each: how the change is applied
//! (`Swap`: renaming files, or the target's own commands) and how the engine keeps house on
//! the host (`Remote`: a POSIX shell, or SFTP + PowerShell on Windows). The run's goal is a
//! [`Mode`]. Prints nothing: progress goes to a [`Reporter`] as [`Event`]s, and each target
//! ends in a [`TargetReport`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::plan::{CommandSwap, TargetPlan};
use crate::report::{Event, Reporter, Status, Step, TargetReport};
use crate::select::{MaxFail, budget_exceeded};

mod apply;
mod binding;
mod cleanup;
mod commands;
mod connection;
mod content;
mod driver;
mod files;
pub mod gate;
mod holder;
mod inspect;
mod journal;
mod lock;
mod mounts;
mod names;
mod preview;
mod recover;
mod restore;
mod rollback;
mod run;
mod script;
mod sets;
#[cfg(test)]
mod shell_tests;
mod stage;
mod status;
mod tidy;
mod verify;
mod windows;

/// What a run does to each target (colmena's `Goal`): one of these, never a mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `certctl deploy`.
    Deploy,
    /// `certctl deploy --dry-run`: up to the preview; nothing live changes.
    DryRun,
    /// `certctl rollback`: restore each target's newest backup set, reload, verify.
    Rollback,
    /// `certctl status`: read-only; no lock, nothing written on the targets.
    Status,
}

/// How a run behaves.
#[derive(Debug, Clone)]
pub struct DeployOptions {
    pub mode: Mode,
    /// Redeploy even when files and served certificate already match.
    pub force: bool,
    /// Targets in flight at once.
    pub forks: usize,
    /// Batch sizes in order (`--serial`); they sum to the number of targets.
    pub batches: Vec<usize>,
    /// Failures allowed before no new batch starts (`--max-fail`).
    pub max_fail: MaxFail,
    /// Remove a lock left on a target by a killed run before taking it (`--break-lock`).
    pub break_lock: bool,
    /// A run-wide check each target waits for once connected (see [`gate`]).
    pub gate: Option<gate::Gate>,
}

/// How the change is applied on the target (the connector's `swap`).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Swap<'p> {
    /// Staged files renamed over the live ones.
    Files,
    /// The target's own commands (`kubectl apply`, a `tmsh` transaction, an import).
    Commands(&'p CommandSwap),
}

/// How the engine keeps house on the host (lock, backup sets, journal, cleanup).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Remote {
    /// A POSIX `sh`: each piece of housekeeping is a script (`src/deploy/scripts/`).
    Posix,
    /// Windows OpenSSH: no POSIX shell; housekeeping over SFTP, commands as PowerShell.
    Windows,
}

impl TargetPlan {
    pub(crate) fn swap(&self) -> Swap<'_> {
        match &self.commands {
            Some(c) => Swap::Commands(c),
            None => Swap::Files,
        }
    }

    pub(crate) fn remote(&self) -> Remote {
        match self.shell {
            crate::connector::Shell::Powershell => Remote::Windows,
            crate::connector::Shell::Posix => Remote::Posix,
        }
    }
}

/// Runs every plan in batches (`options.batches`), at most `forks` targets at once. After each
/// batch, if more targets failed than `max_fail` allows, no further batch starts and the rest
/// are reported `skipped`. `stop` fires on the first interrupt: targets not yet started are
/// reported `skipped`; running ones finish or roll back. A failure on one target never
/// affects another.
pub async fn deploy_all(
    plans: Vec<TargetPlan>,
    options: DeployOptions,
    reporter: Arc<dyn Reporter>,
    stop: CancellationToken,
) -> Vec<TargetReport> {
    let total = plans.len();
    let forks = Arc::new(Semaphore::new(options.forks.max(1)));
    let mut reports = Vec::with_capacity(total);
    let mut plans = plans.into_iter();
    let mut failed = 0;
    for size in options.batches.iter().copied() {
        let batch: Vec<TargetPlan> = plans.by_ref().take(size).collect();
        if batch.is_empty() {
            break;
        }
        let done = run_batch(batch, &options, &forks, &reporter, &stop).await;
        failed += done.iter().filter(|r| r.status.is_failure()).count();
        reports.extend(done);
        if budget_exceeded(&options.max_fail, failed, total) {
            let why =
                format!("not started: {failed} target(s) failed, more than --max-fail allows");
            for plan in plans.by_ref() {
                reports.push(finished(reporter.as_ref(), skipped(&plan, &why)));
            }
            break;
        }
    }
    // Batch sizes cover every target; should they not, the rest runs as one more batch.
    let rest: Vec<TargetPlan> = plans.collect();
    if !rest.is_empty() {
        reports.extend(run_batch(rest, &options, &forks, &reporter, &stop).await);
    }
    reports
}

/// One batch, concurrently within `forks`; targets start in plan order (a fork is taken
/// before the next target's task exists, so `--forks 1` is strictly sequential) and reports
/// come back in plan order.
async fn run_batch(
    batch: Vec<TargetPlan>,
    options: &DeployOptions,
    forks: &Arc<Semaphore>,
    reporter: &Arc<dyn Reporter>,
    stop: &CancellationToken,
) -> Vec<TargetReport> {
    let count = batch.len();
    let mut reports: Vec<Option<TargetReport>> = vec![None; count];
    let mut tasks = tokio::task::JoinSet::new();
    for (index, plan) in batch.into_iter().enumerate() {
        let permit = tokio::select! {
            p = forks.clone().acquire_owned() => p.ok(),
            () = stop.cancelled() => None,
        };
        let permit = match permit {
            Some(permit) if !stop.is_cancelled() => permit,
            _ => {
                let report = skipped(&plan, "interrupted before this target started");
                reports[index] = Some(finished(reporter.as_ref(), report));
                continue;
            }
        };
        let reporter = reporter.clone();
        let options = options.clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            let report = driver::run_target(&plan, &options, reporter.as_ref(), stop).await;
            let report = finished(reporter.as_ref(), report);
            drop(permit);
            (index, report)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((index, report)) => reports[index] = Some(report),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    reports.into_iter().flatten().collect()
}

/// Reports a target's end, and keeps its report for an abort ([`progress`]).
fn finished(reporter: &dyn Reporter, report: TargetReport) -> TargetReport {
    set_in_flight(&report.name, None);
    lock_progress().finished.push(report.clone());
    reporter.event(Event::TargetFinished {
        report: report.clone(),
    });
    report
}

/// What a second interrupt (an abort) must report: targets that finished, and those in the
/// middle of a step (which step), since those may be left between states.
#[derive(Debug, Default, Clone)]
pub struct Progress {
    pub finished: Vec<TargetReport>,
    pub in_flight: BTreeMap<String, Step>,
}

static PROGRESS: Mutex<Progress> = Mutex::new(Progress {
    finished: Vec::new(),
    in_flight: BTreeMap::new(),
});

fn lock_progress() -> std::sync::MutexGuard<'static, Progress> {
    PROGRESS.lock().unwrap_or_else(|p| p.into_inner())
}

fn set_in_flight(target: &str, step: Option<Step>) {
    let mut progress = lock_progress();
    match step {
        Some(step) => {
            progress.in_flight.insert(target.to_string(), step);
        }
        None => {
            progress.in_flight.remove(target);
        }
    }
}

/// The targets that finished so far and those still running with their current step.
pub fn progress() -> Progress {
    lock_progress().clone()
}

/// The targets still running and their current step, by name.
pub fn in_flight() -> Vec<(String, Step)> {
    let progress = lock_progress();
    progress
        .in_flight
        .iter()
        .map(|(n, s)| (n.clone(), *s))
        .collect()
}

/// A report for a target that was never started.
pub fn skipped(plan: &TargetPlan, why: &str) -> TargetReport {
    let mut report = run::blank_report(plan);
    report.status = Status::Skipped;
    report.error = Some(why.to_string());
    report
}
