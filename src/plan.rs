//! The plan: a pure function from inventory + material + connectors to one [`TargetPlan`] per
//! target, with every path and remote command already rendered. Nothing here touches the
//! network or the clock; the run id and "now" come in as arguments, so the exact remote
//! commands can be tested offline.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::connector::{self, Catalogue, Command, ConnectorDef, Role, Shell, SwapMode};
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
    /// A live path that is a symlink is followed (the file it resolves to is replaced and the
    /// link kept); `false` (param `follow_symlinks`) replaces the link itself with a file.
    pub follow_symlinks: bool,
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

/// `swap: commands` (see [`connector::SwapMode`]): the commands with every placeholder
/// rendered except `{backup}`, `{snapshot.NAME}` and `{version}`, which the engine fills in
/// at run time (`certctl rollback` restores an earlier run's backup set). Other values are
/// brace-escaped, so the second rendering leaves them as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSwap {
    /// `shell: powershell`: each command is a list of PowerShell statements (one script),
    /// already quoted but for the run-time values.
    pub powershell: bool,
    /// (snapshot name, command whose stdout is saved as it).
    pub snapshot: Vec<(String, Command)>,
    /// Guarded as `restore` is, by this run's snapshots.
    pub apply: Vec<PlannedRestore>,
    pub restore: Vec<PlannedRestore>,
    pub prune: Vec<PlannedPrune>,
    /// Same shape as `prune`: every listed object with the prefix is removed.
    pub discard: Vec<PlannedPrune>,
    /// Run once after a verified deploy: the connector's `after_deploy` commands whose
    /// `when` param is `true`.
    pub after_deploy: Vec<Command>,
}

/// One restore command and its guard: (snapshot name, run only when it is non-empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRestore {
    pub guard: Option<(String, bool)>,
    /// The guard tests whether the snapshot has this word rather than whether it is empty.
    pub word: Option<String>,
    pub argv: Command,
}

/// One prune listing: `delete` has `{object}` left for the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedPrune {
    pub list: Command,
    pub prefix: String,
    pub delete: Command,
}

/// Everything the engine needs to deploy to one target.
#[derive(Debug, Clone)]
pub struct TargetPlan {
    pub name: String,
    pub connector: String,
    pub shell: Shell,
    pub ssh: SshConfig,
    /// What the operator's ssh config says for this host that certctl does not follow
    /// (`file:line: …`), to show before connecting.
    pub ssh_warnings: Vec<String>,
    /// `become: sudo`; the transport does the wrapping ([`SshConfig::become_sudo`]).
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
    /// `verify.shared`: the probed address answers for more than this target.
    pub probe_shared: bool,
    /// This run's backup set lives in `{backup_dir}/{run_id}`.
    pub backup_dir: String,
    pub keep_backups: u32,
    pub run_id: String,
    /// `swap: commands`: the change is made by commands, not by renaming files.
    pub commands: Option<CommandSwap>,
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
    let powershell = def.shell == Shell::Powershell;
    if powershell && target.become_method.is_some() {
        return Err(format!(
            "connector `{}` runs PowerShell scripts, which `become: sudo` cannot wrap: log in as \
             a user with the rights the connector needs",
            target.connector
        ));
    }
    if def.inputs.iter().any(|i| i.pkcs12) && material.key_kind == crate::material::KeyKind::Ed25519
    {
        return Err(format!(
            "connector `{}` imports a PKCS#12 file into Windows, which cannot use an {} key \
             (use RSA or ECDSA)",
            target.connector, material.key_kind
        ));
    }

    let params = resolve_params(target, def)?;
    // A Windows target (`shell: powershell`) takes drive paths, with forward slashes.
    let tmp_dir = params
        .get("tmp_dir")
        .cloned()
        .unwrap_or_else(|| default_tmp_dir(powershell).into());
    check_dir_param("tmp_dir", &tmp_dir, powershell)?;
    let scratch_dir = format!(
        "{}/certctl-{}-{index}",
        tmp_dir.trim_end_matches('/'),
        settings.run_id
    );
    let backup_dir = params
        .get("backup_dir")
        .cloned()
        .unwrap_or_else(|| format!("{}/{}", default_backup_root(powershell), target.name));
    check_dir_param("backup_dir", &backup_dir, powershell)?;
    let keep_backups = match params.get("keep_backups") {
        Some(v) => v.parse::<u32>().ok().filter(|n| *n >= 1).ok_or_else(|| {
            format!("param `keep_backups`: `{v}` is not a whole number of at least 1")
        })?,
        None => 3,
    };
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

