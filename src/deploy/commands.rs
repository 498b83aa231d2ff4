//! `swap: commands` (see [`crate::connector::SwapMode`]): targets where the change is an API
//! call made by the target's own tool — `kubectl apply`, a `tmsh` transaction, a certificate
//! store import — rather than files renamed into place.
//!
//! The state machine and the report's steps are the same as for files; only what some steps
//! do differs:
//!
//! | step | files | commands |
//! |---|---|---|
//! | stage | temp files beside the live ones | inputs and templates into the private scratch dir (0600) |
//! | backup | copy the live files | `snapshot`: each command's stdout saved (0600) in the backup set |
//! | swap | rename over the live files | `apply` |
//! | rollback | restore the copies, check by hash | `restore` (guarded by whether a snapshot is empty) |
//! | cleanup | remove temp files, scratch, lock | also `prune` old versions after a verified deploy |
//!
//! Nothing here is product-specific: the connectors are YAML definitions.

use std::collections::{BTreeMap, BTreeSet};

use super::apply::{reload_or_start, run_commands, test_reload, test_reload_each};
use super::content::{FileBytes, material_bytes};
use super::journal::{Intent, Kind, Op};
use super::run::{OpenJournal, Outcome, Run, StepResult};
use super::script::{self, STRICT, command_failure};
use super::verify::{old_served_again, served_is, verify};
use super::windows::{self, sftp_path};
use super::{Remote, sets};
use crate::connector::{self, Command};
use crate::material::{Expected, Fingerprint};
use crate::plan::{CommandSwap, InputContent, TargetPlan};
use crate::probe::Served;
use crate::report::{Status, Step};
use crate::ssh::Session;
use crate::ssh::quote::Script;

/// The backup set of this run.
pub(super) fn set_dir(plan: &TargetPlan) -> String {
    format!("{}/{}", plan.backup_dir, plan.run_id)
}

/// Fills in the run-time placeholders: `{backup}` and `{snapshot.NAME}` (the backup set and
/// the files in it), `{object}` (prune).
pub(super) fn fill(
    argv: &Command,
    set: &str,
    swap: &CommandSwap,
    object: &str,
) -> Result<Command, String> {
    let mut values = BTreeMap::from([
        ("backup".to_string(), set.to_string()),
        ("object".to_string(), object.to_string()),
    ]);
    for (name, _) in &swap.snapshot {
        values.insert(format!("snapshot.{name}"), format!("{set}/{name}"));
    }
    if swap.powershell {
        // The statements of one script; the plan quoted all but these values.
        let mut script = crate::ssh::quote::PowerShell::new();
        for statement in argv {
            script.statement(statement, &values)?;
        }
        return Ok(script.argv());
    }
    argv.iter().map(|a| connector::render(a, &values)).collect()
}

pub(super) async fn deploy(
    run: &mut Run<'_>,
    session: &Session,
    swap: &CommandSwap,
    served_before: Option<Served>,
) -> Outcome {
    let plan = run.plan;
    // One certificate: the plan refuses several for a `swap: commands` connector.
    let expected = plan.first().material.expected();
    let first = &mut run.report.certificates[0];
    first.served_fingerprint = served_before.as_ref().map(|s| s.leaf);
    first.old_fingerprint = first.served_fingerprint;
    run.report.sync_first();
    let served_match = served_before
        .as_ref()
        .is_some_and(|s| served_is(s, &expected));
    if served_match && !run.force {
        return Ok(Status::Unchanged);
    }
    let untouched = |run: &Run<'_>, f| Err(run.untouched(f));
    if let Err(f) = run.step(Step::Stage, stage(session, plan)).await {
        return untouched(run, f);
    }
    if let Err(f) = run
        .step(Step::Preview, run_commands(session, &plan.preview))
        .await
    {
        return untouched(run, f);
    }
    if run.dry_run() {
        return Ok(Status::WouldChange);
    }
    let old = served_before.map(|s| Expected {
        leaf: s.leaf,
        chain: s.chain,
    });
    run.journal = Some(OpenJournal {
        dest: format!("{}/journal", set_dir(plan)),
        set: set_dir(plan),
        keep_set_when: Some(Status::Deployed),
    });
    if let Err(f) = run
        .step(Step::Backup, snapshot(session, plan, swap, old.as_ref()))
        .await
    {
        return untouched(run, f);
    }

    // From here on the target may have changed: any failure restores the snapshot.
    let applied = run
        .step(Step::Swap, apply(session, &set_dir(plan), swap))
        .await;
    let after = match applied {
        Ok(()) => {
            let tested = match plan.remote() {
                Remote::Windows => test_reload_each(run, session).await,
                Remote::Posix => test_reload(run, session).await,
            };
            match tested {
                Ok(()) => super::verify::verify_new(run).await,
                Err(f) => Err(f),
            }
        }
        Err(f) => Err(f),
    };
    match after {
        Ok(()) => Ok(Status::Deployed),
        Err(failure) => Err(rollback(run, session, swap, old, failure).await),
    }
}

