//! Step 5, **stage**: every staged file written beside its live path before the preview —
//! on a POSIX host by the preview's own remote command from its standard input
//! (`scripts/stage.sh`), over SFTP where a keystore's working copy is needed — and a
//! keystore's working copy placed once the preview built it.

use super::content::FileBytes;
use super::files::StagedFile;
use super::inspect::LiveState;
use super::run::StepResult;
use super::script::{self, command_failure};
use crate::plan::TargetPlan;
use crate::ssh::Session;
use crate::ssh::quote::Script;

/// Step 5, stage: every file written to its temp name beside the live path with its final
/// mode and owner from the first byte, fsync'd; a keystore's live copy taken as the preview's
/// working copy. Replaced files keep their SELinux context.
pub(super) async fn stage(session: &Session, files: &[StagedFile<'_>]) -> StepResult<()> {
    let mut copies = Script::new();
    copies.raw(script::STRICT);
    let mut any_copy = false;
    let mut uploads = Vec::new();
    for f in files {
        match &f.planned.work {
            // Zero-length files are refused by keytool, so none is made for a new keystore.
            Some(work) => {
                if matches!(f.live.state, LiveState::File(_)) {
                    copies.cmd(&["cp", "--", &f.live.write, work]);
                    any_copy = true;
                }
            }
            None => uploads.push(async move {
                session
                    .upload(&f.planned.staged, f.content.bytes(), f.mode, f.owner)
                    .await
                    .map_err(|e| format!("writing {}: {e}", f.planned.staged))
            }),
        }
    }
    // Every file's SFTP requests in flight at once; all finish before the first error is
    // reported (cleanup removes what was written).
    for result in futures::future::join_all(uploads).await {
        result?;
    }
    if any_copy {
        let out = session
            .exec_script(&copies, None)
            .await
            .map_err(|e| e.to_string())?;
        if !out.success() {
            return Err(command_failure("copying the live keystore", &out));
        }
    }
    let labelled: Vec<&StagedFile<'_>> = files
        .iter()
        .filter(|f| {
            matches!(&f.live.state, LiveState::File(s) if s.selinux.is_some())
                && f.planned.work.is_none()
        })
        .collect();
    if !labelled.is_empty() {
        let mut s = Script::new();
        for f in &labelled {
            let reference = format!("--reference={}", f.live.write);
            s.cmd(&["chcon", &reference, "--", &f.planned.staged]);
        }
        let out = session
            .exec_script(&s, None)
            .await
            .map_err(|e| e.to_string())?;
        if !out.success() {
            return Err(command_failure("chcon", &out));
        }
    }
    Ok(((), Some(staged_detail(files))))
}

/// Step 5 on a POSIX host, in the preview's own remote command (see `scripts/stage.sh`): the
/// commands that write the preview's inputs and templates (0600, in the scratch directory) and
/// every staged file (final mode and owner before any content) from the command's standard
/// input, and that input — each file's own lines when it is plain text, else one base64 line
/// ([`wire`]). Nothing private reaches a command line. Returns the input and the staged files,
/// which the deploy's backup fsyncs ([`backup_commands`]); a dry-run's are only removed.
pub(super) fn stage_commands(
    s: &mut Script,
    plan: &TargetPlan,
    files: &[StagedFile<'_>],
) -> (crate::secret::Secret, Vec<String>) {
    let mut payload = Vec::new();
    let mut put = |s: &mut Script, path: &str, umask: String, owner: String, bytes: &[u8]| {
        let kind = wire(bytes, &mut payload);
        s.cmd(&["certctl_put", path, &umask, &owner, &kind]);
    };
    s.cmd(&["certctl_stage_init"]);
    for input in &plan.inputs {
        let content = match &input.content {
            crate::plan::InputContent::Material(role) => {
                super::content::material_bytes(plan.material(input.cert), *role)
            }
            crate::plan::InputContent::Secret(secret) => FileBytes::Secret(secret.clone()),
        };
        put(s, &input.path, "077".into(), "-".into(), content.bytes());
    }
    for t in &plan.templates {
        put(s, &t.path, "077".into(), "-".into(), t.content.as_bytes());
    }
    let mut staged = Vec::new();
    for f in files.iter().filter(|f| f.planned.work.is_none()) {
        let umask = format!("{:03o}", !f.mode & 0o777);
        let owner = f
            .owner
            .map_or_else(|| "-".to_string(), |(u, g)| format!("{u}:{g}"));
        put(s, &f.planned.staged, umask, owner, f.content.bytes());
        if matches!(&f.live.state, LiveState::File(st) if st.selinux.is_some()) {
            let reference = format!("--reference={}", f.live.write);
            s.cmd(&["chcon", &reference, "--", &f.planned.staged]);
        }
        staged.push(f.planned.staged.clone());
    }
    s.cmd(&["certctl_staged"]);
    (crate::secret::Secret::new(payload), staged)
}

/// Appends one file's content to the stage's input and says how it travels: `tN` — its N
/// lines as they are, when it is printable ASCII (tabs allowed) ending in a newline, which
/// the remote shell writes back itself — or `b`, one line of base64 (`base64 -d` writes it).
pub(super) fn wire(bytes: &[u8], payload: &mut Vec<u8>) -> String {
    use base64::Engine as _;
    let text = bytes.ends_with(b"\n")
        && bytes
            .iter()
            .all(|&b| b == b'\n' || b == b'\t' || (0x20..0x7f).contains(&b));
    if text {
        payload.extend_from_slice(bytes);
        return format!("t{}", bytes.iter().filter(|&&b| b == b'\n').count());
    }
    payload.extend(
        base64::engine::general_purpose::STANDARD
            .encode(bytes)
            .into_bytes(),
    );
    payload.push(b'\n');
    "b".into()
}

/// What step 5 staged, for its report entry.
pub(super) fn staged_detail(files: &[StagedFile<'_>]) -> String {
    let detail = files
        .iter()
        .map(|f| match &f.planned.work {
            Some(work) => format!("{work} (working copy)"),
            None => format!("{} ({:04o})", f.planned.staged, f.mode),
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!("staged {detail}")
}

/// Copies each keystore's working copy (built by the preview) to its staged name beside the
/// live file: created private (umask 077), then given its final owner, mode and SELinux
/// context — whatever mode the preview's tool created the working copy with.
pub(super) async fn place_work_copies(
    session: &Session,
    files: &[StagedFile<'_>],
) -> StepResult<()> {
    let mut s = Script::new();
    s.raw("set -e\numask 077\n");
    let mut any = false;
    for f in files {
        let Some(work) = &f.planned.work else {
            continue;
        };
        any = true;
        let staged = &f.planned.staged;
        s.cmd(&["rm", "-f", "--", staged]);
        s.cmd(&["cp", "--", work, staged]);
        if let Some((uid, gid)) = f.owner {
            s.cmd(&["chown", &format!("{uid}:{gid}"), "--", staged]);
        }
        s.cmd(&["chmod", &format!("{:04o}", f.mode), "--", staged]);
        if matches!(&f.live.state, LiveState::File(st) if st.selinux.is_some()) {
            let reference = format!("--reference={}", f.live.write);
            s.cmd(&["chcon", &reference, "--", staged]);
        }
    }
    if !any {
        return Ok(((), None));
    }
    let out = session
        .exec_script(&s, None)
        .await
        .map_err(|e| e.to_string())?;
    if !out.success() {
        return Err(command_failure(
            "placing the keystore beside the live one",
            &out,
        ));
    }
    Ok(((), None))
}

#[cfg(test)]
mod tests {
    use super::wire;
    use crate::deploy::script;
    use crate::deploy::shell_tests::{SHELLS, run};
    use crate::ssh::quote::Script;
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

    #[test]
    fn pem_and_templates_travel_as_lines_anything_else_as_base64() {
        let mut payload = Vec::new();
        let pem = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        assert_eq!(wire(pem, &mut payload), "t3");
        assert_eq!(payload, pem);
        let template = b"server {\n\tlisten 443 ssl;\\ # $x `y` \"z\"\n}\n";
        payload.clear();
        assert_eq!(wire(template, &mut payload), "t3");
        assert_eq!(payload, template);
        // No final newline, a CR, a NUL, bytes above ASCII, nothing: one base64 line.
        for bytes in [
            &b"no newline"[..],
            b"crlf\r\n",
            b"nul\0\n",
            "\u{e9}\n".as_bytes(),
            b"",
        ] {
            payload.clear();
            assert_eq!(wire(bytes, &mut payload), "b", "{bytes:?}");
            assert_eq!(payload.iter().filter(|&&b| b == b'\n').count(), 1);
            assert_eq!(payload.last(), Some(&b'\n'));
        }
    }

    /// The stage script itself, under `sh` (dash) and bash, with a `chown` on PATH that fails:
    /// lines and base64 written byte for byte, modes from the first byte, no `chown` for the
    /// login user's own owner, a name that exists refused with its data skipped (the next file
    /// still gets its own), a file whose lines run out removed.
    #[test]
    fn the_real_stage_writes_each_file_exactly_and_keeps_them_apart() {
        let pem = b"-----BEGIN X-----\n  lead \\ back\\n\t`$(x)` %s\n-----END X-----\n";
        let bin = [0u8, 1, 2, 255, b'\n', b'\r'];
        for shell in SHELLS {
            let dir = tempfile::tempdir().unwrap();
            let shim = dir.path().join("bin");
            std::fs::create_dir(&shim).unwrap();
            let chown = shim.join("chown");
            std::fs::write(&chown, "#!/bin/sh\necho 'chown ran' >&2\nexit 1\n").unwrap();
            std::fs::set_permissions(&chown, std::fs::Permissions::from_mode(0o755)).unwrap();
            let at = |n: &str| dir.path().join(n).display().to_string();
            std::fs::write(at("taken"), "kept").unwrap();
            let me = std::fs::metadata(at("taken")).unwrap();
            let own = format!("{}:{}", me.uid(), me.gid());
            let mut payload = Vec::new();
            let mut s = Script::new();
            s.raw(*script::CLOCK).raw(*script::STAGE).raw("fail=0\n");
            s.cmd(&["certctl_stage_init"]);
            for (name, umask, owner, bytes) in [
                ("a.pem", "133", own.as_str(), &pem[..]),
                ("b.bin", "177", "-", &bin[..]),
                ("taken", "177", "-", b"not written\n"),
                ("c.pem", "177", own.as_str(), b"after the refused one\n"),
            ] {
                let kind = wire(bytes, &mut payload);
                s.cmd(&["certctl_put", &at(name), umask, owner, &kind]);
            }
            // Announced as three lines; the input ends after one.
            s.cmd(&["certctl_put", &at("short.pem"), "177", "-", "t3"]);
            payload.extend_from_slice(b"only one\n");
            s.cmd(&["certctl_staged"]);
            let out = run(shell, s.as_str(), &payload, Some(&shim));
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{shell}: {stdout} {stderr}");
            let mode = |n: &str| std::fs::metadata(at(n)).unwrap().permissions().mode() & 0o777;
            assert_eq!(std::fs::read(at("a.pem")).unwrap(), pem, "{shell}");
            assert_eq!(mode("a.pem"), 0o644, "{shell}");
            assert_eq!(std::fs::read(at("b.bin")).unwrap(), bin, "{shell}");
            assert_eq!(mode("b.bin"), 0o600, "{shell}");
            assert_eq!(std::fs::read(at("taken")).unwrap(), b"kept", "{shell}");
            assert_eq!(
                std::fs::read(at("c.pem")).unwrap(),
                b"after the refused one\n",
                "{shell}"
            );
            assert!(!dir.path().join("short.pem").exists(), "{shell}");
            assert!(!stderr.contains("chown ran"), "{shell}: {stderr}");
            let taken = format!("S {}: cannot be created (", at("taken"));
            assert!(stdout.contains(&taken), "{shell}: {stdout}");
            let short = format!("S {}: no data on stdin", at("short.pem"));
            assert!(stdout.contains(&short), "{shell}: {stdout}");
            assert!(stdout.contains("\u{1e}X stage 0 1"), "{shell}: {stdout}");
        }
    }
}
