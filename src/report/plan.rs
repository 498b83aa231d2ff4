//! The dry-run plan for people, like `terraform plan`: per target, each file with what would
//! happen to it, its mode and owner after the change, old → new certificate, and the
//! commands the preview ran. Compact by default; `-v` adds subjects, SANs, expiry, chain
//! length, SHA-256s and one line per preview command.
//!
//! ```text
//! web-1 (nginx, 10.0.0.11): would change 2 files
//!   ~ fullchain  /etc/nginx/tls/www.crt  replace  0644 0:0  11:22:33:44… → AB:CD:EF:01…  CN=www.example.com, until 2027-02-25
//!   + key        /etc/nginx/tls/www.key  create   0600 0:0
//!     preview ran: nginx -t -c /tmp/certctl-…/nginx.conf; nginx -t
//! ```
//!
//! Pure: built from the [`RunReport`] and the preview commands the command line rendered from
//! the target plans (the report does not carry them).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::sanitize::sanitize_line;
use super::text::{human, short_or_dash};
use super::{FileReport, RunReport, Status, TargetReport};

/// The preview commands of each target, by name, as command lines.
pub type Previews = BTreeMap<String, Vec<String>>;

/// The plan of every target that has one (`files` known), in report order; empty when none.
pub fn dry_run_plan(run: &RunReport, previews: &Previews, verbose: bool) -> String {
    let mut out = String::new();
    for target in &run.targets {
        if target.files.is_empty() && !matches!(target.status, Status::WouldChange) {
            continue;
        }
        target_plan(&mut out, target, previews.get(&target.name), verbose);
        out.push('\n');
    }
    out
}

fn target_plan(
    out: &mut String,
    target: &TargetReport,
    preview: Option<&Vec<String>>,
    verbose: bool,
) {
    let changing = target
        .files
        .iter()
        .filter(|f| f.action != "unchanged")
        .count();
    let s = if changing == 1 { "" } else { "s" };
    let headline = match target.status {
        Status::WouldChange => format!("would change {changing} file{s}"),
        Status::Unchanged => "no change: files and served certificate are current".to_string(),
        Status::Reloaded => "files current; would reload".to_string(),
        Status::WouldFail => format!("would change {changing} file{s}, but the preview FAILED"),
        other => other.as_str().to_string(),
    };
    let _ = writeln!(
        out,
        "{} ({}, {}): {headline}",
        sanitize_line(&target.name),
        sanitize_line(&target.connector),
        sanitize_line(&target.host)
    );
    let rows: Vec<[String; 5]> = target.files.iter().map(file_row).collect();
    let mut widths = [0usize; 5];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for (file, row) in target.files.iter().zip(&rows) {
        let mut line = String::from("  ");
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            line.push_str(&" ".repeat(w - cell.chars().count()));
        }
        if let Some(cert) = certificate(file, verbose) {
            line.push_str("  ");
            line.push_str(&cert);
        }
        let _ = writeln!(out, "{}", line.trim_end());
        if verbose {
            file_details(out, file);
        }
    }
    preview_lines(out, preview, verbose);
}

/// Symbol, role, path (and the symlink's target), action, mode and owner after the change.
fn file_row(f: &FileReport) -> [String; 5] {
    let symbol = match f.action.as_str() {
        "create" => "+",
        "replace" => "~",
        "repair" => "!",
        "unchanged" => "=",
        _ => "?",
    };
    let mut path = sanitize_line(&f.path);
    if let Some(real) = &f.via_symlink {
        let _ = write!(path, " -> {}", sanitize_line(real));
    }
    let mut action = match &f.repair {
        Some(what) if f.action == "repair" => format!("repair ({})", sanitize_line(what)),
        _ => f.action.clone(),
    };
    if let Some(why) = f.in_place.as_ref().filter(|_| f.action != "unchanged") {
        let _ = write!(action, ", in place ({})", sanitize_line(why));
    }
    let owner = format!(
        "{} {}:{}",
        f.mode,
        f.owner.as_deref().unwrap_or("-"),
        f.group.as_deref().unwrap_or("-")
    );
    [
        symbol.to_string(),
        sanitize_line(&f.role),
        path,
        action,
        owner,
    ]
}

/// `11:22:33:44… → AB:CD:EF:01…  CN=www.example.com, until 2027-02-25` for files with a leaf.
fn certificate(f: &FileReport, verbose: bool) -> Option<String> {
    f.new_fingerprint?;
    let fp = |fp: Option<&crate::material::Fingerprint>| match (fp, verbose) {
        (Some(fp), true) => fp.to_string(),
        (fp, _) => short_or_dash(fp),
    };
    let mut text = format!(
        "{} → {}",
        fp(f.old_fingerprint.as_ref()),
        fp(f.new_fingerprint.as_ref())
    );
    if !verbose {
        if let Some(subject) = &f.subject {
            let _ = write!(text, "  {}", sanitize_line(subject));
        }
        if let Some(until) = &f.not_after {
            let _ = write!(text, ", until {}", until.get(..10).unwrap_or(until));
        }
    }
    Some(text)
}

