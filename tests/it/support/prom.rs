//! The real Prometheus text parser (Python's `prometheus_client`, from PyPI) reading a file
//! certctl wrote. It is installed once, idempotently, into a cache directory of its own with
//! `pip install --target` (as `scripts/install-deps.sh` does), never into the system Python.

use std::path::{Path, PathBuf};
use std::process::Command;

/// One sample as the parser saw it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Sample {
    pub family: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub help: String,
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub value: f64,
}

/// Where `prometheus_client` lives: `$CERTCTL_TEST_PYTHONPATH`, else
/// `~/.cache/certctl-tests/python` (the place scripts/install-deps.sh installs it).
pub fn python_path() -> PathBuf {
    if let Some(p) = std::env::var_os("CERTCTL_TEST_PYTHONPATH") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache"));
    cache.join("certctl-tests/python")
}

fn python() -> PathBuf {
    super::require("python3")
}

/// Installs prometheus_client when it is not importable yet.
fn ensure_installed() -> PathBuf {
    let dir = python_path();
    let importable = |dir: &Path| {
        Command::new(python())
            .args(["-c", "import prometheus_client.parser"])
            .env("PYTHONPATH", dir)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !importable(&dir) {
        let out = Command::new(python())
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-warn-script-location",
                "--target",
            ])
            .arg(&dir)
            .arg("prometheus_client")
            .env("PIP_ROOT_USER_ACTION", "ignore")
            .output()
            .expect("run pip (python3-pip; scripts/install-deps.sh installs it)");
        assert!(
            out.status.success() && importable(&dir),
            "pip install prometheus_client failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    dir
}

const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(open(sys.argv[1]).read()):
    for s in fam.samples:
        out.append({"family": fam.name, "type": fam.type, "help": fam.documentation,
                    "name": s.name, "labels": s.labels, "value": s.value})
print(json.dumps(out))
"#;

/// Parses `file` with prometheus_client; panics with the parser's message if it refuses it.
pub fn parse(file: &Path) -> Vec<Sample> {
    let dir = ensure_installed();
    let out = Command::new(python())
        .args(["-c", PARSE])
        .arg(file)
        .env("PYTHONPATH", dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused {}: {}\n{}",
        file.display(),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(file).unwrap_or_default()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The value of `name` for `target` (label), if present.
pub fn value(samples: &[Sample], name: &str, target: &str) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.name == name && s.labels.get("target").map(String::as_str) == Some(target))
        .map(|s| s.value)
}
