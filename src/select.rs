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

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;

use crate::inventory::Target;

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

// ---------------------------------------------------------------------------------------------
// --limit
// ---------------------------------------------------------------------------------------------

/// `--limit PATTERN`: the targets a run touches, in inventory order, each once.
///
/// `PATTERN` is a comma-separated list of terms. A term is
/// - a target name (`web-01`),
/// - a group name (`edge`): every target in that group,
/// - a glob (`web-*`, `db-?`, `[ab]*`, `[!x]*`, `[a-f]?`) matched against every target name
///   and every group name; a matching group contributes all its targets,
/// - any of the above prefixed with `!`: excluded;
/// - any of the above prefixed with `&`: an intersection (Ansible's `web:&staging`: the
///   targets of `web` that are also in `staging`).
///
/// Exclusions and intersections apply after all includes, whatever their position in the list.
/// If only exclusions or intersections are given, the selection starts from every target. No
/// `--limit` (`None`) selects every target. (Ansible's other forms — `:` as a separator, `all`,
/// `@FILE` — are read by the command line before this.)
///
/// A term never matches silently nothing: an include or exclude term that names no target and
/// no group is an error with a "did you mean" hint, an include term that matches only empty
/// groups is an error, and a list whose exclusions remove every included target is an error.
///
/// `groups` are the inventory's declared group names (groups a target lists are known too).
/// Cost is linear in targets + groups per term (hash lookups for plain names).
pub fn select<'a>(
    targets: &'a [Target],
    groups: &[String],
    limit: Option<&str>,
) -> Result<Vec<&'a Target>, SelectError> {
    let Some(limit) = limit else {
        return Ok(targets.iter().collect());
    };
    let terms = parse_limit(limit)?;
    let index = Index::new(targets, groups);

    let has_include = terms.iter().any(|t| !t.exclude && !t.intersect);
    let mut included = vec![!has_include; targets.len()];
    let mut excluded = vec![false; targets.len()];
    let mut intersections: Vec<Vec<bool>> = Vec::new();
    for term in &terms {
        let marks = if term.exclude {
            &mut excluded
        } else if term.intersect {
            intersections.push(vec![false; targets.len()]);
            intersections.last_mut().expect("just pushed")
        } else {
            &mut included
        };
        let found = index.mark(&term.pattern, marks);
        if !found.any_name {
            return Err(SelectError::NoMatch {
                term: term.raw.clone(),
                hint: index.suggest(term.pattern.source()).map(|s| {
                    if term.exclude {
                        format!("!{s}")
                    } else if term.intersect {
                        format!("&{s}")
                    } else {
                        s.to_owned()
                    }
                }),
            });
        }
        if !term.exclude && found.targets == 0 {
            return Err(SelectError::EmptyGroup {
                term: term.raw.clone(),
            });
        }
    }

    let selected: Vec<&Target> = targets
        .iter()
        .enumerate()
        .filter(|&(i, _)| included[i] && !excluded[i] && intersections.iter().all(|m| m[i]))
        .map(|(_, t)| t)
        .collect();
    if selected.is_empty() && !targets.is_empty() {
        let limit = limit.to_owned();
        let without_exclusions =
            (0..targets.len()).any(|i| included[i] && intersections.iter().all(|m| m[i]));
        return Err(if without_exclusions {
            SelectError::EmptySelection { limit }
        } else {
            SelectError::EmptyIntersection { limit }
        });
    }
    Ok(selected)
}

/// One `--limit` term as written, and what it means.
struct Term {
    raw: String,
    exclude: bool,
    /// `&term`: keep only targets this term also matches.
    intersect: bool,
    pattern: Pattern,
}

fn parse_limit(limit: &str) -> Result<Vec<Term>, SelectError> {
    let mut terms = Vec::new();
    // Empty items (`web,,db`, a trailing comma) are skipped; a limit with no term at all is not.
    for raw in limit.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (exclude, intersect, body) = match (raw.strip_prefix('!'), raw.strip_prefix('&')) {
            (Some(rest), _) => (true, false, rest.trim_start()),
            (_, Some(rest)) => (false, true, rest.trim_start()),
            _ => (false, false, raw),
        };
        if body.is_empty() {
            return Err(SelectError::BadPattern {
                term: raw.to_owned(),
                reason: format!(
                    "`{}` needs a target, group or glob after it",
                    if exclude { '!' } else { '&' }
                ),
            });
        }
        let pattern = Pattern::parse(body).map_err(|reason| SelectError::BadPattern {
            term: raw.to_owned(),
            reason,
        })?;
        terms.push(Term {
            raw: raw.to_owned(),
            exclude,
            intersect,
            pattern,
        });
    }
    if terms.is_empty() {
        return Err(SelectError::BadPattern {
            term: limit.to_owned(),
            reason: "no target, group or glob given".into(),
        });
    }
    Ok(terms)
}

