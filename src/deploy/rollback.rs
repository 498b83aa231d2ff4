//! Step 10, **rollback**: after any failure from the swap on, the backup set is restored as a
//! whole (`scripts/restore.sh`: copies beside the live files first, then every rename in one
//! process that ignores hang-ups; symlinks put back as they were; each path checked by hash
//! and `readlink`), the server reloaded (or started, if it died), and the old certificate
//! probed. A connection lost on the way is re-established (same host-key checks) and the
//! restore run again — it is idempotent. Also `certctl rollback` ([`undo`]): the newest set
//! not yet restored, under a journal of its own, so that it too can be recovered.

use super::apply::reload_or_start;
use super::connection::{connection_lost, reconnect};
use super::journal::{Entry, Intent, Kind, Op};
use super::restore::restore_commands;
use super::run::{OpenJournal, Outcome, Run, StepFailure, StepResult};
use super::script::{self, NO_HANGUP, STRICT, command_failure, stderr_note, tagged_failures};
use super::sets::{latest_set, set_entries};
use super::verify::{old_served_again, verify};
use crate::material::{Expected, parse_certs};
use crate::plan::TargetPlan;
use crate::report::{Status, Step};
use crate::ssh::Session;
use crate::ssh::quote::Script;

/// Restores `entries` from `set` (after writing `journal`, the intent of a `certctl rollback`,
/// when given) in one remote command, and checks the result.
pub(super) async fn restore_set(
    session: &Session,
    plan: &TargetPlan,
    set: &str,
    entries: &[Entry],
    journal: Option<&str>,
) -> StepResult<()> {
    let mut s = Script::new();
    s.raw(NO_HANGUP)
        .raw(STRICT)
        .raw(*script::JOURNAL)
        .raw(*script::RESTORE);
    // A killed run's swap or restore may still be finishing on the target: wait for it.
    s.cmd(&["certctl_wait_idle", &plan.backup_dir]);
    if let Some(intent) = journal {
        s.cmd(&["certctl_journal_write", &plan.backup_dir, intent]);
        s.raw("[ \"$fail\" = 0 ] || exit 1\n");
    }
    restore_commands(&mut s, &plan.backup_dir, set, entries, &plan.run_id);
    s.raw("exit $fail\n");
    let out = session
        .exec_script(&s, None)
        .await
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.success() {
        let why: Vec<String> = ["B", "R"]
            .into_iter()
            .map(|tag| tagged_failures(&text, tag))
            .filter(|t| t != "no file named")
            .collect();
        return Err(format!(
            "{}{}",
            command_failure(
                "restore script",
                &crate::ssh::ExecOutput {
                    stdout: why.join("; ").into_bytes(),
                    stderr: Vec::new(),
                    status: out.status,
                }
            ),
            stderr_note(&out)
        ));
    }
    super::restore::restore_check(&text, entries)?;
    let same = text
        .lines()
        .filter(|l| l.starts_with("R ") && l.ends_with(" same"))
        .count();
    let changed = entries.len() - same.min(entries.len());
    Ok((
        (),
        Some(format!(
            "{changed} file(s) restored from {set} ({same} already held their copy); every \
             path checked by SHA-256 and readlink"
        )),
    ))
}

/// A failed deploy of files: restores this run's backup set, reloads, probes for what was
/// served before. Over a new connection when the old one was lost.
pub(super) async fn after_failure(
    run: &mut Run<'_>,
    session: &mut Session,
    entries: &[Entry],
    old: Vec<Option<Expected>>,
    failure: StepFailure,
) -> (Status, String) {
    let plan = run.plan;
    let mut cause = failure.cause();
    if let Err(e) = restore_reconnecting(run, session, entries, &failure, &mut cause).await {
        return (
            Status::RollbackFailed,
            format!("{cause}; ROLLBACK FAILED: {e}"),
        );
    }
    let reload = run.step(Step::Reload, reload_or_start(session, plan)).await;
    let restored = "previous files restored byte-for-byte";
    match old.iter().any(Option::is_some) {
        true => old_served_again(run, &old, &cause, restored).await,
        false if !plan.has_probe() => (
            Status::RolledBack,
            format!("{cause}; {restored} and checked by SHA-256 (no TLS endpoint to probe)"),
        ),
        false => {
            let note = match reload {
                Ok(()) => {
                    "nothing was served before the deploy, so there is no old certificate to probe for"
                }
                Err(_) => "the reload after restoring failed; nothing was served before the deploy",
            };
            (Status::RolledBack, format!("{cause}; {restored}; {note}"))
        }
    }
}

