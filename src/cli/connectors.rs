//! `certctl connectors [list | show NAME]`: the built-in connector catalogue.

use super::{ConnectorsAction, Invalid, print_stdout};
use crate::connector::Catalogue;
use crate::report;

pub(super) fn run(action: ConnectorsAction) -> Result<u8, Invalid> {
    let catalogue = Catalogue::builtin();
    match action {
        ConnectorsAction::List => {
            let width = catalogue.iter().map(|(n, _, _)| n.len()).max().unwrap_or(0);
            let mut out = String::new();
            for (name, def, _) in catalogue.iter() {
                let summary = def
                    .description
                    .split(". ")
                    .next()
                    .unwrap_or("")
                    .trim_end_matches('.');
                out.push_str(&format!("{name:width$}  {summary}\n"));
            }
            print_stdout(&out);
        }
        ConnectorsAction::Show { name } => {
            let Some(source) = Catalogue::builtin_source(&name) else {
                let names: Vec<&str> = catalogue.iter().map(|(n, _, _)| n).collect();
                let hint = crate::connector::did_you_mean(&name, names.iter().copied())
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                return Err(Invalid(vec![report::Problem::run(format!(
                    "unknown connector `{name}`{hint}; `certctl connectors list` lists them"
                ))]));
            };
            let mut out = source.to_string();
            out.push_str("\n# Engine parameters every connector accepts:\n");
            for (param, what) in crate::connector::ENGINE_PARAMS {
                out.push_str(&format!("#   {param}: {what}\n"));
            }
            print_stdout(&out);
        }
    }
    Ok(0)
}
