//! Onboarding through the binary: `certctl init` for every connector writes an inventory that
//! `certctl check` accepts once the certificate files exist; the files in `examples/` pass
//! `certctl check` as shipped (with the throwaway material their `certs/` hold).

use std::fs;
use std::path::Path;

use crate::support;

use support::offline::certctl_env;
use support::pki::Pki;

/// The material `init`'s inventory expects, under `dir/certs/`.
fn certificate_files(dir: &Path) {
    let pki = Pki::new(&dir.join("pki"));
    let leaf = pki.leaf("www", &["www.example.com"]);
    fs::create_dir_all(dir.join("certs")).unwrap();
    fs::copy(&leaf.cert, dir.join("certs/www.crt")).unwrap();
    fs::copy(&leaf.chain, dir.join("certs/chain.pem")).unwrap();
    fs::copy(&leaf.key, dir.join("certs/www.key")).unwrap();
}

fn connectors() -> Vec<String> {
    let out = certctl_env(Path::new("/"), &["connectors", "list"], &[], &[]);
    assert_eq!(out.code, 0);
    out.stdout
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect()
}

#[test]
fn init_writes_an_inventory_check_accepts_for_every_connector() {
    let names = connectors();
    assert!(names.len() >= 14, "{names:?}");
    for connector in names {
        let dir = tempfile::tempdir().unwrap();
        let out = certctl_env(dir.path(), &["init", "--connector", &connector], &[], &[]);
        assert_eq!(out.code, 0, "{connector}: {}", out.stderr);
        assert!(out.stderr.contains("certctl check"), "{}", out.stderr);

        let out = certctl_env(dir.path(), &["check"], &[], &[]);
        assert_eq!(out.code, 2, "{connector}: no material yet");
        assert!(out.stderr.contains("certs/www.crt"), "{}", out.stderr);

        certificate_files(dir.path());
        let out = certctl_env(
            dir.path(),
            &["check"],
            &[("KEYSTORE_PASSWORD", "changeit"), ("HOME", "/nonexistent")],
            &[],
        );
        assert_eq!(out.code, 0, "{connector}: {}", out.stderr);
        assert!(
            out.stderr.contains("ok: certctl.yaml — 1 target(s)"),
            "{}",
            out.stderr
        );
    }
}

#[test]
fn init_starter_reads_well_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let out = certctl_env(dir.path(), &["init"], &[], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let written = fs::read_to_string(dir.path().join("certctl.yaml")).unwrap();
    insta::assert_snapshot!("init_nginx", written);

    let again = certctl_env(dir.path(), &["init"], &[], &[]);
    assert_eq!(again.code, 2);
    assert!(
        again.stderr.contains("exists; pass --force"),
        "{}",
        again.stderr
    );
    let forced = certctl_env(
        dir.path(),
        &["init", "--force", "--connector", "ssh"],
        &[],
        &[],
    );
    assert_eq!(forced.code, 0, "{}", forced.stderr);
    let ssh = fs::read_to_string(dir.path().join("certctl.yaml")).unwrap();
    assert!(
        ssh.contains("\"{staged.fullchain}\""),
        "previews the staged file: {ssh}"
    );

    let other = certctl_env(
        dir.path(),
        &["init", "-i", "b.yaml", "--connector", "ngnx"],
        &[],
        &[],
    );
    assert_eq!(other.code, 2);
    assert!(
        other.stderr.contains("did you mean `nginx`"),
        "{}",
        other.stderr
    );
}

#[test]
fn examples_pass_check_as_shipped() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // A copy of examples/ with the throwaway material its script makes, and a HOME with the
    // ~/.ssh files the nginx example names (an operator's machine has them).
    let copy = tempfile::tempdir().unwrap();
    let examples = copy.path().join("examples");
    fs::create_dir_all(&examples).unwrap();
    for entry in fs::read_dir(root.join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            fs::copy(&path, examples.join(path.file_name().unwrap())).unwrap();
        }
    }
    let made = std::process::Command::new("bash")
        .arg(examples.join("make-certs.sh"))
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let home = copy.path().join("home");
    fs::create_dir_all(home.join(".ssh")).unwrap();
    fs::write(home.join(".ssh/id_ed25519"), "").unwrap();
    fs::write(home.join(".ssh/known_hosts"), "").unwrap();
    let app_key = fs::read_to_string(examples.join("certs/app.key")).unwrap();

    let mut checked = 0;
    for entry in fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let out = certctl_env(
            &examples,
            &["check", "-i", path.to_str().unwrap()],
            // The generic example's key comes from the environment, as in CI.
            &[("APP_TLS_KEY", &app_key), ("HOME", home.to_str().unwrap())],
            &[],
        );
        assert_eq!(out.code, 0, "{}: {}", path.display(), out.stderr);
        assert!(out.stderr.contains("ok: "), "{}", out.stderr);
        checked += 1;
    }
    assert_eq!(checked, 3, "every example inventory is checked");

    // The generic example's preview must load the STAGED file, never the live one.
    let generic = fs::read_to_string(examples.join("generic-ssh.yaml")).unwrap();
    let preview = &generic[generic.find("preview:").unwrap()..generic.find("test:").unwrap()];
    assert!(preview.contains("{staged.cert}"), "{preview}");
    assert!(!preview.contains("/opt/app/tls/cert.pem"), "{preview}");
}
