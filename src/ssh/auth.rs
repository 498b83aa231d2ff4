//! Authentication: ssh-agent identities first, then key files (each with its OpenSSH user
//! certificate, `KEY-cert.pub`, offered before the key); the first one the server accepts
//! wins. Key files are decrypted once per process (a passphrase from `CERTCTL_SSH_PASSPHRASE`
//! or typed at the terminal) and cached; RSA keys sign with the best hash the server accepts.
//! Errors list every key tried and why it did not work, never key bytes or a passphrase.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use russh::client;
use russh::keys::agent::AgentIdentity;
use russh::keys::agent::client::AgentClient;
use russh::keys::{Algorithm, HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use zeroize::Zeroizing;

use super::verifier::Verifier;
use super::{AuthSources, Endpoint, SshError, SshErrorKind, prompt};
use crate::secret::Secret;

/// Loads (decrypts, prompting if `sources.prompt`) the given key files — or the default ones
/// when `files` is empty — into the process's key cache, so later connects reuse them. Call it
/// before a live progress view starts, so a passphrase prompt does not fight the view for the
/// terminal. Returns one `path: reason` line per file that cannot be used.
pub async fn unlock_identities(files: &[PathBuf], sources: &AuthSources) -> Vec<String> {
    load_identities_async(files.to_vec(), sources)
        .await
        .into_iter()
        .filter_map(|id| {
            id.key
                .err()
                .map(|reason| format!("{}: {reason}", id.path.display()))
        })
        .collect()
}

/// A key file, loaded (or not) before connecting.
pub(super) struct Identity {
    path: PathBuf,
    key: Result<Arc<PrivateKey>, String>,
    /// An OpenSSH user certificate beside the key (`KEY-cert.pub`), offered before the key.
    cert: Option<russh::keys::Certificate>,
}

impl Identity {
    /// The public half: from the loaded key, else from `KEY.pub` (an encrypted key nobody
    /// unlocked still identifies its agent copy, for `IdentitiesOnly`).
    fn public_key(&self) -> Option<PublicKey> {
        match &self.key {
            Ok(key) => Some(key.public_key().clone()),
            Err(_) => {
                let mut pub_path = self.path.clone().into_os_string();
                pub_path.push(".pub");
                PublicKey::read_openssh_file(Path::new(&pub_path)).ok()
            }
        }
    }
}

/// `KEY-cert.pub` beside `path`, when it exists and parses as a certificate for that key.
fn load_certificate(path: &Path, key: &PrivateKey) -> Option<russh::keys::Certificate> {
    let mut cert_path = path.to_path_buf().into_os_string();
    cert_path.push("-cert.pub");
    let cert_path = PathBuf::from(cert_path);
    if !cert_path.exists() {
        return None;
    }
    match russh::keys::Certificate::read_file(&cert_path) {
        Ok(cert) if cert.public_key() == key.public_key().key_data() => Some(cert),
        Ok(_) => {
            tracing::warn!(path = %cert_path.display(), "certificate is for another key; not used");
            None
        }
        Err(e) => {
            tracing::warn!(path = %cert_path.display(), "cannot parse the certificate: {e}; not used");
            None
        }
    }
}

/// [`load_identities`] on a blocking thread: decrypting a key (bcrypt) is CPU work, and the
/// passphrase prompt waits for a person.
pub(super) async fn load_identities_async(
    files: Vec<PathBuf>,
    sources: &AuthSources,
) -> Vec<Identity> {
    let (passphrase, prompt) = (sources.passphrase.clone(), sources.prompt);
    tokio::task::spawn_blocking(move || load_identities(files, passphrase.as_ref(), prompt))
        .await
        .unwrap_or_default()
}

/// The configured identity files if any, else the default key files that exist.
fn load_identities(
    files: Vec<PathBuf>,
    passphrase: Option<&Secret>,
    prompt: bool,
) -> Vec<Identity> {
    let paths: Vec<PathBuf> = if !files.is_empty() {
        files
    } else {
        match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            Some(home) => ["id_ed25519", "id_ecdsa", "id_rsa"]
                .iter()
                .map(|name| Path::new(&home).join(".ssh").join(name))
                .filter(|p| p.exists())
                .collect(),
            None => Vec::new(),
        }
    };
    paths
        .into_iter()
        .map(|path| {
            let key = load_key_cached(&path, passphrase, prompt);
            if let Err(message) = &key {
                tracing::debug!(path = %path.display(), "identity not usable: {message}");
            }
            let cert = key
                .as_ref()
                .ok()
                .and_then(|key| load_certificate(&path, key));
            Identity { path, key, cert }
        })
        .collect()
}

