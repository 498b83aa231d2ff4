//! OpenSSH known_hosts matching: hashed names, `[host]:port`, tab or space separated fields,
//! `@revoked`, `@cert-authority` (the CA keys that may sign a host's certificate; never
//! trusted as a plain host key).
//!
//! Our own matcher rather than russh's `check_known_hosts_path`, which ignores `@revoked`,
//! splits fields on single spaces only and treats a missing file as "host unknown". Semantics
//! follow OpenSSH's `check_key_in_hostkeys`:
//! - a line applies when one of its host patterns matches `host` (port 22) or `[host]:port`,
//!   case-insensitively, and none of its `!` patterns does; `*` and `?` are wildcards;
//! - a `@revoked` line whose key equals the offered key wins over everything;
//! - otherwise any plain line with the offered key is a match;
//! - otherwise a plain line with the same key TYPE but another key means the key changed;
//! - a host listed only with other key types is unknown, not changed.
//!
//! Reading and appending only; it never rewrites or removes a line.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use russh::keys::PublicKey;
use sha1::Sha1;

/// Why a host key is not trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyProblem {
    /// The known_hosts file does not exist.
    FileMissing,
    /// The file exists but could not be read.
    Unreadable { message: String },
    /// No line lists this host with a key of the offered type.
    Unknown,
    /// `line` (1-based) lists this host with a different key of the same type.
    Changed { line: usize },
    /// `line` (1-based) marks the offered key `@revoked`.
    Revoked { line: usize },
}

impl fmt::Display for HostKeyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FileMissing => f.write_str("the known_hosts file does not exist"),
            Self::Unreadable { message } => {
                write!(f, "the known_hosts file cannot be read: {message}")
            }
            Self::Unknown => f.write_str("the host is not listed with a key of this type"),
            Self::Changed { line } => write!(f, "line {line} lists a different key for this host"),
            Self::Revoked { line } => write!(f, "line {line} marks this key @revoked"),
        }
    }
}

/// The name known_hosts files use for a host: bare for port 22, else `[host]:port`.
pub fn host_pattern(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    }
}

/// The line that trusts `key` for `host:port`, e.g. `[web-1]:2222 ssh-ed25519 AAAA…`.
pub fn entry_line(host: &str, port: u16, key: &PublicKey) -> String {
    let blob = key.to_bytes().unwrap_or_default();
    format!(
        "{} {} {}",
        host_pattern(host, port),
        key_type(&blob).unwrap_or("unknown"),
        BASE64.encode(&blob)
    )
}

/// Checks `key` offered by `host:port` against the known_hosts file at `path`.
pub fn check(path: &Path, host: &str, port: u16, key: &PublicKey) -> Result<(), HostKeyProblem> {
    let file = load(path)?;
    check_entries(&file.matching(host, port), key)
}

/// Checks `key` against several known_hosts files, as OpenSSH reads its `UserKnownHostsFile`
/// and `GlobalKnownHostsFile` lists: a key `@revoked` in any file is refused, and a file that
/// exists but cannot be read fails closed (it might hold a revocation); otherwise a key listed
/// in any file is trusted; otherwise a different key of the same type in any file means the
/// key changed. The error carries the index of the file it is about (0, the first file, for
/// "unknown" and "missing": that is where a new key would be recorded).
pub fn check_files(
    files: &[&Path],
    host: &str,
    port: u16,
    key: &PublicKey,
) -> Result<(), (usize, HostKeyProblem)> {
    let results: Vec<Result<(), HostKeyProblem>> =
        files.iter().map(|f| check(f, host, port, key)).collect();
    let find = |wanted: fn(&HostKeyProblem) -> bool| {
        results.iter().enumerate().find_map(|(i, r)| match r {
            Err(p) if wanted(p) => Some((i, p.clone())),
            _ => None,
        })
    };
    if let Some(found) = find(|p| matches!(p, HostKeyProblem::Revoked { .. })) {
        return Err(found);
    }
    if let Some(found) = find(|p| matches!(p, HostKeyProblem::Unreadable { .. })) {
        return Err(found);
    }
    if results.iter().any(Result::is_ok) {
        return Ok(());
    }
    if let Some(found) = find(|p| matches!(p, HostKeyProblem::Changed { .. })) {
        return Err(found);
    }
    if results
        .iter()
        .all(|r| matches!(r, Err(HostKeyProblem::FileMissing)))
    {
        return Err((0, HostKeyProblem::FileMissing));
    }
    Err((0, HostKeyProblem::Unknown))
}

/// Whether a `@cert-authority` line of the file at `path` applies to `host:port`: such a host
/// proves itself with a host certificate signed by that CA.
pub fn has_cert_authority(path: &Path, host: &str, port: u16) -> bool {
    load(path).is_ok_and(|file| {
        file.matching(host, port)
            .iter()
            .any(|e| e.marker == Marker::CertAuthority)
    })
}

