//! Several certificates on one target (`certificates:`), end to end against a real sshd and a
//! real nginx, apache2 and haproxy, each serving three names by SNI from three sets of files.
//! One target deploys all three as one change: one connection, one lock, one preview, one
//! swap, one reload, then a probe per name. A name whose probe fails rolls back all three.
//! What is served is read with `openssl s_client` per name and the files are compared by
//! content, independently of certctl's report.

use crate::support;

use std::fs;
use std::path::{Path, PathBuf};

use support::apache::Apache;
use support::haproxy::Haproxy;
use support::lab::Output;
use support::nginx::{Nginx, Site, served_fingerprint};
use support::pki::{Leaf, openssl_fingerprint};
use support::tls_lab::{TlsLab, contents, leftovers, target};

const NAMES: [&str; 3] = ["a.multi.example", "b.multi.example", "c.multi.example"];

/// The three names' OLD and NEW leaves from the lab's PKI, and a bundle (leaf + chain + key)
/// of each for haproxy.
struct Names {
    old: Vec<Leaf>,
    new: Vec<Leaf>,
    /// Another leaf for name b, issued first (so it expires first: serving it is no reason
    /// for the downgrade gate to refuse).
    decoy: Leaf,
}

impl Names {
    fn issue(lab: &TlsLab) -> Names {
        let leaves = |tag: &str| -> Vec<Leaf> {
            NAMES
                .iter()
                .enumerate()
                .map(|(i, name)| lab.pki.leaf(&format!("{tag}-{i}"), &[name]))
                .collect()
        };
        let decoy = lab.pki.leaf("decoy-1", &[NAMES[1]]);
        Names {
            decoy,
            old: leaves("old"),
            new: leaves("new"),
        }
    }

    fn fingerprints(leaves: &[Leaf]) -> Vec<String> {
        leaves
            .iter()
            .map(|l| openssl_fingerprint(&l.cert))
            .collect()
    }
}

fn bundle(dir: &Path, leaf: &Leaf) -> PathBuf {
    let path = dir.join(format!("{}.bundle.pem", leaf.name));
    let mut pem = fs::read(&leaf.fullchain).unwrap();
    pem.extend(fs::read(&leaf.key).unwrap());
    fs::write(&path, pem).unwrap();
    path
}

/// What one server needs in the inventory: the target's own params and commands, each
/// certificate's params, and where it listens.
struct Server {
    connector: &'static str,
    params: Vec<(String, String)>,
    commands: Vec<(String, Vec<Vec<String>>)>,
    per_cert: Vec<Vec<(String, String)>>,
    address: String,
    /// Live files of every name, for byte-for-byte checks.
    live: Vec<PathBuf>,
}

impl Server {
    /// haproxy serving its first `n` bundles, one certificate each; reloaded by USR2 to the
    /// master (no systemd here), as the connector's docs say.
    fn haproxy(haproxy: &Haproxy, n: usize) -> Server {
        Server {
            connector: "haproxy",
            params: vec![
                ("haproxy_cfg".into(), path(&haproxy.cfg_path())),
                ("pid_file".into(), path(&haproxy.pid_file())),
            ],
            commands: vec![("reload".into(), vec![haproxy.reload_argv()])],
            per_cert: (0..n)
                .map(|i| vec![("pem_path".into(), path(&haproxy.bundle_path(i)))])
                .collect(),
            address: haproxy.addr.to_string(),
            live: (0..n).map(|i| haproxy.bundle_path(i)).collect(),
        }
    }
}

fn j(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// One certificate of the target: its name, its material and its own `verify:` entries.
struct Entry<'a> {
    name: String,
    leaf: &'a Leaf,
    verify: Vec<(&'static str, String)>,
}

/// The three names' entries (`material` per name), each with its SNI; `probe_of[i]` overrides
/// name i's `verify.address`.
fn three<'a>(material: &'a [Leaf], probe_of: &[Option<String>]) -> Vec<Entry<'a>> {
    material
        .iter()
        .enumerate()
        .map(|(i, leaf)| {
            let mut verify = vec![("sni", NAMES[i].to_string())];
            if let Some(address) = probe_of.get(i).cloned().flatten() {
                verify.push(("address", address));
            }
            Entry {
                name: format!("n{i}"),
                leaf,
                verify,
            }
        })
        .collect()
}