/// The restore of this run's set, over a new connection when the old one was lost (before it,
/// or during it: the restore is idempotent, so it runs again). `cause` gains what happened to
/// the connection; `Err` says why the files may not be restored.
async fn restore_reconnecting(
    run: &mut Run<'_>,
    session: &mut Session,
    entries: &[Entry],
    failure: &StepFailure,
    cause: &mut String,
) -> Result<(), String> {
    let plan = run.plan;
    let set = super::names::set_dir(plan);
    if connection_lost(session, plan).await {
        reconnect(run, session, failure.label(), true)
            .await
            .map_err(|e| {
                format!(
                    "the connection was lost and {e} — the new files may be live; the next run \
                     (or `certctl rollback`) restores them from {set}"
                )
            })?;
        cause.push_str("; the connection was lost, so the rollback ran over a new one");
    }
    let restore = restore_set(session, plan, &set, entries, None);
    let mut restored = run.step(Step::Rollback, restore).await;
    if restored.is_err() && connection_lost(session, plan).await {
        reconnect(run, session, "rollback", true)
            .await
            .map_err(|e| {
                format!(
                    "the connection was lost during the restore and {e} — the next run restores \
                 {set} first"
                )
            })?;
        cause.push_str(
            "; the connection was lost during the restore, which was run again over a new one",
        );
        let restore = restore_set(session, plan, &set, entries, None);
        restored = run.step(Step::Rollback, restore).await;
    }
    restored.map_err(|f| {
        format!(
            "{} — the journal stays, so the next run (or `certctl rollback`) restores {set} first",
            f.message
        )
    })
}

/// `certctl rollback`: restores the newest backup set not yet restored (byte-for-byte,
/// checked), reloads (or starts a server that died), and probes for the restored certificate.
/// The set is then retired (`.restored`), so a second rollback goes one set further back.
pub(super) async fn undo(run: &mut Run<'_>, session: &Session) -> Outcome {
    let plan = run.plan;
    let failed = |message: String| {
        (
            Status::Failed,
            format!("rollback: {message}; nothing was changed"),
        )
    };
    let (set, record) = latest_set(session, plan).await.map_err(failed)?;
    let entries = set_entries(plan, &set, &record).map_err(failed)?;
    for group in by_certificate(plan, &entries) {
        check_set(session, &set, &group).await.map_err(failed)?;
    }
    // What the restored files should serve: read from the copies themselves.
    let expected = restored_expected(session, plan, &set, &entries)
        .await
        .map_err(failed)?;
    for (report, e) in run.report.certificates.iter_mut().zip(&expected) {
        report.new_fingerprint = e.as_ref().map(|e| e.leaf);
    }
    run.report.sync_first();
    let intent = Intent {
        files: entries.clone(),
        ..Intent::new(&plan.run_id, &plan.name, Op::Rollback, Kind::Files, &set)
    }
    .with_old(&expected);
    run.journal = Some(OpenJournal {
        dest: format!("{set}/rollback.journal"),
        set: set.clone(),
        keep_set_when: None,
    });
    run.step(
        Step::Rollback,
        restore_set(session, plan, &set, &entries, Some(&intent.line())),
    )
    .await
    .map_err(|f| {
        (
            Status::RollbackFailed,
            format!("ROLLBACK FAILED: {}", f.message),
        )
    })?;
    // A reload that fails fails the rollback: the restored files are not what is served.
    run.step(Step::Reload, reload_or_start(session, plan))
        .await
        .map_err(|f| {
            (
                Status::RollbackFailed,
                format!(
                    "files restored from {set}, but ROLLBACK FAILED: the reload failed: {}",
                    f.message
                ),
            )
        })?;
    let probed = plan.certs.iter().zip(&expected);
    if !probed.into_iter().any(|(c, e)| c.has_probe && e.is_some()) {
        return Ok(Status::RolledBack);
    }
    match verify(run, &expected).await {
        Ok(()) => Ok(Status::RolledBack),
        Err(f) => Err((
            Status::RollbackFailed,
            format!(
                "files restored from {set}, but the restored certificate is NOT served: {}",
                f.message
            ),
        )),
    }
}

/// The entries of a set by the target's certificate they belong to (matched by path).
fn by_certificate(plan: &TargetPlan, entries: &[Entry]) -> Vec<Vec<Entry>> {
    let mut groups = vec![Vec::new(); plan.certs.len()];
    for e in entries {
        let cert = plan
            .files
            .iter()
            .find(|f| f.path == e.path)
            .map_or(0, |f| f.cert);
        groups[cert].push(e.clone());
    }
    groups
}

