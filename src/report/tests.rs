//! Unit tests of the report module: statuses, exit codes, the summary table, the printers and
//! the JSON report and its schema. Shared fixtures (`sample_target`, `fp`, …) are used by the
//! submodules' tests too.
use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::io::with_newline;
use super::*;
use crate::material::Fingerprint;

pub(crate) fn fp(first: [u8; 4]) -> Fingerprint {
    let mut bytes = [0x5A; 32];
    bytes[..4].copy_from_slice(&first);
    Fingerprint(bytes)
}

pub(crate) const OLD: [u8; 4] = [0x11, 0x22, 0x33, 0x44];
pub(crate) const NEW: [u8; 4] = [0xAB, 0xCD, 0xEF, 0x01];

pub(crate) fn step(step: Step, status: StepStatus, duration_ms: u64) -> StepReport {
    StepReport {
        step,
        status,
        duration_ms,
        detail: None,
    }
}

/// A plausible target report for `status`: served and error fields follow the status.
pub(crate) fn sample_target(name: &str, status: Status) -> TargetReport {
    let served = match status {
        Status::Deployed | Status::Unchanged | Status::Reloaded | Status::Ok => Some(fp(NEW)),
        Status::RolledBack | Status::Mismatch | Status::WouldChange => Some(fp(OLD)),
        _ => None,
    };
    let error = match status {
        Status::RolledBack => Some("reload failed; restored the previous files".to_string()),
        Status::RollbackFailed => {
            Some("verify failed: old certificate still served\nrestore failed: /etc/nginx/tls/www.crt: Permission denied".to_string())
        }
        Status::Unreachable => Some("connect: connection refused; nothing was changed".to_string()),
        Status::Skipped => Some("not started: interrupted".to_string()),
        Status::Mismatch => Some("serving 11:22:33:44…, expected AB:CD:EF:01…".to_string()),
        Status::Failed | Status::WouldFail => Some("preview: nginx -t exited 1".to_string()),
        _ => None,
    };
    TargetReport {
        name: name.to_string(),
        host: format!("{name}.example.test"),
        connector: "nginx".to_string(),
        status,
        old_fingerprint: Some(fp(OLD)),
        new_fingerprint: Some(fp(NEW)),
        served_fingerprint: served,
        files: Vec::new(),
        steps: Vec::new(),
        probes: Vec::new(),
        certificates: vec![CertificateReport {
            certificate: "www".to_string(),
            address: Some(format!("{name}.example.test:443")),
            sni: Some("www.example.test".to_string()),
            old_fingerprint: Some(fp(OLD)),
            new_fingerprint: Some(fp(NEW)),
            served_fingerprint: served,
            probes: Vec::new(),
        }],
        duration_ms: 1_234,
        error,
    }
}

pub(crate) fn run(command: &str, statuses: &[Status]) -> RunReport {
    let targets = statuses
        .iter()
        .enumerate()
        .map(|(i, &s)| sample_target(&format!("web-{}", i + 1), s))
        .collect();
    RunReport::new(
        command,
        false,
        SystemTime::UNIX_EPOCH,
        Duration::from_millis(5),
        targets,
    )
}

