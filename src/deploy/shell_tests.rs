//! Test support for the remote scripts run for real: the POSIX shells targets log in with
//! (`sh`, dash on Debian, and bash), file names that need care, and one way to run a script.

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// The POSIX shells targets log in with: `sh` (dash on Debian) and bash.
pub(super) const SHELLS: [&str; 2] = ["sh", "bash"];

/// Names that quoting, `sha256sum`'s escaping or line-based output could get wrong.
pub(super) const ODD_NAMES: [&str; 4] = [
    "plain.pem",
    "with space.pem",
    "back\\slash.pem",
    "new\nline.pem",
];

/// Runs `script` under `shell` with `stdin` on its standard input and, when given, `shim`
/// searched first on PATH (stand-in tools that log or fail).
pub(super) fn run(shell: &str, script: &str, stdin: &[u8], shim: Option<&Path>) -> Output {
    use std::io::Write as _;
    let mut cmd = Command::new(shell);
    cmd.args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = shim {
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
        cmd.env("PATH", format!("{}:{path}", dir.display()));
    }
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}
