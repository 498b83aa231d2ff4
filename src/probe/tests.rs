//! The verification loop on a virtual clock, the schedule's arithmetic, and the comparison
//! of what was served with what is expected.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::served::compare;
use super::verify::{Clock, verify_on};
use super::*;
use crate::material::{Expected, Fingerprint};

/// Virtual time: `sleep` returns after moving the clock forward (on its second poll), probes move it with
/// `advance`. Optionally cancels `token` when a sleep reaches `cancel_at`, and then never
/// returns from that sleep, as a real timer would not before the cancellation wins.
struct VirtualClock {
    base: Instant,
    offset: Mutex<Duration>,
    cancel_at: Option<(Duration, CancellationToken)>,
}

impl VirtualClock {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            offset: Mutex::new(Duration::ZERO),
            cancel_at: None,
        }
    }

    fn cancelling_at(at: Duration, token: &CancellationToken) -> Self {
        Self {
            cancel_at: Some((at, token.clone())),
            ..Self::new()
        }
    }

    fn elapsed(&self) -> Duration {
        *self.offset.lock().unwrap()
    }

    fn advance(&self, by: Duration) {
        *self.offset.lock().unwrap() += by;
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> Instant {
        self.base + self.elapsed()
    }

    async fn sleep(&self, wait: Duration) {
        // Not on the first poll: a sleep that loses a race (the deadline against a probe
        // that was cancelled) must not move the clock, as a real timer would not.
        tokio::task::yield_now().await;
        let cancelled = {
            let mut offset = self.offset.lock().unwrap();
            match &self.cancel_at {
                Some((at, token)) if *offset + wait >= *at => {
                    *offset = *at;
                    token.cancel();
                    true
                }
                _ => {
                    *offset += wait;
                    false
                }
            }
        };
        if cancelled {
            std::future::pending::<()>().await;
        }
        tokio::task::yield_now().await;
    }
}

fn fp(b: u8) -> Fingerprint {
    Fingerprint([b; 32])
}

fn served(leaf: u8, chain: &[u8]) -> Served {
    Served {
        leaf: fp(leaf),
        chain: chain.iter().map(|b| fp(*b)).collect(),
        subject: "CN=t".into(),
        not_after: 0,
        not_before: 0,
        sans: Vec::new(),
    }
}

fn expected() -> Expected {
    Expected {
        leaf: fp(1),
        chain: vec![fp(2)],
    }
}

fn spec(attempts: u32, backoff_ms: u64, max_ms: u64, consecutive: u32) -> ProbeSpec {
    ProbeSpec {
        address: "127.0.0.1:1".into(),
        sni: "a.test".into(),
        starttls: StartTls::None,
        schedule: Schedule {
            attempts,
            backoff: Duration::from_millis(backoff_ms),
            max_backoff: Duration::from_millis(max_ms),
        },
        timeout: Duration::from_secs(10),
        consecutive,
        offer: Offer::default(),
    }
}

/// The detail of a probe that saw leaf 9 where leaf 1 was expected.
fn wrong_leaf() -> String {
    format!("served leaf {} (expected {})", fp(9), fp(1))
}

fn secs(v: &[u64]) -> Vec<Duration> {
    v.iter().map(|s| Duration::from_secs(*s)).collect()
}

/// Runs the loop with a scripted probe (`script[n]` = leaf byte served by probe n,
/// 0 = a handshake error), returning the result and when each probe started.
async fn run(
    clock: &VirtualClock,
    spec: &ProbeSpec,
    script: &[u8],
    cancel: &CancellationToken,
) -> (Verification, Vec<Duration>) {
    let times = Mutex::new(Vec::new());
    let v = verify_on(clock, spec, &expected(), cancel, |n| {
        times.lock().unwrap().push(clock.elapsed());
        let leaf = script[n as usize];
        async move {
            match leaf {
                0 => Err(ProbeError::Failed {
                    address: "x".into(),
                    message: "refused".into(),
                }),
                leaf => Ok(served(leaf, &[2])),
            }
        }
    })
    .await;
    (v, times.into_inner().unwrap())
}

/// [`run`] on a fresh clock, never cancelled.
async fn scripted(spec: &ProbeSpec, script: &[u8]) -> (Verification, Vec<Duration>) {
    run(
        &VirtualClock::new(),
        spec,
        script,
        &CancellationToken::new(),
    )
    .await
}