/// How a cached key was decrypted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Unlock {
    Plain,
    /// With this passphrase (its SHA-256).
    Given(Vec<u8>),
    /// With a passphrase typed at the prompt.
    Prompted,
}

/// Which key file, unlocked how, as of which modification.
type KeyCacheKey = (PathBuf, Unlock, Option<std::time::SystemTime>, u64);

/// Keys decrypted once per process: a fleet run connects to every target with the same key,
/// and an encrypted key costs ~90 ms of bcrypt per load (and a prompt costs a person's
/// time). Only successes are cached; the lock is held while loading so concurrent connects
/// wait for one decryption (or one prompt), not N.
fn load_key_cached(
    path: &Path,
    passphrase: Option<&Secret>,
    prompt: bool,
) -> Result<Arc<PrivateKey>, String> {
    use sha2::Digest as _;
    static CACHE: std::sync::LazyLock<Mutex<HashMap<KeyCacheKey, Arc<PrivateKey>>>> =
        std::sync::LazyLock::new(Mutex::default);
    let meta = std::fs::metadata(path).ok();
    let cache_key = |unlock: Unlock| {
        (
            path.to_path_buf(),
            unlock,
            meta.as_ref().and_then(|m| m.modified().ok()),
            meta.as_ref().map_or(0, |m| m.len()),
        )
    };
    let unlock = match passphrase {
        Some(p) => Unlock::Given(sha2::Sha256::digest(p.expose()).to_vec()),
        None => Unlock::Plain,
    };
    let may_prompt = prompt && passphrase.is_none();
    let mut cache = CACHE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(key) = cache.get(&cache_key(unlock.clone())) {
        return Ok(key.clone());
    }
    if may_prompt && let Some(key) = cache.get(&cache_key(Unlock::Prompted)) {
        return Ok(key.clone());
    }
    match decode_key(path, passphrase) {
        Ok(key) => {
            let key = Arc::new(key);
            cache.insert(cache_key(unlock), key.clone());
            Ok(key)
        }
        Err(KeyError::Encrypted) if may_prompt => {
            let key = Arc::new(prompt_and_decode(path)?);
            cache.insert(cache_key(Unlock::Prompted), key.clone());
            Ok(key)
        }
        Err(e) => Err(e.message()),
    }
}

/// Asks for the passphrase on the terminal, three tries as OpenSSH allows.
fn prompt_and_decode(path: &Path) -> Result<PrivateKey, String> {
    let mut question = format!("Enter passphrase for key '{}': ", path.display());
    for _ in 0..3 {
        let passphrase = prompt::passphrase(&question)
            .map_err(|e| format!("the key is encrypted and the passphrase prompt failed: {e}"))?;
        if passphrase.is_empty() {
            return Err("the key is encrypted and no passphrase was entered".to_owned());
        }
        match decode_key(path, Some(&passphrase)) {
            Ok(key) => return Ok(key),
            Err(KeyError::BadPassphrase) => {
                question = format!("Bad passphrase, try again for '{}': ", path.display());
            }
            Err(e) => return Err(e.message()),
        }
    }
    Err("the key is encrypted and the passphrase entered was wrong 3 times".to_owned())
}

/// Why a key file could not be loaded.
enum KeyError {
    Encrypted,
    BadPassphrase,
    Other(String),
}

impl KeyError {
    fn message(self) -> String {
        match self {
            KeyError::Encrypted => "the key is encrypted; set CERTCTL_SSH_PASSPHRASE, load it into ssh-agent, or run certctl from a terminal to be asked".to_owned(),
            KeyError::BadPassphrase => {
                "cannot decrypt or parse the key (wrong CERTCTL_SSH_PASSPHRASE?)".to_owned()
            }
            KeyError::Other(message) => message,
        }
    }
}

/// Loads a private key; the error text never contains key material.
#[cfg(test)]
fn load_key(path: &Path, passphrase: Option<&Secret>) -> Result<PrivateKey, String> {
    decode_key(path, passphrase).map_err(KeyError::message)
}

