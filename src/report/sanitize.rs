//! Untrusted text (remote stderr, server output, names read from files) made safe to show on
//! a terminal: no escape sequences, no control characters, no bidi tricks, bounded length.
//!
//! Owns only the transformation; where it is applied is the printers' business (every detail
//! and error is passed through [`sanitize`] before it is printed or put in the JSON report).

/// Longest sanitised text, in bytes, including the truncation marker.
pub const MAX_SANITIZED_BYTES: usize = 4096;

/// Put in front of the kept tail when text was cut: the end of a config test's output is where
/// the error usually is.
const TRUNCATED: &str = "…(truncated)\n";

/// Lossy UTF-8, then neutralise everything a terminal would act on:
///
/// - complete CSI (`ESC [ … final`) and string sequences (OSC `ESC ]`, DCS `ESC P`, SOS, PM,
///   APC, ended by BEL or ST) are dropped — they are colour or title noise at best;
/// - any other ESC, C0 controls except `\n` and `\t`, DEL and C1 controls (U+0080–U+009F) are
///   shown as visible escapes (`\x1b`, `\x07`, `\u{9b}`); `\r\n` becomes `\n`, a lone `\r` is
///   shown as `\r` so it cannot overwrite what came before on the line;
/// - bidi overrides, embeddings, isolates and marks (U+202A–U+202E, U+2066–U+2069, U+200E,
///   U+200F, U+061C) and the Unicode line/paragraph separators are shown as `\u{…}`;
/// - trailing whitespace is trimmed;
/// - text longer than [`MAX_SANITIZED_BYTES`] keeps its tail behind a `…(truncated)` line.
///
/// The result contains nothing [`sanitize`] would change again (it is idempotent).
pub fn sanitize(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    let mut rest: &str = &text;
    while let Some(c) = rest.chars().next() {
        let mut advance = c.len_utf8();
        match c {
            '\n' | '\t' => out.push(c),
            '\r' if rest[1..].starts_with('\n') => {}
            '\u{1b}' => match escape_sequence_len(rest.as_bytes()) {
                Some(len) => advance = len,
                None => push_escaped(c, &mut out),
            },
            c if is_unsafe(c) => push_escaped(c, &mut out),
            c => out.push(c),
        }
        rest = &rest[advance..];
    }
    out.truncate(out.trim_end().len());
    keep_tail(out)
}

/// [`sanitize`] for text that must stay on one line (names, the first line of a detail):
/// newlines and tabs are shown as `\n` and `\t` too.
pub fn sanitize_line(text: &str) -> String {
    let clean = sanitize(text.as_bytes());
    if !clean.contains(['\n', '\t']) {
        return clean;
    }
    clean.replace('\n', "\\n").replace('\t', "\\t")
}

/// Characters shown as an escape instead of being printed.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{061C}'
                | '\u{2028}'
                | '\u{2029}'
        )
}

fn push_escaped(c: char, out: &mut String) {
    use std::fmt::Write as _;
    let code = u32::from(c);
    // Writing to a String cannot fail.
    let _ = match c {
        '\r' => write!(out, "\\r"),
        _ if code < 0x80 => write!(out, "\\x{code:02x}"),
        _ => write!(out, "\\u{{{code:x}}}"),
    };
}

/// Length in bytes of the complete escape sequence at the start of `s` (which starts with
/// ESC), or `None` when it is not one we can drop whole (unknown or unterminated).
fn escape_sequence_len(s: &[u8]) -> Option<usize> {
    match s.get(1)? {
        b'[' => {
            // CSI: parameter bytes 0x30–0x3F, intermediate bytes 0x20–0x2F, one final byte.
            let mut i = 2;
            while s.get(i).is_some_and(|b| (0x30..=0x3F).contains(b)) {
                i += 1;
            }
            while s.get(i).is_some_and(|b| (0x20..=0x2F).contains(b)) {
                i += 1;
            }
            s.get(i)
                .is_some_and(|b| (0x40..=0x7E).contains(b))
                .then_some(i + 1)
        }
        b']' | b'P' | b'X' | b'^' | b'_' => {
            // String sequences end with BEL, ST (`ESC \`) or the C1 ST (U+009C, UTF-8 C2 9C).
            let mut i = 2;
            loop {
                match (s.get(i)?, s.get(i + 1)) {
                    (0x07, _) => return Some(i + 1),
                    (0x1b, Some(b'\\')) => return Some(i + 2),
                    // Another ESC inside: not a sequence we understand; show it.
                    (0x1b, _) => return None,
                    (0xC2, Some(0x9C)) => return Some(i + 2),
                    _ => i += 1,
                }
            }
        }
        _ => None,
    }
}

