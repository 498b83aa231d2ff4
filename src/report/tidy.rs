//! Messages made shorter for people: the remote shell's own prefixes (`environment: line 5:`,
//! `sh: 1:`, `bash: line 3:`) and Rust's `(os error N)` suffixes removed, and — in human
//! lines — 95-character fingerprints shortened to `AB:CD:EF:01…` (the JSON keeps them whole).
//!
//! Pure text in, text out; applied by [`super::RunReport::new`] (tidy) and the human printers
//! (short fingerprints).

/// Removes shell noise and `(os error N)` from every line of `text`.
pub fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let body = line.trim_start();
        out.push_str(&line[..line.len() - body.len()]);
        out.push_str(&strip_os_error(strip_shell_prefix(body)));
    }
    out
}

/// `environment: line 5: nginx: command not found` -> `nginx: command not found`; likewise
/// `sh: 1: `, `sh: line 1: `, `bash: line 3: `, `bash: `, `-bash: line 2: `, `dash: 1: `.
/// Only at the start of a line (after its indentation).
fn strip_shell_prefix(body: &str) -> &str {
    for shell in ["environment", "sh", "bash", "-bash", "dash", "ash", "zsh"] {
        let Some(rest) = body.strip_prefix(shell).and_then(|r| r.strip_prefix(": ")) else {
            continue;
        };
        let rest_line = rest.strip_prefix("line ").unwrap_or(rest);
        let digits = rest_line.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0
            && let Some(after) = rest_line[digits..].strip_prefix(": ")
        {
            return after;
        }
    }
    body
}

/// `No such file or directory (os error 2)` -> `No such file or directory`, wherever it is.
fn strip_os_error(line: &str) -> String {
    const MARK: &str = " (os error ";
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find(MARK) {
        let after = &rest[at + MARK.len()..];
        let digits = after
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b'-')
            .count();
        if digits > 0 && after[digits..].starts_with(')') {
            out.push_str(&rest[..at]);
            rest = &after[digits + 1..];
        } else {
            out.push_str(&rest[..at + MARK.len()]);
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Every full SHA-256 fingerprint (`AB:CD:…`, 32 pairs) in `text` as its first four bytes and
/// `…`, the form the summary table uses.
pub fn short_fingerprints(text: &str) -> String {
    const LEN: usize = 32 * 3 - 1;
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut copied = 0;
    while i + LEN <= bytes.len() {
        if is_fingerprint_at(bytes, i)
            && (i == 0 || !bytes[i - 1].is_ascii_hexdigit())
            && bytes
                .get(i + LEN)
                .is_none_or(|b| !b.is_ascii_hexdigit() && *b != b':')
        {
            out.push_str(&text[copied..i]);
            out.push_str(&text[i..i + 11]);
            out.push('…');
            i += LEN;
            copied = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&text[copied..]);
    out
}

fn is_fingerprint_at(bytes: &[u8], at: usize) -> bool {
    (0..32).all(|pair| {
        let p = at + pair * 3;
        let hex = |b: u8| b.is_ascii_digit() || (b'A'..=b'F').contains(&b);
        hex(bytes[p]) && hex(bytes[p + 1]) && (pair == 31 || bytes[p + 2] == b':')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_prefixes_go_and_the_message_stays() {
        assert_eq!(
            tidy("environment: line 5: nginx: command not found"),
            "nginx: command not found"
        );
        assert_eq!(tidy("sh: 1: nginx: not found"), "nginx: not found");
        assert_eq!(
            tidy("bash: line 3: x: Permission denied"),
            "x: Permission denied"
        );
        assert_eq!(
            tidy("preview failed:\n  sh: 1: foo: not found"),
            "preview failed:\n  foo: not found"
        );
        // Not a shell's prefix: kept.
        assert_eq!(tidy("sh: usage"), "sh: usage");
        assert_eq!(tidy("shell: 1: x"), "shell: 1: x");
    }

    #[test]
    fn os_error_suffixes_go() {
        assert_eq!(
            tidy("cannot read a.pem: No such file or directory (os error 2)"),
            "cannot read a.pem: No such file or directory"
        );
        assert_eq!(tidy("a (os error 13); b (os error 2)\nc"), "a; b\nc");
        assert_eq!(tidy("(os error x)"), "(os error x)");
    }

    #[test]
    fn fingerprints_are_shortened_only_when_whole() {
        let fp = ["AB"; 32].join(":");
        assert_eq!(
            short_fingerprints(&format!("serves {fp}, expected {fp}.")),
            "serves AB:AB:AB:AB…, expected AB:AB:AB:AB…."
        );
        let partial = ["AB"; 20].join(":");
        assert_eq!(short_fingerprints(&partial), partial);
        assert_eq!(short_fingerprints("SHA256:abc"), "SHA256:abc");
        assert_eq!(short_fingerprints("é"), "é");
    }
}