    // Placeholder values: params, fixed names, then file paths.
    let mut values = params.clone();
    values.insert("target".into(), target.name.clone());
    values.insert("host".into(), target.host.clone());
    values.insert("tmpdir".into(), scratch_dir.clone());
    values.insert("run_id".into(), settings.run_id.clone());
    if powershell || def.inputs.iter().any(|i| i.pkcs12) {
        values.insert(
            "thumbprint".into(),
            crate::pkcs12::thumbprint(&material.leaf.der),
        );
    }
    for name in def.templates.keys() {
        values.insert(format!("template.{name}"), format!("{scratch_dir}/{name}"));
    }
    let mut inputs = Vec::new();
    for input in &def.inputs {
        let path = format!("{scratch_dir}/{}", input.name);
        values.insert(format!("input.{}", input.name), path.clone());
        let content = match (&input.role, &input.from) {
            _ if input.pkcs12 => {
                let password = crate::pkcs12::random_password()
                    .map_err(|e| format!("input `{}`: {e}", input.name))?;
                let pfx = crate::pkcs12::from_material(&material, &password, None)
                    .map_err(|e| format!("input `{}`: {e}", input.name))?;
                let pw_path = format!("{path}.password");
                values.insert(format!("input.{}.password", input.name), pw_path.clone());
                inputs.push(PlannedInput {
                    path: pw_path,
                    content: InputContent::Secret(password),
                });
                InputContent::Secret(pfx)
            }
            _ if input.kubernetes_tls_secret.is_some() => {
                let k = input.kubernetes_tls_secret.as_ref().expect("checked");
                let name = connector::render(&k.name, &values)
                    .map_err(|e| format!("input `{}` name: {e}", input.name))?;
                let namespace = connector::render(&k.namespace, &values)
                    .map_err(|e| format!("input `{}` namespace: {e}", input.name))?;
                InputContent::Secret(kubernetes_tls_secret(
                    &name,
                    &namespace,
                    &target.name,
                    &material,
                )?)
            }
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
        check_file_mode(f.role, explicit_mode, default_mode, &path)?;
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
            follow_symlinks,
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

    // An argument that is exactly `{words.PARAM}` becomes the param's whitespace-separated
    // words (zero or more arguments); a command where that is none is left out.
    let render_all = |section: &str, cmds: &[Command]| -> Result<Vec<Command>, String> {
        let mut out = Vec::new();
        for (i, cmd) in cmds.iter().enumerate() {
            if cmd.is_empty() {
                return Err(format!("{section}[{i}] is an empty command"));
            }
            let mut argv = Vec::new();
            let mut empty_words = false;
            for arg in cmd {
                let words = arg
                    .strip_prefix("{words.")
                    .and_then(|r| r.strip_suffix('}'))
                    .and_then(|p| params.get(p));
                match words {
                    Some(value) => {
                        let before = argv.len();
                        argv.extend(value.split_whitespace().map(str::to_string));
                        empty_words |= argv.len() == before;
                    }
                    None => argv.push(
                        connector::render(arg, &values)
                            .map_err(|e| format!("{section}[{i}]: {e}"))?,
                    ),
                }
            }
            if powershell {
                // One script: each element is a statement, every value quoted in it.
                let mut script = crate::ssh::quote::PowerShell::new();
                for statement in cmd {
                    script
                        .statement(statement, &values)
                        .map_err(|e| format!("{section}[{i}]: {e}"))?;
                }
                out.push(script.argv());
            } else if !empty_words {
                out.push(argv);
            }
        }
        Ok(out)
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

    let (ssh, ssh_warnings) = ssh_config(target, settings)?;
    let commands = match def.swap {
        SwapMode::Files => None,
        SwapMode::Commands => Some(command_swap(def, &values, &params, powershell)?),
    };

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
        ssh,
        ssh_warnings,
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
        probe_shared: target.verify.shared,
        backup_dir,
        keep_backups,
        run_id: settings.run_id.clone(),
        commands,
    })
}

/// Renders the `swap: commands` sections, leaving the run-time placeholders for the engine.
fn command_swap(
    def: &ConnectorDef,
    values: &BTreeMap<String, String>,
    params: &BTreeMap<String, String>,
    powershell: bool,
) -> Result<CommandSwap, String> {
    let mut late: Vec<String> = vec!["backup".into(), "object".into()];
    late.extend(def.snapshot.iter().map(|s| format!("snapshot.{}", s.save)));
    let late: Vec<&str> = late.iter().map(String::as_str).collect();
    let escape = |v: &str| v.replace('{', "{{").replace('}', "}}");
    let mut deferred: BTreeMap<String, String> =
        values.iter().map(|(k, v)| (k.clone(), escape(v))).collect();
    deferred.insert("backup".into(), "{backup}".into());
    deferred.insert("object".into(), "{object}".into());
    for s in &def.snapshot {
        let key = format!("snapshot.{}", s.save);
        deferred.insert(key.clone(), format!("{{{key}}}"));
    }
    let render = |what: &str, cmd: &Command| -> Result<Command, String> {
        if cmd.is_empty() {
            return Err(format!("{what} is an empty command"));
        }
        if powershell {
            // Statements: quoted now, except the run-time values (quoted by the engine).
            return cmd
                .iter()
                .map(|a| {
                    crate::ssh::quote::render_powershell(a, values, &late)
                        .map_err(|e| format!("{what}: {e}"))
                })
                .collect();
        }
        // Literal braces stay escaped for the engine's second rendering.
        cmd.iter()
            .map(|a| {
                let a = a.replace("{{", "{{{{").replace("}}", "}}}}");
                connector::render(&a, &deferred).map_err(|e| format!("{what}: {e}"))
            })
            .collect()
    };
    let snapshot = def
        .snapshot
        .iter()
        .enumerate()
        .map(|(i, s)| Ok((s.save.clone(), render(&format!("snapshot[{i}]"), &s.run)?)))
        .collect::<Result<_, String>>()?;
    let guarded = |section: &str, defs: &[connector::RestoreDef]| {
        defs.iter()
            .enumerate()
            .map(|(i, r)| {
                let (cmd, guard) = r.parts();
                let word = match r {
                    connector::RestoreDef::Guarded(g) => g
                        .word
                        .as_ref()
                        .map(|w| connector::render(w, values))
                        .transpose()
                        .map_err(|e| format!("{section}[{i}].word: {e}"))?,
                    connector::RestoreDef::Always(_) => None,
                };
                Ok(PlannedRestore {
                    guard: guard.map(|(n, saved)| (n.to_string(), saved)),
                    word,
                    argv: render(&format!("{section}[{i}]"), cmd)?,
                })
            })
            .collect::<Result<Vec<_>, String>>()
    };
    let apply = guarded("apply", &def.apply)?;
    let restore = guarded("restore", &def.restore)?;
    let listings = |section: &str, defs: &[connector::PruneDef]| {
        defs.iter()
            .enumerate()
            .map(|(i, p)| {
                Ok(PlannedPrune {
                    list: render(&format!("{section}[{i}].list"), &p.list)?,
                    prefix: connector::render(&p.prefix, values)
                        .map_err(|e| format!("{section}[{i}].prefix: {e}"))?,
                    delete: render(&format!("{section}[{i}].delete"), &p.delete)?,
                })
            })
            .collect::<Result<Vec<_>, String>>()
    };
    let prune = listings("prune", &def.prune)?;
    let discard = listings("discard", &def.discard)?;
    let mut after_deploy = Vec::new();
    for (i, a) in def.after_deploy.iter().enumerate() {
        let (cmd, when) = a.parts();
        let wanted = match when.map(|p| (p, params.get(p).map(String::as_str))) {
            None => true,
            Some((_, Some("true"))) => true,
            Some((_, Some("false") | None)) => false,
            Some((p, Some(other))) => {
                return Err(format!(
                    "param `{p}`: `{other}` is neither `true` nor `false`"
                ));
            }
        };
        if wanted {
            after_deploy.push(render(&format!("after_deploy[{i}]"), cmd)?);
        }
    }
    Ok(CommandSwap {
        powershell,
        snapshot,
        apply,
        restore,
        prune,
        discard,
        after_deploy,
    })
}

/// A `kubernetes.io/tls` Secret as JSON (which kubectl reads as YAML): `tls.crt` = leaf +
/// chain, `tls.key`; labelled managed-by certctl, annotated with the target and the leaf's
/// fingerprint and expiry. Names are checked as Kubernetes checks them (DNS-1123), so a bad
/// one is an error here, before anything connects.
fn kubernetes_tls_secret(
    name: &str,
    namespace: &str,
    target: &str,
    material: &Material,
) -> Result<Secret, String> {
    use base64::Engine as _;
    for (what, value, max) in [("name", name, 253), ("namespace", namespace, 63)] {
        let ok = !value.is_empty()
            && value.len() <= max
            && value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && value
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric())
            && value
                .bytes()
                .last()
                .is_some_and(|b| b.is_ascii_alphanumeric());
        if !ok {
            return Err(format!(
                "Kubernetes Secret {what} `{value}` is not a valid name (lower-case letters, \
                 digits, `-` and `.`, starting and ending with a letter or digit, at most {max} characters)"
            ));
        }
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let crt = b64.encode(material.fullchain_pem());
    let key = zeroize::Zeroizing::new(b64.encode(material.key_pem().expose()));
    let head = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": { "app.kubernetes.io/managed-by": "certctl" },
            "annotations": {
                "certctl.io/target": target,
                "certctl.io/fingerprint": material.leaf.fingerprint.to_string(),
                "certctl.io/not-after": crate::report::format_unix(material.leaf.not_after),
            },
        },
        "data": { "tls.crt": crt, "tls.key": "" },
    });
    // The key goes in last, straight into a zeroized buffer (never through a serde_json
    // value, which is not zeroized on drop).
    let text = serde_json::to_string_pretty(&head).map_err(|e| e.to_string())?;
    let marker = "\"tls.key\": \"\"";
    let at = text.find(marker).ok_or("rendering the Secret manifest")?;
    let mut out = zeroize::Zeroizing::new(Vec::with_capacity(text.len() + key.len()));
    out.extend_from_slice(&text.as_bytes()[..at]);
    out.extend_from_slice(b"\"tls.key\": \"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\"");
    out.extend_from_slice(&text.as_bytes()[at + marker.len()..]);
    out.push(b'\n');
    Ok(Secret::new(std::mem::take(&mut *out)))
}

