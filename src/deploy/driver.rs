//! The driver: one target's run, step by step, as the module documentation numbers them.
//! Each step's work lives in its own module; this file only orders them and decides what
//! follows a failure (before the swap: nothing live changed; from the swap on: roll back).

use std::time::Duration;

use tokio::time::Instant;

use super::files::{self, StagedFile, decide, diagnose, file_report, read_old_certs};
use super::inspect::{self, Inspected, ServedNow, probe_served, served_detail, successes};
use super::journal::{Intent, Journal, Kind, Op};
use super::lock::{self, LockAnswer};
use super::recover::{self, Recovered};
use super::run::{Outcome, Run, StepFailure, UNTOUCHED};
use super::script::{self, CLOCK, STRICT, clock_marks, remote_span};
use super::stage;
use super::status;
use super::verify::all_served;
use super::{
    DeployOptions, Mode, Remote, Swap, apply, cleanup, commands, preview, rollback, verify, windows,
};
use crate::material::Expected;
use crate::plan::TargetPlan;
use crate::report::{Reporter, Status, Step, TargetReport};
use crate::ssh::quote::Script;
use crate::ssh::{ExecOutput, Session, SshErrorKind};

/// What inspect found, and how long it took (it may have run inside the lock's command).
struct Inspection {
    result: Result<Inspected, String>,
    /// By certificate.
    served: ServedNow,
    took: Duration,
    /// What the binding check concluded (it runs with inspect in the lock's command).
    binding: super::binding::Checked,
}

/// What taking the lock brought back: the active journal, and inspect when it ran with it.
struct Taken {
    journal: Option<Result<Journal, String>>,
    inspection: Option<Inspection>,
}

/// One target's whole run: 1. connect, then everything else over that session.
pub(super) async fn run_target(
    plan: &TargetPlan,
    options: &DeployOptions,
    reporter: &dyn Reporter,
    stop: tokio_util::sync::CancellationToken,
) -> TargetReport {
    let started = Instant::now();
    let mut run = Run::new(plan, options, reporter, stop);
    let t = run.begin(Step::Connect);
    match Session::connect(&plan.ssh).await {
        Ok(mut session) => {
            let _ = run.record(Step::Connect, t.elapsed(), Ok(((), None)));
            if passes_gate(&mut run, options).await {
                on_session(&mut run, &mut session).await;
            }
            // The run may have replaced the session (a reconnect to roll back).
            session.close().await;
        }
        Err(e) => {
            let message = e.to_string();
            let _ = run.record::<()>(Step::Connect, t.elapsed(), Err(message.clone()));
            // A login that works but may not `sudo -n` is reachable: it fails like any other
            // step the target refuses.
            let status = match e.kind {
                SshErrorKind::Become { .. } => Status::Failed,
                _ => Status::Unreachable,
            };
            run.conclude(Err((status, format!("{message}; nothing was changed"))));
        }
    }
    run.report.duration_ms = started.elapsed().as_millis() as u64;
    run.report.sync_first();
    run.report
}

/// Waits for the run-wide gate, if any: false when it refused the run (the target ends
/// skipped, untouched).
async fn passes_gate(run: &mut Run<'_>, options: &DeployOptions) -> bool {
    let Some(gate) = &options.gate else {
        return true;
    };
    let verdict = gate.wait().await;
    if verdict.refused {
        run.conclude(Err((
            Status::Skipped,
            format!("not started: the policy gate refused the run; {UNTOUCHED}"),
        )));
        return false;
    }
    run.served_at_gate = verdict.served.get(&run.plan.name).cloned();
    true
}

