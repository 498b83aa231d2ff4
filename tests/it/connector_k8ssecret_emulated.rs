//! k8ssecret against an EMULATED kubectl (tests/emulators/kubectl) over a real sshd: no
//! Kubernetes API server can run here. The emulator keeps Secrets in files and validates like
//! kubectl and the API server do (flags, YAML, kinds, names, base64, namespace mismatch,
//! resourceVersion conflicts), and logs every argv it receives.
//!
//! What this proves: the exact kubectl command sequence, that the Secret certctl renders is a
//! valid `kubernetes.io/tls` Secret holding the new material, that it reaches the host only
//! as a 0600 file and never on a command line, that preview changes nothing, and that a
//! failure at every step puts the previous Secret back (or removes a new one). What it does
//! not prove: a real API server's admission, RBAC or an ingress controller picking the
//! Secret up (the verify here probes a real nginx that serves the old certificate).

use crate::support;

use std::fs;
use std::path::PathBuf;

use base64::Engine as _;
use support::emulated::{EmuLab, SNI, assert_no_secret_in_argv};
use support::nginx::Nginx;

const CONTEXT: &str = "kind-a";

fn lab() -> EmuLab {
    lab_in("bin", CONTEXT)
}

fn lab_in(bin: &str, context: &str) -> EmuLab {
    let lab = EmuLab::start("kubectl", "kubectl", bin);
    let state = lab.home.join("state");
    fs::write(state.join("contexts"), format!("other\n{context}\n")).unwrap();
    let cdir = state.join(context.replace('/', "%2F"));
    fs::create_dir_all(&cdir).unwrap();
    fs::write(cdir.join("namespaces"), "default\nprod\n").unwrap();
    fs::write(cdir.join("workloads"), "prod/deployment/web\n").unwrap();
    lab
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn secret_file(lab: &EmuLab, context: &str) -> PathBuf {
    lab.home
        .join("state")
        .join(context.replace('/', "%2F"))
        .join("prod/secret/web-tls.json")
}

/// Puts the OLD certificate's Secret in place, as a previous deploy would have left it.
fn seed_old_secret(lab: &EmuLab, context: &str) -> serde_json::Value {
    let old = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {
            "name": "web-tls", "namespace": "prod", "resourceVersion": "7",
            "uid": "uid-old", "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": { "app.kubernetes.io/managed-by": "certctl" },
        },
        "data": {
            "tls.crt": b64(&fs::read(&lab.old.fullchain).unwrap()),
            "tls.key": b64(&fs::read(&lab.old.key).unwrap()),
        },
    });
    let path = secret_file(lab, context);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, serde_json::to_string(&old).unwrap()).unwrap();
    old
}

fn secret(lab: &EmuLab, context: &str) -> Option<serde_json::Value> {
    fs::read_to_string(secret_file(lab, context))
        .ok()
        .map(|t| serde_json::from_str(&t).unwrap())
}

/// What a rollback must restore: type, data, labels and annotations (the server-side fields
/// resourceVersion/uid/creationTimestamp change on any re-create).
fn essence(v: &Option<serde_json::Value>) -> Option<serde_json::Value> {
    v.as_ref().map(|v| {
        serde_json::json!({
            "type": v["type"], "data": v["data"],
            "labels": v["metadata"]["labels"], "annotations": v["metadata"]["annotations"],
        })
    })
}

/// The argvs with this run's scratch directory written as `<scratch>`.
fn normalised(lab: &EmuLab, argvs: Vec<Vec<String>>) -> Vec<Vec<String>> {
    let tmp = format!("{}/certctl-", lab.tmp_dir().display());
    argvs
        .into_iter()
        .map(|argv| {
            argv.into_iter()
                .map(|a| match a.strip_prefix(&tmp) {
                    Some(rest) => format!("<scratch>{}", &rest[rest.find('/').unwrap()..]),
                    None => a,
                })
                .collect()
        })
        .collect()
}

fn v(words: &[&str]) -> Vec<String> {
    words.iter().map(|s| s.to_string()).collect()
}

fn kubectl(context: &str, rest: &[&str]) -> Vec<String> {
    let mut argv = vec![format!("--context={context}"), "--namespace=prod".into()];
    argv.extend(v(rest));
    argv
}

fn params<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut p = vec![
        ("namespace", "prod"),
        ("secret_name", "web-tls"),
        ("context", CONTEXT),
        ("workloads", "deployment/web"),
    ];
    for (k, val) in extra {
        p.retain(|(n, _)| n != k);
        p.push((k, val));
    }
    p
}

