//! SFTP: one channel per session, opened on first use, and every file operation over it —
//! exclusive create with the final mode before any content, pipelined writes, fsync, atomic
//! replace (`posix-rename@openssh.com`), reads with a size limit, directories.
//!
//! The server's first packet is checked before russh-sftp reads it (`sftp/first_packet.rs`):
//! a login shell that prints (a chatty `~/.bashrc`; sshd starts an external sftp-server
//! through the login shell) puts text where that packet belongs, and the error then says so
//! instead of "sender dropped".
//!
//! The public file operations dispatch here: as the login user over SFTP, or through sudo
//! (`sudo.rs`) in a `become: sudo` session.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use russh::ChannelMsg;
use russh_sftp::client::RawSftpSession;
use russh_sftp::client::error::Error as SftpClientError;
use russh_sftp::protocol::{FileAttributes, OpenFlags, Packet, StatusCode};
use tokio::time::timeout;

use super::{Session, SshError};
use first_packet::{FirstPacketCheck, login_shell_prints};

mod first_packet;

/// SFTP read/write request size: what OpenSSH's own sftp client uses, well below the
/// server's 256 KiB packet limit.
const SFTP_CHUNK: usize = 32 * 1024;

/// A file to create: where, what, with which mode and (numeric) owner.
#[derive(Clone, Copy)]
pub(super) struct NewFile<'a> {
    pub(super) path: &'a str,
    pub(super) data: &'a [u8],
    pub(super) mode: u32,
    pub(super) owner: Option<(u32, u32)>,
}

/// The SFTP channel and the extensions the server advertised at init.
pub(super) struct Sftp {
    pub(super) raw: RawSftpSession,
    extensions: HashMap<String, String>,
}

