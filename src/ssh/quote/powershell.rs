//! PowerShell quoting for Windows OpenSSH targets: values as single-quoted (verbatim)
//! strings, statement templates rendered with them, and [`PowerShell`] scripts sent as
//! `-EncodedCommand` so that no other shell (`cmd.exe`, `sh`) interprets them.

use std::collections::BTreeMap;

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
    values: &BTreeMap<String, String>,
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
        let literal = read_literal(&mut chars)
            .ok_or_else(|| format!("unclosed quote in PowerShell statement `{template}`"))?;
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

/// A single-quoted literal after its opening quote: up to the next lone quote character (a
/// doubled one is one quote); `None` when it is not closed.
fn read_literal(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<String> {
    let mut literal = String::new();
    loop {
        match chars.next()? {
            q if is_ps_quote(q) => match chars.peek() {
                Some(&n) if is_ps_quote(n) => {
                    literal.push(n);
                    chars.next();
                }
                _ => return Some(literal),
            },
            ch => literal.push(ch),
        }
    }
}

/// The base64 of an argv shaped as [`PowerShell::argv`] makes them.
pub(super) fn encoded_command<S: AsRef<str>>(argv: &[S]) -> Option<&str> {
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
        values: &BTreeMap<String, String>,
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

#[cfg(test)]
mod tests {
    use super::super::label;
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
