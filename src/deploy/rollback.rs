//! Step 10, **rollback**: after any failure from the swap on, the backup set is restored as a
//! whole (`scripts/restore.sh`: copies beside the live files first, then every rename in one
//! process that ignores hang-ups; symlinks put back as they were; each path checked by hash
//! and `readlink`), the server reloaded (or started, if it died), and the old certificate
//! probed. A connection lost on the way is re-established (same host-key checks) and the
//! restore run again — it is idempotent. Also `certctl rollback` ([`undo`]): the newest set
//! not yet restored, under a journal of its own, so that it too can be recovered.

use std::time::Duration;

use super::apply::reload_or_start;
use super::files::restore_commands;
use super::journal::{Entry, Intent, Journal, Kind, Op};
use super::lock::owner;
use super::run::{OpenJournal, Outcome, Run, StepFailure, StepResult};
use super::script::{self, NO_HANGUP, STRICT, command_failure, stderr_note, tagged_failures};
use super::verify::{old_served_again, verify};
use super::{Remote, Swap, commands, inspect, windows};
use crate::material::{Expected, parse_certs};
use crate::plan::TargetPlan;
use crate::report::{Status, Step};
use crate::ssh::quote::Script;
use crate::ssh::{Session, SshErrorKind};

/// Pauses before each connect made to reach a target again after its connection was lost.
const RECONNECT_BACKOFF: [Duration; 3] = [
    Duration::ZERO,
    Duration::from_secs(1),
    Duration::from_secs(3),
];

/// Whether the connection no longer carries requests (on a lost connection opening a channel
/// fails at once). Windows targets are asked over SFTP: their shell runs no `true`.
pub(super) async fn connection_lost(session: &Session, plan: &TargetPlan) -> bool {
    match plan.remote() {
        Remote::Posix => session.exec(&["true".to_string()]).await.is_err(),
        Remote::Windows => session
            .list_dir(&windows::sftp_path(&plan.backup_dir))
            .await
            .is_err(),
    }
}

/// After the connection was lost during `during`: connects again with the same configuration
/// (strict host key, same authentication), up to [`RECONNECT_BACKOFF`] attempts, and — when
/// `check_lock` — checks that the lock still names this run. The new session replaces
/// `session`; recorded as a second connect step.
async fn reconnect(
    run: &mut Run<'_>,
    session: &mut Session,
    during: &str,
    check_lock: bool,
) -> Result<(), String> {
    let plan = run.plan;
    let t = run.begin(Step::Connect);
    let mut last = String::new();
    for (attempt, pause) in RECONNECT_BACKOFF.iter().enumerate() {
        tokio::time::sleep(*pause).await;
        let error = match Session::connect(&plan.ssh).await {
            Ok(new) => {
                drop(std::mem::replace(session, new));
                let result = if !check_lock {
                    Ok(format!(
                        "the connection was lost during {during}; reconnected (attempt {})",
                        attempt + 1
                    ))
                } else {
                    match owner(session, plan).await {
                        Ok(None) => Ok(format!(
                            "the connection was lost during {during}; reconnected (attempt {}) \
                             and the lock still names this run",
                            attempt + 1
                        )),
                        Ok(Some(holder)) => Err(format!(
                            "the lock {} no longer names this run ({holder}), so nothing more \
                             was done",
                            super::lock::lock_dir(plan)
                        )),
                        Err(e) => Err(format!("the lock could not be checked: {e}")),
                    }
                };
                let result = result.map(|d| ((), Some(d)));
                return run
                    .record(Step::Connect, t.elapsed(), result)
                    .map_err(|f| format!("after reconnecting, {}", f.message));
            }
            Err(e) => e,
        };
        last = error.to_string();
        // A host-key or authentication problem does not go away by retrying.
        if !matches!(
            error.kind,
            SshErrorKind::Connect { .. }
                | SshErrorKind::ConnectTimeout { .. }
                | SshErrorKind::Protocol { .. }
        ) {
            break;
        }
    }
    let message = format!("could not be re-established: {last}");
    let _ = run.record::<()>(Step::Connect, t.elapsed(), Err(message.clone()));
    Err(message)
}

/// Reconnects once lost, without checking the lock (to release it after a failed lock step).
pub(super) async fn reconnect_once(
    run: &mut Run<'_>,
    session: &mut Session,
    during: &str,
) -> Result<(), String> {
    reconnect(run, session, during, false).await
}

