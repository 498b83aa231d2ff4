//! The mounts section's parser and the in-place decision, purely; the real scripts run under
//! `sh` (dash) and bash: the detection's records for real files with odd names, and
//! `certctl_into` writing into a file's own inode (a real bind mount and a real nginx in a
//! mount namespace are in `tests/it/mounts.rs`).

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

use super::*;
use crate::connector::Role;
use crate::deploy::inspect::Stat;
use crate::deploy::script::{self, STRICT};
use crate::deploy::shell_tests::{ODD_NAMES, SHELLS, run};

fn planned(in_place: InPlace) -> PlannedFile {
    PlannedFile {
        role: Role::Key,
        path: "/etc/nginx/ssl/www.key".into(),
        staged: "/etc/nginx/ssl/.www.key.certctl-1-a.tmp".into(),
        explicit_mode: None,
        default_mode: 0o600,
        explicit_owner: None,
        explicit_group: None,
        default_owner: None,
        default_group: None,
        rendered: None,
        work: None,
        follow_symlinks: true,
        in_place,
        cert: 0,
    }
}

fn live(state: LiveState, mounts: Vec<Mount>) -> LiveFile {
    LiveFile {
        state,
        link: None,
        write: "/etc/nginx/ssl/www.key".into(),
        key_pub: None,
        certs_pem: None,
        binds: Binds {
            identity: Some("2049 131".into()),
            mounts,
        },
    }
}

fn file() -> LiveState {
    LiveState::File(Stat {
        mode: 0o600,
        uid: 0,
        gid: 0,
        selinux: None,
        sha256: "aa".repeat(32),
    })
}

fn mount(point: &str) -> Mount {
    Mount {
        id: 612,
        pid: 4242,
        comm: "nginx".into(),
        point: point.into(),
    }
}

#[test]
fn the_mounts_section_is_cut_off_and_read() {
    let text = "F 0 file\n\u{1e}K\n\u{1e}M\nN 0 65024 10035226\nN 1 65024 7\n\
                M 0 66 19532 /ctr/certs/full\\040chain.pem nginx: master\nM 0 70 1 /x.pem \n";
    let (rest, section) = split_off(text);
    assert_eq!(rest, "F 0 file\n\u{1e}K\n");
    let binds = parse(section.unwrap(), 2).unwrap();
    assert_eq!(binds[0].identity.as_deref(), Some("65024 10035226"));
    assert_eq!(binds[1].identity.as_deref(), Some("65024 7"));
    assert_eq!(binds[1].mounts, []);
    assert_eq!(
        binds[0].mounts[0],
        Mount {
            id: 66,
            pid: 19532,
            comm: "nginx: master".into(),
            point: "/ctr/certs/full chain.pem".into(),
        }
    );
    assert_eq!(binds[0].mounts[1].comm, "", "a process without a name");
    assert_eq!(split_off("F 0 file\n"), ("F 0 file\n", None));
    for bad in ["N 2 1 1", "N 0 x 1", "M 0 66", "Q 0", "M a 1 2 /p"] {
        assert!(parse(bad, 2).is_err(), "{bad:?} is refused");
    }
}

#[test]
fn mountinfo_escapes_are_undone_and_nothing_else_is() {
    assert_eq!(unescape("/a\\040b\\011c\\012d\\134e"), "/a b\tc\nd\\e");
    assert_eq!(unescape("/a\\9b\\04"), "/a\\9b\\04", "not an escape");
    assert_eq!(unescape("/é\\040x"), "/é x");
}

#[test]
fn the_decision_follows_the_param_and_what_inspect_found() {
    let bound = || live(file(), vec![mount("/ctr/www.key")]);
    let plain = || live(file(), vec![]);
    let auto = decide(&planned(InPlace::Auto), &bound()).unwrap();
    assert_eq!(auto.why, "bind-mounted into /ctr/www.key (PID 4242, nginx)");
    assert_eq!(auto.identity, "2049 131");
    assert_eq!(decide(&planned(InPlace::Auto), &plain()), None);
    assert_eq!(
        decide(&planned(InPlace::Always), &plain()).unwrap().why,
        "in_place: always"
    );
    assert_eq!(decide(&planned(InPlace::Never), &bound()), None);
    for state in [LiveState::Absent, LiveState::Link] {
        let l = live(state, vec![mount("/ctr/www.key")]);
        assert_eq!(
            decide(&planned(InPlace::Always), &l),
            None,
            "nothing to write into"
        );
    }
    let mut no_identity = bound();
    no_identity.binds.identity = None;
    assert_eq!(
        decide(&planned(InPlace::Auto), &no_identity)
            .unwrap()
            .identity,
        "-"
    );
    let w = warning(&planned(InPlace::Never), &bound()).unwrap();
    assert!(
        w.contains("/etc/nginx/ssl/www.key is bind-mounted into /ctr/www.key"),
        "{w}"
    );
    assert!(w.contains("in_place: never"), "{w}");
    assert_eq!(warning(&planned(InPlace::Auto), &bound()), None);
    assert_eq!(warning(&planned(InPlace::Never), &plain()), None);
}

