//! `certctl init`: writes a commented starter inventory that `certctl check` accepts once the
//! certificate files exist. Asks nothing; `--connector NAME` picks whose params it fills in
//! (with their defaults and descriptions). Refuses to overwrite a file unless `--force`.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::Args;

use super::Invalid;
use crate::connector::{Catalogue, ConnectorDef};
use crate::report::{self, Problem};

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where to write the inventory.
    #[arg(
        short = 'i',
        long = "inventory",
        env = "CERTCTL_INVENTORY",
        default_value = "certctl.yaml"
    )]
    pub inventory: PathBuf,
    /// The connector of the starter target (`certctl connectors list`).
    #[arg(long, value_name = "NAME", default_value = "nginx")]
    pub connector: String,
    /// Overwrite the file if it exists.
    #[arg(long)]
    pub force: bool,
}

/// The starter target's name; `{target}` in a param default becomes it.
const TARGET: &str = "web-1";

pub(super) fn run(args: InitArgs) -> Result<u8, Invalid> {
    let catalogue = Catalogue::builtin();
    let def = catalogue.get(&args.connector).map_err(|_| {
        let names: Vec<&str> = catalogue.iter().map(|(n, _, _)| n).collect();
        let hint = crate::connector::did_you_mean(&args.connector, names.iter().copied())
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        Invalid(vec![Problem::run(format!(
            "init: unknown connector `{}`{hint}; `certctl connectors list` lists them",
            args.connector
        ))])
    })?;
    if args.inventory.exists() && !args.force {
        return Err(Invalid(vec![Problem::run(format!(
            "init: {} exists; pass --force to overwrite it, or -i NEW_FILE",
            args.inventory.display()
        ))]));
    }
    let text = starter(&args.connector, def);
    std::fs::write(&args.inventory, text).map_err(|e| {
        Invalid(vec![Problem::run(format!(
            "init: cannot write {}: {e}",
            args.inventory.display()
        ))])
    })?;
    let dir = args
        .inventory
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| format!("{}/", p.display()))
        .unwrap_or_default();
    report::print_stderr(&format!(
        "wrote {} (connector {}). Next:\n  1. put the certificate in {dir}certs/www.crt, its \
         intermediates in {dir}certs/chain.pem and its key in {dir}certs/www.key (or change \
         those paths)\n  2. set the target's host and params\n  3. certctl check -i {0}, then \
         certctl deploy --dry-run -i {0}\n",
        args.inventory.display(),
        args.connector
    ));
    Ok(report::EXIT_OK)
}

/// A YAML scalar: plain when that reads back as the same string, else JSON-quoted (valid
/// YAML).
fn scalar(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-{}~+".contains(c))
        && !value.starts_with(['{', '~', '-'])
        && !matches!(
            value,
            "true" | "false" | "yes" | "no" | "null" | "on" | "off"
        )
        && value.parse::<f64>().is_err();
    if plain {
        value.to_string()
    } else {
        serde_json::to_string(value).unwrap_or_else(|_| format!("{value:?}"))
    }
}

/// A value for a param that has no default: something that passes the plan's checks and
/// reads as "change me".
fn placeholder(connector: &str, param: &str) -> Option<&'static str> {
    Some(match (connector, param) {
        ("ssh", "fullchain_path") => "/etc/app/tls/fullchain.pem",
        ("ssh", "key_path") => "/etc/app/tls/key.pem",
        ("ssh", _) => return None,
        (_, "profile") => "clientssl-www",
        (_, "site") => "Default Web Site",
        (_, "keystore_path") => "/opt/app/conf/keystore.p12",
        (_, "password_env") => "KEYSTORE_PASSWORD",
        (_, "secret_name") => "www-tls",
        _ => "CHANGE-ME",
    })
}

fn params(out: &mut String, connector: &str, def: &ConnectorDef) {
    let _ = writeln!(
        out,
        "    params:                          # `certctl connectors show {connector}` explains them"
    );
    let mut lines: Vec<(String, String)> = Vec::new();
    for (name, param) in &def.params {
        let description = param.description.split(". ").next().unwrap_or("").trim();
        let needed = if param.default.is_none() {
            " (required)"
        } else {
            ""
        };
        let value = match param.default.as_deref() {
            Some("") | None => match placeholder(connector, name) {
                Some(v) => v.to_string(),
                None => {
                    lines.push((format!("# {name}: \"\""), description.to_string()));
                    continue;
                }
            },
            Some(default) => default.replace("{target}", TARGET),
        };
        lines.push((
            format!("{name}: {}", scalar(&value)),
            format!("{description}{needed}"),
        ));
    }
    let width = lines
        .iter()
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(0);
    for (line, comment) in lines {
        let _ = writeln!(out, "      {line:<width$}  # {comment}");
    }
}

/// The whole starter inventory for `connector`.
fn starter(connector: &str, def: &ConnectorDef) -> String {
    let mut out = format!(
        "# certctl inventory (contract v1), written by `certctl init --connector {connector}`.\n\
         # Reference: docs/inventory.md; `certctl connectors show {connector}`.\n\
         # Next: put the certificate files under certs/, set the host below, then\n\
         #   certctl check              # offline: inventory, material, connectors, SSH files\n\
         #   certctl deploy --dry-run   # connects, stages, previews the NEW files; changes nothing\n\
         #   certctl deploy\n\
         defaults:\n\
         \x20 user: root                          # SSH login user\n\
         \x20 # port: 22\n\
         \x20 # identity_file: ~/.ssh/id_ed25519  # else ssh-agent, then ~/.ssh/config's IdentityFile\n\
         \x20 # known_hosts: ~/.ssh/known_hosts   # strict: an unknown or changed host key is refused\n\
         \x20 # jump: bastion.example.com         # ProxyJump, [user@]host[:port]\n\
         \x20 # become: sudo                      # a non-root login runs remote steps via `sudo -n`\n\
         \x20 verify:\n\
         \x20   attempts: 3                       # probes in total\n\
         \x20   backoff: 1s                       # wait before the 2nd probe; doubles each time\n\
         \x20   max_backoff: 16s\n\
         \x20   timeout: 10s                      # connect + handshake, per probe\n\
         \x20   consecutive: 2                    # matching probes in a row to pass\n\
         \n\
         certificates:\n\
         \x20 www:\n\
         \x20   cert: certs/www.crt               # leaf PEM (a full-chain file works: leaf first)\n\
         \x20   chain: certs/chain.pem            # intermediates; remove if cert holds them\n\
         \x20   key: certs/www.key                # or key_env: VAR, or key_command: [argv...]\n\
         \n\
         targets:\n\
         \x20 - name: {TARGET}\n\
         \x20   host: web-1.example.com           # name, IPv4 or IPv6; ~/.ssh/config aliases work\n\
         \x20   connector: {connector}\n\
         \x20   certificate: www\n"
    );
    params(&mut out, connector, def);
    if connector == "ssh" {
        out.push_str(
            "    commands:                        # the generic connector runs only what you give\n\
             \x20     preview:                        # must load the STAGED file, not the live one\n\
             \x20       - [openssl, x509, -noout, -in, \"{staged.fullchain}\"]\n\
             \x20     # test: [/opt/app/bin/app, --check-config]\n\
             \x20     # reload: [systemctl, reload, app]\n",
        );
    }
    out.push_str(
        "    # verify:\n\
         \x20   #   address: web-1.example.com:443  # default: host + the connector's port\n\
         \x20   #   sni: www.example.com            # default: the certificate's first DNS name\n",
    );
    out
}
