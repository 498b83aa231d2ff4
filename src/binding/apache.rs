//! apache: `apachectl -t -D DUMP_INCLUDES -D DUMP_RUN_CFG` names every configuration file
//! apache loads (Include and IncludeOptional resolved by apache itself) and its ServerRoot;
//! the remote half reads those files that hold an `SSLCertificate…` directive. Each becomes a
//! [`Ref`] with its file and line; relative paths resolve against ServerRoot, as
//! `ap_server_root_relative` does. A directive counts wherever it is in a loaded file (an
//! `<IfModule>` or `<IfDefine>` around it is not evaluated).

use super::paths::{absolute, at, parent};
use super::{Answers, Config, Kind, Ref, Target, first_run};

/// The refs in the files the include list names.
pub(super) fn read(answers: &Answers) -> Result<Config, String> {
    let out = first_run(answers, "apachectl -t -D DUMP_INCLUDES")?;
    let included: Vec<&str> = out.stdout.lines().filter_map(included).collect();
    let Some(main) = included.first() else {
        return Err("`apachectl -t -D DUMP_INCLUDES` listed no configuration file".into());
    };
    let root = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("ServerRoot: \"")?.strip_suffix('"'))
        .map(str::to_string)
        .unwrap_or_else(|| parent(main).to_string());
    let mut refs = Vec::new();
    for file in &included {
        let Some(read) = answers.files.iter().find(|f| f.path == *file && f.ok) else {
            continue;
        };
        for (words, line) in directives(&read.content) {
            let kind = match words[0].to_ascii_lowercase().as_str() {
                "sslcertificatefile" => Kind::Cert,
                "sslcertificatekeyfile" => Kind::Key,
                "sslcertificatechainfile" => Kind::Chain,
                _ => continue,
            };
            let Some(value) = words.get(1) else { continue };
            let target = if value.contains("${") {
                Target::Unresolved(value.clone())
            } else {
                Target::File(absolute(&root, value))
            };
            refs.push(Ref {
                directive: words[0].clone(),
                kind,
                target,
                at: Some(at(file, &root, line)),
            });
        }
    }
    Ok(Config {
        refs,
        unread: Vec::new(),
    })
}

/// A file of the include list: `  (*) /etc/apache2/apache2.conf`, `    (146) /etc/…`.
fn included(line: &str) -> Option<&str> {
    let rest = line.trim_start().strip_prefix('(')?;
    let (n, path) = rest.split_once(") ")?;
    (n == "*" || n.bytes().all(|b| b.is_ascii_digit())).then_some(path)
}

/// Each directive of a file (continuation lines joined): its words and its first line.
fn directives(text: &str) -> Vec<(Vec<String>, usize)> {
    let mut out = Vec::new();
    let mut pending = String::new();
    let mut start = 0;
    for (n, line) in text.lines().enumerate() {
        if pending.is_empty() {
            start = n + 1;
        }
        if let Some(body) = line.strip_suffix('\\') {
            pending.push_str(body);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        let full = std::mem::take(&mut pending);
        let trimmed = full.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let words = words(trimmed);
        if !words.is_empty() {
            out.push((words, start));
        }
    }
    out
}

/// apache's words (ap_getword_conf): whitespace separates; a word may be quoted with `"` or
/// `'`, where `\` escapes the quote.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut word = String::new();
        if c == '"' || c == '\'' {
            chars.next();
            while let Some(x) = chars.next() {
                match x {
                    '\\' if chars.peek() == Some(&c) => word.push(chars.next().unwrap_or(c)),
                    x if x == c => break,
                    x => word.push(x),
                }
            }
        } else {
            while let Some(&x) = chars.peek() {
                if x.is_whitespace() {
                    break;
                }
                word.push(x);
                chars.next();
            }
        }
        out.push(word);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{FileRead, RunOutput};
    use super::*;

    #[test]
    fn include_list_server_root_and_directives_with_lines() {
        let dump = "Included configuration files:\n  (*) /etc/apache2/apache2.conf\n    (10) /etc/apache2/sites/x y.conf\nServerRoot: \"/etc/apache2\"\nMain DocumentRoot: \"/var/www/html\"\n";
        let site = "<VirtualHost *:443>\n  # SSLCertificateFile /old.pem\n  SSLCertificateFile certs/cert.pem\n  sslcertificatechainfile \"/etc/apache2/certs/chain b.pem\"\n  SSLCertificateKeyFile \\\n      ${APACHE_RUN_DIR}/key.pem\n</VirtualHost>\n";
        let answers = Answers {
            runs: vec![RunOutput {
                stdout: dump.into(),
                ..Default::default()
            }],
            files: vec![FileRead {
                path: "/etc/apache2/sites/x y.conf".into(),
                ok: true,
                content: site.into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let c = read(&answers).unwrap();
        assert_eq!(c.refs.len(), 3, "{c:?}");
        assert_eq!(
            c.refs[0].target,
            Target::File("/etc/apache2/certs/cert.pem".into())
        );
        assert_eq!(c.refs[0].at.as_deref(), Some("sites/x y.conf:3"));
        assert_eq!(c.refs[1].kind, Kind::Chain);
        assert_eq!(
            c.refs[1].target,
            Target::File("/etc/apache2/certs/chain b.pem".into())
        );
        assert_eq!(c.refs[2].kind, Kind::Key);
        assert_eq!(c.refs[2].at.as_deref(), Some("sites/x y.conf:5"));
        assert!(matches!(c.refs[2].target, Target::Unresolved(_)));
    }
}