/// The CA keys of the `@cert-authority` lines of the file at `path` that apply to
/// `host:port`, each with its 1-based line number.
pub fn cert_authorities(path: &Path, host: &str, port: u16) -> Vec<(PublicKey, usize)> {
    let Ok(file) = load(path) else {
        return Vec::new();
    };
    file.matching(host, port)
        .iter()
        .filter(|e| e.marker == Marker::CertAuthority)
        .filter_map(|e| PublicKey::from_bytes(&e.blob).ok().map(|k| (k, e.line)))
        .collect()
}

/// The line (1-based) of the file at `path` that marks `key` `@revoked` for `host:port`.
pub fn revoked_line(path: &Path, host: &str, port: u16, key: &PublicKey) -> Option<usize> {
    let file = load(path).ok()?;
    let blob = key.to_bytes().ok()?;
    file.matching(host, port)
        .iter()
        .find(|e| e.marker == Marker::Revoked && e.blob == blob)
        .map(|e| e.line)
}

/// Key algorithms this file trusts for `host:port` (e.g. `ssh-ed25519`, `ssh-rsa`), in file
/// order. Used to ask the server for a host key we can actually verify, as OpenSSH does.
pub fn known_key_types(path: &Path, host: &str, port: u16) -> Vec<String> {
    let Ok(file) = load(path) else {
        return Vec::new();
    };
    let mut types: Vec<String> = Vec::new();
    for entry in file.matching(host, port) {
        if entry.marker == Marker::None
            && let Some(t) = key_type(&entry.blob)
            && !types.iter().any(|k| k == t)
        {
            types.push(t.to_owned());
        }
    }
    types
}

/// The first key this file trusts for `host:port`, base64 as written in the file: what names
/// the server (rather than the address) when handshakes to it are capped.
pub fn known_key(path: &Path, host: &str, port: u16) -> Option<String> {
    let file = load(path).ok()?;
    file.matching(host, port)
        .iter()
        .find(|e| e.marker == Marker::None)
        .map(|e| BASE64.encode(&e.blob))
}

/// Called with OpenSSH's "permanently added" line each time a new host key is recorded
/// (`--accept-new-host-keys`); the command line points it at its printer. Unset: silent.
pub static ON_RECORDED: std::sync::OnceLock<fn(&str)> = std::sync::OnceLock::new();

/// `Warning: Permanently added '[host]:port' (ED25519) to the list of known hosts.`, as
/// OpenSSH words it.
pub fn permanently_added(host: &str, port: u16, key: &PublicKey) -> String {
    let algorithm = key.algorithm().to_string();
    let kind = match algorithm.as_str() {
        a if a.starts_with("ecdsa-") => "ECDSA".to_string(),
        a if a.starts_with("sk-ecdsa") => "ECDSA-SK".to_string(),
        a if a.starts_with("sk-ssh-ed25519") => "ED25519-SK".to_string(),
        a => a.trim_start_matches("ssh-").to_uppercase(),
    };
    format!(
        "Warning: Permanently added '{}' ({kind}) to the list of known hosts.",
        host_pattern(host, port)
    )
}

/// Appends a line trusting `key` for `host:port` (trust on first use). Creates the file with
/// mode 0600 (and its directory with 0700) when missing.
pub fn append(path: &Path, host: &str, port: u16, key: &PublicKey) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    // A file whose last line lacks a newline would otherwise glue our entry onto it.
    let needs_newline = match std::fs::read(path) {
        Ok(bytes) => bytes.last().is_some_and(|b| *b != b'\n'),
        Err(_) => false,
    };
    let mut line = String::new();
    if needs_newline {
        line.push('\n');
    }
    line.push_str(&entry_line(host, port, key));
    line.push('\n');
    // One write with O_APPEND, so concurrent appends from parallel targets do not interleave.
    file.write_all(line.as_bytes())?;
    file.sync_all()
}

/// A known_hosts file as read once: its entries, and which of them apply to each host name
/// asked about so far. Every connect asks about its host several times (key types, the key,
/// revocations, CAs); a fleet's targets share one file. Without this, each question re-read
/// and re-parsed the whole file — quadratic in the fleet's size, with an HMAC per hashed line.
struct KnownHostsFile {
    entries: Vec<Entry>,
    /// Lower-cased `host` or `[host]:port` → indices into `entries`, in file order.
    matches: Mutex<HashMap<String, Arc<[usize]>>>,
}

impl KnownHostsFile {
    fn parse(text: &str) -> Self {
        let entries = text
            .lines()
            .enumerate()
            .filter_map(|(i, line)| Entry::parse(line, i + 1))
            .collect();
        Self {
            entries,
            matches: Mutex::new(HashMap::new()),
        }
    }

    /// The entries whose host patterns match `host:port`, in file order.
    fn matching(&self, host: &str, port: u16) -> Vec<&Entry> {
        let name = host_pattern(host, port).to_lowercase();
        let cached = self.matches.lock().ok().and_then(|m| m.get(&name).cloned());
        let indices = cached.unwrap_or_else(|| {
            let found: Arc<[usize]> = (0..self.entries.len())
                .filter(|&i| self.entries[i].matches_host(&name))
                .collect();
            if let Ok(mut m) = self.matches.lock() {
                m.insert(name, found.clone());
            }
            found
        });
        indices.iter().map(|&i| &self.entries[i]).collect()
    }
}

