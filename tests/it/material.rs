//! Certificate material against test-time PKI (tests/it/support/pki.rs): every accepted key
//! format, every rejection docs/inventory.md#material-checks names, and fingerprints
//! cross-checked with openssl.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;

use certctl::material::{Fingerprint, KeyKind, KeySource, Material, MaterialSpec, parse_certs};
use support::pki::{KeyType, Leaf, LeafOpts, Pki, openssl_fingerprint, openssl_ok};

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn spec(cert: &Path, chain: Option<&Path>, key: KeySource) -> MaterialSpec {
    MaterialSpec::new("www", cert, chain.map(Into::into), key)
}

fn file_key(path: &Path) -> KeySource {
    KeySource::File(path.to_path_buf())
}

/// The leaf's own files: cert + chain + key.
fn leaf_spec(leaf: &Leaf) -> MaterialSpec {
    spec(&leaf.cert, Some(&leaf.chain), file_key(&leaf.key))
}

fn load(spec: &MaterialSpec) -> Material {
    Material::load(spec).unwrap_or_else(|e| panic!("load: {e}"))
}

fn load_err(spec: &MaterialSpec) -> String {
    match Material::load(spec) {
        Ok(_) => panic!("loaded, but an error was expected"),
        Err(e) => e.to_string(),
    }
}

fn check_err(material: &Material, names: &[&str]) -> String {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    match material.check(&names, now()) {
        Ok(w) => panic!("check passed (warnings {w:?}), but an error was expected"),
        Err(e) => e.to_string(),
    }
}

fn check_ok(material: &Material, names: &[&str]) -> Vec<String> {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    material
        .check(&names, now())
        .unwrap_or_else(|e| panic!("check: {e}"))
}

fn assert_contains(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "expected {part:?} in:\n{text}");
    }
}

fn pki() -> (tempfile::TempDir, Pki) {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    (dir, pki)
}