/// Steps 2–11.
async fn on_session(run: &mut Run<'_>, session: &mut Session) {
    if run.mode == Mode::Status {
        let outcome = status::status(run, session).await;
        run.conclude(outcome);
        return;
    }
    // 2. lock (on a POSIX deploy, inspect runs in the same remote command)
    let taken = match lock_step(run, session).await {
        Ok(taken) => taken,
        Err(failure) => {
            let released = super::connection::release_after_failure(run, session).await;
            run.conclude(Err((
                Status::Failed,
                format!("{}; {UNTOUCHED}{released}", failure.cause()),
            )));
            return;
        }
    };
    // 3. recover an interrupted change
    let mut inspection = taken.inspection;
    if let Some(journal) = taken.journal {
        match recover::recover(run, session, journal).await {
            Ok(Recovered::Repaired) => inspection = None,
            Ok(Recovered::Nothing) => {}
            Err(outcome) => {
                run.conclude(Err(outcome));
                cleanup::run(run, session).await;
                return;
            }
        }
    }
    // 4–10.
    let outcome = match run.mode {
        Mode::Rollback => match run.plan.swap() {
            Swap::Files => rollback::undo(run, session).await,
            Swap::Commands(swap) => commands::undo(run, session, swap).await,
        },
        _ => deploy(run, session, inspection).await,
    };
    run.conclude(outcome);
    // 11.
    cleanup::run(run, session).await;
}

/// Step 2: the lock, with `--break-lock` when asked (and allowed), and what comes with it.
async fn lock_step(run: &mut Run<'_>, session: &Session) -> Result<Taken, StepFailure> {
    let plan = run.plan;
    if plan.remote() == Remote::Windows {
        let break_lock = run.break_lock;
        let t = run.begin(Step::Lock);
        let taken = windows::lock(session, plan, break_lock).await;
        let (detail, journal) = match taken {
            Ok(x) => x,
            Err(e) => return run.record(Step::Lock, t.elapsed(), Err(e)),
        };
        run.record(Step::Lock, t.elapsed(), Ok(((), Some(detail))))?;
        let inspection = match run.mode {
            Mode::Rollback => None,
            _ => {
                let t = Instant::now();
                let (scratch, served) =
                    tokio::join!(windows::make_scratch(session, plan), probe_served(plan));
                Some(Inspection {
                    result: scratch.map(|()| Vec::new()),
                    served: successes(served),
                    took: t.elapsed(),
                    binding: Default::default(),
                })
            }
        };
        return Ok(Taken {
            journal,
            inspection,
        });
    }
    let t = run.begin(Step::Lock);
    let mut broke = None;
    loop {
        let (out, lock_text, inspection) = posix_lock(run, session, t).await?;
        let journal = lock::journal_in(&lock_text);
        match lock::parse_lock(plan, &lock_text) {
            LockAnswer::Locked(_) if lock::check_trust(&plan.backup_dir, &lock_text).is_err() => {
                let why = lock::check_trust(&plan.backup_dir, &lock_text).unwrap_err();
                return run.record(Step::Lock, t.elapsed(), Err(why));
            }
            LockAnswer::Locked(detail) => {
                let detail = match broke.take() {
                    Some(b) => format!("{b}; {detail}"),
                    None => detail,
                };
                let lock_took = t
                    .elapsed()
                    .saturating_sub(inspection.as_ref().map_or(Duration::ZERO, |i| i.took));
                run.record(Step::Lock, lock_took, Ok(((), Some(detail))))?;
                return Ok(Taken {
                    journal,
                    inspection,
                });
            }
            LockAnswer::Held(holder) if run.break_lock && broke.is_none() => {
                match lock::break_lock(session, plan, &holder).await {
                    Ok(detail) => broke = Some(detail),
                    Err(e) => return run.record(Step::Lock, t.elapsed(), Err(e)),
                }
            }
            LockAnswer::Held(holder) => {
                let j = journal.as_ref().and_then(|j| j.as_ref().ok());
                let why = super::holder::describe_holder(&super::names::lock_dir(plan), &holder, j);
                return run.record(Step::Lock, t.elapsed(), Err(why));
            }
            LockAnswer::Failed(why) => {
                let why = format!("{why}{}", script::stderr_note(&out));
                return run.record(Step::Lock, t.elapsed(), Err(why));
            }
        }
    }
}

