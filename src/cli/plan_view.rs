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
