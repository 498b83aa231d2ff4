//! `certctl verify` exit codes against a real nginx: 0 when the inventory's certificate is
//! served, 4 when another one is, or when the served one expires within --warn-days.

use crate::support;

use support::lab::{Lab, TargetOptions};

#[test]
fn verify_exit_codes_follow_what_is_served() {
    let lab = Lab::start(TargetOptions::default());
    // Before the deploy nginx serves the old certificate: mismatch, exit 4.
    let out = lab.certctl(&["verify", "--output", "json"]);
    assert_eq!(out.code, 4, "{}", out.stderr);
    let target = &out.json()["targets"][0];
    assert_eq!(target["status"], "mismatch");
    assert_eq!(target["served_fingerprint"], lab.old.fingerprint.as_str());

    assert_eq!(lab.certctl(&["deploy"]).code, 0);
    let out = lab.certctl(&["verify", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["targets"][0]["status"], "ok");
    assert_eq!(out.json()["summary"]["ok"], 1);
}

#[test]
fn verify_reports_a_soon_expiring_certificate() {
    let lab = Lab::start(TargetOptions {
        new_expires_in_days: Some(5),
        ..TargetOptions::default()
    });
    // The 5-day certificate replaces a 90-day one: the policy gate's downgrade check wants
    // --force.
    let out = lab.certctl(&["deploy", "--force"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("warning: certificate `www`"),
        "deploy warns: {}",
        out.stderr
    );

    let out = lab.certctl(&["verify", "--output", "json"]);
    assert_eq!(out.code, 4, "{}", out.stderr);
    let target = &out.json()["targets"][0];
    assert_eq!(target["status"], "expiring");
    assert!(
        target["error"]
            .as_str()
            .unwrap()
            .contains("expires in 4 day(s)")
            || target["error"]
                .as_str()
                .unwrap()
                .contains("expires in 5 day(s)"),
        "{target}"
    );

    let out = lab.certctl(&["verify", "--warn-days", "0"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn verify_reports_unreachable_when_nothing_listens() {
    let lab = Lab::start(TargetOptions::default());
    let addr = support::free_addr(); // nothing listens there
    let inventory = std::fs::read_to_string(&lab.inventory).unwrap();
    let inventory = inventory.replace(&lab.nginx.addr.to_string(), &addr.to_string());
    std::fs::write(&lab.inventory, inventory).unwrap();
    let out = lab.certctl(&["verify", "--output", "json"]);
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert_eq!(out.json()["targets"][0]["status"], "unreachable");
}
