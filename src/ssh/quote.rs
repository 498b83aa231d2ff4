//! Remote-shell quoting, in exactly one place. Nothing else in certctl writes quotes.
//!
//! [`quote`] and [`command_line`] produce POSIX `sh` words; [`Script`] assembles a script from
//! quoted commands and fixed (`'static`) shell text only. [`quote_powershell`] is the same idea
//! for Windows OpenSSH targets whose shell is PowerShell (`quote/powershell.rs`, re-exported
//! here).

mod powershell;

pub use powershell::{PowerShell, powershell_command_line, quote_powershell, render_powershell};

/// Quotes one argument for a POSIX shell.
///
/// Words made only of characters no shell treats specially (`A-Z a-z 0-9 _ - . / , : @ % +`)
/// stay bare so command lines remain readable in logs (`nginx -t -c /etc/nginx/nginx.conf`);
/// everything else is single-quoted, with each `'` written as `'\''`. Shell reserved words
/// (`if`, `then`, `time`, …) are quoted too, so an argument never changes the grammar of the
/// line it lands in. `=` and a leading `~` are not bare-safe: `A=b` as a first word would be an
/// assignment, and `~` would expand.
pub fn quote(arg: &str) -> String {
    if !arg.is_empty() && arg.bytes().all(is_bare_safe) && !is_reserved_word(arg) {
        return arg.to_owned();
    }
    let mut out = String::with_capacity(arg.len() + 2);
    out.push('\'');
    for c in arg.chars() {
        if c == '\'' {
            // Close the quote, add an escaped quote, reopen.
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

fn is_bare_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'_' | b'-' | b'.' | b'/' | b',' | b':' | b'@' | b'%' | b'+'
        )
}

/// Words that the POSIX grammar (or bash, the most common `/bin/sh` stand-in's big sibling)
/// recognises as reserved when they appear unquoted in command position.
fn is_reserved_word(word: &str) -> bool {
    matches!(
        word,
        "case"
            | "coproc"
            | "do"
            | "done"
            | "elif"
            | "else"
            | "esac"
            | "fi"
            | "for"
            | "function"
            | "if"
            | "in"
            | "select"
            | "then"
            | "time"
            | "until"
            | "while"
    )
}

/// Quotes an argv into one command line for a POSIX shell.
pub fn command_line<S: AsRef<str>>(argv: &[S]) -> String {
    argv.iter()
        .map(|a| quote(a.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// How a command is named in an error: its quoted command line, or for a script built by
/// [`PowerShell::argv`], `powershell:` and its statements (after the first, fixed one) joined
/// with `; ` instead of the base64 that was sent.
pub fn label<S: AsRef<str>>(argv: &[S]) -> String {
    if let Some(b64) = powershell::encoded_command(argv) {
        use base64::Engine as _;
        if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(b64) {
            let units: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            if let Ok(text) = String::from_utf16(&units) {
                let body: Vec<&str> = text.lines().skip(1).collect();
                return format!("powershell: {}", body.join("; "));
            }
        }
    }
    command_line(argv)
}

/// A POSIX shell script assembled from quoted commands; raw shell syntax only comes from the
/// fixed operators this type offers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Script {
    text: String,
}

impl Script {
    pub fn new() -> Self {
        Self::default()
    }
    /// Appends a command line of quoted `argv`, then a newline.
    pub fn cmd<S: AsRef<str>>(&mut self, argv: &[S]) -> &mut Self {
        self.text.push_str(&command_line(argv));
        self.text.push('\n');
        self
    }
    /// Appends fixed shell text (functions, operators). Only `'static` text is accepted, so
    /// no runtime value can reach the script without passing through [`quote`].
    pub fn raw(&mut self, text: &'static str) -> &mut Self {
        self.text.push_str(text);
        self
    }
    /// The script text.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Strings a remote value could plausibly contain, each hostile to naive quoting.
    const HOSTILE: &[&str] = &[
        "",
        " ",
        "two words",
        "  leading and trailing  ",
        "it's",
        "'",
        "''",
        "\"double\"",
        "mixed 'single' and \"double\"",
        "$(touch /tmp/certctl-pwned)",
        "`id`",
        "$HOME",
        "${HOME}",
        "a;b",
        "a && b",
        "a || b",
        "a | b",
        "a > /dev/null",
        "< /etc/passwd",
        "line1\nline2",
        "trailing newline\n",
        "\n",
        "tab\there",
        "-rf",
        "--help",
        "-",
        "*",
        "/etc/*.conf",
        "?",
        "[a-z]",
        "~",
        "~root",
        "A=b",
        "PATH=/tmp",
        "!",
        "!!",
        "#not a comment",
        "a#b",
        "\\",
        "back\\slash\\",
        "{a,b}",
        "if",
        "time",
        "héllo wörld ✓ 证书",
        "emoji 🔐 key",
        "\u{2019}curly\u{2018}",
        "\u{7f}\u{1b}[31mred",
    ];

    /// Runs `printf '%s' <quoted>` through the local `sh` and returns what it printed.
    fn sh_echo(quoted: &str) -> Vec<u8> {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("printf '%s' {quoted}"))
            .output()
            .expect("run sh");
        assert!(
            out.status.success(),
            "sh failed for {quoted:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    #[test]
    fn every_hostile_string_round_trips_through_sh_byte_for_byte() {
        for s in HOSTILE {
            let q = quote(s);
            assert_eq!(sh_echo(&q), s.as_bytes(), "quote({s:?}) = {q}");
        }
    }

    #[test]
    fn a_whole_argv_round_trips_as_separate_words() {
        let argv: Vec<&str> = HOSTILE.to_vec();
        let line = command_line(&argv);
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("for a in {line}; do printf '%s\\0' \"$a\"; done"))
            .output()
            .expect("run sh");
        assert!(out.status.success());
        let words: Vec<&[u8]> = out.stdout.split(|b| *b == 0).collect();
        // split() yields one empty slice after the final NUL.
        assert_eq!(words.len(), argv.len() + 1);
        for (got, want) in words.iter().zip(&argv) {
            assert_eq!(*got, want.as_bytes());
        }
    }

    #[test]
    fn a_quoted_command_runs_the_program_not_an_injection() {
        // If quoting failed, `;` would run a second command and print "INJECTED".
        let line = command_line(&["printf", "%s", "x; printf INJECTED"]);
        let out = Command::new("sh")
            .arg("-c")
            .arg(&line)
            .output()
            .expect("run sh");
        assert_eq!(out.stdout, b"x; printf INJECTED");
    }

    #[test]
    fn plain_words_stay_bare_for_readable_logs() {
        assert_eq!(quote("/etc/nginx/x.crt"), "/etc/nginx/x.crt");
        assert_eq!(quote("-t"), "-t");
        assert_eq!(quote("user@host:22"), "user@host:22");
        assert_eq!(
            command_line(&["nginx", "-t", "-c", "/etc/nginx/nginx.conf"]),
            "nginx -t -c /etc/nginx/nginx.conf"
        );
    }

    #[test]
    fn special_words_are_quoted() {
        assert_eq!(quote(""), "''");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote("A=b"), "'A=b'");
        assert_eq!(quote("~"), "'~'");
        assert_eq!(quote("if"), "'if'");
        assert_eq!(quote("*"), "'*'");
    }

    #[test]
    fn a_reserved_word_in_command_position_is_a_plain_word() {
        // Unquoted, `time printf x` would run the `time` keyword in bash; quoted, it looks for
        // a program named "time" or fails — it never changes how the line parses.
        let line = command_line(&["if"]);
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("{line} 2>/dev/null; echo rc=$?"))
            .output()
            .expect("run sh");
        assert_eq!(
            out.stdout, b"rc=127\n",
            "`if` must be looked up as a command, not parsed as a keyword"
        );
    }

    #[test]
    fn script_joins_quoted_commands_and_fixed_text() {
        let mut s = Script::new();
        s.raw("set -eu\n")
            .cmd(&["printf", "%s\\n", "a b"])
            .cmd(&["printf", "%s\\n", "$(x)"])
            .raw("exit 0\n");
        assert_eq!(
            s.as_str(),
            "set -eu\nprintf '%s\\n' 'a b'\nprintf '%s\\n' '$(x)'\nexit 0\n"
        );
        let out = Command::new("sh")
            .arg("-c")
            .arg(s.as_str())
            .output()
            .expect("run sh");
        assert_eq!(out.stdout, b"a b\n$(x)\n");
    }
}
