//! The command line: clap types (their doc comments are the `--help` text), and [`run`], which
//! turns them into plain options and drives inventory -> material -> plan -> deploy -> report.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::connector::Catalogue;
use crate::deploy::{self, DeployOptions};
use crate::inventory::{self, Inventory, Target};
use crate::material::Material;
use crate::plan::{self, RunSettings, TargetPlan};
use crate::report::{self, RunReport};
use crate::select::MaxFail;

mod args;
pub use args::*;
mod check;
mod connectors;
mod errors;
pub use errors::parse;
mod help;
mod init;
mod limit;
mod plan_view;
mod process;
mod report_cmd;
mod status_view;
mod verify;

/// Runs a parsed command line; returns the process exit code.
pub async fn run(cli: Cli) -> u8 {
    let term = report::term::configure(
        match cli.color {
            ColorWhen::Auto => report::term::ColorChoice::Auto,
            ColorWhen::Always => report::term::ColorChoice::Always,
            ColorWhen::Never => report::term::ColorChoice::Never,
        },
        cli.quiet,
        cli.verbose,
    );
    process::init_tracing(cli.verbose, term.colour);
    let _ = crate::ssh::known_hosts::ON_RECORDED.set(|line| {
        if !report::term::settings().quiet {
            report::print_stderr(line);
        }
    });
    let json_report = errors::json_command(&cli.command);
    if let Some(args) = limit::inventory_args(&cli.command).filter(|a| a.list_targets) {
        return match limit::list(args) {
            Ok(code) => code,
            Err(Invalid(problems)) => errors::invalid(&problems, None),
        };
    }
    let result = match cli.command {
        Command::Deploy(args) => deploy_command(args, cli.verbose).await,
        Command::Verify(args) => verify::run(args, cli.verbose).await,
        Command::Check(args) => check::run(args, cli.verbose),
        Command::Rollback(args) => rollback_command(args, cli.verbose).await,
        Command::Status(args) => status_command(args, cli.verbose).await,
        Command::History(args) => history_command(args),
        Command::Init(args) => init::run(args),
        Command::Report { action } => report_cmd::run(action),
        Command::Connectors { action } => connectors::run(action.unwrap_or(ConnectorsAction::List)),
        Command::Completions { shell } => Ok(crate::generate::completions(shell)),
        Command::Man(args) => Ok(crate::generate::man(&args)),
    };
    match result {
        Ok(code) => code,
        Err(Invalid(problems)) => errors::invalid(&problems, json_report),
    }
}

/// Invalid input: exit 2, nothing touched. Every problem found is listed, once, with the
/// targets it affects.
struct Invalid(Vec<report::Problem>);

impl<E: std::fmt::Display> From<E> for Invalid {
    fn from(e: E) -> Self {
        Invalid(vec![report::Problem::run(e.to_string())])
    }
}

impl Invalid {
    /// Problems of the whole run, one message each.
    fn messages(messages: Vec<String>) -> Self {
        Invalid(messages.into_iter().map(report::Problem::run).collect())
    }
}

/// Inventory, connectors, selected targets, material and plans: everything before connecting.
struct Prepared {
    plans: Vec<TargetPlan>,
    certificates: usize,
    inventory: Inventory,
}

fn prepare(args: &InventoryArgs, settings: &RunSettings) -> Result<Prepared, Invalid> {
    prepare_only(args, settings, None)
}