/// Restores `entries` from `set` (after writing `journal`, the intent of a `certctl rollback`,
/// when given) in one remote command, and checks the result.
pub(super) async fn restore_set(
    session: &Session,
    plan: &TargetPlan,
    set: &str,
    entries: &[Entry],
    journal: Option<&str>,
) -> StepResult<()> {
    let mut s = Script::new();
    s.raw(NO_HANGUP)
        .raw(STRICT)
        .raw(*script::JOURNAL)
        .raw(*script::RESTORE);
    // A killed run's swap or restore may still be finishing on the target: wait for it.
    s.cmd(&["certctl_wait_idle", &plan.backup_dir]);
    if let Some(intent) = journal {
        s.cmd(&["certctl_journal_write", &plan.backup_dir, intent]);
        s.raw("[ \"$fail\" = 0 ] || exit 1\n");
    }
    restore_commands(&mut s, &plan.backup_dir, set, entries, &plan.run_id);
    s.raw("exit $fail\n");
    let out = session
        .exec_script(&s, None)
        .await
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.success() {
        let why: Vec<String> = ["B", "R"]
            .into_iter()
            .map(|tag| tagged_failures(&text, tag))
            .filter(|t| t != "no file named")
            .collect();
        return Err(format!(
            "{}{}",
            command_failure(
                "restore script",
                &crate::ssh::ExecOutput {
                    stdout: why.join("; ").into_bytes(),
                    stderr: Vec::new(),
                    status: out.status,
                }
            ),
            stderr_note(&out)
        ));
    }
    super::files::restore_check(&text, entries)?;
    let same = text
        .lines()
        .filter(|l| l.starts_with("R ") && l.ends_with(" same"))
        .count();
    let changed = entries.len() - same.min(entries.len());
    Ok((
        (),
        Some(format!(
            "{changed} file(s) restored from {set} ({same} already held their copy); every \
             path checked by SHA-256 and readlink"
        )),
    ))
}

/// A failed deploy of files: restores this run's backup set, reloads, probes for what was
/// served before. Over a new connection when the old one was lost.
pub(super) async fn after_failure(
    run: &mut Run<'_>,
    session: &mut Session,
    entries: &[Entry],
    old: Option<Expected>,
    failure: StepFailure,
) -> (Status, String) {
    let plan = run.plan;
    let set = super::files::set_dir(plan);
    let mut cause = failure.cause();
    if connection_lost(session, plan).await {
        if let Err(e) = reconnect(run, session, failure.label(), true).await {
            return (
                Status::RollbackFailed,
                format!(
                    "{cause}; ROLLBACK FAILED: the connection was lost and {e} — the new files \
                     may be live; the next run (or `certctl rollback`) restores them from {set}"
                ),
            );
        }
        cause.push_str("; the connection was lost, so the rollback ran over a new one");
    }
    let mut restored = run
        .step(
            Step::Rollback,
            restore_set(session, plan, &set, entries, None),
        )
        .await;
    if restored.is_err() && connection_lost(session, plan).await {
        match reconnect(run, session, "rollback", true).await {
            Ok(()) => {
                cause.push_str(
                    "; the connection was lost during the restore, which was run again over a new one",
                );
                restored = run
                    .step(
                        Step::Rollback,
                        restore_set(session, plan, &set, entries, None),
                    )
                    .await;
            }
            Err(e) => {
                return (
                    Status::RollbackFailed,
                    format!(
                        "{cause}; ROLLBACK FAILED: the connection was lost during the restore \
                         and {e} — the next run restores {set} first"
                    ),
                );
            }
        }
    }
    if let Err(f) = restored {
        return (
            Status::RollbackFailed,
            format!(
                "{cause}; ROLLBACK FAILED: {} — the journal stays, so the next run (or \
                 `certctl rollback`) restores {set} first",
                f.message
            ),
        );
    }
    let reload = run.step(Step::Reload, reload_or_start(session, plan)).await;
    let restored = "previous files restored byte-for-byte";
    match old {
        Some(old) => old_served_again(run, &old, &cause, restored).await,
        None if !plan.has_probe => (
            Status::RolledBack,
            format!("{cause}; {restored} and checked by SHA-256 (no TLS endpoint to probe)"),
        ),
        None => {
            let note = match reload {
                Ok(()) => {
                    "nothing was served before the deploy, so there is no old certificate to probe for"
                }
                Err(_) => "the reload after restoring failed; nothing was served before the deploy",
            };
            (Status::RolledBack, format!("{cause}; {restored}; {note}"))
        }
    }
}

