//! `notify:` — commands run on the controller after a run, chosen by what the run found.
//!
//! Each notifier is an argv (no shell unless you write `[sh, -c, …]`), run with the run's JSON
//! report on stdin and the outcome in environment variables (`CERTCTL_STATUS`, one count per
//! status, a one-line `CERTCTL_SUMMARY`, …), within its `timeout` (default 30 s; its whole
//! process group is killed after that). A notifier that fails or times out is reported on
//! stderr and never changes the run's exit code. The environment variables the inventory reads
//! certificate material from (`*_env`) and `CERTCTL_SSH_PASSPHRASE` are removed from the
//! notifier's environment: secrets stay with certctl.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Deserialize;

use crate::localcmd;
use crate::report::{RunReport, Status};

/// One `notify:` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotifier {
    pub name: Option<String>,
    pub on: Option<Vec<On>>,
    pub command: Vec<String>,
    pub timeout: Option<String>,
}

/// What a run found that a notifier may be for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum On {
    /// A rollback failed: a person must look (exit 3).
    RollbackFailed,
    /// A deploy or rollback failed on some target (failed, would-fail, rolled-back,
    /// unreachable).
    Failed,
    /// `verify`: a target serves another certificate, or none (mismatch, unreachable).
    Mismatch,
    /// `verify`: a served certificate, or the inventory's own, expires within `--warn-days`.
    Expiring,
    /// Something was deployed or reloaded (not on a dry run).
    Deployed,
    /// After every run.
    Always,
}

impl On {
    pub fn as_str(self) -> &'static str {
        match self {
            On::RollbackFailed => "rollback-failed",
            On::Failed => "failed",
            On::Mismatch => "mismatch",
            On::Expiring => "expiring",
            On::Deployed => "deployed",
            On::Always => "always",
        }
    }
}

/// The events a notifier listens to when `on:` is not given: everything that needs a person.
pub const DEFAULT_ON: [On; 4] = [On::RollbackFailed, On::Failed, On::Mismatch, On::Expiring];

/// Default time limit of one notifier.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A checked `notify:` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notifier {
    pub name: String,
    pub on: Vec<On>,
    pub command: Vec<String>,
    pub timeout: Duration,
}

/// Checks one entry; the error is located by the caller.
pub fn resolve(raw: &RawNotifier) -> Result<Notifier, String> {
    let Some(program) = raw.command.first().filter(|p| !p.is_empty()) else {
        return Err(
            "notify: `command` needs an argv like [mail, -s, certctl, ops@example.com]".into(),
        );
    };
    let timeout = match &raw.timeout {
        Some(t) => {
            crate::inventory::parse_duration(t).map_err(|e| format!("notify: timeout: {e}"))?
        }
        None => DEFAULT_TIMEOUT,
    };
    if timeout.is_zero() {
        return Err("notify: timeout must be more than 0".into());
    }
    let on = match &raw.on {
        Some(on) if on.is_empty() => {
            return Err("notify: `on` is empty: the notifier would never run".into());
        }
        Some(on) => on.clone(),
        None => DEFAULT_ON.to_vec(),
    };
    let name = raw.name.clone().unwrap_or_else(|| {
        std::path::Path::new(program)
            .file_name()
            .map_or_else(|| program.clone(), |n| n.to_string_lossy().into_owned())
    });
    Ok(Notifier {
        name,
        on,
        command: raw.command.clone(),
        timeout,
    })
}

/// The events `run` raised (`Always` included).
pub fn events(run: &RunReport) -> BTreeSet<On> {
    let verify = run.command == "verify";
    let mut out = BTreeSet::from([On::Always]);
    for t in &run.targets {
        let event = match t.status {
            Status::RollbackFailed => Some(On::RollbackFailed),
            Status::Failed | Status::WouldFail | Status::RolledBack if !verify => Some(On::Failed),
            Status::Unreachable if verify => Some(On::Mismatch),
            Status::Unreachable => Some(On::Failed),
            Status::Mismatch => Some(On::Mismatch),
            Status::Expiring => Some(On::Expiring),
            Status::Deployed | Status::Reloaded if !run.dry_run => Some(On::Deployed),
            _ => None,
        };
        out.extend(event);
    }
    // `rollback` reports success as `rolled-back`.
    if run.command == "rollback" {
        out.remove(&On::Failed);
        if run
            .targets
            .iter()
            .any(|t| t.status.is_failure() && t.status != Status::RolledBack)
        {
            out.insert(On::Failed);
        }
    }
    out
}

/// `CERTCTL_STATUS`: the most serious event, or `ok`.
pub fn overall_status(events: &BTreeSet<On>) -> &'static str {
    events
        .iter()
        .find(|e| **e != On::Always)
        .map_or("ok", |e| e.as_str())
}

