//! The SSH transport against a real OpenSSH sshd on loopback: exec, SFTP, host-key policy,
//! every auth source, timeouts. Each test starts its own daemon (tests/it/support/sshd.rs).

use crate::support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use certctl::secret::Secret;
use certctl::ssh::quote::Script;
use certctl::ssh::{AuthSources, Session, SshConfig, SshError, SshErrorKind};
use support::ChildGuard;
use support::sshd::{self, Agent, Sshd};
use support::users::LoginUser;

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

/// No agent, no passphrase: the test's own explicit auth sources, whatever the CI env holds.
fn no_agent() -> AuthSources {
    AuthSources::default()
}

async fn connect(config: &SshConfig) -> Session {
    Session::connect_with(config, &no_agent())
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"))
}

async fn connect_err(config: &SshConfig) -> SshError {
    Session::connect_with(config, &no_agent())
        .await
        .expect_err("connect must fail")
}

#[tokio::test]
#[expect(
    clippy::print_stderr,
    reason = "reports the measured loopback timings in the test log"
)]
async fn exec_returns_stdout_stderr_and_exit_code() {
    let server = Sshd::start();
    let started = Instant::now();
    let session = connect(&server.ssh_config()).await;
    let connected = started.elapsed();
    assert_eq!(session.host(), server.host());
    assert_eq!(
        session.host_key_fingerprint(),
        server.host_key_fingerprint()
    );

    let started = Instant::now();
    let out = session
        .exec(&argv(&["sh", "-c", "echo out; echo err >&2; exit 3"]))
        .await
        .unwrap();
    let first_exec = started.elapsed();
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(out.status, 3);
    assert!(!out.success());

    let started = Instant::now();
    let out = session.exec(&argv(&["true"])).await.unwrap();
    let second_exec = started.elapsed();
    assert!(out.success());
    eprintln!(
        "loopback timings: connect+kex+auth {connected:?}, first exec {first_exec:?}, exec `true` {second_exec:?}"
    );

    // Arguments reach the program verbatim, whatever they contain.
    let hostile = "a 'b' \"c\" $(touch /nonexistent) `id`; exit 9\nline2";
    let out = session
        .exec(&argv(&["printf", "%s", hostile]))
        .await
        .unwrap();
    assert_eq!(out.stdout, hostile.as_bytes());
    assert_eq!(out.status, 0);

    let out = session
        .exec(&argv(&["certctl-no-such-command"]))
        .await
        .unwrap();
    assert_eq!(out.status, 127);
    session.close().await;
}

#[tokio::test]
async fn a_command_killed_by_a_signal_has_no_exit_status() {
    let server = Sshd::start();
    let session = connect(&server.ssh_config()).await;
    let mut script = Script::new();
    script.raw("kill -TERM $$\n");
    let err = session.exec_script(&script, None).await.unwrap_err();
    match &err.kind {
        SshErrorKind::NoExitStatus {
            reason, command, ..
        } => {
            assert!(reason.contains("TERM"), "{reason}");
            assert!(command.contains("kill -TERM"), "{command}");
        }
        other => panic!("expected NoExitStatus, got {other:?}"),
    }
    assert!(err.to_string().contains("signal TERM"), "{err}");
    // The connection survives a dead command.
    assert!(session.exec(&argv(&["true"])).await.unwrap().success());
}

