//! The exit-code table of each subcommand's `--help`: only the codes that command can return.
//! One line per code (`  CODE  meaning`): `certctl man` renders these lines as EXIT STATUS.

pub(super) const TOP: &str = "\
Exit codes:
  0    success: every target deployed, unchanged or verified; rolled back as asked
  1    one or more targets failed and were rolled back or never touched
  2    usage error or invalid input; nothing was touched
  3    one or more targets failed AND their rollback failed: a person must look
  4    verify, status: a target serves the wrong certificate, or none
  130  interrupted
Each command's --help lists the codes it returns.";

pub(super) const DEPLOY: &str = "\
Exit codes:
  0    every target deployed, unchanged, reloaded or (--dry-run) would change
  1    a target failed and was rolled back or never touched, would fail, or was skipped
  2    usage error or invalid input (inventory, material, connector); nothing was touched
  3    one or more targets failed AND their rollback failed: a person must look
  130  interrupted";

pub(super) const VERIFY: &str = "\
Exit codes:
  0    every probed target serves the inventory's certificate and chain
  2    usage error or invalid input (inventory, material, connector)
  4    a target serves another certificate, none, or one expiring within --warn-days
  130  interrupted";

pub(super) const CHECK: &str = "\
Exit codes:
  0    the inventory, material, connectors and SSH files are usable (warnings may be printed)
  2    something is invalid or missing; every problem is listed once";

pub(super) const ROLLBACK: &str = "\
Exit codes:
  0    every target rolled back to its newest backup set, the restored certificate served
  1    one or more targets could not be rolled back and were left as they were
  2    usage error or invalid input; nothing was touched
  3    one or more restores failed: a person must look
  130  interrupted";

pub(super) const STATUS: &str = "\
Exit codes:
  0    every target's files and served certificate are the inventory's
  1    one or more targets could not be inspected (unreachable, failed)
  2    usage error or invalid input; nothing was contacted
  4    a target's files or served certificate differ from the inventory's (as verify)
  130  interrupted";
