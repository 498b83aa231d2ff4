//! Step 4's **binding check** in the engine (docs/connectors.md#the-binding-check): does the
//! live configuration load the paths this run replaces? A preview proves the STAGED files
//! load; this proves they will be the ones served, before anything is staged.
//!
//! The remote half (`scripts/binding.sh`) rides in inspect's remote command, inside the lock's
//! (no round trip of its own): each certificate's `binding.run` commands (one run for equal
//! ones), the files the reader needs, and where the live paths resolve. [`take`] cuts its
//! records out of that command's output and judges them with [`crate::binding`]. Only when a
//! path could still be loaded through a symlink or a crt-list not yet read is the target asked
//! once more (one more round trip, on that path only).
//!
//! - a path the configuration does not load fails inspect: `failed` (a dry-run: `would-fail`),
//!   nothing staged or touched; the message names the server's own directive and `file:line`;
//! - a configuration certctl cannot read (command missing, permission, a variable, too large)
//!   is a warning, never a failure: the preview's live test and the probe still stand;
//! - `binding_check: false` turns it off; connectors without a configuration (generic `ssh`,
//!   keystores, API targets) have none.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::run::Run;
use super::script::{self, STRICT};
use crate::binding::{self, Answers, FileRead, Planned, RunOutput, Verdict};
use crate::connector::{Reader, Role};
use crate::plan::{BindingCheck, PlannedBinding, TargetPlan};
use crate::report::sanitize_line;
use crate::ssh::Session;
use crate::ssh::quote::Script;

/// Bytes of configuration text the remote half sends back at most (before base64), so the
/// whole command's output stays well under what the transport keeps (1 MiB).
const BUDGET: &str = "524288";

/// What the check concluded for the inspect step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Checked {
    /// A path the configuration does not load: inspect fails with this.
    pub failure: Option<String>,
    /// For the inspect step's detail: where each file is loaded, or why it was not checked.
    pub notes: Vec<String>,
}

impl Checked {
    /// Inspect's result with the check's failure, which wins.
    pub fn fold<T>(&self, result: Result<T, String>) -> Result<T, String> {
        match &self.failure {
            Some(why) => result.and(Err(why.clone())),
            None => result,
        }
    }

    /// Adds the notes to inspect's detail.
    pub fn note(&self, detail: &mut String) {
        for n in &self.notes {
            detail.push_str("; ");
            detail.push_str(n);
        }
    }
}

/// The command one group of equal checks runs: reader, commands, files.
type Ask<'p> = (Reader, &'p [Vec<String>], &'p [String]);

/// The distinct remote checks of the plan, in order (`written` needs none).
fn groups(plan: &TargetPlan) -> Vec<Ask<'_>> {
    let mut out: Vec<Ask<'_>> = Vec::new();
    for b in &plan.bindings {
        if let Some(ask) = ask(b)
            && ask.0 != Reader::Written
            && !out.contains(&ask)
        {
            out.push(ask);
        }
    }
    out
}

fn ask(b: &PlannedBinding) -> Option<Ask<'_>> {
    match &b.check {
        BindingCheck::Ask { reader, run, files } => Some((*reader, run, files)),
        BindingCheck::Off(_) => None,
    }
}

/// The remote half, appended to inspect's script (it needs nothing of it and changes
/// nothing; the caller keeps inspect's exit status).
pub(super) fn commands(s: &mut Script, plan: &TargetPlan) {
    let groups = groups(plan);
    if groups.is_empty() {
        return;
    }
    s.raw(*script::BINDING);
    s.cmd(&["certctl_bind_init", BUDGET]);
    let mut real = vec!["certctl_bind_real".to_string()];
    real.extend(checked_files(plan).map(|f| f.path.clone()));
    s.cmd(&real);
    for (g, (reader, run, files)) in groups.iter().enumerate() {
        let g = g.to_string();
        for (j, argv) in run.iter().enumerate() {
            let mut cmd = vec!["certctl_bind_run".to_string(), g.clone(), j.to_string()];
            cmd.extend(argv.iter().cloned());
            s.cmd(&cmd);
        }
        if *reader == Reader::Apache {
            s.cmd(&["certctl_bind_includes", &g]);
        }
        for f in files.iter() {
            match reader {
                Reader::Haproxy => s.cmd(&["certctl_bind_cfg", &g, f]),
                _ => s.cmd(&["certctl_bind_file", &g, "cfg", f]),
            };
        }
        if *reader == Reader::Haproxy {
            s.cmd(&["certctl_bind_crt_lists", &g]);
        }
    }
}

