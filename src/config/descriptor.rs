//! What a configuration key is: a [`Key`] descriptor (name, type, default, rule, doc, reload
//! class) and the typed reader behind it. The descriptors themselves are in `keys.rs`; parsing,
//! range checks, "did you mean", the default file and the documentation are drawn from them.

use std::path::PathBuf;
use std::time::Duration;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::check::{Checker, DurationRule, FloatRule, IntRule};
use super::keys::{self, KEYS, SECTIONS, SERVICE_KEYS, WEBHOOK_KEYS};
use super::Config;
use crate::addr::Cidr;

/// One configuration key.
pub(crate) struct Key<T: 'static> {
    /// The dotted path, `section.key` (`service.port` for a key of each `[[service]]`).
    pub(crate) name: &'static str,
    /// The value when the file does not set it.
    pub(crate) default: Initial,
    /// Whether a SIGHUP applies a change of it.
    pub(crate) reload: Reload,
    /// What it does, one line of Markdown (the docs' "meaning" column).
    pub(crate) doc: &'static str,
    /// Its type and rule, and where it goes in `T` (the whole [`super::Config`], or one
    /// `[[service]]` or `[[webhook]]`).
    pub(crate) value: &'static dyn Field<T>,
}

/// A key's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Initial {
    /// A TOML value, as written in the file.
    Toml(&'static str),
    /// No value: the key is optional and its absence means what the text says.
    Unset(&'static str),
    /// No default: every table must set it.
    Required,
}

/// When a change of the key takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reload {
    /// On SIGHUP.
    Live,
    /// At the next start; a reload keeps the running value and names the key.
    Restart,
    /// At the next start, with the whole section: a reload names it `section.*`.
    RestartSection,
}

impl<T> Key<T> {
    /// The table the key is in: `agent` of `agent.tick`.
    pub(crate) fn section(&self) -> &'static str {
        self.name
            .split_once('.')
            .map_or(self.name, |(section, _)| section)
    }

    /// The key within its table: `tick` of `agent.tick`.
    pub(crate) fn leaf(&self) -> &'static str {
        self.name
            .split_once('.')
            .map_or(self.name, |(_, leaf)| leaf)
    }
}

/// A key's type and rule, and the field of `T` it fills.
pub(crate) trait Field<T>: Sync {
    /// Checks `value` and, when it is good, stores it in `target` (else reports).
    fn read(&self, checker: &mut Checker, value: &Spanned<DeValue<'_>>, path: &str, target: &mut T);
    /// Puts `running`'s value back into `fresh`; true when they differed.
    fn keep(&self, fresh: &mut T, running: &mut T) -> bool;
    /// The docs' "type": `duration`, `integer`...
    fn kind(&self) -> &'static str;
    /// The docs' "allowed": `10ms to 10s`...
    fn allowed(&self) -> String;
}

/// What a rule tells the docs.
pub(crate) trait Rule: Sync {
    fn kind(&self) -> &'static str;
    fn allowed(&self) -> String;
}

/// `between 10ms and 10s` as `10ms to 10s`.
fn range_text(range: &str) -> String {
    range.replace("between ", "").replace(" and ", " to ")
}

impl Rule for DurationRule {
    fn kind(&self) -> &'static str {
        "duration"
    }
    fn allowed(&self) -> String {
        range_text(self.range)
    }
}

impl Rule for FloatRule {
    fn kind(&self) -> &'static str {
        "number"
    }
    fn allowed(&self) -> String {
        range_text(self.range)
    }
}

impl Rule for IntRule {
    fn kind(&self) -> &'static str {
        "integer"
    }
    fn allowed(&self) -> String {
        range_text(self.range)
    }
}

/// An integer within a rule, or `"auto"`.
pub(crate) struct Auto(pub(crate) IntRule);

impl Rule for Auto {
    fn kind(&self) -> &'static str {
        "integer or `\"auto\"`"
    }
    fn allowed(&self) -> String {
        range_text(self.0.range).replace("\"auto\"", "`\"auto\"`")
    }
}

/// A list of at most `max` distinct ports.
pub(crate) struct Ports {
    pub(crate) max: usize,
}

impl Rule for Ports {
    fn kind(&self) -> &'static str {
        "list of integers"
    }
    fn allowed(&self) -> String {
        format!("1 to 65535 each, no duplicates, at most {}", self.max)
    }
}

/// A rule checked by a function of its own, described in words.
pub(crate) struct Custom<X: 'static> {
    pub(crate) kind: &'static str,
    pub(crate) allowed: &'static str,
    pub(crate) check: fn(&mut Checker, &Spanned<DeValue<'_>>, &str) -> Option<X>,
}

