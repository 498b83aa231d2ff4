//! The PKCS#12 writer (src/pkcs12/) read back by the real `openssl pkcs12`: the profile
//! (PBES2 / PBKDF2-SHA256 / AES-256-CBC, SHA-256 MAC), the certificates in order, the same key
//! (public keys compared), the attributes, and a wrong password rejected. RSA, ECDSA P-256 and
//! Ed25519; PKCS#8 and the traditional key forms. Passwords go to openssl through files only.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use certctl::material::{KeySource, Material, MaterialSpec, parse_certs};
use certctl::pkcs12;
use certctl::secret::Secret;
use support::pki::{KeyType, Leaf, LeafOpts, Pki, openssl_ok};

fn load(leaf: &Leaf, key: &Path) -> Material {
    Material::load(&MaterialSpec::new(
        leaf.name.clone(),
        leaf.cert.clone(),
        Some(leaf.chain.clone().into()),
        KeySource::File(key.to_path_buf()),
    ))
    .unwrap()
}

fn write_private(path: &Path, bytes: &[u8]) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
}

/// Writes the PFX and its password file; returns their paths.
fn write_pfx(dir: &Path, name: &str, pfx: &Secret, password: &Secret) -> (PathBuf, PathBuf) {
    let pfx_path = dir.join(format!("{name}.pfx"));
    let pw_path = dir.join(format!("{name}.pw"));
    write_private(&pfx_path, pfx.expose());
    write_private(&pw_path, password.expose());
    (pfx_path, pw_path)
}

fn openssl(args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn public_key_of(key_pem_path: &Path) -> Vec<u8> {
    openssl_ok(&["pkey", "-in", s(key_pem_path), "-pubout"])
}

/// Builds a PFX for `leaf` (key read from `key`), reads it back with openssl, and checks
/// everything the importer relies on.
fn round_trip(dir: &Path, pki: &Pki, leaf: &Leaf, key: &Path, friendly: Option<&str>) {
    let material = load(leaf, key);
    let password = pkcs12::random_password().unwrap();
    let pfx = pkcs12::from_material(&material, &password, friendly).unwrap();
    let name = format!(
        "{}-{}",
        leaf.name,
        key.file_name().unwrap().to_str().unwrap()
    );
    let (pfx_path, pw_path) = write_pfx(dir, &name, &pfx, &password);
    let passin = format!("file:{}", s(&pw_path));

    // Structure and algorithms, as `openssl pkcs12 -info` reports them (on stderr).
    let info = openssl(&[
        "pkcs12",
        "-info",
        "-nokeys",
        "-in",
        s(&pfx_path),
        "-passin",
        &passin,
    ]);
    assert!(
        info.status.success(),
        "{}",
        String::from_utf8_lossy(&info.stderr)
    );
    let report = String::from_utf8_lossy(&info.stderr);
    assert!(
        report.contains("MAC: sha256, Iteration 2048"),
        "MAC profile: {report}"
    );
    assert!(
        report.contains(
            "PKCS7 Encrypted data: PBES2, PBKDF2, AES-256-CBC, Iteration 2048, PRF hmacWithSHA256"
        ),
        "certificate encryption: {report}"
    );
    assert!(
        report.contains(
            "Shrouded Keybag: PBES2, PBKDF2, AES-256-CBC, Iteration 2048, PRF hmacWithSHA256"
        ),
        "key encryption: {report}"
    );

    // Certificates: leaf then chain, byte for byte.
    let certs_pem = String::from_utf8(info.stdout).unwrap();
    let certs = parse_certs(certs_pem.as_bytes()).unwrap();
    let got: Vec<&[u8]> = certs.iter().map(|c| c.der.as_slice()).collect();
    let mut want: Vec<&[u8]> = vec![&leaf.der];
    let chain = pki.chain_ders();
    want.extend(chain.iter().map(Vec::as_slice));
    assert_eq!(got, want, "certificates in order");

    // Attributes: localKeyID is the Windows thumbprint on the leaf (and the key, below).
    let thumbprint = pkcs12::thumbprint(&leaf.der);
    let spaced: Vec<String> = thumbprint
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap().to_string())
        .collect();
    let local_key_id = format!("localKeyID: {}", spaced.join(" "));
    assert_eq!(
        certs_pem.matches(&local_key_id).count(),
        1,
        "only the leaf carries localKeyID: {certs_pem}"
    );
    match friendly {
        Some(f) => assert!(
            certs_pem.contains(&format!("friendlyName: {f}\n")),
            "friendlyName in {certs_pem}"
        ),
        None => assert!(!certs_pem.contains("friendlyName"), "{certs_pem}"),
    }

    // Key: the same key as the input (compared by public key), with the same localKeyID.
    let keys = openssl(&[
        "pkcs12",
        "-nocerts",
        "-nodes",
        "-in",
        s(&pfx_path),
        "-passin",
        &passin,
    ]);
    assert!(
        keys.status.success(),
        "{}",
        String::from_utf8_lossy(&keys.stderr)
    );
    let key_out = String::from_utf8(keys.stdout).unwrap();
    assert!(key_out.contains(&local_key_id), "{key_out}");
    let extracted = dir.join(format!("{name}.extracted.key"));
    write_private(&extracted, key_out.as_bytes());
    assert_eq!(public_key_of(&extracted), public_key_of(&leaf.key));

    // A wrong password is rejected by the MAC check.
    let wrong = dir.join(format!("{name}.wrong"));
    write_private(&wrong, b"not-the-password");
    let bad = openssl(&[
        "pkcs12",
        "-nokeys",
        "-in",
        s(&pfx_path),
        "-passin",
        &format!("file:{}", s(&wrong)),
    ]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("Mac verify error"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[test]
fn ecdsa_p256_pkcs8_and_sec1_read_back_by_openssl() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    let leaf = pki.issue(
        "ec",
        LeafOpts::new(&["www.example.test"]).key(KeyType::EcP256),
    );
    round_trip(
        tmp.path(),
        &pki,
        &leaf,
        &leaf.key,
        Some("www.example.test 2026"),
    );
    round_trip(tmp.path(), &pki, &leaf, &leaf.traditional_key(), None);
}

#[test]
fn rsa_pkcs8_and_pkcs1_read_back_by_openssl() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    let leaf = pki.issue(
        "rsa",
        LeafOpts::new(&["rsa.example.test"]).key(KeyType::Rsa2048),
    );
    round_trip(tmp.path(), &pki, &leaf, &leaf.key, Some("rsa"));
    round_trip(
        tmp.path(),
        &pki,
        &leaf,
        &leaf.traditional_key(),
        Some("rsa"),
    );
}

#[test]
fn ed25519_reads_back_by_openssl() {
    // Windows cannot import Ed25519 keys into its store; OpenSSL reads the file.
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    let leaf = pki.issue(
        "ed",
        LeafOpts::new(&["ed.example.test"]).key(KeyType::Ed25519),
    );
    round_trip(tmp.path(), &pki, &leaf, &leaf.key, None);
}

#[test]
fn a_deep_chain_keeps_its_order_and_hostile_friendly_names_survive() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::with_intermediates(tmp.path(), 3);
    let leaf = pki.leaf("deep", &["deep.example.test"]);
    round_trip(
        tmp.path(),
        &pki,
        &leaf,
        &leaf.key,
        // ASCII only: OpenSSL 3.0 prints a BMPString friendlyName as Latin-1 bytes.
        Some("it's \"$(prod)\"; `x` & 'y'"),
    );
}

