//! From the raw YAML types to an [`Inventory`]: checks each settings block where it is
//! written, merges defaults < groups (in the target's order) < target, resolves paths, and
//! fills in the defaults. Every error points at the value (or the entry) that causes it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_saphyr::Spanned;

use super::raw::{Commands, RawBecome, RawCertificate, RawInventory, RawSettings};
use super::{Become, Inventory, InventoryError, Location, Target, VerifySettings, parse_duration};
use crate::connector::{self, Command, ConnectorDef, did_you_mean};
use crate::material::MaterialSpec;
use crate::source::Source;

/// Command sections a target may override.
const SECTIONS: [&str; 5] = ["preview", "test", "reload", "alive", "start"];

/// Where the inventory is, for locations and relative paths.
pub(super) struct Ctx<'a> {
    pub file: &'a Path,
    /// The inventory's directory: relative paths resolve against it.
    pub base: &'a Path,
}

impl Ctx<'_> {
    fn location(&self, l: &serde_saphyr::Location) -> Option<Location> {
        (*l != serde_saphyr::Location::UNKNOWN).then(|| Location {
            file: self.file.to_path_buf(),
            line: l.line() as usize,
            column: l.column() as usize,
        })
    }

    fn err<T>(&self, at: &Spanned<T>, message: impl Into<String>) -> InventoryError {
        InventoryError {
            location: self.location(&at.referenced),
            message: message.into(),
        }
    }

    /// `~` and `~/x` expand to the home directory; relative paths join the inventory's dir.
    fn path(&self, what: &str, s: &Spanned<String>) -> Result<PathBuf, InventoryError> {
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

/// Which settings block is being checked, for messages and target-only keys.
#[derive(Clone, Copy)]
enum Block<'a> {
    Defaults,
    Group(&'a str),
    Target,
}

/// Names a later reference may use.
struct Known<'a> {
    certificates: &'a BTreeMap<String, MaterialSpec>,
    connectors: &'a BTreeSet<String>,
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

    let top_policy = raw.policy;
    if let Some(p) = &top_policy {
        crate::policy::check_raw(&p.value).map_err(|e| ctx.err(p, format!("policy: {e}")))?;
    }
    let mut certificates = BTreeMap::new();
    let mut policies = BTreeMap::new();
    for (name, cert) in raw.certificates.map(|e| e.0).unwrap_or_default() {
        let policy = crate::policy::merge(
            top_policy.as_ref().map(|p| &p.value),
            cert.policy.as_ref().map(|p| &p.value),
            |path| ctx.base.join(path),
        );
        let spec = certificate(ctx, &name, cert)?;
        policies.insert(name.value.clone(), policy);
        certificates.insert(name.value, spec);
    }
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
    let group_settings: BTreeMap<&str, &RawSettings> =
        groups.iter().map(|(n, s)| (n.value.as_str(), s)).collect();

    let Some(raw_targets) = raw.targets else {
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
    let mut targets = Vec::with_capacity(raw_targets.value.len());
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (index, t) in raw_targets.value.iter().enumerate() {
        check_settings(ctx, &t.value, Block::Target, &known)?;
        let target = target(
            ctx,
            index,
            t,
            defaults.as_ref().map(|d| &d.value),
            &group_settings,
        )?;
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

/// Checks one settings block on its own, where it is written, so a bad value in `defaults:`
/// or a group is reported once, at its place, whether or not a target uses it.
fn check_settings(
    ctx: &Ctx<'_>,
    s: &RawSettings,
    block: Block<'_>,
    known: &Known<'_>,
) -> Result<(), InventoryError> {
    let place = match block {
        Block::Defaults => Some("in `defaults:`".to_string()),
        Block::Group(g) => Some(format!("in group `{g}`")),
        Block::Target => None,
    };
    if let Some(place) = &place {
        let only_target = [
            ("name", s.name.as_ref().map(|v| v.referenced)),
            ("host", s.host.as_ref().map(|v| v.referenced)),
            ("groups", s.groups.as_ref().map(|v| v.referenced)),
        ];
        if let Some((key, at)) = only_target
            .into_iter()
            .find_map(|(key, at)| at.map(|at| (key, at)))
        {
            return Err(InventoryError {
                location: ctx.location(&at),
                message: format!("`{key}` can only be set on a target, not {place}"),
            });
        }
    }
    if let Some(user) = &s.user {
        word(ctx, "user", user)?;
    }
    if let Some(port) = &s.port
        && port.value == 0
    {
        return Err(ctx.err(port, "`port` must be from 1 to 65535"));
    }
    if let Some(jump) = &s.jump {
        word(ctx, "jump", jump)?;
    }
    if let Some(p) = &s.identity_file {
        ctx.path("identity_file", p)?;
    }
    if let Some(p) = &s.known_hosts {
        ctx.path("known_hosts", p)?;
    }
    if let Some(c) = &s.connector
        && !known.connectors.contains(&c.value)
    {
        return Err(ctx.err(
            c,
            unknown_name("connector", &c.value, known.connectors.iter()),
        ));
    }
    if let Some(c) = &s.certificate
        && !known.certificates.contains_key(&c.value)
    {
        return Err(ctx.err(
            c,
            unknown_name("certificate", &c.value, known.certificates.keys()),
        ));
    }
    for (key, value) in s.params.iter().flat_map(|p| &p.0) {
        if key.value.trim().is_empty() {
            return Err(ctx.err(key, "empty parameter name"));
        }
        if key.value == "mode" {
            let mode = connector::parse_mode(&value.value)
                .map_err(|e| ctx.err(value, format!("param `mode`: {e}")))?;
            if let Some(problem) = crate::limits::mode_bits_problem(mode) {
                return Err(ctx.err(
                    value,
                    format!("param `mode` \"{}\": {problem}", value.value),
                ));
            }
        }
    }
    for (section, commands) in s.commands.iter().flat_map(|c| &c.0) {
        if !SECTIONS.contains(&section.value.as_str()) {
            let hint = did_you_mean(&section.value, SECTIONS)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            return Err(ctx.err(
                section,
                format!(
                    "unknown command section `{}`{hint}; allowed: {}",
                    section.value,
                    SECTIONS.join(", ")
                ),
            ));
        }
        if let Some(i) = commands.value.0.iter().position(|argv| argv.is_empty()) {
            return Err(ctx.err(
                commands,
                format!("commands.{}[{i}] is an empty command", section.value),
            ));
        }
    }
    if let Some(v) = &s.verify {
        for (name, n) in [("attempts", &v.attempts), ("consecutive", &v.consecutive)] {
            if let Some(n) = n
                && n.value == 0
            {
                return Err(ctx.err(n, format!("verify.{name} must be at least 1")));
            }
        }
        for (name, d) in [
            ("backoff", &v.backoff),
            ("max_backoff", &v.max_backoff),
            ("timeout", &v.timeout),
        ] {
            if let Some(d) = d {
                duration(ctx, name, d)?;
            }
        }
        if let Some(t) = &v.timeout
            && duration(ctx, "timeout", t)?.is_zero()
        {
            return Err(ctx.err(t, "verify.timeout must be more than 0"));
        }
        if let Some(a) = &v.address {
            address(ctx, a)?;
        }
        if let Some(sni) = &v.sni {
            word(ctx, "verify.sni", sni)?;
        }
    }
    Ok(())
}

/// A non-empty value without whitespace or control characters that cannot be read as an
/// option (`-oProxyCommand=…`).
fn word(ctx: &Ctx<'_>, what: &str, s: &Spanned<String>) -> Result<(), InventoryError> {
    let v = s.value.as_str();
    if v.is_empty() {
        return Err(ctx.err(s, format!("`{what}` is empty")));
    }
    if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ctx.err(
            s,
            format!("`{what}` may not contain whitespace or control characters"),
        ));
    }
    if v.starts_with('-') {
        return Err(ctx.err(s, format!("`{what}` may not start with `-`")));
    }
    Ok(())
}

/// `host:port` or `[v6]:port`.
fn address(ctx: &Ctx<'_>, s: &Spanned<String>) -> Result<(), InventoryError> {
    word(ctx, "verify.address", s)?;
    let port = s
        .value
        .rsplit_once(':')
        .filter(|(host, _)| !host.is_empty() && (!host.contains(':') || host.ends_with(']')))
        .and_then(|(_, port)| port.parse::<u16>().ok())
        .filter(|p| *p != 0);
    if port.is_none() {
        return Err(ctx.err(
            s,
            format!(
                "verify.address `{}` must be `host:port` or `[ipv6]:port`",
                s.value
            ),
        ));
    }
    Ok(())
}

fn duration(ctx: &Ctx<'_>, name: &str, s: &Spanned<String>) -> Result<Duration, InventoryError> {
    parse_duration(&s.value).map_err(|e| ctx.err(s, format!("verify.{name}: {e}")))
}

fn unknown_name<'a>(
    what: &str,
    name: &str,
    candidates: impl IntoIterator<Item = &'a String>,
) -> String {
    let candidates: Vec<&str> = candidates.into_iter().map(String::as_str).collect();
    match did_you_mean(name, candidates.iter().copied()) {
        Some(s) => format!("unknown {what} `{name}` (did you mean `{s}`?)"),
        None if candidates.is_empty() => format!("unknown {what} `{name}`: none is defined"),
        None => format!("unknown {what} `{name}`; known: {}", candidates.join(", ")),
    }
}

