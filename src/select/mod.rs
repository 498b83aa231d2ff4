//! Which targets a fleet run touches, and in what steps: `--limit`, `--shard`, `--serial` and
//! `--max-fail`.
//!
//! Everything here is pure arithmetic over target names and group names: no I/O, no clock, no
//! randomness. The CLI parses the flags with these functions; the deploy loop asks [`batches`]
//! how to cut the selection into batches and [`budget_exceeded`] whether to start the next one.
//! Running the batches is not done here.
//!
//! Order of application: `--limit` picks targets from the inventory (inventory order kept),
//! `--shard` keeps this runner's share of that selection, `--serial` cuts the share into
//! batches, and `--max-fail` is counted against the share's size.
//!
//! Layout: `limit.rs` (`--limit` terms, names and groups), `glob.rs` (the patterns a term may
//! use), `shard.rs` (`--shard`), `batch.rs` (`--serial` and `--max-fail`); this file holds the
//! error they share and re-exports the public API.

mod batch;
mod glob;
mod limit;
mod shard;

pub use batch::{BatchSize, MaxFail, SerialSpec, batches, budget_exceeded};
pub use limit::select;
pub use shard::{Shard, shard, shard_hash};

/// A bad `--limit`, `--shard`, `--serial` or `--max-fail`. Every variant is a usage error
/// (exit code 2): nothing has been touched when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    /// A `--limit` term that cannot be read (empty, `!` alone, unclosed `[`).
    #[error("--limit: bad pattern `{term}`: {reason}")]
    BadPattern { term: String, reason: String },
    /// A `--limit` term (include or `!exclude`) that names no target and no group.
    #[error("--limit: `{term}` matches no target or group{}", hint_suffix(.hint))]
    NoMatch { term: String, hint: Option<String> },
    /// An include term that only matches groups nobody is a member of.
    #[error("--limit: `{term}` matches only groups with no targets in them")]
    EmptyGroup { term: String },
    /// Every term matched something, but the exclusions removed every included target.
    #[error("--limit `{limit}` selects no target: every included target is also excluded")]
    EmptySelection { limit: String },
    /// Every term matched something, but no included target is in every `&` term.
    #[error("--limit `{limit}` selects no target: no included target matches every `&` term")]
    EmptyIntersection { limit: String },
    /// A `--shard`, `--serial` or `--max-fail` value that does not parse.
    #[error("{flag} `{value}`: {reason}")]
    BadValue {
        flag: &'static str,
        value: String,
        reason: String,
    },
}

fn hint_suffix(hint: &Option<String>) -> String {
    hint.as_ref()
        .map(|h| format!(" (did you mean `{h}`?)"))
        .unwrap_or_default()
}

fn bad_value(flag: &'static str, value: &str, reason: impl Into<String>) -> SelectError {
    SelectError::BadValue {
        flag,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// A non-empty string of ASCII digits (no sign, no spaces) as a number.
fn parse_uint(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_uint_is_strict() {
        assert_eq!(parse_uint("12"), Some(12));
        assert_eq!(parse_uint("+1"), None);
        assert_eq!(parse_uint("-1"), None);
        assert_eq!(parse_uint(""), None);
        assert_eq!(parse_uint("1.5"), None);
    }
}
