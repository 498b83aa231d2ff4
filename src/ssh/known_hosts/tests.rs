//! Unit tests of known_hosts matching (against files `ssh-keygen` writes, too).

use super::*;

// Public halves of throwaway keys (the private halves were never kept).
const ED_A: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAp5cIS7vcrOcvQ+XK6s/j7lkYKNBk0MaQdnP6EY2k9J";
const ED_A_FP: &str = "SHA256:45EQlaX+cfVdQxjvRHw1NDyTtYT9CBNCJWURMayOQPg";
const ED_B: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMU72Fo7g/NCZHmgwrsIEoUzj/NiLsHP+WwlTHPrv6Mi";
const EC_C: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBHUAPS0UQzXyLyNNA+tsHhfXq/pjOWJJaUvqtRIUKPAjR72vZkFcDx4/h/J7C/r0LcTEfHEQrTVY5ZN1t5UqlEI=";

fn key(line: &str) -> PublicKey {
    russh::keys::parse_public_key_base64(line.split(' ').nth(1).unwrap()).unwrap()
}

fn check_str(text: &str, host: &str, port: u16, k: &str) -> Result<(), HostKeyProblem> {
    check_entries(&KnownHostsFile::parse(text).matching(host, port), &key(k))
}

#[test]
fn fingerprint_format_is_openssh_sha256() {
    use russh::keys::HashAlg;
    assert_eq!(key(ED_A).fingerprint(HashAlg::Sha256).to_string(), ED_A_FP);
}

#[test]
fn plain_host_on_port_22_and_bracketed_host_on_other_ports() {
    let text = format!("web.example {ED_A}\n[web.example]:2222 {ED_B}\n");
    assert_eq!(check_str(&text, "web.example", 22, ED_A), Ok(()));
    assert_eq!(check_str(&text, "web.example", 2222, ED_B), Ok(()));
    // The port-22 line does not vouch for port 2222, whose line has another key.
    assert_eq!(
        check_str(&text, "web.example", 2222, ED_A),
        Err(HostKeyProblem::Changed { line: 2 })
    );
    assert_eq!(
        check_str(&text, "web.example", 2200, ED_A),
        Err(HostKeyProblem::Unknown)
    );
    assert_eq!(
        check_str(&text, "other.example", 22, ED_A),
        Err(HostKeyProblem::Unknown)
    );
}

#[test]
fn tabs_comments_blank_lines_and_comma_lists() {
    let text = format!(
        "# a comment\n\n   \nmalformed line\nalias,WEB.Example,10.0.0.1\t{}\t{} the comment\n",
        ED_A.split(' ').next().unwrap(),
        ED_A.split(' ').nth(1).unwrap()
    );
    assert_eq!(check_str(&text, "web.example", 22, ED_A), Ok(()));
    assert_eq!(check_str(&text, "10.0.0.1", 22, ED_A), Ok(()));
    assert_eq!(
        check_str(&text, "alias", 22, ED_B),
        Err(HostKeyProblem::Changed { line: 5 })
    );
}

#[test]
fn hashed_entries_with_a_known_salt() {
    // Salt = bytes 0..20; hashes computed independently (Python hmac/hashlib).
    let text = format!(
        "|1|AAECAwQFBgcICQoLDA0ODxAREhM=|nnUK16ANsXd3hL31YfAkGOluSjU= {ED_A}\n\
         |1|AAECAwQFBgcICQoLDA0ODxAREhM=|Wgcx+Fm+LmaWwC7rQ80eIf2uHe0= {ED_B}\n"
    );
    assert_eq!(check_str(&text, "example.com", 22, ED_A), Ok(()));
    assert_eq!(check_str(&text, "example.com", 2222, ED_B), Ok(()));
    assert_eq!(
        check_str(&text, "example.com", 22, ED_B),
        Err(HostKeyProblem::Changed { line: 1 })
    );
    assert_eq!(
        check_str(&text, "example.org", 22, ED_A),
        Err(HostKeyProblem::Unknown)
    );
}

#[test]
fn hashed_entries_written_by_ssh_keygen_match() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("known_hosts");
    std::fs::write(
        &path,
        format!("[db.example]:2022 {ED_A}\nweb.example {ED_B}\n"),
    )
    .unwrap();
    let out = std::process::Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hashed = std::fs::read_to_string(&path).unwrap();
    assert!(
        hashed.starts_with("|1|") && !hashed.contains("example"),
        "{hashed}"
    );
    assert_eq!(check(&path, "db.example", 2022, &key(ED_A)), Ok(()));
    assert_eq!(check(&path, "web.example", 22, &key(ED_B)), Ok(()));
    assert_eq!(
        check(&path, "web.example", 22, &key(ED_A)),
        Err(HostKeyProblem::Changed { line: 2 })
    );
}

#[test]
fn revoked_wins_over_a_matching_line() {
    let text = format!("web.example {ED_A}\n@revoked * {ED_A}\n");
    assert_eq!(
        check_str(&text, "web.example", 22, ED_A),
        Err(HostKeyProblem::Revoked { line: 2 })
    );
    // A revoked line for another key does not affect this one.
    let text = format!(
        "web.example {ED_A}\n@revoked\t*\t{}\n",
        ED_B.replace(' ', "\t")
    );
    assert_eq!(check_str(&text, "web.example", 22, ED_A), Ok(()));
    // Revoked and not otherwise listed: still revoked, not unknown.
    assert_eq!(
        check_str(&text, "web.example", 22, ED_B),
        Err(HostKeyProblem::Revoked { line: 2 })
    );
}