#[test]
fn waits_double_up_to_the_cap() {
    let s = |attempts, backoff, max| Schedule {
        attempts,
        backoff: Duration::from_secs(backoff),
        max_backoff: Duration::from_secs(max),
    };
    assert_eq!(s(3, 1, 16).waits(), secs(&[1, 2]));
    assert_eq!(s(7, 1, 16).waits(), secs(&[1, 2, 4, 8, 16, 16]));
    assert_eq!(s(5, 2, 2).waits(), secs(&[2, 2, 2, 2]));
    assert_eq!(s(1, 1, 16).waits(), secs(&[]));
    assert_eq!(s(0, 1, 16).waits(), secs(&[]));
    let huge = Schedule {
        attempts: 80,
        backoff: Duration::from_secs(1),
        max_backoff: Duration::MAX,
    };
    assert_eq!(huge.waits().last(), Some(&Duration::MAX));
}

fn ms(v: &[u64]) -> Vec<Duration> {
    v.iter().map(|m| Duration::from_millis(*m)).collect()
}

#[tokio::test]
async fn defaults_probe_at_0_then_plus_1_then_plus_2_seconds() {
    // The first probe fails (no certificate): no quick rechecks, the plain schedule.
    let (v, times) = scripted(&spec(3, 1000, 16_000, 1), &[0, 9, 9]).await;
    assert_eq!(times, secs(&[0, 1, 3]));
    assert!(!v.passed && !v.cancelled);
    assert_eq!(v.last_served, Some(served(9, &[2])));
    assert_eq!(v.attempts[1].detail, Some(wrong_leaf()));
}

#[tokio::test]
async fn another_certificate_first_is_rechecked_quickly_inside_the_first_wait() {
    // The old certificate is still served right after a reload: rechecks at +50, +100,
    // +200, +400 ms (doubling gaps, inside the first 1 s wait), then the schedule as before.
    let (v, times) = scripted(&spec(3, 1000, 16_000, 1), &[9; 7]).await;
    assert_eq!(times, ms(&[0, 50, 150, 350, 750, 1000, 3000]));
    assert!(!v.passed && !v.cancelled);
    assert_eq!(
        v.attempts.iter().map(|a| a.at_ms).collect::<Vec<_>>(),
        [0, 50, 150, 350, 750, 1000, 3000]
    );
    assert_eq!(v.last_served, Some(served(9, &[2])));
    assert_eq!(v.attempts[0].detail, Some(wrong_leaf()));
}

#[tokio::test]
async fn doubling_with_cap_then_pass() {
    // A first probe without a certificate: no quick rechecks.
    let clock = VirtualClock::new();
    let script = [0, 9, 9, 9, 9, 9, 1];
    let (v, times) = run(
        &clock,
        &spec(7, 1000, 16_000, 1),
        &script,
        &CancellationToken::new(),
    )
    .await;
    assert_eq!(times, secs(&[0, 1, 3, 7, 15, 31, 47]));
    assert!(v.passed);
    assert_eq!(v.attempts.len(), 7);
    assert!(v.attempts[6].matched && v.attempts[6].detail.is_none());
}

#[tokio::test]
async fn linear_when_cap_equals_backoff() {
    let (v, times) = scripted(&spec(4, 500, 500, 1), &[0, 0, 0, 0]).await;
    assert_eq!(times, [0, 500, 1000, 1500].map(Duration::from_millis));
    assert!(!v.passed);
    assert_eq!(v.attempts[3].detail.as_deref(), Some("x: refused"));
    assert_eq!(v.last_served, None);
}

#[tokio::test]
async fn first_match_passes_immediately() {
    let (v, times) = scripted(&spec(3, 1000, 16_000, 1), &[1, 9, 9]).await;
    assert!(v.passed);
    assert_eq!(times, secs(&[0]));
}

#[tokio::test]
async fn consecutive_resets_on_mismatch() {
    let (v, _) = scripted(&spec(6, 100, 100, 2), &[1, 9, 1, 0, 1, 1]).await;
    assert!(v.passed);
    assert_eq!(
        v.attempts.iter().map(|a| a.matched).collect::<Vec<_>>(),
        [true, false, true, false, true, true]
    );
}

#[tokio::test]
async fn alternating_never_passes_with_two_in_a_row() {
    let (v, _) = scripted(&spec(3, 100, 100, 2), &[1, 9, 1, 9, 1, 9]).await;
    assert!(!v.passed);
    // Three scheduled probes, each match followed by one (free) confirming probe.
    assert_eq!(
        v.attempts.iter().map(|a| a.matched).collect::<Vec<_>>(),
        [true, false, true, false, true, false]
    );
}

#[tokio::test]
async fn a_match_is_confirmed_100ms_later_and_the_confirmation_is_free() {
    // The last scheduled probe matches: its confirmation still runs.
    let (v, times) = scripted(&spec(2, 1000, 1000, 2), &[0, 1, 1]).await;
    assert!(v.passed);
    assert_eq!(
        times,
        [
            Duration::ZERO,
            Duration::from_secs(1),
            Duration::from_secs(1) + CONFIRM_GAP
        ]
    );
}

