//! From the raw YAML types to an [`Inventory`]: checks each settings block where it is
//! written (`check.rs`), merges defaults < groups (in the target's order) < target, resolves
//! paths, and fills in the defaults (`target.rs`). Every error points at the value (or the
//! entry) that causes it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde_saphyr::Spanned;

use super::check::{Block, Known, check_settings};
use super::raw::{RawCertificate, RawInventory, RawSettings};
use super::{Inventory, InventoryError, Location, parse_duration};
use crate::connector::{self, ConnectorDef};
use crate::material::MaterialSpec;
use crate::source::Source;

/// Where the inventory is, for locations and relative paths.
pub(super) struct Ctx<'a> {
    pub file: &'a Path,
    /// The inventory's directory: relative paths resolve against it.
    pub base: &'a Path,
}

impl Ctx<'_> {
    pub(super) fn location(&self, l: &serde_saphyr::Location) -> Option<Location> {
        (*l != serde_saphyr::Location::UNKNOWN).then(|| Location {
            file: self.file.to_path_buf(),
            line: l.line() as usize,
            column: l.column() as usize,
        })
    }

    pub(super) fn err<T>(&self, at: &Spanned<T>, message: impl Into<String>) -> InventoryError {
        InventoryError {
            location: self.location(&at.referenced),
            message: message.into(),
        }
    }

    /// An error at `at` when the value is written somewhere, else without a location.
    pub(super) fn err_near(
        &self,
        at: Option<serde_saphyr::Location>,
        message: impl Into<String>,
    ) -> InventoryError {
        InventoryError {
            location: at.and_then(|at| self.location(&at)),
            message: message.into(),
        }
    }

    /// `~` and `~/x` expand to the home directory; relative paths join the inventory's dir.
    pub(super) fn path(&self, what: &str, s: &Spanned<String>) -> Result<PathBuf, InventoryError> {
        let raw = s.value.as_str();
        if raw.trim().is_empty() {
            return Err(self.err(s, format!("`{what}` is empty")));
        }
        let home = || {
            home_dir().ok_or_else(|| {
                self.err(s, format!("`{what}`: cannot expand `~`: $HOME is not set"))
            })
        };
        if raw == "~" {
            return home();
        }
        if let Some(rest) = raw.strip_prefix("~/") {
            return Ok(home()?.join(rest));
        }
        if raw.starts_with('~') {
            return Err(self.err(
                s,
                format!("`{what}`: `~user` paths are not supported; write the full path"),
            ));
        }
        Ok(self.base.join(raw))
    }
}

fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(std::env::home_dir)
}

pub(super) fn resolve(
    ctx: &Ctx<'_>,
    raw: RawInventory,
    builtin_connectors: &BTreeSet<String>,
) -> Result<Inventory, InventoryError> {
    let mut connectors = BTreeMap::new();
    for (name, def) in raw.connectors.map(|e| e.0).unwrap_or_default() {
        check_connector(ctx, &name, &def, builtin_connectors)?;
        connectors.insert(name.value, def);
    }
    let mut connector_names = builtin_connectors.clone();
    connector_names.extend(connectors.keys().cloned());
    let (certificates, policies) = certificates(ctx, raw.certificates, raw.policy)?;
    let mut notify = Vec::new();
    for n in raw.notify.map(|n| n.value).unwrap_or_default() {
        notify.push(crate::notify::resolve(&n.value).map_err(|e| ctx.err(&n, e))?);
    }
    let history = match &raw.history {
        None => None,
        Some(h) if h.value == "off" => Some(None),
        Some(h) => Some(Some(ctx.path("history", h)?)),
    };
    let known = Known {
        certificates: &certificates,
        connectors: &connector_names,
    };
    let defaults = raw.defaults;
    if let Some(d) = &defaults {
        check_settings(ctx, &d.value, Block::Defaults, &known)?;
    }
    let groups: Vec<(Spanned<String>, RawSettings)> = raw
        .groups
        .map(|e| e.0)
        .unwrap_or_default()
        .into_iter()
        .map(|(name, settings)| (name, settings.unwrap_or_default()))
        .collect();
    for (name, settings) in &groups {
        check_settings(ctx, settings, Block::Group(&name.value), &known)?;
    }
    let defaults = defaults.as_ref().map(|d| &d.value);
    let targets = targets(ctx, raw.targets, defaults, &groups, &known)?;
    Ok(Inventory {
        path: ctx.file.to_path_buf(),
        certificates,
        targets,
        connectors,
        groups: groups.into_iter().map(|(n, _)| n.value).collect(),
        policies,
        notify,
        history,
    })
}

/// Every certificate's material spec, and its policy (the top-level one merged in).
#[expect(
    clippy::type_complexity,
    reason = "the two maps, by certificate name, that Inventory holds"
)]
fn certificates(
    ctx: &Ctx<'_>,
    raw: Option<super::raw::Entries<RawCertificate>>,
    top_policy: Option<Spanned<crate::policy::RawPolicy>>,
) -> Result<
    (
        BTreeMap<String, MaterialSpec>,
        BTreeMap<String, crate::policy::Policy>,
    ),
    InventoryError,
> {
    if let Some(p) = &top_policy {
        crate::policy::check_raw(&p.value).map_err(|e| ctx.err(p, format!("policy: {e}")))?;
    }
    let mut certificates = BTreeMap::new();
    let mut policies = BTreeMap::new();
    for (name, cert) in raw.map(|e| e.0).unwrap_or_default() {
        let policy = crate::policy::merge(
            top_policy.as_ref().map(|p| &p.value),
            cert.policy.as_ref().map(|p| &p.value),
            |path| ctx.base.join(path),
        );
        let spec = certificate(ctx, &name, cert)?;
        policies.insert(name.value.clone(), policy);
        certificates.insert(name.value, spec);
    }
    Ok((certificates, policies))
}

