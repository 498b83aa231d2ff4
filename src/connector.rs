//! Connector definitions: the schema shared by `connectors/*.yaml` and the inventory's
//! `connectors:` section, the embedded built-ins, and `{placeholder}` rendering.
//!
//! A connector says *what* (files and their roles, preview/test/reload commands, probe
//! defaults); the engine in [`crate::deploy`] owns *how*. Rendering is plain substitution:
//! `{name}` is replaced, `{{` and `}}` are literal braces, and nothing else is interpreted.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::probe::StartTls;

/// Built-in connectors, embedded from `connectors/` at the repository root.
const BUILTIN_SOURCES: &[(&str, &str)] = &[
    ("nginx", include_str!("../connectors/nginx.yaml")),
    ("apache", include_str!("../connectors/apache.yaml")),
    ("haproxy", include_str!("../connectors/haproxy.yaml")),
    ("caddy", include_str!("../connectors/caddy.yaml")),
    ("ssh", include_str!("../connectors/ssh.yaml")),
    ("postfix", include_str!("../connectors/postfix.yaml")),
    ("dovecot", include_str!("../connectors/dovecot.yaml")),
    ("traefik", include_str!("../connectors/traefik.yaml")),
    ("envoy", include_str!("../connectors/envoy.yaml")),
    (
        "javakeystore",
        include_str!("../connectors/javakeystore.yaml"),
    ),
    ("k8ssecret", include_str!("../connectors/k8ssecret.yaml")),
    ("f5", include_str!("../connectors/f5.yaml")),
    ("iis", include_str!("../connectors/iis.yaml")),
    (
        "wincertstore",
        include_str!("../connectors/wincertstore.yaml"),
    ),
];

/// Parameters the engine itself understands on every connector.
pub const ENGINE_PARAMS: &[(&str, &str)] = &[
    (
        "owner",
        "owner of every deployed file (default: kept from the file replaced, else the connector's)",
    ),
    (
        "group",
        "group of every deployed file (default: kept from the file replaced, else the connector's)",
    ),
    (
        "mode",
        "octal mode of every deployed file, e.g. \"0640\" (default: kept, else the connector's)",
    ),
    (
        "backup_dir",
        "directory on the target for backups, outside any directory the server loads (default /var/lib/certctl/backups/{target}; shell: powershell: C:/ProgramData/certctl/backups/{target})",
    ),
    (
        "keep_backups",
        "how many backup sets to keep per target (default 3)",
    ),
    (
        "follow_symlinks",
        "\"true\" (default): a live path that is a symlink keeps its link and the file it resolves to is replaced; \"false\": the link itself is replaced by a regular file",
    ),
    (
        "tmp_dir",
        "directory on the target for private scratch directories (default /tmp; shell: powershell: C:/Windows/Temp)",
    ),
];

/// The remote shell a connector's commands run under.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shell {
    #[default]
    Posix,
    Powershell,
}

/// What a deployed file contains. A closed set: the engine knows how to build each one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The leaf certificate alone.
    Cert,
    /// The intermediates, leaf excluded.
    Chain,
    /// Leaf followed by intermediates.
    Fullchain,
    /// The private key (secret).
    Key,
    /// Leaf + intermediates + key in one PEM (HAProxy). Secret.
    Bundle,
    /// A small config file rendered from one of the connector's `templates` (the file's
    /// `template:`), e.g. traefik's dynamic TLS config or envoy's SDS secret; placed last, so
    /// servers that watch it see the new certificate files already in place.
    Rendered,
    /// A keystore (PKCS12, JKS) the connector's preview commands import the certificate and
    /// key into. Not uploaded: the engine copies the live keystore (if any) into the scratch
    /// directory, `{staged.keystore}` names that working copy, and after the preview the
    /// engine places it beside the live file with its final mode. Secret. Its new content is
    /// not known in advance, so it always counts as changed.
    Keystore,
}

