//! The documentation stays honest (as just's `tests/readme.rs` keeps its README): every
//! relative link in `README.md` and `docs/*.md` reaches a file (and a heading, when it names
//! one), and the sections a test generates are what that test generates today.
//!
//! A generated section sits between two markers,
//! `<!-- BEGIN NAME: … -->` and `<!-- END NAME -->`; the test that generates it calls
//! [`check_section`], which fails when the doc differs and rewrites the section instead when
//! `CERTCTL_UPDATE_DOCS=1` is set.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The environment variable that makes [`check_section`] rewrite a stale section.
const UPDATE: &str = "CERTCTL_UPDATE_DOCS";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Where section `name` of `text` starts and ends: the byte range between the end of its
/// BEGIN marker's line and the start of its END marker.
fn section_range(text: &str, doc: &str, name: &str) -> std::ops::Range<usize> {
    let begin = format!("<!-- BEGIN {name}");
    let end = format!("<!-- END {name} -->");
    let b = text
        .find(&begin)
        .unwrap_or_else(|| panic!("{doc} has no `{begin} … -->` marker"));
    let start = b
        + text[b..]
            .find('\n')
            .unwrap_or_else(|| panic!("{doc}: nothing after `{begin}`"))
        + 1;
    let stop = text[start..]
        .find(&end)
        .unwrap_or_else(|| panic!("{doc} has no `{end}` after `{begin}`"))
        + start;
    start..stop
}

/// The text of section `name` of `doc` (a path from the repository root).
pub(crate) fn section(doc: &str, name: &str) -> String {
    let text = read(&root().join(doc));
    text[section_range(&text, doc, name)].to_string()
}

/// Fails unless section `name` of `doc` is exactly `generated`, saying how to update it
/// (`update`, a command); with `CERTCTL_UPDATE_DOCS=1`, rewrites the section instead.
pub(crate) fn check_section(doc: &str, name: &str, generated: &str, update: &str) {
    let path = root().join(doc);
    let text = read(&path);
    let range = section_range(&text, doc, name);
    if text[range.clone()] == *generated {
        return;
    }
    if std::env::var(UPDATE).is_ok_and(|v| v == "1") {
        let mut new = text.clone();
        new.replace_range(range, generated);
        // Renamed into place, so a test reading the doc meanwhile never sees half of it.
        let tmp = path.with_extension("md.tmp");
        std::fs::write(&tmp, new).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        return;
    }
    let old: Vec<&str> = text[range].lines().collect();
    let new: Vec<&str> = generated.lines().collect();
    let mut diff = String::new();
    for i in 0..old.len().max(new.len()) {
        let (o, n) = (old.get(i), new.get(i));
        if o != n {
            diff.push_str(&format!(
                "line {}:\n  doc:       {}\n  generated: {}\n",
                i + 1,
                o.unwrap_or(&"(none)"),
                n.unwrap_or(&"(none)")
            ));
        }
    }
    panic!(
        "{doc} is stale: its `{name}` section is not what the test generates. Update it with \
         `{update}` (the variable {UPDATE}=1 rewrites the section) and commit the change.\n{diff}"
    );
}

/// The Markdown files whose links are checked: the README and every file in `docs/`.
fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// The text outside fenced code blocks and inline code spans (a link there is an example).
fn prose(text: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            out.push('\n');
            continue;
        }
        if fenced {
            out.push('\n');
            continue;
        }
        // Drop inline code spans: split on backticks, keep the even parts.
        for (i, part) in line.split('`').enumerate() {
            if i % 2 == 0 {
                out.push_str(part);
            }
        }
        out.push('\n');
    }
    out
}

/// The targets of the inline links `[text](target)` in `text`.
fn links(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        if let Some(end) = rest.find(')') {
            found.push(rest[..end].trim().to_string());
            rest = &rest[end..];
        }
    }
    found
}

/// GitHub's anchor for a heading: lower case; letters, digits, `-` and `_` kept; spaces to
/// `-`; everything else dropped.
fn slug(heading: &str) -> String {
    heading
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .flat_map(char::to_lowercase)
        .collect()
}

/// The anchors of a Markdown file's headings (a repeated one gets `-1`, `-2`… as on GitHub).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let base = slug(line.trim_start_matches('#').trim());
        let mut anchor = base.clone();
        let mut n = 0;
        while seen.contains(&anchor) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
        seen.insert(anchor);
    }
    seen
}

