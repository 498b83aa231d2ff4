//! Checks of one settings block (`defaults:`, a group, a target) on its own, where it is
//! written: a bad value is reported once, at its place, whether or not a target uses it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_saphyr::Spanned;

use super::raw::{RawSettings, RawVerify};
use super::resolve::Ctx;
use super::{InventoryError, parse_duration};
use crate::connector::{self, did_you_mean};
use crate::material::MaterialSpec;

/// Command sections a target may override.
const SECTIONS: [&str; 5] = ["preview", "test", "reload", "alive", "start"];

/// Which settings block is being checked, for messages and target-only keys.
#[derive(Clone, Copy)]
pub(super) enum Block<'a> {
    Defaults,
    Group(&'a str),
    Target,
}

/// Names a later reference may use.
pub(super) struct Known<'a> {
    pub(super) certificates: &'a BTreeMap<String, MaterialSpec>,
    pub(super) connectors: &'a BTreeSet<String>,
}

/// Checks one settings block on its own, where it is written, so a bad value in `defaults:`
/// or a group is reported once, at its place, whether or not a target uses it.
pub(super) fn check_settings(
    ctx: &Ctx<'_>,
    s: &RawSettings,
    block: Block<'_>,
    known: &Known<'_>,
) -> Result<(), InventoryError> {
    check_placement(ctx, s, block)?;
    check_connection(ctx, s)?;
    check_references(ctx, s, known)?;
    check_params(ctx, s)?;
    check_certificates(ctx, s)?;
    check_commands(ctx, s)?;
    if let Some(v) = &s.verify {
        check_verify(ctx, v)?;
    }
    Ok(())
}

/// `name`, `host` and `groups` belong to a target only.
fn check_placement(ctx: &Ctx<'_>, s: &RawSettings, block: Block<'_>) -> Result<(), InventoryError> {
    let place = match block {
        Block::Defaults => "in `defaults:`".to_string(),
        Block::Group(g) => format!("in group `{g}`"),
        Block::Target => return Ok(()),
    };
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
    Ok(())
}

/// How to log in: `user`, `port`, `jump`, `identity_file`, `known_hosts`.
fn check_connection(ctx: &Ctx<'_>, s: &RawSettings) -> Result<(), InventoryError> {
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
    Ok(())
}

/// `connector` and `certificate` name one that exists (with a suggestion if not).
fn check_references(
    ctx: &Ctx<'_>,
    s: &RawSettings,
    known: &Known<'_>,
) -> Result<(), InventoryError> {
    if let Some(c) = &s.connector
        && !known.connectors.contains(&c.value)
    {
        return Err(ctx.err(
            c,
            unknown_name("connector", &c.value, known.connectors.iter()),
        ));
    }
    let listed = s.certificates.iter().flat_map(|l| &l.value);
    for c in s
        .certificate
        .iter()
        .chain(listed.map(|e| &e.value.certificate))
    {
        if !known.certificates.contains_key(&c.value) {
            return Err(ctx.err(
                c,
                unknown_name("certificate", &c.value, known.certificates.keys()),
            ));
        }
    }
    Ok(())
}

/// `certificates:`: not beside `certificate:`, not empty, each certificate once; each entry's
/// params and verify as a block's.
fn check_certificates(ctx: &Ctx<'_>, s: &RawSettings) -> Result<(), InventoryError> {
    let Some(list) = &s.certificates else {
        return Ok(());
    };
    if s.certificate.is_some() {
        return Err(ctx.err(
            list,
            "set `certificate:` (one) or `certificates:` (several), not both",
        ));
    }
    if list.value.is_empty() {
        return Err(ctx.err(list, "`certificates:` lists no certificate"));
    }
    let mut seen = BTreeSet::new();
    for entry in &list.value {
        let name = &entry.value.certificate;
        if !seen.insert(name.value.as_str()) {
            return Err(ctx.err(
                name,
                format!(
                    "certificate `{}` is listed twice in `certificates:`",
                    name.value
                ),
            ));
        }
        check_param_entries(ctx, entry.value.params.iter().flat_map(|p| &p.0))?;
        if let Some(v) = &entry.value.verify {
            check_verify(ctx, v)?;
        }
    }
    Ok(())
}

/// `params`: names not empty; the engine's `mode` a valid mode.
fn check_params(ctx: &Ctx<'_>, s: &RawSettings) -> Result<(), InventoryError> {
    check_param_entries(ctx, s.params.iter().flat_map(|p| &p.0))
}

fn check_param_entries<'a>(
    ctx: &Ctx<'_>,
    entries: impl Iterator<Item = &'a (Spanned<String>, Spanned<String>)>,
) -> Result<(), InventoryError> {
    for (key, value) in entries {
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
    Ok(())
}

/// `commands`: only the sections a target may override, no empty command.
fn check_commands(ctx: &Ctx<'_>, s: &RawSettings) -> Result<(), InventoryError> {
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
    Ok(())
}

/// `verify`: counts at least 1, durations that parse (a timeout above 0), an address with a
/// port, an SNI that is one word.
fn check_verify(ctx: &Ctx<'_>, v: &RawVerify) -> Result<(), InventoryError> {
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
    Ok(())
}

/// A non-empty value without whitespace or control characters that cannot be read as an
/// option (`-oProxyCommand=…`).
pub(super) fn word(ctx: &Ctx<'_>, what: &str, s: &Spanned<String>) -> Result<(), InventoryError> {
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

pub(super) fn duration(
    ctx: &Ctx<'_>,
    name: &str,
    s: &Spanned<String>,
) -> Result<Duration, InventoryError> {
    parse_duration(&s.value).map_err(|e| ctx.err(s, format!("verify.{name}: {e}")))
}

pub(super) fn unknown_name<'a>(
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
