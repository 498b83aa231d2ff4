//! Connecting: resolve and dial the server (directly, or through the last jump hop's
//! `direct-tcpip` tunnel), key exchange with the host key checked by `verifier.rs`,
//! authentication (`auth.rs`), all within the connect timeout. At most
//! [`HANDSHAKES_PER_HOST`] handshakes run at once against one server, and a reset during the
//! handshake (sshd's `MaxStartups` dropping excess connections) is retried with a jittered
//! doubling backoff.
//!
//! Not here: which hops a target uses and the pool that shares them ([`super::jump`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client;
use russh::keys::{Algorithm, HashAlg};
use tokio::sync::{OnceCell, Semaphore};
use tokio::time::timeout;

use super::auth::{Identity, authenticate, load_identities_async};
use super::exec::MAX_EXEC_CHANNELS;
use super::verifier::{HandlerError, Verifier};
use super::{
    AuthSources, Endpoint, HANDSHAKES_PER_HOST, JumpHost, JumpPool, Session, SshConfig, SshError,
    SshErrorKind, jump, known_hosts,
};

/// Connection attempts when the server resets the connection before the host key is checked
/// (sshd's `MaxStartups` drops excess concurrent handshakes this way).
const HANDSHAKE_ATTEMPTS: u32 = 3;

impl Session {
    /// Connects (through `config.jump`, sharing bastions via [`JumpPool::global`]), checks the
    /// host key strictly, authenticates. Agent and passphrase come from the environment.
    pub async fn connect(config: &SshConfig) -> Result<Session, SshError> {
        Self::connect_with(config, &AuthSources::from_env()).await
    }

    /// [`Session::connect`] with explicit agent socket and passphrase instead of the env.
    pub async fn connect_with(
        config: &SshConfig,
        sources: &AuthSources,
    ) -> Result<Session, SshError> {
        Self::connect_via(config, sources, JumpPool::global()).await
    }

    /// [`Session::connect_with`] with jump-host connections taken from (and left in) `pool`.
    ///
    /// TCP connect, key exchange and authentication count against `connect_timeout`, for
    /// each hop and for the target; waiting for a handshake slot ([`HANDSHAKES_PER_HOST`])
    /// or for another target to finish connecting a shared bastion does not. Identity files
    /// are loaded (and decrypted) before connecting, so a bad key fails without touching the
    /// network twice.
    pub async fn connect_via(
        config: &SshConfig,
        sources: &AuthSources,
        pool: &JumpPool,
    ) -> Result<Session, SshError> {
        let target = Server {
            endpoint: Endpoint::new(bare_host(&config.host), config.port),
            known_hosts: config.known_hosts.clone(),
            known_hosts_extra: config.known_hosts_extra.clone(),
        };
        let identities = load_identities_async(config.identity_files.clone(), sources).await;
        let via = if config.jump.is_empty() {
            None
        } else {
            let hop = pool
                .last_hop(config, sources)
                .await
                .map_err(|(index, error)| {
                    target.endpoint.error(SshErrorKind::Jump {
                        hop: index + 1,
                        hops: config.jump.len(),
                        error: Box::new(error),
                    })
                })?;
            Some(hop)
        };
        let login = Login {
            user: &config.user,
            identities_only: config.identities_only,
            identities: &identities,
        };
        let (handle, fingerprint) =
            connect_endpoint(&target, &login, via.clone(), config, sources).await?;
        tracing::debug!(host = %target.endpoint.host, port = target.endpoint.port, %fingerprint, jumps = config.jump.len(), "ssh connected");
        let session = Session {
            handle,
            endpoint: target.endpoint,
            command_timeout: config.command_timeout,
            fingerprint,
            exec_slots: Semaphore::new(MAX_EXEC_CHANNELS),
            prefetch: Default::default(),
            spare: Default::default(),
            sftp: OnceCell::new(),
            sudo: config.become_sudo.then(Default::default),
            _via: via,
        };
        if config.become_sudo {
            session.check_sudo(&config.user).await?;
        }
        Ok(session)
    }
}

