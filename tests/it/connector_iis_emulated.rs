//! iis against the EMULATED PowerShell (tests/emulators/powershell) over a real sshd: no
//! Windows host can run here. The emulator parses a strict PowerShell 5.1 subset, validates
//! every PFX with the real `openssl pkcs12`, refuses AddSslCertificate on a binding that has a
//! certificate (as IIS does), emulates `netsh http update sslcert` (an in-place swap), counts
//! every moment a binding loses its certificate, logs every statement, and writes the
//! certificate a binding serves to served/.
//!
//! What this proves: the exact scripts (snapshot, preview, import, the netsh swap, test,
//! restore), quoting of a hostile site name, no key or PFX password in any argv or statement,
//! preview leaving the state untouched, rollback swapping the old certificate back after a
//! failure at each step, and that a redeploy and its rollbacks never leave the binding without
//! a certificate. What it does not prove: real IIS, HTTP.sys, netsh, Windows PowerShell or
//! Windows OpenSSH behaviour.

use crate::support;

use support::emulated::SNI;
use support::nginx::Nginx;
use support::winlab::{READ_PASSWORD as PW, SITE, WinLab, pfx_preview, script as s, test_script};

fn params() -> Vec<(&'static str, &'static str)> {
    vec![("site", SITE), ("hostname", SNI)]
}

fn get_binding() -> String {
    format!(
        "$b = (Get-WebBinding -Name 'Default ''Web'' $x `y`; z' -Protocol 'https' -Port '443' -HostHeader '{SNI}')[0]"
    )
}

/// `Get-WebBinding` of the target's binding, without `$b = (…)[0]`.
fn web_binding() -> String {
    format!(
        "Get-WebBinding -Name 'Default ''Web'' $x `y`; z' -Protocol 'https' -Port '443' -HostHeader '{SNI}'"
    )
}

fn preview() -> Vec<Vec<String>> {
    vec![
        pfx_preview(),
        s(&[
            "Import-Module WebAdministration",
            "(Get-Item -LiteralPath 'IIS:\\Sites\\Default ''Web'' $x `y`; z').Name",
            &format!("({}).bindingInformation", web_binding()),
            &format!(
                "{} | Where-Object -Property sslFlags -NE -Value 1 | Where-Object -Property bindingInformation -NE -Value '*:443:{SNI}' | Select-Object -ExpandProperty bindingInformation | Write-Error",
                web_binding()
            ),
        ]),
    ]
}

fn snapshot() -> Vec<Vec<String>> {
    vec![
        s(&[
            "Import-Module WebAdministration",
            &format!("({}).certificateHash", web_binding()),
        ]),
        s(&[
            "Import-Module WebAdministration",
            &format!("({}).bindingInformation", web_binding()),
        ]),
        s(&[
            "Import-Module WebAdministration",
            &format!(
                "({} | Where-Object -Property sslFlags -EQ -Value 1).certificateHash",
                web_binding()
            ),
        ]),
        s(&[
            "Import-Module WebAdministration",
            &format!(
                "({} | Where-Object -Property sslFlags -EQ -Value 0 | Where-Object -Property bindingInformation -EQ -Value '*:443:{SNI}').certificateHash",
                web_binding()
            ),
        ]),
    ]
}

/// `netsh http update sslcert` of the SNI binding (`ipport`: of the binding without SNI on IP
/// `*`) to `hash` (a quoted `'certhash=…'` or `$hash`).
fn netsh(ipport: bool, hash: &str) -> String {
    let endpoint = if ipport {
        "'ipport=0.0.0.0:443'".to_string()
    } else {
        format!("'hostnameport={SNI}:443'")
    };
    format!(
        "netsh http update sslcert {endpoint} {hash} 'certstorename=My' 'appid={{4dc3e181-e14b-4a21-b022-59fc669b0914}}'"
    )
}

/// First deploy only: the binding is created, SNI when there is a host header.
fn new_binding() -> Vec<String> {
    s(&[
        "Import-Module WebAdministration",
        &format!("$sni = '{SNI}'.Length.CompareTo(0)"),
        &format!(
            "New-WebBinding -Name 'Default ''Web'' $x `y`; z' -Protocol 'https' -Port '443' -HostHeader '{SNI}' -SslFlags $sni"
        ),
    ])
}