fn secrets(lab: &EmuLab) -> Vec<String> {
    let key = fs::read(&lab.new.key).unwrap();
    vec![String::from_utf8(key.clone()).unwrap(), b64(&key)]
}

fn steps(report: &serde_json::Value) -> Vec<String> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{}:{}",
                s["step"].as_str().unwrap(),
                s["status"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn k8ssecret_emulated_deploy_runs_exact_kubectl_sequence_and_no_secret_on_argv() {
    let lab = lab();
    seed_old_secret(&lab, CONTEXT);
    lab.write_inventory("k8ssecret", &params(&[]), None);

    let out = lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let report = &out.json()["targets"][0];
    assert_eq!(report["status"], "deployed", "{}", out.stdout);
    assert_eq!(
        steps(report),
        [
            "connect:ok",
            "lock:ok",
            "inspect:ok",
            "stage:ok",
            "preview:ok",
            "backup:ok",
            "swap:ok",
            "test:ok",
            "reload:ok",
            "verify:skipped",
            "cleanup:ok"
        ]
    );

    let argvs = lab.take_argv();
    assert_no_secret_in_argv(&argvs, &secrets(&lab));
    assert_eq!(
        normalised(&lab, argvs),
        [
            kubectl(
                CONTEXT,
                &["apply", "--dry-run=server", "-f", "<scratch>/secret.json"]
            ),
            kubectl(
                CONTEXT,
                &[
                    "get",
                    "secret",
                    "web-tls",
                    "--ignore-not-found",
                    "-o",
                    "yaml"
                ]
            ),
            kubectl(CONTEXT, &["apply", "-f", "<scratch>/secret.json"]),
            kubectl(CONTEXT, &["get", "secret", "web-tls", "-o", "name"]),
            kubectl(CONTEXT, &["rollout", "restart", "deployment/web"]),
        ]
    );

    // The Secret now holds the new material, labelled and annotated by certctl.
    let s = secret(&lab, CONTEXT).unwrap();
    assert_eq!(s["type"], "kubernetes.io/tls");
    assert_eq!(
        s["data"]["tls.crt"],
        b64(&fs::read(&lab.new.fullchain).unwrap())
    );
    assert_eq!(s["data"]["tls.key"], b64(&fs::read(&lab.new.key).unwrap()));
    assert_eq!(
        s["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "certctl"
    );
    assert_eq!(s["metadata"]["annotations"]["certctl.io/target"], "edge-1");
    assert!(
        s["metadata"]["annotations"]["certctl.io/fingerprint"]
            .as_str()
            .unwrap()
            .contains(':')
    );
    // The workload was restarted; the manifest reached kubectl as a 0600 file, now removed.
    let restarts = fs::read_to_string(lab.home.join("state/kind-a/restarts")).unwrap();
    assert_eq!(restarts, "prod deployment/web\n");
    let files = fs::read_to_string(lab.home.join("files.log")).unwrap();
    assert!(files.lines().count() >= 2, "{files}");
    for line in files.lines() {
        assert!(line.starts_with("600 "), "manifest not private: {line}");
    }
    assert!(lab.scratch_dirs().is_empty(), "{:?}", lab.scratch_dirs());
    // The previous Secret is kept, private, in the backup set.
    let sets: Vec<PathBuf> = fs::read_dir(lab.backup_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.ends_with(".lock"))
        .collect();
    assert_eq!(sets.len(), 1, "{sets:?}");
    let saved = sets[0].join("secret.yaml");
    assert_eq!(support::mode(&saved), 0o600);
    assert_eq!(support::mode(&sets[0]), 0o700);
    assert!(
        fs::read_to_string(&saved)
            .unwrap()
            .contains("resourceVersion: '7'")
    );

    // `certctl rollback` puts the previous Secret back.
    let before = essence(&Some(seed_old_secret_value(&lab)));
    let out = lab.certctl(&["rollback", "--output", "json"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.json()["targets"][0]["status"], "rolled-back");
    assert_eq!(essence(&secret(&lab, CONTEXT)), before);
    let saved_path = saved.display().to_string();
    assert_eq!(
        lab.take_argv(),
        [
            kubectl(CONTEXT, &["replace", "--force", "-f", &saved_path]),
            kubectl(CONTEXT, &["rollout", "restart", "deployment/web"]),
        ]
    );
}

/// The old Secret as seeded (without writing it).
fn seed_old_secret_value(lab: &EmuLab) -> serde_json::Value {
    serde_json::json!({
        "type": "kubernetes.io/tls",
        "metadata": { "labels": { "app.kubernetes.io/managed-by": "certctl" } },
        "data": {
            "tls.crt": b64(&fs::read(&lab.old.fullchain).unwrap()),
            "tls.key": b64(&fs::read(&lab.old.key).unwrap()),
        },
    })
}

#[test]
fn k8ssecret_emulated_dry_run_previews_and_changes_nothing() {
    let lab = lab();
    seed_old_secret(&lab, CONTEXT);
    lab.write_inventory("k8ssecret", &params(&[]), None);
    let before = fs::read(secret_file(&lab, CONTEXT)).unwrap();

    let out = lab.certctl(&["deploy", "--dry-run", "--output", "json"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.json()["targets"][0]["status"], "would-change");
    assert_eq!(
        normalised(&lab, lab.take_argv()),
        [kubectl(
            CONTEXT,
            &["apply", "--dry-run=server", "-f", "<scratch>/secret.json"]
        )]
    );
    assert_eq!(fs::read(secret_file(&lab, CONTEXT)).unwrap(), before);
    assert!(!lab.home.join("state/kind-a/restarts").exists());
    assert!(lab.scratch_dirs().is_empty());

    // `certctl status` is read-only: no kubectl command; without an endpoint to probe it says
    // it cannot tell.
    let out = lab.certctl(&["status", "--output", "json"]);
    let report = &out.json()["targets"][0];
    assert_eq!(report["status"], "mismatch", "{}", out.stdout);
    assert!(
        report["error"].as_str().unwrap().contains("verify.address"),
        "{}",
        out.stdout
    );
    assert!(lab.take_argv().is_empty());
    assert_eq!(fs::read(secret_file(&lab, CONTEXT)).unwrap(), before);
}

/// A failure injected at each step: before the swap nothing changes; from the swap on the
/// previous Secret is put back (or the new one removed when there was none).
#[test]
fn k8ssecret_emulated_failure_at_each_step_restores_the_previous_secret() {
    let lab = lab();
    // A real TLS endpoint that keeps serving the OLD certificate: verify of the new one fails,
    // verify of the old one after a rollback passes.
    let ingress = Nginx::start(SNI, &lab.old.fullchain, &lab.old.key);
    let addr = ingress.addr.to_string();
    lab.write_inventory("k8ssecret", &params(&[]), Some(&addr));
    let cases: &[(&str, &str, &str)] = &[
        ("preview", "apply-dry-run", "failed"),
        ("backup", "get-yaml", "failed"),
        ("swap", "apply", "rolled-back"),
        ("test", "get-name", "rolled-back"),
        ("reload", "rollout-restart", "rolled-back"),
        ("verify", "", "rolled-back"),
    ];
    for seeded in [true, false] {
        for (step, op, status) in cases {
            let _ = fs::remove_file(secret_file(&lab, CONTEXT));
            if seeded {
                seed_old_secret(&lab, CONTEXT);
            }
            let before = secret(&lab, CONTEXT);
            lab.fail(&[op]);
            lab.take_argv();
            let out = lab.certctl(&["deploy", "--output", "json"]);
            let report = &out.json()["targets"][0];
            let what = format!(
                "failure at {step} (previous Secret: {seeded}): {}",
                out.stdout
            );
            assert_eq!(out.code, 1, "{what}");
            assert_eq!(report["status"], *status, "{what}");
            let failed = report["steps"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["status"] == "failed")
                .unwrap();
            assert_eq!(failed["step"], *step, "{what}");
            if *status == "failed" {
                assert!(
                    report["error"]
                        .as_str()
                        .unwrap()
                        .contains("nothing live was changed"),
                    "{what}"
                );
                assert_eq!(secret(&lab, CONTEXT), before, "{what}");
            } else {
                assert_eq!(essence(&secret(&lab, CONTEXT)), essence(&before), "{what}");
                let argvs = lab.take_argv();
                let last_restore = argvs
                    .iter()
                    .rev()
                    .find(|a| {
                        a.contains(&"replace".to_string()) || a.contains(&"delete".to_string())
                    })
                    .unwrap_or_else(|| panic!("no restore command: {argvs:?}"));
                let verb = if seeded { "replace" } else { "delete" };
                assert!(
                    last_restore.contains(&verb.to_string()),
                    "{what}: {argvs:?}"
                );
                assert_no_secret_in_argv(&argvs, &secrets(&lab));
            }
            assert!(lab.scratch_dirs().is_empty(), "{what}");
        }
    }
}

/// Hostile context name and kubectl path (spaces, quotes, `$`, backticks, `;`) reach kubectl
/// as single, unaltered arguments.
#[test]
fn k8ssecret_emulated_hostile_context_and_kubectl_path_are_quoted() {
    let context = "ctx 'a' \"b\" $HOME `id`; rm -rf x";
    let lab = lab_in("bin $x 'q' `y`; z", context);
    let kubectl_path = lab.home.join("kubectl").display().to_string();
    lab.write_inventory(
        "k8ssecret",
        &params(&[
            ("context", context),
            ("kubectl", &kubectl_path),
            ("workloads", ""),
        ]),
        None,
    );
    let out = lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.json()["targets"][0]["status"], "deployed");
    let argvs = normalised(&lab, lab.take_argv());
    assert_eq!(
        argvs,
        [
            kubectl(
                context,
                &["apply", "--dry-run=server", "-f", "<scratch>/secret.json"]
            ),
            kubectl(
                context,
                &[
                    "get",
                    "secret",
                    "web-tls",
                    "--ignore-not-found",
                    "-o",
                    "yaml"
                ]
            ),
            kubectl(context, &["apply", "-f", "<scratch>/secret.json"]),
            kubectl(context, &["get", "secret", "web-tls", "-o", "name"]),
        ],
        "no rollout restart: `workloads` is empty"
    );
    assert!(secret(&lab, context).is_some());
}

/// A namespace Kubernetes would refuse is an error naming the target before anything
/// connects.
#[test]
fn k8ssecret_emulated_invalid_namespace_is_refused_before_connecting() {
    let lab = lab();
    lab.write_inventory(
        "k8ssecret",
        &params(&[("namespace", "prod; rm -rf /")]),
        None,
    );
    let out = lab.certctl(&["deploy"]);
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("edge-1"), "{}", out.stderr);
    assert!(out.stderr.contains("not a valid name"), "{}", out.stderr);
    assert!(lab.take_argv().is_empty());
}

/// `swap: commands` keeps a journal too: a deploy whose rollback fails (the restore's
/// `kubectl replace` fails as well) leaves it, `certctl status` names it, and the next deploy
/// first restores the saved Secret (the `recover` step), then deploys the new one.
#[test]
fn k8ssecret_emulated_a_failed_rollback_is_recovered_by_the_next_run() {
    let lab = lab();
    let ingress = Nginx::start(SNI, &lab.old.fullchain, &lab.old.key);
    let addr = ingress.addr.to_string();
    lab.write_inventory("k8ssecret", &params(&[]), Some(&addr));
    seed_old_secret(&lab, CONTEXT);
    let before = secret(&lab, CONTEXT);
    lab.fail(&["rollout-restart", "replace"]);
    let out = lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 3, "{}", out.stdout);
    assert_eq!(out.json()["targets"][0]["status"], "rollback-failed");
    assert!(
        lab.backup_dir().join("journal").exists(),
        "the journal stays"
    );
    let status = lab.certctl(&["status", "--output", "json"]);
    let error = status.json()["targets"][0]["error"].to_string();
    assert!(error.contains("an unfinished change"), "{error}");

    lab.fail(&[]);
    // The ingress serves the new certificate (what a real ingress controller would once the
    // new Secret is in place), so the deploy after the recovery can verify: forced, since
    // what is served already matches.
    ingress.replace_certs(&lab.new.fullchain, &lab.new.key);
    ingress.reload();
    lab.take_argv();
    let out = lab.certctl(&["deploy", "--force", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    let report = &out.json()["targets"][0];
    let steps: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert!(steps.contains(&"recover"), "{}", out.stdout);
    let argvs = lab.take_argv();
    let first_apply = argvs.iter().position(|a| a.contains(&"apply".to_string()));
    let restore = argvs
        .iter()
        .position(|a| a.contains(&"replace".to_string()));
    assert!(
        restore.is_some() && restore < first_apply,
        "the saved Secret is restored before anything else is applied: {argvs:?}"
    );
    assert!(!lab.backup_dir().join("journal").exists(), "closed");
    assert_ne!(
        essence(&secret(&lab, CONTEXT)),
        essence(&before),
        "the new Secret is in place"
    );
}
