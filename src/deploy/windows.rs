//! The engine's housekeeping on a target whose connector has `shell: powershell` (a Windows
//! OpenSSH server, whose login shell is `cmd.exe` or PowerShell, never `sh`).
//!
//! Every command certctl sends such a target is `powershell … -EncodedCommand …` (the
//! connector's scripts; see [`crate::ssh::quote::powershell_command_line`]). What the POSIX
//! path does with `sh` scripts is done here over SFTP, which Windows OpenSSH's sftp-server
//! offers as OpenSSH's does:
//!
//! | housekeeping | POSIX targets (`sh`) | here (SFTP) |
//! |---|---|---|
//! | lock | `mkdir` of `{backup_dir}/.lock` + holder file | SFTP `mkdir` (fails if it exists) + holder file (0600) |
//! | stale scratch dirs | swept by the lock script | listed, tag read, removed |
//! | scratch and backup set dirs | `mkdir -m 0700` | SFTP `mkdir` with mode 0700 (where the server honours modes) |
//! | snapshot | `certctl_save FILE CMD` | the script's stdout, written over SFTP (0600) |
//! | test, reload, alive | one combined `sh` script | each script on its own, in order |
//! | old backup sets | `certctl_prune` | listed, sorted, removed |
//! | `certctl rollback` | `certctl_latest` | the backup dir listed, the manifest read |
//! | cleanup | `rm -rf` | SFTP remove + rmdir, every failure named |
//!
//! Paths: the plan keeps `tmp_dir` and `backup_dir` as PowerShell reads them (`C:/Windows/Temp`,
//! forward slashes); [`sftp_path`] gives the form Windows OpenSSH's sftp-server takes
//! (`/C:/Windows/Temp`). A POSIX path (the tests' Linux hosts) is the same for both.
//!
//! Not here: what the connector's scripts do (swap_commands.rs), and the POSIX path.

use super::cleanup::LOCK_LEFT;
use super::journal::Journal;
use super::lock::{describe_holder, holder_alive_here, lock_dir, lock_holder};
use super::run::{OpenJournal, StepResult};
use crate::plan::TargetPlan;
use crate::report::Status;
use crate::ssh::Session;

/// The path `sftp-server` takes for `path`: a drive path `C:/x` becomes `/C:/x` (Windows
/// OpenSSH's form); anything else is unchanged.
pub(super) fn sftp_path(path: &str) -> String {
    if crate::plan::is_drive_path(path) {
        format!("/{path}")
    } else {
        path.to_string()
    }
}

