//! The summary table printed to stderr at the end of a run: one row per target (per
//! certificate, `target/certificate`, for a target with several), a totals
//! line, then the error of every target that has one. Plain text, sized to its content.

use std::fmt::Write as _;

use super::sanitize::sanitize_line;
use super::text::{duration, human, short_or_dash};
use super::{RunReport, Status, TargetReport};

const HEADERS: [&str; 5] = ["TARGET", "STATUS", "OLD → NEW", "SERVED", "DURATION"];

/// The end-of-run table (no escape codes; ends with a newline).
///
/// ```text
/// TARGET  STATUS       OLD → NEW                    SERVED        DURATION
/// web-1   deployed     11:22:33:44… → AB:CD:EF:01…  AB:CD:EF:01…     1.20s
/// web-2   rolled-back  11:22:33:44… → AB:CD:EF:01…  11:22:33:44…     3.05s
///
/// 2 targets: 1 deployed, 1 rolled-back
///
/// web-2: reload failed; restored the previous files
/// ```
pub fn summary_table(report: &RunReport) -> String {
    let rows: Vec<[String; 5]> = report.targets.iter().flat_map(target_rows).collect();

    let mut out = String::new();
    if !rows.is_empty() {
        let mut widths = HEADERS.map(|h| h.chars().count());
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        push_row(&mut out, &HEADERS.map(str::to_string), &widths);
        for row in &rows {
            push_row(&mut out, row, &widths);
        }
        out.push('\n');
    }
    out.push_str(&summary_short(report));
    out
}

/// A target's rows: one, or one per certificate (`target/certificate`) when it has several.
fn target_rows(t: &TargetReport) -> Vec<[String; 5]> {
    let row = |label: String, old, new, served| {
        [
            label,
            t.status.as_str().to_string(),
            format!("{} → {}", short_or_dash(old), short_or_dash(new)),
            short_or_dash(served),
            duration(t.duration_ms),
        ]
    };
    if t.certificates.len() <= 1 {
        let (old, new) = (t.old_fingerprint.as_ref(), t.new_fingerprint.as_ref());
        return vec![row(
            sanitize_line(&t.name),
            old,
            new,
            t.served_fingerprint.as_ref(),
        )];
    }
    t.certificates
        .iter()
        .map(|c| {
            let label = sanitize_line(&format!("{}/{}", t.name, c.certificate));
            let (old, new) = (c.old_fingerprint.as_ref(), c.new_fingerprint.as_ref());
            row(label, old, new, c.served_fingerprint.as_ref())
        })
        .collect()
}

/// `--quiet`'s summary: the totals line, then the error of every target that has one.
pub fn summary_short(report: &RunReport) -> String {
    let verbose = super::term::settings().verbose > 0;
    let mut out = totals(report);
    out.push('\n');

    // Unknown hosts: the line to add goes into one block at the end, not under each target.
    let mut untrusted = Vec::new();
    let errors: Vec<(String, String)> = report
        .targets
        .iter()
        .filter_map(|t| {
            let mut error = human(t.error.as_deref()?, verbose);
            if let Some(u) = super::trust::untrusted(&error) {
                error.clone_from(&u.error);
                untrusted.push(u);
            }
            Some((sanitize_line(&t.name), error))
        })
        .collect();
    if !errors.is_empty() {
        out.push('\n');
    }
    for (name, error) in errors {
        let indent = " ".repeat(name.chars().count() + 2);
        let mut lines = error.lines();
        let _ = writeln!(out, "{name}: {}", lines.next().unwrap_or(""));
        for line in lines {
            let _ = writeln!(out, "{indent}{line}");
        }
    }
    out.push_str(&super::trust::block(&untrusted));
    out
}

/// Left-aligned columns two spaces apart; the duration column right-aligned; no trailing blanks.
fn push_row(out: &mut String, cells: &[String; 5], widths: &[usize; 5]) {
    let mut line = String::new();
    for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
        let pad = width - cell.chars().count();
        if i > 0 {
            line.push_str("  ");
        }
        if i == cells.len() - 1 {
            line.push_str(&" ".repeat(pad));
            line.push_str(cell);
        } else {
            line.push_str(cell);
            line.push_str(&" ".repeat(pad));
        }
    }
    out.push_str(line.trim_end());
    out.push('\n');
}

