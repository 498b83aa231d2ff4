//! Step 9, **verify**: probes the live endpoint of each of the target's certificates (SNI,
//! STARTTLS where configured), all at once, on the doubling-backoff schedule until the expected
//! leaf and chain are served ([`crate::probe::verify`]). Also how every rollback ends: probing
//! for the old certificates.

use tokio_util::sync::CancellationToken;

use super::files::StagedFile;
use super::run::{Run, StepFailure};
use crate::material::Expected;
use crate::probe::{Served, Verification};
use crate::report::{Status, Step, StepStatus};

/// Probes until the new certificates are served, the schedule runs out, or the run is
/// interrupted (the first Ctrl-C ends a verify in progress, and the change is rolled back).
pub(super) async fn verify_new(run: &mut Run<'_>) -> Result<(), StepFailure> {
    let stop = run.stop.clone();
    let expected: Vec<Option<Expected>> = run
        .plan
        .certs
        .iter()
        .map(|c| Some(c.material.expected()))
        .collect();
    probe_until(run, &expected, &stop).await
}

/// Probes until each certificate's `expected` is served (or the schedule runs out),
/// uninterrupted: how a rollback ends. A certificate with nothing expected (`None`) or without
/// a TLS endpoint is not probed; the step is skipped when none is.
pub(super) async fn verify(
    run: &mut Run<'_>,
    expected: &[Option<Expected>],
) -> Result<(), StepFailure> {
    probe_until(run, expected, &CancellationToken::new()).await
}

async fn probe_until(
    run: &mut Run<'_>,
    expected: &[Option<Expected>],
    cancel: &CancellationToken,
) -> Result<(), StepFailure> {
    let plan = run.plan;
    let t = run.begin(Step::Verify);
    let probed: Vec<(usize, &Expected)> = plan
        .certs
        .iter()
        .enumerate()
        .filter(|(_, c)| c.has_probe)
        .filter_map(|(i, _)| expected.get(i).and_then(Option::as_ref).map(|e| (i, e)))
        .collect();
    if probed.is_empty() {
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
    let each = probed
        .iter()
        .map(|&(i, e)| crate::probe::verify(&plan.certs[i].probe, e, cancel));
    let results = futures::future::join_all(each).await;
    let mut passed = Vec::new();
    let mut failed = Vec::new();
    for (&(i, e), v) in probed.iter().zip(&results) {
        let c = &mut run.report.certificates[i];
        c.probes.extend(v.attempts.iter().cloned());
        if let Some(s) = &v.last_served {
            c.served_fingerprint = Some(s.leaf);
        }
        let at = label(run, i);
        if v.passed {
            passed.push(format!(
                "{at} served {} after {} probe(s)",
                e.leaf,
                v.attempts.len()
            ));
        } else {
            failed.push(failure(&at, e, v));
        }
    }
    run.report.sync_first();
    let result = if failed.is_empty() {
        let mut detail = passed.join("; ");
        if let Some(note) = &run.verify_note {
            detail.push_str(&format!("; {note}"));
        }
        Ok(((), Some(detail)))
    } else {
        Err(failed.join("; "))
    };
    run.record(Step::Verify, t.elapsed(), result)
}

/// The probed endpoint, as messages name it: `ADDRESS`, and `(SNI)` when the target has
/// several certificates.
pub(super) fn label(run: &Run<'_>, cert: usize) -> String {
    let c = &run.plan.certs[cert];
    match run.plan.certs.len() {
        1 => c.probe.address.clone(),
        _ => format!("{} ({})", c.probe.address, c.probe.sni),
    }
}

fn failure(at: &str, expected: &Expected, v: &Verification) -> String {
    if v.cancelled {
        return format!(
            "interrupted: the first Ctrl-C ended the verify after {} probe(s) of {at}",
            v.attempts.len()
        );
    }
    let last = v
        .attempts
        .last()
        .and_then(|a| a.detail.clone())
        .unwrap_or_default();
    format!(
        "{at} did not serve {} after {} probe(s): {last}",
        expected.leaf,
        v.attempts.len()
    )
}

/// The end of a rollback: probes for the certificates served before the run. `restored` says
/// what was put back; `cause` what went wrong first.
pub(super) async fn old_served_again(
    run: &mut Run<'_>,
    old: &[Option<Expected>],
    cause: &str,
    restored: &str,
) -> (Status, String) {
    match verify(run, old).await {
        Ok(()) => {
            let again: Vec<String> = old
                .iter()
                .enumerate()
                .filter(|(i, _)| run.plan.certs[*i].has_probe)
                .filter_map(|(i, o)| {
                    o.as_ref()
                        .map(|o| format!("{} serves {}", label(run, i), o.leaf))
                })
                .collect();
            (
                Status::RolledBack,
                format!("{cause}; {restored}; {} again", again.join("; ")),
            )
        }
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

/// Whether every certificate with a TLS endpoint is served as it should be (exactly its new
/// leaf and chain); a target with no endpoint to probe counts as served.
pub(super) fn all_served(plan: &crate::plan::TargetPlan, served: &[Option<Served>]) -> bool {
    plan.certs.iter().enumerate().all(|(i, c)| {
        !c.has_probe
            || served
                .get(i)
                .and_then(Option::as_ref)
                .is_some_and(|s| served_is(s, &c.material.expected()))
    })
}

/// Whether the probe can tell what this target serves: when it already sees the new leaf
/// while the target's files do not hold it, it reaches another server (a load balancer, a
/// VIP, a wrong `verify.address`) and would "verify" a deploy it cannot see. That fails the
/// target before anything is touched — unless `verify.shared` says the endpoint is shared or
/// `--force` is given: then the verify step says it could not attribute the result.
pub(super) fn attributable(
    run: &mut Run<'_>,
    files: &[StagedFile<'_>],
    served: &[Option<Served>],
) -> Result<(), StepFailure> {
    for (i, c) in run.plan.certs.iter().enumerate() {
        let mine = files.iter().filter(|f| f.planned.cert == i);
        if mine.clone().next().is_none() || mine.clone().all(|f| f.current()) {
            continue;
        }
        if let Some(s) = served.get(i).and_then(Option::as_ref)
            && s.leaf == c.material.leaf.fingerprint
        {
            attributable_one(run, i)?;
        }
    }
    Ok(())
}

/// One certificate's endpoint already serves its new leaf while its files do not hold it.
fn attributable_one(run: &mut Run<'_>, cert: usize) -> Result<(), StepFailure> {
    let c = &run.plan.certs[cert];
    let new = c.material.leaf.fingerprint;
    let address = label(run, cert);
    if c.probe_shared || run.force {
        run.verify_note = Some(format!(
            "{address} served the new certificate before the swap, so the probe could not \
             attribute the result to this target ({})",
            if c.probe_shared {
                "verify.shared"
            } else {
                "--force"
            }
        ));
        return Ok(());
    }
    Err(StepFailure::new(
        Step::Inspect,
        format!(
            "{address} already serves the new certificate {new} while this target's files do \
             not hold it: the probe reaches another server (a load balancer, a VIP, a wrong \
             verify.address?) and could not prove what this target serves. Point \
             verify.address at this target, or set verify.shared: true if the endpoint is \
             shared (or use --force)"
        ),
    ))
}
