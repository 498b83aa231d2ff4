//! OpenSSH client configuration (`~/.ssh/config`, or the file given with `-F`): the subset
//! certctl uses, read with OpenSSH's rules, and a warning for everything else that would
//! change how `ssh` itself connects.
//!
//! Rules followed (checked against `ssh -G` in tests/it/ssh_fleet.rs):
//! - `Host` lines hold whitespace-separated patterns (`*`, `?`, `!negation`), matched
//!   case-sensitively against the alias as given; one matching `!pattern` disables the line;
//!   lines before the first `Host` apply to every host;
//! - the first value obtained for a keyword wins; `IdentityFile` accumulates; the first
//!   `UserKnownHostsFile` line wins with all of its files; `ProxyJump` and `ProxyCommand`
//!   share one slot (whichever comes first);
//! - `keyword value`, `keyword=value`, double or single quotes, `#` comments;
//! - `Include` (globs in the last path component; relative paths under `~/.ssh`) is read in
//!   place, its `Host` lines limited to the block it appears in;
//! - `Match` blocks are skipped with a warning (their conditions need a full evaluator);
//! - `~`, `${ENV}` and the `%%`, `%d`, `%h`, `%n`, `%p`, `%r`, `%u` tokens are expanded in
//!   `IdentityFile` and `UserKnownHostsFile`; `%h` and `%%` in `HostName`.
//!
//! Values are validated when the file is read (a bad `Port` anywhere is an error, as in
//! OpenSSH); [`SshClientConfig::resolve`] never fails. Precedence (inventory > this file >
//! defaults) is the caller's; this module only reports what the file says.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::jump::{JumpHost, JumpSpec, parse_port};
use super::known_hosts::glob;

/// OpenSSH's limit on nested `Include`s (`READCONF_MAX_DEPTH`).
const MAX_INCLUDE_DEPTH: usize = 16;
/// Jump hosts whose own `ProxyJump` chains are followed before a loop is assumed.
const MAX_JUMP_DEPTH: usize = 8;

/// A config file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read ssh config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// A jump chain that cannot be built (a loop of `ProxyJump`s, a bad hop).
    #[error("jump host chain: {0}")]
    Jump(String),
}

/// The local account, for `~` and the `%u`/`%d` tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalUser {
    pub name: String,
    pub home: Option<PathBuf>,
}

impl LocalUser {
    /// `$HOME` (else the passwd entry's home) and the passwd name of this process's uid
    /// (else `$USER`).
    pub fn current() -> LocalUser {
        use std::os::unix::fs::MetadataExt as _;
        let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let entry = uid.and_then(|uid| {
            passwd.lines().find_map(|line| {
                let fields: Vec<&str> = line.split(':').collect();
                (fields.len() >= 6 && fields[2].parse::<u32>().ok() == Some(uid))
                    .then(|| (fields[0].to_owned(), PathBuf::from(fields[5])))
            })
        });
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        LocalUser {
            name: entry
                .as_ref()
                .map(|(name, _)| name.clone())
                .or_else(|| env("USER"))
                .or_else(|| uid.map(|u| u.to_string()))
                .unwrap_or_default(),
            home: env("HOME")
                .map(PathBuf::from)
                .or_else(|| entry.map(|(_, home)| home)),
        }
    }
}

/// What `StrictHostKeyChecking` asks for. `no`/`off` are read as [`HostKeyChecking::Strict`]
/// (with a warning): certctl never turns host-key checks off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeyChecking {
    /// `yes`, `ask` (no one to ask), or `no` overridden.
    Strict,
    /// `accept-new`: trust on first use, refuse a changed key (`--accept-new-host-keys`).
    AcceptNew,
}

/// The settings the file gives one host alias. `None` / empty = the file says nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostSettings {
    /// The name looked up (the inventory's `host`).
    pub alias: String,
    /// `HostName`, `%h` expanded: the name or address to connect to.
    pub host_name: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    /// Every `IdentityFile` that applies, in order, tokens expanded.
    pub identity_files: Vec<PathBuf>,
    /// `IdentitiesOnly yes`: offer only the identity files (no other agent keys).
    pub identities_only: Option<bool>,
    /// `ProxyJump`: `Some(empty)` for `ProxyJump none`.
    pub proxy_jump: Option<Vec<JumpSpec>>,
    /// `UserKnownHostsFile`: `Some(empty)` for `none` (nothing is trusted then).
    pub known_hosts_files: Option<Vec<PathBuf>>,
    /// `GlobalKnownHostsFile`: `Some(empty)` for `none`; `None` = OpenSSH's default
    /// (`/etc/ssh/ssh_known_hosts`, `/etc/ssh/ssh_known_hosts2`).
    pub global_known_hosts_files: Option<Vec<PathBuf>>,
    pub host_key_checking: Option<HostKeyChecking>,
    pub connect_timeout: Option<Duration>,
    /// `ServerAliveInterval`; zero means keepalive off.
    pub server_alive_interval: Option<Duration>,
    /// Directives that apply to this host but that certctl does not follow, each naming
    /// `file:line`; meant to be shown to the operator.
    pub warnings: Vec<String>,
}

/// Fallbacks for jump hosts the ssh config says nothing about (typically the target's own
/// user, key and known_hosts from the inventory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JumpDefaults {
    pub user: String,
    pub identity_files: Vec<PathBuf>,
    pub known_hosts: PathBuf,
}

/// A resolved jump chain, first hop first, plus the warnings its hosts' settings raised.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JumpChain {
    pub hops: Vec<JumpHost>,
    pub warnings: Vec<String>,
}

