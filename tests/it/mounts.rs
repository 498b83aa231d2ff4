//! Live files bind-mounted into a container (docs/deploy.md#files-bind-mounted-into-containers),
//! against real sshd and a real nginx that runs in a mount namespace of its own and reads the
//! target's live files through `mount --bind` of each single file — moby#22627 without a
//! container engine ([`NsNginx`]). The target's commands reach that nginx with `nsenter`, as
//! `docker exec` would.
//!
//! Every outcome is checked independently of certctl's report: `openssl s_client` on the
//! namespace's port, the live files' bytes and inode numbers on the host, what nginx reads
//! inside the namespace (`/proc/PID/root`), and `nginx -t` in there.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support;
use support::faults::{InventorySpec, LiveSet, Pause, Rig, RigOptions, SNI, nginx_preview, sh};
use support::mountns::NsNginx;

/// The rig's live pair (nginx's certificate directory on the host), bind-mounted into a
/// namespace whose nginx serves it; the inventory points certctl at that nginx.
struct Container {
    rig: Rig,
    ns: NsNginx,
    /// The live files' inode numbers before anything ran.
    inodes: (u64, u64),
}

impl Container {
    fn start() -> Container {
        let rig = Rig::start(RigOptions::default());
        let ns = NsNginx::start(SNI, &rig.nginx.cert_path(), &rig.nginx.key_path());
        assert_eq!(ns.served(SNI), Some(rig.old.fingerprint.clone()));
        let c = Container {
            inodes: inodes(&rig),
            rig,
            ns,
        };
        c.inventory(&[], &[]);
        c
    }