#[test]
fn many_mounts_are_counted_and_untrusted_names_sanitised() {
    let mut mounts: Vec<Mount> = (0..5).map(|i| mount(&format!("/c{i}/k.pem"))).collect();
    mounts[0].comm = "evil\u{1b}[31m".into();
    mounts[1].comm = String::new();
    let text = describe(&mounts);
    assert!(
        text.starts_with("bind-mounted into /c0/k.pem (PID 4242, evil"),
        "{text}"
    );
    assert!(!text.contains('\u{1b}'), "{text:?}");
    assert!(text.contains("/c1/k.pem (PID 4242), /c2/k.pem"), "{text}");
    assert!(text.ends_with(" and 2 more"), "{text}");
}

#[test]
fn the_real_detection_gives_each_file_its_inode_under_odd_names() {
    let dir = tempfile::tempdir().unwrap();
    let names = ODD_NAMES;
    let mut s = Script::new();
    s.raw(STRICT).raw(*script::INSPECT);
    let mut quads = vec!["certctl_files".to_string()];
    for (i, n) in names.iter().enumerate() {
        let path = dir.path().join(n);
        std::fs::write(&path, n).unwrap();
        quads.extend([
            i.to_string(),
            "1".into(),
            "-".into(),
            path.display().to_string(),
        ]);
    }
    quads.extend([
        "4".into(),
        "1".into(),
        "-".into(),
        "/nonexistent/x.pem".into(),
    ]);
    s.cmd(&quads);
    s.cmd(&["certctl_mounts", "0", "1", "2", "3", "4"]);
    for shell in SHELLS {
        let out = run(shell, s.as_str(), b"", None);
        assert!(
            out.status.success(),
            "{shell}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let binds = parse(split_off(&text).1.expect("the section"), 5).unwrap();
        for (i, n) in names.iter().enumerate().take(3) {
            let m = std::fs::metadata(dir.path().join(n)).unwrap();
            let want = format!("{} {}", m.dev(), m.ino());
            assert_eq!(
                binds[i].identity.as_deref(),
                Some(want.as_str()),
                "{shell}: {n:?}"
            );
        }
        assert_eq!(
            binds[3].identity, None,
            "{shell}: a newline in the path: not looked up"
        );
        assert_eq!(binds[4], Binds::default(), "{shell}: missing");
    }
}

/// `certctl_into FROM TO IDENT` in `shell`, the swap's and the restore's function.
fn into(shell: &str, from: &std::path::Path, to: &std::path::Path, ident: &str) -> (bool, String) {
    let mut s = Script::new();
    s.raw(STRICT).raw(*script::JOURNAL).raw(*script::SWAP);
    let (from, to) = (from.display().to_string(), to.display().to_string());
    s.cmd(&["certctl_into", &from, &to, ident]);
    let out = run(shell, s.as_str(), b"", None);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_real_write_keeps_the_inode_cuts_the_tail_and_takes_the_staged_mode() {
    for shell in SHELLS {
        let dir = tempfile::tempdir().unwrap();
        let (live, staged) = (dir.path().join("live.key"), dir.path().join("staged"));
        std::fs::write(&live, "an old key that is longer than the new one\n").unwrap();
        std::fs::set_permissions(&live, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(&staged, "new key\n").unwrap();
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o640)).unwrap();
        let before = std::fs::metadata(&live).unwrap();
        let ident = format!("{} {}", before.dev(), before.ino());
        let (ok, err) = into(shell, &staged, &live, &ident);
        assert!(ok, "{shell}: {err}");
        let after = std::fs::metadata(&live).unwrap();
        assert_eq!(after.ino(), before.ino(), "{shell}: the same inode");
        assert_eq!(
            std::fs::read(&live).unwrap(),
            b"new key\n",
            "{shell}: no old tail"
        );
        assert_eq!(
            after.mode() & 0o7777,
            0o640,
            "{shell}: the staged file's mode"
        );

        // Never through a symlink, never into another inode than inspect saw.
        let link = dir.path().join("link.key");
        std::os::unix::fs::symlink(&live, &link).unwrap();
        let (ok, err) = into(shell, &staged, &link, "-");
        assert!(
            !ok && err.contains("no longer a regular file"),
            "{shell}: {err}"
        );
        let (ok, err) = into(shell, &staged, &live, "1 2");
        assert!(
            !ok && err.contains("not the file inspect saw"),
            "{shell}: {err}"
        );
        assert_eq!(
            std::fs::read(&live).unwrap(),
            b"new key\n",
            "{shell}: untouched"
        );
    }
}
