//! Where things live on the target: the lock, this run's backup set, and the temp names a run
//! gives files beside live ones. Pure.

use crate::plan::TargetPlan;

/// The target's lock: a directory beside its backups (per target, private).
pub(super) fn lock_dir(plan: &TargetPlan) -> String {
    format!("{}/.lock", plan.backup_dir)
}

/// The backup set of this run.
pub(super) fn set_dir(plan: &TargetPlan) -> String {
    format!("{}/{}", plan.backup_dir, plan.run_id)
}

/// `DIR/.NAME.certctl-RUN.SUFFIX` beside `path` (same directory, so a rename is atomic; the
/// lock step sweeps `.NAME.certctl-*` a killed run left).
pub(super) fn temp_beside(path: &str, run_id: &str, suffix: &str) -> String {
    let (dir, base) = path.rsplit_once('/').unwrap_or(("", path));
    format!("{dir}/.{base}.certctl-{run_id}.{suffix}")
}

/// The directory of `path` (`/` for a file at the root).
pub(super) fn parent(path: &str) -> String {
    match path.rsplit_once('/') {
        Some(("", _)) | None => "/".into(),
        Some((dir, _)) => dir.to_string(),
    }
}

/// Ends a cleanup error when the lock could not be removed.
pub(super) const LOCK_LEFT: &str = "; the lock stays, so the next run reports it as held by this \
                                    finished run: check the target, then rerun with --break-lock";
