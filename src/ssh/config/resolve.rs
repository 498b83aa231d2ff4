//! What the config says for one host alias, as `ssh ALIAS` would read it: among the lines
//! whose `Host` patterns match, the first value of each keyword wins (`IdentityFile`
//! accumulates), then paths are expanded with the tokens those values give. Keywords certctl
//! does not follow become warnings naming the file and line.

use std::path::PathBuf;

use super::keywords::{HARMLESS, UNSUPPORTED, display_keyword};
use super::read::{expand_tokens, parse_flag, parse_time};
use super::{HostKeyChecking, HostSettings, Item, SshClientConfig};
use crate::ssh::jump::{JumpSpec, parse_port};
use crate::ssh::known_hosts::glob;

impl SshClientConfig {
    /// What the file says for `alias`, as `ssh alias` would read it: the first value of each
    /// keyword among the lines that apply, then paths expanded with the tokens those values
    /// give.
    pub fn resolve(&self, alias: &str) -> HostSettings {
        let mut found = Found {
            s: HostSettings {
                alias: alias.to_owned(),
                ..HostSettings::default()
            },
            identity_raw: Vec::new(),
            known_hosts_raw: None,
            global_known_hosts_raw: None,
            proxy_decided: false,
            ignore_unknown: None,
            decided: Vec::new(),
        };
        for item in self
            .items
            .iter()
            .filter(|i| i.guards.iter().all(|g| g.allows(alias)))
        {
            found.apply(item);
        }
        self.expand_paths(found)
    }

    /// The identity and known_hosts files, tokens expanded: tokens see the values as resolved
    /// so far, as in OpenSSH (after HostName/User/Port).
    fn expand_paths(&self, found: Found<'_>) -> HostSettings {
        let mut s = found.s;
        let alias = s.alias.clone();
        let host = s.host_name.clone().unwrap_or_else(|| alias.to_lowercase());
        let remote_user = s.user.clone().unwrap_or_else(|| self.local.name.clone());
        let port = s.port.unwrap_or(22).to_string();
        let home = self
            .local
            .home
            .as_ref()
            .map(|h| h.display().to_string())
            .unwrap_or_default();
        let tokens = [
            ('d', home.as_str()),
            ('h', host.as_str()),
            ('n', alias.as_str()),
            ('p', port.as_str()),
            ('r', remote_user.as_str()),
            ('u', self.local.name.as_str()),
        ];
        let mut warnings = Vec::new();
        for item in found.identity_raw {
            match self.expand_path(&item.args[0], &tokens) {
                Ok(path) if !s.identity_files.contains(&path) => s.identity_files.push(path),
                Ok(_) => {}
                Err(e) => warnings.push(format!(
                    "{}: IdentityFile {}: {e}; not used",
                    item.at(),
                    item.args[0]
                )),
            }
        }
        let raw = [
            (found.known_hosts_raw, "UserKnownHostsFile"),
            (found.global_known_hosts_raw, "GlobalKnownHostsFile"),
        ];
        for (raw, keyword) in raw {
            let Some(item) = raw else { continue };
            let mut files = Vec::new();
            if !(item.args.len() == 1 && item.args[0].eq_ignore_ascii_case("none")) {
                for arg in &item.args {
                    // As in ssh(1): tokens and `~` expand in UserKnownHostsFile only.
                    let expanded = if keyword == "GlobalKnownHostsFile" {
                        Ok(PathBuf::from(arg))
                    } else {
                        self.expand_path(arg, &tokens)
                    };
                    match expanded {
                        Ok(path) => files.push(path),
                        Err(e) => {
                            warnings.push(format!("{}: {keyword} {arg}: {e}; not used", item.at()))
                        }
                    }
                }
            }
            match keyword {
                "UserKnownHostsFile" => s.known_hosts_files = Some(files),
                _ => s.global_known_hosts_files = Some(files),
            }
        }
        for w in warnings {
            warn(&mut s, w);
        }
        s
    }
}

/// A warning for the operator, once.
fn warn(s: &mut HostSettings, message: String) {
    if !s.warnings.contains(&message) {
        s.warnings.push(message);
    }
}

/// What the lines that apply to one alias say, first value first, before paths are expanded.
struct Found<'a> {
    s: HostSettings,
    identity_raw: Vec<&'a Item>,
    known_hosts_raw: Option<&'a Item>,
    global_known_hosts_raw: Option<&'a Item>,
    /// `ProxyJump` and `ProxyCommand` share one slot.
    proxy_decided: bool,
    ignore_unknown: Option<Vec<String>>,
    /// Unsupported keywords already warned about (their first value wins too).
    decided: Vec<&'a str>,
}

