//! `become: sudo`: the login user may not touch the files, root may. Every command runs as
//! `sudo -n -- ARGV…` ([`wrap`]); file operations become small root commands: an upload goes
//! by SFTP to the login user's private staging directory (`mktemp -d`, 0700) and is installed
//! from there by `scripts/sudo-install.sh`; a rename is `scripts/sudo-rename.sh`; a read is
//! `cat`, a removal `rm -f`. `sudo -n` never waits for a password: a login without
//! passwordless sudo fails at connect, with sudo's own words.
//!
//! Not here: deciding to use sudo (the inventory's `become:`, carried by
//! [`super::SshConfig::become_sudo`]) or the SFTP requests themselves (`sftp.rs`).

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::OnceCell;

use super::exec::{OUTPUT_CAP, first_line};
use super::sftp::NewFile;
use super::{ExecOutput, Session, SshError, quote};

/// State of a `become: sudo` session: the login user's private staging directory (created
/// with `mktemp -d`, so 0700 and owned by the login user) where uploads land before `sudo`
/// installs them, and a counter naming the uploads in it.
#[derive(Default)]
pub(super) struct Sudo {
    stage_dir: OnceCell<String>,
    uploads: AtomicU64,
}

/// The `sudo` prefix of every privileged command: `-n` never waits for a password (it fails
/// at once with "a password is required"); `--` ends sudo's options.
const SUDO: [&str; 3] = ["sudo", "-n", "--"];
const SUDO_CHECK: [&str; 3] = ["sudo", "-n", "true"];

/// Run by `sudo -n -- sh -c` as root (see the script's header).
const SUDO_INSTALL: &str = include_str!("scripts/sudo-install.sh");
/// Run by `sudo -n -- sh -c` as root (see the script's header).
const SUDO_RENAME: &str = include_str!("scripts/sudo-rename.sh");

/// The command line that runs `argv` as root: `sudo -n -- ARGV…`, quoted.
pub(super) fn wrap<'a>(argv: impl IntoIterator<Item = &'a str>) -> String {
    let wrapped: Vec<&str> = SUDO.iter().copied().chain(argv).collect();
    quote::command_line(&wrapped)
}

impl Session {
    /// `sudo -n true`, once, right after connecting: a login that may not use sudo without a
    /// password fails here, with sudo's own words, instead of at the first privileged step.
    pub(super) async fn check_sudo(&self, user: &str) -> Result<(), SshError> {
        let out = self
            .run(&quote::command_line(&SUDO_CHECK), "sudo -n true", None)
            .await?;
        if out.success() {
            return Ok(());
        }
        let said = match first_line(&out.stderr) {
            s if s.is_empty() => format!("exit status {}", out.status),
            s => s,
        };
        Err(self.become_error(format!(
            "user `{user}` cannot run `sudo -n` here ({said}); give it passwordless (NOPASSWD) sudo rights on this host, or remove `become: sudo`"
        )))
    }

    /// [`Session::upload`] with `become: sudo`: the data goes by SFTP to a 0600 file in the
    /// login user's private staging directory, then `sudo` creates `path` exclusively with
    /// `mode` and `owner` (root's umask 077 before that), appends the content, fsyncs, and
    /// removes the staged copy; the staged copy is removed on failure too.
    pub(super) async fn upload_sudo(
        &self,
        sudo: &Sudo,
        file: &NewFile<'_>,
    ) -> Result<(), SshError> {
        let NewFile {
            path, mode, owner, ..
        } = *file;
        let dir = self.stage_dir(sudo).await?;
        let n = sudo.uploads.fetch_add(1, Ordering::Relaxed);
        let staged = format!("{dir}/{n}");
        let private = NewFile {
            path: &staged,
            mode: 0o600,
            owner: None,
            ..*file
        };
        self.upload_direct(&private).await?;
        let mode_arg = format!("{mode:04o}");
        let owner_arg = owner
            .map(|(uid, gid)| format!("{uid}:{gid}"))
            .unwrap_or_default();
        let line = wrap([
            "sh",
            "-c",
            SUDO_INSTALL,
            "certctl-install",
            &staged,
            path,
            &mode_arg,
            &owner_arg,
        ]);
        let label = format!("sudo install {path}");
        let installed = self.run(&line, &label, None).await;
        // Whatever happened (sudo refused, the connection dropped mid-way), the staged copy
        // does not outlive this call.
        let removed = self.remove_direct(&staged).await;
        let out = installed?;
        if !out.success() {
            return Err(self.become_error(sudo_failure(&out, &format!("cannot install {path}"))));
        }
        removed
    }