/// A parsed client config file (and its includes).
#[derive(Debug, Clone, Default)]
pub struct SshClientConfig {
    items: Vec<Item>,
    warnings: Vec<String>,
    local: LocalUser,
}

/// One `keyword args…` line and the `Host` conditions it sits under.
#[derive(Debug, Clone)]
struct Item {
    file: Arc<Path>,
    line: usize,
    /// Lower case.
    keyword: String,
    args: Vec<String>,
    guards: Arc<Vec<Guard>>,
}

impl Item {
    fn at(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }
}

#[derive(Debug, Clone)]
enum Guard {
    /// A `Host` line's patterns (`!` kept).
    Host(Vec<String>),
    /// Inside a `Match` block: never applies.
    Never,
}

impl Guard {
    fn allows(&self, alias: &str) -> bool {
        match self {
            Guard::Never => false,
            Guard::Host(patterns) => {
                let mut positive = false;
                for pattern in patterns {
                    match pattern.strip_prefix('!') {
                        Some(negated) if glob(negated, alias) => return false,
                        Some(_) => {}
                        None => positive |= glob(pattern, alias),
                    }
                }
                positive
            }
        }
    }
}

impl SshClientConfig {
    /// An empty config: every host gets the defaults.
    pub fn empty() -> SshClientConfig {
        SshClientConfig {
            local: LocalUser::current(),
            ..SshClientConfig::default()
        }
    }

    /// Reads `path` (e.g. `-F FILE`); a missing file is an error.
    pub fn load(path: &Path) -> Result<SshClientConfig, ConfigError> {
        Self::load_with(path, LocalUser::current())
    }

    /// Reads `~/.ssh/config` when it exists, else returns [`SshClientConfig::empty`].
    pub fn load_default() -> Result<SshClientConfig, ConfigError> {
        let local = LocalUser::current();
        match &local.home {
            Some(home) if home.join(".ssh/config").exists() => {
                Self::load_with(&home.join(".ssh/config"), local)
            }
            _ => Ok(SshClientConfig {
                local,
                ..SshClientConfig::default()
            }),
        }
    }

