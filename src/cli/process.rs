//! The process around a command: the open-file limit behind `--forks`, and `-v` logging.

use crate::report;

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
