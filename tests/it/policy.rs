//! The policy gate against the real lab: before anything is touched, a certificate that would
//! be a downgrade of what nginx serves now (expires sooner, or issued earlier, for the same
//! names) is refused with exit 2 and the certificate's place, unless `--force`; the inventory's
//! optional policy (key type and size, lifetime, issuer by subject or key hash, a CA bundle
//! validated with rustls-webpki) is enforced by `check` and `deploy` alike.

use std::path::Path;

use crate::support;

use support::edit::{self, q};
use support::lab::{Lab, SNI, TargetOptions};
use support::pki::{LeafOpts, Pki, openssl_ok};

fn assert_refused(out: &support::lab::Output, wanted: &[&str]) {
    assert_eq!(out.code, 2, "{}", out.stderr);
    for w in wanted {
        assert!(out.stderr.contains(w), "missing `{w}` in:\n{}", out.stderr);
    }
}

#[test]
fn a_certificate_expiring_sooner_than_the_served_one_is_refused_unless_forced() {
    // nginx serves `old` (90 days); the inventory's new certificate expires in 30.
    let lab = Lab::start(TargetOptions {
        new_expires_in_days: Some(30),
        ..TargetOptions::default()
    });
    let before = lab.snapshot_live_files();
    let commands = lab.sshd_commands();
    for args in [&["deploy"][..], &["deploy", "--dry-run"]] {
        let out = lab.certctl(args);
        assert_refused(
            &out,
            &[
                "certctl.yaml:",
                "certificate `www` for target `web-1` would be a downgrade: it expires",
                &format!("certificate served now for {SNI} ({})", lab.old.fingerprint),
                "expires later",
                "nothing was touched (--force deploys it anyway)",
            ],
        );
    }
    assert_eq!(lab.snapshot_live_files(), before);
    // The targets connect while the gate probes (a login touches nothing), and wait for it.
    assert_eq!(
        lab.sshd_commands(),
        commands,
        "no remote command before the gate"
    );

    let out = lab.certctl(&["deploy", "--force"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("(deploying anyway: --force)"),
        "{}",
        out.stderr
    );
    assert_eq!(lab.served(), lab.new.fingerprint);
}

#[test]
fn an_older_certificate_is_refused_and_refuse_downgrade_false_allows_it() {
    let lab = Lab::start(TargetOptions::default());
    // Valid for longer than the served one, but issued 30 days before it.
    let older = lab.pki.issue(
        "older",
        LeafOpts::new(&[SNI]).valid_secs(-30 * 86_400, 200 * 86_400),
    );
    edit::set_source(
        &lab.inventory,
        "cert",
        &format!("cert: {}", q(older.cert.display().to_string())),
    );
    edit::set_source(
        &lab.inventory,
        "key",
        &format!("key: {}", q(older.key.display().to_string())),
    );
    let out = lab.certctl(&["deploy"]);
    assert_refused(
        &out,
        &["would be a downgrade: it was issued", "is newer, issued"],
    );

    let text = std::fs::read_to_string(&lab.inventory).unwrap();
    let text = text.replace(
        "  www:\n",
        "  www:\n    policy: { refuse_downgrade: false }\n",
    );
    std::fs::write(&lab.inventory, text).unwrap();
    let out = lab.certctl(&["deploy"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

fn issuer_spki_base64(chain: &Path) -> String {
    let script = format!(
        "openssl x509 -in {} -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64",
        chain.display()
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn the_inventory_policy_is_enforced_before_anything_connects() {
    let lab = Lab::start(TargetOptions::default());
    let original = std::fs::read_to_string(&lab.inventory).unwrap();
    let with_policy = |policy: &str| {
        std::fs::write(&lab.inventory, format!("policy: {policy}\n{original}")).unwrap();
    };
    let issuer = String::from_utf8(openssl_ok(&[
        "x509",
        "-noout",
        "-issuer",
        "-nameopt",
        "RFC2253",
        "-in",
        &lab.new.cert.display().to_string(),
    ]))
    .unwrap();
    let issuer = issuer.trim().trim_start_matches("issuer=").to_string();
    let spki = issuer_spki_base64(&lab.new.chain);
    let other_pki = Pki::new(&lab.path("other-pki"));
    let root = lab.pki.root_crt().display().to_string();
    let other_root = other_pki.root_crt().display().to_string();

    // Each passing policy passes `check`.
    for ok in [
        "{ key_types: [ecdsa, ed25519], min_key_bits: { rsa: 3072, ecdsa: 256 }, max_lifetime: 398d }".to_string(),
        format!("{{ issuers: [{{ subject: {} }}] }}", q(&issuer)),
        format!("{{ issuers: [{{ subject: \"CN = nobody\" }}, {{ spki_sha256: {} }}] }}", q(&spki)),
        format!("{{ ca_bundle: {} }}", q(&root)),
    ] {
        with_policy(&ok);
        let out = lab.certctl(&["check"]);
        assert_eq!(out.code, 0, "{ok}: {}", out.stderr);
    }
    // Each failing one is refused by check and deploy, located, before any connection.
    let logins = lab.sshd_connections();
    for (bad, wanted) in [
        (
            "{ key_types: [rsa] }",
            "policy: the key is ECDSA, and the policy allows only rsa",
        ),
        (
            "{ min_key_bits: { ecdsa: 384 } }",
            "policy: the ECDSA key has 256 bits; the policy requires at least 384",
        ),
        (
            "{ max_lifetime: 30d }",
            "the policy allows at most 30 days (max_lifetime)",
        ),
        (
            "{ issuers: [{ subject: \"CN=Some Other CA\" }] }",
            "the policy's `issuers` lists none of them",
        ),
        (
            &format!("{{ ca_bundle: {} }}", q(&other_root)) as &str,
            "does not validate against ca_bundle",
        ),
    ] {
        with_policy(bad);
        for command in ["check", "deploy"] {
            assert_refused(
                &lab.certctl(&[command]),
                &["certctl.yaml:", "certificate `www`: policy: ", wanted],
            );
        }
    }
    assert_eq!(lab.sshd_connections(), logins);

    // A per-certificate policy wins over the top-level one.
    let text = format!("policy: {{ key_types: [rsa] }}\n{original}")
        .replace("  www:\n", "  www:\n    policy: { key_types: [ecdsa] }\n");
    std::fs::write(&lab.inventory, text).unwrap();
    assert_eq!(lab.certctl(&["check"]).code, 0);

    // A policy that cannot be right is refused where it is written.
    with_policy("{ key_types: [] }");
    assert_refused(
        &lab.certctl(&["check"]),
        &["certctl.yaml:1:", "`key_types` is empty"],
    );
    with_policy("{ max_lifetime: 1y }");
    assert_refused(
        &lab.certctl(&["check"]),
        &["certctl.yaml:1:", "max_lifetime"],
    );
}
