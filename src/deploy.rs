//! The per-target state machine (DESIGN §5): connect, inspect, stage, preview, backup, swap,
//! test, reload, verify, rollback, cleanup — over one SSH connection per target. `--dry-run`
//! is this same code path with every mutating step after preview guarded.
//!
//! Prints nothing: progress goes to a [`Reporter`] as [`Event`]s, and each target ends in a
//! [`TargetReport`]. The invariant it keeps: a target ends on the new certificate (verified)
//! or on the previous files (restored byte-for-byte, re-checked by hash, old certificate
//! probed) — and says which.

use std::collections::BTreeMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::connector::Role;
use crate::material::{CertInfo, Material, parse_certs};
use crate::plan::{InputContent, PlannedFile, TargetPlan};
use crate::probe::{self, Expected, Served};
use crate::report::{
    Event, FileReport, Reporter, Status, Step, StepReport, StepStatus, TargetReport,
};
use crate::secret::Secret;
use crate::select::{MaxFail, budget_exceeded};
use crate::ssh::quote::Script;
use crate::ssh::{ExecOutput, Session, SshError};

mod swap_commands;
mod windows;

/// How a deploy run behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployOptions {
    pub dry_run: bool,
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
    /// `certctl rollback`: restore each target's newest backup set, reload, verify.
    pub undo: bool,
    /// `certctl status`: read-only; no lock, nothing written on the targets.
    pub status: bool,
}

/// The step-level switches one target's run needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TargetOptions {
    dry_run: bool,
    force: bool,
    break_lock: bool,
    /// `certctl rollback`: restore the newest backup set instead of deploying.
    undo: bool,
    /// `certctl status`: read-only report of files, served certificate and facts.
    status: bool,
}

/// Largest certificate file read back from a target.
const CERT_READ_LIMIT: usize = 1 << 20;

/// Shell functions used by the inspect, backup and restore scripts. Fixed text: every runtime
/// value reaches these only as a quoted argument.
///
/// `certctl_files IDX PATH...` (pairs), the inspect: says of each path `F IDX absent`,
/// `notfile` or `file`, then hashes every regular file with ONE `sha256sum` and stats them with
/// ONE `stat` (two processes in all, not two per file): `\x1eH STATUS` and sha256sum's output,
/// `\x1eS STATUS` and stat's (see [`parse_inspect`]). `certctl_stat PATH IDX` is the same for
/// one file, in one line (`F IDX present MODE UID GID CONTEXT SHA256`).
const PREAMBLE: &str = r#"set -u
umask 077
certctl_stat() {
  if [ -f "$1" ]; then
    if h=$(sha256sum < "$1") && h=${h%% *} && [ ${#h} = 64 ]; then
      printf 'F %s present %s %s\n' "$2" "$(stat -L -c '%a %u %g %C' -- "$1" 2>/dev/null)" "$h"
    else
      printf 'F %s unreadable\n' "$2"
    fi
  elif [ -e "$1" ] || [ -L "$1" ]; then
    printf 'F %s notfile\n' "$2"
  else
    printf 'F %s absent\n' "$2"
  fi
}
certctl_files() {
  c=$#
  while [ "$c" -gt 0 ]; do
    if [ -f "$2" ]; then
      printf 'F %s file\n' "$1"; set -- "$@" "$2"
    elif [ -e "$2" ] || [ -L "$2" ]; then
      printf 'F %s notfile\n' "$1"
    else
      printf 'F %s absent\n' "$1"
    fi
    shift 2; c=$((c - 2))
  done
  [ $# -gt 0 ] || return 0
  o=$(sha256sum -- "$@"); s=$?
  printf '\036H %s\n%s\n' "$s" "$o"
  o=$(stat -L -c '%a %u %g %C' -- "$@" 2>/dev/null); s=$?
  printf '\036S %s\n%s\n' "$s" "$o"
}
certctl_dir() { [ -d "$1" ] || printf 'D %s\n' "$2"; }
certctl_uid() { u=$(id -u -- "$1" 2>/dev/null) || u=-; printf 'U %s %s\n' "$2" "$u"; }
certctl_gid() { g=$(getent group -- "$1" | cut -d: -f3); printf 'G %s %s\n' "$2" "${g:--}"; }
certctl_if_new() { f=$1; shift; [ -e "$f" ] || "$@"; }
fail=0
certctl_copy() { cp -p -- "$1" "$2" || { fail=1; printf 'R %s failed\n' "$3"; }; }
certctl_place() { mv -f -- "$1" "$2" || { fail=1; rm -f -- "$1"; printf 'R %s failed\n' "$2"; }; }
certctl_discard() { rm -f -- "$@"; printf 'R nothing restored: a copy failed, the live files were left as they were\n'; }
certctl_remove() { rm -f -- "$1" || { fail=1; printf 'R %s failed\n' "$1"; }; }
certctl_remove_all() {
  rm -rf -- "$@"
  for p; do if [ -e "$p" ] || [ -L "$p" ]; then fail=1; printf 'R %s failed\n' "$p"; fi; done
}
certctl_scratch() { mkdir -m 0700 -- "$1" || return; { printf '%s\n' "$2" > "$1/.certctl-lock"; } 2>/dev/null || :; }
certctl_backup() { cp -p -- "$1" "$2" || { fail=1; printf 'B %s failed\n' "$1"; }; }
"#;

/// Prunes old backup sets, newest kept; `$1` = backup dir, `$2` = how many to keep. A set is
/// a directory named `DIGITS-HEX` (`.restored` once `certctl rollback` used it); the shell's
/// own glob lists them in name order, oldest first (the run id starts with the time), so only
/// the `rm` of a pruned set starts a process.
const PRUNE: &str = r#"certctl_is_set() {
  s=${1%.restored}
  case $s in [0-9]*-?*) ;; *) return 1 ;; esac
  case ${s%%-*} in *[!0-9]*) return 1 ;; esac
  case ${s#*-} in *[!0-9a-f]*) return 1 ;; esac
}
certctl_prune() {
  n=0
  for d in "$1"/*; do certctl_is_set "${d##*/}" && n=$((n + 1)); done
  for d in "$1"/*; do
    [ "$n" -gt "$2" ] || return 0
    certctl_is_set "${d##*/}" || continue
    rm -rf -- "$d"; n=$((n - 1))
  done
}
"#;

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
    let target_options = TargetOptions {
        dry_run: options.dry_run,
        force: options.force,
        break_lock: options.break_lock,
        undo: options.undo,
        status: options.status,
    };
    let mut reports = Vec::with_capacity(total);
    let mut plans = plans.into_iter();
    let mut failed = 0;
    for size in options.batches.iter().copied() {
        let batch: Vec<TargetPlan> = plans.by_ref().take(size).collect();
        if batch.is_empty() {
            break;
        }
        let done = run_batch(batch, target_options, &forks, &reporter, &stop).await;
        failed += done.iter().filter(|r| r.status.is_failure()).count();
        reports.extend(done);
        if budget_exceeded(&options.max_fail, failed, total) {
            let why =
                format!("not started: {failed} target(s) failed, more than --max-fail allows");
            for plan in plans.by_ref() {
                let report = skipped(&plan, &why);
                reporter.event(Event::TargetFinished {
                    report: report.clone(),
                });
                reports.push(report);
            }
            break;
        }
    }
    // Batch sizes cover every target; should they not, the rest runs as one more batch.
    let rest: Vec<TargetPlan> = plans.collect();
    if !rest.is_empty() {
        reports.extend(run_batch(rest, target_options, &forks, &reporter, &stop).await);
    }
    reports
}

/// One batch, concurrently within `forks`; targets start in plan order (a fork is taken
/// before the next target's task exists, so `--forks 1` is strictly sequential) and reports
/// come back in plan order.
async fn run_batch(
    batch: Vec<TargetPlan>,
    options: TargetOptions,
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
                reporter.event(Event::TargetFinished {
                    report: report.clone(),
                });
                reports[index] = Some(report);
                continue;
            }
        };
        let reporter = reporter.clone();
        tasks.spawn(async move {
            let report = run_target(&plan, options, reporter.as_ref()).await;
            reporter.event(Event::TargetFinished {
                report: report.clone(),
            });
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

/// Targets whose run is in progress, and the step each is at: what a second interrupt (an
/// abort) must name, since those targets may be left between states.
static IN_FLIGHT: std::sync::Mutex<BTreeMap<String, Step>> = std::sync::Mutex::new(BTreeMap::new());

fn set_in_flight(target: &str, step: Option<Step>) {
    let mut map = IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner());
    match step {
        Some(step) => {
            map.insert(target.to_string(), step);
        }
        None => {
            map.remove(target);
        }
    }
}

/// The targets still running and their current step, by name.
pub fn in_flight() -> Vec<(String, Step)> {
    let map = IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner());
    map.iter().map(|(n, s)| (n.clone(), *s)).collect()
}

/// A report for a target that was never started.
pub fn skipped(plan: &TargetPlan, why: &str) -> TargetReport {
    TargetReport {
        name: plan.name.clone(),
        host: plan.ssh.host.clone(),
        connector: plan.connector.clone(),
        status: Status::Skipped,
        old_fingerprint: None,
        new_fingerprint: Some(plan.material.leaf.fingerprint),
        served_fingerprint: None,
        files: Vec::new(),
        steps: Vec::new(),
        probes: Vec::new(),
        duration_ms: 0,
        error: Some(why.to_string()),
    }
}

/// What inspect found about one live file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LiveFile {
    present: bool,
    mode: u32,
    uid: u32,
    gid: u32,
    /// SELinux context (`ls -Z`), where the target has one.
    selinux: Option<String>,
    sha256: String,
}

/// The decision for one file after inspect.
struct StagedFile<'a> {
    planned: &'a PlannedFile,
    live: LiveFile,
    content: FileBytes,
    sha256: String,
    mode: u32,
    owner: Option<(u32, u32)>,
    old_certs: Vec<CertInfo>,
}

/// A file's new content: public certificates, or a secret.
enum FileBytes {
    Public(Vec<u8>),
    Secret(Secret),
}

impl FileBytes {
    fn bytes(&self) -> &[u8] {
        match self {
            FileBytes::Public(b) => b,
            FileBytes::Secret(s) => s.expose(),
        }
    }
}

fn content_for(material: &Material, planned: &PlannedFile) -> FileBytes {
    match planned.role {
        Role::Rendered => {
            FileBytes::Public(planned.rendered.clone().unwrap_or_default().into_bytes())
        }
        role => material_bytes(material, role),
    }
}

/// The material in one role. A keystore has no content of ours: the target's tools build it.
fn material_bytes(material: &Material, role: Role) -> FileBytes {
    match role {
        Role::Cert => FileBytes::Public(material.cert_pem()),
        Role::Chain => FileBytes::Public(material.chain_pem()),
        Role::Fullchain => FileBytes::Public(material.fullchain_pem()),
        Role::Key => FileBytes::Secret(material.key_pem().clone()),
        Role::Bundle => FileBytes::Secret(material.bundle_pem()),
        Role::Rendered | Role::Keystore => FileBytes::Public(Vec::new()),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A failure inside a step: what to say, and whether anything live may have changed.
struct StepFailure {
    step: Step,
    message: String,
    /// Set when the step shared one remote command with another and the transport failed
    /// in it: which of the two was running is unknown, so messages name both.
    shared: Option<&'static str>,
}

impl StepFailure {
    fn new(step: Step, message: String) -> Self {
        Self {
            step,
            message,
            shared: None,
        }
    }

    /// The step (or steps) named in messages: `preview failed: …`.
    fn label(&self) -> &'static str {
        self.shared.unwrap_or(self.step.as_str())
    }
}

/// One target's run: the plan, the session once connected, and the report being built.
/// A step's outcome as the step functions return it: its detail, or its error.
type StepOutcome = Result<((), Option<String>), String>;

struct Run<'a> {
    plan: &'a TargetPlan,
    options: TargetOptions,
    reporter: &'a dyn Reporter,
    report: TargetReport,
    /// The cleanup's outcome and duration when it already ran inside another step's remote
    /// command (a dry-run's preview): the cleanup step reports it instead of running again.
    cleaned: Option<(StepOutcome, std::time::Duration)>,
}

async fn run_target(
    plan: &TargetPlan,
    options: TargetOptions,
    reporter: &dyn Reporter,
) -> TargetReport {
    let started = Instant::now();
    let mut run = Run {
        plan,
        options,
        reporter,
        cleaned: None,
        report: TargetReport {
            name: plan.name.clone(),
            host: plan.ssh.host.clone(),
            connector: plan.connector.clone(),
            status: Status::Failed,
            old_fingerprint: None,
            new_fingerprint: Some(plan.material.leaf.fingerprint),
            served_fingerprint: None,
            files: Vec::new(),
            steps: Vec::new(),
            probes: Vec::new(),
            duration_ms: 0,
            error: None,
        },
    };
    let t = run.begin(Step::Connect);
    let result = Session::connect(&plan.ssh).await;
    match result {
        Ok(mut session) => {
            run.end(Step::Connect, t, StepStatus::Ok, None);
            // The run may replace the session (a reconnect to roll back): close the last one.
            run.on_session(&mut session).await;
            session.close().await;
        }
        Err(e) => {
            let message = e.to_string();
            run.end(Step::Connect, t, StepStatus::Failed, Some(message.clone()));
            // A login that works but may not `sudo -n` is reachable: it fails, like any other
            // step the target refuses.
            run.report.status = match e {
                SshError::Become { .. } => Status::Failed,
                _ => Status::Unreachable,
            };
            run.report.error = Some(format!("{message}; nothing was changed"));
        }
    }
    run.report.duration_ms = started.elapsed().as_millis() as u64;
    set_in_flight(&plan.name, None);
    run.report
}

