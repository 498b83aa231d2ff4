//! What happens around a run, outside the engine: the policy gate before anything is touched
//! (offline policy, then the downgrade probe), and after the run the local history, the
//! notifiers and `verify --prometheus`. Also `certctl history`. The command code in
//! [`crate::cli`] calls these; each prints its own lines through [`crate::report`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::inventory::Inventory;
use crate::plan::TargetPlan;
use crate::report::{self, RunReport};

/// The offline policy (key, lifetime, issuer, CA bundle) of every certificate the plans use.
/// Each problem is one line, located at the certificate in the inventory.
pub fn policy_problems(inventory: &Inventory, plans: &[TargetPlan], now: i64) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for cert in plans.iter().flat_map(|p| &p.certs) {
        if !seen.insert(cert.certificate.as_str()) {
            continue;
        }
        let Some(policy) = inventory.policies.get(&cert.certificate) else {
            continue;
        };
        for problem in crate::policy::check(&cert.material, policy, now) {
            out.push(format!(
                "{}certificate `{}`: policy: {problem}",
                located(inventory, &cert.certificate),
                cert.certificate
            ));
        }
    }
    out
}

fn located(inventory: &Inventory, certificate: &str) -> String {
    inventory
        .certificates
        .get(certificate)
        .and_then(|c| c.location.as_ref())
        .map(|l| format!("{l}: "))
        .unwrap_or_default()
}

