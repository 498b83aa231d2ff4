//! `certctl verify` at the command line: the run (probing is [`crate::verify`]'s), then the
//! report, `--prometheus` and the inventory's notifiers.

use std::sync::Arc;
use std::time::Instant;

use super::{Invalid, VerifyArgs, finish, prepare, process};
use crate::plan::RunSettings;
use crate::report::{self, RunReport};

pub(super) async fn run(args: VerifyArgs, verbose: u8) -> Result<u8, Invalid> {
    let started = Instant::now();
    let started_at = std::time::SystemTime::now();
    let settings = RunSettings::new(false);
    let prepared = prepare(&args.inventory, &settings)?;
    let reporter: Arc<dyn report::Reporter> =
        Arc::from(report::reporter(prepared.plans.len(), verbose));
    let forks = process::forks_within_fd_limit(args.run.forks);
    let (targets, seen) =
        crate::verify::verify_all(prepared.plans, args.warn_days, forks, reporter.clone()).await;
    reporter.finish();
    let mut run = RunReport::new("verify", false, started_at, started.elapsed(), targets);
    let now = crate::plan::now_unix();
    run.extras = seen
        .iter()
        .map(|o| {
            o.served_not_after.map_or_else(Default::default, |at| {
                report::TargetExtra::served_expiry(at, now)
            })
        })
        .collect();
    finish(&run, args.run.output);
    if let Some(path) = &args.prometheus {
        crate::lifecycle::write_prometheus(path, &seen, crate::plan::now_unix());
    }
    let code = report::exit_code(&run);
    let (inventory, run_id) = (&prepared.inventory, &settings.run_id);
    crate::lifecycle::after_run(&run, code, inventory, run_id, !args.no_notify, verbose).await;
    Ok(code)
}
