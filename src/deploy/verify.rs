//! Step 9, **verify**: probes the live endpoint (SNI, STARTTLS where configured) on the
//! doubling-backoff schedule until the expected leaf and chain are served
//! ([`crate::probe::verify`]). Also how every rollback ends: probing for the old certificate.

use tokio_util::sync::CancellationToken;

use super::run::{Run, StepFailure};
use crate::material::Expected;
use crate::probe::Served;
use crate::report::{Status, Step, StepStatus};

/// Probes until the new certificate is served, the schedule runs out, or the run is
/// interrupted (the first Ctrl-C ends a verify in progress, and the change is rolled back).
pub(super) async fn verify_new(run: &mut Run<'_>, expected: &Expected) -> Result<(), StepFailure> {
    let stop = run.stop.clone();
    probe_until(run, expected, &stop).await
}

/// Probes until `expected` is served (or the schedule runs out), uninterrupted: how a
/// rollback ends. Skipped without a TLS endpoint to probe.
pub(super) async fn verify(run: &mut Run<'_>, expected: &Expected) -> Result<(), StepFailure> {
    probe_until(run, expected, &CancellationToken::new()).await
}

async fn probe_until(
    run: &mut Run<'_>,
    expected: &Expected,
    cancel: &CancellationToken,
) -> Result<(), StepFailure> {
    let plan = run.plan;
    let t = run.begin(Step::Verify);
    if !plan.has_probe {
        let detail = "no TLS endpoint to probe (no verify.address, and the connector has no \
                      verify.port)";
        run.end(
            Step::Verify,
            t.elapsed(),
            StepStatus::Skipped,
            Some(detail.into()),
        );
        return Ok(());
    }
    let v = crate::probe::verify(&plan.probe, expected, cancel).await;
    run.report.probes.extend(v.attempts.iter().cloned());
    if let Some(s) = &v.last_served {
        run.report.served_fingerprint = Some(s.leaf);
    }
    let result = if v.passed {
        let mut detail = format!(
            "{} served {} after {} probe(s)",
            plan.probe.address,
            expected.leaf,
            v.attempts.len()
        );
        if let Some(note) = &run.verify_note {
            detail.push_str(&format!("; {note}"));
        }
        Ok(((), Some(detail)))
    } else if v.cancelled {
        Err(format!(
            "interrupted: the first Ctrl-C ended the verify after {} probe(s) of {}",
            v.attempts.len(),
            plan.probe.address
        ))
    } else {
        let last = v
            .attempts
            .last()
            .and_then(|a| a.detail.clone())
            .unwrap_or_default();
        Err(format!(
            "{} did not serve {} after {} probe(s): {last}",
            plan.probe.address,
            expected.leaf,
            v.attempts.len()
        ))
    };
    run.record(Step::Verify, t.elapsed(), result)
}

/// The end of a rollback: probes for the certificate served before the run. `restored` says
/// what was put back; `cause` what went wrong first.
pub(super) async fn old_served_again(
    run: &mut Run<'_>,
    old: &Expected,
    cause: &str,
    restored: &str,
) -> (Status, String) {
    match verify(run, old).await {
        Ok(()) => (
            Status::RolledBack,
            format!(
                "{cause}; {restored}; {} serves {} again",
                run.plan.probe.address, old.leaf
            ),
        ),
        Err(f) => (
            Status::RollbackFailed,
            format!(
                "{cause}; {restored}, but the old certificate is NOT served: {}",
                f.message
            ),
        ),
    }
}

/// Whether what was served is exactly the expected leaf and chain.
pub(super) fn served_is(served: &Served, expected: &Expected) -> bool {
    served.leaf == expected.leaf && served.chain == expected.chain
}
