//! Unit tests of the ssh config reader and resolver (against `ssh -G`: tests/it/ssh_fleet.rs).

use super::read::{expand_env, expand_tokens, parse_time};
use super::*;

fn local() -> LocalUser {
    LocalUser {
        name: "me".into(),
        home: Some(PathBuf::from("/home/me")),
    }
}

fn parse(text: &str) -> SshClientConfig {
    SshClientConfig::parse(text, Path::new("/etc/cfg"), local()).unwrap()
}

fn parse_err(text: &str) -> String {
    SshClientConfig::parse(text, Path::new("/etc/cfg"), local())
        .unwrap_err()
        .to_string()
}

#[test]
fn first_value_wins_and_identity_files_accumulate() {
    let c = parse(
        "User global\n\
         Host web-* !web-bad\n  Port 2200\n  IdentityFile ~/.ssh/web\n  User deploy\n\
         Host web-1\n  HostName 10.0.0.11\n  Port 9999\n  IdentityFile /k/%h-%r-%u-%d-%p-%n-%%\n\
         Host *\n  IdentityFile ~/.ssh/all\n  IdentityFile ~/.ssh/web\n",
    );
    let s = c.resolve("web-1");
    assert_eq!(s.host_name.as_deref(), Some("10.0.0.11"));
    // `User global` comes first (before any Host): it wins over `User deploy`.
    assert_eq!(s.user.as_deref(), Some("global"));
    assert_eq!(s.port, Some(2200));
    assert_eq!(
        s.identity_files,
        vec![
            PathBuf::from("/home/me/.ssh/web"),
            PathBuf::from("/k/10.0.0.11-global-me-/home/me-2200-web-1-%"),
            PathBuf::from("/home/me/.ssh/all"),
        ]
    );
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);

    let bad = c.resolve("web-bad");
    assert_eq!(bad.port, None);
    assert_eq!(
        bad.identity_files,
        vec![
            PathBuf::from("/home/me/.ssh/all"),
            PathBuf::from("/home/me/.ssh/web")
        ]
    );
    // Host patterns are case-sensitive, as in OpenSSH 9.
    assert_eq!(c.resolve("WEB-1").host_name, None);
}

#[test]
fn syntax_variants_quotes_and_comments() {
    let c = parse(
        "# comment\n\n\
         Host=\"a\" 'b'   # trailing comment\n\
         \tPort=2201\n\
         \tUser = \"deploy user\"\n\
         \tHostName %h.example\n\
         \tConnectTimeout 1m30s\n\
         \tServerAliveInterval 0\n\
         \tUserKnownHostsFile ~/kh \"/with space/kh\"\n\
         \tUserKnownHostsFile /ignored\n",
    );
    for alias in ["a", "b"] {
        let s = c.resolve(alias);
        assert_eq!(s.port, Some(2201));
        assert_eq!(s.user.as_deref(), Some("deploy user"));
        assert_eq!(s.host_name, Some(format!("{alias}.example")));
        assert_eq!(s.connect_timeout, Some(Duration::from_secs(90)));
        assert_eq!(s.server_alive_interval, Some(Duration::ZERO));
        assert_eq!(
            s.known_hosts_files,
            Some(vec![
                PathBuf::from("/home/me/kh"),
                PathBuf::from("/with space/kh")
            ])
        );
    }
    assert_eq!(
        c.resolve("c"),
        HostSettings {
            alias: "c".into(),
            ..HostSettings::default()
        }
    );
}

#[test]
fn proxy_jump_none_and_proxy_command_share_a_slot() {
    let c = parse(
        "Host direct\n  ProxyJump none\n\
         Host legacy\n  ProxyCommand ssh -W %h:%p gw\n\
         Host *\n  ProxyJump ops@bastion:2222,[::1]:22\n",
    );
    assert_eq!(c.resolve("direct").proxy_jump, Some(vec![]));
    let legacy = c.resolve("legacy");
    assert_eq!(legacy.proxy_jump, None);
    assert_eq!(legacy.warnings.len(), 1);
    assert!(
        legacy.warnings[0].starts_with("/etc/cfg:4: ProxyCommand is not supported"),
        "{:?}",
        legacy.warnings
    );
    let other = c.resolve("other").proxy_jump.unwrap();
    assert_eq!(other.len(), 2);
    assert_eq!(other[0].user.as_deref(), Some("ops"));
    assert_eq!(other[1].host, "::1");
}

