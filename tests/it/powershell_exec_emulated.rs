//! certctl's own PowerShell transport — `quote::PowerShell` scripts run by
//! `Session::exec_powershell` — over a real sshd into the EMULATED PowerShell
//! (tests/emulators/powershell): hostile values come back byte for byte, the exec request is
//! `powershell … -EncodedCommand …` with nothing a shell would interpret, and the statements
//! the emulator decoded are exactly the ones certctl wrote. Emulated: this proves the
//! encoding and quoting against the emulator's PowerShell rules, not Windows itself.

use crate::support;

use std::collections::BTreeMap;

use certctl::ssh::Session;
use certctl::ssh::quote::PowerShell;
use serde_json::Value;

const EMULATOR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/emulators/powershell");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn powershell_exec_round_trips_hostile_values_emulated() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    std::os::unix::fs::symlink(EMULATOR, bin.join("powershell")).unwrap();
    let sshd = support::sshd::Sshd::start_with(&[&format!(
        "SetEnv PATH={}:/usr/bin:/bin CERTCTL_EMU_STATE={}",
        bin.display(),
        state.display()
    )]);
    let session = Session::connect(&sshd.ssh_config()).await.unwrap();
    let hostile = [
        "plain",
        "two words",
        "it's 'quoted' \"twice\"",
        "$env:PATH $(Remove-Item -Recurse C:\\)",
        "`n`t back`ticks",
        "a; b | c & d",
        "#not a comment",
        "\u{2018}curly\u{2019} \u{201A}low\u{201B}",
        "héllo ✓ 证书",
    ];
    let mut ps = PowerShell::new();
    for (i, value) in hostile.iter().enumerate() {
        let values = BTreeMap::from([("v".to_string(), value.to_string())]);
        ps.statement(&format!("$x{i} = {{v}}"), &values)
            .unwrap()
            .statement(&format!("Write-Output -InputObject $x{i}"), &values)
            .unwrap();
    }
    let out = session.exec_powershell(&ps).await.unwrap();
    assert!(out.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let want: String = hostile.iter().map(|v| format!("{v}\n")).collect();
    assert_eq!(text, want);

    // The emulator saw `-NoLogo -NoProfile -NonInteractive -EncodedCommand B64` and decoded
    // exactly the statements certctl wrote.
    let log = std::fs::read_to_string(state.join("powershell.log")).unwrap();
    let entries: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let argv = entries.iter().find_map(|e| e.get("argv")).unwrap();
    assert_eq!(argv[0], "-NoLogo");
    assert_eq!(argv[3], "-EncodedCommand");
    assert_eq!(argv.as_array().unwrap().len(), 5);
    let statements: Vec<&str> = entries
        .iter()
        .filter_map(|e| e.get("stmt").and_then(Value::as_str))
        .collect();
    let written: Vec<&str> = ps.as_str().lines().collect();
    assert_eq!(statements, written);

    // A failing statement fails the script (ErrorActionPreference = Stop) and stops it.
    let mut bad = PowerShell::new();
    bad.statement(
        "Get-Item -LiteralPath {p}",
        &BTreeMap::from([("p".into(), "Cert:\\LocalMachine\\My\\00".into())]),
    )
    .unwrap()
    .statement("Write-Output -InputObject 'not reached'", &BTreeMap::new())
    .unwrap();
    let out = session.exec_powershell(&bad).await.unwrap();
    assert!(!out.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("not reached"));
    session.close().await;
}
