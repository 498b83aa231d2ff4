//! Monitoring output of `certctl verify`: what each target serves, as metrics.
//!
//! - [`Observation`]: one target's probe result, with the inventory's certificate beside it.
//! - [`prometheus`]: the node_exporter textfile format, written atomically.

pub mod prometheus;

/// What `verify` saw at one target, for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub target: String,
    pub host: String,
    pub connector: String,
    /// The inventory's certificate name.
    pub certificate: String,
    /// False when the target has no TLS endpoint to probe (only the material is reported).
    pub probed: bool,
    /// A handshake completed (some certificate was served).
    pub reachable: bool,
    /// The served leaf is the inventory's.
    pub leaf_matches: bool,
    /// The served chain is the inventory's.
    pub chain_matches: bool,
    /// Not-after of the served leaf (Unix seconds).
    pub served_not_after: Option<i64>,
    /// Duration of the last probe, in milliseconds.
    pub probe_duration_ms: Option<u64>,
    /// Not-after of the inventory's leaf (Unix seconds).
    pub material_not_after: i64,
}
