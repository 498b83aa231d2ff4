//! The TLS probe: what certificate does the live endpoint serve? And the doubling backoff
//! that asks until the expected certificate is served `consecutive` times in a row.
//!
//! Owns: dialing, STARTTLS (smtp/imap/pop3), the rustls handshake with a verifier that accepts
//! any certificate but still checks the handshake signature, the schedule. Does not own what to
//! do on failure (that is [`crate::deploy`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::material::Fingerprint;

/// Whether (and how) to upgrade a plain connection to TLS before the handshake.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartTls {
    #[default]
    None,
    Smtp,
    Imap,
    Pop3,
}

/// How to probe one endpoint and how long to keep trying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    /// `host:port` or `[v6]:port` to dial.
    pub address: String,
    /// Server name sent in the ClientHello (SNI); an IP literal sends none.
    pub sni: String,
    pub starttls: StartTls,
    pub schedule: Schedule,
    /// Connect + STARTTLS + handshake, per probe.
    pub timeout: Duration,
    /// Matching probes in a row needed to pass.
    pub consecutive: u32,
}

/// Probes in total, and the waits between them: backoff, 2×, 4×… each capped at `max_backoff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub attempts: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
}

/// What one handshake saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Served {
    pub leaf: Fingerprint,
    /// The certificates after the leaf, in the order served.
    pub chain: Vec<Fingerprint>,
    /// Subject of the served leaf, for messages.
    pub subject: String,
    /// Not-after of the served leaf, seconds since the Unix epoch.
    pub not_after: i64,
}

/// The certificate we expect to see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub leaf: Fingerprint,
    pub chain: Vec<Fingerprint>,
}

/// One probe in a verification, for the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    /// Milliseconds since the verification started.
    pub at_ms: u64,
    pub duration_ms: u64,
    /// Served leaf fingerprint, if the handshake completed.
    pub served: Option<Fingerprint>,
    pub matched: bool,
    /// Why it did not match (wrong leaf, wrong chain, handshake error…).
    pub detail: Option<String>,
}

/// The result of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub passed: bool,
    pub cancelled: bool,
    pub attempts: Vec<Attempt>,
    /// What the last successful handshake served.
    pub last_served: Option<Served>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{address}: connect timed out after {timeout:?}")]
    Timeout { address: String, timeout: Duration },
    #[error("{address}: {message}")]
    Failed { address: String, message: String },
}

impl Schedule {
    /// The waits before probes 2..=attempts.
    pub fn waits(&self) -> Vec<Duration> {
        todo!()
    }
}

/// One probe: dial, optional STARTTLS, handshake; what was served.
pub async fn probe_once(
    address: &str,
    sni: &str,
    starttls: StartTls,
    timeout: Duration,
) -> Result<Served, ProbeError> {
    todo!("{address}{sni}{starttls:?}{timeout:?}")
}

/// Probes on the schedule until `expected` is served `consecutive` times in a row, the
/// attempts run out, or `cancel` fires (honoured during waits and during a probe).
pub async fn verify(spec: &ProbeSpec, expected: &Expected, cancel: &CancellationToken) -> Verification {
    todo!("{spec:?}{expected:?}{cancel:?}")
}
