//! The restore of a backup set's `swap: files` entries — by a rollback, `certctl rollback` or a
//! recovery: the remote commands (`scripts/restore.sh`) and the check of what they left.

use super::journal::Entry;
use super::names::{parent, temp_beside};
use super::script;
use crate::ssh::quote::Script;

/// The restore's commands for `entries` from `set` (they need [`script::STRICT`],
/// [`script::RESTORE`] and [`script::JOURNAL`], under [`script::NO_HANGUP`]): see
/// `scripts/restore.sh`. Temp names carry `run_id` (the run doing the restore). Then what each
/// path is now, for [`restore_check`].
pub(super) fn restore_commands(
    s: &mut Script,
    backup_dir: &str,
    set: &str,
    entries: &[Entry],
    run_id: &str,
) {
    s.cmd(&["certctl_busy", backup_dir]);
    s.cmd(&["certctl_mark", backup_dir, "restoring"]);
    for e in entries {
        if let Some(copy) = &e.copy {
            let tmp = temp_beside(&e.write, run_id, "restore");
            s.cmd(&["certctl_copy", &format!("{set}/{copy}"), &tmp, &e.write]);
        }
    }
    // The copies' temp names, in entry order (a file that did not exist has none).
    let temps: Vec<String> = entries
        .iter()
        .filter(|e| e.copy.is_some())
        .map(|e| temp_beside(&e.write, run_id, "restore"))
        .collect();
    s.raw("if [ \"$fail\" = 0 ]; then\n");
    let mut made = vec!["certctl_sync_made".to_string()];
    made.extend(temps.iter().cloned());
    s.cmd(&made);
    let mut dirs = Vec::new();
    for e in entries {
        match &e.copy {
            Some(_) => {
                let tmp = temp_beside(&e.write, run_id, "restore");
                // Written back the way the change wrote it: into the inode a mount holds.
                let place = if e.in_place {
                    "certctl_place_in"
                } else {
                    "certctl_place"
                };
                s.cmd(&[place, &tmp, &e.write]);
            }
            // A file that did not exist: removed (not the path itself when it is a symlink
            // that was replaced: putting the link back replaces the file).
            None if e.write != e.path || e.link.is_none() => {
                s.cmd(&["certctl_remove", &e.write]);
            }
            None => {}
        }
        if let Some(text) = &e.link {
            let tmp = temp_beside(&e.path, run_id, "link");
            s.cmd(&["certctl_relink", &e.path, text, &tmp]);
        }
        for dir in [parent(&e.write), parent(&e.path)] {
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    }
    let mut mark = vec![
        "certctl_mark_synced".to_string(),
        backup_dir.to_string(),
        "restored".into(),
    ];
    mark.extend(dirs);
    s.cmd(&mark);
    s.raw("else\n");
    let mut discard = vec!["certctl_discard".to_string()];
    discard.extend(temps);
    s.cmd(&discard);
    s.raw("fi\n");
    for (i, e) in entries.iter().enumerate() {
        s.cmd(&["certctl_check", &i.to_string(), &e.path]);
    }
}

/// Checks a restore's result: each path holds its copy (by SHA-256; absent where the file
/// did not exist) and each symlink is the recorded text. `Err` names what does not.
pub(super) fn restore_check(stdout: &str, entries: &[Entry]) -> Result<(), String> {
    let records = script::records(stdout, &[("L", 1)])?;
    let mut bad = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let idx = i.to_string();
        let content = records
            .iter()
            .find(|r| r.tag == "C" && r.fields.first() == Some(&idx.as_str()))
            .and_then(|r| r.fields.get(1).copied());
        let link = records
            .iter()
            .find(|r| r.tag == "L" && r.fields.first() == Some(&idx.as_str()))
            .and_then(|r| r.text);
        let content_ok = match (&e.copy_sha256, content) {
            (Some(want), Some(have)) => want == have,
            (None, Some(have)) if e.copy.is_none() => {
                have == "absent" || (e.link.is_some() && e.write == e.path)
            }
            // A set from before journals: its copies' hashes were not recorded.
            (None, Some(have)) => have != "absent" && have != "unreadable",
            (_, None) => false,
        };
        let link_ok = e.link.as_deref() == link || (e.link.is_none() && link.is_none());
        if !content_ok {
            bad.push(format!("{} (content)", e.path));
        }
        if !link_ok {
            bad.push(format!(
                "{} (symlink: expected {:?}, found {:?})",
                e.path,
                e.link.as_deref().unwrap_or("none"),
                link.unwrap_or("none")
            ));
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "after restoring, these do not match the backup set: {}",
            bad.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::shell_tests::{SHELLS, run};

    /// A stand-in for `tool` on PATH that logs its arguments to `log`, then runs the real one.
    fn logging_shim(dir: &std::path::Path, tool: &str, log: &std::path::Path) {
        use std::os::unix::fs::PermissionsExt as _;
        let real = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap();
        let real = String::from_utf8(real.stdout).unwrap();
        let shim = dir.join(tool);
        let text = format!(
            "#!/bin/sh\nprintf '%s %s\\n' {tool} \"$*\" >> '{}'\nexec {} \"$@\"\n",
            log.display(),
            real.trim()
        );
        std::fs::write(&shim, text).unwrap();
        std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// The real restore under sh and bash, `sync` and `mv` logging: every copy is fsync'd
    /// before the first rename over a live file, and the live files end as the set's copies.
    #[test]
    fn the_copies_are_fsynced_before_any_rename_over_a_live_file() {
        for shell in SHELLS {
            let dir = tempfile::tempdir().unwrap();
            let (shim, set, backups) = (
                dir.path().join("bin"),
                dir.path().join("set"),
                dir.path().join("backups"),
            );
            for d in [&shim, &set, &backups] {
                std::fs::create_dir(d).unwrap();
            }
            let log = dir.path().join("log");
            logging_shim(&shim, "sync", &log);
            logging_shim(&shim, "mv", &log);
            let mut entries = Vec::new();
            for name in ["a.pem", "b.pem"] {
                let live = dir.path().join(name).display().to_string();
                std::fs::write(&live, format!("new {name}")).unwrap();
                std::fs::write(set.join(name), format!("old {name}")).unwrap();
                entries.push(Entry {
                    role: "cert".into(),
                    path: live.clone(),
                    write: live,
                    link: None,
                    copy: Some(name.into()),
                    copy_sha256: None,
                    new_sha256: String::new(),
                    in_place: false,
                });
            }
            let mut s = Script::new();
            s.raw(script::STRICT)
                .raw(*script::RESTORE)
                .raw(*script::JOURNAL);
            let (b, set) = (backups.display().to_string(), set.display().to_string());
            restore_commands(&mut s, &b, &set, &entries, "1-ab");
            s.raw("exit $fail\n");
            let out = run(shell, s.as_str(), b"", Some(&shim));
            assert!(out.status.success(), "{shell}: {out:?}");
            for e in &entries {
                let name = e.copy.as_deref().unwrap();
                assert_eq!(
                    std::fs::read_to_string(&e.write).unwrap(),
                    format!("old {name}")
                );
            }
            let log = std::fs::read_to_string(&log).unwrap();
            let lines: Vec<&str> = log.lines().collect();
            let temps: Vec<String> = entries
                .iter()
                .map(|e| temp_beside(&e.write, "1-ab", "restore"))
                .collect();
            let synced = lines
                .iter()
                .position(|l| l.starts_with("sync ") && temps.iter().all(|t| l.contains(t)))
                .unwrap_or_else(|| panic!("{shell}: no sync of both copies: {log}"));
            let first_rename = lines
                .iter()
                .position(|l| l.starts_with("mv ") && temps.iter().any(|t| l.contains(t)))
                .unwrap_or_else(|| panic!("{shell}: no rename: {log}"));
            assert!(synced < first_rename, "{shell}: {log}");
        }
    }
}
