//! The plan is a value: the exact remote paths and argv for a target, computed offline.

use crate::support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use certctl::connector::{Catalogue, Role};
use certctl::inventory::{Inventory, Location, Target, TargetCertificate, VerifySettings};
use certctl::material::{KeySource, Material, MaterialSpec};
use certctl::plan::{self, RunSettings};
use certctl::probe::StartTls;

fn target(connector: &str, params: &[(&str, &str)]) -> Target {
    Target {
        name: "web-1".into(),
        host: "10.0.0.11".into(),
        port: Some(22),
        user: Some("root".into()),
        identity_file: None,
        known_hosts: Some(PathBuf::from("/root/.ssh/known_hosts")),
        jump: None,
        become_method: None,
        groups: vec![],
        certificates: vec![TargetCertificate {
            name: "www".into(),
            params: BTreeMap::new(),
            verify: None,
        }],
        connector: connector.into(),
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        commands: BTreeMap::new(),
        verify: VerifySettings::default(),
        location: Location {
            file: PathBuf::from("certctl.yaml"),
            line: 7,
            column: 5,
        },
    }
}

fn settings() -> RunSettings {
    RunSettings {
        run_id: "1700000000-abcdef".into(),
        accept_new_host_keys: false,
        connect_timeout: Duration::from_secs(10),
        command_timeout: Duration::from_secs(60),
        keepalive_interval: Duration::from_secs(15),
        now: time::OffsetDateTime::now_utc().unix_timestamp(),
        ssh_client: Default::default(),
    }
}

fn material(dir: &std::path::Path) -> Arc<Material> {
    let pki = support::pki::Pki::new(dir);
    let leaf = pki.leaf("www", &["www.example.test"]);
    let spec = MaterialSpec::new(
        "www",
        leaf.cert.clone(),
        Some(leaf.chain.clone().into()),
        KeySource::File(leaf.key.clone()),
    );
    Arc::new(Material::load(&spec).unwrap())
}

fn plan_one(t: Target) -> Result<plan::TargetPlan, Vec<plan::PlanError>> {
    plan_with(t, &settings())
}

fn plan_with(t: Target, settings: &RunSettings) -> Result<plan::TargetPlan, Vec<plan::PlanError>> {
    let dir = tempfile::tempdir().unwrap();
    plan_with_material(t, settings, material(dir.path()))
}

/// The plan of `t` alone, its certificate `www` being `material`.
fn plan_with_material(
    t: Target,
    settings: &RunSettings,
    material: Arc<Material>,
) -> Result<plan::TargetPlan, Vec<plan::PlanError>> {
    plan_with_materials(t, settings, BTreeMap::from([("www".to_string(), material)]))
}

/// The plan of `t` alone, its certificates from `materials`.
fn plan_with_materials(
    t: Target,
    settings: &RunSettings,
    materials: BTreeMap<String, Arc<Material>>,
) -> Result<plan::TargetPlan, Vec<plan::PlanError>> {
    let inventory = Inventory {
        path: PathBuf::from("certctl.yaml"),
        certificates: BTreeMap::new(),
        targets: vec![t],
        connectors: BTreeMap::new(),
        groups: vec![],
        policies: BTreeMap::new(),
        notify: vec![],
        history: None,
    };
    let targets: Vec<&Target> = inventory.targets.iter().collect();
    plan::build(
        &inventory,
        &targets,
        &Catalogue::builtin(),
        &materials,
        settings,
    )
    .map(|mut v| v.remove(0))
}

