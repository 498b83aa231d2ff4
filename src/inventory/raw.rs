//! The inventory as written: serde types that mirror the YAML one to one, and the one call
//! into serde-saphyr that fills them.
//!
//! Every scalar a later check may complain about is a [`Spanned`] so the message can point at
//! it. Nothing here merges or resolves anything; that is [`super::resolve`].

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde_saphyr::localizer::Localizer;
use serde_saphyr::{Location, MessageFormatter, Spanned, UserMessageFormatter};

use crate::connector::{Command, ConnectorDef, did_you_mean};
use crate::probe::StartTls;

/// The top level of an inventory file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInventory {
    pub defaults: Option<Spanned<RawSettings>>,
    pub certificates: Option<Entries<RawCertificate>>,
    pub groups: Option<Entries<Option<RawSettings>>>,
    pub targets: Option<Spanned<Vec<Spanned<RawSettings>>>>,
    pub connectors: Option<Entries<ConnectorDef>>,
    /// Optional: what every certificate must be (see [`crate::policy`]).
    pub policy: Option<Spanned<crate::policy::RawPolicy>>,
    /// Optional: commands run on the controller after a run (see [`crate::notify`]).
    pub notify: Option<Spanned<Vec<Spanned<crate::notify::RawNotifier>>>>,
    /// Optional: the local history file, or `off` (see [`crate::history`]).
    pub history: Option<Spanned<String>>,
}

/// The settings block shared by `defaults:`, each group and each target. `name`, `host` and
/// `groups` are only valid on a target; one type with a check keeps the three in step.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSettings {
    pub name: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
    pub groups: Option<Spanned<Vec<Spanned<String>>>>,
    pub user: Option<Spanned<String>>,
    pub port: Option<Spanned<u16>>,
    pub identity_file: Option<Spanned<String>>,
    pub known_hosts: Option<Spanned<String>>,
    pub jump: Option<Spanned<String>>,
    #[serde(rename = "become")]
    pub become_method: Option<Spanned<RawBecome>>,
    pub connector: Option<Spanned<String>>,
    pub certificate: Option<Spanned<String>>,
    /// Several certificates on one target (one connection, one lock, one reload), each with
    /// its own params and probe; instead of `certificate`.
    pub certificates: Option<Spanned<Vec<Spanned<RawTargetCertificate>>>>,
    pub params: Option<Entries<Spanned<String>>>,
    pub commands: Option<Entries<Spanned<Commands>>>,
    pub verify: Option<RawVerify>,
}

/// One entry of a settings block's `certificates:` list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTargetCertificate {
    pub certificate: Spanned<String>,
    /// Over the target's params, for this certificate only.
    pub params: Option<Entries<Spanned<String>>>,
    /// Over the target's `verify:`, field by field, for this certificate's probe.
    pub verify: Option<RawVerify>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawBecome {
    Sudo,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVerify {
    pub attempts: Option<Spanned<u32>>,
    pub backoff: Option<Spanned<String>>,
    pub max_backoff: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub consecutive: Option<Spanned<u32>>,
    pub address: Option<Spanned<String>>,
    pub sni: Option<Spanned<String>>,
    pub starttls: Option<Spanned<StartTls>>,
    pub shared: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCertificate {
    pub cert: Option<Spanned<String>>,
    pub cert_env: Option<Spanned<String>>,
    pub cert_command: Option<Spanned<Vec<String>>>,
    pub chain: Option<Spanned<String>>,
    pub chain_env: Option<Spanned<String>>,
    pub chain_command: Option<Spanned<Vec<String>>>,
    pub key: Option<Spanned<String>>,
    pub key_env: Option<Spanned<String>>,
    pub key_command: Option<Spanned<Vec<String>>>,
    pub command_timeout: Option<Spanned<String>>,
    pub policy: Option<Spanned<crate::policy::RawPolicy>>,
}

/// A mapping kept in file order, each key with its location. serde-saphyr still rejects
/// duplicate keys (it checks them below any visitor).
#[derive(Debug)]
pub(super) struct Entries<V>(pub Vec<(Spanned<String>, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Entries<V> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor<V>(std::marker::PhantomData<V>);

        impl<'de, V: Deserialize<'de>> Visitor<'de> for EntriesVisitor<V> {
            type Value = Entries<V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    entries.push((key, map.next_value()?));
                }
                Ok(Entries(entries))
            }
        }

        deserializer.deserialize_map(EntriesVisitor(std::marker::PhantomData))
    }
}

