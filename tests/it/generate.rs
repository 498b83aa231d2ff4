//! What the binary says about itself: `-V` / `--version` (build facts and contract versions),
//! `certctl completions SHELL` and `certctl man`, run as the built binary.

use std::process::{Command, Output};

fn certctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_certctl"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run certctl")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("utf-8 stdout")
}

/// The commit `build.rs` should have recorded: this checkout's, or `unknown` outside git.
fn expected_commit() -> String {
    let manifest = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(manifest)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let top = git(&["rev-parse", "--show-toplevel"]);
    let ours =
        top.is_some_and(|t| std::fs::canonicalize(t).ok() == std::fs::canonicalize(manifest).ok());
    match std::env::var("CERTCTL_BUILD_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ if ours => git(&["rev-parse", "--short=12", "HEAD"]).expect("git rev-parse HEAD"),
        _ => "unknown".to_string(),
    }
}

#[test]
fn short_version_is_one_line() {
    let out = stdout(&certctl(&["-V"]));
    assert_eq!(out, format!("certctl {}\n", env!("CARGO_PKG_VERSION")));
}

#[test]
fn long_version_names_commit_date_target_and_contract_versions() {
    let out = stdout(&certctl(&["--version"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6, "{out}");
    assert_eq!(lines[0], format!("certctl {}", env!("CARGO_PKG_VERSION")));
    assert_eq!(
        lines[1],
        format!("commit:             {}", expected_commit())
    );
    let date = lines[2]
        .strip_prefix("build date:         ")
        .unwrap_or_else(|| panic!("{out}"));
    let digits: Vec<&str> = date.split('-').collect();
    assert!(
        digits.len() == 3
            && [4, 2, 2]
                .iter()
                .zip(&digits)
                .all(|(n, d)| d.len() == *n && d.bytes().all(|b| b.is_ascii_digit())),
        "build date {date:?} is not YYYY-MM-DD"
    );
    assert!(lines[3].starts_with("target:             x86_64-"), "{out}");
    assert_eq!(lines[4], "inventory contract: v1");
    assert_eq!(
        lines[5],
        format!("JSON report schema: {}", certctl::report::SCHEMA_VERSION)
    );
}

#[test]
fn completions_for_each_shell_name_every_command() {
    let markers = [
        ("bash", "complete -F _certctl"),
        ("zsh", "#compdef certctl"),
        ("fish", "complete -c certctl"),
        (
            "powershell",
            "Register-ArgumentCompleter -Native -CommandName 'certctl'",
        ),
    ];
    for (shell, marker) in markers {
        let script = stdout(&certctl(&["completions", shell]));
        assert!(script.contains(marker), "{shell}: no {marker:?}");
        for command in [
            "deploy",
            "verify",
            "check",
            "rollback",
            "status",
            "connectors",
            "man",
        ] {
            assert!(script.contains(command), "{shell}: no {command}");
        }
        for flag in ["dry-run", "inventory", "accept-new-host-keys"] {
            assert!(script.contains(flag), "{shell}: no {flag}");
        }
    }
    let out = certctl(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("possible values"));
}

/// The bash script loads in a real bash and completes a command and a flag.
#[test]
fn bash_completion_completes_commands_and_flags() {
    let script = stdout(&certctl(&["completions", "bash"]));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("certctl.bash");
    std::fs::write(&path, script).unwrap();
    let probe = r#"
        source "$1"
        COMP_WORDS=(certctl dep); COMP_CWORD=1; _certctl certctl dep certctl
        echo "commands: ${COMPREPLY[*]}"
        COMP_WORDS=(certctl deploy --dry); COMP_CWORD=2; _certctl certctl --dry deploy
        echo "flags: ${COMPREPLY[*]}"
    "#;
    let out = Command::new("bash")
        .args(["-c", probe, "bash"])
        .arg(&path)
        .output()
        .expect("run bash");
    let text = stdout(&out);
    assert!(text.contains("commands: deploy\n"), "{text}");
    assert!(text.contains("flags: --dry-run\n"), "{text}");
}

#[test]
fn man_page_has_each_section_once_and_the_exit_status_list() {
    let page = stdout(&certctl(&["man"]));
    assert!(
        page.contains(&format!(
            ".TH certctl 1 {} \"certctl {}\" \"certctl manual\"\n",
            certctl::version::BUILD_DATE,
            env!("CARGO_PKG_VERSION")
        )),
        "{page}"
    );
    assert_eq!(
        page.matches(".ds Aq").count(),
        2,
        "one roff preamble (2 lines)"
    );
    for section in [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "OPTIONS",
        "SUBCOMMANDS",
        "EXIT STATUS",
        "ENVIRONMENT",
        "FILES",
        "VERSION",
    ] {
        let heading = if section.contains(' ') {
            format!(".SH \"{section}\"\n")
        } else {
            format!(".SH {section}\n")
        };
        assert_eq!(page.matches(&heading).count(), 1, "{heading:?} in\n{page}");
    }
    for code in ["0", "1", "2", "3", "4", "130"] {
        assert!(
            page.contains(&format!(".TP\n\\fB{code}\\fR\n")),
            "exit {code}"
        );
    }
    for command in [
        "deploy",
        "verify",
        "check",
        "rollback",
        "status",
        "connectors",
    ] {
        assert!(
            page.contains(&format!("certctl\\-{command}(1)")),
            "{command}"
        );
    }
    assert!(
        !page.contains("certctl\\-help(1)"),
        "no page for clap's help"
    );
}

/// `--out-dir` writes a page for every page referenced, so no SEE-ALSO-style link dangles.
#[test]
fn man_out_dir_writes_every_referenced_page() {
    let dir = tempfile::tempdir().unwrap();
    let out = certctl(&["man", "--out-dir", dir.path().to_str().unwrap()]);
    stdout(&out);
    let mut pages: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    pages.sort();
    for expected in ["certctl.1", "certctl-deploy.1", "certctl-connectors-show.1"] {
        assert!(
            pages.iter().any(|p| p == expected),
            "{expected} in {pages:?}"
        );
    }
    for page in &pages {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
        let name = page.trim_end_matches(".1");
        assert!(text.contains(&format!(".TH {name} 1 ")), "{page}");
        for reference in text.split("certctl\\-").skip(1) {
            let Some((rest, _)) = reference.split_once("(1)") else {
                continue;
            };
            if rest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'-' || b == b'\\')
            {
                let file = format!("certctl-{}.1", rest.replace("\\-", "-"));
                assert!(pages.contains(&file), "{page} refers to missing {file}");
            }
        }
    }
}

/// Rust ignores SIGPIPE, so a write to a closed pipe fails with EPIPE; certctl must treat it as
/// success (`certctl completions bash | head`), not panic.
#[test]
fn closed_stdout_is_not_a_panic() {
    for args in [&["completions", "bash"][..], &["man"][..]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_certctl"))
            .args(args)
            .env("RUST_BACKTRACE", "0")
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("run certctl");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
