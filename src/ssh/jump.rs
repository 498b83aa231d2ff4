//! Jump hosts (OpenSSH `ProxyJump`): the `[user@]host[:port]` syntax, the resolved hops a
//! [`super::SshConfig`] carries, and [`JumpPool`], which keeps one authenticated connection per
//! bastion so every target behind it shares it.
//!
//! Each hop is a full SSH session tunnelled through the previous one (`direct-tcpip` channel +
//! `connect_stream`), with its own strict host-key check against its own known_hosts. The
//! connecting itself lives in `connect.rs` (it shares the handshake, retry and auth code).
//!
//! Not here: reading `~/.ssh/config` ([`super::config`]) or choosing which hops a target uses
//! (inventory > ssh config, decided by the caller).

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use russh::client;
use tokio::time::Instant;

use super::verifier::Verifier;
use super::{AuthSources, Endpoint, SshConfig, SshError, SshErrorKind, endpoint};

/// One hop as written: `[user@]host[:port]`, `[v6addr]:port`, or `ssh://[user@]host[:port]`.
/// Missing parts are filled from `~/.ssh/config` and defaults by
/// [`super::config::SshClientConfig::jump_chain`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JumpSpec {
    pub user: Option<String>,
    /// Host name, alias or address; IPv6 addresses without brackets.
    pub host: String,
    pub port: Option<u16>,
}

impl JumpSpec {
    /// Parses one hop. IPv6 literals need brackets when a port follows (`[::1]:2222`); a bare
    /// `::1` is a host without a port, as in OpenSSH.
    pub fn parse(spec: &str) -> Result<JumpSpec, String> {
        let text = spec.trim();
        let text = text.strip_prefix("ssh://").unwrap_or(text);
        if text.is_empty() {
            return Err("empty jump host".to_owned());
        }
        if text.chars().any(char::is_whitespace) {
            return Err(format!("jump host `{spec}` contains whitespace"));
        }
        // The user may itself contain `@` (rare, e.g. a domain login): split at the LAST one.
        let (user, rest) = match text.rsplit_once('@') {
            Some((user, rest)) if !user.is_empty() => (Some(user.to_owned()), rest),
            Some(_) => return Err(format!("jump host `{spec}` has an empty user")),
            None => (None, text),
        };
        let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
            let (host, after) = inner
                .split_once(']')
                .ok_or_else(|| format!("jump host `{spec}`: `[` without a closing `]`"))?;
            match after {
                "" => (host, None),
                _ => match after.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None => return Err(format!("jump host `{spec}`: junk after `]`")),
                },
            }
        } else if rest.matches(':').count() == 1 {
            let (host, port) = rest.split_once(':').unwrap_or((rest, ""));
            (host, Some(port))
        } else {
            // No colon, or an unbracketed IPv6 address (which cannot carry a port).
            (rest, None)
        };
        if host.is_empty() {
            return Err(format!("jump host `{spec}` has no host name"));
        }
        let port = match port {
            None => None,
            Some(p) => Some(parse_port(p).map_err(|e| format!("jump host `{spec}`: {e}"))?),
        };
        Ok(JumpSpec {
            user,
            host: host.to_owned(),
            port,
        })
    }

    /// Parses OpenSSH's comma-separated chain, first hop first. `none` is the empty chain.
    pub fn parse_list(list: &str) -> Result<Vec<JumpSpec>, String> {
        let list = list.trim();
        if list.eq_ignore_ascii_case("none") {
            return Ok(Vec::new());
        }
        list.split(',').map(JumpSpec::parse).collect()
    }
}

impl fmt::Display for JumpSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(user) = &self.user {
            write!(f, "{user}@")?;
        }
        match (self.port, self.host.contains(':')) {
            (Some(port), _) => write!(f, "{}", endpoint(&self.host, port)),
            (None, true) => write!(f, "[{}]", self.host),
            (None, false) => f.write_str(&self.host),
        }
    }
}