/// How to reach a target. Precedence, per setting: what the inventory writes (target <
/// group < defaults, merged by the inventory), then the operator's ssh config for the
/// inventory's `host` (as `ssh HOST` would read it), then built-in defaults:
///
/// | setting | inventory | ssh config | default |
/// |---|---|---|---|
/// | address | — | `HostName` | `host` |
/// | user | `user` | `User` | the local user |
/// | port | `port` | `Port` | 22 |
/// | keys | `identity_file` (only it) | every `IdentityFile`, `IdentitiesOnly` | agent, then ~/.ssh/id_{ed25519,ecdsa,rsa} |
/// | known_hosts | `known_hosts` (only it) | every `UserKnownHostsFile` (new keys go to the first), then every `GlobalKnownHostsFile` | ~/.ssh/known_hosts{,2}, then /etc/ssh/ssh_known_hosts{,2} |
/// | jump | `jump` | `ProxyJump` | direct |
/// | timeouts | — | `ConnectTimeout`, `ServerAliveInterval` | 10 s, 15 s |
///
/// `StrictHostKeyChecking` never loosens checking: `no` is read as `yes` and `accept-new` is
/// not followed (only `--accept-new-host-keys` trusts on first use); both warn. Jump hops use
/// the inventory's user, key and known_hosts unless the ssh config says otherwise for the hop.
/// Returns the config and the ssh config's warnings for this host.
fn ssh_config(target: &Target, settings: &RunSettings) -> Result<(SshConfig, Vec<String>), String> {
    use crate::ssh::config::{HostKeyChecking, JumpDefaults};
    use crate::ssh::jump::JumpSpec;
    let client = &settings.ssh_client;
    let hs = client.resolve(&target.host);
    let mut warnings = hs.warnings.clone();
    let local = client.local_user();
    let user = target
        .user
        .clone()
        .or_else(|| hs.user.clone())
        .unwrap_or_else(|| local.name.clone());
    let identity_files = match &target.identity_file {
        Some(file) => vec![file.clone()],
        None => hs.identity_files.clone(),
    };
    // The system-wide files OpenSSH also reads, unless the inventory names its one file.
    let global = hs.global_known_hosts_files.clone().unwrap_or_else(|| {
        vec![
            PathBuf::from("/etc/ssh/ssh_known_hosts"),
            PathBuf::from("/etc/ssh/ssh_known_hosts2"),
        ]
    });
    let (known_hosts, known_hosts_extra) = match (&target.known_hosts, &hs.known_hosts_files) {
        (Some(file), _) => (file.clone(), Vec::new()),
        (None, Some(files)) => match files.split_first() {
            Some((first, rest)) => (first.clone(), [rest, &global].concat()),
            None => {
                return Err(format!(
                    "the ssh config says `UserKnownHostsFile none` for `{}`, which would trust \
                     no host key; set `known_hosts:` in the inventory",
                    target.host
                ));
            }
        },
        (None, None) => match &local.home {
            Some(home) => (
                home.join(".ssh/known_hosts"),
                [vec![home.join(".ssh/known_hosts2")], global].concat(),
            ),
            None => {
                return Err(
                    "$HOME is not set, so ~/.ssh/known_hosts is unknown; set `known_hosts:` to a \
                     full path"
                        .into(),
                );
            }
        },
    };
    if hs.host_key_checking == Some(HostKeyChecking::AcceptNew) && !settings.accept_new_host_keys {
        let warning = format!(
            "ssh config: StrictHostKeyChecking accept-new for `{}` is not followed: certctl \
             trusts a new host key only with --accept-new-host-keys",
            target.host
        );
        warnings.push(warning);
    }
    let specs = match &target.jump {
        Some(jump) => JumpSpec::parse_list(jump).map_err(|e| format!("jump `{jump}`: {e}"))?,
        None => hs.proxy_jump.clone().unwrap_or_default(),
    };
    let defaults = JumpDefaults {
        user: target.user.clone().unwrap_or_else(|| local.name.clone()),
        identity_files: identity_files.clone(),
        known_hosts: known_hosts.clone(),
    };
    let chain = client
        .jump_chain(&specs, &defaults)
        .map_err(|e| e.to_string())?;
    for w in chain.warnings {
        if !warnings.contains(&w) {
            warnings.push(w);
        }
    }
    let config = SshConfig {
        host: hs.host_name.clone().unwrap_or_else(|| target.host.clone()),
        port: target.port.or(hs.port).unwrap_or(22),
        user,
        identity_files,
        identities_only: hs.identities_only.unwrap_or(false),
        known_hosts,
        known_hosts_extra,
        become_sudo: target.become_method == Some(Become::Sudo),
        accept_new_host_keys: settings.accept_new_host_keys,
        connect_timeout: hs.connect_timeout.unwrap_or(settings.connect_timeout),
        command_timeout: settings.command_timeout,
        keepalive_interval: hs
            .server_alive_interval
            .filter(|d| !d.is_zero())
            .unwrap_or(settings.keepalive_interval),
        jump: chain.hops,
    };
    Ok((config, warnings))
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

/// Where scratch directories go by default. On Windows, `C:\Windows\Temp`: by its default
/// ACL a user may create there but not read what others created, so the scratch directory
/// (the PFX and its password) is readable only by its creator, SYSTEM and Administrators.
fn default_tmp_dir(windows: bool) -> &'static str {
    if windows { "C:/Windows/Temp" } else { "/tmp" }
}

