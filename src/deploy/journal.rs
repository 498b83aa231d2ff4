//! The per-target journal: what a run is changing on a target, recorded there before the first
//! live change so that the next run can repair it whatever happened to this one (a controller
//! killed, a connection dropped, a machine rebooted).
//!
//! It lives at `{backup_dir}/journal` while the change is under way (one per lock, so one per
//! target). The first line is the intent, JSON ([`Intent`]); each later line is a phase a
//! remote script reached (`swapped`, `tested`, `reloaded`, `restoring`, `restored`), appended
//! and fsync'd; cleanup appends `closed OUTCOME` and moves it into its backup set, where it is
//! also that set's record of what it holds (what `certctl rollback` restores). Pure: building
//! and reading the text; the scripts that write it are in `scripts/journal.sh`.

use serde::{Deserialize, Serialize};

use crate::material::{Expected, Fingerprint};

/// The journal format's version (the `certctl_journal` field).
const VERSION: u32 = 1;

/// What kind of change the journal records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Op {
    /// `certctl deploy`: the new files replace the live ones; the set holds the old ones.
    Deploy,
    /// `certctl rollback`: the set's copies replace the live files.
    Rollback,
}

/// How the change is made (the connector's `swap`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Kind {
    Files,
    Commands,
}

/// One live path of a `files` change and how to put it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Entry {
    /// The connector role (`fullchain`, `key`, …).
    pub role: String,
    /// The live path the server is configured with.
    pub path: String,
    /// The file written: `path`, or the file a followed symlink resolves to.
    pub write: String,
    /// `path` was a symlink with this text (kept when followed, put back when replaced).
    pub link: Option<String>,
    /// The copy in the set (a name inside it) of what `write` held; `None`: it did not exist.
    pub copy: Option<String>,
    /// SHA-256 of the copy, lower-case hex.
    pub copy_sha256: Option<String>,
    /// SHA-256 of what the change writes there.
    pub new_sha256: String,
    /// `write` is written into its own inode, not renamed over (a bind-mounted file): so is
    /// the copy put back. Absent (false) in journals written before it existed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_place: bool,
}

/// The journal's first line: everything a later run needs to undo the change by itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Intent {
    pub certctl_journal: u32,
    pub run: String,
    pub target: String,
    pub op: Op,
    pub swap: Kind,
    /// The backup set (a directory).
    pub set: String,
    /// What was served before the change (leaf, then chain), to probe for after undoing it:
    /// the first certificate's.
    pub old: Option<Vec<String>>,
    /// A target with several certificates: what each one's endpoint served before, in order
    /// (the first is `old` again). Absent for one certificate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub old_by_certificate: Vec<Option<Vec<String>>>,
    pub files: Vec<Entry>,
}

impl Intent {
    pub fn new(run: &str, target: &str, op: Op, swap: Kind, set: &str) -> Intent {
        Intent {
            certctl_journal: VERSION,
            run: run.to_string(),
            target: target.to_string(),
            op,
            swap,
            set: set.to_string(),
            old: None,
            old_by_certificate: Vec::new(),
            files: Vec::new(),
        }
    }

    /// What each certificate's endpoint served before the change.
    pub fn with_old(mut self, old: &[Option<Expected>]) -> Intent {
        let prints = |e: &Expected| {
            std::iter::once(&e.leaf)
                .chain(&e.chain)
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        let all: Vec<Option<Vec<String>>> = old.iter().map(|o| o.as_ref().map(prints)).collect();
        self.old = all.first().cloned().flatten();
        if all.len() > 1 {
            self.old_by_certificate = all;
        }
        self
    }

    /// The intent as the journal's first line (JSON, no newline in it).
    pub fn line(&self) -> String {
        serde_json::to_string(self).expect("a journal intent serialises")
    }

    /// What each of `certs` certificates' endpoints served before the change, where it was
    /// recorded.
    pub fn old_served(&self, certs: usize) -> Vec<Option<Expected>> {
        let parse = |old: &Option<Vec<String>>| {
            let mut prints = old.as_ref()?.iter().map(|s| Fingerprint::parse(s));
            let leaf = prints.next()??;
            let chain = prints.collect::<Option<Vec<_>>>()?;
            Some(Expected { leaf, chain })
        };
        (0..certs)
            .map(|i| match (i, self.old_by_certificate.get(i)) {
                (_, Some(old)) => parse(old),
                (0, None) => parse(&self.old),
                _ => None,
            })
            .collect()
    }
}

/// A journal as read back from the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Journal {
    pub intent: Intent,
    /// Phases reached, in order.
    pub phases: Vec<String>,
    /// `closed OUTCOME`: the run finished with it.
    pub closed: Option<String>,
}

