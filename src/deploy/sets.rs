//! Backup sets: the newest one `certctl rollback` restores, and what a set holds (its journal,
//! or the manifest of sets made before journals).

use super::journal::{Entry, Journal, Kind};
use super::script::{self, STRICT, command_failure};
use super::{Remote, windows};
use crate::plan::TargetPlan;
use crate::ssh::Session;
use crate::ssh::quote::Script;

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
                    in_place: false,
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