/// [`prepare`] for the targets whose certificate is in `only` (hook mode), when given.
fn prepare_only(
    args: &InventoryArgs,
    settings: &RunSettings,
    only: Option<&std::collections::BTreeSet<String>>,
) -> Result<Prepared, Invalid> {
    errors::inventory_exists(&args.inventory)?;
    let inventory = inventory::load(&args.inventory, &Catalogue::builtin_names())?;
    let catalogue = Catalogue::builtin().with_user(&inventory.connectors)?;
    let mut targets = select(&inventory, args)?;
    if let Some(only) = only {
        targets.retain(|t| t.certificate_names().any(|c| only.contains(c)));
    }

    let mut materials = BTreeMap::new();
    // Each certificate is loaded once; a broken one is one problem naming every target using it.
    let mut broken: BTreeMap<&str, String> = BTreeMap::new();
    let mut errors = Vec::new();
    let used = targets
        .iter()
        .flat_map(|t| t.certificate_names().map(move |c| (t, c)));
    for (target, certificate) in used {
        let problem = |message: String| report::Problem {
            message,
            targets: vec![target.name.clone()],
        };
        if materials.contains_key(certificate) {
            continue;
        }
        if let Some(message) = broken.get(certificate) {
            errors.push(problem(message.clone()));
            continue;
        }
        let Some(spec) = inventory.certificates.get(certificate) else {
            errors.push(problem(format!("unknown certificate `{certificate}`")));
            continue;
        };
        match Material::load(spec).and_then(|m| m.check(&[], settings.now).map(|w| (m, w))) {
            Ok((m, warnings)) => {
                for w in warnings {
                    report::print_warning(&format!("certificate `{}`: {w}", spec.name));
                }
                materials.insert(certificate.to_owned(), Arc::new(m));
            }
            Err(e) => {
                broken.insert(certificate, e.to_string());
                errors.push(problem(e.to_string()));
            }
        }
    }
    if !errors.is_empty() {
        return Err(Invalid(report::problems::group(errors)));
    }
    let ssh_client = match &args.ssh_config {
        Some(path) => crate::ssh::config::SshClientConfig::load(path),
        None => crate::ssh::config::SshClientConfig::load_default(),
    }?;
    for warning in ssh_client.warnings() {
        report::print_warning(warning);
    }
    let settings = RunSettings {
        ssh_client: Arc::new(ssh_client),
        ..settings.clone()
    };
    let plans = plan::build(&inventory, &targets, &catalogue, &materials, &settings)
        .map_err(|errs| Invalid(errors::plan_problems(&errs)))?;
    // Per-host ssh config warnings, once each however many targets share the line.
    let mut shown = std::collections::BTreeSet::new();
    for warning in plans.iter().flat_map(|p| &p.ssh_warnings) {
        if shown.insert(warning.as_str()) {
            report::print_warning(warning);
        }
    }
    Ok(Prepared {
        plans,
        certificates: materials.len(),
        inventory,
    })
}

/// `--limit`, then `--shard`.
fn select<'a>(inventory: &'a Inventory, args: &InventoryArgs) -> Result<Vec<&'a Target>, Invalid> {
    let limit = args
        .limit
        .as_deref()
        .map(|l| limit::expand(l, inventory))
        .transpose()?;
    let selected = crate::select::select(&inventory.targets, &inventory.groups, limit.as_deref())?;
    Ok(match args.shard {
        Some(shard) => crate::select::shard(selected, shard),
        None => selected,
    })
}

async fn deploy_command(args: DeployArgs, verbose: u8) -> Result<u8, Invalid> {
    let started = Instant::now();
    let started_at = std::time::SystemTime::now();
    let settings = RunSettings::new(args.accept_new_host_keys);
    let only = crate::lifecycle::hook_selection(args.hook.as_deref(), &args.inventory.inventory)?;
    if only.as_ref().is_some_and(|o| o.is_empty()) {
        return Ok(0);
    }
    let Prepared {
        plans, inventory, ..
    } = prepare_only(&args.inventory, &settings, only.as_ref())?;
    let forks = process::forks_within_fd_limit(args.run.forks);
    let problems = crate::lifecycle::policy_problems(&inventory, &plans, settings.now);
    if !problems.is_empty() {
        return Err(Invalid::messages(problems));
    }
    // The downgrade gate probes while the targets connect; they wait for it before the lock.
    let (decide, gate) = deploy::gate::gate();
    let gate_plans = plans.clone();
    let gate_run = async {
        let (refusals, verdict) =
            crate::lifecycle::downgrade_gate(&inventory, &gate_plans, forks, args.force).await;
        decide.send(verdict);
        refusals
    };
    let reporter: Arc<dyn report::Reporter> = Arc::from(report::reporter(plans.len(), verbose));
    let stop = CancellationToken::new();
    let abort = process::Abort::new("deploy", args.dry_run, started_at, &plans, args.run.output);
    let interrupted = process::watch_interrupts(stop.clone(), abort);
    let total = plans.len();
    let previews = args.dry_run.then(|| plan_view::previews(&plans));
    let leaves = plan_view::leaves(&plans);
    let options = DeployOptions {
        mode: if args.dry_run {
            deploy::Mode::DryRun
        } else {
            deploy::Mode::Deploy
        },
        force: args.force,
        forks,
        batches: crate::select::batches(&args.serial.unwrap_or_default(), total),
        max_fail: args.max_fail,
        break_lock: args.break_lock,
        gate: Some(gate),
    };
    let (refusals, targets) = tokio::join!(
        gate_run,
        deploy::deploy_all(plans, options, reporter.clone(), stop.clone())
    );
    reporter.finish();
    if !refusals.is_empty() {
        return Err(Invalid::messages(refusals));
    }
    let mut run = RunReport::new(
        "deploy",
        args.dry_run,
        started_at,
        started.elapsed(),
        targets,
    );
    run.extras = plan_view::deployed_expiry(&run, &leaves);
    if let Some(previews) = previews {
        plan_view::print(&run, &previews, verbose);
    }
    finish(&run, args.run.output);
    let code = if stop.is_cancelled() && interrupted.load(std::sync::atomic::Ordering::SeqCst) {
        130
    } else {
        report::exit_code(&run)
    };
    let notify = !args.no_notify && !args.dry_run;
    crate::lifecycle::after_run(&run, code, &inventory, &settings.run_id, notify, verbose).await;
    Ok(code)
}

