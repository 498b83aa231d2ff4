//! Step 11, **cleanup**, on every path: what a `swap: commands` preview left on the target is
//! discarded (and, after a verified deploy, old versions pruned and `after_deploy` run); the
//! journal this run wrote is closed into its backup set — unless the rollback failed, when it
//! stays for the next run to recover; then this run's temp files, its scratch directory and,
//! last, the lock are removed. Every removal that fails is named, and the step fails.

use super::lock::lock_dir;
use super::run::{Run, StepResult};
use super::script::{self, STRICT, stderr_note, tagged_failures};
use super::{Remote, Swap, commands, windows};
use crate::plan::TargetPlan;
use crate::report::{Status, Step};
use crate::ssh::quote::Script;
use crate::ssh::{ExecOutput, Session};

/// Ends a cleanup error when the lock could not be removed.
pub(super) const LOCK_LEFT: &str = "; the lock stays, so the next run reports it as held by this \
                                    finished run: check the target, then rerun with --break-lock";

/// The cleanup's commands (they need [`STRICT`], [`script::CLEANUP`]): ONE `rm` for `temps`
/// (this run's files beside live ones), the scratch directory and, last, the lock if it is
/// still this run's.
pub(super) fn commands(s: &mut Script, plan: &TargetPlan, temps: &[String]) {
    let mut argv = vec![
        "certctl_cleanup".to_string(),
        lock_dir(plan),
        plan.run_id.clone(),
    ];
    argv.extend(temps.iter().cloned());
    argv.push(plan.scratch_dir.clone());
    s.cmd(&argv);
}

/// Reads the output of [`commands`] (`out` holds only its part).
pub(super) fn result(plan: &TargetPlan, out: &ExecOutput) -> StepResult<()> {
    if out.success() {
        return Ok(((), None));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let lock = lock_dir(plan);
    let lock_left = text.lines().any(|l| l == format!("R {lock} failed"));
    let mut message = format!(
        "could not remove: {}{}",
        tagged_failures(&text, "R")
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

/// The cleanup step (or the report of the one that already ran inside a dry-run's preview).
pub(super) async fn run(run: &mut Run<'_>, session: &Session) {
    if let Some((step, result, took)) = run.ran_early.take() {
        run.begin(step);
        let _ = run.record(step, took, result);
        return;
    }
    let t = run.begin(Step::Cleanup);
    let result = cleanup(run, session).await;
    let _ = run.record(Step::Cleanup, t.elapsed(), result);
}

async fn cleanup(run: &Run<'_>, session: &Session) -> StepResult<()> {
    let plan = run.plan;
    let status = run.report.status;
    let deployed = status == Status::Deployed;
    let mut errors = Vec::new();
    let mut notes = Vec::new();
    if let Swap::Commands(swap) = plan.swap() {
        errors.extend(commands::discard(session, plan, swap).await);
        if deployed {
            for result in [
                commands::prune(session, plan, swap).await,
                commands::after_deploy(session, plan, swap).await,
            ] {
                match result {
                    Ok(note) => notes.extend(note),
                    Err(e) => errors.push(e),
                }
            }
        }
    }
    // A failed rollback leaves the journal: the next run repairs what this one could not.
    let close = run
        .journal
        .as_ref()
        .filter(|_| status != Status::RollbackFailed);
    let housekeeping = match plan.remote() {
        Remote::Windows => windows::cleanup(session, plan, close, status).await,
        Remote::Posix => posix(session, plan, &run.temps, close, status).await,
    };
    match housekeeping {
        Ok((_, detail)) => notes.extend(detail),
        Err(e) => errors.push(e),
    }
    if errors.is_empty() {
        Ok(((), (!notes.is_empty()).then(|| notes.join("; "))))
    } else {
        Err(errors.join("; "))
    }
}

/// The journal closed (when `close` says so), then the one `rm`.
async fn posix(
    session: &Session,
    plan: &TargetPlan,
    temps: &[String],
    close: Option<&super::run::OpenJournal>,
    status: Status,
) -> StepResult<()> {
    let mut s = Script::new();
    s.raw(STRICT).raw(*script::JOURNAL).raw(*script::CLEANUP);
    if let Some(j) = close {
        close_command(&mut s, plan, &plan.run_id, j, status);
    }
    commands(&mut s, plan, temps);
    s.raw("exit $fail\n");
    let out = session
        .exec_script(&s, None)
        .await
        .map_err(|e| e.to_string())?;
    result(plan, &out)
}

/// `certctl_journal_close` for a journal of run `run_id`.
pub(super) fn close_command(
    s: &mut Script,
    plan: &TargetPlan,
    run_id: &str,
    j: &super::run::OpenJournal,
    status: Status,
) {
    let retire = if j.keep_set_when == Some(status) {
        "-"
    } else {
        j.set.as_str()
    };
    s.cmd(&[
        "certctl_journal_close",
        &plan.backup_dir,
        run_id,
        status.as_str(),
        &j.dest,
        retire,
    ]);
}
