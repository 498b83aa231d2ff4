//! The TLS probe: what certificate does the live endpoint serve? And the doubling backoff
//! that asks until the expected certificate is served `consecutive` times in a row.
//!
//! Owns: dialing, STARTTLS (smtp/imap/pop3), the rustls handshake with a verifier that accepts
//! any certificate but still checks the handshake signature, the schedule. Does not own what to
//! do on failure (that is [`crate::deploy`]).
//!
//! Layout: this file holds the types (what to probe, what was seen) and the schedule's
//! arithmetic; `connect.rs` runs one probe (dial, STARTTLS, handshake) with `starttls.rs` for
//! the plain-text protocols and `client.rs` for the rustls client configuration and its
//! verifier; `served.rs` reads the certificate chain a handshake saw and compares it with what
//! is expected; `verify.rs` is the retry loop (backoff, quick rechecks, `consecutive`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::material::Fingerprint;

mod client;
mod connect;
mod served;
mod starttls;
mod verify;

pub use connect::probe_once;
pub use verify::{verify, verify_with};

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
    /// Not-before of the served leaf, seconds since the Unix epoch (the policy gate's
    /// "older" check).
    pub not_before: i64,
    /// DNS names and IP addresses of the served leaf (the policy gate's "same names").
    pub sans: Vec<String>,
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

/// Why one probe saw no certificate.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The TCP connect did not finish in time. A server that accepts the connection and then
    /// stalls (STARTTLS or handshake) is a [`ProbeError::Failed`] saying which step stalled.
    #[error("{address}: connect timed out after {timeout:?}")]
    Timeout { address: String, timeout: Duration },
    #[error("{address}: {message}")]
    Failed { address: String, message: String },
}

impl Schedule {
    /// The waits before probes 2..=attempts: `backoff`, doubling, each capped at `max_backoff`.
    /// Defaults 3 / 1s / 16s give `[1s, 2s]`; `max_backoff == backoff` gives linear waits.
    pub fn waits(&self) -> Vec<Duration> {
        let mut waits = Vec::new();
        let mut next = self.backoff;
        for _ in 1..self.attempts {
            waits.push(next.min(self.max_backoff));
            next = next.saturating_mul(2);
        }
        waits
    }

    /// The longest a verification on this schedule can take with `timeout` per probe: every
    /// wait, every probe timing out, and one more probe for the quick rechecks (they start
    /// inside the first wait, so only the last of them can run past it).
    pub fn worst_case(&self, timeout: Duration) -> Duration {
        let attempts = self.attempts.max(1);
        let mut waits = Duration::ZERO;
        let mut next = self.backoff;
        for done in 1..attempts {
            if next >= self.max_backoff {
                // Every later wait is the cap: no need to walk a huge `attempts` one by one.
                let rest = self.max_backoff.saturating_mul(attempts - done);
                waits = waits.saturating_add(rest);
                break;
            }
            waits = waits.saturating_add(next);
            next = next.saturating_mul(2);
        }
        waits.saturating_add(timeout.saturating_mul(attempts.saturating_add(1)))
    }

    /// [`Schedule::worst_case`] when `consecutive` asks for more than one match: each
    /// scheduled probe may then be followed by one confirming it ([`CONFIRM_GAP`] later).
    pub fn worst_case_confirmed(&self, timeout: Duration, consecutive: u32) -> Duration {
        let base = self.worst_case(timeout);
        if consecutive <= 1 {
            return base;
        }
        let confirm = timeout.saturating_add(CONFIRM_GAP);
        base.saturating_add(confirm.saturating_mul(self.attempts.max(1)))
    }
}

impl ProbeSpec {
    /// When [`verify`] gives up however its probes go: the schedule's worst case, never more
    /// than [`crate::limits::MAX_VERIFY_DURATION`]. The engine may cap a target's verify by it.
    pub fn deadline(&self) -> Duration {
        self.schedule
            .worst_case_confirmed(self.timeout, self.consecutive)
            .min(crate::limits::MAX_VERIFY_DURATION)
    }
}

/// The first gap of the quick rechecks: when the first probe sees another certificate, it is
/// rechecked after 50 ms, then 100 ms, 200 ms… gaps, as long as they fit inside the first
/// `backoff` wait. These rechecks are extra: the schedule's probes (`attempts` of them, at
/// 0, `backoff`, 3×`backoff`…) run as before. An nginx reload returns before the new workers
/// serve (5–30 ms later here), so the first probe after it usually sees the old certificate.
pub const QUICK_RECHECK: Duration = Duration::from_millis(50);

/// The gap before a probe that confirms a match (while `consecutive` asks for more matches in
/// a row): long enough that the server's old workers, which answer for a few milliseconds
/// after a graceful reload, are gone; short enough not to slow a deploy down. Confirming
/// probes are extra, like the quick rechecks: they do not count against `attempts`.
pub const CONFIRM_GAP: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests;
