//! A connector's `binding:` section — how certctl asks the server's own view of its
//! configuration whether it loads the live paths being replaced (docs/connectors.md#the-binding-check):
//! the schema and the checks of a definition. What each reader understands is in
//! [`crate::binding`]; the remote half runs with inspect (`src/deploy/binding.rs`).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{Command, ConnectorDef, placeholders};

/// How certctl reads what the server says about its configuration: a closed set, one per
/// configuration language certctl can parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reader {
    /// `run`: `nginx -T` (every file nginx loads, marked `# configuration file PATH:`).
    Nginx,
    /// `run`: `apachectl -t -D DUMP_INCLUDES -D DUMP_RUN_CFG`; the listed files are read.
    Apache,
    /// `files`: haproxy's configuration (a directory: its `*.cfg` files); the `crt-list`
    /// files its `bind` lines name are read too.
    Haproxy,
    /// `run`: `postconf -x NAMES…` (main.cf), then optionally `postconf -P -x` (master.cf);
    /// `files`: main.cf, for line numbers.
    Postfix,
    /// `run`: one command printing `doveconf -n` with the `ssl_cert`/`ssl_key` values that are
    /// paths (`<FILE`), filters (`local … {`) kept.
    Dovecot,
    /// `run`: `caddy adapt` (the JSON caddy runs); `files`: the Caddyfile, for line numbers.
    Caddy,
    /// Nothing to ask: a file certctl writes itself (`rendered`, e.g. traefik's dynamic file)
    /// names the live paths.
    Written,
}

impl Reader {
    pub fn as_str(self) -> &'static str {
        match self {
            Reader::Nginx => "nginx",
            Reader::Apache => "apache",
            Reader::Haproxy => "haproxy",
            Reader::Postfix => "postfix",
            Reader::Dovecot => "dovecot",
            Reader::Caddy => "caddy",
            Reader::Written => "written",
        }
    }

    /// How many `run` commands the reader reads (at least, at most), and whether it needs
    /// `files` (`Some(true)`), takes none (`Some(false)`) or may have them (`None`).
    fn shape(self) -> (usize, usize, Option<bool>) {
        match self {
            Reader::Nginx | Reader::Apache | Reader::Dovecot => (1, 1, Some(false)),
            Reader::Postfix => (1, 2, None),
            Reader::Caddy => (1, 1, None),
            Reader::Haproxy => (0, 0, Some(true)),
            Reader::Written => (0, 0, Some(false)),
        }
    }
}

/// `binding:` in a connector definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingDef {
    pub reader: Reader,
    /// A param of this connector (`binding_check` in the built-ins): the check runs when its
    /// value is `true` and is off when it is `false`; anything else is a plan error.
    #[serde(default)]
    pub when: Option<String>,
    /// Commands whose standard output is the server's own view of its configuration. They
    /// run with inspect, before anything is staged: no `{staged.*}`, `{template.*}`,
    /// `{input.*}` or `{tmpdir}`.
    #[serde(default)]
    pub run: Vec<Command>,
    /// Configuration files certctl reads itself (a directory: its `*.cfg` files, in order).
    #[serde(default)]
    pub files: Vec<String>,
}

/// Checks a definition's `binding:`: the reader's commands and files, placeholders that exist
/// when inspect runs, and `when:` naming a param.
pub(super) fn validate_binding(def: &ConnectorDef, known: &BTreeSet<String>) -> Result<(), String> {
    let Some(b) = &def.binding else {
        return Ok(());
    };
    let reader = b.reader.as_str();
    let (min, max, files) = b.reader.shape();
    if b.run.len() < min || b.run.len() > max {
        let want = match (min, max) {
            (0, 0) => "no `run` commands".to_string(),
            (a, b) if a == b => format!("{a} `run` command(s)"),
            (a, b) => format!("{a} to {b} `run` commands"),
        };
        return Err(format!("binding: reader `{reader}` takes {want}"));
    }
    if let Some(needs) = files
        && needs == b.files.is_empty()
    {
        let what = if needs { "needs" } else { "takes no" };
        return Err(format!("binding: reader `{reader}` {what} `files`"));
    }
    if let Some(param) = &b.when
        && !def.params.contains_key(param)
    {
        return Err(format!(
            "binding: `when: {param}` names no param of this connector"
        ));
    }
    let texts = b
        .run
        .iter()
        .enumerate()
        .flat_map(|(i, c)| c.iter().map(move |a| (format!("binding.run[{i}]"), a)))
        .chain(b.files.iter().map(|f| ("binding.files".to_string(), f)));
    for (what, text) in texts {
        if text.is_empty() {
            return Err(format!("{what}: an empty argument or path"));
        }
        for p in placeholders(text).map_err(|e| format!("{what}: {e}"))? {
            let later = ["staged.", "template.", "input.", "words."]
                .iter()
                .any(|x| p.starts_with(x))
                || p == "tmpdir";
            if later {
                return Err(format!(
                    "{what}: `{{{p}}}` does not exist yet when the binding is checked (with \
                     inspect, before anything is staged)"
                ));
            }
            if !known.contains(&p) {
                return Err(format!("{what}: unknown placeholder `{{{p}}}`"));
            }
        }
    }
    Ok(())
}
