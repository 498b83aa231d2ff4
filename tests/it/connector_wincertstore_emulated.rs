//! wincertstore against the EMULATED PowerShell (tests/emulators/powershell) over a real sshd:
//! no Windows host can run here. The emulator validates every PFX with the real
//! `openssl pkcs12` and logs every statement.
//!
//! What this proves: the exact scripts (preview, snapshot of the store's thumbprints, import
//! with FriendlyName, test, guarded restore), quoting of a hostile friendly name and store,
//! no key or PFX password in any argv or statement, preview leaving the store untouched, and
//! rollback removing the new certificate only when it was not in the store before.
//! What it does not prove: real Windows certificate stores, PowerShell or Windows OpenSSH.

use crate::support;

use support::winlab::{
    READ_PASSWORD as PW, WinLab, pfx_preview as preview, script as s, test_script, thumbprint,
};

const FRIENDLY: &str = "www 'prod' $x `y`; z";

fn params() -> Vec<(&'static str, &'static str)> {
    vec![("friendly_name", FRIENDLY)]
}

fn snapshot() -> Vec<String> {
    s(&["(Get-ChildItem -Path 'Cert:\\LocalMachine\\My').Thumbprint"])
}

fn apply() -> Vec<String> {
    s(&[
        PW,
        "Remove-Item -LiteralPath '<scratch>/new.pfx.password'",
        "$cert = Import-PfxCertificate -FilePath '<scratch>/new.pfx' -CertStoreLocation 'Cert:\\LocalMachine\\My' -Password $pw",
        "$cert.FriendlyName = 'www ''prod'' $x `y`; z'",
        "$cert.Thumbprint",
    ])
}

fn restore() -> Vec<String> {
    s(&[
        "$ErrorActionPreference = 'Continue'",
        "Remove-Item -LiteralPath 'Cert:\\LocalMachine\\My\\NEW'",
        "$ErrorActionPreference = 'Stop'",
    ])
}

