//! Interrupts before anything is touched. Until the engine starts its first target, certctl
//! only reads local input (the inventory, certificate material from files, variables and
//! commands), checks it and, for `deploy`, probes what is served: the first Ctrl-C (or SIGTERM)
//! then ends the run at once with exit 130, after killing the process group of any local
//! command still running (a `key_command` that hangs must not outlive certctl).
//!
//! Owns: that listener and the registry of running local commands ([`crate::localcmd`] adds
//! and removes them). Does not own interrupts once targets run: from the first target's first
//! step on, the command's own handling applies (the first interrupt lets running targets finish
//! or roll back, a second aborts), and this listener stands aside for good.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Process groups of the local commands running now (each is its group's leader).
static COMMANDS: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// Set once the listener is running.
static LISTENING: AtomicBool = AtomicBool::new(false);

/// Set once a target has started: interrupts are the engine's from then on.
static ENGINE_STARTED: AtomicBool = AtomicBool::new(false);

/// Makes sure the listener runs. Called before every local read; without a tokio runtime (unit
/// tests calling the library directly) there is nothing to do and the default action applies.
pub fn watch_local_phase() {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if LISTENING.swap(true, Ordering::SeqCst) {
        return;
    }
    // `signal()` registers with the runtime's driver: call it inside the runtime.
    let _guard = runtime.enter();
    let kinds = [
        tokio::signal::unix::SignalKind::interrupt(),
        tokio::signal::unix::SignalKind::terminate(),
    ];
    let Ok(mut streams) = kinds
        .into_iter()
        .map(tokio::signal::unix::signal)
        .collect::<Result<Vec<_>, _>>()
    else {
        // No listener: the default action (termination) still ends the process.
        LISTENING.store(false, Ordering::SeqCst);
        return;
    };
    runtime.spawn(async move {
        let [interrupt, terminate] = streams.as_mut_slice() else {
            return;
        };
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        if engine_started() {
            // The engine's own handling has this interrupt (and every later one).
            return;
        }
        stop_local_commands();
        crate::report::print_stderr(
            "interrupt: stopped before any target was started; nothing was touched\n",
        );
        std::process::exit(130);
    });
}

/// Whether a target has started (the engine then owns interrupts). Sticky.
fn engine_started() -> bool {
    if ENGINE_STARTED.load(Ordering::SeqCst) {
        return true;
    }
    let progress = crate::deploy::progress();
    let started = !progress.in_flight.is_empty() || !progress.finished.is_empty();
    if started {
        ENGINE_STARTED.store(true, Ordering::SeqCst);
    }
    started
}

/// Records a local command's process group (its leader's pid) while it runs.
pub(crate) fn command_started(pid: i32) {
    lock().push(pid);
}

/// Forgets a local command that ended.
pub(crate) fn command_ended(pid: i32) {
    lock().retain(|p| *p != pid);
}

/// Kills the process group of every local command still running.
fn stop_local_commands() {
    for pid in lock().drain(..) {
        if let Some(pid) = rustix::process::Pid::from_raw(pid) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

fn lock() -> std::sync::MutexGuard<'static, Vec<i32>> {
    COMMANDS.lock().unwrap_or_else(|p| p.into_inner())
}
