//! haproxy: no command prints haproxy's configuration, so the remote half reads the file (or
//! a directory's `*.cfg` files, in order) and the crt-list files its `bind` lines name.
//! Lines are split with haproxy's own rules (quotes, `\` escapes, `#` comments, environment
//! variables in double quotes). On each `bind`, `crt X` loads the file X or, when X is a
//! directory, the files in it; `crt-list L` loads each entry of L. `crt` and crt-list entries
//! that are relative resolve against `crt-base` (global section), as haproxy does; a relative
//! crt-list path resolves against haproxy's working directory, which certctl cannot know.

use super::paths::{absolute, at, parent};
use super::{Answers, Config, FileRead, Kind, Ref, Target};

/// The refs of every configuration file read, with the crt-lists they name.
pub(super) fn read(answers: &Answers) -> Result<Config, String> {
    let cfgs: Vec<&FileRead> = answers.files.iter().filter(|f| !f.list).collect();
    let Some(first) = cfgs.first() else {
        return Err("no haproxy configuration file was read".into());
    };
    if let Some(f) = cfgs.iter().find(|f| !f.ok || f.truncated) {
        let why = if f.ok {
            "is larger than certctl reads"
        } else {
            "could not be read"
        };
        return Err(format!("the configuration file {} {why}", f.path));
    }
    let base = parent(&first.path).to_string();
    let lines: Vec<(&str, usize, Vec<Word>)> = cfgs
        .iter()
        .flat_map(|f| {
            f.content
                .lines()
                .enumerate()
                .map(|(n, l)| (f.path.as_str(), n + 1, words(l)))
        })
        .collect();
    // crt-base is global: it applies to every bind, wherever it is written.
    let crt_base = lines
        .iter()
        .find(|(_, _, w)| w.first().is_some_and(|w| w.text == "crt-base"))
        .and_then(|(_, _, w)| w.get(1))
        .map(|w| w.text.clone());
    let mut config = Config::default();
    for (file, line, words) in &lines {
        if words.first().is_none_or(|w| w.text != "bind") {
            continue;
        }
        for pair in words.windows(2) {
            let (key, value) = (&pair[0].text, &pair[1]);
            let here = Some(at(file, &base, *line));
            match key.as_str() {
                "crt" | "default-crt" => config.refs.push(Ref {
                    directive: format!("bind … {key}"),
                    kind: Kind::Any,
                    target: resolve(crt_base.as_deref(), value, true),
                    at: here,
                }),
                "crt-list" => crt_list(answers, &mut config, crt_base.as_deref(), value, here),
                _ => {}
            }
        }
    }
    Ok(config)
}

/// One `crt-list L`: its entries when L was read, else L is left to read.
fn crt_list(
    answers: &Answers,
    config: &mut Config,
    crt_base: Option<&str>,
    list: &Word,
    here: Option<String>,
) {
    if list.variable || !list.text.starts_with('/') {
        config.refs.push(Ref {
            directive: "bind … crt-list".into(),
            kind: Kind::Any,
            target: Target::Unresolved(list.text.clone()),
            at: here,
        });
        return;
    }
    let Some(read) = answers.files.iter().find(|f| f.list && f.path == list.text) else {
        config.unread.push(list.text.clone());
        return;
    };
    if !read.ok {
        config.unread.push(list.text.clone());
        return;
    }
    for (n, line) in read.content.lines().enumerate() {
        let Some(entry) = words(line).into_iter().next() else {
            continue;
        };
        config.refs.push(Ref {
            directive: "crt-list entry".into(),
            kind: Kind::Any,
            target: resolve(crt_base, &entry, false),
            at: Some(at(&read.path, parent(&read.path), n + 1)),
        });
    }
}