    /// The private staging directory of a `become: sudo` session, created on first use.
    async fn stage_dir<'a>(&'a self, sudo: &'a Sudo) -> Result<&'a str, SshError> {
        sudo.stage_dir
            .get_or_try_init(|| async {
                let argv = ["mktemp", "-d", "/tmp/certctl-sudo.XXXXXXXXXX"];
                let out = self
                    .run(&quote::command_line(&argv), "mktemp -d", None)
                    .await?;
                let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                if !out.success()
                    || !dir.starts_with("/tmp/certctl-sudo.")
                    || dir.chars().any(char::is_control)
                {
                    return Err(self.become_error(sudo_failure(
                        &out,
                        "cannot create a private staging directory with `mktemp -d`",
                    )));
                }
                Ok(dir)
            })
            .await
            .map(String::as_str)
    }

    /// Removes the staging directory at close: empty unless an install failed half-way; never
    /// holds a key after an upload.
    pub(super) async fn remove_stage_dir(&self) {
        if let Some(dir) = self.sudo.as_ref().and_then(|s| s.stage_dir.get()) {
            let argv = ["rm", "-rf", "--", dir.as_str()];
            let _ = self
                .run(&quote::command_line(&argv), "rm -rf staging dir", None)
                .await;
        }
    }

    /// [`Session::rename_over`] with `become: sudo`: `mv -f` — a rename(2) within the
    /// directory — run by sudo.
    pub(super) async fn rename_over_sudo(&self, from: &str, to: &str) -> Result<(), SshError> {
        let line = wrap(["sh", "-c", SUDO_RENAME, "certctl-rename", from, to]);
        let label = format!("sudo mv {from} {to}");
        self.run_privileged(&line, &label, &format!("cannot rename {from} over {to}"))
            .await
            .map(drop)
    }

    /// [`Session::read_file`] with `become: sudo`: `sudo -n -- cat`, at most `limit` bytes
    /// and never more than 1 MiB.
    pub(super) async fn read_file_sudo(
        &self,
        path: &str,
        limit: usize,
    ) -> Result<Vec<u8>, SshError> {
        let line = wrap(["cat", "--", path]);
        let label = format!("sudo cat {path}");
        let out = self
            .run_privileged(&line, &label, &format!("cannot read {path}"))
            .await?;
        // Command output keeps at most OUTPUT_CAP bytes (and says what it dropped).
        let limit = limit.min(OUTPUT_CAP);
        if out.stdout.len() > limit {
            return Err(self.become_error(format!("{path} is larger than {limit} bytes")));
        }
        Ok(out.stdout)
    }

    /// [`Session::remove_file`] with `become: sudo`: `sudo -n -- rm -f`.
    pub(super) async fn remove_file_sudo(&self, path: &str) -> Result<(), SshError> {
        let line = wrap(["rm", "-f", "--", path]);
        let label = format!("sudo rm {path}");
        self.run_privileged(&line, &label, &format!("cannot remove {path}"))
            .await
            .map(drop)
    }

    /// Runs a root command; a non-zero exit is a `become` error saying `what` failed.
    async fn run_privileged(
        &self,
        line: &str,
        label: &str,
        what: &str,
    ) -> Result<ExecOutput, SshError> {
        let out = self.run(line, label, None).await?;
        if !out.success() {
            return Err(self.become_error(sudo_failure(&out, what)));
        }
        Ok(out)
    }

    /// File operations that exist only as the login user over SFTP refuse a sudo session.
    pub(super) fn no_sudo(&self, what: &str, path: &str) -> Result<(), SshError> {
        match self.sudo {
            Some(_) => Err(self.become_error(format!(
                "cannot {what} {path} over SFTP as the login user in a `become: sudo` session"
            ))),
            None => Ok(()),
        }
    }
}

/// `what`, then what the failed privileged command said (first line of stderr, printable).
fn sudo_failure(out: &ExecOutput, what: &str) -> String {
    match first_line(&out.stderr) {
        s if s.is_empty() => format!("{what} (exit status {})", out.status),
        s => format!("{what}: {s}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privileged_commands_are_sudo_n_with_the_argv_quoted() {
        assert_eq!(
            wrap(["cat", "--", "/etc/a b"]),
            "sudo -n -- cat -- '/etc/a b'"
        );
        // The scripts reach `sh -c` as one quoted word, their arguments after it.
        let line = wrap(["sh", "-c", SUDO_RENAME, "certctl-rename", "/a", "/b"]);
        assert!(line.starts_with("sudo -n -- sh -c '# certctl"), "{line}");
        assert!(line.ends_with("' certctl-rename /a /b"), "{line}");
    }
}
