//! The directories a target's plan uses: the private scratch directory (inside `tmp_dir`),
//! the backup directory and how many backup sets to keep, and the checks every remote path
//! passes (absolute, normalised, printable; Windows drive paths with forward slashes).

use std::collections::BTreeMap;

use crate::inventory::Target;

/// Where one target's run keeps its private files and its backups.
pub(super) struct Dirs {
    /// Private directory (0700) on the target for templates, inputs and preview output.
    pub(super) scratch: String,
    /// This run's backup set lives in `{backup}/{run_id}`.
    pub(super) backup: String,
    pub(super) keep_backups: u32,
}

impl Dirs {
    /// From the engine params `tmp_dir`, `backup_dir` and `keep_backups`. A Windows target
    /// (`shell: powershell`) takes drive paths, with forward slashes.
    pub(super) fn new(
        params: &BTreeMap<String, String>,
        target: &Target,
        index: usize,
        run_id: &str,
        powershell: bool,
    ) -> Result<Dirs, String> {
        let tmp_dir = params
            .get("tmp_dir")
            .cloned()
            .unwrap_or_else(|| default_tmp_dir(powershell).into());
        check_dir_param("tmp_dir", &tmp_dir, powershell)?;
        let scratch = format!("{}/certctl-{run_id}-{index}", tmp_dir.trim_end_matches('/'));
        let backup = params
            .get("backup_dir")
            .cloned()
            .unwrap_or_else(|| format!("{}/{}", default_backup_root(powershell), target.name));
        check_dir_param("backup_dir", &backup, powershell)?;
        let keep_backups = match params.get("keep_backups") {
            Some(v) => v.parse::<u32>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                format!("param `keep_backups`: `{v}` is not a whole number of at least 1")
            })?,
            None => 3,
        };
        Ok(Dirs {
            scratch,
            backup,
            keep_backups,
        })
    }
}

/// Where scratch directories go by default. On Windows, `C:\Windows\Temp`: by its default
/// ACL a user may create there but not read what others created, so the scratch directory
/// (the PFX and its password) is readable only by its creator, SYSTEM and Administrators.
fn default_tmp_dir(windows: bool) -> &'static str {
    if windows { "C:/Windows/Temp" } else { "/tmp" }
}

/// The parent of every target's backup directory (and lock) by default.
fn default_backup_root(windows: bool) -> &'static str {
    if windows {
        "C:/ProgramData/certctl/backups"
    } else {
        "/var/lib/certctl/backups"
    }
}

/// Whether `path` is a Windows drive path with forward slashes: `C:/…`.
pub fn is_drive_path(path: &str) -> bool {
    let b = path.as_bytes();
    b.len() >= 3 && b[0].is_ascii_alphabetic() && b[1] == b':' && b[2] == b'/'
}

/// `tmp_dir`/`backup_dir`: an absolute POSIX path; for a Windows target (`windows`) also a
/// drive path (`C:/ProgramData/certctl`), which must use forward slashes.
fn check_dir_param(what: &str, path: &str, windows: bool) -> Result<(), String> {
    if windows && is_drive_path(path) {
        if path.contains('\\') {
            return Err(format!(
                "{what} `{path}` must use forward slashes (`C:/ProgramData/certctl`)"
            ));
        }
        return check_remote_path(what, &path[2..]);
    }
    if windows && path.contains('\\') {
        return Err(format!(
            "{what} `{path}` must be a drive path with forward slashes (`C:/ProgramData/certctl`)"
        ));
    }
    check_remote_path(what, path)
}

/// Remote paths must be absolute, normalised and printable: no `..`, no control characters.
pub(super) fn check_remote_path(what: &str, path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("{what} `{path}` must be an absolute path"));
    }
    if path.chars().any(char::is_control) {
        return Err(format!("{what} {path:?} contains a control character"));
    }
    if path.split('/').any(|c| c == ".." || c == ".") {
        return Err(format!(
            "{what} `{path}` must not contain `.` or `..` components"
        ));
    }
    if path.ends_with('/') {
        return Err(format!("{what} `{path}` names a directory, not a file"));
    }
    Ok(())
}
