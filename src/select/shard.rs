//! `--shard I/N`: a stable partition of the selected targets by a hash of their names.

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;

use super::{SelectError, bad_value, parse_uint};
use crate::inventory::Target;

/// `--shard I/N`: this runner's share of the selected targets, for fanning one deploy out over
/// N CI jobs.
///
/// A target is in shard `I` when `shard_hash(name) % N == I - 1`. The hash depends on the
/// target's name only, so the partition is the same on every run and machine and does not
/// change when the inventory is reordered or other targets are added or removed. Shards
/// `1/N` … `N/N` together cover every selected target exactly once. A shard can be empty when
/// N is large compared with the selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    index: u32,
    count: u32,
}

impl Shard {
    /// Shard `index` of `count`, 1-based; `1 <= index <= count`.
    pub fn new(index: u32, count: u32) -> Result<Self, SelectError> {
        Self::checked(index, count, &format!("{index}/{count}"))
    }

    /// `new`, with `value` (what the operator wrote) in the error.
    fn checked(index: u32, count: u32, value: &str) -> Result<Self, SelectError> {
        if count == 0 {
            return Err(bad_value("--shard", value, "N must be at least 1"));
        }
        if index == 0 || index > count {
            return Err(bad_value(
                "--shard",
                value,
                format!("I must be between 1 and {count} (shards are numbered from 1)"),
            ));
        }
        Ok(Self { index, count })
    }

    /// `I`, 1-based.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// `N`.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Whether the target called `name` belongs to this shard.
    pub fn contains(&self, name: &str) -> bool {
        shard_hash(name) % u64::from(self.count) == u64::from(self.index - 1)
    }
}

impl FromStr for Shard {
    type Err = SelectError;

    /// Reads `I/N`, e.g. `2/5`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let v = s.trim();
        let Some((i, n)) = v.split_once('/') else {
            return Err(bad_value("--shard", s, "expected I/N, e.g. 1/4"));
        };
        let (Some(i), Some(n)) = (parse_uint(i.trim()), parse_uint(n.trim())) else {
            return Err(bad_value(
                "--shard",
                s,
                "expected I/N with whole numbers, e.g. 1/4",
            ));
        };
        let (Ok(i), Ok(n)) = (u32::try_from(i), u32::try_from(n)) else {
            return Err(bad_value("--shard", s, "number too large"));
        };
        Shard::checked(i, n, s)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The stable hash behind `--shard`: the first 8 bytes of SHA-256 of the target name (UTF-8),
/// read big-endian. The same in every version of certctl, on every machine; an operator can
/// reproduce it with `printf %s NAME | sha256sum | cut -c1-16` (hex) then `mod N`, plus one.
pub fn shard_hash(name: &str) -> u64 {
    let digest = sha2::Sha256::digest(name.as_bytes());
    let mut prefix = [0u8; 8];
    prefix.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(prefix)
}

/// The targets of `selected` that belong to `shard`, in their given order.
pub fn shard<'a>(selected: impl IntoIterator<Item = &'a Target>, shard: Shard) -> Vec<&'a Target> {
    selected
        .into_iter()
        .filter(|t| shard.contains(&t.name))
        .collect()
}
