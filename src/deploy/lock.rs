//! Step 2, **lock**: `{backup_dir}/.lock`, a directory taken with an atomic `mkdir` (SFTP
//! `mkdir` on Windows targets), holding one line that names the holder (written to a temp file
//! and renamed in, so it is never empty). Taking it also sweeps what a killed run of this
//! target left beside the live files, and reads the target's active journal (step 3's input).
//!
//! `--break-lock` removes a lock only when its holder is not a live process of this machine,
//! and only the holder line it was shown (compare and delete), then takes it as usual.

use super::holder::{holder_alive_here, lock_holder};
use super::journal::Journal;
use super::names::lock_dir;
use super::script::{self, STRICT};
use crate::plan::TargetPlan;
use crate::ssh::Session;
use crate::ssh::quote::Script;

/// What the lock script said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum LockAnswer {
    /// Taken; the detail names what was swept.
    Locked(String),
    /// Another run's (its holder line).
    Held(String),
    /// Not taken, and why.
    Failed(String),
}

/// The lock script's commands (it needs [`script::LOCK`] and [`script::JOURNAL`]): the backup
/// directory, the lock; once held, a wait for the remote script of a killed run that may still
/// be finishing a change, the sweep of what such a run left, and the journal.
pub(super) fn lock_commands(script: &mut Script, plan: &TargetPlan) {
    let dir = lock_dir(plan);
    script.cmd(&["certctl_trust", &plan.backup_dir]);
    script.cmd(&["certctl_dirs", &plan.backup_dir]);
    script.cmd(&["certctl_lock", &dir, &lock_holder(plan)]);
    script.raw("[ \"${locked:-0}\" = 1 ] && ");
    script.cmd(&["certctl_wait_idle", &plan.backup_dir]);
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
    script.cmd(&["certctl_journal_show", &plan.backup_dir]);
}

/// Reads the lock script's output (its part of a combined command's output).
pub(super) fn parse_lock(plan: &TargetPlan, text: &str) -> LockAnswer {
    let dir = lock_dir(plan);
    let line = |tag: &str| text.lines().find_map(|l| l.strip_prefix(tag));
    if let Some(holder) = line("HELD ").or_else(|| text.lines().find(|l| *l == "HELD").map(|_| ""))
    {
        return LockAnswer::Held(holder.to_string());
    }
    if let Some(why) = line("FAILED ") {
        return LockAnswer::Failed(crate::report::sanitize_line(why));
    }
    if !text.lines().any(|l| l == "LOCKED") {
        return LockAnswer::Failed(format!("the lock script did not say whether it took {dir}"));
    }
    let listed = |tag: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix(tag))
            .map(crate::report::sanitize_line)
            .collect()
    };
    let (stale, scratch) = (listed("STALE "), listed("SCRATCH "));
    let mut detail = format!("locked {dir}");
    if let Some(pid) = text.lines().find_map(|l| l.strip_prefix("WAITED ")) {
        detail.push_str(&format!(
            "; waited for the remote script of an interrupted run (pid {}) to finish",
            crate::report::sanitize_line(pid)
        ));
    }
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
    LockAnswer::Locked(detail)
}

/// The journal section of a lock (or undo) script's output, read.
pub(super) fn journal_in(text: &str) -> Option<Result<Journal, String>> {
    script::section(text, "JOURNAL").map(Journal::parse)
}

/// `--break-lock` on a lock held by `holder`: refused when the holder is a live process of
/// this machine; otherwise the lock is removed if its holder line is still `holder`.
pub(super) async fn break_lock(
    session: &Session,
    plan: &TargetPlan,
    holder: &str,
) -> Result<String, String> {
    let dir = lock_dir(plan);
    if holder_alive_here(holder) {
        return Err(format!(
            "--break-lock refused: {dir} is held by a run that is still running on this \
             machine ({}); wait for it, or stop it first",
            crate::report::sanitize_line(holder)
        ));
    }
    let text = run_lock_script(session, &["certctl_break", &dir, holder]).await?;
    match text.trim() {
        "BROKEN" => Ok(format!(
            "broke the lock of {} (--break-lock)",
            crate::report::sanitize_line(if holder.is_empty() {
                "an unnamed holder"
            } else {
                holder
            })
        )),
        "NOLOCK" => Ok("the lock was gone already".into()),
        other => Err(format!(
            "--break-lock: the lock changed hands while it was being broken ({}); nothing was done",
            crate::report::sanitize_line(other.strip_prefix("CHANGED ").unwrap_or(other))
        )),
    }
}