/// A configured host without the brackets an IPv6 literal may be written with.
fn bare_host(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// Where one SSH server is and which known_hosts files vouch for it (a target or a hop).
#[derive(Debug, Clone)]
pub(super) struct Server {
    pub(super) endpoint: Endpoint,
    /// The file that vouches for the server and receives new keys.
    pub(super) known_hosts: PathBuf,
    /// Read-only further known_hosts files ([`SshConfig::known_hosts_extra`]).
    pub(super) known_hosts_extra: Vec<PathBuf>,
}

impl Server {
    pub(super) fn known_hosts_files(&self) -> Vec<PathBuf> {
        std::iter::once(self.known_hosts.clone())
            .chain(self.known_hosts_extra.iter().cloned())
            .collect()
    }

    pub(super) fn connect_error(&self, message: String) -> SshError {
        self.endpoint.error(SshErrorKind::Connect { message })
    }
}

/// Who logs in to a server, and with which keys.
struct Login<'a> {
    user: &'a str,
    identities_only: bool,
    identities: &'a [Identity],
}

/// russh's client settings for one server: keepalive, and host key algorithms in the order
/// that gets a key (or certificate) we can verify.
fn client_config(
    host: &str,
    port: u16,
    known_hosts: &[PathBuf],
    keepalive_interval: Duration,
) -> client::Config {
    let mut cfg = client::Config::default();
    if !keepalive_interval.is_zero() {
        // Keepalive shorter than the inactivity timeout, or a quiet command loses its session
        // without any error (rust-stack.md gotcha 10).
        cfg.keepalive_interval = Some(keepalive_interval);
        cfg.keepalive_max = 3;
        cfg.inactivity_timeout = Some(keepalive_interval * 4);
    }
    cfg.nodelay = true;
    // A `@cert-authority` line for this host: ask for a host certificate first (a server
    // without one still presents its plain key).
    if known_hosts
        .iter()
        .any(|f| known_hosts::has_cert_authority(f, host, port))
    {
        use russh::keys::EcdsaCurve;
        cfg.preferred.host_key_certificates = vec![
            Algorithm::Ed25519,
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP256,
            },
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP384,
            },
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP521,
            },
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha512),
            },
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha256),
            },
        ]
        .into();
    }
    // Like OpenSSH: ask first for host key types we already trust for this host, so a server
    // with several host keys presents one we can verify.
    let mut known: Vec<String> = Vec::new();
    for file in known_hosts {
        for key_type in known_hosts::known_key_types(file, host, port) {
            if !known.contains(&key_type) {
                known.push(key_type);
            }
        }
    }
    if !known.is_empty() {
        let mut order: Vec<Algorithm> = cfg.preferred.key.to_vec();
        order.sort_by_key(|alg| {
            if known.iter().any(|k| algorithm_matches(alg, k)) {
                0
            } else {
                1
            }
        });
        cfg.preferred.key = order.into();
    }
    cfg
}

/// Whether negotiating `alg` yields a host key of known_hosts type `key_type`.
fn algorithm_matches(alg: &Algorithm, key_type: &str) -> bool {
    match alg {
        Algorithm::Rsa { .. } => key_type == "ssh-rsa",
        other => other.as_str() == key_type,
    }
}

/// A slot among the [`HANDSHAKES_PER_HOST`] handshakes allowed at once against one server.
async fn handshake_slot(host: &str, port: u16) -> Option<tokio::sync::OwnedSemaphorePermit> {
    handshake_slot_for(format!("{}:{port}", host.to_lowercase())).await
}

/// The handshake slot of one server, named by the host key known_hosts trusts for `target`:
/// one sshd reached under several names or addresses is one server to `MaxStartups`, and the
/// cap must hold across them. An unknown host is capped by its name and port. (Servers cloned
/// with the same host key share one cap too: their handshakes wait, none is dropped.)
async fn server_handshake_slot(target: &Server) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let Endpoint { host, port } = &target.endpoint;
    match known_hosts::known_key(&target.known_hosts, host, *port) {
        Some(blob) => handshake_slot_for(format!("key {blob}")).await,
        None => handshake_slot(host, *port).await,
    }
}

