//! Checks of a connector definition on its own, before any target uses it: every section of
//! the schema in turn (the swap mode's sections, files, inputs, placeholders in paths,
//! templates and commands).

use std::collections::BTreeSet;

use super::{
    BuiltinTemplate, Command, ConnectorDef, ConnectorError, ENGINE_PARAMS, GuardedCommand,
    RestoreDef, Role, Shell, SwapMode, TemplateDef, builtin_template, builtin_template_names,
    did_you_mean, parse_mode, placeholders,
};

/// Checks a definition on its own: roles unique, placeholders known, modes valid. One
/// function per section of the schema, in this order; the first problem is the error.
pub fn validate(name: &str, def: &ConnectorDef) -> Result<(), ConnectorError> {
    let invalid = |message: String| ConnectorError::Invalid {
        connector: name.to_string(),
        message,
    };
    validate_swap(def).map_err(invalid)?;
    validate_files(def).map_err(invalid)?;
    validate_inputs(def).map_err(invalid)?;
    let known = known_placeholders(def);
    validate_placeholders(def, &known).map_err(invalid)?;
    validate_commands(def, &known).map_err(invalid)?;
    super::binding::validate_binding(def, &known).map_err(invalid)?;
    validate_swap_commands(def, &known).map_err(invalid)
}

/// `files`: a `rendered` file names one of the templates (and only it takes `template:`),
/// each role at most once, modes valid.
fn validate_files(def: &ConnectorDef) -> Result<(), String> {
    let mut roles = BTreeSet::new();
    for f in &def.files {
        match (f.role, &f.template) {
            (Role::Rendered, None) => {
                return Err("a `rendered` file needs `template: NAME`".into());
            }
            (Role::Rendered, Some(t)) if !def.templates.contains_key(t) => {
                return Err(format!("file `rendered`: no template named `{t}`"));
            }
            (Role::Rendered, Some(_)) => {}
            (role, Some(_)) => {
                return Err(format!(
                    "file `{role}`: only a `rendered` file takes `template:`"
                ));
            }
            (_, None) => {}
        }
        if !roles.insert(f.role) {
            return Err(format!("role `{}` appears twice in `files`", f.role));
        }
        if let Some(mode) = &f.mode {
            parse_mode(mode).map_err(|e| format!("file `{}`: {e}", f.role))?;
        }
    }
    Ok(())
}

/// `inputs`: plain file names, none used twice (inputs and templates share the scratch
/// directory), and exactly one content source each.
fn validate_inputs(def: &ConnectorDef) -> Result<(), String> {
    let mut input_names: BTreeSet<String> = BTreeSet::new();
    for input in &def.inputs {
        let name = &input.name;
        let plain = !name.is_empty()
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !plain {
            return Err(format!(
                "input `{name}`: the name must be a plain file name (letters, digits, `.`, `_`, `-`)"
            ));
        }
        if !input_names.insert(name.clone()) || def.templates.contains_key(name) {
            return Err(format!(
                "input `{name}`: the name is used twice (inputs and templates share the scratch directory)"
            ));
        }
        if input.pkcs12 {
            if input.role.is_some() || input.from.is_some() || input.kubernetes_tls_secret.is_some()
            {
                return Err(format!(
                    "input `{name}`: `pkcs12: true` takes no `role:`, `from:` or `kubernetes_tls_secret:`"
                ));
            }
            if !input_names.insert(format!("{name}.password")) {
                return Err(format!("input `{name}`: `{name}.password` is used twice"));
            }
            continue;
        }
        if let Some(k) = &input.kubernetes_tls_secret {
            if input.role.is_some() || input.from.is_some() {
                return Err(format!(
                    "input `{name}`: give exactly one of `role:`, `from:` or `kubernetes_tls_secret:`"
                ));
            }
            for (what, text) in [("name", &k.name), ("namespace", &k.namespace)] {
                placeholders(text).map_err(|e| format!("input `{name}` {what}: {e}"))?;
            }
            continue;
        }
        validate_input_source(def, input)?;
    }
    Ok(())
}

/// An input with neither `pkcs12` nor `kubernetes_tls_secret`: a material role (not
/// `rendered` or `keystore`) or `from:` a param of this connector.
fn validate_input_source(def: &ConnectorDef, input: &super::InputDef) -> Result<(), String> {
    let name = &input.name;
    match (&input.role, &input.from) {
        (Some(Role::Rendered | Role::Keystore), None) => Err(format!(
            "input `{name}`: role `{}` cannot be an input",
            input.role.unwrap_or(Role::Rendered)
        )),
        (Some(_), None) => Ok(()),
        (None, Some(param)) if def.params.contains_key(param) => Ok(()),
        (None, Some(param)) => Err(format!(
            "input `{name}`: `from: {param}` names no param of this connector"
        )),
        _ => Err(format!(
            "input `{name}`: give exactly one of `role:` or `from:`"
        )),
    }
}