/// `3 targets (dry run): 2 would-change, 1 would-fail`, in the order statuses are declared.
fn totals(report: &RunReport) -> String {
    let total = report.targets.len();
    let noun = if total == 1 { "target" } else { "targets" };
    let dry = if report.dry_run { " (dry run)" } else { "" };
    let counts: Vec<String> = Status::ALL
        .iter()
        .filter_map(|&status| {
            let n = report.targets.iter().filter(|t| t.status == status).count();
            (n > 0).then(|| format!("{n} {}", status.as_str()))
        })
        .collect();
    if counts.is_empty() {
        format!("{total} {noun}{dry}")
    } else {
        format!("{total} {noun}{dry}: {}", counts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::super::tests::{run, sample_target, snapshot_settings};
    use super::super::{CertificateReport, RunReport, Status};
    use super::summary_table;

    #[test]
    fn summary_table_of_a_mixed_run() {
        let report = run(
            "deploy",
            &[
                Status::Deployed,
                Status::Unchanged,
                Status::RolledBack,
                Status::RollbackFailed,
                Status::Unreachable,
                Status::Skipped,
            ],
        );
        let table = summary_table(&report);
        assert!(!table.contains('\u{1b}'));
        snapshot_settings().bind(|| insta::assert_snapshot!("report__summary_table_mixed", table));
    }
    #[test]
    fn summary_table_has_one_row_per_certificate_of_a_target_with_several() {
        let mut multi = sample_target("web-1", Status::RolledBack);
        let first = multi.certificates[0].clone();
        multi.certificates = ["a", "b", "c"]
            .iter()
            .map(|name| CertificateReport {
                certificate: name.to_string(),
                ..first.clone()
            })
            .collect();
        multi.certificates[1].served_fingerprint = None;
        let single = sample_target("web-2", Status::Deployed);
        let report = RunReport::new(
            "deploy",
            false,
            SystemTime::UNIX_EPOCH,
            Duration::ZERO,
            vec![multi, single],
        );
        let table = summary_table(&report);
        let rows: Vec<&str> = table
            .lines()
            .skip(1)
            .take_while(|l| !l.is_empty())
            .collect();
        assert_eq!(rows.len(), 4, "{table}");
        for (row, label) in rows.iter().zip(["web-1/a", "web-1/b", "web-1/c", "web-2 "]) {
            assert!(row.starts_with(label), "{table}");
        }
        assert!(rows[0].contains("rolled-back") && rows[2].contains("rolled-back"));
        // The middle certificate served nothing: its SERVED cell is a dash, the others' are not.
        // Cells: name, status, old, →, new, served, duration.
        let served = |row: &str| row.split_whitespace().nth(5).unwrap().to_string();
        assert_eq!(served(rows[1]), "-", "{table}");
        assert_ne!(served(rows[0]), "-", "{table}");
        // The totals count targets, not certificates.
        assert!(
            table.contains("2 targets: 1 deployed, 1 rolled-back"),
            "{table}"
        );
    }
    #[test]
    fn summary_table_with_no_targets() {
        let report = RunReport::new(
            "verify",
            false,
            SystemTime::UNIX_EPOCH,
            Duration::ZERO,
            Vec::new(),
        );
        assert_eq!(summary_table(&report), "0 targets\n");
    }
    #[test]
    fn summary_table_sizes_columns_to_long_names_and_escapes_them() {
        let mut long = sample_target(&"very-long-target-name-".repeat(4), Status::WouldChange);
        long.old_fingerprint = None;
        long.duration_ms = 125_000;
        let mut hostile = sample_target("evil\x1b[2J\nname", Status::Ok);
        hostile.served_fingerprint = None;
        let mut report = RunReport::new(
            "deploy",
            true,
            SystemTime::UNIX_EPOCH,
            Duration::ZERO,
            vec![long, hostile],
        );
        report.dry_run = true;
        let table = summary_table(&report);
        let lines: Vec<&str> = table.lines().collect();
        // Every row's STATUS column starts at the same offset, after the longest name.
        let column = lines[0].find("STATUS").unwrap();
        assert_eq!(column, 88 + 2);
        assert_eq!(lines[1].find("would-change"), Some(column));
        assert_eq!(lines[2].find("ok "), Some(column), "{table}");
        assert!(lines[2].starts_with("evil\\nname "), "{table}");
        assert!(lines[1].contains("- → AB:CD:EF:01…"));
        assert!(lines[1].ends_with("2m05s"));
        assert!(
            lines[2].ends_with("1.23s"),
            "durations right-aligned: {table}"
        );
        assert_eq!(lines[4], "2 targets (dry run): 1 would-change, 1 ok");
        assert!(!table.contains('\u{1b}'));
    }
}
