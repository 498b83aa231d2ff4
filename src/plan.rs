//! The plan: a pure function from inventory + material + connectors to one [`TargetPlan`] per
//! target, with every path and remote command already rendered. Nothing here touches the
//! network or the clock; the run id and "now" come in as arguments, so the exact remote
//! commands can be tested offline.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::connector::{self, Catalogue, Command, ConnectorDef, Role, Shell};
use crate::inventory::{Become, Inventory, Target};
use crate::material::Material;
use crate::probe::{ProbeSpec, Schedule};
use crate::secret::Secret;
use crate::ssh::SshConfig;

/// Run-wide settings that are not in the inventory.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// Random per run; names staged files, scratch and backup directories.
    pub run_id: String,
    pub accept_new_host_keys: bool,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub keepalive_interval: Duration,
    /// Seconds since the Unix epoch, for validity checks.
    pub now: i64,
    /// The operator's OpenSSH client config (`-F`, else `~/.ssh/config`; empty if none).
    pub ssh_client: std::sync::Arc<crate::ssh::config::SshClientConfig>,
}

impl RunSettings {
    /// Defaults from DESIGN §7 with a fresh random run id.
    pub fn new(accept_new_host_keys: bool) -> Self {
        let mut bytes = [0u8; 6];
        getrandom::fill(&mut bytes).expect("the OS random source works");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Self {
            run_id: format!("{now}-{hex}"),
            accept_new_host_keys,
            connect_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(60),
            keepalive_interval: Duration::from_secs(15),
            now: now_unix(),
            ssh_client: std::sync::Arc::default(),
        }
    }
}

/// One file to deploy on one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFile {
    pub role: Role,
    /// The live path.
    pub path: String,
    /// The temporary name beside it (same directory, so the rename is atomic).
    pub staged: String,
    /// From the target's `mode` param: wins over everything.
    pub explicit_mode: Option<u32>,
    /// For a file that does not exist yet: the connector's mode, else the role's.
    pub default_mode: u32,
    /// From the target's `owner`/`group` params: win over the replaced file's.
    pub explicit_owner: Option<String>,
    pub explicit_group: Option<String>,
    /// For a file that does not exist yet.
    pub default_owner: Option<String>,
    pub default_group: Option<String>,
    /// Role `rendered`: the file's content, rendered from its template.
    pub rendered: Option<String>,
    /// Role `keystore`: the private working copy in the scratch directory that the preview
    /// imports into (`{staged.keystore}`); the engine copies it to `staged` afterwards.
    pub work: Option<String>,
}

/// A private input written into the scratch directory (0600) before preview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedInput {
    pub path: String,
    pub content: InputContent,
}

/// What an input file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputContent {
    /// The material in this role.
    Material(Role),
    /// A secret read on the controller (e.g. a keystore password).
    Secret(Secret),
}

/// A template rendered into the scratch directory before preview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedTemplate {
    pub path: String,
    pub content: String,
}

/// Everything the engine needs to deploy to one target.
#[derive(Debug, Clone)]
pub struct TargetPlan {
    pub name: String,
    pub connector: String,
    pub shell: Shell,
    pub ssh: SshConfig,
    pub become_method: Option<Become>,
    pub certificate: String,
    pub material: Arc<Material>,
    pub files: Vec<PlannedFile>,
    /// Private directory (0700) on the target for templates and preview output.
    pub scratch_dir: String,
    pub templates: Vec<PlannedTemplate>,
    /// Private inputs (material, secrets) written into the scratch directory before preview.
    pub inputs: Vec<PlannedInput>,
    pub preview: Vec<Command>,
    pub test: Vec<Command>,
    pub reload: Vec<Command>,
    /// Succeeds only while the server runs; checked after reloads.
    pub alive: Vec<Command>,
    /// Starts the server when a rollback finds it dead.
    pub start: Vec<Command>,
    /// Print the server software's version (`certctl status`).
    pub version: Vec<Command>,
    /// Where the served certificate is probed. Meaningful only when `has_probe`.
    pub probe: ProbeSpec,
    /// False when neither the connector (`verify.port`) nor the target (`verify.address`)
    /// names a TLS endpoint (e.g. a keystore): inspect and verify then skip the probe, and a
    /// rollback is checked by hash only.
    pub has_probe: bool,
    /// This run's backup set lives in `{backup_dir}/{run_id}`.
    pub backup_dir: String,
    pub keep_backups: u32,
    pub run_id: String,
}