/// After a first deploy: unbind (tolerant), then remove the binding this run created.
fn restore_first() -> Vec<Vec<String>> {
    vec![
        s(&[
            "Import-Module WebAdministration",
            "$ErrorActionPreference = 'Continue'",
            &get_binding(),
            "$b.RemoveSslCertificate()",
            "$ErrorActionPreference = 'Stop'",
        ]),
        s(&[
            "Import-Module WebAdministration",
            &format!("{} | Remove-WebBinding", web_binding()),
        ]),
    ]
}

fn import() -> Vec<String> {
    s(&[
        PW,
        "Remove-Item -LiteralPath '<scratch>/new.pfx.password'",
        "$cert = Import-PfxCertificate -FilePath '<scratch>/new.pfx' -CertStoreLocation 'Cert:\\LocalMachine\\My' -Password $pw",
        "$cert.Thumbprint",
    ])
}

/// A redeploy onto a binding that has a certificate: import, then the atomic swap.
fn apply() -> Vec<Vec<String>> {
    apply_to(false)
}

fn apply_to(ipport: bool) -> Vec<Vec<String>> {
    vec![import(), s(&[&netsh(ipport, "'certhash=NEW'")])]
}

/// First deploy (no certificate before): bind the new one.
fn bind() -> Vec<String> {
    s(&[
        "Import-Module WebAdministration",
        &get_binding(),
        "$b.AddSslCertificate('NEW', 'My')",
    ])
}

fn restore() -> Vec<String> {
    restore_to(false)
}

/// The saved certificate back, atomically.
fn restore_to(ipport: bool) -> Vec<String> {
    let saved = if ipport { "ip" } else { "sni" };
    s(&[
        &format!("$old = (Get-Content -Raw -LiteralPath '<backups>/RUN/{saved}.txt').Trim()"),
        "$hash = 'certhash=OLD'.Replace('OLD', $old)",
        &netsh(ipport, "$hash"),
    ])
}