async fn handshake_slot_for(server: String) -> Option<tokio::sync::OwnedSemaphorePermit> {
    type Slots = HashMap<String, Arc<Semaphore>>;
    static SLOTS: std::sync::LazyLock<Mutex<Slots>> = std::sync::LazyLock::new(Mutex::default);
    let semaphore = SLOTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .entry(server)
        .or_insert_with(|| Arc::new(Semaphore::new(HANDSHAKES_PER_HOST)))
        .clone();
    // The semaphores are never closed, so this only fails in theory (and then: no cap).
    semaphore.acquire_owned().await.ok()
}

/// Handshake and authentication with one server, directly or through `via`, within
/// `config.connect_timeout`. Returns the connection and the host key's fingerprint.
async fn connect_endpoint(
    target: &Server,
    login: &Login<'_>,
    via: Option<Arc<jump::Hop>>,
    config: &SshConfig,
    sources: &AuthSources,
) -> Result<(client::Handle<Verifier>, String), SshError> {
    let _slot = server_handshake_slot(target).await;
    let fingerprint = Arc::new(Mutex::new(String::new()));
    let client_config = Arc::new(client_config(
        &target.endpoint.host,
        target.endpoint.port,
        &target.known_hosts_files(),
        config.keepalive_interval,
    ));
    let connect = async {
        let verifier = Verifier::new(target.clone(), config.accept_new_host_keys, &fingerprint);
        let mut handle =
            handshake_with_retries(target, via.as_deref(), verifier, client_config).await?;
        authenticate(
            &mut handle,
            &target.endpoint,
            login.user,
            sources,
            login.identities,
            login.identities_only,
        )
        .await?;
        Ok::<_, SshError>(handle)
    };
    let handle = match timeout(config.connect_timeout, connect).await {
        Ok(result) => result?,
        Err(_) => {
            return Err(target.endpoint.error(SshErrorKind::ConnectTimeout {
                timeout: config.connect_timeout,
            }));
        }
    };
    let fingerprint = fingerprint.lock().map(|f| f.clone()).unwrap_or_default();
    Ok((handle, fingerprint))
}

/// Connects and authenticates one jump host, through `upstream` unless it is the first.
pub(super) async fn connect_hop(
    hop: &JumpHost,
    upstream: Option<Arc<jump::Hop>>,
    config: &SshConfig,
    sources: &AuthSources,
) -> Result<jump::Hop, SshError> {
    let server = Server {
        endpoint: Endpoint::new(bare_host(&hop.host), hop.port),
        known_hosts: hop.known_hosts.clone(),
        known_hosts_extra: Vec::new(),
    };
    let identities = load_identities_async(hop.identity_files.clone(), sources).await;
    let login = Login {
        user: &hop.user,
        identities_only: false,
        identities: &identities,
    };
    let (handle, _) = connect_endpoint(&server, &login, upstream.clone(), config, sources).await?;
    Ok(jump::Hop::new(handle, hop.label(), upstream))
}

/// Failures of one connection attempt, before authentication.
#[derive(Debug)]
enum HandshakeError {
    /// The server dropped the connection before the host key was checked: worth retrying.
    Reset(SshError),
    Fatal(SshError),
}

async fn handshake_with_retries(
    target: &Server,
    via: Option<&jump::Hop>,
    verifier: Verifier,
    client_config: Arc<client::Config>,
) -> Result<client::Handle<Verifier>, SshError> {
    let mut backoff = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        match handshake(target, via, verifier.clone(), client_config.clone()).await {
            Ok(handle) => return Ok(handle),
            Err(HandshakeError::Fatal(e)) => return Err(e),
            Err(HandshakeError::Reset(SshError {
                endpoint,
                kind: SshErrorKind::Connect { message },
            })) if attempt >= HANDSHAKE_ATTEMPTS => {
                let message = format!("{message} ({attempt} attempts)");
                return Err(endpoint.error(SshErrorKind::Connect { message }));
            }
            Err(HandshakeError::Reset(e)) if attempt >= HANDSHAKE_ATTEMPTS => return Err(e),
            Err(HandshakeError::Reset(e)) => {
                // Jitter (50–150 %): connections dropped together must not retry together.
                let mut byte = [0u8; 1];
                let _ = getrandom::fill(&mut byte);
                let wait = backoff.mul_f64(0.5 + f64::from(byte[0]) / 255.0);
                tracing::debug!(
                    "{e}; retrying in {wait:?} (attempt {attempt} of {HANDSHAKE_ATTEMPTS})"
                );
                tokio::time::sleep(wait).await;
                backoff *= 2;
                attempt += 1;
            }
        }
    }
}