#[test]
fn nginx_plan_has_exact_paths_and_commands() {
    let p = plan_one(target("nginx", &[])).unwrap();
    let files: Vec<(Role, &str, &str)> = p
        .files
        .iter()
        .map(|f| (f.role, f.path.as_str(), f.staged.as_str()))
        .collect();
    assert_eq!(
        files,
        [
            (
                Role::Fullchain,
                "/etc/nginx/ssl/web-1.crt",
                "/etc/nginx/ssl/.web-1.crt.certctl-1700000000-abcdef.tmp"
            ),
            (
                Role::Key,
                "/etc/nginx/ssl/web-1.key",
                "/etc/nginx/ssl/.web-1.key.certctl-1700000000-abcdef.tmp"
            ),
        ]
    );
    assert_eq!(p.files[0].default_mode, 0o644);
    assert_eq!(p.files[1].default_mode, 0o600);
    assert_eq!(p.scratch_dir, "/tmp/certctl-1700000000-abcdef-0");
    assert_eq!(
        p.preview,
        [
            vec![
                "nginx",
                "-t",
                "-q",
                "-e",
                "/tmp/certctl-1700000000-abcdef-0/error.log",
                "-c",
                "/tmp/certctl-1700000000-abcdef-0/preview.conf"
            ],
            vec!["nginx", "-t", "-q", "-c", "/etc/nginx/nginx.conf"],
        ]
    );
    assert_eq!(
        p.test,
        [vec!["nginx", "-t", "-q", "-c", "/etc/nginx/nginx.conf"]]
    );
    assert_eq!(
        p.reload,
        [vec!["nginx", "-s", "reload", "-c", "/etc/nginx/nginx.conf"]]
    );
    // The preview config loads the STAGED pair, not the live one.
    let conf = &p.templates[0];
    assert_eq!(conf.path, "/tmp/certctl-1700000000-abcdef-0/preview.conf");
    assert!(
        conf.content.contains(
            "ssl_certificate \"/etc/nginx/ssl/.web-1.crt.certctl-1700000000-abcdef.tmp\";"
        )
    );
    assert!(conf.content.contains(
        "ssl_certificate_key \"/etc/nginx/ssl/.web-1.key.certctl-1700000000-abcdef.tmp\";"
    ));
    assert!(
        conf.content.contains("events { worker_connections 16; }"),
        "{{ renders as a brace"
    );
    assert_eq!(p.first().probe.address, "10.0.0.11:443");
    assert_eq!(p.first().probe.sni, "www.example.test");
    assert_eq!(p.first().probe.starttls, StartTls::None);
    assert_eq!(p.backup_dir, "/var/lib/certctl/backups/web-1");
    assert_eq!(p.keep_backups, 3);
}

#[test]
fn target_params_and_command_overrides_win() {
    let mut t = target(
        "nginx",
        &[
            ("fullchain_path", "/srv/tls/a b.crt"),
            ("mode", "0640"),
            ("keep_backups", "5"),
        ],
    );
    t.commands.insert(
        "reload".into(),
        vec![vec!["systemctl".into(), "reload".into(), "nginx".into()]],
    );
    t.verify.address = Some("[::1]:8443".into());
    let p = plan_one(t).unwrap();
    assert_eq!(p.files[0].path, "/srv/tls/a b.crt");
    assert_eq!(
        p.files[0].staged,
        "/srv/tls/.a b.crt.certctl-1700000000-abcdef.tmp"
    );
    assert_eq!(p.files[0].explicit_mode, Some(0o640));
    assert_eq!(p.reload, [vec!["systemctl", "reload", "nginx"]]);
    assert_eq!(p.keep_backups, 5);
    assert_eq!(p.first().probe.address, "[::1]:8443");
}

#[test]
fn ipv6_host_gets_brackets_in_the_probe_address() {
    let mut t = target("nginx", &[]);
    t.host = "fd00::11".into();
    assert_eq!(plan_one(t).unwrap().first().probe.address, "[fd00::11]:443");
}

#[test]
fn generic_connector_deploys_only_the_paths_given() {
    let p = plan_one(target(
        "ssh",
        &[
            ("cert_path", "/opt/app/cert.pem"),
            ("key_path", "/opt/app/key.pem"),
        ],
    ))
    .unwrap();
    let roles: Vec<Role> = p.files.iter().map(|f| f.role).collect();
    assert_eq!(roles, [Role::Cert, Role::Key]);
    assert!(p.preview.is_empty() && p.test.is_empty() && p.reload.is_empty());

    let errs = plan_one(target("ssh", &[])).unwrap_err();
    assert!(errs[0].message.contains("deploys no file"), "{}", errs[0]);
}

