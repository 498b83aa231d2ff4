//! A JSON report (or several, merged) rendered for CI: a Markdown table for
//! `$GITHUB_STEP_SUMMARY` and a JUnit XML file for GitLab's `artifacts:reports:junit` (one
//! test case per target). Pure: JSON value in, text out.

use std::fmt::Write as _;

use serde_json::Value;

use super::Status;
use super::sanitize::sanitize_line;
use super::tidy::short_fingerprints;

/// Whether a target's status counts as a success for this command.
fn success(command: &str, status: Status) -> bool {
    !status.is_failure() || (command == "rollback" && status == Status::RolledBack)
}

fn status_of(target: &Value) -> Option<Status> {
    target["status"].as_str().and_then(Status::parse)
}

fn short(fp: &Value) -> String {
    fp.as_str()
        .map_or_else(|| "-".to_string(), short_fingerprints)
}

fn seconds(ms: &Value) -> String {
    let ms = ms.as_u64().unwrap_or(0);
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// `certctl deploy: 3 targets: 2 deployed, 1 rolled-back`.
fn headline(doc: &Value) -> String {
    let command = doc["command"].as_str().unwrap_or("?");
    let dry = if doc["dry_run"].as_bool() == Some(true) {
        " --dry-run"
    } else {
        ""
    };
    let counts: Vec<String> = Status::ALL
        .iter()
        .filter_map(|s| {
            let n = doc["summary"][s.as_str()].as_u64().unwrap_or(0);
            (n > 0).then(|| format!("{n} {}", s.as_str()))
        })
        .collect();
    let total = doc["summary"]["total"].as_u64().unwrap_or(0);
    let mut line = format!("certctl {command}{dry}: {total} target(s)");
    if !counts.is_empty() {
        let _ = write!(line, ": {}", counts.join(", "));
    }
    line
}

/// A Markdown cell: one line, `|` and `<` escaped (GitHub renders HTML), fingerprints short.
fn cell(text: &str) -> String {
    short_fingerprints(&sanitize_line(text).replace("\\n", " ").replace("\\t", " "))
        .replace('|', "\\|")
        .replace('<', "&lt;")
}

/// `### certctl deploy: …` then one table row per target, each marked ✅, ❌ or ⏭️ (skipped).
pub fn markdown(doc: &Value) -> String {
    let command = doc["command"].as_str().unwrap_or("");
    let mut out = format!("### {}\n\n", headline(doc));
    let targets = doc["targets"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if !targets.is_empty() {
        out.push_str("| | target | status | old → new | served | time | error |\n");
        out.push_str("|---|---|---|---|---|---:|---|\n");
    }
    for t in targets {
        let status = status_of(t);
        let mark = match status {
            Some(s) if success(command, s) => "✅",
            Some(Status::Skipped) => "⏭️",
            _ => "❌",
        };
        let _ = writeln!(
            out,
            "| {mark} | {} | {} | {} → {} | {} | {}s | {} |",
            cell(t["name"].as_str().unwrap_or("")),
            cell(t["status"].as_str().unwrap_or("")),
            short(&t["old_fingerprint"]),
            short(&t["new_fingerprint"]),
            short(&t["served_fingerprint"]),
            seconds(&t["duration_ms"]),
            cell(t["error"].as_str().unwrap_or("")),
        );
    }
    for p in doc["problems"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "\n**error:** {}",
            cell(p["message"].as_str().unwrap_or(""))
        );
    }
    out
}

fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 allows no other control characters, even escaped.
            c if c.is_control() && !matches!(c, '\n' | '\t') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML: one `<testcase>` per target (`classname` `certctl.COMMAND`), a `<failure>` with
/// the target's error for every failed target, `<skipped>` for skipped ones; problems of an
/// invalid run are one failed test case named `input`.
pub fn junit(doc: &Value) -> String {
    let command = doc["command"].as_str().unwrap_or("certctl");
    let targets = doc["targets"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let problems = doc["problems"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let mut cases = String::new();
    let (mut failures, mut skipped) = (0, 0);
    for t in targets {
        let name = xml(&sanitize_line(t["name"].as_str().unwrap_or("")));
        let _ = write!(
            cases,
            "    <testcase classname=\"certctl.{}\" name=\"{name}\" time=\"{}\"",
            xml(command),
            seconds(&t["duration_ms"])
        );
        let status = status_of(t);
        let word = xml(t["status"].as_str().unwrap_or("unknown"));
        let error = xml(&super::sanitize(
            t["error"].as_str().unwrap_or("").as_bytes(),
        ));
        match status {
            Some(s) if success(command, s) => cases.push_str("/>\n"),
            Some(Status::Skipped) => {
                skipped += 1;
                let _ = writeln!(
                    cases,
                    ">\n      <skipped message=\"{error}\"/>\n    </testcase>"
                );
            }
            _ => {
                failures += 1;
                let _ = writeln!(
                    cases,
                    ">\n      <failure type=\"{word}\" message=\"{word}\">{error}</failure>\n    </testcase>"
                );
            }
        }
    }
    if !problems.is_empty() {
        failures += 1;
        let text: Vec<String> = problems
            .iter()
            .map(|p| xml(p["message"].as_str().unwrap_or("")))
            .collect();
        let _ = writeln!(
            cases,
            "    <testcase classname=\"certctl.{}\" name=\"input\" time=\"0.000\">\n      <failure type=\"invalid-input\" message=\"invalid input\">{}</failure>\n    </testcase>",
            xml(command),
            text.join("\n")
        );
    }
    let tests = targets.len() + usize::from(!problems.is_empty());
    let name = xml(&headline(doc));
    let time = seconds(&doc["duration_ms"]);
    let stamp = xml(doc["started_at"].as_str().unwrap_or(""));
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <testsuites name=\"certctl\" tests=\"{tests}\" failures=\"{failures}\" skipped=\"{skipped}\" time=\"{time}\">\n\
         \x20 <testsuite name=\"{name}\" tests=\"{tests}\" failures=\"{failures}\" skipped=\"{skipped}\" time=\"{time}\" timestamp=\"{stamp}\">\n\
         {cases}\
         \x20 </testsuite>\n\
         </testsuites>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        let fp = |b: &str| [b; 32].join(":");
        serde_json::json!({
            "version": 1, "command": "deploy", "dry_run": false,
            "started_at": "2026-12-01T10:00:00Z", "duration_ms": 2500,
            "summary": {"total": 3, "deployed": 1, "rolled-back": 1, "skipped": 1},
            "targets": [
                {"name": "web-1", "status": "deployed", "old_fingerprint": fp("11"),
                 "new_fingerprint": fp("AB"), "served_fingerprint": fp("AB"), "duration_ms": 1200,
                 "error": null},
                {"name": "web-2", "status": "rolled-back", "old_fingerprint": fp("11"),
                 "new_fingerprint": fp("AB"), "served_fingerprint": fp("11"), "duration_ms": 3050,
                 "error": "reload failed: nginx: [emerg] <bad> | \"quoted\"\nrestored the previous files"},
                {"name": "web-3", "status": "skipped", "old_fingerprint": null,
                 "new_fingerprint": fp("AB"), "served_fingerprint": null, "duration_ms": 0,
                 "error": "not started: --max-fail 0 reached"}
            ],
            "problems": []
        })
    }

    fn settings() -> insta::Settings {
        let mut settings = insta::Settings::clone_current();
        settings.set_snapshot_path("../../tests/snapshots");
        settings.set_prepend_module_to_snapshot(false);
        settings.set_omit_expression(true);
        settings
    }

    #[test]
    fn markdown_table_for_the_step_summary() {
        let text = markdown(&doc());
        settings().bind(|| insta::assert_snapshot!("report__markdown", text));
    }

    #[test]
    fn junit_for_gitlab() {
        let text = junit(&doc());
        assert!(
            text.contains("tests=\"3\" failures=\"1\" skipped=\"1\""),
            "{text}"
        );
        assert!(!text.contains("<bad>"), "escaped: {text}");
        settings().bind(|| insta::assert_snapshot!("report__junit", text));
    }
}