#[test]
fn iis_emulated_deploy_runs_exact_scripts_rebinds_and_logs_no_secret() {
    let w = WinLab::start(true);
    w.lab.write_inventory("iis", &params(), None);
    assert_eq!(w.bound(), w.old_thumb);
    let out = w.lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(
        out.json()["targets"][0]["status"],
        "deployed",
        "{}",
        out.stdout
    );
    let log = w.log_text();
    w.assert_no_secret_logged(&log);
    assert!(!log.contains("unbound_after_script"), "{log}");
    // The swap was one netsh update, in place: never a moment without a certificate.
    assert_eq!(w.unbound(), 0, "{log}");
    assert!(log.contains("\"update_sslcert\""), "{log}");
    let scripts = w.take_scripts();
    let mut expected = preview();
    expected.extend(snapshot());
    expected.extend(apply());
    expected.push(test_script());
    assert_eq!(scripts, expected);
    assert_eq!(w.bound(), w.new_thumb);
    assert!(
        w.my_store().contains(&w.old_thumb),
        "the old certificate stays in the store"
    );
    // What the binding serves now: the new leaf and its chain.
    let served = std::fs::read_dir(w.state.join("served"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "pem"))
        .expect("a served certificate");
    let pem = std::fs::read_to_string(served).unwrap();
    assert!(pem.starts_with(&std::fs::read_to_string(&w.lab.new.cert).unwrap()));
    assert!(w.lab.scratch_dirs().is_empty());

    // `certctl rollback` rebinds the old certificate from the saved snapshot.
    let out = w.lab.certctl(&["rollback", "--output", "json"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.json()["targets"][0]["status"], "rolled-back");
    assert_eq!(w.take_scripts(), vec![restore()]);
    assert_eq!(w.bound(), w.old_thumb);
    assert_eq!(w.unbound(), 0, "the rollback swapped back in place");
}

#[test]
fn iis_emulated_dry_run_changes_nothing() {
    let w = WinLab::start(true);
    w.lab.write_inventory("iis", &params(), None);
    let before = w.state_json();
    let out = w.lab.certctl(&["deploy", "--dry-run", "--output", "json"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.json()["targets"][0]["status"], "would-change");
    assert_eq!(w.take_scripts(), preview());
    let mut after = w.state_json();
    // Only the emulator's call counters move.
    after["calls"] = before["calls"].clone();
    assert_eq!(after, before);
}

/// A failure injected at each step from the import on: the old certificate is bound again,
/// by `netsh http update sslcert` as well, and the binding never is without a certificate
/// (the seeding made one Import-PfxCertificate call; the preview made the first Get-Item
/// call; the swap is netsh's first call).
#[test]
fn iis_emulated_failure_at_each_step_rebinds_the_old_certificate() {
    for (fault, after_swap) in [
        ("Import-PfxCertificate@2", 1),
        ("netsh@1", 2),
        ("Get-Item@2", 3),
    ] {
        let w = WinLab::start(true);
        w.lab.write_inventory("iis", &params(), None);
        w.fail(&[fault]);
        let out = w.lab.certctl(&["deploy", "--output", "json"]);
        assert_eq!(
            out.json()["targets"][0]["status"],
            "rolled-back",
            "{fault}: {}",
            out.stdout
        );
        // The error names the failed script by its statements, not its base64.
        let error = out.json()["targets"][0]["error"].to_string();
        assert!(
            error.contains("powershell: ") && error.contains("Injected failure"),
            "{fault}: {error}"
        );
        let log = w.log_text();
        w.assert_no_secret_logged(&log);
        assert!(log.contains("Injected failure"), "{fault}: {log}");
        let scripts = w.take_scripts();
        let mut expected = preview();
        expected.extend(snapshot());
        let mut ran = apply();
        ran.push(test_script());
        expected.extend(ran.into_iter().take(after_swap));
        expected.push(restore());
        // The failing script stops at the failed statement.
        let failed = expected.len() - 2;
        assert_eq!(scripts.len(), expected.len(), "{fault}: {scripts:?}");
        for (i, (got, want)) in scripts.iter().zip(&expected).enumerate() {
            if i == failed {
                assert!(want.starts_with(got) && got.len() > 1, "{fault}: {got:?}");
            } else {
                assert_eq!(got, want, "{fault}");
            }
        }
        assert_eq!(w.bound(), w.old_thumb, "{fault}");
        assert_eq!(w.unbound(), 0, "{fault}: a moment without a certificate");
        assert!(!log.contains("\"unbind\""), "{fault}: {log}");
        assert!(w.lab.scratch_dirs().is_empty(), "{fault}");
    }
}

/// A real TLS server (nginx) serves what the binding serves: the emulator's bind hook copies
/// served/SITE_443_HOST.pem/.key into nginx and reloads it. certctl's verify then sees the new
/// certificate over TLS; after a failure at the test step, the rollback's verify sees the old
/// one again.
#[test]
fn iis_emulated_bound_certificate_is_served_and_probed_over_tls() {
    for fail_test in [false, true] {
        let w = WinLab::start(true);
        let (pem, key) = w.served();
        assert!(
            pem.exists(),
            "the seeded binding serves the old certificate"
        );
        let nginx = Nginx::start(SNI, &pem, &key);
        let hook = w.lab.path("on-bind.sh");
        let mut reload = vec![support::require("nginx").display().to_string()];
        reload.extend(nginx.instance_args());
        reload.extend(["-s".into(), "reload".into()]);
        std::fs::write(
            &hook,
            format!(
                "#!/bin/sh\nset -e\ncp '{}' '{}'\ncp '{}' '{}'\n{}\n",
                pem.display(),
                nginx.cert_path().display(),
                key.display(),
                nginx.key_path().display(),
                reload
                    .iter()
                    .map(|a| format!("'{a}'"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
        w.on_bind(&hook);
        w.lab
            .write_inventory("iis", &params(), Some(&nginx.addr.to_string()));
        if fail_test {
            // Call 1 is the preview's (the site exists); call 2 the test's.
            w.fail(&["Get-Item@2"]);
        }
        let out = w.lab.certctl(&["deploy", "--output", "json"]);
        let t = &out.json()["targets"][0];
        let (want_status, want_leaf) = if fail_test {
            ("rolled-back", &w.lab.old)
        } else {
            ("deployed", &w.lab.new)
        };
        assert_eq!(t["status"], want_status, "{}", out.stdout);
        let leaf = certctl::material::Material::load(&certctl::material::MaterialSpec::new(
            "x",
            want_leaf.cert.clone(),
            Some(want_leaf.chain.clone().into()),
            certctl::material::KeySource::File(want_leaf.key.clone()),
        ))
        .unwrap()
        .leaf
        .fingerprint
        .to_string();
        assert_eq!(t["served_fingerprint"], leaf.as_str(), "{}", out.stdout);
    }
}

/// A first deploy: the site has no https binding yet. It is created (SNI, since there is a
/// host header) and bound; `certctl rollback` removes it again. A failure at each step after
/// the snapshot also leaves the site without the binding.
#[test]
fn iis_emulated_first_deploy_creates_the_binding_and_rollback_removes_it() {
    let binding = format!("*:443:{SNI}");
    let w = WinLab::start(false);
    w.lab.write_inventory("iis", &params(), None);
    w.run(&["deploy"], "deployed");
    let mut expected = preview();
    expected.extend(snapshot());
    expected.push(import());
    expected.push(new_binding());
    expected.push(bind());
    expected.push(test_script());
    assert_eq!(w.take_scripts(), expected);
    let site = &w.state_json()["sites"][SITE];
    assert_eq!(site.as_array().unwrap().len(), 1, "{site}");
    assert_eq!(site[0]["bindingInformation"], binding.as_str());
    assert_eq!(site[0]["sslFlags"], 1, "SNI");
    assert_eq!(w.bound(), w.new_thumb);

    w.run(&["rollback"], "rolled-back");
    assert_eq!(w.take_scripts(), restore_first());
    assert_eq!(w.state_json()["sites"][SITE], serde_json::json!([]));

    // Failures: at the import (no binding made yet), the creation, the bind, the test. Calls
    // count from the lab's start: the seeding imported once, the first deploy made one call
    // of each, and every preview calls Get-Item (the site check) once.
    for fault in [
        "Import-PfxCertificate@3",
        "New-WebBinding@2",
        "AddSslCertificate@2",
        "Get-Item@7",
    ] {
        w.fail(&[fault]);
        let t = w.run(&["deploy"], "rolled-back");
        assert!(
            t["error"].to_string().contains("Injected failure"),
            "{fault}: {t}"
        );
        let scripts = w.take_scripts();
        assert_eq!(scripts[scripts.len() - 2..], restore_first(), "{fault}");
        assert_eq!(
            w.state_json()["sites"][SITE],
            serde_json::json!([]),
            "{fault}"
        );
        assert!(w.lab.scratch_dirs().is_empty(), "{fault}");
    }
}

/// Rewrites the seeded binding (SITE, SNI, the old certificate) to `info` (IP:PORT:HOST) and
/// `flags`, as an IIS administrator might have made it.
fn rebind_seed(w: &WinLab, info: &str, flags: u64) {
    let mut state = w.state_json();
    let b = &mut state["sites"][SITE][0];
    b["bindingInformation"] = info.into();
    b["sslFlags"] = flags.into();
    std::fs::write(
        w.state.join("state.json"),
        serde_json::to_vec(&state).unwrap(),
    )
    .unwrap();
}

/// A binding without SNI on IP `*` (HTTP.sys `0.0.0.0:443`): swapped by `ipport=`, and swapped
/// back by `certctl rollback` and after a failure at the test step, never unbound.
#[test]
fn iis_emulated_binding_without_sni_swaps_by_ipport() {
    let w = WinLab::start(true);
    rebind_seed(&w, &format!("*:443:{SNI}"), 0);
    w.lab.write_inventory("iis", &params(), None);
    w.run(&["deploy"], "deployed");
    let mut expected = preview();
    expected.extend(snapshot());
    expected.extend(apply_to(true));
    expected.push(test_script());
    assert_eq!(w.take_scripts(), expected);
    assert_eq!(w.bound(), w.new_thumb);
    w.run(&["rollback"], "rolled-back");
    assert_eq!(w.take_scripts(), vec![restore_to(true)]);
    assert_eq!(w.bound(), w.old_thumb);

    // Call 1 of Get-Item was the first preview's, 2 the test's, 3 the second preview's.
    w.fail(&["Get-Item@4"]);
    w.run(&["deploy"], "rolled-back");
    let scripts = w.take_scripts();
    assert_eq!(scripts[scripts.len() - 1], restore_to(true));
    assert_eq!(w.bound(), w.old_thumb);
    assert_eq!(w.unbound(), 0, "never a moment without a certificate");
}

/// A binding without SNI on a specific IP address: which HTTP.sys binding to update is not
/// guessed; the preview refuses it, naming the binding, and nothing changes.
#[test]
fn iis_emulated_binding_without_sni_on_a_specific_ip_is_refused_by_the_preview() {
    let w = WinLab::start(true);
    let info = format!("10.1.2.3:443:{SNI}");
    rebind_seed(&w, &info, 0);
    w.lab.write_inventory("iis", &params(), None);
    let before = w.state_json();
    let t = w.run(&["deploy"], "failed");
    let error = t["error"].to_string();
    assert!(
        error.contains("Write-Error") && error.contains(&info),
        "{error}"
    );
    assert_eq!(w.take_scripts(), preview());
    let mut after = w.state_json();
    after["calls"] = before["calls"].clone();
    assert_eq!(after, before);
}