/// Longest wait for one target's downgrade probe.
pub const GATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The downgrade gate: probes every target (at most `forks` at once, each within its verify
/// timeout) and refuses a certificate that expires sooner than, or was issued before, the one
/// served now for the same names. With `force` the refusals become warnings. Targets that
/// cannot be probed now are left to the engine (it reports them). The engine's targets wait
/// for its verdict once connected ([`crate::deploy::gate`]), and take what it probed as what
/// they served before.
pub async fn downgrade_gate(
    inventory: &Inventory,
    plans: &[TargetPlan],
    forks: usize,
    force: bool,
) -> (Vec<String>, crate::deploy::gate::Verdict) {
    let forks = Arc::new(tokio::sync::Semaphore::new(forks.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (index, plan) in plans.iter().enumerate() {
        for (cert, c) in plan.certs.iter().enumerate() {
            let refuse = inventory
                .policies
                .get(&c.certificate)
                .is_none_or(|p| p.refuse_downgrade);
            if !c.has_probe || !refuse {
                continue;
            }
            let probe = c.probe.clone();
            let leaf = c.material.leaf.clone();
            let forks = forks.clone();
            tasks.spawn(async move {
                let _permit = forks.acquire_owned().await;
                // One handshake, at most GATE_TIMEOUT: an endpoint that does not answer now
                // is the engine's to report, and must not hold the whole deploy up for long.
                let timeout = probe.timeout.min(GATE_TIMEOUT);
                let served = crate::probe::probe_once_for(&probe, timeout).await.ok();
                let why = served
                    .as_ref()
                    .and_then(|s| crate::policy::downgrade(&leaf, s));
                (index, cert, why, served)
            });
        }
    }
    let mut found = Vec::new();
    let mut seen: Vec<Vec<Option<crate::probe::Served>>> =
        plans.iter().map(|p| vec![None; p.certs.len()]).collect();
    while let Some(Ok((index, cert, why, served))) = tasks.join_next().await {
        if let Some(why) = why {
            found.push((index, cert, why));
        }
        seen[index][cert] = served;
    }
    found.sort();
    let mut refusals = Vec::new();
    for (index, cert, why) in found {
        let (plan, c) = (&plans[index], &plans[index].certs[cert]);
        let line = format!(
            "{}certificate `{}` for target `{}` would be a downgrade: {why}",
            located(inventory, &c.certificate),
            c.certificate,
            plan.name
        );
        if force {
            report::print_stderr(&format!("warning: {line} (deploying anyway: --force)\n"));
        } else {
            refusals.push(format!(
                "{line}; nothing was touched (--force deploys it anyway)"
            ));
        }
    }
    let mut verdict = crate::deploy::gate::Verdict {
        refused: !refusals.is_empty(),
        ..Default::default()
    };
    // A target whose every endpoint answered the gate need not be probed again by inspect.
    for (plan, served) in plans.iter().zip(seen) {
        let complete = plan
            .certs
            .iter()
            .zip(&served)
            .all(|(c, s)| !c.has_probe || s.is_some());
        if complete && plan.has_probe() {
            verdict.served.insert(plan.name.clone(), served);
        }
    }
    (refusals, verdict)
}

/// After a run: appends to the history when something changed, then runs the notifiers
/// (unless `notify` is false). Neither changes the exit code; failures are warnings.
pub async fn after_run(
    run: &RunReport,
    exit_code: u8,
    inventory: &Inventory,
    run_id: &str,
    notify: bool,
    verbose: u8,
) {
    if let Some(entry) = crate::history::entry_for(run, run_id, exit_code, &inventory.path)
        && let Some(path) = crate::history::location(inventory.history.as_ref())
        && let Err(e) = crate::history::append(&path, entry)
    {
        report::print_stderr(&format!("warning: {e} (the run is not recorded)\n"));
    }
    if notify && !inventory.notify.is_empty() {
        let ctx = crate::notify::RunContext {
            run,
            exit_code,
            run_id: Some(run_id),
            inventory: &inventory.path,
            env_remove: crate::notify::secret_vars(inventory),
            verbose,
        };
        crate::notify::run_all(&inventory.notify, &ctx).await;
    }
}

/// Writes `verify --prometheus FILE`; a failure is an error line (the exit code stays).
pub fn write_prometheus(path: &Path, observations: &[crate::monitor::Observation], now: i64) {
    let text = crate::monitor::prometheus::render(observations, now);
    if let Err(e) = crate::monitor::prometheus::write_atomic(path, &text) {
        report::print_stderr(&format!(
            "error: --prometheus {}: cannot write: {e}\n",
            path.display()
        ));
    }
}

/// `certctl history`: which file, then print, or check the chain.
pub fn history_command(
    inventory: Option<&Path>,
    file: Option<PathBuf>,
    limit: usize,
    check: bool,
    json: bool,
) -> Result<u8, String> {
    let path = match file {
        Some(f) => f,
        None => {
            let inventory = match inventory {
                Some(i) => Some(
                    crate::inventory::load(i, &crate::connector::Catalogue::builtin_names())
                        .map_err(|e| e.to_string())?,
                ),
                None => None,
            };
            crate::history::location(inventory.as_ref().and_then(|i| i.history.as_ref()))
                .ok_or("the history is off (CERTCTL_HISTORY or the inventory's `history: off`)")?
        }
    };
    if !path.exists() {
        report::print_stderr(&format!(
            "history {}: no run has changed anything yet (the file does not exist)\n",
            path.display()
        ));
        return Ok(0);
    }
    if check {
        return Ok(match crate::history::check(&path) {
            Ok(c) => {
                report::print_stderr(&format!(
                    "history {}: {} entr{}, the chain is intact; last line SHA-256 {} (keep it elsewhere to detect lines removed from the end)\n",
                    path.display(),
                    c.entries,
                    if c.entries == 1 { "y" } else { "ies" },
                    c.head
                ));
                0
            }
            Err(e) => {
                report::print_stderr(&format!("error: {e}\n"));
                1
            }
        });
    }
    let entries = crate::history::read_all(&path).map_err(|e| e.to_string())?;
    let text = if json {
        let skip = if limit == 0 {
            0
        } else {
            entries.len().saturating_sub(limit)
        };
        entries[skip..]
            .iter()
            .filter_map(|e| serde_json::to_string(e).ok())
            .map(|l| l + "\n")
            .collect()
    } else {
        crate::history::render(&entries, limit)
    };
    report::print_stdout(&text).map_err(|e| format!("writing to stdout: {e}"))?;
    Ok(0)
}

/// `deploy --hook`: the certificates the ACME client just renewed (`Some(empty)`: none of
/// the inventory's, nothing to do; a note says so). `None`: not in hook mode — with a hint when
/// an ACME client's variables are set anyway.
pub fn hook_selection(
    hook: Option<&str>,
    inventory_path: &Path,
) -> Result<Option<std::collections::BTreeSet<String>>, String> {
    let env = |v: &str| std::env::var(v).ok();
    let Some(value) = hook else {
        if let Some(var) = crate::hook::detected(&env) {
            report::print_stderr(&format!(
                "note: {var} is set: run `certctl deploy --hook` to deploy only the renewed certificate; deploying every selected target\n"
            ));
        }
        return Ok(None);
    };
    let client = crate::hook::Client::parse(value)?;
    let renewal = crate::hook::renewal(client, &env)?;
    let inventory = crate::inventory::load(
        inventory_path,
        &crate::connector::Catalogue::builtin_names(),
    )
    .map_err(|e| e.to_string())?;
    let selection = crate::hook::select(&inventory, &renewal)?;
    for note in &selection.notes {
        report::print_stderr(&format!("note: {note}\n"));
    }
    let renewed = selection.renewed.map(|f| f.to_string()).unwrap_or_default();
    let what = format!(
        "hook ({}): {} renewed {} ({})",
        renewal.client.name(),
        renewal.from,
        renewal.cert_file.display(),
        renewed
    );
    if selection.certificates.is_empty() {
        report::print_stderr(&format!(
            "note: {what}; no certificate in {} is that certificate: nothing to deploy\n",
            inventory_path.display()
        ));
    } else {
        report::print_stderr(&format!(
            "{what}: deploying certificate(s) {}\n",
            selection
                .certificates
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(Some(selection.certificates))
}
