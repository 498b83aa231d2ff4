//! Per-target fields of the JSON report that the engine's [`TargetReport`] does not carry:
//! the served certificate's expiry (`served_not_after`, `served_days_left`) and, for
//! `certctl status`, the target's facts (`facts`: OS, arch, hostname, server version). The
//! command line fills them in after the run; [`RunReport`]'s JSON puts them beside the
//! target's own fields (serde `flatten`), so consumers see one flat object per target.

use serde::{Serialize, Serializer};

use super::problems::Problem;
use super::{RunReport, Summary, TargetReport};

/// What the JSON adds to a target. Every field is always written (`null` when unknown).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TargetExtra {
    /// Not-after of the leaf last served (RFC 3339): `verify` and `status` from the probe,
    /// `deploy` when the served leaf is the deployed one.
    pub served_not_after: Option<String>,
    /// Whole days from the run to `served_not_after` (negative once expired).
    pub served_days_left: Option<i64>,
    /// `status` only.
    pub facts: Option<Facts>,
}

/// `certctl status`'s facts about a target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Facts {
    /// Kernel name and release (`uname -sr`), e.g. `Linux 6.1.0-28-amd64`.
    pub os: Option<String>,
    /// `uname -m`, e.g. `x86_64`.
    pub arch: Option<String>,
    pub hostname: Option<String>,
    /// First line of the connector's version command, e.g. `nginx version: nginx/1.22.1`.
    pub server_version: Option<String>,
}

impl TargetExtra {
    /// Expiry fields for a served leaf expiring at `not_after` (Unix seconds), seen at `now`.
    pub fn served_expiry(not_after: i64, now: i64) -> Self {
        TargetExtra {
            served_not_after: Some(super::format_unix(not_after)),
            served_days_left: Some((not_after - now).div_euclid(86_400)),
            facts: None,
        }
    }

    /// `certctl status`'s fields, from the target's last inspect step (see
    /// [`TargetExtra::from_status_detail`]).
    pub fn for_status(target: &TargetReport) -> Self {
        target
            .steps
            .iter()
            .rev()
            .find(|s| s.step == super::Step::Inspect)
            .and_then(|s| s.detail.as_deref())
            .map(Self::from_status_detail)
            .unwrap_or_default()
    }

    /// Reads `certctl status`'s inspect detail, `UNAME; HOSTNAME; VERSION…; serves FP (expires
    /// RFC3339, in N day(s))` or `…; serves no certificate`, as the engine writes it. (The engine
    /// reports these facts as text only; this keeps the JSON structured until it carries them.)
    pub fn from_status_detail(detail: &str) -> Self {
        let (facts_text, served) = match detail.rfind("; serves ") {
            Some(at) => (&detail[..at], Some(&detail[at + "; serves ".len()..])),
            None => (detail, None),
        };
        let mut extra = TargetExtra::default();
        if let Some(expires) = served
            .and_then(|s| s.split_once("(expires "))
            .and_then(|(_, rest)| rest.split_once(", in "))
        {
            extra.served_not_after = Some(expires.0.to_string());
            extra.served_days_left = expires.1.split(' ').next().and_then(|d| d.parse().ok());
        }
        if !facts_text.starts_with("facts unavailable") {
            let mut parts = facts_text.split("; ");
            let uname = parts.next().unwrap_or("").trim();
            let (os, arch) = match uname.rsplit_once(' ') {
                Some((os, arch)) => (Some(os.to_string()), Some(arch.to_string())),
                None => (None, None),
            };
            let rest: Vec<&str> = parts.collect();
            extra.facts = Some(Facts {
                os,
                arch,
                hostname: rest
                    .first()
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| s.to_string()),
                server_version: (rest.len() > 1)
                    .then(|| rest[1..].join("; "))
                    .filter(|v| !v.trim().is_empty()),
            });
        }
        extra
    }
}

/// The JSON shape of a target: its report and its extra fields in one object.
#[derive(Serialize)]
struct TargetJson<'a> {
    #[serde(flatten)]
    report: &'a TargetReport,
    #[serde(flatten)]
    extra: &'a TargetExtra,
}

