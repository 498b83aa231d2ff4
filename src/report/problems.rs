//! Invalid input reported once per problem, naming the targets it affects: one missing
//! certificate file used by 30 targets is one error with 30 names, not 30 errors.
//!
//! Pure grouping and wording; the command line collects the problems and prints them (or puts
//! them in the JSON document, `problems`).

use serde::Serialize;

/// One thing wrong with the input, and the targets it stops (empty: the whole run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub message: String,
    pub targets: Vec<String>,
}

impl Problem {
    /// A problem of the whole run (the inventory, a flag).
    pub fn run(message: impl Into<String>) -> Self {
        Problem {
            message: message.into(),
            targets: Vec::new(),
        }
    }
}

/// Names shown before "and N more".
const SHOWN: usize = 5;

/// Merges problems with the same message, keeping the order they were first seen in and the
/// targets in the order they were added (each once).
pub fn group(items: impl IntoIterator<Item = Problem>) -> Vec<Problem> {
    let mut out: Vec<Problem> = Vec::new();
    for item in items {
        match out.iter_mut().find(|p| p.message == item.message) {
            Some(seen) => {
                for t in item.targets {
                    if !seen.targets.contains(&t) {
                        seen.targets.push(t);
                    }
                }
            }
            None => out.push(item),
        }
    }
    out
}

/// `message`, then for a problem of several targets `\n  affects 30 targets: web-1, web-2,
/// web-3, web-4, web-5 and 25 more` (a single target is named in the message already or
/// here: `\n  affects target web-1`).
pub fn render(problem: &Problem) -> String {
    let mut text = super::tidy::tidy(&problem.message);
    let names: Vec<String> = problem
        .targets
        .iter()
        .map(|t| super::sanitize_line(t))
        .collect();
    match names.len() {
        0 => {}
        1 if text.contains(&format!("`{}`", names[0])) => {}
        1 => text.push_str(&format!("\n  affects target {}", names[0])),
        n => {
            let shown = names[..n.min(SHOWN)].join(", ");
            let more = if n > SHOWN {
                format!(" and {} more", n - SHOWN)
            } else {
                String::new()
            };
            text.push_str(&format!("\n  affects {n} targets: {shown}{more}"));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(message: &str, target: &str) -> Problem {
        Problem {
            message: message.into(),
            targets: vec![target.into()],
        }
    }

    #[test]
    fn one_problem_many_targets() {
        let items =
            (1..=30).map(|i| p("certificate `www`: a.crt: cannot read", &format!("web-{i}")));
        let grouped = group(items.chain([p("other", "db-1"), p("other", "db-1")]));
        assert_eq!(grouped.len(), 2);
        assert_eq!(grouped[0].targets.len(), 30);
        assert_eq!(grouped[1].targets, ["db-1"]);
        assert_eq!(
            render(&grouped[0]),
            "certificate `www`: a.crt: cannot read\n  affects 30 targets: web-1, web-2, web-3, web-4, web-5 and 25 more"
        );
        assert_eq!(render(&grouped[1]), "other\n  affects target db-1");
        assert_eq!(
            render(&p("target `db-1`: bad", "db-1")),
            "target `db-1`: bad"
        );
        assert_eq!(
            render(&Problem::run("no inventory (os error 2)")),
            "no inventory"
        );
    }
}
