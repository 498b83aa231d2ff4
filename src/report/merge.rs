//! `certctl report merge`: the JSON reports of a sharded run (`--shard 1/3` … `3/3`, one per
//! CI job) combined into one document with one exit code, so a last CI job can gate on the
//! whole fleet.
//!
//! Works on the documents as JSON values (the current schema version, any producer version): targets
//! concatenated in the order given, `summary` recounted, `problems` concatenated,
//! `started_at` the earliest, `duration_ms` the longest (shards run side by side).

use serde_json::{Map, Value};

use super::{SCHEMA_VERSION, Status};

/// Merges `(name, document)` pairs; the error names the file and what is wrong.
pub fn merge(documents: &[(String, Value)]) -> Result<Value, String> {
    let Some((first_name, first)) = documents.first() else {
        return Err("report merge: give at least one JSON report".into());
    };
    let command = first["command"]
        .as_str()
        .ok_or_else(|| format!("{first_name}: not a certctl JSON report (no `command`)"))?;
    let dry_run = first["dry_run"].as_bool().unwrap_or(false);
    let mut targets: Vec<Value> = Vec::new();
    let mut seen: Vec<(String, &str)> = Vec::new();
    let mut problems: Vec<Value> = Vec::new();
    let mut started_at: Option<&str> = None;
    let mut duration_ms = 0u64;
    for (name, doc) in documents {
        if doc["version"].as_u64() != Some(u64::from(SCHEMA_VERSION)) {
            return Err(format!(
                "{name}: report version {} is not {SCHEMA_VERSION}",
                doc["version"]
            ));
        }
        if doc["command"].as_str() != Some(command) {
            return Err(format!(
                "{name}: a `{}` report cannot be merged with `{command}` reports ({first_name})",
                doc["command"].as_str().unwrap_or("?")
            ));
        }
        if doc["dry_run"].as_bool().unwrap_or(false) != dry_run {
            return Err(format!(
                "{name}: mixes a dry run with a real run ({first_name})"
            ));
        }
        let list = doc["targets"]
            .as_array()
            .ok_or_else(|| format!("{name}: no `targets` array"))?;
        for t in list {
            let target = t["name"].as_str().unwrap_or("");
            if let Some((other, _)) = seen.iter().find(|(_, t)| *t == target) {
                return Err(format!(
                    "target `{target}` is in {other} and in {name}: the shards overlap"
                ));
            }
            if t["status"].as_str().and_then(Status::parse).is_none() {
                return Err(format!(
                    "{name}: target `{target}` has an unknown status {}",
                    t["status"]
                ));
            }
            seen.push((name.clone(), target));
            targets.push(t.clone());
        }
        if let Some(p) = doc["problems"].as_array() {
            problems.extend(p.iter().cloned());
        }
        if let Some(at) = doc["started_at"].as_str() {
            // RFC 3339 in UTC with whole seconds: text order is time order.
            started_at = Some(started_at.map_or(at, |s| s.min(at)));
        }
        duration_ms = duration_ms.max(doc["duration_ms"].as_u64().unwrap_or(0));
    }
    let mut summary = Map::new();
    summary.insert("total".into(), Value::from(targets.len()));
    for status in Status::ALL {
        let n = targets
            .iter()
            .filter(|t| t["status"] == status.as_str())
            .count();
        summary.insert(status.as_str().into(), Value::from(n));
    }
    Ok(serde_json::json!({
        "version": SCHEMA_VERSION,
        "command": command,
        "dry_run": dry_run,
        "started_at": started_at.unwrap_or(""),
        "duration_ms": duration_ms,
        "summary": summary,
        "targets": targets,
        "problems": problems,
    }))
}

/// The exit code of a merged document, by the rules of [`super::exit_code`]; `2` when any
/// shard stopped at invalid input (it has `problems`).
pub fn exit_code(merged: &Value) -> u8 {
    if merged["problems"].as_array().is_some_and(|p| !p.is_empty()) {
        return super::EXIT_USAGE;
    }
    let command = merged["command"].as_str().unwrap_or("");
    let statuses = merged["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["status"].as_str().and_then(Status::parse));
    super::exit_code_of(command, statuses)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(command: &str, targets: &[(&str, &str)], started: &str, ms: u64) -> Value {
        serde_json::json!({
            "version": SCHEMA_VERSION, "command": command, "dry_run": false, "started_at": started,
            "duration_ms": ms, "summary": {},
            "targets": targets.iter().map(|(n, s)| serde_json::json!({"name": n, "status": s})).collect::<Vec<_>>(),
            "problems": [],
        })
    }

    #[test]
    fn shards_become_one_report_with_one_exit_code() {
        let a = doc(
            "deploy",
            &[("web-1", "deployed")],
            "2026-01-01T00:00:05Z",
            900,
        );
        let b = doc(
            "deploy",
            &[("web-2", "rolled-back"), ("web-3", "unchanged")],
            "2026-01-01T00:00:02Z",
            1200,
        );
        let merged = merge(&[("a.json".into(), a.clone()), ("b.json".into(), b)]).unwrap();
        assert_eq!(merged["summary"]["total"], 3);
        assert_eq!(merged["summary"]["rolled-back"], 1);
        assert_eq!(merged["summary"]["failed"], 0);
        assert_eq!(merged["started_at"], "2026-01-01T00:00:02Z");
        assert_eq!(merged["duration_ms"], 1200);
        assert_eq!(exit_code(&merged), super::super::EXIT_FAILED);
        let merged = merge(&[("a.json".into(), a.clone())]).unwrap();
        assert_eq!(exit_code(&merged), super::super::EXIT_OK);
        let c = doc(
            "deploy",
            &[("web-4", "rollback-failed")],
            "2026-01-01T00:00:02Z",
            1,
        );
        let merged = merge(&[("a.json".into(), a.clone()), ("c.json".into(), c)]).unwrap();
        assert_eq!(exit_code(&merged), super::super::EXIT_ROLLBACK_FAILED);
    }

    #[test]
    fn refuses_mixed_or_overlapping_reports() {
        let a = doc(
            "deploy",
            &[("web-1", "deployed")],
            "2026-01-01T00:00:00Z",
            1,
        );
        let v = doc("verify", &[("web-2", "ok")], "2026-01-01T00:00:00Z", 1);
        let err = merge(&[("a".into(), a.clone()), ("v".into(), v)]).unwrap_err();
        assert!(err.contains("cannot be merged"), "{err}");
        let err = merge(&[("a".into(), a.clone()), ("a2".into(), a.clone())]).unwrap_err();
        assert_eq!(err, "target `web-1` is in a and in a2: the shards overlap");
        let bad = doc("deploy", &[("web-9", "exploded")], "", 0);
        assert!(
            merge(&[("x".into(), bad)])
                .unwrap_err()
                .contains("unknown status")
        );
        assert!(merge(&[]).is_err());
    }
}