/// `mkdir -p` over SFTP, with `mode`: one request when the parent exists (every run after
/// the first), else each directory from the root down.
async fn make_dirs(session: &Session, path: &str, mode: u32) -> Result<(), String> {
    let sftp = sftp_path(path);
    if session.make_dir(&sftp, mode).await.is_ok() {
        return Ok(());
    }
    let mut at = String::new();
    for (i, part) in sftp.split('/').enumerate() {
        if i > 0 {
            at.push('/');
        }
        at.push_str(part);
        // The root (`/`) and a drive (`/C:`) exist.
        if part.is_empty() || (i == 1 && part.ends_with(':')) {
            continue;
        }
        session
            .make_dir(&at, mode)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The first line of the lock's holder file, if it can be read.
async fn holder(session: &Session, dir: &str) -> Option<String> {
    let bytes = session
        .read_file(&sftp_path(&format!("{dir}/holder")), 4096)
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&bytes);
    Some(text.lines().next().unwrap_or("").to_string())
}

/// Takes the target's lock: SFTP `mkdir` of `{backup_dir}/.lock` (atomic: it fails when the
/// directory exists), then the holder file (written under a temp name and renamed in, so it is
/// never empty) — the same line the POSIX lock writes, so [`describe_holder`] and
/// `--break-lock` work alike. Then removes scratch directories a killed run of this target
/// left, and reads the active journal. `Err` says why the lock was not taken.
pub(super) async fn lock(
    session: &Session,
    plan: &TargetPlan,
    break_lock: bool,
) -> Result<(String, Option<Result<Journal, String>>), String> {
    let dir = lock_dir(plan);
    make_dirs(session, &plan.backup_dir, 0o700).await?;
    let mut detail = format!("locked {dir}");
    if break_lock && let Ok(Some(_)) = session.list_dir(&sftp_path(&dir)).await {
        let holder = holder(session, &dir).await.unwrap_or_default();
        if holder_alive_here(&holder) {
            return Err(format!(
                "--break-lock refused: {dir} is held by a run that is still running on this \
                 machine ({}); wait for it, or stop it first",
                crate::report::sanitize_line(&holder)
            ));
        }
        remove_tree(session, &sftp_path(&dir), &mut Vec::new()).await?;
        detail = format!(
            "broke the lock of {} (--break-lock); {detail}",
            crate::report::sanitize_line(&holder)
        );
    }
    let created = session
        .make_dir(&sftp_path(&dir), 0o700)
        .await
        .map_err(|e| e.to_string())?;
    if !created {
        let holder = holder(session, &dir).await.unwrap_or_default();
        let journal = read_journal(session, plan).await;
        return Err(describe_holder(
            &dir,
            &holder,
            journal.as_ref().and_then(|j| j.as_ref().ok()),
        ));
    }
    let line = format!("{}\n", lock_holder(plan));
    let tmp = sftp_path(&format!("{dir}/holder.tmp"));
    let written = match session.upload(&tmp, line.as_bytes(), 0o600, None).await {
        Ok(()) => session
            .rename(&tmp, &sftp_path(&format!("{dir}/holder")))
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = written {
        // Without a holder line no run could tell whose lock it is: do not keep it.
        let _ = remove_tree(session, &sftp_path(&dir), &mut Vec::new()).await;
        return Err(format!(
            "could not write the holder file in {dir} ({e}); the lock was given back"
        ));
    }
    let swept = sweep_scratch(session, plan).await;
    if !swept.is_empty() {
        detail.push_str(&format!(
            "; removed {} scratch directory(ies) left by an interrupted run of this target: {}",
            swept.len(),
            swept.join(", ")
        ));
    }
    Ok((detail, read_journal(session, plan).await))
}

/// The active journal (`{backup_dir}/journal`), if there is one.
pub(super) async fn read_journal(
    session: &Session,
    plan: &TargetPlan,
) -> Option<Result<Journal, String>> {
    let path = sftp_path(&format!("{}/journal", plan.backup_dir));
    let bytes = session.read_file(&path, 1 << 20).await.ok()?;
    Some(Journal::parse(&String::from_utf8_lossy(&bytes)))
}

/// Writes a journal's intent as the active journal: a temp file (fsync'd by the upload)
/// renamed into place.
pub(super) async fn write_journal(
    session: &Session,
    plan: &TargetPlan,
    intent: &str,
) -> Result<(), String> {
    let tmp = sftp_path(&format!("{}/journal.tmp", plan.backup_dir));
    let _ = session.remove_file(&tmp).await;
    session
        .upload(&tmp, format!("{intent}\n").as_bytes(), 0o600, None)
        .await
        .map_err(|e| format!("writing the journal: {e}"))?;
    session
        .rename(&tmp, &sftp_path(&format!("{}/journal", plan.backup_dir)))
        .await
        .map_err(|e| format!("writing the journal: {e}"))
}

/// Closes run `run_id`'s active journal: written into its set as `dest` with `closed
/// OUTCOME` added, the active one removed, the set retired unless `open` keeps it.
pub(super) async fn close_journal(
    session: &Session,
    plan: &TargetPlan,
    run_id: &str,
    open: &OpenJournal,
    outcome: &str,
) -> Result<(), String> {
    let active = sftp_path(&format!("{}/journal", plan.backup_dir));
    let Ok(bytes) = session.read_file(&active, 1 << 20).await else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(&bytes);
    let first = text.lines().next().unwrap_or_default();
    if !first.contains(&format!("\"run\":\"{run_id}\"")) {
        return Ok(());
    }
    let closed = format!("{}\nclosed {outcome}\n", text.trim_end());
    let dest = sftp_path(&open.dest);
    let _ = session.remove_file(&dest).await;
    let _ = session.upload(&dest, closed.as_bytes(), 0o600, None).await;
    session
        .remove_file(&active)
        .await
        .map_err(|e| format!("closing the journal: {e}"))?;
    if open.keep_set_when.map(Status::as_str) != Some(outcome) {
        let _ = session
            .rename(
                &sftp_path(&open.set),
                &sftp_path(&format!("{}.restored", open.set)),
            )
            .await;
    }
    Ok(())
}

/// Scratch directories in `tmp_dir` tagged with this target's lock (`.certctl-lock`), other
/// than this run's: once this run holds the lock, the run that made one cannot be running on
/// this target. Untagged directories and other targets' are kept. Best effort.
async fn sweep_scratch(session: &Session, plan: &TargetPlan) -> Vec<String> {
    let Some((tmp_dir, ours)) = plan.scratch_dir.rsplit_once('/') else {
        return Vec::new();
    };
    let Ok(Some(entries)) = session.list_dir(&sftp_path(tmp_dir)).await else {
        return Vec::new();
    };
    let tag = lock_dir(plan);
    let mut removed = Vec::new();
    for (name, is_dir) in entries {
        if !is_dir || !name.starts_with("certctl-") || name == ours {
            continue;
        }
        let dir = format!("{tmp_dir}/{name}");
        let Ok(text) = session
            .read_file(&sftp_path(&format!("{dir}/.certctl-lock")), 4096)
            .await
        else {
            continue;
        };
        if String::from_utf8_lossy(&text).lines().next() == Some(tag.as_str())
            && remove_tree(session, &sftp_path(&dir), &mut Vec::new())
                .await
                .is_ok()
        {
            removed.push(crate::report::sanitize_line(&dir));
        }
    }
    removed
}

/// Who holds the lock when it is not this run (`None`: this run).
pub(super) async fn lock_owner(session: &Session, plan: &TargetPlan) -> Option<String> {
    let h = holder(session, &lock_dir(plan)).await.unwrap_or_default();
    let ours = h
        .split_whitespace()
        .any(|w| w == format!("run={}", plan.run_id));
    (!ours).then(|| crate::report::sanitize_line(if h.is_empty() { "no lock held" } else { &h }))
}

/// After a failed lock step: removes the lock if its holder names this run. Says what became
/// of it, for the report's error.
pub(super) async fn release_lock(session: &Session, plan: &TargetPlan) -> String {
    let dir = lock_dir(plan);
    match session.list_dir(&sftp_path(&dir)).await {
        Ok(None) => return String::new(),
        Ok(Some(_)) => {}
        Err(e) => {
            return format!(
                "; the lock {dir} may still be held by this run (checking it failed: {e}): check \
                 the target, then rerun with --break-lock"
            );
        }
    }
    let ours = holder(session, &dir).await.is_some_and(|h| {
        h.split_whitespace()
            .any(|w| w == format!("run={}", plan.run_id))
    });
    if !ours {
        return String::new();
    }
    match remove_tree(session, &sftp_path(&dir), &mut Vec::new()).await {
        Ok(()) => "; the lock this run had taken was released".into(),
        Err(e) => format!(
            "; the lock {dir} may still be held by this run (releasing it failed: {e}): check \
             the target, then rerun with --break-lock"
        ),
    }
}

/// The private scratch directory (0700), tagged with this target's lock so a later run can
/// sweep it if this one is killed (best effort: an untagged one is only never swept).
pub(super) async fn make_scratch(session: &Session, plan: &TargetPlan) -> Result<(), String> {
    let dir = sftp_path(&plan.scratch_dir);
    if !session
        .make_dir(&dir, 0o700)
        .await
        .map_err(|e| e.to_string())?
    {
        return Err(format!(
            "the scratch directory {} exists already",
            plan.scratch_dir
        ));
    }
    let tag = format!("{}\n", lock_dir(plan));
    let _ = session
        .upload(&format!("{dir}/.certctl-lock"), tag.as_bytes(), 0o600, None)
        .await;
    Ok(())
}

/// The backup set (0700) and each snapshot script's stdout saved in it (0600), then old sets
/// pruned. The caller writes the manifest.
pub(super) async fn save_snapshots(
    session: &Session,
    plan: &TargetPlan,
    snapshots: &[(String, Vec<String>)],
    set: &str,
) -> Result<(), String> {
    make_dirs(session, &plan.backup_dir, 0o700).await?;
    if !session
        .make_dir(&sftp_path(set), 0o700)
        .await
        .map_err(|e| e.to_string())?
    {
        return Err(format!("the backup set {set} exists already"));
    }
    for (name, argv) in snapshots {
        let out = session.exec(argv).await.map_err(|e| e.to_string())?;
        if !out.success() {
            return Err(super::script::command_failure(
                &format!("snapshot {name}: {}", crate::ssh::quote::label(argv)),
                &out,
            ));
        }
        session
            .upload(
                &sftp_path(&format!("{set}/{name}")),
                &out.stdout,
                0o600,
                None,
            )
            .await
            .map_err(|e| format!("writing snapshot {name}: {e}"))?;
    }
    prune_sets(session, plan).await
}

/// Whether `name` is a backup set's directory name (`SECONDS-HEX`), restored (`.restored`)
/// or not.
fn is_set_name(name: &str, restored: bool) -> bool {
    let name = match (restored, name.strip_suffix(".restored")) {
        (true, Some(n)) => n,
        _ => name,
    };
    let Some((secs, hex)) = name.split_once('-') else {
        return false;
    };
    !secs.is_empty()
        && secs.bytes().all(|b| b.is_ascii_digit())
        && !hex.is_empty()
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Keeps the newest `keep_backups` sets (restored ones count), removes the rest: as
/// `certctl_prune` does on POSIX targets.
async fn prune_sets(session: &Session, plan: &TargetPlan) -> Result<(), String> {
    let dir = sftp_path(&plan.backup_dir);
    let entries = session
        .list_dir(&dir)
        .await
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    let sets: Vec<String> = entries
        .into_iter()
        .filter(|(n, is_dir)| *is_dir && is_set_name(n, true))
        .map(|(n, _)| n)
        .collect();
    let excess = sets.len().saturating_sub(plan.keep_backups as usize);
    let mut failed = Vec::new();
    for name in &sets[..excess] {
        let _ = remove_tree(session, &format!("{dir}/{name}"), &mut failed).await;
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "pruning old backup sets: could not remove {}",
            failed.join(", ")
        ))
    }
}

/// The newest backup set not yet restored, for `certctl rollback`: its directory, and as
/// `certctl_latest` prints them on POSIX targets, `SET NAME` and its journal (framed) or the
/// manifest's lines (`M …`) of sets made before journals.
pub(super) async fn latest_backup_set(
    session: &Session,
    plan: &TargetPlan,
) -> Result<(String, String), String> {
    let entries = session
        .list_dir(&sftp_path(&plan.backup_dir))
        .await
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    let Some(set) = entries
        .into_iter()
        .filter(|(n, is_dir)| *is_dir && is_set_name(n, false))
        .map(|(n, _)| n)
        .next_back()
    else {
        return Err(format!("no backup set in {}", plan.backup_dir));
    };
    let set_dir = format!("{}/{set}", plan.backup_dir);
    let read = |name: &str| {
        let path = sftp_path(&format!("{set_dir}/{name}"));
        async move { session.read_file(&path, 1 << 20).await.ok() }
    };
    let mut text = format!("SET {set}\n");
    if let Some(journal) = read("journal").await {
        text.push_str(&format!(
            "\u{1e}JOURNAL\n{}\n\u{1e}END\n",
            String::from_utf8_lossy(&journal).trim_end()
        ));
    } else {
        let manifest = read("manifest").await.unwrap_or_default();
        for line in String::from_utf8_lossy(&manifest).lines() {
            text.push_str(&format!("M {line}\n"));
        }
    }
    Ok((set_dir, text))
}

/// Removes `path` (SFTP form) and everything under it; a missing path is not an error. Every
/// entry that could not be removed is added to `failed` (the walk goes on past it).
async fn remove_tree(
    session: &Session,
    path: &str,
    failed: &mut Vec<String>,
) -> Result<(), String> {
    let before = failed.len();
    let mut stack = vec![(path.to_string(), false)];
    // Depth first: a directory is visited twice, to list it and, once emptied, to remove it.
    while let Some((at, listed)) = stack.pop() {
        if listed {
            if let Err(e) = session.remove_dir(&at).await {
                tracing::debug!(path = %at, "{e}");
                failed.push(at);
            }
            continue;
        }
        match session.list_dir(&at).await {
            Ok(Some(entries)) => {
                stack.push((at.clone(), true));
                for (name, is_dir) in entries {
                    let child = format!("{at}/{name}");
                    if is_dir {
                        stack.push((child, false));
                    } else if let Err(e) = session.remove_file(&child).await {
                        tracing::debug!(path = %child, "{e}");
                        failed.push(child);
                    }
                }
            }
            // Not a directory (or gone): a file, or nothing.
            Ok(None) | Err(_) => {
                if let Err(e) = session.remove_file(&at).await {
                    tracing::debug!(path = %at, "{e}");
                    failed.push(at);
                }
            }
        }
    }
    if failed.len() == before {
        Ok(())
    } else {
        Err(format!("could not remove {}", failed[before..].join(", ")))
    }
}

/// Closes this run's journal (`close`), removes the scratch directory, then the lock (last,
/// so no other run starts while this one's files are still being removed). Each removal that
/// fails is named, and the step fails.
pub(super) async fn cleanup(
    session: &Session,
    plan: &TargetPlan,
    close: Option<&OpenJournal>,
    status: Status,
) -> StepResult<()> {
    let mut failed = Vec::new();
    if let Some(open) = close
        && let Err(e) = close_journal(session, plan, &plan.run_id, open, status.as_str()).await
    {
        failed.push(e);
    }
    let _ = remove_tree(session, &sftp_path(&plan.scratch_dir), &mut failed).await;
    let lock = sftp_path(&lock_dir(plan));
    let lock_left = remove_tree(session, &lock, &mut failed).await.is_err();
    if failed.is_empty() {
        return Ok(((), None));
    }
    let names: Vec<String> = failed
        .iter()
        .map(|p| crate::report::sanitize_line(p))
        .collect();
    let mut message = format!("could not remove: {}", names.join(", "));
    if lock_left {
        message.push_str(LOCK_LEFT);
    }
    Err(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drive_paths_map_to_the_sftp_form_and_posix_paths_stay() {
        assert_eq!(sftp_path("C:/Windows/Temp/x"), "/C:/Windows/Temp/x");
        assert_eq!(sftp_path("/tmp/x"), "/tmp/x");
        assert_eq!(sftp_path("C:relative"), "C:relative");
    }

    #[test]
    fn backup_set_names_are_run_ids() {
        assert!(is_set_name("1700000000-0a1b2c", false));
        assert!(!is_set_name("1700000000-0a1b2c.restored", false));
        assert!(is_set_name("1700000000-0a1b2c.restored", true));
        for bad in [
            ".lock",
            "1700000000-",
            "-ab",
            "17x-ab",
            "1700000000-AB",
            "manifest",
        ] {
            assert!(!is_set_name(bad, true), "{bad}");
        }
    }
}