#[tokio::test]
async fn stops_when_the_scheduled_probes_are_spent() {
    let (v, times) = scripted(&spec(2, 1000, 1000, 3), &[0, 0]).await;
    assert!(!v.passed);
    assert_eq!(times, secs(&[0, 1]));
}

#[tokio::test]
async fn attempts_record_when_and_how_long() {
    let clock = VirtualClock::new();
    let v = verify_on(
        &clock,
        &spec(2, 1000, 1000, 1),
        &expected(),
        &CancellationToken::new(),
        |_| async {
            clock.advance(Duration::from_millis(250));
            Ok(served(9, &[2]))
        },
    )
    .await;
    let timing: Vec<(u64, u64)> = v
        .attempts
        .iter()
        .map(|a| (a.at_ms, a.duration_ms))
        .collect();
    // Quick rechecks at +50 and +100 ms after each 250 ms probe; the next would not end
    // before the second scheduled probe, which stays at 250 + 1000 ms.
    assert_eq!(timing, [(0, 250), (300, 250), (650, 250), (1250, 250)]);
    assert_eq!(clock.elapsed(), Duration::from_millis(1500));
}

#[tokio::test]
async fn quick_recheck_passes_as_soon_as_the_reload_shows() {
    let (v, times) = scripted(&spec(3, 1000, 16_000, 1), &[9, 9, 1]).await;
    assert!(v.passed);
    assert_eq!(times, ms(&[0, 50, 150]));
}

#[tokio::test]
async fn quick_rechecks_stop_on_an_error_and_never_add_to_a_single_attempt() {
    let (v, times) = scripted(&spec(3, 1000, 16_000, 1), &[9, 0, 9, 9]).await;
    assert!(!v.passed);
    assert_eq!(times, ms(&[0, 50, 1000, 3000]));

    let (v, times) = scripted(&spec(1, 1000, 16_000, 1), &[9]).await;
    assert!(!v.passed);
    assert_eq!(times, ms(&[0]));

    // A backoff shorter than the first gap leaves no room for a recheck.
    let (_, times) = scripted(&spec(3, 50, 50, 1), &[9, 9, 9]).await;
    assert_eq!(times, ms(&[0, 50, 100]));
}

#[tokio::test]
async fn cancellation_during_a_wait() {
    let cancel = CancellationToken::new();
    let clock = VirtualClock::cancelling_at(Duration::from_millis(1500), &cancel);
    let (v, times) = run(&clock, &spec(5, 1000, 16_000, 1), &[0; 5], &cancel).await;
    assert!(v.cancelled && !v.passed);
    assert_eq!(times, secs(&[0, 1]));
    assert_eq!(v.attempts.len(), 2);
    assert_eq!(clock.elapsed(), Duration::from_millis(1500));
}

#[tokio::test]
async fn cancellation_during_a_retry_probe() {
    let cancel = CancellationToken::new();
    let clock = VirtualClock::new();
    let v = verify_on(&clock, &spec(3, 1000, 1000, 1), &expected(), &cancel, |n| {
        let (clock, cancel) = (&clock, &cancel);
        async move {
            if n == 0 {
                return Ok(served(9, &[2]));
            }
            clock.advance(Duration::from_millis(500));
            cancel.cancel();
            std::future::pending::<Result<Served, ProbeError>>().await
        }
    })
    .await;
    assert!(v.cancelled && !v.passed);
    assert_eq!(v.attempts.len(), 2);
    assert_eq!(v.attempts[1].duration_ms, 500);
    assert_eq!(
        v.attempts[1].detail.as_deref(),
        Some("cancelled during the probe")
    );
}

/// Cancelled before it began: the first probe still runs, and a match is confirmed; a
/// mismatch is not retried.
#[tokio::test]
async fn already_cancelled_probes_once_and_confirms_a_match_only() {
    let cancel = CancellationToken::new();
    cancel.cancel();
    let clock = VirtualClock::new();
    let (v, times) = run(&clock, &spec(3, 1000, 1000, 2), &[1, 1, 1], &cancel).await;
    assert!(v.passed && !v.cancelled, "{v:?}");
    assert_eq!(v.attempts.len(), 2);
    let clock = VirtualClock::new();
    let (v, times2) = run(&clock, &spec(3, 1000, 1000, 2), &[0, 1, 1], &cancel).await;
    assert!(v.cancelled && !v.passed && v.attempts.len() == 1, "{v:?}");
    assert_eq!((times.len(), times2.len()), (2, 1));
}