/// What identifies one version of a file: a file that changed (our own append included) is
/// read again.
type Stamp = (u64, u64, u64, Option<std::time::SystemTime>);

/// Known_hosts files read in this process, by path.
type Files = HashMap<PathBuf, (Stamp, Arc<KnownHostsFile>)>;
static FILES: LazyLock<Mutex<Files>> = LazyLock::new(|| Mutex::new(HashMap::new()));

fn load(path: &Path) -> Result<Arc<KnownHostsFile>, HostKeyProblem> {
    use std::os::unix::fs::MetadataExt;
    let problem = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::NotFound {
            HostKeyProblem::FileMissing
        } else {
            HostKeyProblem::Unreadable {
                message: e.to_string(),
            }
        }
    };
    let meta = std::fs::metadata(path).map_err(problem)?;
    let stamp = (meta.dev(), meta.ino(), meta.len(), meta.modified().ok());
    if let Some((seen, file)) = FILES.lock().ok().and_then(|f| f.get(path).cloned())
        && seen == stamp
    {
        return Ok(file);
    }
    let bytes = std::fs::read(path).map_err(problem)?;
    let file = Arc::new(KnownHostsFile::parse(&String::from_utf8_lossy(&bytes)));
    if let Ok(mut files) = FILES.lock() {
        files.insert(path.to_path_buf(), (stamp, file.clone()));
    }
    Ok(file)
}

/// Decides on `key` from the entries that apply to its host (in file order).
fn check_entries(entries: &[&Entry], key: &PublicKey) -> Result<(), HostKeyProblem> {
    let offered = key.to_bytes().map_err(|e| HostKeyProblem::Unreadable {
        message: format!("offered key: {e}"),
    })?;
    let offered_type = key_type(&offered);
    let mut matched = false;
    let mut changed: Option<usize> = None;
    for entry in entries {
        match entry.marker {
            Marker::Revoked if entry.blob == offered => {
                return Err(HostKeyProblem::Revoked { line: entry.line });
            }
            Marker::Revoked | Marker::CertAuthority => {}
            Marker::None if entry.blob == offered => matched = true,
            Marker::None => {
                if changed.is_none() && key_type(&entry.blob) == offered_type {
                    changed = Some(entry.line);
                }
            }
        }
    }
    match (matched, changed) {
        (true, _) => Ok(()),
        (false, Some(line)) => Err(HostKeyProblem::Changed { line }),
        (false, None) => Err(HostKeyProblem::Unknown),
    }
}

/// The algorithm name at the start of an SSH public key blob (`string type, ...`).
fn key_type(blob: &[u8]) -> Option<&str> {
    let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
    std::str::from_utf8(blob.get(4..4 + len)?).ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    None,
    Revoked,
    CertAuthority,
}

/// One parsed known_hosts line.
struct Entry {
    /// 1-based.
    line: usize,
    marker: Marker,
    hosts: String,
    blob: Vec<u8>,
}

impl Entry {
    /// Parses line number `line`; comments, blank and malformed lines give `None` (OpenSSH
    /// skips them too).
    fn parse(text: &str, line: usize) -> Option<Self> {
        let mut fields = text.split([' ', '\t']).filter(|f| !f.is_empty());
        let mut first = fields.next()?;
        if first.starts_with('#') {
            return None;
        }
        let marker = match first {
            "@revoked" => Marker::Revoked,
            "@cert-authority" => Marker::CertAuthority,
            m if m.starts_with('@') => return None,
            _ => Marker::None,
        };
        if marker != Marker::None {
            first = fields.next()?;
        }
        let _type_name = fields.next()?;
        let blob = BASE64.decode(fields.next()?).ok()?;
        key_type(&blob)?;
        Some(Self {
            line,
            marker,
            hosts: first.to_string(),
            blob,
        })
    }

    /// `name` is the lower-cased `host` or `[host]:port`.
    fn matches_host(&self, name: &str) -> bool {
        if let Some(hashed) = self.hosts.strip_prefix("|1|") {
            return hashed_matches(hashed, name);
        }
        let mut positive = false;
        for pattern in self.hosts.split(',') {
            let (negated, pattern) = match pattern.strip_prefix('!') {
                Some(p) => (true, p),
                None => (false, pattern),
            };
            if glob(&pattern.to_lowercase(), name) {
                if negated {
                    return false;
                }
                positive = true;
            }
        }
        positive
    }
}

/// `salt|hash` of a `|1|salt|hash` entry: hash = HMAC-SHA1(key = salt, name).
fn hashed_matches(salt_and_hash: &str, name: &str) -> bool {
    let Some((salt, hash)) = salt_and_hash.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (BASE64.decode(salt), BASE64.decode(hash)) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

/// OpenSSH `match_pattern`: `*` any run of characters, `?` exactly one.
pub(super) fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests;
