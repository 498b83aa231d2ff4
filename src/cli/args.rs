//! The command line's clap types: their doc comments are the `--help` text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use super::{help, init, report_cmd};
use crate::select::{MaxFail, SerialSpec, Shard};

/// Deploy TLS certificates to servers over SSH: staged preview, atomic swap, reload, verified
/// by a TLS handshake, rolled back on failure.
#[derive(Debug, Parser)]
#[command(
    name = "certctl",
    version,
    long_version = crate::version::long(),
    after_help = help::TOP,
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// More detail on stderr (-v, -vv, -vvv); never secrets.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Errors and the summary only: no progress, no warnings.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Colour on stderr: `auto` (a terminal that is not TERM=dumb, unless NO_COLOR is set;
    /// CLICOLOR_FORCE=1 colours a pipe too), `always` or `never`.
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = ColorWhen::Auto, global = true)]
    pub color: ColorWhen,
}

/// `--color WHEN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorWhen {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Deploy certificates: inspect, stage, preview, backup, swap, test, reload, verify.
    #[command(after_help = help::DEPLOY)]
    Deploy(DeployArgs),
    /// Probe every selected target: is the inventory's certificate (and chain) served?
    #[command(after_help = help::VERIFY)]
    Verify(VerifyArgs),
    /// Offline check of the inventory, the certificate material and the connectors.
    #[command(after_help = help::CHECK)]
    Check(CheckArgs),
    /// Restore each selected target's newest backup set, reload, and verify the restored
    /// certificate is served. A second rollback goes one backup set further back.
    #[command(after_help = help::ROLLBACK)]
    Rollback(RollbackArgs),
    /// Per target, read-only: files on disk (fingerprint, not-after, mode, owner), what is
    /// served and for how long, OS/arch/hostname and the server software's version.
    #[command(after_help = help::STATUS)]
    Status(StatusArgs),
    /// The local history of runs that changed something (deployed, reloaded, rolled back):
    /// print it, or check its hash chain.
    History(HistoryArgs),
    /// Write a commented starter inventory (./certctl.yaml, or -i FILE) for one connector.
    Init(init::InitArgs),
    /// Work with JSON reports: `report merge A.json B.json …` combines a sharded run's.
    Report {
        #[command(subcommand)]
        action: report_cmd::ReportAction,
    },
    /// List the connectors, or show one's definition.
    Connectors {
        #[command(subcommand)]
        action: Option<ConnectorsAction>,
    },
    /// Print a shell completion script on stdout, e.g.
    /// `certctl completions bash > /etc/bash_completion.d/certctl`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout, or write every page into a directory.
    Man(crate::generate::ManArgs),
}

#[derive(Debug, Subcommand)]
pub enum ConnectorsAction {
    /// One line per connector.
    List,
    /// A connector's full definition (YAML) and parameters.
    Show { name: String },
}

#[derive(Debug, Clone, Args)]
pub struct InventoryArgs {
    /// The inventory file.
    #[arg(
        short = 'i',
        long = "inventory",
        env = "CERTCTL_INVENTORY",
        default_value = "certctl.yaml"
    )]
    pub inventory: PathBuf,
    /// Only these targets: names, group names and globs (`web-*`), separated by `,` or `:`;
    /// `!term` excludes, `&term` intersects (`web:&staging`), `all` is every target, `@FILE`
    /// reads one pattern per line, `@REPORT.json` retries the targets a previous JSON report
    /// did not count as a success. A term that matches nothing is an error.
    #[arg(short = 'l', long, value_name = "PATTERN")]
    pub limit: Option<String>,
    /// Print the selected targets' names on stdout, one a line, and exit (nothing contacted).
    #[arg(long)]
    pub list_targets: bool,
    /// Only shard I of N (e.g. `2/3`): a stable partition of the selected targets by name, so
    /// N CI jobs together cover every target exactly once.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<Shard>,
    /// OpenSSH client config to read Host aliases, HostName, IdentityFile, ProxyJump,
    /// ConnectTimeout and ServerAliveInterval from (default ~/.ssh/config). The inventory wins.
    #[arg(short = 'F', long = "ssh-config", value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Human,
    Json,
}

