//! Step 4, **inspect**: what each live file is now — a regular file (hash, mode, owner,
//! SELinux context), a symlink (its text, and the file it resolves to when followed), missing
//! (or a symlink pointing nowhere) — the public half of a live key that differs from the new
//! one, owner names resolved, the scratch directory made; and one probe of what is served.
//! One remote script (`scripts/inspect.sh`), usually run in the lock's command; its output is
//! read by [`parse`], a pure function tested from case files (`cases/inspect/`).

use std::borrow::Cow;
use std::collections::BTreeMap;

use super::content::new_sha256;
use super::names::lock_dir;
use super::script::{self, STRICT, records, stderr_note};
use crate::connector::Role;
use crate::plan::{PlannedFile, TargetPlan};
use crate::probe::{self, Served};
use crate::ssh::quote::Script;
use crate::ssh::{ExecOutput, Session};

/// A live regular file's metadata and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Stat {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// SELinux context, where the target has one.
    pub selinux: Option<String>,
    pub sha256: String,
}

/// What is at a live path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum LiveState {
    /// A regular file (at the path, or where a followed symlink resolves to).
    File(Stat),
    /// Nothing (a followed symlink pointing nowhere counts as missing).
    Absent,
    /// A symlink that is replaced by a regular file (`follow_symlinks: "false"`).
    Link,
}

/// What inspect found about one live file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LiveFile {
    pub state: LiveState,
    /// The path is a symlink with this text.
    pub link: Option<String>,
    /// The file written: the path, or what a followed symlink resolves to.
    pub write: String,
    /// A key-bearing file whose hash is not the new content's: the public key (PEM) openssl
    /// read from it, `-` when it could not; `None` when not checked.
    pub key_pub: Option<String>,
    /// A certificate file or bundle whose hash is not the new content's: its CERTIFICATE
    /// blocks (never a key block), as read on the target.
    pub certs_pem: Option<String>,
    /// The file's inode and the mounts whose root it is (a container's bind mount).
    pub binds: super::mounts::Binds,
}

/// Owner and group ids resolved from names, when the file needs them.
pub(super) type OwnerIds = (Option<u32>, Option<u32>);

/// What inspect returns: each file (in plan order) and its owner ids.
pub(super) type Inspected = Vec<(LiveFile, OwnerIds)>;

/// The inspect script's commands (it needs [`script::INSPECT`], and [`script::LOCK`] for the
/// sweep beside followed symlinks' targets).
/// `all_certs`: read back every certificate file, also one that holds the new content
/// (`certctl status` shows each file's own certificate).
pub(super) fn commands(s: &mut Script, plan: &TargetPlan, create_scratch: bool, all_certs: bool) {
    for (i, f) in plan.files.iter().enumerate() {
        let idx = i.to_string();
        // Explicit owner/group always apply; the connector's defaults only to a new file.
        for (explicit, default, func) in [
            (&f.explicit_owner, &f.default_owner, "certctl_uid"),
            (&f.explicit_group, &f.default_group, "certctl_gid"),
        ] {
            match (explicit, default) {
                (Some(name), _) => {
                    s.cmd(&[func, name, &idx]);
                }
                (None, Some(name)) => {
                    s.cmd(&["certctl_if_new", &f.path, func, name, &idx]);
                }
                (None, None) => {}
            }
        }
    }
    let mut quads = vec!["certctl_files".to_string()];
    for (i, f) in plan.files.iter().enumerate() {
        // `-` matches no hash: the file is read back whatever it holds.
        let new = if all_certs {
            "-".to_string()
        } else {
            new_sha256(plan.material(f.cert), f)
        };
        let check = match f.role {
            Role::Key => format!("k:{new}"),
            Role::Bundle => format!("b:{new}"),
            Role::Cert | Role::Fullchain => format!("c:{new}"),
            _ => "-".into(),
        };
        let follow = if f.follow_symlinks { "1" } else { "0" };
        quads.extend([i.to_string(), follow.into(), check, f.path.clone()]);
    }
    s.cmd(&quads);
    quads[0] = "certctl_reads".into();
    s.cmd(&quads);
    super::mounts::commands(s, plan);
    if create_scratch && needs_scratch(plan) {
        let mut argv = vec![
            "certctl_scratch".to_string(),
            plan.scratch_dir.clone(),
            lock_dir(plan),
        ];
        argv.extend(plan.scratch_subdirs.iter().cloned());
        s.cmd(&argv);
    }
}