/// The POSIX lock command: lock (+ journal), and for a deploy the inspect in the same script
/// once the lock is held, with the probe of what is served meanwhile. Returns the command's
/// output, the lock's part of its stdout, and the inspection.
async fn posix_lock(
    run: &mut Run<'_>,
    session: &Session,
    t: Instant,
) -> Result<(ExecOutput, String, Option<Inspection>), StepFailure> {
    let plan = run.plan;
    let with_inspect = run.mode != Mode::Rollback;
    let mut s = Script::new();
    s.raw(STRICT)
        .raw(*CLOCK)
        .raw(*script::LOCK)
        .raw(*script::INSPECT);
    lock::lock_commands(&mut s, plan);
    if with_inspect {
        s.raw("if [ \"${locked:-0}\" = 1 ]; then\n");
        s.cmd(&["certctl_t", "inspect"]);
        s.raw("printf '\\036INSPECT\\n'\n");
        inspect::commands(&mut s, plan, true, false);
        s.raw("s=$?\n");
        super::binding::commands(&mut s, plan);
        s.cmd(&["certctl_t", "inspected"]);
        s.raw("exit $s\nfi\n");
    }
    if with_inspect {
        // Another command always follows: the preview, a reload or the cleanup.
        session.prefetch_channel();
    }
    let exec = async {
        let out = session.exec_script(&s, None).await;
        (out, Instant::now())
    };
    let at_gate = run.served_at_gate.take();
    let probe = async {
        match at_gate {
            Some(served) if with_inspect => served,
            _ if with_inspect => successes(probe_served(plan).await),
            _ => Vec::new(),
        }
    };
    let ((out, done), served) = tokio::join!(exec, probe);
    let out = match out {
        Ok(out) => out,
        Err(e) => {
            let failure = run.record::<()>(Step::Lock, t.elapsed(), Err(e.to_string()));
            let mut failure = failure.expect_err("an error is recorded as a failure");
            if with_inspect {
                failure.shared = Some("lock and inspect");
            }
            return Err(failure);
        }
    };
    let (text, binding) = super::binding::take(run, session, &out.stdout).await;
    let (lock_text, inspect_text) = match text.split_once("\n\u{1e}INSPECT\n") {
        Some((l, i)) => (format!("{l}\n"), Some(i.to_string())),
        None => (text.clone(), None),
    };
    let inspection = inspect_text.map(|inspect_text| {
        let marks = clock_marks(&text);
        let exec_took = done - t;
        let remote = remote_span(&marks, "inspect", "inspected")
            .unwrap_or_default()
            .min(exec_took);
        let part = ExecOutput {
            stdout: script::without_clock(&inspect_text).into_bytes(),
            stderr: out.stderr.clone(),
            status: out.status,
        };
        Inspection {
            result: binding.fold(inspect::parse(&plan.files, &part)),
            served,
            took: remote + done.elapsed(),
            binding,
        }
    });
    Ok((out, lock_text, inspection))
}

/// Steps 4–10 of a deploy (or dry-run).
async fn deploy(
    run: &mut Run<'_>,
    session: &mut Session,
    inspection: Option<Inspection>,
) -> Outcome {
    let plan = run.plan;
    let inspection = match inspection {
        Some(i) => i,
        // After a recovery the live state changed: look again (the scratch directory was
        // made with the lock).
        None => reinspect(session, plan).await,
    };
    match plan.swap() {
        Swap::Commands(swap) => {
            run.begin(Step::Inspect);
            let detail = served_detail(plan, &inspection.served);
            let result = inspection.result.map(|_| ((), Some(detail)));
            if let Err(f) = run.record(Step::Inspect, inspection.took, result) {
                return Err(run.untouched(f));
            }
            // One certificate: the plan refuses several for a `swap: commands` connector.
            let served = inspection.served.into_iter().next().flatten();
            commands::deploy(run, session, swap, served).await
        }
        Swap::Files => deploy_files(run, session, inspection).await,
    }
}

