//! The commands of a target's plan, rendered: each section from the connector or the
//! target's `commands:` override, `{words.PARAM}` expanded into arguments, PowerShell
//! statements quoted into one script; and the `swap: commands` sections, rendered but for the
//! values only the engine knows at run time.

use std::collections::BTreeMap;

use super::{CommandSwap, PlannedPrune, PlannedRestore};
use crate::connector::{self, Command, ConnectorDef};
use crate::inventory::Target;

/// Renders command sections for one target.
pub(super) struct Renderer<'a> {
    pub(super) target: &'a Target,
    pub(super) params: &'a BTreeMap<String, String>,
    pub(super) values: &'a BTreeMap<String, String>,
    pub(super) powershell: bool,
}

impl Renderer<'_> {
    /// The target's `commands.NAME` override if it has one, else the connector's section.
    pub(super) fn section(&self, name: &str, from_def: &[Command]) -> Result<Vec<Command>, String> {
        match self.target.commands.get(name) {
            Some(over) => self.render_all(&format!("commands.{name}"), over),
            None => self.render_all(name, from_def),
        }
    }

    /// Every command of a section. An argument that is exactly `{words.PARAM}` becomes the
    /// param's whitespace-separated words (zero or more arguments); a command where that is
    /// none is left out.
    pub(super) fn render_all(
        &self,
        section: &str,
        cmds: &[Command],
    ) -> Result<Vec<Command>, String> {
        let mut out = Vec::new();
        for (i, cmd) in cmds.iter().enumerate() {
            if cmd.is_empty() {
                return Err(format!("{section}[{i}] is an empty command"));
            }
            let what = format!("{section}[{i}]");
            if self.powershell {
                // One script: each element is a statement, every value quoted in it.
                let mut script = crate::ssh::quote::PowerShell::new();
                for statement in cmd {
                    script
                        .statement(statement, self.values)
                        .map_err(|e| format!("{what}: {e}"))?;
                }
                out.push(script.argv());
            } else if let Some(argv) = self.render_argv(&what, cmd)? {
                out.push(argv);
            }
        }
        Ok(out)
    }

    /// One POSIX command; `None` when a `{words.PARAM}` argument had no words.
    fn render_argv(&self, what: &str, cmd: &Command) -> Result<Option<Command>, String> {
        let mut argv = Vec::new();
        let mut empty_words = false;
        for arg in cmd {
            let words = arg
                .strip_prefix("{words.")
                .and_then(|r| r.strip_suffix('}'))
                .and_then(|p| self.params.get(p));
            match words {
                Some(value) => {
                    let before = argv.len();
                    argv.extend(value.split_whitespace().map(str::to_string));
                    empty_words |= argv.len() == before;
                }
                None => argv
                    .push(connector::render(arg, self.values).map_err(|e| format!("{what}: {e}"))?),
            }
        }
        Ok((!empty_words).then_some(argv))
    }
}

/// Renders the `swap: commands` sections, leaving the run-time placeholders for the engine.
pub(super) fn command_swap(
    def: &ConnectorDef,
    values: &BTreeMap<String, String>,
    params: &BTreeMap<String, String>,
    powershell: bool,
) -> Result<CommandSwap, String> {
    let swap = Deferred::new(def, values, powershell);
    let snapshot = def
        .snapshot
        .iter()
        .enumerate()
        .map(|(i, s)| {
            Ok((
                s.save.clone(),
                swap.render(&format!("snapshot[{i}]"), &s.run)?,
            ))
        })
        .collect::<Result<_, String>>()?;
    let apply = swap.guarded("apply", &def.apply)?;
    let restore = swap.guarded("restore", &def.restore)?;
    let prune = swap.listings("prune", &def.prune)?;
    let discard = swap.listings("discard", &def.discard)?;
    let mut after_deploy = Vec::new();
    for (i, a) in def.after_deploy.iter().enumerate() {
        let (cmd, when) = a.parts();
        let wanted = match when.map(|p| (p, params.get(p).map(String::as_str))) {
            None => true,
            Some((_, Some("true"))) => true,
            Some((_, Some("false") | None)) => false,
            Some((p, Some(other))) => {
                return Err(format!(
                    "param `{p}`: `{other}` is neither `true` nor `false`"
                ));
            }
        };
        if wanted {
            after_deploy.push(swap.render(&format!("after_deploy[{i}]"), cmd)?);
        }
    }
    Ok(CommandSwap {
        powershell,
        snapshot,
        apply,
        restore,
        prune,
        discard,
        after_deploy,
    })
}