/// The files of certificates whose binding is asked, as the check sees them.
fn checked_files(plan: &TargetPlan) -> impl Iterator<Item = &crate::plan::PlannedFile> {
    plan.files.iter().filter(|f| {
        f.role != Role::Rendered
            && plan
                .bindings
                .iter()
                .any(|b| b.cert == f.cert && ask(b).is_some_and(|a| a.0 != Reader::Written))
    })
}

/// What the remote half printed, by group.
#[derive(Debug, Default)]
struct Found {
    ran: bool,
    unavailable: Option<String>,
    real: BTreeMap<String, Option<String>>,
    groups: BTreeMap<usize, Answers>,
}

fn decode(word: &str) -> String {
    if word == "-" {
        return String::new();
    }
    let bytes = STANDARD.decode(word).unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Reads the records (`\x1eB …` lines) of `text` into `found`.
fn parse(text: &str, found: &mut Found) {
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("\u{1e}B ") else {
            continue;
        };
        let f: Vec<&str> = rest.split(' ').collect();
        let num = |i: usize| f.get(i).and_then(|x| x.parse::<usize>().ok());
        match f.as_slice() {
            ["S"] => found.ran = true,
            ["N", why] => {
                found.unavailable = Some(format!("the target has no `{}`", sanitize_line(why)))
            }
            ["P", path, real] => {
                let real = (*real != "-").then(|| decode(real));
                found.real.insert(decode(path), real);
            }
            ["Q", _, _, status, size, out, err] => {
                let (Some(g), Some(j)) = (num(1), num(2)) else {
                    continue;
                };
                let stdout = decode(out);
                let runs = &mut found.groups.entry(g).or_default().runs;
                if runs.len() <= j {
                    runs.resize(j + 1, RunOutput::default());
                }
                runs[j] = RunOutput {
                    status: status.parse().unwrap_or(-1),
                    truncated: size.parse::<usize>().is_ok_and(|n| n > stdout.len()),
                    stdout,
                    stderr: decode(err),
                };
            }
            ["F", _, kind, ok, size, path, content] => {
                let Some(g) = num(1) else { continue };
                let content = decode(content);
                found.groups.entry(g).or_default().files.push(FileRead {
                    path: decode(path),
                    list: *kind == "list",
                    ok: *ok == "1",
                    truncated: size.parse::<usize>().is_ok_and(|n| n > content.len()),
                    content,
                });
            }
            _ => {}
        }
    }
}

/// `text` without the check's records.
fn without_records(text: &str) -> String {
    text.split_inclusive('\n')
        .filter(|l| !l.starts_with("\u{1e}B "))
        .collect()
}

/// Cuts the check's records out of the lock-and-inspect command's `stdout` and judges them,
/// asking the target once more if a path may still be loaded through a symlink or an unread
/// crt-list. Warns about what could not be checked. Returns the text without the records.
pub(super) async fn take(run: &Run<'_>, session: &Session, stdout: &[u8]) -> (String, Checked) {
    let plan = run.plan;
    let text = String::from_utf8_lossy(stdout).into_owned();
    if plan.bindings.is_empty() || !text.contains("\n\u{1e}INSPECT\n") {
        return (text, Checked::default());
    }
    let mut found = Found::default();
    parse(&text, &mut found);
    let text = without_records(&text);
    if !found.ran && !groups(plan).is_empty() {
        found.unavailable = Some("the target printed no answer".into());
    }
    let mut verdicts = judge_all(plan, &found, false);
    let more = requests(plan, &verdicts);
    if !more.is_empty() {
        second_look(session, more, &mut found).await;
        verdicts = judge_all(plan, &found, true);
    }
    let checked = conclude(plan, &verdicts);
    for (_, v) in &verdicts {
        if let Some(Verdict::Unknown(why)) = v {
            run.warn(format!(
                "the binding check could not tell whether the configuration loads this \
                 target's paths: {why}"
            ));
        }
    }
    (text, checked)
}

