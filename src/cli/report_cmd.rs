//! `certctl report merge A.json B.json …`: one document (stdout) and one exit code for the
//! JSON reports of a sharded run; the totals and each target's error on stderr.
//! `certctl report markdown|junit A.json …`: the same reports as a Markdown table (GitHub's
//! step summary) or JUnit XML (GitLab's test report).

use std::path::PathBuf;

use clap::Subcommand;

use super::Invalid;
use crate::report::{self, Problem};

#[derive(Debug, Subcommand)]
pub enum ReportAction {
    /// Combine the JSON reports of a sharded run (`--shard I/N`, one per CI job) into one
    /// document on stdout; exit with the code one run over all their targets would have had.
    #[command(after_help = MERGE_EXIT)]
    Merge {
        /// JSON reports written by `--output json` (or by an earlier merge).
        #[arg(required = true, value_name = "REPORT.json")]
        reports: Vec<PathBuf>,
    },
    /// A Markdown table of one or more JSON reports (merged), e.g. for
    /// `>> "$GITHUB_STEP_SUMMARY"`. Exits 0 once written (the run's own exit code is the gate).
    Markdown {
        #[arg(required = true, value_name = "REPORT.json")]
        reports: Vec<PathBuf>,
    },
    /// JUnit XML of one or more JSON reports (merged): one test case per target, for GitLab's
    /// `artifacts:reports:junit`. Exits 0 once written.
    Junit {
        #[arg(required = true, value_name = "REPORT.json")]
        reports: Vec<PathBuf>,
    },
}

const MERGE_EXIT: &str = "\
Exit codes: as the command that wrote the reports (deploy: 0, 1, 3; verify: 0, 4; …), over all
their targets; 2 when a report cannot be read or merged, or one of them stopped at invalid input.";

pub(super) fn run(action: ReportAction) -> Result<u8, Invalid> {
    let (reports, format): (_, fn(&serde_json::Value) -> String) = match action {
        ReportAction::Merge { reports } => return merge(&reports),
        ReportAction::Markdown { reports } => (reports, report::formats::markdown),
        ReportAction::Junit { reports } => (reports, report::formats::junit),
    };
    let merged =
        report::merge::merge(&read(&reports)?).map_err(|e| Invalid(vec![Problem::run(e)]))?;
    super::print_stdout(&format(&merged));
    Ok(report::EXIT_OK)
}

fn read(reports: &[PathBuf]) -> Result<Vec<(String, serde_json::Value)>, Invalid> {
    let mut documents = Vec::new();
    for path in reports {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Invalid(vec![Problem::run(format!("{name}: cannot read: {e}"))]))?;
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            Invalid(vec![Problem::run(format!(
                "{name}: not a JSON report: {e}"
            ))])
        })?;
        documents.push((name, value));
    }
    Ok(documents)
}

fn merge(reports: &[PathBuf]) -> Result<u8, Invalid> {
    let merged =
        report::merge::merge(&read(reports)?).map_err(|e| Invalid(vec![Problem::run(e)]))?;
    let code = report::merge::exit_code(&merged);
    report::print_stderr(&totals(&merged, reports.len()));
    match serde_json::to_string_pretty(&merged) {
        Ok(text) => super::print_stdout(&text),
        Err(e) => report::print_stderr(&format!("error: writing the merged report: {e}")),
    }
    Ok(code)
}

/// `3 reports, 30 targets: 29 deployed, 1 rolled-back`, then `name: error` per failed target.
fn totals(merged: &serde_json::Value, files: usize) -> String {
    let counts: Vec<String> = report::Status::ALL
        .iter()
        .filter_map(|s| {
            let n = merged["summary"][s.as_str()].as_u64().unwrap_or(0);
            (n > 0).then(|| format!("{n} {}", s.as_str()))
        })
        .collect();
    let mut out = format!(
        "{files} report(s), {} target(s){}{}\n",
        merged["summary"]["total"],
        if counts.is_empty() { "" } else { ": " },
        counts.join(", ")
    );
    for t in merged["targets"].as_array().into_iter().flatten() {
        if let (Some(name), Some(error)) = (t["name"].as_str(), t["error"].as_str()) {
            let error = report::short_fingerprints(&report::sanitize(error.as_bytes()));
            out.push_str(&format!("{}: {error}\n", report::sanitize_line(name)));
        }
    }
    for p in merged["problems"].as_array().into_iter().flatten() {
        if let Some(message) = p["message"].as_str() {
            out.push_str(&format!("error: {}\n", report::sanitize_line(message)));
        }
    }
    out
}
