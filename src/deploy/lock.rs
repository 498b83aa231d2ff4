//! Step 2, **lock**: `{backup_dir}/.lock`, a directory taken with an atomic `mkdir` (SFTP
//! `mkdir` on Windows targets), holding one line that names the holder (written to a temp file
//! and renamed in, so it is never empty). Taking it also sweeps what a killed run of this
//! target left beside the live files, and reads the target's active journal (step 3's input).
//!
//! `--break-lock` removes a lock only when its holder is not a live process of this machine,
//! and only the holder line it was shown (compare and delete), then takes it as usual.

use std::sync::LazyLock;

use super::journal::Journal;
use super::run::Run;
use super::script::{self, STRICT};
use crate::plan::TargetPlan;
use crate::ssh::Session;
use crate::ssh::quote::Script;

/// The target's lock: a directory beside its backups (per target, private).
pub(super) fn lock_dir(plan: &TargetPlan) -> String {
    format!("{}/.lock", plan.backup_dir)
}

/// This machine's host name, read once (every target's lock names it).
pub(super) static LOCAL_HOST: LazyLock<Option<String>> = LazyLock::new(|| {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
});

/// The user this process runs as, by its effective uid (`$USER` is unset under cron, systemd
/// and many CI containers): the name from `/etc/passwd`, else `uid N`.
static LOCAL_USER: LazyLock<String> = LazyLock::new(|| {
    let uid = rustix::process::geteuid().as_raw();
    let name = std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
            })
        });
    name.filter(|n| !n.is_empty() && !n.contains(char::is_whitespace))
        .unwrap_or_else(|| format!("uid{uid}"))
});

/// Who holds a lock: written into it, shown to the next run.
pub(super) fn lock_holder(plan: &TargetPlan) -> String {
    let host = LOCAL_HOST.as_deref().unwrap_or("unknown");
    let started = crate::report::format_unix(crate::plan::now_unix());
    format!(
        "pid={} host={host} user={} started={started} run={}",
        std::process::id(),
        LOCAL_USER.as_str(),
        plan.run_id
    )
}

/// One `key=value` field of a holder line (`?` when absent).
fn holder_field(holder: &str, name: &str) -> String {
    holder
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
        .unwrap_or("?")
        .to_string()
}

/// Whether a holder line names a process of this machine that is still running.
pub(super) fn holder_alive_here(holder: &str) -> bool {
    let here = LOCAL_HOST.as_deref().unwrap_or_default();
    holder_field(holder, "host") == here
        && holder_field(holder, "pid")
            .parse::<u32>()
            .is_ok_and(process_alive)
}

