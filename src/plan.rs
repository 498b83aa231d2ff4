//! The plan: a pure function from inventory + material + connectors to one [`TargetPlan`] per
//! target, with every path and remote command already rendered. Nothing here touches the
//! network or the clock; the run id and "now" come in as arguments, so the exact remote
//! commands can be tested offline.
//!
//! One target's plan is built in steps ([`build`] → `plan_target`), each in its own file:
//!
//! 1. the connector's params with the target's values (`plan/values.rs`);
//! 2. the directories on the target: scratch, backups (`plan/dirs.rs`);
//! 3. the placeholder values: params, fixed names, then each input's and file's path
//!    (`plan/values.rs`);
//! 4. the private inputs, among them the ones the engine builds from the material — a
//!    Kubernetes TLS Secret, a PKCS#12 file (`plan/inputs.rs`);
//! 5. the files and the templates, rendered (`plan/files.rs`);
//! 6. the commands, rendered, and the `swap: commands` sections (`plan/commands.rs`);
//! 7. how to reach the target: inventory, then `~/.ssh/config` (`plan/ssh.rs`);
//! 8. the probe, and the material checked against the name it will send.

mod binding;
mod commands;
mod dirs;
mod files;
mod inputs;
mod merge;
mod ssh;
mod values;

pub use binding::{BindingCheck, PlannedBinding};
pub use dirs::is_drive_path;
pub use files::InPlace;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::connector::{Catalogue, Command, ConnectorDef, Role, Shell, SwapMode};
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
    /// Defaults from docs/ssh.md#timeouts with a fresh random run id.
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
    /// Which of the target's certificates ([`TargetPlan::certs`]) the file holds.
    pub cert: usize,
    /// Param `in_place`: when the live file is written into its own inode, not renamed over.
    pub in_place: InPlace,
}

/// A private input written into the scratch directory (0600) before preview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedInput {
    pub path: String,
    pub content: InputContent,
    /// Which of the target's certificates ([`TargetPlan::certs`]) a material input holds.
    pub cert: usize,
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
    /// The certificates the target serves, in the inventory's order; never empty.
    pub certs: Vec<CertPlan>,
    pub files: Vec<PlannedFile>,
    /// Private directory (0700) on the target for templates and preview output.
    pub scratch_dir: String,
    /// Inside it, one more per certificate after the first (each certificate's `{tmpdir}`).
    pub scratch_subdirs: Vec<String>,
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
    /// This run's backup set lives in `{backup_dir}/{run_id}`.
    pub backup_dir: String,
    pub keep_backups: u32,
    pub run_id: String,
    /// `swap: commands`: the change is made by commands, not by renaming files.
    pub commands: Option<CommandSwap>,
    /// Whether inspect asks the server's own configuration if it loads each certificate's
    /// live paths (none for connectors without a configuration to ask).
    pub bindings: Vec<PlannedBinding>,
}

/// One certificate of a target: its material and where it is probed.
#[derive(Debug, Clone)]
pub struct CertPlan {
    /// Its name in the inventory's `certificates:`.
    pub certificate: String,
    pub material: Arc<Material>,
    /// Where the served certificate is probed. Meaningful only when `has_probe`.
    pub probe: ProbeSpec,
    /// False when neither the connector (`verify.port`) nor the target (`verify.address`)
    /// names a TLS endpoint (e.g. a keystore): inspect and verify then skip the probe, and a
    /// rollback is checked by hash only.
    pub has_probe: bool,
    /// `verify.shared`: the probed address answers for more than this target.
    pub probe_shared: bool,
    /// `verify.consecutive` as set in the inventory (`certctl verify` probes once without).
    pub consecutive_set: Option<u32>,
}

impl TargetPlan {
    /// The first certificate: the only one of most targets.
    pub fn first(&self) -> &CertPlan {
        &self.certs[0]
    }

    /// The material a file (or input) of certificate `cert` holds.
    pub fn material(&self, cert: usize) -> &Material {
        &self.certs[cert].material
    }