/// Inspect again, on its own (after a recovery).
async fn reinspect(session: &Session, plan: &TargetPlan) -> Inspection {
    let t = Instant::now();
    let (result, served) = match plan.remote() {
        Remote::Windows => (Ok(Vec::new()), successes(probe_served(plan).await)),
        Remote::Posix => match inspect::run(session, plan, false).await {
            Ok((live, served)) => (Ok(live), served),
            Err(e) => (Err(e), Vec::new()),
        },
    };
    Inspection {
        result,
        served,
        took: t.elapsed(),
        binding: Default::default(),
    }
}

/// Steps 4–10 for `swap: files`.
async fn deploy_files(run: &mut Run<'_>, session: &mut Session, inspection: Inspection) -> Outcome {
    let plan = run.plan;
    // 4. inspect: what each live file is, what is served.
    let served_before = inspection.served.clone();
    let files = match inspect_files(run, inspection).await {
        Ok(files) => files,
        Err(f) => return Err(run.untouched(f)),
    };
    if let Err(f) = verify::attributable(run, &files, &served_before) {
        return Err(run.untouched(f));
    }
    if files.iter().all(|f| f.current()) && !run.force {
        if all_served(plan, &served_before) {
            return Ok(Status::Unchanged);
        }
        if run.dry_run() {
            return Ok(Status::WouldChange);
        }
        return reload_only(run, session, served_before).await;
    }
    for f in &files {
        run.temps.extend(f.temps(&plan.run_id));
    }
    // 5. stage, 6. preview (a dry-run stops here), 7. backup + journal
    let old: Vec<Option<Expected>> = (0..plan.certs.len())
        .map(|i| {
            let s = served_before.get(i).cloned().flatten()?;
            Some(Expected {
                leaf: s.leaf,
                chain: s.chain,
            })
        })
        .collect();
    let entries = files::entries(&files);
    if !run.dry_run() {
        session.prefetch_channel();
    }
    if let Err(f) = preview_and_backup(run, session, &files, &entries, &old).await {
        return Err(run.untouched(f));
    }
    if run.dry_run() {
        return Ok(Status::WouldChange);
    }
    // 8. swap, test, reload; 9. verify — from here any failure rolls back (10).
    // The cleanup (or the rollback) follows the swap's command.
    session.prefetch_channel();
    let after = match apply::swap_test_reload(run, session, &files).await {
        Ok(()) => verify::verify_new(run).await,
        Err(f) => Err(f),
    };
    match after {
        Ok(()) => Ok(Status::Deployed),
        Err(failure) => Err(rollback::after_failure(run, session, &entries, old, failure).await),
    }
}

/// Step 4 for files: each live file decided (mode, owner, what is written where), the live
/// certificates read back, what is broken found; the report's files and old fingerprint.
async fn inspect_files<'p>(
    run: &mut Run<'p>,
    inspection: Inspection,
) -> Result<Vec<StagedFile<'p>>, StepFailure> {
    let plan = run.plan;
    run.begin(Step::Inspect);
    let live = match inspection.result {
        Ok(live) => live,
        Err(e) => return run.record(Step::Inspect, inspection.took, Err(e)),
    };
    let mut files: Vec<StagedFile<'p>> = plan
        .files
        .iter()
        .zip(live)
        .map(|(planned, (live, ids))| decide(planned, live, ids, plan.material(planned.cert)))
        .collect();
    read_old_certs(&mut files);
    diagnose(&mut files, plan);
    for (i, c) in plan.certs.iter().enumerate() {
        let report = &mut run.report.certificates[i];
        let mine = || files.iter().filter(move |f| f.planned.cert == i);
        report.served_fingerprint = inspection.served.get(i).cloned().flatten().map(|s| s.leaf);
        report.old_fingerprint = mine()
            .find_map(|f| f.old_certs.first().map(|c| c.fingerprint))
            .or_else(|| {
                mine()
                    .any(|f| f.current())
                    .then_some(c.material.leaf.fingerprint)
            })
            .or(report.served_fingerprint);
    }
    run.report.sync_first();
    run.report.files = files
        .iter()
        .map(|f| file_report(f, plan.material(f.planned.cert)))
        .collect();
    let mut detail = format!(
        "{} file(s) inspected; {}",
        plan.files.len(),
        served_detail(plan, &inspection.served)
    );
    if let Some(r) = files::repairs(&files) {
        detail.push_str(&format!("; {r}"));
    }
    let changed = files.iter().filter(|f| !f.current());
    super::mounts::warn_renamed(run, changed.map(|f| (f.planned, &f.live)), &mut detail);
    inspection.binding.note(&mut detail);
    run.record(Step::Inspect, inspection.took, Ok((files, Some(detail))))
}

