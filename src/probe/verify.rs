//! The verification loop: probes on the [`Schedule`](super::Schedule) until the expected
//! certificate is served `consecutive` times in a row, with quick rechecks after a reload and
//! free confirming probes; cancellation and the deadline honoured throughout.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::served::compare;
use super::{
    Attempt, CONFIRM_GAP, ProbeError, ProbeSpec, QUICK_RECHECK, Served, Verification, probe_once,
};
use crate::material::Expected;

/// Probes on the schedule until `expected` is served `consecutive` times in a row, the
/// attempts run out, or `cancel` fires (honoured during waits and during a probe). When the
/// first probe sees another certificate, quick rechecks ([`QUICK_RECHECK`]) run inside the
/// first wait, in addition to the schedule's `attempts`.
pub async fn verify(
    spec: &ProbeSpec,
    expected: &Expected,
    cancel: &CancellationToken,
) -> Verification {
    verify_with(spec, expected, cancel, |_| {
        probe_once(&spec.address, &spec.sni, spec.starttls, spec.timeout)
    })
    .await
}

/// [`verify`] with the probe passed in (`probe(n)` runs probe number `n`, from 0): the
/// schedule, the streak and cancellation, without a network. Times come from tokio's clock,
/// so callers can test it under paused time.
///
/// Stops early once a pass is impossible (fewer probes left than matches still needed).
pub async fn verify_with<F, Fut>(
    spec: &ProbeSpec,
    expected: &Expected,
    cancel: &CancellationToken,
    probe: F,
) -> Verification
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<Served, ProbeError>>,
{
    verify_on(&TokioClock, spec, expected, cancel, probe).await
}

/// Time as the verification loop sees it. Production uses tokio's clock; the unit tests below
/// use a virtual one, because this crate does not enable tokio's `test-util` (paused time).
pub(super) trait Clock {
    fn now(&self) -> Instant;
    fn sleep(&self, wait: Duration) -> impl Future<Output = ()> + Send;
}

struct TokioClock;

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, wait: Duration) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(wait)
    }
}

pub(super) async fn verify_on<C, F, Fut>(
    clock: &C,
    spec: &ProbeSpec,
    expected: &Expected,
    cancel: &CancellationToken,
    mut probe: F,
) -> Verification
where
    C: Clock,
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<Served, ProbeError>>,
{
    let start = clock.now();
    let deadline = spec.deadline();
    let end = start + deadline;
    let attempts = spec.schedule.attempts.max(1);
    let needed = spec.consecutive.max(1);
    let waits = spec.schedule.waits();
    let mut result = Verification {
        passed: false,
        cancelled: false,
        attempts: Vec::new(),
        last_served: None,
    };
    let mut streak = 0u32;
    // Probes run so far: all of them, and those that count against `attempts`.
    let mut number = 0u32;
    let mut counted = 0u32;
    // Quick rechecks inside the first wait: when they started, and the next gap.
    let mut quick: Option<(Instant, Duration)> = None;
    let mut last_probe = Duration::ZERO;

    // Confirming probes are free: a match on the last scheduled probe is still confirmed.
    while counted < attempts || streak > 0 {
        let mut is_quick = false;
        if number > 0 {
            let wait = match quick {
                // A match to confirm: soon, and not counted.
                _ if streak > 0 => {
                    is_quick = true;
                    CONFIRM_GAP
                }
                Some((since, gap)) => {
                    // A recheck fits if it ends (judged by the last probe's length) before the
                    // schedule's second probe is due.
                    let spent = clock.now() - since;
                    let first = waits.first().copied().unwrap_or_default();
                    let last = last_probe;
                    if spent
                        .checked_add(gap)
                        .and_then(|t| t.checked_add(last))
                        .is_some_and(|t| t < first)
                    {
                        is_quick = true;
                        gap
                    } else {
                        quick = None;
                        first.saturating_sub(spent)
                    }
                }
                None => waits
                    .get(counted as usize - 1)
                    .copied()
                    .unwrap_or(spec.schedule.max_backoff),
            };
            let wait = wait.min(end.saturating_duration_since(clock.now()));
            tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    result.cancelled = true;
                    break;
                }
                () = clock.sleep(wait) => {}
            }
            if clock.now() >= end {
                note_deadline(&mut result, deadline);
                break;
            }
        } else if cancel.is_cancelled() {
            result.cancelled = true;
            break;
        }

        let began = clock.now();
        let mut cut = false;
        let outcome = tokio::select! {
            biased;
            () = cancel.cancelled() => None,
            outcome = probe(number) => Some(outcome),
            () = clock.sleep(end.saturating_duration_since(began)) => {
                cut = true;
                Some(Err(ProbeError::Failed {
                    address: spec.address.clone(),
                    message: "no answer yet".into(),
                }))
            }
        };
        number += 1;
        if !is_quick {
            counted += 1;
        }
        last_probe = clock.now() - began;
        let at_ms = millis(began - start);
        let duration_ms = millis(last_probe);
        let attempt = match outcome {
            None => {
                result.attempts.push(Attempt {
                    at_ms,
                    duration_ms,
                    served: None,
                    matched: false,
                    detail: Some("cancelled during the probe".into()),
                });
                result.cancelled = true;
                break;
            }
            Some(Ok(served)) => {
                let mismatch = compare(expected, &served);
                let attempt = Attempt {
                    at_ms,
                    duration_ms,
                    served: Some(served.leaf),
                    matched: mismatch.is_none(),
                    detail: mismatch,
                };
                result.last_served = Some(served);
                attempt
            }
            Some(Err(e)) => Attempt {
                at_ms,
                duration_ms,
                served: None,
                matched: false,
                detail: Some(e.to_string()),
            },
        };
        // Another certificate served: the server is up but may still be switching over (a
        // reload returns before the new workers serve). Recheck soon, inside the first wait.
        let other_served = attempt.served.is_some() && !attempt.matched;
        streak = if attempt.matched { streak + 1 } else { 0 };
        result.attempts.push(attempt);
        if streak >= needed {
            result.passed = true;
            break;
        }
        if cut {
            note_deadline(&mut result, deadline);
            break;
        }
        if streak == 0 && counted >= attempts {
            break;
        }
        if counted == 1 && attempts > 1 {
            quick = match (quick, other_served) {
                (None, true) if !is_quick => Some((clock.now(), QUICK_RECHECK)),
                (Some((since, gap)), true) => Some((since, gap.saturating_mul(2))),
                (Some((since, _)), false) => Some((since, Duration::MAX)),
                (q, _) => q,
            };
        }
    }
    result
}

/// A verification that reached [`ProbeSpec::deadline`]: its last attempt says so.
fn note_deadline(result: &mut Verification, deadline: Duration) {
    let note = format!(
        "stopped at the verify deadline ({})",
        crate::source::format_duration(deadline)
    );
    if let Some(last) = result.attempts.last_mut() {
        last.detail = Some(match last.detail.take() {
            Some(detail) => format!("{detail}; {note}"),
            None => note,
        });
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