fn decode_key(path: &Path, passphrase: Option<&Secret>) -> Result<PrivateKey, KeyError> {
    let bytes = Zeroizing::new(
        std::fs::read(path).map_err(|e| KeyError::Other(format!("cannot read: {e}")))?,
    );
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| KeyError::Other("not a text (PEM/OpenSSH) key file".to_owned()))?;
    let passphrase = match passphrase {
        Some(p) => Some(
            std::str::from_utf8(p.expose())
                .map_err(|_| KeyError::Other("the passphrase is not valid UTF-8".to_owned()))?,
        ),
        None => None,
    };
    russh::keys::decode_secret_key(text, passphrase).map_err(|e| match (e, passphrase) {
        (russh::keys::Error::KeyIsEncrypted, _) => KeyError::Encrypted,
        (_, Some(_)) => KeyError::BadPassphrase,
        (e, None) => KeyError::Other(format!("cannot parse the key: {e}")),
    })
}

/// One authentication exchange: what was tried so far and the server's RSA hash, asked once.
struct Attempt<'a> {
    handle: &'a mut client::Handle<Verifier>,
    endpoint: &'a Endpoint,
    user: &'a str,
    tried: Vec<String>,
    rsa_hash: Option<Option<HashAlg>>,
}

/// Agent identities first, then key files; the first one the server accepts wins.
pub(super) async fn authenticate(
    handle: &mut client::Handle<Verifier>,
    endpoint: &Endpoint,
    user: &str,
    sources: &AuthSources,
    identities: &[Identity],
    identities_only: bool,
) -> Result<(), SshError> {
    let mut attempt = Attempt {
        handle,
        endpoint,
        user,
        tried: Vec::new(),
        rsa_hash: None,
    };
    if let Some(socket) = &sources.agent_socket
        && attempt
            .with_agent(socket, identities, identities_only)
            .await?
    {
        return Ok(());
    }
    if attempt.with_key_files(identities).await? {
        return Ok(());
    }
    if attempt.tried.is_empty() {
        // Configured files always show up in `tried` (if only as unreadable): these are the
        // defaults.
        return Err(attempt.error(
            "no key to offer: SSH_AUTH_SOCK is not set and no identity file exists (~/.ssh/id_ed25519, id_ecdsa, id_rsa)"
                .to_owned(),
        ));
    }
    Err(attempt.error(format!("tried {}", attempt.tried.join("; "))))
}