    /// [`SshClientConfig::load`] for another local user (tests, embedders).
    pub fn load_with(path: &Path, local: LocalUser) -> Result<SshClientConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path, local)
    }

    /// Parses `text` as if read from `path` (which names it in messages).
    pub fn parse(
        text: &str,
        path: &Path,
        local: LocalUser,
    ) -> Result<SshClientConfig, ConfigError> {
        let mut config = SshClientConfig {
            items: Vec::new(),
            warnings: Vec::new(),
            local,
        };
        config.read_text(text, path, 0, &Arc::new(Vec::new()))?;
        Ok(config)
    }

    /// The local user this config was read for (`%u`, `%d`, `~`).
    pub fn local_user(&self) -> &LocalUser {
        &self.local
    }

    /// File-level warnings (skipped `Match` blocks, unusable `Include`s), to show once.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// What the file says for `alias`, as `ssh alias` would read it.
    pub fn resolve(&self, alias: &str) -> HostSettings {
        let mut s = HostSettings {
            alias: alias.to_owned(),
            ..HostSettings::default()
        };
        let mut identity_raw: Vec<&Item> = Vec::new();
        let mut known_hosts_raw: Option<&Item> = None;
        let mut global_known_hosts_raw: Option<&Item> = None;
        let mut proxy_decided = false;
        let mut ignore_unknown: Option<Vec<String>> = None;
        let mut decided: Vec<&str> = Vec::new();
        let warn = |s: &mut HostSettings, message: String| {
            if !s.warnings.contains(&message) {
                s.warnings.push(message);
            }
        };
        for item in self
            .items
            .iter()
            .filter(|i| i.guards.iter().all(|g| g.allows(alias)))
        {
            let first = item.args[0].as_str();
            match item.keyword.as_str() {
                "hostname" => {
                    if s.host_name.is_none() {
                        match expand_tokens(first, &[('h', alias)]) {
                            Ok(name) => s.host_name = Some(name),
                            Err(e) => warn(&mut s, format!("{}: HostName: {e}", item.at())),
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
                "identityfile" => identity_raw.push(item),
                "identitiesonly" => {
                    if s.identities_only.is_none() {
                        s.identities_only = parse_flag(first);
                    }
                }
                "proxyjump" if !proxy_decided => {
                    proxy_decided = true;
                    s.proxy_jump = JumpSpec::parse_list(first).ok();
                }
                "proxycommand" if !proxy_decided => {
                    proxy_decided = true;
                    if !first.eq_ignore_ascii_case("none") {
                        warn(
                            &mut s,
                            format!(
                                "{}: ProxyCommand is not supported by certctl and is ignored (the host is connected to directly); use ProxyJump",
                                item.at()
                            ),
                        );
                    }
                }
                "proxyjump" | "proxycommand" => {}
                "userknownhostsfile" => {
                    known_hosts_raw.get_or_insert(item);
                }
                "globalknownhostsfile" => {
                    global_known_hosts_raw.get_or_insert(item);
                }
                "stricthostkeychecking" => {
                    if s.host_key_checking.is_none() {
                        let lower = first.to_ascii_lowercase();
                        s.host_key_checking = Some(match lower.as_str() {
                            "accept-new" => HostKeyChecking::AcceptNew,
                            "no" | "off" | "false" => {
                                warn(
                                    &mut s,
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
                }
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
                    ignore_unknown.get_or_insert_with(|| {
                        item.args
                            .iter()
                            .flat_map(|a| a.split(','))
                            .map(str::to_lowercase)
                            .collect()
                    });
                }
                keyword if HARMLESS.contains(&keyword) => {}
                keyword => match UNSUPPORTED.iter().find(|(k, _, _)| *k == keyword) {
                    Some((_, benign, why)) => {
                        // First value wins here too: a later line would not be used by ssh.
                        let first_time = !decided.contains(&keyword);
                        if !["certificatefile", "sendenv"].contains(&keyword) {
                            decided.push(keyword);
                        }
                        if first_time && !benign.iter().any(|b| first.eq_ignore_ascii_case(b)) {
                            warn(
                                &mut s,
                                format!(
                                    "{}: {} is not supported by certctl and is ignored ({why})",
                                    item.at(),
                                    display_keyword(keyword)
                                ),
                            );
                        }
                    }
                    None => {
                        let ignored = ignore_unknown
                            .as_ref()
                            .is_some_and(|list| list.iter().any(|p| glob(p, keyword)));
                        if !ignored {
                            warn(
                                &mut s,
                                format!(
                                    "{}: unknown ssh config directive `{keyword}` is ignored",
                                    item.at()
                                ),
                            );
                        }
                    }
                },
            }
        }

        // Tokens see the values as resolved so far, as in OpenSSH (after HostName/User/Port).
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
            ('n', alias),
            ('p', port.as_str()),
            ('r', remote_user.as_str()),
            ('u', self.local.name.as_str()),
        ];
        for item in identity_raw {
            match self.expand_path(&item.args[0], &tokens) {
                Ok(path) if !s.identity_files.contains(&path) => s.identity_files.push(path),
                Ok(_) => {}
                Err(e) => warn(
                    &mut s,
                    format!(
                        "{}: IdentityFile {}: {e}; not used",
                        item.at(),
                        item.args[0]
                    ),
                ),
            }
        }
        let mut path_warnings = Vec::new();
        for (raw, keyword, slot) in [
            (
                known_hosts_raw,
                "UserKnownHostsFile",
                &mut s.known_hosts_files,
            ),
            (
                global_known_hosts_raw,
                "GlobalKnownHostsFile",
                &mut s.global_known_hosts_files,
            ),
        ] {
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
                        Err(e) => path_warnings
                            .push(format!("{}: {keyword} {arg}: {e}; not used", item.at())),
                    }
                }
            }
            *slot = Some(files);
        }
        for w in path_warnings {
            warn(&mut s, w);
        }
        s
    }

    /// Resolves a jump chain as `ssh -J` would: each hop's user, port, host name, identity
    /// files and known_hosts come from the spec, else this file's entry for the hop's alias,
    /// else `defaults`. When the FIRST hop has its own `ProxyJump`, that chain is put in front
    /// (recursively), because OpenSSH connects to the first hop with its own config.
    pub fn jump_chain(
        &self,
        specs: &[JumpSpec],
        defaults: &JumpDefaults,
    ) -> Result<JumpChain, ConfigError> {
        let mut chain = JumpChain::default();
        self.jump_chain_into(specs, defaults, 0, &mut chain)?;
        Ok(chain)
    }

    fn jump_chain_into(
        &self,
        specs: &[JumpSpec],
        defaults: &JumpDefaults,
        depth: usize,
        chain: &mut JumpChain,
    ) -> Result<(), ConfigError> {
        if depth > MAX_JUMP_DEPTH {
            return Err(ConfigError::Jump(format!(
                "more than {MAX_JUMP_DEPTH} nested ProxyJump levels (a loop?) at {}",
                specs.first().map(ToString::to_string).unwrap_or_default()
            )));
        }
        for (index, spec) in specs.iter().enumerate() {
            let settings = self.resolve(&spec.host);
            if index == 0
                && let Some(own) = settings.proxy_jump.as_ref().filter(|j| !j.is_empty())
            {
                self.jump_chain_into(own, defaults, depth + 1, chain)?;
            }
            let hop = JumpHost {
                host: settings
                    .host_name
                    .clone()
                    .unwrap_or_else(|| spec.host.clone()),
                port: spec.port.or(settings.port).unwrap_or(22),
                user: spec
                    .user
                    .clone()
                    .or_else(|| settings.user.clone())
                    .unwrap_or_else(|| defaults.user.clone()),
                identity_files: if settings.identity_files.is_empty() {
                    defaults.identity_files.clone()
                } else {
                    settings.identity_files.clone()
                },
                known_hosts: settings
                    .known_hosts_files
                    .as_ref()
                    .and_then(|files| files.first().cloned())
                    .unwrap_or_else(|| defaults.known_hosts.clone()),
            };
            for w in settings.warnings {
                if !chain.warnings.contains(&w) {
                    chain.warnings.push(w);
                }
            }
            chain.hops.push(hop);
        }
        Ok(())
    }

    fn expand_path(&self, text: &str, tokens: &[(char, &str)]) -> Result<PathBuf, String> {
        let text = expand_env(text)?;
        let text = self.expand_tilde(&text)?;
        Ok(PathBuf::from(expand_tokens(&text, tokens)?))
    }

    fn expand_tilde(&self, text: &str) -> Result<String, String> {
        let Some(rest) = text.strip_prefix('~') else {
            return Ok(text.to_owned());
        };
        if !(rest.is_empty() || rest.starts_with('/')) {
            return Err("`~user` paths are not supported".to_owned());
        }
        let home = self
            .local
            .home
            .as_ref()
            .ok_or("`~` used but the home directory is unknown")?;
        Ok(format!("{}{rest}", home.display()))
    }

    fn read_text(
        &mut self,
        text: &str,
        path: &Path,
        depth: usize,
        outer: &Arc<Vec<Guard>>,
    ) -> Result<(), ConfigError> {
        let file: Arc<Path> = Arc::from(path);
        let invalid = |line: usize, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            line,
            message,
        };
        let mut guards = outer.clone();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let Some((keyword, args)) = split_line(raw).map_err(|m| invalid(line, m))? else {
                continue;
            };
            let keyword = keyword.to_lowercase();
            if args.is_empty() {
                return Err(invalid(line, format!("`{keyword}` needs a value")));
            }
            match keyword.as_str() {
                "host" => {
                    let mut all = outer.as_ref().clone();
                    all.push(Guard::Host(args));
                    guards = Arc::new(all);
                }
                "match" => {
                    self.warnings.push(format!(
                        "{}:{line}: `Match` blocks are not supported by certctl; the lines up to the next Host or Match are ignored",
                        path.display()
                    ));
                    let mut all = outer.as_ref().clone();
                    all.push(Guard::Never);
                    guards = Arc::new(all);
                }
                "include" => {
                    if depth + 1 > MAX_INCLUDE_DEPTH {
                        return Err(invalid(line, "Include nested too deeply".to_owned()));
                    }
                    for pattern in &args {
                        for included in self.include_paths(pattern, path, line)? {
                            match std::fs::read_to_string(&included) {
                                Ok(text) => self.read_text(&text, &included, depth + 1, &guards)?,
                                Err(e) => self.warnings.push(format!(
                                    "{}:{line}: cannot read included {}: {e}; skipped",
                                    path.display(),
                                    included.display()
                                )),
                            }
                        }
                    }
                }
                _ => {
                    validate(&keyword, &args).map_err(|m| invalid(line, m))?;
                    self.items.push(Item {
                        file: file.clone(),
                        line,
                        keyword,
                        args,
                        guards: guards.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The files an `Include` argument names: `~` expanded, relative to `~/.ssh`, a glob in
    /// the last component expanded (sorted, as glob(3) does). Missing files are not errors.
    fn include_paths(
        &mut self,
        pattern: &str,
        from: &Path,
        line: usize,
    ) -> Result<Vec<PathBuf>, ConfigError> {
        let expanded = self
            .expand_tilde(pattern)
            .map_err(|message| ConfigError::Invalid {
                path: from.to_path_buf(),
                line,
                message: format!("Include {pattern}: {message}"),
            })?;
        let mut path = PathBuf::from(&expanded);
        if path.is_relative() {
            match &self.local.home {
                Some(home) => path = home.join(".ssh").join(path),
                None => {
                    self.warnings.push(format!(
                        "{}:{line}: Include {pattern}: relative to ~/.ssh but the home directory is unknown; skipped",
                        from.display()
                    ));
                    return Ok(Vec::new());
                }
            }
        }
        let wild = |s: &str| s.contains(['*', '?', '[']);
        let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str()))
        else {
            return Ok(vec![path]);
        };
        if wild(&dir.to_string_lossy()) {
            self.warnings.push(format!(
                "{}:{line}: Include {pattern}: wildcards are supported in the file name only; skipped",
                from.display()
            ));
            return Ok(Vec::new());
        }
        if !wild(name) {
            return Ok(if path.exists() {
                vec![path]
            } else {
                Vec::new()
            });
        }
        let mut found: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .filter(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    // glob(3) skips dot files unless the pattern starts with a dot.
                    (name.starts_with('.') || !n.starts_with('.')) && glob(name, &n)
                })
                .map(|e| e.path())
                .collect(),
            Err(_) => Vec::new(),
        };
        found.sort();
        Ok(found)
    }
}

/// Keywords read and ignored because they cannot change how certctl connects or what it
/// trusts (interactive use, forwarding, logging, password auth certctl never does).
const HARMLESS: &[&str] = &[
    "addkeystoagent",
    "batchmode",
    "challengeresponseauthentication",
    "checkhostip",
    "clearallforwardings",
    "compression",
    "dynamicforward",
    "enableescapecommandline",
    "escapechar",
    "exitonforwardfailure",
    "forkafterauthentication",
    "forwardx11",
    "forwardx11timeout",
    "forwardx11trusted",
    "gatewayports",
    "hashknownhosts",
    "kbdinteractiveauthentication",
    "kbdinteractivedevices",
    "localcommand",
    "localforward",
    "loglevel",
    "logverbose",
    "numberofpasswordprompts",
    "obscurekeystroketiming",
    "passwordauthentication",
    "permitlocalcommand",
    "protocol",
    "remoteforward",
    "requesttty",
    "sessiontype",
    "stdinnull",
    "streamlocalbindmask",
    "streamlocalbindunlink",
    "tcpkeepalive",
    "updatehostkeys",
    "usekeychain",
    "visualhostkey",
    "xauthlocation",
];

/// Keywords that would change how `ssh` connects, with the values that keep OpenSSH's
/// default (no warning needed) and why certctl does not follow them.
const UNSUPPORTED: &[(&str, &[&str], &str)] = &[
    (
        "addressfamily",
        &["any"],
        "the address family is chosen by the resolver",
    ),
    ("bindaddress", &[], "certctl does not bind a source address"),
    (
        "bindinterface",
        &[],
        "certctl does not bind a source interface",
    ),
    ("canonicaldomains", &[], "host names are not canonicalised"),
    (
        "canonicalizefallbacklocal",
        &["yes"],
        "host names are not canonicalised",
    ),
    (
        "canonicalizehostname",
        &["no"],
        "host names are not canonicalised",
    ),
    (
        "canonicalizemaxdots",
        &["1"],
        "host names are not canonicalised",
    ),
    (
        "canonicalizepermittedcnames",
        &["none"],
        "host names are not canonicalised",
    ),
    (
        "casignaturealgorithms",
        &[],
        "certificates are not supported",
    ),
    (
        "certificatefile",
        &[],
        "only a KEY-cert.pub beside an identity file is offered",
    ),
    (
        "ciphers",
        &[],
        "certctl uses its SSH library's algorithm list",
    ),
    (
        "connectionattempts",
        &["1"],
        "certctl retries resets during the handshake only",
    ),
    (
        "controlmaster",
        &["no"],
        "certctl keeps one connection per target itself",
    ),
    (
        "controlpath",
        &["none"],
        "certctl keeps one connection per target itself",
    ),
    (
        "controlpersist",
        &["no"],
        "certctl keeps one connection per target itself",
    ),
    ("forwardagent", &["no"], "certctl never forwards the agent"),
    (
        "gssapiauthentication",
        &["no"],
        "only public-key authentication is supported",
    ),
    (
        "gssapidelegatecredentials",
        &["no"],
        "only public-key authentication is supported",
    ),
    (
        "hostbasedacceptedalgorithms",
        &[],
        "host-based authentication is not supported",
    ),
    (
        "hostbasedauthentication",
        &["no"],
        "host-based authentication is not supported",
    ),
    (
        "hostkeyalgorithms",
        &[],
        "certctl asks for the key types known_hosts lists",
    ),
    (
        "hostkeyalias",
        &[],
        "host keys are looked up under the host name",
    ),
    (
        "identityagent",
        &["SSH_AUTH_SOCK"],
        "the agent is taken from SSH_AUTH_SOCK",
    ),
    ("ipqos", &[], "not set by certctl"),
    (
        "kexalgorithms",
        &[],
        "certctl uses its SSH library's algorithm list",
    ),
    (
        "knownhostscommand",
        &["none"],
        "only known_hosts files are checked",
    ),
    ("macs", &[], "certctl uses its SSH library's algorithm list"),
    (
        "nohostauthenticationforlocalhost",
        &["no"],
        "certctl checks localhost host keys too",
    ),
    (
        "pkcs11provider",
        &["none"],
        "PKCS#11 keys are not supported; load them into ssh-agent",
    ),
    (
        "preferredauthentications",
        &["publickey"],
        "only public-key authentication is supported",
    ),
    ("proxyusefdpass", &["no"], "ProxyCommand is not supported"),
    (
        "pubkeyacceptedalgorithms",
        &[],
        "certctl uses its SSH library's algorithm list",
    ),
    (
        "pubkeyacceptedkeytypes",
        &[],
        "certctl uses its SSH library's algorithm list",
    ),
    (
        "pubkeyauthentication",
        &["yes"],
        "certctl authenticates with public keys only",
    ),
    (
        "rekeylimit",
        &[],
        "certctl uses its SSH library's rekey limits",
    ),
    ("remotecommand", &["none"], "certctl runs its own commands"),
    (
        "revokedhostkeys",
        &["none"],
        "use @revoked lines in known_hosts",
    ),
    (
        "securitykeyprovider",
        &["internal"],
        "security keys are not supported; use ssh-agent",
    ),
    ("sendenv", &[], "no environment is sent to the server"),
    (
        "serveralivecountmax",
        &["3"],
        "certctl allows 3 unanswered keepalives",
    ),
    ("setenv", &[], "no environment is sent to the server"),
    ("tag", &[], "Match blocks are not supported"),
    ("tunnel", &["no"], "tunnel devices are not used"),
    ("tunneldevice", &[], "tunnel devices are not used"),
    (
        "verifyhostkeydns",
        &["no"],
        "host keys are checked against known_hosts only",
    ),
];

/// The canonical spelling of a keyword, for messages.
fn display_keyword(lower: &str) -> String {
    const NAMES: &[&str] = &[
        "AddressFamily",
        "BindAddress",
        "BindInterface",
        "CanonicalDomains",
        "CanonicalizeFallbackLocal",
        "CanonicalizeHostname",
        "CanonicalizeMaxDots",
        "CanonicalizePermittedCNAMEs",
        "CASignatureAlgorithms",
        "CertificateFile",
        "Ciphers",
        "ConnectionAttempts",
        "ControlMaster",
        "ControlPath",
        "ControlPersist",
        "ForwardAgent",
        "GlobalKnownHostsFile",
        "GSSAPIAuthentication",
        "GSSAPIDelegateCredentials",
        "HostbasedAcceptedAlgorithms",
        "HostbasedAuthentication",
        "HostKeyAlgorithms",
        "HostKeyAlias",
        "IdentityAgent",
        "IPQoS",
        "KexAlgorithms",
        "KnownHostsCommand",
        "MACs",
        "NoHostAuthenticationForLocalhost",
        "PKCS11Provider",
        "PreferredAuthentications",
        "ProxyUseFdpass",
        "PubkeyAcceptedAlgorithms",
        "PubkeyAcceptedKeyTypes",
        "PubkeyAuthentication",
        "RekeyLimit",
        "RemoteCommand",
        "RevokedHostKeys",
        "SecurityKeyProvider",
        "SendEnv",
        "ServerAliveCountMax",
        "SetEnv",
        "Tag",
        "Tunnel",
        "TunnelDevice",
        "VerifyHostKeyDNS",
    ];
    NAMES
        .iter()
        .find(|n| n.eq_ignore_ascii_case(lower))
        .map_or_else(|| lower.to_owned(), |n| (*n).to_owned())
}

/// Checks a supported keyword's value when the file is read, as OpenSSH does.
fn validate(keyword: &str, args: &[String]) -> Result<(), String> {
    let first = args[0].as_str();
    match keyword {
        "port" => parse_port(first).map(|_| ()),
        "identitiesonly" => parse_flag(first)
            .map(|_| ())
            .ok_or_else(|| format!("IdentitiesOnly: expected yes or no, got `{first}`")),
        "stricthostkeychecking" => match first.to_ascii_lowercase().as_str() {
            "yes" | "no" | "ask" | "accept-new" | "off" | "true" | "false" => Ok(()),
            _ => Err(format!(
                "StrictHostKeyChecking: expected yes, accept-new, no or ask, got `{first}`"
            )),
        },
        "connecttimeout" | "serveraliveinterval" => parse_time(first).map(|_| ()),
        "proxyjump" => JumpSpec::parse_list(first)
            .map(|_| ())
            .map_err(|e| format!("ProxyJump: {e}")),
        _ => Ok(()),
    }
}

fn parse_flag(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "yes" | "true" => Some(true),
        "no" | "false" => Some(false),
        _ => None,
    }
}

/// OpenSSH `convtime`: `90`, `1m30s`, `2h`, … (s, m, h, d, w); `none` = unset.
fn parse_time(value: &str) -> Result<Option<Duration>, String> {
    if value.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let bad = || format!("bad time value `{value}` (e.g. 30, 30s, 1m30s)");
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in value.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c.to_ascii_lowercase() {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        total = total
            .checked_add(n.checked_mul(unit).ok_or_else(bad)?)
            .ok_or_else(bad)?;
        digits.clear();
    }
    if !digits.is_empty() {
        total = total
            .checked_add(digits.parse::<u64>().map_err(|_| bad())?)
            .ok_or_else(bad)?;
    } else if total == 0 && !value.starts_with('0') && value.is_empty() {
        return Err(bad());
    }
    Ok(Some(Duration::from_secs(total)))
}

/// `%x` tokens; `%%` is a percent sign; any other token is an error.
fn expand_tokens(text: &str, tokens: &[(char, &str)]) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some(t) => match tokens.iter().find(|(k, _)| *k == t) {
                Some((_, value)) => out.push_str(value),
                None => return Err(format!("the token %{t} is not supported here")),
            },
            None => return Err("a `%` at the end".to_owned()),
        }
    }
    Ok(out)
}