/// Whether this run uses its scratch directory: for inputs, templates, keystore working
/// copies, `swap: commands`, or a command that names `{tmpdir}`. A run that does not is spared
/// the `mkdir` (cleanup removes the path either way).
pub(super) fn needs_scratch(plan: &TargetPlan) -> bool {
    plan.commands.is_some()
        || !plan.inputs.is_empty()
        || !plan.templates.is_empty()
        || plan.files.iter().any(|f| f.work.is_some())
        || [
            &plan.preview,
            &plan.test,
            &plan.reload,
            &plan.alive,
            &plan.start,
        ]
        .into_iter()
        .flatten()
        .flatten()
        .any(|arg| arg.contains(&plan.scratch_dir))
        || !plan.scratch_subdirs.is_empty()
}

/// Runs inspect on its own (no lock: `certctl status`, or again after a recovery), with the
/// probe of what is served meanwhile.
pub(super) async fn run(
    session: &Session,
    plan: &TargetPlan,
    create_scratch: bool,
) -> Result<(Inspected, ServedNow), String> {
    let mut s = Script::new();
    s.raw(STRICT).raw(*script::INSPECT);
    commands(&mut s, plan, create_scratch, !create_scratch);
    let (out, served) = tokio::join!(session.exec_script(&s, None), probe_served(plan));
    let out = out.map_err(|e| e.to_string())?;
    Ok((parse(&plan.files, &out)?, successes(served)))
}

/// What each of the target's certificates' endpoints serves, by certificate (`None`: no TLS
/// endpoint, or the probe failed).
pub(super) type ServedNow = Vec<Option<Served>>;

/// What the target serves now, each certificate's endpoint probed once, all at once (`None`
/// without a TLS endpoint).
pub(super) async fn probe_served(
    plan: &TargetPlan,
) -> Vec<Option<Result<Served, probe::ProbeError>>> {
    let probes = plan.certs.iter().map(|c| async move {
        let p = &c.probe;
        if c.has_probe {
            Some(probe::probe_once_for(p, p.timeout).await)
        } else {
            None
        }
    });
    futures::future::join_all(probes).await
}

/// The probes that answered, by certificate.
pub(super) fn successes(served: Vec<Option<Result<Served, probe::ProbeError>>>) -> ServedNow {
    served.into_iter().map(|s| s.and_then(Result::ok)).collect()
}

/// What inspect saw served: `ADDRESS serves FINGERPRINT` (or `no certificate`) per
/// certificate's endpoint, or that there is no TLS endpoint to probe.
pub(super) fn served_detail(plan: &TargetPlan, served: &[Option<Served>]) -> String {
    if !plan.has_probe() {
        return "no TLS endpoint to probe".into();
    }
    let each = plan.certs.iter().enumerate().filter(|(_, c)| c.has_probe);
    each.map(|(i, c)| {
        let leaf = served
            .get(i)
            .and_then(Option::as_ref)
            .map(|s| s.leaf.to_string())
            .unwrap_or_else(|| "no certificate".into());
        let sni = match plan.certs.len() {
            1 => String::new(),
            _ => format!(" ({})", c.probe.sni),
        };
        format!("{}{sni} serves {leaf}", c.probe.address)
    })
    .collect::<Vec<_>>()
    .join("; ")
}