impl<X> Rule for Custom<X> {
    fn kind(&self) -> &'static str {
        self.kind
    }
    fn allowed(&self) -> String {
        self.allowed.to_string()
    }
}

/// A field of `T` of type `X`, checked by `check` against `rule`.
pub(crate) struct Typed<T: 'static, X: 'static, R> {
    pub(crate) field: fn(&mut T) -> &mut X,
    pub(crate) rule: R,
    pub(crate) check: fn(&mut Checker, &Spanned<DeValue<'_>>, &str, &R) -> Option<X>,
}

impl<T, X: Clone + PartialEq, R: Rule> Field<T> for Typed<T, X, R> {
    fn read(
        &self,
        checker: &mut Checker,
        value: &Spanned<DeValue<'_>>,
        path: &str,
        target: &mut T,
    ) {
        if let Some(value) = (self.check)(checker, value, path, &self.rule) {
            *(self.field)(target) = value;
        }
    }

    fn keep(&self, fresh: &mut T, running: &mut T) -> bool {
        let running = (self.field)(running);
        let fresh = (self.field)(fresh);
        let differs = *fresh != *running;
        if differs {
            *fresh = running.clone();
        }
        differs
    }

    fn kind(&self) -> &'static str {
        self.rule.kind()
    }

    fn allowed(&self) -> String {
        self.rule.allowed()
    }
}

/// `|c: &mut Config| &mut c.agent.tick` for `at!(agent.tick)`; `at!(Service: web)` for a field
/// of another type.
macro_rules! at {
    ($type:ty: $($field:ident).+) => {
        |target: &mut $type| &mut target.$($field).+
    };
    ($($field:ident).+) => {
        |config: &mut $crate::config::Config| &mut config.$($field).+
    };
}
pub(super) use at;

/// A duration between `min` and `max`; `name` and `range` are for messages.
pub(crate) const fn duration<T>(
    name: &'static str,
    (min, max): (Duration, Duration),
    range: &'static str,
    field: fn(&mut T) -> &mut Duration,
) -> Typed<T, Duration, DurationRule> {
    Typed {
        field,
        rule: DurationRule {
            name,
            min,
            max,
            range,
        },
        check: Checker::duration,
    }
}

/// A number (integers too) between `min` and `max`.
pub(crate) const fn number<T>(
    name: &'static str,
    (min, max): (f64, f64),
    range: &'static str,
    field: fn(&mut T) -> &mut f64,
) -> Typed<T, f64, FloatRule> {
    Typed {
        field,
        rule: FloatRule {
            name,
            min,
            max,
            range,
        },
        check: Checker::number,
    }
}

/// An integer between `min` and `max`, stored as `X` (the range must fit in it).
pub(crate) const fn integer<T, X: TryFrom<i128>>(
    name: &'static str,
    (min, max): (i128, i128),
    range: &'static str,
    field: fn(&mut T) -> &mut X,
) -> Typed<T, X, IntRule> {
    Typed {
        field,
        rule: IntRule {
            name,
            min,
            max,
            range,
        },
        check: Checker::integer_as::<X>,
    }
}

/// `"auto"` (None) or an integer between `min` and `max`.
pub(crate) const fn integer_or_auto<T>(
    name: &'static str,
    (min, max): (i128, i128),
    range: &'static str,
    field: fn(&mut T) -> &mut Option<u64>,
) -> Typed<T, Option<u64>, Auto> {
    Typed {
        field,
        rule: Auto(IntRule {
            name,
            min,
            max,
            range,
        }),
        check: |checker, value, path, rule| checker.integer_or_auto(value, path, &rule.0),
    }
}

/// A list of at most `max` distinct ports.
pub(crate) const fn ports<T>(
    max: usize,
    field: fn(&mut T) -> &mut Vec<u16>,
) -> Typed<T, Vec<u16>, Ports> {
    Typed {
        field,
        rule: Ports { max },
        check: |checker, value, path, rule| checker.port_list(value, path, rule.max),
    }
}