/// Caps `text` at [`MAX_SANITIZED_BYTES`], keeping the end, starting at a line boundary when
/// one is near.
fn keep_tail(text: String) -> String {
    if text.len() <= MAX_SANITIZED_BYTES {
        return text;
    }
    let keep = MAX_SANITIZED_BYTES - TRUNCATED.len();
    let mut start = text.len() - keep;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    if let Some(newline) = text[start..].find('\n').filter(|&n| n < keep / 4) {
        start += newline + 1;
    }
    let mut out = String::with_capacity(TRUNCATED.len() + text.len() - start);
    out.push_str(TRUNCATED);
    out.push_str(&text[start..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_passes_through() {
        let text = "nginx: [emerg] cannot load certificate \"/etc/nginx/tls/www.crt\"\n\tline 2";
        assert_eq!(sanitize(text.as_bytes()), text);
    }

    #[test]
    fn colour_and_cursor_sequences_are_dropped() {
        let input = b"\x1b[1;31merror\x1b[0m: bad \x1b[2K\x1b[1Akey\x1b[?25l";
        assert_eq!(sanitize(input), "error: bad key");
    }

    #[test]
    fn osc_title_and_hyperlink_are_dropped_whole() {
        let input =
            b"a\x1b]0;pwned title\x07b\x1b]8;;https://evil.example/\x1b\\link\x1b]8;;\x1b\\c";
        assert_eq!(sanitize(input), "ablinkc");
        // C1 string terminator (U+009C) also ends an OSC.
        assert_eq!(sanitize("x\x1b]2;t\u{9c}y".as_bytes()), "xy");
    }

    #[test]
    fn unterminated_or_unknown_escapes_are_shown() {
        assert_eq!(sanitize(b"a\x1b]0;never ends"), "a\\x1b]0;never ends");
        assert_eq!(sanitize(b"a\x1b[12"), "a\\x1b[12");
        assert_eq!(sanitize(b"reset\x1bc!"), "reset\\x1bc!");
        assert_eq!(sanitize(b"trailing \x1b"), "trailing \\x1b");
        // A DCS with an ESC inside that is not ST: shown, never swallowed.
        assert_eq!(sanitize(b"\x1bPq\x1b[31mred"), "\\x1bPqred");
    }

    #[test]
    fn c0_c1_and_del_are_escaped() {
        assert_eq!(
            sanitize(b"bell\x07 nul\x00 bs\x08 del\x7f"),
            "bell\\x07 nul\\x00 bs\\x08 del\\x7f"
        );
        // U+009B is the 8-bit CSI; U+0085 is NEL.
        assert_eq!(
            sanitize("a\u{9b}31mb\u{85}c".as_bytes()),
            "a\\u{9b}31mb\\u{85}c"
        );
    }

    #[test]
    fn carriage_returns_cannot_overwrite() {
        assert_eq!(sanitize(b"line1\r\nline2\r\n"), "line1\nline2");
        assert_eq!(sanitize(b"all good\rFAILED"), "all good\\rFAILED");
    }

    #[test]
    fn bidi_controls_are_escaped() {
        let input = "file\u{202E}txt.exe \u{2066}x\u{2069} \u{200F}";
        assert_eq!(
            sanitize(input.as_bytes()),
            "file\\u{202e}txt.exe \\u{2066}x\\u{2069} \\u{200f}"
        );
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        assert_eq!(sanitize(b"ok \xff\xfe end"), "ok \u{FFFD}\u{FFFD} end");
    }

    #[test]
    fn trailing_whitespace_is_trimmed() {
        assert_eq!(sanitize(b"  indented\n\n \t \n"), "  indented");
        assert_eq!(sanitize(b"\x1b[0m   \n"), "");
    }

    #[test]
    fn long_text_keeps_the_tail_within_the_cap() {
        let mut input = Vec::new();
        for i in 0..2000 {
            input.extend_from_slice(format!("noise line {i}\n").as_bytes());
        }
        input.extend_from_slice("the real error: ключ не подходит".as_bytes());
        let out = sanitize(&input);
        assert!(out.len() <= MAX_SANITIZED_BYTES, "{} bytes", out.len());
        assert!(
            out.starts_with("…(truncated)\nnoise line "),
            "{}",
            &out[..40]
        );
        assert!(out.ends_with("the real error: ключ не подходит"));
    }

    #[test]
    fn one_long_line_is_cut_on_a_char_boundary() {
        let input = "é".repeat(5000);
        let out = sanitize(input.as_bytes());
        assert!(out.len() <= MAX_SANITIZED_BYTES);
        assert!(out.starts_with(TRUNCATED));
        assert!(out[TRUNCATED.len()..].chars().all(|c| c == 'é'));
    }

    #[test]
    fn escapes_expanding_past_the_cap_are_still_capped() {
        let out = sanitize(&[0x07; 3000]);
        assert!(out.len() <= MAX_SANITIZED_BYTES);
        assert!(out.ends_with("\\x07"));
    }

    #[test]
    fn sanitize_is_idempotent() {
        let nasty: &[&[u8]] = &[
            b"\x1b[31mred\x1b[0m\r\n\x07\x1b]0;t\x07",
            "\u{202E}\u{9b}\u{2028}x\r".as_bytes(),
            &[b'a'; 10_000],
            b"\x1bc\x1b[",
        ];
        for input in nasty {
            let once = sanitize(input);
            assert_eq!(sanitize(once.as_bytes()), once);
            assert!(!once.contains(['\u{1b}', '\r', '\u{7}', '\u{9b}', '\u{202E}']));
        }
    }

    #[test]
    fn sanitize_line_keeps_one_line() {
        assert_eq!(sanitize_line("web\n1\tx\x1b[31m"), "web\\n1\\tx");
        assert_eq!(sanitize_line("web-1"), "web-1");
    }
}