/// A `commands:` section: one argv (`[systemctl, reload, nginx]`) or a list of them
/// (`[[nginx, -t], [nginx, -s, reload]]`). `[]` means "run nothing".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Commands(pub Vec<Command>);

/// One element of a `commands:` list: a word of a single argv, or a whole argv.
enum Element {
    Word(String),
    Argv(Command),
}

impl<'de> Deserialize<'de> for Element {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ElementVisitor;

        impl<'de> Visitor<'de> for ElementVisitor {
            type Value = Element;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a word or an argv list")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Element, E> {
                Ok(Element::Word(v.to_string()))
            }

            // Plain YAML numbers and booleans are words too (`[sleep, 2]`). The scalar has
            // already been typed here, so `1.50` arrives as `1.5`; quote such words.
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Element, E> {
                Ok(Element::Word(v.to_string()))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Element, E> {
                Ok(Element::Word(v.to_string()))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Element, E> {
                Ok(Element::Word(v.to_string()))
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Element, E> {
                Ok(Element::Word(v.to_string()))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Element, A::Error> {
                let mut argv = Vec::new();
                while let Some(word) = seq.next_element::<String>()? {
                    argv.push(word);
                }
                Ok(Element::Argv(argv))
            }
        }

        deserializer.deserialize_any(ElementVisitor)
    }
}

impl<'de> Deserialize<'de> for Commands {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CommandsVisitor;

        impl<'de> Visitor<'de> for CommandsVisitor {
            type Value = Commands;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an argv list like [systemctl, reload, nginx], or a list of them")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Commands, E> {
                Err(E::custom(format!(
                    "a command is an argv list, not a shell string: write `[{}]`",
                    v.split_whitespace().collect::<Vec<_>>().join(", ")
                )))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Commands, A::Error> {
                let mut words = Vec::new();
                let mut argvs = Vec::new();
                while let Some(element) = seq.next_element::<Element>()? {
                    match element {
                        Element::Word(w) => words.push(w),
                        Element::Argv(argv) => argvs.push(argv),
                    }
                }
                match (words.is_empty(), argvs.is_empty()) {
                    (true, _) => Ok(Commands(argvs)),
                    (false, true) => Ok(Commands(vec![words])),
                    (false, false) => Err(de::Error::custom(
                        "mixes words and lists: write one argv `[cmd, arg]` or a list of argvs \
                         `[[cmd, arg], [cmd2]]`",
                    )),
                }
            }
        }

        deserializer.deserialize_any(CommandsVisitor)
    }
}

/// The document root: nothing at all, or the inventory mapping.
enum Root {
    Empty,
    Inventory(Box<RawInventory>),
}

impl<'de> Deserialize<'de> for Root {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RootVisitor;

        impl<'de> Visitor<'de> for RootVisitor {
            type Value = Root;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a mapping with `targets:` (and optionally defaults, certificates, \
                     groups, connectors)",
                )
            }

            fn visit_unit<E: de::Error>(self) -> Result<Root, E> {
                Ok(Root::Empty)
            }

            fn visit_none<E: de::Error>(self) -> Result<Root, E> {
                Ok(Root::Empty)
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Root, A::Error> {
                RawInventory::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|inv| Root::Inventory(Box::new(inv)))
            }
        }

        deserializer.deserialize_any(RootVisitor)
    }
}

/// A YAML problem: where (when serde-saphyr knows) and what, on one line.
pub(super) struct YamlError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Parses `text`. `Ok(None)` means the file holds no document (empty or only comments).
pub(super) fn parse(text: &str) -> Result<Option<RawInventory>, YamlError> {
    match serde_saphyr::from_str_with_options::<Root>(text, options()) {
        Ok(Root::Empty) => Ok(None),
        Ok(Root::Inventory(inv)) => Ok(Some(*inv)),
        Err(e) => {
            let message = e.render_with_options({
                let mut o = serde_saphyr::RenderOptions::new(&Formatter);
                o.snippets = serde_saphyr::SnippetMode::Off;
                o
            });
            let (line, column) = match e.location() {
                Some(l) if l != Location::UNKNOWN => (l.line() as usize, l.column() as usize),
                // Errors about the root itself carry no location: point at its first node.
                _ => first_content(text),
            };
            Err(YamlError {
                line,
                column,
                message: humanize(message),
            })
        }
    }
}