/// Reads the inspect script's output (`out` holds only its part). Every line must be one of
/// the script's: anything else means it did not run as written, and a guess could lose a file.
pub(super) fn parse(files: &[PlannedFile], out: &ExecOutput) -> Result<Inspected, String> {
    if !out.success() {
        return Err(script::command_failure("inspect script", out));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (text, binds) = super::mounts::split_off(&stdout);
    let n = files.len();
    let mut live: Vec<(LiveFile, OwnerIds)> = files
        .iter()
        .map(|f| {
            let file = LiveFile {
                state: LiveState::Absent,
                link: None,
                write: f.path.clone(),
                key_pub: None,
                certs_pem: None,
                binds: Default::default(),
            };
            (file, (None, None))
        })
        .collect();
    let mut seen = vec![false; n];
    let mut regular = Vec::new();
    // Sections: the script's records, then sha256sum's (after \x1eH), stat's (\x1eS), and
    // the keys' records (\x1eK).
    let (head, hashes, stats, keys) = split_sections(text);
    for r in records(head, &[("L", 1), ("W", 1)])? {
        if r.tag == "STALE" {
            continue;
        }
        let idx = r
            .fields
            .first()
            .and_then(|i| i.parse::<usize>().ok())
            .filter(|i| *i < n);
        let Some(idx) = idx else {
            return Err(malformed(None, &describe(&r), out));
        };
        match read_record(&files[idx], &mut live[idx], &r) {
            Ok(Some(Found::Regular)) => regular.push(idx),
            Ok(Some(Found::Seen)) => seen[idx] = true,
            Ok(None) => {}
            Err(None) => return Err(malformed(Some(&files[idx].path), &describe(&r), out)),
            Err(Some(message)) => return Err(message),
        }
    }
    if !regular.is_empty() {
        read_regular(files, out, &regular, hashes, stats, &mut live)?;
        for &i in &regular {
            seen[i] = true;
        }
    }
    read_keys(keys, out, &mut live)?;
    for (i, b) in super::mounts::parse(binds.unwrap_or_default(), n)?
        .into_iter()
        .enumerate()
    {
        live[i].0.binds = b;
    }
    if let Some(i) = seen.iter().position(|s| !s) {
        return Err(format!(
            "the inspect script said nothing about {} (its output was cut short?){}",
            files[i].path,
            stderr_note(out)
        ));
    }
    Ok(live)
}

/// The keys' section: a key file's public key (`P`), a differing file's certificates (`R`).
fn read_keys(
    keys: &str,
    out: &ExecOutput,
    live: &mut [(LiveFile, OwnerIds)],
) -> Result<(), String> {
    for r in records(keys, &[("P", 2), ("R", 1)])? {
        let idx = r
            .fields
            .first()
            .and_then(|i| i.parse::<usize>().ok())
            .filter(|i| *i < live.len());
        match (r.tag, idx, r.fields.get(1), r.text) {
            ("P", Some(idx), Some(&"key"), Some(pem)) => {
                live[idx].0.key_pub = Some(pem.to_string());
            }
            ("R", Some(idx), None, Some(pem)) => {
                live[idx].0.certs_pem = Some(pem.to_string());
            }
            _ => return Err(malformed(None, &describe(&r), out)),
        }
    }
    Ok(())
}

/// What one record said about a file's presence.
enum Found {
    /// A regular file: its hash and stat follow.
    Regular,
    /// Absent, or a link that is replaced: nothing follows.
    Seen,
}

/// Applies one record of the script's own section to its file. `Err(None)`: not a record the
/// script writes; `Err(Some(message))`: what it says stops the step.
fn read_record(
    file: &PlannedFile,
    live: &mut (LiveFile, OwnerIds),
    r: &script::Record<'_>,
) -> Result<Option<Found>, Option<String>> {
    let path = &file.path;
    match (r.tag, r.fields.get(1).copied(), r.text) {
        ("D", None, None) => Err(Some(format!(
            "the directory of {path} does not exist on the target"
        ))),
        ("F", Some("notfile"), _) => Err(Some(format!("{path} exists but is not a regular file"))),
        ("F", Some("unresolved"), _) => Err(Some(format!(
            "{path} is a symlink that cannot be resolved (a loop, or a directory on the way is \
             missing)"
        ))),
        ("F", Some("absent"), _) => Ok(Some(Found::Seen)),
        ("F", Some("link"), _) => {
            live.0.state = LiveState::Link;
            Ok(Some(Found::Seen))
        }
        ("F", Some("file"), _) => Ok(Some(Found::Regular)),
        ("L", None, Some(text)) => {
            live.0.link = Some(text.to_string());
            Ok(None)
        }
        ("W", None, Some(text)) => {
            live.0.write = text.to_string();
            Ok(None)
        }
        ("U" | "G", Some("-"), _) => {
            let (what, name) = if r.tag == "U" {
                (
                    "owner",
                    file.explicit_owner.as_ref().or(file.default_owner.as_ref()),
                )
            } else {
                (
                    "group",
                    file.explicit_group.as_ref().or(file.default_group.as_ref()),
                )
            };
            Err(Some(format!(
                "{what} `{}` does not exist on the target",
                name.map(String::as_str).unwrap_or_default()
            )))
        }
        ("U", Some(id), _) if id.parse::<u32>().is_ok() => {
            live.1.0 = id.parse().ok();
            Ok(None)
        }
        ("G", Some(id), _) if id.parse::<u32>().is_ok() => {
            live.1.1 = id.parse().ok();
            Ok(None)
        }
        _ => Err(None),
    }
}

/// The parts of inspect's output: its records, sha256sum's lines, stat's lines, the keys'.
fn split_sections(text: &str) -> (&str, &str, &str, &str) {
    let cut = |t: &'_ str, mark: &str| -> (usize, usize) {
        match t.find(mark) {
            Some(at) => {
                let end = t[at..].find('\n').map_or(t.len(), |e| at + e + 1);
                (at, end)
            }
            None => (t.len(), t.len()),
        }
    };
    let (h0, h1) = cut(text, "\u{1e}H ");
    let (s0, s1) = cut(text, "\u{1e}S ");
    let (k0, k1) = cut(text, "\u{1e}K\n");
    let head_end = h0.min(k0);
    let hashes = if h0 < text.len() {
        &text[h1..s0.max(h1)]
    } else {
        ""
    };
    let stats = if s0 < text.len() {
        &text[s1..k0.max(s1)]
    } else {
        ""
    };
    let keys = &text[k1.min(text.len())..];
    (&text[..head_end], hashes, stats, keys)
}