impl Role {
    pub const ALL: [Role; 7] = [
        Role::Cert,
        Role::Chain,
        Role::Fullchain,
        Role::Key,
        Role::Bundle,
        Role::Rendered,
        Role::Keystore,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Cert => "cert",
            Role::Chain => "chain",
            Role::Fullchain => "fullchain",
            Role::Key => "key",
            Role::Bundle => "bundle",
            Role::Rendered => "rendered",
            Role::Keystore => "keystore",
        }
    }

    /// Whether the file holds private key material.
    pub fn is_secret(self) -> bool {
        matches!(self, Role::Key | Role::Bundle | Role::Keystore)
    }

    /// Whether the engine knows the file's content before it reaches the target (every role
    /// but `keystore`, which the target's own tools build).
    pub fn is_built_by_engine(self) -> bool {
        self != Role::Keystore
    }

    /// Whether the file starts with the leaf certificate (so its fingerprint can be read).
    pub fn has_leaf(self) -> bool {
        matches!(self, Role::Cert | Role::Fullchain | Role::Bundle)
    }

    /// Mode used when neither the connector, the target nor the replaced file says otherwise.
    pub fn default_mode(self) -> u32 {
        if self.is_secret() { 0o600 } else { 0o644 }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One connector parameter: a default (absent = required) and what it means.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamDef {
    #[serde(default)]
    pub default: Option<String>,
    #[serde(default)]
    pub description: String,
    /// What the value must look like, checked when the plan is built.
    #[serde(default)]
    pub format: Option<ParamFormat>,
}

/// A closed set of value formats a param may require.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ParamFormat {
    /// A product object name (BIG-IP and the like): letters, digits, `_`, `.`, `-`, not
    /// starting with `-` or `.`. Such a value is safe inside the product's own command
    /// language (e.g. a `tmsh -c` transaction), where certctl's quoting does not reach.
    ObjectName,
    /// A Windows certificate store location: `LocalMachine` or `CurrentUser`.
    StoreLocation,
}

impl ParamFormat {
    /// `Err(why)` when `value` does not have this format.
    pub fn check(self, value: &str) -> Result<(), String> {
        match self {
            ParamFormat::ObjectName => {
                let ok = value
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
                if ok {
                    Ok(())
                } else {
                    Err(format!(
                        "`{value}` is not a valid object name (letters, digits, `_`, `.`, `-`; \
                         starting with a letter, digit or `_`)"
                    ))
                }
            }
            ParamFormat::StoreLocation => match value {
                "LocalMachine" | "CurrentUser" => Ok(()),
                _ => Err(format!(
                    "`{value}` is not a certificate store location (`LocalMachine` or \
                     `CurrentUser`)"
                )),
            },
        }
    }
}

/// One file the connector deploys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDef {
    pub role: Role,
    /// Destination path on the target; usually a `{param}`.
    pub path: String,
    /// Octal mode as a string, e.g. "0600". Default: kept from the replaced file, else the role's.
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    /// With role `rendered`: the name of the template (under `templates:`) that is the content.
    #[serde(default)]
    pub template: Option<String>,
}

/// A private input file written into the run's scratch directory (0600) before `preview`:
/// material in one role, or a secret read on the controller from the environment variable
/// that a param names. `{input.NAME}` (= `{tmpdir}/NAME`) is its path. Removed with the
/// scratch directory at cleanup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputDef {
    /// File name inside the scratch directory.
    pub name: String,
    /// The content is the material in this role (cert, chain, fullchain, key, bundle).
    #[serde(default)]
    pub role: Option<Role>,
    /// The content is the controller's environment variable named by this param's value.
    #[serde(default)]
    pub from: Option<String>,
    /// The content is a Kubernetes TLS Secret manifest built from the material.
    #[serde(default)]
    pub kubernetes_tls_secret: Option<KubernetesSecretDef>,
    /// The content is a PKCS#12 (PFX) file of the material (leaf, chain, key) under a fresh
    /// random password, which is written beside it as `NAME.password` (no newline, 0600;
    /// `{input.NAME.password}`), never on a command line. RSA and ECDSA keys only.
    #[serde(default)]
    pub pkcs12: bool,
}

/// How the new certificate goes live on the target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SwapMode {
    /// Files staged beside the live ones, backed up, renamed over them, restored on failure.
    #[default]
    Files,
    /// The target's own tool makes the change (an API call: `kubectl apply`, a `tmsh`
    /// transaction, a certificate store import). Only `inputs` are staged, into the private
    /// scratch directory; `snapshot` saves the current state into the backup set, `apply`
    /// makes the change, `restore` puts the snapshot back, `prune` removes old versions.
    Commands,
}

/// A command whose standard output the engine saves, on the target, as `{snapshot.NAME}`:
/// a 0600 file in this run's (0700) backup set. `swap: commands` only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotDef {
    /// The snapshot's name (a plain file name).
    pub save: String,
    pub run: Command,
}