/// A planning error for one target (or certificate); all are collected, none hides another.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: target `{target}`: {message}")]
pub struct PlanError {
    pub target: String,
    pub location: String,
    pub message: String,
}

/// Material checks already done in one [`build`], by (certificate, SNI).
type NameChecks = std::collections::HashMap<(String, String), Result<(), String>>;

/// Builds the plan of every target in `targets`. `materials` holds the loaded material of
/// every certificate those targets name.
pub fn build(
    inventory: &Inventory,
    targets: &[&Target],
    catalogue: &Catalogue,
    materials: &BTreeMap<String, Arc<Material>>,
    settings: &RunSettings,
) -> Result<Vec<TargetPlan>, Vec<PlanError>> {
    let _ = inventory;
    let mut plans = Vec::new();
    let mut errors = Vec::new();
    // Many targets share one certificate and one SNI: check each pair once (the chain's
    // signature check dominates `certctl check` on a big fleet otherwise).
    let mut checked = NameChecks::default();
    for (index, target) in targets.iter().enumerate() {
        match plan_target(target, index, catalogue, materials, settings, &mut checked) {
            Ok(p) => plans.push(p),
            Err(message) => errors.push(PlanError {
                target: target.name.clone(),
                location: target.location.to_string(),
                message,
            }),
        }
    }
    if errors.is_empty() {
        Ok(plans)
    } else {
        Err(errors)
    }
}