/// The settings that apply to one target: each field from the most specific block that sets
/// it; `params` and `commands` key by key; `verify` field by field.
#[derive(Default)]
struct Merged<'a> {
    user: Option<&'a Spanned<String>>,
    port: Option<&'a Spanned<u16>>,
    identity_file: Option<&'a Spanned<String>>,
    known_hosts: Option<&'a Spanned<String>>,
    jump: Option<&'a Spanned<String>>,
    become_method: Option<&'a Spanned<RawBecome>>,
    connector: Option<&'a Spanned<String>>,
    certificate: Option<&'a Spanned<String>>,
    params: BTreeMap<&'a str, &'a Spanned<String>>,
    commands: BTreeMap<&'a str, &'a Spanned<Commands>>,
    attempts: Option<&'a Spanned<u32>>,
    backoff: Option<&'a Spanned<String>>,
    max_backoff: Option<&'a Spanned<String>>,
    timeout: Option<&'a Spanned<String>>,
    consecutive: Option<&'a Spanned<u32>>,
    address: Option<&'a Spanned<String>>,
    sni: Option<&'a Spanned<String>>,
    starttls: Option<&'a Spanned<crate::probe::StartTls>>,
    shared: Option<&'a Spanned<bool>>,
}

impl<'a> Merged<'a> {
    fn overlay(&mut self, s: &'a RawSettings) {
        fn set<'a, T>(slot: &mut Option<&'a T>, value: &'a Option<T>) {
            if let Some(v) = value {
                *slot = Some(v);
            }
        }
        set(&mut self.user, &s.user);
        set(&mut self.port, &s.port);
        set(&mut self.identity_file, &s.identity_file);
        set(&mut self.known_hosts, &s.known_hosts);
        set(&mut self.jump, &s.jump);
        set(&mut self.become_method, &s.become_method);
        set(&mut self.connector, &s.connector);
        set(&mut self.certificate, &s.certificate);
        for (k, v) in s.params.iter().flat_map(|p| &p.0) {
            self.params.insert(&k.value, v);
        }
        for (k, v) in s.commands.iter().flat_map(|c| &c.0) {
            self.commands.insert(&k.value, v);
        }
        if let Some(v) = &s.verify {
            set(&mut self.attempts, &v.attempts);
            set(&mut self.backoff, &v.backoff);
            set(&mut self.max_backoff, &v.max_backoff);
            set(&mut self.timeout, &v.timeout);
            set(&mut self.consecutive, &v.consecutive);
            set(&mut self.address, &v.address);
            set(&mut self.sni, &v.sni);
            set(&mut self.starttls, &v.starttls);
            set(&mut self.shared, &v.shared);
        }
    }
}