/// The public entry point on tokio's real clock: short waits, so this stays fast; it only
/// checks outcomes, never elapsed time.
#[tokio::test]
async fn verify_with_uses_the_same_loop() {
    let script = [9u8, 1, 1];
    let v = verify_with(
        &spec(3, 1, 1, 2),
        &expected(),
        &CancellationToken::new(),
        |n| {
            let leaf = script[n as usize];
            async move { Ok(served(leaf, &[2])) }
        },
    )
    .await;
    assert!(v.passed);
    assert_eq!(
        v.attempts.iter().map(|a| a.matched).collect::<Vec<_>>(),
        [false, true, true]
    );
}

#[test]
fn chain_differences_are_spelled_out() {
    let want = Expected {
        leaf: fp(1),
        chain: vec![fp(2), fp(3)],
    };
    assert_eq!(compare(&want, &served(1, &[2, 3])), None);
    assert_eq!(
        compare(&want, &served(1, &[2])).unwrap(),
        "chain differs: served 1 intermediate, expected 2"
    );
    assert_eq!(
        compare(&want, &served(1, &[2, 4])).unwrap(),
        format!(
            "chain differs: certificate 2 after the leaf is {} (expected {})",
            fp(4),
            fp(3)
        )
    );
    assert!(
        compare(&want, &served(7, &[2, 3]))
            .unwrap()
            .starts_with("served leaf ")
    );
}

/// Deploy runs one task per target: the probe futures must be `Send`.
#[test]
fn futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let (spec, want, cancel) = (spec(1, 1, 1, 1), expected(), CancellationToken::new());
    assert_send(&verify(&spec, &want, &cancel));
    assert_send(&probe_once(
        "127.0.0.1:1",
        "a.test",
        StartTls::Smtp,
        Duration::from_secs(1),
    ));
}

#[test]
fn the_deadline_is_the_schedules_worst_case_capped() {
    // Defaults: waits 1 s + 2 s, and 3 probes (+1 for the quick rechecks) of 10 s.
    assert_eq!(spec(3, 1000, 16_000, 1).deadline(), Duration::from_secs(43));
    // 7 probes: waits 1+2+4+8+16+16 s, 8 timeouts of 10 s.
    assert_eq!(
        spec(7, 1000, 16_000, 1).deadline(),
        Duration::from_secs(127)
    );
    // consecutive 2: each probe may be confirmed, 100 ms later, by one more (3 × 10.1 s).
    assert_eq!(
        spec(3, 1000, 16_000, 2).deadline(),
        Duration::from_millis(73_300)
    );
    // Whatever the settings, never past the limit (and no walk of every attempt).
    let huge = spec(u32::MAX, 1000, 600_000, 1);
    assert_eq!(huge.deadline(), crate::limits::MAX_VERIFY_DURATION);
    assert_eq!(
        huge.schedule.worst_case(Duration::ZERO),
        Duration::from_secs(1 + 2 + 4 + 8 + 16 + 32 + 64 + 128 + 256 + 512)
            + Duration::from_secs(600) * (u32::MAX - 11)
    );
}

#[tokio::test]
async fn a_probe_that_never_ends_is_stopped_at_the_deadline() {
    // A probe that ignores its own timeout (or an endpoint that trickles bytes forever):
    // the verification still ends, at the deadline, and says why.
    let clock = VirtualClock::new();
    let spec = spec(3, 1000, 16_000, 1);
    let v = verify_on(
        &clock,
        &spec,
        &expected(),
        &CancellationToken::new(),
        |_| std::future::pending::<Result<Served, ProbeError>>(),
    )
    .await;
    assert!(!v.passed && !v.cancelled);
    assert_eq!(clock.elapsed(), Duration::from_secs(43));
    assert_eq!(v.attempts.len(), 1);
    let detail = v.attempts[0].detail.as_deref().unwrap();
    assert!(
        detail.ends_with("no answer yet; stopped at the verify deadline (43s)"),
        "{detail}"
    );
}

#[tokio::test]
async fn slow_probes_and_waits_stop_at_the_deadline() {
    // Each probe takes 20 s (twice its timeout, as a probe that overran it would): the
    // second wait reaches the deadline, so the verification stops instead of probing again.
    let clock = VirtualClock::new();
    let spec = spec(3, 1000, 16_000, 1);
    let v = verify_on(
        &clock,
        &spec,
        &expected(),
        &CancellationToken::new(),
        |_| {
            clock.advance(Duration::from_secs(20));
            async { Ok(served(9, &[2])) }
        },
    )
    .await;
    assert!(!v.passed);
    assert_eq!(clock.elapsed(), Duration::from_secs(43));
    assert_eq!(v.attempts.len(), 2);
    let detail = v.attempts[1].detail.as_deref().unwrap();
    assert!(
        detail.ends_with("; stopped at the verify deadline (43s)"),
        "{detail}"
    );
}