/// Runs one function of the lock script (`argv`: the function, then its arguments); its
/// standard output.
async fn run_lock_script(session: &Session, argv: &[&str]) -> Result<String, String> {
    let mut s = Script::new();
    s.raw(STRICT).raw(*script::LOCK);
    s.cmd(argv);
    let out = session
        .exec_script(&s, None)
        .await
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Who holds the target's lock, if not this run: `Ok(None)` when its holder line names this
/// run, `Ok(Some(holder))` otherwise.
pub(super) async fn owner(session: &Session, plan: &TargetPlan) -> Result<Option<String>, String> {
    if plan.remote() == super::Remote::Windows {
        return Ok(super::windows::lock_owner(session, plan).await);
    }
    let text = run_lock_script(session, &["certctl_owner", &lock_dir(plan), &plan.run_id]).await?;
    match text.trim() {
        "OURS" => Ok(None),
        other => Ok(Some(crate::report::sanitize_line(
            other.strip_prefix("OTHER ").unwrap_or(other),
        ))),
    }
}

/// Whether the backup directory can be trusted, from `certctl_trust`'s output: the directory
/// and every directory above it must be owned by root or the login user; the directory itself
/// must not be writable by group or others (whoever can write there can plant a backup set or
/// a journal that certctl would restore); a directory above it may be, only with the sticky
/// bit (as /tmp: nobody else can replace what is in it). `Err` names what was refused.
pub(super) fn check_trust(backup_dir: &str, text: &str) -> Result<(), String> {
    let mut dirs = Vec::new();
    let mut d = backup_dir.to_string();
    loop {
        dirs.push(d.clone());
        if d == "/" {
            break;
        }
        d = match d.rsplit_once('/') {
            Some(("", _)) | None => "/".into(),
            Some((parent, _)) => parent.to_string(),
        };
    }
    let exists: Vec<bool> = text
        .lines()
        .filter_map(|l| l.strip_prefix("TE "))
        .map(|v| v == "1")
        .collect();
    let uid = text.lines().find_map(|l| l.strip_prefix("TU "));
    let stats: Vec<(u32, u32)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("TS "))
        .filter_map(|l| {
            let (u, m) = l.split_once(' ')?;
            Some((u.parse().ok()?, u32::from_str_radix(m, 8).ok()?))
        })
        .collect();
    let (Some(uid), true) = (
        uid.and_then(|u| u.parse::<u32>().ok()),
        exists.len() == dirs.len(),
    ) else {
        return Err(format!(
            "the backup directory {backup_dir} and those above it could not be checked"
        ));
    };
    let existing: Vec<&String> = dirs
        .iter()
        .zip(&exists)
        .filter(|(_, e)| **e)
        .map(|(d, _)| d)
        .collect();
    if existing.len() != stats.len() {
        return Err(format!(
            "the backup directory {backup_dir} and those above it could not be checked (`stat` failed)"
        ));
    }
    for (i, (dir, (owner, mode))) in existing.iter().zip(&stats).enumerate() {
        let own = *dir == backup_dir;
        let why = if *owner != 0 && *owner != uid {
            Some(format!(
                "is owned by uid {owner}, neither root nor the login user (uid {uid})"
            ))
        } else if mode & 0o022 != 0 && (own || mode & 0o1000 == 0) {
            Some(format!("is writable by others (mode {mode:04o})"))
        } else {
            None
        };
        if let Some(why) = why {
            let what = if i == 0 && own {
                "the backup directory"
            } else {
                "a directory above the backup directory"
            };
            return Err(format!(
                "refused: {what} {} {why}: whoever can write there could plant a backup set or \
                 a journal that certctl would restore; fix its owner or mode (backup_dir: \
                 {backup_dir})",
                crate::report::sanitize_line(dir)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_trust;

    fn out(exists: &[u8], uid: u32, stats: &[(u32, &str)]) -> String {
        let mut t = String::new();
        for e in exists {
            t.push_str(&format!("TE {e}\n"));
        }
        t.push_str(&format!("TU {uid}\n"));
        for (u, m) in stats {
            t.push_str(&format!("TS {u} {m}\n"));
        }
        t
    }

    #[test]
    fn a_private_directory_under_root_owned_ones_is_trusted() {
        let text = out(
            &[1, 1, 1, 1, 1, 1],
            1000,
            &[
                (1000, "700"),
                (0, "755"),
                (0, "755"),
                (0, "755"),
                (0, "755"),
                (0, "755"),
            ],
        );
        assert_eq!(check_trust("/var/lib/certctl/backups/web", &text), Ok(()));
        // /tmp's sticky bit makes a world-writable parent safe; a missing backup dir is made 0700.
        let text = out(&[0, 1, 1, 1], 0, &[(0, "755"), (0, "1777"), (0, "755")]);
        assert_eq!(check_trust("/tmp/x/backups", &text).err(), None);
    }

    #[test]
    fn writable_or_foreign_directories_are_refused_by_name() {
        let cases = [
            (
                out(&[1, 1, 1], 0, &[(0, "770"), (0, "755"), (0, "755")]),
                "/srv/b is writable by others (mode 0770)",
            ),
            (
                out(&[1, 1, 1], 0, &[(0, "1777"), (0, "755"), (0, "755")]),
                "the backup directory /srv/b is writable",
            ),
            (
                out(&[1, 1, 1], 0, &[(0, "700"), (0, "777"), (0, "755")]),
                "directory above the backup directory /srv is writable by others (mode 0777)",
            ),
            (
                out(&[1, 1, 1], 1000, &[(65534, "700"), (0, "755"), (0, "755")]),
                "owned by uid 65534",
            ),
        ];
        for (text, says) in cases {
            let e = check_trust("/srv/b", &text).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
        assert!(check_trust("/srv/b", "TE 1\n").is_err(), "cut short");
    }
}