async fn handshake(
    target: &Server,
    via: Option<&jump::Hop>,
    verifier: Verifier,
    client_config: Arc<client::Config>,
) -> Result<client::Handle<Verifier>, HandshakeError> {
    let connected = match via {
        None => {
            let tcp = tcp_connect(target).await.map_err(HandshakeError::Fatal)?;
            client::connect_stream(client_config, tcp, verifier).await
        }
        Some(hop) => {
            // The hop resolves and dials the target, as `ssh -J` does.
            let channel = hop
                .handle
                .channel_open_direct_tcpip(
                    target.endpoint.host.as_str(),
                    u32::from(target.endpoint.port),
                    "127.0.0.1",
                    0,
                )
                .await
                .map_err(|e| HandshakeError::Fatal(tunnel_error(target, hop, &e)))?;
            client::connect_stream(client_config, channel.into_stream(), verifier).await
        }
    };
    match connected {
        Ok(handle) => Ok(handle),
        Err(HandlerError::Refused(e)) => Err(HandshakeError::Fatal(*e)),
        Err(HandlerError::Russh(e)) => {
            if is_reset(&e) {
                let message =
                    format!("the server closed the connection during the SSH handshake: {e}");
                Err(HandshakeError::Reset(target.connect_error(message)))
            } else {
                Err(HandshakeError::Fatal(
                    target.connect_error(format!("SSH handshake failed: {e}")),
                ))
            }
        }
    }
}

/// Resolves the host and connects to its first address that answers, as OpenSSH does.
async fn tcp_connect(target: &Server) -> Result<tokio::net::TcpStream, SshError> {
    let Endpoint { host, port } = &target.endpoint;
    let literal = host.parse::<std::net::IpAddr>().is_ok();
    let addrs: Vec<std::net::SocketAddr> = match tokio::net::lookup_host((host.as_str(), *port))
        .await
    {
        Ok(addrs) => addrs.collect(),
        Err(e) => {
            return Err(target.connect_error(format!("cannot resolve the host name `{host}`: {e}")));
        }
    };
    let mut last = None;
    for addr in &addrs {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(tcp) => {
                let _ = tcp.set_nodelay(true);
                return Ok(tcp);
            }
            Err(e) => last = Some((addr, e)),
        }
    }
    Err(match last {
        Some((addr, e)) => {
            let hint = match e.kind() {
                std::io::ErrorKind::ConnectionRefused => " (is sshd listening on that port?)",
                _ => "",
            };
            let to = if literal {
                String::new()
            } else {
                format!(" to {addr}")
            };
            target.connect_error(format!("cannot connect{to}: {e}{hint}"))
        }
        None => target.connect_error(format!("the host name `{host}` resolves to no address")),
    })
}

/// Why a jump host could not open the tunnel to `target`.
fn tunnel_error(target: &Server, hop: &jump::Hop, e: &russh::Error) -> SshError {
    use russh::ChannelOpenFailure as F;
    let message = match e {
        russh::Error::ChannelOpenFailure(F::ConnectFailed) => format!(
            "the jump host {} cannot connect to it (refused, unreachable, or a name it cannot resolve)",
            hop.label
        ),
        russh::Error::ChannelOpenFailure(F::AdministrativelyProhibited) => format!(
            "the jump host {} refuses to forward connections (AllowTcpForwarding?)",
            hop.label
        ),
        _ if hop.handle.is_closed() => {
            format!("the connection to the jump host {} was lost", hop.label)
        }
        other => format!(
            "the jump host {} could not open a tunnel to it: {other}",
            hop.label
        ),
    };
    target.connect_error(message)
}

