//! What cleanup does for `swap: commands` connectors besides the engine's own housekeeping:
//! discard what a failed preview created, and after a verified deploy prune old versions and
//! run `after_deploy`.

use std::collections::BTreeSet;

use super::apply::run_commands;
use super::commands::{fill, set_dir};
use super::script::command_failure;
use crate::plan::{CommandSwap, TargetPlan};
use crate::ssh::Session;

/// The objects `prune.list` printed and their versions: words that start with the prefix
/// and go on with a run id (`SECONDS-HEX`).
fn objects(text: &str, prefix: &str) -> Vec<(String, (u64, String))> {
    let mut found: Vec<(String, (u64, String))> = text
        .split_whitespace()
        .filter_map(|w| {
            let rest = w.strip_prefix(prefix)?;
            let (secs, hex) = rest.split_once('-')?;
            let secs_n = secs.parse::<u64>().ok()?;
            let hex_len = hex
                .bytes()
                .take_while(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
                .count();
            (hex_len > 0).then(|| {
                (
                    w.to_string(),
                    (secs_n, format!("{secs}-{}", &hex[..hex_len])),
                )
            })
        })
        .collect();
    found.sort();
    found.dedup();
    found
}

/// Removes the objects of every version but the newest `keep_backups` (this run's always
/// kept). Carries on past a failure; reports them all.
pub(super) async fn prune(
    session: &Session,
    plan: &TargetPlan,
    swap: &CommandSwap,
) -> Result<Option<String>, String> {
    if swap.prune.is_empty() {
        return Ok(None);
    }
    let set = set_dir(plan);
    let mut removed = 0;
    let mut errors = Vec::new();
    for p in &swap.prune {
        let list = fill(&p.list, &set, swap, "")?;
        let out = session.exec(&list).await.map_err(|e| e.to_string())?;
        if !out.success() {
            errors.push(command_failure(&crate::ssh::quote::label(&list), &out));
            continue;
        }
        let found = objects(&String::from_utf8_lossy(&out.stdout), &p.prefix);
        let mut versions: Vec<&(u64, String)> = found.iter().map(|(_, v)| v).collect();
        versions.sort();
        versions.dedup();
        versions.reverse();
        let keep: BTreeSet<&str> = versions
            .iter()
            .map(|(_, v)| v.as_str())
            .filter(|v| *v != plan.run_id)
            .take((plan.keep_backups as usize).saturating_sub(1))
            .chain([plan.run_id.as_str()])
            .collect();
        for (object, (_, version)) in &found {
            if keep.contains(version.as_str()) {
                continue;
            }
            let argv = fill(&p.delete, &set, swap, object)?;
            match run_commands(session, std::slice::from_ref(&argv)).await {
                Ok(_) => removed += 1,
                Err(e) => errors.push(e),
            }
        }
    }
    if errors.is_empty() {
        Ok(Some(format!("pruned {removed} old object(s)")))
    } else {
        Err(format!(
            "prune removed {removed} old object(s); failed: {}",
            errors.join("; ")
        ))
    }
}

/// The connector's `after_deploy` commands (those whose `when` param is `true`), after a
/// verified deploy, in order; the first failure stops them.
pub(super) async fn after_deploy(
    session: &Session,
    plan: &TargetPlan,
    swap: &CommandSwap,
) -> Result<Option<String>, String> {
    if swap.after_deploy.is_empty() {
        return Ok(None);
    }
    let set = set_dir(plan);
    let argvs = swap
        .after_deploy
        .iter()
        .map(|a| fill(a, &set, swap, ""))
        .collect::<Result<Vec<_>, _>>()?;
    match run_commands(session, &argvs).await {
        Ok(_) => Ok(Some(format!("{} after-deploy command(s) ok", argvs.len()))),
        Err(e) => Err(format!("after the deploy: {e}")),
    }
}

/// Removes what the preview created: every object `discard.list` prints that starts with the
/// prefix. Failures are collected, none stops the others.
pub(super) async fn discard(
    session: &Session,
    plan: &TargetPlan,
    swap: &CommandSwap,
) -> Vec<String> {
    let set = set_dir(plan);
    let mut errors = Vec::new();
    for d in &swap.discard {
        let list = match fill(&d.list, &set, swap, "") {
            Ok(l) => l,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let out = match session.exec(&list).await {
            Ok(out) if out.success() => out,
            Ok(out) => {
                errors.push(command_failure(&crate::ssh::quote::label(&list), &out));
                continue;
            }
            Err(e) => {
                errors.push(e.to_string());
                continue;
            }
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let found: BTreeSet<&str> = text
            .split_whitespace()
            .filter(|w| w.starts_with(&d.prefix))
            .collect();
        for object in found {
            let argv = match fill(&d.delete, &set, swap, object) {
                Ok(a) => a,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            if let Err(e) = run_commands(session, std::slice::from_ref(&argv)).await {
                errors.push(e);
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_objects_are_words_with_a_run_id_after_the_prefix() {
        let text = "sys crypto cert /Common/certctl-1700000000-abc123 {\n}\n\
                    sys crypto cert /Common/certctl-1800000000-00ff-chain {\n}\n\
                    sys crypto cert /Common/certctl-1700000000-abc123 {\n}\n\
                    sys crypto cert /Common/other-1900000000-aa {\n}\n\
                    sys crypto cert /Common/certctl-x-aa /Common/certctl-1600000000-\n";
        let found = objects(text, "/Common/certctl-");
        assert_eq!(
            found,
            [
                (
                    "/Common/certctl-1700000000-abc123".to_string(),
                    (1_700_000_000, "1700000000-abc123".to_string())
                ),
                (
                    "/Common/certctl-1800000000-00ff-chain".to_string(),
                    (1_800_000_000, "1800000000-00ff".to_string())
                ),
            ]
        );
    }
}
