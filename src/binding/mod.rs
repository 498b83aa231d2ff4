//! The binding check's judgement (docs/connectors.md#the-binding-check), pure: what the
//! server's own view of its configuration says it loads, compared with the live paths a
//! target's plan replaces. A preview proves the STAGED files load; this proves the live
//! configuration uses the paths being replaced, before anything is touched.
//!
//! The remote half (`src/deploy/binding.rs`) runs the connector's `binding.run` commands and
//! reads its `binding.files` inside inspect's remote command, and brings back [`Answers`].
//! One reader per configuration language turns them into [`Ref`]s — every place the
//! configuration names a certificate or key file, with the server's own directive and
//! `file:line` where the server tells — resolving relative paths as the server does. [`judge`]
//! then decides, file by file: loaded (by path, by the path a symlink resolves to, or by the
//! directory that holds it), not loaded, or impossible to tell (a variable, a base certctl
//! cannot know, a configuration it could not read: a warning, never a failure).
//!
//! Nothing here prints or talks to a target; every remote string is sanitised where a
//! message is built.

mod apache;
mod caddy;
mod haproxy;
mod mail;
mod nginx;
mod paths;

use std::collections::BTreeMap;

use crate::connector::{Reader, Role};
use crate::report::sanitize_line;

pub use paths::normalize;

/// What the remote half brought back, decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answers {
    /// Each `binding.run` command's outcome, in order.
    pub runs: Vec<RunOutput>,
    /// The files read (configuration files, crt-lists), in the order they were read.
    pub files: Vec<FileRead>,
    /// Paths the target resolved (`readlink -f`): path → what it resolves to (`None`: it
    /// could not).
    pub real: BTreeMap<String, Option<String>>,
    /// Why nothing could be asked at all (the target lacks `base64`, say).
    pub unavailable: Option<String>,
}

/// One command's outcome: exit status, standard output (cut when `truncated`), and the head
/// of its standard error when it failed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOutput {
    pub status: i32,
    pub stdout: String,
    pub truncated: bool,
    pub stderr: String,
}

/// One file the remote half read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileRead {
    pub path: String,
    /// A file the configuration names (a haproxy crt-list), not a configuration file.
    pub list: bool,
    /// `false`: it could not be read (`content` is empty).
    pub ok: bool,
    pub content: String,
    pub truncated: bool,
}

/// What a configuration says about one file it loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A certificate (a full chain or the leaf; a bundle also counts).
    Cert,
    Key,
    /// The intermediates alone (apache's SSLCertificateChainFile).
    Chain,
    /// Certificate and key in one file, or any of them (haproxy's `crt`, a folder).
    Any,
}

impl Kind {
    /// Whether a file in `role` is what such a directive loads.
    fn loads(self, role: Role) -> bool {
        match self {
            Kind::Cert => matches!(role, Role::Cert | Role::Fullchain | Role::Bundle),
            Kind::Key => matches!(role, Role::Key | Role::Bundle),
            Kind::Chain => role == Role::Chain,
            Kind::Any => matches!(
                role,
                Role::Cert | Role::Fullchain | Role::Bundle | Role::Key | Role::Chain
            ),
        }
    }
}

/// What a directive names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A file, absolute (a relative path already resolved as the server does).
    File(String),
    /// A file, or a directory whose files are loaded (haproxy's `crt`).
    FileOrDir(String),
    /// A directory whose files (at any depth) are loaded (caddy's `load`).
    Tree(String),
    /// Not a path certctl can resolve: a variable, a base it cannot know, inline data. The
    /// text is as written (shown sanitised).
    Unresolved(String),
}

/// One place the configuration names a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ref {
    /// The server's own directive, e.g. `ssl_certificate`.
    pub directive: String,
    pub kind: Kind,
    pub target: Target,
    /// `file:line` (shortened), or where else the server said it, when it can tell.
    pub at: Option<String>,
}

/// A configuration as a reader understood it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    pub refs: Vec<Ref>,
    /// Files the configuration names that certctl has not read yet (haproxy crt-lists).
    pub unread: Vec<String>,
}

/// One live file the plan replaces, as the check sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub role: Role,
    pub path: String,
    /// `follow_symlinks`: the file the path resolves to is replaced, so a configuration
    /// naming that file loads the new content too.
    pub follow: bool,
}

/// The check's outcome for one certificate's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every file is loaded: where (for the inspect step's detail).
    Bound(String),
    /// A file is not loaded: what the configuration loads instead.
    Unbound(String),
    /// Certctl cannot tell, and why (a warning).
    Unknown(String),
    /// Ask the target once more before deciding: these paths resolved, these files read.
    More {
        real: Vec<String>,
        files: Vec<String>,
    },
}

/// The server's name in messages.
pub fn server(reader: Reader) -> &'static str {
    match reader {
        Reader::Written => "the file certctl writes",
        other => other.as_str(),
    }
}