fn target(
    ctx: &Ctx<'_>,
    index: usize,
    t: &Spanned<RawSettings>,
    defaults: Option<&RawSettings>,
    groups: &BTreeMap<&str, &RawSettings>,
) -> Result<Target, InventoryError> {
    let raw = &t.value;
    let label = match &raw.name {
        Some(n) => format!("target `{}`", n.value),
        None => format!("target #{}", index + 1),
    };
    let Some(host) = &raw.host else {
        return Err(ctx.err(t, format!("{label} has no `host:`")));
    };
    word(ctx, "host", host)?;
    let name = raw.name.as_ref().unwrap_or(host);
    word(ctx, "name", name)?;
    if name.value.contains('/') || name.value == "." || name.value == ".." {
        return Err(ctx.err(
            name,
            format!(
                "target name `{}` may not contain `/` or be `.`/`..` (it names files on the target)",
                name.value
            ),
        ));
    }
    let label = format!("target `{}`", name.value);

    let mut merged = Merged::default();
    if let Some(d) = defaults {
        merged.overlay(d);
    }
    let mut listed: Vec<String> = Vec::new();
    for g in raw.groups.iter().flat_map(|g| &g.value) {
        let Some(settings) = groups.get(g.value.as_str()) else {
            let names: Vec<String> = groups.keys().map(|k| (*k).to_string()).collect();
            return Err(ctx.err(g, unknown_name("group", &g.value, &names)));
        };
        if listed.contains(&g.value) {
            return Err(ctx.err(g, format!("group `{}` is listed twice", g.value)));
        }
        listed.push(g.value.clone());
        merged.overlay(settings);
    }
    merged.overlay(raw);

    let Some(certificate) = merged.certificate else {
        return Err(ctx.err(
            t,
            format!(
                "{label} has no certificate: set `certificate:` on the target, one of its \
                 groups, or in `defaults:`"
            ),
        ));
    };
    let Some(connector) = merged.connector else {
        return Err(ctx.err(
            t,
            format!(
                "{label} has no connector: set `connector:` on the target, one of its groups, \
                 or in `defaults:`"
            ),
        ));
    };
    let known_hosts = merged
        .known_hosts
        .map(|p| ctx.path("known_hosts", p))
        .transpose()?;
    let verify = verify(ctx, &label, &merged)?;

    Ok(Target {
        name: name.value.clone(),
        host: host.value.clone(),
        port: merged.port.map(|p| p.value),
        user: merged.user.map(|u| u.value.clone()),
        identity_file: merged
            .identity_file
            .map(|p| ctx.path("identity_file", p))
            .transpose()?,
        known_hosts,
        jump: merged.jump.map(|j| j.value.clone()),
        become_method: merged.become_method.map(|b| match b.value {
            RawBecome::Sudo => Become::Sudo,
        }),
        groups: listed,
        certificate: certificate.value.clone(),
        connector: connector.value.clone(),
        params: merged
            .params
            .iter()
            .map(|(k, v)| ((*k).to_string(), v.value.clone()))
            .collect(),
        commands: merged
            .commands
            .iter()
            .map(|(k, v)| ((*k).to_string(), v.value.0.clone()))
            .collect::<BTreeMap<String, Vec<Command>>>(),
        verify,
        location: ctx.location(&t.referenced).unwrap_or_else(|| Location {
            file: ctx.file.to_path_buf(),
            line: 0,
            column: 0,
        }),
    })
}

