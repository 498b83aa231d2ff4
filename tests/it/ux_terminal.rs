//! Terminal and CI hygiene of the binary: colour only where it belongs (`--color`, `NO_COLOR`,
//! `CLICOLOR_FORCE`, `-v` logs into a pipe), `--quiet`, and the live view in a real pty versus
//! plain lines on `TERM=dumb`.

use crate::support;

use support::lab::{Lab, TargetOptions};
use support::offline::{Offline, certctl_env, certctl_in_pty};

const ESC: char = '\u{1b}';

fn verify_args(fleet: &Offline) -> Vec<String> {
    vec![
        "verify".into(),
        "-i".into(),
        fleet.inventory.display().to_string(),
    ]
}

fn run(fleet: &Offline, extra: &[&str], env: &[(&str, &str)]) -> support::lab::Output {
    let mut args = verify_args(fleet);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    certctl_env(
        fleet.dir.path(),
        &args,
        env,
        &["NO_COLOR", "CLICOLOR_FORCE", "CLICOLOR"],
    )
}

#[test]
fn verbose_logs_write_no_colour_codes_into_a_pipe() {
    // Issue 13 item 13: tracing's fmt layer coloured its level names into pipes and CI logs.
    let lab = Lab::start(TargetOptions::default());
    let args = [
        "deploy",
        "-i",
        lab.inventory.to_str().unwrap(),
        "--dry-run",
        "-vv",
    ];
    let out = certctl_env(
        lab.path("cwd").as_path(),
        &args,
        &[],
        &["NO_COLOR", "CLICOLOR_FORCE"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("DEBUG"), "-vv logs: {}", out.stderr);
    assert!(
        !out.stderr.contains(ESC),
        "no escape codes: {:?}",
        out.stderr
    );

    // Asked for, colour reaches the pipe (status words and level names alike).
    let mut forced = args.to_vec();
    forced.push("--color=always");
    let out = certctl_env(lab.path("cwd").as_path(), &forced, &[], &["NO_COLOR"]);
    assert!(
        out.stderr.contains("\u{1b}[32mwould-change"),
        "{:?}",
        out.stderr
    );
}

#[test]
fn colour_follows_the_flag_then_no_color_then_clicolor_force() {
    let fleet = Offline::new(1);
    let red = "\u{1b}[1;31m";

    let piped = run(&fleet, &[], &[]);
    assert_eq!(piped.code, 4, "{}", piped.stderr);
    assert!(!piped.stderr.contains(ESC), "a pipe: {:?}", piped.stderr);

    let always = run(&fleet, &["--color", "always"], &[("NO_COLOR", "1")]);
    assert!(
        always.stderr.contains(red),
        "the flag wins: {:?}",
        always.stderr
    );

    let forced = run(&fleet, &[], &[("CLICOLOR_FORCE", "1")]);
    assert!(forced.stderr.contains(red), "{:?}", forced.stderr);

    let both = run(&fleet, &[], &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]);
    assert!(
        !both.stderr.contains(ESC),
        "NO_COLOR wins: {:?}",
        both.stderr
    );

    let never = run(&fleet, &["--color=never"], &[("CLICOLOR_FORCE", "1")]);
    assert!(!never.stderr.contains(ESC), "{:?}", never.stderr);

    let bad = run(&fleet, &["--color", "sometimes"], &[]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
}

#[test]
fn quiet_prints_the_totals_and_the_errors_only() {
    let fleet = Offline::new(2);
    let out = run(&fleet, &["-q"], &[]);
    assert_eq!(out.code, 4, "{}", out.stderr);
    let mut lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(
        lines.remove(0),
        "2 targets: 2 unreachable",
        "{}",
        out.stderr
    );
    assert_eq!(lines.remove(0), "");
    assert!(lines[0].starts_with("web-1: "), "{}", out.stderr);
    assert!(lines[1].starts_with("web-2: "), "{}", out.stderr);
    assert_eq!(lines.len(), 2, "{}", out.stderr);

    let both = run(&fleet, &["-q", "-v"], &[]);
    assert_eq!(both.code, 2, "-q and -v conflict: {}", both.stderr);
}

#[test]
fn a_terminal_gets_the_live_view_and_a_dumb_terminal_plain_lines() {
    let fleet = Offline::new(1);
    let args = verify_args(&fleet);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    let (code, screen) = certctl_in_pty(fleet.dir.path(), &args, "xterm-256color");
    assert_eq!(code, 4, "{screen}");
    // The spinner line of the running target, drawn and redrawn with cursor controls.
    assert!(screen.contains("web-1: verify ("), "{screen:?}");
    assert!(screen.contains("\u{1b}[2K"), "clears lines: {screen:?}");
    assert!(
        screen.contains("\u{1b}[1;31munreachable\u{1b}[0m"),
        "coloured on a terminal: {screen:?}"
    );

    let (code, screen) = certctl_in_pty(fleet.dir.path(), &args, "dumb");
    assert_eq!(code, 4, "{screen}");
    assert!(!screen.contains(ESC), "no escape code at all: {screen:?}");
    let lines: Vec<&str> = screen.lines().map(|l| l.trim_end_matches('\r')).collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("      failed web-1 verify: ")),
        "one plain line per step: {screen:?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with(" unreachable web-1: ")),
        "{screen:?}"
    );
}