/// A value checked by `check`; `kind` and `allowed` say what it takes, for the docs.
pub(crate) const fn custom<T, X>(
    kind: &'static str,
    allowed: &'static str,
    field: fn(&mut T) -> &mut X,
    check: fn(&mut Checker, &Spanned<DeValue<'_>>, &str) -> Option<X>,
) -> Typed<T, X, Custom<X>> {
    Typed {
        field,
        rule: Custom {
            kind,
            allowed,
            check,
        },
        check: |checker, value, path, rule| (rule.check)(checker, value, path),
    }
}

/// `true` or `false`.
pub(crate) const fn boolean<T>(field: fn(&mut T) -> &mut bool) -> Typed<T, bool, Custom<bool>> {
    custom("boolean", "`true`, `false`", field, Checker::boolean)
}

/// An absolute path.
pub(crate) const fn path<T>(
    field: fn(&mut T) -> &mut PathBuf,
) -> Typed<T, PathBuf, Custom<PathBuf>> {
    custom("path", "absolute", field, Checker::absolute_path)
}

/// A list of IPv4 and IPv6 CIDRs (bare addresses are single hosts).
pub(crate) const fn cidrs<T>(
    field: fn(&mut T) -> &mut Vec<Cidr>,
) -> Typed<T, Vec<Cidr>, Custom<Vec<Cidr>>> {
    custom("list of CIDRs", "IPv4 and IPv6", field, Checker::cidrs)
}

/// `target` with the [`Initial::Toml`] defaults of `keys` read over it.
pub(super) fn with_defaults<T>(mut target: T, keys: &[Key<T>]) -> T {
    let mut checker = Checker::default();
    for key in keys {
        let Initial::Toml(text) = key.default else {
            continue;
        };
        let line = format!("default = {text}");
        let Ok(document) = DeTable::parse(&line) else {
            panic!("{}: the default {text} is not TOML", key.name);
        };
        for (_, value) in document.get_ref() {
            key.value.read(&mut checker, value, key.name, &mut target);
        }
    }
    if let Some(issue) = checker.first_issue() {
        panic!("{}: the default is wrong: {}", issue.key, issue.message);
    }
    target
}

/// The whole default configuration: [`default_file`] read over a blank one.
pub(super) fn defaults() -> Config {
    let text = default_file();
    let Ok(document) = DeTable::parse(&text) else {
        panic!("the default file is not TOML:\n{text}");
    };
    let mut checker = Checker::default();
    let config = checker.document(document.get_ref(), keys::blank());
    if let Some(issue) = checker.first_issue() {
        panic!("{}: the default is wrong: {}", issue.key, issue.message);
    }
    config
}

/// Restores in `fresh` the running values of the keys a reload cannot change, and names those
/// that differed (`section.*` for a section read only at start).
pub(super) fn keep_restart_only(fresh: &mut Config, running: &Config) -> Vec<String> {
    let mut running = running.clone();
    let mut changed: Vec<String> = Vec::new();
    for key in KEYS {
        let name = match key.reload {
            Reload::Live => continue,
            Reload::Restart => key.name.to_string(),
            Reload::RestartSection => format!("{}.*", key.section()),
        };
        if key.value.keep(fresh, &mut running) && !changed.contains(&name) {
            changed.push(name);
        }
    }
    changed
}

/// What the documentation says of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyDoc {
    /// The dotted path (`service.port` for the port of each `[[service]]`).
    pub(crate) name: &'static str,
    /// `duration`, `integer`, `list of CIDRs`...
    pub(crate) kind: &'static str,
    pub(crate) default: Initial,
    /// The values taken, in words (`10ms to 10s`).
    pub(crate) allowed: String,
    pub(crate) reload: Reload,
    /// What it does (Markdown).
    pub(crate) doc: &'static str,
}

fn key_doc<T>(key: &Key<T>) -> KeyDoc {
    KeyDoc {
        name: key.name,
        kind: key.value.kind(),
        default: key.default,
        allowed: key.value.allowed(),
        reload: key.reload,
        doc: key.doc,
    }
}

/// Every key with its docs, table by table in the order of [`SECTIONS`] (for the docs and the
/// man page).
pub(crate) fn all() -> Vec<KeyDoc> {
    let mut docs = Vec::new();
    for section in SECTIONS {
        match *section {
            "service" => docs.extend(SERVICE_KEYS.iter().map(key_doc)),
            "webhook" => docs.extend(WEBHOOK_KEYS.iter().map(key_doc)),
            _ => docs.extend(KEYS.iter().filter(|k| k.section() == *section).map(key_doc)),
        }
    }
    docs
}

/// The full default configuration as a TOML file: every key of every table with its default
/// (the default services, no webhooks).
pub fn default_file() -> String {
    let mut text = String::new();
    for section in SECTIONS {
        match *section {
            "service" => text.push_str(keys::DEFAULT_SERVICES),
            "webhook" => continue,
            _ => {
                text.push_str(&format!("[{section}]\n"));
                text.push_str(&default_lines(KEYS, section));
            }
        }
        text.push('\n');
    }
    text.pop();
    text
}

