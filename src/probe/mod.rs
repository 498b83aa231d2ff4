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
//!
//! # Probing one of several certificates
//!
//! nginx, apache and haproxy can hold an RSA and an ECDSA certificate for the same name and
//! show the one that suits what the client offers. By default the probe offers all that rustls
//! verifies, and the server shows the certificate it prefers. [`Offer`] (in
//! [`ProbeSpec::offer`], or passed to [`probe_once_offering`]) narrows the ClientHello so the
//! server must show one certificate in particular, or refuse the handshake:
//!
//! - `key: Some(kind)`: the `signature_algorithms` extension lists only that kind's schemes
//!   (RSA: RSA-PSS and PKCS#1 v1.5; ECDSA: P-256 and P-384; Ed25519), which is what a TLS 1.3
//!   server chooses its certificate by; and the TLS 1.2 cipher suites are only those for that
//!   kind (`ECDHE_RSA_*`, or `ECDHE_ECDSA_*` for ECDSA and Ed25519), which is what a TLS 1.2
//!   server chooses by. The verifier also refuses a handshake signed with a scheme outside the
//!   list, so a server that ignores the offer fails the probe instead of passing it.
//! - `version: Some(v)`: only TLS 1.2 or only TLS 1.3 (a server picks by each separately).
//!
//! ```
//! use certctl::material::KeyKind;
//! use certctl::probe::{Offer, TlsVersion};
//!
//! let rsa_on_tls12 = Offer::key(KeyKind::Rsa).on(TlsVersion::Tls12);
//! assert_eq!(rsa_on_tls12.to_string(), "RSA signatures only, TLS 1.2 only");
//! assert_eq!(Offer::default().to_string(), "everything");
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::material::{Fingerprint, KeyKind};

mod client;
mod connect;
mod served;
mod starttls;
mod verify;

pub use connect::{probe_once, probe_once_for, probe_once_offering};
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
    /// What the ClientHello offers: everything (the default), or only what shows one of
    /// several certificates (see the module docs).
    pub offer: Offer,
}

/// What a probe's ClientHello offers. The default offers everything (TLS 1.2 and 1.3, every
/// signature scheme and cipher suite the probe verifies); see the module docs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offer {
    /// Only the signature schemes (and TLS 1.2 cipher suites) of this kind of key.
    pub key: Option<KeyKind>,
    /// Only this TLS version.
    pub version: Option<TlsVersion>,
}

/// A TLS version a probe can be limited to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

impl Offer {
    /// Only what a server can sign with a key of `kind`, on either version.
    pub fn key(kind: KeyKind) -> Offer {
        Offer {
            key: Some(kind),
            version: None,
        }
    }

    /// This offer, on `version` only.
    pub fn on(self, version: TlsVersion) -> Offer {
        Offer {
            version: Some(version),
            ..self
        }
    }

    /// Whether this offers less than everything.
    pub fn is_restricted(&self) -> bool {
        *self != Offer::default()
    }
}

impl std::fmt::Display for Offer {
    /// For messages: `everything`, `ECDSA signatures only`, `TLS 1.3 only`, or both.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = self.key.map(|k| format!("{k} signatures only"));
        let version = self.version.map(|v| format!("{v} only"));
        match (key, version) {
            (None, None) => f.write_str("everything"),
            (Some(one), None) | (None, Some(one)) => f.write_str(&one),
            (Some(key), Some(version)) => write!(f, "{key}, {version}"),
        }
    }
}

impl std::fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TlsVersion::Tls12 => "TLS 1.2",
            TlsVersion::Tls13 => "TLS 1.3",
        })
    }
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