#[test]
fn bad_params_are_errors_naming_target_and_location() {
    for (params, expected) in [
        (
            vec![("fulchain_path", "/x")],
            "has no param `fulchain_path` (did you mean `fullchain_path`?)",
        ),
        (
            vec![("fullchain_path", "relative/x.crt")],
            "must be an absolute path",
        ),
        (
            vec![("fullchain_path", "/etc/../x.crt")],
            "must not contain `.` or `..`",
        ),
        (vec![("key_path", "/etc/x\n.key")], "control character"),
        (
            vec![("key_path", "/etc/nginx/ssl/web-1.crt")],
            "two files would be written",
        ),
        (vec![("mode", "0666")], "world-writable"),
        (vec![("keep_backups", "0")], "at least 1"),
        (
            vec![("in_place", "sometimes")],
            "param `in_place`: `sometimes` is none of \"auto\", \"always\", \"never\"",
        ),
        (
            vec![("tmp_dir", "/tmp/a$b")],
            "template `preview.conf`: `{tmpdir}` is \"/tmp/a$b/certctl-1700000000-abcdef-0\", which contains `$`",
        ),
        (
            vec![("key_path", "/etc/nginx/ssl/we\"b.key")],
            "template `preview.conf`: `{staged.key}` is",
        ),
    ] {
        let errs = plan_one(target("nginx", &params)).unwrap_err();
        let text = errs[0].to_string();
        assert!(
            text.starts_with("certctl.yaml:7:5: target `web-1`: "),
            "{text}"
        );
        assert!(text.contains(expected), "{params:?}: {text}");
    }
}

#[test]
fn sni_not_covered_by_the_certificate_is_an_error() {
    let mut t = target("nginx", &[]);
    t.verify.sni = Some("other.example.test".into());
    let errs = plan_one(t).unwrap_err();
    assert!(
        errs[0].message.contains("other.example.test"),
        "{}",
        errs[0]
    );
}

#[test]
fn every_example_inventory_loads_and_its_connectors_validate() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let inv = certctl::inventory::load(&path, &Catalogue::builtin_names())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            Catalogue::builtin().with_user(&inv.connectors).unwrap();
            seen += 1;
        }
    }
    assert!(seen >= 3, "examples/ has inventories");
}