/// `-v`: the certificate's subject, names, expiry and chain, and both SHA-256s.
fn file_details(out: &mut String, f: &FileReport) {
    const INDENT: &str = "        ";
    if let Some(subject) = &f.subject {
        let _ = writeln!(out, "{INDENT}subject    {}", sanitize_line(subject));
    }
    if !f.sans.is_empty() {
        let sans: Vec<String> = f.sans.iter().map(|s| sanitize_line(s)).collect();
        let _ = writeln!(out, "{INDENT}names      {}", sans.join(", "));
    }
    if let Some(until) = &f.not_after {
        let _ = writeln!(out, "{INDENT}not after  {until}");
    }
    if let Some(chain) = f.chain_length {
        let _ = writeln!(out, "{INDENT}chain      {chain} intermediate(s)");
    }
    let old = f.old_sha256.as_deref().unwrap_or("-");
    let new = if f.new_sha256.is_empty() {
        "(built on the target)"
    } else {
        &f.new_sha256
    };
    let _ = writeln!(out, "{INDENT}sha256     {old} → {new}");
}

/// Compact: the preview's commands on one line, absolute paths shortened to `…/NAME`;
/// `-v`: one line each, whole.
fn preview_lines(out: &mut String, preview: Option<&Vec<String>>, verbose: bool) {
    let Some(commands) = preview.filter(|c| !c.is_empty()) else {
        return;
    };
    let commands: Vec<String> = commands.iter().map(|c| human(c, verbose)).collect();
    if verbose {
        let _ = writeln!(out, "    preview ran:");
        for c in &commands {
            let _ = writeln!(out, "      {c}");
        }
        return;
    }
    let short: Vec<String> = commands.iter().map(|c| short_paths(c)).collect();
    let _ = writeln!(out, "    preview ran: {}", short.join("; "));
}

/// `nginx -t -c /tmp/certctl-1/nginx.conf` -> `nginx -t -c …/nginx.conf`.
fn short_paths(command: &str) -> String {
    command
        .split(' ')
        .map(|word| {
            let bare = word.trim_matches('\'');
            match bare.rsplit_once('/') {
                Some((dir, name))
                    if bare.starts_with('/') && !dir.is_empty() && !name.is_empty() =>
                {
                    format!("…/{name}")
                }
                _ => word.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::report::tests::{NEW, OLD, fp, sample_target};

    fn file(role: &str, path: &str, action: &str, leaf: bool) -> FileReport {
        FileReport {
            role: role.into(),
            path: path.into(),
            action: action.into(),
            via_symlink: None,
            in_place: None,
            repair: None,
            old_sha256: (action != "create").then(|| "aa".repeat(32)),
            new_sha256: "bb".repeat(32),
            mode: if role == "key" { "0600" } else { "0644" }.into(),
            owner: Some("0".into()),
            group: Some("33".into()),
            old_fingerprint: (leaf && action != "create").then(|| fp(OLD)),
            new_fingerprint: leaf.then(|| fp(NEW)),
            subject: leaf.then(|| "CN=www.example.test".into()),
            sans: if leaf {
                vec!["www.example.test".into(), "example.test".into()]
            } else {
                Vec::new()
            },
            not_after: leaf.then(|| "2027-02-25T00:00:00Z".into()),
            chain_length: leaf.then_some(1),
        }
    }

    fn plan_run() -> (RunReport, Previews) {
        let mut web1 = sample_target("web-1", Status::WouldChange);
        web1.files = vec![
            file("fullchain", "/etc/nginx/tls/www.crt", "replace", true),
            file("key", "/etc/nginx/tls/www.key", "create", false),
        ];
        let mut web2 = sample_target("web-2", Status::WouldChange);
        let mut linked = file("cert", "/etc/app/cert.pem", "replace", true);
        linked.via_symlink = Some("/etc/app/releases/7/cert.pem".into());
        let mut broken = file("chain", "/etc/app/chain.pem", "repair", false);
        broken.repair = Some("missing".into());
        web2.files = vec![
            linked,
            broken,
            file("key", "/etc/app/key.pem", "unchanged", false),
        ];
        let previews = Previews::from([
            (
                "web-1".to_string(),
                vec![
                    "nginx -t -c /tmp/certctl-1-0/nginx.conf".to_string(),
                    "nginx -t".to_string(),
                ],
            ),
            (
                "web-2".to_string(),
                vec!["openssl x509 -noout -in /etc/app/.cert.pem.certctl-1.tmp".to_string()],
            ),
        ]);
        let run = RunReport::new(
            "deploy",
            true,
            SystemTime::UNIX_EPOCH,
            Duration::ZERO,
            vec![web1, web2, sample_target("web-3", Status::Unreachable)],
        );
        (run, previews)
    }

    fn settings() -> insta::Settings {
        let mut settings = insta::Settings::clone_current();
        settings.set_snapshot_path("../../tests/snapshots");
        settings.set_prepend_module_to_snapshot(false);
        settings.set_omit_expression(true);
        settings
    }

    #[test]
    fn compact_plan_one_line_per_file() {
        let (run, previews) = plan_run();
        let text = dry_run_plan(&run, &previews, false);
        assert!(!text.contains("web-3"), "no plan without files: {text}");
        assert_eq!(short_paths("a -c /etc/x/z.conf /"), "a -c …/z.conf /");
        assert_eq!(
            short_paths("a '/x y/z.conf'"),
            "a '/x y/z.conf'",
            "quoted: kept"
        );
        settings().bind(|| insta::assert_snapshot!("report__plan_compact", text));
    }

    #[test]
    fn full_plan_with_verbose() {
        let (run, previews) = plan_run();
        let text = dry_run_plan(&run, &previews, true);
        assert!(
            text.contains(&fp(NEW).to_string()),
            "full fingerprints: {text}"
        );
        settings().bind(|| insta::assert_snapshot!("report__plan_verbose", text));
    }
}
