//! What the binary generates about itself for packages and shells: completion scripts
//! (`certctl completions SHELL`, clap_complete) and man pages (`certctl man`, clap_mangen),
//! both from the same clap definition as `--help`, so they cannot drift from it.
//!
//! Does not define any command-line option of its own beyond [`ManArgs`]; the command tree is
//! [`crate::cli::Cli`]. Output goes through [`crate::report`] (a closed pipe is success).

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory};
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, italic, roman};

use crate::report;

/// `certctl man`'s options.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write every page (certctl.1 and one certctl-COMMAND.1 per command) into this
    /// directory instead of printing certctl(1) on stdout.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// `certctl completions SHELL`: the completion script on stdout.
pub fn completions(shell: clap_complete::Shell) -> u8 {
    let mut cmd = crate::cli::Cli::command();
    // Rendered into memory first: clap_complete panics when its writer fails (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "certctl", &mut script);
    write_stdout(&script)
}

/// `certctl man [--out-dir DIR]`.
pub fn man(args: &ManArgs) -> u8 {
    let result = match &args.out_dir {
        None => {
            let mut page = Vec::new();
            match render_page(&root(), true, &mut page) {
                Ok(()) => return write_stdout(&page),
                Err(e) => Err(anyhow::Error::from(e)),
            }
        }
        Some(dir) => write_pages(dir),
    };
    match result {
        Ok(()) => report::EXIT_OK,
        Err(e) => {
            report::print_stderr(&format!("error: writing the man pages: {e:#}\n"));
            report::EXIT_FAILED
        }
    }
}

/// certctl.1 and certctl-COMMAND[-SUBCOMMAND].1 for every visible command, into `dir`
/// (created): the pages the top page's SUBCOMMANDS section refers to.
fn write_pages(dir: &Path) -> anyhow::Result<()> {
    use anyhow::Context;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let root = root();
    let mut pending = vec![(root, true)];
    while let Some((cmd, top)) = pending.pop() {
        let path = dir.join(format!("{}.1", page_name(&cmd)));
        let mut page = Vec::new();
        render_page(&cmd, top, &mut page)?;
        std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
        report::print_stderr(&format!("wrote {}\n", path.display()));
        pending.extend(
            cmd.get_subcommands()
                .filter(|c| !c.is_hide_set())
                .map(|c| (c.clone(), false)),
        );
    }
    Ok(())
}

/// The command tree the pages describe: without clap's `help` subcommand, which has no page.
fn root() -> clap::Command {
    let mut root = crate::cli::Cli::command().disable_help_subcommand(true);
    root.build();
    root
}

fn page_name(cmd: &clap::Command) -> String {
    cmd.get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_string()
}

/// One page: clap_mangen's sections, with the exit-code table of `after_help` rendered as a
/// proper EXIT STATUS list (clap_mangen would run its lines together as one paragraph), and
/// for the top page ENVIRONMENT and FILES.
fn render_page(cmd: &clap::Command, top: bool, w: &mut dyn Write) -> std::io::Result<()> {
    let mut cmd = cmd.clone();
    cmd.build();
    let exit_codes = cmd
        .get_after_long_help()
        .or_else(|| cmd.get_after_help())
        .map(ToString::to_string);
    let man = Man::new(cmd.clone())
        .title(page_name(&cmd))
        .date(crate::version::BUILD_DATE)
        .source(format!("certctl {}", crate::version::VERSION))
        .manual("certctl manual");
    let mut page = Page::default();
    man.render_title(&mut page.next())?;
    man.render_name_section(&mut page.next())?;
    man.render_synopsis_section(&mut page.next())?;
    man.render_description_section(&mut page.next())?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut page.next())?;
    }
    if cmd.has_subcommands() {
        man.render_subcommands_section(&mut page.next())?;
    }
    if let Some(text) = exit_codes {
        exit_status_section(&text).to_writer(&mut page.next())?;
    }
    if top {
        environment_and_files().to_writer(&mut page.next())?;
    }
    version_section().to_writer(&mut page.next())?;
    w.write_all(&page.finish())
}

/// A page assembled from separately rendered sections. roff starts every rendering with the
/// same preamble (the apostrophe string); the page keeps only the first.
#[derive(Default)]
struct Page {
    sections: Vec<Vec<u8>>,
}

