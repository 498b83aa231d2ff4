//! Bad input through the built binary: certificate material made wrong in every way an
//! operator manages to (generated at test time — no private key is committed; the committed
//! fixtures in tests/corpus/pem/ are public garbage), user connector definitions with
//! mistakes (tests/corpus/connectors/), and hostile names and paths in params. Each case: exit
//! 2, a message naming the problem and where it is, and nothing touched — the target's sshd
//! logs no login. (Inventory syntax errors have their own corpus in tests/corpus/inventory.)
//!
//! Shell metacharacters in a path (spaces, quotes, `$(…)`, `;`) are legal file names, so they
//! are not refused: a real deploy proves they reach the target as literal names.

use crate::support;

use std::fs;
use std::path::{Path, PathBuf};

use support::faults::{InventorySpec, LiveSet, Rig, RigOptions, SNI, Served};
use support::pki::{LeafOpts, Pki};

fn corpus(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(dir)
}

fn j(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn p(path: &Path) -> String {
    j(&path.display().to_string())
}

/// An inventory for the rig's sshd: certificate `www` from `cert`/`chain`/`key`, one target
/// with `target_extra` lines (indented 4), then `tail` at the top level.
fn inventory(
    rig: &Rig,
    cert: &Path,
    chain: Option<&Path>,
    key: &Path,
    target_extra: &str,
    tail: &str,
) -> String {
    let chain = chain
        .map(|c| format!("    chain: {}\n", p(c)))
        .unwrap_or_default();
    format!(
        "defaults:\n  user: {user}\n  port: {port}\n  identity_file: {id}\n  known_hosts: {kh}\n\
         certificates:\n  www:\n    cert: {cert}\n{chain}    key: {key}\n\
         targets:\n  - name: web-1\n    host: {host}\n    certificate: www\n{target_extra}\
         {tail}",
        user = j(&rig.sshd.user),
        port = rig.sshd.port(),
        id = p(&rig.sshd.client_key),
        kh = p(&rig.sshd.known_hosts),
        cert = p(cert),
        key = p(key),
        host = j(&rig.sshd.host()),
    )
}

/// The nginx target lines of the rig (params and verify), indented for a target.
fn nginx_target(rig: &Rig) -> String {
    format!(
        "    connector: nginx\n    params:\n      fullchain_path: {}\n      key_path: {}\n      \
         nginx_conf: {}\n      backup_dir: {}\n      tmp_dir: {}\n    verify:\n      address: {}\n      sni: {}\n",
        p(&rig.nginx.cert_path()),
        p(&rig.nginx.key_path()),
        p(rig.nginx.conf_path()),
        p(&rig.backup_dir()),
        p(&rig.tmp_dir()),
        j(&rig.nginx.addr.to_string()),
        j(SNI),
    )
}

/// Runs `deploy` and `check` on `yaml`; both must exit 2 and say every one of `says`, and the
/// sshd must have logged no login. Returns the deploy's stderr.
fn refused(rig: &Rig, case: &str, yaml: &str, says: &[&str]) -> String {
    fs::write(&rig.inventory, yaml).unwrap();
    let logins = rig.logins();
    let mut stderr = String::new();
    for command in ["deploy", "check"] {
        let out = rig.certctl(&[command]);
        assert_eq!(
            out.code, 2,
            "{case}: `certctl {command}` exits 2 on bad input:\n{}",
            out.stderr
        );
        for s in says {
            assert!(
                out.stderr.contains(s),
                "{case}: `certctl {command}` says {s:?}:\n{}",
                out.stderr
            );
        }
        assert!(
            out.stdout.is_empty(),
            "{case}: nothing on stdout: {}",
            out.stdout
        );
        if command == "deploy" {
            stderr = out.stderr;
        }
    }
    // Also as JSON: still exit 2 and no report pretending something ran.
    let out = rig.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 2, "{case} (json): {}", out.stderr);
    assert_eq!(rig.logins(), logins, "{case}: no SSH login");
    assert_eq!(rig.live_set(), LiveSet::Old, "{case}: nothing touched");
    stderr
}

