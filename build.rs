//! Build facts for `certctl --version`: the commit and the build date, as the environment
//! variables `CERTCTL_BUILD_COMMIT`, `CERTCTL_BUILD_DATE` and `CERTCTL_BUILD_TARGET`.
//!
//! - Commit: `CERTCTL_BUILD_COMMIT` from the environment when set (a packager building from a
//!   source tarball knows it); else `git rev-parse` of this checkout, but only when the
//!   repository's top level is this package (a tarball unpacked inside some other git
//!   repository must not report that repository's commit); else `unknown`.
//! - Date: `SOURCE_DATE_EPOCH` when set (reproducible builds; `scripts/build-release.sh` sets it
//!   to the commit's time), else today, both as UTC `YYYY-MM-DD`.
//!
//! The script reruns when HEAD or the branch it points at moves, so a commit is picked up
//! without a code change; that costs one rebuild of this crate per commit.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CERTCTL_BUILD_COMMIT");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");

    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let commit = match std::env::var("CERTCTL_BUILD_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => git_commit(&manifest_dir).unwrap_or_else(|| "unknown".to_string()),
    };
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        });
    println!("cargo:rustc-env=CERTCTL_BUILD_COMMIT={commit}");
    println!("cargo:rustc-env=CERTCTL_BUILD_DATE={}", utc_date(epoch));
    println!(
        "cargo:rustc-env=CERTCTL_BUILD_TARGET={}",
        std::env::var("TARGET").unwrap_or_default()
    );
}

/// Runs `git ARGS` in `dir`; its trimmed stdout when it succeeds.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The short commit of the checkout this package is the top of, and the files whose change
/// means a new commit (registered with cargo).
fn git_commit(manifest_dir: &Path) -> Option<String> {
    let top = git(manifest_dir, &["rev-parse", "--show-toplevel"])?;
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same(Path::new(&top), manifest_dir) {
        return None;
    }
    let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
    if let Some(branch) = git(manifest_dir, &["symbolic-ref", "-q", "HEAD"]) {
        watched.push(branch);
    }
    for name in &watched {
        if let Some(path) = git(manifest_dir, &["rev-parse", "--git-path", name]) {
            let path = manifest_dir.join(path);
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    git(manifest_dir, &["rev-parse", "--short=12", "HEAD"]).filter(|c| !c.is_empty())
}

/// `YYYY-MM-DD` (UTC) of a Unix time: days to civil date (Howard Hinnant's algorithm).
fn utc_date(epoch: i64) -> String {
    let z = epoch.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
