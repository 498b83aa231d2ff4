//! Live files bind-mounted into containers (docs/deploy.md#files-bind-mounted-into-containers).
//! A container that bind-mounts a single file keeps the inode it was given: a file renamed over
//! the live path on the host is never seen inside it (moby#22627), so every deploy would verify
//! the old certificate and roll back. Such a file is written into its own inode instead.
//!
//! This module owns the decision and the remote commands; the shell is in `scripts/mounts.sh`
//! (the detection, part of inspect's remote command: no extra round trip) and
//! `scripts/inplace.sh` (the write, in the swap's and the restore's commands). It does not
//! own the order of the steps: the in-place write happens where the rename would have, after
//! the backup and the journal, under the lock; rollback and recovery read `in_place` from the
//! journal's entries and write the old content back the same way (`restore.rs`).

use super::inspect::{LiveFile, LiveState};
use super::run::Run;
use crate::plan::{InPlace, PlannedFile, TargetPlan};
use crate::ssh::quote::Script;

/// What inspect found about a live file's mounts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Binds {
    /// The live file's `DEV INO` as `stat` printed them: the swap writes into it only while
    /// the path still names that inode.
    pub identity: Option<String>,
    /// The mounts whose root is the live file, one per mount (a mount namespace each).
    pub mounts: Vec<Mount>,
}

/// A mount whose root is a live file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Mount {
    /// The kernel's mount id (unique across namespaces).
    pub id: u64,
    /// A process that sees the mount, and its name (`/proc/PID/comm`, untrusted text).
    pub pid: u32,
    pub comm: String,
    /// Where the file is mounted, as that process sees it (unescaped, untrusted text).
    pub point: String,
}

/// The marker line the detection's output starts with, at the end of inspect's output.
const SECTION: &str = "\u{1e}M\n";

/// Inspect's commands (they need [`super::script::INSPECT`]): after `certctl_files` (which
/// records each live file's real path), each file's identity and mounts.
pub(super) fn commands(s: &mut Script, plan: &TargetPlan) {
    let mut argv = vec!["certctl_mounts".to_string()];
    argv.extend((0..plan.files.len()).map(|i| i.to_string()));
    s.cmd(&argv);
}

/// Inspect's output without the mounts section, and that section (when the script got there).
pub(super) fn split_off(text: &str) -> (&str, Option<&str>) {
    match text.find(SECTION) {
        Some(at) => (&text[..at], Some(&text[at + SECTION.len()..])),
        None => (text, None),
    }
}

/// Reads the mounts section: one [`Binds`] per file index (`n` files). A line that is not the
/// script's fails inspect rather than be guessed at.
pub(super) fn parse(section: &str, n: usize) -> Result<Vec<Binds>, String> {
    let mut binds = vec![Binds::default(); n];
    let bad = |line: &str| {
        format!(
            "unexpected output from the inspect script's mount search: {:?}",
            crate::report::sanitize_line(line)
        )
    };
    for line in section.lines().filter(|l| !l.trim().is_empty()) {
        let mut f = line.splitn(6, ' ');
        let (tag, idx) = (f.next(), f.next().and_then(|i| i.parse::<usize>().ok()));
        let Some(idx) = idx.filter(|i| *i < n) else {
            return Err(bad(line));
        };
        match tag {
            Some("N") => {
                let (Some(dev), Some(ino)) = (f.next(), f.next()) else {
                    return Err(bad(line));
                };
                if !(numeric(dev) && numeric(ino)) {
                    return Err(bad(line));
                }
                binds[idx].identity = Some(format!("{dev} {ino}"));
            }
            Some("M") => {
                let id = f.next().and_then(|v| v.parse().ok());
                let pid = f.next().and_then(|v| v.parse().ok());
                let (Some(id), Some(pid), Some(point)) = (id, pid, f.next()) else {
                    return Err(bad(line));
                };
                binds[idx].mounts.push(Mount {
                    id,
                    pid,
                    comm: f.next().unwrap_or_default().to_string(),
                    point: unescape(point),
                });
            }
            _ => return Err(bad(line)),
        }
    }
    Ok(binds)
}