fn label(pem: &[u8]) -> String {
    String::from_utf8_lossy(pem)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn every_accepted_key_format_loads_and_matches() {
    let (_dir, pki) = pki();
    let cases = [
        (
            KeyType::EcP256,
            KeyKind::Ecdsa,
            "-----BEGIN EC PRIVATE KEY-----",
        ),
        (
            KeyType::EcP384,
            KeyKind::Ecdsa,
            "-----BEGIN EC PRIVATE KEY-----",
        ),
        (
            KeyType::Rsa2048,
            KeyKind::Rsa,
            "-----BEGIN RSA PRIVATE KEY-----",
        ),
        (
            KeyType::Ed25519,
            KeyKind::Ed25519,
            "-----BEGIN PRIVATE KEY-----",
        ),
    ];
    for (i, (key_type, kind, traditional_label)) in cases.into_iter().enumerate() {
        let leaf = pki.issue(
            &format!("k{i}"),
            LeafOpts::new(&["www.example.com"]).key(key_type),
        );
        // PKCS#8 (as generated), then OpenSSL's traditional form: PKCS#1 for RSA, SEC1 for EC
        // (Ed25519 has none; openssl writes PKCS#8 again).
        for (key_path, expected_label) in [
            (leaf.key.clone(), "-----BEGIN PRIVATE KEY-----"),
            (leaf.traditional_key(), traditional_label),
        ] {
            let material = load(&spec(&leaf.cert, Some(&leaf.chain), file_key(&key_path)));
            assert_eq!(
                material.key_kind,
                kind,
                "{key_type:?} {}",
                key_path.display()
            );
            // The key keeps its format; it is only re-encoded cleanly.
            assert_eq!(
                label(material.key_pem().expose()),
                expected_label,
                "{key_type:?}"
            );
            let warnings = check_ok(&material, &["www.example.com"]);
            assert!(warnings.is_empty(), "{warnings:?}");
        }
    }
}

#[test]
fn fingerprints_agree_with_openssl() {
    let (_dir, pki) = pki();
    let leaf = pki.leaf("www", &["www.example.com"]);
    let material = load(&leaf_spec(&leaf));
    assert_eq!(
        material.leaf.fingerprint.to_string(),
        leaf.openssl_fingerprint()
    );
    assert_eq!(material.chain.len(), 1);
    assert_eq!(
        material.chain[0].fingerprint.to_string(),
        openssl_fingerprint(&leaf.chain)
    );
    assert_eq!(
        Fingerprint::parse(&leaf.openssl_fingerprint()),
        Some(material.leaf.fingerprint)
    );
    let expected = material.expected();
    assert_eq!(expected.leaf, material.leaf.fingerprint);
    assert_eq!(expected.chain, vec![material.chain[0].fingerprint]);
    assert_eq!(material.leaf.sans, vec!["www.example.com".to_string()]);
    assert!(
        material.leaf.subject.contains("CN=www.example.com"),
        "{}",
        material.leaf.subject
    );
}

#[test]
fn outputs_are_canonical_pem() {
    let (dir, pki) = pki();
    let leaf = pki.leaf("www", &["www.example.com"]);
    // A messy full chain: CRLF, a comment, `Bag Attributes` like openssl pkcs12 writes.
    let messy = format!(
        "Bag Attributes\r\n    friendlyName: www\r\n{}\r\n# comment\r\n{}",
        leaf.cert_pem,
        pki.chain_pem()
    )
    .replace('\n', "\r\n")
    .replace("\r\r\n", "\r\n");
    let messy_path = dir.path().join("messy.pem");
    std::fs::write(&messy_path, messy).unwrap();
    let material = load(&spec(&messy_path, None, file_key(&leaf.key)));

    let openssl_leaf = openssl_ok(&["x509", "-in", leaf.cert.to_str().unwrap()]);
    assert_eq!(material.cert_pem(), openssl_leaf);
    let openssl_chain = openssl_ok(&["x509", "-in", leaf.chain.to_str().unwrap()]);
    assert_eq!(material.chain_pem(), openssl_chain);
    let mut fullchain = openssl_leaf.clone();
    fullchain.extend_from_slice(&openssl_chain);
    assert_eq!(material.fullchain_pem(), fullchain);

    let key = material.key_pem().expose().to_vec();
    // rcgen writes canonical PEM, so the re-encoded key is byte-identical to the file.
    assert_eq!(key, leaf.key_pem.as_bytes());
    let mut bundle = fullchain.clone();
    bundle.extend_from_slice(&key);
    assert_eq!(material.bundle_pem().expose(), &bundle[..]);
    assert_eq!(format!("{:?}", material.bundle_pem()), "(redacted)");
    assert!(!format!("{material:?}").contains("PRIVATE KEY"));

    let back = parse_certs(material.bundle_pem().expose()).unwrap();
    assert_eq!(back.len(), 2);
    assert_eq!(back[0].fingerprint, material.leaf.fingerprint);
}

#[test]
fn a_full_chain_in_cert_is_split_and_a_repeated_chain_file_is_accepted() {
    let (dir, pki) = pki();
    let leaf = pki.leaf("www", &["www.example.com"]);
    let from_fullchain = load(&spec(&leaf.fullchain, None, file_key(&leaf.key)));
    assert_eq!(from_fullchain.chain.len(), 1);
    assert_eq!(
        from_fullchain.leaf.fingerprint.to_string(),
        leaf.openssl_fingerprint()
    );
    // certbot's layout named twice: fullchain as cert AND chain.pem as chain.
    let both = load(&spec(
        &leaf.fullchain,
        Some(&leaf.chain),
        file_key(&leaf.key),
    ));
    assert_eq!(both.chain, from_fullchain.chain);
    check_ok(&both, &["www.example.com"]);
    // A different chain on top of a full chain is a contradiction.
    let other = Pki::new(&dir.path().join("other"));
    let err = load_err(&spec(
        &leaf.fullchain,
        Some(&other.leaf("x", &["x.test"]).chain),
        file_key(&leaf.key),
    ));
    assert_contains(
        &err,
        &[
            "certificate `www`",
            "already holds 1 certificate after the leaf",
            "in one place",
        ],
    );
}

#[test]
fn wrong_key_is_rejected_naming_both_files() {
    let (_dir, pki) = pki();
    let leaf = pki.leaf("www", &["www.example.com"]);
    let wrong = pki.wrong_key();
    let material = load(&spec(&leaf.cert, Some(&leaf.chain), file_key(&wrong)));
    let err = check_err(&material, &["www.example.com"]);
    assert_contains(
        &err,
        &[
            "certificate `www`: ",
            &wrong.display().to_string(),
            "does not belong to the certificate",
            &leaf.cert.display().to_string(),
        ],
    );
}

#[test]
fn rsa_key_for_an_ec_certificate_is_rejected() {
    // nginx -t passes this pair and then fails every handshake (daemons.md §3).
    let (_dir, pki) = pki();
    let leaf = pki.leaf("www", &["www.example.com"]);
    let material = load(&spec(
        &leaf.cert,
        Some(&leaf.chain),
        file_key(&pki.rsa_key()),
    ));
    assert_eq!(material.key_kind, KeyKind::Rsa);
    let err = check_err(&material, &["www.example.com"]);
    assert_contains(
        &err,
        &[
            "the private key is RSA but the certificate",
            "has an ECDSA public key",
        ],
    );
}

#[test]
fn truncated_files_are_rejected() {
    let (_dir, pki) = pki();
    let leaf = pki.leaf("www", &["www.example.com"]);
    let cert = pki.truncated(&leaf.cert, 300);
    let err = load_err(&spec(&cert, None, file_key(&leaf.key)));
    assert_contains(
        &err,
        &[
            "certificate `www`: ",
            &cert.display().to_string(),
            "truncated PEM",
            "BEGIN CERTIFICATE",
        ],
    );
    let key = pki.truncated(&leaf.key, 100);
    let err = load_err(&spec(&leaf.cert, None, file_key(&key)));
    assert_contains(
        &err,
        &[
            &key.display().to_string(),
            "truncated PEM",
            "BEGIN PRIVATE KEY",
        ],
    );
    // Cut exactly after a full line: still no END line.
    let text = std::fs::read_to_string(&leaf.cert).unwrap();
    let cut = text
        .lines()
        .take(3)
        .map(|l| format!("{l}\n"))
        .collect::<String>();
    let path = pki.write_file("cut.crt", cut.as_bytes());
    assert_contains(
        &load_err(&spec(&path, None, file_key(&leaf.key))),
        &["truncated PEM"],
    );
}

#[test]
fn der_instead_of_pem_is_rejected_with_the_conversion() {
    let (_dir, pki) = pki();
    let leaf = pki.leaf("www", &["www.example.com"]);
    let err = load_err(&spec(&leaf.der_file(), None, file_key(&leaf.key)));
    assert_contains(&err, &["binary DER, not PEM", "openssl x509 -inform der"]);
    let der_key = pki.dir().join("www.key.der");
    openssl_ok(&[
        "pkey",
        "-in",
        leaf.key.to_str().unwrap(),
        "-outform",
        "der",
        "-out",
        der_key.to_str().unwrap(),
    ]);
    let err = load_err(&spec(&leaf.cert, None, file_key(&der_key)));
    assert_contains(&err, &["binary DER, not PEM", "openssl pkey -inform der"]);
}

#[test]
fn encrypted_keys_are_rejected_with_advice() {
    let (_dir, pki) = pki();
    let leaf = pki.leaf("www", &["www.example.com"]);
    for key in [leaf.encrypted_key(), leaf.encrypted_traditional_key()] {
        let err = load_err(&spec(&leaf.cert, None, file_key(&key)));
        assert_contains(
            &err,
            &[
                &key.display().to_string(),
                "encrypted",
                "unencrypted key",
                "key_command",
            ],
        );
    }
}

#[test]
fn keys_and_certificates_in_the_wrong_place() {
    let (_dir, pki) = pki();
    let leaf = pki.leaf("www", &["www.example.com"]);
    let err = load_err(&spec(&leaf.key, None, file_key(&leaf.key)));
    assert_contains(&err, &["holds a private key", "name the key with `key`"]);
    let err = load_err(&spec(&leaf.cert, None, file_key(&leaf.cert)));
    assert_contains(&err, &["holds a certificate, not a private key"]);
    let combined = pki.write_file(
        "combined.pem",
        format!("{}{}", leaf.key_pem, leaf.cert_pem).as_bytes(),
    );
    let err = load_err(&spec(&leaf.cert, None, file_key(&combined)));
    assert_contains(&err, &["holds a certificate as well as the private key"]);
    let two_keys = pki.write_file(
        "two.key",
        format!("{}{}", leaf.key_pem, leaf.key_pem).as_bytes(),
    );
    assert_contains(
        &load_err(&spec(&leaf.cert, None, file_key(&two_keys))),
        &["2 private keys"],
    );
    let csr = pki.write_file(
        "req.pem",
        b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
    );
    assert_contains(
        &load_err(&spec(&csr, None, file_key(&leaf.key))),
        &["certificate signing request"],
    );
    let public = pki.write_file(
        "pub.pem",
        b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    );
    assert_contains(
        &load_err(&spec(&public, None, file_key(&leaf.key))),
        &["non-certificate PEM block", "PUBLIC KEY"],
    );
    let text = pki.write_file("text.crt", b"hello, I am not a certificate\n");
    assert_contains(
        &load_err(&spec(&text, None, file_key(&leaf.key))),
        &["no PEM certificate found"],
    );
    let empty = pki.write_file("empty.crt", b"");
    assert_contains(
        &load_err(&spec(&empty, None, file_key(&leaf.key))),
        &["is empty"],
    );
    let missing = pki.dir().join("missing.crt");
    assert_contains(
        &load_err(&spec(&missing, None, file_key(&leaf.key))),
        &["missing.crt: cannot read", "No such file"],
    );
    // SEC1 keys written by `openssl ecparam -genkey` start with an EC PARAMETERS block: fine.
    let trad = std::fs::read_to_string(leaf.traditional_key()).unwrap();
    let with_params = pki.write_file(
        "params.key",
        format!(
            "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n{trad}"
        )
        .as_bytes(),
    );
    check_ok(&load(&spec(&leaf.cert, None, file_key(&with_params))), &[]);
}

#[test]
fn huge_files_are_refused() {
    let (_dir, pki) = pki();
    let leaf = pki.leaf("www", &["www.example.com"]);
    let mut big = leaf.cert_pem.clone().into_bytes();
    big.resize((1 << 20) + 1, b'\n');
    let path = pki.write_file("big.crt", &big);
    assert_contains(
        &load_err(&spec(&path, None, file_key(&leaf.key))),
        &["at most 1 MiB"],
    );
}

#[test]
fn validity_window() {
    let (_dir, pki) = pki();
    let day = 86_400;
    let expired = pki.issue(
        "old",
        LeafOpts::new(&["www.example.com"]).valid_secs(-90 * day, -day),
    );
    assert_contains(
        &check_err(&load(&leaf_spec(&expired)), &[]),
        &["expired on", &expired.cert.display().to_string()],
    );

    let future = pki.issue(
        "new",
        LeafOpts::new(&["www.example.com"]).valid_secs(3 * day + 3600, 90 * day),
    );
    assert_contains(
        &check_err(&load(&leaf_spec(&future)), &[]),
        &["is not valid yet", "(in 3 days)"],
    );

    let soon = pki.issue(
        "soon",
        LeafOpts::new(&["www.example.com"]).valid_secs(-day, 5 * day + 3600),
    );
    let warnings = check_ok(&load(&leaf_spec(&soon)), &["www.example.com"]);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_contains(&warnings[0], &["expires in 5 days"]);

    let fine = pki.issue(
        "fine",
        LeafOpts::new(&["www.example.com"]).valid_secs(-day, 15 * day),
    );
    assert!(check_ok(&load(&leaf_spec(&fine)), &[]).is_empty());
}

#[test]
fn chain_order_and_membership() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::with_intermediates(dir.path(), 2);
    let leaf = pki.leaf("www", &["www.example.com"]);
    let material = load(&leaf_spec(&leaf));
    assert_eq!(material.chain.len(), 2);
    check_ok(&material, &["www.example.com"]);

    // Intermediates listed root-side first.
    let reversed: String = {
        let ders = pki.chain_ders();
        ders.iter().rev().map(|d| pem("CERTIFICATE", d)).collect()
    };
    let reversed = pki.write_file("reversed.pem", reversed.as_bytes());
    let err = check_err(
        &load(&spec(&leaf.cert, Some(&reversed), file_key(&leaf.key))),
        &[],
    );
    assert_contains(
        &err,
        &["the chain is out of order", "reversed.pem (certificate 2)"],
    );

    // The leaf again in the chain (fullchain given as `chain`).
    let err = check_err(
        &load(&spec(
            &leaf.cert,
            Some(&leaf.fullchain),
            file_key(&leaf.key),
        )),
        &[],
    );
    assert_contains(
        &err,
        &[
            "the leaf certificate",
            "appears again in the chain",
            "fullchain.pem (certificate 1)",
        ],
    );

    // A full-chain file with the intermediates before the leaf.
    let upside_down = pki.write_file(
        "upside.pem",
        format!("{}{}", pki.chain_pem(), leaf.cert_pem).as_bytes(),
    );
    let err = check_err(&load(&spec(&upside_down, None, file_key(&leaf.key))), &[]);
    assert_contains(
        &err,
        &["starts with the CA certificate", "the leaf must come first"],
    );

    // A chain of another PKI.
    let other = Pki::new(&dir.path().join("other")).leaf("x", &["x.test"]);
    let err = check_err(
        &load(&spec(&leaf.cert, Some(&other.chain), file_key(&leaf.key))),
        &[],
    );
    assert_contains(&err, &["the chain does not belong to this certificate"]);
}