impl Attempt<'_> {
    fn error(&self, message: String) -> SshError {
        self.endpoint.error(SshErrorKind::Auth {
            user: self.user.to_owned(),
            message,
        })
    }

    /// The exchange broke off (the connection failed), after what was tried.
    fn broken_off(&self) -> SshError {
        self.error(format!(
            "the connection failed during authentication; tried {}",
            self.tried.join("; ")
        ))
    }

    /// Offers the agent's keys (with `IdentitiesOnly`, only copies of the identity files):
    /// `Ok(true)` when the server accepted one.
    async fn with_agent(
        &mut self,
        socket: &Path,
        identities: &[Identity],
        identities_only: bool,
    ) -> Result<bool, SshError> {
        let mut agent = match AgentClient::connect_uds(socket).await {
            Ok(agent) => agent,
            Err(e) => {
                self.tried.push(format!(
                    "ssh-agent at {}: unreachable ({e})",
                    socket.display()
                ));
                return Ok(false);
            }
        };
        let ids = match agent.request_identities().await {
            Ok(ids) => ids,
            Err(e) => {
                self.tried
                    .push(format!("ssh-agent at {}: {e}", socket.display()));
                return Ok(false);
            }
        };
        let mut keys: Vec<PublicKey> = ids
            .into_iter()
            .filter_map(|id| match id {
                AgentIdentity::PublicKey { key, .. } => Some(key),
                AgentIdentity::Certificate { .. } => None,
            })
            .collect();
        if keys.is_empty() {
            self.tried.push("ssh-agent: no keys".to_owned());
        } else if identities_only {
            // OpenSSH `IdentitiesOnly`: only agent copies of the identity files.
            let allowed: Vec<PublicKey> =
                identities.iter().filter_map(Identity::public_key).collect();
            keys.retain(|k| allowed.iter().any(|a| a.key_data() == k.key_data()));
            if keys.is_empty() {
                self.tried.push(
                    "ssh-agent: no key matching the identity files (IdentitiesOnly)".to_owned(),
                );
            }
        }
        for key in keys {
            let fp = key.fingerprint(HashAlg::Sha256);
            let hash = self.rsa_hash(key.algorithm()).await;
            match self
                .handle
                .authenticate_publickey_with(self.user, key, hash, &mut agent)
                .await
            {
                Ok(r) if r.success() => return Ok(true),
                Ok(_) => self.tried.push(format!("ssh-agent key {fp}: rejected")),
                Err(e) => self.tried.push(format!("ssh-agent key {fp}: {e}")),
            }
            if self.handle.is_closed() {
                return Err(self.error(format!(
                    "the server closed the connection; tried {}",
                    self.tried.join("; ")
                )));
            }
        }
        Ok(false)
    }

    /// Offers each usable key file, its certificate first: `Ok(true)` when the server
    /// accepted one.
    async fn with_key_files(&mut self, identities: &[Identity]) -> Result<bool, SshError> {
        for identity in identities {
            let path = identity.path.display();
            let key = match &identity.key {
                Ok(key) => key.clone(),
                Err(message) => {
                    self.tried.push(format!("{path}: {message}"));
                    continue;
                }
            };
            let fp = key.public_key().fingerprint(HashAlg::Sha256);
            if let Some(cert) = &identity.cert {
                match self
                    .handle
                    .authenticate_openssh_cert(self.user, key.clone(), cert.clone())
                    .await
                {
                    Ok(r) if r.success() => return Ok(true),
                    Ok(_) => self
                        .tried
                        .push(format!("{path}-cert.pub ({fp}): certificate rejected")),
                    Err(e) => {
                        self.tried.push(format!("{path}-cert.pub ({fp}): {e}"));
                        return Err(self.broken_off());
                    }
                }
            }
            let hash = self.rsa_hash(key.algorithm()).await;
            match self
                .handle
                .authenticate_publickey(self.user, PrivateKeyWithHashAlg::new(key, hash))
                .await
            {
                Ok(r) if r.success() => return Ok(true),
                Ok(_) => self.tried.push(format!("{path} ({fp}): rejected")),
                Err(e) => {
                    self.tried.push(format!("{path} ({fp}): {e}"));
                    return Err(self.broken_off());
                }
            }
        }
        Ok(false)
    }

    /// RSA keys sign with the best hash the server accepts (`rsa-sha2-512/256`); OpenSSH ≥
    /// 8.8 refuses the SHA-1 default. Asked once per connection (it waits for the server's
    /// ext-info).
    async fn rsa_hash(&mut self, alg: Algorithm) -> Option<HashAlg> {
        if !alg.is_rsa() {
            return None;
        }
        if self.rsa_hash.is_none() {
            self.rsa_hash = Some(
                self.handle
                    .best_supported_rsa_hash()
                    .await
                    .ok()
                    .flatten()
                    .flatten(),
            );
        }
        self.rsa_hash.flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypted_key_errors_name_the_fix_and_never_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id");
        let status = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "s3cret", "-C", "", "-f"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
        let no_pass = load_key(&path, None).unwrap_err();
        assert!(no_pass.contains("CERTCTL_SSH_PASSPHRASE"), "{no_pass}");
        let wrong = load_key(&path, Some(&Secret::new(b"nope".to_vec()))).unwrap_err();
        assert!(wrong.contains("wrong CERTCTL_SSH_PASSPHRASE"), "{wrong}");
        let key = load_key(&path, Some(&Secret::new(b"s3cret".to_vec()))).unwrap();
        assert_eq!(key.algorithm(), Algorithm::Ed25519);
        let pass = Secret::new(b"s3cret".to_vec());
        let first = load_key_cached(&path, Some(&pass), false).unwrap();
        let again = load_key_cached(&path, Some(&pass), false).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "decrypted once per process");
        // The cache never lets a wrong (or missing) passphrase through.
        assert!(load_key_cached(&path, None, false).is_err());
        assert!(load_key_cached(&path, Some(&Secret::new(b"x".to_vec())), false).is_err());
        let missing = load_key(&dir.path().join("absent"), None).unwrap_err();
        assert!(missing.starts_with("cannot read"), "{missing}");
    }
}