impl<'a> Found<'a> {
    /// Takes in one line that applies.
    fn apply(&mut self, item: &'a Item) {
        let s = &mut self.s;
        let first = item.args[0].as_str();
        match item.keyword.as_str() {
            "hostname" => {
                if s.host_name.is_none() {
                    match expand_tokens(first, &[('h', &s.alias)]) {
                        Ok(name) => s.host_name = Some(name),
                        Err(e) => warn(s, format!("{}: HostName: {e}", item.at())),
                    }
                }
            }
            "user" => {
                s.user.get_or_insert_with(|| first.to_owned());
            }
            "port" => {
                if s.port.is_none() {
                    s.port = parse_port(first).ok();
                }
            }
            "identityfile" => self.identity_raw.push(item),
            "identitiesonly" => {
                if s.identities_only.is_none() {
                    s.identities_only = parse_flag(first);
                }
            }
            "proxyjump" if !self.proxy_decided => {
                self.proxy_decided = true;
                s.proxy_jump = JumpSpec::parse_list(first).ok();
            }
            "proxycommand" if !self.proxy_decided => {
                self.proxy_decided = true;
                if !first.eq_ignore_ascii_case("none") {
                    warn(
                        s,
                        format!(
                            "{}: ProxyCommand is not supported by certctl and is ignored (the host is connected to directly); use ProxyJump",
                            item.at()
                        ),
                    );
                }
            }
            "proxyjump" | "proxycommand" => {}
            "userknownhostsfile" => {
                self.known_hosts_raw.get_or_insert(item);
            }
            "globalknownhostsfile" => {
                self.global_known_hosts_raw.get_or_insert(item);
            }
            "stricthostkeychecking" => self.host_key_checking(item),
            "connecttimeout" => {
                if s.connect_timeout.is_none() {
                    s.connect_timeout = parse_time(first).ok().flatten();
                }
            }
            "serveraliveinterval" => {
                if s.server_alive_interval.is_none() {
                    s.server_alive_interval = parse_time(first).ok().flatten();
                }
            }
            "ignoreunknown" => {
                self.ignore_unknown.get_or_insert_with(|| {
                    item.args
                        .iter()
                        .flat_map(|a| a.split(','))
                        .map(str::to_lowercase)
                        .collect()
                });
            }
            keyword if HARMLESS.contains(&keyword) => {}
            _ => self.not_followed(item),
        }
    }

    /// `StrictHostKeyChecking`: never looser than `yes`, whatever the file says.
    fn host_key_checking(&mut self, item: &Item) {
        let s = &mut self.s;
        if s.host_key_checking.is_some() {
            return;
        }
        let first = item.args[0].as_str();
        s.host_key_checking = Some(match first.to_ascii_lowercase().as_str() {
            "accept-new" => HostKeyChecking::AcceptNew,
            "no" | "off" | "false" => {
                warn(
                    s,
                    format!(
                        "{}: StrictHostKeyChecking {first} is treated as `yes`: certctl never disables host-key checks (use --accept-new-host-keys to trust new hosts on first use)",
                        item.at()
                    ),
                );
                HostKeyChecking::Strict
            }
            _ => HostKeyChecking::Strict,
        });
    }

    /// A keyword certctl does not follow: a warning unless its value keeps OpenSSH's default
    /// (or `IgnoreUnknown` names an unknown one).
    fn not_followed(&mut self, item: &'a Item) {
        let keyword = item.keyword.as_str();
        let first = item.args[0].as_str();
        match UNSUPPORTED.iter().find(|(k, _, _)| *k == keyword) {
            Some((_, benign, why)) => {
                // First value wins here too: a later line would not be used by ssh.
                let first_time = !self.decided.contains(&keyword);
                if !["certificatefile", "sendenv"].contains(&keyword) {
                    self.decided.push(keyword);
                }
                if first_time && !benign.iter().any(|b| first.eq_ignore_ascii_case(b)) {
                    warn(
                        &mut self.s,
                        format!(
                            "{}: {} is not supported by certctl and is ignored ({why})",
                            item.at(),
                            display_keyword(keyword)
                        ),
                    );
                }
            }
            None => {
                let ignored = self
                    .ignore_unknown
                    .as_ref()
                    .is_some_and(|list| list.iter().any(|p| glob(p, keyword)));
                if !ignored {
                    warn(
                        &mut self.s,
                        format!(
                            "{}: unknown ssh config directive `{keyword}` is ignored",
                            item.at()
                        ),
                    );
                }
            }
        }
    }
}
