//! Reading an OpenSSH client config file: lines split into a keyword and its (quoted)
//! arguments, `Host` and `Match` blocks, `Include` (read in place, limited to the block it
//! appears in), each supported keyword's value checked as OpenSSH checks it, and the value
//! syntax shared with resolving (flags, times, `%` tokens, `${ENV}`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::keywords::validate;
use super::{ConfigError, Guard, Item, SshClientConfig};
use crate::ssh::known_hosts::glob;

/// OpenSSH's limit on nested `Include`s (`READCONF_MAX_DEPTH`).
const MAX_INCLUDE_DEPTH: usize = 16;

impl SshClientConfig {
    pub(super) fn read_text(
        &mut self,
        text: &str,
        path: &Path,
        depth: usize,
        outer: &Arc<Vec<Guard>>,
    ) -> Result<(), ConfigError> {
        let file: Arc<Path> = Arc::from(path);
        let invalid = |line: usize, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            line,
            message,
        };
        let mut guards = outer.clone();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let Some((keyword, args)) = split_line(raw).map_err(|m| invalid(line, m))? else {
                continue;
            };
            let keyword = keyword.to_lowercase();
            if args.is_empty() {
                return Err(invalid(line, format!("`{keyword}` needs a value")));
            }
            match keyword.as_str() {
                "host" => {
                    let mut all = outer.as_ref().clone();
                    all.push(Guard::Host(args));
                    guards = Arc::new(all);
                }
                "match" => {
                    self.warnings.push(format!(
                        "{}:{line}: `Match` blocks are not supported by certctl; the lines up to the next Host or Match are ignored",
                        path.display()
                    ));
                    let mut all = outer.as_ref().clone();
                    all.push(Guard::Never);
                    guards = Arc::new(all);
                }
                "include" => {
                    if depth + 1 > MAX_INCLUDE_DEPTH {
                        return Err(invalid(line, "Include nested too deeply".to_owned()));
                    }
                    for pattern in &args {
                        for included in self.include_paths(pattern, path, line)? {
                            match std::fs::read_to_string(&included) {
                                Ok(text) => self.read_text(&text, &included, depth + 1, &guards)?,
                                Err(e) => self.warnings.push(format!(
                                    "{}:{line}: cannot read included {}: {e}; skipped",
                                    path.display(),
                                    included.display()
                                )),
                            }
                        }
                    }
                }
                _ => {
                    validate(&keyword, &args).map_err(|m| invalid(line, m))?;
                    self.items.push(Item {
                        file: file.clone(),
                        line,
                        keyword,
                        args,
                        guards: guards.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The files an `Include` argument names: `~` expanded, relative to `~/.ssh`, a glob in
    /// the last component expanded (sorted, as glob(3) does). Missing files are not errors.
    fn include_paths(
        &mut self,
        pattern: &str,
        from: &Path,
        line: usize,
    ) -> Result<Vec<PathBuf>, ConfigError> {
        let expanded = self
            .expand_tilde(pattern)
            .map_err(|message| ConfigError::Invalid {
                path: from.to_path_buf(),
                line,
                message: format!("Include {pattern}: {message}"),
            })?;
        let mut path = PathBuf::from(&expanded);
        if path.is_relative() {
            match &self.local.home {
                Some(home) => path = home.join(".ssh").join(path),
                None => {
                    self.warnings.push(format!(
                        "{}:{line}: Include {pattern}: relative to ~/.ssh but the home directory is unknown; skipped",
                        from.display()
                    ));
                    return Ok(Vec::new());
                }
            }
        }
        let wild = |s: &str| s.contains(['*', '?', '[']);
        let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str()))
        else {
            return Ok(vec![path]);
        };
        if wild(&dir.to_string_lossy()) {
            self.warnings.push(format!(
                "{}:{line}: Include {pattern}: wildcards are supported in the file name only; skipped",
                from.display()
            ));
            return Ok(Vec::new());
        }
        if !wild(name) {
            return Ok(if path.exists() {
                vec![path]
            } else {
                Vec::new()
            });
        }
        let mut found: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .filter(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    // glob(3) skips dot files unless the pattern starts with a dot.
                    (name.starts_with('.') || !n.starts_with('.')) && glob(name, &n)
                })
                .map(|e| e.path())
                .collect(),
            Err(_) => Vec::new(),
        };
        found.sort();
        Ok(found)
    }
}

pub(super) fn parse_flag(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "yes" | "true" => Some(true),
        "no" | "false" => Some(false),
        _ => None,
    }
}

/// OpenSSH `convtime`: `90`, `1m30s`, `2h`, … (s, m, h, d, w); `none` = unset.
pub(super) fn parse_time(value: &str) -> Result<Option<Duration>, String> {
    if value.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let bad = || format!("bad time value `{value}` (e.g. 30, 30s, 1m30s)");
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in value.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c.to_ascii_lowercase() {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        total = total
            .checked_add(n.checked_mul(unit).ok_or_else(bad)?)
            .ok_or_else(bad)?;
        digits.clear();
    }
    if !digits.is_empty() {
        total = total
            .checked_add(digits.parse::<u64>().map_err(|_| bad())?)
            .ok_or_else(bad)?;
    } else if total == 0 && !value.starts_with('0') && value.is_empty() {
        return Err(bad());
    }
    Ok(Some(Duration::from_secs(total)))
}

/// `%x` tokens; `%%` is a percent sign; any other token is an error.
pub(super) fn expand_tokens(text: &str, tokens: &[(char, &str)]) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some(t) => match tokens.iter().find(|(k, _)| *k == t) {
                Some((_, value)) => out.push_str(value),
                None => return Err(format!("the token %{t} is not supported here")),
            },
            None => return Err("a `%` at the end".to_owned()),
        }
    }
    Ok(out)
}

/// `${NAME}` environment references (OpenSSH expands them in file paths).
pub(super) fn expand_env(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or("`${` without a closing `}`")?;
        let name = &after[..end];
        let value =
            std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Splits a config line into its keyword and arguments; `None` for blank and comment lines.
/// `keyword=value` and `keyword = value` are accepted; arguments may be quoted.
fn split_line(line: &str) -> Result<Option<(String, Vec<String>)>, String> {
    let line = line.trim_start();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let end = line
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(line.len());
    let keyword = line[..end].to_owned();
    let mut rest = line[end..].trim_start();
    if let Some(after) = rest.strip_prefix('=') {
        rest = after.trim_start();
    }
    let mut args = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.peek() {
            None => break,
            Some('#') => break,
            Some(_) => {}
        }
        let mut arg = String::new();
        let mut quote: Option<char> = None;
        while let Some(&c) = chars.peek() {
            match (quote, c) {
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (None, c) if c.is_whitespace() => break,
                (_, '\\') => {
                    chars.next();
                    match chars.peek() {
                        Some(&n @ ('"' | '\'' | '\\' | ' ')) => arg.push(n),
                        Some(&n) => {
                            arg.push('\\');
                            arg.push(n);
                        }
                        None => {
                            arg.push('\\');
                            break;
                        }
                    }
                }
                (_, c) => arg.push(c),
            }
            chars.next();
        }
        if quote.is_some() {
            return Err("unterminated quote".to_owned());
        }
        args.push(arg);
    }
    if keyword.is_empty() {
        return Err("a line without a keyword".to_owned());
    }
    Ok(Some((keyword, args)))
}
