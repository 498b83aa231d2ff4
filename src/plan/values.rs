//! The values a target's placeholders take: the connector's params (defaults, then the
//! target's), the fixed names (`target`, `host`, `tmpdir`, `run_id`), the leaf's Windows
//! thumbprint where a connector needs it, and each template's path. Inputs and files add
//! their own paths as they are planned.

use std::collections::BTreeMap;

use super::RunSettings;
use super::dirs::Dirs;
use crate::connector::{self, ConnectorDef, Shell};
use crate::inventory::Target;
use crate::material::Material;

/// Params, fixed names, the thumbprint, template paths.
pub(super) fn placeholders(
    params: &BTreeMap<String, String>,
    target: &Target,
    def: &ConnectorDef,
    material: &Material,
    dirs: &Dirs,
    settings: &RunSettings,
) -> BTreeMap<String, String> {
    let mut values = params.clone();
    values.insert("target".into(), target.name.clone());
    values.insert("host".into(), target.host.clone());
    values.insert("tmpdir".into(), dirs.scratch.clone());
    values.insert("run_id".into(), settings.run_id.clone());
    if def.shell == Shell::Powershell || def.inputs.iter().any(|i| i.pkcs12) {
        values.insert(
            "thumbprint".into(),
            crate::pkcs12::thumbprint(&material.leaf.der),
        );
    }
    for name in def.templates.keys() {
        values.insert(
            format!("template.{name}"),
            format!("{}/{name}", dirs.scratch),
        );
    }
    values
}

/// Connector defaults (rendered with the target's name and host), then the target's params.
/// A param the connector does not declare is an error, with a suggestion.
pub(super) fn resolve_params(
    target: &Target,
    def: &ConnectorDef,
) -> Result<BTreeMap<String, String>, String> {
    let fixed = BTreeMap::from([
        ("target".to_string(), target.name.clone()),
        ("host".to_string(), target.host.clone()),
    ]);
    let mut params = BTreeMap::new();
    for (name, p) in &def.params {
        if let Some(default) = &p.default {
            let value = connector::render(default, &fixed)
                .map_err(|e| format!("default of param `{name}`: {e}"))?;
            params.insert(name.clone(), value);
        }
    }
    for (name, value) in &target.params {
        let known = def.params.contains_key(name)
            || connector::ENGINE_PARAMS.iter().any(|(n, _)| n == name);
        if !known {
            let candidates = def
                .params
                .keys()
                .map(String::as_str)
                .chain(connector::ENGINE_PARAMS.iter().map(|(n, _)| *n));
            let hint = connector::did_you_mean(name, candidates)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            return Err(format!(
                "connector `{}` has no param `{name}`{hint}",
                target.connector
            ));
        }
        params.insert(name.clone(), value.clone());
    }
    for (name, p) in &def.params {
        if let (Some(format), Some(value)) = (p.format, params.get(name)) {
            format
                .check(value)
                .map_err(|e| format!("param `{name}`: {e}"))?;
        }
    }
    let missing: Vec<&str> = def
        .params
        .keys()
        .filter(|k| !params.contains_key(*k))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "connector `{}` needs param(s): {}",
            target.connector,
            missing.join(", ")
        ));
    }
    Ok(params)
}
