//! The verdicts, from `nginx -T` output and haproxy files written as a server would print them.

use super::*;

fn nginx(dump: &str) -> Answers {
    Answers {
        runs: vec![RunOutput {
            stdout: dump.into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

const DUMP: &str = "# configuration file /etc/nginx/nginx.conf:\nhttp {\n  include sites/*.conf;\n}\n\n\
                    # configuration file /etc/nginx/sites/www.conf:\nserver {\n  listen 443 ssl;\n  ssl_certificate ssl/a.crt;\n  ssl_certificate_key /etc/nginx/ssl/a.key;\n}\n\n";

fn planned(role: Role, path: &str) -> Planned {
    Planned {
        role,
        path: path.into(),
        follow: true,
    }
}

fn pair(crt: &str, key: &str) -> Vec<Planned> {
    vec![planned(Role::Fullchain, crt), planned(Role::Key, key)]
}

#[test]
fn paths_the_configuration_loads_are_bound_with_their_lines() {
    let files = pair("/etc/nginx/ssl/a.crt", "/etc/nginx//ssl/./a.key");
    match judge(Reader::Nginx, &files, &nginx(DUMP), false) {
        Verdict::Bound(note) => assert_eq!(
            note,
            "nginx loads them (ssl_certificate sites/www.conf:3; ssl_certificate_key sites/www.conf:4)"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_path_nginx_does_not_load_asks_once_more_then_names_what_it_loads() {
    let files = pair("/etc/nginx/ssl/b.crt", "/etc/nginx/ssl/a.key");
    let mut answers = nginx(DUMP);
    let Verdict::More { real, files: read } = judge(Reader::Nginx, &files, &answers, false) else {
        panic!("a second look first");
    };
    assert_eq!(real, ["/etc/nginx/ssl/a.crt"]);
    assert!(read.is_empty());
    answers.real.insert(
        "/etc/nginx/ssl/a.crt".into(),
        Some("/etc/nginx/ssl/a.crt".into()),
    );
    assert_eq!(
        judge(Reader::Nginx, &files, &answers, false),
        Verdict::Unbound(
            "nginx loads ssl_certificate /etc/nginx/ssl/a.crt (sites/www.conf:3), not /etc/nginx/ssl/b.crt"
                .into()
        ),
        "what was resolved is not asked again"
    );
}

#[test]
fn symlinks_either_way_are_followed() {
    // The configuration names a link to the planned file.
    let files = pair("/srv/tls/real.crt", "/etc/nginx/ssl/a.key");
    let mut answers = nginx(DUMP);
    answers.real.insert(
        "/etc/nginx/ssl/a.crt".into(),
        Some("/srv/tls/real.crt".into()),
    );
    assert!(matches!(
        judge(Reader::Nginx, &files, &answers, true),
        Verdict::Bound(_)
    ));
    // The planned path is a link to what the configuration names ...
    let files = pair("/etc/live/x.crt", "/etc/nginx/ssl/a.key");
    let mut answers = nginx(DUMP);
    answers.real.insert(
        "/etc/live/x.crt".into(),
        Some("/etc/nginx/ssl/a.crt".into()),
    );
    assert!(matches!(
        judge(Reader::Nginx, &files, &answers, true),
        Verdict::Bound(_)
    ));
    // ... unless the link itself is replaced (follow_symlinks: false).
    let mut files = files;
    files[0].follow = false;
    assert!(matches!(
        judge(Reader::Nginx, &files, &answers, true),
        Verdict::Unbound(_)
    ));
}

#[test]
fn variables_and_unreadable_configurations_are_warnings_not_failures() {
    let dump = "# configuration file /etc/nginx/nginx.conf:\nserver { ssl_certificate /x/$ssl_server_name.crt; ssl_certificate_key /x/k; }\n";
    let files = pair("/x/www.crt", "/x/k");
    match judge(Reader::Nginx, &files, &nginx(dump), true) {
        Verdict::Unknown(why) => assert!(
            why.contains("names ssl_certificate `/x/$ssl_server_name.crt` (nginx.conf:1)"),
            "{why}"
        ),
        other => panic!("{other:?}"),
    }
    let failed = Answers {
        runs: vec![RunOutput {
            status: 1,
            stderr:
                "\nnginx: [emerg] open() \"/etc/nginx/nginx.conf\" failed (13: Permission denied)\n"
                    .into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    match judge(Reader::Nginx, &files, &failed, false) {
        Verdict::Unknown(why) => assert_eq!(
            why,
            "could not read the configuration: `nginx -T` exited 1: nginx: [emerg] open() \"/etc/nginx/nginx.conf\" failed (13: Permission denied)"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn no_directive_at_all_is_a_failure_and_hostile_text_is_sanitised() {
    let dump = "# configuration file /etc/nginx/nginx.conf\u{1b}[31m:\nhttp { }\n";
    let files = pair("/x/a.crt", "/x/a.key");
    match judge(Reader::Nginx, &files, &nginx(dump), false) {
        Verdict::Unbound(why) => assert_eq!(
            why,
            "nginx's configuration names no fullchain file at all, so it does not load /x/a.crt; \
             nginx's configuration names no key file at all, so it does not load /x/a.key"
        ),
        other => panic!("{other:?}"),
    }
    let dump = "# configuration file /n.conf:\nssl_certificate \"/a\u{1b}]0;pwned\u{7}.crt\"; ssl_certificate_key /k;\n";
    let Verdict::Unbound(why) = judge(Reader::Nginx, &files, &nginx(dump), true) else {
        panic!()
    };
    assert!(!why.contains('\u{1b}') && !why.contains('\u{7}'), "{why:?}");
}

#[test]
fn haproxy_directories_crt_lists_read_later_and_chains_left_alone() {
    let cfg = "frontend f\n  bind :443 ssl crt /etc/haproxy/certs crt-list /etc/haproxy/l.txt\n";
    let file = |path: &str, content: &str, list: bool| FileRead {
        path: path.into(),
        list,
        ok: true,
        content: content.into(),
        truncated: false,
    };
    let mut answers = Answers {
        files: vec![file("/etc/haproxy/haproxy.cfg", cfg, false)],
        ..Default::default()
    };
    let in_dir = [planned(Role::Bundle, "/etc/haproxy/certs/www.pem")];
    assert!(matches!(
        judge(Reader::Haproxy, &in_dir, &answers, false),
        Verdict::Bound(_)
    ));
    let listed = [planned(Role::Bundle, "/srv/listed.pem")];
    let Verdict::More { files, .. } = judge(Reader::Haproxy, &listed, &answers, false) else {
        panic!("the crt-list is read first");
    };
    assert_eq!(files, ["/etc/haproxy/l.txt"]);
    answers
        .files
        .push(file("/etc/haproxy/l.txt", "/srv/listed.pem\n", true));
    assert!(matches!(
        judge(Reader::Haproxy, &listed, &answers, true),
        Verdict::Bound(_)
    ));
    let unread = Answers {
        files: vec![file("/etc/haproxy/haproxy.cfg", cfg, false)],
        ..Default::default()
    };
    assert!(matches!(
        judge(Reader::Haproxy, &listed, &unread, true),
        Verdict::Unknown(_)
    ));
}

#[test]
fn the_file_certctl_writes_names_the_paths() {
    let dynamic = "tls:\n  certificates:\n    - certFile: \"/etc/traefik/tls/a b.crt\"\n      keyFile: \"/etc/traefik/tls/a.key\"\n";
    let answers = Answers {
        files: vec![FileRead {
            path: "/etc/traefik/dynamic/certctl-www.yml".into(),
            ok: true,
            content: dynamic.into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let files = pair("/etc/traefik/tls/a b.crt", "/etc/traefik/tls/a.key");
    assert!(matches!(
        judge(Reader::Written, &files, &answers, true),
        Verdict::Bound(_)
    ));
    let files = pair("/etc/traefik/tls/other.crt", "/etc/traefik/tls/a.key");
    let Verdict::Unbound(why) = judge(Reader::Written, &files, &answers, true) else {
        panic!()
    };
    assert!(
        why.starts_with("the file certctl writes names /etc/traefik/tls/a b.crt (/etc/traefik/dynamic/certctl-www.yml:3)"),
        "{why}"
    );
}
