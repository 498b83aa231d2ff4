//! Ansible's `--limit` habits, read before [`crate::select::select`]: `:` as a separator
//! (`web:&staging:!web-3`), `all`, `@FILE` (one pattern per line, `#` comments), and
//! `@REPORT.json` — the targets a previous run's JSON report did not count as a success
//! (Ansible's `.retry` files). Also `--list-targets`.

use std::path::Path;

use super::{Command, Invalid, InventoryArgs};
use crate::inventory::{self, Inventory};
use crate::report::{self, Problem};

/// The inventory arguments of a command that has them.
pub(super) fn inventory_args(command: &Command) -> Option<&InventoryArgs> {
    match command {
        Command::Deploy(a) => Some(&a.inventory),
        Command::Verify(a) => Some(&a.inventory),
        Command::Check(a) => Some(&a.inventory),
        Command::Rollback(a) => Some(&a.inventory),
        Command::Status(a) => Some(&a.inventory),
        _ => None,
    }
}

/// `--list-targets`: the selected targets' names on stdout, one a line; nothing is checked
/// beyond the inventory and the selection, nothing is contacted.
pub(super) fn list(args: &InventoryArgs) -> Result<u8, Invalid> {
    super::errors::inventory_exists(&args.inventory)?;
    let inventory = inventory::load(
        &args.inventory,
        &crate::connector::Catalogue::builtin_names(),
    )?;
    let selected = super::select(&inventory, args)?;
    let mut out = String::new();
    for t in selected {
        out.push_str(&report::sanitize_line(&t.name));
        out.push('\n');
    }
    super::print_stdout(&out);
    Ok(report::EXIT_OK)
}

/// Rewrites an Ansible-style limit into certctl's comma-separated terms.
pub(super) fn expand(limit: &str, inventory: &Inventory) -> Result<String, Invalid> {
    let mut terms = Vec::new();
    for piece in limit.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match piece.strip_prefix('@') {
            Some(rest) => {
                // `@FILE:!web-3`: the file, then more terms (the longest existing path wins).
                let (file, more) = rest
                    .match_indices(':')
                    .map(|(at, _)| (&rest[..at], &rest[at + 1..]))
                    .rfind(|(f, _)| !Path::new(rest).exists() && Path::new(f).is_file())
                    .unwrap_or((rest, ""));
                terms.extend(from_file(Path::new(file), inventory)?);
                if !more.is_empty() {
                    terms.extend(split_colons(more, inventory));
                }
            }
            None => terms.extend(split_colons(piece, inventory)),
        }
    }
    if terms.is_empty() {
        // Let the selector say what is wrong with an empty limit.
        return Ok(limit.to_string());
    }
    Ok(terms.join(","))
}

fn is_name(word: &str, inventory: &Inventory) -> bool {
    inventory.targets.iter().any(|t| t.name == word)
        || inventory.groups.iter().any(|g| g == word)
        || inventory
            .targets
            .iter()
            .any(|t| t.groups.iter().any(|g| g == word))
}

/// `web:&staging:!web-3` -> `web`, `&staging`, `!web-3`; a piece that is itself a target or
/// group name (an IPv6 address as a name) stays whole; `all` is every target.
fn split_colons(piece: &str, inventory: &Inventory) -> Vec<String> {
    let body = piece.trim_start_matches(['!', '&']);
    let parts: Vec<&str> = if is_name(body, inventory) || !piece.contains(':') {
        vec![piece]
    } else {
        piece
            .split(':')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect()
    };
    parts
        .into_iter()
        .map(|p| {
            let prefix_len = p.len() - p.trim_start_matches(['!', '&']).len();
            let (prefix, body) = p.split_at(prefix_len);
            if body == "all" && !is_name("all", inventory) {
                format!("{prefix}*")
            } else {
                p.to_string()
            }
        })
        .collect()
}

/// `@FILE`: a JSON report (the targets whose status was not a success) or a list of
/// patterns, one a line.
fn from_file(path: &Path, inventory: &Inventory) -> Result<Vec<String>, Invalid> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Invalid(vec![Problem::run(format!(
            "--limit @{}: cannot read: {e}",
            path.display()
        ))])
    })?;
    if text.trim_start().starts_with('{') {
        return retry_targets(path, &text);
    }
    let mut terms = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        for piece in line.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            terms.extend(split_colons(piece, inventory));
        }
    }
    if terms.is_empty() {
        return Err(Invalid(vec![Problem::run(format!(
            "--limit @{}: the file names no target",
            path.display()
        ))]));
    }
    Ok(terms)
}

/// The targets of a JSON report (`--output json`, or `certctl report merge`) that did not end
/// in a success: `deployed`, `unchanged`, `reloaded`, `would-change`, `ok` (and `rolled-back`
/// for `certctl rollback`) are successes; everything else is retried.
fn retry_targets(path: &Path, text: &str) -> Result<Vec<String>, Invalid> {
    let bad = |why: String| {
        Invalid(vec![Problem::run(format!(
            "--limit @{}: {why}",
            path.display()
        ))])
    };
    let doc: serde_json::Value =
        serde_json::from_str(text).map_err(|e| bad(format!("not a JSON report: {e}")))?;
    let targets = doc["targets"]
        .as_array()
        .ok_or_else(|| bad("not a certctl JSON report (no `targets`)".into()))?;
    let rollback = doc["command"] == "rollback";
    let mut names = Vec::new();
    for t in targets {
        let status = t["status"].as_str().unwrap_or("");
        let success = matches!(
            status,
            "deployed" | "unchanged" | "reloaded" | "would-change" | "ok"
        ) || (rollback && status == "rolled-back");
        if !success && let Some(name) = t["name"].as_str() {
            names.push(name.to_string());
        }
    }
    if names.is_empty() {
        return Err(bad(format!(
            "nothing to retry: every one of its {} target(s) succeeded",
            targets.len()
        )));
    }
    Ok(names)
}
