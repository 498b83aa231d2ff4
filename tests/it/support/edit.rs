//! Small edits of a lab inventory (`support::lab`) for the tests around a run: another target
//! copied from `web-1`, top-level sections (`notify:`, `policy:`, `history:`), the material's
//! sources. Plain text edits: the lab writes one known layout.

use std::path::Path;

/// Appends a copy of target `web-1` named `name`, with each `(from, to)` replaced in it.
pub fn copy_target(inventory: &Path, name: &str, replace: &[(&str, &str)]) {
    let text = std::fs::read_to_string(inventory).unwrap();
    let start = text.find("  - name: web-1\n").expect("the lab's target");
    let end = text[start + 1..]
        .find("\n  - name: ")
        .map_or(text.len(), |i| start + 2 + i);
    let mut block = text[start..end].replace("name: web-1", &format!("name: {name}"));
    for (from, to) in replace {
        block = block.replace(from, to);
    }
    let mut text = text.clone();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&block);
    std::fs::write(inventory, text).unwrap();
}

/// Puts `yaml` (top-level keys) before the rest of the inventory.
pub fn prepend(inventory: &Path, yaml: &str) {
    let text = std::fs::read_to_string(inventory).unwrap();
    std::fs::write(inventory, format!("{yaml}\n{text}")).unwrap();
}

/// Replaces the `FIELD: "PATH"` line of the lab's certificate (`cert`, `chain`, `key`) with
/// `line` (e.g. `cert_command: [cat, /x]`), keeping its indentation.
pub fn set_source(inventory: &Path, field: &str, line: &str) {
    let text = std::fs::read_to_string(inventory).unwrap();
    let prefix = format!("    {field}: ");
    let mut done = false;
    let out: Vec<String> = text
        .lines()
        .map(|l| {
            if !done && l.starts_with(&prefix) {
                done = true;
                format!("    {line}")
            } else {
                l.to_string()
            }
        })
        .collect();
    assert!(done, "no `{field}:` line in the lab's inventory");
    std::fs::write(inventory, out.join("\n") + "\n").unwrap();
}

/// A YAML string (JSON is YAML).
pub fn q(s: impl AsRef<str>) -> String {
    serde_json::to_string(s.as_ref()).unwrap()
}

/// A YAML flow list of strings.
pub fn argv(words: &[&str]) -> String {
    serde_json::to_string(words).unwrap()
}