/// A full deploy target: files, steps with remote output, probes.
fn detailed_target() -> TargetReport {
    let mut target = sample_target("web-1", Status::RolledBack);
    target.files = vec![
        FileReport {
            role: "fullchain".into(),
            path: "/etc/nginx/tls/www.crt".into(),
            action: "replace".into(),
            via_symlink: None,
            in_place: None,
            repair: None,
            old_sha256: Some("aa".repeat(32)),
            new_sha256: "bb".repeat(32),
            mode: "0644".into(),
            owner: Some("0".into()),
            group: Some("0".into()),
            old_fingerprint: Some(fp(OLD)),
            new_fingerprint: Some(fp(NEW)),
            subject: Some("CN=www.example.test".into()),
            sans: vec!["www.example.test".into()],
            not_after: Some("2027-01-01T00:00:00Z".into()),
            chain_length: Some(1),
        },
        FileReport {
            role: "key".into(),
            path: "/etc/nginx/tls/www.key".into(),
            action: "create".into(),
            via_symlink: None,
            in_place: None,
            repair: None,
            old_sha256: None,
            new_sha256: "cc".repeat(32),
            mode: "0600".into(),
            owner: None,
            group: None,
            old_fingerprint: None,
            new_fingerprint: None,
            subject: None,
            sans: Vec::new(),
            not_after: None,
            chain_length: None,
        },
    ];
    let mut reload = step(Step::Reload, StepStatus::Failed, 80);
    reload.detail = Some("systemctl exited 1: \x1b[31mJob failed\x1b[0m\r\nsee journalctl".into());
    target.steps = vec![
        step(Step::Connect, StepStatus::Ok, 40),
        reload,
        step(Step::Rollback, StepStatus::Ok, 30),
    ];
    target.probes = vec![crate::probe::Attempt {
        at_ms: 0,
        duration_ms: 12,
        served: Some(fp(OLD)),
        matched: true,
        detail: None,
    }];
    target.certificates[0].probes = target.probes.clone();
    target
}

#[test]
fn exit_codes_follow_the_design() {
    let ok = [
        Status::Deployed,
        Status::Unchanged,
        Status::Reloaded,
        Status::WouldChange,
    ];
    assert_eq!(exit_code(&run("deploy", &ok)), EXIT_OK);
    assert_eq!(exit_code(&run("deploy", &[])), EXIT_OK);
    for bad in [
        Status::Failed,
        Status::RolledBack,
        Status::WouldFail,
        Status::Skipped,
        Status::Unreachable,
    ] {
        assert_eq!(
            exit_code(&run("deploy", &[Status::Deployed, bad])),
            EXIT_FAILED,
            "{bad:?}"
        );
    }
    let worst = [Status::Failed, Status::RollbackFailed, Status::Unreachable];
    assert_eq!(exit_code(&run("deploy", &worst)), EXIT_ROLLBACK_FAILED);

    assert_eq!(
        exit_code(&run("verify", &[Status::Ok, Status::Ok])),
        EXIT_OK
    );
    assert_eq!(
        exit_code(&run("verify", &[Status::Ok, Status::Mismatch])),
        EXIT_VERIFY_MISMATCH
    );
    assert_eq!(
        exit_code(&run("verify", &[Status::Unreachable])),
        EXIT_VERIFY_MISMATCH
    );
    assert_eq!(
        exit_code(&run(
            "status",
            &[Status::Ok, Status::Mismatch, Status::Failed]
        )),
        EXIT_VERIFY_MISMATCH,
        "status: a mismatch is verify's 4"
    );
    assert_eq!(
        exit_code(&run("status", &[Status::Ok, Status::Unreachable])),
        EXIT_FAILED
    );
    // Unreachable outside verify is an ordinary failure.
    assert_eq!(
        exit_code(&run("rollback", &[Status::Unreachable])),
        EXIT_FAILED
    );
}

#[test]
fn every_status_is_classified() {
    let failures: Vec<&str> = Status::ALL
        .iter()
        .filter(|s| s.is_failure())
        .map(|s| s.as_str())
        .collect();
    assert_eq!(
        failures,
        [
            "would-fail",
            "failed",
            "rolled-back",
            "rollback-failed",
            "skipped",
            "unreachable",
            "mismatch",
            "expiring"
        ]
    );
    // ALL is complete and in sync with serde's names.
    for status in Status::ALL {
        assert_eq!(
            serde_json::to_value(status).unwrap(),
            Value::from(status.as_str())
        );
    }
    let unique: std::collections::BTreeSet<_> = Status::ALL.iter().collect();
    assert_eq!(unique.len(), Status::ALL.len());
}