/// A `restore` (or `apply`) command: always run, or only when a snapshot holds something
/// (`if_saved`) or is empty (`unless_saved`) — e.g. re-apply the previous object, or delete the
/// new one when there was none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RestoreDef {
    Always(Command),
    Guarded(GuardedCommand),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardedCommand {
    pub run: Command,
    #[serde(default)]
    pub if_saved: Option<String>,
    #[serde(default)]
    pub unless_saved: Option<String>,
    /// With `if_saved`/`unless_saved`: the test is whether the snapshot's output has this
    /// word (whitespace-separated, case-insensitive) rather than whether it is non-empty.
    #[serde(default)]
    pub word: Option<String>,
}

impl RestoreDef {
    /// The command, and its guard: (snapshot name, run when the snapshot is non-empty).
    pub fn parts(&self) -> (&Command, Option<(&str, bool)>) {
        match self {
            RestoreDef::Always(c) => (c, None),
            RestoreDef::Guarded(g) => {
                let guard = match (&g.if_saved, &g.unless_saved) {
                    (Some(s), _) => Some((s.as_str(), true)),
                    (None, Some(s)) => Some((s.as_str(), false)),
                    (None, None) => None,
                };
                (&g.run, guard)
            }
        }
    }
}

/// An `after_deploy` command: always run, or only when the param named by `when` is `true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AfterDeployDef {
    Always(Command),
    When(WhenCommand),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhenCommand {
    pub run: Command,
    /// A param of this connector: the command runs only when its value is `true` (`false`
    /// skips it; anything else is a plan error).
    pub when: String,
}

impl AfterDeployDef {
    /// The command, and the param that must be `true` for it to run.
    pub fn parts(&self) -> (&Command, Option<&str>) {
        match self {
            AfterDeployDef::Always(c) => (c, None),
            AfterDeployDef::When(w) => (&w.run, Some(w.when.as_str())),
        }
    }
}

/// Removing old versions of what `apply` created (objects named with `{run_id}`) after a
/// verified deploy: `list` prints what exists; every whitespace-separated word of its output
/// that starts with `prefix` and goes on with a run id (`SECONDS-HEX`) is an object of that
/// version; objects of all but the newest `keep_backups` versions (this run's always kept)
/// are removed with `delete`, where `{object}` is the word. Best effort: a failure is
/// reported, the deploy stays deployed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneDef {
    pub list: Command,
    pub prefix: String,
    pub delete: Command,
}

/// A Kubernetes `kubernetes.io/tls` Secret manifest input, rendered by certctl (JSON) from
/// the material: `tls.crt` = leaf + chain, `tls.key`, labelled as managed by certctl. Secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSecretDef {
    pub name: String,
    pub namespace: String,
}

/// Probe defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyDefaults {
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub starttls: StartTls,
}

/// A remote command: an argv array, quoted by the engine in exactly one place.
pub type Command = Vec<String>;

/// A connector definition, as written in `connectors/*.yaml` or an inventory's `connectors:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorDef {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub shell: Shell,
    #[serde(default)]
    pub params: BTreeMap<String, ParamDef>,
    /// `files` (default) or `commands`: see [`SwapMode`].
    #[serde(default)]
    pub swap: SwapMode,
    /// The live files; empty with `swap: commands`.
    #[serde(default)]
    pub files: Vec<FileDef>,
    /// Small temporary files rendered into the run's private scratch directory on the target
    /// before `preview` runs; `{template.NAME}` is the rendered file's path.
    #[serde(default)]
    pub templates: BTreeMap<String, String>,
    /// Private input files written into the scratch directory before `preview`.
    #[serde(default)]
    pub inputs: Vec<InputDef>,
    /// Commands that make the target's own software load the STAGED files, then the live test.
    #[serde(default)]
    pub preview: Vec<Command>,
    /// The live config test, run after the swap and before the reload.
    #[serde(default)]
    pub test: Vec<Command>,
    /// How the server picks the new files up; empty for file-watching servers.
    #[serde(default)]
    pub reload: Vec<Command>,
    /// Commands that succeed only while the server is running. Run after the reload (some
    /// servers exit on a bad certificate while their reload returns 0) and after a rollback.
    #[serde(default)]
    pub alive: Vec<Command>,
    /// How to start the server when a rollback finds it dead.
    #[serde(default)]
    pub start: Vec<Command>,
    /// Commands whose first output line names the server software's version (`certctl status`).
    #[serde(default)]
    pub version: Vec<Command>,
    /// `swap: commands`: saves the current state (backup step).
    #[serde(default)]
    pub snapshot: Vec<SnapshotDef>,
    /// `swap: commands`: makes the change (swap step). Entries take the same guards as
    /// `restore` (`if_saved`/`unless_saved`, `word`), read from this run's snapshots: e.g.
    /// create what did not exist yet.
    #[serde(default)]
    pub apply: Vec<RestoreDef>,
    /// `swap: commands`: puts the snapshot back (rollback step, `certctl rollback`).
    #[serde(default)]
    pub restore: Vec<RestoreDef>,
    /// `swap: commands`: removes old versions after a verified deploy.
    #[serde(default)]
    pub prune: Vec<PruneDef>,
    /// `swap: commands`: commands run once after a verified deploy (at cleanup, after
    /// `prune`), e.g. removing what the new certificate replaces for good; an entry with
    /// `when: PARAM` runs only when that param is `true`. A failure fails the cleanup step,
    /// not the deploy (nothing is rolled back).
    #[serde(default)]
    pub after_deploy: Vec<AfterDeployDef>,
    /// `swap: commands`: removes what the preview created, at cleanup on every path: every
    /// word of `list`'s output that starts with `prefix` is removed with `delete` (`{object}`).
    /// Best effort: failures are reported, none stops the others.
    #[serde(default)]
    pub discard: Vec<PruneDef>,
    #[serde(default)]
    pub verify: VerifyDefaults,
}

