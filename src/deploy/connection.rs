//! The connection to a target after it was lost: whether it is, reconnecting (the same strict
//! host-key check and authentication) with the lock still this run's, and releasing a lock a
//! failed lock step may have taken.

use std::time::Duration;

use super::lock::owner;
use super::names::lock_dir;
use super::run::Run;
use super::script::{self, STRICT};
use super::{Remote, windows};
use crate::plan::TargetPlan;
use crate::report::Step;
use crate::ssh::quote::Script;
use crate::ssh::{Session, SshErrorKind};

/// Pauses before each connect made to reach a target again after its connection was lost.
const RECONNECT_BACKOFF: [Duration; 3] = [
    Duration::ZERO,
    Duration::from_secs(1),
    Duration::from_secs(3),
];

/// Whether the connection no longer carries requests (on a lost connection opening a channel
/// fails at once). Windows targets are asked over SFTP: their shell runs no `true`.
pub(super) async fn connection_lost(session: &Session, plan: &TargetPlan) -> bool {
    match plan.remote() {
        Remote::Posix => session.exec(&["true".to_string()]).await.is_err(),
        Remote::Windows => session
            .list_dir(&windows::sftp_path(&plan.backup_dir))
            .await
            .is_err(),
    }
}

/// After the connection was lost during `during`: connects again with the same configuration
/// (strict host key, same authentication), up to [`RECONNECT_BACKOFF`] attempts, and — when
/// `check_lock` — checks that the lock still names this run. The new session replaces
/// `session`; recorded as a second connect step.
pub(super) async fn reconnect(
    run: &mut Run<'_>,
    session: &mut Session,
    during: &str,
    check_lock: bool,
) -> Result<(), String> {
    let plan = run.plan;
    let t = run.begin(Step::Connect);
    let mut last = String::new();
    for (attempt, pause) in RECONNECT_BACKOFF.iter().enumerate() {
        tokio::time::sleep(*pause).await;
        let error = match Session::connect(&plan.ssh).await {
            Ok(new) => {
                drop(std::mem::replace(session, new));
                let result = if !check_lock {
                    Ok(format!(
                        "the connection was lost during {during}; reconnected (attempt {})",
                        attempt + 1
                    ))
                } else {
                    match owner(session, plan).await {
                        Ok(None) => Ok(format!(
                            "the connection was lost during {during}; reconnected (attempt {}) \
                             and the lock still names this run",
                            attempt + 1
                        )),
                        Ok(Some(holder)) => Err(format!(
                            "the lock {} no longer names this run ({holder}), so nothing more \
                             was done",
                            super::names::lock_dir(plan)
                        )),
                        Err(e) => Err(format!("the lock could not be checked: {e}")),
                    }
                };
                let result = result.map(|d| ((), Some(d)));
                return run
                    .record(Step::Connect, t.elapsed(), result)
                    .map_err(|f| format!("after reconnecting, {}", f.message));
            }
            Err(e) => e,
        };
        last = error.to_string();
        // A host-key or authentication problem does not go away by retrying.
        if !matches!(
            error.kind,
            SshErrorKind::Connect { .. }
                | SshErrorKind::ConnectTimeout { .. }
                | SshErrorKind::Protocol { .. }
        ) {
            break;
        }
    }
    let message = format!("could not be re-established: {last}");
    let _ = run.record::<()>(Step::Connect, t.elapsed(), Err(message.clone()));
    Err(message)
}

/// Reconnects once lost, without checking the lock (to release it after a failed lock step).
pub(super) async fn reconnect_once(
    run: &mut Run<'_>,
    session: &mut Session,
    during: &str,
) -> Result<(), String> {
    reconnect(run, session, during, false).await
}

/// After a failed lock step: removes the lock if it names this run (over a new connection if
/// the old one was lost). Says what became of it, for the report's error.
pub(super) async fn release_after_failure(run: &mut Run<'_>, session: &mut Session) -> String {
    let plan = run.plan;
    let dir = lock_dir(plan);
    if super::connection::connection_lost(session, plan).await
        && let Err(e) = reconnect_once(run, session, "lock").await
    {
        return format!(
            "; the lock {dir} may still be held by this run (reconnecting to release it failed: \
             {e}): check the target, then rerun with --break-lock"
        );
    }
    match plan.remote() {
        super::Remote::Windows => super::windows::release_lock(session, plan).await,
        super::Remote::Posix => release_posix(session, plan).await,
    }
}

async fn release_posix(session: &Session, plan: &TargetPlan) -> String {
    let dir = lock_dir(plan);
    let mut s = Script::new();
    s.raw(STRICT).raw(*script::LOCK);
    s.cmd(&["certctl_unlock", &dir, &plan.run_id]);
    match session.exec_script(&s, None).await {
        Ok(out) => match String::from_utf8_lossy(&out.stdout).trim() {
            "RELEASED" => "; the lock this run had taken was released".into(),
            "NOTOURS" | "NOLOCK" => String::new(),
            _ => format!(
                "; the lock {dir} may still be held by this run ({}): check the target, then \
                 rerun with --break-lock",
                script::command_failure("unlock", &out)
            ),
        },
        Err(e) => format!(
            "; the lock {dir} may still be held by this run (releasing it failed: {e}): check \
             the target, then rerun with --break-lock"
        ),
    }
}