/// Every placeholder in `text` is one the definition may use (with a suggestion if not).
fn check_known(known: &BTreeSet<String>, what: &str, text: &str) -> Result<(), String> {
    for p in placeholders(text).map_err(|e| format!("{what}: {e}"))? {
        if !known.contains(&p) {
            let hint = did_you_mean(&p, known.iter().map(String::as_str))
                .map(|s| format!(" (did you mean `{{{s}}}`?)"))
                .unwrap_or_default();
            return Err(format!("{what}: unknown placeholder `{{{p}}}`{hint}"));
        }
    }
    Ok(())
}

/// A command of a `swap: commands` section: not empty, its placeholders `known` and never
/// `{words.PARAM}`.
fn check_command(known: &BTreeSet<String>, what: &str, cmd: &Command) -> Result<(), String> {
    if cmd.is_empty() {
        return Err(format!("{what} is an empty command"));
    }
    for arg in cmd {
        for p in placeholders(arg).map_err(|e| format!("{what}: {e}"))? {
            if !known.contains(&p) || p.starts_with("words.") {
                return Err(format!("{what}: unknown placeholder `{{{p}}}`"));
            }
        }
    }
    Ok(())
}

/// File paths, templates and the Kubernetes Secret's name and namespace use known
/// placeholders only; a built-in template is one the engine has.
fn validate_placeholders(def: &ConnectorDef, known: &BTreeSet<String>) -> Result<(), String> {
    for f in &def.files {
        check_known(known, &format!("file `{}` path", f.role), &f.path)?;
    }
    for (tname, template) in &def.templates {
        match template {
            TemplateDef::Text(body) => check_known(known, &format!("template `{tname}`"), body)?,
            TemplateDef::Builtin(BuiltinTemplate { builtin }) => {
                if builtin_template(builtin).is_none() {
                    let hint = did_you_mean(builtin, builtin_template_names())
                        .map(|s| format!(" (did you mean `{s}`?)"))
                        .unwrap_or_default();
                    return Err(format!(
                        "template `{tname}`: certctl has no built-in template `{builtin}`{hint}"
                    ));
                }
            }
        }
    }
    for i in &def.inputs {
        if let Some(k) = &i.kubernetes_tls_secret {
            check_known(known, &format!("input `{}` name", i.name), &k.name)?;
            check_known(
                known,
                &format!("input `{}` namespace", i.name),
                &k.namespace,
            )?;
        }
    }
    Ok(())
}

