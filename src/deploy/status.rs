//! `certctl status`: what is on disk (fingerprint, not-after, mode, owner, symlinks), what is
//! served and for how long, facts about the host (OS, arch, hostname, server version), and an
//! unfinished change a killed run left (its journal). `ok` when files and served certificate
//! are the inventory's; `mismatch` otherwise. Takes no lock and writes nothing.

use super::files::{decide, file_report, read_old_certs};
use super::inspect::{self, LiveState, ServedNow, probe_served, successes};
use super::journal::Journal;
use super::run::{Outcome, Run};
use super::script::{self, STRICT};
use super::verify::all_served;
use super::{Remote, Swap, windows};
use crate::plan::TargetPlan;
use crate::probe::Served;
use crate::report::{Status, Step};
use crate::ssh::Session;
use crate::ssh::quote::Script;

pub(super) async fn status(run: &mut Run<'_>, session: &Session) -> Outcome {
    let plan = run.plan;
    let journal = active_journal(session, plan).await;
    let outcome = match plan.swap() {
        Swap::Commands(_) => commands_status(run, session).await,
        Swap::Files => files_status(run, session).await,
    };
    match journal {
        None => outcome,
        Some(found) => {
            let what = match found {
                Ok(j) => format!(
                    "an unfinished change: {}; the next `certctl deploy` (with --break-lock if \
                     its lock is stale) rolls it back from backup set {} first",
                    j.describe(),
                    crate::report::sanitize_line(&j.intent.set)
                ),
                Err(e) => format!("an unreadable journal in {} ({e})", plan.backup_dir),
            };
            let rest = match outcome {
                Ok(_) => String::new(),
                Err((_, e)) => format!("; {e}"),
            };
            Err((Status::Mismatch, format!("{what}{rest}")))
        }
    }
}

/// The active journal, read without the lock.
async fn active_journal(session: &Session, plan: &TargetPlan) -> Option<Result<Journal, String>> {
    if plan.remote() == Remote::Windows {
        return windows::read_journal(session, plan).await;
    }
    let mut s = Script::new();
    s.raw(STRICT).raw(*script::LOCK);
    s.cmd(&["certctl_journal_show", &plan.backup_dir]);
    let out = session.exec_script(&s, None).await.ok()?;
    super::lock::journal_in(&String::from_utf8_lossy(&out.stdout))
}

async fn files_status(run: &mut Run<'_>, session: &Session) -> Outcome {
    let plan = run.plan;
    let failed = |f: super::run::StepFailure| {
        (
            Status::Failed,
            format!("{}: {}", f.step.as_str(), f.message),
        )
    };
    let (live, served) = run
        .step(Step::Inspect, async {
            let (live, served) = inspect::run(session, plan, false).await?;
            let detail = inspect::served_detail(plan, &served);
            Ok(((live, served), Some(detail)))
        })
        .await
        .map_err(failed)?;
    let mut files: Vec<_> = plan
        .files
        .iter()
        .zip(live)
        .map(|(planned, (live, ids))| decide(planned, live, ids, plan.material(planned.cert)))
        .collect();
    read_old_certs(&mut files);
    run.report.files = files
        .iter()
        .map(|f| {
            let mut r = file_report(f, plan.material(f.planned.cert));
            let stat = match &f.live.state {
                LiveState::File(s) => Some(s),
                LiveState::Absent | LiveState::Link => None,
            };
            r.action = match stat {
                None => "missing",
                Some(_) if f.current() => "current",
                Some(_) => "differs",
            }
            .to_string();
            r.repair = None;
            // For status, mode/owner are what is on disk now, and not-after is the file's.
            r.mode = format!("{:04o}", stat.map_or(0, |s| s.mode));
            r.owner = stat.map(|s| s.uid.to_string());
            r.group = stat.map(|s| s.gid.to_string());
            if let Some(leaf) = f.old_certs.first() {
                r.not_after = Some(crate::report::format_unix(leaf.not_after));
                r.subject = Some(leaf.subject.clone());
                r.sans = leaf.sans.clone();
                r.chain_length = Some(f.old_certs.len() - 1);
            }
            r
        })
        .collect();
    for (i, report) in run.report.certificates.iter_mut().enumerate() {
        report.old_fingerprint = files
            .iter()
            .filter(|f| f.planned.cert == i)
            .find_map(|f| f.old_certs.first().map(|c| c.fingerprint));
    }
    let served = served_and_facts(run, session, Some(served)).await;
    let files_current = files.iter().all(|f| f.current());
    let served_current = plan.has_probe() && all_served(plan, &served);
    match (files_current, served_current) {
        (true, true) => Ok(Status::Ok),
        (true, false) => Err((
            Status::Mismatch,
            "the files hold the inventory's certificate, but it is not served (reload needed)"
                .into(),
        )),
        (false, true) => Err((
            Status::Mismatch,
            "the inventory's certificate is served, but the files on disk differ".into(),
        )),
        (false, false) => Err((
            Status::Mismatch,
            "neither the files nor the served certificate are the inventory's".into(),
        )),
    }
}

