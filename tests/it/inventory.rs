//! The inventory contract v1 (docs/inventory.md) through the library API: a full example merges and
//! resolves as documented, and every bad inventory in `tests/corpus/inventory/` is refused with
//! `FILE:LINE:COL: message` (snapshotted, paths masked).

use std::path::{Path, PathBuf};
use std::time::Duration;

use certctl::connector::Catalogue;
use certctl::inventory::{self, Become, Inventory, InventoryError, VerifySettings};
use certctl::material::KeySource;
use certctl::probe::StartTls;

fn write(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("certctl.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn load_text(text: &str) -> Result<Inventory, InventoryError> {
    let dir = tempfile::tempdir().unwrap();
    inventory::load(&write(dir.path(), text), &Catalogue::builtin_names())
}

/// The error for `text`, as (line, column, message).
fn error(text: &str) -> (usize, usize, String) {
    let err = load_text(text).expect_err("the inventory must be refused");
    let loc = err
        .location
        .as_ref()
        .unwrap_or_else(|| panic!("no location: {err}"));
    (loc.line, loc.column, err.message.clone())
}

fn home() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").expect("tests need $HOME"))
}

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_string()).collect()
}

/// docs/inventory.md's example, with every key set somewhere.
const FULL: &str = r#"
defaults:
  user: deploy
  port: 2222
  identity_file: ~/.ssh/id_ed25519
  known_hosts: keys/known_hosts
  jump: bastion.example.com
  become: sudo
  params:
    owner: root
    mode: "0640"
  verify:
    attempts: 4
    backoff: 500ms
    max_backoff: 4s
    timeout: 10s
    consecutive: 1

certificates:
  www:
    cert: certs/www.crt
    chain: certs/chain.pem
    key: certs/www.key
  api:
    cert: /etc/pki/api.crt
    key_env: API_KEY
  edge:
    cert: ~/pki/edge.pem
    key_command: [pass, show, tls/edge.key]

groups:
  web:
    connector: nginx
    params: { key_path: /etc/nginx/tls/group.key, group: www-data }
    commands:
      test: [nginx, -t]
  lb:
    connector: ssh
    port: 22
    verify: { consecutive: 3, timeout: 1m }
  empty:

targets:
  - name: web-1
    host: 10.0.0.11
    groups: [web]
    certificate: www
    params:
      fullchain_path: /etc/nginx/tls/www.crt
      key_path: /etc/nginx/tls/www.key
    commands:
      reload: [systemctl, reload, nginx]
      preview:
        - [nginx, -t]
        - [test, -s, "{staged.key}"]
    verify:
      address: 10.0.0.11:443
      sni: www.example.com
      starttls: smtp
  - host: web2.example.com
    groups: [web, lb]
    certificate: api
    user: admin
    verify: { attempts: 5, backoff: 1s }
  - name: custom-app
    host: app.example.com
    connector: my-app
    certificate: edge
    known_hosts: /etc/ssh/ssh_known_hosts
    groups: [empty]

connectors:
  my-app:
    description: an in-house app
    params:
      bundle_path: { default: /etc/app/bundle.pem }
    files:
      - { role: bundle, path: "{bundle_path}", mode: "0600" }
    reload:
      - [systemctl, reload, app]
"#;