/// Inventory > ssh config > defaults, setting by setting (docs/ssh.md#the-ssh-config).
#[test]
fn ssh_settings_come_from_the_inventory_then_the_ssh_config_then_defaults() {
    use certctl::inventory::Become;
    use certctl::ssh::config::{LocalUser, SshClientConfig};
    let local = LocalUser {
        name: "operator".into(),
        home: Some(PathBuf::from("/home/operator")),
    };
    let config = SshClientConfig::parse(
        "Host web-*\n  HostName %h.internal\n  User cfguser\n  Port 2200\n  \
         IdentityFile ~/.ssh/a\n  IdentityFile ~/.ssh/b\n  IdentitiesOnly yes\n  \
         UserKnownHostsFile ~/.ssh/kh1 ~/.ssh/kh2\n  GlobalKnownHostsFile /etc/fleet_known_hosts\n  \
         StrictHostKeyChecking accept-new\n\
         Host none-kh\n  UserKnownHostsFile none\n",
        std::path::Path::new("/home/operator/.ssh/config"),
        local,
    )
    .unwrap();
    let settings = RunSettings {
        ssh_client: Arc::new(config),
        ..settings()
    };
    let bare = |host: &str| Target {
        host: host.into(),
        port: None,
        user: None,
        known_hosts: None,
        ..target("nginx", &[])
    };

    // Nothing in the inventory: the ssh config decides.
    let p = plan_with(bare("web-1"), &settings).unwrap();
    assert_eq!(p.ssh.host, "web-1.internal");
    assert_eq!(p.ssh.user, "cfguser");
    assert_eq!(p.ssh.port, 2200);
    assert_eq!(
        p.ssh.identity_files,
        [
            PathBuf::from("/home/operator/.ssh/a"),
            PathBuf::from("/home/operator/.ssh/b")
        ]
    );
    assert!(p.ssh.identities_only);
    assert_eq!(p.ssh.known_hosts, PathBuf::from("/home/operator/.ssh/kh1"));
    assert_eq!(
        p.ssh.known_hosts_extra,
        [
            PathBuf::from("/home/operator/.ssh/kh2"),
            PathBuf::from("/etc/fleet_known_hosts")
        ]
    );
    assert!(!p.ssh.become_sudo);
    assert!(
        !p.ssh.accept_new_host_keys,
        "accept-new in the ssh config is not followed"
    );
    assert!(
        p.ssh_warnings
            .iter()
            .any(|w| w.contains("StrictHostKeyChecking accept-new")
                && w.contains("--accept-new-host-keys")),
        "{:?}",
        p.ssh_warnings
    );

    // The inventory wins wherever it says something, even when it says the default.
    let explicit = Target {
        port: Some(22),
        user: Some("root".into()),
        identity_file: Some(PathBuf::from("/keys/deploy")),
        known_hosts: Some(PathBuf::from("/etc/certctl/known_hosts")),
        become_method: Some(Become::Sudo),
        ..bare("web-1")
    };
    let p = plan_with(explicit, &settings).unwrap();
    assert_eq!(p.ssh.host, "web-1.internal", "HostName still applies");
    assert_eq!((p.ssh.user.as_str(), p.ssh.port), ("root", 22));
    assert_eq!(p.ssh.identity_files, [PathBuf::from("/keys/deploy")]);
    assert_eq!(p.ssh.known_hosts, PathBuf::from("/etc/certctl/known_hosts"));
    assert!(p.ssh.known_hosts_extra.is_empty());
    assert!(p.ssh.become_sudo);

    // A host the ssh config does not mention: defaults.
    let p = plan_with(bare("db-1"), &settings).unwrap();
    assert_eq!(
        (p.ssh.host.as_str(), p.ssh.user.as_str(), p.ssh.port),
        ("db-1", "operator", 22)
    );
    assert!(p.ssh.identity_files.is_empty());
    assert!(!p.ssh.identities_only);
    assert_eq!(
        p.ssh.known_hosts,
        PathBuf::from("/home/operator/.ssh/known_hosts")
    );
    assert_eq!(
        p.ssh.known_hosts_extra,
        [
            PathBuf::from("/home/operator/.ssh/known_hosts2"),
            PathBuf::from("/etc/ssh/ssh_known_hosts"),
            PathBuf::from("/etc/ssh/ssh_known_hosts2")
        ],
        "OpenSSH's defaults"
    );

    // `UserKnownHostsFile none` would trust nothing: refused with the fix.
    let err = plan_with(bare("none-kh"), &settings).unwrap_err();
    assert!(
        err[0].message.contains("UserKnownHostsFile none")
            && err[0].message.contains("known_hosts:"),
        "{err:?}"
    );
}