fn verify(ctx: &Ctx<'_>, label: &str, m: &Merged<'_>) -> Result<VerifySettings, InventoryError> {
    let d = VerifySettings::default();
    let backoff = m.backoff.map(|s| duration(ctx, "backoff", s)).transpose()?;
    let max_backoff = m
        .max_backoff
        .map(|s| duration(ctx, "max_backoff", s))
        .transpose()?;
    let v = VerifySettings {
        attempts: m.attempts.map_or(d.attempts, |a| a.value),
        backoff: backoff.unwrap_or(d.backoff),
        max_backoff: max_backoff.unwrap_or(d.max_backoff),
        timeout: m
            .timeout
            .map(|s| duration(ctx, "timeout", s))
            .transpose()?
            .unwrap_or(d.timeout),
        consecutive: m.consecutive.map_or(d.consecutive, |c| c.value),
        address: m.address.map(|a| a.value.clone()),
        sni: m.sni.map(|s| s.value.clone()),
        starttls: m.starttls.map(|s| s.value),
        shared: m.shared.is_some_and(|s| s.value),
    };
    if v.max_backoff < v.backoff {
        // Point at whichever of the two is written down; max_backoff when both are.
        let at = m.max_backoff.or(m.backoff);
        let message = format!(
            "{label}: verify.max_backoff ({}) is less than verify.backoff ({}); set them equal \
             for fixed waits",
            humantime(v.max_backoff),
            humantime(v.backoff)
        );
        return Err(match at {
            Some(at) => ctx.err(at, message),
            None => InventoryError {
                location: None,
                message,
            },
        });
    }
    // `consecutive` above `attempts` is fine: the probes that confirm a match are extra.
    verify_limits(ctx, label, m, &v)?;
    Ok(v)
}

/// The bounds of [`crate::limits::verify_settings`], located at the setting that breaks them
/// (for their combination: the first of attempts, timeout, max_backoff, backoff written).
fn verify_limits(
    ctx: &Ctx<'_>,
    label: &str,
    m: &Merged<'_>,
    v: &VerifySettings,
) -> Result<(), InventoryError> {
    let Err(limit) = crate::limits::verify_settings(v.schedule(), v.timeout) else {
        return Ok(());
    };
    let message = format!("{label}: {}", limit.message);
    let at = match limit.setting {
        "attempts" => m.attempts.map(|a| a.referenced),
        "timeout" => m.timeout.map(|t| t.referenced),
        "max_backoff" => m.max_backoff.map(|b| b.referenced),
        _ => m
            .attempts
            .map(|a| a.referenced)
            .or(m.timeout.map(|t| t.referenced))
            .or(m.max_backoff.map(|b| b.referenced))
            .or(m.backoff.map(|b| b.referenced)),
    };
    Err(InventoryError {
        location: at.and_then(|l| ctx.location(&l)),
        message,
    })
}

/// The shortest exact spelling of `d` in the inventory's own units.
fn humantime(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0 => "0s".into(),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}
