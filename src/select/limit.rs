//! `--limit`: which targets a run touches, by name, group or glob, with `!` exclusions and
//! `&` intersections. Does not own the glob syntax ([`super::glob`]).

use std::collections::{HashMap, HashSet};

use super::SelectError;
use super::glob::Glob;
use crate::inventory::Target;

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
