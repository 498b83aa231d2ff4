//! SFTP: one channel per session, opened on first use, and every file operation over it —
//! exclusive create with the final mode before any content, pipelined writes, fsync, atomic
//! replace (`posix-rename@openssh.com`), reads with a size limit, directories.
//!
//! The server's first packet is checked before russh-sftp reads it ([`FirstPacketCheck`]): a
//! login shell that prints (a chatty `~/.bashrc`; sshd starts an external sftp-server through
//! the login shell) puts text where that packet belongs, and the error then says so instead
//! of "sender dropped".
//!
//! The public file operations dispatch here: as the login user over SFTP, or through sudo
//! (`sudo.rs`) in a `become: sudo` session.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use russh::ChannelMsg;
use russh_sftp::client::RawSftpSession;
use russh_sftp::client::error::Error as SftpClientError;
use russh_sftp::protocol::{FileAttributes, OpenFlags, Packet, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::timeout;

use super::exec::first_line;
use super::{Session, SshError};

/// SFTP read/write request size: what OpenSSH's own sftp client uses, well below the
/// server's 256 KiB packet limit.
const SFTP_CHUNK: usize = 32 * 1024;
/// The longest packet an SFTP client accepts (OpenSSH's `SFTP_MAX_MSG_LENGTH`).
const SFTP_MAX_PACKET: u32 = 256 * 1024;
/// `SSH_FXP_VERSION`: the type of the server's first packet.
const SSH_FXP_VERSION: u8 = 2;

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
        match &self.sudo {
            Some(sudo) => self.upload_sudo(sudo, path, data, mode, owner).await,
            None => self.upload_direct(path, data, mode, owner).await,
        }
    }

    /// [`Session::upload`] over SFTP as the login user.
    pub(super) async fn upload_direct(
        &self,
        path: &str,
        data: &[u8],
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<(), SshError> {
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
        let written = self
            .write_content(sftp, &handle, path, data, mode, owner)
            .await;
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
        path: &str,
        data: &[u8],
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<(), String> {
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
        let stream = FirstPacketCheck {
            inner: channel.into_stream(),
            head: Vec::new(),
            decided: false,
            printed,
        };
        let raw = RawSftpSession::new(stream);
        raw.set_timeout(self.command_timeout.as_secs().max(1));
        let version = raw.init().await.map_err(|e| describe_sftp(&e))?;
        Ok(Sftp {
            raw,
            extensions: version.extensions,
        })
    }
}

/// Why SFTP cannot start when a login shell printed `text` first. OpenSSH's sftp reads that
/// text as a packet length and says "Received message too long".
fn login_shell_prints(text: &[u8]) -> String {
    let said: String = first_line(text).chars().take(100).collect();
    format!(
        "the login shell prints to stdout (shell startup files); SFTP cannot start: it printed \
         {said:?} where the SFTP server's first packet belongs (OpenSSH's sftp says \"Received \
         message too long\"); make the login user's shell startup files (e.g. ~/.bashrc) print \
         nothing when the shell is not interactive"
    )
}

/// Whether the first bytes of an SFTP stream are the server's version packet (`uint32
/// length, byte SSH_FXP_VERSION`): `None` until there are enough bytes to tell. A length out
/// of range says no at once (a reader asks for the four length bytes alone).
fn is_version_packet(head: &[u8]) -> Option<bool> {
    let length = u32::from_be_bytes(head.get(..4)?.try_into().ok()?);
    if !(5..=SFTP_MAX_PACKET).contains(&length) {
        return Some(false);
    }
    Some(*head.get(4)? == SSH_FXP_VERSION)
}

/// The SFTP channel's stream with its first bytes checked before russh-sftp reads them
/// (which would take a shell's text for a huge length and report only "sender dropped"). On
/// anything but a version packet, the read fails and `printed` keeps what arrived.
struct FirstPacketCheck<S> {
    inner: S,
    /// What arrived before the verdict.
    head: Vec<u8>,
    decided: bool,
    printed: Arc<Mutex<Option<Vec<u8>>>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstPacketCheck<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if this.decided {
            return Poll::Ready(Ok(()));
        }
        let new = &buf.filled()[before..];
        this.head.extend_from_slice(new);
        match is_version_packet(&this.head) {
            None if !new.is_empty() => {}
            None | Some(true) => this.decided = true,
            Some(false) => {
                this.decided = true;
                this.read_rest_of_line(cx);
                *this
                    .printed
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some(std::mem::take(&mut this.head));
                buf.set_filled(before);
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "text where the SFTP server's first packet belongs",
                )));
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> FirstPacketCheck<S> {
    /// Adds what else has already arrived of the shell's first line to `head` (for the
    /// message), without waiting for more.
    fn read_rest_of_line(&mut self, cx: &mut Context<'_>) {
        let mut more = [0u8; 256];
        while self.head.len() < 200 && !self.head.contains(&b'\n') {
            let mut buf = ReadBuf::new(&mut more);
            match Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                    self.head.extend_from_slice(buf.filled());
                }
                _ => break,
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstPacketCheck<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
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

    #[test]
    fn the_first_packet_is_a_version_or_shell_text() {
        // OpenSSH's sftp-server: length 0x9c, SSH_FXP_VERSION, version 3, extensions.
        assert_eq!(
            is_version_packet(&[0, 0, 0, 0x9c, 2, 0, 0, 0, 3]),
            Some(true)
        );
        assert_eq!(is_version_packet(&[0, 0, 0, 5, 2]), Some(true));
        assert_eq!(is_version_packet(&[0, 0, 0]), None);
        assert_eq!(is_version_packet(&[0, 0, 0, 5]), None);
        assert_eq!(is_version_packet(b""), None);
        assert_eq!(is_version_packet(b"Welc"), Some(false));
        // "Welc" is 1.4 GiB as a length: OpenSSH's "Received message too long 1466264675".
        assert_eq!(is_version_packet(b"Welcome to web-1\n"), Some(false));
        assert_eq!(is_version_packet(b"\n\n\n\n\n"), Some(false));
        assert_eq!(
            is_version_packet(&[0, 0, 0, 9, 1]),
            Some(false),
            "not a VERSION"
        );
        assert_eq!(
            is_version_packet(&[0, 0, 0, 4, 2]),
            Some(false),
            "too short"
        );
        assert_eq!(is_version_packet(&[0, 4, 0, 1, 2]), Some(false), "too long");
    }

    #[tokio::test]
    async fn shell_text_fails_the_first_read_and_is_kept() {
        use tokio::io::AsyncReadExt as _;
        let run = |input: &'static [u8]| async move {
            let printed = Arc::new(Mutex::new(None));
            let mut stream = FirstPacketCheck {
                inner: input,
                head: Vec::new(),
                decided: false,
                printed: printed.clone(),
            };
            let mut out = Vec::new();
            let read = stream.read_to_end(&mut out).await.map(|_| out);
            (read, printed.lock().unwrap().take())
        };
        let (read, printed) = run(b"Hello from .bashrc\n\0\0\0\x05\x02").await;
        assert_eq!(read.unwrap_err().kind(), io::ErrorKind::InvalidData);
        assert_eq!(printed.unwrap(), b"Hello from .bashrc\n\0\0\0\x05\x02");
        // russh-sftp reads the four length bytes alone: that is enough to refuse, and the
        // rest of the line that has arrived is kept for the message.
        let printed = Arc::new(Mutex::new(None));
        let mut stream = FirstPacketCheck {
            inner: &b"Welcome to web-1\nmore"[..],
            head: Vec::new(),
            decided: false,
            printed: printed.clone(),
        };
        let err = stream.read_u32().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(
            printed.lock().unwrap().take().unwrap(),
            b"Welcome to web-1\nmore"
        );
        let (read, printed) = run(b"\0\0\0\x05\x02\0\0\0\x03hello").await;
        assert_eq!(read.unwrap(), b"\0\0\0\x05\x02\0\0\0\x03hello");
        assert_eq!(printed, None);
        let message = login_shell_prints(b"\x1b[1mWelcome\x1b[0m to web-1\n");
        assert!(
            message.starts_with(
                "the login shell prints to stdout (shell startup files); SFTP cannot start: \
                 it printed \"[1mWelcome[0m to web-1\""
            ),
            "{message}"
        );
    }
}