/// Fills in the regular files' hashes and stats (one `sha256sum`, one `stat` for all).
fn read_regular(
    files: &[PlannedFile],
    out: &ExecOutput,
    regular: &[usize],
    hashes: &str,
    stats: &str,
    live: &mut [(LiveFile, OwnerIds)],
) -> Result<(), String> {
    let by_path = hashes_by_path(hashes.lines().collect(), out)?;
    // Not stat's exit status: `%C` fails where SELinux is off, after printing `?`.
    let stat_lines: Vec<&str> = stats.lines().filter(|l| !l.is_empty()).collect();
    if stat_lines.len() != regular.len() {
        let paths: Vec<&str> = regular.iter().map(|&i| live[i].0.write.as_str()).collect();
        return Err(format!(
            "`stat` of {} failed on the target{}",
            paths.join(", "),
            stderr_note(out)
        ));
    }
    for (&idx, stat) in regular.iter().zip(stat_lines) {
        let path = &files[idx].path;
        let write = live[idx].0.write.clone();
        let Some(sha) = by_path.get(write.as_str()) else {
            let why = crate::report::sanitize(&out.stderr);
            let why = why.trim();
            return Err(format!(
                "{path} exists but could not be hashed (sha256sum failed{}{why}); it is not \
                 treated as absent",
                if why.is_empty() { "" } else { ": " }
            ));
        };
        let parse = |s: &str, radix| {
            u32::from_str_radix(s, radix).map_err(|_| malformed(Some(path), stat, out))
        };
        let [mode, uid, gid, context] = stat.split(' ').collect::<Vec<_>>()[..] else {
            return Err(malformed(Some(path), stat, out));
        };
        live[idx].0.state = LiveState::File(Stat {
            mode: parse(mode, 8)?,
            uid: parse(uid, 10)?,
            gid: parse(gid, 10)?,
            selinux: (context != "?").then(|| context.to_string()),
            sha256: sha.clone(),
        });
    }
    Ok(())
}

/// sha256sum's output lines (`HASH  NAME`; `\HASH  NAME` with `\\`, `\n` and `\r` escaped in
/// the name), by name. A file it could not read has no line (its error is on stderr).
pub(super) fn hashes_by_path<'t>(
    lines: Vec<&'t str>,
    out: &ExecOutput,
) -> Result<BTreeMap<Cow<'t, str>, String>, String> {
    let mut by_path = BTreeMap::new();
    for line in lines.into_iter().filter(|l| !l.is_empty()) {
        let (escaped, rest) = match line.strip_prefix('\\') {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        let parsed = rest.split_at_checked(64).and_then(|(hash, name)| {
            let name = name
                .strip_prefix("  ")
                .or_else(|| name.strip_prefix(" *"))?;
            hash.bytes()
                .all(|b| b.is_ascii_hexdigit())
                .then_some((hash, name))
        });
        let Some((hash, name)) = parsed else {
            return Err(malformed(None, line, out));
        };
        let name = if escaped {
            Cow::Owned(unescape_sha256sum(name).ok_or_else(|| malformed(None, line, out))?)
        } else {
            Cow::Borrowed(name)
        };
        by_path.insert(name, hash.to_ascii_lowercase());
    }
    Ok(by_path)
}

/// Undoes sha256sum's escaping of a file name (`\\`, `\n`, `\r`); `None` for any other escape.
pub(super) fn unescape_sha256sum(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next()? {
            '\\' => '\\',
            'n' => '\n',
            'r' => '\r',
            _ => return None,
        });
    }
    Some(out)
}

fn describe(r: &script::Record<'_>) -> String {
    let mut line = r.tag.to_string();
    for f in &r.fields {
        line.push(' ');
        line.push_str(f);
    }
    if let Some(t) = r.text {
        line.push(' ');
        line.push_str(t);
    }
    line
}

/// An inspect line that is none of the script's: the step fails rather than guess.
fn malformed(path: Option<&str>, line: &str, out: &ExecOutput) -> String {
    let about = path.map(|p| format!(" about {p}")).unwrap_or_default();
    format!(
        "unexpected output from the inspect script{about}: {:?}{}",
        crate::report::sanitize(line.as_bytes()),
        stderr_note(out)
    )
}

#[cfg(test)]
#[path = "inspect_tests.rs"]
mod tests;
