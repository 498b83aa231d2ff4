//! `certctl status`'s human lines: per target its facts and served certificate, then one line
//! per file.

use crate::report::{self, RunReport};

/// Per target: facts and served certificate, then one line per file.
pub(super) fn status_lines(run: &RunReport) -> String {
    let mut out = String::new();
    for t in &run.targets {
        let facts = t
            .steps
            .iter()
            .rev()
            .find(|s| s.step == report::Step::Inspect)
            .and_then(|s| s.detail.clone())
            .unwrap_or_default();
        out.push_str(&format!("{} ({}): {facts}\n", t.name, t.host));
        for f in &t.files {
            out.push_str(&format!(
                "    {:9} {} {} mode {} owner {}:{}{}{}\n",
                f.role,
                f.path,
                f.action,
                f.mode,
                f.owner.as_deref().unwrap_or("-"),
                f.group.as_deref().unwrap_or("-"),
                f.old_fingerprint
                    .map(|fp| format!(" leaf {fp}"))
                    .unwrap_or_default(),
                f.not_after
                    .as_deref()
                    .map(|n| format!(" not-after {n}"))
                    .unwrap_or_default(),
            ));
        }
    }
    out
}
