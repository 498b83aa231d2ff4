//! The host-key check russh calls during every key exchange (targets and jump hops alike):
//! a plain key is checked against the server's known_hosts files ([`super::known_hosts`]),
//! recorded on first use only with `--accept-new-host-keys`; a host certificate is checked
//! against the `@cert-authority` lines that apply to the host. Every refusal is a precise
//! [`SshErrorKind`] with the offered fingerprint, never a bare `false`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use russh::client;
use russh::keys::{HashAlg, PublicKey, PublicKeyOrCertificate};

use super::connect::Server;
use super::known_hosts::{self, HostKeyProblem};
use super::{SshError, SshErrorKind};

/// The handler's error: russh's own, or our precise refusal of the host key.
#[derive(Debug)]
pub(super) enum HandlerError {
    Russh(russh::Error),
    Refused(Box<SshError>),
}

impl From<russh::Error> for HandlerError {
    fn from(e: russh::Error) -> Self {
        Self::Russh(e)
    }
}

/// Checks the server's host key against known_hosts (see [`known_hosts`]).
#[derive(Clone)]
pub(super) struct Verifier {
    server: Server,
    accept_new: bool,
    /// The offered key's fingerprint, for the session to report.
    fingerprint: Arc<Mutex<String>>,
}

impl Verifier {
    pub(super) fn new(server: Server, accept_new: bool, fingerprint: &Arc<Mutex<String>>) -> Self {
        Verifier {
            server,
            accept_new,
            fingerprint: fingerprint.clone(),
        }
    }
}

impl client::Handler for Verifier {
    type Error = HandlerError;

    async fn check_server_key(
        &mut self,
        offered: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        match offered {
            PublicKeyOrCertificate::PublicKey { key, .. } => self.check_key(key),
            PublicKeyOrCertificate::Certificate(cert) => self.check_certificate(cert),
        }
    }
}

impl Verifier {
    fn refuse(&self, kind: SshErrorKind) -> HandlerError {
        HandlerError::Refused(Box::new(self.server.endpoint.error(kind)))
    }

    fn files(&self) -> Vec<&Path> {
        std::iter::once(self.server.known_hosts.as_path())
            .chain(self.server.known_hosts_extra.iter().map(PathBuf::as_path))
            .collect()
    }

    /// Remembers the offered key's fingerprint for [`super::Session::host_key_fingerprint`].
    fn record(&self, key: &PublicKey) -> String {
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        if let Ok(mut slot) = self.fingerprint.lock() {
            slot.clone_from(&fingerprint);
        }
        fingerprint
    }

    /// A plain host key: listed (and not revoked) in one of the files, or recorded now when
    /// new keys may be trusted on first use.
    fn check_key(&self, key: &PublicKey) -> Result<bool, HandlerError> {
        let fingerprint = self.record(key);
        let files = self.files();
        let (host, port) = (&self.server.endpoint.host, self.server.endpoint.port);
        let (file, problem) = match known_hosts::check_files(&files, host, port, key) {
            Ok(()) => return Ok(true),
            Err(found) => found,
        };
        let path = files[file].to_path_buf();
        if self.accept_new
            && matches!(
                problem,
                HostKeyProblem::FileMissing | HostKeyProblem::Unknown
            )
        {
            return match known_hosts::append(&self.server.known_hosts, host, port, key) {
                Ok(()) => {
                    tracing::warn!(%host, port, %fingerprint, path = %path.display(), "trusted a new host key on first use and recorded it");
                    if let Some(notify) = known_hosts::ON_RECORDED.get() {
                        notify(&known_hosts::permanently_added(host, port, key));
                    }
                    Ok(true)
                }
                Err(e) => Err(self.refuse(SshErrorKind::Connect {
                    message: format!(
                        "cannot record the new host key {fingerprint} in {}: {e}",
                        path.display()
                    ),
                })),
            };
        }
        Err(self.refuse(self.problem(problem, path, fingerprint, key)))
    }