/// A port number 1–65535.
pub(super) fn parse_port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("bad port `{text}` (expected 1-65535)")),
        Ok(port) => Ok(port),
    }
}

/// One resolved hop of a jump chain: everything needed to log in to the bastion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JumpHost {
    /// Name or address (IPv6 without brackets). Resolved by the previous hop for every hop but
    /// the first, as OpenSSH does.
    pub host: String,
    pub port: u16,
    pub user: String,
    /// Key files to offer, in order, after the agent; empty = `~/.ssh/id_ed25519`, `id_ecdsa`,
    /// `id_rsa` (the same defaults as a target).
    pub identity_files: Vec<PathBuf>,
    /// This hop's host key is checked strictly against this file.
    pub known_hosts: PathBuf,
}

impl JumpHost {
    /// `user@host:port`, for messages.
    pub fn label(&self) -> String {
        format!("{}@{}", self.user, endpoint(&self.host, self.port))
    }

    fn key(&self) -> HopKey {
        (self.user.clone(), self.host.to_lowercase(), self.port)
    }
}

/// A bastion connection is shared by (user, host, port) of every hop up to and including it.
type HopKey = (String, String, u16);

/// One slot per hop path, each locked while its hop is being connected.
type Slots = HashMap<Vec<HopKey>, Arc<tokio::sync::Mutex<Slot>>>;

/// An authenticated connection to one hop, keeping the hops before it alive.
pub(super) struct Hop {
    pub(super) handle: client::Handle<Verifier>,
    pub(super) label: String,
    /// The previous hop, which carries this hop's TCP stream.
    _upstream: Option<Arc<Hop>>,
}

impl Hop {
    pub(super) fn new(
        handle: client::Handle<Verifier>,
        label: String,
        upstream: Option<Arc<Hop>>,
    ) -> Hop {
        Hop {
            handle,
            label,
            _upstream: upstream,
        }
    }
}

/// What one pooled hop holds: the live connection, or the last failure (handed to everyone
/// who was already waiting for that attempt, so N targets behind a dead bastion fail once
/// each instead of queueing N connect timeouts).
#[derive(Default)]
struct Slot {
    hop: Option<Arc<Hop>>,
    failed: Option<(Instant, SshError)>,
}

/// One authenticated connection per bastion, shared by every target behind it.
///
/// Cloning shares the pool. [`JumpPool::global`] is what [`super::Session::connect`] and
/// [`super::Session::connect_with`] use; pass your own to [`super::Session::connect_via`] to
/// scope the connections (e.g. one pool per run). A pooled connection that has dropped is
/// replaced on next use. Connections stay open until [`JumpPool::close_all`] or the pool's
/// last clone is dropped (sessions built on a hop keep it alive while they exist).
#[derive(Clone, Default)]
pub struct JumpPool {
    slots: Arc<Mutex<Slots>>,
}

impl fmt::Debug for JumpPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JumpPool")
            .field("open", &self.open_connections())
            .finish()
    }
}

impl JumpPool {
    pub fn new() -> JumpPool {
        JumpPool::default()
    }

