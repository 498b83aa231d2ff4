//! The binding check of one certificate's part of a target's plan
//! (docs/connectors.md#the-binding-check): the connector's `binding:` rendered with the
//! target's values, or that the target turned it off. Connectors without a `binding:` (the
//! generic `ssh`, keystores, API targets) plan none.

use std::collections::BTreeMap;

use super::commands::Renderer;
use crate::connector::{self, Command, ConnectorDef, Reader};

/// One certificate's binding check: which files it covers and what inspect asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedBinding {
    /// The certificate (index in the plan's `certs`) whose files are checked.
    pub cert: usize,
    pub check: BindingCheck,
}

/// Whether the binding is checked, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindingCheck {
    /// Turned off by the param named here (`binding_check: false`).
    Off(String),
    /// Asked with inspect: the reader, its commands and the files it reads, rendered.
    Ask {
        reader: Reader,
        run: Vec<Command>,
        files: Vec<String>,
    },
}

/// The part's binding check: none when the connector has no `binding:`.
pub(super) fn plan(
    def: &ConnectorDef,
    params: &BTreeMap<String, String>,
    values: &BTreeMap<String, String>,
    rendered: &Renderer<'_>,
    cert: usize,
) -> Result<Vec<PlannedBinding>, String> {
    let Some(b) = &def.binding else {
        return Ok(Vec::new());
    };
    if let Some(param) = &b.when {
        match params.get(param).map(String::as_str) {
            Some("true") => {}
            Some("false") => {
                return Ok(vec![PlannedBinding {
                    cert,
                    check: BindingCheck::Off(param.clone()),
                }]);
            }
            other => {
                return Err(format!(
                    "param `{param}` is `{}`: it must be `true` or `false`",
                    other.unwrap_or("")
                ));
            }
        }
    }
    let run = rendered.render_all("binding.run", &b.run)?;
    let files = b
        .files
        .iter()
        .map(|f| connector::render(f, values).map_err(|e| format!("binding.files: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(vec![PlannedBinding {
        cert,
        check: BindingCheck::Ask {
            reader: b.reader,
            run,
            files,
        },
    }])
}