/// `certctl rollback`: restores the newest backup set not yet restored (byte-for-byte,
/// checked), reloads (or starts a server that died), and probes for the restored certificate.
/// The set is then retired (`.restored`), so a second rollback goes one set further back.
pub(super) async fn undo(run: &mut Run<'_>, session: &Session) -> Outcome {
    let plan = run.plan;
    if let Swap::Commands(swap) = plan.swap() {
        return commands::undo(run, session, swap).await;
    }
    let failed = |message: String| {
        (
            Status::Failed,
            format!("rollback: {message}; nothing was changed"),
        )
    };
    let (set, record) = latest_set(session, plan).await.map_err(failed)?;
    let entries = set_entries(plan, &set, &record).map_err(failed)?;
    // What the restored files should serve: read from the copies themselves.
    let mut expected: Option<Expected> = None;
    for e in &entries {
        let (Some(copy), true) = (
            &e.copy,
            matches!(e.role.as_str(), "cert" | "fullchain" | "bundle"),
        ) else {
            continue;
        };
        let mut pem = session
            .read_file(&format!("{set}/{copy}"), inspect::CERT_READ_LIMIT)
            .await
            .map_err(|e| failed(format!("reading the backup: {e}")))?;
        if let Ok(certs) = parse_certs(&pem)
            && let Some((leaf, chain)) = certs.split_first()
        {
            expected = Some(Expected {
                leaf: leaf.fingerprint,
                chain: chain.iter().map(|c| c.fingerprint).collect(),
            });
        }
        zeroize::Zeroize::zeroize(&mut pem);
        break;
    }
    if let Some(e) = &expected {
        run.report.new_fingerprint = Some(e.leaf);
    }
    let intent = Intent {
        files: entries.clone(),
        ..Intent::new(&plan.run_id, &plan.name, Op::Rollback, Kind::Files, &set)
    }
    .with_old(expected.as_ref());
    run.journal = Some(OpenJournal {
        dest: format!("{set}/rollback.journal"),
        set: set.clone(),
        keep_set_when: None,
    });
    run.step(
        Step::Rollback,
        restore_set(session, plan, &set, &entries, Some(&intent.line())),
    )
    .await
    .map_err(|f| {
        (
            Status::RollbackFailed,
            format!("ROLLBACK FAILED: {}", f.message),
        )
    })?;
    let _ = run.step(Step::Reload, reload_or_start(session, plan)).await;
    let Some(e) = expected.filter(|_| plan.has_probe) else {
        return Ok(Status::RolledBack);
    };
    match verify(run, &e).await {
        Ok(()) => {
            run.report.served_fingerprint = Some(e.leaf);
            Ok(Status::RolledBack)
        }
        Err(f) => Err((
            Status::RollbackFailed,
            format!(
                "files restored from {set}, but the restored certificate is NOT served: {}",
                f.message
            ),
        )),
    }
}

/// The newest backup set not yet restored (its directory) and what records its content (the
/// `certctl_latest` output: its journal, or the manifest of sets from before journals).
pub(super) async fn latest_set(
    session: &Session,
    plan: &TargetPlan,
) -> Result<(String, String), String> {
    if plan.remote() == Remote::Windows {
        return windows::latest_backup_set(session, plan).await;
    }
    let mut s = Script::new();
    s.raw(STRICT).raw(*script::BACKUP).raw(*script::UNDO);
    s.cmd(&["certctl_latest", &plan.backup_dir]);
    let out = session
        .exec_script(&s, None)
        .await
        .map_err(|e| e.to_string())?;
    if !out.success() {
        return Err(command_failure("listing the backup sets", &out));
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let Some(name) = text.lines().find_map(|l| l.strip_prefix("SET ")) else {
        return Err(format!("no backup set in {}", plan.backup_dir));
    };
    Ok((format!("{}/{name}", plan.backup_dir), text))
}

/// The files a set holds: from its journal, or from its manifest (sets made before journals:
/// `M INDEX<TAB>ROLE<TAB>PRESENT<TAB>PATH`). Every path must be one of this target's files.
pub(super) fn set_entries(
    plan: &TargetPlan,
    set: &str,
    record: &str,
) -> Result<Vec<Entry>, String> {
    let entries: Vec<Entry> = match super::lock::journal_in(record) {
        Some(journal) => {
            let journal: Journal =
                journal.map_err(|e| format!("backup set {set}: its journal: {e}"))?;
            if journal.intent.swap != Kind::Files {
                return Err(format!(
                    "backup set {set} was not taken by a `swap: files` connector"
                ));
            }
            journal.intent.files
        }
        None => record
            .lines()
            .filter_map(|l| l.strip_prefix("M "))
            .filter_map(|line| {
                let f: Vec<&str> = line.splitn(4, '\t').collect();
                let [idx, role, present, path] = f[..] else {
                    return None;
                };
                Some(Entry {
                    role: role.to_string(),
                    path: path.to_string(),
                    write: path.to_string(),
                    link: None,
                    copy: (present == "1").then(|| format!("{idx}.{role}")),
                    copy_sha256: None,
                    new_sha256: String::new(),
                })
            })
            .collect(),
    };
    if entries.is_empty() {
        return Err(format!("backup set {set} has no journal or manifest"));
    }
    if let Some(e) = entries
        .iter()
        .find(|e| !plan.files.iter().any(|f| f.path == e.path))
    {
        return Err(format!(
            "backup set {set} names {}, which is not one of this target's files",
            crate::report::sanitize_line(&e.path)
        ));
    }
    Ok(entries)
}
