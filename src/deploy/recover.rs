//! Step 3, **recover**: a journal at `{backup_dir}/journal` when this run takes the lock is a
//! change an earlier run started and did not finish (its controller was killed, its connection
//! dropped, its rollback failed). Before anything else, it is undone: the journal's backup set
//! restored (each file checked by hash, each symlink by its text; `swap: commands`: the
//! connector's restore commands), the server reloaded (or started), what was served before
//! probed, and the journal closed. Then the run's own work proceeds on a consistent target.
//!
//! A dry-run only says what `certctl deploy` will do; a journal of another target (two
//! targets sharing a backup directory) is not touched, and says which target recovers it.

use super::apply::reload_or_start;
use super::journal::{Journal, Kind};
use super::run::{Run, StepFailure};
use super::script::{self, STRICT};
use super::{Mode, Remote, Swap, commands, rollback, sets, windows};
use crate::plan::TargetPlan;
use crate::report::{Status, Step};
use crate::ssh::Session;
use crate::ssh::quote::Script;

/// What recover did: nothing to do, or it changed the live state (inspect must look again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Recovered {
    Nothing,
    Repaired,
}

/// Repairs the change `journal` records (read from the target in the lock step).
pub(super) async fn recover(
    run: &mut Run<'_>,
    session: &Session,
    journal: Result<Journal, String>,
) -> Result<Recovered, (Status, String)> {
    let plan = run.plan;
    let path = format!("{}/journal", plan.backup_dir);
    let journal = match journal {
        Ok(j) => j,
        Err(why) => {
            let message = format!(
                "{path} records an unfinished change but cannot be read ({why}): a person must \
                 check the live files, then move the journal away"
            );
            let _ = run
                .step::<()>(Step::Recover, async { Err(message.clone()) })
                .await;
            return Err((Status::RollbackFailed, format!("recover failed: {message}")));
        }
    };
    let found = journal.describe();
    let set = crate::report::sanitize_line(&journal.intent.set);
    if let Some((status, message, tail)) = refusal(plan, &journal, &path) {
        let _ = run
            .step::<()>(Step::Recover, async { Err(message.clone()) })
            .await;
        return Err((status, format!("recover failed: {message}{tail}")));
    }
    if run.mode == Mode::DryRun {
        run.skip(
            Step::Recover,
            format!(
                "found {found}; `certctl deploy` rolls it back from backup set {set} first \
                 (a dry-run changes nothing)"
            ),
        );
        return Ok(Recovered::Nothing);
    }
    let t = run.begin(Step::Recover);
    let repaired = repair(run, session, &journal).await;
    match repaired {
        Ok(detail) => {
            let detail = format!("found {found}: {detail}");
            run.record(Step::Recover, t.elapsed(), Ok(((), Some(detail))))
                .map_err(|f: StepFailure| (Status::RollbackFailed, f.message))?;
            Ok(Recovered::Repaired)
        }
        Err(message) => {
            let message = format!("found {found}, and rolling it back failed: {message}");
            let _ = run.record::<()>(Step::Recover, t.elapsed(), Err(message.clone()));
            Err((
                Status::RollbackFailed,
                format!(
                    "recover failed: {message}; the journal {path} stays: check the target, then \
                     run again"
                ),
            ))
        }
    }
}

/// Why a journal must not be acted on by this target's run: its set outside this target's
/// backup directory, or another target's change. The status, the message and its tail.
fn refusal(
    plan: &TargetPlan,
    journal: &Journal,
    path: &str,
) -> Option<(Status, String, &'static str)> {
    let set = crate::report::sanitize_line(&journal.intent.set);
    // The set it restores from must be one of this target's sets, in its backup directory.
    let in_backup_dir = journal
        .intent
        .set
        .strip_prefix(&format!("{}/", plan.backup_dir))
        .is_some_and(|name| !name.contains('/') && name.split_once('-').is_some());
    if !in_backup_dir {
        let message = format!(
            "{path} names the backup set {set}, which is not in this target's backup directory \
             {}: a person must check it",
            plan.backup_dir
        );
        return Some((Status::RollbackFailed, message, ""));
    }
    if journal.intent.target != plan.name {
        let message = format!(
            "{path} records an unfinished change of another target: {}. Run `certctl \
             deploy --limit {}` first: it rolls that change back",
            journal.describe(),
            crate::report::sanitize_line(&journal.intent.target)
        );
        return Some((Status::Failed, message, "; nothing was changed"));
    }
    None
}

/// Restores the journal's set, reloads, probes for the old certificate, closes the journal.
/// `Ok` says what was done.
async fn repair(run: &mut Run<'_>, session: &Session, journal: &Journal) -> Result<String, String> {
    let plan = run.plan;
    let intent = &journal.intent;
    let mut done = Vec::new();
    match (intent.swap, plan.swap()) {
        (Kind::Files, Swap::Files) => {
            let entries = sets::set_entries(
                plan,
                &intent.set,
                &format!("\u{1e}JOURNAL\n{}\n\u{1e}END\n", intent.line()),
            )?;
            let (_, detail) =
                rollback::restore_set(session, plan, &intent.set, &entries, None).await?;
            done.extend(detail);
        }
        (Kind::Commands, Swap::Commands(swap)) => {
            let (_, detail) = commands::restore(session, &intent.set, swap).await?;
            done.extend(detail);
        }
        _ => {
            return Err(format!(
                "it was made by a `swap: {}` connector and this target's connector is not one",
                match intent.swap {
                    Kind::Files => "files",
                    Kind::Commands => "commands",
                }
            ));
        }
    }
    match reload_or_start(session, plan).await {
        Ok((_, detail)) => done.push(detail.unwrap_or_else(|| "reloaded".into())),
        Err(e) => done.push(format!("the reload failed ({e})")),
    }
    let olds = intent.old_served(plan.certs.len());
    let probed = plan.certs.iter().zip(olds).filter(|(c, _)| c.has_probe);
    let checks = probed.filter_map(|(c, old)| {
        let old = old?;
        Some(async move {
            let v = crate::probe::verify(&c.probe, &old, &Default::default()).await;
            let at = &c.probe.address;
            if v.passed {
                format!("{at} serves {} again", old.leaf)
            } else {
                format!(
                    "{at} does not serve {} (this run's deploy and verify decide what is served)",
                    old.leaf
                )
            }
        })
    });
    done.extend(futures::future::join_all(checks).await);
    close(session, run, journal).await?;
    Ok(done.join("; "))
}

/// Closes a recovered journal into its set, and retires the set (what it holds is live now).
async fn close(session: &Session, run: &Run<'_>, journal: &Journal) -> Result<(), String> {
    let plan = run.plan;
    let open = super::run::OpenJournal {
        dest: format!("{}/journal", journal.intent.set),
        set: journal.intent.set.clone(),
        keep_set_when: None,
    };
    if plan.remote() == Remote::Windows {
        return windows::close_journal(session, plan, &journal.intent.run, &open, "recovered")
            .await;
    }
    let mut s = Script::new();
    s.raw(STRICT).raw(*script::JOURNAL);
    super::cleanup::close_command(&mut s, plan, &journal.intent.run, &open, Status::RolledBack);
    s.raw("exit $fail\n");
    let out = session
        .exec_script(&s, None)
        .await
        .map_err(|e| e.to_string())?;
    if out.success() {
        Ok(())
    } else {
        Err(script::command_failure("closing the journal", &out))
    }
}