/// One line for chat and mail subjects: `certctl deploy: 1 deployed, 1 rolled-back (web-2)`.
pub fn summary_line(run: &RunReport) -> String {
    let mut parts = Vec::new();
    for status in Status::ALL {
        let names: Vec<&str> = run
            .targets
            .iter()
            .filter(|t| t.status == status)
            .map(|t| t.name.as_str())
            .collect();
        if names.is_empty() {
            continue;
        }
        let mut part = format!("{} {}", names.len(), status.as_str());
        if status.is_failure() {
            let shown: Vec<&str> = names.iter().copied().take(5).collect();
            let more = names.len().saturating_sub(shown.len());
            part.push_str(&format!(" ({}", shown.join(", ")));
            if more > 0 {
                part.push_str(&format!(" and {more} more"));
            }
            part.push(')');
        }
        parts.push(part);
    }
    let dry = if run.dry_run { " --dry-run" } else { "" };
    let body = if parts.is_empty() {
        "no targets".to_string()
    } else {
        parts.join(", ")
    };
    crate::report::sanitize_line(&format!("certctl {}{dry}: {body}", run.command))
}

/// What the run was, for the notifiers' environment.
pub struct RunContext<'a> {
    pub run: &'a RunReport,
    pub exit_code: u8,
    pub run_id: Option<&'a str>,
    pub inventory: &'a std::path::Path,
    /// Variables to keep from the notifiers (the inventory's `*_env` secrets).
    pub env_remove: Vec<String>,
    pub verbose: u8,
}

/// How one notifier ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub name: String,
    pub ok: bool,
    /// `ok (0.3s)`, `exit status: 7; stderr: …`, `killed after 30s`, …
    pub detail: String,
}

/// Runs every notifier whose `on:` meets an event of the run, at once, each within its
/// timeout; prints a line for each failure (and, with `-v`, each success). Returns how each
/// ended; the caller never lets this change the exit code.
pub async fn run_all(notifiers: &[crate::notify::Notifier], ctx: &RunContext<'_>) -> Vec<Outcome> {
    let raised = events(ctx.run);
    let chosen: Vec<&Notifier> = notifiers
        .iter()
        .filter(|n| n.on.iter().any(|e| raised.contains(e)))
        .collect();
    if chosen.is_empty() {
        return Vec::new();
    }
    let mut json = Vec::new();
    if let Err(e) = crate::report::write_json(ctx.run, &mut json) {
        crate::report::print_stderr(&format!("error: notify: cannot render the report: {e}\n"));
        return Vec::new();
    }
    let env = environment(ctx, &raised);
    let mut tasks = tokio::task::JoinSet::new();
    for (index, n) in chosen.iter().enumerate() {
        let options = localcmd::Options {
            stdin: None,
            env: [("CERTCTL_NOTIFIER".to_string(), n.name.clone())]
                .into_iter()
                .chain(env.iter().cloned())
                .collect(),
            env_remove: ctx.env_remove.clone(),
            timeout: n.timeout,
            max_stdout: 64 * 1024,
        };
        let (argv, name, json) = (n.command.clone(), n.name.clone(), json.clone());
        tasks.spawn_blocking(move || {
            let options = localcmd::Options {
                stdin: Some(&json),
                ..options
            };
            (index, outcome(name, localcmd::run(&argv, &options)))
        });
    }
    let mut outcomes = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        if let Ok(o) = joined {
            outcomes.push(o);
        }
    }
    outcomes.sort_by_key(|(i, _)| *i);
    let outcomes: Vec<Outcome> = outcomes.into_iter().map(|(_, o)| o).collect();
    for o in &outcomes {
        if !o.ok {
            crate::report::print_stderr(&format!(
                "warning: notify `{}` failed: {} (the exit code is not changed)\n",
                o.name, o.detail
            ));
        } else if ctx.verbose > 0 {
            crate::report::print_stderr(&format!("notify `{}`: {}\n", o.name, o.detail));
        }
    }
    outcomes
}

fn environment(ctx: &RunContext<'_>, raised: &BTreeSet<On>) -> Vec<(String, String)> {
    let run = ctx.run;
    let mut env = vec![
        (
            "CERTCTL_STATUS".to_string(),
            overall_status(raised).to_string(),
        ),
        (
            "CERTCTL_EVENTS".to_string(),
            raised
                .iter()
                .filter(|e| **e != On::Always)
                .map(|e| e.as_str())
                .collect::<Vec<_>>()
                .join(" "),
        ),
        ("CERTCTL_COMMAND".to_string(), run.command.clone()),
        (
            "CERTCTL_DRY_RUN".to_string(),
            u8::from(run.dry_run).to_string(),
        ),
        ("CERTCTL_EXIT_CODE".to_string(), ctx.exit_code.to_string()),
        (
            "CERTCTL_RUN_ID".to_string(),
            ctx.run_id.unwrap_or("").to_string(),
        ),
        (
            "CERTCTL_INVENTORY".to_string(),
            ctx.inventory.display().to_string(),
        ),
        ("CERTCTL_SUMMARY".to_string(), summary_line(run)),
        ("CERTCTL_TOTAL".to_string(), run.summary.total.to_string()),
    ];
    for (status, count) in &run.summary.by_status {
        env.push((
            format!("CERTCTL_{}", status.to_ascii_uppercase().replace('-', "_")),
            count.to_string(),
        ));
    }
    env
}