#[test]
fn wincertstore_emulated_deploy_imports_with_friendly_name_and_rollback_removes_it() {
    let w = WinLab::start(false);
    w.lab.write_inventory("wincertstore", &params(), None);
    let out = w.lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(
        out.json()["targets"][0]["status"],
        "deployed",
        "{}",
        out.stdout
    );
    w.assert_no_secret_logged(&w.log_text());
    assert_eq!(
        w.take_scripts(),
        vec![preview(), snapshot(), apply(), test_script()]
    );
    let mut store = w.my_store();
    store.sort();
    let mut want = vec![w.old_thumb.clone(), w.new_thumb.clone()];
    want.sort();
    assert_eq!(store, want);
    let state = w.state_json();
    assert_eq!(
        state["stores"]["LocalMachine\\My"][&w.new_thumb]["friendly_name"],
        FRIENDLY
    );
    assert!(w.lab.scratch_dirs().is_empty());

    let out = w.lab.certctl(&["rollback", "--output", "json"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.json()["targets"][0]["status"], "rolled-back");
    assert_eq!(w.take_scripts(), vec![restore()]);
    assert_eq!(w.my_store(), vec![w.old_thumb.clone()]);
}

#[test]
fn wincertstore_emulated_dry_run_changes_nothing() {
    let w = WinLab::start(false);
    w.lab.write_inventory("wincertstore", &params(), None);
    let before = w.state_json();
    let out = w.lab.certctl(&["deploy", "--dry-run", "--output", "json"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.json()["targets"][0]["status"], "would-change");
    assert_eq!(w.take_scripts(), vec![preview()]);
    let mut after = w.state_json();
    after["calls"] = before["calls"].clone();
    assert_eq!(after, before);
}

/// A failure at the import, the FriendlyName and the test: the store is as before. When the
/// new certificate was already in the store, rollback leaves it there.
#[test]
fn wincertstore_emulated_failure_at_each_step_restores_the_store() {
    for (fault, present_before) in [
        ("Import-PfxCertificate@2", false),
        ("FriendlyName@1", false),
        ("Get-Item@1", false),
        ("Get-Item@1", true),
    ] {
        let w = WinLab::start(false);
        if present_before {
            let new = w.lab.new.clone();
            w.import(&new, "new-before");
        }
        let mut before = w.my_store();
        before.sort();
        w.lab.write_inventory("wincertstore", &params(), None);
        w.fail(&[fault]);
        let out = w.lab.certctl(&["deploy", "--output", "json"]);
        assert_eq!(
            out.json()["targets"][0]["status"],
            "rolled-back",
            "{fault}: {}",
            out.stdout
        );
        let log = w.log_text();
        w.assert_no_secret_logged(&log);
        assert!(log.contains("Injected failure"), "{fault}: {log}");
        let scripts = w.take_scripts();
        let mut expected = vec![preview(), snapshot(), apply()];
        if fault.starts_with("Get-Item") {
            expected.push(test_script());
        }
        if !present_before {
            expected.push(restore());
        }
        let failed = if present_before {
            expected.len() - 1
        } else {
            expected.len() - 2
        };
        assert_eq!(scripts.len(), expected.len(), "{fault}: {scripts:?}");
        for (i, (got, want)) in scripts.iter().zip(&expected).enumerate() {
            if i == failed {
                assert!(want.starts_with(got) && got.len() > 1, "{fault}: {got:?}");
            } else {
                assert_eq!(got, want, "{fault}");
            }
        }
        let mut after = w.my_store();
        after.sort();
        assert_eq!(after, before, "{fault}");
        assert!(w.lab.scratch_dirs().is_empty(), "{fault}");
    }
}

/// `remove_expired: "true"`: after a verified deploy, the store's EXPIRED certificates with the
/// new certificate's subject go; the new one, a still-valid one with that subject (the old
/// certificate) and an expired one with another subject stay. After a failed deploy (rolled
/// back) nothing is removed.
#[test]
fn wincertstore_emulated_remove_expired_removes_only_expired_ones_with_the_subject() {
    use support::emulated::SNI;
    use support::pki::LeafOpts;
    for fail_test in [true, false] {
        let w = WinLab::start(false);
        let expired = w.lab.pki.issue(
            "expired",
            LeafOpts::new(&[SNI]).valid_secs(-200_000, -100_000),
        );
        let other = w.lab.pki.issue(
            "other",
            LeafOpts::new(&["other.test.example"]).valid_secs(-200_000, -100_000),
        );
        w.import(&expired, "expired");
        w.import(&other, "other");
        let (expired, other) = (thumbprint(&expired), thumbprint(&other));
        w.lab.write_inventory(
            "wincertstore",
            &[("friendly_name", FRIENDLY), ("remove_expired", "true")],
            None,
        );
        if fail_test {
            w.fail(&["Get-Item@1"]);
            w.run(&["deploy"], "rolled-back");
            assert!(
                w.my_store().contains(&expired),
                "nothing removed after a rollback"
            );
            continue;
        }
        let t = w.run(&["deploy"], "deployed");
        let store = w.my_store();
        let scripts = w.take_scripts();
        assert_eq!(
            scripts.last().unwrap(),
            &s(&[
                "$new = Get-Item -LiteralPath 'Cert:\\LocalMachine\\My\\NEW'",
                "$now = Get-Date",
                "Get-ChildItem -Path 'Cert:\\LocalMachine\\My' | Where-Object -Property Subject -EQ -Value $new.Subject | Where-Object -Property NotAfter -LT -Value $now | Where-Object -Property Thumbprint -NE -Value 'NEW' | Remove-Item",
            ])
        );
        assert!(!store.contains(&expired), "{store:?}");
        for kept in [&w.new_thumb, &w.old_thumb, &other] {
            assert!(store.contains(kept), "{kept}: {store:?}");
        }
        let cleanup = t["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["step"] == "cleanup")
            .unwrap();
        assert_eq!(cleanup["status"], "ok", "{cleanup}");
    }
}

#[test]
fn wincertstore_emulated_location_current_user_imports_there_and_rollback_removes_it() {
    let w = WinLab::start(false);
    let params = [("location", "CurrentUser"), ("store", "My")];
    w.lab.write_inventory("wincertstore", &params, None);
    let out = w.lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.json()["targets"][0]["status"], "deployed");
    let scripts = w.take_scripts();
    assert_eq!(
        scripts[1],
        s(&["(Get-ChildItem -Path 'Cert:\\CurrentUser\\My').Thumbprint"])
    );
    let user_store = |w: &WinLab| -> Vec<String> {
        w.state_json()["stores"]["CurrentUser\\My"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    };
    assert_eq!(user_store(&w), vec![w.new_thumb.clone()]);
    assert_eq!(
        w.my_store(),
        vec![w.old_thumb.clone()],
        "LocalMachine is not touched"
    );

    let out = w.lab.certctl(&["rollback", "--output", "json"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.json()["targets"][0]["status"], "rolled-back");
    assert_eq!(user_store(&w), Vec::<String>::new());
    assert_eq!(w.my_store(), vec![w.old_thumb.clone()]);
}

#[test]
fn wincertstore_emulated_an_unknown_location_is_refused_before_connecting() {
    let w = WinLab::start(false);
    let before = w.state_json();
    w.lab
        .write_inventory("wincertstore", &[("location", "LocalMachine\\Root")], None);
    let out = w.lab.certctl(&["deploy", "--output", "json"]);
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("location")
            && out
                .stderr
                .contains("is not a certificate store location (`LocalMachine` or `CurrentUser`)"),
        "{}",
        out.stderr
    );
    assert_eq!(w.take_scripts(), Vec::<Vec<String>>::new());
    assert_eq!(w.state_json(), before);
}
