//! `certctl verify --prometheus FILE` against a real nginx, read back by the real Prometheus
//! text parser (Python's prometheus_client): per target whether the inventory's certificate and
//! chain are served, when the served one expires, how long the probe took, when verify ran, and
//! whether the endpoint answered at all — a stale certificate and an unreachable target both
//! show. The file is replaced atomically and leaves no temporary file.

use crate::support;

use support::edit;
use support::lab::{Lab, TargetOptions};
use support::prom::{self, value};

#[test]
fn prometheus_file_shows_served_stale_and_unreachable_targets() {
    let lab = Lab::start(TargetOptions::default());
    let down = support::free_addr(); // nothing listens there
    edit::copy_target(
        &lab.inventory,
        "web-down",
        &[(&lab.nginx.addr.to_string(), &down.to_string())],
    );
    let dir = lab.path("textfile");
    let file = dir.join("certctl.prom");
    let file_arg = file.display().to_string();

    // Before the deploy nginx serves the old certificate: web-1 is stale, web-down is down.
    let out = lab.certctl(&["verify", "--prometheus", &file_arg]);
    assert_eq!(out.code, 4, "{}", out.stderr);
    let samples = prom::parse(&file);
    let up = "certctl_endpoint_up";
    let matches = "certctl_certificate_served_matches";
    assert_eq!(value(&samples, up, "web-1"), Some(1.0));
    assert_eq!(value(&samples, matches, "web-1"), Some(0.0));
    assert_eq!(value(&samples, up, "web-down"), Some(0.0));
    assert_eq!(value(&samples, matches, "web-down"), Some(0.0));
    assert_eq!(
        value(
            &samples,
            "certctl_certificate_expires_in_seconds",
            "web-down"
        ),
        None,
        "no served certificate, no expiry series"
    );
    // Every family is a documented gauge with the four labels.
    for s in samples.iter().filter(|s| s.labels.contains_key("target")) {
        assert_eq!(s.kind, "gauge", "{s:?}");
        assert_eq!(s.family, s.name, "{s:?}");
        assert!(!s.help.is_empty(), "{s:?}");
        for l in ["target", "host", "connector", "certificate"] {
            assert!(s.labels.contains_key(l), "{s:?}");
        }
        assert_eq!(s.labels["connector"], "nginx");
        assert_eq!(s.labels["certificate"], "www");
    }
    assert!(samples.iter().all(|s| s.name.starts_with("certctl_")));

    // web-down shares web-1's files: deploy web-1 only.
    let out = lab.certctl(&["deploy", "--limit", "web-1"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64;
    let out = lab.certctl(&["verify", "--limit", "web-1", "--prometheus", &file_arg]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let samples = prom::parse(&file);
    assert_eq!(value(&samples, up, "web-1"), Some(1.0));
    assert_eq!(value(&samples, matches, "web-1"), Some(1.0));
    assert_eq!(
        value(&samples, "certctl_certificate_chain_matches", "web-1"),
        Some(1.0)
    );
    // The lab's new leaf is valid for 90 days from yesterday.
    let left = value(&samples, "certctl_certificate_expires_in_seconds", "web-1").unwrap();
    assert!(
        (88.0 * 86_400.0..=90.0 * 86_400.0).contains(&left),
        "{left}"
    );
    let duration = value(&samples, "certctl_probe_duration_seconds", "web-1").unwrap();
    assert!(duration > 0.0 && duration < 5.0, "{duration}");
    let at = value(&samples, "certctl_last_verify_timestamp_seconds", "web-1").unwrap();
    assert!(
        (before - 5.0..=before + 60.0).contains(&at),
        "{at} vs {before}"
    );
    let material = samples
        .iter()
        .find(|s| s.name == "certctl_inventory_certificate_expires_in_seconds")
        .unwrap();
    assert_eq!(material.labels.len(), 1);
    assert!((material.value - left).abs() < 120.0);

    assert_eq!(support::mode(&file), 0o644);
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["certctl.prom"], "no temporary file is left");
}

#[test]
fn verify_warns_about_the_inventorys_own_certificate_expiring() {
    // nginx serves the old certificate; the inventory's new one expires in 5 days.
    let lab = Lab::start(TargetOptions {
        new_expires_in_days: Some(5),
        ..TargetOptions::default()
    });
    let out = lab.certctl(&["verify", "--output", "json"]);
    assert_eq!(out.code, 4, "{}", out.stderr);
    let target = &out.json()["targets"][0];
    assert_eq!(target["status"], "mismatch");
    let error = target["error"].as_str().unwrap();
    assert!(
        error.contains("the inventory's certificate `www` itself expires in 4 day(s)")
            || error.contains("the inventory's certificate `www` itself expires in 5 day(s)"),
        "{error}"
    );
    // With a shorter window the material is not mentioned.
    let out = lab.certctl(&["verify", "--warn-days", "3", "--output", "json"]);
    assert!(
        !out.json()["targets"][0]["error"]
            .as_str()
            .unwrap()
            .contains("itself expires"),
        "{}",
        out.stdout
    );
}