#[test]
fn full_design_example_merges_defaults_groups_and_target() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), FULL);
    let inv = inventory::load(&path, &Catalogue::builtin_names()).unwrap();
    let base = dir.path();

    assert_eq!(inv.path, path);
    assert_eq!(inv.groups, ["web", "lb", "empty"]);
    assert_eq!(inv.connectors.keys().collect::<Vec<_>>(), ["my-app"]);

    let www = &inv.certificates["www"];
    assert_eq!(www.name, "www");
    assert_eq!(www.cert, KeySource::File(base.join("certs/www.crt")));
    assert_eq!(
        www.chain,
        Some(KeySource::File(base.join("certs/chain.pem")))
    );
    assert_eq!(www.key, KeySource::File(base.join("certs/www.key")));
    let api = &inv.certificates["api"];
    assert_eq!(api.cert, KeySource::File(PathBuf::from("/etc/pki/api.crt")));
    assert_eq!(api.chain, None);
    assert_eq!(api.key, KeySource::Env("API_KEY".into()));
    let edge = &inv.certificates["edge"];
    assert_eq!(edge.cert, KeySource::File(home().join("pki/edge.pem")));
    assert_eq!(
        edge.key,
        KeySource::Command(argv(&["pass", "show", "tls/edge.key"]))
    );

    let names: Vec<&str> = inv.targets.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["web-1", "web2.example.com", "custom-app"]);

    // web-1: defaults < group web < target.
    let t = &inv.targets[0];
    assert_eq!(t.host, "10.0.0.11");
    assert_eq!(t.user.as_deref(), Some("deploy"));
    assert_eq!(t.port, Some(2222));
    assert_eq!(t.identity_file, Some(home().join(".ssh/id_ed25519")));
    assert_eq!(t.known_hosts, Some(base.join("keys/known_hosts")));
    assert_eq!(t.jump.as_deref(), Some("bastion.example.com"));
    assert_eq!(t.become_method, Some(Become::Sudo));
    assert_eq!(t.groups, ["web"]);
    assert_eq!(t.certificate(), "www");
    assert_eq!(t.connector, "nginx");
    let params: Vec<(&str, &str)> = t
        .params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        params,
        [
            ("fullchain_path", "/etc/nginx/tls/www.crt"),
            ("group", "www-data"),
            // The target's key_path wins over the group's.
            ("key_path", "/etc/nginx/tls/www.key"),
            ("mode", "0640"),
            ("owner", "root"),
        ]
    );
    // Single-argv form, list form, and a section inherited from the group.
    assert_eq!(
        t.commands["reload"],
        vec![argv(&["systemctl", "reload", "nginx"])]
    );
    assert_eq!(
        t.commands["preview"],
        vec![
            argv(&["nginx", "-t"]),
            argv(&["test", "-s", "{staged.key}"])
        ]
    );
    assert_eq!(t.commands["test"], vec![argv(&["nginx", "-t"])]);
    assert_eq!(
        t.verify,
        VerifySettings {
            attempts: 4,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(4),
            timeout: Duration::from_secs(10),
            consecutive: Some(1),
            address: Some("10.0.0.11:443".into()),
            sni: Some("www.example.com".into()),
            starttls: Some(StartTls::Smtp),
            shared: false,
        }
    );
    assert_eq!(t.location.file, path);
    let line = FULL.lines().position(|l| l == "  - name: web-1").unwrap() + 1;
    assert_eq!((t.location.line, t.location.column), (line, 5));

    // Second target: name defaults to host; the later group (lb) wins over the earlier (web);
    // verify merges field by field across defaults, lb and the target.
    let t = &inv.targets[1];
    assert_eq!(t.name, "web2.example.com");
    assert_eq!(t.groups, ["web", "lb"]);
    assert_eq!(t.connector, "ssh");
    assert_eq!(t.port, Some(22));
    assert_eq!(t.user.as_deref(), Some("admin"));
    assert_eq!(t.params["key_path"], "/etc/nginx/tls/group.key");
    assert_eq!(
        t.commands.keys().collect::<Vec<_>>(),
        ["test"],
        "commands come from group web"
    );
    assert_eq!(
        t.verify,
        VerifySettings {
            attempts: 5,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(4),
            timeout: Duration::from_secs(60),
            consecutive: Some(3),
            address: None,
            sni: None,
            starttls: None,
            shared: false,
        }
    );

    // Third target: a user-defined connector, an empty group, an absolute known_hosts.
    let t = &inv.targets[2];
    assert_eq!(t.connector, "my-app");
    assert_eq!(t.groups, ["empty"]);
    assert_eq!(
        t.known_hosts,
        Some(PathBuf::from("/etc/ssh/ssh_known_hosts"))
    );
    assert!(t.commands.is_empty());
}

#[test]
fn minimal_target_gets_documented_defaults() {
    let inv = load_text(
        "certificates:\n  c: { cert: c.pem, key: k.pem }\ntargets:\n  - host: h1\n    connector: nginx\n    certificate: c\n",
    )
    .unwrap();
    let t = &inv.targets[0];
    assert_eq!(t.name, "h1");
    // Left open: the plan fills them from the ssh config, else the defaults (tests/it/plan.rs).
    assert_eq!(t.user, None);
    assert_eq!(t.port, None);
    assert_eq!(t.known_hosts, None);
    assert_eq!(t.identity_file, None);
    assert_eq!(t.jump, None);
    assert_eq!(t.become_method, None);
    assert_eq!(t.verify, VerifySettings::default());
    assert!(t.params.is_empty() && t.commands.is_empty() && t.groups.is_empty());
    assert!(inv.groups.is_empty() && inv.connectors.is_empty());
}