#[test]
fn strict_host_key_checking_is_never_off() {
    let c = parse(
        "Host tofu\n StrictHostKeyChecking accept-new\n\
         Host lax\n StrictHostKeyChecking no\n\
         Host ask\n StrictHostKeyChecking ask\n",
    );
    assert_eq!(
        c.resolve("tofu").host_key_checking,
        Some(HostKeyChecking::AcceptNew)
    );
    assert_eq!(
        c.resolve("ask").host_key_checking,
        Some(HostKeyChecking::Strict)
    );
    let lax = c.resolve("lax");
    assert_eq!(lax.host_key_checking, Some(HostKeyChecking::Strict));
    assert!(lax.warnings[0].contains("/etc/cfg:4: StrictHostKeyChecking no is treated as `yes`"));
}

#[test]
fn unsupported_directives_warn_with_file_and_line_unless_benign() {
    let c = parse(
        "Host *\n\
         ControlMaster auto\n\
         ControlPath ~/.ssh/cm-%C\n\
         ForwardAgent no\n\
         ForwardAgent yes\n\
         CertificateFile ~/.ssh/id-cert.pub\n\
         HostKeyAlias other\n\
         LogLevel ERROR\n\
         Bogus 1\n\
         IgnoreUnknown Frob*\n\
         FrobNicate 2\n",
    );
    let w = c.resolve("x").warnings;
    let lines: Vec<&str> = w.iter().map(|w| w.split(' ').next().unwrap()).collect();
    assert_eq!(
        lines,
        [
            "/etc/cfg:2:",
            "/etc/cfg:3:",
            "/etc/cfg:6:",
            "/etc/cfg:7:",
            "/etc/cfg:9:"
        ],
        "{w:#?}"
    );
    assert!(w[0].contains("ControlMaster is not supported"), "{}", w[0]);
    assert!(
        w[4].contains("unknown ssh config directive `bogus`"),
        "{}",
        w[4]
    );
    // `ForwardAgent no` (line 4) is the default: no warning, and it wins over line 5;
    // `FrobNicate` (line 11) is covered by `IgnoreUnknown`.
}

#[test]
fn match_blocks_are_skipped_with_a_warning() {
    let c = parse("Match host web\n  User matched\nHost web\n  Port 2222\n");
    let s = c.resolve("web");
    assert_eq!(s.user, None);
    assert_eq!(s.port, Some(2222));
    assert_eq!(c.warnings().len(), 1);
    assert!(c.warnings()[0].starts_with("/etc/cfg:1: `Match` blocks are not supported"));
}

#[test]
fn bad_values_are_errors_naming_file_and_line() {
    assert_eq!(
        parse_err("Host a\n  Port eighty\n"),
        "/etc/cfg:2: bad port `eighty` (expected 1-65535)"
    );
    assert!(parse_err("Port 0\n").starts_with("/etc/cfg:1: bad port"));
    assert!(parse_err("IdentitiesOnly maybe\n").contains("IdentitiesOnly"));
    assert!(parse_err("StrictHostKeyChecking sometimes\n").contains("StrictHostKeyChecking"));
    assert!(parse_err("ConnectTimeout 5x\n").contains("bad time value"));
    assert!(parse_err("ProxyJump host:99999\n").contains("ProxyJump"));
    assert!(parse_err("Host\n").contains("`host` needs a value"));
    assert!(parse_err("User \"open\n").contains("unterminated quote"));
}

