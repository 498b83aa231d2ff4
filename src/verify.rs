//! `certctl verify`'s engine: every selected target probed, at most `forks` at once, for the
//! inventory's certificate and chain on the doubling-backoff schedule, with `--warn-days` for
//! the served certificate and the inventory's own. Read-only: nothing connects over SSH. Prints
//! nothing: events go to the [`Reporter`]; each target ends in a [`TargetReport`] and a
//! [`crate::monitor::Observation`] for the metrics.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::deploy;
use crate::plan::{CertPlan, TargetPlan};
use crate::probe;
use crate::report::{self, Reporter, Status, TargetReport};

/// Verifies every plan, in plan order.
pub async fn verify_all(
    plans: Vec<TargetPlan>,
    warn_days: u32,
    forks: usize,
    reporter: Arc<dyn Reporter>,
) -> (Vec<TargetReport>, Vec<crate::monitor::Observation>) {
    let forks = Arc::new(tokio::sync::Semaphore::new(forks.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (index, plan) in plans.into_iter().enumerate() {
        let forks = forks.clone();
        let reporter = reporter.clone();
        tasks.spawn(async move {
            let _permit = forks.acquire_owned().await;
            let (report, seen) = verify_target(&plan, warn_days, reporter.as_ref()).await;
            reporter.event(report::Event::TargetFinished {
                report: report.clone(),
            });
            (index, report, seen)
        });
    }
    let mut reports = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(r) => reports.push(r),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    reports.sort_by_key(|(i, _, _)| *i);
    let (reports, seen): (Vec<_>, Vec<_>) = reports.into_iter().map(|(_, r, o)| (r, o)).unzip();
    (reports, seen.into_iter().flatten().collect())
}

/// The inventory's own certificate expires within `--warn-days`: how soon, for messages.
fn material_expiring(c: &CertPlan, warn_days: u32) -> Option<String> {
    let left = c.material.leaf.not_after - crate::plan::now_unix();
    (warn_days > 0 && left < i64::from(warn_days) * 86_400).then(|| {
        format!(
            "the inventory's certificate `{}` itself expires in {} day(s) (--warn-days {warn_days}): renew it",
            c.certificate,
            left.div_euclid(86_400)
        )
    })
}

/// What one certificate's verification means: the status, and the detail for the report.
fn verdict(
    c: &CertPlan,
    at: &str,
    v: &probe::Verification,
    warn_days: u32,
    material_warning: Option<String>,
) -> (Status, String) {
    let expected = c.material.expected();
    let expires_in = v
        .last_served
        .as_ref()
        .map(|s| s.not_after - crate::plan::now_unix());
    let expiring =
        warn_days > 0 && expires_in.is_some_and(|secs| secs < i64::from(warn_days) * 86_400);
    let status = if v.passed && expiring {
        Status::Expiring
    } else if v.passed {
        Status::Ok
    } else if v.last_served.is_some() {
        Status::Mismatch
    } else {
        Status::Unreachable
    };
    let mut detail = if v.passed && expiring {
        let days = expires_in.unwrap_or(0).div_euclid(86_400);
        format!(
            "{at} serves {}, which expires in {days} day(s) (--warn-days {warn_days})",
            expected.leaf
        )
    } else if v.passed {
        format!("{at} serves {}", expected.leaf)
    } else {
        let last = v
            .attempts
            .last()
            .and_then(|a| a.detail.clone())
            .unwrap_or_default();
        format!("{at} does not serve {}: {last}", expected.leaf)
    };
    // When the endpoint serves the inventory's certificate the served expiry says it all.
    if let Some(w) = material_warning.filter(|_| !v.passed) {
        detail.push_str(&format!("; {w}"));
    }
    (status, detail)
}

/// The target's status from its certificates': the worst of them.
fn worst(statuses: impl Iterator<Item = Status>) -> Status {
    let rank = |s: &Status| match s {
        Status::Mismatch => 0,
        Status::Unreachable => 1,
        Status::Expiring => 2,
        _ => 3,
    };
    statuses.min_by_key(rank).unwrap_or(Status::Ok)
}

/// Probes one target's certificates (all at once) on their schedules for the inventory's
/// certificates.
async fn verify_target(
    plan: &TargetPlan,
    warn_days: u32,
    reporter: &dyn Reporter,
) -> (TargetReport, Vec<crate::monitor::Observation>) {
    let started = tokio::time::Instant::now();
    let mut seen: Vec<_> = plan.certs.iter().map(|c| observation(plan, c)).collect();
    if !plan.has_probe() {
        let mut report = nothing_to_probe(plan, warn_days);
        report.duration_ms = started.elapsed().as_millis() as u64;
        return (report, seen);
    }
    reporter.event(report::Event::StepStarted {
        target: plan.name.clone(),
        step: report::Step::Verify,
    });
    let probed: Vec<usize> = (0..plan.certs.len())
        .filter(|&i| plan.certs[i].has_probe)
        .collect();
    let runs = probed.iter().map(|&i| {
        let c = &plan.certs[i];
        // No reload to race here: one matching probe is enough unless the inventory asks.
        let spec = probe::ProbeSpec {
            consecutive: c.consecutive_set.unwrap_or(1),
            ..c.probe.clone()
        };
        async move { probe::verify(&spec, &c.material.expected(), &CancellationToken::new()).await }
    });
    let results = futures::future::join_all(runs).await;
    let mut report = deploy::skipped(plan, "");
    let (mut statuses, mut details) = (Vec::new(), Vec::new());
    for (&i, v) in probed.iter().zip(results) {
        let c = &plan.certs[i];
        observe(&mut seen[i], c, &v);
        let at = match plan.certs.len() {
            1 => c.probe.address.clone(),
            _ => format!("{} ({})", c.probe.address, c.probe.sni),
        };
        let (status, detail) = verdict(c, &at, &v, warn_days, material_expiring(c, warn_days));
        statuses.push(status);
        details.push(detail);
        let r = &mut report.certificates[i];
        r.served_fingerprint = v.last_served.as_ref().map(|s| s.leaf);
        r.probes = v.attempts;
    }
    let status = worst(statuses.iter().copied());
    let detail = details.join("; ");
    let passed = statuses
        .iter()
        .all(|s| matches!(s, Status::Ok | Status::Expiring));
    let step = report::StepReport {
        step: report::Step::Verify,
        status: match passed {
            true => report::StepStatus::Ok,
            false => report::StepStatus::Failed,
        },
        duration_ms: started.elapsed().as_millis() as u64,
        detail: Some(detail.clone()),
    };
    reporter.event(report::Event::StepFinished {
        target: plan.name.clone(),
        step: step.clone(),
    });
    report.status = status;
    report.steps = vec![step];
    report.sync_first();
    report.duration_ms = started.elapsed().as_millis() as u64;
    report.error = (status != Status::Ok).then_some(detail);
    (report, seen)
}

/// What monitoring sees of a certificate before it is probed: nothing reached yet.
fn observation(plan: &TargetPlan, c: &CertPlan) -> crate::monitor::Observation {
    crate::monitor::Observation {
        target: plan.name.clone(),
        host: plan.ssh.host.clone(),
        connector: plan.connector.clone(),
        certificate: c.certificate.clone(),
        probed: c.has_probe,
        reachable: false,
        leaf_matches: false,
        chain_matches: false,
        served_not_after: None,
        probe_duration_ms: None,
        material_not_after: c.material.leaf.not_after,
    }
}

/// A certificate's observation after its verification.
fn observe(o: &mut crate::monitor::Observation, c: &CertPlan, v: &probe::Verification) {
    let expected = c.material.expected();
    if let Some(served) = &v.last_served {
        o.reachable = true;
        o.leaf_matches = served.leaf == expected.leaf;
        o.chain_matches = served.chain == expected.chain;
        o.served_not_after = Some(served.not_after);
    }
    o.probe_duration_ms = v.attempts.last().map(|a| a.duration_ms);
}

/// A target without a TLS endpoint: skipped, or `expiring` when its material expires soon.
fn nothing_to_probe(plan: &TargetPlan, warn_days: u32) -> TargetReport {
    let mut report = deploy::skipped(
        plan,
        "no TLS endpoint to probe: the connector has no default port; set verify.address",
    );
    let warnings: Vec<String> = plan
        .certs
        .iter()
        .filter_map(|c| material_expiring(c, warn_days))
        .collect();
    if !warnings.is_empty() {
        report.status = Status::Expiring;
        report.error = Some(format!("nothing to probe; {}", warnings.join("; ")));
    }
    report
}
