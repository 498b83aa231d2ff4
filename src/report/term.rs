//! How this process talks to the operator's terminal: colour (`--color`, `NO_COLOR`,
//! `CLICOLOR_FORCE`, `CLICOLOR`), `--quiet`, and whether stderr can hold a live view
//! (a terminal that is not `TERM=dumb`).
//!
//! Decided once, from the flags and the environment, by [`configure`]; every printer asks
//! [`settings`]. Nothing here prints.

use std::ffi::OsStr;
use std::io::IsTerminal as _;
use std::sync::OnceLock;

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ColorChoice {
    /// Colour on a terminal unless `NO_COLOR` (or `CLICOLOR=0`) says otherwise;
    /// `CLICOLOR_FORCE` colours a pipe too.
    #[default]
    Auto,
    Always,
    Never,
}

/// What the printers may do on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TermSettings {
    /// Escape codes for colour are allowed (status words, tracing's level names).
    pub colour: bool,
    /// Redrawing progress bars is allowed: stderr is a terminal and `TERM` is not `dumb`.
    pub live: bool,
    /// `--quiet`: errors and the summary only.
    pub quiet: bool,
    /// `-v` count: full fingerprints and the whole of every message on progress lines.
    pub verbose: u8,
}

static SETTINGS: OnceLock<TermSettings> = OnceLock::new();

/// Decides the settings for this process from the flags and the environment. The first call
/// wins (the binary calls it once, before anything prints).
pub fn configure(choice: ColorChoice, quiet: bool, verbose: u8) -> TermSettings {
    let env = |name: &str| std::env::var_os(name);
    let stderr_is_terminal = std::io::stderr().is_terminal();
    let term = env("TERM");
    let decided = TermSettings {
        colour: colour_wanted(
            choice,
            &Env {
                no_color: env("NO_COLOR").as_deref(),
                clicolor_force: env("CLICOLOR_FORCE").as_deref(),
                clicolor: env("CLICOLOR").as_deref(),
                term: term.as_deref(),
            },
            stderr_is_terminal,
        ),
        live: stderr_is_terminal && !is_dumb(term.as_deref()),
        quiet,
        verbose,
    };
    *SETTINGS.get_or_init(|| decided)
}

/// The settings [`configure`] decided; before it (library use, unit tests): plain, not quiet,
/// live only on a real, non-dumb terminal.
pub fn settings() -> TermSettings {
    *SETTINGS.get_or_init(|| TermSettings {
        colour: false,
        live: std::io::stderr().is_terminal() && !is_dumb(std::env::var_os("TERM").as_deref()),
        quiet: false,
        verbose: 0,
    })
}

fn is_dumb(term: Option<&OsStr>) -> bool {
    term.is_some_and(|t| t == "dumb")
}

/// The colour-related environment, read once.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Env<'a> {
    pub no_color: Option<&'a OsStr>,
    pub clicolor_force: Option<&'a OsStr>,
    pub clicolor: Option<&'a OsStr>,
    pub term: Option<&'a OsStr>,
}

/// The flag wins; then `NO_COLOR` (non-empty: never, <https://no-color.org>), then
/// `CLICOLOR_FORCE` (non-empty and not `0`: always, even into a pipe), then `CLICOLOR=0`
/// (never); else colour exactly when stderr is a terminal that is not `dumb`. The same order
/// as cargo's and ripgrep's (anstream).
pub(crate) fn colour_wanted(choice: ColorChoice, env: &Env<'_>, terminal: bool) -> bool {
    let set = |v: Option<&OsStr>| v.is_some_and(|v| !v.is_empty());
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            if set(env.no_color) {
                false
            } else if set(env.clicolor_force) && env.clicolor_force != Some(OsStr::new("0")) {
                true
            } else if env.clicolor == Some(OsStr::new("0")) {
                false
            } else {
                terminal && !is_dumb(env.term)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> Option<&OsStr> {
        Some(OsStr::new(s))
    }

    #[test]
    fn the_flag_wins_over_the_environment() {
        let env = Env {
            no_color: os("1"),
            ..Env::default()
        };
        assert!(colour_wanted(ColorChoice::Always, &env, false));
        let env = Env {
            clicolor_force: os("1"),
            ..Env::default()
        };
        assert!(!colour_wanted(ColorChoice::Never, &env, true));
    }

    #[test]
    fn auto_colours_a_terminal_only() {
        let xterm = Env {
            term: os("xterm-256color"),
            ..Env::default()
        };
        assert!(colour_wanted(ColorChoice::Auto, &xterm, true));
        assert!(!colour_wanted(ColorChoice::Auto, &xterm, false), "a pipe");
        let dumb = Env {
            term: os("dumb"),
            ..Env::default()
        };
        assert!(!colour_wanted(ColorChoice::Auto, &dumb, true));
    }

    #[test]
    fn no_color_beats_clicolor_force_which_beats_a_pipe() {
        let force = Env {
            clicolor_force: os("1"),
            ..Env::default()
        };
        assert!(colour_wanted(ColorChoice::Auto, &force, false));
        let zero = Env {
            clicolor_force: os("0"),
            ..Env::default()
        };
        assert!(!colour_wanted(ColorChoice::Auto, &zero, false));
        let both = Env {
            no_color: os("1"),
            clicolor_force: os("1"),
            ..Env::default()
        };
        assert!(!colour_wanted(ColorChoice::Auto, &both, true));
        // An empty NO_COLOR does not count (no-color.org).
        let empty = Env {
            no_color: os(""),
            ..Env::default()
        };
        assert!(colour_wanted(ColorChoice::Auto, &empty, true));
        let clicolor_off = Env {
            clicolor: os("0"),
            ..Env::default()
        };
        assert!(!colour_wanted(ColorChoice::Auto, &clicolor_off, true));
    }
}