/// Renders `swap: commands` sections with every value but the run-time ones (`{backup}`,
/// `{object}`, `{snapshot.NAME}`), which stay placeholders; other values are brace-escaped,
/// so the engine's second rendering leaves them as they are.
struct Deferred<'a> {
    values: &'a BTreeMap<String, String>,
    /// The values escaped, the run-time names mapped to themselves.
    deferred: BTreeMap<String, String>,
    late: Vec<String>,
    powershell: bool,
}

impl<'a> Deferred<'a> {
    fn new(def: &ConnectorDef, values: &'a BTreeMap<String, String>, powershell: bool) -> Self {
        let mut late: Vec<String> = vec!["backup".into(), "object".into()];
        late.extend(def.snapshot.iter().map(|s| format!("snapshot.{}", s.save)));
        let escape = |v: &str| v.replace('{', "{{").replace('}', "}}");
        let mut deferred: BTreeMap<String, String> =
            values.iter().map(|(k, v)| (k.clone(), escape(v))).collect();
        for key in &late {
            deferred.insert(key.clone(), format!("{{{key}}}"));
        }
        Deferred {
            values,
            deferred,
            late,
            powershell,
        }
    }

    fn render(&self, what: &str, cmd: &Command) -> Result<Command, String> {
        if cmd.is_empty() {
            return Err(format!("{what} is an empty command"));
        }
        if self.powershell {
            // Statements: quoted now, except the run-time values (quoted by the engine).
            let late: Vec<&str> = self.late.iter().map(String::as_str).collect();
            return cmd
                .iter()
                .map(|a| {
                    crate::ssh::quote::render_powershell(a, self.values, &late)
                        .map_err(|e| format!("{what}: {e}"))
                })
                .collect();
        }
        // Literal braces stay escaped for the engine's second rendering.
        cmd.iter()
            .map(|a| {
                let a = a.replace("{{", "{{{{").replace("}}", "}}}}");
                connector::render(&a, &self.deferred).map_err(|e| format!("{what}: {e}"))
            })
            .collect()
    }

    /// `apply` or `restore`: each command with its guard and the guard's word.
    fn guarded(
        &self,
        section: &str,
        defs: &[connector::RestoreDef],
    ) -> Result<Vec<PlannedRestore>, String> {
        defs.iter()
            .enumerate()
            .map(|(i, r)| {
                let (cmd, guard) = r.parts();
                let word = match r {
                    connector::RestoreDef::Guarded(g) => g
                        .word
                        .as_ref()
                        .map(|w| connector::render(w, self.values))
                        .transpose()
                        .map_err(|e| format!("{section}[{i}].word: {e}"))?,
                    connector::RestoreDef::Always(_) => None,
                };
                Ok(PlannedRestore {
                    guard: guard.map(|(n, saved)| (n.to_string(), saved)),
                    word,
                    argv: self.render(&format!("{section}[{i}]"), cmd)?,
                })
            })
            .collect()
    }

    /// `prune` or `discard`: each listing, its prefix and its delete command.
    fn listings(
        &self,
        section: &str,
        defs: &[connector::PruneDef],
    ) -> Result<Vec<PlannedPrune>, String> {
        defs.iter()
            .enumerate()
            .map(|(i, p)| {
                Ok(PlannedPrune {
                    list: self.render(&format!("{section}[{i}].list"), &p.list)?,
                    prefix: connector::render(&p.prefix, self.values)
                        .map_err(|e| format!("{section}[{i}].prefix: {e}"))?,
                    delete: self.render(&format!("{section}[{i}].delete"), &p.delete)?,
                })
            })
            .collect()
    }
}