#[test]
fn an_intermediate_with_the_right_name_but_another_key_is_caught() {
    let (dir, pki) = pki();
    let leaf = pki.leaf("www", &["www.example.com"]);
    let impostor = pki.impostor_intermediate();
    let err = check_err(
        &load(&spec(&leaf.cert, Some(&impostor), file_key(&leaf.key))),
        &[],
    );
    assert_contains(
        &err,
        &[
            "is not signed by the key of the certificate at",
            "impostor.crt",
        ],
    );
    drop(dir);
}

#[test]
fn no_chain_warns_unless_self_signed() {
    let (_dir, pki) = pki();
    let leaf = pki.leaf("www", &["www.example.com"]);
    let warnings = check_ok(&load(&spec(&leaf.cert, None, file_key(&leaf.key))), &[]);
    assert_contains(
        &warnings.join("\n"),
        &["no intermediate certificate is given"],
    );
    let own = pki.self_signed("self", &["self.test"]);
    assert!(
        check_ok(
            &load(&spec(&own.cert, None, file_key(&own.key))),
            &["self.test"]
        )
        .is_empty()
    );
}

#[test]
fn names_must_be_covered() {
    let (_dir, pki) = pki();
    let leaf = pki.leaf(
        "www",
        &["www.example.com", "*.apps.example.com", "127.0.0.1", "::1"],
    );
    let material = load(&leaf_spec(&leaf));
    check_ok(
        &material,
        &[
            "www.example.com",
            "WWW.EXAMPLE.COM.",
            "a.apps.example.com",
            "127.0.0.1",
            "0:0::1",
        ],
    );
    let err = check_err(
        &material,
        &[
            "example.com",
            "a.b.apps.example.com",
            "apps.example.com",
            "127.0.0.2",
        ],
    );
    assert_contains(
        &err,
        &[
            "does not cover `example.com`, `a.b.apps.example.com`, `apps.example.com`, `127.0.0.2`",
            "it covers: www.example.com",
        ],
    );
    assert_eq!(material.default_sni().as_deref(), Some("www.example.com"));

    let wildcard_only = pki.leaf("wild", &["*.example.com"]);
    let material = load(&leaf_spec(&wildcard_only));
    check_ok(&material, &["shop.example.com"]);
    assert_eq!(material.default_sni(), None);

    let ip_only = pki.leaf("ip", &["127.0.0.1"]);
    assert_eq!(
        load(&leaf_spec(&ip_only)).default_sni().as_deref(),
        Some("127.0.0.1")
    );

    // No SAN at all: the CN counts (and only then).
    let cn_only = pki.issue("cn", LeafOpts::new(&[]).cn("legacy.example.com"));
    let material = load(&leaf_spec(&cn_only));
    check_ok(&material, &["legacy.example.com"]);
    assert_eq!(
        material.default_sni().as_deref(),
        Some("legacy.example.com")
    );
    let with_san = pki.issue(
        "cn2",
        LeafOpts::new(&["san.example.com"]).cn("cn.example.com"),
    );
    assert_contains(
        &check_err(&load(&leaf_spec(&with_san)), &["cn.example.com"]),
        &["does not cover `cn.example.com`"],
    );
}

