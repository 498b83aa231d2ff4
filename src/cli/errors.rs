//! Invalid input (exit 2), said once per problem: on stderr, and with `--output json` also as
//! one JSON document on stdout, so a CI artifact is never empty. Plus the pointer for a
//! missing `certctl.yaml`.

use std::path::Path;

use super::{Command, Invalid, Output};
use crate::plan::PlanError;
use crate::report::{self, Problem, RunReport};

/// Which JSON document a command writes with `--output json`, if it was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum JsonDoc {
    /// The run report of this command.
    Run(&'static str),
    /// `check --output json`.
    Check,
}

pub(super) fn json_command(command: &Command) -> Option<JsonDoc> {
    let (name, output) = match command {
        Command::Deploy(a) => ("deploy", a.run.output),
        Command::Verify(a) => ("verify", a.run.output),
        Command::Rollback(a) => ("rollback", a.run.output),
        Command::Status(a) => ("status", a.run.output),
        Command::Check(a) => return (a.output == Output::Json).then_some(JsonDoc::Check),
        _ => return None,
    };
    (output == Output::Json).then_some(JsonDoc::Run(name))
}

/// Prints every problem (`error: …`, once each, naming the targets it affects), writes the
/// JSON document when one was asked for, and returns exit code 2.
pub(super) fn invalid(problems: &[Problem], json: Option<JsonDoc>) -> u8 {
    for problem in problems {
        report::print_stderr(&format!("error: {}\n", report::problems::render(problem)));
    }
    invalid_json_only(problems, json);
    report::EXIT_USAGE
}

fn tidied(problems: &[Problem]) -> Vec<Problem> {
    problems
        .iter()
        .map(|p| Problem {
            message: report::tidy(&p.message),
            targets: p.targets.clone(),
        })
        .collect()
}

/// The inventory file must exist; if it does not, say how to give one.
pub(super) fn inventory_exists(path: &Path) -> Result<(), Invalid> {
    if path.exists() {
        return Ok(());
    }
    Err(Invalid(vec![Problem::run(format!(
        "no inventory at {}: pass one with -i FILE, set CERTCTL_INVENTORY, or write a \
         starter with `certctl init` (then `certctl check`)",
        path.display()
    ))]))
}

/// Planning errors, one problem per distinct message: alone, as it always read
/// (`FILE:LINE:COL: target `web-1`: …`); shared by several targets, once with their names.
pub(super) fn plan_problems(errors: &[PlanError]) -> Vec<Problem> {
    let grouped = report::problems::group(errors.iter().map(|e| Problem {
        message: e.message.clone(),
        targets: vec![e.target.clone()],
    }));
    grouped
        .into_iter()
        .map(|p| match p.targets.as_slice() {
            [one] => {
                let e = errors
                    .iter()
                    .find(|e| &e.target == one && e.message == p.message)
                    .expect("grouped from these errors");
                Problem {
                    message: e.to_string(),
                    targets: p.targets,
                }
            }
            _ => p,
        })
        .collect()
}

/// Parses the command line. A usage error (exit 2) with `--output json` among the arguments
/// still writes one JSON document on stdout, with the error as its problem.
pub fn parse() -> super::Cli {
    use clap::Parser as _;
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match super::Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() || e.exit_code() != 2 => e.exit(),
        Err(e) => {
            let words: Vec<String> = args
                .iter()
                .skip(1)
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            let json = words
                .windows(2)
                .any(|w| w[0] == "--output" && w[1] == "json")
                || words.iter().any(|w| w == "--output=json");
            if json {
                let command = ["deploy", "verify", "rollback", "status", "check"]
                    .into_iter()
                    .find(|c| words.iter().any(|w| w == c));
                let doc = match command {
                    Some("check") => Some(JsonDoc::Check),
                    Some(c) => Some(JsonDoc::Run(c)),
                    None => None,
                };
                let message = e.kind().to_string();
                let detail = e.render().to_string();
                let first = detail
                    .lines()
                    .next()
                    .and_then(|l| l.strip_prefix("error: "))
                    .unwrap_or(&message)
                    .to_string();
                let _ = e.print();
                invalid_json_only(&[Problem::run(first)], doc);
                std::process::exit(i32::from(report::EXIT_USAGE));
            }
            e.exit()
        }
    }
}

/// The JSON half of [`invalid`], when stderr already has the message (clap printed it).
fn invalid_json_only(problems: &[Problem], json: Option<JsonDoc>) {
    match json {
        Some(JsonDoc::Run(command)) => {
            let mut run = RunReport::new(
                command,
                false,
                std::time::SystemTime::now(),
                std::time::Duration::ZERO,
                Vec::new(),
            );
            run.problems = tidied(problems);
            let mut out = std::io::stdout().lock();
            if let Err(e) = report::write_json(&run, &mut out) {
                report::print_stderr(&format!("error: writing the JSON report: {e}"));
            }
        }
        Some(JsonDoc::Check) => super::check::write_invalid(&tidied(problems)),
        None => {}
    }
}