/// Inputs and templates into the private scratch directory, 0600.
async fn stage(session: &Session, plan: &TargetPlan) -> Result<((), Option<String>), String> {
    let mut written = Vec::new();
    for input in &plan.inputs {
        let content = match &input.content {
            InputContent::Material(role) => material_bytes(plan.material(input.cert), *role),
            InputContent::Secret(secret) => FileBytes::Secret(secret.clone()),
        };
        session
            .upload(&sftp_path(&input.path), content.bytes(), 0o600, None)
            .await
            .map_err(|e| format!("writing input {}: {e}", input.path))?;
        written.push(input.path.as_str());
    }
    for t in &plan.templates {
        session
            .upload(&sftp_path(&t.path), t.content.as_bytes(), 0o600, None)
            .await
            .map_err(|e| format!("writing template {}: {e}", t.path))?;
        written.push(t.path.as_str());
    }
    Ok(((), Some(format!("staged {} (0600)", written.join(", ")))))
}

async fn apply(
    session: &Session,
    set: &str,
    swap: &CommandSwap,
) -> Result<((), Option<String>), String> {
    let argvs = selected(session, set, swap, &swap.apply).await?;
    run_commands(session, &argvs).await
}

/// The backup set (0700), each snapshot command's stdout saved in it (0600), the journal
/// (what was served before, how to undo it), and old sets pruned.
async fn snapshot(
    session: &Session,
    plan: &TargetPlan,
    swap: &CommandSwap,
    old: Option<&Expected>,
) -> StepResult<()> {
    let set = set_dir(plan);
    let intent = Intent::new(&plan.run_id, &plan.name, Op::Deploy, Kind::Commands, &set)
        .with_old(&[old.cloned()])
        .line();
    if swap.powershell {
        let snapshots = swap
            .snapshot
            .iter()
            .map(|(name, argv)| Ok((name.clone(), fill(argv, &set, swap, "")?)))
            .collect::<Result<Vec<_>, String>>()?;
        windows::save_snapshots(session, plan, &snapshots, &set).await?;
        windows::write_journal(session, plan, &intent).await?;
    } else {
        let mut s = Script::new();
        s.raw(STRICT)
            .raw(*script::SNAPSHOT)
            .raw(*script::BACKUP)
            .raw(*script::JOURNAL);
        s.cmd(&["certctl_set", &set]);
        s.raw("[ \"$fail\" = 0 ] || exit 1\n");
        for (name, argv) in &swap.snapshot {
            let mut cmd = vec!["certctl_save".to_string(), format!("{set}/{name}")];
            cmd.extend(fill(argv, &set, swap, "")?);
            s.cmd(&cmd);
        }
        s.cmd(&["certctl_journal_write", &plan.backup_dir, &intent]);
        s.cmd(&[
            "certctl_prune",
            &plan.backup_dir,
            &plan.keep_backups.to_string(),
        ]);
        s.raw("exit $fail\n");
        let out = session
            .exec_script(&s, None)
            .await
            .map_err(|e| e.to_string())?;
        if !out.success() {
            return Err(command_failure("snapshot script", &out));
        }
    }
    Ok((
        (),
        Some(format!(
            "backup set {set}: {} snapshot(s)",
            swap.snapshot.len()
        )),
    ))
}

