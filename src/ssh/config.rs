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
//!
//! This file holds the public types and jump chains; reading the file (lines, quotes,
//! `Include`, value syntax) is in `config/read.rs`, what it says for one host in
//! `config/resolve.rs`, the keywords certctl ignores or warns about in `config/keywords.rs`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

mod keywords;
mod read;
mod resolve;
#[cfg(test)]
mod tests;

use super::jump::{JumpHost, JumpSpec};
use super::known_hosts::glob;
use read::{expand_env, expand_tokens};

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
}