/// `${NAME}` environment references (OpenSSH expands them in file paths).
fn expand_env(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or("`${` without a closing `}`")?;
        let name = &after[..end];
        let value =
            std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Splits a config line into its keyword and arguments; `None` for blank and comment lines.
/// `keyword=value` and `keyword = value` are accepted; arguments may be quoted.
fn split_line(line: &str) -> Result<Option<(String, Vec<String>)>, String> {
    let line = line.trim_start();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let end = line
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(line.len());
    let keyword = line[..end].to_owned();
    let mut rest = line[end..].trim_start();
    if let Some(after) = rest.strip_prefix('=') {
        rest = after.trim_start();
    }
    let mut args = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.peek() {
            None => break,
            Some('#') => break,
            Some(_) => {}
        }
        let mut arg = String::new();
        let mut quote: Option<char> = None;
        while let Some(&c) = chars.peek() {
            match (quote, c) {
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (None, c) if c.is_whitespace() => break,
                (_, '\\') => {
                    chars.next();
                    match chars.peek() {
                        Some(&n @ ('"' | '\'' | '\\' | ' ')) => arg.push(n),
                        Some(&n) => {
                            arg.push('\\');
                            arg.push(n);
                        }
                        None => {
                            arg.push('\\');
                            break;
                        }
                    }
                }
                (_, c) => arg.push(c),
            }
            chars.next();
        }
        if quote.is_some() {
            return Err("unterminated quote".to_owned());
        }
        args.push(arg);
    }
    if keyword.is_empty() {
        return Err("a line without a keyword".to_owned());
    }
    Ok(Some((keyword, args)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> LocalUser {
        LocalUser {
            name: "me".into(),
            home: Some(PathBuf::from("/home/me")),
        }
    }

    fn parse(text: &str) -> SshClientConfig {
        SshClientConfig::parse(text, Path::new("/etc/cfg"), local()).unwrap()
    }

    fn parse_err(text: &str) -> String {
        SshClientConfig::parse(text, Path::new("/etc/cfg"), local())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn first_value_wins_and_identity_files_accumulate() {
        let c = parse(
            "User global\n\
             Host web-* !web-bad\n  Port 2200\n  IdentityFile ~/.ssh/web\n  User deploy\n\
             Host web-1\n  HostName 10.0.0.11\n  Port 9999\n  IdentityFile /k/%h-%r-%u-%d-%p-%n-%%\n\
             Host *\n  IdentityFile ~/.ssh/all\n  IdentityFile ~/.ssh/web\n",
        );
        let s = c.resolve("web-1");
        assert_eq!(s.host_name.as_deref(), Some("10.0.0.11"));
        // `User global` comes first (before any Host): it wins over `User deploy`.
        assert_eq!(s.user.as_deref(), Some("global"));
        assert_eq!(s.port, Some(2200));
        assert_eq!(
            s.identity_files,
            vec![
                PathBuf::from("/home/me/.ssh/web"),
                PathBuf::from("/k/10.0.0.11-global-me-/home/me-2200-web-1-%"),
                PathBuf::from("/home/me/.ssh/all"),
            ]
        );
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);

        let bad = c.resolve("web-bad");
        assert_eq!(bad.port, None);
        assert_eq!(
            bad.identity_files,
            vec![
                PathBuf::from("/home/me/.ssh/all"),
                PathBuf::from("/home/me/.ssh/web")
            ]
        );
        // Host patterns are case-sensitive, as in OpenSSH 9.
        assert_eq!(c.resolve("WEB-1").host_name, None);
    }

    #[test]
    fn syntax_variants_quotes_and_comments() {
        let c = parse(
            "# comment\n\n\
             Host=\"a\" 'b'   # trailing comment\n\
             \tPort=2201\n\
             \tUser = \"deploy user\"\n\
             \tHostName %h.example\n\
             \tConnectTimeout 1m30s\n\
             \tServerAliveInterval 0\n\
             \tUserKnownHostsFile ~/kh \"/with space/kh\"\n\
             \tUserKnownHostsFile /ignored\n",
        );
        for alias in ["a", "b"] {
            let s = c.resolve(alias);
            assert_eq!(s.port, Some(2201));
            assert_eq!(s.user.as_deref(), Some("deploy user"));
            assert_eq!(s.host_name, Some(format!("{alias}.example")));
            assert_eq!(s.connect_timeout, Some(Duration::from_secs(90)));
            assert_eq!(s.server_alive_interval, Some(Duration::ZERO));
            assert_eq!(
                s.known_hosts_files,
                Some(vec![
                    PathBuf::from("/home/me/kh"),
                    PathBuf::from("/with space/kh")
                ])
            );
        }
        assert_eq!(
            c.resolve("c"),
            HostSettings {
                alias: "c".into(),
                ..HostSettings::default()
            }
        );
    }

    #[test]
    fn proxy_jump_none_and_proxy_command_share_a_slot() {
        let c = parse(
            "Host direct\n  ProxyJump none\n\
             Host legacy\n  ProxyCommand ssh -W %h:%p gw\n\
             Host *\n  ProxyJump ops@bastion:2222,[::1]:22\n",
        );
        assert_eq!(c.resolve("direct").proxy_jump, Some(vec![]));
        let legacy = c.resolve("legacy");
        assert_eq!(legacy.proxy_jump, None);
        assert_eq!(legacy.warnings.len(), 1);
        assert!(
            legacy.warnings[0].starts_with("/etc/cfg:4: ProxyCommand is not supported"),
            "{:?}",
            legacy.warnings
        );
        let other = c.resolve("other").proxy_jump.unwrap();
        assert_eq!(other.len(), 2);
        assert_eq!(other[0].user.as_deref(), Some("ops"));
        assert_eq!(other[1].host, "::1");
    }

    #[test]
    fn strict_host_key_checking_is_never_off() {
        let c = parse(
            "Host tofu\n StrictHostKeyChecking accept-new\n\
             Host lax\n StrictHostKeyChecking no\n\
             Host ask\n StrictHostKeyChecking ask\n",
        );
        assert_eq!(
            c.resolve("tofu").host_key_checking,
            Some(HostKeyChecking::AcceptNew)
        );
        assert_eq!(
            c.resolve("ask").host_key_checking,
            Some(HostKeyChecking::Strict)
        );
        let lax = c.resolve("lax");
        assert_eq!(lax.host_key_checking, Some(HostKeyChecking::Strict));
        assert!(
            lax.warnings[0].contains("/etc/cfg:4: StrictHostKeyChecking no is treated as `yes`")
        );
    }

    #[test]
    fn unsupported_directives_warn_with_file_and_line_unless_benign() {
        let c = parse(
            "Host *\n\
             ControlMaster auto\n\
             ControlPath ~/.ssh/cm-%C\n\
             ForwardAgent no\n\
             ForwardAgent yes\n\
             CertificateFile ~/.ssh/id-cert.pub\n\
             HostKeyAlias other\n\
             LogLevel ERROR\n\
             Bogus 1\n\
             IgnoreUnknown Frob*\n\
             FrobNicate 2\n",
        );
        let w = c.resolve("x").warnings;
        let lines: Vec<&str> = w.iter().map(|w| w.split(' ').next().unwrap()).collect();
        assert_eq!(
            lines,
            [
                "/etc/cfg:2:",
                "/etc/cfg:3:",
                "/etc/cfg:6:",
                "/etc/cfg:7:",
                "/etc/cfg:9:"
            ],
            "{w:#?}"
        );
        assert!(w[0].contains("ControlMaster is not supported"), "{}", w[0]);
        assert!(
            w[4].contains("unknown ssh config directive `bogus`"),
            "{}",
            w[4]
        );
        // `ForwardAgent no` (line 4) is the default: no warning, and it wins over line 5;
        // `FrobNicate` (line 11) is covered by `IgnoreUnknown`.
    }

    #[test]
    fn match_blocks_are_skipped_with_a_warning() {
        let c = parse("Match host web\n  User matched\nHost web\n  Port 2222\n");
        let s = c.resolve("web");
        assert_eq!(s.user, None);
        assert_eq!(s.port, Some(2222));
        assert_eq!(c.warnings().len(), 1);
        assert!(c.warnings()[0].starts_with("/etc/cfg:1: `Match` blocks are not supported"));
    }

    #[test]
    fn bad_values_are_errors_naming_file_and_line() {
        assert_eq!(
            parse_err("Host a\n  Port eighty\n"),
            "/etc/cfg:2: bad port `eighty` (expected 1-65535)"
        );
        assert!(parse_err("Port 0\n").starts_with("/etc/cfg:1: bad port"));
        assert!(parse_err("IdentitiesOnly maybe\n").contains("IdentitiesOnly"));
        assert!(parse_err("StrictHostKeyChecking sometimes\n").contains("StrictHostKeyChecking"));
        assert!(parse_err("ConnectTimeout 5x\n").contains("bad time value"));
        assert!(parse_err("ProxyJump host:99999\n").contains("ProxyJump"));
        assert!(parse_err("Host\n").contains("`host` needs a value"));
        assert!(parse_err("User \"open\n").contains("unterminated quote"));
    }

    #[test]
    fn includes_follow_the_enclosing_host_block() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".ssh/conf.d")).unwrap();
        std::fs::write(
            dir.path().join(".ssh/conf.d/10-a"),
            "Host inc-*\n  User from-a\n",
        )
        .unwrap();
        std::fs::write(dir.path().join(".ssh/conf.d/20-b"), "Host *\n  Port 2020\n").unwrap();
        std::fs::write(dir.path().join(".ssh/conf.d/.hidden"), "Port 1\n").unwrap();
        std::fs::write(dir.path().join("nested"), "User nested\n").unwrap();
        let who = LocalUser {
            name: "me".into(),
            home: Some(dir.path().to_path_buf()),
        };
        let text = format!(
            "Include conf.d/*\nHost only\n  Include {}\n  Port 7\nHost *\n  Include /nonexistent/file\n",
            dir.path().join("nested").display()
        );
        let c = SshClientConfig::parse(&text, &dir.path().join("config"), who).unwrap();
        assert_eq!(c.resolve("inc-1").user.as_deref(), Some("from-a"));
        assert_eq!(c.resolve("inc-1").port, Some(2020));
        // Included inside `Host only`: applies to `only`, and `Port 7` after it still does.
        let only = c.resolve("only");
        assert_eq!(only.user.as_deref(), Some("nested"));
        assert_eq!(only.port, Some(2020));
        assert_eq!(c.resolve("other").user, None);
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    }

    #[test]
    fn jump_chains_resolve_each_hop_through_the_config() {
        let c = parse(
            "Host inner\n  HostName 10.1.0.1\n  User ops\n  ProxyJump outer\n\
             Host outer\n  HostName gw.example\n  Port 2222\n  IdentityFile ~/.ssh/gw\n  UserKnownHostsFile /kh/gw\n\
             Host loop-a\n  ProxyJump loop-b\nHost loop-b\n  ProxyJump loop-a\n",
        );
        let defaults = JumpDefaults {
            user: "deploy".into(),
            identity_files: vec![PathBuf::from("/keys/deploy")],
            known_hosts: PathBuf::from("/kh/default"),
        };
        let specs = JumpSpec::parse_list("inner,root@[::1]:2200").unwrap();
        let chain = c.jump_chain(&specs, &defaults).unwrap();
        let labels: Vec<String> = chain.hops.iter().map(JumpHost::label).collect();
        assert_eq!(
            labels,
            [
                "deploy@gw.example:2222",
                "ops@10.1.0.1:22",
                "root@[::1]:2200"
            ]
        );
        assert_eq!(
            chain.hops[0].identity_files,
            vec![PathBuf::from("/home/me/.ssh/gw")]
        );
        assert_eq!(chain.hops[0].known_hosts, PathBuf::from("/kh/gw"));
        assert_eq!(
            chain.hops[1].identity_files,
            vec![PathBuf::from("/keys/deploy")]
        );
        assert_eq!(chain.hops[2].known_hosts, PathBuf::from("/kh/default"));

        let looped = c
            .jump_chain(&JumpSpec::parse_list("loop-a").unwrap(), &defaults)
            .unwrap_err();
        assert!(looped.to_string().contains("a loop?"), "{looped}");
    }

    #[test]
    fn time_values() {
        assert_eq!(parse_time("30").unwrap(), Some(Duration::from_secs(30)));
        assert_eq!(
            parse_time("1h2m3s").unwrap(),
            Some(Duration::from_secs(3723))
        );
        assert_eq!(
            parse_time("2W").unwrap(),
            Some(Duration::from_secs(1_209_600))
        );
        assert_eq!(parse_time("none").unwrap(), None);
        for bad in ["", "m", "1x", "-1", "1.5"] {
            assert!(parse_time(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tokens_and_environment() {
        assert_eq!(expand_tokens("%h-%%", &[('h', "x")]).unwrap(), "x-%");
        assert!(expand_tokens("%C", &[]).unwrap_err().contains("%C"));
        assert!(expand_tokens("a%", &[]).is_err());
        assert_eq!(expand_env("/no/vars").unwrap(), "/no/vars");
        assert!(expand_env("${CERTCTL_SURELY_UNSET_VAR}/x").is_err());
        let c = parse("Host t\n IdentityFile ~other/key\n IdentityFile %C\n IdentityFile /ok\n");
        let s = c.resolve("t");
        assert_eq!(s.identity_files, vec![PathBuf::from("/ok")]);
        assert_eq!(s.warnings.len(), 2, "{:?}", s.warnings);
        assert!(s.warnings[0].starts_with("/etc/cfg:2: IdentityFile ~other/key"));
    }
}
