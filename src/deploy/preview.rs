//! Step 6, **preview**: the connector's preview commands make the target's own software load
//! the STAGED files, then run the live configuration test. A preview command that is also one
//! of the connector's `test` commands is that live test; when live files are being repaired
//! (missing, broken, mismatched), its failure is expected and attributed to them rather than
//! fatal — the post-swap test must still pass. A preview command is that live test when it
//! names none of the run's staged files, templates or inputs: it can only load live files.
//!
//! To spare round trips, the preview shares one remote command with what follows it: the
//! backup (step 7) on a deploy, the cleanup on a dry-run. Each is still its own step in the
//! report, with its own status, message and duration (from the remote clock).

use super::cleanup;
use super::content::{FileBytes, material_bytes};
use super::files::{StagedFile, backup_commands};
use super::journal::Entry;
use super::names::set_dir;
use super::run::{Run, StepFailure, StepResult};
use super::script::{
    self, CLOCK, STRICT, after_mark, clock_marks, command_failure, command_output, failed_command,
    remote_span, tolerated,
};
use super::stage::{stage_commands, staged_detail};
use crate::plan::{InputContent, TargetPlan};
use crate::report::Step;
use crate::ssh::quote::Script;
use crate::ssh::{ExecOutput, Session};

/// For each preview command, whether it is a live configuration test: it names none of the
/// run's staged files, keystore working copies, templates or inputs.
pub(super) fn live_tests(plan: &TargetPlan) -> Vec<bool> {
    let staged: Vec<&str> = plan
        .files
        .iter()
        .flat_map(|f| std::iter::once(f.staged.as_str()).chain(f.work.as_deref()))
        .chain(plan.templates.iter().map(|t| t.path.as_str()))
        .chain(plan.inputs.iter().map(|i| i.path.as_str()))
        .collect();
    plan.preview
        .iter()
        .map(|argv| !argv.iter().any(|a| staged.iter().any(|s| a.contains(s))))
        .collect()
}

