//! The inventory, contract v1 (docs/inventory.md): YAML types, loading with serde-saphyr, merging
//! defaults < groups < target, and validation. Every error names file, line and column.
//!
//! Does not read certificate material (that is [`crate::material`]) nor check connector
//! definitions beyond their schema (that is [`crate::connector`]).
//!
//! - `raw`: serde types mirroring the YAML (`deny_unknown_fields`, values wrapped in
//!   `serde_saphyr::Spanned` so later checks can point at them) and the parse call with its
//!   budgets (alias bombs) and one-line error wording.
//! - `resolve`: from raw to resolved, section by section; `check`: each settings block on its
//!   own, where it is written; `target`: the merge of one target's settings, path resolution
//!   and defaults.
//!
//! Errors are one line, `FILE:LINE:COL: message`; serde-saphyr's source snippets are dropped so
//! YAML errors and our own semantic errors read the same.

mod check;
mod raw;
mod resolve;
mod target;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::connector::{Command, ConnectorDef};
use crate::material::MaterialSpec;
use crate::probe::StartTls;

/// Version of the inventory contract this build reads (docs/inventory.md); bump on an
/// incompatible change.
pub const CONTRACT_VERSION: u32 = 1;

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

/// Probe settings after merging (docs/inventory.md, `verify:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifySettings {
    pub attempts: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub timeout: Duration,
    /// Matching probes in a row to pass. Unset: 2 after a deploy's reload (an old worker may
    /// still answer the first probe), 1 for `certctl verify` (no reload to race).
    pub consecutive: Option<u32>,
    /// `host:port`; default: the target's host + the connector's port.
    pub address: Option<String>,
    /// Default: the certificate's first DNS name.
    pub sni: Option<String>,
    /// Default: the connector's.
    pub starttls: Option<StartTls>,
    /// The address answers for more than this target (a load balancer, a VIP): a probe there
    /// cannot tell what this target serves, and the report says so.
    pub shared: bool,
}

impl Default for VerifySettings {
    fn default() -> Self {
        Self {
            attempts: 3,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(16),
            timeout: Duration::from_secs(10),
            consecutive: None,
            address: None,
            sni: None,
            starttls: None,
            shared: false,
        }
    }
}

impl VerifySettings {
    /// The probe schedule these settings give.
    pub fn schedule(&self) -> crate::probe::Schedule {
        crate::probe::Schedule {
            attempts: self.attempts,
            backoff: self.backoff,
            max_backoff: self.max_backoff,
        }
    }

    /// Matching probes in a row a deploy's verify asks for.
    pub fn consecutive_after_reload(&self) -> u32 {
        self.consecutive.unwrap_or(2)
    }

    /// The longest one verify with these settings may take (every wait, every probe timing
    /// out), never more than [`crate::limits::MAX_VERIFY_DURATION`]; the same deadline
    /// [`crate::probe::verify`] stops at ([`crate::probe::ProbeSpec::deadline`]).
    pub fn deadline(&self) -> Duration {
        self.schedule()
            .worst_case_confirmed(self.timeout, self.consecutive_after_reload())
            .min(crate::limits::MAX_VERIFY_DURATION)
    }
}

/// One target after merging defaults < groups (in listed order) < target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub host: String,
    /// `port:` as written; `None` = the ssh config's `Port`, else 22 (decided by the plan).
    pub port: Option<u16>,
    /// `user:` as written; `None` = the ssh config's `User`, else the local user.
    pub user: Option<String>,
    pub identity_file: Option<PathBuf>,
    /// `known_hosts:` as written; `None` = the ssh config's `UserKnownHostsFile`, else
    /// `~/.ssh/known_hosts`.
    pub known_hosts: Option<PathBuf>,
    /// `[user@]host[:port]`
    pub jump: Option<String>,
    pub become_method: Option<Become>,
    pub groups: Vec<String>,
    /// What the target serves: one certificate (`certificate:`), or several
    /// (`certificates:`) deployed as one change — never empty.
    pub certificates: Vec<TargetCertificate>,
    pub connector: String,
    /// Connector parameters; merged key by key. Each certificate's own are over these.
    pub params: BTreeMap<String, String>,
    /// Command overrides by section (`preview`, `test`, `reload`); a section replaces the
    /// connector's whole list.
    pub commands: BTreeMap<String, Vec<Command>>,
    /// The target's `verify:` (each certificate has its own, merged over it).
    pub verify: VerifySettings,
    /// Where the target is declared.
    pub location: Location,
}

