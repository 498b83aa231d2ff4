//! Step 8, **swap, test, reload**: the change goes live. For `swap: files` on a POSIX host it
//! is ONE remote command: every rename (in one process that ignores hang-ups and interrupts,
//! so a dropped connection or a killed controller cannot leave half a pair), the directories
//! fsync'd and `swapped` journaled; then the live configuration test; then the reload and the
//! liveness check — the script stops at the first failure, so the test's verdict still comes
//! before any reload. Each is its own step in the report, timed by the remote clock.

use super::files::StagedFile;
use super::run::{Run, StepFailure, StepResult};
use super::script::{
    self, CLOCK, NO_HANGUP, clock_marks, command_failure, command_output, failed_command,
    remote_span,
};
use crate::connector::Command;
use crate::plan::TargetPlan;
use crate::report::Step;
use crate::ssh::quote::Script;
use crate::ssh::{ExecOutput, Session};

/// Adds one phase's connector commands to a script (each through `certctl_run`, so its output
/// and status can be cut out again), then the phase's clock mark.
pub(super) fn run_phase(s: &mut Script, phase: &str, commands: &[Command]) {
    for (i, argv) in commands.iter().enumerate() {
        let idx = i.to_string();
        let mut cmd: Vec<&str> = vec!["certctl_run", phase, &idx];
        cmd.extend(argv.iter().map(String::as_str));
        s.cmd(&cmd);
    }
    s.cmd(&["certctl_t", phase]);
}