#[test]
fn each_pfx_is_fresh_and_the_key_never_appears_in_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    let leaf = pki.leaf("fresh", &["fresh.example.test"]);
    let material = load(&leaf, &leaf.key);
    let password = pkcs12::random_password().unwrap();
    let a = pkcs12::from_material(&material, &password, None).unwrap();
    let b = pkcs12::from_material(&material, &password, None).unwrap();
    assert_ne!(a.expose(), b.expose(), "fresh salts and IVs each time");
    // The PKCS#8 body of the key must not be present anywhere in the PFX.
    let key_der = openssl_ok(&["pkey", "-in", s(&leaf.key), "-outform", "DER"]);
    let tail = &key_der[key_der.len() - 32..];
    assert!(
        !a.expose().windows(tail.len()).any(|w| w == tail),
        "key bytes in clear"
    );
    assert_eq!(format!("{a:?}"), "(redacted)");
}

#[test]
fn bad_inputs_are_errors_that_name_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    let leaf = pki.leaf("bad", &["bad.example.test"]);
    let key = Secret::new(leaf.key_pem.clone().into_bytes());
    let pw = Secret::new(b"pw".to_vec());

    let err = pkcs12::build(&leaf.der, &[], &Secret::new(b"junk".to_vec()), &pw, None).unwrap_err();
    assert_eq!(err, pkcs12::Pkcs12Error::KeyPem);
    let truncated = Secret::new(leaf.key_pem.as_bytes()[..40].to_vec());
    assert_eq!(
        pkcs12::build(&leaf.der, &[], &truncated, &pw, None).unwrap_err(),
        pkcs12::Pkcs12Error::KeyPem
    );
    assert_eq!(
        pkcs12::build(&leaf.der, &[], &key, &Secret::new(vec![0xff, 0xfe]), None).unwrap_err(),
        pkcs12::Pkcs12Error::Password
    );
    assert_eq!(
        pkcs12::build(&leaf.der, &[], &key, &Secret::new("🔐".into()), None).unwrap_err(),
        pkcs12::Pkcs12Error::Password
    );
    assert_eq!(
        pkcs12::build(&leaf.der, &[], &key, &pw, Some("🔐")).unwrap_err(),
        pkcs12::Pkcs12Error::FriendlyName
    );
    // A traditional key needs the certificate's algorithm: a broken certificate is an error.
    let sec1 = std::fs::read(leaf.traditional_key()).unwrap();
    let err = pkcs12::build(
        &[0x30, 0x03, 0x02, 0x01],
        &[],
        &Secret::new(sec1),
        &pw,
        None,
    )
    .unwrap_err();
    assert!(matches!(err, pkcs12::Pkcs12Error::Certificate(_)), "{err}");
    // No message carries the password or key.
    assert!(!format!("{err} {err:?}").contains("pw"));
}

#[test]
fn a_user_chosen_password_with_spaces_and_quotes_works() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    let leaf = pki.leaf("userpw", &["userpw.example.test"]);
    let material = load(&leaf, &leaf.key);
    let password = Secret::new(b"it's a \"pass\" $word".to_vec());
    let pfx = pkcs12::from_material(&material, &password, None).unwrap();
    let (pfx_path, pw_path) = write_pfx(tmp.path(), "userpw", &pfx, &password);
    let out = openssl(&[
        "pkcs12",
        "-nokeys",
        "-in",
        s(&pfx_path),
        "-passin",
        &format!("file:{}", s(&pw_path)),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