/// Options every command that works on the fleet takes.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Targets in flight at once.
    #[arg(short = 'f', long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..))]
    pub forks: u16,
    /// Human output on stderr, or one JSON document on stdout.
    #[arg(long, value_enum, default_value_t = Output::Human)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    #[command(flatten)]
    pub inventory: InventoryArgs,
    /// Validate only: connect, stage, make the server load the staged files, report what
    /// would change, and leave every live file and service untouched.
    #[arg(long)]
    pub dry_run: bool,
    /// Redeploy even when the files and the served certificate already match.
    #[arg(long)]
    pub force: bool,
    /// Deploy in batches: `N`, `P%`, or a list such as `1,10%,100%` (a canary batch first; the
    /// last size repeats).
    #[arg(long, value_name = "N|P%,...")]
    pub serial: Option<SerialSpec>,
    /// Start no new batch once more than N (or P% of) targets have failed; the rest are
    /// reported `skipped`. Default 0: any failure stops the rollout after its batch.
    #[arg(long, value_name = "N|P%", default_value = "0")]
    pub max_fail: MaxFail,
    /// Remove a lock a killed run left on the targets before taking it. Check first that no
    /// other certctl run is still working on them.
    #[arg(long)]
    pub break_lock: bool,
    #[command(flatten)]
    pub run: RunArgs,
    /// Trust and record the host key of a host never seen before (a changed key is still refused).
    #[arg(long)]
    pub accept_new_host_keys: bool,
    /// Run as an ACME client's deploy hook (certbot `--deploy-hook`, acme.sh `--reloadcmd`,
    /// lego `--deploy-hook`): deploy only the certificates that are the one just renewed, read
    /// from the client's variables. CLIENT: auto (default), certbot, acme.sh, lego.
    #[arg(long, value_name = "CLIENT", num_args = 0..=1, default_missing_value = "auto")]
    pub hook: Option<String>,
    /// Do not run the inventory's `notify:` commands after this run.
    #[arg(long)]
    pub no_notify: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub inventory: InventoryArgs,
    #[command(flatten)]
    pub run: RunArgs,
    /// Report `expiring` (exit 4) when the served certificate expires within this many days;
    /// 0 turns the check off. The inventory's own certificates are checked against it too.
    #[arg(long, default_value_t = 14, value_name = "DAYS")]
    pub warn_days: u32,
    /// Also write the results as Prometheus metrics (node_exporter textfile format) to FILE,
    /// atomically.
    #[arg(long, value_name = "FILE")]
    pub prometheus: Option<PathBuf>,
    /// Do not run the inventory's `notify:` commands after this run.
    #[arg(long)]
    pub no_notify: bool,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The inventory whose `history:` setting names the file (default ./certctl.yaml when it
    /// exists).
    #[arg(short = 'i', long = "inventory", env = "CERTCTL_INVENTORY")]
    pub inventory: Option<PathBuf>,
    /// The history file (default: $CERTCTL_HISTORY, the inventory's `history:`, else
    /// $XDG_STATE_HOME/certctl/history.jsonl).
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Show the last N entries; 0 shows all.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub limit: usize,
    /// Verify the hash chain instead (exit 1 when a line was edited, inserted or removed).
    #[arg(long)]
    pub check: bool,
    /// Human lines, or the entries as JSON lines.
    #[arg(long, value_enum, default_value_t = Output::Human)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub inventory: InventoryArgs,
    #[command(flatten)]
    pub run: RunArgs,
    /// Trust and record the host key of a host never seen before (a changed key is still refused).
    #[arg(long)]
    pub accept_new_host_keys: bool,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub inventory: InventoryArgs,
    #[command(flatten)]
    pub run: RunArgs,
    /// Remove a lock a killed run left on the targets before taking it.
    #[arg(long)]
    pub break_lock: bool,
    /// Trust and record the host key of a host never seen before (a changed key is still refused).
    #[arg(long)]
    pub accept_new_host_keys: bool,
    /// Do not run the inventory's `notify:` commands after this run.
    #[arg(long)]
    pub no_notify: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub inventory: InventoryArgs,
    /// Print each target's resolved connection on stdout, as `ssh -G` does: address, port,
    /// user, keys, known_hosts files, jump hosts, become (also with -v, or naming targets).
    #[arg(long)]
    pub show: bool,
    /// Human output on stderr, or one JSON document on stdout (targets with their resolved
    /// connection and files; problems and warnings as lists).
    #[arg(long, value_enum, default_value_t = Output::Human)]
    pub output: Output,
    /// Show only these targets' resolved connection.
    #[arg(value_name = "TARGET")]
    pub targets: Vec<String>,
}