/// Writes an inventory with one target `web-1` carrying `certs`, each with its params from
/// `server.per_cert` (in order) and its own verify entries.
fn write_inventory(lab: &TlsLab, server: &Server, certs: &[Entry<'_>]) {
    let mut y = format!(
        "defaults:\n  user: {}\n  port: {}\n  identity_file: {}\n  known_hosts: {}\n  \
         verify: {{ attempts: 4, backoff: 100ms, max_backoff: 400ms, timeout: 5s, consecutive: 2 }}\n\
         certificates:\n",
        j(&lab.sshd.user),
        lab.sshd.port(),
        j(&path(&lab.sshd.client_key)),
        j(&path(&lab.sshd.known_hosts)),
    );
    for c in certs {
        y.push_str(&format!(
            "  {}:\n    cert: {}\n    chain: {}\n    key: {}\n",
            c.name,
            j(&path(&c.leaf.cert)),
            j(&path(&c.leaf.chain)),
            j(&path(&c.leaf.key)),
        ));
    }
    y.push_str(&format!(
        "targets:\n  - name: web-1\n    host: {}\n    connector: {}\n    params:\n",
        j(&lab.sshd.host()),
        server.connector
    ));
    let engine = [("backup_dir", lab.backup_dir()), ("tmp_dir", lab.tmp_dir())];
    for (k, v) in engine.iter().map(|(k, v)| (k.to_string(), path(v))) {
        y.push_str(&format!("      {k}: {}\n", j(&v)));
    }
    for (k, v) in &server.params {
        y.push_str(&format!("      {k}: {}\n", j(v)));
    }
    if !server.commands.is_empty() {
        y.push_str("    commands:\n");
        for (section, cmds) in &server.commands {
            let cmds = serde_json::to_string(cmds).unwrap();
            y.push_str(&format!("      {section}: {cmds}\n"));
        }
    }
    y.push_str(&format!(
        "    verify:\n      address: {}\n    certificates:\n",
        j(&server.address)
    ));
    for (c, params) in certs.iter().zip(&server.per_cert) {
        y.push_str(&format!(
            "      - certificate: {}\n        params:\n",
            c.name
        ));
        for (k, v) in params {
            y.push_str(&format!("          {k}: {}\n", j(v)));
        }
        y.push_str("        verify:\n");
        for (k, v) in &c.verify {
            y.push_str(&format!("          {k}: {}\n", j(v)));
        }
    }
    fs::write(&lab.inventory, y).unwrap();
}

/// What the server serves for each name, by openssl.
fn served(address: &str) -> Vec<String> {
    NAMES
        .iter()
        .map(|name| served_fingerprint(address, Some(name)).unwrap_or_default())
        .collect()
}

/// Served for every name equals `want`, waiting out a reload's old workers (bounded).
fn assert_serves(address: &str, want: &[String], what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let now = served(address);
        if now == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: served {now:?}, want {want:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn deploy(lab: &TlsLab) -> (Output, serde_json::Value) {
    let out = lab.certctl(&["deploy", "--output", "json"]);
    let t = target(&out);
    (out, t)
}

fn step_count(t: &serde_json::Value, step: &str) -> usize {
    t["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["step"] == step)
        .count()
}

/// The whole story on one server: deploy all three names as one change, a second run is
/// `unchanged`, then a change of one name whose probe reaches a server still serving its old
/// leaf rolls back all three.
fn three_names_one_change(
    lab: &TlsLab,
    server: &Server,
    names: &Names,
    reloads: impl Fn() -> usize,
) {
    let old = Names::fingerprints(&names.old);
    let new = Names::fingerprints(&names.new);
    assert_serves(&server.address, &old, "the server starts on the old leaves");
    let before = contents(&server.live);

    // A dry-run changes nothing and lists every name's files.
    write_inventory(lab, server, &three(&names.new, &[]));
    let dry = lab.certctl(&["deploy", "--dry-run", "--output", "json"]);
    let t = target(&dry);
    assert_eq!(t["status"], "would-change", "{}", dry.stderr);
    assert_eq!(t["files"].as_array().unwrap().len(), server.live.len());
    assert_eq!(
        contents(&server.live),
        before,
        "the dry-run touched a live file"
    );

    // One change: one lock, one preview, one swap, one reload; each name probed.
    let reloads_before = reloads();
    let (out, t) = deploy(lab);
    assert_eq!(out.code, 0, "{}\n{}", out.stderr, out.stdout);
    assert_eq!(t["status"], "deployed");
    for step in ["lock", "preview", "swap", "reload", "verify"] {
        assert_eq!(step_count(&t, step), 1, "one {step}: {}", t["steps"]);
    }
    assert_eq!(
        reloads() - reloads_before,
        1,
        "exactly one reload of the server"
    );
    assert_serves(&server.address, &new, "every name serves its new leaf");
    let certs = t["certificates"].as_array().unwrap();
    assert_eq!(certs.len(), 3);
    for (i, c) in certs.iter().enumerate() {
        assert_eq!(c["certificate"], format!("n{i}"));
        assert_eq!(c["sni"], NAMES[i]);
        assert_eq!(c["served_fingerprint"], new[i].as_str(), "{c}");
        assert_eq!(c["old_fingerprint"], old[i].as_str(), "{c}");
    }
    // The human table has a row per certificate.
    let human = lab.certctl(&["verify"]);
    assert_eq!(human.code, 0, "{}", human.stderr);
    for i in 0..3 {
        assert!(
            human.stderr.contains(&format!("web-1/n{i} ")),
            "{}",
            human.stderr
        );
    }

    // Nothing to do: `unchanged`, no reload.
    let reloads_before = reloads();
    let (out, t) = deploy(lab);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(t["status"], "unchanged", "{}", out.stderr);
    assert_eq!(reloads(), reloads_before);

    // Name c gets another leaf, and name b's probe now reaches a decoy that serves an
    // unrelated leaf for b, so b's verify can never pass: all three roll back.
    let third = lab.pki.leaf("third-2", &[NAMES[2]]);
    let mut material = names.new.clone();
    material[2] = third;
    let decoy = Nginx::start(NAMES[1], &names.decoy.fullchain, &names.decoy.key);
    let probes = [None, Some(decoy.addr.to_string())];
    write_inventory(lab, server, &three(&material, &probes));
    let live_before = contents(&server.live);
    let (out, t) = deploy(lab);
    assert_eq!(out.code, 1, "{}\n{}", out.stderr, out.stdout);
    assert_eq!(t["status"], "rolled-back", "{}", out.stderr);
    // Only the changed name's files were staged (its chain, the same intermediate, was not);
    // the other names' are unchanged.
    let changed: Vec<&String> = server.per_cert[2].iter().map(|(_, v)| v).collect();
    let mut replaced = 0;
    for f in t["files"].as_array().unwrap() {
        if changed.iter().any(|p| f["path"] == p.as_str()) {
            replaced += usize::from(f["action"] == "replace");
        } else {
            assert_eq!(f["action"], "unchanged", "{f}");
        }
    }
    assert!(replaced >= 1, "{}", t["files"]);
    let error = t["error"].as_str().unwrap();
    assert!(error.contains(NAMES[1]) || error.contains("n1"), "{error}");
    assert_serves(
        &server.address,
        &new,
        "all three names back on what they served",
    );
    assert_eq!(
        contents(&server.live),
        live_before,
        "files restored byte for byte"
    );
    for dir in server.live.iter().map(|p| p.parent().unwrap()) {
        assert!(leftovers(dir).is_empty(), "{:?}", leftovers(dir));
    }
    drop(decoy);
}

#[test]
fn nginx_serves_three_names_from_one_target_and_rolls_back_all_on_one_failure() {
    let lab = TlsLab::start();
    let names = Names::issue(&lab);
    let sites: Vec<Site> = names
        .old
        .iter()
        .zip(NAMES)
        .map(|(leaf, name)| Site::new(name, &leaf.fullchain, &leaf.key))
        .collect();
    let nginx = Nginx::start_sites(&sites);
    let per_cert: Vec<Vec<(String, String)>> = (0..3)
        .map(|i| {
            let (fullchain, key) = nginx.site_paths(i);
            vec![
                ("fullchain_path".into(), path(&fullchain)),
                ("key_path".into(), path(&key)),
            ]
        })
        .collect();
    let live = (0..3)
        .flat_map(|i| {
            let (a, b) = nginx.site_paths(i);
            [a, b]
        })
        .collect();
    // Each reload the target runs is counted in a file, independently of certctl's report.
    let counter = lab.dir().join("reloads");
    let reload = ["sh", "-c", r#"echo >> "$0"; exec nginx -s reload -c "$1""#]
        .map(String::from)
        .into_iter()
        .chain([path(&counter), path(nginx.conf_path())])
        .collect();
    let server = Server {
        connector: "nginx",
        params: vec![("nginx_conf".into(), path(nginx.conf_path()))],
        commands: vec![("reload".into(), vec![reload])],
        per_cert,
        address: nginx.addr.to_string(),
        live,
    };
    let reloads = || {
        fs::read_to_string(&counter)
            .unwrap_or_default()
            .lines()
            .count()
    };
    three_names_one_change(&lab, &server, &names, reloads);
}

#[test]
fn apache_serves_three_names_from_one_target_and_rolls_back_all_on_one_failure() {
    let lab = TlsLab::start();
    let names = Names::issue(&lab);
    let files: Vec<[String; 4]> = names
        .old
        .iter()
        .zip(NAMES)
        .map(|(l, name)| [name.into(), path(&l.cert), path(&l.chain), path(&l.key)])
        .collect();
    let sites: Vec<[&str; 4]> = files
        .iter()
        .map(|f| [f[0].as_str(), &f[1], &f[2], &f[3]])
        .collect();
    let apache = Apache::start_sites(&sites);
    let per_cert = (0..3)
        .map(|i| {
            let [cert, chain, key] = apache.site_paths(i);
            vec![
                ("cert_path".into(), path(&cert)),
                ("chain_path".into(), path(&chain)),
                ("key_path".into(), path(&key)),
            ]
        })
        .collect();
    let server = Server {
        connector: "apache",
        params: vec![
            ("apache_confdir".into(), path(apache.dir())),
            ("pid_file".into(), path(&apache.pid_file())),
        ],
        commands: Vec::new(),
        per_cert,
        address: apache.addr.to_string(),
        live: (0..3).flat_map(|i| apache.site_paths(i)).collect(),
    };
    // Graceful restarts apache has logged (`AH00493: SIGUSR1 received`).
    let reloads = || apache.error_log().matches("AH00493").count();
    three_names_one_change(&lab, &server, &names, reloads);
}

#[test]
fn haproxy_serves_three_names_from_one_target_and_rolls_back_all_on_one_failure() {
    let lab = TlsLab::start();
    let names = Names::issue(&lab);
    let bundles: Vec<PathBuf> = names.old.iter().map(|l| bundle(lab.dir(), l)).collect();
    let refs: Vec<&Path> = bundles.iter().map(PathBuf::as_path).collect();
    let haproxy = Haproxy::start_bundles(&refs);
    let server = Server::haproxy(&haproxy, 3);
    // Configurations the master has loaded: one more per successful reload.
    let reloads = || haproxy.log().matches("Loading success.").count();
    three_names_one_change(&lab, &server, &names, reloads);
}

/// An RSA and an ECDSA certificate for the same name, deployed as one change (two entries of
/// `certificates:` with the same SNI): each is probed offering only its key's signature
/// schemes, and openssl, offering one kind at a time on TLS 1.2 and on TLS 1.3, sees each
/// new leaf afterwards.
mod rsa_and_ecdsa {
    use super::*;
    use support::nginx::served_fingerprint_with;
    use support::pki::{KeyType, LeafOpts};

    const NAME: &str = "dual.multi.example";

    /// openssl's view of what `address` serves for NAME to a client offering `kind` on
    /// `version` only.
    fn served_to(address: &str, kind: &str, version: &str) -> Option<String> {
        let (sigalgs, cipher) = match kind {
            "rsa" => (
                "rsa_pss_rsae_sha256:RSA+SHA256",
                "ECDHE-RSA-AES128-GCM-SHA256",
            ),
            _ => ("ECDSA+SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256"),
        };
        let mut args = vec![version, "-sigalgs", sigalgs];
        if version == "-tls1_2" {
            args.extend(["-cipher", cipher]);
        }
        served_fingerprint_with(address, Some(NAME), &args)
    }

    fn assert_each_kind_serves(address: &str, rsa: &str, ecdsa: &str, what: &str) {
        for version in ["-tls1_2", "-tls1_3"] {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                let now = (
                    served_to(address, "rsa", version),
                    served_to(address, "ecdsa", version),
                );
                if now == (Some(rsa.to_string()), Some(ecdsa.to_string())) {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{what} {version}: {now:?}"
                );
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }

    fn issue(lab: &TlsLab, tag: &str) -> Vec<Leaf> {
        vec![
            lab.pki.issue(
                &format!("{tag}-rsa"),
                LeafOpts::new(&[NAME]).key(KeyType::Rsa2048),
            ),
            lab.pki.issue(
                &format!("{tag}-ecdsa"),
                LeafOpts::new(&[NAME]).key(KeyType::EcP256),
            ),
        ]
    }

    /// Writes the two-certificate inventory for `material` (RSA first) to `server`: both
    /// probed at the server's address with SNI [`NAME`].
    fn inventory(lab: &TlsLab, server: &Server, material: &[Leaf]) {
        let certs: Vec<Entry<'_>> = material
            .iter()
            .zip(["rsa", "ecdsa"])
            .map(|(leaf, name)| Entry {
                name: name.to_string(),
                leaf,
                verify: vec![("sni", NAME.to_string())],
            })
            .collect();
        write_inventory(lab, server, &certs);
    }

    /// Deploys the new pair over the old one and checks each kind independently.
    fn deploy_both(lab: &TlsLab, server: &Server) {
        let new = issue(lab, "new-dual");
        inventory(lab, server, &new);
        let (out, t) = deploy(lab);
        assert_eq!(out.code, 0, "{}\n{}", out.stderr, out.stdout);
        assert_eq!(t["status"], "deployed");
        assert_eq!(step_count(&t, "reload"), 1);
        let fps = Names::fingerprints(&new);
        let certs = t["certificates"].as_array().unwrap();
        assert_eq!(certs[0]["served_fingerprint"], fps[0].as_str(), "{t}");
        assert_eq!(certs[1]["served_fingerprint"], fps[1].as_str(), "{t}");
        assert_each_kind_serves(&server.address, &fps[0], &fps[1], "after the deploy");
        // A second run: both in place and each served to its kind of client.
        let (out, t) = deploy(lab);
        assert_eq!(t["status"], "unchanged", "{}", out.stderr);
    }

    #[test]
    fn nginx_rsa_and_ecdsa_for_one_name_deploy_as_one_change_and_each_is_verified() {
        let lab = TlsLab::start();
        let old = issue(&lab, "start");
        let site = Site::new(NAME, &old[0].fullchain, &old[0].key)
            .also(&old[1].fullchain, &old[1].key)
            .tls13();
        let nginx = Nginx::start_sites(&[site]);
        let (rsa_cert, rsa_key) = nginx.site_paths(0);
        let dir = rsa_cert.parent().unwrap();
        let (ecdsa_cert, ecdsa_key) = (dir.join("also-0.pem"), dir.join("also-0.key"));
        assert!(ecdsa_cert.exists() && ecdsa_key.exists());
        let old_fps = Names::fingerprints(&old);
        assert_each_kind_serves(
            &nginx.addr.to_string(),
            &old_fps[0],
            &old_fps[1],
            "at start",
        );
        let pair = |c: &Path, k: &Path| {
            vec![
                ("fullchain_path".to_string(), path(c)),
                ("key_path".to_string(), path(k)),
            ]
        };
        let server = Server {
            connector: "nginx",
            params: vec![("nginx_conf".into(), path(nginx.conf_path()))],
            commands: Vec::new(),
            per_cert: vec![pair(&rsa_cert, &rsa_key), pair(&ecdsa_cert, &ecdsa_key)],
            address: nginx.addr.to_string(),
            live: vec![rsa_cert, rsa_key, ecdsa_cert, ecdsa_key],
        };
        deploy_both(&lab, &server);
    }

    #[test]
    fn haproxy_rsa_and_ecdsa_for_one_name_deploy_as_one_change_and_each_is_verified() {
        let lab = TlsLab::start();
        let old = issue(&lab, "start");
        let bundles: Vec<PathBuf> = old.iter().map(|l| bundle(lab.dir(), l)).collect();
        let haproxy = Haproxy::start_bundles(&[&bundles[0], &bundles[1]]);
        let old_fps = Names::fingerprints(&old);
        let address = haproxy.addr.to_string();
        assert_each_kind_serves(&address, &old_fps[0], &old_fps[1], "at start");
        let server = Server::haproxy(&haproxy, 2);
        deploy_both(&lab, &server);
    }

    /// Two certificates of one key kind probed at one endpoint cannot be told apart: refused
    /// before anything connects.
    #[test]
    fn two_of_one_kind_at_one_endpoint_are_refused() {
        let lab = TlsLab::start();
        let both_rsa = [
            lab.pki
                .issue("r1", LeafOpts::new(&[NAME]).key(KeyType::Rsa2048)),
            lab.pki
                .issue("r2", LeafOpts::new(&[NAME]).key(KeyType::Rsa2048)),
        ];
        let server = Server {
            connector: "nginx",
            params: vec![("nginx_conf".into(), "/nonexistent/nginx.conf".into())],
            commands: Vec::new(),
            per_cert: (0..2)
                .map(|i| {
                    vec![
                        ("fullchain_path".to_string(), format!("/srv/{i}.crt")),
                        ("key_path".to_string(), format!("/srv/{i}.key")),
                    ]
                })
                .collect(),
            address: "127.0.0.1:9".into(),
            live: Vec::new(),
        };
        inventory(&lab, &server, &both_rsa);
        let out = lab.certctl(&["deploy", "--dry-run"]);
        assert_eq!(out.code, 2, "{}", out.stderr);
        assert!(
            out.stderr.contains("cannot tell them apart"),
            "{}",
            out.stderr
        );
    }
}
