//! Property fuzzing (proptest, bounded case counts: the whole file runs in seconds) of the
//! parsers and renderers that see untrusted or hand-written input: the inventory loader, PEM
//! parsing and material loading, connector placeholder rendering, and shell quoting (checked
//! against a real `sh` and `bash`). The property everywhere: no panic, and an error is a
//! message, never a crash. Failing seeds are kept by proptest in `tests/fuzz.proptest-regressions`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};

use certctl::connector::{Catalogue, placeholders, render};
use certctl::material::{KeySource, Material, MaterialSpec, parse_certs};
use certctl::ssh::quote::quote;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

/// A valid inventory using most of the contract: the seed the mutations start from.
const SEED_INVENTORY: &str = r#"defaults:
  user: deploy
  port: 22
  identity_file: ~/.ssh/id_ed25519
  known_hosts: known_hosts
  verify: { attempts: 3, backoff: 1s, max_backoff: 16s, timeout: 10s, consecutive: 1 }
certificates:
  www:
    cert: certs/www.crt
    chain: certs/chain.pem
    key: certs/www.key
  api:
    cert: certs/api.crt
    key_env: API_KEY
groups:
  web: { connector: nginx }
  lb: { connector: haproxy, verify: { consecutive: 3 } }
targets:
  - name: web-1
    host: 10.0.0.11
    groups: [web]
    certificate: www
    params:
      fullchain_path: /etc/nginx/tls/www.crt
      key_path: /etc/nginx/tls/www.key
    commands:
      reload: [[systemctl, reload, nginx]]
    verify:
      address: 10.0.0.11:443
      sni: www.example.com
  - name: lb-1
    host: lb.example.com
    groups: [lb]
    certificate: api
  - name: app
    host: app.example.com
    connector: my-app
    certificate: www
connectors:
  my-app:
    params:
      bundle_path: { default: /etc/app/bundle.pem }
    files:
      - { role: bundle, path: "{bundle_path}", mode: "0600" }
    reload:
      - [systemctl, reload, app]
"#;

/// Characters that matter to YAML and to the inventory's own syntax.
const YAML_BITS: &[&str] = &[
    ":", "- ", "{", "}", "[", "]", ",", "\n", "  ", "\t", "#", "&a", "*a", "!!str ", "'", "\"",
    "|", ">", "?", "%", "@", "`", "~", "\\", "0", "-1", "1e9", "null", "true", "0o777", "ms", "s",
    "\u{feff}", "\u{0}", "é", "\r\n", "<<: *a",
];

/// One edit of a text: delete a range, insert a YAML bit, duplicate or drop a line.
#[derive(Debug, Clone)]
enum Edit {
    Delete(usize, usize),
    Insert(usize, usize),
    DuplicateLine(usize),
    DropLine(usize),
    SwapLines(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1usize..20).prop_map(|(a, n)| Edit::Delete(a, n)),
        (any::<usize>(), 0..YAML_BITS.len()).prop_map(|(a, b)| Edit::Insert(a, b)),
        any::<usize>().prop_map(Edit::DuplicateLine),
        any::<usize>().prop_map(Edit::DropLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut text = text.to_string();
    for e in edits {
        let boundary = |t: &str, i: usize| {
            let mut i = i % (t.len() + 1);
            while !t.is_char_boundary(i) {
                i -= 1;
            }
            i
        };
        match e {
            Edit::Delete(at, n) => {
                let a = boundary(&text, *at);
                let b = boundary(&text, (a + n).min(text.len()));
                text.replace_range(a..b.max(a), "");
            }
            Edit::Insert(at, bit) => {
                let a = boundary(&text, *at);
                text.insert_str(a, YAML_BITS[*bit]);
            }
            Edit::DuplicateLine(i) | Edit::DropLine(i) => {
                let mut lines: Vec<&str> = text.split('\n').collect();
                let i = i % lines.len();
                if matches!(e, Edit::DuplicateLine(_)) {
                    lines.insert(i, lines[i]);
                } else {
                    lines.remove(i);
                }
                text = lines.join("\n");
            }
            Edit::SwapLines(a, b) => {
                let mut lines: Vec<&str> = text.split('\n').collect();
                let n = lines.len();
                lines.swap(a % n, b % n);
                text = lines.join("\n");
            }
        }
    }
    text
}

fn load_inventory(dir: &Path, text: &[u8]) -> Result<(), String> {
    let path = dir.join("certctl.yaml");
    std::fs::write(&path, text).unwrap();
    certctl::inventory::load(&path, &Catalogue::builtin_names())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

proptest! {
    #![proptest_config(config(400))]

    #[test]
    fn inventory_loader_survives_mutated_inventories(edits in prop::collection::vec(edit(), 1..6)) {
        let dir = tempfile::tempdir().unwrap();
        let text = apply(SEED_INVENTORY, &edits);
        if let Err(message) = load_inventory(dir.path(), text.as_bytes()) {
            prop_assert!(!message.trim().is_empty());
            // Errors are one line, so a terminal or a CI log shows them whole.
            prop_assert!(!message.contains('\n'), "{message}");
        }
    }
}

proptest! {
    #![proptest_config(config(200))]

    #[test]
    fn inventory_loader_survives_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let dir = tempfile::tempdir().unwrap();
        if let Err(message) = load_inventory(dir.path(), &bytes) {
            prop_assert!(!message.trim().is_empty());
        }
    }

    #[test]
    fn inventory_loader_survives_yaml_shaped_noise(parts in prop::collection::vec(0..YAML_BITS.len(), 0..200)) {
        let dir = tempfile::tempdir().unwrap();
        let text: String = parts.iter().map(|i| YAML_BITS[*i]).collect();
        let _ = load_inventory(dir.path(), text.as_bytes());
    }
}

/// A real leaf + intermediate PEM and its key, made once per process.
fn real_pem() -> &'static (Vec<u8>, Vec<u8>) {
    static PEM: std::sync::OnceLock<(Vec<u8>, Vec<u8>)> = std::sync::OnceLock::new();
    PEM.get_or_init(|| {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["fuzz.test.example".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (
            format!("{}{}", leaf.pem(), ca_cert.pem()).into_bytes(),
            key.serialize_pem().into_bytes(),
        )
    })
}

/// Flips, deletes or inserts bytes of `base`.
fn mutate(base: &[u8], edits: &[(usize, u8, u8)]) -> Vec<u8> {
    let mut out = base.to_vec();
    for (at, byte, kind) in edits {
        if out.is_empty() {
            out.push(*byte);
            continue;
        }
        let i = at % out.len();
        match kind % 3 {
            0 => out[i] ^= byte | 1,
            1 => {
                out.remove(i);
            }
            _ => out.insert(i, *byte),
        }
    }
    out
}

fn load_material(dir: &Path, cert: &[u8], key: &[u8]) -> Result<Material, String> {
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    Material::load(&MaterialSpec::new(
        "fuzz",
        cert_path,
        None,
        KeySource::File(key_path),
    ))
    .map_err(|e| e.to_string())
}

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn pem_parsing_survives_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let _ = parse_certs(&bytes);
        let dir = tempfile::tempdir().unwrap();
        let _ = load_material(dir.path(), &bytes, &bytes);
    }

    #[test]
    fn pem_parsing_survives_mutated_certificates_and_keys(
        cert_edits in prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..8),
        key_edits in prop::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..8),
    ) {
        let (cert, key) = real_pem();
        let cert = mutate(cert, &cert_edits);
        let key = mutate(key, &key_edits);
        if let Ok(certs) = parse_certs(&cert) {
            prop_assert!(certs.len() <= 2);
        }
        let dir = tempfile::tempdir().unwrap();
        match load_material(dir.path(), &cert, &key) {
            Ok(material) => {
                // Whatever loaded, the checks run without panicking, and a key that loaded is
                // never printed by Debug.
                let _ = material.check(&["fuzz.test.example".to_string()], 0);
                let debug = format!("{:?}", material);
                prop_assert!(!debug.contains("PRIVATE KEY"));
            }
            Err(message) => prop_assert!(message.starts_with("certificate `fuzz`")),
        }
    }
}

