//! The printer for a terminal: an indicatif view with one spinner line per running target (its
//! current step and elapsed time) above an overall bar (targets done / total). Finished
//! targets, failed steps and warnings are printed as permanent lines above the bars.
//!
//! One background thread animates every spinner (rather than one ticker thread per bar, which
//! would be hundreds of threads at a wide `--forks`); it stops in [`Reporter::finish`] or on drop.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::text::{self, Paint, VERB_WIDTH};
use super::{Event, Reporter};

const TICK: Duration = Duration::from_millis(120);

/// Live view on stderr; `Send + Sync`, called from many target tasks at once.
pub struct LiveReporter {
    multi: MultiProgress,
    overall: ProgressBar,
    running: Arc<Mutex<HashMap<String, ProgressBar>>>,
    ticker: Mutex<Option<Ticker>>,
    verbose: u8,
    paint: Paint,
    /// Whether this view is (still) the one [`super::print_stderr`] prints around.
    registered: AtomicBool,
}

struct Ticker {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Drawing state stays usable even if a thread panicked while holding the lock.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl LiveReporter {
    /// A live view on stderr for `total_targets` targets; colour as [`super::term`] decided.
    /// While it runs, [`super::print_stderr`] prints above the bars instead of through them.
    pub fn new(total_targets: usize, verbose: u8) -> Self {
        let live = Self::with_draw_target(
            ProgressDrawTarget::stderr(),
            total_targets,
            verbose,
            Paint::from_settings(),
        );
        super::io::set_live_view(Some(live.multi.clone()));
        live.registered.store(true, Ordering::Relaxed);
        live
    }

    /// A live view drawing to `target` (tests use an in-memory terminal).
    pub(crate) fn with_draw_target(
        target: ProgressDrawTarget,
        total_targets: usize,
        verbose: u8,
        paint: Paint,
    ) -> Self {
        let multi = MultiProgress::with_draw_target(target);
        let overall = multi.add(ProgressBar::new(total_targets as u64));
        overall.set_style(
            style(&format!(
                "{{prefix:>{VERB_WIDTH}}} [{{bar:30}}] {{pos}}/{{len}} ({{elapsed}})"
            ))
            .progress_chars("=> "),
        );
        overall.set_prefix("targets");
        let running = Arc::new(Mutex::new(HashMap::new()));
        let ticker = start_ticker(Arc::clone(&running), overall.clone());
        LiveReporter {
            multi,
            overall,
            running,
            ticker: Mutex::new(ticker),
            verbose,
            paint,
            registered: AtomicBool::new(false),
        }
    }

    fn println(&self, line: &str) {
        // Best effort: a closed terminal must not fail the deploy.
        let _ = self.multi.println(line);
    }

    fn step_started(&self, target: String, step: &str) {
        let mut running = lock(&self.running);
        match running.get(&target) {
            Some(bar) => bar.set_message(step.to_string()),
            None => {
                // Styled before it is added, so its first frame is already complete.
                let bar = ProgressBar::new_spinner()
                    .with_style(style(&format!(
                        "{{spinner:>{VERB_WIDTH}}} {{prefix}}: {{msg}} ({{elapsed}})"
                    )))
                    .with_prefix(super::sanitize::sanitize_line(&target))
                    .with_message(step.to_string());
                let bar = self.multi.insert_before(&self.overall, bar);
                bar.tick();
                running.insert(target, bar);
            }
        }
    }