#[test]
fn bad_certificate_material_is_refused_before_connecting() {
    let rig = Rig::start(RigOptions::default());
    let pki_dir = rig.dir().join("corpus-pki");
    fs::create_dir_all(&pki_dir).unwrap();
    // Two intermediates, so a chain can be out of order.
    let pki = Pki::with_intermediates(&pki_dir, 2);
    let good = pki.leaf("good", &[SNI]);
    let target = nginx_target(&rig);
    let committed = |name: &str| corpus("pem").join(name);

    let chain_pems: Vec<String> = {
        let text = fs::read_to_string(&good.chain).unwrap();
        text.split_inclusive("-----END CERTIFICATE-----\n")
            .map(str::to_string)
            .collect()
    };
    assert_eq!(chain_pems.len(), 2, "two intermediates");
    let reversed = pki.write_file("reversed-chain.pem", chain_pems.concat().as_bytes());
    fs::write(
        &reversed,
        format!("{}{}", chain_pems[1], chain_pems[0]).as_bytes(),
    )
    .unwrap();
    let leaf_twice = pki.write_file(
        "leaf-twice.pem",
        format!("{}{}", good.cert_pem, chain_pems.concat()).as_bytes(),
    );
    let expired = pki.issue(
        "expired",
        LeafOpts::new(&[SNI]).valid_secs(-10 * 86_400, -86_400),
    );
    let not_yet = pki.issue(
        "not-yet",
        LeafOpts::new(&[SNI]).valid_secs(86_400, 90 * 86_400),
    );
    let other_name = pki.leaf("other-name", &["other.test.example"]);
    // 1 MB of deterministic garbage (under the 1 MiB input limit, so it is parsed), and
    // one byte over the limit (refused unread).
    let garbage: Vec<u8> = (0u32..1_000_000)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let garbage_file = pki.write_file("garbage.crt", &garbage);
    let huge = pki.write_file("huge.crt", &vec![b'A'; (1 << 20) + 1]);

    let cases: Vec<(&str, String, Vec<String>)> = vec![
        (
            "DER instead of PEM",
            inventory(
                &rig,
                &good.der_file(),
                Some(&good.chain),
                &good.key,
                &target,
                "",
            ),
            vec![good.der_file().display().to_string(), "DER".into()],
        ),
        (
            "encrypted key",
            inventory(
                &rig,
                &good.cert,
                Some(&good.chain),
                &good.encrypted_key(),
                &target,
                "",
            ),
            vec![
                good.encrypted_key().display().to_string(),
                "encrypted".into(),
            ],
        ),
        (
            "chain out of order",
            inventory(&rig, &good.cert, Some(&reversed), &good.key, &target, ""),
            vec![reversed.display().to_string(), "order".into()],
        ),
        (
            "leaf twice",
            inventory(&rig, &good.cert, Some(&leaf_twice), &good.key, &target, ""),
            vec![leaf_twice.display().to_string(), "leaf".into()],
        ),
        (
            "wrong key type (RSA key, EC certificate)",
            inventory(
                &rig,
                &good.cert,
                Some(&good.chain),
                &pki.rsa_key(),
                &target,
                "",
            ),
            vec![pki.rsa_key().display().to_string(), "RSA".into()],
        ),
        (
            "key of another certificate",
            inventory(
                &rig,
                &good.cert,
                Some(&good.chain),
                &pki.wrong_key(),
                &target,
                "",
            ),
            vec![
                pki.wrong_key().display().to_string(),
                "does not belong".into(),
            ],
        ),
        (
            "expired",
            inventory(
                &rig,
                &expired.cert,
                Some(&expired.chain),
                &expired.key,
                &target,
                "",
            ),
            vec![expired.cert.display().to_string(), "expired".into()],
        ),
        (
            "not yet valid",
            inventory(
                &rig,
                &not_yet.cert,
                Some(&not_yet.chain),
                &not_yet.key,
                &target,
                "",
            ),
            vec![not_yet.cert.display().to_string(), "not valid yet".into()],
        ),
        (
            "names do not cover the SNI",
            inventory(
                &rig,
                &other_name.cert,
                Some(&other_name.chain),
                &other_name.key,
                &target,
                "",
            ),
            vec!["does not cover".into(), format!("`{SNI}`")],
        ),
        (
            "1 MB of garbage",
            inventory(
                &rig,
                &garbage_file,
                Some(&good.chain),
                &good.key,
                &target,
                "",
            ),
            vec![garbage_file.display().to_string(), "is binary".into()],
        ),
        (
            "more than 1 MiB",
            inventory(&rig, &huge, Some(&good.chain), &good.key, &target, ""),
            vec![huge.display().to_string(), "at most 1 MiB".into()],
        ),
        (
            "key file given as the certificate",
            inventory(&rig, &good.key, Some(&good.chain), &good.key, &target, ""),
            vec![good.key.display().to_string(), "PRIVATE KEY".into()],
        ),
        (
            "missing file",
            inventory(
                &rig,
                &pki_dir.join("nope.crt"),
                Some(&good.chain),
                &good.key,
                &target,
                "",
            ),
            vec![pki_dir.join("nope.crt").display().to_string()],
        ),
        (
            "committed fixture: bad base64",
            inventory(
                &rig,
                &committed("bad-base64.crt"),
                None,
                &good.key,
                &target,
                "",
            ),
            vec!["bad-base64.crt".into()],
        ),
        (
            "committed fixture: no END line",
            inventory(
                &rig,
                &committed("no-end-line.crt"),
                None,
                &good.key,
                &target,
                "",
            ),
            vec!["no-end-line.crt".into()],
        ),
        (
            "committed fixture: empty file",
            inventory(&rig, &committed("empty.crt"), None, &good.key, &target, ""),
            vec!["empty.crt".into()],
        ),
        (
            "committed fixture: prose",
            inventory(&rig, &committed("prose.crt"), None, &good.key, &target, ""),
            vec!["prose.crt".into()],
        ),
        (
            "committed fixture: empty PEM block",
            inventory(
                &rig,
                &committed("empty-block.crt"),
                None,
                &good.key,
                &target,
                "",
            ),
            vec!["empty-block.crt".into()],
        ),
    ];
    for (case, yaml, says) in cases {
        let mut says: Vec<&str> = says.iter().map(String::as_str).collect();
        says.push("certificate `www`");
        refused(&rig, case, &yaml, &says);
    }
    assert_eq!(rig.served(), Served::Old);
}

