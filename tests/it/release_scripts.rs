//! The release scripts' refusals, cheap enough for every test run (the release itself is built
//! and checked by `.ci/run`: scripts/build-release.sh, scripts/check-release.sh):
//! `build-release.sh` refuses a version without a CHANGELOG section before building anything,
//! the current version has one, and `check-glibc.sh` refuses a binary that needs a newer glibc.

use std::path::Path;
use std::process::{Command, Output};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn bash(dir: &Path, args: &[&str]) -> Output {
    Command::new("bash")
        .args(args)
        .current_dir(dir)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .expect("run bash")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_current_version_has_a_changelog_section() {
    let version = env!("CARGO_PKG_VERSION");
    let out = bash(Path::new(ROOT), &["scripts/changelog-section.sh", version]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with(&format!("## [{version}] - ")),
        "{}",
        text(&out)
    );
    assert!(stdout.contains("\n- "), "{}", text(&out));
}

/// A copy of the project's manifest and scripts whose CHANGELOG has no section for the
/// version: the script stops at once, installs and builds nothing, writes no dist/.
#[test]
fn build_release_refuses_a_version_without_a_changelog_section() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(ROOT);
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
    for file in ["Cargo.toml", "Cargo.lock", "build.rs"] {
        std::fs::copy(root.join(file), dir.path().join(file)).unwrap();
    }
    for file in ["src/lib.rs", "src/main.rs"] {
        std::fs::write(dir.path().join(file), "").unwrap();
    }
    for script in std::fs::read_dir(root.join("scripts")).unwrap() {
        let script = script.unwrap().path();
        std::fs::copy(
            &script,
            dir.path().join("scripts").join(script.file_name().unwrap()),
        )
        .unwrap();
    }
    let version = env!("CARGO_PKG_VERSION");
    let changelog = std::fs::read_to_string(root.join("CHANGELOG.md")).unwrap();
    let heading = format!("## [{version}] - ");
    assert!(changelog.contains(&heading));
    std::fs::write(
        dir.path().join("CHANGELOG.md"),
        changelog.replace(&heading, "## [0.0.0-older] - "),
    )
    .unwrap();

    let out = bash(dir.path(), &["scripts/build-release.sh"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "CHANGELOG.md has no section `## [{version}] - YYYY-MM-DD`"
        )),
        "{}",
        text(&out)
    );
    assert!(!stderr.contains("installing"), "{}", text(&out));
    assert!(!dir.path().join("dist").exists());
}

/// This test binary's certctl is built for the host (glibc 2.36 on Debian 12): the check names
/// the symbols that need more than 2.17, and passes it against a limit above them.
#[test]
fn check_glibc_refuses_a_binary_that_needs_a_newer_glibc() {
    let bin = env!("CARGO_BIN_EXE_certctl");
    let out = bash(Path::new(ROOT), &["scripts/check-glibc.sh", bin, "2.17"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(", newer than 2.17; the symbols"),
        "{}",
        text(&out)
    );
    assert!(stderr.contains("@GLIBC_2."), "{}", text(&out));

    let out = bash(Path::new(ROOT), &["scripts/check-glibc.sh", bin, "99.0"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("(<= 99.0): ok"),
        "{}",
        text(&out)
    );
}
