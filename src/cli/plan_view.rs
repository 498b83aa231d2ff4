//! `deploy --dry-run`'s plan: the preview commands taken from the target plans before the run
//! (the report does not carry them), printed with [`report::dry_run_plan`] after it.

use crate::connector::Shell;
use crate::plan::TargetPlan;
use crate::report::{self, RunReport};

/// Each target's preview commands as command lines (PowerShell statements joined by `; `).
pub(super) fn previews(plans: &[TargetPlan]) -> report::plan::Previews {
    plans
        .iter()
        .map(|p| {
            let lines = p
                .preview
                .iter()
                .map(|argv| match p.shell {
                    Shell::Powershell => format!("powershell: {}", argv.join("; ")),
                    _ => crate::ssh::quote::command_line(argv),
                })
                .collect();
            (p.name.clone(), lines)
        })
        .collect()
}

/// The plan on stderr, before the summary table; nothing with `--quiet`.
pub(super) fn print(run: &RunReport, previews: &report::plan::Previews, verbose: u8) {
    if report::term::settings().quiet {
        return;
    }
    let text = report::dry_run_plan(run, previews, verbose > 0);
    if !text.is_empty() {
        report::print_stderr(&text);
    }
}

/// Each target's new leaf (its first certificate's): fingerprint and not-after.
pub(super) type Leaves = std::collections::BTreeMap<String, (crate::material::Fingerprint, i64)>;

pub(super) fn leaves(plans: &[TargetPlan]) -> Leaves {
    plans
        .iter()
        .map(|p| {
            let leaf = &p.first().material.leaf;
            (p.name.clone(), (leaf.fingerprint, leaf.not_after))
        })
        .collect()
}

/// `served_not_after`/`served_days_left` of a deploy: known when the served leaf is the one
/// the inventory deploys (the probe reports fingerprints only).
pub(super) fn deployed_expiry(run: &RunReport, leaves: &Leaves) -> Vec<report::TargetExtra> {
    let now = crate::plan::now_unix();
    run.targets
        .iter()
        .map(|t| match (leaves.get(&t.name), t.served_fingerprint) {
            (Some((leaf, not_after)), Some(served)) if *leaf == served => {
                report::TargetExtra::served_expiry(*not_after, now)
            }
            _ => report::TargetExtra::default(),
        })
        .collect()
}