/// Steps 5 to 7 for files: the stage, the preview (the live test tolerated while live files
/// are missing or broken) and, on a deploy, the backup and the journal — in the fewest remote
/// commands (one, unless a keystore's working copy must be placed between them).
async fn preview_and_backup(
    run: &mut Run<'_>,
    session: &Session,
    files: &[StagedFile<'_>],
    entries: &[super::journal::Entry],
    old: &[Option<Expected>],
) -> Result<(), StepFailure> {
    let plan = run.plan;
    let set = super::names::set_dir(plan);
    let intent = Intent {
        files: entries.to_vec(),
        ..Intent::new(&plan.run_id, &plan.name, Op::Deploy, Kind::Files, &set)
    }
    .with_old(old)
    .line();
    let tolerate = files::live_test_may_fail(files)
        .then(|| files::repairs(files).unwrap_or_else(|| "files that do not exist yet".into()));
    let repairs = tolerate.as_deref();
    if !run.dry_run() {
        // Written by the backup, before the first live change; closed by cleanup.
        run.journal = Some(super::run::OpenJournal {
            dest: format!("{set}/journal"),
            set,
            keep_set_when: Some(Status::Deployed),
        });
    }
    let work_copies = files.iter().any(|f| f.planned.work.is_some());
    if work_copies {
        // A keystore: staged (its working copy taken) over SFTP, previewed alone, placed.
        run.step(Step::Stage, stage::stage(session, files)).await?;
        return match run.dry_run() {
            true => preview::alone(run, session, repairs).await,
            false => preview_keystore(run, session, files, &intent, entries, repairs).await,
        };
    }
    match run.dry_run() {
        true => preview::then_cleanup(run, session, files, repairs).await,
        false => preview::with_backup(run, session, files, &intent, entries, repairs).await,
    }
}

/// A keystore's preview, then its working copy placed beside the live keystore, then the
/// backup on its own.
async fn preview_keystore(
    run: &mut Run<'_>,
    session: &Session,
    files: &[StagedFile<'_>],
    intent: &str,
    entries: &[super::journal::Entry],
    repairs: Option<&str>,
) -> Result<(), StepFailure> {
    preview::alone(run, session, repairs).await?;
    let t = run.begin(Step::Stage);
    let placed = stage::place_work_copies(session, files).await;
    if placed.is_err() {
        run.record(Step::Stage, t.elapsed(), placed)?;
    }
    // The staged keystores (working copies placed with `cp`) are fsync'd with the backup.
    let staged: Vec<String> = files.iter().map(|f| f.planned.staged.clone()).collect();
    run.step(
        Step::Backup,
        preview::backup_alone(run.plan, session, intent, entries, &staged),
    )
    .await
}

/// Files already right, something else served: reload and verify only.
async fn reload_only(run: &mut Run<'_>, session: &Session, served: ServedNow) -> Outcome {
    let plan = run.plan;
    let served = (0..plan.certs.len())
        .filter(|&i| plan.certs[i].has_probe)
        .map(|i| match served.get(i).and_then(Option::as_ref) {
            Some(s) => s.leaf.to_string(),
            None => "nothing".into(),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let served = if served.is_empty() {
        "nothing".into()
    } else {
        served
    };
    let result = match run.step(Step::Reload, apply::reload(session, plan)).await {
        Ok(()) => verify::verify_new(run).await,
        Err(f) => Err(f),
    };
    result.map(|()| Status::Reloaded).map_err(|f| {
        (
            Status::Failed,
            format!(
                "the files already held the new certificate but {served} was served; {}",
                f.cause()
            ),
        )
    })
}