#[derive(Serialize)]
struct RunJson<'a> {
    version: u32,
    command: &'a str,
    dry_run: bool,
    started_at: &'a str,
    duration_ms: u64,
    summary: &'a Summary,
    targets: Vec<TargetJson<'a>>,
    problems: &'a [Problem],
}

impl Serialize for RunReport {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        static NONE: TargetExtra = TargetExtra {
            served_not_after: None,
            served_days_left: None,
            facts: None,
        };
        RunJson {
            version: self.version,
            command: &self.command,
            dry_run: self.dry_run,
            started_at: &self.started_at,
            duration_ms: self.duration_ms,
            summary: &self.summary,
            targets: self
                .targets
                .iter()
                .enumerate()
                .map(|(i, report)| TargetJson {
                    report,
                    extra: self.extras.get(i).unwrap_or(&NONE),
                })
                .collect(),
            problems: &self.problems,
        }
        .serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_detail_becomes_fields() {
        let fp = ["AB"; 32].join(":");
        let detail = format!(
            "Linux 6.1.0-28-amd64 x86_64; web-1; nginx version: nginx/1.22.1; serves {fp} \
             (expires 2027-02-25T00:00:00Z, in 80 day(s))"
        );
        let extra = TargetExtra::from_status_detail(&detail);
        assert_eq!(
            extra.served_not_after.as_deref(),
            Some("2027-02-25T00:00:00Z")
        );
        assert_eq!(extra.served_days_left, Some(80));
        let facts = extra.facts.unwrap();
        assert_eq!(facts.os.as_deref(), Some("Linux 6.1.0-28-amd64"));
        assert_eq!(facts.arch.as_deref(), Some("x86_64"));
        assert_eq!(facts.hostname.as_deref(), Some("web-1"));
        assert_eq!(
            facts.server_version.as_deref(),
            Some("nginx version: nginx/1.22.1")
        );

        let none = TargetExtra::from_status_detail(
            "facts unavailable: connection lost; serves no certificate",
        );
        assert_eq!(none, TargetExtra::default());
        let expired = TargetExtra::from_status_detail(&format!(
            "Linux 6 x86_64; h; serves {fp} (expires 2020-01-01T00:00:00Z, in -3 day(s))"
        ));
        assert_eq!(expired.served_days_left, Some(-3));
        assert_eq!(expired.facts.unwrap().server_version, None);
    }

    #[test]
    fn extras_and_problems_are_in_the_json_and_the_schema() {
        use crate::report::tests::sample_target;
        use crate::report::{Status, validate_report};
        let mut run = RunReport::new(
            "status",
            false,
            std::time::SystemTime::UNIX_EPOCH,
            std::time::Duration::ZERO,
            vec![
                sample_target("web-1", Status::Ok),
                sample_target("web-2", Status::Mismatch),
            ],
        );
        let mut first = TargetExtra::served_expiry(86_400 * 30, 0);
        first.facts = Some(Facts {
            os: Some("Linux 6.1.0".into()),
            arch: Some("x86_64".into()),
            hostname: Some("web-1".into()),
            server_version: None,
        });
        run.extras = vec![first];
        run.problems = vec![Problem::run("a problem")];
        let value = serde_json::to_value(&run).unwrap();
        validate_report(&value).unwrap();
        assert_eq!(value["targets"][0]["served_days_left"], 30);
        assert_eq!(value["targets"][0]["facts"]["arch"], "x86_64");
        assert!(
            value["targets"][1]["facts"].is_null(),
            "missing extras are null"
        );
        assert_eq!(value["problems"][0]["message"], "a problem");
        let mut bad = value.clone();
        bad["targets"][0]["facts"]["kernel"] = "x".into();
        assert!(validate_report(&bad).is_err(), "facts are closed");
    }

    #[test]
    fn served_expiry_counts_whole_days() {
        let e = TargetExtra::served_expiry(86_400 * 10 + 5, 0);
        assert_eq!(e.served_days_left, Some(10));
        assert_eq!(e.served_not_after.as_deref(), Some("1970-01-11T00:00:05Z"));
        assert_eq!(TargetExtra::served_expiry(0, 1).served_days_left, Some(-1));
    }
}