/// The preview's private inputs and templates, into the scratch directory (0600).
pub(super) async fn upload_inputs(session: &Session, plan: &TargetPlan) -> Result<(), String> {
    for input in &plan.inputs {
        let content = match &input.content {
            InputContent::Material(role) => material_bytes(plan.material(input.cert), *role),
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

/// The preview phase of a combined script (it needs [`CLOCK`]): each command through
/// `certctl_run`, or `certctl_run_tolerated` for the live test while repairing.
fn phase(s: &mut Script, plan: &TargetPlan, repairing: bool) {
    for (i, (argv, live)) in plan.preview.iter().zip(live_tests(plan)).enumerate() {
        let idx = i.to_string();
        let runner = if repairing && live {
            "certctl_run_tolerated"
        } else {
            "certctl_run"
        };
        let mut cmd: Vec<&str> = vec![runner, "preview", &idx];
        cmd.extend(argv.iter().map(String::as_str));
        s.cmd(&cmd);
    }
    s.cmd(&["certctl_t", "preview"]);
}

/// The preview's verdict from a combined script's output: the first command that failed (its
/// own output and exit status), or — when the script never got past the preview — the
/// script's; a tolerated live test is named in the detail, with what it said.
fn verdict(
    plan: &TargetPlan,
    out: &ExecOutput,
    got_past: bool,
    repairs: Option<&str>,
) -> StepResult<()> {
    let text = String::from_utf8_lossy(&out.stdout);
    match failed_command(&text) {
        Some((phase, idx, status)) if phase == "preview" && idx < plan.preview.len() => {
            return Err(command_failure(
                &crate::ssh::quote::label(&plan.preview[idx]),
                &command_output(out, "preview", idx, status),
            ));
        }
        _ if !got_past => return Err(command_failure("preview script", out)),
        _ => {}
    }
    let n = plan.preview.len();
    let mut detail = (n > 0).then(|| format!("{n} command(s) ok"));
    for (idx, status) in tolerated(&text, "preview") {
        let Some(argv) = plan.preview.get(idx) else {
            continue;
        };
        let said = command_failure(
            &crate::ssh::quote::label(argv),
            &command_output(out, "preview", idx, status),
        );
        detail = Some(format!(
            "the staged files load; the live configuration test fails on the live files being \
             repaired ({}), as expected: {said}",
            repairs.unwrap_or("repairs")
        ));
    }
    Ok(((), detail))
}

/// Stage, preview, then (only if both passed) the backup and the journal, in ONE remote
/// command whose standard input carries the staged files. Three steps in the report, each
/// with its own status, duration (from the remote clock) and message.
pub(super) async fn with_backup(
    run: &mut Run<'_>,
    session: &Session,
    files: &[StagedFile<'_>],
    journal: &str,
    entries: &[Entry],
    repairs: Option<&str>,
) -> Result<(), StepFailure> {
    let plan = run.plan;
    let mut s = Script::new();
    s.raw(*CLOCK).raw(*script::JOURNAL).raw(*script::STAGE);
    s.raw("fail=0\n");
    s.cmd(&["certctl_t", "start"]);
    // Should this run be killed now, the rest of this script (the backup, the journal) still
    // runs: marked busy, so the run that takes the lock next waits for it.
    s.cmd(&["certctl_busy", &plan.backup_dir]);
    let (stdin, staged) = stage_commands(&mut s, plan, files);
    phase(&mut s, plan, repairs.is_some());
    s.raw("printf '\\036BACKUP\\n'; printf '\\036BACKUP\\n' >&2\n");
    // Strict mode only after the preview: the connector's commands run as they would alone.
    s.raw(STRICT).raw(*script::BACKUP);
    backup_commands(&mut s, plan, journal, entries, &staged);
    s.cmd(&["certctl_t", "backup"]);
    s.raw("exit $fail\n");
    let t = run.begin(Step::Stage);
    let out = run
        .exec_shared_stdin(
            session,
            &s,
            stdin.expose(),
            Step::Stage,
            t,
            "stage, preview and backup",
        )
        .await?;
    let total = t.elapsed();
    let marks = clock_marks(&String::from_utf8_lossy(&out.stdout));
    let span = |a: &str, b: &str| remote_span(&marks, a, b).unwrap_or_default().min(total);
    let (backup_took, preview_took) = (span("preview", "backup"), span("stage", "preview"));
    run.record(
        Step::Stage,
        total.saturating_sub(preview_took + backup_took),
        stage_result(&out, files),
    )?;
    run.begin(Step::Preview);
    let part = |bytes: &[u8]| after_mark(bytes, "\u{1e}BACKUP\n");
    let got_past = part(&out.stdout).is_some();
    run.record(
        Step::Preview,
        preview_took,
        verdict(plan, &out, got_past, repairs),
    )?;
    run.begin(Step::Backup);
    let backup_out = ExecOutput {
        stdout: part(&out.stdout).unwrap_or_default(),
        stderr: part(&out.stderr).unwrap_or_default(),
        status: out.status,
    };
    let result = backup_result(plan, &backup_out);
    run.record(Step::Backup, backup_took, result)
}

/// The stage part's outcome in a combined script's output: what `certctl_put` could not do.
fn stage_result(out: &ExecOutput, files: &[StagedFile<'_>]) -> StepResult<()> {
    let text = String::from_utf8_lossy(&out.stdout);
    if text.lines().any(|l| l.starts_with("\u{1e}T stage ")) {
        return Ok(((), Some(staged_detail(files))));
    }
    let failed: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("S "))
        .map(crate::report::sanitize_line)
        .collect();
    if failed.is_empty() {
        return Err(command_failure("stage script", out));
    }
    Err(format!("{}{}", failed.join("; "), script::stderr_note(out)))
}

/// The backup on its own (after a keystore's working copy was placed), fsyncing `staged` too.
pub(super) async fn backup_alone(
    plan: &TargetPlan,
    session: &Session,
    journal: &str,
    entries: &[Entry],
    staged: &[String],
) -> StepResult<()> {
    let mut s = Script::new();
    s.raw(STRICT).raw(*script::BACKUP).raw(*script::JOURNAL);
    backup_commands(&mut s, plan, journal, entries, staged);
    s.raw("exit $fail\n");
    let out = session
        .exec_script(&s, None)
        .await
        .map_err(|e| e.to_string())?;
    backup_result(plan, &out)
}

/// The backup part's outcome.
pub(super) fn backup_result(plan: &TargetPlan, out: &ExecOutput) -> StepResult<()> {
    if out.success() {
        return Ok(((), Some(format!("backup set {}", set_dir(plan)))));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Err(format!(
        "{}{}",
        script::tagged_failures(&text, "B"),
        script::stderr_note(out)
    ))
}

/// The preview alone (one remote command), when the backup cannot share it: a keystore's
/// working copy must be placed between the two.
pub(super) async fn alone(
    run: &mut Run<'_>,
    session: &Session,
    repairs: Option<&str>,
) -> Result<(), StepFailure> {
    let plan = run.plan;
    let t = run.begin(Step::Preview);
    if let Err(message) = upload_inputs(session, plan).await {
        return run.record(Step::Preview, t.elapsed(), Err(message));
    }
    let mut s = Script::new();
    s.raw(*CLOCK);
    phase(&mut s, plan, repairs.is_some());
    let out = session.exec_script(&s, None).await;
    let result = match out {
        Ok(out) => verdict(plan, &out, true, repairs),
        Err(e) => Err(e.to_string()),
    };
    run.record(Step::Preview, t.elapsed(), result)
}

/// A dry-run's stage, preview and the cleanup in ONE remote command: the cleanup runs
/// whether or not the stage and preview passed, and its outcome is kept for the cleanup step
/// ([`Run::ran_early`]).
pub(super) async fn then_cleanup(
    run: &mut Run<'_>,
    session: &Session,
    files: &[StagedFile<'_>],
    repairs: Option<&str>,
) -> Result<(), StepFailure> {
    let plan = run.plan;
    let mut s = Script::new();
    s.raw(*CLOCK).raw(*script::JOURNAL).raw(*script::STAGE);
    s.cmd(&["certctl_t", "start"]);
    // Stage and preview in a subshell: a failure ends it, not the cleanup after it.
    s.raw("(\nfail=0\n");
    let (stdin, _) = stage_commands(&mut s, plan, files);
    phase(&mut s, plan, repairs.is_some());
    s.raw(")\n");
    s.cmd(&["certctl_t", "cleanup"]);
    s.raw("printf '\\036CLEANUP\\n'; printf '\\036CLEANUP\\n' >&2\n");
    s.raw(STRICT).raw(*script::CLEANUP);
    cleanup::commands(&mut s, plan, &run.temps);
    s.cmd(&["certctl_t", "cleaned"]);
    s.raw("exit $fail\n");
    let t = run.begin(Step::Stage);
    let out = run
        .exec_shared_stdin(
            session,
            &s,
            stdin.expose(),
            Step::Stage,
            t,
            "stage, preview and cleanup",
        )
        .await?;
    let total = t.elapsed();
    let marks = clock_marks(&String::from_utf8_lossy(&out.stdout));
    let span = |a: &str, b: &str| remote_span(&marks, a, b).unwrap_or_default().min(total);
    let (cleanup_took, preview_took) = (span("cleanup", "cleaned"), span("stage", "preview"));
    let mark = "\u{1e}CLEANUP\n";
    let got_past = match after_mark(&out.stdout, mark) {
        Some(stdout) => {
            let cleanup_out = ExecOutput {
                stdout,
                stderr: after_mark(&out.stderr, mark).unwrap_or_default(),
                status: out.status,
            };
            let result = cleanup::result(plan, &cleanup_out);
            run.ran_early = Some((Step::Cleanup, result, cleanup_took));
            true
        }
        None => false,
    };
    let stage_took = total.saturating_sub(preview_took + cleanup_took);
    run.record(Step::Stage, stage_took, stage_result(&out, files))?;
    run.begin(Step::Preview);
    run.record(
        Step::Preview,
        preview_took,
        verdict(plan, &out, got_past, repairs),
    )
}
