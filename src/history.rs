//! The local history: one JSON line per run that changed something (a deploy that deployed,
//! reloaded or rolled back a target; a `certctl rollback`), each carrying the SHA-256 of the
//! line before it, so an edited, inserted or removed line breaks the chain (`certctl history
//! --check`). Removing lines from the END cannot be seen from the file alone: keep the hash
//! `--check` prints somewhere else (a monitoring system, a ticket) to detect that too.
//!
//! Where: `$CERTCTL_HISTORY` (a path, or `off`), else the inventory's `history:` (a path, or
//! `off`), else `$XDG_STATE_HOME/certctl/history.jsonl` (`~/.local/state/certctl/…`). The file
//! is created 0600 in a 0700 directory; appends hold an exclusive `flock` so two runs never
//! fork the chain.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::report::{RunReport, Status, TargetReport};

/// `prev` of the first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Version of the line format.
pub const FORMAT_VERSION: u32 = 1;

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub v: u32,
    /// 1 for the first line, then one more per line.
    pub seq: u64,
    /// RFC 3339, UTC: when the run started.
    pub at: String,
    pub run_id: String,
    pub command: String,
    /// Who ran it: the login name (`SUDO_USER` first, then `USER`/`LOGNAME`), and the uid.
    pub user: String,
    pub uid: u32,
    /// The controller's host name.
    pub controller: String,
    pub inventory: String,
    pub exit_code: u8,
    /// The targets that changed (deployed, reloaded, rolled back, rollback failed).
    pub targets: Vec<EntryTarget>,
    /// Lower-case hex SHA-256 of the previous line (without its newline); [`GENESIS`] first.
    pub prev: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryTarget {
    pub name: String,
    pub host: String,
    pub status: String,
    /// Leaf fingerprints: what was served/deployed before, what was deployed, what is served.
    pub old: Option<String>,
    pub new: Option<String>,
    pub served: Option<String>,
}

/// Where the history lives for this inventory; `None` = off.
pub fn location(inventory_setting: Option<&Option<PathBuf>>) -> Option<PathBuf> {
    if let Some(v) = std::env::var_os("CERTCTL_HISTORY").filter(|v| !v.is_empty()) {
        return (v != "off").then(|| PathBuf::from(v));
    }
    match inventory_setting {
        Some(setting) => setting.clone(),
        None => default_location(),
    }
}

/// `$XDG_STATE_HOME/certctl/history.jsonl`, else `~/.local/state/certctl/history.jsonl`.
pub fn default_location() -> Option<PathBuf> {
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".local/state"))
        })?;
    Some(state.join("certctl/history.jsonl"))
}

/// Whether a target's status means something on it changed.
fn changed(status: Status) -> bool {
    matches!(
        status,
        Status::Deployed | Status::Reloaded | Status::RolledBack | Status::RollbackFailed
    )
}

/// The entry for `run`, or `None` when the run changed nothing (a dry run never does).
pub fn entry_for(run: &RunReport, run_id: &str, exit_code: u8, inventory: &Path) -> Option<Entry> {
    if run.dry_run {
        return None;
    }
    let targets: Vec<EntryTarget> = run
        .targets
        .iter()
        .filter(|t| changed(t.status))
        .map(entry_target)
        .collect();
    if targets.is_empty() {
        return None;
    }
    let uid = rustix::process::getuid().as_raw();
    let user = ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| format!("uid {uid}"));
    Some(Entry {
        v: FORMAT_VERSION,
        seq: 0,
        at: run.started_at.clone(),
        run_id: run_id.to_string(),
        command: run.command.clone(),
        user,
        uid,
        controller: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default(),
        inventory: inventory.display().to_string(),
        exit_code,
        targets,
        prev: String::new(),
    })
}

fn entry_target(t: &TargetReport) -> EntryTarget {
    EntryTarget {
        name: t.name.clone(),
        host: t.host.clone(),
        status: t.status.as_str().to_string(),
        old: t.old_fingerprint.map(|f| f.to_string()),
        new: t.new_fingerprint.map(|f| f.to_string()),
        served: t.served_fingerprint.map(|f| f.to_string()),
    }
}

/// Why the history could not be written or read.
#[derive(Debug, thiserror::Error)]
#[error("history {path}: {message}")]
pub struct HistoryError {
    pub path: String,
    pub message: String,
}

fn err(path: &Path, message: impl std::fmt::Display) -> HistoryError {
    HistoryError {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// Appends `entry` (its `seq` and `prev` filled in here) under an exclusive lock.
pub fn append(path: &Path, mut entry: Entry) -> Result<Entry, HistoryError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| err(path, format!("cannot create its directory: {e}")))?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| err(path, format!("cannot open: {e}")))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| err(path, format!("cannot lock: {e}")))?;
    let last = last_line(&mut file).map_err(|e| err(path, format!("cannot read: {e}")))?;
    match last {
        Some(line) => {
            let previous: Entry = serde_json::from_slice(&line).map_err(|e| {
                err(
                    path,
                    format!(
                        "its last line is not a history entry ({e}); run `certctl history --check`"
                    ),
                )
            })?;
            entry.seq = previous.seq + 1;
            entry.prev = sha256_hex(&line);
        }
        None => {
            entry.seq = 1;
            entry.prev = GENESIS.to_string();
        }
    }
    let mut line = serde_json::to_vec(&entry).map_err(|e| err(path, e))?;
    line.push(b'\n');
    file.write_all(&line)
        .and_then(|()| file.sync_data())
        .map_err(|e| err(path, format!("cannot append: {e}")))?;
    Ok(entry)
}