#[test]
fn includes_follow_the_enclosing_host_block() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join(".ssh/conf.d")).unwrap();
    std::fs::write(
        dir.path().join(".ssh/conf.d/10-a"),
        "Host inc-*\n  User from-a\n",
    )
    .unwrap();
    std::fs::write(dir.path().join(".ssh/conf.d/20-b"), "Host *\n  Port 2020\n").unwrap();
    std::fs::write(dir.path().join(".ssh/conf.d/.hidden"), "Port 1\n").unwrap();
    std::fs::write(dir.path().join("nested"), "User nested\n").unwrap();
    let who = LocalUser {
        name: "me".into(),
        home: Some(dir.path().to_path_buf()),
    };
    let text = format!(
        "Include conf.d/*\nHost only\n  Include {}\n  Port 7\nHost *\n  Include /nonexistent/file\n",
        dir.path().join("nested").display()
    );
    let c = SshClientConfig::parse(&text, &dir.path().join("config"), who).unwrap();
    assert_eq!(c.resolve("inc-1").user.as_deref(), Some("from-a"));
    assert_eq!(c.resolve("inc-1").port, Some(2020));
    // Included inside `Host only`: applies to `only`, and `Port 7` after it still does.
    let only = c.resolve("only");
    assert_eq!(only.user.as_deref(), Some("nested"));
    assert_eq!(only.port, Some(2020));
    assert_eq!(c.resolve("other").user, None);
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
}

#[test]
fn jump_chains_resolve_each_hop_through_the_config() {
    let c = parse(
        "Host inner\n  HostName 10.1.0.1\n  User ops\n  ProxyJump outer\n\
         Host outer\n  HostName gw.example\n  Port 2222\n  IdentityFile ~/.ssh/gw\n  UserKnownHostsFile /kh/gw\n\
         Host loop-a\n  ProxyJump loop-b\nHost loop-b\n  ProxyJump loop-a\n",
    );
    let defaults = JumpDefaults {
        user: "deploy".into(),
        identity_files: vec![PathBuf::from("/keys/deploy")],
        known_hosts: PathBuf::from("/kh/default"),
    };
    let specs = JumpSpec::parse_list("inner,root@[::1]:2200").unwrap();
    let chain = c.jump_chain(&specs, &defaults).unwrap();
    let labels: Vec<String> = chain.hops.iter().map(JumpHost::label).collect();
    assert_eq!(
        labels,
        [
            "deploy@gw.example:2222",
            "ops@10.1.0.1:22",
            "root@[::1]:2200"
        ]
    );
    assert_eq!(
        chain.hops[0].identity_files,
        vec![PathBuf::from("/home/me/.ssh/gw")]
    );
    assert_eq!(chain.hops[0].known_hosts, PathBuf::from("/kh/gw"));
    assert_eq!(
        chain.hops[1].identity_files,
        vec![PathBuf::from("/keys/deploy")]
    );
    assert_eq!(chain.hops[2].known_hosts, PathBuf::from("/kh/default"));

    let looped = c
        .jump_chain(&JumpSpec::parse_list("loop-a").unwrap(), &defaults)
        .unwrap_err();
    assert!(looped.to_string().contains("a loop?"), "{looped}");
}

#[test]
fn time_values() {
    assert_eq!(parse_time("30").unwrap(), Some(Duration::from_secs(30)));
    assert_eq!(
        parse_time("1h2m3s").unwrap(),
        Some(Duration::from_secs(3723))
    );
    assert_eq!(
        parse_time("2W").unwrap(),
        Some(Duration::from_secs(1_209_600))
    );
    assert_eq!(parse_time("none").unwrap(), None);
    for bad in ["", "m", "1x", "-1", "1.5"] {
        assert!(parse_time(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn tokens_and_environment() {
    assert_eq!(expand_tokens("%h-%%", &[('h', "x")]).unwrap(), "x-%");
    assert!(expand_tokens("%C", &[]).unwrap_err().contains("%C"));
    assert!(expand_tokens("a%", &[]).is_err());
    assert_eq!(expand_env("/no/vars").unwrap(), "/no/vars");
    assert!(expand_env("${CERTCTL_SURELY_UNSET_VAR}/x").is_err());
    let c = parse("Host t\n IdentityFile ~other/key\n IdentityFile %C\n IdentityFile /ok\n");
    let s = c.resolve("t");
    assert_eq!(s.identity_files, vec![PathBuf::from("/ok")]);
    assert_eq!(s.warnings.len(), 2, "{:?}", s.warnings);
    assert!(s.warnings[0].starts_with("/etc/cfg:2: IdentityFile ~other/key"));
}