/// `# expect: TEXT` on the first line; the first key under `connectors:` is the name.
fn connector_case(path: &Path) -> (String, String, String) {
    let text = fs::read_to_string(path).unwrap();
    let expect = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("# expect: "))
        .unwrap_or_else(|| panic!("{}: first line is `# expect: TEXT`", path.display()))
        .to_string();
    let name = text
        .lines()
        .skip_while(|l| !l.starts_with("connectors:"))
        .nth(1)
        .and_then(|l| l.trim().strip_suffix(':'))
        .unwrap_or_else(|| panic!("{}: a connector under `connectors:`", path.display()))
        .to_string();
    (expect, name, text)
}

#[test]
fn broken_connector_definitions_are_refused_naming_the_connector_and_the_line() {
    let rig = Rig::start(RigOptions::default());
    let mut files: Vec<PathBuf> = fs::read_dir(corpus("connectors"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 8, "the connector corpus is there: {files:?}");
    for file in files {
        let (expect, name, text) = connector_case(&file);
        let case = file.file_name().unwrap().to_string_lossy().into_owned();
        let target = format!(
            "    connector: {name}\n    params:\n      tmp_dir: {}\n      backup_dir: {}\n",
            p(&rig.tmp_dir()),
            p(&rig.backup_dir())
        );
        let yaml = inventory(
            &rig,
            &rig.new.leaf.cert,
            Some(&rig.new.leaf.chain),
            &rig.new.leaf.key,
            &target,
            &text,
        );
        let inventory_name = rig.inventory.display().to_string();
        let stderr = refused(&rig, &case, &yaml, &[&expect]);
        // The location: FILE:LINE:COL of the inventory, pointing into the connector.
        let located = stderr
            .lines()
            .any(|l| l.contains(&format!("{inventory_name}:")) && l.contains(&expect));
        assert!(
            located,
            "{case}: names the inventory file and line:\n{stderr}"
        );
    }
}

#[test]
fn hostile_values_in_params_and_names_are_refused() {
    let rig = Rig::start(RigOptions::default());
    let base = nginx_target(&rig);
    let with = |key: &str, value: &str| -> String {
        // Replace (or add) one param of the rig's nginx target.
        let line = format!("      {key}: {}\n", j(value));
        let mut out = String::new();
        let mut replaced = false;
        for l in base.lines() {
            if l.trim_start().starts_with(&format!("{key}:")) {
                out.push_str(&line);
                replaced = true;
            } else {
                out.push_str(l);
                out.push('\n');
                if l == "    params:" && !base.contains(&format!("      {key}:")) {
                    out.push_str(&line);
                    replaced = true;
                }
            }
        }
        assert!(replaced);
        out
    };
    let cert_dir = rig.cert_dir().display().to_string();
    let cases: Vec<(&str, String, Vec<String>)> = vec![
        (
            "newline in a path",
            with("key_path", &format!("{cert_dir}/key\n.pem")),
            vec!["`key` file".into(), "control character".into()],
        ),
        (
            "`..` in a path",
            with("fullchain_path", &format!("{cert_dir}/../../etc/x.pem")),
            vec!["`fullchain` file".into(), "`..`".into()],
        ),
        (
            "relative path with a leading dash",
            with("key_path", "-rf"),
            vec!["`key` file".into(), "absolute path".into()],
        ),
        (
            "`..` in backup_dir",
            with("backup_dir", "/var/lib/../../tmp/backups"),
            vec!["backup_dir".into(), "`..`".into()],
        ),
        (
            "tmp_dir relative",
            with("tmp_dir", "tmp; rm -rf /"),
            vec!["tmp_dir".into(), "absolute path".into()],
        ),
        (
            "a directory instead of a file",
            with("fullchain_path", &format!("{cert_dir}/")),
            vec!["`fullchain` file".into(), "directory".into()],
        ),
        (
            "param the connector does not have",
            with("fullchain_paht", "/etc/x.pem"),
            vec!["fullchain_paht".into(), "fullchain_path".into()],
        ),
        (
            "mode that is not octal",
            with("mode", "rw-r--r--"),
            vec!["mode".into(), "octal".into()],
        ),
    ];
    for (case, target, says) in cases {
        let yaml = inventory(
            &rig,
            &rig.new.leaf.cert,
            Some(&rig.new.leaf.chain),
            &rig.new.leaf.key,
            &target,
            "",
        );
        // Located: the inventory's FILE:LINE:COL.
        let located = format!("{}:", rig.inventory.display());
        let mut says: Vec<&str> = says.iter().map(String::as_str).collect();
        says.push(&located);
        refused(&rig, case, &yaml, &says);
    }
    // Hostile target names: a newline or a control character is refused where it stands.
    for (case, name) in [
        ("newline in a target name", "web\n1"),
        ("escape in a target name", "web\u{1b}[31m-1"),
    ] {
        let yaml = inventory(
            &rig,
            &rig.new.leaf.cert,
            Some(&rig.new.leaf.chain),
            &rig.new.leaf.key,
            &base,
            "",
        )
        .replace("  - name: web-1\n", &format!("  - name: {}\n", j(name)));
        let stderr = refused(&rig, case, &yaml, &[]);
        assert!(
            stderr.contains(&format!("{}:", rig.inventory.display())),
            "{case}: located: {stderr}"
        );
        assert!(
            !stderr.contains('\u{1b}'),
            "{case}: no raw escape: {stderr:?}"
        );
    }
}

#[test]
fn shell_metacharacters_in_paths_reach_the_target_as_literal_names() {
    // Spaces, quotes, `$(…)`, backticks, `;`, `&`, `*` and a leading dash in a component are
    // legal in file names: certctl must quote them, never interpret them. The backup
    // directory is used by the engine's own scripts only (lock, backup, prune, restore).
    let rig = Rig::start(RigOptions::default());
    let canary = rig.dir().join("canary");
    let backup = rig.dir().join(hostile_name(&canary));
    rig.write_inventory(&InventorySpec {
        params: vec![("backup_dir".into(), backup.display().to_string())],
        ..InventorySpec::default()
    });
    let out = rig.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["targets"][0]["status"], "deployed");
    assert_eq!(rig.served(), Served::New);
    assert!(!canary.exists(), "nothing in a path was executed");
    let sets: Vec<_> = fs::read_dir(&backup).unwrap().collect();
    assert_eq!(sets.len(), 1, "one backup set, in the literal directory");
    // `certctl rollback` reads the same directory back.
    let out = rig.certctl(&["rollback", "--output", "json"]);
    assert_eq!(
        out.json()["targets"][0]["status"],
        "rolled-back",
        "{}",
        out.stderr
    );
    assert_eq!(rig.served(), Served::Old);
    assert_eq!(rig.live_set(), LiveSet::Old);
    assert!(!canary.exists(), "nothing in a path was executed");
}

