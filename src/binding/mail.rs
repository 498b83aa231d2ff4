//! The mail servers: both print their configuration as they read it, without file:line.
//!
//! - postfix: `postconf -x NAME…` (main.cf, `$name` expanded) and `postconf -P -x` (master.cf
//!   `-o` overrides, `service/type/name = value`). Every smtpd_tls_* file parameter counts,
//!   in main.cf or in any service's overrides.
//! - dovecot: `doveconf -n -P` filtered on the target to the `ssl_cert`/`ssl_key` lines whose
//!   value is a path (`<FILE`) and the lines that open or close a block, so a `local`,
//!   `remote` or `protocol` filter can be named.
//!
//! Neither resolves a relative path the way certctl could reproduce: such a value is
//! unresolvable.

use super::{Answers, Config, Kind, Ref, Target, first_run, run_output};

/// postfix's parameters that name certificate and key files.
const POSTFIX: &[(&str, Kind)] = &[
    ("smtpd_tls_cert_file", Kind::Cert),
    ("smtpd_tls_eccert_file", Kind::Cert),
    ("smtpd_tls_dcert_file", Kind::Cert),
    ("smtpd_tls_key_file", Kind::Key),
    ("smtpd_tls_eckey_file", Kind::Key),
    ("smtpd_tls_dkey_file", Kind::Key),
    ("smtpd_tls_chain_files", Kind::Any),
];

pub(super) fn read_postfix(answers: &Answers) -> Result<Config, String> {
    let main = first_run(answers, "postconf -x")?;
    let mut refs = Vec::new();
    for line in main.stdout.lines() {
        let mut found = postfix_refs(line, "main.cf", "");
        for r in &mut found {
            if let Target::File(p) | Target::Unresolved(p) = &r.target
                && let Some(at) = main_cf_line(answers, &r.directive, p)
            {
                r.at = Some(at);
            }
        }
        refs.extend(found);
    }
    if answers.runs.len() > 1 {
        let master = run_output(answers, 1, "postconf -P -x")?;
        for line in master.stdout.lines() {
            // service/type/name = value
            let (key, value) = line.split_once(" =").unwrap_or((line, ""));
            let Some((service, name)) = key.rsplit_once('/') else {
                continue;
            };
            let at = format!("master.cf {service}");
            refs.extend(postfix_refs(&format!("{name} ={value}"), &at, "-o "));
        }
    }
    Ok(Config {
        refs,
        unread: Vec::new(),
    })
}