/// Each binding's verdict (`None`: turned off).
fn judge_all<'p>(
    plan: &'p TargetPlan,
    found: &Found,
    last: bool,
) -> Vec<(&'p PlannedBinding, Option<Verdict>)> {
    let groups = groups(plan);
    plan.bindings
        .iter()
        .map(|b| {
            let Some(ask) = ask(b) else {
                return (b, None);
            };
            let files: Vec<Planned> = plan
                .files
                .iter()
                .filter(|f| f.cert == b.cert)
                .map(|f| Planned {
                    role: f.role,
                    path: f.path.clone(),
                    follow: f.follow_symlinks,
                })
                .collect();
            let (answers, last) = match groups.iter().position(|g| *g == ask) {
                Some(g) => (answers(found, g), last),
                None => (written(plan, b.cert), true),
            };
            (b, Some(binding::judge(ask.0, &files, &answers, last)))
        })
        .collect()
}

/// One group's answers, with what the target resolved.
fn answers(found: &Found, group: usize) -> Answers {
    let mut a = found.groups.get(&group).cloned().unwrap_or_default();
    a.real = found.real.clone();
    a.unavailable = found.unavailable.clone();
    a
}

/// [`Reader::Written`]'s answers: the files certctl writes for certificate `cert`, as it
/// writes them.
fn written(plan: &TargetPlan, cert: usize) -> Answers {
    let files: Vec<FileRead> = plan
        .files
        .iter()
        .filter(|f| f.cert == cert && f.role == Role::Rendered)
        .filter_map(|f| {
            Some(FileRead {
                path: f.path.clone(),
                list: false,
                ok: true,
                content: f.rendered.clone()?,
                truncated: false,
            })
        })
        .collect();
    let unavailable = files
        .is_empty()
        .then(|| "certctl writes no file naming them (its path param is empty)".to_string());
    Answers {
        files,
        unavailable,
        ..Answers::default()
    }
}

/// What to ask once more: (group, paths to resolve, files to read).
fn requests(
    plan: &TargetPlan,
    verdicts: &[(&PlannedBinding, Option<Verdict>)],
) -> Vec<(usize, Vec<String>, Vec<String>)> {
    let groups = groups(plan);
    verdicts
        .iter()
        .filter_map(|(b, v)| match v {
            Some(Verdict::More { real, files }) => {
                let g = groups.iter().position(|g| Some(*g) == ask(b))?;
                Some((g, real.clone(), files.clone()))
            }
            _ => None,
        })
        .collect()
}

/// The one extra round trip: resolve these paths, read these files.
async fn second_look(
    session: &Session,
    more: Vec<(usize, Vec<String>, Vec<String>)>,
    found: &mut Found,
) {
    let mut s = Script::new();
    s.raw(STRICT).raw(*script::BINDING);
    s.cmd(&["certctl_bind_init", BUDGET]);
    let mut real = vec!["certctl_bind_real".to_string()];
    real.extend(more.iter().flat_map(|(_, r, _)| r.iter().cloned()));
    s.cmd(&real);
    for (g, _, files) in &more {
        for f in files {
            s.cmd(&["certctl_bind_file", &g.to_string(), "list", f]);
        }
    }
    match session.exec_script(&s, None).await {
        Ok(out) => parse(&String::from_utf8_lossy(&out.stdout), found),
        Err(e) => {
            found.unavailable = Some(format!(
                "asking again for what the configuration names failed: {e}"
            ))
        }
    }
}

/// The inspect step's part: the first failure (each certificate's, named when there are
/// several), and the notes.
fn conclude(plan: &TargetPlan, verdicts: &[(&PlannedBinding, Option<Verdict>)]) -> Checked {
    let mut checked = Checked::default();
    let mut failures = Vec::new();
    for (b, v) in verdicts {
        let who = match plan.certs.len() {
            1 => String::new(),
            _ => format!("certificate `{}`: ", plan.certs[b.cert].certificate),
        };
        match v {
            None => {
                let param = match &b.check {
                    BindingCheck::Off(p) => p.as_str(),
                    BindingCheck::Ask { .. } => "binding_check",
                };
                checked
                    .notes
                    .push(format!("{who}binding not checked ({param}: false)"));
            }
            Some(Verdict::Bound(n)) => checked.notes.push(format!("{who}binding: {n}")),
            Some(Verdict::Unknown(why)) => checked
                .notes
                .push(format!("{who}binding not checked: {why}")),
            Some(Verdict::Unbound(why)) => failures.push(format!("{who}{why}")),
            Some(Verdict::More { .. }) => {}
        }
    }
    if !failures.is_empty() {
        checked.failure = Some(format!(
            "the live configuration does not load the paths this target replaces: {}. Point \
             the target's paths at the files the server loads, or set binding_check: false \
             if certctl cannot read this configuration",
            failures.join("; ")
        ));
    }
    checked
}

#[cfg(test)]
mod tests;