/// One certificate of a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetCertificate {
    /// The certificate's name in `certificates:` (the top-level definitions).
    pub name: String,
    /// This certificate's own params (a `certificates:` entry's), over the target's.
    pub params: BTreeMap<String, String>,
    /// The target's `verify:` with this certificate's own over it, field by field (a
    /// `certificates:` entry's); `None`: the target's own (`certificate:`).
    pub verify: Option<VerifySettings>,
}

impl Target {
    /// The first certificate's name: the only one of most targets.
    pub fn certificate(&self) -> &str {
        &self.certificates[0].name
    }

    /// The names of every certificate the target serves, in order.
    pub fn certificate_names(&self) -> impl Iterator<Item = &str> {
        self.certificates.iter().map(|c| c.name.as_str())
    }

    /// The target as it applies to its certificate `index` alone: its params over the
    /// target's, its verify settings.
    pub fn for_certificate(&self, index: usize) -> Target {
        let c = &self.certificates[index];
        let mut params = self.params.clone();
        params.extend(c.params.clone());
        Target {
            certificates: vec![TargetCertificate {
                name: c.name.clone(),
                params: BTreeMap::new(),
                verify: None,
            }],
            params,
            verify: c.verify.clone().unwrap_or_else(|| self.verify.clone()),
            ..self.clone()
        }
    }
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
    /// Each certificate's policy: its own `policy:` over the top-level one.
    pub policies: BTreeMap<String, crate::policy::Policy>,
    /// `notify:`, in file order.
    pub notify: Vec<crate::notify::Notifier>,
    /// `history:`: `None` = not set (the default place), `Some(None)` = `off`.
    pub history: Option<Option<PathBuf>>,
}

/// Larger inventory files are refused before parsing.
pub const MAX_FILE_SIZE: u64 = 4 * 1024 * 1024;

/// Loads `path`. `known_connectors` are the built-in names; the inventory's own are added.
pub fn load(
    path: &Path,
    known_connectors: &std::collections::BTreeSet<String>,
) -> Result<Inventory, InventoryError> {
    let text = read(path)?;
    let raw = match raw::parse(&text) {
        Ok(Some(raw)) => raw,
        Ok(None) => {
            return Err(at(
                path,
                1,
                1,
                "the inventory is empty: it needs at least a `targets:` list",
            ));
        }
        Err(e) => return Err(at(path, e.line, e.column, e.message)),
    };
    let ctx = resolve::Ctx {
        file: path,
        base: path.parent().unwrap_or(Path::new("")),
    };
    resolve::resolve(&ctx, raw, known_connectors)
}

fn at(path: &Path, line: usize, column: usize, message: impl Into<String>) -> InventoryError {
    InventoryError {
        location: Some(Location {
            file: path.to_path_buf(),
            line,
            column,
        }),
        message: message.into(),
    }
}

/// Reads the file as UTF-8, refusing anything larger than [`MAX_FILE_SIZE`].
fn read(path: &Path) -> Result<String, InventoryError> {
    let cannot = |e: std::io::Error| InventoryError {
        location: None,
        message: format!("cannot read inventory {}: {e}", path.display()),
    };
    let too_large = || InventoryError {
        location: None,
        message: format!(
            "inventory {} is larger than {} MiB; refusing to parse it",
            path.display(),
            MAX_FILE_SIZE / (1024 * 1024)
        ),
    };
    let file = std::fs::File::open(path).map_err(cannot)?;
    if file.metadata().map_err(cannot)?.len() > MAX_FILE_SIZE {
        return Err(too_large());
    }
    // The length check above can race with a writer, and special files report 0: cap the read.
    let mut bytes = Vec::new();
    file.take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(too_large());
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        // The prefix is valid UTF-8 by definition.
        let before = std::str::from_utf8(&bytes[..valid]).unwrap_or_default();
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
        at(
            path,
            line,
            column,
            format!(
                "the inventory is not valid UTF-8 (byte 0x{:02X}); save it as UTF-8",
                bytes[valid]
            ),
        )
    })
}

/// Parses `500ms`, `2s`, `1m`, `1h`: a whole number and a unit, no spaces.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    const FORM: &str = "a whole number and a unit without spaces: 500ms, 2s, 1m, 1h";
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    if s.starts_with('-') {
        return Err(format!("`{s}`: a duration cannot be negative"));
    }
    if number.is_empty() {
        return Err(format!("`{s}` is not a duration; write {FORM}"));
    }
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{s}` is too long a duration"))?;
    let per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "" => return Err(format!("`{s}` has no unit; write {FORM}")),
        _ => return Err(format!("`{s}` is not a duration; write {FORM}")),
    };
    n.checked_mul(per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{s}` is too long a duration"))
}