/// The configuration a package installs as /etc/ftagent/ftagent.toml: every table and key
/// with its type, range and meaning, all commented out, so that the file sets nothing and the
/// embedded defaults apply. A line `#x` (no space after the `#`) is a setting at its default:
/// taking the `#` off a table's header and a key's line sets that key; `# ` lines are comments.
pub fn commented_file() -> String {
    let mut text = String::from(COMMENTED_HEADER);
    for section in SECTIONS {
        text.push('\n');
        match *section {
            "service" => {
                text.push_str(
                    "# [[service]]: the ports watched, one table each (the defaults below).\n",
                );
                for key in SERVICE_KEYS {
                    text.push_str(&key_comment(&key_doc(key)));
                }
                for line in keys::DEFAULT_SERVICES.lines() {
                    if !line.is_empty() {
                        text.push('#');
                    }
                    text.push_str(line);
                    text.push('\n');
                }
            }
            "webhook" => {
                text.push_str(
                    "# [[webhook]]: where events are sent, one table each (none by default).\n",
                );
                for key in WEBHOOK_KEYS {
                    text.push_str(&key_comment(&key_doc(key)));
                }
            }
            _ => {
                text.push_str(&format!("#[{section}]\n"));
                for key in KEYS.iter().filter(|k| k.section() == *section) {
                    text.push('\n');
                    text.push_str(&key_comment(&key_doc(key)));
                    if let Initial::Toml(value) = key.default {
                        text.push_str(&format!("#{} = {value}\n", key.leaf()));
                    }
                }
            }
        }
    }
    text
}

const COMMENTED_HEADER: &str = "\
# ftagent's configuration (ftagent.toml(5); `ftagent config keys` lists the same keys).
#
# As installed, this file sets nothing: the embedded defaults, shown below, apply.
# `ftagent --setup` writes a configuration made for this host in its place (without asking
# while this file sets nothing); `ftagent --setup --enable` also starts the service.
# To set a key by hand, take the `#` off its table's header and off its line.
# `ftagent config check` checks the file; `systemctl reload ftagent` (SIGHUP) applies it.
";

/// A key's comment lines: `# name: type, allowed; reload class.` and its meaning, wrapped.
fn key_comment(key: &KeyDoc) -> String {
    let default = match key.default {
        Initial::Toml(_) => String::new(),
        Initial::Unset(words) => format!(" Not set by default: {words}."),
        Initial::Required => " Required.".to_string(),
    };
    let reload = match key.reload {
        Reload::Live => "SIGHUP applies it",
        Reload::Restart | Reload::RestartSection => "applied at the next start",
    };
    let leaf = key.name.split_once('.').map_or(key.name, |(_, leaf)| leaf);
    let words = format!(
        "{leaf}: {}, {}; {reload}.{default} {}",
        key.kind, key.allowed, key.doc
    );
    let mut text = String::new();
    let mut line = String::from("#");
    for word in words.split_whitespace() {
        if line.len() + 1 + word.len() > 96 && line.len() > 1 {
            text.push_str(&line);
            text.push('\n');
            line = String::from("#  ");
        }
        line.push(' ');
        line.push_str(word);
    }
    text.push_str(&line);
    text.push('\n');
    text
}

/// `key = default` for each key of `section` in `keys` that has a default.
fn default_lines<T>(keys: &[Key<T>], section: &str) -> String {
    let mut lines = String::new();
    for key in keys.iter().filter(|k| k.section() == section) {
        if let Initial::Toml(value) = key.default {
            lines.push_str(&format!("{} = {value}\n", key.leaf()));
        }
    }
    lines
}

/// Every key in words, for `ftagent config keys`: its dotted name, then its type, default,
/// allowed values and reload class on one line, then what it does.
pub fn keys_text() -> String {
    let mut text = String::new();
    for key in all() {
        let default = match key.default {
            Initial::Toml(value) => format!("default {value}"),
            Initial::Unset(words) => format!("default: {words}"),
            Initial::Required => "required".to_string(),
        };
        let reload = match key.reload {
            Reload::Live => "SIGHUP applies it",
            Reload::Restart | Reload::RestartSection => "applied at the next start",
        };
        text.push_str(&format!(
            "{}\n    {}; {default}; allowed: {}; {reload}\n    {}\n\n",
            key.name, key.kind, key.allowed, key.doc
        ));
    }
    text
}

#[cfg(test)]
/// The Markdown table of the keys of `section` (`agent`, `service`...).
pub(crate) fn docs_table(section: &str) -> String {
    let keys = all();
    table(
        keys.iter()
            .filter(|k| k.name.split('.').next() == Some(section)),
    )
}