/// `main.cf:N` for the line of main.cf (read beside) that sets `name` — the last one, which
/// postfix uses — when `value` is written there as is (not through `$other`, say).
fn main_cf_line(answers: &Answers, name: &str, value: &str) -> Option<String> {
    let file = answers.files.iter().find(|f| f.ok && !f.list)?;
    let (n, line) = file
        .content
        .lines()
        .enumerate()
        .filter(|(_, l)| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .last()?;
    line.contains(value).then(|| format!("main.cf:{}", n + 1))
}

/// The refs of one `name = value` line.
fn postfix_refs(line: &str, at: &str, prefix: &str) -> Vec<Ref> {
    let Some((name, value)) = line
        .split_once(" = ")
        .or_else(|| line.strip_suffix(" =").map(|n| (n, "")))
    else {
        return Vec::new();
    };
    let Some((_, kind)) = POSTFIX.iter().find(|(n, _)| *n == name.trim()) else {
        return Vec::new();
    };
    value
        .split([' ', ',', '\t'])
        .filter(|v| !v.is_empty())
        .map(|v| Ref {
            directive: format!("{prefix}{}", name.trim()),
            kind: *kind,
            target: absolute_only(v),
            at: Some(at.to_string()),
        })
        .collect()
}

pub(super) fn read_dovecot(answers: &Answers) -> Result<Config, String> {
    let out = first_run(answers, "doveconf -n")?;
    let mut blocks: Vec<String> = Vec::new();
    let mut refs = Vec::new();
    for line in out.stdout.lines() {
        let t = line.trim();
        if let Some(open) = t.strip_suffix('{') {
            blocks.push(open.trim().to_string());
            continue;
        }
        if t == "}" {
            blocks.pop();
            continue;
        }
        let Some((name, value)) = t.split_once('=') else {
            continue;
        };
        let kind = match name.trim() {
            "ssl_cert" | "ssl_alt_cert" => Kind::Cert,
            "ssl_key" | "ssl_alt_key" => Kind::Key,
            _ => continue,
        };
        // Only `<FILE` values reach certctl (the target's filter drops the others).
        let Some(path) = value.trim().strip_prefix('<') else {
            continue;
        };
        let at = match blocks.is_empty() {
            true => "doveconf -n".to_string(),
            false => format!("doveconf -n, in `{} {{ }}`", blocks.join(" { ")),
        };
        refs.push(Ref {
            directive: name.trim().to_string(),
            kind,
            target: absolute_only(path.trim()),
            at: Some(at),
        });
    }
    Ok(Config {
        refs,
        unread: Vec::new(),
    })
}

fn absolute_only(value: &str) -> Target {
    if value.starts_with('/') {
        Target::File(super::normalize(value))
    } else {
        Target::Unresolved(value.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::super::RunOutput;
    use super::*;

    fn runs(outs: &[&str]) -> Answers {
        Answers {
            runs: outs
                .iter()
                .map(|o| RunOutput {
                    stdout: o.to_string(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn postfix_main_cf_and_master_cf_overrides() {
        let a = runs(&[
            "smtpd_tls_cert_file = /etc/postfix/tls/a.pem\nsmtpd_tls_key_file = /etc/postfix/tls/a.key\nsmtpd_tls_chain_files =\nsmtpd_tls_eccert_file =\n",
            "relay/unix/syslog_name = postfix/relay\nsubmission/inet/smtpd_tls_cert_file = /etc/postfix/tls/sub.pem\n",
        ]);
        let mut a = a;
        a.files.push(super::super::FileRead {
            path: "/etc/postfix/main.cf".into(),
            ok: true,
            content: "smtpd_tls_cert_file = /old.pem\n# x\nsmtpd_tls_cert_file = /etc/postfix/tls/a.pem\nsmtpd_tls_key_file=$smtpd_tls_cert_file\n".into(),
            ..Default::default()
        });
        let c = read_postfix(&a).unwrap();
        assert_eq!(c.refs.len(), 3, "{c:?}");
        assert_eq!(
            c.refs[0].at.as_deref(),
            Some("main.cf:3"),
            "the last setting wins"
        );
        assert_eq!(
            c.refs[1].at.as_deref(),
            Some("main.cf"),
            "set through $smtpd_tls_cert_file"
        );
        assert_eq!(
            c.refs[0].target,
            Target::File("/etc/postfix/tls/a.pem".into())
        );
        assert_eq!(c.refs[1].kind, Kind::Key);
        assert_eq!(c.refs[2].directive, "-o smtpd_tls_cert_file");
        assert_eq!(c.refs[2].at.as_deref(), Some("master.cf submission/inet"));
    }

    #[test]
    fn dovecot_global_and_filters() {
        let a = runs(&[
            "ssl_cert = </etc/dovecot/a.pem\nssl_key = </etc/dovecot/a.key\nservice imap-login {\n  inet_listener imaps {\n  }\n}\nlocal 10.0.0.1 {\n  ssl_cert = </etc/dovecot/b c.pem\n}\n",
        ]);
        let c = read_dovecot(&a).unwrap();
        assert_eq!(c.refs.len(), 3);
        assert_eq!(c.refs[0].at.as_deref(), Some("doveconf -n"));
        assert_eq!(
            c.refs[2].target,
            Target::File("/etc/dovecot/b c.pem".into())
        );
        assert_eq!(
            c.refs[2].at.as_deref(),
            Some("doveconf -n, in `local 10.0.0.1 { }`")
        );
    }
}