impl Journal {
    /// Reads a journal's text. A torn last line (the machine stopped while it was appended)
    /// is ignored; an unreadable intent is an error that names what was found.
    pub fn parse(text: &str) -> Result<Journal, String> {
        let mut lines = text.lines();
        let first = lines.next().unwrap_or_default();
        let intent: Intent = serde_json::from_str(first).map_err(|e| {
            format!(
                "its first line is not a certctl journal ({e}): {:?}",
                crate::report::sanitize_line(&first.chars().take(120).collect::<String>())
            )
        })?;
        if intent.certctl_journal != VERSION {
            return Err(format!(
                "it is journal format {}, which this certctl does not read (it reads {VERSION})",
                intent.certctl_journal
            ));
        }
        let mut phases = Vec::new();
        let mut closed = None;
        for line in lines {
            let line = line.trim();
            if let Some(outcome) = line.strip_prefix("closed ") {
                closed = Some(outcome.to_string());
            } else if PHASES.contains(&line) {
                phases.push(line.to_string());
            }
        }
        Ok(Journal {
            intent,
            phases,
            closed,
        })
    }

    /// The last phase reached, or `intent` when none was.
    pub fn phase(&self) -> &str {
        self.phases.last().map(String::as_str).unwrap_or("intent")
    }

    /// `run R (deploy, interrupted after swapped)`.
    pub fn describe(&self) -> String {
        let op = match self.intent.op {
            Op::Deploy => "deploy",
            Op::Rollback => "rollback",
        };
        format!(
            "run {} ({op} of target `{}`, interrupted after {})",
            crate::report::sanitize_line(&self.intent.run),
            crate::report::sanitize_line(&self.intent.target),
            self.phase()
        )
    }
}

/// The phase lines remote scripts append, in the order a change reaches them.
pub(super) const PHASES: [&str; 5] = ["swapped", "tested", "reloaded", "restoring", "restored"];

#[cfg(test)]
mod tests {
    use super::*;

    fn intent() -> Intent {
        let mut i = Intent::new(
            "1700000000-ab",
            "web-1",
            Op::Deploy,
            Kind::Files,
            "/b/1700000000-ab",
        );
        i.files.push(Entry {
            role: "fullchain".into(),
            path: "/etc/ssl/live/a.pem".into(),
            write: "/etc/ssl/archive/a1.pem".into(),
            link: Some("../archive/a1.pem".into()),
            copy: Some("0.fullchain".into()),
            copy_sha256: Some("aa".repeat(32)),
            new_sha256: "bb".repeat(32),
            in_place: false,
        });
        i
    }

    #[test]
    fn a_journal_reads_back_with_its_phases_and_a_torn_last_line_is_ignored() {
        let text = format!("{}\nswapped\ntested\nrelo", intent().line());
        let j = Journal::parse(&text).unwrap();
        assert_eq!(j.intent, intent());
        assert_eq!(j.phases, ["swapped", "tested"]);
        assert_eq!(j.phase(), "tested");
        assert_eq!(j.closed, None);
        assert!(
            j.describe().contains("interrupted after tested"),
            "{}",
            j.describe()
        );
        let closed = Journal::parse(&format!("{}\nclosed deployed\n", intent().line())).unwrap();
        assert_eq!(closed.closed.as_deref(), Some("deployed"));
        assert_eq!(closed.phase(), "intent");
    }

    #[test]
    fn what_is_not_a_journal_is_named() {
        let e = Journal::parse("garbage\x1b[31m\n").unwrap_err();
        assert!(e.contains("not a certctl journal"), "{e}");
        assert!(!e.contains('\u{1b}'), "sanitised: {e:?}");
        let newer = intent()
            .line()
            .replace("\"certctl_journal\":1", "\"certctl_journal\":9");
        assert!(Journal::parse(&newer).unwrap_err().contains("format 9"));
    }

    #[test]
    fn the_old_certificate_round_trips() {
        let leaf = Fingerprint([1; 32]);
        let chain = vec![Fingerprint([2; 32])];
        let e = Expected { leaf, chain };
        let i = intent().with_old(&[Some(e.clone())]);
        let back = Journal::parse(&i.line()).unwrap();
        assert_eq!(back.intent.old_served(1), vec![Some(e.clone())]);
        // Several certificates: each its own, in order; one whose endpoint served nothing.
        let other = Expected {
            leaf: Fingerprint([3; 32]),
            chain: Vec::new(),
        };
        let i = intent().with_old(&[Some(e.clone()), None, Some(other.clone())]);
        let back = Journal::parse(&i.line()).unwrap();
        assert_eq!(
            back.intent.old_served(3),
            vec![Some(e.clone()), None, Some(other)]
        );
        // A journal written before `old_by_certificate` existed reads as the first's.
        let mut line: serde_json::Value = serde_json::from_str(&i.line()).unwrap();
        line.as_object_mut().unwrap().remove("old_by_certificate");
        let back = Journal::parse(&line.to_string()).unwrap();
        assert_eq!(back.intent.old_served(2), vec![Some(e), None]);
    }
}