#[cfg(test)]
/// A Markdown table of `keys`.
fn table<'a>(keys: impl Iterator<Item = &'a KeyDoc>) -> String {
    let mut table = String::from(
        "| key | type | default | allowed | on SIGHUP | meaning |\n\
         | --- | --- | --- | --- | --- | --- |\n",
    );
    for key in keys {
        let default = match key.default {
            Initial::Toml(value) => format!("`{value}`"),
            Initial::Unset(words) => words.to_string(),
            Initial::Required => "required".to_string(),
        };
        let reload = match key.reload {
            Reload::Live => "applied",
            Reload::Restart | Reload::RestartSection => "next start",
        };
        let leaf = key.name.split_once('.').map_or(key.name, |(_, leaf)| leaf);
        table.push_str(&format!(
            "| `{leaf}` | {} | {default} | {} | {reload} | {} |\n",
            key.kind, key.allowed, key.doc
        ));
    }
    table
}

#[cfg(test)]
/// `text` (docs/configuration.md) with every generated part made anew from the descriptors:
/// between `<!-- generated: defaults -->` or `<!-- generated: [section] -->` and
/// `<!-- end generated -->`.
pub(crate) fn regenerate_docs(text: &str) -> String {
    const BEGIN: &str = "<!-- generated: ";
    const END: &str = "<!-- end generated -->";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let Some(header_end) = rest[start..].find("-->").map(|i| start + i + 3) else {
            break;
        };
        let Some(end) = rest[header_end..].find(END).map(|i| header_end + i) else {
            break;
        };
        let what = rest[start + BEGIN.len()..header_end - 3].trim();
        out.push_str(&rest[..header_end]);
        out.push('\n');
        match what.strip_prefix('[').and_then(|w| w.strip_suffix(']')) {
            Some(section) => out.push_str(&docs_table(section)),
            None => {
                out.push_str("```toml\n");
                out.push_str(&default_file());
                out.push_str("```\n");
            }
        }
        out.push_str(END);
        rest = &rest[end + END.len()..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    //! Adding a key is one descriptor: shown on a table of one key of its own.

    use super::super::check::Checker;
    use super::Initial::Toml;
    use super::Reload::Live;
    use super::*;

    struct Demo {
        queue: u32,
    }

    /// A key as it would be added to `keys.rs`: the only place it is defined.
    static DEMO_KEYS: &[Key<Demo>] = &[Key {
        name: "demo.queue",
        default: Toml("64"),
        reload: Live,
        value: &integer("queue", (1, 4096), "between 1 and 4096", at!(Demo: queue)),
        doc: "Events held for a slow receiver.",
    }];

    fn read(text: &str) -> (Demo, Vec<String>) {
        let document = DeTable::parse(text).unwrap();
        let (_, table) = document.get_ref().iter().next().unwrap();
        let DeValue::Table(table) = table.get_ref() else {
            panic!("a table");
        };
        let mut checker = Checker::default();
        let mut demo = with_defaults(Demo { queue: 0 }, DEMO_KEYS);
        checker.keys(
            table,
            "demo",
            "demo",
            DEMO_KEYS,
            "the keys of [demo] are",
            &mut demo,
        );
        let issues = checker.issues.iter();
        let messages = issues
            .map(|i| format!("{}: {}", i.key, i.message))
            .collect();
        (demo, messages)
    }

    #[test]
    fn one_descriptor_is_a_whole_key() {
        // The default, and the default file's line.
        assert_eq!(read("[demo]\n").0.queue, 64);
        assert_eq!(default_lines(DEMO_KEYS, "demo"), "queue = 64\n");
        // Parsing, the range check and its message, the unknown-key hint.
        assert_eq!(read("[demo]\nqueue = 128\n").0.queue, 128);
        assert_eq!(
            read("[demo]\nqueue = 0\n").1,
            ["demo.queue: 0 is out of range: queue must be between 1 and 4096"]
        );
        assert_eq!(
            read("[demo]\nqeue = 1\n").1,
            ["demo.qeue: unknown key (did you mean \"queue\"?); the keys of [demo] are: queue"]
        );
        // A reload keeps or takes it as its class says.
        let (mut fresh, mut running) = (Demo { queue: 1 }, Demo { queue: 2 });
        assert!(DEMO_KEYS[0].value.keep(&mut fresh, &mut running));
        assert_eq!(fresh.queue, 2);
        // Its row of the docs.
        let docs: Vec<KeyDoc> = DEMO_KEYS.iter().map(key_doc).collect();
        assert_eq!(
            table(docs.iter()).lines().last(),
            Some(
                "| `queue` | integer | `64` | 1 to 4096 | applied | Events held for a slow \
                 receiver. |"
            )
        );
    }
}