impl<'a> Run<'a> {
    fn begin(&self, step: Step) -> Instant {
        set_in_flight(&self.plan.name, Some(step));
        self.reporter.event(Event::StepStarted {
            target: self.plan.name.clone(),
            step,
        });
        Instant::now()
    }

    fn end(&mut self, step: Step, started: Instant, status: StepStatus, detail: Option<String>) {
        self.end_took(step, started.elapsed(), status, detail);
    }

    /// [`Run::end`] with the duration given: for steps that shared one remote command, each
    /// gets its own part of it.
    fn end_took(
        &mut self,
        step: Step,
        took: std::time::Duration,
        status: StepStatus,
        detail: Option<String>,
    ) {
        let report = StepReport {
            step,
            status,
            duration_ms: took.as_millis() as u64,
            detail,
        };
        self.reporter.event(Event::StepFinished {
            target: self.plan.name.clone(),
            step: report.clone(),
        });
        self.report.steps.push(report);
    }

    /// Runs `f` as `step`, recording its outcome.
    async fn step<T>(
        &mut self,
        step: Step,
        f: impl std::future::Future<Output = Result<(T, Option<String>), String>>,
    ) -> Result<T, StepFailure> {
        let t = self.begin(step);
        match f.await {
            Ok((value, detail)) => {
                self.end(step, t, StepStatus::Ok, detail);
                Ok(value)
            }
            Err(message) => {
                self.end(step, t, StepStatus::Failed, Some(message.clone()));
                Err(StepFailure::new(step, message))
            }
        }
    }

    /// Everything after connect. Cleanup runs on every path — on a new connection when the
    /// rollback needed one.
    async fn on_session(&mut self, session: &mut Session) {
        let plan = self.plan;
        if self.options.status {
            // Read-only: no lock (it would wait on, or break, a running deploy), no cleanup.
            let outcome = self.status(session).await;
            (self.report.status, self.report.error) = match outcome {
                Ok(status) => (status, None),
                Err((status, error)) => (status, Some(error)),
            };
            return;
        }
        if plan.shell == crate::connector::Shell::Powershell {
            // No POSIX shell there: the housekeeping goes over SFTP.
            return windows::on_session(self, session).await;
        }
        // A deploy takes the lock and inspects in one remote command; a rollback only locks.
        let (locked, inspected) = if self.options.undo {
            let locked = self
                .step(Step::Lock, lock(session, plan, self.options.break_lock))
                .await;
            (locked.map_err(|f| ("lock", f.message)), None)
        } else {
            self.begin(Step::Lock);
            let both = lock_and_inspect(session, plan, self.options.break_lock).await;
            let (status, detail) = match &both.lock {
                Ok(detail) => (StepStatus::Ok, detail.clone()),
                Err(message) => (StepStatus::Failed, message.clone()),
            };
            self.end_took(Step::Lock, both.lock_time, status, Some(detail));
            let label = if both.shared_failure {
                "lock and inspect"
            } else {
                "lock"
            };
            (
                both.lock.map(drop).map_err(|m| (label, m)),
                Some((both.inspect, both.inspect_time)),
            )
        };
        if let Err((label, message)) = locked {
            // The lock script may have taken the lock before it failed (a command timeout, a
            // lost connection): release it if it names this run, never another run's.
            let released = self.release_lock(session).await;
            self.report.status = Status::Failed;
            self.report.error = Some(format!(
                "{label} failed: {message}; nothing live was changed{released}"
            ));
            return;
        }
        let outcome = match inspected {
            None => self.undo(session).await,
            Some(inspected) => self.deploy(session, inspected).await,
        };
        self.finish(session, outcome).await;
    }

    /// Records the target's outcome, then cleans up — on every path, POSIX and Windows — or
    /// reports the cleanup that already ran inside another step's command ([`Run::cleaned`]).
    async fn finish(&mut self, session: &Session, outcome: Result<Status, (Status, String)>) {
        (self.report.status, self.report.error) = match outcome {
            Ok(status) => (status, None),
            Err((status, error)) => (status, Some(error)),
        };
        if let Some((result, took)) = self.cleaned.take() {
            self.begin(Step::Cleanup);
            let (status, detail) = match result {
                Ok((_, detail)) => (StepStatus::Ok, detail),
                Err(message) => (StepStatus::Failed, Some(message)),
            };
            self.end_took(Step::Cleanup, took, status, detail);
            return;
        }
        let deployed = self.report.status == Status::Deployed;
        let _ = self
            .step(
                Step::Cleanup,
                swap_commands::cleanup(session, self.plan, deployed),
            )
            .await;
    }

    /// `inspected`: the inspect step's outcome and duration, from [`lock_and_inspect`].
    async fn deploy(
        &mut self,
        session: &mut Session,
        inspected: (
            Result<(Inspected, Option<String>), String>,
            std::time::Duration,
        ),
    ) -> Result<Status, (Status, String)> {
        let plan = self.plan;
        if let Some(swap) = &plan.commands {
            return swap_commands::deploy(self, session, swap, inspected).await;
        }
        let dry = self.options.dry_run;
        let fail_untouched = |f: StepFailure| {
            let status = if dry {
                Status::WouldFail
            } else {
                Status::Failed
            };
            (
                status,
                format!(
                    "{} failed: {}; nothing live was changed",
                    f.label(),
                    f.message
                ),
            )
        };

        // inspect: one remote script for every file (run with the lock's), plus one probe of
        // what is served now.
        let (live, served_before) = {
            self.begin(Step::Inspect);
            let (result, took) = inspected;
            match result {
                Ok((value, detail)) => {
                    self.end_took(Step::Inspect, took, StepStatus::Ok, detail);
                    value
                }
                Err(message) => {
                    self.end_took(
                        Step::Inspect,
                        took,
                        StepStatus::Failed,
                        Some(message.clone()),
                    );
                    return Err(fail_untouched(StepFailure::new(Step::Inspect, message)));
                }
            }
        };
        let mut files = Vec::new();
        for (planned, (live, owner_ids)) in plan.files.iter().zip(live) {
            files.push(decide(planned, live, owner_ids, &plan.material));
        }
        for f in files.iter_mut() {
            if f.live.present && f.live.sha256 != f.sha256 && f.planned.role.has_leaf() {
                f.old_certs = session
                    .read_file(&f.planned.path, CERT_READ_LIMIT)
                    .await
                    .ok()
                    .and_then(|pem| parse_certs(&pem).ok())
                    .unwrap_or_default();
            }
        }
        let expected = plan.material.expected();
        self.report.served_fingerprint = served_before.as_ref().map(|s| s.leaf);
        self.report.old_fingerprint = files
            .iter()
            .find_map(|f| f.old_certs.first().map(|c| c.fingerprint))
            .or_else(|| {
                files
                    .iter()
                    .any(|f| f.live.present && f.live.sha256 == f.sha256)
                    .then_some(expected.leaf)
            })
            .or(self.report.served_fingerprint);
        self.report.files = files
            .iter()
            .map(|f| file_report(f, &plan.material))
            .collect();

        let files_match = files
            .iter()
            .all(|f| f.live.present && f.live.sha256 == f.sha256);
        let served_match = served_before
            .as_ref()
            .is_some_and(|s| served_is(s, &expected));
        if files_match && !self.options.force {
            if served_match {
                return Ok(Status::Unchanged);
            }
            if dry {
                return Ok(Status::WouldChange);
            }
            // Files are right but the server still serves something else: reload + verify.
            return self.reload_only(session, served_before).await;
        }

        // stage: temp names beside the live files, final mode and owner from the first byte.
        self.step(Step::Stage, stage(session, &files))
            .await
            .map_err(fail_untouched)?;

        // preview: the server's own software loads the STAGED files; then the live test.
        let work_copies = files.iter().any(|f| f.planned.work.is_some());
        if dry && !work_copies {
            // Nothing follows a dry-run's preview but the cleanup: one remote command.
            self.preview_then_cleanup(session)
                .await
                .map_err(fail_untouched)?;
            return Ok(Status::WouldChange);
        }
        if dry || work_copies {
            self.step(Step::Preview, preview(session, plan, &files))
                .await
                .map_err(fail_untouched)?;
            if dry {
                return Ok(Status::WouldChange);
            }
            self.step(Step::Backup, backup(session, plan, &files))
                .await
                .map_err(fail_untouched)?;
        } else {
            // Preview, then (only if it passed) backup, in one remote command.
            self.preview_and_backup(session, &files)
                .await
                .map_err(fail_untouched)?;
        }

        // From here on the live files change: any failure rolls back.
        let mut swapped = Vec::new();
        let swap = self
            .step(Step::Swap, swap(session, &files, &mut swapped))
            .await;
        let after_swap = match swap {
            Ok(()) => self.after_swap(session).await,
            Err(f) => Err(f),
        };
        match after_swap {
            Ok(()) => Ok(Status::Deployed),
            Err(failure) => {
                let old = served_before.map(|s| Expected {
                    leaf: s.leaf,
                    chain: s.chain,
                });
                Err(self.rollback(session, &files, swapped, old, failure).await)
            }
        }
    }

    /// test, reload, verify: the steps after the swap.
    async fn after_swap(&mut self, session: &Session) -> Result<(), StepFailure> {
        let plan = self.plan;
        self.test_and_reload(session).await?;
        self.verify(&plan.material.expected()).await
    }

