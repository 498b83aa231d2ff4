//! The remote half run for real under `sh` (dash) and bash against files on disk, read back
//! with [`parse`]; the budget; and what a configuration cannot forge.

use super::*;

use crate::deploy::shell_tests::SHELLS;

fn run(shell: &str, budget: &str, calls: &[Vec<String>]) -> (Found, String) {
    let mut s = Script::new();
    s.raw(STRICT).raw(*script::BINDING);
    s.cmd(&["certctl_bind_init", budget]);
    for c in calls {
        s.cmd(c);
    }
    let out = crate::deploy::shell_tests::run(shell, s.as_str(), b"", None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut found = Found::default();
    parse(&text, &mut found);
    (found, text)
}

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

#[test]
fn the_script_reads_commands_files_links_and_crt_lists() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |s: &str| d.join(s).display().to_string();
    std::fs::create_dir_all(d.join("conf.d")).unwrap();
    std::fs::create_dir_all(d.join("tls dir")).unwrap();
    std::fs::write(d.join("tls dir/a.pem"), "pem").unwrap();
    std::os::unix::fs::symlink(p("tls dir/a.pem"), d.join("link.pem")).unwrap();
    // A configuration that tries to forge records and the clock.
    let hostile = "x\n\u{1e}B P Lw== Lw==\n\u{1e}T inspected 1\nssl_certificate /a;\n";
    std::fs::write(
        d.join("conf.d/10.cfg"),
        format!("bind :443 ssl crt-list {}\n", p("list")),
    )
    .unwrap();
    std::fs::write(d.join("conf.d/20.cfg"), hostile).unwrap();
    std::fs::write(d.join("conf.d/skip.txt"), "not read").unwrap();
    std::fs::write(d.join("list"), "a.pem [alpn h2]\n").unwrap();
    std::fs::write(d.join("site.conf"), "SSLCertificateFile x.pem\n").unwrap();
    std::fs::write(d.join("plain.conf"), "Listen 443\n").unwrap();
    let includes = format!("  (*) {}\n    (3) {}\n", p("plain.conf"), p("site.conf"));
    for shell in SHELLS {
        let (found, text) = run(
            shell,
            "524288",
            &[
                argv(&["certctl_bind_real", &p("link.pem"), &p("missing/x.pem")]),
                argv(&["certctl_bind_run", "0", "0", "printf", "%s", &includes]),
                argv(&["certctl_bind_includes", "0"]),
                argv(&[
                    "certctl_bind_run",
                    "0",
                    "1",
                    "sh",
                    "-c",
                    "echo denied >&2; exit 3",
                ]),
                argv(&["certctl_bind_cfg", "1", &p("conf.d")]),
                argv(&["certctl_bind_crt_lists", "1"]),
            ],
        );
        assert!(found.ran && found.unavailable.is_none(), "{shell}");
        assert_eq!(found.real.len(), 2, "{shell}: {:?}", found.real);
        assert_eq!(
            found.real[&p("link.pem")].as_deref(),
            Some(p("tls dir/a.pem").as_str())
        );
        assert_eq!(found.real[&p("missing/x.pem")], None);
        let g0 = &found.groups[&0];
        assert_eq!(g0.runs[0].stdout, includes.trim_end());
        assert_eq!(g0.runs[1].status, 3);
        assert_eq!(g0.runs[1].stderr, "denied\n");
        let read: Vec<&str> = g0.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            read,
            [p("site.conf")],
            "{shell}: only files with SSLCertificate"
        );
        let g1 = &found.groups[&1];
        let read: Vec<(&str, bool)> = g1.files.iter().map(|f| (f.path.as_str(), f.list)).collect();
        assert_eq!(
            read,
            [
                (p("conf.d/10.cfg").as_str(), false),
                (p("conf.d/20.cfg").as_str(), false),
                (p("list").as_str(), true)
            ],
            "{shell}"
        );
        assert_eq!(g1.files[1].content, hostile.trim_end(), "{shell}");
        assert!(
            !text.lines().any(|l| l.starts_with("\u{1e}T")),
            "{shell}: nothing a file holds reaches the output as a line of its own"
        );
    }
}

#[test]
fn the_budget_cuts_and_says_so() {
    let big = "y".repeat(5000);
    let (found, _) = run(
        "sh",
        "1000",
        &[
            argv(&["certctl_bind_run", "0", "0", "printf", "%s", &big]),
            argv(&["certctl_bind_run", "0", "1", "printf", "%s", "more"]),
        ],
    );
    let runs = &found.groups[&0].runs;
    assert_eq!(runs[0].stdout.len(), 1000);
    assert!(runs[0].truncated);
    assert!(
        runs[1].truncated && runs[1].stdout.is_empty(),
        "nothing left"
    );
}

#[test]
fn records_come_out_of_the_text_and_garbage_is_ignored() {
    let text =
        "LOCKED\n\u{1e}B S\n\u{1e}B Q 0 0 0 3 - -\n\u{1e}B Q x y\n\u{1e}B N base64\nF 0 file\n";
    assert_eq!(without_records(text), "LOCKED\nF 0 file\n");
    let mut found = Found::default();
    parse(text, &mut found);
    assert!(found.ran);
    assert_eq!(
        found.unavailable.as_deref(),
        Some("the target has no `base64`")
    );
    assert!(
        found.groups[&0].runs[0].truncated,
        "3 bytes announced, none came"
    );
    assert_eq!(decode("not base64!"), "");
}

#[test]
fn a_failure_wins_over_inspect_and_notes_join_the_detail() {
    let checked = Checked {
        failure: Some("nginx loads ssl_certificate /a (nginx.conf:3), not /b".into()),
        notes: vec!["binding: fine".into()],
    };
    assert_eq!(
        checked.fold(Ok::<u8, String>(1)),
        Err("nginx loads ssl_certificate /a (nginx.conf:3), not /b".into())
    );
    assert_eq!(
        checked.fold(Err::<u8, String>("inspect".into())),
        Err("inspect".into())
    );
    let mut detail = "2 file(s) inspected".to_string();
    Checked::default().note(&mut detail);
    checked.note(&mut detail);
    assert_eq!(detail, "2 file(s) inspected; binding: fine");
}
