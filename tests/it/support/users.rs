//! Local login users for `become: sudo` tests: a fresh non-root account that sshd lets in
//! with the daemon's client key, optionally with passwordless sudo through a file in
//! `/etc/sudoers.d` that the test creates and removes. Everything is undone when the
//! [`LoginUser`] drops (sudoers file first, then `userdel -r`).

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::require;

/// A temporary local account.
pub struct LoginUser {
    pub name: String,
    pub uid: u32,
    sudoers: Option<PathBuf>,
}

impl LoginUser {
    /// Creates the account (home under /tmp, shell /bin/sh, password field `*` so sshd without
    /// PAM does not treat it as locked). With `sudo`, it may run anything with `sudo -n`.
    pub fn create(sudo: bool) -> LoginUser {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        require("useradd");
        require("sudo");
        let name = format!(
            "cc{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let home = home_of(&name);
        // Parallel test binaries may hold the passwd lock for a moment: useradd then exits
        // 1 or 10 ("cannot lock"); try again a few times.
        let mut last = String::new();
        let mut created = false;
        for _ in 0..20 {
            let out = Command::new("useradd")
                .args(["-m", "-d", &home, "-s", "/bin/sh", "-p", "*", "-U", &name])
                .output()
                .expect("run useradd");
            if out.status.success() {
                created = true;
                break;
            }
            last = String::from_utf8_lossy(&out.stderr).into_owned();
            if !last.contains("lock") {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(created, "useradd {name} failed: {last}");
        let uid = id_u(&name);
        let mut user = LoginUser {
            name,
            uid,
            sudoers: None,
        };
        if sudo {
            let path = PathBuf::from(format!("/etc/sudoers.d/certctl-test-{}", user.name));
            std::fs::write(&path, format!("{} ALL=(ALL) NOPASSWD: ALL\n", user.name))
                .expect("write sudoers file");
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o440)).unwrap();
            user.sudoers = Some(path);
        }
        user
    }

    /// Makes `shell` (an executable path) this user's login shell: sshd then runs every exec
    /// request as `shell -c COMMAND`.
    pub fn set_shell(&self, shell: &std::path::Path) {
        let out = Command::new("usermod")
            .arg("-s")
            .arg(shell)
            .arg(&self.name)
            .output()
            .expect("run usermod");
        assert!(
            out.status.success(),
            "usermod -s failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The home directory `useradd -m` made (under /tmp).
    pub fn home(&self) -> PathBuf {
        PathBuf::from(home_of(&self.name))
    }

    /// Gives `path` and everything under it to this user (`chown -R`).
    pub fn own(&self, path: &std::path::Path) {
        let out = Command::new("chown")
            .arg("-R")
            .arg(format!("{0}:{0}", self.name))
            .arg(path)
            .output()
            .expect("run chown");
        assert!(
            out.status.success(),
            "chown failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Directories this user has in /tmp whose names start with `prefix`.
    pub fn tmp_dirs(&self, prefix: &str) -> Vec<PathBuf> {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::read_dir("/tmp")
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
            .filter(|e| e.metadata().is_ok_and(|m| m.uid() == self.uid))
            .map(|e| e.path())
            .collect()
    }
}

impl Drop for LoginUser {
    fn drop(&mut self) {
        if let Some(path) = &self.sudoers {
            let _ = std::fs::remove_file(path);
        }
        // `-f`: sshd's session processes for this user may still be exiting after the client
        // disconnected (a panicking test may not even have disconnected); they go away with
        // their connection.
        for _ in 0..20 {
            match Command::new("userdel")
                .args(["-r", "-f", &self.name])
                .output()
            {
                Ok(out) if out.status.success() => return,
                Ok(out) if out.status.code() == Some(6) => return,
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        // A leftover account is a test failure, unless the test is failing already.
        if !std::thread::panicking() {
            panic!("could not remove test user {}", self.name);
        }
    }
}

fn home_of(name: &str) -> String {
    format!("/tmp/certctl-home-{name}")
}

fn id_u(name: &str) -> u32 {
    let out = Command::new("id").args(["-u", name]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}