/// Name and group lookups, built once per [`select`] call.
struct Index<'t> {
    names: Vec<&'t str>,
    by_name: HashMap<&'t str, usize>,
    /// Every known group (declared or listed by a target) -> member target indices.
    by_group: HashMap<&'t str, Vec<usize>>,
}

/// What one term found.
struct Found {
    /// The term named at least one target or group (possibly an empty group).
    any_name: bool,
    /// Targets newly or already marked by this term.
    targets: usize,
}

impl<'t> Index<'t> {
    fn new(targets: &'t [Target], groups: &'t [String]) -> Self {
        let mut by_name = HashMap::with_capacity(targets.len());
        let mut by_group: HashMap<&str, Vec<usize>> = HashMap::new();
        for g in groups {
            by_group.entry(g.as_str()).or_default();
        }
        for (i, t) in targets.iter().enumerate() {
            // Names are unique in a validated inventory; keep the first if not.
            by_name.entry(t.name.as_str()).or_insert(i);
            for g in &t.groups {
                by_group.entry(g.as_str()).or_default().push(i);
            }
        }
        Self {
            names: targets.iter().map(|t| t.name.as_str()).collect(),
            by_name,
            by_group,
        }
    }

    /// Sets `marks[i]` for every target `pattern` matches by name or through a group.
    fn mark(&self, pattern: &Pattern, marks: &mut [bool]) -> Found {
        let mut found = Found {
            any_name: false,
            targets: 0,
        };
        let mut hit = |i: usize, found: &mut Found| {
            marks[i] = true;
            found.targets += 1;
        };
        match pattern {
            Pattern::Exact(name) => {
                if let Some(&i) = self.by_name.get(name.as_str()) {
                    found.any_name = true;
                    hit(i, &mut found);
                }
                if let Some(members) = self.by_group.get(name.as_str()) {
                    found.any_name = true;
                    for &i in members {
                        hit(i, &mut found);
                    }
                }
            }
            Pattern::Glob(glob) => {
                for (i, name) in self.names.iter().enumerate() {
                    if glob.matches(name) {
                        found.any_name = true;
                        hit(i, &mut found);
                    }
                }
                for (group, members) in &self.by_group {
                    if glob.matches(group) {
                        found.any_name = true;
                        for &i in members {
                            hit(i, &mut found);
                        }
                    }
                }
            }
        }
        found
    }

    /// The closest target or group name, for a "did you mean". Deterministic: candidates are
    /// offered in inventory order, then groups sorted by name.
    fn suggest(&self, word: &str) -> Option<&'t str> {
        let mut groups: Vec<&'t str> = self.by_group.keys().copied().collect();
        groups.sort_unstable();
        let seen: HashSet<&str> = self.names.iter().copied().collect();
        let candidates = self
            .names
            .iter()
            .copied()
            .chain(groups.into_iter().filter(|g| !seen.contains(g)));
        crate::connector::did_you_mean(word, candidates)
    }
}

/// A `--limit` term without its `!`.
enum Pattern {
    Exact(String),
    Glob(Glob),
}

impl Pattern {
    /// A term containing `*`, `?` or `[` is a glob; anything else is a plain name.
    fn parse(s: &str) -> Result<Self, String> {
        if s.contains(['*', '?', '[']) {
            Glob::parse(s).map(Pattern::Glob)
        } else {
            Ok(Pattern::Exact(s.to_owned()))
        }
    }

    fn source(&self) -> &str {
        match self {
            Pattern::Exact(s) => s,
            Pattern::Glob(g) => &g.source,
        }
    }
}

/// A shell-style glob over a whole name: `*` any run of characters (also empty), `?` one
/// character, `[abc]` / `[a-z]` one of a set, `[!abc]` / `[^abc]` one not in it.
#[derive(Debug)]
pub(crate) struct Glob {
    source: String,
    tokens: Vec<Token>,
}

#[derive(Debug)]
enum Token {
    Literal(char),
    AnyOne,
    AnyRun,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Glob {
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        let chars: Vec<char> = s.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '*' => {
                    // `**` means the same as `*`; collapsing keeps matching linear.
                    if !matches!(tokens.last(), Some(Token::AnyRun)) {
                        tokens.push(Token::AnyRun);
                    }
                    i += 1;
                }
                '?' => {
                    tokens.push(Token::AnyOne);
                    i += 1;
                }
                '[' => {
                    let (token, next) = parse_class(&chars, i)?;
                    tokens.push(token);
                    i = next;
                }
                c => {
                    tokens.push(Token::Literal(c));
                    i += 1;
                }
            }
        }
        Ok(Self {
            source: s.to_owned(),
            tokens,
        })
    }

    /// Whether the whole of `name` matches. Every token but `*` consumes exactly one
    /// character, so backtracking to the last `*` alone is complete: O(len(name) × tokens)
    /// at worst, linear in practice.
    pub(crate) fn matches(&self, name: &str) -> bool {
        let name: Vec<char> = name.chars().collect();
        let (mut p, mut n) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while n < name.len() {
            match self.tokens.get(p) {
                Some(Token::AnyRun) => {
                    star = Some((p, n));
                    p += 1;
                }
                Some(t) if t.matches_one(name[n]) => {
                    p += 1;
                    n += 1;
                }
                _ => match star {
                    Some((sp, sn)) => {
                        p = sp + 1;
                        n = sn + 1;
                        star = Some((sp, sn + 1));
                    }
                    None => return false,
                },
            }
        }
        self.tokens[p..].iter().all(|t| matches!(t, Token::AnyRun))
    }
}

