//! The inventory, contract v1 (DESIGN §3): YAML types, loading with serde-saphyr, merging
//! defaults < groups < target, and validation. Every error names file, line and column.
//!
//! Does not read certificate material (that is [`crate::material`]) nor check connector
//! definitions beyond their schema (that is [`crate::connector`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::connector::{Command, ConnectorDef};
use crate::material::MaterialSpec;
use crate::probe::StartTls;

/// A place in an inventory file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// An inventory problem: where, and what.
#[derive(Debug, thiserror::Error)]
pub struct InventoryError {
    pub location: Option<Location>,
    pub message: String,
}

impl std::fmt::Display for InventoryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.location {
            Some(l) => write!(f, "{l}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// `become:` — how to gain privileges on the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Become {
    Sudo,
}

/// Probe settings after merging (DESIGN §3 `verify:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifySettings {
    pub attempts: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub timeout: Duration,
    pub consecutive: u32,
    /// `host:port`; default: the target's host + the connector's port.
    pub address: Option<String>,
    /// Default: the certificate's first DNS name.
    pub sni: Option<String>,
    /// Default: the connector's.
    pub starttls: Option<StartTls>,
}

impl Default for VerifySettings {
    fn default() -> Self {
        Self {
            attempts: 3,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(16),
            timeout: Duration::from_secs(10),
            consecutive: 1,
            address: None,
            sni: None,
            starttls: None,
        }
    }
}

/// One target after merging defaults < groups (in listed order) < target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub identity_file: Option<PathBuf>,
    pub known_hosts: PathBuf,
    /// `[user@]host[:port]`
    pub jump: Option<String>,
    pub become_method: Option<Become>,
    pub groups: Vec<String>,
    pub certificate: String,
    pub connector: String,
    /// Connector parameters; merged key by key.
    pub params: BTreeMap<String, String>,
    /// Command overrides by section (`preview`, `test`, `reload`); a section replaces the
    /// connector's whole list.
    pub commands: BTreeMap<String, Vec<Command>>,
    pub verify: VerifySettings,
    /// Where the target is declared.
    pub location: Location,
}

/// A loaded, merged and validated inventory.
#[derive(Debug, Clone)]
pub struct Inventory {
    pub path: PathBuf,
    pub certificates: BTreeMap<String, MaterialSpec>,
    pub targets: Vec<Target>,
    /// User-defined connectors, schema-checked.
    pub connectors: BTreeMap<String, ConnectorDef>,
    /// Declared group names.
    pub groups: Vec<String>,
}

/// Loads `path`. `known_connectors` are the built-in names; the inventory's own are added.
pub fn load(path: &Path, known_connectors: &std::collections::BTreeSet<String>) -> Result<Inventory, InventoryError> {
    todo!("{path:?}{known_connectors:?}")
}

/// Parses `500ms`, `2s`, `1m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    todo!("{s}")
}
