//! Inspect's parser from case files (`cases/inspect/*.case`: the files, the script's stdout,
//! the values expected), and the real script run under `sh` (dash) and bash against real
//! layouts: certbot's live/ → archive/ links, a chain of two links, a dangling link, a link
//! that is replaced, a missing file, odd names.

use super::*;
use crate::deploy::shell_tests::{ODD_NAMES, SHELLS, run};
use crate::plan::PlannedFile;

fn planned(role: Role, path: &str, follow: bool) -> PlannedFile {
    PlannedFile {
        role,
        path: path.to_string(),
        staged: format!("{path}.staged"),
        explicit_mode: None,
        default_mode: 0o644,
        explicit_owner: None,
        explicit_group: None,
        default_owner: None,
        default_group: None,
        rendered: None,
        work: None,
        follow_symlinks: follow,
        cert: 0,
        in_place: crate::plan::InPlace::Auto,
    }
}

fn role(name: &str) -> Role {
    Role::ALL
        .into_iter()
        .find(|r| r.as_str() == name)
        .unwrap_or_else(|| panic!("role {name}"))
}

/// One line per file: what the case files' `--- expect` sections hold.
fn describe_live(files: &[PlannedFile], live: &Inspected) -> String {
    let mut out = String::new();
    for (i, ((f, _), p)) in live.iter().zip(files).enumerate() {
        out.push_str(&i.to_string());
        match &f.state {
            LiveState::File(s) => {
                out.push_str(&format!(
                    " file {:o} {}:{} {}",
                    s.mode,
                    s.uid,
                    s.gid,
                    &s.sha256[..8]
                ));
                if s.selinux.is_some() {
                    out.push_str(" selinux");
                }
            }
            LiveState::Absent => out.push_str(" absent"),
            LiveState::Link => out.push_str(" link"),
        }
        if f.write != p.path {
            out.push_str(&format!(" write={}", f.write));
        }
        if let Some(l) = &f.link {
            out.push_str(&format!(" link={}", l.replace('\n', "\\n")));
        }
        if let Some(pem) = &f.certs_pem {
            out.push_str(&format!(
                " certs={}",
                pem.matches("BEGIN CERTIFICATE").count()
            ));
        }
        match f.key_pub.as_deref() {
            Some("-") => out.push_str(" key=unloadable"),
            Some(_) => out.push_str(" key=read"),
            None => {}
        }
        out.push('\n');
    }
    out
}

fn sections(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in text.split_inclusive('\n') {
        if let Some(name) = line.strip_prefix("--- ") {
            if let Some((n, body)) = current.take() {
                out.insert(n, body);
            }
            current = Some((name.trim().to_string(), String::new()));
        } else if let Some((_, body)) = current.as_mut() {
            body.push_str(line);
        }
    }
    if let Some((n, body)) = current {
        out.insert(n, body);
    }
    out
}

#[test]
fn inspect_output_is_read_as_the_case_files_say() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/deploy/cases/inspect");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let s = sections(&text);
        let files: Vec<PlannedFile> = s["files"]
            .lines()
            .map(|l| {
                let (r, p) = l.split_once(' ').unwrap();
                planned(role(r), p, true)
            })
            .collect();
        let out = ExecOutput {
            stdout: s["stdout"].replace("<RS>", "\u{1e}").into_bytes(),
            stderr: Vec::new(),
            status: 0,
        };
        let parsed = parse(&files, &out);
        let name = path.display();
        match (s.get("expect"), s.get("error")) {
            (Some(expect), None) => {
                let live = parsed.unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(describe_live(&files, &live), *expect, "{name}");
            }
            (None, Some(error)) => {
                let e = parsed.err().unwrap_or_else(|| panic!("{name}: parsed"));
                assert!(e.contains(error.trim()), "{name}: {e}");
            }
            _ => panic!("{name}: needs `--- expect` or `--- error`"),
        }
        n += 1;
    }
    assert!(n >= 7, "only {n} case files");
}

/// Runs the inspect script for `files` (with CHECK `k:` + `expect_key` for key roles) in
/// `shell`, and parses what it printed.
fn run_inspect(shell: &str, files: &[PlannedFile], expect_key: &str) -> Result<Inspected, String> {
    let mut s = Script::new();
    s.raw(STRICT).raw(*script::INSPECT);
    let mut quads = vec!["certctl_files".to_string()];
    for (i, f) in files.iter().enumerate() {
        let check = match f.role {
            Role::Key => format!("k:{expect_key}"),
            Role::Cert | Role::Fullchain => "c:-".to_string(),
            _ => "-".into(),
        };
        let follow = if f.follow_symlinks { "1" } else { "0" };
        quads.extend([i.to_string(), follow.into(), check, f.path.clone()]);
    }
    s.cmd(&quads);
    quads[0] = "certctl_reads".into();
    s.cmd(&quads);
    let out = run(shell, s.as_str(), b"", None);
    parse(
        files,
        &ExecOutput {
            stdout: out.stdout,
            stderr: out.stderr,
            status: out.status.code().unwrap_or(1) as u32,
        },
    )
}

