//! `certctl verify`'s engine: every selected target probed, at most `forks` at once, for the
//! inventory's certificate and chain on the doubling-backoff schedule, with `--warn-days` for
//! the served certificate and the inventory's own. Read-only: nothing connects over SSH. Prints
//! nothing: events go to the [`Reporter`]; each target ends in a [`TargetReport`] and a
//! [`crate::monitor::Observation`] for the metrics.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::deploy;
use crate::plan::TargetPlan;
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
    reports.into_iter().map(|(_, r, o)| (r, o)).unzip()
}

/// The inventory's own certificate expires within `--warn-days`: how soon, for messages.
fn material_expiring(plan: &TargetPlan, warn_days: u32) -> Option<String> {
    let left = plan.material.leaf.not_after - crate::plan::now_unix();
    (warn_days > 0 && left < i64::from(warn_days) * 86_400).then(|| {
        format!(
            "the inventory's certificate `{}` itself expires in {} day(s) (--warn-days {warn_days}): renew it",
            plan.certificate,
            left.div_euclid(86_400)
        )
    })
}

/// What a verification means: the status, and the detail for the report.
fn verdict(
    plan: &TargetPlan,
    v: &probe::Verification,
    warn_days: u32,
    material_warning: Option<String>,
) -> (Status, String) {
    let expected = plan.material.expected();
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
            "{} serves {}, which expires in {days} day(s) (--warn-days {warn_days})",
            plan.probe.address, expected.leaf
        )
    } else if v.passed {
        format!("{} serves {}", plan.probe.address, expected.leaf)
    } else {
        let last = v
            .attempts
            .last()
            .and_then(|a| a.detail.clone())
            .unwrap_or_default();
        format!(
            "{} does not serve {}: {last}",
            plan.probe.address, expected.leaf
        )
    };
    // When the endpoint serves the inventory's certificate the served expiry says it all.
    if let Some(w) = material_warning.filter(|_| !v.passed) {
        detail.push_str(&format!("; {w}"));
    }
    (status, detail)
}

/// Probes one target on its schedule for the inventory's certificate.
async fn verify_target(
    plan: &TargetPlan,
    warn_days: u32,
    reporter: &dyn Reporter,
) -> (TargetReport, crate::monitor::Observation) {
    let started = tokio::time::Instant::now();
    let expected = plan.material.expected();
    let material_warning = material_expiring(plan, warn_days);
    let mut seen = crate::monitor::Observation {
        target: plan.name.clone(),
        host: plan.ssh.host.clone(),
        connector: plan.connector.clone(),
        certificate: plan.certificate.clone(),
        probed: plan.has_probe,
        reachable: false,
        leaf_matches: false,
        chain_matches: false,
        served_not_after: None,
        probe_duration_ms: None,
        material_not_after: plan.material.leaf.not_after,
    };
    if !plan.has_probe {
        let mut report = deploy::skipped(
            plan,
            "no TLS endpoint to probe: the connector has no default port; set verify.address",
        );
        if let Some(w) = material_warning {
            report.status = Status::Expiring;
            report.error = Some(format!("nothing to probe; {w}"));
        }
        report.duration_ms = started.elapsed().as_millis() as u64;
        return (report, seen);
    }
    reporter.event(report::Event::StepStarted {
        target: plan.name.clone(),
        step: report::Step::Verify,
    });
    // No reload to race here: one matching probe is enough unless the inventory asks for more.
    let spec = probe::ProbeSpec {
        consecutive: plan.consecutive_set.unwrap_or(1),
        ..plan.probe.clone()
    };
    let v = probe::verify(&spec, &expected, &CancellationToken::new()).await;
    if let Some(served) = &v.last_served {
        seen.reachable = true;
        seen.leaf_matches = served.leaf == expected.leaf;
        seen.chain_matches = served.chain == expected.chain;
        seen.served_not_after = Some(served.not_after);
    }
    seen.probe_duration_ms = v.attempts.last().map(|a| a.duration_ms);
    let (status, detail) = verdict(plan, &v, warn_days, material_warning);
    let step = report::StepReport {
        step: report::Step::Verify,
        status: if v.passed {
            report::StepStatus::Ok
        } else {
            report::StepStatus::Failed
        },
        duration_ms: started.elapsed().as_millis() as u64,
        detail: Some(detail.clone()),
    };
    reporter.event(report::Event::StepFinished {
        target: plan.name.clone(),
        step: step.clone(),
    });
    let report = TargetReport {
        name: plan.name.clone(),
        host: plan.ssh.host.clone(),
        connector: plan.connector.clone(),
        status,
        old_fingerprint: None,
        new_fingerprint: Some(expected.leaf),
        served_fingerprint: v.last_served.as_ref().map(|s| s.leaf),
        files: Vec::new(),
        steps: vec![step],
        probes: v.attempts,
        duration_ms: started.elapsed().as_millis() as u64,
        error: (status != Status::Ok).then_some(detail),
    };
    (report, seen)
}
