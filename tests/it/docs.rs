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