impl Session {
    /// Creates `path` exclusively (O_EXCL) with `mode` from the first byte (set again after
    /// creation to defeat the umask), writes `data`, fsyncs, closes, and sets owner/group
    /// when given (numeric ids).
    ///
    /// Mode and owner are set on the open handle before any content is written, so the
    /// content never exists under a wider mode. A failed upload removes its partial file.
    ///
    /// With `become: sudo` the data goes by SFTP to a 0600 file in the login user's private
    /// staging directory, then `sudo` creates `path` exclusively with `mode` and `owner`
    /// (root's umask 077 before that), appends the content, fsyncs, and removes the staged
    /// copy; the staged copy is removed on failure too.
    pub async fn upload(
        &self,
        path: &str,
        data: &[u8],
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<(), SshError> {
        let file = NewFile {
            path,
            data,
            mode,
            owner,
        };
        match &self.sudo {
            Some(sudo) => self.upload_sudo(sudo, &file).await,
            None => self.upload_direct(&file).await,
        }
    }

    /// [`Session::upload`] over SFTP as the login user.
    pub(super) async fn upload_direct(&self, file: &NewFile<'_>) -> Result<(), SshError> {
        let NewFile { path, mode, .. } = *file;
        let sftp = self.sftp().await?;
        let raw = &sftp.raw;
        let create = permissions(mode);
        let flags = OpenFlags::CREATE | OpenFlags::EXCLUDE | OpenFlags::WRITE;
        let handle = raw
            .open(path, flags, create)
            .await
            .map_err(|e| {
                let hint = if is_status(&e, StatusCode::Failure) {
                    " (does it exist already?)"
                } else {
                    ""
                };
                self.sftp_error(format!("cannot create {path}{hint}: {}", describe_sftp(&e)))
            })?
            .handle;
        let written = self.write_content(sftp, &handle, file).await;
        let closed = raw
            .close(handle.as_str())
            .await
            .map_err(|e| format!("close failed: {}", describe_sftp(&e)));
        if let Err(message) = written.and(closed.map(|_| ())) {
            let _ = raw.remove(path).await;
            return Err(self.sftp_error(format!(
                "upload to {path}: {message} (partial file removed)"
            )));
        }
        // A server that ignored the handle-level attributes still gets them by path.
        raw.setstat(path, permissions(mode)).await.map_err(|e| {
            self.sftp_error(format!(
                "cannot set mode {mode:04o} on {path}: {}",
                describe_sftp(&e)
            ))
        })?;
        Ok(())
    }

    /// Owner, then mode, then the content, then fsync, all on the open handle `handle`.
    async fn write_content(
        &self,
        sftp: &Sftp,
        handle: &str,
        file: &NewFile<'_>,
    ) -> Result<(), String> {
        let NewFile {
            path,
            data,
            mode,
            owner,
        } = *file;
        let raw = &sftp.raw;
        if let Some((uid, gid)) = owner {
            let ids = FileAttributes {
                uid: Some(uid),
                gid: Some(gid),
                ..FileAttributes::empty()
            };
            raw.fsetstat(handle, ids)
                .await
                .map_err(|e| format!("cannot set owner {uid}:{gid}: {}", describe_sftp(&e)))?;
        }
        // After any chown (which may clear set-id bits) and regardless of the umask.
        raw.fsetstat(handle, permissions(mode))
            .await
            .map_err(|e| format!("cannot set mode {mode:04o}: {}", describe_sftp(&e)))?;
        // Pipelined writes: every chunk is in flight at once, each at its own offset.
        let writes = data
            .chunks(SFTP_CHUNK)
            .enumerate()
            .map(|(i, chunk)| raw.write(handle, (i * SFTP_CHUNK) as u64, chunk.to_vec()));
        futures::future::try_join_all(writes)
            .await
            .map_err(|e| format!("write failed: {}", describe_sftp(&e)))?;
        if sftp.extensions.contains_key("fsync@openssh.com") {
            raw.fsync(handle)
                .await
                .map_err(|e| format!("fsync failed: {}", describe_sftp(&e)))?;
        } else {
            tracing::warn!(host = %self.endpoint.host, %path, "sftp server lacks fsync@openssh.com; file not fsync'd");
        }
        Ok(())
    }

    /// Atomically replaces `to` with `from` (SFTP posix-rename@openssh.com; with
    /// `become: sudo`, `mv -f` — a rename(2) within the directory — run by sudo).
    pub async fn rename_over(&self, from: &str, to: &str) -> Result<(), SshError> {
        if self.sudo.is_some() {
            return self.rename_over_sudo(from, to).await;
        }
        const POSIX_RENAME: &str = "posix-rename@openssh.com";
        let sftp = self.sftp().await?;
        if !sftp.extensions.contains_key(POSIX_RENAME) {
            return Err(self.sftp_error(format!(
                "the server does not offer {POSIX_RENAME}, so {to} cannot be replaced atomically (plain SFTP rename refuses to overwrite)"
            )));
        }
        let mut request = Vec::with_capacity(from.len() + to.len() + 8);
        put_ssh_string(&mut request, from);
        put_ssh_string(&mut request, to);
        let failed =
            |why: String| self.sftp_error(format!("cannot rename {from} over {to}: {why}"));
        match sftp.raw.extended(POSIX_RENAME, request).await {
            Ok(Packet::Status(s)) if s.status_code == StatusCode::Ok => Ok(()),
            Ok(Packet::Status(s)) => Err(failed(describe_sftp(&SftpClientError::Status(s)))),
            Ok(_) => Err(failed("unexpected reply".to_owned())),
            Err(e) => Err(failed(describe_sftp(&e))),
        }
    }

    /// Reads a whole remote file (for certificates only — never keys).
    ///
    /// A file longer than `limit` bytes is an error rather than a silent truncation. With
    /// `become: sudo` it is `sudo -n -- cat`, and `limit` is at most 1 MiB.
    pub async fn read_file(&self, path: &str, limit: usize) -> Result<Vec<u8>, SshError> {
        if self.sudo.is_some() {
            return self.read_file_sudo(path, limit).await;
        }
        let sftp = self.sftp().await?;
        let raw = &sftp.raw;
        let handle = raw
            .open(path, OpenFlags::READ, FileAttributes::empty())
            .await
            .map_err(|e| self.sftp_error(format!("cannot open {path}: {}", describe_sftp(&e))))?
            .handle;
        let mut out = Vec::new();
        let result = loop {
            match raw
                .read(handle.as_str(), out.len() as u64, SFTP_CHUNK as u32)
                .await
            {
                Ok(d) if d.data.is_empty() => break Ok(()),
                Ok(d) => {
                    out.extend_from_slice(&d.data);
                    if out.len() > limit {
                        break Err(format!("{path} is larger than {limit} bytes"));
                    }
                }
                Err(e) if is_status(&e, StatusCode::Eof) => break Ok(()),
                Err(e) => break Err(format!("cannot read {path}: {}", describe_sftp(&e))),
            }
        };
        let _ = raw.close(handle.as_str()).await;
        result.map(|()| out).map_err(|m| self.sftp_error(m))
    }

    /// Removes a file; a missing file is not an error.
    pub async fn remove_file(&self, path: &str) -> Result<(), SshError> {
        if self.sudo.is_some() {
            return self.remove_file_sudo(path).await;
        }
        self.remove_direct(path).await
    }

    /// Removes a file over SFTP as the login user; a missing file is not an error.
    pub(super) async fn remove_direct(&self, path: &str) -> Result<(), SshError> {
        let sftp = self.sftp().await?;
        match sftp.raw.remove(path).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, StatusCode::NoSuchFile) => Ok(()),
            Err(e) => Err(self.sftp_error(format!("cannot remove {path}: {}", describe_sftp(&e)))),
        }
    }

    /// Creates the directory `path` over SFTP with `mode`, as the login user: `Ok(true)` when
    /// this call created it, `Ok(false)` when it existed already (SFTP `mkdir` never
    /// replaces anything, so this is an atomic test-and-create, as `mkdir(2)` is). The mode
    /// is set again by path afterwards, to defeat the umask; a server that cannot (Windows
    /// OpenSSH maps modes to ACLs only in part) leaves the directory as its parent's ACL
    /// makes it, which is not an error.
    ///
    /// Not for `become: sudo` sessions (an error): they create directories by command.
    pub async fn make_dir(&self, path: &str, mode: u32) -> Result<bool, SshError> {
        self.no_sudo("mkdir", path)?;
        let sftp = self.sftp().await?;
        match sftp.raw.mkdir(path, permissions(mode)).await {
            Ok(_) => {
                if let Err(e) = sftp.raw.setstat(path, permissions(mode)).await {
                    tracing::debug!(host = %self.endpoint.host, %path, "mode {mode:04o} not set: {}", describe_sftp(&e));
                }
                Ok(true)
            }
            // OpenSSH answers "failure" for an existing directory: look before saying so.
            Err(e) => match sftp.raw.lstat(path).await {
                Ok(found) if found.attrs.is_dir() => Ok(false),
                _ => Err(self.sftp_error(format!(
                    "cannot create directory {path}: {}",
                    describe_sftp(&e)
                ))),
            },
        }
    }

    /// The entries of the directory `path` over SFTP (without `.` and `..`), each with whether
    /// it is a directory, sorted by name; `Ok(None)` when `path` does not exist. Not for
    /// `become: sudo` sessions (an error).
    pub async fn list_dir(&self, path: &str) -> Result<Option<Vec<(String, bool)>>, SshError> {
        self.no_sudo("list", path)?;
        let sftp = self.sftp().await?;
        let raw = &sftp.raw;
        let handle = match raw.opendir(path).await {
            Ok(h) => h.handle,
            Err(e) if is_status(&e, StatusCode::NoSuchFile) => return Ok(None),
            Err(e) => {
                return Err(self.sftp_error(format!("cannot list {path}: {}", describe_sftp(&e))));
            }
        };
        let mut entries = Vec::new();
        let result = loop {
            match raw.readdir(handle.as_str()).await {
                Ok(name) if name.files.is_empty() => break Ok(()),
                Ok(name) => entries.extend(
                    name.files
                        .into_iter()
                        .filter(|f| f.filename != "." && f.filename != "..")
                        .map(|f| (f.filename, f.attrs.is_dir())),
                ),
                Err(e) if is_status(&e, StatusCode::Eof) => break Ok(()),
                Err(e) => break Err(format!("cannot list {path}: {}", describe_sftp(&e))),
            }
        };
        let _ = raw.close(handle.as_str()).await;
        result.map_err(|m| self.sftp_error(m))?;
        entries.sort();
        Ok(Some(entries))
    }

    /// Removes the empty directory `path` over SFTP; a missing one is not an error. Not for
    /// `become: sudo` sessions (an error).
    pub async fn remove_dir(&self, path: &str) -> Result<(), SshError> {
        self.no_sudo("rmdir", path)?;
        let sftp = self.sftp().await?;
        match sftp.raw.rmdir(path).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, StatusCode::NoSuchFile) => Ok(()),
            Err(e) => Err(self.sftp_error(format!("cannot remove {path}: {}", describe_sftp(&e)))),
        }
    }

    /// Renames `from` to `to` with plain SFTP rename, which refuses to replace an existing
    /// `to` (for replacing, see [`Session::rename_over`]). Not for `become: sudo` sessions.
    pub async fn rename(&self, from: &str, to: &str) -> Result<(), SshError> {
        self.no_sudo("rename", from)?;
        let sftp = self.sftp().await?;
        sftp.raw.rename(from, to).await.map(drop).map_err(|e| {
            self.sftp_error(format!(
                "cannot rename {from} to {to}: {}",
                describe_sftp(&e)
            ))
        })
    }

    /// The SFTP channel, opened on first use and shared by every later request.
    async fn sftp(&self) -> Result<&Sftp, SshError> {
        self.sftp
            .get_or_try_init(|| async {
                let printed = Arc::new(Mutex::new(None));
                let started = timeout(self.command_timeout, self.open_sftp(printed.clone())).await;
                let shell_text = printed
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
                match (started, shell_text) {
                    (Ok(Ok(sftp)), _) => Ok(sftp),
                    (_, Some(text)) => Err(self.sftp_error(login_shell_prints(&text))),
                    (Ok(Err(message)), None) => {
                        Err(self.sftp_error(format!("cannot start: {message}")))
                    }
                    (Err(_), None) => Err(self.sftp_error(format!(
                        "cannot start: no answer within {:?}",
                        self.command_timeout
                    ))),
                }
            })
            .await
    }

    /// Opens a channel, asks for the `sftp` subsystem and exchanges versions. Text found
    /// where the server's first packet belongs is left in `printed`.
    async fn open_sftp(&self, printed: Arc<Mutex<Option<Vec<u8>>>>) -> Result<Sftp, String> {
        let mut channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| e.to_string())?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(|e| e.to_string())?;
        loop {
            match channel.wait().await {
                Some(ChannelMsg::Success) => break,
                Some(ChannelMsg::Failure) => {
                    return Err("the server refused the sftp subsystem".to_owned());
                }
                None | Some(ChannelMsg::Close) => {
                    return Err("the channel closed before sftp started".to_owned());
                }
                Some(_) => {}
            }
        }
        let stream = FirstPacketCheck::new(channel.into_stream(), printed);
        let raw = RawSftpSession::new(stream);
        raw.set_timeout(self.command_timeout.as_secs().max(1));
        let version = raw.init().await.map_err(|e| describe_sftp(&e))?;
        Ok(Sftp {
            raw,
            extensions: version.extensions,
        })
    }
}

fn permissions(mode: u32) -> FileAttributes {
    FileAttributes {
        permissions: Some(mode),
        ..FileAttributes::empty()
    }
}

/// SSH wire `string`: u32 big-endian length, then the bytes.
pub(super) fn put_ssh_string(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u32).to_be_bytes());
    buf.extend_from_slice(s.as_bytes());
}

fn is_status(e: &SftpClientError, code: StatusCode) -> bool {
    matches!(e, SftpClientError::Status(s) if s.status_code == code)
}

fn describe_sftp(e: &SftpClientError) -> String {
    match e {
        SftpClientError::Status(s)
            if s.error_message.is_empty() || s.error_message == s.status_code.to_string() =>
        {
            s.status_code.to_string()
        }
        SftpClientError::Timeout => "no answer from the server (timeout)".to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_string_encoding() {
        let mut buf = Vec::new();
        put_ssh_string(&mut buf, "ab");
        put_ssh_string(&mut buf, "");
        assert_eq!(buf, [0, 0, 0, 2, b'a', b'b', 0, 0, 0, 0]);
    }
}