/// The parent of every target's backup directory (and lock) by default.
fn default_backup_root(windows: bool) -> &'static str {
    if windows {
        "C:/ProgramData/certctl/backups"
    } else {
        "/var/lib/certctl/backups"
    }
}

/// Whether `path` is a Windows drive path with forward slashes: `C:/…`.
pub fn is_drive_path(path: &str) -> bool {
    let b = path.as_bytes();
    b.len() >= 3 && b[0].is_ascii_alphabetic() && b[1] == b':' && b[2] == b'/'
}

/// `tmp_dir`/`backup_dir`: an absolute POSIX path; for a Windows target (`windows`) also a
/// drive path (`C:/ProgramData/certctl`), which must use forward slashes.
fn check_dir_param(what: &str, path: &str, windows: bool) -> Result<(), String> {
    if windows && is_drive_path(path) {
        if path.contains('\\') {
            return Err(format!(
                "{what} `{path}` must use forward slashes (`C:/ProgramData/certctl`)"
            ));
        }
        return check_remote_path(what, &path[2..]);
    }
    if windows && path.contains('\\') {
        return Err(format!(
            "{what} `{path}` must be a drive path with forward slashes (`C:/ProgramData/certctl`)"
        ));
    }
    check_remote_path(what, path)
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

/// Seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