/// A `crt` value or crt-list entry as a path: relative to crt-base, else unresolvable.
fn resolve(crt_base: Option<&str>, word: &Word, or_dir: bool) -> Target {
    let path = match (word.variable, word.text.starts_with('/'), crt_base) {
        (true, _, _) => return Target::Unresolved(word.text.clone()),
        (false, true, _) => absolute("/", &word.text),
        (false, false, Some(base)) if base.starts_with('/') => absolute(base, &word.text),
        (false, false, _) => return Target::Unresolved(word.text.clone()),
    };
    if or_dir {
        Target::FileOrDir(path)
    } else {
        Target::File(path)
    }
}

/// One word of a line, and whether it holds an environment variable haproxy expands.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Word {
    text: String,
    variable: bool,
}

/// haproxy's words (parse_line): whitespace separates; `#` outside quotes ends the line; `\`
/// escapes the next character outside single quotes; `"…"` expands `$VAR` (marked here),
/// `'…'` is literal; quotes may sit inside a word.
fn words(line: &str) -> Vec<Word> {
    let mut out = Vec::new();
    let mut word: Option<Word> = None;
    let (mut dq, mut sq) = (false, false);
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        let w = || Word {
            text: String::new(),
            variable: false,
        };
        match c {
            '\'' if !dq => {
                sq = !sq;
                word.get_or_insert_with(w);
            }
            '"' if !sq => {
                dq = !dq;
                word.get_or_insert_with(w);
            }
            '\\' if !sq => {
                if let Some(n) = chars.next() {
                    word.get_or_insert_with(w).text.push(n);
                }
            }
            '$' if dq => {
                let cur = word.get_or_insert_with(w);
                cur.variable = true;
                cur.text.push(c);
            }
            '#' if !dq && !sq => break,
            c if c.is_whitespace() && !dq && !sq => out.extend(word.take()),
            c => word.get_or_insert_with(w).text.push(c),
        }
    }
    out.extend(word);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, content: &str, list: bool) -> FileRead {
        FileRead {
            path: path.into(),
            list,
            ok: true,
            content: content.into(),
            truncated: false,
        }
    }

    #[test]
    fn splits_like_haproxy() {
        let w =
            words("  bind :443 ssl crt \"/a b/c.pem\" crt '/x$y' crt \"${HOME}/k\" crt a\\ b # no");
        let texts: Vec<&str> = w.iter().map(|w| w.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "bind",
                ":443",
                "ssl",
                "crt",
                "/a b/c.pem",
                "crt",
                "/x$y",
                "crt",
                "${HOME}/k",
                "crt",
                "a b"
            ]
        );
        assert!(!w[6].variable && w[8].variable);
    }

    #[test]
    fn crt_files_directories_crt_lists_and_crt_base() {
        let cfg = "global\n  crt-base /etc/haproxy\nfrontend f\n  bind :443 ssl crt certs/ crt /srv/one.pem crt-list /etc/haproxy/list.txt\n  bind :8443 ssl crt-list /etc/haproxy/unread.txt\n";
        let list = "# a comment\ncerts/two.pem [alpn h2] www.example\n\n/srv/three.pem\n";
        let answers = Answers {
            files: vec![
                file("/etc/haproxy/haproxy.cfg", cfg, false),
                file("/etc/haproxy/list.txt", list, true),
            ],
            ..Default::default()
        };
        let c = read(&answers).unwrap();
        let targets: Vec<&Target> = c.refs.iter().map(|r| &r.target).collect();
        assert_eq!(
            targets,
            [
                &Target::FileOrDir("/etc/haproxy/certs".into()),
                &Target::FileOrDir("/srv/one.pem".into()),
                &Target::File("/etc/haproxy/certs/two.pem".into()),
                &Target::File("/srv/three.pem".into()),
            ]
        );
        assert_eq!(c.refs[0].at.as_deref(), Some("haproxy.cfg:4"));
        assert_eq!(c.refs[2].at.as_deref(), Some("list.txt:2"));
        assert_eq!(c.unread, ["/etc/haproxy/unread.txt"]);
    }
}
