//! Paths as the check compares them: lexically normalised, relative ones resolved against the
//! base the server itself uses, and shortened for messages. Symlinks are not followed here:
//! the target resolves them (`readlink -f`) and [`super::judge`] compares both forms.

/// `path` with `//`, `/./` and `dir/..` folded, no trailing `/` (but `/` itself).
pub fn normalize(path: &str) -> String {
    let absolute = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." if parts.last().is_some_and(|p| *p != "..") => {
                parts.pop();
            }
            ".." if absolute => {}
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    match (absolute, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// The directory that holds `path` (normalised, absolute): `/` for `/x`.
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) => "/",
        Some(i) => &path[..i],
        None => ".",
    }
}

/// `path` resolved against `base` (a directory) when relative, normalised.
pub fn absolute(base: &str, path: &str) -> String {
    if path.starts_with('/') {
        normalize(path)
    } else {
        normalize(&format!("{base}/{path}"))
    }
}

/// `file:line`, the file shortened to its path below `base` when it is there.
pub fn at(file: &str, base: &str, line: usize) -> String {
    let base = base.trim_end_matches('/');
    let short = file
        .strip_prefix(base)
        .and_then(|rest| rest.strip_prefix('/'))
        .filter(|rest| !rest.is_empty())
        .unwrap_or(file);
    format!("{short}:{line}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_and_resolves_like_the_servers() {
        assert_eq!(
            normalize("/etc//nginx/./ssl/../ssl/a.crt"),
            "/etc/nginx/ssl/a.crt"
        );
        assert_eq!(normalize("/../a"), "/a");
        assert_eq!(normalize("/etc/haproxy/certs/"), "/etc/haproxy/certs");
        assert_eq!(normalize("/"), "/");
        assert_eq!(
            absolute("/etc/nginx", "ssl/a b.crt"),
            "/etc/nginx/ssl/a b.crt"
        );
        assert_eq!(absolute("/etc/nginx", "/srv/x.pem"), "/srv/x.pem");
        assert_eq!(parent("/etc/x.pem"), "/etc");
        assert_eq!(parent("/x.pem"), "/");
        assert_eq!(
            at("/etc/nginx/conf.d/a.conf", "/etc/nginx/", 3),
            "conf.d/a.conf:3"
        );
        assert_eq!(at("/srv/other.conf", "/etc/nginx", 7), "/srv/other.conf:7");
    }
}