    /// The inventory: the nginx connector with its live test and reload run inside the
    /// namespace, verify against the namespace's port; `params` and `commands` added.
    fn inventory(&self, params: &[(&str, &str)], commands: &[(&'static str, Vec<Vec<String>>)]) {
        let mut all = vec![
            (
                "preview",
                vec![nginx_preview().remove(0), self.ns.nginx_argv(&["-t", "-q"])],
            ),
            ("test", vec![self.ns.nginx_argv(&["-t", "-q"])]),
            ("reload", vec![self.ns.nginx_argv(&["-s", "reload"])]),
        ];
        for (section, cmds) in commands {
            all.retain(|(s, _)| s != section);
            all.push((section, cmds.clone()));
        }
        let mut p = vec![(
            "nginx_conf".to_string(),
            self.ns.conf_path().display().to_string(),
        )];
        p.extend(params.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self.rig.write_inventory(&InventorySpec {
            commands: all,
            params: p,
            verify_address: Some(self.ns.addr.to_string()),
            ..InventorySpec::default()
        });
    }

    /// What the namespace's nginx serves: `old`, `new`, or the fingerprint.
    fn served(&self) -> String {
        match self.ns.served(SNI) {
            Some(fp) if fp == self.rig.old.fingerprint => "old".into(),
            Some(fp) if fp == self.rig.new.fingerprint => "new".into(),
            other => format!("{other:?}"),
        }
    }

    /// The host's live pair and what nginx reads inside the namespace are one and the same
    /// `want` pair, in the inodes the files had at the start.
    fn assert_pair(&self, want: LiveSet, context: &str) {
        assert_eq!(
            self.rig.live_set(),
            want,
            "{context}: the host's live files"
        );
        let pair = match want {
            LiveSet::Old => (&self.rig.old.fullchain, &self.rig.old.key),
            _ => (&self.rig.new.fullchain, &self.rig.new.key),
        };
        let (cert, key) = self.ns.sees();
        assert!(
            (&cert, &key) == pair,
            "{context}: what nginx reads in its namespace"
        );
        assert_eq!(inodes(&self.rig), self.inodes, "{context}: the same inodes");
    }

    fn nginx_accepts(&self) {
        let t = self.ns.test_config();
        assert!(
            t.status.success(),
            "nginx -t in the namespace: {}",
            String::from_utf8_lossy(&t.stderr)
        );
    }
}

fn inodes(rig: &Rig) -> (u64, u64) {
    let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
    (ino(&rig.nginx.cert_path()), ino(&rig.nginx.key_path()))
}

fn status(out: &support::lab::Output) -> String {
    out.json()["targets"][0]["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn mode(p: &Path) -> u32 {
    support::mode(p)
}

#[test]
fn a_bind_mounted_pair_is_written_in_place_served_and_rolled_back_in_place() {
    let c = Container::start();
    let (cert_point, key_point) = c.ns.mount_points();
    let pid = c.ns.pid();

    // The dry-run says so, in JSON and in the plan.
    let dry = c.rig.certctl(&["deploy", "--dry-run", "--output", "json"]);
    assert_eq!(status(&dry), "would-change", "{}", dry.stderr);
    let files = dry.json()["targets"][0]["files"].clone();
    for (i, point) in [cert_point, key_point].into_iter().enumerate() {
        let want = format!("bind-mounted into {} (PID {pid}, nginx)", point.display());
        assert_eq!(files[i]["in_place"], want.as_str(), "{files}");
    }
    let plan = c.rig.certctl(&["deploy", "--dry-run"]);
    assert!(
        plan.stderr.contains(&format!(
            "replace, in place (bind-mounted into {} (PID {pid}, nginx))",
            cert_point.display()
        )),
        "{}",
        plan.stderr
    );

    let out = c.rig.certctl(&["deploy", "--output", "json"]);
    assert_eq!(status(&out), "deployed", "{}", out.stderr);
    let swap = out.json()["targets"][0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "swap")
        .unwrap()["detail"]
        .clone();
    assert_eq!(
        swap,
        "2 file(s) replaced (2 written in place, into the live inode)"
    );
    assert_eq!(c.served(), "new");
    c.assert_pair(LiveSet::New, "after the deploy");
    assert_eq!(mode(&c.rig.nginx.cert_path()), 0o644, "mode kept");
    assert_eq!(mode(&c.rig.nginx.key_path()), 0o600, "mode kept");
    c.nginx_accepts();
    assert!(c.rig.leftovers().is_empty(), "{:?}", c.rig.leftovers());

    // `certctl rollback` writes the old pair back into the same inodes.
    let undo = c.rig.certctl(&["rollback", "--output", "json"]);
    assert_eq!(status(&undo), "rolled-back", "{}", undo.stderr);
    assert_eq!(c.served(), "old");
    c.assert_pair(LiveSet::Old, "after certctl rollback");
    c.nginx_accepts();
    assert!(c.rig.leftovers().is_empty(), "{:?}", c.rig.leftovers());
}

#[test]
fn a_failure_after_the_reload_restores_the_old_pair_in_place() {
    let c = Container::start();
    // The liveness check fails once, after nginx has loaded the new pair.
    let mark = c.rig.dir().join("alive-failed-once");
    let once = format!(
        "mkdir {} 2>/dev/null && {{ echo injected alive failure >&2; exit 1; }}; exit 0",
        mark.display()
    );
    c.inventory(&[], &[("alive", vec![sh(&once)])]);
    let out = c.rig.certctl(&["deploy", "--output", "json"]);
    assert_eq!(status(&out), "rolled-back", "{}", out.stderr);
    assert!(mark.exists(), "the failure was injected after the reload");
    assert_eq!(c.served(), "old");
    c.assert_pair(LiveSet::Old, "after the rollback");
    c.nginx_accepts();
    assert!(c.rig.leftovers().is_empty(), "{:?}", c.rig.leftovers());
}

#[test]
fn in_place_never_renames_warns_and_the_container_keeps_the_old_file() {
    let c = Container::start();
    c.inventory(&[("in_place", "never")], &[]);
    let (cert_point, _) = c.ns.mount_points();
    let dry = c.rig.certctl(&["deploy", "--dry-run", "--output", "json"]);
    assert_eq!(
        dry.json()["targets"][0]["files"][0]["in_place"],
        serde_json::Value::Null
    );
    let warning = format!(
        "warning: web-1: {} is bind-mounted into {} (PID {}, nginx)",
        c.rig.nginx.cert_path().display(),
        cert_point.display(),
        c.ns.pid()
    );
    assert!(dry.stderr.contains(&warning), "{}", dry.stderr);

    // The old behaviour: renamed over, never seen inside, so verify fails and it rolls back.
    let out = c.rig.certctl(&["deploy", "--output", "json"]);
    assert_eq!(status(&out), "rolled-back", "{}", out.stderr);
    assert!(out.stderr.contains(&warning), "{}", out.stderr);
    assert_ne!(inodes(&c.rig), c.inodes, "the files were renamed over");
    assert_eq!(c.rig.live_set(), LiveSet::Old);
    let (cert, _) = c.ns.sees();
    assert_eq!(
        cert, c.rig.old.fullchain,
        "the namespace still reads the first inode"
    );
    assert_eq!(c.served(), "old");
}

/// Kills everything the rig's sshd runs (the session, the shell running the remote script,
/// the paused tool) at once, by PID, as a machine that stops would: nothing of it runs on.
fn kill_remote(rig: &Rig) {
    for pid in support::faults::descendants(rig.sshd.pid()) {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .stderr(std::process::Stdio::null())
            .status();
    }
    assert!(rig.wait_remote_idle(), "the remote script is gone");
}

/// Starts a deploy, waits until the in-place write of the key is about to run, and SIGKILLs
/// certctl there; the remote script too when `crash` (the machine stopped), else it runs on.
fn kill_during_the_key_write(c: &Container, crash: bool) {
    let pause: Pause = c.rig.arm_pause("cat", "privkey.pem", 1);
    let mut child = c.rig.spawn_certctl(&["deploy"]);
    let reached = pause.wait(Duration::from_secs(60));
    if crash && reached {
        // The target first, while its processes still hang below the sshd (once the
        // connection drops they are orphaned and could no longer be told apart).
        kill_remote(&c.rig);
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        reached,
        "never reached {}: {:?}",
        pause.what(),
        c.rig.spawned_output()
    );
    if !crash {
        pause.release();
        assert!(c.rig.wait_remote_idle(), "the remote script finished");
    }
    c.rig.disarm();
}

#[test]
fn killed_during_the_in_place_write_the_next_run_recovers_from_the_journal() {
    let c = Container::start();
    for crash in [false, true] {
        let context = if crash {
            "controller and remote script killed"
        } else {
            "controller killed"
        };
        kill_during_the_key_write(&c, crash);
        let journal = c.rig.journal().unwrap_or_default();
        assert!(
            journal.contains("\"in_place\":true"),
            "{context}: {journal}"
        );
        if crash {
            // The certificate was written, the key not yet: the journal says how to undo it.
            let live = c.rig.live_set();
            assert_eq!(
                live,
                LiveSet::Mixed("new certificate + old key".into()),
                "{context}"
            );
        }
        assert_eq!(inodes(&c.rig), c.inodes, "{context}: no rename ever");

        let next = c
            .rig
            .certctl(&["deploy", "--break-lock", "--output", "json"]);
        assert_eq!(status(&next), "deployed", "{context}: {}", next.stderr);
        let steps = next.json()["targets"][0]["steps"].clone();
        let recover = steps
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["step"] == "recover")
            .unwrap_or_else(|| panic!("{context}: no recover step: {steps}"))
            .clone();
        assert_eq!(recover["status"], "ok", "{context}: {recover}");
        assert_eq!(c.served(), "new", "{context}");
        c.assert_pair(LiveSet::New, context);
        c.nginx_accepts();
        assert!(
            c.rig.leftovers().is_empty(),
            "{context}: {:?}",
            c.rig.leftovers()
        );

        // Back to the old pair for the next round, in place too.
        let undo = c.rig.certctl(&["rollback", "--output", "json"]);
        assert_eq!(status(&undo), "rolled-back", "{context}: {}", undo.stderr);
        c.assert_pair(LiveSet::Old, context);
    }
}
