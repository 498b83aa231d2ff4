//! One target's settings: defaults < its groups (in its order) < the target, field by field
//! (`params` and `commands` key by key), then paths resolved and defaults filled in.

use std::collections::BTreeMap;

use serde_saphyr::Spanned;

use super::check::{duration, unknown_name, word};
use super::raw::{Commands, RawBecome, RawSettings, RawTargetCertificate, RawVerify};
use super::resolve::Ctx;
use super::{Become, InventoryError, Location, Target, TargetCertificate, VerifySettings};
use crate::connector::Command;
use crate::source::format_duration;

/// The settings that apply to one target: each field from the most specific block that sets
/// it; `params` and `commands` key by key; `verify` field by field.
#[derive(Default, Clone)]
struct Merged<'a> {
    user: Option<&'a Spanned<String>>,
    port: Option<&'a Spanned<u16>>,
    identity_file: Option<&'a Spanned<String>>,
    known_hosts: Option<&'a Spanned<String>>,
    jump: Option<&'a Spanned<String>>,
    become_method: Option<&'a Spanned<RawBecome>>,
    connector: Option<&'a Spanned<String>>,
    certificate: Option<&'a Spanned<String>>,
    certificates: Option<&'a Spanned<Vec<Spanned<RawTargetCertificate>>>>,
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
        // One block's `certificate` or `certificates` replaces the other from a wider block.
        if s.certificate.is_some() || s.certificates.is_some() {
            self.certificate = s.certificate.as_ref();
            self.certificates = s.certificates.as_ref();
        }
        for (k, v) in s.params.iter().flat_map(|p| &p.0) {
            self.params.insert(&k.value, v);
        }
        for (k, v) in s.commands.iter().flat_map(|c| &c.0) {
            self.commands.insert(&k.value, v);
        }
        if let Some(v) = &s.verify {
            self.overlay_verify(v);
        }
    }

    fn overlay_verify(&mut self, v: &'a RawVerify) {
        fn set<'a, T>(slot: &mut Option<&'a T>, value: &'a Option<T>) {
            if let Some(v) = value {
                *slot = Some(v);
            }
        }
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

pub(super) fn target(
    ctx: &Ctx<'_>,
    index: usize,
    t: &Spanned<RawSettings>,
    defaults: Option<&RawSettings>,
    groups: &BTreeMap<&str, &RawSettings>,
) -> Result<Target, InventoryError> {
    let (host, name) = host_and_name(ctx, index, t)?;
    let label = format!("target `{}`", name.value);
    let (merged, listed) = merge(ctx, &t.value, defaults, groups)?;
    let certificates = certificates(ctx, &label, t, &merged)?;
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
        certificates,
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

/// The certificate (or certificates) the target serves, each with its params and verify.
fn certificates(
    ctx: &Ctx<'_>,
    label: &str,
    t: &Spanned<RawSettings>,
    merged: &Merged<'_>,
) -> Result<Vec<TargetCertificate>, InventoryError> {
    if let Some(c) = merged.certificate {
        return Ok(vec![TargetCertificate {
            name: c.value.clone(),
            params: BTreeMap::new(),
            verify: None,
        }]);
    }
    let Some(list) = merged.certificates else {
        return Err(ctx.err(
            t,
            format!(
                "{label} has no certificate: set `certificate:` (or `certificates:`) on the \
                 target, one of its groups, or in `defaults:`"
            ),
        ));
    };
    list.value
        .iter()
        .map(|entry| {
            let e = &entry.value;
            let mut own = merged.clone();
            if let Some(v) = &e.verify {
                own.overlay_verify(v);
            }
            let label = format!("{label}, certificate `{}`", e.certificate.value);
            Ok(TargetCertificate {
                name: e.certificate.value.clone(),
                params: e
                    .params
                    .iter()
                    .flat_map(|p| &p.0)
                    .map(|(k, v)| (k.value.clone(), v.value.clone()))
                    .collect(),
                verify: Some(verify(ctx, &label, &own)?),
            })
        })
        .collect()
}

/// The target's `host` (required) and its name (default: the host): one word each, and the
/// name usable as a file name on the target.
fn host_and_name<'a>(
    ctx: &Ctx<'_>,
    index: usize,
    t: &'a Spanned<RawSettings>,
) -> Result<(&'a Spanned<String>, &'a Spanned<String>), InventoryError> {
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
    Ok((host, name))
}

/// Defaults, then each of the target's groups in its order (each listed once, each defined),
/// then the target; with the group names as listed.
fn merge<'a>(
    ctx: &Ctx<'_>,
    raw: &'a RawSettings,
    defaults: Option<&'a RawSettings>,
    groups: &BTreeMap<&str, &'a RawSettings>,
) -> Result<(Merged<'a>, Vec<String>), InventoryError> {
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
    Ok((merged, listed))
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
        consecutive: m.consecutive.map(|c| c.value).or(d.consecutive),
        address: m.address.map(|a| a.value.clone()),
        sni: m.sni.map(|s| s.value.clone()),
        starttls: m.starttls.map(|s| s.value),
        shared: m.shared.is_some_and(|s| s.value),
    };
    if v.max_backoff < v.backoff {
        // Point at whichever of the two is written down; max_backoff when both are.
        let at = m.max_backoff.or(m.backoff).map(|s| s.referenced);
        let message = format!(
            "{label}: verify.max_backoff ({}) is less than verify.backoff ({}); set them equal \
             for fixed waits",
            format_duration(v.max_backoff),
            format_duration(v.backoff)
        );
        return Err(ctx.err_near(at, message));
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
