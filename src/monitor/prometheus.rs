//! `certctl verify --prometheus FILE`: the Prometheus text exposition format as node_exporter's
//! textfile collector reads it (`--collector.textfile.directory`, files ending in `.prom`).
//!
//! Every series has the labels `target`, `host`, `connector` and `certificate`, except the
//! inventory-certificate series (`certificate` only) and the run's own timestamp. Names follow
//! the Prometheus conventions: a `certctl_` prefix, base units (`_seconds`), `_timestamp_seconds`
//! for points in time, and gauges throughout (each value is a fresh observation). A target that
//! could not be reached has `certctl_endpoint_up 0` and no served-certificate series.
//!
//! The file is written to a temporary name in the same directory (0644: it holds no secret),
//! fsync'd, then renamed over FILE, so the collector never reads half a file.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use super::Observation;

/// One metric family: name, help, and its samples (labels, value).
struct Family {
    name: &'static str,
    help: &'static str,
    samples: Vec<(String, f64)>,
}

impl Family {
    fn new(name: &'static str, help: &'static str) -> Self {
        Family {
            name,
            help,
            samples: Vec::new(),
        }
    }
}

/// The text for `observations`, taken at `now` (Unix seconds).
pub fn render(observations: &[Observation], now: i64) -> String {
    let families = endpoint_families(observations, now)
        .into_iter()
        .chain(inventory_families(observations, now))
        .chain([run_family(now)]);
    let mut out = String::new();
    for family in families {
        let _ = writeln!(out, "# HELP {} {}", family.name, escape_help(family.help));
        let _ = writeln!(out, "# TYPE {} gauge", family.name);
        for (labels, value) in &family.samples {
            let _ = writeln!(out, "{}{labels} {}", family.name, number(*value));
        }
    }
    out
}

/// The per-target series: what each probed endpoint served, and the probe itself.
fn endpoint_families(observations: &[Observation], now: i64) -> [Family; 7] {
    let mut up = Family::new(
        "certctl_endpoint_up",
        "Whether the target's TLS endpoint completed a handshake in the last verify (1) or not (0).",
    );
    let mut matches = Family::new(
        "certctl_certificate_served_matches",
        "Whether the endpoint serves the inventory's certificate (1) or another or none (0).",
    );
    let mut chain = Family::new(
        "certctl_certificate_chain_matches",
        "Whether the endpoint serves the inventory's intermediate chain, in order (1) or not (0).",
    );
    let mut expires_in = Family::new(
        "certctl_certificate_expires_in_seconds",
        "Seconds from the last verify until the served certificate expires; negative once expired.",
    );
    let mut not_after = Family::new(
        "certctl_certificate_not_after_timestamp_seconds",
        "When the served certificate expires (notAfter), as a Unix timestamp.",
    );
    let mut duration = Family::new(
        "certctl_probe_duration_seconds",
        "Duration of the last probe (connect, STARTTLS, TLS handshake).",
    );
    let mut last = Family::new(
        "certctl_last_verify_timestamp_seconds",
        "When certctl verify last probed this target, as a Unix timestamp.",
    );
    for o in observations.iter().filter(|o| o.probed) {
        let labels = labels(&[
            ("target", &o.target),
            ("host", &o.host),
            ("connector", &o.connector),
            ("certificate", &o.certificate),
        ]);
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        up.samples.push((labels.clone(), flag(o.reachable)));
        matches.samples.push((labels.clone(), flag(o.leaf_matches)));
        chain.samples.push((labels.clone(), flag(o.chain_matches)));
        if let Some(at) = o.served_not_after {
            expires_in.samples.push((labels.clone(), (at - now) as f64));
            not_after.samples.push((labels.clone(), at as f64));
        }
        if let Some(ms) = o.probe_duration_ms {
            duration.samples.push((labels.clone(), ms as f64 / 1000.0));
        }
        last.samples.push((labels, now as f64));
    }
    [up, matches, chain, expires_in, not_after, duration, last]
}

/// The inventory-certificate series: one sample per certificate name (probed or not).
fn inventory_families(observations: &[Observation], now: i64) -> [Family; 2] {
    let mut material = Family::new(
        "certctl_inventory_certificate_expires_in_seconds",
        "Seconds from the last verify until the inventory's certificate (the material to deploy) expires.",
    );
    let mut material_ts = Family::new(
        "certctl_inventory_certificate_not_after_timestamp_seconds",
        "When the inventory's certificate (the material to deploy) expires, as a Unix timestamp.",
    );
    let mut certificates: BTreeMap<&str, i64> = BTreeMap::new();
    for o in observations {
        certificates.insert(&o.certificate, o.material_not_after);
    }
    for (name, at) in &certificates {
        let l = labels(&[("certificate", name)]);
        material.samples.push((l.clone(), (*at - now) as f64));
        material_ts.samples.push((l, *at as f64));
    }
    [material, material_ts]
}

/// The run's own timestamp.
fn run_family(now: i64) -> Family {
    let mut run = Family::new(
        "certctl_verify_last_run_timestamp_seconds",
        "When the certctl verify that wrote this file ran, as a Unix timestamp.",
    );
    run.samples.push((String::new(), now as f64));
    run
}

/// `{a="x",b="y"}` with values escaped as the format requires (`\\`, `\"`, `\n`).
fn labels(pairs: &[(&str, &str)]) -> String {
    let body: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    format!("{{{}}}", body.join(","))
}

fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Integers without a fraction; others as Rust prints them (a valid Go float).
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Writes `text` to `path` atomically: a temporary file beside it (0644), fsync, rename, and
/// an fsync of the directory.
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the path names no file"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".certctl-{}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observation(target: &str, reachable: bool) -> Observation {
        Observation {
            target: target.into(),
            host: "10.0.0.1".into(),
            connector: "nginx".into(),
            certificate: "www".into(),
            probed: true,
            reachable,
            leaf_matches: reachable,
            chain_matches: reachable,
            served_not_after: reachable.then_some(1_000 + 86_400),
            probe_duration_ms: Some(12),
            material_not_after: 1_000 + 2 * 86_400,
        }
    }

    #[test]
    fn renders_families_and_escapes_labels() {
        let mut odd = observation("we\"b\\1\n", false);
        odd.probe_duration_ms = None;
        let text = render(&[observation("web-1", true), odd], 1_000);
        assert!(text.contains("# TYPE certctl_endpoint_up gauge\n"));
        assert!(text.contains(
            "certctl_certificate_expires_in_seconds{target=\"web-1\",host=\"10.0.0.1\",connector=\"nginx\",certificate=\"www\"} 86400\n"
        ));
        assert!(text.contains("certctl_endpoint_up{target=\"we\\\"b\\\\1\\n\","));
        assert!(text.contains("certctl_probe_duration_seconds{target=\"web-1\",host=\"10.0.0.1\",connector=\"nginx\",certificate=\"www\"} 0.012\n"));
        assert!(text.contains(
            "certctl_inventory_certificate_expires_in_seconds{certificate=\"www\"} 172800\n"
        ));
        assert!(text.contains("certctl_verify_last_run_timestamp_seconds 1000\n"));
        // The unreachable target has no served-certificate series.
        assert_eq!(
            text.matches("certctl_certificate_not_after_timestamp_seconds{")
                .count(),
            1
        );
    }

    #[test]
    fn writes_atomically_and_leaves_no_temporary_file() {
        let dir = std::env::temp_dir().join(format!("certctl-prom-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("certctl.prom");
        write_atomic(&path, "a 1\n").unwrap();
        write_atomic(&path, "a 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a 2\n");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