/// The last complete line, without its newline; `None` for an empty file. A file that does
/// not end with a newline (a torn write) is an error.
fn last_line(file: &mut File) -> std::io::Result<Option<Vec<u8>>> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(None);
    }
    let mut tail: Vec<u8> = Vec::new();
    let mut pos = len;
    loop {
        let step = pos.min(64 * 1024);
        pos -= step;
        file.seek(SeekFrom::Start(pos))?;
        let mut chunk = vec![0u8; step as usize];
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&tail);
        tail = chunk;
        if tail.last() != Some(&b'\n') {
            return Err(std::io::Error::other(
                "it does not end with a newline (a write was cut short); run `certctl history --check`",
            ));
        }
        let body = &tail[..tail.len() - 1];
        if let Some(i) = body.iter().rposition(|b| *b == b'\n') {
            return Ok(Some(body[i + 1..].to_vec()));
        }
        if pos == 0 {
            return Ok(Some(body.to_vec()));
        }
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Reads every entry (a broken line is an error naming it).
pub fn read_all(path: &Path) -> Result<Vec<Entry>, HistoryError> {
    let text = std::fs::read(path).map_err(|e| err(path, format!("cannot read: {e}")))?;
    text.split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| {
            serde_json::from_slice(l)
                .map_err(|e| err(path, format!("line {}: not a history entry ({e})", i + 1)))
        })
        .collect()
}

/// The result of [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub entries: usize,
    /// SHA-256 of the last line: record it elsewhere to detect lines removed from the end.
    pub head: String,
}

/// Verifies the chain: every line parses, links to the line before it by SHA-256, and counts
/// on by one; the first links to [`GENESIS`]. The error names the first broken line.
pub fn check(path: &Path) -> Result<Checked, HistoryError> {
    let bytes = std::fs::read(path).map_err(|e| err(path, format!("cannot read: {e}")))?;
    if !bytes.is_empty() && bytes.last() != Some(&b'\n') {
        return Err(err(
            path,
            "the last line has no newline: a write was cut short, or the file was edited",
        ));
    }
    let mut prev_hash = GENESIS.to_string();
    let mut prev_seq = 0u64;
    let mut entries = 0;
    let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    let lines: Vec<&[u8]> = if body.is_empty() {
        Vec::new()
    } else {
        body.split(|b| *b == b'\n').collect()
    };
    for (i, line) in lines.into_iter().enumerate() {
        let n = i + 1;
        if line.is_empty() {
            return Err(err(path, format!("line {n} is empty")));
        }
        let entry: Entry = serde_json::from_slice(line)
            .map_err(|e| err(path, format!("line {n} is not a history entry ({e})")))?;
        if entry.prev != prev_hash {
            let why = if n == 1 {
                "line 1 does not start the chain: lines before it were removed".to_string()
            } else {
                format!(
                    "line {n} does not link to line {}: a line between them was removed or inserted, or line {} was edited",
                    n - 1,
                    n - 1
                )
            };
            return Err(err(path, why));
        }
        if entry.seq != prev_seq + 1 {
            return Err(err(
                path,
                format!(
                    "line {n} has seq {} after seq {prev_seq}: the line was edited",
                    entry.seq
                ),
            ));
        }
        prev_hash = sha256_hex(line);
        prev_seq = entry.seq;
        entries += 1;
    }
    Ok(Checked {
        entries,
        head: prev_hash,
    })
}

/// Human lines for the last `limit` entries (all with 0), oldest first.
pub fn render(entries: &[Entry], limit: usize) -> String {
    let skip = if limit == 0 {
        0
    } else {
        entries.len().saturating_sub(limit)
    };
    let mut out = String::new();
    for e in &entries[skip..] {
        out.push_str(&format!(
            "#{} {} {} by {} on {} (run {}, exit {})\n",
            e.seq, e.at, e.command, e.user, e.controller, e.run_id, e.exit_code
        ));
        for t in &e.targets {
            out.push_str(&format!(
                "    {} ({}): {} {} -> {}\n",
                t.name,
                t.host,
                t.status,
                short(t.old.as_deref()),
                short(t.new.as_deref()),
            ));
        }
    }
    crate::report::sanitize(out.as_bytes())
}

fn short(fp: Option<&str>) -> String {
    match fp {
        Some(f) if f.len() > 11 => format!("{}…", &f[..11]),
        Some(f) => f.to_string(),
        None => "-".into(),
    }
}
