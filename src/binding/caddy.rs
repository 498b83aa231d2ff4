//! caddy: `caddy adapt` prints the JSON configuration caddy runs, imports and snippets
//! resolved by caddy itself. Its `apps.tls.certificates` name the files: `load_files`
//! (`certificate` and `key`, from `tls CERT KEY`) and `load_folders` (`tls { load DIR }`,
//! whose `.pem` files at any depth are loaded). JSON has no line numbers: the line of the
//! Caddyfile (the file read beside) that names the path is given when there is one. caddy
//! resolves a relative path against its working directory, which certctl cannot know.

use serde_json::Value;

use super::{Answers, Config, Kind, Ref, Target, first_run, line_of};

pub(super) fn read(answers: &Answers) -> Result<Config, String> {
    let out = first_run(answers, "caddy adapt")?;
    let json: Value = serde_json::from_str(&out.stdout)
        .map_err(|e| format!("could not read what `caddy adapt` printed: {e}"))?;
    let certs = &json["apps"]["tls"]["certificates"];
    let mut refs = Vec::new();
    for entry in certs["load_files"].as_array().into_iter().flatten() {
        for (field, kind) in [("certificate", Kind::Cert), ("key", Kind::Key)] {
            if let Some(path) = entry[field].as_str() {
                refs.push(Ref {
                    directive: format!("tls {field}"),
                    kind,
                    target: absolute_only(path, false),
                    at: line_of(answers, path, false),
                });
            }
        }
    }
    for dir in certs["load_folders"].as_array().into_iter().flatten() {
        if let Some(path) = dir.as_str() {
            refs.push(Ref {
                directive: "tls load".into(),
                kind: Kind::Any,
                target: absolute_only(path, true),
                at: line_of(answers, path, false),
            });
        }
    }
    Ok(Config {
        refs,
        unread: Vec::new(),
    })
}

fn absolute_only(path: &str, tree: bool) -> Target {
    match (path.starts_with('/'), tree) {
        (false, _) => Target::Unresolved(path.to_string()),
        (true, false) => Target::File(super::normalize(path)),
        (true, true) => Target::Tree(super::normalize(path)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{FileRead, RunOutput};
    use super::*;

    #[test]
    fn load_files_folders_and_caddyfile_lines() {
        let json = r#"{"apps":{"tls":{"certificates":{"load_files":[{"certificate":"/etc/caddy/a b.crt","key":"tls/a.key","tags":["cert0"]}],"load_folders":["/etc/caddy/certs"]}}}}"#;
        let answers = Answers {
            runs: vec![RunOutput {
                stdout: json.into(),
                ..Default::default()
            }],
            files: vec![FileRead {
                path: "/etc/caddy/Caddyfile".into(),
                ok: true,
                content: "x.test {\n  tls \"/etc/caddy/a b.crt\" tls/a.key\n}\n".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let c = read(&answers).unwrap();
        assert_eq!(c.refs.len(), 3);
        assert_eq!(c.refs[0].target, Target::File("/etc/caddy/a b.crt".into()));
        assert_eq!(c.refs[0].at.as_deref(), Some("Caddyfile:2"));
        assert_eq!(c.refs[1].target, Target::Unresolved("tls/a.key".into()));
        assert_eq!(c.refs[2].target, Target::Tree("/etc/caddy/certs".into()));
        assert_eq!(c.refs[2].at, None);
    }
}
