//! The connector schema: what `connectors/*.yaml` and an inventory's `connectors:` section
//! may say, as types (serde, unknown keys refused). Documented for users in
//! `connectors/README.md`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::probe::StartTls;

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

/// A connector template: its own text, with `{placeholders}`; or a reference to a template
/// the engine provides (`pair-check.sh: {builtin: pair-check.sh}`), one copy for every
/// connector that needs it (the scripts are in `connectors/templates/`). A built-in takes
/// every value as an argument, so it is written as it is, without rendering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TemplateDef {
    Text(String),
    Builtin(BuiltinTemplate),
}

/// `{builtin: NAME}`: the engine's template of that name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuiltinTemplate {
    pub builtin: String,
}

impl From<&str> for TemplateDef {
    fn from(text: &str) -> Self {
        TemplateDef::Text(text.to_owned())
    }
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
    /// before `preview` runs; `{template.NAME}` is the rendered file's path. Each is its text,
    /// or `{builtin: NAME}` for one the engine provides ([`TemplateDef::Builtin`]).
    #[serde(default)]
    pub templates: BTreeMap<String, TemplateDef>,
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
    /// How the server's own configuration is asked whether it loads the live paths
    /// ([`super::BindingDef`]); none for connectors without a configuration to ask.
    #[serde(default)]
    pub binding: Option<super::BindingDef>,
}