#[tokio::test]
async fn a_command_over_its_timeout_fails_and_the_session_still_works() {
    let server = Sshd::start();
    // Long enough that `true` afterwards fits in it on a loaded machine (it did not in 1 s).
    let config = SshConfig {
        command_timeout: Duration::from_secs(3),
        ..server.ssh_config()
    };
    let session = connect(&config).await;
    let err = session.exec(&argv(&["sleep", "30"])).await.unwrap_err();
    match &err.kind {
        SshErrorKind::CommandTimeout {
            command, timeout, ..
        } => {
            assert_eq!(command, "sleep 30");
            assert_eq!(*timeout, Duration::from_secs(3));
        }
        other => panic!("expected CommandTimeout, got {other:?}"),
    }
    assert!(session.exec(&argv(&["true"])).await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_script_streams_stdin_then_eof() {
    let server = Sshd::start();
    let session = connect(&server.ssh_config()).await;

    let mut script = Script::new();
    script.raw("cat\n").cmd(&["printf", "%s", "done"]);
    let out = session
        .exec_script(&script, Some(b"hello\n"))
        .await
        .unwrap();
    assert_eq!(out.stdout, b"hello\ndone");
    assert!(out.success());

    // Without stdin the command still sees EOF at once instead of hanging.
    let out = session.exec_script(&script, None).await.unwrap();
    assert_eq!(out.stdout, b"done");

    // More than one channel window (2 MiB) of input: flow control works both ways.
    let big: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let mut script = Script::new();
    script.cmd(&["wc", "-c"]);
    let out = session.exec_script(&script, Some(&big)).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        big.len().to_string()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_execs_share_one_connection() {
    let server = Sshd::start();
    let session = connect(&server.ssh_config()).await;
    // 20 > sshd's default MaxSessions (10): the session queues what does not fit.
    let runs = (0..20).map(|i| {
        let session = &session;
        async move {
            session
                .exec(&argv(&[
                    "sh",
                    "-c",
                    "sleep 0.2; printf '%s' \"$0\"",
                    &i.to_string(),
                ]))
                .await
        }
    });
    let results = futures::future::join_all(runs).await;
    for (i, result) in results.into_iter().enumerate() {
        let out = result.unwrap_or_else(|e| panic!("exec {i}: {e}"));
        assert_eq!(out.stdout, i.to_string().as_bytes());
    }
    // All of it on a single TCP connection: sshd accepted exactly one login.
    assert_eq!(
        server.log().matches("Accepted publickey").count(),
        1,
        "{}",
        server.log()
    );
}

#[tokio::test]
async fn upload_sets_mode_owner_and_content_exclusively() {
    // A strict server-side umask, as on hardened hosts: the mode given at create is filtered
    // by it, so only the explicit chmod after creation yields 0640.
    let server = Sshd::start_with(&["Subsystem sftp internal-sftp -u 077"]);
    let session = connect(&server.ssh_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();

    session
        .upload(&path("key.pem"), b"secret key bytes", 0o600, None)
        .await
        .unwrap();
    let meta = std::fs::metadata(path("key.pem")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    assert_eq!(std::fs::read(path("key.pem")).unwrap(), b"secret key bytes");

    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    session
        .upload(&path("cert.pem"), &big, 0o640, Some((1234, 5678)))
        .await
        .unwrap();
    let meta = std::fs::metadata(path("cert.pem")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    assert_eq!((meta.uid(), meta.gid()), (1234, 5678));
    assert_eq!(std::fs::read(path("cert.pem")).unwrap(), big);

    // O_EXCL: an existing file (a stale or hostile temp name) is never written through.
    std::fs::write(path("taken"), b"original").unwrap();
    let err = session
        .upload(&path("taken"), b"new", 0o600, None)
        .await
        .unwrap_err();
    assert!(matches!(err.kind, SshErrorKind::Sftp { .. }), "{err:?}");
    assert!(err.to_string().contains("taken"), "{err}");
    assert_eq!(std::fs::read(path("taken")).unwrap(), b"original");

    // A directory that does not exist.
    let err = session
        .upload(&path("no/such/dir/x"), b"x", 0o600, None)
        .await
        .unwrap_err();
    assert!(matches!(err.kind, SshErrorKind::Sftp { .. }), "{err:?}");
}

/// A login shell whose startup file prints (a chatty `~/.bashrc`): sshd starts an external
/// sftp-server through the login shell, so the SFTP stream begins with that text instead of
/// the server's first packet (OpenSSH's sftp says "Received message too long"). Every SFTP
/// operation names the cause instead of a broken channel; commands still run.
#[tokio::test]
async fn a_login_shell_that_prints_is_named_as_why_sftp_cannot_start() {
    let sftp_server = Path::new("/usr/lib/openssh/sftp-server");
    assert!(sftp_server.exists(), "{} is missing", sftp_server.display());
    let server = Sshd::start_with(&[&format!("Subsystem sftp {}", sftp_server.display())]);
    server.allow_other_logins();
    let user = LoginUser::create(false);
    user.set_shell(Path::new("/bin/bash"));
    // Debian's bash reads ~/.bashrc when sshd runs it, interactive or not.
    let bashrc = user.home().join(".bashrc");
    std::fs::write(&bashrc, "echo 'Welcome to web-1, have a nice day'\n").unwrap();
    user.own(&bashrc);
    let config = SshConfig {
        user: user.name.clone(),
        ..server.ssh_config()
    };
    let session = connect(&config).await;
    let out = session.exec(&argv(&["true"])).await.unwrap();
    assert!(out.success(), "{out:?}");

    let expected = format!(
        "{}:{}: sftp: the login shell prints to stdout (shell startup files); SFTP cannot start",
        server.host(),
        server.port()
    );
    let home = user.home();
    let err = session
        .read_file(home.join(".bashrc").to_str().unwrap(), 1 << 20)
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(message.starts_with(&expected), "{message}");
    assert!(message.contains("Welcome to web-1"), "{message}");
    // The next SFTP operation says the same.
    let err = session
        .upload(home.join("x").to_str().unwrap(), b"x", 0o600, None)
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with(&expected), "{err}");
    session.close().await;
}

#[tokio::test]
async fn rename_over_replaces_an_existing_file_atomically() {
    let server = Sshd::start();
    let session = connect(&server.ssh_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.crt");
    let staged = dir.path().join(".live.crt.certctl-tmp");
    let (live_s, staged_s) = (live.to_str().unwrap(), staged.to_str().unwrap());

    std::fs::write(&live, b"old cert").unwrap();
    let old_inode = std::fs::metadata(&live).unwrap().ino();
    session
        .upload(staged_s, b"new cert", 0o644, None)
        .await
        .unwrap();
    session.rename_over(staged_s, live_s).await.unwrap();
    assert_eq!(std::fs::read(&live).unwrap(), b"new cert");
    assert!(!staged.exists());
    // A new inode swapped in by rename(2), not the old file rewritten in place.
    assert_ne!(std::fs::metadata(&live).unwrap().ino(), old_inode);

    // Destination absent works too.
    let fresh = dir.path().join("fresh.crt");
    session.upload(staged_s, b"x", 0o644, None).await.unwrap();
    session
        .rename_over(staged_s, fresh.to_str().unwrap())
        .await
        .unwrap();
    assert_eq!(std::fs::read(&fresh).unwrap(), b"x");

    // A missing source is an error naming both paths.
    let err = session.rename_over(staged_s, live_s).await.unwrap_err();
    assert!(
        matches!(err.kind, SshErrorKind::Sftp { .. }) && err.to_string().contains(staged_s),
        "{err}"
    );
    assert_eq!(std::fs::read(&live).unwrap(), b"new cert");
}

#[tokio::test]
async fn read_file_and_remove_file() {
    let server = Sshd::start();
    let session = connect(&server.ssh_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("chain.pem");
    let content: Vec<u8> = (0..100_000u32).map(|i| b'A' + (i % 26) as u8).collect();
    std::fs::write(&file, &content).unwrap();
    let file_s = file.to_str().unwrap();

    assert_eq!(session.read_file(file_s, 1 << 20).await.unwrap(), content);
    assert_eq!(
        session.read_file(file_s, content.len()).await.unwrap(),
        content
    );
    let err = session.read_file(file_s, 1000).await.unwrap_err();
    assert!(err.to_string().contains("larger than 1000 bytes"), "{err}");
    let err = session
        .read_file(dir.path().join("absent").to_str().unwrap(), 1000)
        .await
        .unwrap_err();
    assert!(matches!(err.kind, SshErrorKind::Sftp { .. }), "{err:?}");

    session.remove_file(file_s).await.unwrap();
    assert!(!file.exists());
    session.remove_file(file_s).await.unwrap(); // missing is fine
    // Removing a directory is a real error, not "missing".
    let err = session
        .remove_file(dir.path().to_str().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err.kind, SshErrorKind::Sftp { .. }), "{err:?}");
}

// --- host keys ------------------------------------------------------------------------------

#[tokio::test]
async fn missing_known_hosts_file_is_refused_with_the_line_to_add() {
    let server = Sshd::start();
    let missing = server.path("no-such-known_hosts");
    let err = connect_err(&SshConfig {
        known_hosts: missing.clone(),
        ..server.ssh_config()
    })
    .await;
    match &err.kind {
        SshErrorKind::KnownHostsMissing {
            fingerprint,
            line,
            path,
            ..
        } => {
            assert_eq!(fingerprint, &server.host_key_fingerprint());
            assert_eq!(line, &server.known_hosts_line());
            assert_eq!(path, &missing);
        }
        other => panic!("expected KnownHostsMissing, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains(&server.host_key_fingerprint())
            && message.contains(&server.known_hosts_line()),
        "{message}"
    );
    assert!(!missing.exists(), "strict mode must not create the file");
}

#[tokio::test]
async fn unknown_host_is_refused_with_the_fingerprint() {
    let server = Sshd::start();
    let known_hosts = server.path("other_hosts");
    std::fs::write(
        &known_hosts,
        format!("somewhere.example {}\n", server.host_key_pub),
    )
    .unwrap();
    let err = connect_err(&SshConfig {
        known_hosts,
        ..server.ssh_config()
    })
    .await;
    match &err.kind {
        SshErrorKind::UnknownHost {
            fingerprint, line, ..
        } => {
            assert_eq!(fingerprint, &server.host_key_fingerprint());
            assert_eq!(line, &server.known_hosts_line());
        }
        other => panic!("expected UnknownHost, got {other:?}"),
    }
    assert!(err.to_string().contains(&server.host_key_fingerprint()));
}

#[tokio::test]
async fn a_changed_host_key_is_refused_loudly() {
    let server = Sshd::start();
    let known_hosts = server.path("wrong_hosts");
    server.write_wrong_known_hosts(&known_hosts);
    let err = connect_err(&SshConfig {
        known_hosts: known_hosts.clone(),
        ..server.ssh_config()
    })
    .await;
    match &err.kind {
        SshErrorKind::HostKeyChanged {
            known_line,
            fingerprint,
            ..
        } => {
            assert_eq!(*known_line, 1);
            assert_eq!(fingerprint, &server.host_key_fingerprint());
        }
        other => panic!("expected HostKeyChanged, got {other:?}"),
    }
    assert!(err.to_string().contains("HOST KEY CHANGED"), "{err}");

    // --accept-new-host-keys never overrides a changed key, and leaves the file alone.
    let before = std::fs::read_to_string(&known_hosts).unwrap();
    let err = connect_err(&SshConfig {
        known_hosts: known_hosts.clone(),
        accept_new_host_keys: true,
        ..server.ssh_config()
    })
    .await;
    assert!(
        matches!(err.kind, SshErrorKind::HostKeyChanged { .. }),
        "{err:?}"
    );
    assert_eq!(std::fs::read_to_string(&known_hosts).unwrap(), before);
}

#[tokio::test]
async fn a_revoked_host_key_is_refused_even_when_listed() {
    let server = Sshd::start();
    let known_hosts = server.path("revoked_hosts");
    std::fs::write(
        &known_hosts,
        format!(
            "{}\n@revoked\t*\t{}\n",
            server.known_hosts_line(),
            server.host_key_pub
        ),
    )
    .unwrap();
    for accept_new in [false, true] {
        let err = connect_err(&SshConfig {
            known_hosts: known_hosts.clone(),
            accept_new_host_keys: accept_new,
            ..server.ssh_config()
        })
        .await;
        match &err.kind {
            SshErrorKind::HostKeyRevoked {
                known_line,
                fingerprint,
                ..
            } => {
                assert_eq!(*known_line, 2);
                assert_eq!(fingerprint, &server.host_key_fingerprint());
            }
            other => panic!("expected HostKeyRevoked, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn accept_new_host_keys_records_the_key_then_checks_strictly() {
    let server = Sshd::start();
    let known_hosts = server.path("tofu/known_hosts");
    let tofu = SshConfig {
        known_hosts: known_hosts.clone(),
        accept_new_host_keys: true,
        ..server.ssh_config()
    };
    connect(&tofu).await.close().await;
    assert_eq!(
        std::fs::read_to_string(&known_hosts).unwrap(),
        format!("{}\n", server.known_hosts_line())
    );
    assert_eq!(
        std::fs::metadata(&known_hosts)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    // Second connection, strict: the recorded key is trusted and nothing is appended.
    let strict = SshConfig {
        accept_new_host_keys: false,
        ..tofu.clone()
    };
    connect(&strict).await.close().await;
    connect(&tofu).await.close().await;
    assert_eq!(
        std::fs::read_to_string(&known_hosts)
            .unwrap()
            .lines()
            .count(),
        1
    );
}

#[tokio::test]
async fn hashed_known_hosts_from_ssh_keygen_are_accepted() {
    let server = Sshd::start();
    let out = Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&server.known_hosts)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = std::fs::read_to_string(&server.known_hosts).unwrap();
    assert!(
        text.starts_with("|1|") && !text.contains(&server.host()),
        "{text}"
    );
    connect(&server.ssh_config()).await.close().await;
}

#[tokio::test]
async fn the_server_is_asked_for_a_host_key_type_we_already_trust() {
    // sshd offers ed25519 and ECDSA host keys; known_hosts lists only the ECDSA one. Without
    // reordering, ed25519 would be negotiated and the host would look unknown.
    let keys = tempfile::tempdir().unwrap();
    let ecdsa = keys.path().join("host_ecdsa");
    sshd::keygen(&ecdsa, "ecdsa", "");
    let server = Sshd::start_with(&[&format!("HostKey {}", ecdsa.display())]);
    let known_hosts = server.path("ecdsa_only");
    std::fs::write(
        &known_hosts,
        format!(
            "[{}]:{} {}\n",
            server.host(),
            server.port(),
            sshd::public_line(&ecdsa)
        ),
    )
    .unwrap();
    let session = connect(&SshConfig {
        known_hosts,
        ..server.ssh_config()
    })
    .await;
    assert_eq!(
        session.host_key_fingerprint(),
        sshd::fingerprint(&sshd::pub_path(&ecdsa))
    );
}

// --- authentication -------------------------------------------------------------------------

#[tokio::test]
async fn ssh_agent_identities_authenticate() {
    let server = Sshd::start();
    let agent_key = server.path("agent_ed25519");
    sshd::keygen(&agent_key, "ed25519", "");
    server.authorize(&agent_key);
    let agent = Agent::start(&server.path(""));
    agent.add(&agent_key);

    // No identity file at all: only the agent can get us in.
    let config = SshConfig {
        identity_files: vec![server.path("absent_key")],
        ..server.ssh_config()
    };
    let sources = AuthSources {
        agent_socket: Some(agent.socket.clone()),
        passphrase: None,
        prompt: false,
    };
    let session = Session::connect_with(&config, &sources)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(session.exec(&argv(&["true"])).await.unwrap().success());
    let agent_fp = sshd::fingerprint(&sshd::pub_path(&agent_key));
    assert!(
        server
            .log()
            .contains(&format!("Accepted publickey for {} ", server.user))
            && server.log().contains(&agent_fp),
        "{}",
        server.log()
    );
}

#[tokio::test]
async fn key_files_are_used_when_the_agent_is_unreachable_or_useless() {
    let server = Sshd::start();
    // A socket path where no agent listens.
    let dead = AuthSources {
        agent_socket: Some(server.path("no-agent.sock")),
        passphrase: None,
        prompt: false,
    };
    Session::connect_with(&server.ssh_config(), &dead)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .close()
        .await;

    // An agent holding a key the server does not accept.
    let agent = Agent::start(&server.path(""));
    let stranger = server.path("stranger");
    sshd::keygen(&stranger, "ed25519", "");
    agent.add(&stranger);
    let useless = AuthSources {
        agent_socket: Some(agent.socket.clone()),
        passphrase: None,
        prompt: false,
    };
    let session = Session::connect_with(&server.ssh_config(), &useless)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(session.exec(&argv(&["true"])).await.unwrap().success());
}

#[tokio::test]
async fn an_encrypted_key_needs_the_passphrase() {
    let server = Sshd::start();
    let key = server.path("encrypted_ed25519");
    sshd::keygen(&key, "ed25519", "correct horse");
    server.authorize(&key);
    let config = SshConfig {
        identity_files: vec![key.clone()],
        ..server.ssh_config()
    };

    let with = AuthSources {
        agent_socket: None,
        passphrase: Some(Secret::new(b"correct horse".to_vec())),
        prompt: false,
    };
    Session::connect_with(&config, &with)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .close()
        .await;

    let err = connect_err(&config).await;
    match &err.kind {
        SshErrorKind::Auth { message, .. } => assert!(
            message.contains("CERTCTL_SSH_PASSPHRASE") && message.contains("encrypted_ed25519"),
            "{message}"
        ),
        other => panic!("expected Auth, got {other:?}"),
    }
    let wrong = AuthSources {
        agent_socket: None,
        passphrase: Some(Secret::new(b"battery staple".to_vec())),
        prompt: false,
    };
    let err = Session::connect_with(&config, &wrong).await.unwrap_err();
    assert!(
        matches!(&err.kind, SshErrorKind::Auth { message, .. } if message.contains("wrong CERTCTL_SSH_PASSPHRASE")),
        "{err:?}"
    );
    assert!(
        !err.to_string().contains("correct horse") && !err.to_string().contains("battery"),
        "{err}"
    );
}

#[tokio::test]
async fn a_key_not_in_authorized_keys_fails_auth_naming_what_was_tried() {
    let server = Sshd::start();
    let stranger = server.path("stranger_ed25519");
    sshd::keygen(&stranger, "ed25519", "");
    let err = connect_err(&SshConfig {
        identity_files: vec![stranger.clone()],
        ..server.ssh_config()
    })
    .await;
    match &err.kind {
        SshErrorKind::Auth { user, message, .. } => {
            assert_eq!(user, &server.user);
            assert!(
                message.contains("stranger_ed25519") && message.contains("rejected"),
                "{message}"
            );
            assert!(
                message.contains(&sshd::fingerprint(&sshd::pub_path(&stranger))),
                "{message}"
            );
        }
        other => panic!("expected Auth, got {other:?}"),
    }
    let private = std::fs::read_to_string(&stranger).unwrap();
    let body = private.lines().nth(1).unwrap();
    assert!(
        !err.to_string().contains(body),
        "private key material in an error"
    );
}

/// `Session::connect` reads SSH_AUTH_SOCK and CERTCTL_SSH_PASSPHRASE from the environment.
/// Env vars are process-global (and `set_var` is unsafe), so this runs [`env_child`] in a
/// child process of this test binary with exactly the env under test.
#[tokio::test]
async fn connect_takes_agent_and_passphrase_from_the_environment() {
    let server = Sshd::start();
    let key = server.path("env_encrypted");
    sshd::keygen(&key, "ed25519", "from env");
    server.authorize(&key);
    let agent_key = server.path("env_agent_key");
    sshd::keygen(&agent_key, "ed25519", "");
    server.authorize(&agent_key);
    let agent = Agent::start(&server.path(""));
    agent.add(&agent_key);

    let run_child = |identity: &Path, env: &[(&str, &std::ffi::OsStr)]| {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "ssh_transport::env_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("CERTCTL_SSH_PASSPHRASE")
        .env("CERTCTL_TEST_HOST", server.host())
        .env("CERTCTL_TEST_PORT", server.port().to_string())
        .env("CERTCTL_TEST_USER", &server.user)
        .env("CERTCTL_TEST_IDENTITY", identity)
        .env("CERTCTL_TEST_KNOWN_HOSTS", &server.known_hosts);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, log) = run_child(&key, &[("CERTCTL_SSH_PASSPHRASE", "from env".as_ref())]);
    assert!(ok && log.contains("1 passed"), "{log}");
    let (ok, log) = run_child(&key, &[]);
    assert!(
        !ok && log.contains("CERTCTL_SSH_PASSPHRASE"),
        "without the passphrase the child must fail: {log}"
    );
    let (ok, log) = run_child(
        &server.path("absent"),
        &[("SSH_AUTH_SOCK", agent.socket.as_os_str())],
    );
    assert!(ok && log.contains("1 passed"), "{log}");
}

#[tokio::test]
#[ignore = "run in a child process by connect_takes_agent_and_passphrase_from_the_environment"]
async fn env_child() {
    let var = |k: &str| {
        std::env::var(k).unwrap_or_else(|_| panic!("{k} not set: run via the parent test"))
    };
    let config = SshConfig {
        host: var("CERTCTL_TEST_HOST"),
        port: var("CERTCTL_TEST_PORT").parse().unwrap(),
        user: var("CERTCTL_TEST_USER"),
        identity_files: vec![var("CERTCTL_TEST_IDENTITY").into()],
        known_hosts: var("CERTCTL_TEST_KNOWN_HOSTS").into(),
        known_hosts_extra: Vec::new(),
        identities_only: false,
        become_sudo: false,
        accept_new_host_keys: false,
        connect_timeout: Duration::from_secs(20),
        command_timeout: Duration::from_secs(60),
        keepalive_interval: Duration::from_secs(15),
        jump: Vec::new(),
    };
    let session = Session::connect(&config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(session.exec(&argv(&["true"])).await.unwrap().success());
}

/// With no CERTCTL_SSH_PASSPHRASE and a terminal on stdin, the passphrase is asked on the
/// terminal with echo off; a wrong answer is asked again. `script` gives [`prompt_child`] a
/// real pseudo-terminal, with the terminal's own echo ON, so only our `stty -echo` keeps the
/// typed passphrase off the screen.
#[test]
fn an_encrypted_key_passphrase_is_asked_on_the_terminal_without_echo() {
    use std::io::{Read, Write};
    let script = support::require("script");
    let server = Sshd::start();
    let key = server.path("tty_encrypted");
    sshd::keygen(&key, "ed25519", "typed at the tty");
    server.authorize(&key);
    let child_argv = [
        std::env::current_exe().unwrap().display().to_string(),
        "--exact".into(),
        "ssh_transport::prompt_child".into(),
        "--ignored".into(),
        "--nocapture".into(),
        "--test-threads=1".into(),
    ];
    let mut child = Command::new(script)
        .args(["--quiet", "--return", "--echo", "always", "--command"])
        .arg(certctl::ssh::quote::command_line(&child_argv))
        .arg("/dev/null")
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("CERTCTL_SSH_PASSPHRASE")
        .env("RUST_BACKTRACE", "0")
        .env("CERTCTL_TEST_HOST", server.host())
        .env("CERTCTL_TEST_PORT", server.port().to_string())
        .env("CERTCTL_TEST_USER", &server.user)
        .env("CERTCTL_TEST_IDENTITY", &key)
        .env("CERTCTL_TEST_KNOWN_HOSTS", &server.known_hosts)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut child = ChildGuard(child);
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    // Waits for `text` in the terminal output; fails (with the output) if it never comes.
    let mut wait_for = |text: &str| {
        while !seen.contains(text) {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(chunk) => seen.push_str(&String::from_utf8_lossy(&chunk)),
                Err(_) => panic!("never saw {text:?} on the terminal; output so far:\n{seen}"),
            }
        }
        seen.clone()
    };
    wait_for(&format!("Enter passphrase for key '{}': ", key.display()));
    stdin.write_all(b"not it\n").unwrap();
    wait_for("Bad passphrase, try again");
    stdin.write_all(b"typed at the tty\n").unwrap();
    wait_for("test result:");
    drop(stdin);
    let status = child.0.wait().unwrap();
    reader.join().unwrap();
    // The summary line may arrive in several reads: take everything the child wrote.
    for chunk in rx.try_iter() {
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let output = seen;
    assert!(status.success() && output.contains("1 passed"), "{output}");
    assert!(
        !output.contains("typed at the tty"),
        "passphrase echoed:\n{output}"
    );
    assert!(!output.contains("not it"), "passphrase echoed:\n{output}");
}

#[tokio::test]
async fn unlock_identities_reports_unusable_keys_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    sshd::keygen(&good, "ed25519", "");
    let locked = dir.path().join("locked");
    sshd::keygen(&locked, "ed25519", "secret");
    let missing = dir.path().join("missing");
    let problems =
        certctl::ssh::unlock_identities(&[good, locked.clone(), missing.clone()], &no_agent())
            .await;
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].starts_with(&format!("{}: the key is encrypted", locked.display())),
        "{problems:?}"
    );
    assert!(
        problems[1].starts_with(&format!("{}: cannot read", missing.display())),
        "{problems:?}"
    );
}

#[tokio::test]
#[ignore = "run on a pseudo-terminal by an_encrypted_key_passphrase_is_asked_on_the_terminal_without_echo"]
async fn prompt_child() {
    let var = |k: &str| {
        std::env::var(k).unwrap_or_else(|_| panic!("{k} not set: run via the parent test"))
    };
    let config = SshConfig {
        host: var("CERTCTL_TEST_HOST"),
        port: var("CERTCTL_TEST_PORT").parse().unwrap(),
        user: var("CERTCTL_TEST_USER"),
        identity_files: vec![var("CERTCTL_TEST_IDENTITY").into()],
        known_hosts: var("CERTCTL_TEST_KNOWN_HOSTS").into(),
        known_hosts_extra: Vec::new(),
        identities_only: false,
        become_sudo: false,
        accept_new_host_keys: false,
        connect_timeout: Duration::from_secs(120),
        command_timeout: Duration::from_secs(60),
        keepalive_interval: Duration::from_secs(15),
        jump: Vec::new(),
    };
    let sources = AuthSources::from_env();
    assert!(
        sources.prompt,
        "stdin is a terminal and no passphrase is set: prompt expected"
    );
    let session = Session::connect_with(&config, &sources)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(session.exec(&argv(&["true"])).await.unwrap().success());
}

// --- connecting -----------------------------------------------------------------------------

#[tokio::test]
async fn a_server_that_never_speaks_hits_the_connect_timeout() {
    // An in-process fake, because a real sshd cannot be made to hang on demand: it accepts
    // TCP connections and never sends a byte.
    let listener = tokio::net::TcpListener::bind(support::free_addr())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let config = SshConfig {
        host: addr.ip().to_string(),
        port: addr.port(),
        user: "nobody".into(),
        identity_files: Vec::new(),
        known_hosts: PathBuf::from("/nonexistent/known_hosts"),
        known_hosts_extra: Vec::new(),
        identities_only: false,
        become_sudo: false,
        accept_new_host_keys: false,
        connect_timeout: Duration::from_secs(1),
        command_timeout: Duration::from_secs(5),
        keepalive_interval: Duration::from_secs(15),
        jump: Vec::new(),
    };
    let err = connect_err(&config).await;
    match &err.kind {
        SshErrorKind::ConnectTimeout { timeout } => {
            assert_eq!(*timeout, Duration::from_secs(1));
            assert_eq!(err.endpoint.port, addr.port());
        }
        other => panic!("expected ConnectTimeout, got {other:?}"),
    }
    silent.abort();
}

#[tokio::test]
async fn refused_and_unresolvable_addresses_are_connect_errors_naming_host_and_port() {
    let addr = support::free_addr(); // bound then released: nothing listens there now
    let config = SshConfig {
        host: addr.ip().to_string(),
        port: addr.port(),
        user: "nobody".into(),
        identity_files: Vec::new(),
        known_hosts: PathBuf::from("/nonexistent/known_hosts"),
        known_hosts_extra: Vec::new(),
        identities_only: false,
        become_sudo: false,
        accept_new_host_keys: false,
        connect_timeout: Duration::from_secs(10),
        command_timeout: Duration::from_secs(5),
        keepalive_interval: Duration::from_secs(15),
        jump: Vec::new(),
    };
    let err = connect_err(&config).await;
    assert!(matches!(err.kind, SshErrorKind::Connect { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("{}:{}: ", addr.ip(), addr.port())),
        "{err}"
    );
    assert!(err.to_string().to_lowercase().contains("refused"), "{err}");

    let err = connect_err(&SshConfig {
        host: "no-such-host.invalid".into(),
        ..config
    })
    .await;
    assert!(matches!(err.kind, SshErrorKind::Connect { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with("no-such-host.invalid:"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("cannot resolve the host name `no-such-host.invalid`"),
        "{err}"
    );
}

#[tokio::test]
async fn a_server_that_closes_during_the_handshake_is_a_connect_error() {
    // In-process fake: accepts and immediately closes, as sshd does past MaxStartups.
    let listener = tokio::net::TcpListener::bind(support::free_addr())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = accepted.clone();
    let closer = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(socket);
        }
    });
    let config = SshConfig {
        host: addr.ip().to_string(),
        port: addr.port(),
        user: "nobody".into(),
        identity_files: Vec::new(),
        known_hosts: PathBuf::from("/nonexistent/known_hosts"),
        known_hosts_extra: Vec::new(),
        identities_only: false,
        become_sudo: false,
        accept_new_host_keys: false,
        connect_timeout: Duration::from_secs(20),
        command_timeout: Duration::from_secs(5),
        keepalive_interval: Duration::from_secs(15),
        jump: Vec::new(),
    };
    let err = connect_err(&config).await;
    assert!(matches!(err.kind, SshErrorKind::Connect { .. }), "{err:?}");
    assert!(
        err.to_string().contains("during the SSH handshake"),
        "{err}"
    );
    // Dropped during the handshake: retried, three attempts in all.
    assert!(err.to_string().contains("(3 attempts)"), "{err}");
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
    closer.abort();
}

// --- RSA, certificates ----------------------------------------------------------------------

/// `ssh-keygen -s CA -I ID OPTIONS… KEY.pub`: writes `KEY-cert.pub`.
fn sign(ca: &Path, key: &Path, options: &[&str]) {
    let out = Command::new("ssh-keygen")
        .arg("-q")
        .arg("-s")
        .arg(ca)
        .args(["-I", "certctl-test"])
        .args(options)
        .arg(sshd::pub_path(key))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ssh-keygen -s: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn rsa_keys_sign_with_sha2_when_the_server_refuses_sha1() {
    let server = Sshd::start_with(&["PubkeyAcceptedAlgorithms rsa-sha2-512,rsa-sha2-256"]);
    let rsa = server.path("client_rsa");
    sshd::keygen(&rsa, "rsa", "");
    server.authorize(&rsa);
    // From a key file…
    let config = SshConfig {
        identity_files: vec![rsa.clone()],
        ..server.ssh_config()
    };
    let session = connect(&config).await;
    assert!(session.exec(&argv(&["true"])).await.unwrap().success());
    session.close().await;
    // …and from an agent.
    let agent = Agent::start(&server.path(""));
    agent.add(&rsa);
    let config = SshConfig {
        identity_files: vec![server.path("absent")],
        ..server.ssh_config()
    };
    let sources = AuthSources {
        agent_socket: Some(agent.socket.clone()),
        ..no_agent()
    };
    let session = Session::connect_with(&config, &sources)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(session.exec(&argv(&["true"])).await.unwrap().success());
    let log = server.log();
    assert_eq!(
        log.matches(&format!("Accepted publickey for {} ", server.user))
            .count(),
        2,
        "{log}"
    );
    assert!(log.contains("RSA SHA256:"), "{log}");
    assert!(
        !log.contains("ssh-rsa"),
        "SHA-1 signatures never offered: {log}"
    );
}

#[tokio::test]
async fn an_openssh_user_certificate_beside_the_key_is_offered() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("user_ca");
    sshd::keygen(&ca, "ed25519", "");
    let server = Sshd::start_with(&[&format!(
        "TrustedUserCAKeys {}",
        sshd::pub_path(&ca).display()
    )]);
    // A key that is NOT in authorized_keys: only its certificate can get it in.
    let key = dir.path().join("id_ed25519");
    sshd::keygen(&key, "ed25519", "");
    let config = SshConfig {
        identity_files: vec![key.clone()],
        ..server.ssh_config()
    };
    let err = connect_err(&config).await;
    assert!(matches!(err.kind, SshErrorKind::Auth { .. }), "{err:?}");

    sign(&ca, &key, &["-n", &server.user, "-V", "-5m:+1h"]);
    let session = connect(&config).await;
    assert!(session.exec(&argv(&["true"])).await.unwrap().success());
    let log = server.log();
    assert!(
        log.contains("ED25519-CERT") && log.contains("ID certctl-test"),
        "{log}"
    );
}

#[tokio::test]
async fn a_host_trusted_only_through_at_cert_authority_is_refused_with_the_reason() {
    let server = Sshd::start();
    let ca = server.path("host_ca");
    sshd::keygen(&ca, "ed25519", "");
    let known_hosts = server.path("kh_ca_only");
    std::fs::write(
        &known_hosts,
        format!(
            "@cert-authority [{}]:* {}\n",
            server.host(),
            sshd::public_line(&ca)
        ),
    )
    .unwrap();
    let err = connect_err(&SshConfig {
        known_hosts,
        ..server.ssh_config()
    })
    .await;
    assert!(
        matches!(err.kind, SshErrorKind::CertAuthorityOnly { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("only a @cert-authority line trusts this host")
            && message.contains(&server.host_key_fingerprint())
            && message.contains(&server.known_hosts_line()),
        "{message}"
    );
}

#[tokio::test]
async fn several_known_hosts_files_are_read_and_a_revocation_in_any_wins() {
    let server = Sshd::start();
    let missing = server.path("kh_missing");
    // Trusted through the second file.
    let session = connect(&SshConfig {
        known_hosts: missing.clone(),
        known_hosts_extra: vec![server.known_hosts.clone()],
        ..server.ssh_config()
    })
    .await;
    session.close().await;
    // Revoked in another file: refused even though the first file trusts it.
    let revoked = server.path("kh_revoked");
    std::fs::write(&revoked, format!("@revoked * {}\n", server.host_key_pub)).unwrap();
    let err = connect_err(&SshConfig {
        known_hosts_extra: vec![revoked.clone()],
        ..server.ssh_config()
    })
    .await;
    match err.kind {
        SshErrorKind::HostKeyRevoked { path, .. } => assert_eq!(path, revoked),
        other => panic!("expected HostKeyRevoked, got {other:?}"),
    }
}

/// An sshd whose ECDSA host key has a certificate signed by `ca` for `principal` (the
/// standard ed25519 host key has none).
fn sshd_with_host_certificate(dir: &Path, ca: &Path, principal: Option<&str>) -> Sshd {
    let addr = support::free_addr();
    let host_key = dir.join(format!("host_ecdsa_{}", addr.port()));
    sshd::keygen(&host_key, "ecdsa", "");
    let principal = principal.map_or_else(|| addr.ip().to_string(), str::to_owned);
    sign(ca, &host_key, &["-h", "-n", &principal, "-V", "-5m:+1h"]);
    Sshd::start_opts(support::sshd::SshdOptions {
        addr: Some(addr),
        extra: vec![
            format!("HostKey {}", host_key.display()),
            format!("HostCertificate {}-cert.pub", host_key.display()),
        ],
        ..Default::default()
    })
}

#[tokio::test]
async fn a_host_certificate_signed_by_a_known_cert_authority_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("host_ca");
    sshd::keygen(&ca, "ed25519", "");
    let server = sshd_with_host_certificate(dir.path(), &ca, None);
    let ca_line = |ca: &Path| {
        format!(
            "# our CA\n@cert-authority [{}]:*,!other {}\n",
            server.host(),
            sshd::public_line(ca)
        )
    };
    let known_hosts = dir.path().join("kh_ca");
    std::fs::write(&known_hosts, ca_line(&ca)).unwrap();
    let config = SshConfig {
        known_hosts: known_hosts.clone(),
        ..server.ssh_config()
    };
    let session = connect(&config).await;
    assert!(session.exec(&argv(&["true"])).await.unwrap().success());
    let ecdsa_fp = sshd::fingerprint(&dir.path().join(format!("host_ecdsa_{}.pub", server.port())));
    assert_eq!(session.host_key_fingerprint(), ecdsa_fp);
    session.close().await;

    // Another CA in known_hosts: the same certificate is refused.
    let other_ca = dir.path().join("other_ca");
    sshd::keygen(&other_ca, "ed25519", "");
    std::fs::write(&known_hosts, ca_line(&other_ca)).unwrap();
    let err = connect_err(&config).await;
    assert!(
        matches!(err.kind, SshErrorKind::HostCertificate { .. })
            && err
                .to_string()
                .contains("no @cert-authority line for this host names"),
        "{err}"
    );

    // The host key revoked: refused even with a valid certificate.
    std::fs::write(
        &known_hosts,
        format!(
            "{}@revoked * {}\n",
            ca_line(&ca),
            sshd::public_line(&dir.path().join(format!("host_ecdsa_{}", server.port())))
        ),
    )
    .unwrap();
    let err = connect_err(&config).await;
    assert!(
        matches!(err.kind, SshErrorKind::HostKeyRevoked { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_host_certificate_for_another_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("host_ca");
    sshd::keygen(&ca, "ed25519", "");
    let server = sshd_with_host_certificate(dir.path(), &ca, Some("other.example"));
    let known_hosts = dir.path().join("kh_ca");
    std::fs::write(
        &known_hosts,
        format!("@cert-authority * {}\n", sshd::public_line(&ca)),
    )
    .unwrap();
    let err = connect_err(&SshConfig {
        known_hosts,
        ..server.ssh_config()
    })
    .await;
    assert!(
        matches!(err.kind, SshErrorKind::HostCertificate { .. })
            && err.to_string().contains(&format!(
                "not valid for `{}` (principals: other.example)",
                server.host()
            )),
        "{err}"
    );
}