#[test]
fn several_problems_are_reported_together() {
    let (_dir, pki) = pki();
    let day = 86_400;
    let expired = pki.issue(
        "old",
        LeafOpts::new(&["www.example.com"]).valid_secs(-90 * day, -day),
    );
    let material = load(&spec(
        &expired.cert,
        Some(&expired.chain),
        file_key(&pki.wrong_key()),
    ));
    let err = check_err(&material, &["other.example.com"]);
    assert_contains(
        &err,
        &[
            "does not belong",
            "expired on",
            "does not cover `other.example.com`",
        ],
    );
}

#[test]
fn key_command_output_is_the_key() {
    let (_dir, pki) = pki();
    let leaf = pki.leaf("www", &["www.example.com"]);
    let argv = vec!["cat".to_string(), leaf.key.display().to_string()];
    let material = load(&spec(
        &leaf.cert,
        Some(&leaf.chain),
        KeySource::Command(argv),
    ));
    check_ok(&material, &["www.example.com"]);
}

#[test]
fn failing_key_command_names_the_program_and_its_stderr_never_its_stdout() {
    let (_dir, pki) = pki();
    let leaf = pki.leaf("www", &["www.example.com"]);
    let script = "echo 'vault: permission denied' >&2; echo SECRET-ON-STDOUT; exit 3";
    let argv = vec!["sh".to_string(), "-c".to_string(), script.to_string()];
    let err = load_err(&spec(&leaf.cert, None, KeySource::Command(argv)));
    assert_contains(
        &err,
        &[
            "key_command `sh`",
            "`sh` failed (exit status: 3)",
            "vault: permission denied",
        ],
    );
    assert!(!err.contains("SECRET-ON-STDOUT"), "{err}");

    let argv = vec!["/nonexistent/vault".to_string()];
    assert_contains(
        &load_err(&spec(&leaf.cert, None, KeySource::Command(argv))),
        &["could not run `/nonexistent/vault`"],
    );
    let argv = vec!["true".to_string()];
    assert_contains(
        &load_err(&spec(&leaf.cert, None, KeySource::Command(argv))),
        &["printed nothing on stdout"],
    );
    assert_contains(
        &load_err(&spec(&leaf.cert, None, KeySource::Command(vec![]))),
        &["the command is empty"],
    );
}

