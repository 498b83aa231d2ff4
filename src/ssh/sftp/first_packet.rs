//! The first bytes of an SFTP channel, checked before russh-sftp reads them. A server's first
//! packet is `uint32 length, byte SSH_FXP_VERSION`. sshd starts an external sftp-server
//! through the login user's shell (`$SHELL -c sftp-server`), so a shell whose startup files
//! print (a `~/.bashrc` that echoes) puts text there instead; OpenSSH's sftp reads it as a
//! length and says "Received message too long", russh-sftp just drops the session ("sender
//! dropped"). Here the read fails and the text is kept, for a message that names the cause.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::ssh::exec::first_line;

/// The longest packet an SFTP client accepts (OpenSSH's `SFTP_MAX_MSG_LENGTH`).
const SFTP_MAX_PACKET: u32 = 256 * 1024;
/// `SSH_FXP_VERSION`: the type of the server's first packet.
const SSH_FXP_VERSION: u8 = 2;

/// Why SFTP cannot start when a login shell printed `text` first. OpenSSH's sftp reads that
/// text as a packet length and says "Received message too long".
pub(super) fn login_shell_prints(text: &[u8]) -> String {
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

/// The SFTP channel's stream with its first bytes checked before russh-sftp reads them. On
/// anything but a version packet, the read fails and `printed` keeps what arrived.
pub(super) struct FirstPacketCheck<S> {
    inner: S,
    /// What arrived before the verdict.
    head: Vec<u8>,
    decided: bool,
    printed: Arc<Mutex<Option<Vec<u8>>>>,
}

impl<S> FirstPacketCheck<S> {
    pub(super) fn new(inner: S, printed: Arc<Mutex<Option<Vec<u8>>>>) -> Self {
        FirstPacketCheck {
            inner,
            head: Vec::new(),
            decided: false,
            printed,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
            let mut stream = FirstPacketCheck::new(input, printed.clone());
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
        let mut stream = FirstPacketCheck::new(&b"Welcome to web-1\nmore"[..], printed.clone());
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