async fn rollback_command(args: RollbackArgs, verbose: u8) -> Result<u8, Invalid> {
    let settings = RunSettings::new(args.accept_new_host_keys);
    let prepared = prepare(&args.inventory, &settings)?;
    let options = fleet_options(
        deploy::Mode::Rollback,
        args.run.forks,
        args.break_lock,
        &prepared,
    );
    let inventory = prepared.inventory.clone();
    let (run, code) = fleet_command("rollback", prepared, options, verbose, args.run.output).await;
    finish(&run, args.run.output);
    let notify = !args.no_notify;
    crate::lifecycle::after_run(&run, code, &inventory, &settings.run_id, notify, verbose).await;
    Ok(code)
}

async fn status_command(args: StatusArgs, verbose: u8) -> Result<u8, Invalid> {
    let settings = RunSettings::new(args.accept_new_host_keys);
    let prepared = prepare(&args.inventory, &settings)?;
    let options = fleet_options(deploy::Mode::Status, args.run.forks, false, &prepared);
    let (mut run, code) =
        fleet_command("status", prepared, options, verbose, args.run.output).await;
    run.extras = run
        .targets
        .iter()
        .map(report::TargetExtra::for_status)
        .collect();
    if args.run.output == Output::Human {
        report::print_stderr(&status_view::status_lines(&run));
    }
    finish(&run, args.run.output);
    Ok(code)
}

/// A whole-fleet operation's options: every target in one batch, no failure budget.
fn fleet_options(
    mode: deploy::Mode,
    forks: u16,
    break_lock: bool,
    prepared: &Prepared,
) -> DeployOptions {
    DeployOptions {
        mode,
        force: false,
        forks: process::forks_within_fd_limit(forks),
        batches: vec![prepared.plans.len()],
        max_fail: MaxFail::Count(usize::MAX),
        break_lock,
        gate: None,
    }
}

/// Runs a whole-fleet operation (rollback, status) through the engine with interrupts
/// watched; returns the report and the exit code.
async fn fleet_command(
    command: &'static str,
    prepared: Prepared,
    options: DeployOptions,
    verbose: u8,
    output: Output,
) -> (RunReport, u8) {
    let started = Instant::now();
    let started_at = std::time::SystemTime::now();
    let reporter: Arc<dyn report::Reporter> =
        Arc::from(report::reporter(prepared.plans.len(), verbose));
    let stop = CancellationToken::new();
    let abort = process::Abort::new(command, false, started_at, &prepared.plans, output);
    let interrupted = process::watch_interrupts(stop.clone(), abort);
    let targets = deploy::deploy_all(prepared.plans, options, reporter.clone(), stop.clone()).await;
    reporter.finish();
    let run = RunReport::new(command, false, started_at, started.elapsed(), targets);
    let code = if interrupted.load(std::sync::atomic::Ordering::SeqCst) {
        130
    } else {
        report::exit_code(&run)
    };
    (run, code)
}

fn history_command(args: HistoryArgs) -> Result<u8, Invalid> {
    let default = PathBuf::from("certctl.yaml");
    let inventory = args
        .inventory
        .or_else(|| default.exists().then_some(default));
    let json = args.output == Output::Json;
    Ok(crate::lifecycle::history_command(
        inventory.as_deref(),
        args.file,
        args.limit,
        args.check,
        json,
    )?)
}

/// Prints the summary table (stderr) and, with `--output json`, the report (stdout).
fn finish(run: &RunReport, output: Output) {
    if report::term::settings().quiet {
        report::print_stderr(&report::summary_short(run));
    } else {
        report::print_stderr(&report::summary_table(run));
    }
    if output == Output::Json {
        let mut out = std::io::stdout().lock();
        if let Err(e) = report::write_json(run, &mut out) {
            report::print_stderr(&format!("error: writing the JSON report: {e}"));
        }
    }
}

/// Data on stdout; a failure to write it (full disk behind a redirect) is reported on stderr.
fn print_stdout(text: &str) {
    if let Err(e) = report::print_stdout(text) {
        report::print_stderr(&format!("error: writing to stdout: {e}"));
    }
}