#[test]
fn every_relative_link_in_the_docs_resolves() {
    let mut broken = Vec::new();
    for file in markdown_files() {
        let text = read(&file);
        let name = file.strip_prefix(root()).unwrap().display().to_string();
        for link in links(&prose(&text)) {
            if link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = link.split_once('#').unwrap_or((&link, ""));
            let target = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            if !target.exists() {
                broken.push(format!("{name}: `{link}`: no such file"));
                continue;
            }
            let markdown = target.extension().is_some_and(|e| e == "md");
            if !anchor.is_empty() && markdown && !anchors(&read(&target)).contains(anchor) {
                broken.push(format!("{name}: `{link}`: no heading `#{anchor}` there"));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn anchors_are_githubs() {
    let text = "# certctl\n## Inventory (contract v1)\n### `become: sudo`\n## Exit codes\n\
                ## Exit codes\n```\n# not a heading\n```\n";
    let got: Vec<String> = anchors(text).into_iter().collect();
    assert_eq!(
        got,
        [
            "become-sudo",
            "certctl",
            "exit-codes",
            "exit-codes-1",
            "inventory-contract-v1"
        ]
    );
    assert_eq!(
        links(&prose(
            "see [a](x.md#y) and `[b](code.md)` and [c](https://e.org)"
        )),
        ["x.md#y", "https://e.org"]
    );
}

#[test]
fn a_section_is_found_between_its_markers() {
    let text = "intro\n<!-- BEGIN t: generated -->\n| a |\n<!-- END t -->\nafter\n";
    assert_eq!(&text[section_range(text, "x.md", "t")], "| a |\n");
}

/// The first fenced block of `lang` after the heading line `heading` in `text`.
fn block_after<'t>(text: &'t str, heading: &str, lang: &str) -> &'t str {
    let at = text
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("no `{heading}` heading"));
    let fence = format!("```{lang}\n");
    let start = text[at..].find(&fence).expect("a fenced block") + at + fence.len();
    let len = text[start..].find("```").expect("the block's end");
    &text[start..start + len]
}

#[test]
fn the_readmes_two_commands_exist_and_ci_runs_the_same_test_command() {
    let readme = read(&root().join("README.md"));
    let block = block_after(&readme, "## Try it: two commands", "sh");
    let commands: Vec<&str> = block
        .lines()
        .filter_map(|l| l.split('#').next())
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(commands, ["bash examples/lab.sh", "bash scripts/test.sh"]);
    for script in ["examples/lab.sh", "scripts/test.sh"] {
        assert!(root().join(script).is_file(), "{script} is missing");
    }
    let ci = read(&root().join(".ci/run"));
    assert!(
        ci.lines().any(|l| l.trim() == "bash scripts/test.sh"),
        ".ci/run must run the README's test command"
    );
}

/// The README's inventory, with throwaway material where it points, passes `certctl check`.
#[test]
fn the_readmes_inventory_passes_check() {
    let readme = read(&root().join("README.md"));
    let inventory = block_after(&readme, "## Inventory (contract v1)", "yaml");
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let made = std::process::Command::new("bash")
        .arg(root().join("examples/make-certs.sh"))
        .arg(&certs)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    std::fs::copy(certs.join("www.example.com.crt"), certs.join("www.crt")).unwrap();
    std::fs::copy(certs.join("www.example.com.key"), certs.join("www.key")).unwrap();
    let path = dir.path().join("certctl.yaml");
    std::fs::write(&path, inventory).unwrap();
    let home = dir.path().to_str().unwrap();
    let out = crate::support::offline::certctl_env(
        dir.path(),
        &["check", "-i", path.to_str().unwrap()],
        &[("HOME", home)],
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
}

/// Every subcommand `certctl --help` lists is in the README's synopsis, and every flag the
/// synopsis names on a command's line is in that command's `--help`.
#[test]
fn the_readmes_synopsis_matches_the_help() {
    let help = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_certctl"))
            .args(args)
            .arg("--help")
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let readme = read(&root().join("README.md"));
    let synopsis = block_after(&readme, "## Commands", "");
    let top = help(&[]);
    let listed = top
        .split("Commands:\n")
        .nth(1)
        .unwrap()
        .split("\n\n")
        .next()
        .unwrap();
    let mut missing = Vec::new();
    for line in listed.lines() {
        // A subcommand's line starts with two spaces; its help's continuation lines with more.
        let Some(name) = line.strip_prefix("  ").filter(|l| !l.starts_with(' ')) else {
            continue;
        };
        let name = name.split_whitespace().next().unwrap();
        if name != "help" && !synopsis.contains(&format!("certctl {name}")) {
            missing.push(format!("`certctl {name}` is not in the README's synopsis"));
        }
    }
    let mut current: Option<(String, String)> = None;
    for line in synopsis.lines() {
        if let Some(rest) = line.strip_prefix("certctl ") {
            let name = rest.split_whitespace().next().unwrap().to_string();
            current = Some((name.clone(), help(&[&name])));
        } else if !line.starts_with(' ') {
            current = None;
        }
        let Some((name, text)) = &current else {
            continue;
        };
        let code = line.split('#').next().unwrap();
        for flag in code
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .filter(|w| w.starts_with("--") && w.len() > 2)
        {
            if !text.contains(flag) {
                missing.push(format!("`certctl {name} {flag}`: not in its --help"));
            }
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

/// References to the docs in source comments (`docs/NAME.md#anchor`, `README.md#anchor`)
/// point at files and headings that exist; none cites the design card outside the repository.
#[test]
fn source_comments_cite_docs_that_exist() {
    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    rust_files(&root().join("tests"), &mut files);
    let word = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let mut broken = Vec::new();
    // This file names the patterns it looks for.
    files.retain(|f| !f.ends_with("tests/it/docs.rs"));
    for file in &files {
        let text = read(file);
        let name = file.strip_prefix(root()).unwrap().display().to_string();
        if text.contains("DESIGN §") {
            broken.push(format!("{name}: cites the design card; cite docs/ instead"));
        }
        for prefix in ["docs/", "README.md#"] {
            for (at, _) in text.match_indices(prefix) {
                let rest = &text[at + prefix.len()..];
                let (doc, anchor) = if prefix == "docs/" {
                    let stem: String = rest.chars().take_while(|&c| word(c)).collect();
                    let Some(after) = rest[stem.len()..].strip_prefix(".md") else {
                        continue;
                    };
                    let anchor = after
                        .strip_prefix('#')
                        .map(|a| a.chars().take_while(|&c| word(c)).collect::<String>());
                    (format!("docs/{stem}.md"), anchor)
                } else {
                    let anchor: String = rest.chars().take_while(|&c| word(c)).collect();
                    ("README.md".to_string(), Some(anchor))
                };
                let path = root().join(&doc);
                if !path.is_file() {
                    broken.push(format!("{name}: {doc} does not exist"));
                } else if let Some(anchor) = anchor.filter(|a| !a.is_empty())
                    && !anchors(&read(&path)).contains(&anchor)
                {
                    broken.push(format!("{name}: {doc} has no heading `#{anchor}`"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}