#[test]
fn run_report_counts_every_status_and_sanitises_remote_text() {
    let mut targets = vec![detailed_target(), sample_target("web-2", Status::Deployed)];
    targets[1].error = Some("\x1b]0;title\x07oops  \n".into());
    let started = SystemTime::UNIX_EPOCH + Duration::from_millis(1_780_000_000_999);
    let report = RunReport::new(
        "deploy",
        true,
        started,
        Duration::from_millis(2_500),
        targets,
    );

    assert_eq!(report.version, SCHEMA_VERSION);
    assert_eq!(report.started_at, "2026-05-28T20:26:40Z");
    assert_eq!(report.duration_ms, 2_500);
    assert_eq!(report.summary.total, 2);
    assert_eq!(report.summary.by_status.len(), Status::ALL.len());
    assert_eq!(report.summary.by_status["rolled-back"], 1);
    assert_eq!(report.summary.by_status["deployed"], 1);
    assert_eq!(report.summary.by_status["failed"], 0);
    assert_eq!(
        report.targets[0].steps[1].detail.as_deref(),
        Some("systemctl exited 1: Job failed\nsee journalctl")
    );
    assert_eq!(report.targets[1].error.as_deref(), Some("oops"));
}

pub(crate) fn snapshot_settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("../../tests/snapshots");
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings
}

/// A writer the tests can read back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

fn plain_events() -> Vec<Event> {
    let target = detailed_target();
    let mut events = Vec::new();
    for s in &target.steps {
        events.push(Event::StepStarted {
            target: "web-1".into(),
            step: s.step,
        });
        events.push(Event::StepFinished {
            target: "web-1".into(),
            step: s.clone(),
        });
    }
    let mut skipped = step(Step::Reload, StepStatus::Skipped, 0);
    skipped.detail = Some("file-watching server".into());
    events.push(Event::StepFinished {
        target: "web-2".into(),
        step: skipped,
    });
    events.push(Event::Warning {
        target: Some("web-2".into()),
        message: "certificate expires in 3 days".into(),
    });
    events.push(Event::Warning {
        target: None,
        message: "2 targets share host 10.0.0.1".into(),
    });
    events.push(Event::TargetFinished { report: target });
    events.push(Event::TargetFinished {
        report: sample_target("web-2", Status::Deployed),
    });
    events.push(Event::TargetFinished {
        report: sample_target("web-3", Status::RollbackFailed),
    });
    events
}

#[test]
fn plain_reporter_prints_one_line_per_step_and_target() {
    let out = Captured::default();
    let plain = PlainReporter::new(Box::new(out.clone()), 0);
    for event in plain_events() {
        plain.event(event);
    }
    let text = out.text();
    assert!(!text.contains('\u{1b}'), "no escape codes in plain output");
    snapshot_settings().bind(|| insta::assert_snapshot!("report__plain_reporter", text));
}