/// iis: every value single-quoted inside the encoded script; the PFX and its password are
/// two secret inputs (never in an argv); `become: sudo` and an Ed25519 key are refused.
#[test]
fn powershell_connectors_encode_quoted_scripts_and_refuse_what_windows_cannot_do() {
    use base64::Engine as _;
    let t = target(
        "iis",
        &[
            ("site", "Default 'Web' $x"),
            ("hostname", "www.example.test"),
        ],
    );
    let p = plan_one(t).unwrap();
    let decode = |argv: &[String]| {
        assert_eq!(
            argv[..5],
            [
                "powershell",
                "-NoLogo",
                "-NoProfile",
                "-NonInteractive",
                "-EncodedCommand"
            ]
        );
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&argv[5])
            .unwrap();
        let units: Vec<u16> = bytes
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        String::from_utf16(&units).unwrap()
    };
    let script = decode(&p.preview[1]);
    assert!(
        script.contains("Get-WebBinding -Name 'Default ''Web'' $x' -Protocol 'https' -Port '443' -HostHeader 'www.example.test'"),
        "{script}"
    );
    // A hostile host header stays inside the one quoted netsh argument it is part of (the
    // planned scripts are statements, encoded when sent).
    let hostile = "w'x $y `z; ;q";
    let swap = plan_one(target("iis", &[("site", "s"), ("hostname", hostile)]))
        .unwrap()
        .commands
        .unwrap();
    let netsh: Vec<String> = swap
        .apply
        .iter()
        .chain(&swap.restore)
        .map(|c| c.argv.join("\n"))
        .filter(|s| s.contains("hostnameport="))
        .collect();
    assert_eq!(netsh.len(), 2, "the swap and its restore: {netsh:?}");
    for script in &netsh {
        assert!(
            script.contains(" 'hostnameport=w''x $y `z; ;q:443' "),
            "{script}"
        );
    }
    assert_eq!(p.inputs.len(), 2);
    assert!(p.inputs.iter().any(|i| i.path.ends_with("/new.pfx")));
    assert!(
        p.inputs
            .iter()
            .any(|i| i.path.ends_with("/new.pfx.password"))
    );
    assert!(
        p.inputs
            .iter()
            .all(|i| matches!(i.content, plan::InputContent::Secret(_)))
    );

    let mut t = target("iis", &[("site", "s")]);
    t.become_method = Some(certctl::inventory::Become::Sudo);
    let err = plan_one(t).unwrap_err();
    assert!(err[0].message.contains("become: sudo"), "{err:?}");

    let dir = tempfile::tempdir().unwrap();
    let pki = support::pki::Pki::new(dir.path());
    let leaf = pki.issue(
        "ed",
        support::pki::LeafOpts::new(&["www.example.test"]).key(support::pki::KeyType::Ed25519),
    );
    let ed = Arc::new(
        Material::load(&MaterialSpec::new(
            "www",
            leaf.cert.clone(),
            Some(leaf.chain.clone().into()),
            KeySource::File(leaf.key.clone()),
        ))
        .unwrap(),
    );
    let err = plan_with_material(target("wincertstore", &[]), &settings(), ed).unwrap_err();
    assert!(
        err[0].message.contains("Ed25519") || err[0].message.contains("ed25519"),
        "{err:?}"
    );
    assert!(err[0].message.contains("RSA or ECDSA"), "{err:?}");
}

/// Windows targets: drive paths (forward slashes) for tmp_dir and backup_dir, Windows
/// defaults, and the scripts see the scratch directory as PowerShell reads it.
#[test]
fn powershell_connectors_take_windows_drive_paths_with_windows_defaults() {
    let p = plan_one(target("wincertstore", &[])).unwrap();
    assert!(
        p.scratch_dir.starts_with("C:/Windows/Temp/certctl-"),
        "{}",
        p.scratch_dir
    );
    assert_eq!(p.backup_dir, "C:/ProgramData/certctl/backups/web-1");
    assert!(
        p.inputs
            .iter()
            .all(|i| i.path.starts_with("C:/Windows/Temp/certctl-")),
        "{:?}",
        p.inputs.iter().map(|i| &i.path).collect::<Vec<_>>()
    );

    let p = plan_one(target(
        "iis",
        &[
            ("site", "s"),
            ("tmp_dir", "D:/certctl/tmp"),
            ("backup_dir", "D:/certctl/backups/web-1"),
        ],
    ))
    .unwrap();
    assert!(p.scratch_dir.starts_with("D:/certctl/tmp/certctl-"));
    assert_eq!(p.backup_dir, "D:/certctl/backups/web-1");
    // POSIX paths stay accepted (the emulated tests' Linux hosts).
    let p = plan_one(target("iis", &[("site", "s"), ("tmp_dir", "/var/tmp")])).unwrap();
    assert!(p.scratch_dir.starts_with("/var/tmp/certctl-"));

    for (param, value, says) in [
        ("tmp_dir", "C:\\Windows\\Temp", "forward slashes"),
        ("backup_dir", "C:/certctl\\backups", "forward slashes"),
        ("backup_dir", "C:/certctl/../x", "`..`"),
        ("tmp_dir", "certctl", "absolute"),
    ] {
        let err = plan_one(target("iis", &[("site", "s"), (param, value)])).unwrap_err();
        assert!(err[0].message.contains(says), "{value}: {err:?}");
    }
    // Other connectors keep POSIX paths only.
    let err = plan_one(target(
        "nginx",
        &[("fullchain_path", "/a.crt"), ("tmp_dir", "C:/Temp")],
    ))
    .unwrap_err();
    assert!(err[0].message.contains("absolute"), "{err:?}");
}

