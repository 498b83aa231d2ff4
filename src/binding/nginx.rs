//! nginx: `nginx -T` prints every file of the configuration nginx loaded — includes resolved
//! by nginx itself — each after a `# configuration file PATH:` line. Each file is read with
//! nginx's own token rules (quotes, escapes, `#` comments, `${var}`), and every
//! `ssl_certificate` and `ssl_certificate_key` becomes a [`Ref`] with its file and line.
//! Relative paths resolve against the main file's directory, nginx's conf prefix.

use super::paths::{absolute, at, parent};
use super::{Answers, Config, Kind, Ref, Target, first_run};

const MARK: &str = "# configuration file ";

/// The refs in `nginx -T`'s output (the first run).
pub(super) fn read(answers: &Answers) -> Result<Config, String> {
    let out = first_run(answers, "nginx -T")?;
    let files = sections(&out.stdout);
    let Some((main, _)) = files.first() else {
        return Err("`nginx -T` printed no configuration file".into());
    };
    let prefix = parent(main).to_string();
    let mut refs = Vec::new();
    for (file, text) in &files {
        for (words, line) in statements(text) {
            let kind = match words.first().map(String::as_str) {
                Some("ssl_certificate") => Kind::Cert,
                Some("ssl_certificate_key") => Kind::Key,
                _ => continue,
            };
            let Some(value) = words.get(1) else { continue };
            refs.push(Ref {
                directive: words[0].clone(),
                kind,
                target: target(&prefix, value),
                at: Some(at(file, &prefix, line)),
            });
        }
    }
    Ok(Config {
        refs,
        unread: Vec::new(),
    })
}

/// A directive's value as a path: variables (`$ssl_server_name`), in-memory `data:` and
/// `engine:` keys are not files certctl can name.
fn target(prefix: &str, value: &str) -> Target {
    if value.contains('$') || value.starts_with("data:") || value.starts_with("engine:") {
        Target::Unresolved(value.to_string())
    } else {
        Target::File(absolute(prefix, value))
    }
}

/// `nginx -T`'s output split into (file, text) by its markers.
fn sections(dump: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in dump.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']);
        if let Some(file) = bare.strip_prefix(MARK).and_then(|f| f.strip_suffix(':')) {
            out.push((file.to_string(), String::new()));
        } else if let Some((_, text)) = out.last_mut() {
            text.push_str(line);
        }
    }
    out
}

/// Each simple directive or block opener of one file: its words and the line it starts on.
fn statements(text: &str) -> Vec<(Vec<String>, usize)> {
    let mut out = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut start = 0;
    for token in tokens(text) {
        match token {
            Token::Word(w, line) => {
                if words.is_empty() {
                    start = line;
                }
                words.push(w);
            }
            Token::End => {
                if !words.is_empty() {
                    out.push((std::mem::take(&mut words), start));
                }
            }
        }
    }
    out
}

#[derive(Debug, PartialEq, Eq)]
enum Token {
    /// A word (quotes removed, escapes applied) and its line (1-based).
    Word(String, usize),
    /// `;`, `{` or `}`.
    End,
}

/// nginx's tokens (ngx_conf_read_token): whitespace separates words; `#` at a word's start
/// comments to the end of the line; `;` and `{` end a word (but `${` does not), `}` ends a
/// block only where a word would start; quoted words take `\` escapes.
fn tokens(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut line = 1;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            c if c.is_whitespace() => {}
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        line += 1;
                        break;
                    }
                }
            }
            ';' | '{' | '}' => out.push(Token::End),
            quote @ ('"' | '\'') => {
                let at = line;
                let mut word = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => word.push(unescape(chars.next().unwrap_or('\\'))),
                        q if q == quote => break,
                        '\n' => {
                            line += 1;
                            word.push('\n');
                        }
                        other => word.push(other),
                    }
                }
                out.push(Token::Word(word, at));
            }
            first => {
                let mut word = String::new();
                let mut c = first;
                loop {
                    if c == '\\' {
                        word.push(unescape(chars.next().unwrap_or('\\')));
                    } else {
                        word.push(c);
                    }
                    match chars.peek() {
                        Some(&n) if n.is_whitespace() || n == ';' => break,
                        Some('{') if !word.ends_with('$') => break,
                        Some(&n) => {
                            c = n;
                            chars.next();
                        }
                        None => break,
                    }
                }
                out.push(Token::Word(word, line));
            }
        }
    }
    out
}

/// What nginx makes of `\c`.
fn unescape(c: char) -> char {
    match c {
        't' => '\t',
        'r' => '\r',
        'n' => '\n',
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_quotes_comments_and_variables() {
        let text = "server {\n  listen 1.2.3.4:443 ssl;   # a ; comment { here\n  ssl_certificate   \"ssl/a b.crt\";\n  ssl_certificate_key\n      ssl/a\\ b.key;\n  set $x ${host}x;\n}\n";
        let s = statements(text);
        assert_eq!(s[0], (vec!["server".to_string()], 1));
        assert_eq!(s[1].0, ["listen", "1.2.3.4:443", "ssl"]);
        assert_eq!(
            s[2],
            (vec!["ssl_certificate".into(), "ssl/a b.crt".into()], 3)
        );
        assert_eq!(
            s[3],
            (vec!["ssl_certificate_key".into(), "ssl/a b.key".into()], 4)
        );
        assert_eq!(s[4].0, ["set", "$x", "${host}x"]);
    }

    #[test]
    fn every_file_of_the_dump_with_its_lines_and_the_main_files_prefix() {
        let dump = "# configuration file /etc/nginx/nginx.conf:\nhttp {\n  include conf.d/*.conf;\n}\n\n\
                    # configuration file /etc/nginx/conf.d/site.conf:\nserver {\n    ssl_certificate /etc/nginx/ssl/a.crt;\n    ssl_certificate_key ssl/a.key;\n    ssl_certificate $ssl_server_name.crt;\n}\n\n";
        let answers = Answers {
            runs: vec![super::super::RunOutput {
                stdout: dump.into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let c = read(&answers).unwrap();
        assert_eq!(c.refs.len(), 3);
        assert_eq!(
            c.refs[0].target,
            Target::File("/etc/nginx/ssl/a.crt".into())
        );
        assert_eq!(c.refs[0].at.as_deref(), Some("conf.d/site.conf:2"));
        assert_eq!(c.refs[1].kind, Kind::Key);
        assert_eq!(
            c.refs[1].target,
            Target::File("/etc/nginx/ssl/a.key".into())
        );
        assert_eq!(
            c.refs[2].target,
            Target::Unresolved("$ssl_server_name.crt".into())
        );
    }
}