#[test]
fn relative_paths_resolve_against_the_inventory_directory_not_the_cwd() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("deep/er");
    std::fs::create_dir_all(&sub).unwrap();
    let path = write(
        &sub,
        "certificates:\n  c: { cert: ../c.pem, key: ./k.pem }\ndefaults:\n  identity_file: id\n\
         targets:\n  - { host: h, connector: nginx, certificate: c }\n",
    );
    let inv = inventory::load(&path, &Catalogue::builtin_names()).unwrap();
    assert_eq!(
        inv.certificates["c"].cert,
        KeySource::File(sub.join("../c.pem"))
    );
    assert_eq!(
        inv.certificates["c"].key,
        KeySource::File(sub.join("./k.pem"))
    );
    assert_eq!(inv.targets[0].identity_file, Some(sub.join("id")));
}

#[test]
fn yaml_numbers_and_booleans_are_accepted_as_param_and_argv_words() {
    let inv = load_text(
        "certificates:\n  c: { cert: c.pem, key: k.pem }\ntargets:\n  - host: h\n    connector: ssh\n    certificate: c\n    params: { mode: 0640, keep_backups: 3, flag: true }\n    commands: { reload: [sleep, 2, true] }\n",
    )
    .unwrap();
    let t = &inv.targets[0];
    assert_eq!(t.params["mode"], "0640");
    assert_eq!(t.params["keep_backups"], "3");
    assert_eq!(t.params["flag"], "true");
    assert_eq!(t.commands["reload"], vec![argv(&["sleep", "2", "true"])]);
}

#[test]
fn verify_address_takes_host_port_and_bracketed_ipv6() {
    for (address, ok) in [
        ("10.0.0.1:443", true),
        ("www.example.com:8443", true),
        ("[2001:db8::1]:443", true),
        ("2001:db8::1:443", false),
        ("www.example.com", false),
        ("www.example.com:", false),
        (":443", false),
        ("www.example.com:0", false),
    ] {
        let text = format!(
            "certificates:\n  c: {{ cert: c.pem, key: k.pem }}\ntargets:\n  - {{ host: h, connector: nginx, certificate: c, verify: {{ address: \"{address}\" }} }}\n"
        );
        match load_text(&text) {
            Ok(inv) => {
                assert!(ok, "{address} accepted");
                assert_eq!(inv.targets[0].verify.address.as_deref(), Some(address));
            }
            Err(e) => assert!(!ok, "{address} refused: {e}"),
        }
    }
}

#[test]
fn empty_command_list_means_run_nothing() {
    let inv = load_text(
        "certificates:\n  c: { cert: c.pem, key: k.pem }\ntargets:\n  - { host: h, connector: nginx, certificate: c, commands: { reload: [] } }\n",
    )
    .unwrap();
    assert_eq!(inv.targets[0].commands["reload"], Vec::<Vec<String>>::new());
}

#[test]
fn anchors_and_merge_keys_work() {
    let inv = load_text(
        "certificates:\n  c: { cert: c.pem, key: k.pem }\nx-common: &common\n  connector: nginx\n  certificate: c\n",
    );
    // Unknown top-level keys stay errors, even for anchors' sake.
    assert!(inv.is_err());
    let inv = load_text(
        "certificates:\n  c: { cert: c.pem, key: k.pem }\ndefaults: &d\n  port: 2200\ntargets:\n  - { host: a, connector: nginx, certificate: c }\n  - <<: *d\n    host: b\n    connector: nginx\n    certificate: c\n",
    )
    .unwrap();
    assert_eq!(inv.targets[1].port, Some(2200));
}