/// wincertstore `remove_expired`: `true` adds the after-deploy script, `false` (the default)
/// leaves it out, anything else is a plan error naming the param.
#[test]
fn after_deploy_commands_follow_their_when_param() {
    let p = plan_one(target("wincertstore", &[])).unwrap();
    assert!(p.commands.unwrap().after_deploy.is_empty());
    let p = plan_one(target("wincertstore", &[("remove_expired", "true")])).unwrap();
    assert_eq!(p.commands.unwrap().after_deploy.len(), 1);
    let err = plan_one(target("wincertstore", &[("remove_expired", "yes")])).unwrap_err();
    assert!(
        err[0].message.contains("param `remove_expired`")
            && err[0].message.contains("neither `true` nor `false`"),
        "{err:?}"
    );
}

/// postfix, dovecot, traefik, envoy and apache share the engine's `pair-check.sh` (one copy,
/// in connectors/templates/): each plan writes that text as it is and runs it with the
/// target's openssl, the staged certificate file and the staged key.
#[test]
fn the_builtin_pair_check_is_one_script_written_as_it_is() {
    let text = certctl::connector::builtin_template("pair-check.sh").unwrap();
    assert_eq!(
        text,
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("connectors/templates/pair-check.sh")
        )
        .unwrap()
    );
    for (connector, cert_role) in [
        ("postfix", "fullchain"),
        ("dovecot", "fullchain"),
        ("traefik", "fullchain"),
        ("envoy", "fullchain"),
        ("apache", "cert"),
    ] {
        let p = plan_one(target(connector, &[])).unwrap_or_else(|e| panic!("{connector}: {e:?}"));
        let script = p
            .templates
            .iter()
            .find(|t| t.path.ends_with("/pair-check.sh"))
            .unwrap_or_else(|| panic!("{connector} writes no pair-check.sh"));
        assert_eq!(script.content, text, "{connector}");
        let staged = |role: Role| {
            p.files
                .iter()
                .find(|f| f.role == role)
                .map(|f| f.staged.clone())
                .unwrap()
        };
        let cert = staged(if cert_role == "cert" {
            Role::Cert
        } else {
            Role::Fullchain
        });
        assert_eq!(
            p.preview[0],
            [
                "sh",
                script.path.as_str(),
                "openssl",
                &cert,
                &staged(Role::Key)
            ],
            "{connector}"
        );
    }
}

/// An inventory's own connector may reference a built-in template; an unknown one is refused
/// with a suggestion, and a template written out in full still works.
#[test]
fn user_connectors_may_reference_builtin_templates() {
    use certctl::connector::{ConnectorDef, validate};
    let yaml = |template: &str| {
        format!(
            "params: {{ cert_path: {{}}, key_path: {{}} }}\n\
             files:\n  - {{ role: fullchain, path: \"{{cert_path}}\" }}\n  - {{ role: key, path: \"{{key_path}}\" }}\n\
             templates:\n  check.sh: {template}\n  note.txt: \"for {{target}}\"\n\
             preview:\n  - [sh, \"{{template.check.sh}}\", openssl, \"{{staged.fullchain}}\", \"{{staged.key}}\"]\n"
        )
    };
    let def: ConnectorDef = serde_saphyr::from_str(&yaml("{builtin: pair-check.sh}")).unwrap();
    validate("mine", &def).unwrap();
    let def: ConnectorDef = serde_saphyr::from_str(&yaml("{builtin: pair-chek.sh}")).unwrap();
    let err = validate("mine", &def).unwrap_err().to_string();
    assert_eq!(
        err,
        "connector `mine`: template `check.sh`: certctl has no built-in template `pair-chek.sh` (did you mean `pair-check.sh`?)"
    );
    assert!(serde_saphyr::from_str::<ConnectorDef>(&yaml("{builtin: x, extra: y}")).is_err());
    let def: ConnectorDef = serde_saphyr::from_str(&yaml("\"echo {target}\"")).unwrap();
    validate("mine", &def).unwrap();
}