fn plan_target(
    target: &Target,
    index: usize,
    catalogue: &Catalogue,
    materials: &BTreeMap<String, Arc<Material>>,
    settings: &RunSettings,
    checked: &mut NameChecks,
) -> Result<TargetPlan, String> {
    let def = catalogue
        .get(&target.connector)
        .map_err(|e| e.to_string())?;
    let material = materials
        .get(&target.certificate)
        .ok_or_else(|| format!("certificate `{}` was not loaded", target.certificate))?
        .clone();
    if def.shell != Shell::Posix {
        return Err(format!(
            "connector `{}` needs a {:?} shell, which this version of certctl cannot drive yet",
            target.connector, def.shell
        ));
    }
    if target.become_method.is_some() {
        return Err(
            "`become: sudo` is not supported yet: log in as a user that can write the \
                    certificate files and run the reload"
                .into(),
        );
    }

    let params = resolve_params(target, def)?;
    let tmp_dir = params
        .get("tmp_dir")
        .cloned()
        .unwrap_or_else(|| "/tmp".into());
    check_remote_path("tmp_dir", &tmp_dir)?;
    let scratch_dir = format!(
        "{}/certctl-{}-{index}",
        tmp_dir.trim_end_matches('/'),
        settings.run_id
    );
    let backup_dir = params
        .get("backup_dir")
        .cloned()
        .unwrap_or_else(|| format!("/var/lib/certctl/backups/{}", target.name));
    check_remote_path("backup_dir", &backup_dir)?;
    let keep_backups = match params.get("keep_backups") {
        Some(v) => v.parse::<u32>().ok().filter(|n| *n >= 1).ok_or_else(|| {
            format!("param `keep_backups`: `{v}` is not a whole number of at least 1")
        })?,
        None => 3,
    };
    let explicit_mode = params
        .get("mode")
        .map(|m| connector::parse_mode(m).map_err(|e| format!("param `mode`: {e}")))
        .transpose()?;

    // Placeholder values: params, fixed names, then file paths.
    let mut values = params.clone();
    values.insert("target".into(), target.name.clone());
    values.insert("host".into(), target.host.clone());
    values.insert("tmpdir".into(), scratch_dir.clone());
    for name in def.templates.keys() {
        values.insert(format!("template.{name}"), format!("{scratch_dir}/{name}"));
    }
    let mut inputs = Vec::new();
    for input in &def.inputs {
        let path = format!("{scratch_dir}/{}", input.name);
        values.insert(format!("input.{}", input.name), path.clone());
        let content = match (&input.role, &input.from) {
            (Some(role), _) => InputContent::Material(*role),
            (None, Some(param)) => {
                InputContent::Secret(secret_from_env(param, &params, &input.name)?)
            }
            (None, None) => return Err(format!("input `{}` has no content", input.name)),
        };
        inputs.push(PlannedInput { path, content });
    }

    let mut files = Vec::new();
    for f in &def.files {
        let path = connector::render(&f.path, &values)
            .map_err(|e| format!("file `{}` path: {e}", f.role))?;
        if path.is_empty() {
            continue;
        }
        check_remote_path(&format!("path of the `{}` file", f.role), &path)?;
        let (dir, base) = path.rsplit_once('/').unwrap_or(("", &path));
        let staged = format!("{dir}/.{base}.certctl-{}.tmp", settings.run_id);
        let default_mode = match &f.mode {
            Some(m) => connector::parse_mode(m).map_err(|e| format!("file `{}`: {e}", f.role))?,
            None => f.role.default_mode(),
        };
        let work = (f.role == Role::Keystore).then(|| format!("{scratch_dir}/{base}.work"));
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
        });
    }
    if files.is_empty() {
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
            let body = &def.templates[&name];
            let content = render_template(&name, body, &values)?;
            f.rendered = Some(content);
        }
    }
    for i in 0..files.len() {
        if files[..i].iter().any(|f| f.path == files[i].path) {
            return Err(format!("two files would be written to `{}`", files[i].path));
        }
    }

    let render_all = |section: &str, cmds: &[Command]| -> Result<Vec<Command>, String> {
        cmds.iter()
            .enumerate()
            .map(|(i, cmd)| {
                if cmd.is_empty() {
                    return Err(format!("{section}[{i}] is an empty command"));
                }
                cmd.iter()
                    .map(|arg| {
                        connector::render(arg, &values).map_err(|e| format!("{section}[{i}]: {e}"))
                    })
                    .collect()
            })
            .collect()
    };
    let section = |name: &str, from_def: &[Command]| -> Result<Vec<Command>, String> {
        match target.commands.get(name) {
            Some(over) => render_all(&format!("commands.{name}"), over),
            None => render_all(name, from_def),
        }
    };
    let preview = section("preview", &def.preview)?;
    let test = section("test", &def.test)?;
    let reload = section("reload", &def.reload)?;
    let alive = section("alive", &def.alive)?;
    let start = section("start", &def.start)?;
    let version = render_all("version", &def.version)?;
    let templates = def
        .templates
        .iter()
        .map(|(name, body)| {
            Ok(PlannedTemplate {
                path: format!("{scratch_dir}/{name}"),
                content: render_template(name, body, &values)?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;

    let (probe, has_probe) = probe_spec(target, def, &material)?;
    if !probe.sni.is_empty() {
        checked
            .entry((target.certificate.clone(), probe.sni.clone()))
            .or_insert_with(|| {
                material
                    .check(std::slice::from_ref(&probe.sni), settings.now)
                    .map(drop)
                    .map_err(|e| e.to_string())
            })
            .clone()?;
    }

    Ok(TargetPlan {
        name: target.name.clone(),
        connector: target.connector.clone(),
        shell: def.shell,
        ssh: ssh_config(target, settings)?,
        become_method: target.become_method,
        certificate: target.certificate.clone(),
        material,
        files,
        scratch_dir,
        templates,
        inputs,
        preview,
        test,
        reload,
        alive,
        start,
        version,
        probe,
        has_probe,
        backup_dir,
        keep_backups,
        run_id: settings.run_id.clone(),
    })
}

/// How to reach a target: the inventory first, then the operator's ssh config for what the
/// inventory leaves open (HostName of an alias, IdentityFile, ProxyJump, ConnectTimeout,
/// ServerAliveInterval), then defaults. `jump:` hops use the target's user, key and
/// known_hosts unless the ssh config says otherwise for that hop.
fn ssh_config(target: &Target, settings: &RunSettings) -> Result<SshConfig, String> {
    use crate::ssh::config::JumpDefaults;
    use crate::ssh::jump::JumpSpec;
    let hs = settings.ssh_client.resolve(&target.host);
    let identity_file = target
        .identity_file
        .clone()
        .or_else(|| hs.identity_files.first().cloned());
    let specs = match &target.jump {
        Some(jump) => JumpSpec::parse_list(jump).map_err(|e| format!("jump `{jump}`: {e}"))?,
        None => hs.proxy_jump.clone().unwrap_or_default(),
    };
    let defaults = JumpDefaults {
        user: target.user.clone(),
        identity_files: identity_file.iter().cloned().collect(),
        known_hosts: target.known_hosts.clone(),
    };
    let chain = settings
        .ssh_client
        .jump_chain(&specs, &defaults)
        .map_err(|e| e.to_string())?;
    Ok(SshConfig {
        host: hs.host_name.clone().unwrap_or_else(|| target.host.clone()),
        port: target.port,
        user: target.user.clone(),
        identity_file,
        known_hosts: target.known_hosts.clone(),
        accept_new_host_keys: settings.accept_new_host_keys,
        connect_timeout: hs.connect_timeout.unwrap_or(settings.connect_timeout),
        command_timeout: settings.command_timeout,
        keepalive_interval: hs
            .server_alive_interval
            .filter(|d| !d.is_zero())
            .unwrap_or(settings.keepalive_interval),
        jump: chain.hops,
    })
}

/// Connector defaults (rendered with the target's name and host), then the target's params.
/// A param the connector does not declare is an error, with a suggestion.
fn resolve_params(target: &Target, def: &ConnectorDef) -> Result<BTreeMap<String, String>, String> {
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

/// Remote paths must be absolute, normalised and printable: no `..`, no control characters.
/// Characters a value may not carry into a rendered config file. The connectors' templates
/// put every path in double quotes (nginx, haproxy, Caddyfile, YAML), so spaces, `;`, `#`
/// and single quotes are fine; these would end the string, start an escape, or be expanded
/// (`$var` in nginx, `$ENV` in haproxy, `{placeholders}` and `{$ENV}` in Caddy).
const CONFIG_UNSAFE: &[char] = &['"', '\\', '$', '{', '}', '`'];

/// Renders a connector template (a config file the target's software reads), refusing a
/// value that its quoted strings cannot carry literally — before anything is written.
fn render_template(
    name: &str,
    body: &str,
    values: &BTreeMap<String, String>,
) -> Result<String, String> {
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

fn check_remote_path(what: &str, path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("{what} `{path}` must be an absolute path"));
    }
    if path.chars().any(char::is_control) {
        return Err(format!("{what} {path:?} contains a control character"));
    }
    if path.split('/').any(|c| c == ".." || c == ".") {
        return Err(format!(
            "{what} `{path}` must not contain `.` or `..` components"
        ));
    }
    if path.ends_with('/') {
        return Err(format!("{what} `{path}` names a directory, not a file"));
    }
    Ok(())
}

/// Reads a secret input on the controller: `param`'s value names an environment variable.
fn secret_from_env(
    param: &str,
    params: &BTreeMap<String, String>,
    input: &str,
) -> Result<Secret, String> {
    let var = params
        .get(param)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("param `{param}` must name an environment variable"))?;
    match std::env::var_os(var) {
        Some(value) if !value.is_empty() => {
            use std::os::unix::ffi::OsStringExt as _;
            Ok(Secret::new(value.into_vec()))
        }
        _ => Err(format!(
            "environment variable `{var}` (param `{param}`, for input `{input}`) is not set or \
             empty on the controller"
        )),
    }
}

/// The probe, and whether there is one: without `verify.address` and without a connector
/// `verify.port` the target has no TLS endpoint to probe.
fn probe_spec(
    target: &Target,
    def: &ConnectorDef,
    material: &Material,
) -> Result<(ProbeSpec, bool), String> {
    let v = &target.verify;
    let (address, has_probe) = match (&v.address, def.verify.port) {
        (Some(a), _) => (a.clone(), true),
        (None, Some(port)) => {
            let address = if target.host.contains(':') && !target.host.starts_with('[') {
                format!("[{}]:{port}", target.host)
            } else {
                format!("{}:{port}", target.host)
            };
            (address, true)
        }
        (None, None) => (String::new(), false),
    };
    let sni = match &v.sni {
        Some(s) => s.clone(),
        None => material.default_sni().unwrap_or_default(),
    };
    let spec = ProbeSpec {
        address,
        sni,
        starttls: v.starttls.unwrap_or(def.verify.starttls),
        schedule: Schedule {
            attempts: v.attempts,
            backoff: v.backoff,
            max_backoff: v.max_backoff,
        },
        timeout: v.timeout,
        consecutive: v.consecutive,
    };
    Ok((spec, has_probe))
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