#[test]
fn missing_key_env_is_named() {
    let (_dir, pki) = pki();
    let leaf = pki.leaf("www", &["www.example.com"]);
    let err = load_err(&spec(
        &leaf.cert,
        None,
        KeySource::Env("CERTCTL_TEST_NEVER_SET_7F3A".into()),
    ));
    assert_contains(&err, &["key_env `CERTCTL_TEST_NEVER_SET_7F3A`", "not set"]);
}

/// `std::env::set_var` is unsafe (edition 2024) and this crate forbids unsafe code, so the
/// variable is set on a child copy of this test binary, which runs the ignored test below.
#[test]
fn key_env_holds_the_key() {
    let (_dir, pki) = pki();
    let leaf = pki.leaf("www", &["www.example.com"]);
    let one_line = leaf.key_pem.trim_end().replace('\n', "\\n");
    for value in [leaf.key_pem.clone(), one_line] {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "material::key_env_child",
                "--test-threads=1",
            ])
            .env("CERTCTL_TEST_KEY_PEM", value)
            .env("CERTCTL_TEST_CERT", &leaf.cert)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
#[ignore = "run by key_env_holds_the_key with the environment set"]
fn key_env_child() {
    let cert =
        PathBuf::from(std::env::var_os("CERTCTL_TEST_CERT").expect("run by key_env_holds_the_key"));
    let material = load(&spec(
        &cert,
        None,
        KeySource::Env("CERTCTL_TEST_KEY_PEM".into()),
    ));
    check_ok(&material, &["www.example.com"]);
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}