    /// What a known_hosts problem with the offered `key` is, as an error.
    fn problem(
        &self,
        problem: HostKeyProblem,
        path: PathBuf,
        fingerprint: String,
        key: &PublicKey,
    ) -> SshErrorKind {
        let (host, port) = (&self.server.endpoint.host, self.server.endpoint.port);
        let line = || known_hosts::entry_line(host, port, key);
        match problem {
            HostKeyProblem::FileMissing => SshErrorKind::KnownHostsMissing {
                path,
                fingerprint,
                line: line(),
            },
            HostKeyProblem::Unknown
                if self
                    .files()
                    .iter()
                    .any(|f| known_hosts::has_cert_authority(f, host, port)) =>
            {
                SshErrorKind::CertAuthorityOnly {
                    path,
                    fingerprint,
                    line: line(),
                }
            }
            HostKeyProblem::Unknown => SshErrorKind::UnknownHost {
                path,
                fingerprint,
                line: line(),
            },
            HostKeyProblem::Changed { line } => SshErrorKind::HostKeyChanged {
                path,
                known_line: line,
                fingerprint,
            },
            HostKeyProblem::Revoked { line } => SshErrorKind::HostKeyRevoked {
                path,
                known_line: line,
                fingerprint,
            },
            HostKeyProblem::Unreadable { message } => SshErrorKind::Connect {
                message: format!("cannot read known_hosts {}: {message}", path.display()),
            },
        }
    }

    /// An OpenSSH host certificate (offered only when a `@cert-authority` line applies to
    /// the host, see `connect.rs`'s `client_config`), checked as OpenSSH does: a host
    /// certificate, signed by one of those CAs, within its validity period, naming this host
    /// among its principals, with no critical option; neither its key nor the CA `@revoked`.
    fn check_certificate(&self, cert: &russh::keys::Certificate) -> Result<bool, HandlerError> {
        let key = PublicKey::from(cert.public_key().clone());
        let fingerprint = self.record(&key);
        let refuse = |message: String| {
            self.refuse(SshErrorKind::HostCertificate {
                fingerprint: fingerprint.clone(),
                message,
            })
        };
        let (host, port) = (&self.server.endpoint.host, self.server.endpoint.port);
        let ca_key = PublicKey::from(cert.signature_key().clone());
        for file in self.files() {
            for revoked in [&key, &ca_key] {
                if let Some(line) = known_hosts::revoked_line(file, host, port, revoked) {
                    return Err(self.refuse(SshErrorKind::HostKeyRevoked {
                        path: file.to_path_buf(),
                        known_line: line,
                        fingerprint: revoked.fingerprint(HashAlg::Sha256).to_string(),
                    }));
                }
            }
        }
        let cas: Vec<russh::keys::ssh_key::Fingerprint> = self
            .files()
            .into_iter()
            .flat_map(|f| known_hosts::cert_authorities(f, host, port))
            .map(|(ca, _)| ca.fingerprint(HashAlg::Sha256))
            .collect();
        let ca_fp = ca_key.fingerprint(HashAlg::Sha256);
        if cert.cert_type() != russh::keys::ssh_key::certificate::CertType::Host {
            return Err(refuse(
                "it is a user certificate, not a host certificate".into(),
            ));
        }
        if !cas.contains(&ca_fp) {
            return Err(refuse(format!(
                "it is signed by {ca_fp}, which no @cert-authority line for this host names"
            )));
        }
        if cert.validate(&cas).is_err() {
            return Err(refuse(format!(
                "its signature by {ca_fp} does not verify, or it is outside its validity period"
            )));
        }
        if !cert
            .valid_principals()
            .iter()
            .any(|p| p.eq_ignore_ascii_case(host))
        {
            return Err(refuse(format!(
                "it is not valid for `{host}` (principals: {})",
                cert.valid_principals().join(", ")
            )));
        }
        if !cert.critical_options().is_empty() {
            return Err(refuse(
                "it carries critical options certctl does not know".into(),
            ));
        }
        Ok(true)
    }
}