/// Runs the restore commands against the snapshots in `set` (see [`selected`]).
pub(super) async fn restore(
    session: &Session,
    set: &str,
    swap: &CommandSwap,
) -> Result<((), Option<String>), String> {
    let argvs = selected(session, set, swap, &swap.restore).await?;
    run_commands(session, &argvs).await?;
    Ok((
        (),
        Some(format!("{} restore command(s) ok, from {set}", argvs.len())),
    ))
}

/// The commands of `entries` (apply or restore) whose guards hold for the snapshots in
/// `set`, filled in: a guarded command runs only when its snapshot is (or is not) empty, or
/// does (or does not) list its word.
async fn selected(
    session: &Session,
    set: &str,
    swap: &CommandSwap,
    entries: &[crate::plan::PlannedRestore],
) -> Result<Vec<Command>, String> {
    let guarded: BTreeSet<&str> = entries
        .iter()
        .filter_map(|r| r.guard.as_ref().map(|(n, _)| n.as_str()))
        .collect();
    let mut saved = BTreeSet::new();
    // A `word` guard reads the snapshot itself (a thumbprint list, not a secret).
    let mut words: BTreeMap<&str, String> = BTreeMap::new();
    for r in entries {
        if let (Some((name, _)), Some(_)) = (&r.guard, &r.word)
            && !words.contains_key(name.as_str())
        {
            let text = session
                .read_file(&sftp_path(&format!("{set}/{name}")), 1 << 20)
                .await
                .map_err(|e| format!("reading snapshot {name}: {e}"))?;
            words.insert(name, String::from_utf8_lossy(&text).to_uppercase());
        }
    }
    if swap.powershell {
        // Read over SFTP: PowerShell prints an empty line for an empty value, so a snapshot
        // counts as saved when it has more than whitespace.
        for name in &guarded {
            let text = session
                .read_file(&sftp_path(&format!("{set}/{name}")), 1 << 20)
                .await
                .map_err(|e| format!("reading snapshot {name}: {e}"))?;
            if text.iter().any(|b| !b.is_ascii_whitespace()) {
                saved.insert(name.to_string());
            }
        }
    } else if !guarded.is_empty() {
        let mut script = Script::new();
        script.raw(*super::script::SNAPSHOT);
        for name in &guarded {
            script.cmd(&["certctl_saved", &format!("{set}/{name}"), name]);
        }
        let out = session
            .exec_script(&script, None)
            .await
            .map_err(|e| e.to_string())?;
        if !out.success() {
            return Err(command_failure("reading the snapshots", &out));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        saved.extend(
            text.lines()
                .filter_map(|l| l.strip_prefix("S "))
                .map(str::to_string),
        );
    }
    let mut argvs = Vec::new();
    for r in entries {
        let wanted = match (&r.guard, &r.word) {
            (None, _) => true,
            (Some((name, when_saved)), None) => saved.contains(name) == *when_saved,
            (Some((name, when_listed)), Some(word)) => {
                let listed = words
                    .get(name.as_str())
                    .is_some_and(|t| t.split_whitespace().any(|w| w == word.to_uppercase()));
                listed == *when_listed
            }
        };
        if wanted {
            argvs.push(fill(&r.argv, set, swap, "")?);
        }
    }
    Ok(argvs)
}

/// After a failure at or after the swap: restore the snapshot, reload, probe for the old
/// certificate.
async fn rollback(
    run: &mut Run<'_>,
    session: &Session,
    swap: &CommandSwap,
    old: Option<Expected>,
    failure: super::run::StepFailure,
) -> (Status, String) {
    let plan = run.plan;
    let cause = failure.cause();
    let restored = run
        .step(Step::Rollback, restore(session, &set_dir(plan), swap))
        .await;
    if let Err(f) = restored {
        return (
            Status::RollbackFailed,
            format!(
                "{cause}; ROLLBACK FAILED: {} — the target may hold the new certificate, the old \
                 one, or neither; the journal stays, so the next run restores the snapshot first",
                f.message
            ),
        );
    }
    let _ = run.step(Step::Reload, reload_or_start(session, plan)).await;
    let Some(old) = old.filter(|_| plan.has_probe()) else {
        return (
            Status::RolledBack,
            format!("{cause}; the snapshot was restored (nothing was served before to probe for)"),
        );
    };
    old_served_again(run, &[Some(old)], &cause, "the snapshot was restored").await
}

/// What was served before a `swap: commands` backup set was taken, from its journal (or the
/// manifest of a set written before journals); an error when another kind of change took it.
fn old_of_command_set(set_dir: &str, text: &str) -> Result<Option<Expected>, String> {
    let not_ours = || format!("backup set {set_dir} was not taken by a `swap: commands` connector");
    if let Some(journal) = super::lock::journal_in(text) {
        let journal = journal.map_err(|e| format!("backup set {set_dir}: its journal: {e}"))?;
        if journal.intent.swap != Kind::Commands {
            return Err(not_ours());
        }
        return Ok(journal.intent.old_served(1).pop().flatten());
    }
    let manifest: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("M ")).collect();
    if manifest.first() != Some(&"swap\tcommands") {
        return Err(not_ours());
    }
    Ok(manifest.iter().find_map(|l| {
        let mut fields = l.strip_prefix("old\t")?.split('\t');
        let leaf = Fingerprint::parse(fields.next()?)?;
        let chain = fields.map(Fingerprint::parse).collect::<Option<Vec<_>>>()?;
        Some(Expected { leaf, chain })
    }))
}