    /// Preview and backup in ONE remote command: the backup runs only once every preview
    /// command passed. Two steps in the report, each with its own status, duration (from the
    /// remote clock; the round trip and the inputs' upload count to the preview) and message.
    async fn preview_and_backup(
        &mut self,
        session: &Session,
        files: &[StagedFile<'_>],
    ) -> Result<(), StepFailure> {
        let plan = self.plan;
        let t = self.begin(Step::Preview);
        let fail = StepFailure::new;
        if let Err(message) = upload_preview_inputs(session, plan).await {
            self.end(Step::Preview, t, StepStatus::Failed, Some(message.clone()));
            return Err(fail(Step::Preview, message));
        }
        let mut script = Script::new();
        script.raw(CLOCK).raw(RUN);
        script.cmd(&["certctl_t", "start"]);
        run_phase(&mut script, "preview", &plan.preview);
        script.raw("printf '\\036BACKUP\\n'; printf '\\036BACKUP\\n' >&2\n");
        // The preamble (umask 077, `set -u`) only after the preview: the connector's commands
        // run as they would on their own.
        script.raw(PREAMBLE).raw(PRUNE).raw(MANIFEST);
        let set = backup_commands(&mut script, plan, files, true);
        script.cmd(&["certctl_t", "backup"]);
        script.raw("exit $fail\n");
        let out = self
            .exec_shared(session, &script, Step::Preview, t, "preview and backup")
            .await?;
        let total = t.elapsed();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let marks = clock_marks(&text);
        let backup_part = |bytes: &[u8]| after_mark(bytes, "\u{1e}BACKUP\n");
        let backup_took = remote_span(&marks, "preview", "backup")
            .unwrap_or_default()
            .min(total);
        let preview = preview_verdict(plan, &out, backup_part(&out.stdout).is_some());
        if let Err(message) = preview {
            self.end(Step::Preview, t, StepStatus::Failed, Some(message.clone()));
            return Err(fail(Step::Preview, message));
        }
        let n = plan.preview.len();
        let detail = (n > 0).then(|| format!("{n} command(s) ok"));
        self.end_took(Step::Preview, total - backup_took, StepStatus::Ok, detail);
        self.begin(Step::Backup);
        let backup_out = ExecOutput {
            stdout: backup_part(&out.stdout).unwrap_or_default(),
            stderr: backup_part(&out.stderr).unwrap_or_default(),
            status: out.status,
        };
        if !backup_out.success() {
            let message = command_failure("backup script", &backup_out);
            self.end_took(
                Step::Backup,
                backup_took,
                StepStatus::Failed,
                Some(message.clone()),
            );
            return Err(fail(Step::Backup, message));
        }
        let detail = format!("backup set {set}");
        self.end_took(Step::Backup, backup_took, StepStatus::Ok, Some(detail));
        Ok(())
    }

    /// Runs a script that two steps share; `first` (begun at `t`) fails when the transport
    /// does, and the failure names both steps (`shared`): which one was running is unknown.
    async fn exec_shared(
        &mut self,
        session: &Session,
        script: &Script,
        first: Step,
        t: Instant,
        shared: &'static str,
    ) -> Result<ExecOutput, StepFailure> {
        session.exec_script(script, None).await.map_err(|e| {
            let message = e.to_string();
            self.end(first, t, StepStatus::Failed, Some(message.clone()));
            StepFailure {
                shared: Some(shared),
                ..StepFailure::new(first, message)
            }
        })
    }

    /// A dry-run's preview and the cleanup in ONE remote command: the cleanup runs whether
    /// or not the preview passed, and its outcome is kept for the cleanup step
    /// ([`Run::cleaned`]). The preview's duration is the command's, less the cleanup's part
    /// (from the remote clock).
    async fn preview_then_cleanup(&mut self, session: &Session) -> Result<(), StepFailure> {
        let plan = self.plan;
        let t = self.begin(Step::Preview);
        if let Err(message) = upload_preview_inputs(session, plan).await {
            self.end(Step::Preview, t, StepStatus::Failed, Some(message.clone()));
            return Err(StepFailure::new(Step::Preview, message));
        }
        let mut script = Script::new();
        script.raw(CLOCK).raw(RUN);
        // The preview in a subshell: a failing command ends it, not the cleanup after it.
        script.raw("(\n");
        run_phase(&mut script, "preview", &plan.preview);
        script.raw(")\n");
        script.cmd(&["certctl_t", "cleanup"]);
        script.raw("printf '\\036CLEANUP\\n'; printf '\\036CLEANUP\\n' >&2\n");
        script.raw(PREAMBLE);
        cleanup_commands(&mut script, plan);
        script.cmd(&["certctl_t", "cleaned"]);
        script.raw("exit $fail\n");
        let out = self
            .exec_shared(session, &script, Step::Preview, t, "preview and cleanup")
            .await?;
        let total = t.elapsed();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let marks = clock_marks(&text);
        let cleanup_took = remote_span(&marks, "cleanup", "cleaned")
            .unwrap_or_default()
            .min(total);
        let mark = format!("{CLEANUP_MARK}\n");
        if let Some(stdout) = after_mark(&out.stdout, &mark) {
            let cleanup_out = ExecOutput {
                stdout,
                stderr: after_mark(&out.stderr, &mark).unwrap_or_default(),
                status: out.status,
            };
            self.cleaned = Some((cleanup_result(plan, &cleanup_out), cleanup_took));
        }
        let preview = preview_verdict(plan, &out, self.cleaned.is_some());
        let took = total - cleanup_took;
        match preview {
            Ok(()) => {
                let n = plan.preview.len();
                let detail = (n > 0).then(|| format!("{n} command(s) ok"));
                self.end_took(Step::Preview, took, StepStatus::Ok, detail);
                Ok(())
            }
            Err(message) => {
                self.end_took(
                    Step::Preview,
                    took,
                    StepStatus::Failed,
                    Some(message.clone()),
                );
                Err(StepFailure::new(Step::Preview, message))
            }
        }
    }

    /// The live test, the reload and the liveness check in ONE remote command, which stops
    /// at the first command that fails. Test and reload are still two steps in the report,
    /// each with its own status, duration (from the remote clock; the round trip counts
    /// to the test) and message (the failing command's own output).
    async fn test_and_reload(&mut self, session: &Session) -> Result<(), StepFailure> {
        let plan = self.plan;
        let mut script = Script::new();
        script.raw(CLOCK).raw(RUN);
        script.cmd(&["certctl_t", "start"]);
        for (phase, commands) in [
            ("test", &plan.test),
            ("reload", &plan.reload),
            ("alive", &plan.alive),
        ] {
            run_phase(&mut script, phase, commands);
        }
        let t = self.begin(Step::Test);
        let out = self
            .exec_shared(session, &script, Step::Test, t, "test and reload")
            .await?;
        let total = t.elapsed();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let marks = clock_marks(&text);
        let failed = text.lines().find_map(|l| {
            let rest = l.strip_prefix("\u{1e}X ")?;
            let mut f = rest.split(' ');
            let phase = f.next()?.to_string();
            let idx: usize = f.next()?.parse().ok()?;
            Some((phase, idx))
        });
        let reload_took = remote_span(&marks, "test", "alive")
            .or_else(|| remote_span(&marks, "test", "failed"))
            .unwrap_or_default()
            .min(total);
        let test_took = total - reload_took;
        let ok_detail = |n: usize| (n > 0).then(|| format!("{n} command(s) ok"));
        let command_error = |phase: &str, idx: usize, argv: &[String]| {
            command_failure(
                &crate::ssh::quote::label(argv),
                &command_output(&out, phase, idx),
            )
        };
        let (test, reload) = match failed {
            Some((phase, idx)) if phase == "test" && idx < plan.test.len() => {
                (Err(command_error("test", idx, &plan.test[idx])), None)
            }
            Some((phase, idx)) if phase == "reload" && idx < plan.reload.len() => (
                Ok(ok_detail(plan.test.len())),
                Some(Err(command_error("reload", idx, &plan.reload[idx]))),
            ),
            Some((phase, idx)) if phase == "alive" && idx < plan.alive.len() => (
                Ok(ok_detail(plan.test.len())),
                Some(Err(format!(
                    "the server is not running after the reload: {}",
                    command_error("alive", idx, &plan.alive[idx])
                ))),
            ),
            _ if !out.success() => (Err(command_failure("test and reload script", &out)), None),
            _ => (
                Ok(ok_detail(plan.test.len())),
                Some(Ok(ok_detail(plan.reload.len()))),
            ),
        };
        let test_time = if reload.is_some() { test_took } else { total };
        match test {
            Ok(detail) => self.end_took(Step::Test, test_time, StepStatus::Ok, detail),
            Err(message) => {
                self.end_took(
                    Step::Test,
                    test_time,
                    StepStatus::Failed,
                    Some(message.clone()),
                );
                return Err(StepFailure::new(Step::Test, message));
            }
        }
        self.begin(Step::Reload);
        match reload.unwrap_or_else(|| Err("the test stopped the script".into())) {
            Ok(detail) => {
                self.end_took(Step::Reload, reload_took, StepStatus::Ok, detail);
                Ok(())
            }
            Err(message) => {
                self.end_took(
                    Step::Reload,
                    reload_took,
                    StepStatus::Failed,
                    Some(message.clone()),
                );
                Err(StepFailure::new(Step::Reload, message))
            }
        }
    }

    async fn verify(&mut self, expected: &Expected) -> Result<(), StepFailure> {
        let plan = self.plan;
        let t = self.begin(Step::Verify);
        if !plan.has_probe {
            let detail = "no TLS endpoint to probe (no verify.address, and the connector has no \
                          verify.port)";
            self.end(Step::Verify, t, StepStatus::Skipped, Some(detail.into()));
            return Ok(());
        }
        let v = probe::verify(&plan.probe, expected, &CancellationToken::new()).await;
        self.report.probes.extend(v.attempts.iter().cloned());
        if let Some(s) = &v.last_served {
            self.report.served_fingerprint = Some(s.leaf);
        }
        if v.passed {
            let detail = format!(
                "{} served {} after {} probe(s)",
                plan.probe.address,
                expected.leaf,
                v.attempts.len()
            );
            self.end(Step::Verify, t, StepStatus::Ok, Some(detail));
            Ok(())
        } else {
            let last = v
                .attempts
                .last()
                .and_then(|a| a.detail.clone())
                .unwrap_or_default();
            let message = format!(
                "{} did not serve {} after {} probe(s): {last}",
                plan.probe.address,
                expected.leaf,
                v.attempts.len()
            );
            self.end(Step::Verify, t, StepStatus::Failed, Some(message.clone()));
            Err(StepFailure::new(Step::Verify, message))
        }
    }

    /// Files already right, old certificate served: reload and verify only.
    async fn reload_only(
        &mut self,
        session: &Session,
        served: Option<Served>,
    ) -> Result<Status, (Status, String)> {
        let plan = self.plan;
        let served = served
            .map(|s| s.leaf.to_string())
            .unwrap_or_else(|| "nothing".into());
        let result = async {
            self.step(Step::Reload, reload(session, plan)).await?;
            self.verify(&plan.material.expected()).await
        }
        .await;
        match result {
            Ok(()) => Ok(Status::Reloaded),
            Err(f) => Err((
                Status::Failed,
                format!(
                    "the files already held the new certificate but {served} was served; {} failed: {}",
                    f.label(),
                    f.message
                ),
            )),
        }
    }

    /// `certctl status`: what is on disk (fingerprint, not-after, mode, owner), what is served,
    /// days to expiry, and facts (OS, arch, hostname, server version). `ok` when files and
    /// served certificate are the inventory's; `mismatch` otherwise. Writes nothing.
    async fn status(&mut self, session: &Session) -> Result<Status, (Status, String)> {
        let plan = self.plan;
        if plan.commands.is_some() {
            return swap_commands::status(self, session).await;
        }
        let failed = |f: StepFailure| {
            (
                Status::Failed,
                format!("{}: {}", f.step.as_str(), f.message),
            )
        };
        let (live, served) = self
            .step(Step::Inspect, inspect(session, plan, false))
            .await
            .map_err(failed)?;
        let mut files = Vec::new();
        for (planned, (live, ids)) in plan.files.iter().zip(live) {
            files.push(decide(planned, live, ids, &plan.material));
        }
        for f in files.iter_mut() {
            if f.live.present && f.planned.role.has_leaf() {
                f.old_certs = session
                    .read_file(&f.planned.path, CERT_READ_LIMIT)
                    .await
                    .ok()
                    .and_then(|pem| parse_certs(&pem).ok())
                    .unwrap_or_default();
            }
        }
        self.report.files = files
            .iter()
            .map(|f| {
                let mut r = file_report(f, &plan.material);
                r.action = match (f.live.present, f.live.sha256 == f.sha256) {
                    (false, _) => "missing",
                    (true, true) => "current",
                    (true, false) => "differs",
                }
                .to_string();
                // For status, mode/owner are what is on disk now, and not-after is the file's.
                r.mode = format!("{:04o}", f.live.mode);
                r.owner = f.live.present.then(|| f.live.uid.to_string());
                r.group = f.live.present.then(|| f.live.gid.to_string());
                if let Some(leaf) = f.old_certs.first() {
                    r.not_after = Some(crate::report::format_unix(leaf.not_after));
                    r.subject = Some(leaf.subject.clone());
                    r.sans = leaf.sans.clone();
                    r.chain_length = Some(f.old_certs.len() - 1);
                }
                r
            })
            .collect();
        self.report.old_fingerprint = files
            .iter()
            .find_map(|f| f.old_certs.first().map(|c| c.fingerprint));
        self.report.served_fingerprint = served.as_ref().map(|s| s.leaf);

        let t = self.begin(Step::Inspect);
        let facts = facts(session, plan).await;
        let days = served
            .as_ref()
            .map(|s| (s.not_after - crate::plan::now_unix()).div_euclid(86_400));
        let served_text = match (&served, days) {
            (Some(s), Some(d)) => format!(
                "serves {} (expires {}, in {d} day(s))",
                s.leaf,
                crate::report::format_unix(s.not_after)
            ),
            _ => "serves no certificate".to_string(),
        };
        let detail = format!(
            "{}; {served_text}",
            facts.unwrap_or_else(|e| format!("facts unavailable: {e}"))
        );
        self.end(Step::Inspect, t, StepStatus::Ok, Some(detail));

        let expected = plan.material.expected();
        let files_current = files
            .iter()
            .all(|f| f.live.present && f.live.sha256 == f.sha256);
        let served_current = served.as_ref().is_some_and(|s| served_is(s, &expected));
        match (files_current, served_current) {
            (true, true) => Ok(Status::Ok),
            (true, false) => Err((
                Status::Mismatch,
                "the files hold the inventory's certificate, but it is not served (reload needed)"
                    .into(),
            )),
            (false, true) => Err((
                Status::Mismatch,
                "the inventory's certificate is served, but the files on disk differ".into(),
            )),
            (false, false) => Err((
                Status::Mismatch,
                "neither the files nor the served certificate are the inventory's".into(),
            )),
        }
    }

    /// `certctl rollback`: restores the newest backup set (byte-for-byte, checked by hash),
    /// reloads (or starts a server that died), and probes for the restored certificate. The
    /// set is then marked `.restored`, so a second rollback goes one set further back.
    async fn undo(&mut self, session: &Session) -> Result<Status, (Status, String)> {
        let plan = self.plan;
        if let Some(swap) = &plan.commands {
            return swap_commands::undo(self, session, swap).await;
        }
        let failed = |message: String| (Status::Failed, message);
        let (set_dir, text) = latest_backup_set(session, plan).await?;
        // Manifest lines: index, role, whether the file existed before, path.
        let mut entries = Vec::new();
        for line in text.lines().filter_map(|l| l.strip_prefix("M ")) {
            let fields: Vec<&str> = line.splitn(4, '\t').collect();
            let [idx, role, present, path] = fields[..] else {
                continue;
            };
            let Some(planned) = plan.files.iter().find(|f| f.path == path) else {
                return Err(failed(format!(
                    "rollback: backup set {set_dir} names {path}, which is not one of this target's files; nothing was changed"
                )));
            };
            entries.push((idx.to_string(), role.to_string(), present == "1", planned));
        }
        if entries.is_empty() {
            return Err(failed(format!(
                "rollback: backup set {set_dir} has no manifest; nothing was changed"
            )));
        }
        // What the restored files should serve: read from the backup copies themselves.
        let mut expected: Option<Expected> = None;
        for (idx, role, present, planned) in &entries {
            if *present && planned.role.has_leaf() && expected.is_none() {
                let pem = session
                    .read_file(&format!("{set_dir}/{idx}.{role}"), CERT_READ_LIMIT)
                    .await
                    .map_err(|e| failed(format!("rollback: reading the backup: {e}")))?;
                if let Ok(certs) = parse_certs(&pem)
                    && let Some((leaf, chain)) = certs.split_first()
                {
                    expected = Some(Expected {
                        leaf: leaf.fingerprint,
                        chain: chain.iter().map(|c| c.fingerprint).collect(),
                    });
                }
            }
        }
        if let Some(e) = &expected {
            self.report.new_fingerprint = Some(e.leaf);
        }

        let t = self.begin(Step::Rollback);
        let mut script = Script::new();
        script.raw(PREAMBLE);
        let items: Vec<RestoreItem<'_>> = entries
            .iter()
            .map(|(idx, role, present, planned)| RestoreItem {
                backup: present.then(|| format!("{set_dir}/{idx}.{role}")),
                planned,
            })
            .collect();
        restore_set(&mut script, &items);
        for (idx, role, present, planned) in &entries {
            if *present {
                let backup = format!("{set_dir}/{idx}.{role}");
                script.cmd(&["certctl_stat", &backup, &format!("b{idx}")]);
            }
            script.cmd(&["certctl_stat", &planned.path, idx]);
        }
        script.raw("exit $fail\n");
        let restored = session.exec_script(&script, None).await;
        let checked = match restored {
            Ok(out) if out.success() => {
                let text = String::from_utf8_lossy(&out.stdout);
                let hash_of = |key: &str| {
                    text.lines().find_map(|l| {
                        let f: Vec<&str> = l.split_whitespace().collect();
                        match f.as_slice() {
                            ["F", k, "present", _, _, _, _, sha] if *k == key => {
                                Some(sha.to_string())
                            }
                            ["F", k, "absent"] if *k == key => Some(String::new()),
                            _ => None,
                        }
                    })
                };
                entries
                    .iter()
                    .filter(|(idx, _, present, _)| {
                        let live = hash_of(idx);
                        let want = if *present {
                            hash_of(&format!("b{idx}"))
                        } else {
                            Some(String::new())
                        };
                        live.is_none() || live != want
                    })
                    .map(|(_, _, _, p)| p.path.clone())
                    .collect::<Vec<_>>()
            }
            Ok(out) => {
                let message = command_failure("restore script", &out);
                self.end(Step::Rollback, t, StepStatus::Failed, Some(message.clone()));
                return Err((
                    Status::RollbackFailed,
                    format!("ROLLBACK FAILED: {message}"),
                ));
            }
            Err(e) => {
                let message = e.to_string();
                self.end(Step::Rollback, t, StepStatus::Failed, Some(message.clone()));
                return Err((
                    Status::RollbackFailed,
                    format!("ROLLBACK FAILED: {message}"),
                ));
            }
        };
        if !checked.is_empty() {
            let message = format!(
                "after restoring, these files do not match the backup: {}",
                checked.join(", ")
            );
            self.end(Step::Rollback, t, StepStatus::Failed, Some(message.clone()));
            return Err((
                Status::RollbackFailed,
                format!("ROLLBACK FAILED: {message}"),
            ));
        }
        self.end(
            Step::Rollback,
            t,
            StepStatus::Ok,
            Some(format!(
                "{} file(s) restored from {set_dir} and checked by SHA-256",
                entries.len()
            )),
        );
        let _ = self
            .step(Step::Reload, reload_or_start(session, plan))
            .await;
        let verified = match &expected {
            Some(e) => self.verify(e).await.map_err(|f| f.message),
            None => Ok(()),
        };
        let mut mark = Script::new();
        mark.cmd(&["mv", "--", &set_dir, &format!("{set_dir}.restored")]);
        let _ = session.exec_script(&mark, None).await;
        match (verified, expected) {
            (Ok(()), Some(e)) => {
                self.report.error = None;
                Ok(Status::RolledBack).inspect(|_| {
                    self.report.served_fingerprint = Some(e.leaf);
                })
            }
            (Ok(()), None) => Ok(Status::RolledBack),
            (Err(message), _) => Err((
                Status::RollbackFailed,
                format!(
                    "files restored from {set_dir}, but the restored certificate is NOT served: {message}"
                ),
            )),
        }
    }

    /// Restores the swapped files from the backup, checks them by hash, reloads, and probes
    /// for the previous certificate. When the connection was lost (during the step that
    /// failed, or during the restore itself), the rollback goes on over a new connection.
    async fn rollback(
        &mut self,
        session: &mut Session,
        files: &[StagedFile<'_>],
        mut swapped: Vec<usize>,
        old: Option<Expected>,
        failure: StepFailure,
    ) -> (Status, String) {
        let plan = self.plan;
        let mut cause = format!("{} failed: {}", failure.label(), failure.message);
        if connection_lost(session).await {
            if failure.step == Step::Swap && swapped.len() < files.len() {
                // The rename in flight may have been done with its reply lost: restore that
                // file too (copying its backup over an untouched file changes nothing).
                swapped.push(swapped.len());
            }
            if let Err(e) = self.reconnect(session, failure.step).await {
                return (
                    Status::RollbackFailed,
                    format!(
                        "{cause}; ROLLBACK FAILED: the connection was lost and {e} — the new \
                         files may be live: run `certctl rollback` once the target is reachable"
                    ),
                );
            }
            cause.push_str("; the connection was lost, so the rollback ran over a new one");
        }
        let mut restored = self
            .step(Step::Rollback, restore(session, plan, files, &swapped))
            .await;
        if restored.is_err() && connection_lost(session).await {
            match self.reconnect(session, Step::Rollback).await {
                Ok(()) => {
                    cause.push_str(
                        "; the connection was lost during the restore, which was run again over a new one",
                    );
                    restored = self
                        .step(Step::Rollback, restore(session, plan, files, &swapped))
                        .await;
                }
                Err(e) => {
                    return (
                        Status::RollbackFailed,
                        format!(
                            "{cause}; ROLLBACK FAILED: the connection was lost during the restore and {e} \
                             — the live files may be new: run `certctl rollback` once the target is reachable"
                        ),
                    );
                }
            }
        }
        if let Err(f) = restored {
            return (
                Status::RollbackFailed,
                format!(
                    "{cause}; ROLLBACK FAILED: {} — the live files may be a mix of old and new",
                    f.message
                ),
            );
        }
        if swapped.is_empty() {
            return (
                Status::RolledBack,
                format!("{cause}; no live file had been replaced"),
            );
        }
        let reload = self
            .step(Step::Reload, reload_or_start(session, plan))
            .await;
        let Some(old) = old else {
            if !plan.has_probe {
                return (
                    Status::RolledBack,
                    format!(
                        "{cause}; previous files restored byte-for-byte and checked by SHA-256 \
                         (no TLS endpoint to probe)"
                    ),
                );
            }
            let note = match reload {
                Ok(()) => {
                    "nothing was served before the deploy, so there is no old certificate to probe for"
                }
                Err(_) => "the reload after restoring failed; nothing was served before the deploy",
            };
            return (
                Status::RolledBack,
                format!("{cause}; previous files restored byte-for-byte; {note}"),
            );
        };
        self.old_served_again(&old, &cause, "previous files restored byte-for-byte")
            .await
    }

    /// The end of a rollback: probes for the certificate served before the run. `restored`
    /// says what was put back.
    async fn old_served_again(
        &mut self,
        old: &Expected,
        cause: &str,
        restored: &str,
    ) -> (Status, String) {
        match self.verify(old).await {
            Ok(()) => (
                Status::RolledBack,
                format!(
                    "{cause}; {restored}; {} serves {} again",
                    self.plan.probe.address, old.leaf
                ),
            ),
            Err(f) => (
                Status::RollbackFailed,
                format!(
                    "{cause}; {restored}, but the old certificate is NOT served: {}",
                    f.message
                ),
            ),
        }
    }
}

/// Pauses before each connect made to reach a target again after its connection was lost.
const RECONNECT_BACKOFF: [std::time::Duration; 3] = [
    std::time::Duration::ZERO,
    std::time::Duration::from_secs(1),
    std::time::Duration::from_secs(3),
];

/// Whether the connection no longer carries commands (on a lost connection opening a
/// channel fails at once).
async fn connection_lost(session: &Session) -> bool {
    session.exec(&["true".to_string()]).await.is_err()
}

impl Run<'_> {
    /// After the connection was lost during `during`: connects again with the same
    /// configuration (the same strict host-key check and authentication), up to
    /// [`RECONNECT_BACKOFF`] attempts, and checks the target's lock still names this run. The
    /// new session replaces `session`. Recorded as a second connect step. The error says
    /// why no usable connection was had ("could not be re-established: …").
    async fn reconnect(&mut self, session: &mut Session, during: Step) -> Result<(), String> {
        let plan = self.plan;
        let t = self.begin(Step::Connect);
        let mut last = String::new();
        for (attempt, pause) in RECONNECT_BACKOFF.iter().enumerate() {
            tokio::time::sleep(*pause).await;
            let error = match Session::connect(&plan.ssh).await {
                Ok(new) => {
                    // The old connection is gone; dropping it frees its resources.
                    drop(std::mem::replace(session, new));
                    let result = match lock_owner(session, plan).await {
                        Ok(None) => Ok(format!(
                            "the connection was lost during {}; reconnected (attempt {}) and the \
                             lock still names this run",
                            during.as_str(),
                            attempt + 1
                        )),
                        Ok(Some(holder)) => Err(format!(
                            "the lock {} no longer names this run ({holder}), so nothing more was \
                             done",
                            lock_dir(plan)
                        )),
                        Err(e) => Err(format!("the lock could not be checked: {e}")),
                    };
                    return match result {
                        Ok(detail) => {
                            self.end(Step::Connect, t, StepStatus::Ok, Some(detail));
                            Ok(())
                        }
                        Err(message) => {
                            self.end(Step::Connect, t, StepStatus::Failed, Some(message.clone()));
                            Err(format!("after reconnecting, {message}"))
                        }
                    };
                }
                Err(e) => e,
            };
            last = error.to_string();
            // A host-key or authentication problem does not go away by retrying.
            if !matches!(
                error,
                crate::ssh::SshError::Connect { .. }
                    | crate::ssh::SshError::ConnectTimeout { .. }
                    | crate::ssh::SshError::Protocol { .. }
            ) {
                break;
            }
        }
        let message = format!("could not be re-established: {last}");
        self.end(Step::Connect, t, StepStatus::Failed, Some(message.clone()));
        Err(message)
    }

    /// After a failed lock step: removes the lock if it names this run (over a new connection
    /// if the old one was lost). Says what became of it, for the report's error.
    async fn release_lock(&mut self, session: &mut Session) -> String {
        let plan = self.plan;
        let dir = lock_dir(plan);
        if connection_lost(session).await {
            let t = self.begin(Step::Connect);
            match Session::connect(&plan.ssh).await {
                Ok(new) => {
                    drop(std::mem::replace(session, new));
                    let detail = "the connection was lost during lock; reconnected to release it";
                    self.end(Step::Connect, t, StepStatus::Ok, Some(detail.into()));
                }
                Err(e) => {
                    let message = e.to_string();
                    self.end(Step::Connect, t, StepStatus::Failed, Some(message.clone()));
                    return format!(
                        "; the lock {dir} may still be held by this run (reconnecting to release \
                         it failed: {message}): check the target, then rerun with --break-lock"
                    );
                }
            }
        }
        let mut script = Script::new();
        script.raw(UNLOCK);
        script.cmd(&["certctl_unlock", &dir, &plan.run_id]);
        match session.exec_script(&script, None).await {
            Ok(out) => match String::from_utf8_lossy(&out.stdout).trim() {
                "RELEASED" => "; the lock this run had taken was released".into(),
                "NOTOURS" | "NOLOCK" => String::new(),
                _ => format!(
                    "; the lock {dir} may still be held by this run ({}): check the target, then \
                     rerun with --break-lock",
                    command_failure("unlock", &out)
                ),
            },
            Err(e) => format!(
                "; the lock {dir} may still be held by this run (releasing it failed: {e}): \
                 check the target, then rerun with --break-lock"
            ),
        }
    }
}

/// Who holds the target's lock, if not this run: `Ok(None)` when its holder line names this
/// run, `Ok(Some(holder))` otherwise (another run's holder line, or that there is none).
async fn lock_owner(session: &Session, plan: &TargetPlan) -> Result<Option<String>, String> {
    let mut script = Script::new();
    script.raw(UNLOCK);
    script.cmd(&["certctl_owner", &lock_dir(plan), &plan.run_id]);
    let out = session
        .exec_script(&script, None)
        .await
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.trim() {
        "OURS" => Ok(None),
        other => Ok(Some(crate::report::sanitize_line(
            other.strip_prefix("OTHER ").unwrap_or(other),
        ))),
    }
}

/// What inspect saw served: `ADDRESS serves FINGERPRINT` (or `no certificate`), or that
/// there is no TLS endpoint to probe.
fn served_detail(plan: &TargetPlan, served: Option<&Served>) -> String {
    if !plan.has_probe {
        return "no TLS endpoint to probe".into();
    }
    let leaf = served
        .map(|s| s.leaf.to_string())
        .unwrap_or_else(|| "no certificate".into());
    format!("{} serves {leaf}", plan.probe.address)
}

/// Whether what was served is exactly the expected leaf and chain.
fn served_is(served: &Served, expected: &Expected) -> bool {
    served.leaf == expected.leaf && served.chain == expected.chain
}

type OwnerIds = (Option<u32>, Option<u32>);

/// One inspect script: stat + hash of every live file, the directories, owner names resolved,
/// the private scratch directory created. The served certificate is probed meanwhile.
async fn inspect(
    session: &Session,
    plan: &TargetPlan,
    create_scratch: bool,
) -> Result<(Inspected, Option<String>), String> {
    let mut script = Script::new();
    script.raw(PREAMBLE);
    inspect_commands(&mut script, plan, create_scratch);
    let (out, served) = tokio::join!(session.exec_script(&script, None), probe_served(plan));
    let out = out.map_err(|e| e.to_string())?;
    parse_inspect(plan, &out, served)
}

/// What the target serves now, probed once (none without a TLS endpoint).
async fn probe_served(plan: &TargetPlan) -> Option<Result<Served, probe::ProbeError>> {
    let probe = &plan.probe;
    if plan.has_probe {
        Some(probe::probe_once(&probe.address, &probe.sni, probe.starttls, probe.timeout).await)
    } else {
        None
    }
}

/// Whether this run uses its scratch directory: for inputs, templates, keystore working
/// copies, `swap: commands`, or a command that names `{tmpdir}`. A run that does not is spared
/// the `mkdir` (cleanup removes the path either way).
fn needs_scratch(plan: &TargetPlan) -> bool {
    plan.commands.is_some()
        || !plan.inputs.is_empty()
        || !plan.templates.is_empty()
        || plan.files.iter().any(|f| f.work.is_some())
        || [
            &plan.preview,
            &plan.test,
            &plan.reload,
            &plan.alive,
            &plan.start,
        ]
        .into_iter()
        .flatten()
        .flatten()
        .any(|arg| arg.contains(&plan.scratch_dir))
}

/// The inspect script's commands (it needs [`PREAMBLE`]).
fn inspect_commands(script: &mut Script, plan: &TargetPlan, create_scratch: bool) {
    for (i, f) in plan.files.iter().enumerate() {
        let idx = i.to_string();
        let dir = f
            .path
            .rsplit_once('/')
            .map(|(d, _)| if d.is_empty() { "/" } else { d })
            .unwrap_or("/");
        script.cmd(&["certctl_dir", dir, &idx]);
        // Explicit owner/group always apply; the connector's defaults only to a new file, so
        // they are resolved only when the file does not exist yet.
        match (&f.explicit_owner, &f.default_owner) {
            (Some(owner), _) => script.cmd(&["certctl_uid", owner, &idx]),
            (None, Some(owner)) => {
                script.cmd(&["certctl_if_new", &f.path, "certctl_uid", owner, &idx])
            }
            (None, None) => script,
        };
        match (&f.explicit_group, &f.default_group) {
            (Some(group), _) => script.cmd(&["certctl_gid", group, &idx]),
            (None, Some(group)) => {
                script.cmd(&["certctl_if_new", &f.path, "certctl_gid", group, &idx])
            }
            (None, None) => script,
        };
    }
    let mut files = vec!["certctl_files".to_string()];
    for (i, f) in plan.files.iter().enumerate() {
        files.push(i.to_string());
        files.push(f.path.clone());
    }
    script.cmd(&files.iter().map(String::as_str).collect::<Vec<_>>());
    if create_scratch && needs_scratch(plan) {
        // Tagged with this target's lock, so a later run holding that lock can tell the
        // scratch directory of a killed run of this target from anyone else's (best effort:
        // an untagged one is only never swept; a full disk fails the preview, as it should).
        script.cmd(&["certctl_scratch", &plan.scratch_dir, &lock_dir(plan)]);
    }
}

/// Reads the inspect script's output (`out` holds only its part) and the probe's result.
fn parse_inspect(
    plan: &TargetPlan,
    out: &ExecOutput,
    served: Option<Result<Served, probe::ProbeError>>,
) -> Result<(Inspected, Option<String>), String> {
    if !out.success() {
        return Err(command_failure("inspect script", out));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut live: Vec<(LiveFile, OwnerIds)> = plan
        .files
        .iter()
        .map(|_| {
            (
                LiveFile {
                    present: false,
                    mode: 0,
                    uid: 0,
                    gid: 0,
                    selinux: None,
                    sha256: String::new(),
                },
                (None, None),
            )
        })
        .collect();
    let mut seen = vec![false; live.len()];
    // certctl_files: `F IDX file` lines, then sha256sum's and stat's output for those files.
    let mut regular = Vec::new();
    // Sections: the script's own lines, then after `\x1eH` sha256sum's, after `\x1eS` stat's
    // (their exit statuses are not needed: missing lines say what failed).
    let [mut lines, mut hashes, mut stats] = [Vec::new(), Vec::new(), Vec::new()];
    let mut section = &mut lines;
    for line in text.lines() {
        if line.starts_with("\u{1e}H ") {
            section = &mut hashes;
        } else if line.starts_with("\u{1e}S ") {
            section = &mut stats;
        } else {
            section.push(line);
        }
    }
    for line in lines.into_iter().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let idx = fields
            .get(1)
            .and_then(|i| i.parse::<usize>().ok())
            .filter(|i| *i < live.len());
        // Every line is one of ours: anything else means the script did not run as written
        // (a shell that prints, a tool that misbehaves), and a guess here could lose a file.
        let Some(idx) = idx else {
            return Err(malformed_inspect(None, line, out));
        };
        let path = &plan.files[idx].path;
        match fields.as_slice() {
            ["D", _] => return Err(format!("directory of {path} does not exist on the target")),
            ["F", _, "notfile"] => return Err(format!("{path} exists but is not a regular file")),
            ["F", _, "absent"] => seen[idx] = true,
            ["F", _, "file"] => regular.push(idx),
            ["U", _, "-"] => {
                return Err(format!(
                    "owner `{}` does not exist on the target",
                    plan.files[idx]
                        .explicit_owner
                        .clone()
                        .or(plan.files[idx].default_owner.clone())
                        .unwrap_or_default()
                ));
            }
            ["G", _, "-"] => {
                return Err(format!(
                    "group `{}` does not exist on the target",
                    plan.files[idx]
                        .explicit_group
                        .clone()
                        .or(plan.files[idx].default_group.clone())
                        .unwrap_or_default()
                ));
            }
            ["U", _, uid] if uid.parse::<u32>().is_ok() => live[idx].1.0 = uid.parse().ok(),
            ["G", _, gid] if gid.parse::<u32>().is_ok() => live[idx].1.1 = gid.parse().ok(),
            _ => return Err(malformed_inspect(Some(path), line, out)),
        }
    }
    if !regular.is_empty() {
        let by_path = hashes_by_path(hashes, out)?;
        // Not stat's exit status: `%C` fails where SELinux is off, after printing `?`.
        let stat_lines: Vec<&str> = stats.into_iter().filter(|l| !l.is_empty()).collect();
        if stat_lines.len() != regular.len() {
            let paths: Vec<&str> = regular
                .iter()
                .map(|&i| plan.files[i].path.as_str())
                .collect();
            return Err(format!(
                "`stat` of {} failed on the target{}",
                paths.join(", "),
                stderr_note(out)
            ));
        }
        for (&idx, stat) in regular.iter().zip(stat_lines) {
            let path = &plan.files[idx].path;
            let Some(sha) = by_path.get(path.as_str()) else {
                let why = crate::report::sanitize(&out.stderr);
                let why = why.trim();
                return Err(format!(
                    "{path} exists but could not be hashed (sha256sum failed{}{why}); it is not \
                     treated as absent",
                    if why.is_empty() { "" } else { ": " }
                ));
            };
            let parse = |s: &str, radix| {
                u32::from_str_radix(s, radix).map_err(|_| malformed_inspect(Some(path), stat, out))
            };
            let [mode, uid, gid, context] = stat.split(' ').collect::<Vec<_>>()[..] else {
                return Err(malformed_inspect(Some(path), stat, out));
            };
            live[idx].0 = LiveFile {
                present: true,
                mode: parse(mode, 8)?,
                uid: parse(uid, 10)?,
                gid: parse(gid, 10)?,
                selinux: (context != "?").then(|| context.to_string()),
                sha256: sha.clone(),
            };
            seen[idx] = true;
        }
    }
    if let Some(i) = seen.iter().position(|s| !s) {
        return Err(format!(
            "the inspect script said nothing about {} (its output was cut short?){}",
            plan.files[i].path,
            stderr_note(out)
        ));
    }
    let served = served.and_then(Result::ok);
    let detail = format!(
        "{} file(s) inspected; {}",
        plan.files.len(),
        served_detail(plan, served.as_ref())
    );
    Ok(((live, served), Some(detail)))
}

/// sha256sum's output lines (`HASH  NAME`; `\\HASH  NAME` with `\\`, `\n` and `\r` escaped
/// in the name), by name. A file it could not read has no line (its error is on stderr).
fn hashes_by_path<'t>(
    lines: Vec<&'t str>,
    out: &ExecOutput,
) -> Result<BTreeMap<std::borrow::Cow<'t, str>, String>, String> {
    let mut by_path = BTreeMap::new();
    for line in lines.into_iter().filter(|l| !l.is_empty()) {
        let (escaped, rest) = match line.strip_prefix('\\') {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        let parsed = rest.split_at_checked(64).and_then(|(hash, name)| {
            let name = name
                .strip_prefix("  ")
                .or_else(|| name.strip_prefix(" *"))?;
            hash.bytes()
                .all(|b| b.is_ascii_hexdigit())
                .then_some((hash, name))
        });
        let Some((hash, name)) = parsed else {
            return Err(malformed_inspect(None, line, out));
        };
        let name = if escaped {
            std::borrow::Cow::Owned(
                unescape_sha256sum(name).ok_or_else(|| malformed_inspect(None, line, out))?,
            )
        } else {
            std::borrow::Cow::Borrowed(name)
        };
        by_path.insert(name, hash.to_ascii_lowercase());
    }
    Ok(by_path)
}

