//! The verification loop: probes on the [`Schedule`](super::Schedule) until the expected
//! certificate is served `consecutive` times in a row, with quick rechecks after a reload and
//! free confirming probes; cancellation and the deadline honoured throughout.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::served::compare;
use super::{
    Attempt, CONFIRM_GAP, ProbeError, ProbeSpec, QUICK_RECHECK, Served, Verification,
    probe_once_offering,
};
use crate::material::Expected;

/// Probes on the schedule until `expected` is served `consecutive` times in a row, the
/// attempts run out, or `cancel` fires (honoured during a wait to retry and during a retry's
/// probe; the first probe and a match's confirmation always run, so a target that goes on
/// after the first Ctrl-C is verified, not rolled back unprobed). When the
/// first probe sees another certificate, quick rechecks ([`QUICK_RECHECK`]) run inside the
/// first wait, in addition to the schedule's `attempts`.
pub async fn verify(
    spec: &ProbeSpec,
    expected: &Expected,
    cancel: &CancellationToken,
) -> Verification {
    verify_with(spec, expected, cancel, |_| {
        probe_once_offering(
            &spec.address,
            &spec.sni,
            spec.starttls,
            spec.offer,
            spec.timeout,
        )
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

/// Time as the verification loop sees it. Production uses tokio's clock; the unit tests
/// (`probe/tests.rs`) use a virtual one, because this crate does not enable tokio's `test-util`
/// (paused time).
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
    let deadline = spec.deadline();
    let mut pace = Pace::new(clock, spec, deadline);
    let needed = spec.consecutive.max(1);
    let mut result = Verification {
        passed: false,
        cancelled: false,
        attempts: Vec::new(),
        last_served: None,
    };

    while pace.more() {
        let is_quick = match pace.wait(cancel).await {
            Ok(is_quick) => is_quick,
            Err(Stop::Cancelled) => {
                result.cancelled = true;
                break;
            }
            Err(Stop::Deadline) => {
                note_deadline(&mut result, deadline);
                break;
            }
        };

        let began = clock.now();
        let (outcome, cut) = pace.run(probe(pace.number), began, spec, cancel).await;
        let (at_ms, duration_ms) = pace.probed(began, is_quick);
        let Some(outcome) = outcome else {
            result.attempts.push(Attempt {
                at_ms,
                duration_ms,
                served: None,
                matched: false,
                detail: Some("cancelled during the probe".into()),
            });
            result.cancelled = true;
            break;
        };
        let attempt = judge(
            expected,
            outcome,
            at_ms,
            duration_ms,
            &mut result.last_served,
        );
        // Another certificate served: the server is up but may still be switching over (a
        // reload returns before the new workers serve). Recheck soon, inside the first wait.
        let other_served = attempt.served.is_some() && !attempt.matched;
        pace.streak = if attempt.matched { pace.streak + 1 } else { 0 };
        result.attempts.push(attempt);
        if pace.streak >= needed {
            result.passed = true;
            break;
        }
        if cut {
            note_deadline(&mut result, deadline);
            break;
        }
        if pace.streak == 0 && pace.counted >= pace.attempts {
            break;
        }
        pace.plan_rechecks(other_served, is_quick);
    }
    result
}

/// Where a verification stands between probes: the clock, the schedule, the streak, the
/// quick rechecks.
struct Pace<'c, C> {
    clock: &'c C,
    start: Instant,
    /// When the verification gives up ([`ProbeSpec::deadline`] after `start`).
    end: Instant,
    /// The schedule's probes (at least 1), the waits between them, and the wait after those.
    attempts: u32,
    waits: Vec<Duration>,
    max_backoff: Duration,
    /// Matching probes in a row so far.
    streak: u32,
    /// Probes run so far: all of them, and those that count against `attempts`.
    number: u32,
    counted: u32,
    /// Quick rechecks inside the first wait: when they started, and the next gap.
    quick: Option<(Instant, Duration)>,
    /// How long the last probe took.
    last_probe: Duration,
}

/// Why the wait before a probe ended the verification.
enum Stop {
    Cancelled,
    Deadline,
}

impl<'c, C: Clock> Pace<'c, C> {
    fn new(clock: &'c C, spec: &ProbeSpec, deadline: Duration) -> Self {
        let start = clock.now();
        Pace {
            clock,
            start,
            end: start + deadline,
            attempts: spec.schedule.attempts.max(1),
            waits: spec.schedule.waits(),
            max_backoff: spec.schedule.max_backoff,
            streak: 0,
            number: 0,
            counted: 0,
            quick: None,
            last_probe: Duration::ZERO,
        }
    }

    /// Scheduled probes left, or a match to confirm: confirming probes are free, so a match on
    /// the last scheduled probe is still confirmed.
    fn more(&self) -> bool {
        self.counted < self.attempts || self.streak > 0
    }

    /// The wait before the next probe, and whether that probe is extra (a confirmation or a
    /// quick recheck, not counted against `attempts`).
    fn next_wait(&mut self) -> (Duration, bool) {
        match self.quick {
            // A match to confirm: soon, and not counted.
            _ if self.streak > 0 => (CONFIRM_GAP, true),
            Some((since, gap)) => {
                // A recheck fits if it ends (judged by the last probe's length) before the
                // schedule's second probe is due.
                let spent = self.clock.now() - since;
                let first = self.waits.first().copied().unwrap_or_default();
                let last = self.last_probe;
                if spent
                    .checked_add(gap)
                    .and_then(|t| t.checked_add(last))
                    .is_some_and(|t| t < first)
                {
                    (gap, true)
                } else {
                    self.quick = None;
                    (first.saturating_sub(spent), false)
                }
            }
            None => {
                let wait = self.waits.get(self.counted as usize - 1).copied();
                (wait.unwrap_or(self.max_backoff), false)
            }
        }
    }

    /// Before every probe but the first: the wait ([`Pace::next_wait`], never past the
    /// deadline). Whether the next probe is extra, or why the verification stops here.
    async fn wait(&mut self, cancel: &CancellationToken) -> Result<bool, Stop> {
        if self.number == 0 {
            return Ok(false);
        }
        let (wait, is_quick) = self.next_wait();
        let wait = wait.min(self.end.saturating_duration_since(self.clock.now()));
        // A match's confirmation is short and always completes; a wait to retry ends at the
        // cancellation.
        let retry = self.streak == 0;
        tokio::select! {
            biased;
            () = cancel.cancelled(), if retry => return Err(Stop::Cancelled),
            () = self.clock.sleep(wait) => {}
        }
        if self.clock.now() >= self.end {
            return Err(Stop::Deadline);
        }
        Ok(is_quick)
    }

    /// Runs one probe that `began` now: its outcome (`None` when cancelled during it), and
    /// whether the deadline cut it short.
    async fn run<Fut>(
        &self,
        probe: Fut,
        began: Instant,
        spec: &ProbeSpec,
        cancel: &CancellationToken,
    ) -> (Option<Result<Served, ProbeError>>, bool)
    where
        Fut: Future<Output = Result<Served, ProbeError>>,
    {
        // The first probe and a confirming one run even when the run was cancelled before (a
        // target that goes on after the first Ctrl-C gets its verify); a retry probe ends at
        // the cancellation.
        let cancellable = self.number > 0 && self.streak == 0;
        tokio::select! {
            biased;
            () = cancel.cancelled(), if cancellable => (None, false),
            outcome = probe => (Some(outcome), false),
            () = self.clock.sleep(self.end.saturating_duration_since(began)) => {
                let cut = ProbeError::Failed {
                    address: spec.address.clone(),
                    message: "no answer yet".into(),
                };
                (Some(Err(cut)), true)
            }
        }
    }

    /// Counts a probe that `began` then: its start and length in milliseconds, for the report.
    fn probed(&mut self, began: Instant, is_quick: bool) -> (u64, u64) {
        self.number += 1;
        if !is_quick {
            self.counted += 1;
        }
        self.last_probe = self.clock.now() - began;
        (millis(began - self.start), millis(self.last_probe))
    }

    /// After the first scheduled probe: start, widen or stop the quick rechecks, by whether
    /// the last probe saw another certificate.
    fn plan_rechecks(&mut self, other_served: bool, is_quick: bool) {
        if self.counted == 1 && self.attempts > 1 {
            self.quick = match (self.quick, other_served) {
                (None, true) if !is_quick => Some((self.clock.now(), QUICK_RECHECK)),
                (Some((since, gap)), true) => Some((since, gap.saturating_mul(2))),
                (Some((since, _)), false) => Some((since, Duration::MAX)),
                (q, _) => q,
            };
        }
    }
}

/// One probe's [`Attempt`]; a served chain also becomes the verification's `last_served`.
fn judge(
    expected: &Expected,
    outcome: Result<Served, ProbeError>,
    at_ms: u64,
    duration_ms: u64,
    last_served: &mut Option<Served>,
) -> Attempt {
    match outcome {
        Ok(served) => {
            let mismatch = compare(expected, &served);
            let attempt = Attempt {
                at_ms,
                duration_ms,
                served: Some(served.leaf),
                matched: mismatch.is_none(),
                detail: mismatch,
            };
            *last_served = Some(served);
            attempt
        }
        Err(e) => Attempt {
            at_ms,
            duration_ms,
            served: None,
            matched: false,
            detail: Some(e.to_string()),
        },
    }
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