    /// The process-wide pool.
    pub fn global() -> &'static JumpPool {
        static POOL: std::sync::LazyLock<JumpPool> = std::sync::LazyLock::new(JumpPool::new);
        &POOL
    }

    /// Hop connections currently open (a slot being connected right now is not counted).
    pub fn open_connections(&self) -> usize {
        let slots: Vec<_> = self.lock().values().cloned().collect();
        slots
            .iter()
            .filter(|slot| {
                slot.try_lock()
                    .is_ok_and(|s| s.hop.as_ref().is_some_and(|h| !h.handle.is_closed()))
            })
            .count()
    }

    /// Disconnects every pooled hop (sessions still using one keep it open until they close).
    pub async fn close_all(&self) {
        let slots: Vec<_> = self.lock().drain().map(|(_, slot)| slot).collect();
        for slot in slots {
            let hop = slot.lock().await.hop.take();
            if let Some(hop) = hop
                && let Ok(hop) = Arc::try_unwrap(hop)
            {
                let _ = hop
                    .handle
                    .disconnect(russh::Disconnect::ByApplication, "", "en")
                    .await;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The connection to the last hop of `config.jump`, connecting each hop that is not pooled
    /// yet. Errors are the hop's own (naming its host and port); the caller adds the target.
    pub(super) async fn last_hop(
        &self,
        config: &SshConfig,
        sources: &AuthSources,
    ) -> Result<Arc<Hop>, (usize, SshError)> {
        let mut previous: Option<Arc<Hop>> = None;
        for (index, hop) in config.jump.iter().enumerate() {
            let key: Vec<HopKey> = config.jump[..=index].iter().map(JumpHost::key).collect();
            let slot = self.lock().entry(key).or_default().clone();
            let waiting_since = Instant::now();
            let mut slot = slot.lock().await;
            if let Some(live) = slot.hop.as_ref().filter(|h| !h.handle.is_closed()) {
                previous = Some(live.clone());
                continue;
            }
            if let Some((when, error)) = &slot.failed
                && *when >= waiting_since
            {
                return Err((index, error.clone()));
            }
            match super::connect::connect_hop(hop, previous.clone(), config, sources).await {
                Ok(connected) => {
                    tracing::debug!(hop = %connected.label, "jump host connected");
                    let connected = Arc::new(connected);
                    slot.hop = Some(connected.clone());
                    slot.failed = None;
                    previous = Some(connected);
                }
                Err(error) => {
                    slot.hop = None;
                    slot.failed = Some((Instant::now(), error.clone()));
                    return Err((index, error));
                }
            }
        }
        previous.ok_or_else(|| {
            let message = "internal: empty jump chain".to_owned();
            let at = Endpoint::new(config.host.clone(), config.port);
            (0, at.error(SshErrorKind::Protocol { message }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(user: Option<&str>, host: &str, port: Option<u16>) -> JumpSpec {
        JumpSpec {
            user: user.map(str::to_owned),
            host: host.to_owned(),
            port,
        }
    }

    #[test]
    fn jump_specs_parse_like_openssh() {
        assert_eq!(
            JumpSpec::parse("bastion").unwrap(),
            spec(None, "bastion", None)
        );
        assert_eq!(
            JumpSpec::parse("admin@bastion.example:2222").unwrap(),
            spec(Some("admin"), "bastion.example", Some(2222))
        );
        assert_eq!(
            JumpSpec::parse("[::1]:2222").unwrap(),
            spec(None, "::1", Some(2222))
        );
        assert_eq!(
            JumpSpec::parse("ops@[fe80::1%eth0]").unwrap(),
            spec(Some("ops"), "fe80::1%eth0", None)
        );
        assert_eq!(JumpSpec::parse("::1").unwrap(), spec(None, "::1", None));
        assert_eq!(
            JumpSpec::parse("ssh://me@10.0.0.1:22").unwrap(),
            spec(Some("me"), "10.0.0.1", Some(22))
        );
        assert_eq!(
            JumpSpec::parse("a@b@host").unwrap(),
            spec(Some("a@b"), "host", None)
        );
        for bad in [
            "",
            "@host",
            "host:",
            "host:0",
            "host:70000",
            "host:ssh",
            "[::1",
            "[::1]x",
            "a b",
            "user@",
            ":22",
        ] {
            assert!(JumpSpec::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn jump_lists_and_none() {
        let chain = JumpSpec::parse_list("a@one:2200,[::1]:22,three").unwrap();
        assert_eq!(
            chain,
            vec![
                spec(Some("a"), "one", Some(2200)),
                spec(None, "::1", Some(22)),
                spec(None, "three", None)
            ]
        );
        assert!(JumpSpec::parse_list("none").unwrap().is_empty());
        assert!(JumpSpec::parse_list("one,,two").is_err());
        let shown: Vec<String> = chain.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["a@one:2200", "[::1]:22", "three"]);
        assert_eq!(spec(None, "::1", None).to_string(), "[::1]");
    }
}
