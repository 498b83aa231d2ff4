//! Connector definitions: the schema shared by `connectors/*.yaml` and the inventory's
//! `connectors:` section, the embedded built-ins, and `{placeholder}` rendering.
//!
//! A connector says *what* (files and their roles, preview/test/reload commands, probe
//! defaults); the engine in [`crate::deploy`] owns *how*. Rendering is plain substitution:
//! `{name}` is replaced, `{{` and `}}` are literal braces, and nothing else is interpreted.
//!
//! This file holds the catalogue (built-ins and the inventory's own); the schema's types are
//! in `connector/schema.rs`, the checks of a definition (one function per section) in
//! `connector/validate.rs`, placeholder rendering in `connector/render.rs`.

mod binding;
mod render;
mod schema;
#[cfg(test)]
mod tests;
mod validate;

pub use binding::{BindingDef, Reader};
pub use render::{did_you_mean, parse_mode, placeholders, render, scan_placeholders};
pub use schema::{
    AfterDeployDef, BuiltinTemplate, Command, ConnectorDef, FileDef, GuardedCommand, InputDef,
    KubernetesSecretDef, ParamDef, ParamFormat, PruneDef, RestoreDef, Role, Shell, SnapshotDef,
    SwapMode, TemplateDef, VerifyDefaults, WhenCommand,
};
pub use validate::{known_placeholders, validate};

use std::collections::{BTreeMap, BTreeSet};

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

/// Templates the engine provides, for connectors to reference as `{builtin: NAME}` instead of
/// each carrying a copy; embedded from `connectors/templates/`.
const BUILTIN_TEMPLATES: &[(&str, &str)] = &[(
    "pair-check.sh",
    include_str!("../connectors/templates/pair-check.sh"),
)];

/// The text of the engine's template `name`.
pub fn builtin_template(name: &str) -> Option<&'static str> {
    BUILTIN_TEMPLATES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
}

/// The names of the engine's templates.
pub fn builtin_template_names() -> impl Iterator<Item = &'static str> {
    BUILTIN_TEMPLATES.iter().map(|(n, _)| *n)
}

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
        "in_place",
        "\"auto\" (default): a live file bind-mounted into a container (a mount whose root is the file, in /proc/*/mountinfo) is written into its own inode, after the backup, instead of renamed over; \"always\": every existing live file is; \"never\": always renamed, with a warning naming the mount (swap: files, POSIX targets)",
    ),
    (
        "tmp_dir",
        "directory on the target for private scratch directories (default /tmp; shell: powershell: C:/Windows/Temp)",
    ),
];

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