/// Whether a local process is running (a zombie counts as gone).
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Names the holder of a lock, says whether it is still running (when it ran on this machine
/// we can tell), how to clear a stale one, and what the next run will do about the change the
/// holder left unfinished (its journal).
pub(super) fn describe_holder(dir: &str, holder: &str, journal: Option<&Journal>) -> String {
    let holder = crate::report::sanitize_line(holder);
    if holder.trim().is_empty() {
        return format!(
            "{dir} is held, but names no holder (a run is taking it this instant, or one was \
             killed while taking it): check the target, then rerun with --break-lock"
        );
    }
    let (pid, host) = (holder_field(&holder, "pid"), holder_field(&holder, "host"));
    let who = format!(
        "pid {pid} on {host} (user {}, started {}, run {})",
        holder_field(&holder, "user"),
        holder_field(&holder, "started"),
        holder_field(&holder, "run")
    );
    let here = LOCAL_HOST.as_deref().unwrap_or_default();
    let mut text = if host == here && !holder_alive_here(&holder) {
        format!(
            "{dir} is held by a run that is no longer running: {who}. A killed run left it; \
             rerun with --break-lock to clear it"
        )
    } else {
        format!(
            "another certctl run holds {dir}: {who}. Wait for it to finish; if it was killed, \
             rerun with --break-lock"
        )
    };
    if let Some(j) = journal {
        text.push_str(&format!(
            ". It left a change unfinished ({}): the next run that takes the lock rolls it \
             back from backup set {} first",
            j.describe(),
            crate::report::sanitize_line(&j.intent.set)
        ));
    }
    text
}

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
    let mut s = Script::new();
    s.raw(STRICT).raw(*script::LOCK);
    s.cmd(&["certctl_break", &dir, holder]);
    let out = session
        .exec_script(&s, None)
        .await
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
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

/// After a failed lock step: removes the lock if it names this run (over a new connection if
/// the old one was lost). Says what became of it, for the report's error.
pub(super) async fn release_after_failure(run: &mut Run<'_>, session: &mut Session) -> String {
    let plan = run.plan;
    let dir = lock_dir(plan);
    if super::rollback::connection_lost(session, plan).await
        && let Err(e) = super::rollback::reconnect_once(run, session, "lock").await
    {
        return format!(
            "; the lock {dir} may still be held by this run (reconnecting to release it failed: \
             {e}): check the target, then rerun with --break-lock"
        );
    }
    match plan.remote() {
        super::Remote::Windows => super::windows::release_lock(session, plan).await,
        super::Remote::Posix => release_posix(session, plan).await,
    }
}

async fn release_posix(session: &Session, plan: &TargetPlan) -> String {
    let dir = lock_dir(plan);
    let mut s = Script::new();
    s.raw(STRICT).raw(*script::LOCK);
    s.cmd(&["certctl_unlock", &dir, &plan.run_id]);
    match session.exec_script(&s, None).await {
        Ok(out) => match String::from_utf8_lossy(&out.stdout).trim() {
            "RELEASED" => "; the lock this run had taken was released".into(),
            "NOTOURS" | "NOLOCK" => String::new(),
            _ => format!(
                "; the lock {dir} may still be held by this run ({}): check the target, then \
                 rerun with --break-lock",
                script::command_failure("unlock", &out)
            ),
        },
        Err(e) => format!(
            "; the lock {dir} may still be held by this run (releasing it failed: {e}): check \
             the target, then rerun with --break-lock"
        ),
    }
}

/// Who holds the target's lock, if not this run: `Ok(None)` when its holder line names this
/// run, `Ok(Some(holder))` otherwise.
pub(super) async fn owner(session: &Session, plan: &TargetPlan) -> Result<Option<String>, String> {
    if plan.remote() == super::Remote::Windows {
        return Ok(super::windows::lock_owner(session, plan).await);
    }
    let mut s = Script::new();
    s.raw(STRICT).raw(*script::LOCK);
    s.cmd(&["certctl_owner", &lock_dir(plan), &plan.run_id]);
    let out = session
        .exec_script(&s, None)
        .await
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.trim() {
        "OURS" => Ok(None),
        other => Ok(Some(crate::report::sanitize_line(
            other.strip_prefix("OTHER ").unwrap_or(other),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_described_in_plain_sentences() {
        let here = LOCAL_HOST.clone().unwrap_or_default();
        for (host, says) in [
            ("elsewhere", "another certctl run holds"),
            (here.as_str(), "no longer running"),
        ] {
            let holder = format!(
                "pid=4294967295 host={host} user=ops started=2026-01-01T00:00:00Z run=1-ab"
            );
            let text = describe_holder("/var/lib/certctl/backups/web/.lock", &holder, None);
            assert!(text.contains(says), "{text}");
            assert!(!text.contains("  "), "{text:?}");
            assert!(text.contains("--break-lock"), "{text}");
        }
        let empty = describe_holder("/b/.lock", "", None);
        assert!(!empty.contains("pid ?"), "{empty}");
    }

    #[test]
    fn this_process_is_a_live_holder_and_the_user_comes_from_the_uid() {
        let holder = format!(
            "pid={} host={} user=x started=- run=1-ab",
            std::process::id(),
            LOCAL_HOST.clone().unwrap_or_default()
        );
        assert!(holder_alive_here(&holder));
        assert!(!holder_alive_here(&holder.replace("host=", "host=other")));
        assert!(!LOCAL_USER.is_empty() && LOCAL_USER.as_str() != "unknown");
    }
}