fn outcome(name: String, result: Result<localcmd::Finished, localcmd::RunError>) -> Outcome {
    let said = |stderr: &[u8]| {
        let s = crate::material::sanitize_one_line(stderr, 300);
        if s.is_empty() {
            String::new()
        } else {
            format!("; stderr: {s}")
        }
    };
    match result {
        Ok(done) if done.status.success() => Outcome {
            name,
            ok: true,
            detail: format!("ok ({:.1}s)", done.duration.as_secs_f64()),
        },
        Ok(done) => Outcome {
            name,
            ok: false,
            detail: format!("{}{}", done.status, said(&done.stderr)),
        },
        Err(localcmd::RunError::TimedOut { after, stderr, .. }) => Outcome {
            name,
            ok: false,
            detail: format!(
                "killed after {} (its timeout){}",
                crate::source::format_duration(after),
                said(&stderr)
            ),
        },
        Err(e) => Outcome {
            name,
            ok: false,
            detail: e.to_string(),
        },
    }
}

/// The variables the notifiers must not see: every `*_env` the inventory reads material or
/// passwords from, and the SSH key passphrase.
pub fn secret_vars(inventory: &crate::inventory::Inventory) -> Vec<String> {
    let mut vars: BTreeSet<String> = inventory
        .certificates
        .values()
        .flat_map(|c| c.env_vars().map(str::to_string).collect::<Vec<_>>())
        .collect();
    for t in &inventory.targets {
        for (k, v) in &t.params {
            if k.ends_with("_env") && !v.is_empty() {
                vars.insert(v.clone());
            }
        }
    }
    vars.insert("CERTCTL_SSH_PASSPHRASE".to_string());
    vars.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::TargetReport;

    fn target(name: &str, status: Status) -> TargetReport {
        TargetReport {
            name: name.into(),
            host: "h".into(),
            connector: "nginx".into(),
            status,
            old_fingerprint: None,
            new_fingerprint: None,
            served_fingerprint: None,
            files: Vec::new(),
            steps: Vec::new(),
            probes: Vec::new(),
            certificates: Vec::new(),
            duration_ms: 0,
            error: None,
        }
    }

    fn run(command: &str, dry_run: bool, targets: Vec<TargetReport>) -> RunReport {
        RunReport::new(
            command,
            dry_run,
            std::time::SystemTime::now(),
            Duration::ZERO,
            targets,
        )
    }

    #[test]
    fn events_follow_the_statuses() {
        let r = run(
            "deploy",
            false,
            vec![
                target("a", Status::Deployed),
                target("b", Status::RolledBack),
            ],
        );
        let e = events(&r);
        assert!(e.contains(&On::Deployed) && e.contains(&On::Failed));
        assert_eq!(overall_status(&e), "failed");
        let r = run("deploy", true, vec![target("a", Status::WouldChange)]);
        assert_eq!(overall_status(&events(&r)), "ok");
        let r = run(
            "verify",
            false,
            vec![
                target("a", Status::Unreachable),
                target("b", Status::Expiring),
            ],
        );
        let e = events(&r);
        assert!(e.contains(&On::Mismatch) && e.contains(&On::Expiring) && !e.contains(&On::Failed));
        assert_eq!(overall_status(&e), "mismatch");
        let r = run("rollback", false, vec![target("a", Status::RolledBack)]);
        assert_eq!(overall_status(&events(&r)), "ok");
        let r = run("deploy", false, vec![target("a", Status::RollbackFailed)]);
        assert_eq!(overall_status(&events(&r)), "rollback-failed");
    }

    #[test]
    fn the_summary_names_the_failures() {
        let mut targets: Vec<TargetReport> = (0..7)
            .map(|i| target(&format!("w{i}"), Status::Failed))
            .collect();
        targets.push(target("ok", Status::Deployed));
        let line = summary_line(&run("deploy", false, targets));
        assert_eq!(
            line,
            "certctl deploy: 1 deployed, 7 failed (w0, w1, w2, w3, w4 and 2 more)"
        );
    }

    #[test]
    fn entries_are_checked() {
        let raw = |command: &[&str], on: Option<Vec<On>>| RawNotifier {
            name: None,
            on,
            command: command.iter().map(|s| s.to_string()).collect(),
            timeout: None,
        };
        let n = resolve(&raw(&["/usr/bin/mail", "-s", "x"], None)).unwrap();
        assert_eq!(n.name, "mail");
        assert_eq!(n.on, DEFAULT_ON.to_vec());
        assert_eq!(n.timeout, DEFAULT_TIMEOUT);
        assert!(resolve(&raw(&[], None)).is_err());
        assert!(resolve(&raw(&["x"], Some(vec![]))).is_err());
    }
}