    /// Whether any certificate has a TLS endpoint to probe.
    pub fn has_probe(&self) -> bool {
        self.certs.iter().any(|c| c.has_probe)
    }
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

/// The target's plan: one part per certificate, merged into one change (see `plan/merge.rs`).
fn plan_target(
    target: &Target,
    index: usize,
    catalogue: &Catalogue,
    materials: &BTreeMap<String, Arc<Material>>,
    settings: &RunSettings,
    checked: &mut NameChecks,
) -> Result<TargetPlan, String> {
    let parts = (0..target.certificates.len())
        .map(|cert| {
            let part = Part {
                target: &target.for_certificate(cert),
                index,
                cert,
            };
            plan_part(&part, catalogue, materials, settings, checked)
        })
        .collect::<Result<Vec<_>, _>>()?;
    merge::merge(parts)
}

/// A connector's command sections, rendered for one target.
struct Sections {
    preview: Vec<Command>,
    test: Vec<Command>,
    reload: Vec<Command>,
    alive: Vec<Command>,
    start: Vec<Command>,
    version: Vec<Command>,
}

impl Sections {
    fn render(r: &commands::Renderer<'_>, def: &ConnectorDef) -> Result<Sections, String> {
        Ok(Sections {
            preview: r.section("preview", &def.preview)?,
            test: r.section("test", &def.test)?,
            reload: r.section("reload", &def.reload)?,
            alive: r.section("alive", &def.alive)?,
            start: r.section("start", &def.start)?,
            version: r.render_all("version", &def.version)?,
        })
    }
}

impl PlannedFile {
    /// The file as certificate `cert`'s.
    fn of(self, cert: usize) -> PlannedFile {
        PlannedFile { cert, ..self }
    }
}

impl PlannedInput {
    /// The input as certificate `cert`'s.
    fn of(self, cert: usize) -> PlannedInput {
        PlannedInput { cert, ..self }
    }
}

/// One certificate of a target, planned on its own.
struct Part<'a> {
    /// The target as it applies to this certificate ([`Target::for_certificate`]).
    target: &'a Target,
    /// The target's place in the run (its scratch directory's name).
    index: usize,
    /// The certificate's place in the target's list.
    cert: usize,
}

fn plan_part(
    part: &Part<'_>,
    catalogue: &Catalogue,
    materials: &BTreeMap<String, Arc<Material>>,
    settings: &RunSettings,
    checked: &mut NameChecks,
) -> Result<TargetPlan, String> {
    let (target, index) = (part.target, part.index);
    let def = catalogue
        .get(&target.connector)
        .map_err(|e| e.to_string())?;
    let certificate = target.certificate();
    let material = materials
        .get(certificate)
        .ok_or_else(|| format!("certificate `{certificate}` was not loaded"))?
        .clone();
    check_fits(target, def, &material)?;
    let powershell = def.shell == Shell::Powershell;
    let params = values::resolve_params(target, def)?;
    let mut dirs = dirs::Dirs::new(&params, target, index, &settings.run_id, powershell)?;
    if part.cert > 0 {
        dirs.scratch = format!("{}/{}", dirs.scratch, part.cert + 1);
    }
    let file_params = files::FileParams::new(&params)?;
    let mut values = values::placeholders(&params, target, def, &material, &dirs, settings);
    let inputs = inputs::plan_inputs(def, target, &params, &material, &dirs, &mut values)?;
    let (run_id, values_mut) = (&settings.run_id, &mut values);
    let files = files::plan_files(def, target, &params, file_params, &dirs, run_id, values_mut)?;
    let rendered = commands::Renderer {
        target,
        params: &params,
        values: &values,
        powershell,
    };
    let sections = Sections::render(&rendered, def)?;
    let bindings = binding::plan(def, &params, &values, &rendered, part.cert)?;
    let templates = files::plan_templates(def, &dirs, &values)?;
    let (ssh, ssh_warnings) = ssh::ssh_config(target, settings)?;
    let commands = match def.swap {
        SwapMode::Files => None,
        SwapMode::Commands => Some(commands::command_swap(def, &values, &params, powershell)?),
    };
    let (probe, has_probe) = probe_spec(target, def, &material)?;
    check_material(checked, target, &material, &probe.sni, settings.now)?;
    Ok(TargetPlan {
        name: target.name.clone(),
        connector: target.connector.clone(),
        shell: def.shell,
        ssh,
        ssh_warnings,
        become_method: target.become_method,
        certs: vec![CertPlan {
            certificate: certificate.to_owned(),
            material,
            probe,
            has_probe,
            probe_shared: target.verify.shared,
            consecutive_set: target.verify.consecutive,
        }],
        files: files.into_iter().map(|f| f.of(part.cert)).collect(),
        scratch_dir: dirs.scratch,
        scratch_subdirs: Vec::new(),
        templates,
        inputs: inputs.into_iter().map(|i| i.of(part.cert)).collect(),
        preview: sections.preview,
        test: sections.test,
        reload: sections.reload,
        alive: sections.alive,
        start: sections.start,
        version: sections.version,
        backup_dir: dirs.backup,
        keep_backups: dirs.keep_backups,
        run_id: settings.run_id.clone(),
        commands,
        bindings,
    })
}

/// The material's checks with the name the probe will send (once per certificate and name).
fn check_material(
    checked: &mut NameChecks,
    target: &Target,
    material: &Material,
    sni: &str,
    now: i64,
) -> Result<(), String> {
    if sni.is_empty() {
        return Ok(());
    }
    checked
        .entry((target.certificate().to_owned(), sni.to_owned()))
        .or_insert_with(|| {
            material
                .check(&[sni.to_owned()], now)
                .map(drop)
                .map_err(|e| e.to_string())
        })
        .clone()
}

/// What a connector asks of the target and the material that they cannot give.
fn check_fits(target: &Target, def: &ConnectorDef, material: &Material) -> Result<(), String> {
    if def.shell == Shell::Powershell && target.become_method.is_some() {
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
    Ok(())
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
        consecutive: v.consecutive_after_reload(),
        offer: crate::probe::Offer::default(),
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
