//! The files a target's plan deploys (live path, staged name beside it, mode and owner, the
//! rendered content of a `rendered` file) and the templates rendered into the scratch
//! directory. A template value that a config file's quoted strings cannot carry literally is
//! refused here, before anything is written.

use std::collections::BTreeMap;

use super::dirs::{Dirs, check_remote_path};
use super::{PlannedFile, PlannedTemplate};
use crate::connector::{self, ConnectorDef, Role, SwapMode, TemplateDef};
use crate::inventory::Target;

/// Every file of the connector whose path renders to something, with `live.ROLE` and
/// `staged.ROLE` added to `values`; at least one (with `swap: files`); then each `rendered`
/// file's content, which sees every path; never two files at one path.
pub(super) fn plan_files(
    def: &ConnectorDef,
    target: &Target,
    params: &BTreeMap<String, String>,
    file_params: FileParams,
    dirs: &Dirs,
    run_id: &str,
    values: &mut BTreeMap<String, String>,
) -> Result<Vec<PlannedFile>, String> {
    let FileParams {
        follow_symlinks,
        explicit_mode,
        in_place,
    } = file_params;
    let mut files = Vec::new();
    for f in &def.files {
        let path = connector::render(&f.path, values)
            .map_err(|e| format!("file `{}` path: {e}", f.role))?;
        if path.is_empty() {
            continue;
        }
        check_remote_path(&format!("path of the `{}` file", f.role), &path)?;
        let (dir, base) = path.rsplit_once('/').unwrap_or(("", &path));
        let staged = format!("{dir}/.{base}.certctl-{run_id}.tmp");
        let default_mode = match &f.mode {
            Some(m) => connector::parse_mode(m).map_err(|e| format!("file `{}`: {e}", f.role))?,
            None => f.role.default_mode(),
        };
        check_file_mode(f.role, explicit_mode, default_mode, &path)?;
        let work = (f.role == Role::Keystore).then(|| format!("{}/{base}.work", dirs.scratch));
        values.insert(format!("live.{}", f.role), path.clone());
        values.insert(
            format!("staged.{}", f.role),
            work.clone().unwrap_or_else(|| staged.clone()),
        );
        files.push(PlannedFile {
            role: f.role,
            path,
            staged,
            explicit_mode,
            default_mode,
            explicit_owner: params.get("owner").cloned(),
            explicit_group: params.get("group").cloned(),
            default_owner: f.owner.clone(),
            default_group: f.group.clone(),
            rendered: f.template.clone(),
            work,
            follow_symlinks,
            // Set by the caller, which knows which certificate this is.
            cert: 0,
            in_place,
        });
    }
    if files.is_empty() && def.swap == SwapMode::Files {
        return Err(format!(
            "connector `{}` deploys no file: set at least one path param ({})",
            target.connector,
            def.params
                .keys()
                .filter(|k| k.ends_with("_path"))
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    // Rendered files see every path, so they are rendered once all paths are known.
    for f in files.iter_mut() {
        if let Some(name) = f.rendered.take() {
            f.rendered = Some(render_template(&name, &def.templates[&name], values)?);
        }
    }
    for i in 0..files.len() {
        if files[..i].iter().any(|f| f.path == files[i].path) {
            return Err(format!("two files would be written to `{}`", files[i].path));
        }
    }
    Ok(files)
}

/// The engine params that apply to every deployed file: `follow_symlinks`, `mode` and
/// `in_place`.
#[derive(Clone, Copy)]
pub(super) struct FileParams {
    follow_symlinks: bool,
    explicit_mode: Option<u32>,
    in_place: InPlace,
}

/// Param `in_place`: whether a live file is replaced by a rename or written into its own inode
/// (docs/deploy.md#files-bind-mounted-into-containers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum InPlace {
    /// In place when the live file is bind-mounted (a mount whose root is the file, in a
    /// mount namespace the login user can read); renamed otherwise.
    #[default]
    Auto,
    /// Every live file that exists is written in place (a container's mounts the login user
    /// cannot see).
    Always,
    /// Always renamed; a bind mount of the file is named in a warning.
    Never,
}

impl InPlace {
    fn parse(value: Option<&str>) -> Result<InPlace, String> {
        match value {
            None | Some("auto") => Ok(InPlace::Auto),
            Some("always") => Ok(InPlace::Always),
            Some("never") => Ok(InPlace::Never),
            Some(other) => Err(format!(
                "param `in_place`: `{other}` is none of \"auto\", \"always\", \"never\""
            )),
        }
    }
}

impl FileParams {
    pub(super) fn new(params: &BTreeMap<String, String>) -> Result<FileParams, String> {
        let follow_symlinks = match params.get("follow_symlinks").map(String::as_str) {
            None | Some("true") => true,
            Some("false") => false,
            Some(other) => {
                return Err(format!(
                    "param `follow_symlinks`: `{other}` is neither \"true\" nor \"false\""
                ));
            }
        };
        let explicit_mode = params
            .get("mode")
            .map(|m| connector::parse_mode(m).map_err(|e| format!("param `mode`: {e}")))
            .transpose()?;
        Ok(FileParams {
            follow_symlinks,
            explicit_mode,
            in_place: InPlace::parse(params.get("in_place").map(String::as_str))?,
        })
    }
}

/// Each of the connector's templates, rendered, at its path in the scratch directory.
pub(super) fn plan_templates(
    def: &ConnectorDef,
    dirs: &Dirs,
    values: &BTreeMap<String, String>,
) -> Result<Vec<PlannedTemplate>, String> {
    def.templates
        .iter()
        .map(|(name, template)| {
            Ok(PlannedTemplate {
                path: format!("{}/{name}", dirs.scratch),
                content: render_template(name, template, values)?,
            })
        })
        .collect()
}

/// Characters a value may not carry into a rendered config file. The connectors' templates
/// put every path in double quotes (nginx, haproxy, Caddyfile, YAML), so spaces, `;`, `#`
/// and single quotes are fine; these would end the string, start an escape, or be expanded
/// (`$var` in nginx, `$ENV` in haproxy, `{placeholders}` and `{$ENV}` in Caddy).
const CONFIG_UNSAFE: &[char] = &['"', '\\', '$', '{', '}', '`'];

/// Renders a connector template (a config file the target's software reads), refusing a
/// value that its quoted strings cannot carry literally — before anything is written. A
/// built-in template takes its values as arguments and is written as it is.
fn render_template(
    name: &str,
    template: &TemplateDef,
    values: &BTreeMap<String, String>,
) -> Result<String, String> {
    let body = match template {
        TemplateDef::Text(body) => body,
        TemplateDef::Builtin(b) => {
            return connector::builtin_template(&b.builtin)
                .map(str::to_owned)
                .ok_or_else(|| format!("template `{name}`: no built-in `{}`", b.builtin));
        }
    };
    let located = |e: String| format!("template `{name}`: {e}");
    for p in connector::placeholders(body).map_err(located)? {
        let Some(value) = values.get(&p) else {
            continue;
        };
        if let Some(c) = value.chars().find(|c| CONFIG_UNSAFE.contains(c)) {
            return Err(located(format!(
                "`{{{p}}}` is {value:?}, which contains `{c}`: it cannot be written literally \
                 into the connector's config file; use a path without `\"`, `\\`, `$`, `{{`, \
                 `}}` or backquotes"
            )));
        }
    }
    connector::render(body, values).map_err(located)
}

/// The modes [`crate::limits::file_mode`] allows for a file of `role` at `path`: the target's
/// `mode` param when set (it applies to every file of the target), else the connector's mode.
fn check_file_mode(
    role: Role,
    explicit: Option<u32>,
    default: u32,
    path: &str,
) -> Result<(), String> {
    match explicit {
        Some(mode) => crate::limits::file_mode(role, mode).map_err(|e| {
            format!("param `mode` applies to every file of the target, including the `{role}` file `{path}`: {e}")
        }),
        None => crate::limits::file_mode(role, default)
            .map_err(|e| format!("the connector's `{role}` file `{path}`: {e}")),
    }
}