/// Text made of what the placeholder syntax cares about, plus a little of everything else.
fn template_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::sample::select(vec!["{", "}", "{{", "}}", "a", "b.c", "_", "-", "x y", "{a}", "{b.c}", "{}"]).prop_map(str::to_string),
            1 => any::<char>().prop_map(|c| c.to_string()),
        ],
        0..40,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(config(500))]

    #[test]
    fn placeholder_rendering_never_panics_and_agrees_with_scanning(text in template_text()) {
        let values: BTreeMap<String, String> = [("a", "A"), ("b.c", "{literal}")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let rendered = render(&text, &values);
        match placeholders(&text) {
            Ok(names) => {
                // With every named placeholder defined, rendering succeeds.
                let all: BTreeMap<String, String> =
                    names.iter().map(|n| (n.clone(), format!("<{n}>"))).collect();
                prop_assert!(render(&text, &all).is_ok());
                let known: BTreeSet<&str> = values.keys().map(String::as_str).collect();
                if names.iter().all(|n| known.contains(n.as_str())) {
                    prop_assert!(rendered.is_ok(), "{rendered:?}");
                } else {
                    prop_assert!(rendered.unwrap_err().contains("unknown placeholder"));
                }
            }
            Err(_) => prop_assert!(rendered.is_err()),
        }
    }

    #[test]
    fn escaped_braces_render_back_to_the_text(text in any::<String>()) {
        let escaped = text.replace('{', "{{").replace('}', "}}");
        prop_assert_eq!(render(&escaped, &BTreeMap::new()).unwrap(), text.clone());
        prop_assert_eq!(placeholders(&escaped).unwrap(), Vec::<String>::new());
    }
}

/// Runs `printf '%s\0' QUOTED...` in `shell` and splits the output on NUL.
fn shell_echo(shell: &str, words: &[String]) -> Vec<String> {
    let mut script = String::from("printf '%s\\0'");
    for w in words {
        script.push(' ');
        script.push_str(&quote(w));
    }
    let out = Command::new(shell)
        .arg("-c")
        .arg(&script)
        .stdin(Stdio::null())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .expect("run the shell");
    assert!(
        out.status.success(),
        "{shell} failed on {script:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut parts: Vec<String> = out
        .stdout
        .split(|b| *b == 0)
        .map(|p| String::from_utf8(p.to_vec()).unwrap())
        .collect();
    parts.pop(); // after the last NUL
    parts
}

/// Strings heavy in what shells treat specially.
fn shell_word() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[ \t\n'\"$`\\\\;&|<>(){}\\[\\]*?~#!=%^a-z0-9_./:@+,-]{0,24}",
        1 => any::<String>(),
        1 => prop::sample::select(vec![
            "", "-", "--", "-n", "-e", "~", "~root", "$HOME", "${IFS}", "$(id)", "`id`", "a=b",
            "if", "then", "!", "{a,b}", "*", "\\", "'", "''", "\"", "\r", "é\u{202e}x",
        ]).prop_map(str::to_string),
    ]
    .prop_map(|s| s.replace('\0', ""))
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn quoting_round_trips_through_sh_and_bash(words in prop::collection::vec(shell_word(), 1..24)) {
        for shell in ["sh", "bash"] {
            let back = shell_echo(shell, &words);
            prop_assert_eq!(&back, &words, "{}", shell);
        }
    }
}