/// A connector definition problem; `connector` names which one.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("connector `{connector}`: {message}")]
    Invalid { connector: String, message: String },
    #[error("unknown connector `{0}`")]
    Unknown(String),
}

/// All connectors known to a run: the built-ins plus the inventory's own.
#[derive(Debug, Clone)]
pub struct Catalogue {
    defs: BTreeMap<String, (ConnectorDef, Origin)>,
}

/// Where a connector definition came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Builtin,
    Inventory,
}

impl Catalogue {
    /// The built-in connectors only.
    pub fn builtin() -> Self {
        let defs = BUILTIN_SOURCES
            .iter()
            .map(|(name, src)| {
                let def: ConnectorDef = serde_saphyr::from_str(src)
                    .unwrap_or_else(|e| panic!("built-in connector {name} does not parse: {e}"));
                ((*name).to_string(), (def, Origin::Builtin))
            })
            .collect();
        Self { defs }
    }

    /// Names of the built-in connectors (used to validate inventories).
    pub fn builtin_names() -> BTreeSet<String> {
        BUILTIN_SOURCES
            .iter()
            .map(|(n, _)| (*n).to_string())
            .collect()
    }

    /// The YAML source of a built-in connector, for `certctl connectors show`.
    pub fn builtin_source(name: &str) -> Option<&'static str> {
        BUILTIN_SOURCES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| *s)
    }

    /// Adds user-defined connectors; a name that shadows a built-in is an error.
    pub fn with_user(
        mut self,
        user: &BTreeMap<String, ConnectorDef>,
    ) -> Result<Self, ConnectorError> {
        for (name, def) in user {
            if self.defs.contains_key(name) {
                return Err(ConnectorError::Invalid {
                    connector: name.clone(),
                    message: "is a built-in connector name; give the user-defined connector another name, \
                              or override single commands per target under `commands:`"
                        .into(),
                });
            }
            validate(name, def)?;
            self.defs
                .insert(name.clone(), (def.clone(), Origin::Inventory));
        }
        Ok(self)
    }

    pub fn get(&self, name: &str) -> Result<&ConnectorDef, ConnectorError> {
        self.defs
            .get(name)
            .map(|(d, _)| d)
            .ok_or_else(|| ConnectorError::Unknown(name.into()))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &ConnectorDef, &Origin)> {
        self.defs.iter().map(|(n, (d, o))| (n.as_str(), d, o))
    }
}

