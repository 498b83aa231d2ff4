//! `{placeholder}` rendering: plain substitution, `{{` and `}}` literal braces, nothing else
//! interpreted; and the small parsers connector values share (modes, "did you mean").

use std::collections::BTreeMap;

/// The placeholders named in `text`, in order.
pub fn placeholders(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    scan(text, |p| {
        out.push(p.to_string());
        Ok(String::new())
    })?;
    Ok(out)
}

/// Replaces every `{name}` in `text` with `values[name]`; `{{`/`}}` are literal braces.
pub fn render(text: &str, values: &BTreeMap<String, String>) -> Result<String, String> {
    scan(text, |p| {
        values
            .get(p)
            .cloned()
            .ok_or_else(|| format!("unknown placeholder `{{{p}}}`"))
    })
}

/// [`render`] with a callback: each `{name}` becomes `f(name)`; `{{`/`}}` are literal braces.
pub fn scan_placeholders(
    text: &str,
    f: impl FnMut(&str) -> Result<String, String>,
) -> Result<String, String> {
    scan(text, f)
}

fn scan(text: &str, mut f: impl FnMut(&str) -> Result<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("{{") {
            out.push('{');
            rest = after;
        } else if let Some(after) = tail.strip_prefix("}}") {
            out.push('}');
            rest = after;
        } else if tail.starts_with('}') {
            return Err("unmatched `}` (write `}}` for a literal brace)".into());
        } else {
            let end = tail
                .find('}')
                .ok_or("unclosed `{` (write `{{` for a literal brace)")?;
            let name = &tail[1..end];
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-');
            if !valid {
                return Err(format!("`{{{name}}}` is not a placeholder name"));
            }
            out.push_str(&f(name)?);
            rest = &tail[end + 1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses an octal mode string such as "0640".
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    let mode = u32::from_str_radix(digits, 8)
        .map_err(|_| format!("mode `{s}` is not an octal number like \"0640\""))?;
    if mode > 0o7777 {
        return Err(format!("mode `{s}` is out of range"));
    }
    if mode & 0o002 != 0 {
        return Err(format!(
            "mode `{s}` is world-writable; certctl refuses to deploy such files"
        ));
    }
    Ok(mode)
}

/// The closest candidate to `word`, if any is close enough to be worth suggesting.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}