fn hostile_name(canary: &Path) -> String {
    format!(
        "we ird 'q' \"d\" $(touch {c}) `touch {c}`; touch {c} & -rf *",
        c = canary.display()
    )
}

#[test]
fn a_tmp_dir_with_spaces_and_config_comment_characters_deploys() {
    // nginx reads the preview config's paths as quoted strings: a space, `;`, `#`, `'` are
    // literal characters there.
    let rig = Rig::start(RigOptions::default());
    let tmp = rig.dir().join("tmp dir; #'q'");
    fs::create_dir_all(&tmp).unwrap();
    rig.write_inventory(&InventorySpec {
        params: vec![("tmp_dir".into(), tmp.display().to_string())],
        ..InventorySpec::default()
    });
    let out = rig.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["targets"][0]["status"], "deployed");
    assert_eq!(rig.served(), Served::New);
    assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0, "scratch removed");
}

#[test]
fn a_tmp_dir_a_config_string_cannot_carry_is_refused_up_front() {
    let rig = Rig::start(RigOptions::default());
    let canary = rig.dir().join("canary");
    let tmp = rig.dir().join(hostile_name(&canary));
    fs::create_dir_all(&tmp).unwrap();
    rig.write_inventory(&InventorySpec {
        params: vec![("tmp_dir".into(), tmp.display().to_string())],
        ..InventorySpec::default()
    });
    let out = rig.certctl(&["deploy", "--output", "json"]);
    assert!(!canary.exists(), "nothing in a path was executed");
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("template `preview.conf`: `{tmpdir}` is"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("web-1"),
        "names the target: {}",
        out.stderr
    );
    assert_eq!(rig.logins(), 0, "refused before connecting");
    assert_eq!(rig.live_set(), LiveSet::Old);
}