/// Undoes sha256sum's escaping of a file name (`\\`, `\n`, `\r`); `None` for any other escape.
fn unescape_sha256sum(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next()? {
            '\\' => '\\',
            'n' => '\n',
            'r' => '\r',
            _ => return None,
        });
    }
    Some(out)
}

/// An inspect line that is none of the script's: the step fails rather than guess.
fn malformed_inspect(path: Option<&str>, line: &str, out: &ExecOutput) -> String {
    let about = path.map(|p| format!(" about {p}")).unwrap_or_default();
    format!(
        "unexpected output from the inspect script{about}: {:?}{}",
        crate::report::sanitize(line.as_bytes()),
        stderr_note(out)
    )
}

/// `; stderr: …` when a script wrote to stderr (sanitised), else nothing.
fn stderr_note(out: &ExecOutput) -> String {
    let text = crate::report::sanitize(&out.stderr);
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!("; stderr: {text}")
    }
}

/// OS, arch, hostname and the server software's version (the connector's `version`
/// commands), in one remote script.
async fn facts(session: &Session, plan: &TargetPlan) -> Result<String, String> {
    let mut script = Script::new();
    script.raw(FACTS);
    script.cmd(&["certctl_fact", "uname", "-srm"]);
    script.cmd(&["certctl_fact", "hostname"]);
    for argv in &plan.version {
        let mut cmd: Vec<&str> = vec!["certctl_fact"];
        cmd.extend(argv.iter().map(String::as_str));
        script.cmd(&cmd);
    }
    let out = session
        .exec_script(&script, None)
        .await
        .map_err(|e| e.to_string())?;
    let text = crate::report::sanitize(&out.stdout);
    let lines: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("X ")).collect();
    Ok(lines.join("; "))
}