#[test]
fn parse_duration_accepts_units_and_rejects_the_rest() {
    assert_eq!(
        inventory::parse_duration("500ms"),
        Ok(Duration::from_millis(500))
    );
    assert_eq!(inventory::parse_duration("2s"), Ok(Duration::from_secs(2)));
    assert_eq!(inventory::parse_duration("1m"), Ok(Duration::from_secs(60)));
    assert_eq!(
        inventory::parse_duration("1h"),
        Ok(Duration::from_secs(3600))
    );
    assert_eq!(inventory::parse_duration("0s"), Ok(Duration::ZERO));
    for bad in [
        "",
        "2 s",
        "-1s",
        "abc",
        "2",
        "1.5s",
        "2sec",
        "s",
        " 2s",
        "99999999999999999999s",
    ] {
        assert!(inventory::parse_duration(bad).is_err(), "{bad:?} accepted");
    }
    assert!(
        inventory::parse_duration("-1s")
            .unwrap_err()
            .contains("negative")
    );
    assert!(
        inventory::parse_duration("2")
            .unwrap_err()
            .contains("no unit")
    );
}

// Explicit line:column checks (the corpus snapshots below cover the messages).

#[test]
fn unknown_key_points_at_the_key_and_suggests() {
    let (line, col, msg) = error("defaults:\n  user: a\n  idenity_file: x\n");
    assert_eq!((line, col), (3, 3));
    assert_eq!(
        msg,
        "unknown key `idenity_file` (did you mean `identity_file`?)"
    );
}

#[test]
fn wrong_type_points_at_the_value() {
    let (line, col, msg) = error("targets:\n  - host: a\n    port: twenty\n");
    assert_eq!((line, col), (3, 11));
    assert!(msg.contains("65535"), "{msg}");
}

#[test]
fn missing_host_points_at_the_target_entry() {
    let (line, col, msg) = error(
        "certificates:\n  c: { cert: c.pem, key: k.pem }\ntargets:\n  - host: a\n    connector: nginx\n    certificate: c\n  - name: b\n    connector: nginx\n    certificate: c\n",
    );
    assert_eq!((line, col), (7, 5));
    assert_eq!(msg, "target `b` has no `host:`");
}

#[test]
fn duplicate_name_points_at_the_second_and_names_the_first() {
    let (line, col, msg) = error(
        "defaults: { connector: nginx, certificate: c }\ncertificates:\n  c: { cert: c.pem, key: k.pem }\ntargets:\n  - host: a\n  - host: b\n    name: a\n",
    );
    assert_eq!((line, col), (7, 11));
    assert!(msg.contains("first declared at line 5"), "{msg}");
}

#[test]
fn bad_reference_points_where_it_is_set_even_in_defaults() {
    let (line, col, msg) = error(
        "defaults:\n  connector: ngnix\ncertificates:\n  c: { cert: c.pem, key: k.pem }\ntargets:\n  - { host: a, certificate: c }\n",
    );
    assert_eq!((line, col), (2, 14));
    assert_eq!(msg, "unknown connector `ngnix` (did you mean `nginx`?)");
}

#[test]
fn duration_error_points_at_the_value_in_a_group() {
    let (line, col, msg) = error("groups:\n  web:\n    verify:\n      backoff: 2 s\n");
    assert_eq!((line, col), (4, 16));
    assert!(msg.starts_with("verify.backoff: `2 s`"), "{msg}");
}

#[test]
fn non_utf8_file_names_the_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, b"targets:\n  - host: caf\xe9\n").unwrap();
    let err = inventory::load(&path, &Catalogue::builtin_names()).unwrap_err();
    let loc = err.location.unwrap();
    assert_eq!((loc.line, loc.column), (2, 14));
    assert!(err.message.contains("not valid UTF-8"), "{}", err.message);
}

#[test]
fn oversized_file_is_refused_before_parsing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.yaml");
    let mut text = String::from("targets:\n");
    let line = "  - { host: h, connector: nginx, certificate: c }   # padding padding\n";
    while text.len() as u64 <= inventory::MAX_FILE_SIZE {
        text.push_str(line);
    }
    std::fs::write(&path, text).unwrap();
    let err = inventory::load(&path, &Catalogue::builtin_names()).unwrap_err();
    assert!(err.message.contains("larger than 4 MiB"), "{err}");
}

#[test]
fn missing_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.yaml");
    let err = inventory::load(&path, &Catalogue::builtin_names()).unwrap_err();
    assert!(err.location.is_none());
    assert!(err.to_string().contains("nope.yaml"), "{err}");
}

