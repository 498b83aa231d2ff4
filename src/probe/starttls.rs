//! STARTTLS: the plain-text start of SMTP, IMAP and POP3, up to the point where the server
//! expects a ClientHello.

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

use super::StartTls;
use crate::material::sanitize_one_line;

/// Longest reply line we read, and most lines in one reply: a server that talks more than
/// that is not the server we want to probe.
const MAX_LINE: u64 = 4096;
const MAX_LINES: usize = 100;

pub(super) fn protocol_name(mode: StartTls) -> &'static str {
    match mode {
        StartTls::None => "TLS",
        StartTls::Smtp => "SMTP",
        StartTls::Imap => "IMAP",
        StartTls::Pop3 => "POP3",
    }
}

/// Speaks the plain-text protocol up to the point where the server expects a ClientHello.
pub(super) async fn start_tls(tcp: &mut TcpStream, mode: StartTls) -> Result<(), String> {
    let name = protocol_name(mode);
    let mut conn = BufReader::new(tcp);
    match mode {
        StartTls::None => return Ok(()),
        StartTls::Smtp => {
            let greeting = smtp_reply(&mut conn).await?;
            expect_code(&greeting, 220, "greeting")?;
            send(&mut conn, "EHLO certctl.invalid\r\n").await?;
            let ehlo = smtp_reply(&mut conn).await?;
            expect_code(&ehlo, 250, "reply to EHLO")?;
            let offers = ehlo.1.iter().any(|line| {
                line.get(4..)
                    .and_then(|rest| rest.split_whitespace().next())
                    .is_some_and(|w| w.eq_ignore_ascii_case("STARTTLS"))
            });
            if !offers {
                return Err(format!(
                    "the SMTP server does not offer STARTTLS (EHLO reply: `{}`)",
                    quote_lines(&ehlo.1)
                ));
            }
            send(&mut conn, "STARTTLS\r\n").await?;
            let reply = smtp_reply(&mut conn).await?;
            expect_code(&reply, 220, "reply to STARTTLS")?;
        }
        StartTls::Imap => {
            let greeting = read_line(&mut conn, name).await?;
            if !starts_with_ignore_case(&greeting, "* OK") {
                return Err(format!(
                    "IMAP greeting was `{}`, expected `* OK`",
                    quote(&greeting)
                ));
            }
            send(&mut conn, "a1 STARTTLS\r\n").await?;
            let mut seen = 0;
            let reply = loop {
                let line = read_line(&mut conn, name).await?;
                if starts_with_ignore_case(&line, "a1 ") {
                    break line;
                }
                seen += 1;
                if seen >= MAX_LINES {
                    return Err("the IMAP server never answered `a1 STARTTLS`".into());
                }
            };
            if !starts_with_ignore_case(&reply, "a1 OK") {
                return Err(format!("IMAP server refused STARTTLS: `{}`", quote(&reply)));
            }
        }
        StartTls::Pop3 => {
            let greeting = read_line(&mut conn, name).await?;
            if !starts_with_ignore_case(&greeting, "+OK") {
                return Err(format!(
                    "POP3 greeting was `{}`, expected `+OK`",
                    quote(&greeting)
                ));
            }
            send(&mut conn, "STLS\r\n").await?;
            let reply = read_line(&mut conn, name).await?;
            if !starts_with_ignore_case(&reply, "+OK") {
                return Err(format!("POP3 server refused STLS: `{}`", quote(&reply)));
            }
        }
    }
    // Anything already buffered was sent before the handshake, i.e. in plain text after the
    // server's go-ahead: a broken server or an injection attempt (CVE-2011-0411 style).
    if !conn.buffer().is_empty() {
        return Err(format!(
            "the {name} server sent unexpected data after its STARTTLS reply"
        ));
    }
    Ok(())
}

async fn send(conn: &mut BufReader<&mut TcpStream>, line: &str) -> Result<(), String> {
    conn.get_mut()
        .write_all(line.as_bytes())
        .await
        .map_err(|e| format!("sending `{}`: {e}", line.trim_end()))
}

/// One line without its line ending.
async fn read_line(conn: &mut BufReader<&mut TcpStream>, protocol: &str) -> Result<String, String> {
    let mut buf = Vec::new();
    let n = (&mut *conn)
        .take(MAX_LINE)
        .read_until(b'\n', &mut buf)
        .await
        .map_err(|e| format!("reading from the {protocol} server: {e}"))?;
    if n == 0 {
        return Err(format!("the {protocol} server closed the connection"));
    }
    if !buf.ends_with(b"\n") && n as u64 >= MAX_LINE {
        return Err(format!(
            "the {protocol} server sent a line longer than {MAX_LINE} bytes"
        ));
    }
    let text = String::from_utf8_lossy(&buf);
    Ok(text.trim_end_matches(['\r', '\n']).to_string())
}

/// An SMTP reply: its code and all its lines (`250-…` continuation lines, then `250 …`).
async fn smtp_reply(conn: &mut BufReader<&mut TcpStream>) -> Result<(u16, Vec<String>), String> {
    let mut lines = Vec::new();
    loop {
        let line = read_line(conn, "SMTP").await?;
        let code = line
            .get(..3)
            .and_then(|c| c.parse::<u16>().ok())
            .filter(|_| line.is_char_boundary(3));
        let Some(code) = code else {
            return Err(format!("unexpected SMTP reply `{}`", quote(&line)));
        };
        let more = line.as_bytes().get(3) == Some(&b'-');
        lines.push(line);
        if !more {
            return Ok((code, lines));
        }
        if lines.len() >= MAX_LINES {
            return Err("the SMTP reply never ended".into());
        }
    }
}

fn expect_code(reply: &(u16, Vec<String>), want: u16, what: &str) -> Result<(), String> {
    if reply.0 == want {
        Ok(())
    } else {
        Err(format!(
            "SMTP {what} was `{}`, expected {want}",
            quote_lines(&reply.1)
        ))
    }
}

fn starts_with_ignore_case(line: &str, prefix: &str) -> bool {
    line.get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
}

/// What a server said, safe to print: no control characters, one line, at most 200 chars.
fn quote(line: &str) -> String {
    sanitize_one_line(line.as_bytes(), 200)
}

fn quote_lines(lines: &[String]) -> String {
    quote(&lines.join(" | "))
}
