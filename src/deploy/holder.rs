//! Who holds a target's lock: the holder line a run writes (pid, host, user, start, run id),
//! whether a holder is a live process of this machine, and how a held lock is described.

use std::sync::LazyLock;

use super::journal::Journal;
use crate::plan::TargetPlan;

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