/// Checks a definition on its own: roles unique, placeholders known, modes valid.
pub fn validate(name: &str, def: &ConnectorDef) -> Result<(), ConnectorError> {
    let invalid = |message: String| ConnectorError::Invalid {
        connector: name.to_string(),
        message,
    };
    validate_swap(def).map_err(invalid)?;
    let mut roles = BTreeSet::new();
    for f in &def.files {
        match (f.role, &f.template) {
            (Role::Rendered, None) => {
                return Err(invalid("a `rendered` file needs `template: NAME`".into()));
            }
            (Role::Rendered, Some(t)) if !def.templates.contains_key(t) => {
                return Err(invalid(format!("file `rendered`: no template named `{t}`")));
            }
            (Role::Rendered, Some(_)) => {}
            (role, Some(_)) => {
                return Err(invalid(format!(
                    "file `{role}`: only a `rendered` file takes `template:`"
                )));
            }
            (_, None) => {}
        }
        if !roles.insert(f.role) {
            return Err(invalid(format!(
                "role `{}` appears twice in `files`",
                f.role
            )));
        }
        if let Some(mode) = &f.mode {
            parse_mode(mode).map_err(|e| invalid(format!("file `{}`: {e}", f.role)))?;
        }
    }
    let mut input_names: BTreeSet<String> = BTreeSet::new();
    for input in &def.inputs {
        let name = &input.name;
        let plain = !name.is_empty()
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !plain {
            return Err(invalid(format!(
                "input `{name}`: the name must be a plain file name (letters, digits, `.`, `_`, `-`)"
            )));
        }
        if !input_names.insert(name.clone()) || def.templates.contains_key(name) {
            return Err(invalid(format!(
                "input `{name}`: the name is used twice (inputs and templates share the scratch directory)"
            )));
        }
        if input.pkcs12 {
            if input.role.is_some() || input.from.is_some() || input.kubernetes_tls_secret.is_some()
            {
                return Err(invalid(format!(
                    "input `{name}`: `pkcs12: true` takes no `role:`, `from:` or `kubernetes_tls_secret:`"
                )));
            }
            if !input_names.insert(format!("{name}.password")) {
                return Err(invalid(format!(
                    "input `{name}`: `{name}.password` is used twice"
                )));
            }
            continue;
        }
        if let Some(k) = &input.kubernetes_tls_secret {
            if input.role.is_some() || input.from.is_some() {
                return Err(invalid(format!(
                    "input `{name}`: give exactly one of `role:`, `from:` or `kubernetes_tls_secret:`"
                )));
            }
            for (what, text) in [("name", &k.name), ("namespace", &k.namespace)] {
                placeholders(text).map_err(|e| invalid(format!("input `{name}` {what}: {e}")))?;
            }
            continue;
        }
        match (&input.role, &input.from) {
            (Some(Role::Rendered | Role::Keystore), None) => {
                return Err(invalid(format!(
                    "input `{name}`: role `{}` cannot be an input",
                    input.role.unwrap_or(Role::Rendered)
                )));
            }
            (Some(_), None) => {}
            (None, Some(param)) if def.params.contains_key(param) => {}
            (None, Some(param)) => {
                return Err(invalid(format!(
                    "input `{name}`: `from: {param}` names no param of this connector"
                )));
            }
            _ => {
                return Err(invalid(format!(
                    "input `{name}`: give exactly one of `role:` or `from:`"
                )));
            }
        }
    }
    let known = known_placeholders(def);
    let check = |what: &str, text: &str| -> Result<(), ConnectorError> {
        for p in placeholders(text).map_err(|e| invalid(format!("{what}: {e}")))? {
            if !known.contains(&p) {
                let hint = did_you_mean(&p, known.iter().map(String::as_str))
                    .map(|s| format!(" (did you mean `{{{s}}}`?)"))
                    .unwrap_or_default();
                return Err(invalid(format!(
                    "{what}: unknown placeholder `{{{p}}}`{hint}"
                )));
            }
        }
        Ok(())
    };
    for f in &def.files {
        check(&format!("file `{}` path", f.role), &f.path)?;
    }
    for (tname, body) in &def.templates {
        check(&format!("template `{tname}`"), body)?;
    }
    for i in &def.inputs {
        if let Some(k) = &i.kubernetes_tls_secret {
            check(&format!("input `{}` name", i.name), &k.name)?;
            check(&format!("input `{}` namespace", i.name), &k.namespace)?;
        }
    }
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
                return Err(invalid(format!("{section}[{i}] is an empty command")));
            }
            for arg in cmd {
                check(&format!("{section}[{i}]"), arg)?;
                let found = placeholders(arg).unwrap_or_default();
                let whole = found.len() == 1 && *arg == format!("{{{}}}", found[0]);
                let inside = found.iter().any(|p| p.starts_with("words."));
                if inside && (!whole || section == "apply") {
                    return Err(invalid(format!(
                        "{section}[{i}]: `{{words.PARAM}}` must be a whole argument (of preview, test, reload, alive, start or version)"
                    )));
                }
            }
        }
    }
    // snapshot and restore may also name the backup set and the snapshots; prune's delete
    // names the version it removes.
    let mut known_backup = known.clone();
    known_backup.insert("backup".into());
    for s in &def.snapshot {
        known_backup.insert(format!("snapshot.{}", s.save));
    }
    let check_with = |known: &BTreeSet<String>, what: &str, cmd: &Command| {
        if cmd.is_empty() {
            return Err(invalid(format!("{what} is an empty command")));
        }
        for arg in cmd {
            for p in placeholders(arg).map_err(|e| invalid(format!("{what}: {e}")))? {
                if !known.contains(&p) || p.starts_with("words.") {
                    return Err(invalid(format!("{what}: unknown placeholder `{{{p}}}`")));
                }
            }
        }
        Ok(())
    };
    for (i, s) in def.snapshot.iter().enumerate() {
        check_with(&known_backup, &format!("snapshot[{i}]"), &s.run)?;
    }
    for (i, r) in def.restore.iter().enumerate() {
        check_with(&known_backup, &format!("restore[{i}]"), r.parts().0)?;
    }
    for (section, entries) in [("apply", &def.apply), ("restore", &def.restore)] {
        for (i, r) in entries.iter().enumerate() {
            if let RestoreDef::Guarded(GuardedCommand { word: Some(w), .. }) = r {
                check(&format!("{section}[{i}].word"), w)?;
            }
        }
    }
    if def.shell == Shell::Powershell && def.swap != SwapMode::Commands {
        return Err(invalid(
            "`shell: powershell` needs `swap: commands` (each command is one PowerShell script, its statements one a line)".into(),
        ));
    }
    let mut known_object = known.clone();
    known_object.insert("object".into());
    for (i, a) in def.after_deploy.iter().enumerate() {
        let (cmd, when) = a.parts();
        check_with(&known, &format!("after_deploy[{i}]"), cmd)?;
        if let Some(param) = when
            && !def.params.contains_key(param)
        {
            return Err(invalid(format!(
                "after_deploy[{i}]: `when: {param}` names no param of this connector"
            )));
        }
    }
    for (section, defs) in [("discard", &def.discard), ("prune", &def.prune)] {
        for (i, p) in defs.iter().enumerate() {
            check_with(&known, &format!("{section}[{i}].list"), &p.list)?;
            check(&format!("{section}[{i}].prefix"), &p.prefix)?;
            check_with(&known_object, &format!("{section}[{i}].delete"), &p.delete)?;
        }
    }
    Ok(())
}