impl Page {
    fn next(&mut self) -> &mut Vec<u8> {
        self.sections.push(Vec::new());
        self.sections.last_mut().expect("just pushed")
    }

    fn finish(self) -> Vec<u8> {
        let preamble = Roff::new().render().into_bytes();
        let mut out = Vec::new();
        for (i, section) in self.sections.into_iter().enumerate() {
            let body = match section.strip_prefix(preamble.as_slice()) {
                Some(body) if i > 0 => body,
                _ => &section[..],
            };
            out.extend_from_slice(body);
        }
        out
    }
}

/// `after_help`'s `  CODE  meaning` lines as an EXIT STATUS list; other lines as text.
fn exit_status_section(text: &str) -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["EXIT STATUS"]);
    for line in text.lines() {
        let trimmed = line.trim();
        let (code, meaning) = trimmed
            .split_once(char::is_whitespace)
            .unwrap_or((trimmed, ""));
        if !code.is_empty() && code.bytes().all(|b| b.is_ascii_digit()) {
            roff.control("TP", []);
            roff.text([bold(code)]);
            roff.text([roman(meaning.trim())]);
        } else if !trimmed.is_empty() && trimmed != "Exit codes:" {
            roff.control("PP", []);
            roff.text([roman(trimmed)]);
        }
    }
    roff
}

/// One sentence instead of clap_mangen's, which runs the lines of `--version` together.
fn version_section() -> Roff {
    use crate::version::{BUILD_DATE, COMMIT, VERSION};
    let mut roff = Roff::new();
    roff.control("SH", ["VERSION"]);
    roff.text([roman(format!(
        "certctl {VERSION}, commit {COMMIT}, built {BUILD_DATE}; inventory contract v{}, \
         JSON report schema {}.",
        crate::inventory::CONTRACT_VERSION,
        report::SCHEMA_VERSION
    ))]);
    roff
}

fn environment_and_files() -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["ENVIRONMENT"]);
    for (name, what) in [
        (
            "CERTCTL_INVENTORY",
            "The inventory file when -i is not given (default ./certctl.yaml).",
        ),
        (
            "CERTCTL_SSH_PASSPHRASE",
            "Passphrase of an encrypted SSH identity file (else a prompt on the terminal).",
        ),
        ("SSH_AUTH_SOCK", "The ssh-agent to authenticate with."),
        ("NO_COLOR", "Set to anything: no colour in human output."),
    ] {
        roff.control("TP", []);
        roff.text([bold(name)]);
        roff.text([roman(what)]);
    }
    roff.control("SH", ["FILES"]);
    for (path, what) in [
        ("./certctl.yaml", "The default inventory."),
        (
            "~/.ssh/config",
            "OpenSSH client configuration (Host, HostName, User, Port, IdentityFile, ProxyJump, ...).",
        ),
        (
            "~/.ssh/known_hosts",
            "Host keys; an unknown or changed host key is refused unless --accept-new-host-keys records a new one.",
        ),
        (
            "/var/lib/certctl/backups",
            "On each target: the default parent of its backup sets and lock.",
        ),
    ] {
        roff.control("TP", []);
        roff.text([italic(path)]);
        roff.text([roman(what)]);
    }
    roff
}

fn write_stdout(bytes: &[u8]) -> u8 {
    match report::print_stdout(&String::from_utf8_lossy(bytes)) {
        Ok(()) => report::EXIT_OK,
        Err(e) => {
            report::print_stderr(&format!("error: writing to stdout: {e}\n"));
            report::EXIT_FAILED
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap's own consistency checks of the command tree the pages and scripts come from.
    #[test]
    fn command_tree_is_consistent() {
        crate::cli::Cli::command().debug_assert();
    }

    #[test]
    fn exit_codes_become_a_list_and_other_lines_paragraphs() {
        let roff =
            super::exit_status_section("Exit codes:\n  0    fine\n  130  stopped\nSee the README.")
                .to_roff();
        assert_eq!(
            roff,
            ".SH \"EXIT STATUS\"\n.TP\n\\fB0\\fR\nfine\n.TP\n\\fB130\\fR\nstopped\n.PP\nSee the README.\n"
        );
    }
}