#[test]
fn the_real_script_follows_certbot_links_and_a_chain_of_two() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("archive/www")).unwrap();
    std::fs::create_dir_all(d.join("live/www")).unwrap();
    std::fs::create_dir_all(d.join("mid")).unwrap();
    std::fs::write(d.join("archive/www/fullchain1.pem"), "chain").unwrap();
    std::os::unix::fs::symlink(
        "../../archive/www/fullchain1.pem",
        d.join("live/www/fullchain.pem"),
    )
    .unwrap();
    // A chain of two: live/www/key.pem -> ../../mid/key.pem -> ../archive/www/privkey1.pem
    std::fs::write(d.join("archive/www/privkey1.pem"), "not a key").unwrap();
    std::os::unix::fs::symlink("../archive/www/privkey1.pem", d.join("mid/key.pem")).unwrap();
    std::os::unix::fs::symlink("../../mid/key.pem", d.join("live/www/key.pem")).unwrap();
    let p = |s: &str| d.join(s).display().to_string();
    let files = [
        planned(Role::Fullchain, &p("live/www/fullchain.pem"), true),
        planned(Role::Key, &p("live/www/key.pem"), true),
    ];
    for shell in SHELLS {
        let live = run_inspect(shell, &files, &"0".repeat(64)).unwrap();
        let (chain, key) = (&live[0].0, &live[1].0);
        assert_eq!(chain.write, p("archive/www/fullchain1.pem"), "{shell}");
        assert_eq!(
            chain.link.as_deref(),
            Some("../../archive/www/fullchain1.pem")
        );
        assert!(
            matches!(&chain.state, LiveState::File(s) if s.sha256 == crate::deploy::content::sha256_hex(b"chain"))
        );
        assert_eq!(
            key.write,
            p("archive/www/privkey1.pem"),
            "{shell}: resolved through both links"
        );
        assert_eq!(key.link.as_deref(), Some("../../mid/key.pem"));
        assert_eq!(
            key.key_pub.as_deref(),
            Some("-"),
            "{shell}: openssl cannot load it"
        );
    }
}

#[test]
fn the_real_script_sees_dangling_replaced_and_missing_paths() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("archive")).unwrap();
    std::fs::write(d.join("target.pem"), "x").unwrap();
    std::os::unix::fs::symlink("archive/gone.pem", d.join("dangling.pem")).unwrap();
    std::os::unix::fs::symlink("target.pem", d.join("replaced.pem")).unwrap();
    std::os::unix::fs::symlink("nowhere/x.pem", d.join("no-dir.pem")).unwrap();
    let p = |s: &str| d.join(s).display().to_string();
    for shell in SHELLS {
        let files = [
            planned(Role::Fullchain, &p("dangling.pem"), true),
            planned(Role::Cert, &p("replaced.pem"), false),
            planned(Role::Chain, &p("missing.pem"), true),
        ];
        let live = run_inspect(shell, &files, "-").unwrap();
        assert_eq!(live[0].0.state, LiveState::Absent, "{shell}");
        assert_eq!(
            live[0].0.write,
            p("archive/gone.pem"),
            "{shell}: written where it points"
        );
        assert_eq!(live[1].0.state, LiveState::Link, "{shell}");
        assert_eq!(
            live[1].0.write,
            p("replaced.pem"),
            "{shell}: the link itself is replaced"
        );
        assert_eq!(live[2].0.state, LiveState::Absent, "{shell}");
        let bad = [planned(Role::Fullchain, &p("no-dir.pem"), true)];
        let e = run_inspect(shell, &bad, "-").unwrap_err();
        assert!(e.contains("cannot be resolved"), "{shell}: {e}");
    }
}

#[test]
fn odd_names_come_back_through_sha256sums_escaping() {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<PlannedFile> = ODD_NAMES
        .iter()
        .map(|n| {
            let path = dir.path().join(n);
            std::fs::write(&path, n).unwrap();
            planned(Role::Cert, path.to_str().unwrap(), true)
        })
        .collect();
    for shell in SHELLS {
        let live = run_inspect(shell, &files, "-").unwrap();
        for ((f, _), n) in live.iter().zip(ODD_NAMES) {
            assert!(
                matches!(&f.state, LiveState::File(s) if s.sha256 == crate::deploy::content::sha256_hex(n.as_bytes())),
                "{shell}: {n:?}"
            );
        }
    }
    assert_eq!(
        unescape_sha256sum("a\\qb"),
        None,
        "an unknown escape is refused"
    );
}