/// What `certctl connectors show` says a connector's check reads.
pub fn describe(reader: Reader) -> &'static str {
    match reader {
        Reader::Nginx => "`nginx -T`: ssl_certificate, ssl_certificate_key (file:line)",
        Reader::Apache => {
            "the files `apachectl -t -D DUMP_INCLUDES` names: SSLCertificateFile, \
             SSLCertificateChainFile, SSLCertificateKeyFile (file:line)"
        }
        Reader::Haproxy => "haproxy_cfg: `crt` on bind lines, crt-list files, crt-base (file:line)",
        Reader::Postfix => "`postconf -x` and `postconf -P -x`: the smtpd_tls_* files",
        Reader::Dovecot => "`doveconf -n`: ssl_cert, ssl_key (with filters)",
        Reader::Caddy => "`caddy adapt`: tls load_files, load_folders (Caddyfile line)",
        Reader::Written => "the file certctl writes names the live paths",
    }
}

/// Reads `answers` with `reader` (for [`Reader::Written`], `answers.files` are the files
/// certctl writes, as it writes them).
pub fn read(reader: Reader, answers: &Answers) -> Result<Config, String> {
    if let Some(why) = &answers.unavailable {
        return Err(why.clone());
    }
    match reader {
        Reader::Nginx => nginx::read(answers),
        Reader::Apache => apache::read(answers),
        Reader::Haproxy => haproxy::read(answers),
        Reader::Postfix => mail::read_postfix(answers),
        Reader::Dovecot => mail::read_dovecot(answers),
        Reader::Caddy => caddy::read(answers),
        Reader::Written => Ok(read_written(answers)),
    }
}

/// [`Reader::Written`]: every absolute path a file certctl writes names as a double-quoted
/// string (certctl's templates quote every path: traefik's `certFile: "/x"`, envoy's
/// `filename: "/x"`; a value with `"` or `\` is refused when the plan is built).
fn read_written(answers: &Answers) -> Config {
    let mut refs = Vec::new();
    for f in &answers.files {
        for (n, line) in f.content.lines().enumerate() {
            let quoted = line.split('"').skip(1).step_by(2);
            for word in quoted.filter(|w| w.starts_with('/')) {
                refs.push(Ref {
                    directive: String::new(),
                    kind: Kind::Any,
                    target: Target::File(word.to_string()),
                    at: Some(format!("{}:{}", f.path, n + 1)),
                });
            }
        }
    }
    Config {
        refs,
        unread: Vec::new(),
    }
}

/// Whether the check covers a file in `role` (a reader that never names chains does not
/// judge a chain file).
fn checks(reader: Reader, role: Role) -> bool {
    match role {
        Role::Rendered | Role::Keystore => false,
        Role::Chain => matches!(reader, Reader::Apache | Reader::Written),
        Role::Key => reader != Reader::Haproxy,
        Role::Cert | Role::Fullchain | Role::Bundle => true,
    }
}

/// The verdict on `files` (one certificate's live files) from what `answers` hold. With
/// `last`, no further look is asked for: what is still unresolved is decided as it stands.
pub fn judge(reader: Reader, files: &[Planned], answers: &Answers, last: bool) -> Verdict {
    let config = match read(reader, answers) {
        Ok(c) => c,
        Err(why) => return Verdict::Unknown(sanitize_line(&why)),
    };
    let names = |f: &Planned| -> Vec<String> {
        let mut v = vec![normalize(&f.path)];
        if f.follow
            && let Some(Some(real)) = answers.real.get(&f.path)
        {
            v.push(normalize(real));
        }
        v
    };
    let mut bound = Vec::new();
    let mut unbound = Vec::new();
    for f in files.iter().filter(|f| checks(reader, f.role)) {
        let names = names(f);
        let candidates: Vec<&Ref> = config
            .refs
            .iter()
            .filter(|r| r.kind.loads(f.role))
            .collect();
        match candidates
            .iter()
            .find(|r| loads(&r.target, &names, &answers.real))
        {
            Some(r) => bound.push(format!("{} {}", r.directive, r.at.as_deref().unwrap_or(""))),
            None => unbound.push((f, candidates)),
        }
    }
    if unbound.is_empty() {
        let said = bound
            .iter()
            .map(|b| sanitize_line(b.trim()))
            .collect::<Vec<_>>();
        let verb = if reader == Reader::Written {
            "names"
        } else {
            "loads"
        };
        return Verdict::Bound(format!(
            "{} {verb} them ({})",
            server(reader),
            said.join("; ")
        ));
    }
    if !last {
        let real: Vec<String> = unbound
            .iter()
            .flat_map(|(_, c)| c.iter().filter_map(|r| resolvable(&r.target)))
            .filter(|p| !answers.real.contains_key(*p))
            .map(str::to_string)
            .collect();
        if !real.is_empty() || !config.unread.is_empty() {
            return Verdict::More {
                real: dedup(real),
                files: config.unread.clone(),
            };
        }
    }
    if let Some(why) = undecidable(reader, &config, &unbound) {
        return Verdict::Unknown(why);
    }
    let said: Vec<String> = unbound
        .iter()
        .map(|(f, c)| not_loaded(reader, f, c))
        .collect();
    Verdict::Unbound(said.join("; "))
}