/// The live test, the reload and the liveness check (after `swap`, when given), in one
/// script that stops at the first failure; progress marked in the journal.
fn script(plan: &TargetPlan, swap: Option<&[StagedFile<'_>]>) -> Script {
    let mut s = Script::new();
    s.raw(NO_HANGUP)
        .raw(*CLOCK)
        .raw(*script::JOURNAL)
        .raw(*script::SWAP);
    s.cmd(&["certctl_t", "start"]);
    if let Some(files) = swap {
        super::files::swap_commands(&mut s, plan, files);
    }
    s.cmd(&["certctl_t", "swap"]);
    run_phase(&mut s, "test", &plan.test);
    s.cmd(&["certctl_mark", &plan.backup_dir, "tested"]);
    run_phase(&mut s, "reload", &plan.reload);
    run_phase(&mut s, "alive", &plan.alive);
    s.cmd(&["certctl_mark", &plan.backup_dir, "reloaded"]);
    s
}

/// Swap, test and reload of `files` in one command.
pub(super) async fn swap_test_reload(
    run: &mut Run<'_>,
    session: &Session,
    files: &[StagedFile<'_>],
) -> Result<(), StepFailure> {
    let detail = match files.iter().filter(|f| f.in_place.is_some()).count() {
        0 => format!("{} file(s) replaced", files.len()),
        n => format!(
            "{} file(s) replaced ({n} written in place, into the live inode)",
            files.len()
        ),
    };
    combined(run, session, script(run.plan, Some(files)), Some(detail)).await
}

/// Test and reload in one command (after a `swap: commands` apply, on a POSIX host).
pub(super) async fn test_reload(run: &mut Run<'_>, session: &Session) -> Result<(), StepFailure> {
    combined(run, session, script(run.plan, None), None).await
}

/// Runs a combined script and reports its steps: swap (when `swap_detail` says it ran),
/// test, reload.
async fn combined(
    run: &mut Run<'_>,
    session: &Session,
    s: Script,
    swap_detail: Option<String>,
) -> Result<(), StepFailure> {
    let plan = run.plan;
    let first = if swap_detail.is_some() {
        Step::Swap
    } else {
        Step::Test
    };
    let t = run.begin(first);
    let shared = if swap_detail.is_some() {
        "swap, test and reload"
    } else {
        "test and reload"
    };
    let out = run.exec_shared(session, &s, first, t, shared).await?;
    let total = t.elapsed();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let marks = clock_marks(&text);
    let span = |a: &str, b: &str| remote_span(&marks, a, b).unwrap_or_default().min(total);
    let failed = failed_command(&text);
    let phase_failed = |phase: &str| failed.as_ref().filter(|(p, _, _)| p == phase);
    let ok_detail = |n: usize| (n > 0).then(|| format!("{n} command(s) ok"));

    let swap_took = span("start", "swap");
    if let Some(detail) = swap_detail {
        let result = match phase_failed("swap") {
            Some((_, idx, status)) => Err(swap_failure(plan, &out, *idx, *status)),
            None if !marks.contains_key("swap") => Err(command_failure("swap script", &out)),
            None => Ok(((), Some(detail))),
        };
        run.record(Step::Swap, swap_took, result)?;
        run.begin(Step::Test);
    }
    let reload_took = span("test", "alive").max(span("test", "failed"));
    let test_took = total.saturating_sub(swap_took).saturating_sub(reload_took);
    let command_error = |phase: &str, idx: usize, status: u32, argv: &[String]| {
        command_failure(
            &crate::ssh::quote::label(argv),
            &command_output(&out, phase, idx, status),
        )
    };
    let test = match phase_failed("test") {
        Some((_, idx, status)) if *idx < plan.test.len() => {
            Err(command_error("test", *idx, *status, &plan.test[*idx]))
        }
        _ if !marks.contains_key("test") => Err(command_failure("test and reload script", &out)),
        _ => Ok(((), ok_detail(plan.test.len()))),
    };
    run.record(Step::Test, test_took, test)?;
    run.begin(Step::Reload);
    let reload = match failed.as_ref() {
        Some((p, idx, status)) if p == "reload" && *idx < plan.reload.len() => {
            Err(command_error("reload", *idx, *status, &plan.reload[*idx]))
        }
        Some((p, idx, status)) if p == "alive" && *idx < plan.alive.len() => Err(format!(
            "the server is not running after the reload: {}",
            command_error("alive", *idx, *status, &plan.alive[*idx])
        )),
        _ if !out.success() || !marks.contains_key("alive") => {
            Err(command_failure("test and reload script", &out))
        }
        _ => Ok(((), ok_detail(plan.reload.len()))),
    };
    run.record(Step::Reload, reload_took, reload)
}

/// A rename that failed: which file, and what `mv` said.
fn swap_failure(plan: &TargetPlan, out: &ExecOutput, idx: usize, status: u32) -> String {
    let path = plan.files.get(idx).map_or("?", |f| f.path.as_str());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let own = stderr.split("\u{1e}C ").next().unwrap_or_default();
    let said = crate::report::sanitize(own.as_bytes());
    format!(
        "replacing {path} failed (exit status {status}){}",
        if said.trim().is_empty() {
            String::new()
        } else {
            format!(": {}", said.trim())
        }
    )
}

/// Runs commands in order, one exec each; the first failure stops, with its output.
pub(super) async fn run_commands(session: &Session, commands: &[Command]) -> StepResult<()> {
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
pub(super) async fn reload(session: &Session, plan: &TargetPlan) -> StepResult<()> {
    let (_, detail) = run_commands(session, &plan.reload).await?;
    run_commands(session, &plan.alive)
        .await
        .map_err(|e| format!("the server is not running after the reload: {e}"))?;
    Ok(((), detail))
}

/// Test, reload and liveness one exec each (Windows targets: no shell to combine them in).
pub(super) async fn test_reload_each(
    run: &mut Run<'_>,
    session: &Session,
) -> Result<(), StepFailure> {
    let plan = run.plan;
    run.step(Step::Test, run_commands(session, &plan.test))
        .await?;
    run.step(Step::Reload, reload(session, plan)).await
}

/// After restoring the previous files: reload; if the server is not running (it died on the
/// new files), start it; then it must be alive.
pub(super) async fn reload_or_start(session: &Session, plan: &TargetPlan) -> StepResult<()> {
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