/// `t` with certificates `www` and `www2` (the same material), each with `params[i]`.
fn two_certificates(
    mut t: Target,
    params: [&[(&str, &str)]; 2],
) -> Result<plan::TargetPlan, String> {
    // Probed on two ports: two ECDSA certificates at one endpoint could not be told apart.
    t.certificates = ["www", "www2"]
        .iter()
        .zip(params)
        .zip(["10.0.0.11:443", "10.0.0.11:8443"])
        .map(|((name, params), address)| TargetCertificate {
            name: name.to_string(),
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            verify: Some(VerifySettings {
                address: Some(address.to_string()),
                ..t.verify.clone()
            }),
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let m = material(dir.path());
    let materials = BTreeMap::from([("www".to_string(), m.clone()), ("www2".to_string(), m)]);
    plan_with_materials(t, &settings(), materials).map_err(|e| {
        e.iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    })
}

#[test]
fn several_certificates_are_one_plan_with_each_files_and_one_reload() {
    let p = two_certificates(
        target("nginx", &[]),
        [
            &[
                ("fullchain_path", "/etc/nginx/a.crt"),
                ("key_path", "/etc/nginx/a.key"),
            ],
            &[
                ("fullchain_path", "/etc/nginx/b.crt"),
                ("key_path", "/etc/nginx/b.key"),
            ],
        ],
    )
    .unwrap();
    let files: Vec<(&str, usize)> = p.files.iter().map(|f| (f.path.as_str(), f.cert)).collect();
    assert_eq!(
        files,
        [
            ("/etc/nginx/a.crt", 0),
            ("/etc/nginx/a.key", 0),
            ("/etc/nginx/b.crt", 1),
            ("/etc/nginx/b.key", 1)
        ]
    );
    assert_eq!(p.certs.len(), 2);
    assert_eq!(
        p.reload.len(),
        1,
        "the same reload runs once: {:?}",
        p.reload
    );
    assert_eq!(
        p.test.len(),
        1,
        "the same live test runs once: {:?}",
        p.test
    );
    // Each certificate's preview has its own scratch directory.
    assert_eq!(p.scratch_subdirs, [format!("{}/2", p.scratch_dir)]);
}

#[test]
fn several_certificates_that_cannot_be_one_change_are_refused_naming_both() {
    let same = two_certificates(target("nginx", &[]), [&[], &[]]).unwrap_err();
    assert!(
        same.contains("certificates `www` and `www2` both write `/etc/nginx/ssl/www.crt`")
            || same.contains("both write"),
        "{same}"
    );
    let backups = two_certificates(
        target("nginx", &[]),
        [
            &[("fullchain_path", "/a.crt"), ("key_path", "/a.key")],
            &[
                ("fullchain_path", "/b.crt"),
                ("key_path", "/b.key"),
                ("backup_dir", "/srv/b"),
            ],
        ],
    )
    .unwrap_err();
    assert!(backups.contains("different `backup_dir`"), "{backups}");
    let k8s = two_certificates(
        target("k8ssecret", &[("namespace", "web"), ("secret_name", "tls")]),
        [&[], &[]],
    )
    .unwrap_err();
    assert!(k8s.contains("deploys one certificate per target"), "{k8s}");
}