/// preview, test, reload, alive, start, version (and apply's commands): not empty, known
/// placeholders, `{words.PARAM}` only as a whole argument and never in `apply`.
fn validate_commands(def: &ConnectorDef, known: &BTreeSet<String>) -> Result<(), String> {
    let apply: Vec<Command> = def.apply.iter().map(|a| a.parts().0.clone()).collect();
    for (section, cmds) in [
        ("preview", &def.preview),
        ("test", &def.test),
        ("reload", &def.reload),
        ("alive", &def.alive),
        ("start", &def.start),
        ("version", &def.version),
        ("apply", &apply),
    ] {
        for (i, cmd) in cmds.iter().enumerate() {
            if cmd.is_empty() {
                return Err(format!("{section}[{i}] is an empty command"));
            }
            for arg in cmd {
                check_known(known, &format!("{section}[{i}]"), arg)?;
                let found = placeholders(arg).unwrap_or_default();
                let whole = found.len() == 1 && *arg == format!("{{{}}}", found[0]);
                let inside = found.iter().any(|p| p.starts_with("words."));
                if inside && (!whole || section == "apply") {
                    return Err(format!(
                        "{section}[{i}]: `{{words.PARAM}}` must be a whole argument (of preview, test, reload, alive, start or version)"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// snapshot, restore (which may also name the backup set and the snapshots), the guards'
/// words, after_deploy, discard and prune (whose `delete` names the object it removes); and
/// `shell: powershell` only with `swap: commands`.
fn validate_swap_commands(def: &ConnectorDef, known: &BTreeSet<String>) -> Result<(), String> {
    let mut known_backup = known.clone();
    known_backup.insert("backup".into());
    for s in &def.snapshot {
        known_backup.insert(format!("snapshot.{}", s.save));
    }
    for (i, s) in def.snapshot.iter().enumerate() {
        check_command(&known_backup, &format!("snapshot[{i}]"), &s.run)?;
    }
    for (i, r) in def.restore.iter().enumerate() {
        check_command(&known_backup, &format!("restore[{i}]"), r.parts().0)?;
    }
    for (section, entries) in [("apply", &def.apply), ("restore", &def.restore)] {
        for (i, r) in entries.iter().enumerate() {
            if let RestoreDef::Guarded(GuardedCommand { word: Some(w), .. }) = r {
                check_known(known, &format!("{section}[{i}].word"), w)?;
            }
        }
    }
    if def.shell == Shell::Powershell && def.swap != SwapMode::Commands {
        return Err(
            "`shell: powershell` needs `swap: commands` (each command is one PowerShell script, its statements one a line)".into(),
        );
    }
    let mut known_object = known.clone();
    known_object.insert("object".into());
    for (i, a) in def.after_deploy.iter().enumerate() {
        let (cmd, when) = a.parts();
        check_command(known, &format!("after_deploy[{i}]"), cmd)?;
        if let Some(param) = when
            && !def.params.contains_key(param)
        {
            return Err(format!(
                "after_deploy[{i}]: `when: {param}` names no param of this connector"
            ));
        }
    }
    for (section, defs) in [("discard", &def.discard), ("prune", &def.prune)] {
        for (i, p) in defs.iter().enumerate() {
            check_command(known, &format!("{section}[{i}].list"), &p.list)?;
            check_known(known, &format!("{section}[{i}].prefix"), &p.prefix)?;
            check_command(&known_object, &format!("{section}[{i}].delete"), &p.delete)?;
        }
    }
    Ok(())
}

/// The sections each swap mode needs, and only those.
fn validate_swap(def: &ConnectorDef) -> Result<(), String> {
    match def.swap {
        SwapMode::Files => validate_files_swap(def),
        SwapMode::Commands => validate_commands_swap(def),
    }
}

/// `swap: files`: at least one file, none of the `swap: commands` sections.
fn validate_files_swap(def: &ConnectorDef) -> Result<(), String> {
    if def.files.is_empty() {
        return Err("`files` is empty: a connector must deploy at least one file".into());
    }
    let extra = [
        ("snapshot", def.snapshot.is_empty()),
        ("apply", def.apply.is_empty()),
        ("restore", def.restore.is_empty()),
        ("prune", def.prune.is_empty()),
        ("discard", def.discard.is_empty()),
        ("after_deploy", def.after_deploy.is_empty()),
    ];
    if let Some((name, _)) = extra.iter().find(|(_, empty)| !empty) {
        return Err(format!("`{name}` needs `swap: commands`"));
    }
    Ok(())
}

/// `swap: commands`: no live files, `apply` and `restore` given, snapshots named plainly and
/// once, guards that name a snapshot, prefixes for `prune` and `discard`.
fn validate_commands_swap(def: &ConnectorDef) -> Result<(), String> {
    if !def.files.is_empty() {
        return Err(
            "`swap: commands` places no live file: give the material as `inputs` \
             (staged in the private scratch directory), not `files`"
                .into(),
        );
    }
    if def.apply.is_empty() {
        return Err("`swap: commands` needs `apply` (the commands that make the change)".into());
    }
    if def.restore.is_empty() {
        return Err(
            "`swap: commands` needs `restore` (the commands that put the snapshot back)".into(),
        );
    }
    let plain = |n: &str| {
        !n.is_empty()
            && !n.starts_with('.')
            && n != "manifest"
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    };
    let mut names = BTreeSet::new();
    for s in &def.snapshot {
        if !plain(&s.save) {
            return Err(format!(
                "snapshot `{}`: the name must be a plain file name (letters, digits, `.`, `_`, `-`; not `manifest`)",
                s.save
            ));
        }
        if !names.insert(s.save.as_str()) {
            return Err(format!("snapshot `{}` is saved twice", s.save));
        }
    }
    let guarded = [("apply", &def.apply), ("restore", &def.restore)];
    for (section, entries) in guarded {
        for (i, r) in entries.iter().enumerate() {
            if let RestoreDef::Guarded(g) = r
                && g.if_saved.is_some()
                && g.unless_saved.is_some()
            {
                return Err(format!(
                    "{section}[{i}]: give at most one of `if_saved:` and `unless_saved:`"
                ));
            }
            if let (_, Some((name, _))) = r.parts()
                && !names.contains(name)
            {
                return Err(format!("{section}[{i}]: no snapshot is saved as `{name}`"));
            }
            if let RestoreDef::Guarded(g) = r
                && g.word.is_some()
                && r.parts().1.is_none()
            {
                return Err(format!(
                    "{section}[{i}]: `word:` needs `if_saved:` or `unless_saved:`"
                ));
            }
        }
    }
    if def
        .prune
        .iter()
        .chain(&def.discard)
        .any(|p| p.prefix.is_empty())
    {
        return Err("`prune` and `discard` need a non-empty `prefix`".into());
    }
    Ok(())
}

/// Every placeholder a definition may use.
pub fn known_placeholders(def: &ConnectorDef) -> BTreeSet<String> {
    let mut known: BTreeSet<String> = def.params.keys().cloned().collect();
    // `{words.PARAM}`: a whole argument only (checked in `validate`).
    known.extend(def.params.keys().map(|p| format!("words.{p}")));
    known.extend(ENGINE_PARAMS.iter().map(|(n, _)| (*n).to_string()));
    for fixed in ["target", "host", "tmpdir", "run_id"] {
        known.insert(fixed.to_string());
    }
    for f in &def.files {
        known.insert(format!("staged.{}", f.role));
        known.insert(format!("live.{}", f.role));
    }
    for t in def.templates.keys() {
        known.insert(format!("template.{t}"));
    }
    for i in &def.inputs {
        known.insert(format!("input.{}", i.name));
        if i.pkcs12 {
            known.insert(format!("input.{}.password", i.name));
        }
    }
    if def.shell == Shell::Powershell || def.inputs.iter().any(|i| i.pkcs12) {
        // The leaf's Windows thumbprint (SHA-1, upper-case hex).
        known.insert("thumbprint".into());
    }
    known
}