fn is_reset(e: &russh::Error) -> bool {
    use std::io::ErrorKind;
    match e {
        russh::Error::Disconnect | russh::Error::HUP => true,
        russh::Error::IO(io) => matches!(
            io.kind(),
            ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof | ErrorKind::BrokenPipe
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_brackets_are_dropped_from_the_configured_host() {
        assert_eq!(bare_host("[::1]"), "::1");
        assert_eq!(bare_host("::1"), "::1");
        assert_eq!(bare_host("web-1"), "web-1");
    }

    #[test]
    fn known_host_key_types_are_preferred() {
        let dir = tempfile::tempdir().unwrap();
        let known_hosts = dir.path().join("known_hosts");
        std::fs::write(
            &known_hosts,
            "[h]:2222 ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBHUAPS0UQzXyLyNNA+tsHhfXq/pjOWJJaUvqtRIUKPAjR72vZkFcDx4/h/J7C/r0LcTEfHEQrTVY5ZN1t5UqlEI=\n",
        )
        .unwrap();
        let keepalive = Duration::from_secs(15);
        let cfg = client_config("h", 2222, std::slice::from_ref(&known_hosts), keepalive);
        assert_eq!(cfg.preferred.key[0].as_str(), "ecdsa-sha2-nistp256");
        assert_eq!(cfg.keepalive_interval, Some(Duration::from_secs(15)));
        assert_eq!(cfg.inactivity_timeout, Some(Duration::from_secs(60)));
        assert!(cfg.nodelay);
        // Unknown host: russh's default order.
        assert_eq!(
            client_config("other", 2222, &[known_hosts], keepalive)
                .preferred
                .key[0]
                .as_str(),
            "ssh-ed25519"
        );
    }

    #[tokio::test]
    async fn handshake_slots_cap_each_host_separately() {
        use futures::FutureExt as _;
        let host = "slot-test.example";
        let mut held = Vec::new();
        for _ in 0..HANDSHAKES_PER_HOST {
            held.push(handshake_slot(host, 1).await.unwrap());
        }
        assert!(
            handshake_slot(host, 1).now_or_never().is_none(),
            "the cap holds"
        );
        assert!(
            handshake_slot("SLOT-TEST.example", 1)
                .now_or_never()
                .is_none(),
            "host names are compared case-insensitively"
        );
        assert!(
            handshake_slot(host, 2).now_or_never().is_some(),
            "another port"
        );
        assert!(
            handshake_slot("other.example", 1).now_or_never().is_some(),
            "another host"
        );
        let waiting = handshake_slot(host, 1);
        tokio::pin!(waiting);
        assert!(futures::poll!(&mut waiting).is_pending());
        held.pop();
        assert!(waiting.await.is_some(), "a freed slot goes to the waiter");
    }

    #[tokio::test]
    async fn one_server_under_several_addresses_shares_one_handshake_cap() {
        use base64::Engine as _;
        use futures::FutureExt as _;
        let dir = tempfile::tempdir().unwrap();
        let known_hosts = dir.path().join("known_hosts");
        let key = |name: &str| {
            let mut blob = Vec::new();
            super::super::sftp::put_ssh_string(&mut blob, "ssh-ed25519");
            super::super::sftp::put_ssh_string(&mut blob, name);
            base64::engine::general_purpose::STANDARD.encode(blob)
        };
        std::fs::write(
            &known_hosts,
            format!(
                "127.77.0.1,127.77.0.2 ssh-ed25519 {one}\n127.77.0.3 ssh-ed25519 {other}\n",
                one = key("same-server-key-0123456789abcdef"),
                other = key("other-server-key-0123456789abcde"),
            ),
        )
        .unwrap();
        let at = |host: &str| Server {
            endpoint: Endpoint::new(host, 22),
            known_hosts: known_hosts.clone(),
            known_hosts_extra: Vec::new(),
        };
        let mut held = Vec::new();
        for _ in 0..HANDSHAKES_PER_HOST {
            held.push(server_handshake_slot(&at("127.77.0.1")).await.unwrap());
        }
        assert!(
            server_handshake_slot(&at("127.77.0.2"))
                .now_or_never()
                .is_none(),
            "the second address of the same server waits"
        );
        assert!(
            server_handshake_slot(&at("127.77.0.3"))
                .now_or_never()
                .is_some(),
            "another server's key has its own cap"
        );
        assert!(
            server_handshake_slot(&at("127.77.0.4"))
                .now_or_never()
                .is_some(),
            "a host not in known_hosts is capped by its address"
        );
    }
}
