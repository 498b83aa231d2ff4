//! Hosts refused because no known_hosts file lists them: the summary names each target's
//! refusal in one line and collects the lines to add into one block at the end, per
//! known_hosts file, instead of repeating "To trust it, add: …" under every target.
//!
//! Reads the transport's own wording (`ssh::SshError`'s unknown-host, missing-file and
//! CA-only messages): text in, text out.

/// What a refused unknown host's error says, split up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Untrusted {
    /// The error without the "To trust it, add: …" advice.
    pub error: String,
    /// The known_hosts file the line belongs in.
    pub file: String,
    /// The known_hosts line to add.
    pub line: String,
}

const OR_FLAG: &str = "\nor run with --accept-new-host-keys";

/// Splits an error that ends with the transport's advice to add a known_hosts line.
pub fn untrusted(error: &str) -> Option<Untrusted> {
    let end = error.find(OR_FLAG)?;
    let (advice_at, file) = if let Some(at) = error[..end].rfind(". To trust it, add:\n  ") {
        let file = between(&error[..at], "host is not in ", "; the server offered")
            .or_else(|| between(&error[..at], "known_hosts file ", " does not exist"))?;
        (at, file)
    } else {
        let at = error[..end].rfind(". To trust that key, add to ")?;
        let rest = &error[at + ". To trust that key, add to ".len()..end];
        (at, rest.split_once(":\n  ")?.0)
    };
    let line = error[advice_at..end]
        .rsplit_once("\n  ")?
        .1
        .trim()
        .to_string();
    let mut short = error[..advice_at].to_string();
    short.push_str(" (line to add: below)");
    short.push_str(&error[end + OR_FLAG.len()..]);
    Some(Untrusted {
        error: short,
        file: file.to_string(),
        line,
    })
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.rfind(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

/// The block printed after the errors: per file, each line once.
pub fn block(found: &[Untrusted]) -> String {
    let mut files: Vec<(&str, Vec<&str>)> = Vec::new();
    for u in found {
        match files.iter_mut().find(|(f, _)| *f == u.file) {
            Some((_, lines)) if lines.contains(&u.line.as_str()) => {}
            Some((_, lines)) => lines.push(&u.line),
            None => files.push((&u.file, vec![&u.line])),
        }
    }
    let mut out = String::new();
    for (file, lines) in files {
        out.push_str(&format!(
            "\nHost keys not in {file} — compare each with the server's own fingerprint \
             (ssh-keygen -lf on it) before adding, or run with --accept-new-host-keys:\n"
        ));
        for line in lines {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA";

    #[test]
    fn unknown_host_advice_is_split_off() {
        let error = format!(
            "connect: 127.0.0.1:2222: host is not in /root/.ssh/known_hosts; the server offered \
             SHA256:abc. To trust it, add:\n  {LINE}\nor run with --accept-new-host-keys; nothing was changed"
        );
        let u = untrusted(&error).unwrap();
        assert_eq!(
            u.error,
            "connect: 127.0.0.1:2222: host is not in /root/.ssh/known_hosts; the server offered \
             SHA256:abc (line to add: below); nothing was changed"
        );
        assert_eq!(u.file, "/root/.ssh/known_hosts");
        assert_eq!(u.line, LINE);

        let missing = format!(
            "h:22: known_hosts file /k does not exist; the server offered SHA256:x. To trust it, \
             add:\n  {LINE}\nor run with --accept-new-host-keys"
        );
        assert_eq!(untrusted(&missing).unwrap().file, "/k");
        let ca = format!(
            "h:22: only a @cert-authority line trusts this host, but it presented no host \
             certificate, only the plain key SHA256:x. To trust that key, add to /k2:\n  {LINE}\nor \
             run with --accept-new-host-keys"
        );
        assert_eq!(untrusted(&ca).map(|u| u.file), Some("/k2".to_string()));
        assert_eq!(untrusted("HOST KEY CHANGED"), None);
    }

    #[test]
    fn one_block_per_file_each_line_once() {
        let u = |file: &str, line: &str| Untrusted {
            error: String::new(),
            file: file.into(),
            line: line.into(),
        };
        let text = block(&[u("/a", "l1"), u("/a", "l1"), u("/a", "l2"), u("/b", "l3")]);
        assert_eq!(text.matches("Host keys not in").count(), 2);
        assert_eq!(text.matches("l1").count(), 1);
        assert!(text.ends_with("l3\n"));
    }
}