    fn target_finished(&self, name: &str, line: &str) {
        let bar = lock(&self.running).remove(name);
        if let Some(bar) = bar {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
        self.println(line);
        self.overall.inc(1);
        if self
            .overall
            .length()
            .is_some_and(|len| self.overall.position() >= len)
        {
            self.finish();
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    // The templates are constants; the fallback only guards against a typo slipping through.
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn start_ticker(
    running: Arc<Mutex<HashMap<String, ProgressBar>>>,
    overall: ProgressBar,
) -> Option<Ticker> {
    let (stop, stopped) = mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("certctl-progress".to_string())
        .spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(TICK) {
                // Tick outside the map lock: drawing takes indicatif's own lock.
                let bars: Vec<ProgressBar> = lock(&running).values().cloned().collect();
                for bar in bars {
                    bar.tick();
                }
                overall.tick();
            }
        })
        // Without a ticker the view still updates on every event, just without animation.
        .ok()?;
    Some(Ticker { stop, thread })
}

impl Reporter for LiveReporter {
    fn event(&self, event: Event) {
        match event {
            Event::StepStarted { target, step } => self.step_started(target, step.as_str()),
            Event::StepFinished { target, step } => {
                let failed = step.status == super::StepStatus::Failed;
                if failed || self.verbose > 0 {
                    self.println(&text::step_finished(
                        &target,
                        &step,
                        self.verbose > 0,
                        self.paint,
                    ));
                }
            }
            Event::TargetFinished { report } => {
                self.target_finished(&report.name, &text::target_finished(&report, self.paint));
            }
            Event::Warning { target, message } => {
                self.println(&text::warning(target.as_deref(), &message))
            }
        }
    }

    fn finish(&self) {
        if let Some(ticker) = lock(&self.ticker).take() {
            let _ = ticker.stop.send(());
            let _ = ticker.thread.join();
        }
        let bars: Vec<ProgressBar> = lock(&self.running).drain().map(|(_, bar)| bar).collect();
        for bar in bars {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
        self.overall.finish_and_clear();
        if self.registered.swap(false, Ordering::Relaxed) {
            super::io::set_live_view(None);
        }
    }
}

impl Drop for LiveReporter {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use std::fmt;

    use indicatif::TermLike;

    use super::*;
    use crate::report::tests::{sample_target, step};
    use crate::report::{Status, Step, StepStatus};

    /// An in-memory terminal recording everything written, cursor moves dropped.
    #[derive(Clone, Default)]
    struct Screen(Arc<Mutex<String>>);

    impl fmt::Debug for Screen {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("Screen")
        }
    }

    impl TermLike for Screen {
        fn width(&self) -> u16 {
            100
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            let mut screen = lock(&self.0);
            screen.push_str(s);
            screen.push('\n');
            Ok(())
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            lock(&self.0).push_str(s);
            Ok(())
        }
        fn clear_line(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn live(total: usize, paint: Paint) -> (LiveReporter, Screen) {
        let screen = Screen::default();
        let target = ProgressDrawTarget::term_like(Box::new(screen.clone()));
        (
            LiveReporter::with_draw_target(target, total, 0, paint),
            screen,
        )
    }

    #[test]
    fn running_targets_get_a_spinner_that_goes_away_when_they_finish() {
        let (live, screen) = live(2, Paint::Plain);
        live.event(Event::StepStarted {
            target: "web-1".into(),
            step: Step::Connect,
        });
        live.event(Event::StepStarted {
            target: "web-2".into(),
            step: Step::Connect,
        });
        live.event(Event::StepStarted {
            target: "web-1".into(),
            step: Step::Reload,
        });
        assert_eq!(lock(&live.running).len(), 2);
        assert!(lock(&screen.0).contains("web-1: reload"));

        live.event(Event::TargetFinished {
            report: sample_target("web-1", Status::Deployed),
        });
        assert_eq!(lock(&live.running).len(), 1);
        assert_eq!(live.overall.position(), 1);
        assert!(lock(&live.ticker).is_some(), "still running one target");

        live.event(Event::TargetFinished {
            report: sample_target("web-2", Status::RolledBack),
        });
        assert!(lock(&live.running).is_empty());
        assert!(live.overall.is_finished());
        assert!(
            lock(&live.ticker).is_none(),
            "the last target stops the ticker"
        );

        let screen = lock(&screen.0);
        assert!(
            screen.contains("    deployed web-1: now serving AB:CD:EF:01…"),
            "{screen}"
        );
        assert!(
            screen.contains(" rolled-back web-2: rolled back to the previous files"),
            "{screen}"
        );
        assert!(
            !screen.contains('\u{1b}'),
            "no colour without colour: {screen:?}"
        );
    }

    #[test]
    fn failed_steps_print_sanitised_detail_and_colour_only_the_status_word() {
        let (live, screen) = live(1, Paint::Colour);
        live.event(Event::StepStarted {
            target: "web-1".into(),
            step: Step::Test,
        });
        let mut failed = step(Step::Test, StepStatus::Failed, 40);
        failed.detail = Some("nginx -t exited 1: \x1b]0;owned\x07bad key\nsecond line".into());
        live.event(Event::StepFinished {
            target: "web-1".into(),
            step: failed,
        });
        // A successful step prints nothing without -v.
        live.event(Event::StepFinished {
            target: "web-1".into(),
            step: step(Step::Lock, StepStatus::Ok, 1),
        });
        live.event(Event::Warning {
            target: None,
            message: "expires soon".into(),
        });
        live.finish();

        let screen = lock(&screen.0);
        // (The in-memory screen records no newlines: indicatif pads lines and moves the cursor.)
        assert!(
            screen.contains(
                "      \x1b[1;31mfailed\x1b[0m web-1 test: nginx -t exited 1: bad key (0.04s) "
            ),
            "{screen:?}"
        );
        // The rest of the detail is the summary footer's (and -v's), not the progress line's.
        assert!(!screen.contains("second line"), "{screen:?}");
        assert!(
            screen.contains("web-1: test ("),
            "the spinner shows the current step: {screen:?}"
        );
        assert!(screen.contains("warning: expires soon"));
        assert!(!screen.contains("lock"), "{screen:?}");
        assert!(!screen.contains("owned"));
    }
}