#[test]
fn cert_authority_lines_do_not_vouch_for_plain_keys() {
    let text = format!("@cert-authority *.example {ED_A}\n");
    assert_eq!(
        check_str(&text, "web.example", 22, ED_A),
        Err(HostKeyProblem::Unknown)
    );
}

#[test]
fn another_algorithm_listed_is_unknown_not_changed() {
    let text = format!("web.example {EC_C}\n");
    assert_eq!(
        check_str(&text, "web.example", 22, ED_A),
        Err(HostKeyProblem::Unknown)
    );
    // Same type, other key: changed, with the first such line.
    let text = format!("web.example {EC_C}\nweb.example {ED_B}\n");
    assert_eq!(
        check_str(&text, "web.example", 22, ED_A),
        Err(HostKeyProblem::Changed { line: 2 })
    );
    // Both an old and the current key of one type listed: the match wins.
    let text = format!("web.example {ED_B}\nweb.example {ED_A}\n");
    assert_eq!(check_str(&text, "web.example", 22, ED_A), Ok(()));
}

#[test]
fn wildcards_and_negation() {
    let text = format!("*.example,!bad.example {ED_A}\n[10.0.0.?]:2222 {ED_B}\n");
    assert_eq!(check_str(&text, "web.example", 22, ED_A), Ok(()));
    assert_eq!(
        check_str(&text, "bad.example", 22, ED_A),
        Err(HostKeyProblem::Unknown)
    );
    assert_eq!(check_str(&text, "10.0.0.7", 2222, ED_B), Ok(()));
    assert_eq!(
        check_str(&text, "10.0.0.17", 2222, ED_B),
        Err(HostKeyProblem::Unknown)
    );
    assert!(glob("a*b*c", "aXXbYYc"));
    assert!(glob("*", ""));
    assert!(!glob("a*b", "aXXc"));
    assert!(glob("w?b-*", "web-1"));
}

#[test]
fn missing_and_unreadable_files() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        check(&dir.path().join("nope"), "h", 22, &key(ED_A)),
        Err(HostKeyProblem::FileMissing)
    );
    // A directory cannot be read as a file.
    assert!(matches!(
        check(dir.path(), "h", 22, &key(ED_A)),
        Err(HostKeyProblem::Unreadable { .. })
    ));
}

#[test]
fn append_creates_a_private_file_and_then_matches() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join("known_hosts");
    append(&path, "web.example", 2222, &key(ED_A)).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dir_mode = std::fs::metadata(path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!("[web.example]:2222 {ED_A}\n")
    );
    assert_eq!(check(&path, "web.example", 2222, &key(ED_A)), Ok(()));
    assert_eq!(
        check(&path, "web.example", 2222, &key(ED_B)),
        Err(HostKeyProblem::Changed { line: 1 })
    );
}

#[test]
fn a_file_read_once_is_read_again_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("known_hosts");
    std::fs::write(&path, format!("a.example {ED_A}\n")).unwrap();
    assert_eq!(check(&path, "a.example", 22, &key(ED_A)), Ok(()));
    assert_eq!(
        check(&path, "b.example", 22, &key(ED_B)),
        Err(HostKeyProblem::Unknown)
    );
    // Our own append (trust on first use) is seen by the next check.
    append(&path, "b.example", 22, &key(ED_B)).unwrap();
    assert_eq!(check(&path, "b.example", 22, &key(ED_B)), Ok(()));
    // So is a file replaced by another one (another inode, same length).
    let other = dir.path().join("other");
    std::fs::write(&other, format!("a.example {ED_B}\nb.example {ED_A}\n")).unwrap();
    std::fs::rename(&other, &path).unwrap();
    assert_eq!(
        check(&path, "a.example", 22, &key(ED_A)),
        Err(HostKeyProblem::Changed { line: 1 })
    );
    std::fs::remove_file(&path).unwrap();
    assert_eq!(
        check(&path, "a.example", 22, &key(ED_A)),
        Err(HostKeyProblem::FileMissing)
    );
}

#[test]
fn append_keeps_an_unterminated_last_line_intact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("known_hosts");
    std::fs::write(&path, format!("a.example {ED_B}")).unwrap();
    append(&path, "b.example", 22, &key(ED_A)).unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!("a.example {ED_B}\nb.example {ED_A}\n")
    );
    assert_eq!(check(&path, "a.example", 22, &key(ED_B)), Ok(()));
    assert_eq!(check(&path, "b.example", 22, &key(ED_A)), Ok(()));
}

#[test]
fn entry_line_and_known_types() {
    assert_eq!(
        entry_line("web.example", 22, &key(ED_A)),
        format!("web.example {ED_A}")
    );
    assert_eq!(
        entry_line("::1", 2222, &key(ED_A)),
        format!("[::1]:2222 {ED_A}")
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("known_hosts");
    std::fs::write(
        &path,
        format!("web.example {EC_C}\n@revoked web.example {ED_B}\nweb.example {ED_A}\n"),
    )
    .unwrap();
    assert_eq!(
        known_key_types(&path, "web.example", 22),
        vec!["ecdsa-sha2-nistp256", "ssh-ed25519"]
    );
    assert!(known_key_types(&path, "other", 22).is_empty());
    // The first plain key, never a revoked one.
    assert_eq!(
        known_key(&path, "web.example", 22).as_deref(),
        EC_C.split_whitespace().nth(1)
    );
    assert_eq!(known_key(&path, "other", 22), None);
    assert_eq!(
        known_key(&dir.path().join("missing"), "web.example", 22),
        None
    );
}
