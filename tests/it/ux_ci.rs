//! The CI examples stay right: GitLab's nightly schedule runs only `verify` (never the deploy),
//! the sharded deploy `needs` one canary job, a final job merges the reports, every report is
//! turned into a step summary (GitHub) or a JUnit report (GitLab), and every `certctl` command
//! line in them parses with this binary's own command line.

use std::path::Path;

use clap::Parser as _;
use serde_json::Value;

fn load(name: &str) -> (String, Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/ci")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let value: Value = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    (text, value)
}

/// A job with its `extends` merged in (GitLab: the job's own keys win).
fn resolved(doc: &Value, job: &str) -> serde_json::Map<String, Value> {
    let own = doc[job].as_object().unwrap().clone();
    let parents: Vec<String> = match &own.get("extends") {
        Some(Value::String(p)) => vec![p.clone()],
        Some(Value::Array(ps)) => ps.iter().map(|p| p.as_str().unwrap().to_string()).collect(),
        _ => Vec::new(),
    };
    let mut merged = serde_json::Map::new();
    for p in parents {
        merged.extend(resolved(doc, &p));
    }
    merged.extend(own);
    merged
}

/// Whether GitLab would add `job` to a pipeline from `source` on branch `branch` (the default
/// branch is `main`). Only the rule forms the example uses are understood.
fn runs(job: &serde_json::Map<String, Value>, source: &str, branch: &str) -> bool {
    for rule in job["rules"].as_array().unwrap() {
        let cond = rule["if"].as_str().unwrap();
        let matched = if let Some(value) = cond.strip_prefix("$CI_PIPELINE_SOURCE == ") {
            value.trim_matches('"') == source
        } else if cond == "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH" {
            branch == "main" && source != "merge_request_event"
        } else {
            panic!("rule not understood: {cond}")
        };
        if matched {
            return rule.get("when").and_then(Value::as_str) != Some("never");
        }
    }
    false
}

#[test]
fn gitlab_nightly_runs_verify_only_and_the_shards_wait_for_one_canary() {
    let (_, doc) = load("gitlab-ci.yml");
    let jobs = ["preview", "canary", "deploy", "gate", "verify"];
    let running = |source: &str, branch: &str| -> Vec<&str> {
        jobs.iter()
            .copied()
            .filter(|j| runs(&resolved(&doc, j), source, branch))
            .collect()
    };
    assert_eq!(
        running("schedule", "main"),
        ["verify"],
        "nightly: verify only"
    );
    assert_eq!(running("push", "main"), ["canary", "deploy", "gate"]);
    assert_eq!(running("merge_request_event", "feature"), ["preview"]);
    assert_eq!(running("push", "feature"), Vec::<&str>::new());

    let deploy = resolved(&doc, "deploy");
    assert_eq!(deploy["needs"], serde_json::json!(["canary"]));
    assert_eq!(deploy["parallel"], 3);
    assert!(
        resolved(&doc, "canary").get("parallel").is_none(),
        "one canary"
    );
    for job in ["preview", "canary", "deploy", "verify"] {
        let job = resolved(&doc, job);
        assert!(job["artifacts"]["reports"]["junit"].is_string(), "{job:?}");
    }
    let gate = resolved(&doc, "gate");
    assert!(
        gate["script"][0]
            .as_str()
            .unwrap()
            .starts_with("certctl report merge "),
        "{gate:?}"
    );
}

#[test]
fn github_shards_need_one_canary_and_every_report_is_summarised() {
    let (text, doc) = load("github-actions.yml");
    let jobs = &doc["jobs"];
    assert_eq!(jobs["deploy"]["needs"], "canary");
    assert!(jobs["canary"].get("strategy").is_none(), "one canary");
    assert!(jobs["deploy"]["strategy"]["matrix"]["shard"].is_array());
    assert_eq!(
        jobs["gate"]["needs"],
        serde_json::json!(["canary", "deploy"])
    );
    assert!(jobs["gate"]["if"].as_str().unwrap().contains("always()"));
    for job in ["preview", "canary", "deploy", "gate"] {
        let steps = jobs[job]["steps"].as_array().unwrap();
        assert!(
            steps.iter().any(|s| s["run"]
                .as_str()
                .is_some_and(|r| r.contains("certctl report markdown")
                    && r.contains(">> \"$GITHUB_STEP_SUMMARY\""))),
            "{job} writes a step summary"
        );
    }
    assert!(text.contains("certctl report merge reports/*/*.json > fleet.json"));
}

/// Shell words of one command line (quotes removed), up to a redirection.
fn words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut started = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                started = true;
            }
            (None, ' ' | '\t') => {
                if started || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                started = false;
            }
            (None, '>') => break,
            (None, c) => word.push(c),
        }
    }
    if started || !word.is_empty() {
        words.push(word);
    }
    words
}

#[test]
fn every_certctl_command_in_the_ci_examples_parses() {
    let mut seen = 0;
    for name in ["github-actions.yml", "gitlab-ci.yml"] {
        let (text, _) = load(name);
        let text = text.replace("\\\n", " ");
        for line in text.lines() {
            let line = line
                .trim()
                .trim_start_matches("- ")
                .trim_start_matches("run: ");
            if !line.starts_with("certctl ") {
                continue;
            }
            let line = line
                .replace("${{ matrix.shard }}", "1/3")
                .replace("$CI_NODE_INDEX/$CI_NODE_TOTAL", "1/3");
            let argv = words(&line);
            match certctl::cli::Cli::try_parse_from(&argv) {
                Ok(_) => {}
                Err(e) if e.kind() == clap::error::ErrorKind::DisplayVersion => {}
                Err(e) => panic!("{name}: `{line}` does not parse: {e}"),
            }
            seen += 1;
        }
    }
    assert!(seen >= 14, "certctl command lines checked: {seen}");
}
