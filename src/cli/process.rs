//! The process around a command: the open-file limit behind `--forks`, Ctrl-C and SIGTERM
//! (and what a second one still reports), and `-v` logging.

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::{Output, finish};
use crate::deploy;
use crate::plan::TargetPlan;
use crate::report::{self, RunReport, Status, TargetReport};

/// File descriptors one target in flight may hold at once: its SSH connection, a probe's TCP
/// connection, and a known_hosts or key file being read, with one to spare.
const FDS_PER_TARGET: u64 = 4;
/// Descriptors kept back for the process itself: stdio, the runtime, jump-host connections.
const FDS_RESERVED: u64 = 64;

/// `--forks`, bounded by the open-file limit. The soft limit is first raised to the hard one
/// (a shell's usual soft limit, 1024, allows about 240 targets in flight); should even the
/// hard limit be too low, fewer targets run at once instead of failing with EMFILE.
pub(super) fn forks_within_fd_limit(forks: u16) -> usize {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let wanted = u64::from(forks.max(1));
    let limit = getrlimit(Resource::Nofile);
    let mut soft = limit.current;
    if soft != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            soft = limit.maximum;
        }
    }
    let Some(soft) = soft else {
        return usize::from(forks.max(1));
    };
    let allowed = (soft.saturating_sub(FDS_RESERVED) / FDS_PER_TARGET).max(1);
    if allowed < wanted {
        report::print_warning(&format!(
            "--forks {forks} lowered to {allowed}: the open-file limit is {soft} \
             (raise it with `ulimit -n`)"
        ));
    }
    usize::try_from(wanted.min(allowed)).unwrap_or(usize::MAX)
}

/// `-v…` logs on stderr, through [`report::stderr_writer`]; colour (level names) only where
/// [`report::term`] allows it, never into a pipe or a CI log by default.
pub(super) fn init_tracing(verbose: u8, colour: bool) {
    let level = match verbose {
        0 => return,
        1 => "certctl=info",
        2 => "certctl=debug",
        _ => "certctl=trace,russh=debug",
    };
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| level.into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(report::stderr_writer)
        .with_ansi(colour)
        .with_target(false)
        .try_init();
}

/// What a second interrupt (an abort) still reports: one JSON document with `--output json`
/// (a CI artifact is never empty), every target in it — finished ones as they ended, those in
/// the middle of a step `failed` with the step named, the rest `skipped`.
pub(super) struct Abort {
    command: &'static str,
    dry_run: bool,
    started_at: std::time::SystemTime,
    started: Instant,
    /// One report per selected target, in order, for those that never started.
    not_started: Vec<TargetReport>,
    output: Output,
}

impl Abort {
    pub(super) fn new(
        command: &'static str,
        dry_run: bool,
        started_at: std::time::SystemTime,
        plans: &[TargetPlan],
        output: Output,
    ) -> Abort {
        Abort {
            command,
            dry_run,
            started_at,
            started: Instant::now(),
            not_started: plans
                .iter()
                .map(|p| deploy::skipped(p, "interrupted before this target started"))
                .collect(),
            output,
        }
    }

    /// The report of the run so far, and the text naming the targets left between states.
    fn report(&self) -> (RunReport, String) {
        let progress = deploy::progress();
        let mut text = String::from("interrupt: aborting.");
        if progress.in_flight.is_empty() {
            text.push_str(" No target was in the middle of a step.\n");
        } else {
            text.push_str(
                " These targets were interrupted between states; the next run that takes their \
                 lock (with --break-lock) recovers them from their journal:\n",
            );
        }
        let targets = self
            .not_started
            .iter()
            .map(|blank| {
                if let Some(done) = progress.finished.iter().find(|r| r.name == blank.name) {
                    return done.clone();
                }
                let mut report = blank.clone();
                if let Some(step) = progress.in_flight.get(&blank.name) {
                    text.push_str(&format!(
                        "  {}: interrupted during {}\n",
                        blank.name,
                        step.as_str()
                    ));
                    report.status = Status::Failed;
                    report.error = Some(format!(
                        "interrupted during {}; the next run will recover it",
                        step.as_str()
                    ));
                }
                report
            })
            .collect();
        let run = RunReport::new(
            self.command,
            self.dry_run,
            self.started_at,
            self.started.elapsed(),
            targets,
        );
        (run, text)
    }
}

/// First Ctrl-C (or SIGTERM): start no new target, let running ones finish or roll back.
/// Second: report what is known ([`Abort`]) and exit 130 at once.
pub(super) fn watch_interrupts(
    stop: CancellationToken,
    abort: Abort,
) -> Arc<std::sync::atomic::AtomicBool> {
    let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = flag.clone();
    tokio::spawn(async move {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return;
        };
        for count in 1.. {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            seen.store(true, std::sync::atomic::Ordering::SeqCst);
            if count == 1 {
                report::print_stderr(
                    "interrupt: starting no new targets; running targets finish or roll back (interrupt again to abort)\n",
                );
                stop.cancel();
            } else {
                let (run, text) = abort.report();
                report::print_stderr(&text);
                finish(&run, abort.output);
                std::process::exit(130);
            }
        }
    });
    flag
}
