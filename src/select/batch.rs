//! `--serial` (batch sizes) and `--max-fail` (the failure budget between batches): arithmetic
//! over counts, not over targets.

use std::fmt;
use std::str::FromStr;

use super::{SelectError, bad_value, parse_uint};

/// One item of `--serial`: a batch size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchSize {
    /// `N` targets (at least 1).
    Count(usize),
    /// `P%` of all targets in the run, rounded up, at least 1 (`1..=100`).
    Percent(u8),
}

impl BatchSize {
    /// This batch's size for a run of `total` targets (before capping at what is left).
    fn of(self, total: usize) -> usize {
        match self {
            BatchSize::Count(n) => n.max(1),
            BatchSize::Percent(p) => {
                let size = (total as u128 * u128::from(p)).div_ceil(100);
                usize::try_from(size).unwrap_or(usize::MAX).max(1)
            }
        }
    }
}

impl fmt::Display for BatchSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchSize::Count(n) => write!(f, "{n}"),
            BatchSize::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// `--serial N|P%[,…]`: how many targets are deployed per batch; a batch starts only when the
/// previous one has finished.
///
/// Each comma-separated item is the size of the next batch: `N` targets or `P%` of all targets
/// in the run (rounded up, at least 1). The last item repeats until every target is covered,
/// and the last batch holds whatever is left (Ansible's `serial`). `1,10%,100%` is a canary,
/// then a tenth of the fleet, then everything else. The default (no `--serial`) is one batch
/// of every target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialSpec {
    sizes: Vec<BatchSize>,
}

impl SerialSpec {
    /// The items, in order; never empty.
    pub fn sizes(&self) -> &[BatchSize] {
        &self.sizes
    }
}

impl Default for SerialSpec {
    /// One batch of everything (`100%`).
    fn default() -> Self {
        Self {
            sizes: vec![BatchSize::Percent(100)],
        }
    }
}

impl FromStr for SerialSpec {
    type Err = SelectError;

    /// Reads `N`, `P%` or a comma list of them, e.g. `1,10%,100%`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut sizes = Vec::new();
        for item in s.split(',').map(str::trim) {
            let size = match item.strip_suffix('%') {
                Some(p) => match parse_uint(p.trim()) {
                    Some(p @ 1..=100) => BatchSize::Percent(p as u8),
                    _ => {
                        return Err(bad_value(
                            "--serial",
                            s,
                            format!(
                                "`{item}`: a percentage must be a whole number from 1% to 100%"
                            ),
                        ));
                    }
                },
                None => match parse_uint(item).map(usize::try_from) {
                    Some(Ok(n @ 1..)) => BatchSize::Count(n),
                    _ => {
                        return Err(bad_value(
                            "--serial",
                            s,
                            format!(
                                "`{item}`: each item must be a batch size of at least 1 \
                                 (N or P%, e.g. 1,10%,100%)"
                            ),
                        ));
                    }
                },
            };
            sizes.push(size);
        }
        Ok(Self { sizes })
    }
}

impl fmt::Display for SerialSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, size) in self.sizes.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{size}")?;
        }
        Ok(())
    }
}

/// Batch sizes for a run of `total` targets, in order. They sum to `total`, every one is at
/// least 1, and `total == 0` gives no batch. With 20 targets, `1,50%` gives `[1, 10, 9]`.
pub fn batches(spec: &SerialSpec, total: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut left = total;
    let last = spec.sizes.len().saturating_sub(1);
    while left > 0 {
        let item = spec
            .sizes
            .get(out.len().min(last))
            .copied()
            .unwrap_or(BatchSize::Percent(100));
        let size = item.of(total).min(left);
        out.push(size);
        left -= size;
    }
    out
}

/// `--max-fail N|P%`: how many failed targets a run tolerates before it starts no new batch.
///
/// `N`: the budget is exceeded when MORE than N targets have failed. `P%`: when more than P%
/// of all targets in the run have failed. The default is `0`: any failure stops new batches.
/// Batches already running finish either way; targets never started are reported as skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxFail {
    /// Tolerate up to N failed targets.
    Count(usize),
    /// Tolerate up to P% (`0..=100`) of the run's targets failing.
    Percent(u8),
}

impl Default for MaxFail {
    /// `0`: stop at the first failure.
    fn default() -> Self {
        MaxFail::Count(0)
    }
}

impl FromStr for MaxFail {
    type Err = SelectError;

    /// Reads `N` or `P%`, e.g. `3` or `5%`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let v = s.trim();
        match v.strip_suffix('%') {
            Some(p) => match parse_uint(p.trim()) {
                Some(p @ 0..=100) => Ok(MaxFail::Percent(p as u8)),
                _ => Err(bad_value(
                    "--max-fail",
                    s,
                    "a percentage must be a whole number from 0% to 100%",
                )),
            },
            None => match parse_uint(v).map(usize::try_from) {
                Some(Ok(n)) => Ok(MaxFail::Count(n)),
                _ => Err(bad_value(
                    "--max-fail",
                    s,
                    "expected a number of targets (N) or a percentage (P%), e.g. 3 or 5%",
                )),
            },
        }
    }
}

impl fmt::Display for MaxFail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaxFail::Count(n) => write!(f, "{n}"),
            MaxFail::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// Whether `failed` failures out of a run of `total` targets exceed the `--max-fail` budget,
/// i.e. whether the run must start no new batch.
pub fn budget_exceeded(spec: &MaxFail, failed: usize, total: usize) -> bool {
    match *spec {
        MaxFail::Count(n) => failed > n,
        // failed / total > p / 100, in integers.
        MaxFail::Percent(p) => failed as u128 * 100 > u128::from(p) * total as u128,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_size_percent_rounds_up_and_is_at_least_one() {
        assert_eq!(BatchSize::Percent(10).of(25), 3);
        assert_eq!(BatchSize::Percent(1).of(5), 1);
        assert_eq!(BatchSize::Percent(1).of(0), 1);
        assert_eq!(BatchSize::Percent(100).of(7), 7);
    }
}