/// `certctl_fact CMD...` prints the first line of a command's output (stdout and stderr:
/// `nginx -v` writes to stderr).
const FACTS: &str = r#"certctl_fact() { printf 'X %s\n' "$("$@" 2>&1 | head -n 1)"; }
"#;

/// Mode, owner and content for one file. Explicit params win; a replaced file keeps its own
/// mode and owner (a secret never becomes world-readable); a new file gets the connector's.
fn decide<'p>(
    planned: &'p PlannedFile,
    live: LiveFile,
    ids: OwnerIds,
    material: &Material,
) -> StagedFile<'p> {
    let content = content_for(material, planned);
    // A keystore's new bytes are only known once the target's tools have built it: it never
    // matches, so every deploy re-imports (documented in connectors/javakeystore.yaml).
    let sha256 = if planned.role.is_built_by_engine() {
        sha256_hex(content.bytes())
    } else {
        String::new()
    };
    let mut mode = match (planned.explicit_mode, live.present) {
        (Some(m), _) => m,
        (None, true) => live.mode & 0o7777,
        (None, false) => planned.default_mode,
    };
    if planned.role.is_secret() {
        mode &= !0o007;
    }
    mode &= !0o002;
    let uid = if planned.explicit_owner.is_some() {
        ids.0
    } else if live.present {
        Some(live.uid)
    } else {
        ids.0
    };
    let gid = if planned.explicit_group.is_some() {
        ids.1
    } else if live.present {
        Some(live.gid)
    } else {
        ids.1
    };
    let owner = match (uid, gid) {
        (Some(u), Some(g)) => Some((u, g)),
        (Some(u), None) => Some((u, live.gid)),
        (None, Some(g)) => Some((live.uid, g)),
        (None, None) => None,
    };
    StagedFile {
        planned,
        live,
        content,
        sha256,
        mode,
        owner,
        old_certs: Vec::new(),
    }
}

fn file_report(f: &StagedFile<'_>, material: &Material) -> FileReport {
    let action = if !f.live.present {
        "create"
    } else if f.live.sha256 == f.sha256 {
        "unchanged"
    } else {
        "replace"
    };
    let leaf = f.planned.role.has_leaf() || f.planned.role == Role::Keystore;
    FileReport {
        role: f.planned.role.to_string(),
        path: f.planned.path.clone(),
        action: action.to_string(),
        via_symlink: None,
        repair: None,
        old_sha256: f.live.present.then(|| f.live.sha256.clone()),
        new_sha256: f.sha256.clone(),
        mode: format!("{:04o}", f.mode),
        owner: f.owner.map(|(u, _)| u.to_string()),
        group: f.owner.map(|(_, g)| g.to_string()),
        old_fingerprint: f.old_certs.first().map(|c| c.fingerprint),
        new_fingerprint: leaf.then_some(material.leaf.fingerprint),
        subject: leaf.then(|| material.leaf.subject.clone()),
        sans: if leaf {
            material.leaf.sans.clone()
        } else {
            Vec::new()
        },
        not_after: leaf.then(|| crate::report::format_unix(material.leaf.not_after)),
        chain_length: matches!(
            f.planned.role,
            Role::Fullchain | Role::Bundle | Role::Chain | Role::Keystore
        )
        .then_some(material.chain.len()),
    }
}