/// Why the files left unmatched cannot be judged: a candidate names something certctl
/// cannot resolve, or a file the configuration names could not be read.
fn undecidable(
    reader: Reader,
    config: &Config,
    unbound: &[(&Planned, Vec<&Ref>)],
) -> Option<String> {
    let unresolved: Vec<&Ref> = unbound
        .iter()
        .flat_map(|(_, c)| c.iter().copied())
        .filter(|r| matches!(r.target, Target::Unresolved(_)))
        .collect();
    if let Some(r) = unresolved.first() {
        let Target::Unresolved(text) = &r.target else {
            unreachable!("filtered")
        };
        return Some(format!(
            "{} names {} `{}`{}, which certctl cannot resolve to a path",
            server(reader),
            r.directive,
            sanitize_line(text),
            r.at.as_deref()
                .map(|a| format!(" ({})", sanitize_line(a)))
                .unwrap_or_default()
        ));
    }
    config.unread.first().map(|f| {
        format!(
            "{} names {} but certctl could not read it",
            server(reader),
            sanitize_line(f)
        )
    })
}

/// `nginx loads ssl_certificate /a.crt (nginx.conf:31), not /b.crt`.
fn not_loaded(reader: Reader, f: &Planned, candidates: &[&Ref]) -> String {
    const SHOWN: usize = 4;
    let path = sanitize_line(&f.path);
    if candidates.is_empty() {
        return format!(
            "{}'s configuration names no {} file at all, so it does not load {path}",
            server(reader),
            f.role
        );
    }
    let mut loads: Vec<String> = candidates
        .iter()
        .take(SHOWN)
        .map(|r| {
            let what = match &r.target {
                Target::File(p) | Target::FileOrDir(p) | Target::Tree(p) => p,
                Target::Unresolved(t) => t,
            };
            let at =
                r.at.as_deref()
                    .map(|a| format!(" ({a})"))
                    .unwrap_or_default();
            sanitize_line(format!("{} {what}{at}", r.directive).trim())
        })
        .collect();
    if candidates.len() > SHOWN {
        loads.push(format!("and {} more", candidates.len() - SHOWN));
    }
    let verb = if reader == Reader::Written {
        "names"
    } else {
        "loads"
    };
    format!("{} {verb} {}, not {path}", server(reader), loads.join(", "))
}

/// Whether `target` names one of `names` (a file's path, and what it resolves to), directly,
/// through the path it resolves to, or as the directory that holds it.
fn loads(target: &Target, names: &[String], real: &BTreeMap<String, Option<String>>) -> bool {
    let (path, dir, tree) = match target {
        Target::File(p) => (p, false, false),
        Target::FileOrDir(p) => (p, true, false),
        Target::Tree(p) => (p, true, true),
        Target::Unresolved(_) => return false,
    };
    let mut forms = vec![normalize(path)];
    if let Some(Some(r)) = real.get(path) {
        forms.push(normalize(r));
    }
    forms.iter().any(|form| {
        names.iter().any(|name| {
            name == form
                || (dir && paths::parent(name) == form.as_str())
                || (tree && name.starts_with(&format!("{}/", form.trim_end_matches('/'))))
        })
    })
}

/// The path a target names, when the target can resolve it.
fn resolvable(target: &Target) -> Option<&str> {
    match target {
        Target::File(p) | Target::FileOrDir(p) | Target::Tree(p) => Some(p),
        Target::Unresolved(_) => None,
    }
}

fn dedup(mut v: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    v.retain(|x| seen.insert(x.clone()));
    v
}

/// `FILE:N` (the file's name) for the line of the first file read that names `needle` (the
/// last such line with `last`: postfix's main.cf, where the last setting wins).
fn line_of(answers: &Answers, needle: &str, last: bool) -> Option<String> {
    let file = answers.files.iter().find(|f| f.ok && !f.list)?;
    let name = file.path.rsplit('/').next().unwrap_or(&file.path);
    let mut lines = file
        .content
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle));
    let (n, _) = if last { lines.last()? } else { lines.next()? };
    Some(format!("{name}:{}", n + 1))
}

/// The first run's output, or why it cannot be read: it failed (the head of what it said on
/// stderr) or was cut short.
fn first_run<'a>(answers: &'a Answers, what: &str) -> Result<&'a RunOutput, String> {
    run_output(answers, 0, what)
}

fn run_output<'a>(answers: &'a Answers, i: usize, what: &str) -> Result<&'a RunOutput, String> {
    let out = answers
        .runs
        .get(i)
        .ok_or_else(|| format!("`{what}` did not run"))?;
    if out.status != 0 {
        let said = out
            .stderr
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        let said = if said.is_empty() {
            String::new()
        } else {
            format!(": {}", said.trim())
        };
        return Err(format!(
            "could not read the configuration: `{what}` exited {}{said}",
            out.status
        ));
    }
    if out.truncated {
        return Err(format!(
            "could not read the whole configuration: `{what}` printed more than certctl reads"
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
