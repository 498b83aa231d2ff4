//! Remote-shell quoting, in exactly one place. Nothing else in certctl writes quotes.
//!
//! [`quote`] and [`command_line`] produce POSIX `sh` words; [`Script`] assembles a script from
//! quoted commands and fixed (`'static`) shell text only. [`quote_powershell`] is the same idea
//! for Windows OpenSSH targets whose shell is PowerShell.

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

/// Quotes one argument as a PowerShell single-quoted (verbatim) string: no `$` expansion, no
/// backtick escapes; a quote inside is doubled. PowerShell also accepts the typographic single
/// quotes U+2018..U+201B as delimiters, so those are doubled as well. Always quoted, even when
/// empty (`''`).
pub fn quote_powershell(arg: &str) -> String {
    let mut out = String::with_capacity(arg.len() + 2);
    out.push('\'');
    for c in arg.chars() {
        if matches!(c, '\'' | '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}') {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
    out
}

fn is_ps_quote(c: char) -> bool {
    matches!(c, '\'' | '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}')
}

/// Renders one PowerShell statement template. A `{name}` outside quotes becomes the value
/// quoted with [`quote_powershell`], a whole token. Inside a single-quoted literal of the
/// template (`'Cert:\{location}\{store}'`), placeholders are filled in verbatim and the whole
/// literal is then quoted once, so adjacent values never become `'a''b'`.
///
/// Names in `deferred` are left as `{name}` (and other values' braces escaped) for a second
/// rendering: rendering the result again with those values gives what one rendering with all
/// values would (a quoted literal parses back to its text, placeholders and all).
pub fn render_powershell(
    template: &str,
    values: &std::collections::BTreeMap<String, String>,
    deferred: &[&str],
) -> Result<String, String> {
    let escape = |v: &str| {
        if deferred.is_empty() {
            v.to_string()
        } else {
            v.replace('{', "{{").replace('}', "}}")
        }
    };
    let lookup = |name: &str| -> Result<Option<String>, String> {
        if deferred.contains(&name) {
            return Ok(None);
        }
        values
            .get(name)
            .map(|v| Some(escape(v)))
            .ok_or_else(|| format!("unknown placeholder `{{{name}}}`"))
    };
    // Literal braces of the template stay escaped for the second rendering.
    let keep = |text: &str| {
        if deferred.is_empty() {
            text.to_string()
        } else {
            text.replace("{{", "{{{{").replace("}}", "}}}}")
        }
    };
    let mut out = String::with_capacity(template.len() + 16);
    let mut outside = String::new();
    let flush = |outside: &mut String, out: &mut String| -> Result<(), String> {
        let rendered = crate::connector::scan_placeholders(&keep(outside), |name| {
            Ok(match lookup(name)? {
                Some(v) => quote_powershell(&v),
                None => format!("{{{name}}}"),
            })
        })?;
        out.push_str(&rendered);
        outside.clear();
        Ok(())
    };
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        if !is_ps_quote(c) {
            outside.push(c);
            continue;
        }
        flush(&mut outside, &mut out)?;
        // A literal: up to the next lone quote character; a doubled one is one quote.
        let mut literal = String::new();
        loop {
            match chars.next() {
                None => {
                    return Err(format!(
                        "unclosed quote in PowerShell statement `{template}`"
                    ));
                }
                Some(q) if is_ps_quote(q) => match chars.peek() {
                    Some(&n) if is_ps_quote(n) => {
                        literal.push(n);
                        chars.next();
                    }
                    _ => break,
                },
                Some(ch) => literal.push(ch),
            }
        }
        let filled = crate::connector::scan_placeholders(&keep(&literal), |name| {
            Ok(match lookup(name)? {
                Some(v) => v,
                None => format!("{{{name}}}"),
            })
        })?;
        out.push_str(&quote_powershell(&filled));
    }
    flush(&mut outside, &mut out)?;
    if out.contains(['\n', '\r']) {
        return Err(format!("a PowerShell statement must be one line: {out:?}"));
    }
    Ok(out)
}

/// How a command is named in an error: its quoted command line, or for a script built by
/// [`PowerShell::argv`], `powershell:` and its statements (after the first, fixed one) joined
/// with `; ` instead of the base64 that was sent.
pub fn label<S: AsRef<str>>(argv: &[S]) -> String {
    if let Some(b64) = encoded_command(argv) {
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

/// The base64 of an argv shaped as [`PowerShell::argv`] makes them.
fn encoded_command<S: AsRef<str>>(argv: &[S]) -> Option<&str> {
    let words: Vec<&str> = argv.iter().map(AsRef::as_ref).collect();
    match words.as_slice() {
        [
            "powershell",
            "-NoLogo",
            "-NoProfile",
            "-NonInteractive",
            "-EncodedCommand",
            _,
        ] => argv.last().map(AsRef::as_ref),
        _ => None,
    }
}

/// The exec request for an argv that [`PowerShell::argv`] made, exactly as
/// [`PowerShell::command_line`] sends it; `None` for any other argv.
///
/// [`command_line`] would quote the base64's `=` padding POSIX-style (`'…=='`), which only a
/// POSIX shell undoes: `cmd.exe`, the default shell of a Windows OpenSSH server, would hand
/// the quotes to PowerShell. Every character of the line returned here is plain in `sh`,
/// `cmd.exe` and PowerShell alike, so it is sent as it is.
pub fn powershell_command_line<S: AsRef<str>>(argv: &[S]) -> Option<String> {
    let b64 = encoded_command(argv)?;
    let plain = b64
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
    (!b64.is_empty() && plain).then(|| {
        argv.iter()
            .map(AsRef::as_ref)
            .collect::<Vec<&str>>()
            .join(" ")
    })
}

/// A Windows PowerShell script for a Windows OpenSSH target, assembled from statement
/// templates whose `{placeholders}` are filled with values quoted by [`quote_powershell`]
/// (single-quoted, verbatim) and nothing else. It starts with `$ErrorActionPreference =
/// 'Stop'`, so the first error ends it with a non-zero exit.
///
/// It reaches PowerShell as `powershell … -EncodedCommand BASE64` (UTF-16LE, as PowerShell
/// takes it): every character of that line is plain in `cmd.exe`, PowerShell and `sh`, so
/// whichever default shell the Windows OpenSSH server has, no shell interprets the script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PowerShell {
    text: String,
}

impl Default for PowerShell {
    fn default() -> Self {
        Self {
            text: "$ErrorActionPreference = 'Stop'\n".to_string(),
        }
    }
}

impl PowerShell {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one statement: `template` with each `{name}` replaced by the PowerShell-quoted
    /// `values[name]` (`{{`/`}}` are literal braces), then a newline.
    pub fn statement(
        &mut self,
        template: &str,
        values: &std::collections::BTreeMap<String, String>,
    ) -> Result<&mut Self, String> {
        let line = render_powershell(template, values, &[])?;
        self.text.push_str(&line);
        self.text.push('\n');
        Ok(self)
    }

    /// The exec request as an argv (`powershell -NoLogo … -EncodedCommand BASE64`): what
    /// [`PowerShell::command_line`] sends, for engine code that runs argvs.
    pub fn argv(&self) -> Vec<String> {
        self.command_line().split(' ').map(str::to_string).collect()
    }

    /// The script text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The exec request that runs the script.
    pub fn command_line(&self) -> String {
        use base64::Engine as _;
        let utf16: Vec<u8> = self
            .text
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        format!(
            "powershell -NoLogo -NoProfile -NonInteractive -EncodedCommand {}",
            base64::engine::general_purpose::STANDARD.encode(utf16)
        )
    }
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
mod powershell_tests {
    use super::*;

    #[test]
    fn a_powershell_argv_is_sent_unquoted_and_nothing_else_is() {
        let mut ps = PowerShell::new();
        let mut padded = false;
        // Scripts of every length modulo 3 (UTF-16: 2 bytes a character): with and without
        // base64 padding.
        for text in ["Write-Output 'a'", "Write-Output 'a'", "Write-Output 'a'"] {
            ps.statement(text, &std::collections::BTreeMap::new())
                .unwrap();
            let argv = ps.argv();
            padded |= ps.command_line().ends_with('=');
            assert_eq!(
                powershell_command_line(&argv).as_deref(),
                Some(ps.command_line().as_str())
            );
        }
        assert!(padded, "padding is tested");
        assert_eq!(powershell_command_line(&["sh", "-c", "true"]), None);
        let mut hostile = ps.argv();
        hostile[5].push_str(";rm");
        assert_eq!(powershell_command_line(&hostile), None);
        let mut extra = ps.argv();
        extra.push("x".into());
        assert_eq!(powershell_command_line(&extra), None);
    }
    use std::collections::BTreeMap;

    #[test]
    fn statements_quote_every_value_and_encode_as_utf16le() {
        let values = BTreeMap::from([
            ("site".to_string(), "Default 'Web' $x `y`; z".to_string()),
            ("store".to_string(), "Cert:\\LocalMachine\\My".to_string()),
        ]);
        let mut ps = PowerShell::new();
        ps.statement("Get-WebBinding -Name {site} -Port 443", &values)
            .unwrap()
            .statement("Get-ChildItem -Path {store}", &values)
            .unwrap();
        assert_eq!(
            ps.as_str(),
            "$ErrorActionPreference = 'Stop'\n\
             Get-WebBinding -Name 'Default ''Web'' $x `y`; z' -Port 443\n\
             Get-ChildItem -Path 'Cert:\\LocalMachine\\My'\n"
        );
        let line = ps.command_line();
        let b64 = line
            .strip_prefix("powershell -NoLogo -NoProfile -NonInteractive -EncodedCommand ")
            .unwrap();
        assert!(
            b64.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
        );
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let units: Vec<u16> = bytes
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(String::from_utf16(&units).unwrap(), ps.as_str());
        assert_eq!(
            label(&ps.argv()),
            "powershell: Get-WebBinding -Name 'Default ''Web'' $x `y`; z' -Port 443; Get-ChildItem -Path 'Cert:\\LocalMachine\\My'"
        );
        assert_eq!(label(&["ls", "a b"]), "ls 'a b'");
    }

    #[test]
    fn placeholders_inside_a_literal_are_quoted_once_with_it() {
        let values = BTreeMap::from([
            ("store".to_string(), "My 'x' $y `z`; w".to_string()),
            ("thumb".to_string(), "AB{C}".to_string()),
            ("set".to_string(), "/b/it's {here}".to_string()),
        ]);
        let t = "Remove-Item -LiteralPath 'Cert:\\LocalMachine\\{store}\\{thumb}' -Force; Write-Output {store} 'it''s {{x}}'";
        let once = render_powershell(t, &values, &[]).unwrap();
        assert_eq!(
            once,
            "Remove-Item -LiteralPath 'Cert:\\LocalMachine\\My ''x'' $y `z`; w\\AB{C}' -Force; Write-Output 'My ''x'' $y `z`; w' 'it''s {x}'"
        );
        // Deferred, then the rest: the same as one rendering with everything.
        let t2 = "Get-Content -LiteralPath '{set}/a' {set} '{thumb}' {thumb}";
        let first = render_powershell(t2, &values, &["set"]).unwrap();
        let second = render_powershell(&first, &values, &[]).unwrap();
        assert_eq!(second, render_powershell(t2, &values, &[]).unwrap());
        assert_eq!(
            second,
            "Get-Content -LiteralPath '/b/it''s {here}/a' '/b/it''s {here}' 'AB{C}' 'AB{C}'"
        );
        let first = render_powershell(t, &values, &["set"]).unwrap();
        assert_eq!(render_powershell(&first, &values, &[]).unwrap(), once);
        assert!(render_powershell("Write-Output 'open", &values, &[]).is_err());
    }

    #[test]
    fn a_value_cannot_add_a_statement() {
        let values = BTreeMap::from([("v".to_string(), "a\nRemove-Item x".to_string())]);
        let err = PowerShell::new()
            .statement("Write-Output {v}", &values)
            .unwrap_err();
        assert!(err.contains("one line"), "{err}");
        assert!(
            PowerShell::new()
                .statement("Write-Output {nope}", &values)
                .is_err()
        );
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

    #[test]
    fn powershell_quoting_doubles_quotes_and_never_leaves_a_word_bare() {
        assert_eq!(quote_powershell(""), "''");
        assert_eq!(quote_powershell("C:\\certs\\a.pfx"), "'C:\\certs\\a.pfx'");
        assert_eq!(quote_powershell("it's"), "'it''s'");
        assert_eq!(quote_powershell("$env:PATH `n"), "'$env:PATH `n'");
        assert_eq!(quote_powershell("a\u{2019}b"), "'a\u{2019}\u{2019}b'");
        assert_eq!(
            quote_powershell("'; Remove-Item -Recurse C:\\ #"),
            "'''; Remove-Item -Recurse C:\\ #'"
        );
    }
}