async fn stage(
    session: &Session,
    files: &[StagedFile<'_>],
) -> Result<((), Option<String>), String> {
    let mut copies = Script::new();
    copies.raw(PREAMBLE);
    let mut any_copy = false;
    let mut uploads = Vec::new();
    for f in files {
        match &f.planned.work {
            // A keystore: the preview imports into a private working copy of the live one
            // (inside the 0700 scratch directory); without a live keystore the preview's tool
            // creates it there. Zero-length files are refused by keytool, so none is made.
            Some(work) => {
                if f.live.present {
                    copies.cmd(&["cp", "--", &f.planned.path, work]);
                    any_copy = true;
                }
            }
            None => uploads.push(async move {
                session
                    .upload(&f.planned.staged, f.content.bytes(), f.mode, f.owner)
                    .await
                    .map_err(|e| format!("writing {}: {e}", f.planned.staged))
            }),
        }
    }
    // Every file's SFTP requests in flight at once: one file's round trips, not one per file.
    // All finish before the first error is reported; cleanup removes what was written.
    for result in futures::future::join_all(uploads).await {
        result?;
    }
    if any_copy {
        let out = session
            .exec_script(&copies, None)
            .await
            .map_err(|e| e.to_string())?;
        if !out.success() {
            return Err(command_failure("copying the live keystore", &out));
        }
    }
    // Replaced files keep their SELinux context (only where the target has SELinux); keystores
    // get theirs when they are placed, after the preview.
    let labelled: Vec<&StagedFile<'_>> = files
        .iter()
        .filter(|f| f.live.selinux.is_some() && f.planned.work.is_none())
        .collect();
    if !labelled.is_empty() {
        let mut script = Script::new();
        for f in &labelled {
            let reference = format!("--reference={}", f.planned.path);
            script.cmd(&["chcon", &reference, "--", &f.planned.staged]);
        }
        let out = session
            .exec_script(&script, None)
            .await
            .map_err(|e| e.to_string())?;
        if !out.success() {
            return Err(command_failure("chcon", &out));
        }
    }
    let detail = files
        .iter()
        .map(|f| match &f.planned.work {
            Some(work) => format!("{work} (working copy)"),
            None => format!("{} ({:04o})", f.planned.staged, f.mode),
        })
        .collect::<Vec<_>>()
        .join(", ");
    Ok(((), Some(format!("staged {detail}"))))
}

async fn preview(
    session: &Session,
    plan: &TargetPlan,
    files: &[StagedFile<'_>],
) -> Result<((), Option<String>), String> {
    upload_preview_inputs(session, plan).await?;
    let (_, detail) = run_commands(session, &plan.preview).await?;
    place_work_copies(session, files).await?;
    Ok(((), detail))
}

/// The preview's private inputs and templates, into the scratch directory (0600).
async fn upload_preview_inputs(session: &Session, plan: &TargetPlan) -> Result<(), String> {
    for input in &plan.inputs {
        let content = match &input.content {
            InputContent::Material(role) => material_bytes(&plan.material, *role),
            InputContent::Secret(secret) => FileBytes::Secret(secret.clone()),
        };
        session
            .upload(&input.path, content.bytes(), 0o600, None)
            .await
            .map_err(|e| format!("writing input {}: {e}", input.path))?;
    }
    for t in &plan.templates {
        session
            .upload(&t.path, t.content.as_bytes(), 0o600, None)
            .await
            .map_err(|e| format!("writing template {}: {e}", t.path))?;
    }
    Ok(())
}

/// Copies each keystore's working copy (built by the preview) to its staged name beside the
/// live file: created private (umask 077), then given its final owner, mode and SELinux
/// context — whatever mode the preview's tool created the working copy with.
async fn place_work_copies(session: &Session, files: &[StagedFile<'_>]) -> Result<(), String> {
    let mut script = Script::new();
    script.raw("set -e\numask 077\n");
    let mut any = false;
    for f in files {
        let Some(work) = &f.planned.work else {
            continue;
        };
        any = true;
        let staged = &f.planned.staged;
        script.cmd(&["rm", "-f", "--", staged]);
        script.cmd(&["cp", "--", work, staged]);
        if let Some((uid, gid)) = f.owner {
            script.cmd(&["chown", &format!("{uid}:{gid}"), "--", staged]);
        }
        script.cmd(&["chmod", &format!("{:04o}", f.mode), "--", staged]);
        if f.live.selinux.is_some() {
            let reference = format!("--reference={}", f.planned.path);
            script.cmd(&["chcon", &reference, "--", staged]);
        }
    }
    if !any {
        return Ok(());
    }
    let out = session
        .exec_script(&script, None)
        .await
        .map_err(|e| e.to_string())?;
    if !out.success() {
        return Err(command_failure(
            "placing the keystore beside the live one",
            &out,
        ));
    }
    Ok(())
}

/// Runs commands in order; the first failure stops, with its stderr.
async fn run_commands(
    session: &Session,
    commands: &[Vec<String>],
) -> Result<((), Option<String>), String> {
    for argv in commands {
        let out = session.exec(argv).await.map_err(|e| e.to_string())?;
        if !out.success() {
            return Err(command_failure(&crate::ssh::quote::label(argv), &out));
        }
    }
    Ok((
        (),
        (!commands.is_empty()).then(|| format!("{} command(s) ok", commands.len())),
    ))
}

/// The reload commands, then the liveness check: a server that exited on the new files
/// (apache does, with a reload that returned 0) fails the reload.
async fn reload(session: &Session, plan: &TargetPlan) -> Result<((), Option<String>), String> {
    let (_, detail) = run_commands(session, &plan.reload).await?;
    run_commands(session, &plan.alive)
        .await
        .map_err(|e| format!("the server is not running after the reload: {e}"))?;
    Ok(((), detail))
}

/// After restoring the previous files: reload; if the server is not running (it died on the
/// new files), start it; then it must be alive.
async fn reload_or_start(
    session: &Session,
    plan: &TargetPlan,
) -> Result<((), Option<String>), String> {
    let reloaded = run_commands(session, &plan.reload).await;
    if plan.alive.is_empty() {
        return reloaded;
    }
    if run_commands(session, &plan.alive).await.is_ok() {
        return reloaded.map(|_| ((), Some("reloaded; the server is running".into())));
    }
    run_commands(session, &plan.start)
        .await
        .map_err(|e| format!("the server was not running and could not be started: {e}"))?;
    run_commands(session, &plan.alive)
        .await
        .map_err(|e| format!("the server was started but is still not running: {e}"))?;
    Ok((
        (),
        Some("the server had stopped; started it again on the previous files".into()),
    ))
}

/// `CMD exited N: <stderr or stdout>` — sanitised later by the printer.
fn command_failure(what: &str, out: &ExecOutput) -> String {
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
    if text.is_empty() {
        format!("`{what}` exited {} (no output)", out.status)
    } else {
        format!("`{what}` exited {}: {text}", out.status)
    }
}

async fn backup(
    session: &Session,
    plan: &TargetPlan,
    files: &[StagedFile<'_>],
) -> Result<((), Option<String>), String> {
    let mut script = Script::new();
    script.raw(PREAMBLE).raw(PRUNE);
    let set = backup_commands(&mut script, plan, files, false);
    script.raw("exit $fail\n");
    let out = session
        .exec_script(&script, None)
        .await
        .map_err(|e| e.to_string())?;
    if !out.success() {
        return Err(command_failure("backup script", &out));
    }
    session
        .upload(&format!("{set}/manifest"), &manifest(files), 0o600, None)
        .await
        .map_err(|e| format!("writing backup manifest: {e}"))?;
    Ok(((), Some(format!("backup set {set}"))))
}

/// Manifest lines: index, role, whether the file existed before, path.
fn manifest(files: &[StagedFile<'_>]) -> Vec<u8> {
    let mut manifest = String::new();
    for (i, f) in files.iter().enumerate() {
        manifest.push_str(&format!(
            "{i}\t{}\t{}\t{}\n",
            f.planned.role,
            u8::from(f.live.present),
            f.planned.path
        ));
    }
    manifest.into_bytes()
}

/// `certctl_manifest FILE TEXT` writes the backup set's manifest (0600 under the preamble's
/// umask).
const MANIFEST: &str = r#"certctl_manifest() { printf '%s' "$2" > "$1" || { fail=1; printf 'B %s failed\n' "$1"; }; }
"#;

/// The backup script's commands (it needs [`PREAMBLE`] and [`PRUNE`], and [`MANIFEST`] when
/// `with_manifest`, which writes the manifest too); returns the set's directory.
fn backup_commands(
    script: &mut Script,
    plan: &TargetPlan,
    files: &[StagedFile<'_>],
    with_manifest: bool,
) -> String {
    // The lock step made the backup directory (0700) if it was missing; an existing one
    // keeps its mode. The set itself is private whatever the directory's mode is.
    let set = format!("{}/{}", plan.backup_dir, plan.run_id);
    script.cmd(&["mkdir", "-m", "0700", "--", &set]);
    for (i, f) in files.iter().enumerate() {
        if f.live.present {
            script.cmd(&[
                "certctl_backup",
                &f.planned.path,
                &format!("{set}/{i}.{}", f.planned.role),
            ]);
        }
    }
    if with_manifest {
        let text = String::from_utf8(manifest(files)).unwrap_or_default();
        script.cmd(&["certctl_manifest", &format!("{set}/manifest"), &text]);
    }
    script.cmd(&[
        "certctl_prune",
        &plan.backup_dir,
        &plan.keep_backups.to_string(),
    ]);
    set
}

async fn swap(
    session: &Session,
    files: &[StagedFile<'_>],
    swapped: &mut Vec<usize>,
) -> Result<((), Option<String>), String> {
    for (i, f) in files.iter().enumerate() {
        session
            .rename_over(&f.planned.staged, &f.planned.path)
            .await
            .map_err(|e| format!("renaming {} over {}: {e}", f.planned.staged, f.planned.path))?;
        swapped.push(i);
    }
    Ok(((), Some(format!("{} file(s) replaced", files.len()))))
}

/// Copies the backups back over the swapped files (temp + rename), removes files that did
/// not exist before, then re-hashes every file and compares with what inspect saw.
async fn restore(
    session: &Session,
    plan: &TargetPlan,
    files: &[StagedFile<'_>],
    swapped: &[usize],
) -> Result<((), Option<String>), String> {
    if swapped.is_empty() {
        return Ok(((), Some("no live file had been replaced".into())));
    }
    let set = format!("{}/{}", plan.backup_dir, plan.run_id);
    let mut script = Script::new();
    script.raw(PREAMBLE);
    let items: Vec<RestoreItem<'_>> = swapped
        .iter()
        .map(|&i| {
            let f = &files[i];
            RestoreItem {
                backup: f
                    .live
                    .present
                    .then(|| format!("{set}/{i}.{}", f.planned.role)),
                planned: f.planned,
            }
        })
        .collect();
    restore_set(&mut script, &items);
    for &i in swapped {
        script.cmd(&["certctl_stat", &files[i].planned.path, &i.to_string()]);
    }
    script.raw("exit $fail\n");
    let out = session
        .exec_script(&script, None)
        .await
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.success() {
        return Err(format!(
            "restore script exited {}: {}{}",
            out.status,
            restore_failures(&text),
            stderr_note(&out)
        ));
    }
    let mut checked: BTreeMap<usize, bool> = BTreeMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["F", i, "present", _, _, _, _, sha] => {
                if let Ok(i) = i.parse::<usize>() {
                    checked.insert(
                        i,
                        files
                            .get(i)
                            .is_some_and(|f| f.live.present && f.live.sha256 == *sha),
                    );
                }
            }
            ["F", i, "absent"] => {
                if let Ok(i) = i.parse::<usize>() {
                    checked.insert(i, files.get(i).is_some_and(|f| !f.live.present));
                }
            }
            _ => {}
        }
    }
    let bad: Vec<&str> = swapped
        .iter()
        .filter(|i| checked.get(i) != Some(&true))
        .map(|&i| files[i].planned.path.as_str())
        .collect();
    if !bad.is_empty() {
        return Err(format!(
            "after restoring, these files do not match the backup: {}",
            bad.join(", ")
        ));
    }
    Ok((
        (),
        Some(format!(
            "{} file(s) restored and checked by SHA-256",
            swapped.len()
        )),
    ))
}

/// What the `R` lines of a restore or cleanup script say went wrong, sanitised.
fn restore_failures(stdout: &str) -> String {
    let lines: Vec<String> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("R "))
        .map(crate::report::sanitize_line)
        .collect();
    if lines.is_empty() {
        "no file named".into()
    } else {
        lines.join("; ")
    }
}

/// One live file to put back: from its backup copy, or removed when it did not exist before.
struct RestoreItem<'p> {
    backup: Option<String>,
    planned: &'p PlannedFile,
}

/// The temp name a backup is copied to before it is renamed over the live file.
fn restore_temp(planned: &PlannedFile) -> String {
    format!(
        "{}.restore",
        planned
            .staged
            .strip_suffix(".tmp")
            .unwrap_or(&planned.staged)
    )
}

/// Restores a set as a whole: every backup is first copied to a temp name beside its live
/// file; only when all copies succeeded are they renamed over the live files (and files that
/// did not exist before removed). A failed copy removes the temp copies and leaves the live
/// files as they were, so a restore never mixes old and new. `$fail` says whether it all
/// worked; `R PATH failed` lines name what did not.
fn restore_set(script: &mut Script, items: &[RestoreItem<'_>]) {
    for item in items {
        if let Some(backup) = &item.backup {
            let tmp = restore_temp(item.planned);
            script.cmd(&["certctl_copy", backup, &tmp, &item.planned.path]);
        }
    }
    script.raw("if [ \"$fail\" = 0 ]; then\n");
    for item in items {
        match &item.backup {
            Some(_) => script.cmd(&[
                "certctl_place",
                &restore_temp(item.planned),
                &item.planned.path,
            ]),
            None => script.cmd(&["certctl_remove", &item.planned.path]),
        };
    }
    script.raw("else\n");
    let mut discard = vec!["certctl_discard".to_string()];
    discard.extend(
        items
            .iter()
            .filter(|i| i.backup.is_some())
            .map(|i| restore_temp(i.planned)),
    );
    script.cmd(&discard);
    script.raw("fi\n");
}

/// The target's lock: a directory beside its backups (per target, private).
fn lock_dir(plan: &TargetPlan) -> String {
    format!("{}/.lock", plan.backup_dir)
}

/// This machine's host name, read once (every target's lock names it).
static LOCAL_HOST: std::sync::LazyLock<Option<String>> = std::sync::LazyLock::new(|| {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
});

/// Who holds a lock: written into it, shown to the next run.
fn lock_holder(plan: &TargetPlan) -> String {
    let host = LOCAL_HOST.as_deref().unwrap_or("unknown");
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let started = crate::report::format_unix(crate::plan::now_unix());
    format!(
        "pid={} host={host} user={user} started={started} run={}",
        std::process::id(),
        plan.run_id
    )
}

/// Takes the target's lock (an atomic `mkdir`), then removes temp files a killed run left
/// beside the live files — safe now that no other run can be using them.
async fn lock(
    session: &Session,
    plan: &TargetPlan,
    break_lock: bool,
) -> Result<((), Option<String>), String> {
    let mut script = Script::new();
    script.raw(LOCK);
    lock_commands(&mut script, plan, break_lock);
    let out = session
        .exec_script(&script, None)
        .await
        .map_err(|e| e.to_string())?;
    parse_lock(plan, &out, true).map(|detail| ((), Some(detail)))
}

/// The lock script's commands (it needs [`LOCK`]).
fn lock_commands(script: &mut Script, plan: &TargetPlan, break_lock: bool) {
    let dir = lock_dir(plan);
    script.cmd(&["certctl_dirs", &plan.backup_dir]);
    if break_lock {
        script.cmd(&["rm", "-rf", "--", &dir]);
    }
    script.cmd(&["certctl_lock", &dir, &lock_holder(plan)]);
    for f in &plan.files {
        let (parent, base) = f.path.rsplit_once('/').unwrap_or(("/", &f.path));
        let parent = if parent.is_empty() { "/" } else { parent };
        script.cmd(&["certctl_stale", parent, base]);
    }
    let tmp_dir = plan
        .scratch_dir
        .rsplit_once('/')
        .map(|(d, _)| if d.is_empty() { "/" } else { d })
        .unwrap_or("/");
    script.cmd(&["certctl_stale_scratch", tmp_dir, &dir, &plan.scratch_dir]);
}

/// Reads the lock script's output (`out.stdout` holds only its part). `whole_script`: the
/// exit status is the lock script's own (not when inspect ran after it in the same command).
fn parse_lock(plan: &TargetPlan, out: &ExecOutput, whole_script: bool) -> Result<String, String> {
    let dir = lock_dir(plan);
    let text = String::from_utf8_lossy(&out.stdout);
    if let Some(holder) = text.lines().find_map(|l| l.strip_prefix("HELD ")) {
        return Err(describe_holder(&dir, holder));
    }
    if (whole_script && !out.success()) || !text.lines().any(|l| l == "LOCKED") {
        return Err(command_failure("lock script", out));
    }
    let listed = |tag: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix(tag))
            .map(crate::report::sanitize_line)
            .collect()
    };
    let (stale, scratch) = (listed("STALE "), listed("SCRATCH "));
    let mut detail = format!("locked {dir}");
    if !stale.is_empty() {
        detail.push_str(&format!(
            "; removed {} temp file(s) left by an interrupted run: {}",
            stale.len(),
            stale.join(", ")
        ));
    }
    if !scratch.is_empty() {
        detail.push_str(&format!(
            "; removed {} scratch directory(ies) left by an interrupted run of this target: {}",
            scratch.len(),
            scratch.join(", ")
        ));
    }
    Ok(detail)
}

/// Prints `\x1eT NAME SECONDS` on stdout: the remote clock (bash's `EPOCHREALTIME`, else
/// `date`), so that steps sharing one remote command still get their own durations.
const CLOCK: &str = r#"certctl_t() { t=${EPOCHREALTIME:-}; [ -n "$t" ] || t=$(date +%s.%N 2>/dev/null) || t=-; printf '\036T %s %s\n' "$1" "$t"; }
"#;

/// The prefix of a [`CLOCK`] line.
const CLOCK_MARK: &str = "\u{1e}T ";

/// `certctl_run PHASE INDEX CMD...` runs one connector command; before it, a `\x1eC PHASE
/// INDEX` line on stdout and on stderr marks where its output starts; if it fails, the
/// script stops after a `\x1eX PHASE INDEX STATUS` line, with the command's exit status.
const RUN: &str = r#"certctl_run() {
  p=$1; i=$2; shift 2
  printf '\036C %s %s\n' "$p" "$i"; printf '\036C %s %s\n' "$p" "$i" >&2
  "$@"; s=$?
  [ "$s" = 0 ] || { certctl_t failed; printf '\036X %s %s %s\n' "$p" "$i" "$s"; exit "$s"; }
}
"#;

/// Adds one phase's connector commands to a [`RUN`] script (each through `certctl_run`, so
/// its output and status can be cut out again), then the phase's clock mark.
fn run_phase(script: &mut Script, phase: &str, commands: &[crate::connector::Command]) {
    for (i, argv) in commands.iter().enumerate() {
        let idx = i.to_string();
        let mut cmd: Vec<&str> = vec!["certctl_run", phase, &idx];
        cmd.extend(argv.iter().map(String::as_str));
        script.cmd(&cmd);
    }
    script.cmd(&["certctl_t", phase]);
}

/// The preview's outcome in a shared script's output: the first preview command that failed
/// (its own output), or — when the script never got past the preview (`got_past` false) —
/// the script's.
fn preview_verdict(plan: &TargetPlan, out: &ExecOutput, got_past: bool) -> Result<(), String> {
    let text = String::from_utf8_lossy(&out.stdout);
    let failed = text.lines().find_map(|l| {
        let rest = l.strip_prefix("\u{1e}X preview ")?;
        rest.split(' ').next()?.parse::<usize>().ok()
    });
    match failed {
        Some(idx) if idx < plan.preview.len() => Err(command_failure(
            &crate::ssh::quote::label(&plan.preview[idx]),
            &command_output(out, "preview", idx),
        )),
        _ if !got_past => Err(command_failure("preview script", out)),
        _ => Ok(()),
    }
}

/// Marks the start of the cleanup part of a dry-run's preview + cleanup output.
const CLEANUP_MARK: &str = "\u{1e}CLEANUP";

/// What a shared script wrote after `mark` (a line of its own), without clock marks: the
/// part of its output that belongs to the second of two steps.
fn after_mark(bytes: &[u8], mark: &str) -> Option<Vec<u8>> {
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

/// One command's own output and exit status, cut from a [`RUN`] script's output.
fn command_output(out: &ExecOutput, phase: &str, idx: usize) -> ExecOutput {
    let mark = format!("\u{1e}C {phase} {idx}\n");
    let after = |bytes: &[u8]| -> Vec<u8> {
        let text = String::from_utf8_lossy(bytes);
        let from = text.rfind(&mark).map(|i| i + mark.len()).unwrap_or(0);
        text[from..]
            .lines()
            .filter(|l| !l.starts_with('\u{1e}'))
            .flat_map(|l| format!("{l}\n").into_bytes())
            .collect()
    };
    ExecOutput {
        stdout: after(&out.stdout),
        stderr: after(&out.stderr),
        status: out.status,
    }
}

/// Marks the start of the inspect part of the combined lock + inspect output.
const INSPECT_MARK: &str = "\u{1e}INSPECT";

/// The remote clock marks (`T NAME SECONDS`) in a script's output, by name.
fn clock_marks(stdout: &str) -> BTreeMap<String, f64> {
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

/// How long the remote part between marks `from` and `to` took, when both were printed.
fn remote_span(marks: &BTreeMap<String, f64>, from: &str, to: &str) -> Option<std::time::Duration> {
    let span = marks.get(to)? - marks.get(from)?;
    (span.is_finite() && span >= 0.0).then(|| std::time::Duration::from_secs_f64(span))
}

/// Lock and inspect in ONE remote command (a round trip and a remote shell fewer), with the
/// probe of what is served meanwhile. The inspect part runs only once the lock is held. Both
/// steps are reported, each with its own duration: inspect's is its remote part (from the
/// remote clock) plus the wait for the probe; lock's is the rest of the command.
async fn lock_and_inspect(session: &Session, plan: &TargetPlan, break_lock: bool) -> LockedInspect {
    let started = Instant::now();
    let mut script = Script::new();
    script.raw(LOCK).raw(PREAMBLE).raw(CLOCK);
    lock_commands(&mut script, plan, break_lock);
    script.raw("if [ \"${locked:-0}\" = 1 ]; then\n");
    script.cmd(&["certctl_t", "inspect"]);
    script.raw("printf '\\036INSPECT\\n'\n");
    inspect_commands(&mut script, plan, true);
    script.raw("s=$?\n");
    script.cmd(&["certctl_t", "inspected"]);
    script.raw("exit $s\nfi\n");
    let exec = async {
        let out = session.exec_script(&script, None).await;
        (out, Instant::now())
    };
    let ((out, exec_done), served) = tokio::join!(exec, probe_served(plan));
    let out = match out {
        Ok(out) => out,
        Err(e) => {
            return LockedInspect {
                shared_failure: true,
                lock: Err(e.to_string()),
                lock_time: started.elapsed(),
                inspect: Err(String::new()),
                inspect_time: std::time::Duration::ZERO,
            };
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let (lock_text, inspect_text) = match text.split_once(&format!("\n{INSPECT_MARK}\n")) {
        Some((l, i)) => (format!("{l}\n"), Some(i.to_string())),
        None => (text.to_string(), None),
    };
    let marks = clock_marks(&text);
    let strip_marks = |t: &str| -> Vec<u8> {
        t.lines()
            .filter(|l| !l.starts_with(CLOCK_MARK))
            .flat_map(|l| format!("{l}\n").into_bytes())
            .collect()
    };
    let lock_out = ExecOutput {
        stdout: strip_marks(&lock_text),
        stderr: out.stderr.clone(),
        status: if inspect_text.is_some() {
            0
        } else {
            out.status
        },
    };
    let lock = parse_lock(plan, &lock_out, inspect_text.is_none());
    let exec_time = exec_done - started;
    let remote_inspect = remote_span(&marks, "inspect", "inspected")
        .unwrap_or_default()
        .min(exec_time);
    let (inspect, inspect_time) = match (&lock, inspect_text) {
        (Ok(_), Some(inspect_text)) => {
            let inspect_out = ExecOutput {
                stdout: strip_marks(&inspect_text),
                stderr: out.stderr.clone(),
                status: out.status,
            };
            let parsed = parse_inspect(plan, &inspect_out, served);
            (parsed, remote_inspect + exec_done.elapsed())
        }
        _ => (Err(String::new()), std::time::Duration::ZERO),
    };
    LockedInspect {
        shared_failure: false,
        lock,
        lock_time: exec_time - remote_inspect,
        inspect,
        inspect_time,
    }
}

type Inspected = (Vec<(LiveFile, OwnerIds)>, Option<Served>);

/// The outcome of [`lock_and_inspect`]: each step's result and duration. `inspect` matters
/// only when `lock` is `Ok`.
struct LockedInspect {
    /// The remote command itself failed (transport): which part was running is unknown.
    shared_failure: bool,
    lock: Result<String, String>,
    lock_time: std::time::Duration,
    inspect: Result<(Inspected, Option<String>), String>,
    inspect_time: std::time::Duration,
}

/// Names the holder of a lock, and says whether it is still running (when it ran on this
/// machine we can tell) and how to clear a stale one.
fn describe_holder(dir: &str, holder: &str) -> String {
    let field = |name: &str| {
        holder
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
            .unwrap_or("?")
            .to_string()
    };
    let (pid, host) = (field("pid"), field("host"));
    let here = LOCAL_HOST.as_deref().unwrap_or_default();
    let who = format!(
        "pid {pid} on {host} (user {}, started {}, run {})",
        field("user"),
        field("started"),
        field("run")
    );
    let alive = pid.parse::<u32>().is_ok_and(process_alive);
    if host == here && !alive {
        format!(
            "{dir} is held by a run that is no longer running: {who}. A killed run left it; \
             check the target, then rerun with --break-lock to clear it"
        )
    } else {
        format!(
            "another certctl run holds {dir}: {who}. Wait for it to finish; if it was killed, \
             rerun with --break-lock"
        )
    }
}

/// Whether a local process is running (a zombie counts as gone).
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The newest backup set not yet restored, for `certctl rollback`: its directory and the
/// `certctl_latest` output (which carries the set's manifest lines, `M ...`).
async fn latest_backup_set(
    session: &Session,
    plan: &TargetPlan,
) -> Result<(String, String), (Status, String)> {
    let failed = |message: String| (Status::Failed, message);
    let mut script = Script::new();
    script.raw(UNDO);
    script.cmd(&["certctl_latest", &plan.backup_dir]);
    let out = session
        .exec_script(&script, None)
        .await
        .map_err(|e| failed(format!("rollback: {e}; nothing was changed")))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let Some(set) = text.lines().find_map(|l| l.strip_prefix("SET ")) else {
        return Err(failed(format!(
            "rollback: no backup set in {}; nothing was changed",
            plan.backup_dir
        )));
    };
    let set_dir = format!("{}/{set}", plan.backup_dir);
    Ok((set_dir, text))
}

/// `certctl_latest DIR` prints the newest backup set not yet restored (`SET NAME`) and its
/// manifest (`M` lines).
const UNDO: &str = r#"set -u
certctl_latest() {
  set_name=$(ls -1 -- "$1" 2>/dev/null | grep -E '^[0-9]+-[0-9a-f]+$' | sort | tail -n 1)
  [ -n "$set_name" ] || return 0
  printf 'SET %s\n' "$set_name"
  sed 's/^/M /' -- "$1/$set_name/manifest" 2>/dev/null
}
"#;

/// `$1` lock dir, `$2` holder line: prints LOCKED, or HELD and the holder.
/// `certctl_dirs DIR` makes the backup directory (0700) unless it exists.
/// `certctl_stale DIR NAME` removes (and prints) stale temp files of the live file `DIR/NAME`
/// (`.NAME.certctl-*`, regular files only; the name is compared as a literal, never a glob) —
/// only once this run holds the lock, never another run's files. The shell lists the
/// directory itself: no process unless there is something to remove.
/// `certctl_stale_scratch TMPDIR LOCKDIR OURS` removes (and prints, SCRATCH) scratch directories in
/// `TMPDIR` tagged with this target's lock (`.certctl-lock`, written when a run creates its
/// scratch directory), other than this run's: once we hold the lock, a run that made one can
/// no longer be running on this target. Untagged directories and other targets' are kept.
const LOCK: &str = r#"set -u
umask 077
certctl_lock() {
  if mkdir -m 0700 -- "$1" 2>/dev/null; then
    printf '%s\n' "$2" > "$1/holder" && locked=1 && echo LOCKED
  else
    printf 'HELD %s\n' "$(head -n 1 -- "$1/holder" 2>/dev/null || echo unknown)"
  fi
}
certctl_dirs() { [ -d "$1" ] || mkdir -p -m 0700 -- "$1"; }
certctl_stale() {
  [ "${locked:-0}" = 1 ] || return 0
  for f in "$1"/.*; do
    case ${f##*/} in ".$2.certctl-"*) ;; *) continue ;; esac
    [ -f "$f" ] && [ ! -L "$f" ] || continue
    rm -f -- "$f" && printf 'STALE %s\n' "$f"
  done
}
certctl_stale_scratch() {
  [ "${locked:-0}" = 1 ] || return 0
  for d in "$1"/certctl-*; do
    [ -d "$d" ] && [ ! -L "$d" ] && [ -O "$d" ] && [ "$d" != "$3" ] || continue
    l=; { IFS= read -r l < "$d/.certctl-lock"; } 2>/dev/null
    [ "$l" = "$2" ] || continue
    rm -rf -- "$d" && printf 'SCRATCH %s\n' "$d"
  done
}
"#;

/// `certctl_unlock LOCKDIR RUN` removes the lock only if its holder line names run `RUN`
/// (this run): prints RELEASED, NOTOURS (another run's, or no holder written) or NOLOCK.
/// `certctl_owner LOCKDIR RUN` prints OURS, or OTHER and the holder line.
const UNLOCK: &str = r#"set -u
certctl_unlock() {
  [ -d "$1" ] || { echo NOLOCK; return 0; }
  h=$(head -n 1 -- "$1/holder" 2>/dev/null) || h=
  case " $h " in
    *" run=$2 "*) rm -rf -- "$1" && echo RELEASED ;;
    *) echo NOTOURS ;;
  esac
}
certctl_owner() {
  h=$(head -n 1 -- "$1/holder" 2>/dev/null) || h=
  case " $h " in
    *" run=$2 "*) echo OURS ;;
    *) printf 'OTHER %s\n' "${h:-no lock held}" ;;
  esac
}
"#;

/// Removes staged files, restore temp copies and the scratch directory, then the lock; best
/// effort, on every path. Each removal that fails is named, and the step fails.
async fn cleanup(session: &Session, plan: &TargetPlan) -> Result<((), Option<String>), String> {
    let mut script = Script::new();
    script.raw(PREAMBLE);
    cleanup_commands(&mut script, plan);
    script.raw("exit $fail\n");
    let out = session
        .exec_script(&script, None)
        .await
        .map_err(|e| e.to_string())?;
    cleanup_result(plan, &out)
}

/// The cleanup's commands (they need [`PREAMBLE`]): ONE `rm` for this run's temp files, its
/// scratch directory and, last, the lock — `rm` goes on past a path it cannot remove, and
/// takes its arguments in order, so no other run starts while our files are still being
/// removed. Each path still there afterwards is reported (`R PATH failed`) and sets `fail`.
fn cleanup_commands(script: &mut Script, plan: &TargetPlan) {
    let mut argv = vec!["certctl_remove_all".to_string()];
    for f in &plan.files {
        argv.push(f.staged.clone());
        argv.push(restore_temp(f));
    }
    argv.push(plan.scratch_dir.clone());
    argv.push(lock_dir(plan));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    script.cmd(&argv);
}

/// Ends a cleanup error when the lock could not be removed.
const LOCK_LEFT: &str = "; the lock stays, so the next run reports it as held by this finished \
                         run: check the target, then rerun with --break-lock";

/// Reads the output of [`cleanup_commands`] (`out` holds only its part).
fn cleanup_result(plan: &TargetPlan, out: &ExecOutput) -> StepOutcome {
    if out.success() {
        return Ok(((), None));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let lock = lock_dir(plan);
    let lock_left = text.lines().any(|l| l == format!("R {lock} failed"));
    let mut message = format!(
        "could not remove: {}{}",
        restore_failures(&text)
            .split("; ")
            .map(|l| l.strip_suffix(" failed").unwrap_or(l))
            .collect::<Vec<_>>()
            .join(", "),
        stderr_note(out)
    );
    if lock_left {
        message.push_str(LOCK_LEFT);
    }
    Err(message)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The POSIX shells targets log in with: `sh` (dash on Debian) and bash.
    const SHELLS: [&str; 2] = ["sh", "bash"];

    /// Runs `script` (the functions under test, then calls) in `shell`; its stdout.
    fn run_in(shell: &str, script: &str) -> String {
        let out = std::process::Command::new(shell)
            .args(["-c", script])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{shell}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn quoted(args: &[&str]) -> String {
        let mut script = Script::new();
        script.cmd(args);
        script.as_str().to_string()
    }

    fn names(dir: &std::path::Path) -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn the_stale_sweep_matches_the_live_name_literally() {
        for shell in SHELLS {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path().to_str().unwrap();
            for name in [
                ".c*t [1].pem.certctl-1-ab.tmp",
                ".cat 1.pem.certctl-1-ab.tmp",
            ] {
                std::fs::write(dir.path().join(name), "x").unwrap();
            }
            std::fs::create_dir(dir.path().join(".c*t [1].pem.certctl-2-ab.tmp")).unwrap();
            let script = format!(
                "{LOCK}locked=1\n{}",
                quoted(&["certctl_stale", d, "c*t [1].pem"])
            );
            assert_eq!(
                run_in(shell, &script),
                format!("STALE {d}/.c*t [1].pem.certctl-1-ab.tmp\n"),
                "{shell}"
            );
            assert_eq!(
                names(dir.path()),
                BTreeSet::from([
                    ".c*t [1].pem.certctl-2-ab.tmp".to_string(),
                    ".cat 1.pem.certctl-1-ab.tmp".to_string(),
                ]),
                "{shell}: a pattern-like name removes only its own temp file, never a directory"
            );
        }
    }

    #[test]
    fn prune_keeps_the_newest_sets_and_nothing_else_is_touched() {
        for shell in SHELLS {
            let dir = tempfile::tempdir().unwrap();
            let sets = [
                "1700000001-aa",
                "1700000002-bb.restored",
                "1700000003-cc",
                "1700000004-dd",
            ];
            let others = ["notes", "12-XY", "12-ab.old", ".lock", "-ab"];
            for name in sets.iter().chain(&others) {
                std::fs::create_dir(dir.path().join(name)).unwrap();
            }
            let script = format!(
                "{PRUNE}{}",
                quoted(&["certctl_prune", dir.path().to_str().unwrap(), "2"])
            );
            run_in(shell, &script);
            let mut expected: BTreeSet<String> = others.iter().map(|s| s.to_string()).collect();
            expected.extend(["1700000003-cc".to_string(), "1700000004-dd".to_string()]);
            assert_eq!(names(dir.path()), expected, "{shell}");
        }
    }

    #[test]
    fn one_sha256sum_hashes_every_file_and_odd_names_are_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let files = [
            "plain.pem",
            "with space.pem",
            "back\\slash.pem",
            "new\nline.pem",
        ];
        let mut args = vec!["certctl_files"];
        let paths: Vec<String> = files
            .iter()
            .map(|f| dir.path().join(f).to_str().unwrap().to_string())
            .collect();
        let idx: Vec<String> = (0..paths.len() + 2).map(|i| i.to_string()).collect();
        for (i, (p, f)) in paths.iter().zip(files).enumerate() {
            std::fs::write(p, f).unwrap();
            args.extend([idx[i].as_str(), p.as_str()]);
        }
        std::fs::create_dir(dir.path().join("a dir")).unwrap();
        let a_dir = dir.path().join("a dir").to_str().unwrap().to_string();
        let missing = dir.path().join("missing").to_str().unwrap().to_string();
        args.extend([idx[4].as_str(), &a_dir, idx[5].as_str(), &missing]);
        let script = format!("{PREAMBLE}{}", quoted(&args));
        for shell in SHELLS {
            let stdout = run_in(shell, &script);
            let (lines, hashed) = stdout.split_once("\u{1e}H 0\n").unwrap();
            assert_eq!(
                lines, "F 0 file\nF 1 file\nF 2 file\nF 3 file\nF 4 notfile\nF 5 absent\n",
                "{shell}"
            );
            let (hashed, _stat) = hashed.split_once("\u{1e}S ").unwrap();
            let out = ExecOutput {
                stdout: Vec::new(),
                stderr: Vec::new(),
                status: 0,
            };
            let by_path = hashes_by_path(hashed.lines().collect(), &out).unwrap();
            for (p, f) in paths.iter().zip(files) {
                assert_eq!(
                    by_path.get(p.as_str()),
                    Some(&sha256_hex(f.as_bytes())),
                    "{shell}: {p:?}"
                );
            }
        }
        assert_eq!(
            unescape_sha256sum("a\\qb"),
            None,
            "an unknown escape is refused"
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
            Some(std::time::Duration::from_millis(250)),
            "a decimal comma (locale) is read too"
        );
        assert_eq!(
            remote_span(&marks, "test", "failed"),
            Some(std::time::Duration::from_millis(500))
        );
        assert_eq!(
            remote_span(&marks, "failed", "start"),
            None,
            "never negative"
        );
        assert_eq!(remote_span(&marks, "start", "missing"), None);

        let out = ExecOutput {
            stdout: stdout.as_bytes().to_vec(),
            stderr: b"\x1eC test 0\nsyntax ok\n\x1eC reload 0\nreload: bad pid\n".to_vec(),
            status: 3,
        };
        let reload = command_output(&out, "reload", 0);
        assert_eq!(String::from_utf8_lossy(&reload.stderr), "reload: bad pid\n");
        assert_eq!(String::from_utf8_lossy(&reload.stdout), "T not-a-mark 1\n");
        assert_eq!(reload.status, 3);
        let test = command_output(&out, "test", 0);
        assert_eq!(
            String::from_utf8_lossy(&test.stderr),
            "syntax ok\nreload: bad pid\n"
        );
    }

    #[test]
    fn a_held_lock_is_described_in_plain_sentences() {
        let here = LOCAL_HOST.clone().unwrap_or_default();
        // Another machine's run, then a dead run of this machine: both branches.
        for (host, says) in [
            ("elsewhere", "another certctl run holds"),
            (here.as_str(), "no longer running"),
        ] {
            let holder = format!(
                "pid=4294967295 host={host} user=ops started=2026-01-01T00:00:00Z run=1-ab"
            );
            let text = describe_holder("/var/lib/certctl/backups/web/.lock", &holder);
            assert!(text.contains(says), "{text}");
            assert!(!text.contains("  "), "{text:?}");
            assert!(text.contains("--break-lock"), "{text}");
        }
    }
}