/// Budgets sized for an inventory: a few thousand targets fit easily; an alias bomb does not.
fn options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_nodes = 250_000;
    budget.max_depth = 32;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    // Anchors and `<<: *common` merges are handy in a fleet file, but a handful of aliases
    // must not expand into millions of nodes ("billion laughs").
    options.alias_limits.max_total_replayed_events = 200_000;
    options.alias_limits.max_replay_stack_depth = 16;
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::Error;
    // `0640` in an argv stays `0640` instead of becoming 640.
    options.leading_zero_numbers_as_strings = true;
    options
}

/// Line and column of the first character that is not blank and not in a comment.
fn first_content(text: &str) -> (usize, usize) {
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if !trimmed.is_empty() && !trimmed.starts_with('#') && trimmed != "---" {
            return (i + 1, line.chars().count() - trimmed.chars().count() + 1);
        }
    }
    (1, 1)
}

/// serde-saphyr's user-facing wording, without the "at line X, column Y" suffix (our location
/// prefix says it already), and with "did you mean" for unknown keys and values.
struct Formatter;

impl MessageFormatter for Formatter {
    fn localizer(&self) -> &dyn Localizer {
        &NoLocationSuffix
    }

    fn format_message<'a>(&self, err: &'a serde_saphyr::Error) -> Cow<'a, str> {
        match err {
            serde_saphyr::Error::SerdeUnknownField {
                field, expected, ..
            } => Cow::Owned(unknown("key", field, expected)),
            serde_saphyr::Error::SerdeUnknownVariant {
                variant, expected, ..
            } => Cow::Owned(unknown("value", variant, expected)),
            serde_saphyr::Error::AliasReplayLimitExceeded {
                max_total_replayed_events,
                ..
            } => Cow::Owned(format!(
                "YAML aliases expand to more than {max_total_replayed_events} nodes; refusing \
                 to expand further (an alias bomb?)"
            )),
            serde_saphyr::Error::AliasReplayStackDepthExceeded { max_depth, .. } => {
                Cow::Owned(format!(
                    "YAML aliases nest more than {max_depth} levels deep; refusing to expand them"
                ))
            }
            _ => UserMessageFormatter.format_message(err),
        }
    }
}

struct NoLocationSuffix;

impl Localizer for NoLocationSuffix {
    fn attach_location<'a>(&self, base: Cow<'a, str>, _loc: Location) -> Cow<'a, str> {
        base
    }

    // The use site is the error's own location; "defined at" (the anchor) still shows.
    fn alias_used_at(&self, _used: Location) -> String {
        String::new()
    }
}

fn unknown(what: &str, word: &str, expected: &[&str]) -> String {
    match did_you_mean(word, expected.iter().copied()) {
        Some(s) => format!("unknown {what} `{word}` (did you mean `{s}`?)"),
        None if expected.is_empty() => format!("unknown {what} `{word}`"),
        None => format!(
            "unknown {what} `{word}`; expected one of: {}",
            expected.join(", ")
        ),
    }
}

/// Rewrites the few serde-saphyr messages that speak Rust rather than YAML.
fn humanize(message: String) -> String {
    const REWRITES: [(&str, &str); 5] = [
        ("invalid u16", "expected a whole number from 0 to 65535"),
        (
            "invalid u32",
            "expected a whole number from 0 to 4294967295",
        ),
        (
            "expected mapping start",
            "expected a mapping (`key: value` lines)",
        ),
        (
            "expected sequence start",
            "expected a list (`- item` lines or `[a, b]`)",
        ),
        (
            "expected string scalar",
            "expected a single value, not a list or mapping",
        ),
    ];
    let mut message = match REWRITES.iter().find(|(from, _)| message.starts_with(from)) {
        Some((from, to)) => message.replacen(from, to, 1),
        None => message,
    };
    if message.contains("found a tab") || message.contains("tabs disallowed") {
        message.push_str(" (indent YAML with spaces, not tabs)");
    } else if !message.contains("flow") && INDENTATION_SYMPTOMS.iter().any(|s| message.contains(s))
    {
        message.push_str(" (check the indentation of this line and of the line above)");
    }
    message
}

/// What the YAML scanner says when a line is indented more or less than its siblings.
const INDENTATION_SYMPTOMS: [&str; 4] = [
    "did not find expected",
    "mapping values are not allowed in this context",
    "while parsing a block mapping",
    "while parsing a block collection",
];