fn numeric(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Undoes mountinfo's escaping of a path (`\040` space, `\011` tab, `\012` newline, `\134`
/// backslash: any `\` and three octal digits).
pub(super) fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = (bytes[i] == b'\\')
            .then(|| bytes.get(i + 1..i + 4))
            .flatten()
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)) && d[0] <= b'3');
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `bind-mounted into /etc/nginx/certs/fullchain.pem (PID 4242, nginx)`; a fourth mount and
/// more are counted, not listed. Sanitised.
pub(super) fn describe(mounts: &[Mount]) -> String {
    const LISTED: usize = 3;
    let each: Vec<String> = mounts
        .iter()
        .take(LISTED)
        .map(|m| {
            let comm = crate::report::sanitize_line(m.comm.trim());
            let who = if comm.is_empty() {
                format!("PID {}", m.pid)
            } else {
                format!("PID {}, {comm}", m.pid)
            };
            format!("{} ({who})", crate::report::sanitize_line(&m.point))
        })
        .collect();
    let more = match mounts.len().saturating_sub(LISTED) {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    format!("bind-mounted into {}{more}", each.join(", "))
}

/// A live file written into its own inode: why (for the report), and the inode it must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct InPlaceWrite {
    /// `bind-mounted into …`, or the param that asked for it.
    pub why: String,
    /// `DEV INO`, or `-` when inspect could not tell (the check is then skipped).
    pub identity: String,
}

/// Whether the live file is written in place: only an existing regular file can be; `auto`
/// when it is bind-mounted, `always` whenever it exists, `never` not.
pub(super) fn decide(planned: &PlannedFile, live: &LiveFile) -> Option<InPlaceWrite> {
    if !matches!(live.state, LiveState::File(_)) {
        return None;
    }
    let mounts = &live.binds.mounts;
    let why = match planned.in_place {
        InPlace::Never => return None,
        InPlace::Auto if mounts.is_empty() => return None,
        InPlace::Always if mounts.is_empty() => "in_place: always".to_string(),
        InPlace::Auto | InPlace::Always => describe(mounts),
    };
    Some(InPlaceWrite {
        why,
        identity: live.binds.identity.clone().unwrap_or_else(|| "-".into()),
    })
}

/// The warning for a bind-mounted file that `in_place: never` renames over: the mount keeps
/// showing the old file.
pub(super) fn warning(planned: &PlannedFile, live: &LiveFile) -> Option<String> {
    let mounts = &live.binds.mounts;
    (planned.in_place == InPlace::Never && !mounts.is_empty()).then(|| {
        format!(
            "{} is {}; param in_place: never renames the new file over it, which that mount \
             never shows (it keeps the old file), so the verify is likely to fail and roll back",
            crate::report::sanitize_line(&live.write),
            describe(mounts)
        )
    })
}

/// Warns (and adds to inspect's `detail`) about each file of `changed` (planned, live) that
/// `in_place: never` renames over although it is bind-mounted.
pub(super) fn warn_renamed<'f>(
    run: &Run<'_>,
    changed: impl Iterator<Item = (&'f PlannedFile, &'f LiveFile)>,
    detail: &mut String,
) {
    for (planned, live) in changed {
        if let Some(w) = warning(planned, live) {
            detail.push_str(&format!("; {w}"));
            run.warn(w);
        }
    }
}

/// The swap's in-place write of file `idx` (it needs [`super::script::SWAP`]), instead of its
/// rename: `staged`'s bytes into `write`, which must still be inode `identity`.
pub(super) fn write_command(
    s: &mut Script,
    staged: &str,
    write: &str,
    idx: &str,
    w: &InPlaceWrite,
) {
    s.cmd(&["certctl_write_in", staged, write, idx, &w.identity]);
}

#[cfg(test)]
#[path = "mounts_tests.rs"]
mod tests;
