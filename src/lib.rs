//! certctl: deploy TLS certificates to servers over SSH, agentless.
//!
//! # Layout
//!
//! Data flows one way:
//!
//! ```text
//!  cli ──► inventory ─┐
//!          material ──┼──► plan ──► deploy ──► report
//!          connector ─┘             │  ▲
//!                                   ▼  │
//!                               ssh, probe
//! ```
//!
//! - [`cli`] turns arguments into plain options; [`run`] dispatches commands.
//! - [`inventory`] loads the YAML contract v1 and merges defaults < groups < target.
//! - [`material`] parses and checks certificate material before anything connects.
//! - [`pkcs12`] builds the PFX that Windows targets import (leaf, chain, key, password).
//! - [`connector`] holds connector definitions (built-ins embedded from `connectors/`);
//!   [`binding`] judges whether a server's own configuration loads the paths a plan replaces.
//! - [`plan`] is pure: inventory + material + connectors -> one [`plan::TargetPlan`] per target.
//! - [`deploy`] runs the per-target state machine over [`ssh`] and [`probe`]; it prints nothing
//!   and sends [`report::Event`]s instead.
//! - [`verify`] probes targets for `certctl verify` (no SSH), over [`probe`].
//! - [`report`] owns every byte written to stdout/stderr and decides the exit code.
//! - [`limits`] holds the bounds on operator input (file modes, verify settings, RSA sizes);
//!   [`large_rsa`] handles RSA keys beyond ring's sizes; [`interrupt`] ends a run interrupted
//!   before any target started.
//! - Around a run: [`source`] and [`localcmd`] read material from files, variables and
//!   commands; [`hook`] selects certificates for an ACME client's deploy hook; [`policy`] is the
//!   gate before anything is touched; after a run, [`monitor`] writes Prometheus metrics,
//!   [`notify`] runs the inventory's notifiers and [`history`] appends to the local history.
//! - [`generate`] renders shell completions and man pages from the [`cli`] definition;
//!   [`version`] holds the build facts `--version` prints.

pub mod binding;
pub mod cli;
pub mod connector;
pub mod deploy;
pub mod generate;
pub mod history;
pub mod hook;
pub mod interrupt;
pub mod inventory;
pub mod large_rsa;
pub mod lifecycle;
pub mod limits;
pub mod localcmd;
pub mod material;
pub mod monitor;
pub mod notify;
pub mod pkcs12;
pub mod plan;
pub mod policy;
pub mod probe;
pub mod report;
pub mod secret;
pub mod select;
pub mod source;
pub mod ssh;
pub mod verify;
pub mod version;

pub use cli::run;