/// A wide alias bomb that is well-typed (a list of argvs), so only the budget can stop it:
/// 64 aliases of a 4096-word argv would be 262,144 words.
#[test]
fn wide_alias_bomb_is_refused() {
    let words = vec!["x"; 4096].join(", ");
    let aliases = vec!["*w"; 64].join(", ");
    let text = format!(
        "certificates:\n  c: {{ cert: c.pem, key: k.pem }}\ntargets:\n  - host: h\n    connector: nginx\n    certificate: c\n    params: {{ p: v }}\n    commands:\n      test: [&w [{words}]]\n      reload: [{aliases}]\n"
    );
    let (line, _, msg) = error(&text);
    assert_eq!(line, 10);
    assert!(msg.contains("alias"), "{msg}");
}

/// Every file in tests/corpus/inventory/ is refused; the message is snapshotted.
#[test]
fn corpus_of_bad_inventories() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/inventory");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 30, "corpus has {} files", files.len());
    for path in files {
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        let err = match inventory::load(&path, &Catalogue::builtin_names()) {
            Ok(_) => panic!("{stem}: accepted"),
            Err(e) => e,
        };
        assert!(err.location.is_some(), "{stem}: no location: {err}");
        let shown = err
            .to_string()
            .replace(&path.display().to_string(), "[FILE]");
        assert!(!shown.contains('\n'), "{stem}: more than one line: {shown}");
        insta::assert_snapshot!(format!("corpus_{stem}"), shown);
    }
}

const TWO_CERTS: &str =
    "certificates:\n  a: { cert: a.pem, key: a.key }\n  b: { cert: b.pem, key: b.key }\n";

#[test]
fn several_certificates_merge_their_params_and_verify_over_the_targets() {
    let inv = load_text(&format!(
        "{TWO_CERTS}targets:\n  - host: h\n    connector: nginx\n    params: {{ nginx_conf: /etc/nginx/nginx.conf }}\n    \
         verify: {{ address: \"10.0.0.1:443\", attempts: 3 }}\n    certificates:\n      \
         - certificate: a\n        params: {{ fullchain_path: /a.crt }}\n        verify: {{ sni: a.test }}\n      \
         - certificate: b\n        verify: {{ sni: b.test, attempts: 5 }}\n"
    ))
    .unwrap();
    let t = &inv.targets[0];
    assert_eq!(t.certificate_names().collect::<Vec<_>>(), ["a", "b"]);
    let a = t.for_certificate(0);
    assert_eq!(a.params["fullchain_path"], "/a.crt");
    assert_eq!(a.params["nginx_conf"], "/etc/nginx/nginx.conf");
    assert_eq!(a.verify.sni.as_deref(), Some("a.test"));
    assert_eq!(a.verify.address.as_deref(), Some("10.0.0.1:443"));
    assert_eq!(a.verify.attempts, 3);
    let b = t.for_certificate(1);
    assert!(
        !b.params.contains_key("fullchain_path"),
        "a's params stay a's"
    );
    assert_eq!(
        (b.verify.sni.as_deref(), b.verify.attempts),
        (Some("b.test"), 5)
    );
}

#[test]
fn bad_certificates_lists_are_refused_where_they_are_written() {
    let target =
        |rest: &str| format!("{TWO_CERTS}targets:\n  - host: h\n    connector: nginx\n{rest}");
    let cases = [
        (
            "    certificate: a\n    certificates: [{ certificate: b }]\n",
            (8, 19),
            "not both",
        ),
        ("    certificates: []\n", (7, 19), "lists no certificate"),
        (
            "    certificates:\n      - certificate: a\n      - certificate: a\n",
            (9, 22),
            "listed twice",
        ),
        (
            "    certificates:\n      - certificate: c\n",
            (8, 22),
            "unknown certificate `c`",
        ),
        (
            "    certificates:\n      - { certificate: a, paramz: {} }\n",
            (8, 27),
            "unknown key `paramz` (did you mean `params`?)",
        ),
        (
            "    certificates:\n      - certificate: a\n        verify: { backoff: 2 s }\n",
            (9, 28),
            "verify.backoff",
        ),
    ];
    for (rest, at, want) in cases {
        let (line, col, msg) = error(&target(rest));
        assert!(msg.contains(want), "{rest}: {msg}");
        assert_eq!((line, col), at, "{rest}: {msg}");
    }
}