/// Every target, checked and merged; names unique.
fn targets(
    ctx: &Ctx<'_>,
    raw_targets: Option<Spanned<Vec<Spanned<RawSettings>>>>,
    defaults: Option<&RawSettings>,
    groups: &[(Spanned<String>, RawSettings)],
    known: &Known<'_>,
) -> Result<Vec<super::Target>, InventoryError> {
    let Some(raw_targets) = raw_targets else {
        return Err(InventoryError {
            location: Some(Location {
                file: ctx.file.to_path_buf(),
                line: 1,
                column: 1,
            }),
            message: "the inventory has no `targets:` list".into(),
        });
    };
    if raw_targets.value.is_empty() {
        return Err(ctx.err(&raw_targets, "`targets:` is empty"));
    }
    let group_settings: BTreeMap<&str, &RawSettings> =
        groups.iter().map(|(n, s)| (n.value.as_str(), s)).collect();
    let mut targets = Vec::with_capacity(raw_targets.value.len());
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (index, t) in raw_targets.value.iter().enumerate() {
        check_settings(ctx, &t.value, Block::Target, known)?;
        let target = super::target::target(ctx, index, t, defaults, &group_settings)?;
        if let Some(first_line) = seen.get(&target.name) {
            let at = t.value.name.as_ref().or(t.value.host.as_ref());
            return Err(InventoryError {
                location: ctx.location(&at.map_or(t.referenced, |a| a.referenced)),
                message: format!(
                    "duplicate target name `{}` (first declared at line {first_line}); names \
                     must be unique",
                    target.name
                ),
            });
        }
        seen.insert(target.name.clone(), target.location.line);
        targets.push(target);
    }
    Ok(targets)
}

fn check_connector(
    ctx: &Ctx<'_>,
    name: &Spanned<String>,
    def: &ConnectorDef,
    builtin: &BTreeSet<String>,
) -> Result<(), InventoryError> {
    if builtin.contains(&name.value) {
        return Err(ctx.err(
            name,
            format!(
                "connector `{}` is a built-in connector name; give yours another name, or \
                 override single commands per target under `commands:`",
                name.value
            ),
        ));
    }
    connector::validate(&name.value, def).map_err(|e| ctx.err(name, e.to_string()))
}

fn certificate(
    ctx: &Ctx<'_>,
    name: &Spanned<String>,
    raw: RawCertificate,
) -> Result<MaterialSpec, InventoryError> {
    let n = &name.value;
    let cert = source(ctx, n, "cert", &raw.cert, &raw.cert_env, &raw.cert_command)?;
    let chain = source(
        ctx,
        n,
        "chain",
        &raw.chain,
        &raw.chain_env,
        &raw.chain_command,
    )?;
    let key = source(ctx, n, "key", &raw.key, &raw.key_env, &raw.key_command)?;
    let (Some(cert), Some(key)) = (cert, key) else {
        let what = if raw.cert.is_none() && raw.cert_env.is_none() && raw.cert_command.is_none() {
            "cert"
        } else {
            "key"
        };
        return Err(ctx.err(
            name,
            format!("certificate `{n}` needs one of `{what}`, `{what}_env` or `{what}_command`"),
        ));
    };
    let command_timeout = match &raw.command_timeout {
        Some(t) => {
            let d = parse_duration(&t.value)
                .map_err(|e| ctx.err(t, format!("certificate `{n}`: command_timeout: {e}")))?;
            if d.is_zero() {
                return Err(ctx.err(
                    t,
                    format!("certificate `{n}`: command_timeout must be more than 0"),
                ));
            }
            d
        }
        None => crate::source::DEFAULT_COMMAND_TIMEOUT,
    };
    let location = ctx.location(&name.referenced);
    if let Some(p) = &raw.policy {
        crate::policy::check_raw(&p.value)
            .map_err(|e| ctx.err(p, format!("certificate `{n}`: policy: {e}")))?;
    }
    Ok(MaterialSpec {
        name: n.clone(),
        cert,
        chain,
        key,
        command_timeout,
        location,
    })
}

/// One input of a certificate (`cert`, `chain` or `key`): at most one of the file, the
/// `_env` variable and the `_command` argv.
fn source(
    ctx: &Ctx<'_>,
    n: &str,
    field: &str,
    file: &Option<Spanned<String>>,
    env: &Option<Spanned<String>>,
    command: &Option<Spanned<Vec<String>>>,
) -> Result<Option<Source>, InventoryError> {
    let mut sources = Vec::new();
    if let Some(path) = file {
        sources.push((path.referenced, Source::File(ctx.path(field, path)?)));
    }
    if let Some(var) = env {
        let v = var.value.as_str();
        if v.is_empty() || v.contains(['=', '\0']) {
            return Err(ctx.err(
                var,
                format!("certificate `{n}`: `{field}_env` must name an environment variable"),
            ));
        }
        sources.push((var.referenced, Source::Env(v.to_string())));
    }
    if let Some(argv) = command {
        if argv.value.first().is_none_or(|a| a.is_empty()) {
            return Err(ctx.err(
                argv,
                format!(
                    "certificate `{n}`: `{field}_command` needs an argv like [pass, show, www]"
                ),
            ));
        }
        sources.push((argv.referenced, Source::Command(argv.value.clone())));
    }
    let mut sources = sources.into_iter();
    let first = sources.next().map(|(_, s)| s);
    if let Some((second, _)) = sources.next() {
        return Err(InventoryError {
            location: ctx.location(&second),
            message: format!(
                "certificate `{n}`: set only one of `{field}`, `{field}_env` and `{field}_command`"
            ),
        });
    }
    Ok(first)
}
