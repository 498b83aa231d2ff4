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
            if let Ok(def) = catalogue.get(&name) {
                out.push_str(&binding_line(def));
            }
            out.push_str("\n# Engine parameters every connector accepts:\n");
            for (param, what) in crate::connector::ENGINE_PARAMS {
                out.push_str(&format!("#   {param}: {what}\n"));
            }
            print_stdout(&out);
        }
    }
    Ok(0)
}

/// What `connectors show` says about the connector's binding check
/// (docs/connectors.md#the-binding-check).
fn binding_line(def: &crate::connector::ConnectorDef) -> String {
    match &def.binding {
        Some(b) => {
            let param = b
                .when
                .as_deref()
                .map(|p| format!("; `{p}: \"false\"` turns it off"))
                .unwrap_or_default();
            format!(
                "\n# Binding check (with inspect, before anything is staged): {}{param}.\n",
                crate::binding::describe(b.reader)
            )
        }
        None => "\n# Binding check: none. certctl has no server configuration to ask whether it \
                 loads these paths;\n# only the probe after the reload proves it.\n"
            .to_string(),
    }
}