/// The sections each swap mode needs, and only those.
fn validate_swap(def: &ConnectorDef) -> Result<(), String> {
    match def.swap {
        SwapMode::Files => {
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
        }
        SwapMode::Commands => {
            if !def.files.is_empty() {
                return Err(
                    "`swap: commands` places no live file: give the material as `inputs` \
                     (staged in the private scratch directory), not `files`"
                        .into(),
                );
            }
            if def.apply.is_empty() {
                return Err(
                    "`swap: commands` needs `apply` (the commands that make the change)".into(),
                );
            }
            if def.restore.is_empty() {
                return Err(
                    "`swap: commands` needs `restore` (the commands that put the snapshot back)"
                        .into(),
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
        }
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

/// The placeholders named in `text`, in order.
pub fn placeholders(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    scan(text, |p| {
        out.push(p.to_string());
        Ok(String::new())
    })?;
    Ok(out)
}

/// Replaces every `{name}` in `text` with `values[name]`; `{{`/`}}` are literal braces.
pub fn render(text: &str, values: &BTreeMap<String, String>) -> Result<String, String> {
    scan(text, |p| {
        values
            .get(p)
            .cloned()
            .ok_or_else(|| format!("unknown placeholder `{{{p}}}`"))
    })
}

/// [`render`] with a callback: each `{name}` becomes `f(name)`; `{{`/`}}` are literal braces.
pub fn scan_placeholders(
    text: &str,
    f: impl FnMut(&str) -> Result<String, String>,
) -> Result<String, String> {
    scan(text, f)
}

fn scan(text: &str, mut f: impl FnMut(&str) -> Result<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("{{") {
            out.push('{');
            rest = after;
        } else if let Some(after) = tail.strip_prefix("}}") {
            out.push('}');
            rest = after;
        } else if tail.starts_with('}') {
            return Err("unmatched `}` (write `}}` for a literal brace)".into());
        } else {
            let end = tail
                .find('}')
                .ok_or("unclosed `{` (write `{{` for a literal brace)")?;
            let name = &tail[1..end];
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-');
            if !valid {
                return Err(format!("`{{{name}}}` is not a placeholder name"));
            }
            out.push_str(&f(name)?);
            rest = &tail[end + 1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses an octal mode string such as "0640".
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    let mode = u32::from_str_radix(digits, 8)
        .map_err(|_| format!("mode `{s}` is not an octal number like \"0640\""))?;
    if mode > 0o7777 {
        return Err(format!("mode `{s}` is out of range"));
    }
    if mode & 0o002 != 0 {
        return Err(format!(
            "mode `{s}` is world-writable; certctl refuses to deploy such files"
        ));
    }
    Ok(mode)
}

/// The closest candidate to `word`, if any is close enough to be worth suggesting.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_parses_and_validates() {
        let cat = Catalogue::builtin();
        for (name, def, _) in cat.iter() {
            validate(name, def).unwrap();
        }
        assert!(cat.get("nginx").is_ok());
        assert!(cat.get("ssh").is_ok());
    }

    #[test]
    fn render_substitutes_and_escapes() {
        let values = BTreeMap::from([
            ("a".to_string(), "x y".to_string()),
            ("staged.key".to_string(), "/k".into()),
        ]);
        assert_eq!(
            render("{a}-{staged.key}-{{lit}}", &values).unwrap(),
            "x y-/k-{lit}"
        );
        assert!(
            render("{nope}", &values)
                .unwrap_err()
                .contains("unknown placeholder `{nope}`")
        );
        assert!(render("{a", &values).unwrap_err().contains("unclosed"));
        assert!(render("a}", &values).unwrap_err().contains("unmatched"));
        assert!(
            render("{a b}", &values)
                .unwrap_err()
                .contains("not a placeholder")
        );
    }

    #[test]
    fn validate_rejects_unknown_placeholder_with_hint() {
        let mut def = Catalogue::builtin().get("nginx").unwrap().clone();
        def.reload = vec![vec!["{nginxx}".into(), "-s".into(), "reload".into()]];
        let err = validate("mine", &def).unwrap_err().to_string();
        assert!(err.contains("unknown placeholder `{nginxx}`"), "{err}");
        assert!(err.contains("did you mean `{nginx}`"), "{err}");
    }

    #[test]
    fn validate_rejects_duplicate_roles_and_bad_modes() {
        let mut def = Catalogue::builtin().get("nginx").unwrap().clone();
        def.files.push(def.files[0].clone());
        assert!(
            validate("x", &def)
                .unwrap_err()
                .to_string()
                .contains("appears twice")
        );
        let mut def = Catalogue::builtin().get("nginx").unwrap().clone();
        def.files[0].mode = Some("0666".into());
        assert!(
            validate("x", &def)
                .unwrap_err()
                .to_string()
                .contains("world-writable")
        );
        def.files[0].mode = Some("rw-r--r--".into());
        assert!(
            validate("x", &def)
                .unwrap_err()
                .to_string()
                .contains("octal")
        );
    }

    #[test]
    fn user_connector_may_not_shadow_builtin() {
        let def = Catalogue::builtin().get("ssh").unwrap().clone();
        let user = BTreeMap::from([("nginx".to_string(), def)]);
        assert!(
            Catalogue::builtin()
                .with_user(&user)
                .unwrap_err()
                .to_string()
                .contains("built-in")
        );
    }

    #[test]
    fn validate_checks_inputs() {
        let base = Catalogue::builtin().get("javakeystore").unwrap().clone();
        assert!(known_placeholders(&base).contains("input.storepass"));
        let err = |f: fn(&mut ConnectorDef)| {
            let mut def = base.clone();
            f(&mut def);
            validate("x", &def).unwrap_err().to_string()
        };
        assert!(err(|d| d.inputs[0].name = "../x".into()).contains("plain file name"));
        assert!(err(|d| d.inputs[1].name = "storepass".into()).contains("used twice"));
        assert!(err(|d| d.inputs[0].from = Some("nope".into())).contains("names no param"));
        assert!(err(|d| d.inputs[1].from = Some("alias".into())).contains("exactly one"));
        assert!(err(|d| d.inputs[1].role = Some(Role::Keystore)).contains("cannot be an input"));
    }

    #[test]
    fn validate_checks_swap_commands_sections() {
        let base = Catalogue::builtin().get("k8ssecret").unwrap().clone();
        let err = |f: fn(&mut ConnectorDef)| {
            let mut def = base.clone();
            f(&mut def);
            validate("x", &def).unwrap_err().to_string()
        };
        let nginx = Catalogue::builtin().get("nginx").unwrap().clone();
        assert!(
            err(|d| d.files = Catalogue::builtin().get("nginx").unwrap().files.clone())
                .contains("give the material as `inputs`")
        );
        let mut ps_files = nginx.clone();
        ps_files.shell = Shell::Powershell;
        assert!(
            validate("x", &ps_files)
                .unwrap_err()
                .to_string()
                .contains("needs `swap: commands`")
        );
        assert!(err(|d| d.apply.clear()).contains("needs `apply`"));
        assert!(err(|d| d.restore.clear()).contains("needs `restore`"));
        assert!(err(|d| d.snapshot[0].save = "../x".into()).contains("plain file name"));
        assert!(err(|d| d.snapshot[0].save = "manifest".into()).contains("plain file name"));
        assert!(err(|d| d.snapshot.push(d.snapshot[0].clone())).contains("saved twice"));
        assert!(
            err(|d| d.restore[0] = RestoreDef::Guarded(GuardedCommand {
                run: vec!["x".into()],
                if_saved: Some("nope".into()),
                unless_saved: None,
                word: None,
            }))
            .contains("no snapshot is saved as `nope`")
        );
        assert!(
            err(|d| d.restore[0] = RestoreDef::Guarded(GuardedCommand {
                run: vec!["x".into()],
                if_saved: Some("secret.yaml".into()),
                unless_saved: Some("secret.yaml".into()),
                word: None,
            }))
            .contains("at most one")
        );
        assert!(
            err(|d| d.restore[0] = RestoreDef::Guarded(GuardedCommand {
                run: vec!["x".into()],
                if_saved: None,
                unless_saved: None,
                word: Some("{thumbprint}".into()),
            }))
            .contains("`word:` needs")
        );
        assert!(
            err(|d| {
                d.inputs[0].pkcs12 = true;
            })
            .contains("`pkcs12: true` takes no")
        );
        assert!(
            err(|d| d.apply[0] = RestoreDef::Always(vec!["{snapshot.secret.yaml}".into()]))
                .contains("unknown placeholder `{snapshot.secret.yaml}`")
        );
        assert!(err(|d| d.test[0].push("x{words.workloads}".into())).contains("whole argument"));
        assert!(
            err(|d| d.apply[0] = RestoreDef::Always(vec!["{words.workloads}".into()]))
                .contains("whole argument")
        );
        assert!(
            err(|d| d.apply[0] = RestoreDef::Guarded(GuardedCommand {
                run: vec!["x".into()],
                if_saved: None,
                unless_saved: Some("nope".into()),
                word: None,
            }))
            .contains("apply[0]: no snapshot is saved as `nope`")
        );
        assert!(err(|d| d.inputs[0].role = Some(Role::Key)).contains("exactly one of"));
        assert!(
            err(|d| d.after_deploy = vec![AfterDeployDef::When(WhenCommand {
                run: vec!["x".into()],
                when: "nope".into(),
            })])
            .contains("`when: nope` names no param")
        );
        assert!(
            err(|d| d.after_deploy = vec![AfterDeployDef::Always(vec!["{snapshot.x}".into()])])
                .contains("unknown placeholder")
        );
        let mut def = nginx.clone();
        def.after_deploy = vec![AfterDeployDef::Always(vec!["x".into()])];
        assert!(
            validate("x", &def)
                .unwrap_err()
                .to_string()
                .contains("`after_deploy` needs `swap: commands`")
        );
        // The commands-only sections are refused on a files connector.
        let mut def = nginx.clone();
        def.apply = base.apply.clone();
        assert!(
            validate("x", &def)
                .unwrap_err()
                .to_string()
                .contains("`apply` needs `swap: commands`")
        );
    }

    #[test]
    fn object_name_format() {
        for ok in ["Common", "clientssl-web", "a.b_c-1", "_x"] {
            ParamFormat::ObjectName.check(ok).unwrap();
        }
        for bad in [
            "", "-x", ".x", "a b", "a;b", "a}b", "$x", "`id`", "'q'", "a/b",
        ] {
            assert!(ParamFormat::ObjectName.check(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn did_you_mean_finds_close_names() {
        assert_eq!(
            did_you_mean("fulchain_path", ["fullchain_path", "key_path"]),
            Some("fullchain_path")
        );
        assert_eq!(did_you_mean("zzz", ["fullchain_path", "key_path"]), None);
    }
}