/// `certctl rollback`: restores the newest backup set not yet restored, reloads, and probes
/// for the certificate that was served before it was taken.
pub(super) async fn undo(run: &mut Run<'_>, session: &Session, swap: &CommandSwap) -> Outcome {
    let plan = run.plan;
    let failed = |message: String| {
        (
            Status::Failed,
            format!("rollback: {message}; nothing was changed"),
        )
    };
    let (set_dir, text) = sets::latest_set(session, plan).await.map_err(failed)?;
    let old = old_of_command_set(&set_dir, &text).map_err(failed)?;
    run.report.certificates[0].new_fingerprint = old.as_ref().map(|e| e.leaf);
    run.report.sync_first();
    let intent = Intent::new(
        &plan.run_id,
        &plan.name,
        Op::Rollback,
        Kind::Commands,
        &set_dir,
    )
    .with_old(std::slice::from_ref(&old))
    .line();
    match plan.remote() {
        Remote::Windows => windows::write_journal(session, plan, &intent).await,
        Remote::Posix => write_journal_posix(session, plan, &intent).await,
    }
    .map_err(|e| failed(format!("writing the journal: {e}")))?;
    run.journal = Some(OpenJournal {
        dest: format!("{set_dir}/rollback.journal"),
        set: set_dir.clone(),
        keep_set_when: None,
    });
    run.step(Step::Rollback, restore(session, &set_dir, swap))
        .await
        .map_err(|f| {
            (
                Status::RollbackFailed,
                format!("ROLLBACK FAILED: {}", f.message),
            )
        })?;
    // A reload that fails fails the rollback: the restored files are not what is served.
    run.step(Step::Reload, reload_or_start(session, plan))
        .await
        .map_err(|f| {
            (
                Status::RollbackFailed,
                format!(
                    "files restored from {set_dir}, but ROLLBACK FAILED: the reload failed: {}",
                    f.message
                ),
            )
        })?;
    let verified = match old.filter(|_| plan.has_probe()) {
        Some(e) => verify(run, &[Some(e)]).await.map_err(|f| f.message),
        None => Ok(()),
    };
    match verified {
        Ok(()) => Ok(Status::RolledBack),
        Err(message) => Err((
            Status::RollbackFailed,
            format!(
                "snapshot {set_dir} restored, but the certificate served before is NOT served: {message}"
            ),
        )),
    }
}

/// Writes a journal's intent on a POSIX host.
async fn write_journal_posix(
    session: &Session,
    plan: &TargetPlan,
    intent: &str,
) -> Result<(), String> {
    let mut s = Script::new();
    s.raw(STRICT).raw(*script::JOURNAL);
    s.cmd(&["certctl_journal_write", &plan.backup_dir, intent]);
    s.raw("exit $fail\n");
    let out = session
        .exec_script(&s, None)
        .await
        .map_err(|e| e.to_string())?;
    if out.success() {
        Ok(())
    } else {
        Err(command_failure("writing the journal", &out))
    }
}