impl Token {
    fn matches_one(&self, c: char) -> bool {
        match self {
            Token::Literal(l) => *l == c,
            Token::AnyOne => true,
            Token::AnyRun => false,
            Token::Class { negated, ranges } => {
                ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != *negated
            }
        }
    }
}

/// Parses `[...]` starting at `chars[start] == '['`; returns the token and the index after `]`.
fn parse_class(chars: &[char], start: usize) -> Result<(Token, usize), String> {
    let mut i = start + 1;
    let negated = matches!(chars.get(i), Some('!' | '^'));
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let Some(&c) = chars.get(i) else {
            return Err("`[` is never closed with `]`".into());
        };
        // A `]` right after `[` or `[!` is a literal, as in the shell.
        if c == ']' && !first {
            break;
        }
        first = false;
        if chars.get(i + 1) == Some(&'-') && chars.get(i + 2).is_some_and(|&e| e != ']') {
            let end = chars[i + 2];
            if end < c {
                return Err(format!("range `{c}-{end}` is reversed"));
            }
            ranges.push((c, end));
            i += 3;
        } else {
            ranges.push((c, c));
            i += 1;
        }
    }
    Ok((Token::Class { negated, ranges }, i + 1))
}

// ---------------------------------------------------------------------------------------------
// --shard
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// --serial
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// --max-fail
// ---------------------------------------------------------------------------------------------

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

    fn glob(p: &str) -> Glob {
        Glob::parse(p).unwrap()
    }

    #[test]
    fn glob_star_and_question() {
        assert!(glob("web-*").matches("web-01"));
        assert!(glob("web-*").matches("web-"));
        assert!(!glob("web-*").matches("web"));
        assert!(!glob("web-*").matches("xweb-01"));
        assert!(glob("*-01").matches("web-01"));
        assert!(glob("*").matches(""));
        assert!(glob("db-?").matches("db-1"));
        assert!(!glob("db-?").matches("db-10"));
        assert!(!glob("db-?").matches("db-"));
        assert!(glob("a*b*c").matches("aXXbYYbZc"));
        assert!(!glob("a*b*c").matches("aXXbYYbZ"));
        assert!(glob("**x**").matches("abxcd"));
        assert!(glob("é?").matches("éü"), "characters, not bytes");
    }

    #[test]
    fn glob_classes() {
        assert!(glob("[ab]*").matches("alpha"));
        assert!(glob("[ab]*").matches("beta"));
        assert!(!glob("[ab]*").matches("gamma"));
        assert!(glob("web-[0-4]").matches("web-3"));
        assert!(!glob("web-[0-4]").matches("web-5"));
        assert!(glob("[!x]*").matches("web"));
        assert!(!glob("[!x]*").matches("xweb"));
        assert!(glob("[^x]*").matches("web"));
        assert!(glob("[]]").matches("]"));
        assert!(glob("[a-]").matches("-"));
        assert!(glob("[a-]").matches("a"));
    }

    #[test]
    fn glob_errors() {
        assert!(Glob::parse("web-[12").unwrap_err().contains("never closed"));
        assert!(Glob::parse("[z-a]").unwrap_err().contains("reversed"));
    }

    #[test]
    fn glob_worst_case_is_not_exponential() {
        // Classic backtracking blow-up input for naive recursive matchers.
        let g = glob("a*a*a*a*a*a*a*a*a*b");
        assert!(!g.matches(&"a".repeat(200)));
    }

    #[test]
    fn parse_uint_is_strict() {
        assert_eq!(parse_uint("12"), Some(12));
        assert_eq!(parse_uint("+1"), None);
        assert_eq!(parse_uint("-1"), None);
        assert_eq!(parse_uint(""), None);
        assert_eq!(parse_uint("1.5"), None);
    }

    #[test]
    fn batch_size_percent_rounds_up_and_is_at_least_one() {
        assert_eq!(BatchSize::Percent(10).of(25), 3);
        assert_eq!(BatchSize::Percent(1).of(5), 1);
        assert_eq!(BatchSize::Percent(1).of(0), 1);
        assert_eq!(BatchSize::Percent(100).of(7), 7);
    }
}