#[test]
fn plain_reporter_verbose_shows_starts_and_details() {
    let out = Captured::default();
    let plain = PlainReporter::new(Box::new(out.clone()), 1);
    let mut ok = step(Step::Inspect, StepStatus::Ok, 15);
    ok.detail = Some("2 files to replace".into());
    plain.event(Event::StepStarted {
        target: "web-1".into(),
        step: Step::Inspect,
    });
    plain.event(Event::StepFinished {
        target: "web-1".into(),
        step: ok,
    });
    assert_eq!(
        out.text(),
        "     inspect web-1: started\n     inspect web-1: ok (0.01s)\n             2 files to replace\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reporters_take_events_from_many_tasks_without_tearing_lines() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PlainReporter>();
    assert_send_sync::<LiveReporter>();

    let out = Captured::default();
    let plain: Arc<dyn Reporter> = Arc::new(PlainReporter::new(Box::new(out.clone()), 0));
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let plain = Arc::clone(&plain);
            tokio::spawn(async move {
                for s in [Step::Connect, Step::Lock, Step::Inspect] {
                    plain.event(Event::StepFinished {
                        target: format!("t{i}"),
                        step: step(s, StepStatus::Ok, 1),
                    });
                    tokio::task::yield_now().await;
                }
                plain.event(Event::TargetFinished {
                    report: sample_target(&format!("t{i}"), Status::Unchanged),
                });
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let text = out.text();
    assert_eq!(text.lines().count(), 32 * 4);
    for line in text.lines() {
        let ok = line.ends_with(": ok (0.00s)")
            || line.ends_with(": already serving AB:CD:EF:01… (1.23s)");
        assert!(ok, "torn line: {line:?}");
    }
}

#[test]
fn json_report_matches_snapshot() {
    let report = RunReport::new(
        "deploy",
        false,
        SystemTime::now(),
        Duration::from_millis(1_234),
        vec![detailed_target()],
    );
    let mut out = Vec::new();
    write_json(&report, &mut out).unwrap();
    let json = String::from_utf8(out).unwrap();
    assert!(json.ends_with("}\n"));
    let mut settings = snapshot_settings();
    settings.add_filter(
        r#""started_at": "[^"]+""#,
        r#""started_at": "[STARTED_AT]""#,
    );
    settings.add_filter(r#""duration_ms": \d+"#, r#""duration_ms": "[MS]""#);
    settings.bind(|| insta::assert_snapshot!("report__json", json));
}

fn schema() -> Value {
    serde_json::from_str(JSON_SCHEMA).expect("JSON_SCHEMA is valid JSON")
}

#[test]
fn json_report_validates_against_the_schema() {
    let schema = schema();
    let mut targets: Vec<TargetReport> = Status::ALL
        .iter()
        .map(|&s| sample_target(s.as_str(), s))
        .collect();
    targets.push(detailed_target());
    let report = RunReport::new(
        "deploy",
        true,
        SystemTime::now(),
        Duration::from_secs(3),
        targets,
    );
    let value = serde_json::to_value(&report).unwrap();
    schema::check::validate(&schema, &schema, &value, "$").unwrap();
    assert_eq!(
        schema["properties"]["version"]["enum"][0],
        Value::from(SCHEMA_VERSION)
    );
}

#[test]
fn schema_check_catches_drift() {
    let schema = schema();
    let mut value = serde_json::to_value(run("deploy", &[Status::Deployed])).unwrap();
    value["targets"][0]["surprise"] = Value::from(1);
    let err = schema::check::validate(&schema, &schema, &value, "$").unwrap_err();
    assert!(err.contains("surprise is not in the schema"), "{err}");

    let mut value = serde_json::to_value(run("deploy", &[Status::Deployed])).unwrap();
    value["targets"][0]["status"] = Value::from("exploded");
    assert!(schema::check::validate(&schema, &schema, &value, "$").is_err());

    let mut value = serde_json::to_value(run("deploy", &[Status::Deployed])).unwrap();
    value["summary"].as_object_mut().unwrap().remove("failed");
    assert!(schema::check::validate(&schema, &schema, &value, "$").is_err());
}

#[test]
fn schema_enums_list_every_variant() {
    let schema = schema();
    let enum_of = |def: &Value| -> Vec<String> {
        def["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let statuses = enum_of(&schema["$defs"]["status"]);
    let expected: Vec<String> = Status::ALL.iter().map(|s| s.as_str().to_string()).collect();
    assert_eq!(statuses, expected);
    let steps = enum_of(&schema["$defs"]["step"]["properties"]["step"]);
    let all_steps = [
        Step::Connect,
        Step::Lock,
        Step::Recover,
        Step::Inspect,
        Step::Stage,
        Step::Preview,
        Step::Backup,
        Step::Swap,
        Step::Test,
        Step::Reload,
        Step::Verify,
        Step::Rollback,
        Step::Cleanup,
    ];
    assert_eq!(steps, all_steps.map(|s| s.as_str().to_string()));
    let summary_required =
        enum_of(&serde_json::json!({ "enum": schema["$defs"]["summary"]["required"] }));
    assert_eq!(summary_required[0], "total");
    assert_eq!(summary_required[1..], expected[..]);
}

struct Failing(std::io::ErrorKind);

impl Write for Failing {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(self.0.into())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn write_json_treats_a_closed_pipe_as_success() {
    let report = run("deploy", &[Status::Deployed]);
    assert!(write_json(&report, &mut Failing(std::io::ErrorKind::BrokenPipe)).is_ok());
    let err = write_json(&report, &mut Failing(std::io::ErrorKind::StorageFull)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::StorageFull);
}

#[test]
fn with_newline_adds_exactly_one() {
    assert_eq!(with_newline("a"), "a\n");
    assert_eq!(with_newline("a\n"), "a\n");
}