/// Reads the host's facts (and probes what is served, unless `known`), as a second inspect
/// entry.
async fn served_and_facts(
    run: &mut Run<'_>,
    session: &Session,
    known: Option<ServedNow>,
) -> ServedNow {
    let plan = run.plan;
    let t = run.begin(Step::Inspect);
    let probe = async {
        match known {
            Some(served) => served,
            None => successes(probe_served(plan).await),
        }
    };
    let facts = async {
        match plan.swap() {
            Swap::Files => facts(session, plan).await,
            // The connector's own commands are not run by status (nor `version`).
            Swap::Commands(_) => Err("not read for this connector".into()),
        }
    };
    let (facts, served) = tokio::join!(facts, probe);
    for (report, s) in run.report.certificates.iter_mut().zip(&served) {
        report.served_fingerprint = s.as_ref().map(|s| s.leaf);
    }
    run.report.sync_first();
    let served_text = served_text(plan, &served);
    let detail = match facts {
        Ok(facts) => format!("{facts}; {served_text}"),
        Err(e) if matches!(plan.swap(), Swap::Files) => {
            format!("facts unavailable: {e}; {served_text}")
        }
        Err(_) => served_text,
    };
    let _ = run.record(Step::Inspect, t.elapsed(), Ok(((), Some(detail))));
    served
}

/// What each certificate's endpoint serves and for how long: `serves FP (expires …, in N
/// day(s))`, with the endpoint named when the target has several certificates.
fn served_text(plan: &TargetPlan, served: &[Option<Served>]) -> String {
    let now = crate::plan::now_unix();
    let each = plan.certs.iter().zip(served).map(|(c, s)| {
        let at = match plan.certs.len() {
            1 => String::new(),
            _ => format!("{} ({}) ", c.probe.address, c.probe.sni),
        };
        match s {
            Some(s) => format!(
                "{at}serves {} (expires {}, in {} day(s))",
                s.leaf,
                crate::report::format_unix(s.not_after),
                (s.not_after - now).div_euclid(86_400)
            ),
            None => format!("{at}serves no certificate"),
        }
    });
    let text = each.collect::<Vec<_>>().join("; ");
    if text.is_empty() {
        "serves no certificate".into()
    } else {
        text
    }
}

/// `swap: commands`: only what is served (the target's own state is read only by the
/// connector's commands, which status does not run).
async fn commands_status(run: &mut Run<'_>, session: &Session) -> Outcome {
    let plan = run.plan;
    let served = served_and_facts(run, session, None).await;
    if !plan.has_probe() {
        return Err((
            Status::Mismatch,
            "no TLS endpoint to probe (set verify.address): this connector's state is read only \
             by its own commands"
                .into(),
        ));
    }
    if all_served(plan, &served) {
        Ok(Status::Ok)
    } else {
        Err((
            Status::Mismatch,
            "the inventory's certificate is not served".into(),
        ))
    }
}

/// OS, arch, hostname and the server software's version (the connector's `version`
/// commands), in one remote script.
async fn facts(session: &Session, plan: &TargetPlan) -> Result<String, String> {
    let mut s = Script::new();
    s.raw(*script::FACTS);
    s.cmd(&["certctl_fact", "uname", "-srm"]);
    s.cmd(&["certctl_fact", "hostname"]);
    for argv in &plan.version {
        let mut cmd: Vec<&str> = vec!["certctl_fact"];
        cmd.extend(argv.iter().map(String::as_str));
        s.cmd(&cmd);
    }
    let out = session
        .exec_script(&s, None)
        .await
        .map_err(|e| e.to_string())?;
    let text = crate::report::sanitize(&out.stdout);
    let lines: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("X ")).collect();
    Ok(lines.join("; "))
}