/// What each certificate's restored files should serve, read from the copies in the set
/// (`None`: no certificate copy, e.g. a file the run created).
async fn restored_expected(
    session: &Session,
    plan: &TargetPlan,
    set: &str,
    entries: &[Entry],
) -> Result<Vec<Option<Expected>>, String> {
    let mut expected = Vec::new();
    for group in by_certificate(plan, entries) {
        let copy = group.iter().find_map(|e| {
            let cert_role = matches!(e.role.as_str(), "cert" | "fullchain" | "bundle");
            e.copy.as_ref().filter(|_| cert_role)
        });
        let Some(copy) = copy else {
            expected.push(None);
            continue;
        };
        let mut pem = session
            .read_file(&format!("{set}/{copy}"), super::content::CERT_READ_LIMIT)
            .await
            .map_err(|e| format!("reading the backup: {e}"))?;
        let certs = parse_certs(&pem).ok();
        zeroize::Zeroize::zeroize(&mut pem);
        expected.push(certs.as_deref().and_then(|certs| {
            let (leaf, chain) = certs.split_first()?;
            Some(Expected {
                leaf: leaf.fingerprint,
                chain: chain.iter().map(|c| c.fingerprint).collect(),
            })
        }));
    }
    Ok(expected)
}

/// Checks a backup set as strictly as the inventory's material before anything is restored:
/// its certificates parse, its key matches the leaf, its chain is in order. The copies are
/// read into memory (the key as a zeroized secret, never written anywhere). A set of files
/// with no certificate and key (a keystore) is restored unchecked.
async fn check_set(session: &Session, set: &str, entries: &[Entry]) -> Result<(), String> {
    use crate::material::{Material, MaterialSpec};
    use crate::source::Source;
    let copy = |roles: &[&str]| {
        entries
            .iter()
            .find(|e| roles.contains(&e.role.as_str()) && e.copy.is_some())
            .and_then(|e| e.copy.clone())
    };
    let (Some(cert), Some(key)) = (
        copy(&["fullchain", "cert", "bundle"]),
        copy(&["key", "bundle"]),
    ) else {
        return Ok(());
    };
    let read = |name: String| async move {
        let path = format!("{set}/{name}");
        let bytes = session
            .read_file(&path, crate::source::MAX_INPUT)
            .await
            .map_err(|e| format!("reading {path}: {e}"))?;
        Ok::<_, String>((path, bytes))
    };
    let fetched =
        |(path, bytes): (String, Vec<u8>)| Source::Fetched(path, crate::secret::Secret::new(bytes));
    let chain = match copy(&["chain"]) {
        Some(name) => Some(fetched(read(name).await?)),
        None => None,
    };
    let (cert, key) = if cert == key {
        // One bundle (haproxy): its certificates and its key, checked as a pair.
        let (path, bytes) = read(cert).await?;
        let (certs, key) = split_bundle(&bytes);
        (fetched((path.clone(), certs)), fetched((path, key)))
    } else {
        (fetched(read(cert).await?), fetched(read(key).await?))
    };
    let spec = MaterialSpec::new(format!("backup set {set}"), cert, chain, key);
    Material::load(&spec)
        .and_then(|m| m.check_pair())
        .map_err(|e| format!("{e}: it is not restored"))
}

/// A PEM bundle's CERTIFICATE blocks, and its other blocks (the key), each in order.
fn split_bundle(bytes: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let (mut certs, mut rest) = (Vec::new(), Vec::new());
    let text = zeroize::Zeroizing::new(String::from_utf8_lossy(bytes).into_owned());
    let mut block: Option<(bool, zeroize::Zeroizing<String>)> = None;
    for line in text.lines() {
        if let Some(label) = line.strip_prefix("-----BEGIN ") {
            block = Some((
                label == "CERTIFICATE-----",
                zeroize::Zeroizing::new(String::new()),
            ));
        }
        if let Some((_, body)) = block.as_mut() {
            body.push_str(line);
            body.push('\n');
        }
        if line.starts_with("-----END ")
            && let Some((is_cert, body)) = block.take()
        {
            let to = if is_cert { &mut certs } else { &mut rest };
            to.extend_from_slice(body.as_bytes());
        }
    }
    (certs, rest)
}

#[cfg(test)]
mod tests {
    use super::split_bundle;

    #[test]
    fn a_bundle_splits_into_its_certificates_and_its_key_in_order() {
        let pem = "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n\
                   -----BEGIN PRIVATE KEY-----\nBB==\n-----END PRIVATE KEY-----\n\
                   -----BEGIN CERTIFICATE-----\nCC==\n-----END CERTIFICATE-----\n";
        let (certs, key) = split_bundle(pem.as_bytes());
        assert_eq!(
            String::from_utf8(certs).unwrap(),
            "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n\
             -----BEGIN CERTIFICATE-----\nCC==\n-----END CERTIFICATE-----\n"
        );
        assert_eq!(
            String::from_utf8(key).unwrap(),
            "-----BEGIN PRIVATE KEY-----\nBB==\n-----END PRIVATE KEY-----\n"
        );
    }
}
